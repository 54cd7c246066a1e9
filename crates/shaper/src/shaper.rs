//! One core's shaper for one direction: the calling order and the glue.
//!
//! # Calling order
//! Between batches (control path):
//! - [`Shaper::new`] once per core and direction, with the direction's
//!   shared [`UplinkExchange`] and this core's index in it;
//! - [`Shaper::set_member`] to install, change or remove a member's plan
//!   (a change keeps the queue; a removal hands the queued packets back as
//!   [`Reason::MemberRemoved`] drops).
//!
//! Per batch (packet path):
//! - [`Shaper::enqueue`] for every shaped packet: [`Verdict::Pass`] (send
//!   now; an unloaded member costs two bucket checks), [`Verdict::Queued`]
//!   or [`Verdict::Dropped`];
//! - [`Shaper::poll`] once per loop iteration, at least every half period
//!   of the exchange (the division of the uplink relies on each core
//!   publishing once per period): it releases due packets, at most
//!   `budget` departures per call, into the caller's buffer.
//! - [`Shaper::next_wakeup`] says when polling has something to do, for a
//!   worker that sleeps.
//!
//! `now` is nanoseconds on the clock all cores of the exchange share.
//!
//! # Rates, per epoch
//! At the first call of each epoch the shaper takes its share of the uplink
//! ([`crate::uplink`]), subtracts what its light (not backlogged) members
//! sent lately, and water-fills the rest over its backlogged members. The
//! result is one *fair level* `λ`; a member's rate is `clamp(weight × λ,
//! rate, ceil)`, computed in O(1) whenever the member is touched, so light
//! members need no per-period work at all.
//!
//! # Work per packet does not depend on the number of backlogged members
//! Under overload every member of a core may be backlogged (240,000 of
//! them), while a period holds only ~1,000 packets (4 Mpps, 250 µs). So the
//! per-period work must not be a pass over the backlogged members, and it
//! is not:
//! - **The division** is [`crate::fair::Breakpoints`]: the backlogged
//!   members' claims are aggregated (log-binned breakpoints in Fenwick trees)
//!   when a member enters or leaves the backlog or its plan changes, O(log
//!   bins) each, and the period's solve is one descent, O(log bins) ≈ 12
//!   nodes. The level it finds is exact unless a breakpoint of some plan lies
//!   within 1/64 of it; then it is low by less than 1/64 (each member gets
//!   more than 63/64 of its exact fair rate), and never high (the sum of
//!   allocations stays within the share). The figures for the cross-core
//!   exchange (`guaranteed`, `cap`, `offset + weight × λ`) come from the same
//!   sums, so that exchange is unchanged: lock-free, with its overshoot
//!   bound (the core bucket, not the members' rates, enforces it).
//! - **Re-timing is lazy.** Nobody is re-timed when `λ` changes. A member
//!   takes the new level when next touched: at enqueue, when it comes due
//!   (it is then checked at the new rate and, if not yet conforming, timed
//!   again: a due miss) and at each release, which times its next wait at the
//!   rate of that moment. The lag this introduces: a member waiting in the
//!   wheel when `λ` changes leaves at the time its previous rate gave, so a
//!   change reaches it at most one packet gap (at that rate) late — a rate
//!   increase applies from its next release, and after a decrease it may send
//!   one packet early (at most one packet per member and change, within the
//!   core bucket, so the uplink bound is untouched). In steady overload `λ`
//!   is steady and lazy timing is exact. A dip (e.g. a period in which the
//!   exchange left the core only its floor) must not stall the members timed
//!   during it for a whole gap at the dipped rate: a wait is therefore capped
//!   at the wait at the most generous level of the last [`REF_PERIODS`]
//!   periods (2 ms at 250 µs) when that rate is more than 1/8 higher; if the dip
//!   persists the member is just timed again when it comes due.
//! - **The wheel** looks at a member at most twice per wait (a cascade from
//!   its coarse level, a sweep to the due list), once for waits within its
//!   fine horizon of ~1 s ([`crate::wheel`]).
//!
//! `tests/scale.rs` counts the work (wheel members looked at, due misses,
//! division nodes) per released packet with 1,000, 24,000 and 240,000
//! members all backlogged: ~1.04 each (before this design: 10.6, 231 and
//! 2,305 — the division's passes and the re-timing walk).
//!
//! Why a periodic fair level instead of per-packet virtual time (WF²Q):
//! enforcement stays a token bucket per member plus a timing wheel (O(1)
//! per packet, no sorted structure over members), the same water-filling
//! serves the cross-core division, and a period of 250 µs (500 µs for a
//! worker that naps 200 µs; it is twice the caller's longest poll gap) is
//! far below the timescale of TCP's reaction, so the lag costs no fairness
//! measurable over an RTT.

