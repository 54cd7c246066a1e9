//! What the shaper shows: plain structs, copied out on request.
//!
//! Rates are exponentially weighted moving averages over windows of
//! [`RATE_WINDOW_NS`], updated as packets leave (so they cost nothing when
//! nobody asks) and decayed when read after a quiet spell.

use crate::{Plan, Reason, NS_PER_SEC};

/// Length of a rate measurement window.
pub const RATE_WINDOW_NS: u64 = 10_000_000;
/// Weight of a new window in the average, as a shift: 1/4.
const RATE_GAIN_SHIFT: u32 = 2;
/// Quiet windows after which a rate is taken as zero.
const RATE_FORGET_WINDOWS: u64 = 64;

/// A rate estimator: bytes per window folded into an EWMA of bit/s.
///
/// 16 bytes, for the member's pass-path cache line: the window is kept as
/// its index (`now / RATE_WINDOW_NS`, wrapping after 497 days; a member
/// quiet for that long may show its old rate once) and its bytes saturate
/// at 4 GiB per window (3.4 Tbit/s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateMeter {
    window: u32,
    window_bytes: u32,
    rate_bps: u64,
}

impl RateMeter {
    /// Counts `len` bytes leaving at `now`.
    #[inline]
    pub fn add(&mut self, now: u64, len: u32) {
        self.roll(now);
        self.window_bytes = self.window_bytes.saturating_add(len);
    }

    /// The average at `now` (decayed over quiet windows, without changing state).
    pub fn rate_bps(&self, now: u64) -> u64 {
        let mut copy = *self;
        copy.roll(now);
        copy.rate_bps
    }

    /// Closes the windows that ended by `now`. Constant time, no division
    /// but by the constant window: a member seen again after a quiet spell
    /// (with 240,000 members, each one's packets are tens of milliseconds
    /// apart, so this is most packets of the pass path) folds its last
    /// window and decays over the quiet ones in one step.
    #[inline]
    fn roll(&mut self, now: u64) {
        let window = (now / RATE_WINDOW_NS) as u32;
        let windows = window.wrapping_sub(self.window);
        if windows == 0 {
            return;
        }
        let sample = u64::from(self.window_bytes) * BITS_PER_WINDOW_BYTE;
        self.rate_bps = ewma(self.rate_bps, sample);
        // Quiet windows after the first count as zero samples.
        self.rate_bps = decay(self.rate_bps, u64::from(windows - 1));
        self.window_bytes = 0;
        self.window = window;
    }
}

/// A window's bytes in bit/s: bytes × 8 × 10⁹ / window (exact: the window divides 8 × 10⁹ ns).
const BITS_PER_WINDOW_BYTE: u64 = 8 * NS_PER_SEC / RATE_WINDOW_NS;
const _: () = assert!(BITS_PER_WINDOW_BYTE * RATE_WINDOW_NS == 8 * NS_PER_SEC);

fn ewma(old: u64, sample: u64) -> u64 {
    let old = u128::from(old);
    let new = old - (old >> RATE_GAIN_SHIFT) + (u128::from(sample) >> RATE_GAIN_SHIFT);
    u64::try_from(new).unwrap_or(u64::MAX)
}

/// `rate` after `k` zero samples: × (1 − 2^-gain)^k, from a table of
/// 62-bit fixed-point factors; zero after [`RATE_FORGET_WINDOWS`].
fn decay(rate: u64, k: u64) -> u64 {
    match usize::try_from(k) {
        Ok(0) => rate,
        Ok(k) if k < DECAY.len() => ((u128::from(rate) * u128::from(DECAY[k])) >> 62) as u64,
        _ => 0,
    }
}

/// `DECAY[k]` = (1 − 2^-gain)^k × 2⁶², k ≤ [`RATE_FORGET_WINDOWS`].
const DECAY: [u64; RATE_FORGET_WINDOWS as usize + 1] = {
    let mut t = [0u64; RATE_FORGET_WINDOWS as usize + 1];
    let mut f: u64 = 1 << 62;
    let mut k = 0;
    while k < t.len() {
        t[k] = f;
        f -= f >> RATE_GAIN_SHIFT;
        k += 1;
    }
    t
};

