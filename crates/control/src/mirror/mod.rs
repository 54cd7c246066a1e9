//! The mirror: the kernel's links, addresses, routes and neighbours, kept
//! in a [`RouteTables`] snapshot that workers read without locks.
//!
//! Linux is the control plane: the kernel (and BIRD/FRR, `ip route`, ARP
//! and NDP) owns the state, torwart follows it. [`Mirror::start`] opens two
//! rtnetlink sockets in the calling thread's network namespace, subscribes
//! to `RTNLGRP_LINK`, `IPV4_IFADDR`, `IPV6_IFADDR`, `IPV4_ROUTE`,
//! `IPV6_ROUTE` and `NEIGH` *before* dumping (so no change falls between
//! the dump and the subscription), dumps everything, publishes the first
//! snapshot and then hands over to a background thread (a plain std thread
//! with blocking `poll`, no async runtime) that:
//!
//! - applies notifications to its model and republishes, coalescing bursts
//!   so that it rebuilds at most once per [`MirrorConfig::coalesce`];
//! - on an overrun (`ENOBUFS`: notifications were lost) throws the model
//!   away and dumps again; it also dumps again when a link goes up or down,
//!   because the kernel flushes the IPv4 routes of a downed device without
//!   sending `RTM_DELROUTE` for them (a deleted link's routes are dropped
//!   from the model directly), and when an IPv4 address goes away, since
//!   older kernels also flushed the routes using it as their source
//!   silently (6.18 tells);
//! - sends the neighbour resolutions workers asked for.
//!
//! Publishing is one `ArcSwap::store`; workers `load()` between batches, so
//! no packet sees half an update and nobody waits for anybody.
//!
//! **Neighbour resolution.** Workers must not block and must not send ARP
//! or NDP themselves. [`Resolver::resolve`] `try_send`s (ifindex, next hop)
//! on a bounded channel (full: dropped and counted); the mirror thread
//! deduplicates (one request per neighbour per
//! [`MirrorConfig::resolve_interval`], at most
//! [`MirrorConfig::resolve_pending`] in flight) and sends `RTM_NEWNEIGH`
//! with `NTF_USE`, creating the entry in `NUD_NONE` if missing. The kernel
//! handles it as if a packet had used the entry (`neigh_event_send`): it
//! sends the ARP request / neighbour solicitation itself, and the entry's
//! move to REACHABLE arrives as a notification and lands in the next
//! snapshot. Verified on Linux 6.18 in `tests/mirror.rs` for ARP and NDP;
//! without `NTF_USE` an entry created in `NUD_NONE` is never probed. An
//! entry in `NUD_FAILED` is probed again too. Workers should still ask once
//! per next hop per batch, not once per packet: the channel is shared.

mod model;
mod netlink;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use self::model::Model;
use self::netlink::{Change, Netlink};
pub use router::Resolver;
use router::RouteTables;

/// The mirror's errors: all from talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening, configuring or using an rtnetlink socket failed.
    #[error("rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused a request.
    #[error("rtnetlink request refused: {0}")]
    Request(#[source] std::io::Error),
    /// The mirror thread could not be started.
    #[error("spawning the mirror thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// How the mirror runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Interface names of torwart's ports: only their links and neighbours
    /// enter the tables. Empty: every interface.
    pub ports: Vec<String>,
    /// Least time between two rebuilds.
    pub coalesce: Duration,
    /// Capacity of the workers' resolution channel.
    pub resolve_queue: usize,
    /// Most resolutions remembered as in flight.
    pub resolve_pending: usize,
    /// A neighbour is asked for at most once per interval.
    pub resolve_interval: Duration,
}

impl Default for MirrorConfig {
    fn default() -> MirrorConfig {
        MirrorConfig {
            ports: Vec::new(),
            coalesce: Duration::from_millis(10),
            resolve_queue: 1024,
            resolve_pending: 4096,
            resolve_interval: Duration::from_secs(1),
        }
    }
}

/// How long the thread sleeps in `poll` when nothing is pending: bounds the
/// latency of a resolution request and of `stop`.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// The least time between two dumps after changes that may flush routes
/// silently (see [`Worker::resync`]).
pub const RESYNC_INTERVAL: Duration = Duration::from_millis(100);
/// A dump interrupted by concurrent changes is retried this often at most.
const DUMP_ATTEMPTS: usize = 5;

