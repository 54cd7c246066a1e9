//! torwart's live dataplane: the only crate that owns threads.
//!
//! [`Dataplane::start`] starts one [`worker`] per configured core. Each
//! worker owns an [`engine::Engine`], one queue of every port (an AF_XDP
//! socket per port and queue in production, any [`io::PacketIo`] in tests),
//! its ends of the [`handoff`] rings, and an [`egress`]. Workers share
//! nothing else: the policy generation and route tables are read through
//! one atomic pointer each, and each worker publishes a [`stats`] snapshot
//! that the control plane reads.
//!
//! Member ownership: member `m` belongs to worker `policy::owner(m, n)`
//! (its stable id modulo the worker count), so it stays where it is across
//! reloads and members spread evenly. [`steer`] finds a frame's member.
//!
//! Two things cross to the control plane besides the snapshots, each
//! through rings of its own: the pair's sync ([`synclink`]) and flow
//! listings for the API ([`flows`]), which each worker answers between
//! batches, a bounded slice of its table per step. The snapshot carries a
//! histogram of flows by remaining time ([`timeouts`]), made the same way.
//!
//! The loop is written once ([`worker::Worker::step`], driven by a clock
//! reading it is given): the live threads read the real clock, and
//! [`Lockstep`] runs the same workers in the caller's thread on the
//! caller's clock, for replay and tests.

pub mod counters;
pub mod egress;
pub mod flows;
pub mod handoff;
pub mod lockstep;
pub mod stats;
pub mod steer;
pub mod synclink;
pub mod timeouts;
pub mod worker;

pub use counters::{DataplaneCounters, Drop};
pub use egress::Egress;
pub use flows::{FlowFilter, FlowInfo, FlowQueries, PendingQuery, QueryError};
pub use lockstep::Lockstep;
pub use stats::{Totals, WorkerStats};
pub use timeouts::TimeoutHistogram;
pub use worker::{monotonic_now, Idle, Pacer, Pause, Step, WorkerConfig};

use arc_swap::ArcSwap;
use engine::Side;
use io::PacketIo;
use policy::Generation;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One queue of one port, as a worker sees it.
pub struct PortQueue {
    /// The port's name (interface) for logs.
    pub name: String,
    pub side: Side,
    pub io: Box<dyn PacketIo + Send>,
}

impl std::fmt::Debug for PortQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortQueue").field("name", &self.name).field("side", &self.side).finish()
    }
}

/// What workers share, each part read-only or written by one party.
#[derive(Debug)]
pub struct Shared {
    /// The published policy (none: connection tracking alone).
    pub policy: Option<Arc<ArcSwap<Generation>>>,
    /// Set once to stop the workers.
    pub stop: AtomicBool,
    /// Worker `i` stores its snapshot in `stats[i]`.
    pub stats: Vec<ArcSwap<WorkerStats>>,
}

/// One worker to start: its configuration, its port queues (by port index,
/// the same order on every worker) and its egress.
#[derive(Debug)]
pub struct WorkerSetup {
    pub config: WorkerConfig,
    pub ports: Vec<PortQueue>,
    pub egress: Egress,
    /// An engine prepared beforehand (a benchmark's warm flow table, or a
    /// stopped worker's [`Kept`] state); `None` makes a fresh one from
    /// `config.engine`.
    pub engine: Option<engine::Engine>,
    /// The policy generation `engine` runs, if it ran one: a new policy is
    /// then installed as a change from it (flows of members it ended or
    /// changed end), not as a first policy.
    pub generation: Option<Arc<Generation>>,
}

/// What a stopped worker leaves for the one started after it: its engine
/// (flows, NAT bindings, accounts), the policy generation it ran and, in
/// a pair, its rings to the sync thread (what the other box sent meanwhile
/// waits in them, acknowledged already: new rings would lose it).
#[derive(Debug)]
pub struct Kept {
    pub engine: engine::Engine,
    pub generation: Option<Arc<Generation>>,
    pub sync: Option<synclink::WorkerSync>,
}

/// Why [`Dataplane::try_start`] failed, with the state of every worker
/// (by index) handed back, so that nothing they counted is lost.
#[derive(Debug)]
pub struct StartError {
    pub error: std::io::Error,
    pub kept: Vec<Option<Kept>>,
}

/// Running workers.
#[derive(Debug)]
pub struct Dataplane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Option<Kept>>>,
    queries: FlowQueries,
}

/// Frames per direction and pair of workers in the handoff rings.
pub const HANDOFF_DEPTH: usize = 1024;

impl Dataplane {
    /// Starts the workers (one thread each, named `torwart-w<i>`).
    pub fn start(setups: Vec<WorkerSetup>, policy: Option<Arc<ArcSwap<Generation>>>) -> std::io::Result<Dataplane> {
        Dataplane::try_start(setups, policy).map_err(|e| e.error)
    }

