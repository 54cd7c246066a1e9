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

pub mod counters;
pub mod egress;
pub mod handoff;
pub mod stats;
pub mod steer;
pub mod worker;

pub use counters::{DataplaneCounters, Drop};
pub use egress::Egress;
pub use stats::{Totals, WorkerStats};
pub use worker::{monotonic_now, Idle, WorkerConfig};

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
    /// An engine prepared beforehand (a benchmark's warm flow table); `None`
    /// makes a fresh one from `config.engine`.
    pub engine: Option<engine::Engine>,
}

/// Running workers.
#[derive(Debug)]
pub struct Dataplane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Frames per direction and pair of workers in the handoff rings.
pub const HANDOFF_DEPTH: usize = 1024;

impl Dataplane {
    /// Starts the workers (one thread each, named `torwart-w<i>`).
    pub fn start(setups: Vec<WorkerSetup>, policy: Option<Arc<ArcSwap<Generation>>>) -> std::io::Result<Dataplane> {
        let n = setups.len();
        let shared = Arc::new(Shared {
            policy,
            stop: AtomicBool::new(false),
            stats: (0..n).map(|_| ArcSwap::from_pointee(WorkerStats::default())).collect(),
        });
        let mut threads = Vec::with_capacity(n);
        let rings = handoff::mesh(n, HANDOFF_DEPTH, io::DEFAULT_FRAME_CAPACITY);
        for (setup, ends) in setups.into_iter().zip(rings) {
            let shared2 = Arc::clone(&shared);
            let name = format!("torwart-w{}", setup.config.index);
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                worker::Worker::new(setup.config, setup.ports, ends, setup.egress, shared2, setup.engine).run()
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Dataplane { shared, threads })
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
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.shared.stats.iter().map(|s| s.load_full()).collect()
    }
}