use std::sync::Arc;

use crate::bucket::Bucket;
use crate::codel::CodelParams;
use crate::fair::{scale, Breakpoints, Claim, Level};
use crate::queue::{pick_flow, Flow, MemberQueue, Pool, QueueParams, MAX_FLOWS_PER_MEMBER, NIL};
use crate::stats::{CoreStats, MemberStats, RateMeter, ReasonCounters};
use crate::uplink::{divide_capacity, CoreFigures, UplinkExchange, PUBLISH_DEADLINE_EIGHTHS};
use crate::wheel::Wheel;
use crate::{Departure, Packet, Plan, Reason, Verdict, BITS_PER_BYTE, NS_PER_SEC};

/// Milliseconds in nanoseconds.
const MS: u64 = 1_000_000;
/// The least rate a member is given, bit/s (so its bucket always refills).
pub const MIN_MEMBER_RATE_BPS: u64 = 8_000;
/// The sojourn limit is never below this many quanta at the member's rate
/// (a slow member's second packet must not count as a flood).
const SOJOURN_LIMIT_MIN_QUANTA: u64 = 4;
/// Light traffic may grow by this fraction (as a shift: ¼) before the core asks for more.
const LIGHT_HEADROOM_SHIFT: u32 = 2;
/// Weight of a new period in the light-rate average (as a shift: ⅛).
const LIGHT_GAIN_SHIFT: u32 = 3;
/// Periods over which the most generous fair level is remembered (2 ms at the default 250 µs period):
/// the reference that caps the wait of a member timed during a dip.
const REF_PERIODS: usize = 8;
/// A member's wait is capped by the reference only if the reference rate exceeds
/// its own by more than this fraction (as a shift: ⅛), so jitter of the level does
/// not wake members early.
const REF_MARGIN_SHIFT: u32 = 3;

/// A core shaper's parameters (the uplink's are in [`crate::UplinkConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// CoDel target (RFC 8289: 5 ms).
    pub codel_target_ns: u64,
    /// CoDel interval (RFC 8289: 100 ms).
    pub codel_interval_ns: u64,
    /// Mark ECN-capable packets instead of dropping them.
    pub ecn: bool,
    /// Packets older than this are dropped at dequeue (unresponsive floods).
    pub sojourn_limit_ns: u64,
    /// Flow queues per member (1 to 128).
    pub flows_per_member: u32,
    /// DRR quantum (RFC 8290: one MTU), also CoDel's "one packet" threshold.
    pub quantum_bytes: u32,
    /// Per-member queue limits.
    pub member_limit_packets: u32,
    pub member_limit_bytes: u32,
    /// Packets the core can hold queued, over all members.
    pub pool_packets: u32,
    /// Wheel tick (Carousel slot granularity).
    pub tick_ns: u64,
    /// Unused: the division among members is no longer iterative (see
    /// [`crate::fair::Breakpoints`]); kept so that configurations still build.
    pub fair_steps: u32,
    /// Member slots are below this.
    pub max_members: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            codel_target_ns: 5 * MS,
            codel_interval_ns: 100 * MS,
            ecn: true,
            sojourn_limit_ns: 10 * MS,
            flows_per_member: 8,
            quantum_bytes: 1_514,
            member_limit_packets: 1_024,
            member_limit_bytes: 1_536 * 1_024,
            pool_packets: 64 * 1_024,
            tick_ns: 65_536,
            fair_steps: 16,
            max_members: 1 << 22,
        }
    }
}

/// Why a shaper cannot be built or a member not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The core index is not below the exchange's number of cores.
    CoreOutOfRange { core: usize, cores: usize },
    /// `flows_per_member` is 0 or above 128.
    FlowsPerMember(u32),
    /// The member slot is not below `max_members`.
    SlotOutOfRange { slot: u32, max: u32 },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::CoreOutOfRange { core, cores } => write!(f, "core {core} is not below the {cores} cores"),
            ConfigError::FlowsPerMember(n) => write!(f, "{n} flows per member (1 to {MAX_FLOWS_PER_MEMBER})"),
            ConfigError::SlotOutOfRange { slot, max } => write!(f, "member slot {slot} is not below {max}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One member's shaping state. Laid out for the pass path (a member with
/// tokens and nothing queued): everything it touches sits in the first
/// cache line, the rest after. With tens of thousands of members the state
/// is not in cache and each line is a miss, so the pass path does not read
/// the plan: the bucket's rate is the plan's allowance under the fair level
/// of `rate_stamp`, and only when the level has changed since (or the plan
/// has: stamp 0) is the plan read to compute it again.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Member {
    // The first line: the pass path.
    bucket: Bucket,
    /// The [`Shaper::level_stamp`] the bucket's rate was computed at; 0: never
    /// (no plan, or a new one).
    rate_stamp: u32,
    /// Index in the backlogged list, `NIL` when nothing is queued (the
    /// queue is empty exactly when the member is not in the list).
    backlog_pos: u32,
    passed_packets: u64,
    meter: RateMeter,
    // The rest: the queue path, the control path, statistics.
    plan: Option<Plan>,
    queue: MemberQueue,
    last_sojourn_ns: u64,
    released_packets: u64,
    released_bytes: u64,
    reasons: ReasonCounters,
}