    /// As [`try_start`](Self::try_start), for one box of a pair: worker `i`
    /// gets `sync[i]`, its rings to the sync thread ([`synclink::links`]).
    pub fn try_start_synced(
        setups: Vec<WorkerSetup>,
        policy: Option<Arc<ArcSwap<Generation>>>,
        sync: Vec<synclink::WorkerSync>,
    ) -> Result<Dataplane, StartError> {
        Dataplane::spawn(setups, policy, sync.into_iter().map(Some).collect())
    }

    /// As [`start`](Self::start), and on failure hands back every worker's
    /// engine (those given in the setups and those that ran).
    pub fn try_start(
        setups: Vec<WorkerSetup>,
        policy: Option<Arc<ArcSwap<Generation>>>,
    ) -> Result<Dataplane, StartError> {
        let n = setups.len();
        Dataplane::spawn(setups, policy, (0..n).map(|_| None).collect())
    }

    fn spawn(
        setups: Vec<WorkerSetup>,
        policy: Option<Arc<ArcSwap<Generation>>>,
        sync: Vec<Option<synclink::WorkerSync>>,
    ) -> Result<Dataplane, StartError> {
        let n = setups.len();
        let shared = Arc::new(Shared {
            policy,
            stop: AtomicBool::new(false),
            stats: (0..n).map(|_| ArcSwap::from_pointee(WorkerStats::default())).collect(),
        });
        let mut threads = Vec::with_capacity(n);
        let rings = handoff::mesh(n, HANDOFF_DEPTH, io::DEFAULT_FRAME_CAPACITY);
        let (query_ends, queries) = flows::links(Arc::clone(&shared), n);
        // Each worker pins itself first and says how that went; a worker
        // that cannot be pinned where the operator asked stops them all.
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let stop_all = |threads: Vec<JoinHandle<Option<Kept>>>, rest: Vec<Option<Kept>>, error| {
            shared.stop.store(true, Ordering::Relaxed);
            let mut kept: Vec<Option<Kept>> = threads.into_iter().map(|t| t.join().ok().flatten()).collect();
            kept.extend(rest);
            StartError { error, kept }
        };
        let mut setups = setups.into_iter().zip(rings.into_iter().zip(sync).zip(query_ends));
        while let Some((setup, ((ends, sync), query_end))) = setups.next() {
            let shared2 = Arc::clone(&shared);
            let pinned_tx = pinned_tx.clone();
            let name = format!("torwart-w{}", setup.config.index);
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                let (index, cpu) = (setup.config.index, setup.config.cpu);
                let pinned = cpu.map_or(Ok(()), |cpu| {
                    worker::pin_to(cpu).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("worker {index}: cannot pin it to CPU {cpu}: {e}"))
                    })
                });
                let ok = pinned.is_ok();
                let _ = pinned_tx.send(pinned);
                drop(pinned_tx);
                if !ok {
                    return setup.engine.map(|engine| Kept { engine, generation: setup.generation, sync: None });
                }
                let now = worker::monotonic_now();
                let w = worker::Worker::new(setup.config, setup.ports, ends, setup.egress, shared2, setup.engine, now);
                Some(w.with_generation(setup.generation).with_sync(sync).with_queries(query_end).run())
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The setup moved into the closure that failed to
                    // spawn is gone with it; the others are handed back.
                    let rest = setups
                        .map(|(s, _)| s.engine.map(|engine| Kept { engine, generation: s.generation, sync: None }))
                        .collect();
                    return Err(stop_all(threads, rest, e));
                }
            }
        }
        drop(pinned_tx);
        for _ in 0..n {
            let error = match pinned_rx.recv() {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => std::io::Error::other("a worker ended before it started"),
            };
            return Err(stop_all(threads, Vec::new(), error));
        }
        Ok(Dataplane { shared, threads, queries })
    }

    /// A handle on these workers' flow tables for listings, for the
    /// control side to keep (it says [`QueryError::Stopped`] once they stop).
    pub fn flow_queries(&self) -> FlowQueries {
        self.queries.clone()
    }

    /// The workers' latest snapshots.
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.shared.stats.iter().map(|s| s.load_full()).collect()
    }

    /// True while every worker runs.
    pub fn running(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    /// Stops the workers: they stop receiving, drain the handoff rings,
    /// transmit, publish final stats and return. Returns those stats.
    pub fn stop(self) -> Vec<Arc<WorkerStats>> {
        self.stop_keeping_engines().0
    }

    /// Stops the workers as [`stop`](Self::stop) does and also returns
    /// their engines (by worker index; a worker that panicked has none), so
    /// that workers started anew (on ports opened again) keep every flow,
    /// binding and account.
    pub fn stop_keeping_engines(self) -> (Vec<Arc<WorkerStats>>, Vec<Option<Kept>>) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let kept = self.threads.into_iter().map(|t| t.join().ok().flatten()).collect();
        (self.shared.stats.iter().map(|s| s.load_full()).collect(), kept)
    }
}
