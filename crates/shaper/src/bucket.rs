//! Token buckets counted in nanobits.
//!
//! Tokens are counted in bits × 10⁹ ("nanobits"), so refilling
//! at `rate` bit/s for `elapsed` ns adds exactly `rate × elapsed` tokens and
//! a packet of `len` bytes costs `len × 8 × 10⁹`: no division on the refill
//! path, no rounding, no drift over a long run. Tokens are kept in an `i64`
//! (the bucket is 32 bytes: it sits in the one cache line a member's pass
//! path reads), which holds ±1.15 GB: depths are capped at
//! [`MAX_DEPTH_BYTES`] (1 GiB), and a refill is capped at the depth (computed
//! in `i64` when the tokens earned fit, else in `i128`), so no rate or idle
//! time overflows it.
//!
//! Semantics are HTB's: a packet may leave while the bucket holds *any*
//! tokens, and its cost may take the bucket below zero (by at most one
//! packet). So a bucket of depth `D` at rate `R` passes at most
//! `R·T + D + one packet` bytes in any interval `T`; that is the whole
//! basis of the overshoot bound in [`crate::uplink`].

use crate::{BITS_PER_BYTE, NS_PER_SEC};

/// Tokens per byte.
pub const NANOBITS_PER_BYTE: i128 = (BITS_PER_BYTE as i128) * (NS_PER_SEC as i128);
/// The deepest bucket, bytes (deeper ones are made this deep): 1 GiB, a
/// burst no plan needs, and far inside what the `i64` tokens hold.
pub const MAX_DEPTH_BYTES: u64 = 1 << 30;

/// A token bucket refilled lazily at a rate that may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    tokens: i64,
    depth: i64,
    rate_bps: u64,
    last_ns: u64,
}

/// `bytes` (at most [`MAX_DEPTH_BYTES`]) in tokens.
fn nanobits(bytes: u64) -> i64 {
    (i128::from(bytes.min(MAX_DEPTH_BYTES)) * NANOBITS_PER_BYTE) as i64
}

impl Bucket {
    /// A bucket at `rate_bps` holding at most `depth_bytes`, full at `now`.
    pub fn full(rate_bps: u64, depth_bytes: u64, now: u64) -> Bucket {
        let depth = nanobits(depth_bytes);
        Bucket { tokens: depth, depth, rate_bps, last_ns: now }
    }

    /// An empty bucket.
    pub fn empty(rate_bps: u64, depth_bytes: u64, now: u64) -> Bucket {
        Bucket { tokens: 0, ..Bucket::full(rate_bps, depth_bytes, now) }
    }

    /// Adds the tokens earned at the current rate up to `now` (no-op if `now` is not later).
    pub fn refill(&mut self, now: u64) {
        if now <= self.last_ns {
            return;
        }
        let elapsed = now - self.last_ns;
        self.last_ns = now;
        // Nearly always the tokens earned fit an i64 (100 Gbit/s for 90 ms
        // do): one multiplication. A sum past the i64 is past the depth
        // too, so saturating there and capping is exact.
        if let Some(earned) =
            i64::try_from(self.rate_bps).ok().and_then(|r| r.checked_mul(i64::try_from(elapsed).ok()?))
        {
            self.tokens = self.tokens.saturating_add(earned).min(self.depth);
            return;
        }
        let earned = i128::from(self.rate_bps).saturating_mul(i128::from(elapsed));
        // Back within the i64: the sum is capped at the depth.
        self.tokens = i128::from(self.tokens).saturating_add(earned).min(i128::from(self.depth)) as i64;
    }

    /// Refills up to `now` at the old rate, then continues at `rate_bps`.
    pub fn set_rate(&mut self, now: u64, rate_bps: u64) {
        self.refill(now);
        self.rate_bps = rate_bps;
    }

    /// Changes the depth; tokens above it are lost.
    pub fn set_depth(&mut self, depth_bytes: u64) {
        self.depth = nanobits(depth_bytes);
        self.tokens = self.tokens.min(self.depth);
    }

    /// Whether a packet may leave now (after [`Bucket::refill`]).
    pub fn conforms(&self) -> bool {
        self.tokens > 0
    }

    /// Whether a packet may leave at `at` ≥ the last refill, if nothing else is charged before.
    pub fn conforms_at(&self, at: u64) -> bool {
        let ahead = i128::from(self.rate_bps).saturating_mul(i128::from(at.saturating_sub(self.last_ns)));
        i128::from(self.tokens).saturating_add(ahead).min(i128::from(self.depth)) > 0
    }