// The pass path's fields fill the first line, the rest begins on the second.
const _: () = assert!(core::mem::offset_of!(Member, plan) == 64);

/// One core's shaper for one direction. See the module documentation for the calling order.
#[derive(Debug)]
pub struct Shaper<H> {
    config: Config,
    queue_params: QueueParams,
    uplink: Arc<UplinkExchange>,
    core: usize,
    floor_bps: u64,
    members: Vec<Member>,
    /// `flows_per_member` flows per member slot.
    flows: Vec<Flow>,
    pool: Pool<H>,
    wheel: Wheel,
    /// Members with packets queued.
    backlogged: Vec<u32>,
    /// The claims of the backlogged members, aggregated for the division.
    division: Breakpoints,
    /// Bytes queued over all members.
    backlog_bytes: u64,
    /// The fair levels of the last [`REF_PERIODS`] periods (a ring by epoch).
    recent_levels: [Level; REF_PERIODS],
    /// The most generous of `recent_levels`.
    ref_level: Level,
    /// Changes (never to 0) whenever `level` changes what some member is
    /// allowed: a member whose `rate_stamp` is this has its rate already.
    level_stamp: u32,
    now: u64,
    epoch: u64,
    /// Where `epoch` ends: the pass path compares instead of dividing.
    epoch_end_ns: u64,
    level: Level,
    share_bps: u64,
    core_bucket: Bucket,
    /// Bytes sent by members that were not backlogged, since `light_since_ns`.
    light_bytes: u64,
    light_since_ns: u64,
    light_bps: u64,
    meter: RateMeter,
    /// Scratch for the exchange's figures (one per core).
    figures: Vec<CoreFigures>,
    counters: CoreStats,
}

impl<H: Copy> Shaper<H> {
    /// A shaper for core `core` of `uplink`, starting at `now`.
    pub fn new(config: Config, uplink: Arc<UplinkExchange>, core: usize, now: u64) -> Result<Shaper<H>, ConfigError> {
        let cores = uplink.config().cores;
        if core >= cores {
            return Err(ConfigError::CoreOutOfRange { core, cores });
        }
        if config.flows_per_member == 0 || config.flows_per_member > MAX_FLOWS_PER_MEMBER {
            return Err(ConfigError::FlowsPerMember(config.flows_per_member));
        }
        let queue_params = QueueParams {
            codel: CodelParams {
                target_ns: config.codel_target_ns,
                interval_ns: config.codel_interval_ns,
                max_packet_bytes: config.quantum_bytes,
            },
            ecn: config.ecn,
            quantum_bytes: config.quantum_bytes,
            limit_packets: config.member_limit_packets,
            limit_bytes: u64::from(config.member_limit_bytes),
        };
        let floor_bps = uplink.floor_bps();
        let period = uplink.config().period_ns;
        let mut shaper = Shaper {
            config,
            queue_params,
            core,
            floor_bps,
            members: Vec::new(),
            flows: Vec::new(),
            pool: Pool::new(config.pool_packets),
            wheel: Wheel::new(config.tick_ns, now),
            backlogged: Vec::new(),
            division: Breakpoints::new(),
            backlog_bytes: 0,
            recent_levels: [Level::Unlimited { spare: 0 }; REF_PERIODS],
            ref_level: Level::Unlimited { spare: 0 },
            level_stamp: 1,
            now,
            epoch: now / period,
            epoch_end_ns: 0,
            level: Level::Unlimited { spare: 0 },
            share_bps: floor_bps,
            core_bucket: Bucket::empty(floor_bps, 0, now),
            light_bytes: 0,
            light_since_ns: now,
            light_bps: 0,
            meter: RateMeter::default(),
            figures: vec![CoreFigures::default(); cores],
            counters: CoreStats::default(),
            uplink,
        };
        shaper.start_epoch(now);
        Ok(shaper)
    }

