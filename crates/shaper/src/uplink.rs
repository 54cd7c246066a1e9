//! Uplink fairness across cores without a lock (distributed rate limiting).
//!
//! # What
//! One [`UplinkExchange`] per direction, shared (`Arc`) by the shapers of all
//! cores. It holds the direction's capacity and, per core, a cache-line
//! padded slot that only that core writes and every core reads. Time is cut
//! into *epochs* of `period_ns` (250 µs by default) counted from the shared
//! clock's zero: epoch `e` is `[e·P, (e+1)·P)`.
//!
//! # The protocol
//! At its first call in epoch `e`, a core:
//! 1. reads every core's figures *published for epoch `e-1`* (a core that
//!    published none counts as idle: it demands nothing);
//! 2. computes every core's share for epoch `e` by the same deterministic
//!    function ([`divide_capacity`]) of the same figures, and keeps its own;
//! 3. divides its share among its members ([`crate::fair`]) and publishes
//!    its figures for epoch `e`, unless it is so late in the epoch (past
//!    [`PUBLISH_DEADLINE_EIGHTHS`]/8 of it) that the others may already have
//!    moved on, in which case it stays silent and everyone (itself included,
//!    next epoch) counts it as idle.
//!
//! A core's figures describe how much it would use as a function of the
//! fair level `λ` (bit/s per unit of weight) that its backlogged members
//! would get, linearised around its current level: `clamp(offset + weight·λ,
//! guaranteed, cap)`, where `light` is the rate of its members that are
//! not backlogged (they are under their fair share and are not touched),
//! `guaranteed` is light plus the backlogged members' plan rates, `offset`
//! is light plus the allocations of backlogged members pinned at their rate
//! or ceiling, `weight` the sum of the weights of the others, and `cap`
//! light (+¼ headroom so it can grow) plus the backlogged members' ceilings.
//! A core reads these off its aggregated claims ([`crate::fair::Breakpoints`])
//! in O(log bins), not by a pass over its members; when a plan's breakpoint
//! lies in the bin of the level, `offset + weight·λ` is the steepest line
//! through the bin's lower edge, an upper bound of the core's demand there
//! (the division then errs towards that core by less than a bin, and the
//! shares still sum to at most the capacity, so the bound below holds).
//! The capacity is then water-filled over cores exactly as a core
//! water-fills over its members, so a member's fair level is the same on
//! every core: max-min fairness across the box, not just within a core. The
//! linearisation is exact near the current level, and every epoch refines it
//! (a Newton step per epoch, in effect), so a change in demand settles in a
//! few periods.
//!
//! Every core first gets a floor (`idle_core_floor_ppm` of `capacity / cores`)
//! so that a core whose members start sending can send before its figures
//! arrive; the rest is divided as above. The shares of one epoch sum to at
//! most the capacity (integer division rounds down).
//!
//! # Enforcement and the overshoot bound
//! Each core sends through a *core bucket* refilled at its share, with depth
//! `max(share × period, core_burst_floor_bytes)`, and releases nothing
//! (shaped or passed through) without tokens. Shares change exactly at
//! epoch boundaries: the first call of an epoch refills the old epoch's end
//! at the old share before switching. Write `S_k(t)` for core `k`'s share at
//! `t`, `D` for depth, `M` for `max_packet_bytes`, `N` for cores, `C` for
//! capacity, `P` for the period. For any window `[t1, t2]`:
//!
//! - a bucket passes at most `∫S_k + tokens(t1) − tokens(t2)`, with
//!   `tokens(t1) ≤ D_k(t1)` and `tokens(t2) > −M` (a packet leaves while any
//!   token is left), so core `k` sends at most `∫S_k + D_k(t1) + M`;
//! - `Σ_k S_k(t) ≤ C` at every `t` (same figures, same function, same
//!   epoch boundaries), and `Σ_k D_k ≤ Σ_k (S_k·P + floor) ≤ C·P + N·floor`.
//!
//! Hence **bytes sent by all cores in any window of length `T` are at most
//! `C·T + C·P + N·(core_burst_floor_bytes + max_packet_bytes)`**
//! ([`UplinkExchange::overshoot_bound_bytes`]): the overshoot does not grow
//! with the window, only with the period, the burst floor and the number of
//! cores. `tests/uplink.rs` checks it on every window of a two-core run.
//!
//! Assumptions the bound rests on: all cores see the same clock (virtual in
//! tests, `CLOCK_MONOTONIC` in production); a figure published before the
//! deadline is visible to the other cores by the end of the epoch (stores
//! become visible in well under a microsecond; the deadline leaves 1/8 of a
//! period); a core is not stalled for a whole period in the middle of
//! reading the figures (the read is checked like a seqlock and a torn read
//! counts as idle, which is safe for the reader but may differ from what
//! the others saw). A core that skips whole epochs refills at the floor
//! during them, which is the least the others gave it.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::fair::{divide, scale, Claim, Level};
use crate::{BITS_PER_BYTE, NS_PER_SEC};