/// The mirror's counters, shared with its handles.
#[derive(Debug, Default)]
struct Stats {
    published: AtomicU64,
    notifications: AtomicU64,
    redumps: AtomicU64,
    resyncs: AtomicU64,
    decode_errors: AtomicU64,
    resolve_deduplicated: AtomicU64,
    resolve_sent: AtomicU64,
    resolve_failed: AtomicU64,
    resolve_pending_full: AtomicU64,
}

/// A copy of the mirror's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Snapshots published (the first one included).
    pub published: u64,
    /// Notifications applied.
    pub notifications: u64,
    /// Full dumps after an overrun.
    pub redumps: u64,
    /// Full dumps after a link went up or down or an IPv4 address went
    /// away (the kernel may flush routes without telling), at most one per
    /// [`RESYNC_INTERVAL`] or four times the last dump's duration.
    pub resyncs: u64,
    /// Netlink messages that did not decode (skipped).
    pub decode_errors: u64,
    /// Resolutions workers asked for.
    pub resolve_requested: u64,
    /// ... dropped because the channel was full.
    pub resolve_queue_full: u64,
    /// ... dropped as repeats within the interval.
    pub resolve_deduplicated: u64,
    /// ... dropped because too many were in flight.
    pub resolve_pending_full: u64,
    /// `RTM_NEWNEIGH`/`NTF_USE` requests the kernel accepted.
    pub resolve_sent: u64,
    /// ... and refused.
    pub resolve_failed: u64,
}

impl Stats {
    fn snapshot(&self, resolver: &Resolver) -> MirrorStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MirrorStats {
            published: l(&self.published),
            notifications: l(&self.notifications),
            redumps: l(&self.redumps),
            resyncs: l(&self.resyncs),
            decode_errors: l(&self.decode_errors),
            resolve_requested: l(&resolver.counters().requested),
            resolve_queue_full: l(&resolver.counters().queue_full),
            resolve_deduplicated: l(&self.resolve_deduplicated),
            resolve_pending_full: l(&self.resolve_pending_full),
            resolve_sent: l(&self.resolve_sent),
            resolve_failed: l(&self.resolve_failed),
        }
    }
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// The running mirror. Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct Mirror {
    tables: Arc<ArcSwap<RouteTables>>,
    resolver: Resolver,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Mirror {
    /// Open the sockets in the calling thread's network namespace, dump the
    /// kernel's state, publish the first snapshot and start the thread.
    pub fn start(config: MirrorConfig) -> Result<Mirror, Error> {
        let events = Netlink::events()?;
        let mut requests = Netlink::request()?;
        let stats = Arc::new(Stats::default());
        let mut model = Model::default();
        full_dump(&mut requests, &mut model, &stats)?;
        let tables = Arc::new(ArcSwap::from_pointee(model.build(&config.ports, 1)));
        bump(&stats.published, 1);
        let (resolver, rx) = Resolver::channel(config.resolve_queue);
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            config,
            events,
            requests,
            model,
            tables: Arc::clone(&tables),
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            rx,
            pending: HashMap::new(),
            generation: 1,
            resync_due: false,
            next_resync: Instant::now(),
        };
        let thread =
            std::thread::Builder::new().name("twrt-mirror".into()).spawn(move || worker.run()).map_err(Error::Spawn)?;
        Ok(Mirror { tables, resolver, stats, stop, thread: Some(thread) })
    }

    /// The shared snapshot: hand a clone to every worker, which `load()`s it
    /// between batches.
    pub fn tables(&self) -> Arc<ArcSwap<RouteTables>> {
        Arc::clone(&self.tables)
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<RouteTables> {
        self.tables.load_full()
    }

    /// A handle for workers to request neighbour resolution.
    pub fn resolver(&self) -> Resolver {
        self.resolver.clone()
    }

    /// Request resolution of `ip` on `ifindex` (see [`Resolver::resolve`]).
    pub fn resolve(&self, ifindex: u32, ip: IpAddr) -> bool {
        self.resolver.resolve(ifindex, ip)
    }

    pub fn stats(&self) -> MirrorStats {
        self.stats.snapshot(&self.resolver)
    }

    /// Stop the thread and wait for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("router mirror thread panicked");
            }
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Dump links, addresses, routes and neighbours into a fresh model.
fn full_dump(nl: &mut Netlink, model: &mut Model, stats: &Stats) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut fresh = Model::default();
        let mut decode_errors = 0;
        let mut consistent = true;
        for req in netlink::dump_requests() {
            consistent &= nl.dump(req, &mut |m| _ = netlink::apply(&mut fresh, m), &mut decode_errors)?;
        }
        bump(&stats.decode_errors, decode_errors);
        if consistent || attempt >= DUMP_ATTEMPTS {
            *model = fresh;
            return Ok(());
        }
    }
}