    /// Installs, changes (`Some`) or removes (`None`) the plan of member `slot`.
    ///
    /// A change keeps the queue and applies the new rates from now on. A
    /// removal hands every queued packet to `out` as [`Reason::MemberRemoved`].
    /// Adding a member with a new highest slot allocates (control path).
    pub fn set_member(
        &mut self,
        now: u64,
        slot: u32,
        plan: Option<Plan>,
        out: &mut impl Extend<Departure<H>>,
    ) -> Result<(), ConfigError> {
        if slot >= self.config.max_members {
            return Err(ConfigError::SlotOutOfRange { slot, max: self.config.max_members });
        }
        let now = self.advance(now);
        let s = slot as usize;
        let Some(plan) = plan.map(Plan::normalised) else {
            self.remove_member(slot, out);
            return Ok(());
        };
        self.grow(s + 1);
        let allowed = allowed_bps(&plan, &self.level);
        let m = &mut self.members[s];
        if m.plan.is_none() {
            self.counters.members += 1;
            *m = Member { plan: Some(plan), backlog_pos: NIL, rate_stamp: self.level_stamp, ..Member::default() };
            m.bucket = Bucket::full(allowed, u64::from(plan.burst_bytes), now);
        } else {
            let old = m.plan.replace(plan);
            m.bucket.set_rate(now, allowed);
            m.rate_stamp = self.level_stamp;
            m.bucket.set_depth(u64::from(plan.burst_bytes));
            if m.backlog_pos != NIL {
                if let Some(old) = old {
                    remove_claim(&mut self.division, &old);
                }
                add_claim(&mut self.division, &plan);
            }
            if self.wheel.is_waiting(slot) {
                let at = wake_at(&m.bucket, &plan, &self.ref_level, self.wheel.tick_end(now));
                self.wheel.schedule(slot, at);
            }
        }
        Ok(())
    }