    /// Takes `len` bytes' worth of tokens (may go below zero).
    pub fn charge(&mut self, len: u32) {
        // At most one packet below zero (HTB's rule), far from i64's end;
        // an absurd length costs everything rather than wrapping.
        let cost = i64::try_from(i128::from(len) * NANOBITS_PER_BYTE).unwrap_or(i64::MAX);
        self.tokens = self.tokens.saturating_sub(cost);
    }

    /// The earliest time (≥ last refill) at which the bucket conforms again; `u64::MAX` at rate 0.
    pub fn conforming_at(&self) -> u64 {
        if self.tokens > 0 {
            return self.last_ns;
        }
        if self.rate_bps == 0 {
            return u64::MAX;
        }
        // The first instant with tokens > 0: (-tokens) / rate + 1, rounded up.
        let missing = u128::from(self.tokens.unsigned_abs()) + 1;
        let rate = u128::from(self.rate_bps);
        let wait = missing.div_ceil(rate);
        u64::try_from(wait).map_or(u64::MAX, |w| self.last_ns.saturating_add(w))
    }

    /// As [`Bucket::conforming_at`], were the rate `rate_bps` from the last refill on.
    pub fn conforming_at_rate(&self, rate_bps: u64) -> u64 {
        Bucket { rate_bps, ..*self }.conforming_at()
    }

    /// The current rate.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Tokens in bytes (negative when in debt), for statistics and tests.
    pub fn tokens_bytes(&self) -> i64 {
        (i128::from(self.tokens) / NANOBITS_PER_BYTE) as i64
    }
}

impl Default for Bucket {
    /// An empty bucket at rate 0.
    fn default() -> Bucket {
        Bucket::empty(0, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_is_exact_and_capped() {
        let mut b = Bucket::empty(8_000, 10, 0); // 1000 bytes/s, depth 10 bytes
        b.refill(5_000_000); // 5 ms → 5 bytes
        assert_eq!(b.tokens_bytes(), 5);
        b.refill(1_000_000_000);
        assert_eq!(b.tokens_bytes(), 10);
    }

    use proptest::prelude::Just;

    proptest::proptest! {
        /// The refill's one-multiplication path gives what the exact sum,
        /// capped at the depth, gives: rates and idle times of every size,
        /// at the edges of the i64 too.
        #[test]
        fn refill_equals_the_exact_capped_sum(
            rate in proptest::prop_oneof![0..20_000_000_000u64, proptest::num::u64::ANY, Just(i64::MAX as u64), Just(i64::MAX as u64 + 1)],
            depth in 0..=MAX_DEPTH_BYTES,
            debt in 0..10_000u32,
            last in proptest::num::u64::ANY,
            elapsed in proptest::prop_oneof![0..10_000_000_000u64, proptest::num::u64::ANY],
        ) {
            let mut b = Bucket::full(rate, depth, last);
            b.charge(debt);
            let before = b.tokens;
            let now = last.saturating_add(elapsed);
            b.refill(now);
            let exact = i128::from(rate).saturating_mul(i128::from(now - last)).saturating_add(i128::from(before)).min(i128::from(b.depth));
            proptest::prop_assert_eq!(i128::from(b.tokens), exact);
            proptest::prop_assert_eq!(b.last_ns, now.max(last));
        }
    }

    #[test]
    fn the_deepest_bucket_and_the_longest_idle_time_do_not_overflow() {
        let mut b = Bucket::full(u64::MAX, u64::MAX, 0);
        assert_eq!(b.tokens_bytes(), MAX_DEPTH_BYTES as i64);
        b.charge(u32::MAX);
        assert!(b.tokens_bytes() < 0, "a charge never adds tokens");
        b.refill(u64::MAX);
        assert_eq!(b.tokens_bytes(), MAX_DEPTH_BYTES as i64);
        assert!(b.conforms_at(u64::MAX));
        let mut slow = Bucket::empty(1, 1500, 0);
        slow.charge(9216);
        assert!(!slow.conforms_at(1_000_000_000));
        assert!(slow.conforming_at() > 1_000_000_000);
    }

    #[test]
    fn debt_is_repaid_on_time() {
        let mut b = Bucket::empty(8_000, 10, 0);
        b.charge(100); // 100 bytes in debt at 1000 bytes/s: conforms after just over 100 ms
        let at = b.conforming_at();
        assert_eq!(at, 100_000_001);
        assert!(!b.conforms_at(at - 1));
        assert!(b.conforms_at(at));
    }
}