#[cfg(test)]
mod meter_tests {
    use super::*;

    /// The closed form against the windows one by one.
    fn stepwise(rate: u64, k: u64) -> u64 {
        let mut r = rate;
        for _ in 0..k {
            r = ewma(r, 0);
        }
        r
    }

    #[test]
    fn decay_matches_zero_samples_one_by_one() {
        for rate in [0, 1, 999, 12_500_000, 10_000_000_000, u64::MAX / 3] {
            for k in 0..=RATE_FORGET_WINDOWS {
                let (a, b) = (decay(rate, k), stepwise(rate, k));
                // Truncation differs by a few bit/s per step at most.
                assert!(a.abs_diff(b) <= k + 1 + b / 1_000_000, "rate {rate} k {k}: {a} vs {b}");
            }
        }
        assert_eq!(decay(12_500_000, RATE_FORGET_WINDOWS + 1), 0);
    }

    #[test]
    fn a_steady_sender_is_measured_at_its_rate() {
        let mut m = RateMeter::default();
        // 12.5 Mbit/s: 1,562,500 bytes per second, 1,000-byte packets every 640 µs.
        for i in 0..3_000u64 {
            m.add(i * 640_000, 1000);
        }
        let r = m.rate_bps(3_000 * 640_000);
        assert!(r.abs_diff(12_500_000) < 12_500_000 / 50, "{r}");
        // Quiet for a second: forgotten.
        assert_eq!(m.rate_bps(3_000 * 640_000 + NS_PER_SEC), 0);
    }
}

/// Drops and marks by [`Reason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasonCounters(pub [u64; Reason::COUNT]);

impl ReasonCounters {
    /// Counts one packet.
    pub fn count(&mut self, reason: Reason) {
        self.0[reason.index()] += 1;
    }

    /// The count for `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason.index()]
    }

    /// Packets lost (all reasons but marks).
    pub fn dropped(&self) -> u64 {
        Reason::ALL.iter().filter(|r| r.is_drop()).map(|&r| self.get(r)).sum()
    }
}

/// One member, as [`crate::Shaper::member_stats`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberStats {
    pub plan: Plan,
    /// What the member may send now (its fair share, between rate and ceiling), bit/s.
    pub allowed_bps: u64,
    /// What it sent lately, bit/s.
    pub rate_bps: u64,
    pub backlog_packets: u32,
    pub backlog_bytes: u64,
    /// How long its oldest queued packet has waited.
    pub head_wait_ns: u64,
    /// How long the last packet released from its queue had waited.
    pub last_sojourn_ns: u64,
    pub released_packets: u64,
    pub released_bytes: u64,
    /// Packets passed through at once (member under its rate, nothing queued).
    pub passed_packets: u64,
    pub reasons: ReasonCounters,
}

/// One core's shaper, as [`crate::Shaper::stats`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Members with plans.
    pub members: u32,
    /// Members with packets queued.
    pub backlogged_members: u32,
    pub backlog_packets: u32,
    pub backlog_bytes: u64,
    pub released_packets: u64,
    pub released_bytes: u64,
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub reasons: ReasonCounters,
    /// This core's share of the uplink in the current epoch, bit/s.
    pub share_bps: u64,
    /// What the core sent lately, bit/s.
    pub rate_bps: u64,
    /// `rate / share` in parts per million.
    pub load_ppm: u64,
    /// Fair level (bit/s per unit of weight) of backlogged members; `u64::MAX` when unconstrained.
    pub fair_level: u64,
    /// Rate of members that were not backlogged, bit/s.
    pub light_bps: u64,
    pub epoch: u64,
    /// Epochs in which this core's figures were withheld (it came too late in the epoch).
    pub late_epochs: u64,
    /// Wheel slots swept and members looked at (cost accounting).
    pub slots_swept: u64,
    pub members_swept: u64,
    /// Members served from the due list without a packet (bucket said "later").
    pub due_misses: u64,
    /// Work of the division among members: nodes of its aggregate visited,
    /// by backlog changes and by the per-period solve (cost accounting).
    pub division_work: u64,
}