/// The mirror thread's state.
struct Worker {
    config: MirrorConfig,
    events: Netlink,
    requests: Netlink,
    model: Model,
    tables: Arc<ArcSwap<RouteTables>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    rx: Receiver<(u32, IpAddr)>,
    /// Resolutions sent, by neighbour, with when.
    pending: HashMap<(u32, IpAddr), Instant>,
    generation: u64,
    /// A change that may have flushed routes silently came: dump again at
    /// `next_resync` (a burst of them costs one dump, not one each).
    resync_due: bool,
    next_resync: Instant,
}

impl Worker {
    fn run(&mut self) {
        let mut dirty = false;
        let mut last_publish = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let wait = if dirty {
                (last_publish + self.config.coalesce).saturating_duration_since(Instant::now()).min(IDLE_POLL)
            } else {
                IDLE_POLL
            };
            wait_readable(self.events.fd(), wait);
            dirty |= self.read_events();
            if self.resync_due && Instant::now() >= self.next_resync {
                dirty |= self.resync();
            }
            self.serve_resolutions();
            if dirty && last_publish.elapsed() >= self.config.coalesce {
                self.publish();
                last_publish = Instant::now();
                dirty = false;
            }
        }
    }

    /// Apply queued notifications; re-dump after an overrun. Returns whether
    /// the model may have changed.
    fn read_events(&mut self) -> bool {
        let mut changed = 0u64;
        let mut resync = false;
        let mut decode_errors = 0;
        let model = &mut self.model;
        let res = self.events.drain(
            &mut |m| match netlink::apply(model, m) {
                Change::None => {}
                Change::Changed => changed += 1,
                Change::Resync => {
                    changed += 1;
                    resync = true;
                }
            },
            &mut decode_errors,
        );
        bump(&self.stats.decode_errors, decode_errors);
        bump(&self.stats.notifications, changed);
        self.resync_due |= resync;
        match res {
            Ok(true) => changed > 0,
            Ok(false) => {
                bump(&self.stats.redumps, 1);
                tracing::warn!("rtnetlink notifications overran; dumping again");
                if let Err(e) = full_dump(&mut self.requests, &mut self.model, &self.stats) {
                    tracing::error!(error = %e, "rtnetlink re-dump failed");
                }
                // The dump covers what a resync would have.
                self.resync_due = false;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "reading rtnetlink notifications");
                changed > 0
            }
        }
    }

    /// The dump a link's change of state or an address's removal asked
    /// for. The next may come no sooner than [`RESYNC_INTERVAL`], or four
    /// times this dump's duration (a large table's dump is not repeated
    /// back to back under churn). Returns whether the model may have changed.
    fn resync(&mut self) -> bool {
        self.resync_due = false;
        bump(&self.stats.resyncs, 1);
        tracing::debug!("a link changed state or an address went away; dumping again");
        let start = Instant::now();
        if let Err(e) = full_dump(&mut self.requests, &mut self.model, &self.stats) {
            tracing::error!(error = %e, "rtnetlink re-dump failed; trying again");
            self.resync_due = true;
        }
        self.next_resync = Instant::now() + RESYNC_INTERVAL.max(start.elapsed() * 4);
        true
    }

    fn serve_resolutions(&mut self) {
        let now = Instant::now();
        let interval = self.config.resolve_interval;
        while let Ok(key) = self.rx.try_recv() {
            if self.pending.get(&key).is_some_and(|t| now.duration_since(*t) < interval) {
                bump(&self.stats.resolve_deduplicated, 1);
                continue;
            }
            if self.pending.len() >= self.config.resolve_pending {
                self.pending.retain(|_, t| now.duration_since(*t) < interval);
                if self.pending.len() >= self.config.resolve_pending {
                    bump(&self.stats.resolve_pending_full, 1);
                    continue;
                }
            }
            self.pending.insert(key, now);
            match self.requests.resolve(key.0, key.1) {
                Ok(()) => bump(&self.stats.resolve_sent, 1),
                Err(e) => {
                    bump(&self.stats.resolve_failed, 1);
                    tracing::debug!(ifindex = key.0, ip = %key.1, error = %e, "neighbour resolution refused");
                }
            }
        }
    }

    fn publish(&mut self) {
        self.generation += 1;
        self.tables.store(Arc::new(self.model.build(&self.config.ports, self.generation)));
        bump(&self.stats.published, 1);
    }
}

/// Block until `fd` is readable or `timeout` passes.
fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is a valid pollfd that outlives the call, and the count
    // passed is 1; poll only writes `revents`.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}
