//! Shaping in the engine: members with a plan go through this core's
//! [`shaper::Shaper`]s (one for upload, one for download) after the
//! firewall has let their packet through and it was accounted.
//!
//! A shaped packet either passes at once (its member has tokens and
//! nothing queued: two bucket checks), or is copied into this core's frame
//! pool and held (verdict [`crate::Verdict::Held`]) until the shaper
//! releases it by time ([`crate::Engine::poll_timers`] polls the shapers;
//! [`crate::Engine::poll_released`] hands the released frames out), or is
//! dropped with a named reason. ECN-capable packets that CoDel picks are
//! marked CE (RFC 3168) on release instead of being dropped.
//!
//! Members are shaped by their account slot (dense on this core, stable
//! across reloads); their plan comes from the policy and is refreshed on
//! every policy installation. Members without a plan never reach the
//! shaper. The uplink capacity per direction is shared across cores
//! through the [`shaper::UplinkExchange`] given in [`ShapingConfig`].
//!
//! The frame pool is allocated once (`pool_frames` × 2 KiB); a full pool is
//! the shaper's `PoolFull` drop. Not shaped: fragments released after their
//! first fragment came late (they follow their flow's verdict at once).

use crate::counters::{Counters, Reason};
use crate::Side;
use policy::{MemberInfo, Policy};
use shaper::{Departure, Packet, Plan, Shaper, UplinkExchange, Verdict as ShapeVerdict};
use std::sync::Arc;

/// Bytes per pool frame: a full Ethernet frame with tags.
const FRAME: usize = 2048;
/// A member's shaping flags (kept in its account, [`crate::members::Account`]):
/// bit 0 shaped up, bit 1 shaped down, and this: its plan was looked up (an
/// unshaped member is looked up once).
const SEEN: u8 = 0x80;
/// Departures handled per direction and call of `poll`.
const POLL_BUDGET: usize = 256;

/// What a core needs to shape.
#[derive(Clone, Debug)]
pub struct ShapingConfig {
    /// The exchanges of the upload and download capacity, shared by all cores.
    pub uplink: [Arc<UplinkExchange>; 2],
    /// This core's index in the exchanges.
    pub core: usize,
    pub shaper: shaper::Config,
    /// Frames this core can hold queued (both directions).
    pub pool_frames: u32,
}

impl ShapingConfig {
    /// One core of `cores`, with per-direction capacities in bit/s (upload,
    /// download), for a worker that may leave up to `poll_gap_ns` between
    /// two polls (0 for one that never sleeps). A shaper polled less often
    /// than its re-division period skips epochs (and is held to the idle
    /// floor for them), polled later than 7/8 of it has its figures withheld,
    /// and its core bucket holds one period of its share: so the period is
    /// twice the gap, as a margin, or the default 250 µs if that is more.
    pub fn new(capacity_bps: [u64; 2], cores: usize, core: usize, poll_gap_ns: u64) -> ShapingConfig {
        let x = |c| {
            let defaults = shaper::UplinkConfig::new(c, cores);
            let period_ns = defaults.period_ns.max(poll_gap_ns.saturating_mul(2));
            Arc::new(UplinkExchange::new(shaper::UplinkConfig { period_ns, ..defaults }))
        };
        let pool_frames = 16_384;
        let shaper = shaper::Config { pool_packets: pool_frames, ..Default::default() };
        ShapingConfig { uplink: [x(capacity_bps[0]), x(capacity_bps[1])], core, shaper, pool_frames }
    }

    /// The same exchanges for another core.
    pub fn for_core(&self, core: usize) -> ShapingConfig {
        ShapingConfig { core, ..self.clone() }
    }
}

/// The member's plan for direction `dir` (0 up, 1 down), if it has one.
pub fn plan_of(m: &MemberInfo, dir: usize) -> Option<Plan> {
    let r = &m.plan.as_ref()?.rates;
    let kbit = |k: u32| u64::from(k) * 1000;
    let (rate, ceil) = if dir == 0 { (r.up_rate_kbit, r.up_ceil_kbit) } else { (r.down_rate_kbit, r.down_ceil_kbit) };
    Some(Plan { rate_bps: kbit(rate), ceil_bps: kbit(ceil), burst_bytes: r.burst_bytes, weight: r.weight })
}

