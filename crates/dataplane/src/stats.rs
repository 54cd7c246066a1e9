//! What a worker publishes about itself: a snapshot, swapped in every so
//! often, that the control plane reads (totals, accounting, metrics, the
//! timeout histogram) without touching the worker's own state.

use crate::counters::DataplaneCounters;
use crate::egress::EgressStats;
use crate::timeouts::TimeoutHistogram;
use engine::members::Account;
use engine::{Counters, Time};

/// One worker's state at `at`.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    pub worker: usize,
    pub at: Time,
    /// Policy generation the worker runs (0 = none yet).
    pub generation: u64,
    pub engine: Counters,
    pub dataplane: DataplaneCounters,
    pub flows: usize,
    /// The flows this worker's table holds at most (`engine.max_flows`).
    pub flow_capacity: usize,
    pub nat_bindings: usize,
    /// Per-member totals counted on this worker.
    pub accounts: Vec<Account>,
    pub egress: EgressStats,
    /// This worker's shapers (upload, download), if shaping is on.
    pub shaper: Option<[shaper::CoreStats; 2]>,
    /// Shaping of each member with a plan on this worker: (member id, [upload, download]).
    pub shaped: Vec<(u32, [Option<shaper::MemberStats>; 2])>,
    /// Frames the shapers hold.
    pub shaper_held: usize,
    /// Frames waiting for their next hop's resolution.
    pub waiting: usize,
    /// The flows by remaining time of the last complete pass over the table.
    pub timeouts: TimeoutHistogram,
}

/// Totals over workers.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub engine: Counters,
    pub dataplane: DataplaneCounters,
    pub flows: usize,
    pub nat_bindings: usize,
    /// The workers' histograms summed ([`TimeoutHistogram::sum`]).
    pub timeouts: TimeoutHistogram,
}

impl Totals {
    pub fn of<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Totals {
        let mut t = Totals::default();
        let mut timeouts = Vec::new();
        for w in workers {
            t.engine.add(&w.engine);
            t.dataplane.add(&w.dataplane);
            t.flows += w.flows;
            t.nat_bindings += w.nat_bindings;
            timeouts.push(&w.timeouts);
        }
        t.timeouts = TimeoutHistogram::sum(timeouts);
        t
    }
}