/// A figure published after this many eighths of its epoch is withheld.
pub const PUBLISH_DEADLINE_EIGHTHS: u64 = 7;
/// Parts per million.
const PPM: u64 = 1_000_000;
/// Steps for the cross-core division (cores are few: exact bisection fits).
const CORE_DIVISION_STEPS: u32 = 128;
/// An epoch tag no epoch has: the generation is being written or was never written.
const NO_EPOCH: u64 = u64::MAX;

/// The parameters all cores of a direction must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkConfig {
    /// The direction's capacity, bit/s.
    pub capacity_bps: u64,
    /// Worker cores sharing it.
    pub cores: usize,
    /// Re-division period.
    pub period_ns: u64,
    /// Each core's floor, in parts per million of `capacity / cores`.
    pub idle_core_floor_ppm: u32,
    /// The least depth of a core bucket, bytes.
    pub core_burst_floor_bytes: u32,
    /// The longest packet accepted, bytes (longer ones are dropped as `TooLong`).
    pub max_packet_bytes: u32,
}

impl UplinkConfig {
    /// Defaults for a capacity and a number of cores: 250 µs period, floor 1/32
    /// of an even split, 2 full-size packets of burst floor, 9216-byte packets.
    pub fn new(capacity_bps: u64, cores: usize) -> UplinkConfig {
        UplinkConfig {
            capacity_bps,
            cores,
            period_ns: 250_000,
            idle_core_floor_ppm: 31_250,
            core_burst_floor_bytes: 3_028,
            max_packet_bytes: 9_216,
        }
    }
}

/// What a core publishes for an epoch (all rates in bit/s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreFigures {
    /// Rate of members that are not backlogged.
    pub light_bps: u64,
    /// Light plus the plan rates of backlogged members.
    pub guaranteed_bps: u64,
    /// Light plus the allocations of backlogged members pinned at rate or ceiling.
    pub offset_bps: u64,
    /// Sum of the weights of backlogged members not pinned.
    pub weight: u64,
    /// The most the core could use: light with headroom plus the ceilings of backlogged members.
    pub cap_bps: u64,
}

/// One generation of a core's figures, seqlock-tagged by epoch.
#[derive(Debug)]
struct Generation {
    epoch: AtomicU64,
    light_bps: AtomicU64,
    guaranteed_bps: AtomicU64,
    offset_bps: AtomicU64,
    weight: AtomicU64,
    cap_bps: AtomicU64,
}

impl Generation {
    fn new() -> Generation {
        Generation {
            epoch: AtomicU64::new(NO_EPOCH),
            light_bps: AtomicU64::new(0),
            guaranteed_bps: AtomicU64::new(0),
            offset_bps: AtomicU64::new(0),
            weight: AtomicU64::new(0),
            cap_bps: AtomicU64::new(0),
        }
    }
}

/// A core's slot: two generations (even and odd epochs), so that writing
/// epoch `e` never disturbs readers of `e - 1`. Aligned to two cache lines
/// (adjacent-line prefetch) so cores do not false-share.
#[derive(Debug)]
#[repr(align(128))]
struct CoreSlot {
    generations: [Generation; 2],
}

/// The shared state of one direction's uplink.
#[derive(Debug)]
pub struct UplinkExchange {
    config: UplinkConfig,
    slots: Vec<CoreSlot>,
}

impl UplinkExchange {
    /// An exchange for `config.cores` cores (at least one); period at least 1 ns.
    pub fn new(config: UplinkConfig) -> UplinkExchange {
        let config = UplinkConfig { cores: config.cores.max(1), period_ns: config.period_ns.max(1), ..config };
        let slots =
            (0..config.cores).map(|_| CoreSlot { generations: [Generation::new(), Generation::new()] }).collect();
        UplinkExchange { config, slots }
    }

    /// The configuration.
    pub fn config(&self) -> &UplinkConfig {
        &self.config
    }

    /// Each core's floor share, bit/s.
    pub fn floor_bps(&self) -> u64 {
        let c = &self.config;
        let per_core = c.capacity_bps / c.cores as u64;
        scale(u128::from(per_core), u128::from(c.idle_core_floor_ppm.min(PPM as u32)), u128::from(PPM)) as u64
    }

    /// The most all cores together send beyond `capacity × T` in any window `T`:
    /// `C·P + N·(core_burst_floor + max_packet)` bytes (see the module essay).
    pub fn overshoot_bound_bytes(&self) -> u64 {
        let c = &self.config;
        let per_period = u128::from(c.capacity_bps) * u128::from(c.period_ns) / u128::from(BITS_PER_BYTE * NS_PER_SEC);
        let per_core = u64::from(c.core_burst_floor_bytes) + u64::from(c.max_packet_bytes);
        u64::try_from(per_period).unwrap_or(u64::MAX).saturating_add((c.cores as u64).saturating_mul(per_core))
    }