#[derive(Debug)]
pub(crate) struct Shaping {
    dirs: [Shaper<u32>; 2],
    /// Plan installed per account slot and direction (to install only changes).
    plans: Vec<[Option<Plan>; 2]>,
    data: Box<[u8]>,
    lens: Vec<u16>,
    to: Vec<Side>,
    free: Vec<u32>,
    /// Released frames waiting for `poll_released`: (frame, mark CE).
    ready: Vec<(u32, bool)>,
    departures: Vec<Departure<u32>>,
}

impl Shaping {
    pub(crate) fn new(cfg: &ShapingConfig, now: u64) -> Result<Shaping, shaper::ConfigError> {
        let n = cfg.pool_frames.max(1);
        let sc = shaper::Config { pool_packets: n, ..cfg.shaper };
        Ok(Shaping {
            dirs: [
                Shaper::new(sc, Arc::clone(&cfg.uplink[0]), cfg.core, now)?,
                Shaper::new(sc, Arc::clone(&cfg.uplink[1]), cfg.core, now)?,
            ],
            plans: Vec::new(),
            data: vec![0; n as usize * FRAME].into_boxed_slice(),
            lens: vec![0; n as usize],
            to: vec![Side::Inside; n as usize],
            free: (0..n).rev().collect(),
            ready: Vec::with_capacity(n as usize),
            departures: Vec::with_capacity(2 * POLL_BUDGET + 64),
        })
    }

    /// Brings the shaper state of account slot `slot` in direction `dir`
    /// ([`crate::members::UP`] or `DOWN`) into cache. Unconditionally:
    /// reading the member's flags first to decide would wait for the very
    /// line this is meant to bring early.
    #[inline]
    pub(crate) fn prefetch(&self, slot: u32, dir: usize) {
        if let Some(d) = self.dirs.get(dir) {
            d.prefetch_member(slot);
        }
    }

    /// Makes room for `more` slots (see [`shaper::Shaper::reserve`]).
    pub(crate) fn reserve(&mut self, more: usize) {
        for d in &mut self.dirs {
            d.reserve(more);
        }
        self.plans.reserve(more);
    }

    /// Whether a slot with shaping flags `flags` had its plan looked up yet.
    #[inline]
    pub(crate) fn known(flags: u8) -> bool {
        flags & SEEN != 0
    }

    /// Whether a slot with shaping flags `flags` is shaped in direction `dir`.
    #[inline]
    pub(crate) fn shaped(flags: u8, dir: usize) -> bool {
        flags & (1 << dir) != 0
    }

    /// Installs the plan of the member in `slot` (`member_id`) from `policy`
    /// and returns the slot's new shaping flags (for its account); a member
    /// gone from the policy, or without a plan, is unshaped and its queued
    /// frames are dropped (counted).
    pub(crate) fn refresh(&mut self, now: u64, slot: u32, member_id: u32, policy: &Policy, c: &mut Counters) -> u8 {
        let info = policy.by_id(member_id).map(|m| policy.member(m));
        let s = slot as usize;
        if self.plans.len() <= s {
            self.plans.resize(s + 1, [None, None]);
        }
        let mut flags = SEEN;
        for dir in 0..2 {
            let plan = info.and_then(|m| plan_of(m, dir));
            if plan.is_some() {
                flags |= 1 << dir;
            }
            if self.plans[s][dir] == plan {
                continue;
            }
            self.plans[s][dir] = plan;
            let Shaping { dirs, departures, .. } = self;
            departures.clear();
            // Cannot fail: slots are dense and far below the shaper's limit.
            let _ = dirs[dir].set_member(now, slot, plan, departures);
            self.settle(c);
        }
        flags
    }

