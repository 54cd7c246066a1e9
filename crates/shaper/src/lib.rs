//! torwart's per-member traffic shaper: plans, fair queues with CoDel, a
//! Carousel timing wheel and lock-free uplink fairness across cores.
//!
//! # What
//! A [`Shaper`] shapes *one direction* of the traffic of the members one
//! worker core owns. The engine keeps two per core (upload and download),
//! each with its own [`UplinkExchange`]; the directions share nothing, which
//! keeps every structure single-purpose and lets a direction's capacity and
//! period differ. Members without a plan never reach the shaper.
//!
//! Per member ([`Plan`]): a guaranteed `rate`, a `ceil`ing, a `burst` and a
//! `weight`, with HTB's meaning: a member gets at least its rate when the
//! uplink allows, borrows up to its ceiling when others leave capacity
//! unused, and shares a congested uplink max-min fairly by weight, so heavy
//! users are slowed first and light users are not touched.
//!
//! # Why
//! The Linux box this replaces shapes with one HTB qdisc, serialised by the
//! qdisc lock, with FIFOs that let queueing delay reach 300 ms. Here each
//! core owns its members' queues outright (no lock), every member queue is a
//! small fq_codel (so delay stays near CoDel's target and a game or a call
//! next to a bulk upload of the same member does not queue behind it), and
//! the uplink's capacity is divided between cores by exchanging a few
//! numbers per core every few hundred microseconds ([`uplink`]).
//!
//! # How (one paragraph per module)
//! - [`fair`]: the water-filling solvers. Given claims `clamp(offset + weight
//!   × level, lo, hi)` and a target, they find the highest *fair level* whose
//!   allocations fit. [`fair::divide`] scans the claims, and divides the uplink
//!   across cores (on every core, from the same published figures, so that
//!   every core computes the same split); [`fair::Breakpoints`] keeps a core's
//!   backlogged members' claims aggregated, so the division among them costs
//!   O(log bins) per period whatever their number.
//! - [`bucket`]: token buckets counted in nanobits (bits × 10⁹), so that a
//!   refill is `rate_bps × elapsed_ns` exactly, with no rounding drift.
//! - [`codel`] and [`queue`]: a fixed-capacity packet pool per core and, per
//!   member, a few flow queues served by deficit round robin with new
//!   (sparse) flows first, each with CoDel (RFC 8289) at dequeue, as fq_codel
//!   (RFC 8290) does.
//! - [`wheel`]: Carousel's timing wheel (two levels), keyed by each
//!   backlogged member's next departure time; releasing costs O(released +
//!   slots advanced), whatever the number of members.
//! - [`uplink`]: the cross-core exchange and the per-epoch division of the
//!   capacity, with the overshoot bound and its proof.
//! - [`shaper`]: ties it together; documents the calling order.
//!
//! # Invariants
//! - Every handle given to [`Shaper::enqueue`] comes back exactly once:
//!   as [`Verdict::Pass`] or [`Verdict::Dropped`] at once, or later as a
//!   [`Departure`] from [`Shaper::poll`] or [`Shaper::set_member`].
//! - Nothing allocates on the packet path: the pool and the wheel are sized
//!   at construction, member state when a member is added.
//! - Nothing reads a clock: `now` (nanoseconds, any epoch, monotonic per
//!   shaper; a `now` that goes back counts as the latest seen) is an argument.
//! - No input panics: rate arithmetic is done in `u128`/`i128` or saturates.

pub mod bucket;
pub mod codel;
pub mod fair;
pub mod queue;
pub mod shaper;
pub mod stats;
pub mod uplink;
pub mod wheel;

pub use shaper::{Config, ConfigError, Shaper};
pub use stats::{CoreStats, MemberStats};
pub use uplink::{UplinkConfig, UplinkExchange};

/// What a member's plan allows in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Guaranteed rate in bit/s (given if the uplink allows).
    pub rate_bps: u64,
    /// Upper limit in bit/s, even on an idle uplink. Raised to `rate_bps` if below.
    pub ceil_bps: u64,
    /// Bytes the member may send at once after being idle (token bucket depth).
    pub burst_bytes: u32,
    /// Share of a congested uplink relative to other plans; 0 counts as 1.
    pub weight: u32,
}

impl Plan {
    /// The plan with its fields made consistent: `ceil ≥ rate`, `weight ≥ 1`.
    pub fn normalised(self) -> Plan {
        Plan { ceil_bps: self.ceil_bps.max(self.rate_bps), weight: self.weight.max(1), ..self }
    }
}

/// A packet as the shaper sees it: the caller's handle and what shaping needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<H> {
    /// Opaque to the shaper (the engine uses an index into its frame pool).
    pub handle: H,
    /// Bytes on the wire that count against the plan.
    pub len: u32,
    /// Hash of the flow's 5-tuple; picks the member's flow queue.
    pub flow_hash: u32,
    /// ECN-capable transport (ECT(0)/ECT(1)): CoDel marks instead of dropping.
    pub ect: bool,
}

/// What [`Shaper::enqueue`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<H> {
    /// Send it now: the member had tokens and nothing queued.
    Pass(H),
    /// Queued: it comes out of [`Shaper::poll`] later, released or dropped.
    Queued,
    /// Dropped now; the caller frees the handle.
    Dropped(H, Reason),
}

/// A packet leaving the shaper through [`Shaper::poll`] or [`Shaper::set_member`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure<H> {
    /// Send it. With `ecn_mark` the caller sets the ECN field to CE (RFC 3168).
    Release { handle: H, member: u32, ecn_mark: bool },
    /// Drop it and free the handle.
    Dropped { handle: H, member: u32, reason: Reason },
}

/// Why the shaper dropped or marked a packet. Each is a counter per member and per core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// CoDel found the flow's queue standing above target for an interval and dropped.
    CodelDrop,
    /// As `CodelDrop`, but the packet was ECN-capable: marked CE and released (not a drop).
    CodelMark,
    /// The packet waited longer than the sojourn limit (an unresponsive flood); dropped at dequeue.
    SojournLimit,
    /// The member's queue was at its packet or byte limit (tail drop).
    QueueFull,
    /// The core's packet pool was exhausted (tail drop).
    PoolFull,
    /// Longer than the configured maximum packet size.
    TooLong,
    /// The member has no plan (the engine should not have sent it here).
    NoPlan,
    /// The member's plan was removed while packets were queued.
    MemberRemoved,
}

impl Reason {
    /// All reasons, in counter order.
    pub const ALL: [Reason; 8] = [
        Reason::CodelDrop,
        Reason::CodelMark,
        Reason::SojournLimit,
        Reason::QueueFull,
        Reason::PoolFull,
        Reason::TooLong,
        Reason::NoPlan,
        Reason::MemberRemoved,
    ];
    /// Number of reasons (length of the counter arrays).
    pub const COUNT: usize = Reason::ALL.len();

    /// Index into counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Name for metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::CodelDrop => "codel_drop",
            Reason::CodelMark => "codel_mark",
            Reason::SojournLimit => "sojourn_limit",
            Reason::QueueFull => "queue_full",
            Reason::PoolFull => "pool_full",
            Reason::TooLong => "too_long",
            Reason::NoPlan => "no_plan",
            Reason::MemberRemoved => "member_removed",
        }
    }

    /// Whether the packet is lost (everything but a mark).
    pub const fn is_drop(self) -> bool {
        !matches!(self, Reason::CodelMark)
    }
}

/// Nanoseconds per second.
pub(crate) const NS_PER_SEC: u64 = 1_000_000_000;
/// Bits per byte.
pub(crate) const BITS_PER_BYTE: u64 = 8;
