//! [`Lockstep`]: the workers of [`crate::Dataplane`] run in the caller's
//! thread, one step each in turn, on the caller's clock.
//!
//! The loop is the live one ([`Worker::step`]): steering, handoff between
//! workers, the engine, egress (routing when given a router), the shapers'
//! releases, transmission and stats. Only the pacing is left out: nothing
//! here reads a clock, sleeps or waits, so `torwart replay` and the tests
//! see exactly what the gateway would do, in capture time or virtual time,
//! and the same run gives the same bytes every time.

use crate::flows::{self, FlowQueries};
use crate::handoff;
use crate::stats::WorkerStats;
use crate::worker::Worker;
use crate::{Kept, Shared, WorkerSetup, HANDOFF_DEPTH};
use arc_swap::ArcSwap;
use engine::Time;
use policy::Generation;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Most rounds [`Lockstep::settle`] takes at one instant: frames cross
/// between workers at most once (and an ICMP error is reinjected once),
/// so a handful suffice; the bound keeps a bug from spinning.
const MAX_ROUNDS: usize = 64;

/// Workers stepped by the caller.
pub struct Lockstep {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    queries: FlowQueries,
}

impl std::fmt::Debug for Lockstep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockstep").field("workers", &self.workers.len()).finish_non_exhaustive()
    }
}

impl Lockstep {
    /// The workers of `setups` (CPUs are ignored), starting at `now`, with
    /// the published policy `policy` if any.
    pub fn new(setups: Vec<WorkerSetup>, policy: Option<Arc<ArcSwap<Generation>>>, now: Time) -> Lockstep {
        let n = setups.len();
        let shared = Arc::new(Shared {
            policy,
            stop: AtomicBool::new(false),
            stats: (0..n).map(|_| ArcSwap::from_pointee(WorkerStats::default())).collect(),
        });
        let rings = handoff::mesh(n, HANDOFF_DEPTH, io::DEFAULT_FRAME_CAPACITY);
        let (query_ends, queries) = flows::links(Arc::clone(&shared), n);
        let workers = setups
            .into_iter()
            .zip(rings.into_iter().zip(query_ends))
            .map(|(s, (ends, query_end))| {
                Worker::new(s.config, s.ports, ends, s.egress, Arc::clone(&shared), s.engine, now)
                    .with_generation(s.generation)
                    .with_queries(query_end)
            })
            .collect();
        Lockstep { shared, workers, queries }
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// A handle on the workers' flow tables: a query started with it
    /// ([`FlowQueries::start`]) is answered as the caller steps the workers.
    pub fn flow_queries(&self) -> FlowQueries {
        self.queries.clone()
    }

    /// One step of every worker, in index order, at `now`; the frames handled.
    pub fn step(&mut self, now: Time) -> usize {
        self.workers.iter_mut().map(|w| w.step(now).work).sum()
    }

    /// Steps every worker at `now` until none has anything left to do
    /// (frames handed between them included); the frames handled.
    pub fn settle(&mut self, now: Time) -> usize {
        let mut total = 0;
        for _ in 0..MAX_ROUNDS {
            let work = self.step(now);
            total += work;
            if work == 0 && self.workers.iter().all(|w| w.handed_waiting() == 0) {
                break;
            }
        }
        total
    }

    /// Frames the engines hold (shaper queues, incomplete datagrams).
    pub fn holding(&self) -> usize {
        self.workers.iter().map(Worker::holding).sum()
    }

    /// Frames the shapers hold (they come out as time passes).
    pub fn shaper_held(&self) -> usize {
        self.workers.iter().map(Worker::shaper_held).sum()
    }

    /// Every worker's stats as of `now`.
    pub fn stats(&mut self, now: Time) -> Vec<Arc<WorkerStats>> {
        for w in &mut self.workers {
            w.publish(now);
        }
        self.published()
    }

    /// Every worker's stats as it last published them (every
    /// `stats_every` as it steps).
    pub fn published(&self) -> Vec<Arc<WorkerStats>> {
        self.shared.stats.iter().map(|s| s.load_full()).collect()
    }

    /// Stops as the live dataplane does (no more receiving, what was
    /// handed over is drained, the rest transmitted) at `now`; returns the
    /// final stats and each worker's state.
    pub fn finish(mut self, now: Time) -> (Vec<Arc<WorkerStats>>, Vec<Kept>) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for _ in 0..MAX_ROUNDS {
            let mut done = true;
            for w in &mut self.workers {
                done &= w.step(now).done;
            }
            if done {
                break;
            }
        }
        let kept = self.workers.into_iter().map(|w| w.finish(now)).collect();
        (self.shared.stats.iter().map(|s| s.load_full()).collect(), kept)
    }
}