    /// Publishes `core`'s figures for `epoch`. Only `core`'s own shaper calls this.
    pub fn publish(&self, core: usize, epoch: u64, f: &CoreFigures) {
        let Some(slot) = self.slots.get(core) else { return };
        let g = &slot.generations[(epoch % 2) as usize];
        // Seqlock write: invalidate, write, then tag (single writer per slot).
        g.epoch.store(NO_EPOCH, Ordering::Relaxed);
        fence(Ordering::Release);
        g.light_bps.store(f.light_bps, Ordering::Relaxed);
        g.guaranteed_bps.store(f.guaranteed_bps, Ordering::Relaxed);
        g.offset_bps.store(f.offset_bps, Ordering::Relaxed);
        g.weight.store(f.weight, Ordering::Relaxed);
        g.cap_bps.store(f.cap_bps, Ordering::Relaxed);
        g.epoch.store(epoch, Ordering::Release);
    }

    /// `core`'s figures for `epoch`, or `None` if it published none (or a write raced the read).
    pub fn read(&self, core: usize, epoch: u64) -> Option<CoreFigures> {
        let g = &self.slots.get(core)?.generations[(epoch % 2) as usize];
        if g.epoch.load(Ordering::Acquire) != epoch {
            return None;
        }
        let f = CoreFigures {
            light_bps: g.light_bps.load(Ordering::Relaxed),
            guaranteed_bps: g.guaranteed_bps.load(Ordering::Relaxed),
            offset_bps: g.offset_bps.load(Ordering::Relaxed),
            weight: g.weight.load(Ordering::Relaxed),
            cap_bps: g.cap_bps.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        (g.epoch.load(Ordering::Relaxed) == epoch).then_some(f)
    }

    /// Reads every core's figures for `epoch` into `out` (idle cores as zeros).
    pub fn read_all(&self, epoch: Option<u64>, out: &mut [CoreFigures]) {
        for (core, f) in out.iter_mut().enumerate() {
            *f = epoch.and_then(|e| self.read(core, e)).unwrap_or_default();
        }
    }
}

/// Core `me`'s share (bit/s) of the capacity, given every core's figures.
///
/// Every core calls this with the same figures and gets its part of one
/// division whose parts sum to at most the capacity.
pub fn divide_capacity(config: &UplinkConfig, floor_bps: u64, figures: &[CoreFigures], me: usize) -> u64 {
    let cores = figures.len().max(1) as u64;
    let floors = floor_bps.saturating_mul(cores).min(config.capacity_bps);
    let target = u128::from(config.capacity_bps - floors);
    let floor = i128::from(floor_bps);
    let claim = |k: usize| -> Claim {
        let f = figures.get(k).copied().unwrap_or_default();
        let hi = u128::from(f.cap_bps.saturating_sub(floor_bps));
        let lo = u128::from(f.guaranteed_bps.saturating_sub(floor_bps)).min(hi);
        Claim { offset: i128::from(f.offset_bps) - floor, weight: f.weight, lo, hi }
    };
    let level = divide(figures.len(), claim, target, 0, CORE_DIVISION_STEPS);
    let mine = claim(me);
    let extra = match level {
        Level::Unlimited { spare } => level.allocation(&mine) + spare / u128::from(cores),
        _ => level.allocation(&mine),
    };
    floor_bps.saturating_add(u64::try_from(extra).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_share_cache_lines() {
        assert!(std::mem::align_of::<CoreSlot>() >= 128);
    }

    #[test]
    fn shares_sum_to_at_most_capacity() {
        let config = UplinkConfig::new(1_000_000_000, 3);
        let x = UplinkExchange::new(config);
        let figures = [
            CoreFigures {
                light_bps: 10_000_000,
                guaranteed_bps: 20_000_000,
                offset_bps: 10_000_000,
                weight: 3,
                cap_bps: 900_000_000,
            },
            CoreFigures { light_bps: 0, guaranteed_bps: 5_000_000, offset_bps: 0, weight: 1, cap_bps: 700_000_000 },
            CoreFigures::default(),
        ];
        let shares: Vec<u64> = (0..3).map(|k| divide_capacity(&config, x.floor_bps(), &figures, k)).collect();
        assert!(shares.iter().sum::<u64>() <= config.capacity_bps, "{shares:?}");
        assert_eq!(shares[2], x.floor_bps());
        // Fair level λ: 10M + 3λ on core 0 and λ on core 1, with floors taken out first.
        assert!(shares[0] > 2 * shares[1], "{shares:?}");
    }

    #[test]
    fn publish_and_read_by_epoch() {
        let x = UplinkExchange::new(UplinkConfig::new(1_000, 2));
        let f = CoreFigures { light_bps: 1, guaranteed_bps: 2, offset_bps: 3, weight: 4, cap_bps: 5 };
        x.publish(1, 7, &f);
        assert_eq!(x.read(1, 7), Some(f));
        assert_eq!(x.read(1, 8), None);
        assert_eq!(x.read(0, 7), None);
        x.publish(1, 8, &f);
        assert_eq!(x.read(1, 7), Some(f));
    }
}