    /// Offers a forwarded frame of account slot `slot` going `to` in
    /// direction `dir`: `None` means send it now; `Some(Ok(()))` held;
    /// `Some(Err(reason))` dropped.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn offer(
        &mut self,
        now: u64,
        slot: u32,
        dir: usize,
        to: Side,
        frame: &[u8],
        flow_hash: u64,
        ecn: u8,
        c: &mut Counters,
    ) -> Option<Result<(), Reason>> {
        if frame.len() > FRAME {
            // It would not fit its slot: refused whole, never cut short
            // (found by the engine fuzz target: a 2,614-byte frame left as
            // 2,048 bytes).
            c.shaper_dropped += 1;
            return Some(Err(Reason::ShaperTooLong));
        }
        let Some(handle) = self.free.pop() else {
            c.shaper_dropped += 1;
            return Some(Err(Reason::ShaperPoolFull));
        };
        let len = frame.len();
        let packet = Packet { handle, len: len as u32, flow_hash: flow_hash as u32, ect: ecn == 1 || ecn == 2 };
        match self.dirs[dir].enqueue(now, slot, packet) {
            ShapeVerdict::Pass(h) => {
                self.free.push(h);
                c.shaper_passed += 1;
                None
            }
            ShapeVerdict::Queued => {
                let at = handle as usize * FRAME;
                self.data[at..at + len].copy_from_slice(&frame[..len]);
                self.lens[handle as usize] = len as u16;
                self.to[handle as usize] = to;
                c.shaper_queued += 1;
                Some(Ok(()))
            }
            ShapeVerdict::Dropped(h, r) => {
                self.free.push(h);
                c.shaper_dropped += 1;
                Some(Err(reason(r)))
            }
        }
    }

    /// Lets the shapers release what is due by `now`.
    pub(crate) fn poll(&mut self, now: u64, c: &mut Counters) {
        for dir in 0..2 {
            let Shaping { dirs, departures, .. } = self;
            departures.clear();
            dirs[dir].poll(now, POLL_BUDGET, departures);
            self.settle(c);
        }
    }

    /// Moves departures to `ready` (releases) or back to the free list (drops, counted).
    fn settle(&mut self, c: &mut Counters) {
        for d in self.departures.drain(..) {
            match d {
                Departure::Release { handle, ecn_mark, .. } => self.ready.push((handle, ecn_mark)),
                Departure::Dropped { handle, reason: r, .. } => {
                    self.free.push(handle);
                    c.shaper_dropped += 1;
                    c.drop(reason(r).into());
                }
            }
        }
    }

    /// Hands out the released frames (marking CE where asked) and frees them.
    pub(crate) fn release(
        &mut self,
        released: &mut u64,
        marked: &mut u64,
        mut out: impl FnMut(Side, &mut [u8]),
    ) -> usize {
        let n = self.ready.len();
        for (handle, mark) in self.ready.drain(..) {
            let h = handle as usize;
            let bytes = &mut self.data[h * FRAME..h * FRAME + usize::from(self.lens[h])];
            *released += 1;
            if mark && wire::nat::mark_ce(bytes) {
                *marked += 1;
            }
            out(self.to[h], bytes);
            self.free.push(handle);
        }
        n
    }

    /// Per-direction shaper stats (upload, download).
    pub(crate) fn stats(&self) -> [shaper::CoreStats; 2] {
        [self.dirs[0].stats(), self.dirs[1].stats()]
    }

    pub(crate) fn member_stats(&self, slot: u32, now: u64) -> [Option<shaper::MemberStats>; 2] {
        [self.dirs[0].member_stats(slot, now), self.dirs[1].member_stats(slot, now)]
    }

    /// Frames held now.
    pub(crate) fn held(&self) -> usize {
        self.lens.len() - self.free.len() - self.ready.len()
    }
}

fn reason(r: shaper::Reason) -> Reason {
    match r {
        shaper::Reason::CodelDrop | shaper::Reason::CodelMark => Reason::ShaperCodelDrop,
        shaper::Reason::SojournLimit => Reason::ShaperSojournLimit,
        shaper::Reason::QueueFull => Reason::ShaperQueueFull,
        shaper::Reason::PoolFull => Reason::ShaperPoolFull,
        shaper::Reason::TooLong => Reason::ShaperTooLong,
        shaper::Reason::NoPlan | shaper::Reason::MemberRemoved => Reason::ShaperMemberRemoved,
    }
}