    /// A hint that `slot` will be enqueued soon: brings its state into cache
    /// (the first line: what the pass path reads; the second too while the
    /// uplink is contended, when the pass path needs the plan). Never faults.
    #[inline]
    pub fn prefetch_member(&self, slot: u32) {
        if let Some(m) = self.members.get(slot as usize) {
            let p = (m as *const Member).cast::<i8>();
            // While the uplink is contended the fair level moves every
            // period, so the pass path reads the plan (second line) too.
            let contended = !matches!(self.level, Level::Unlimited { .. });
            #[cfg(target_arch = "x86_64")]
            // SAFETY: PREFETCHT0 is a hint; it does not dereference in the
            // language sense and cannot fault. `p` and `p + 64` lie within `m`
            // (a 64-byte-aligned struct of at least 128 bytes).
            unsafe {
                use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch(p, _MM_HINT_T0);
                if contended {
                    _mm_prefetch(p.wrapping_add(64), _MM_HINT_T0);
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (p, contended);
        }
    }

    /// Offers a packet of member `slot` at `now`.
    pub fn enqueue(&mut self, now: u64, slot: u32, packet: Packet<H>) -> Verdict<H> {
        let now = self.advance(now);
        let Packet { handle, len, flow_hash, ect } = packet;
        let s = slot as usize;
        let level_stamp = self.level_stamp;
        let Some(m) = self.members.get_mut(s) else {
            self.counters.reasons.count(Reason::NoPlan);
            return Verdict::Dropped(handle, Reason::NoPlan);
        };
        if m.rate_stamp == level_stamp {
            m.bucket.refill(now);
        } else {
            // The fair level (or the plan) changed since the rate was set.
            let Some(plan) = m.plan else {
                self.counters.reasons.count(Reason::NoPlan);
                return Verdict::Dropped(handle, Reason::NoPlan);
            };
            m.bucket.set_rate(now, allowed_bps(&plan, &self.level));
            m.rate_stamp = level_stamp;
        }
        if len > self.uplink.config().max_packet_bytes {
            m.reasons.count(Reason::TooLong);
            self.counters.reasons.count(Reason::TooLong);
            return Verdict::Dropped(handle, Reason::TooLong);
        }
        if m.backlog_pos == NIL {
            self.core_bucket.refill(now);
            if m.bucket.conforms() && self.core_bucket.conforms() {
                m.bucket.charge(len);
                self.core_bucket.charge(len);
                m.passed_packets += 1;
                m.meter.add(now, len);
                self.meter.add(now, len);
                self.counters.passed_packets += 1;
                self.counters.passed_bytes += u64::from(len);
                self.light_bytes = self.light_bytes.saturating_add(u64::from(len));
                return Verdict::Pass(handle);
            }
        }
        // A member with a rate has a plan (its stamp is 0 otherwise).
        let Some(plan) = m.plan else {
            self.counters.reasons.count(Reason::NoPlan);
            return Verdict::Dropped(handle, Reason::NoPlan);
        };
        let f = self.config.flows_per_member as usize;
        let flows = &mut self.flows[s * f..(s + 1) * f];
        let flow = pick_flow(flows, flow_hash);
        if let Err(reason) = m.queue.enqueue(flows, &mut self.pool, &self.queue_params, flow, handle, len, ect, now) {
            m.reasons.count(reason);
            self.counters.reasons.count(reason);
            return Verdict::Dropped(handle, reason);
        }
        self.backlog_bytes += u64::from(len);
        if m.backlog_pos == NIL {
            m.backlog_pos = self.backlogged.len() as u32;
            self.backlogged.push(slot);
            add_claim(&mut self.division, &plan);
            let tick_end = self.wheel.tick_end(now);
            if m.bucket.conforms_at(tick_end) {
                // Within its rate, only the core bucket held it: it goes
                // before the members that stay backlogged (HTB serves a class
                // under its rate before those that borrow), so a light member
                // does not wait a round of the heavy ones.
                self.wheel.push_sparse(slot);
            } else {
                self.wheel.schedule(slot, wake_at(&m.bucket, &plan, &self.ref_level, tick_end));
            }
        }
        Verdict::Queued
    }

    /// Releases the packets due at `now`: at most `budget` departures
    /// (releases and drops; CoDel may add a few drops beyond it within the
    /// last member served). Returns the number given to `out`.
    pub fn poll(&mut self, now: u64, budget: usize, out: &mut impl Extend<Departure<H>>) -> usize {
        let now = self.advance(now);
        self.wheel.sweep(now);
        self.core_bucket.refill(now);
        let tick_end = self.wheel.tick_end(now);
        let f = self.config.flows_per_member as usize;
        let mut emitted = 0;
        while emitted < budget && self.core_bucket.conforms() {
            let Some(slot) = self.wheel.pop_due() else { break };
            let s = slot as usize;
            let Some(m) = self.members.get_mut(s) else { continue };
            let Some(plan) = m.plan else { continue };
            m.bucket.set_rate(now, allowed_bps(&plan, &self.level));
            m.rate_stamp = self.level_stamp;
            if !m.bucket.conforms_at(tick_end) {
                self.counters.due_misses += 1;
                self.wheel.schedule(slot, wake_at(&m.bucket, &plan, &self.ref_level, tick_end));
                continue;
            }
            let bytes_before = m.queue.bytes;
            let limit = sojourn_limit_ns(&self.config, m.bucket.rate_bps());
            let mut reasons = ReasonCounters::default();
            let mut drops = 0;
            let released = m.queue.dequeue(
                &mut self.flows[s * f..(s + 1) * f],
                &mut self.pool,
                &self.queue_params,
                limit,
                now,
                &mut |handle, reason| {
                    out.extend(Some(Departure::Dropped { handle, member: slot, reason }));
                    reasons.count(reason);
                    drops += 1;
                },
            );
            emitted += drops;
            self.backlog_bytes = self.backlog_bytes.saturating_sub(bytes_before - m.queue.bytes.min(bytes_before));
            for r in Reason::ALL {
                m.reasons.0[r.index()] += reasons.get(r);
                self.counters.reasons.0[r.index()] += reasons.get(r);
            }
            if let Some(d) = released {
                m.bucket.charge(d.len);
                self.core_bucket.charge(d.len);
                m.meter.add(now, d.len);
                self.meter.add(now, d.len);
                m.last_sojourn_ns = d.sojourn_ns;
                m.released_packets += 1;
                m.released_bytes += u64::from(d.len);
                self.counters.released_packets += 1;
                self.counters.released_bytes += u64::from(d.len);
                if d.ecn_mark {
                    m.reasons.count(Reason::CodelMark);
                    self.counters.reasons.count(Reason::CodelMark);
                }
                out.extend(Some(Departure::Release { handle: d.handle, member: slot, ecn_mark: d.ecn_mark }));
                emitted += 1;
            }
            if m.queue.packets == 0 {
                let pos = m.backlog_pos;
                m.backlog_pos = NIL;
                remove_claim(&mut self.division, &plan);
                self.unlist_backlogged(pos);
            } else if m.bucket.conforms_at(tick_end) {
                self.wheel.push_due(slot);
            } else {
                self.wheel.schedule(slot, wake_at(&m.bucket, &plan, &self.ref_level, tick_end));
            }
        }
        emitted
    }

    /// When [`Shaper::poll`] next has work (a hint; polling earlier is harmless).
    pub fn next_wakeup(&self) -> Option<u64> {
        if self.wheel.has_due() {
            return Some(self.core_bucket.conforming_at().max(self.now));
        }
        self.wheel.next_tick_ns()
    }

    /// Statistics of member `slot` at `now`, if it has a plan.
    pub fn member_stats(&self, slot: u32, now: u64) -> Option<MemberStats> {
        let s = slot as usize;
        let m = self.members.get(s)?;
        let plan = m.plan?;
        let f = self.config.flows_per_member as usize;
        let flows = self.flows.get(s * f..(s + 1) * f)?;
        let head = m.queue.head_enqueued_ns(flows, &self.pool);
        Some(MemberStats {
            plan,
            allowed_bps: allowed_bps(&plan, &self.level),
            rate_bps: m.meter.rate_bps(now),
            backlog_packets: m.queue.packets,
            backlog_bytes: m.queue.bytes,
            head_wait_ns: head.map_or(0, |t| now.saturating_sub(t)),
            last_sojourn_ns: m.last_sojourn_ns,
            released_packets: m.released_packets,
            released_bytes: m.released_bytes,
            passed_packets: m.passed_packets,
            reasons: m.reasons,
        })
    }

    /// Statistics of this core's shaper.
    pub fn stats(&self) -> CoreStats {
        let rate = self.meter.rate_bps(self.now);
        let work = self.wheel.work();
        CoreStats {
            backlogged_members: self.backlogged.len() as u32,
            backlog_packets: self.pool.used(),
            backlog_bytes: self.backlog_bytes,
            share_bps: self.share_bps,
            rate_bps: rate,
            load_ppm: scale(u128::from(rate), 1_000_000, u128::from(self.share_bps.max(1))) as u64,
            fair_level: match self.level {
                Level::Finite(l) => l,
                Level::Scaled { .. } => 0,
                Level::Unlimited { .. } => u64::MAX,
            },
            light_bps: self.light_bps,
            epoch: self.epoch,
            slots_swept: work.slots_swept,
            members_swept: work.members_swept,
            division_work: self.division.work(),
            ..self.counters
        }
    }

    /// The core's uplink share in the current epoch, bit/s.
    pub fn share_bps(&self) -> u64 {
        self.share_bps
    }

    /// Clamps `now` to be monotonic and starts a new epoch if one began.
    fn advance(&mut self, now: u64) -> u64 {
        let now = now.max(self.now);
        self.now = now;
        // `now` only grows, so the epoch changes exactly when `now`
        // reaches its end (the division settles the one end that saturates).
        if now >= self.epoch_end_ns && now / self.uplink.config().period_ns != self.epoch {
            self.start_epoch(now);
        }
        now
    }

    /// The per-period work: close the old epoch's bucket at the old share,
    /// take the new share, divide it among members, publish figures.
    fn start_epoch(&mut self, now: u64) {
        let period = self.uplink.config().period_ns;
        let epoch = now / period;
        let start = epoch.saturating_mul(period);
        if epoch > self.epoch {
            let old_end = self.epoch.saturating_add(1).saturating_mul(period);
            self.core_bucket.refill(old_end);
            if epoch > self.epoch + 1 {
                // Skipped epochs: the others counted us as idle, so we had the floor.
                self.core_bucket.set_rate(old_end, self.floor_bps);
                self.core_bucket.set_depth(self.core_depth_bytes(self.floor_bps));
                self.core_bucket.refill(start);
            }
        }
        // The light rate over the closed epoch(s).
        let elapsed = start.saturating_sub(self.light_since_ns);
        if elapsed > 0 {
            let sample = u128::from(self.light_bytes) * u128::from(BITS_PER_BYTE * NS_PER_SEC) / u128::from(elapsed);
            let sample = u64::try_from(sample).unwrap_or(u64::MAX);
            self.light_bps = self.light_bps - (self.light_bps >> LIGHT_GAIN_SHIFT) + (sample >> LIGHT_GAIN_SHIFT);
            self.light_bytes = 0;
            self.light_since_ns = start;
        }
        self.uplink.read_all(epoch.checked_sub(1), &mut self.figures);
        let share = divide_capacity(self.uplink.config(), self.floor_bps, &self.figures, self.core);
        self.core_bucket.set_rate(start, share);
        self.core_bucket.set_depth(self.core_depth_bytes(share));
        self.share_bps = share;
        self.epoch = epoch;
        self.epoch_end_ns = epoch.saturating_add(1).saturating_mul(period);
        let figures = self.divide_among_members();
        let deadline = u64::try_from(u128::from(period) * u128::from(PUBLISH_DEADLINE_EIGHTHS) / 8).unwrap_or(period);
        if now - start < deadline {
            self.uplink.publish(self.core, epoch, &figures);
        } else {
            self.counters.late_epochs += 1;
        }
    }

    /// Water-fills the core's share (less light traffic) over the backlogged
    /// members and returns the figures to publish. O(log bins), whatever the
    /// number of backlogged members: their claims are aggregated as they
    /// enter and leave the backlog, and nobody is re-timed here (each member
    /// takes the new level when next touched; see the module documentation).
    fn divide_among_members(&mut self) -> CoreFigures {
        let target = u128::from(self.share_bps.saturating_sub(self.light_bps));
        let solution = self.division.solve(target);
        if !same_allocations(&self.level, &solution.level) {
            self.level_stamp = self.level_stamp.wrapping_add(1).max(1);
        }
        self.level = solution.level;
        self.recent_levels[(self.epoch % REF_PERIODS as u64) as usize] = solution.level;
        self.ref_level = self.recent_levels.iter().copied().fold(solution.level, most_generous);

        let light = u128::from(self.light_bps);
        let guaranteed = light + self.division.rate_sum();
        let cap = light + (light >> LIGHT_HEADROOM_SHIFT) + self.division.ceil_sum();
        let clip = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        CoreFigures {
            light_bps: clip(light),
            guaranteed_bps: clip(guaranteed),
            offset_bps: clip(light + solution.offset),
            weight: clip(solution.slope),
            cap_bps: clip(cap),
        }
    }

    /// The core bucket's depth at a share: a period's worth, at least the floor.
    fn core_depth_bytes(&self, share_bps: u64) -> u64 {
        let c = self.uplink.config();
        let per_period = u128::from(share_bps) * u128::from(c.period_ns) / u128::from(BITS_PER_BYTE * NS_PER_SEC);
        u64::try_from(per_period).unwrap_or(u64::MAX).max(u64::from(c.core_burst_floor_bytes))
    }

    /// Makes room for `more` member slots beyond those made (at most up to
    /// the configured limit) without creating them: call it on the control
    /// path with the number of members a policy has (an upper bound of the
    /// members this core may yet meet), so that a member's first packet, on
    /// the packet path, never reallocates the member tables.
    pub fn reserve(&mut self, more: usize) {
        let members = self.members.len().saturating_add(more).min(self.config.max_members as usize);
        let more = members - self.members.len().min(members);
        self.members.reserve(more);
        self.flows.reserve(more * self.config.flows_per_member as usize);
        self.wheel.reserve(members);
        self.backlogged.reserve(members.saturating_sub(self.backlogged.len()));
    }

    fn grow(&mut self, members: usize) {
        if members <= self.members.len() {
            return;
        }
        self.members.resize(members, Member { backlog_pos: NIL, ..Member::default() });
        self.flows.resize(members * self.config.flows_per_member as usize, Flow::default());
        self.wheel.grow(members);
        // The backlogged list never reallocates on the packet path.
        self.backlogged.reserve(members.saturating_sub(self.backlogged.len()));
    }

    fn remove_member(&mut self, slot: u32, out: &mut impl Extend<Departure<H>>) {
        let s = slot as usize;
        let f = self.config.flows_per_member as usize;
        let Some(m) = self.members.get_mut(s) else { return };
        if m.plan.is_none() {
            return;
        }
        let mut drained = 0u64;
        self.backlog_bytes = self.backlog_bytes.saturating_sub(m.queue.bytes);
        m.queue.drain(&mut self.flows[s * f..(s + 1) * f], &mut self.pool, &mut |handle| {
            out.extend(Some(Departure::Dropped { handle, member: slot, reason: Reason::MemberRemoved }));
            drained += 1;
        });
        self.counters.reasons.0[Reason::MemberRemoved.index()] += drained;
        let pos = m.backlog_pos;
        if pos != NIL {
            if let Some(plan) = m.plan {
                remove_claim(&mut self.division, &plan);
            }
        }
        *m = Member { backlog_pos: NIL, ..Member::default() };
        self.counters.members = self.counters.members.saturating_sub(1);
        self.wheel.remove(slot);
        self.unlist_backlogged(pos);
    }

    /// Removes the entry at `pos` of the backlogged list (swap-remove).
    fn unlist_backlogged(&mut self, pos: u32) {
        let p = pos as usize;
        if p >= self.backlogged.len() {
            return;
        }
        self.backlogged.swap_remove(p);
        if let Some(&moved) = self.backlogged.get(p) {
            if let Some(m) = self.members.get_mut(moved as usize) {
                m.backlog_pos = pos;
            }
        }
    }
}

/// A member's claim in the division: its rate, its ceiling, its weight.
fn member_claim(plan: &Plan) -> Claim {
    Claim { offset: 0, weight: u64::from(plan.weight), lo: u128::from(plan.rate_bps), hi: u128::from(plan.ceil_bps) }
}

/// Adds a backlogged member's claim to the division.
fn add_claim(division: &mut Breakpoints, plan: &Plan) {
    division.add(plan.rate_bps, plan.ceil_bps, u64::from(plan.weight));
}

/// Removes a member's claim (added with the same plan) from the division.
fn remove_claim(division: &mut Breakpoints, plan: &Plan) {
    division.remove(plan.rate_bps, plan.ceil_bps, u64::from(plan.weight));
}

/// When a member whose bucket does not conform should be looked at again:
/// when it conforms at its current rate, or earlier if the most generous
/// level of the last [`REF_PERIODS`] periods would give it a rate more than
/// 1/8 higher (it was timed during a dip; see the module documentation).
/// Never before `not_before` (the end of the current tick, where a member that
/// does not conform there is looked at again; earlier would put it straight
/// back on the due list).
fn wake_at(bucket: &Bucket, plan: &Plan, ref_level: &Level, not_before: u64) -> u64 {
    let at = bucket.conforming_at();
    let rate = bucket.rate_bps();
    let ref_rate = allowed_bps(plan, ref_level);
    if ref_rate > rate.saturating_add(rate >> REF_MARGIN_SHIFT) {
        at.min(bucket.conforming_at_rate(ref_rate).max(not_before))
    } else {
        at
    }
}

/// Whether every member is allowed the same under `a` as under `b`
/// (unconstrained levels differ only in their spare, which nobody is given).
fn same_allocations(a: &Level, b: &Level) -> bool {
    matches!((a, b), (Level::Unlimited { .. }, Level::Unlimited { .. })) || a == b
}

/// The more generous of two levels: every member's allocation under it is at
/// least its allocation under the other (Scaled < Finite < Unlimited).
fn most_generous(a: Level, b: Level) -> Level {
    let rank = |l: &Level| match *l {
        Level::Scaled { num, den } => (0u8, if den == 0 { 0.0 } else { num as f64 / den as f64 }),
        Level::Finite(x) => (1, x as f64),
        Level::Unlimited { .. } => (2, 0.0),
    };
    let (ra, rb) = (rank(&a), rank(&b));
    if (rb.0, rb.1) > (ra.0, ra.1) {
        b
    } else {
        a
    }
}

/// What a member may send under the core's current fair level.
fn allowed_bps(plan: &Plan, level: &Level) -> u64 {
    let rate = level.allocation(&member_claim(plan));
    u64::try_from(rate).unwrap_or(u64::MAX).max(MIN_MEMBER_RATE_BPS)
}

/// The sojourn limit for a member sending at `rate_bps`.
fn sojourn_limit_ns(config: &Config, rate_bps: u64) -> u64 {
    let quanta_bits = u128::from(SOJOURN_LIMIT_MIN_QUANTA * u64::from(config.quantum_bytes) * BITS_PER_BYTE);
    let drain_ns = quanta_bits * u128::from(NS_PER_SEC) / u128::from(rate_bps.max(1));
    config.sojourn_limit_ns.max(u64::try_from(drain_ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UplinkConfig;

    #[test]
    fn reserved_members_are_made_without_reallocating() {
        let uplink = Arc::new(UplinkExchange::new(UplinkConfig::new(1_000_000_000, 1)));
        let mut s: Shaper<u32> = Shaper::new(Config::default(), uplink, 0, 0).unwrap();
        s.reserve(5_000);
        let (members, flows) = (s.members.as_ptr(), s.flows.as_ptr());
        let plan = Plan { rate_bps: 2_000_000, ceil_bps: 4_000_000, burst_bytes: 3_000, weight: 1 };
        let mut out = Vec::new();
        // In the order a core meets members: any slot, first packet first.
        for slot in (0..5_000).rev().step_by(7).chain(0..5_000) {
            s.set_member(0, slot, Some(plan), &mut out).unwrap();
        }
        assert_eq!(s.members.len(), 5_000);
        assert_eq!((s.members.as_ptr(), s.flows.as_ptr()), (members, flows), "no reallocation");
    }
}
