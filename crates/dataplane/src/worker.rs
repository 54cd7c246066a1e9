//! One worker: a pinned thread that owns an engine, its ports' queues and
//! its ends of the handoff rings, and runs the loop
//!
//! ```text
//! pick up a new policy generation (one atomic load)
//! for each port: rx batch → steer (own / hand off) → engine → egress → tx batch
//! frames handed in by other workers → engine → egress → tx batch
//! frames the engine released (fragments) → egress → tx batch
//! tx: one send per port; timers; publish stats every so often
//! ```
//!
//! Nothing in the loop locks, allocates or makes a syscall per packet: the
//! backends move whole batches, the rings are wait-free, the policy and the
//! route tables are read through one atomic pointer each. The only state
//! that leaves the worker is explicit: frames through the handoff rings,
//! and a stats snapshot published every `stats_every` (an `Arc` swap, off
//! the per-packet path).
//!
//! After a step's frames are sent, the worker does a bounded slice of the
//! work that walks its flow table: a flow listing the control side asked
//! for ([`crate::flows`], [`crate::flows::QUERY_SLICE`] entries per step)
//! and the timeout histogram's pass ([`crate::timeouts`],
//! [`crate::timeouts::HISTOGRAM_SLICE`] entries when a slice is due).
//!
//! Stop: when the shared stop flag is set the worker stops receiving from
//! its ports, drains what other workers already handed it, transmits,
//! publishes its final stats (the accounting the control plane flushes at
//! exit) and returns.

use crate::counters::{DataplaneCounters, Drop};
use crate::egress::Egress;
use crate::flows::WorkerQueries;
use crate::handoff::Handoff;
use crate::stats::WorkerStats;
use crate::steer;
use crate::synclink::WorkerSync;
use crate::timeouts::TimeoutCursor;
use crate::{PortQueue, Shared};
use engine::{Config as EngineConfig, Engine, Parsed, Side, Time, Verdict};
use io::Batch;
use policy::Generation;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most held frames routed per loop; more are dropped and counted.
const RELEASE_BATCH: usize = 256;

/// How a worker waits when there is nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Spin: lowest latency, one core busy at all times (production).
    Busy,
    /// After `spins` empty loops, wait until a port has frames, or at most
    /// `sleep` (200 µs while frames are held or other workers may hand
    /// some over, which no descriptor announces): for a lab or a box that
    /// shares its cores. Costs nothing while idle and one wake-up per burst
    /// at low load, where spinning would take the core from the kernel's
    /// receive path on the same core.
    ///
    /// `coalesce` is interrupt moderation, as a NIC's `rx-usecs`: while
    /// traffic flows (the last wake-up found work), the worker does not
    /// wake for every arriving frame but naps `coalesce` on a timer and then
    /// takes everything that arrived meanwhile in one pass, and sends it in
    /// one kick per port. A nap that finds nothing returns the worker to
    /// waiting on its ports. Zero: wake for every frame (no moderation).
    Sleep { spins: u32, sleep: Duration, coalesce: Duration },
}

/// The longest an idle worker waits while something only a timer or
/// another worker announces may be due (held frames, handed-in frames).
/// (Measured: see docs/architecture.md, "Idle".)
const SHORT_WAIT: Duration = Duration::from_micros(200);

impl Idle {
    /// The longest a worker waiting this way may leave between two polls of
    /// its timers while it holds frames (a nap, or the short wait): what a
    /// shaper it polls must be built for (`engine::ShapingConfig::new`),
    /// before the time the loop's own work takes. Zero for a busy worker.
    pub fn poll_gap(&self) -> Duration {
        match *self {
            Idle::Busy => Duration::ZERO,
            Idle::Sleep { sleep, coalesce, .. } => coalesce.max(sleep.min(SHORT_WAIT)),
        }
    }
}

/// What one worker is told at start.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub index: usize,
    pub workers: usize,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    pub engine: EngineConfig,
    /// Frames per receive batch and port.
    pub batch: usize,
    pub idle: Idle,
    pub stats_every: Duration,
    /// Benchmarks only: bypass the engine. Every frame is forwarded to the
    /// other side unexamined (the egress still routes it: TTL, next hop,
    /// neighbour), so that a benchmark measures the floor of the I/O and the
    /// routing, which the engine's work comes on top of. No firewall, NAT,
    /// accounting or shaping: never for a network.
    pub null_engine: bool,
}

pub(crate) struct Worker {
    cfg: WorkerConfig,
    engine: Engine,
    ports: Vec<PortQueue>,
    /// Side of each port, by port index.
    sides: Vec<Side>,
    handoff: Handoff,
    egress: Egress,
    shared: Arc<Shared>,
    /// The published policy, read through a cache: a step checks one
    /// pointer, not arc-swap's debt slots (an atomic exchange per step).
    published: Option<arc_swap::Cache<Arc<arc_swap::ArcSwap<Generation>>, Arc<Generation>>>,
    generation: Option<Arc<Generation>>,
    counters: DataplaneCounters,
    rx: Batch,
    /// Frames handed in, one batch per side.
    handed: [Batch; 2],
    /// Frames leaving, one batch per port.
    tx: Vec<Batch>,
    verdicts: Vec<Verdict>,
    /// Frames the engine released, and the side each goes to.
    released: Batch,
    released_to: Vec<Side>,
    /// The egress's reinjected ICMP errors, swapped out while they are processed.
    reinjected: Batch,
    /// The steering's parse of the batch being received, which the engine
    /// takes instead of parsing the frames again (lane `i`, frame `i`).
    parsed: Parsed,
    /// Steering keys of the frames of the batch being received (pass 1).
    steer_keys: Vec<steer::Key>,
    /// Where the first fragments of inbound datagrams went.
    fragments: steer::Fragments,
    /// The fragments among the frames of the batch being received (pass 1).
    fragment_lanes: Vec<usize>,
    last_stats: Time,
    /// The snapshot the last publication replaced, to be filled again by
    /// the next one if no reader still holds it: publishing then copies
    /// into vectors that have their room already, and allocates nothing.
    spare_stats: Option<Arc<WorkerStats>>,
    /// The ports' readiness descriptors, for the idle wait; empty if a port
    /// has none (the wait is then a plain sleep).
    pollfds: Vec<libc::pollfd>,
    /// The rings to the sync thread, when the box is one of a pair.
    sync: Option<WorkerSync>,
    /// The rings flow listings come and go through.
    queries: Option<WorkerQueries>,
    /// The timeout histogram's pass over the flow table.
    timeouts: TimeoutCursor,
}

/// What one [`Worker::step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Frames handled (received, handed in, reinjected, released), sync
    /// records moved, and flow table entries a listing looked at.
    pub work: usize,
    /// The frames of `work` alone: the arrival rate interrupt moderation
    /// reckons with ([`Pacer`]).
    pub frames: usize,
    /// The ports were read (not stopping, no back-pressure).
    pub receiving: bool,
    /// Stopping, and nothing is left to do: the worker may end.
    pub done: bool,
}

/// How the live loop pauses after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// Straight on.
    None,
    /// Sleep this long on a timer (interrupt moderation).
    Nap(Duration),
    /// Wait this long at most for a port to have frames.
    Wait(Duration),
}

/// A nap is taken only if it is expected to gather at least this many
/// frames: below, there is too little load to amortise a wake-up over, and
/// the worker waits for the next frame instead (no added delay). Two, not
/// more: a rate that fills a nap with 2-3 frames is no lone ping, and
/// waking for each of its frames instead cost more than the naps did (at
/// 34 kpps with 100 µs naps, a threshold of 4 skipped half the naps, and
/// the worker ran 70,000 empty loops a second: its throughput per
/// CPU-second fell from 1.3-1.7x kernel HTB's to 1.05-1.2x;
/// docs/benchmarks.md, session 15).
pub const NAP_MIN_FRAMES: u64 = 2;
/// A nap is cut short to about the time this many frames take to arrive
/// (a receive batch): at high rates the wake-ups are amortised anyway.
pub const NAP_TARGET_FRAMES: u64 = 64;
/// Beyond this, the last moderation decision is too old to rate the traffic.
const RATE_WINDOW_NS: u64 = 10_000_000;

/// The live loop's pacing: after each step, whether to go on, nap or wait
/// ([`Idle`]). Pure (the caller passes the time), so that it is tested
/// without a clock.
///
/// Interrupt moderation adapts to the arrival rate, as NICs' adaptive
/// moderation does: when traffic stops flowing (an empty step after work)
/// the pacer rates the traffic since its last such decision, frames over
/// time, and naps only if a nap of `coalesce` would gather at least
/// [`NAP_MIN_FRAMES`], for no longer than [`NAP_TARGET_FRAMES`] take to
/// arrive. So a lone frame (a ping on an idle box, its reply) is not held
/// for a nap, a loaded box naps `coalesce`, and a heavily loaded one naps
/// less, its batches full anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pacer {
    /// Empty steps in a row.
    empty: u32,
    /// The last wake-up (or step) found work: the next pause is a nap of
    /// `coalesce`, not a wait for the next frame.
    flowing: bool,
    /// Work since the last moderation decision.
    work: u64,
    /// When the last moderation decision was taken (ns; 0: none yet).
    decided_at: u64,
    /// Decisions not to nap: too few frames expected.
    skipped: u64,
}

impl Pacer {
    /// The pause after `step`, at `now_ns`, for a worker that waits as `idle` says.
    pub fn after(&mut self, step: &Step, idle: Idle, now_ns: u64) -> Pause {
        if step.work > 0 {
            self.empty = 0;
            self.flowing = true;
            self.work = self.work.saturating_add(step.frames as u64);
            return Pause::None;
        }
        self.empty = self.empty.saturating_add(1);
        let Idle::Sleep { spins, sleep, coalesce } = idle else { return Pause::None };
        if self.flowing && !coalesce.is_zero() {
            self.flowing = false;
            if let Some(nap) = self.moderate(coalesce, now_ns) {
                return Pause::Nap(nap);
            }
        }
        if self.empty > spins {
            Pause::Wait(sleep)
        } else {
            Pause::None
        }
    }

    /// Whether to nap, and how long, given the work since the last decision.
    fn moderate(&mut self, coalesce: Duration, now_ns: u64) -> Option<Duration> {
        let (work, previous) = (self.work, self.decided_at);
        let since = now_ns.saturating_sub(previous);
        self.work = 0;
        self.decided_at = now_ns;
        let coalesce_ns = coalesce.as_nanos() as u64;
        // Frames a nap of `coalesce` would gather: work × coalesce / since.
        // Without a rate (the first traffic, or after a long pause), as few
        // as the work seen.
        let expected = if previous == 0 || since == 0 || since > RATE_WINDOW_NS {
            0
        } else {
            u128::from(work) * u128::from(coalesce_ns) / u128::from(since)
        };
        if expected < u128::from(NAP_MIN_FRAMES) {
            self.skipped += 1;
            return None;
        }
        let target_ns = u128::from(NAP_TARGET_FRAMES) * u128::from(since) / u128::from(work.max(1));
        Some(Duration::from_nanos(target_ns.min(u128::from(coalesce_ns)).max(1_000) as u64))
    }

    /// Decisions not to nap after traffic, for want of load.
    pub fn naps_skipped(&self) -> u64 {
        self.skipped
    }
}

/// The monotonic clock in nanoseconds: the loop reads it once per iteration.
pub fn monotonic_now() -> Time {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Time(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl Worker {
    pub(crate) fn new(
        cfg: WorkerConfig,
        ports: Vec<PortQueue>,
        handoff: Handoff,
        egress: Egress,
        shared: Arc<Shared>,
        engine: Option<Engine>,
        now: Time,
    ) -> Self {
        let n = cfg.batch.max(1);
        let sides = ports.iter().map(|p| p.side).collect();
        let tx = ports.iter().map(|_| Batch::new(4 * n, io::DEFAULT_FRAME_CAPACITY)).collect();
        let counters = DataplaneCounters::new(ports.len());
        let fragments = steer::Fragments::new(cfg.engine.hash_key);
        Worker {
            engine: engine.unwrap_or_else(|| Engine::new(cfg.engine.clone(), now)),
            rx: Batch::new(n, io::DEFAULT_FRAME_CAPACITY),
            handed: [Batch::new(n, io::DEFAULT_FRAME_CAPACITY), Batch::new(n, io::DEFAULT_FRAME_CAPACITY)],
            verdicts: vec![Verdict::Held; 4 * n],
            released: Batch::new(RELEASE_BATCH, io::DEFAULT_FRAME_CAPACITY),
            released_to: Vec::with_capacity(RELEASE_BATCH),
            reinjected: Batch::new(64, io::DEFAULT_FRAME_CAPACITY),
            cfg,
            ports,
            sides,
            handoff,
            egress,
            published: shared.policy.clone().map(arc_swap::Cache::new),
            shared,
            generation: None,
            counters,
            tx,
            parsed: Parsed::new(n),
            steer_keys: Vec::with_capacity(n),
            fragments,
            fragment_lanes: Vec::with_capacity(n),
            last_stats: now,
            spare_stats: None,
            pollfds: Vec::new(),
            sync: None,
            queries: None,
            timeouts: TimeoutCursor::new(),
        }
    }

    /// Answers flow listings that come through `queries`.
    pub(crate) fn with_queries(mut self, queries: WorkerQueries) -> Self {
        self.queries = Some(queries);
        self
    }

    /// Reports this worker's flows to the other box of a pair, and installs
    /// what it reports, through `sync`.
    pub(crate) fn with_sync(mut self, sync: Option<WorkerSync>) -> Self {
        if let Some(s) = &sync {
            s.attach(&mut self.engine);
        }
        self.sync = sync;
        self
    }

    /// Starts from `generation`, the policy generation a kept engine ran.
    pub(crate) fn with_generation(mut self, generation: Option<Arc<Generation>>) -> Self {
        self.generation = generation;
        self
    }

    /// Runs until the dataplane stops; returns the engine, with its flows,
    /// NAT bindings and accounts, and its policy generation, for workers
    /// started after this one. The only place the loop reads the clock.
    pub(crate) fn run(mut self) -> crate::Kept {
        let fds: Option<Vec<_>> = self.ports.iter().map(|p| p.io.ready_fd()).collect();
        self.pollfds = fds
            .unwrap_or_default()
            .into_iter()
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        if matches!(self.cfg.idle, Idle::Sleep { .. }) {
            // Wake-ups tens of microseconds apart need a tighter timer
            // slack than the default 50 µs.
            // SAFETY: PR_SET_TIMERSLACK takes an integer argument and
            // touches only the calling thread's scheduling attributes.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 5_000 as libc::c_ulong, 0, 0, 0) };
            // A worker that wakes from a nap must get its core within
            // about that long, not after whatever runs there (the veth
            // NAPI threads in the lab, a kernel thread) has used up its
            // slice (about 3 ms): that wait was the light member's latency
            // tail. The kernel's answer is a short slice of its own.
            let _ = request_short_slice(SHORT_SLICE);
        }
        let mut pacer = Pacer::default();
        loop {
            let now = monotonic_now();
            let step = self.step(now);
            if step.done {
                break;
            }
            match pacer.after(&step, self.cfg.idle, now.0) {
                Pause::None => {}
                Pause::Nap(d) => {
                    self.counters.naps += 1;
                    std::thread::sleep(d);
                }
                Pause::Wait(d) => self.wait(d, step.receiving),
            }
            if step.work == 0 {
                self.counters.idle_loops += 1;
            }
            self.counters.naps_skipped = pacer.naps_skipped();
        }
        self.finish(monotonic_now())
    }

    /// One turn of the loop at `now`: picks up a new policy and routes,
    /// takes handed-in frames, receives from the ports (unless a ring to
    /// another worker is short of room), runs the engine and the egress,
    /// releases what the timers let go, transmits, publishes stats when due.
    pub(crate) fn step(&mut self, now: Time) -> Step {
        let stopping = self.shared.stop.load(Ordering::Relaxed);
        self.pick_up_policy();
        self.egress.begin_batch();
        // Frames that waited for their next hop go before newer ones.
        let mut work = self.egress.release_waiting(now, stopping, &mut self.tx, &mut self.counters);
        // Frames other workers handed over first: they already cost a
        // parse and a ring slot, and their senders wait for the room.
        work += self.receive_handed(now);
        self.transmit_filling();
        // Back-pressure: receive from the ports only while every ring
        // to another worker has room for a batch. Otherwise the frames
        // wait in the port's receive ring (a NIC drops there, cheaply
        // and counted by the kernel) instead of being parsed here only
        // to find the ring full.
        let need = self.cfg.batch * self.ports.len();
        let receiving = !stopping && self.handoff.outboxes.iter().flatten().all(|o| o.has_room(need));
        if receiving {
            for p in 0..self.ports.len() {
                work += self.receive(now, p);
                self.transmit_filling();
            }
        } else if !stopping {
            self.counters.backpressure += 1;
        }
        work += self.reinject(now);
        self.transmit_filling();
        let mut frames = work;
        // Timers first: they let the shapers release what is due, which
        // `release_held` then sends in this same step.
        self.engine.poll_timers(now);
        if let Some(s) = &mut self.sync {
            let egress = &mut self.egress;
            work += s.step(&mut self.engine, now, |dst| {
                egress.prime(dst);
            });
        }
        let released = self.release_held(now);
        (work, frames) = (work + released, frames + released);
        self.transmit();
        // The table walks, once this step's frames are out; a listing
        // counts as work (an idle worker goes on until it is answered), the
        // histogram's slow, paced pass does not.
        if let Some(q) = self.queries.as_mut().filter(|_| !stopping) {
            work += q.step(&self.engine, now, self.cfg.index, &mut self.counters);
        }
        self.timeouts.step(self.engine.conntrack(), now);
        self.counters.loops += 1;
        if now.0.saturating_sub(self.last_stats.0) >= self.cfg.stats_every.as_nanos() as u64 {
            self.publish(now);
        }
        let done = stopping && work == 0 && self.handoff.inboxes.iter().all(|i| i.waiting() == 0);
        Step { work, frames, receiving, done }
    }

    /// Frames other workers handed to this one and it has not taken yet.
    pub(crate) fn handed_waiting(&self) -> usize {
        self.handoff.inboxes.iter().map(|i| i.waiting()).sum()
    }

    /// Frames the shapers hold.
    pub(crate) fn shaper_held(&self) -> usize {
        self.engine.shaper_held()
    }

    /// Frames held (shaper queues, fragments waiting for the rest, frames
    /// waiting for their next hop).
    pub(crate) fn holding(&self) -> usize {
        self.engine.shaper_held() + self.engine.datagrams() + self.egress.waiting()
    }

    /// The end: pushes out what the ports still hold, publishes the final
    /// stats at `now` and hands the state over.
    pub(crate) fn finish(mut self, now: Time) -> crate::Kept {
        for (p, q) in self.ports.iter_mut().enumerate() {
            if q.io.flush().is_err() {
                self.counters.drop_n(Drop::TxRingFull, self.tx[p].len() as u64);
            }
        }
        // A worker that stopped before this one last handed it frames
        // never took them: counted here, the last that can.
        let stranded: usize = self.handoff.outboxes.iter().flatten().map(crate::handoff::Outbox::stranded).sum();
        self.counters.drop_n(Drop::HandoffWorkerGone, stranded as u64);
        self.publish(now);
        crate::Kept { engine: self.engine, generation: self.generation, sync: self.sync }
    }

    /// Waits until a port has frames or the timeout passes (see [`Idle::Sleep`]).
    /// `receiving`: the ports were read in this loop. If they were not
    /// (back-pressure, stopping), their descriptors may well be readable,
    /// and waiting on them would return at once: sleep instead.
    fn wait(&mut self, sleep: Duration, receiving: bool) {
        let held = self.holding() > 0;
        let timeout = if held || self.cfg.workers > 1 { sleep.min(SHORT_WAIT) } else { sleep };
        self.counters.waits += 1;
        if self.pollfds.is_empty() || !receiving {
            std::thread::sleep(timeout);
            return;
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `pollfds` is a live, exclusively borrowed array of
        // `len` pollfd structs; `ts` outlives the call; no signal mask.
        unsafe { libc::ppoll(self.pollfds.as_mut_ptr(), self.pollfds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    }

    /// Installs a newer policy generation if one was published.
    fn pick_up_policy(&mut self) {
        let Some(published) = &mut self.published else { return };
        let current = published.load();
        if self.generation.as_ref().is_some_and(|g| Arc::ptr_eq(g, current)) {
            return;
        }
        let next = Arc::clone(current);
        let ended = match &self.generation {
            None => Some(Vec::new()),
            Some(running) => next.ended_since(running.number()),
        };
        let ended = ended.unwrap_or_else(|| {
            // Skipped more generations than the window holds: end the flows
            // of every member the new policy does not admit as it was.
            self.engine.accounts().iter().map(|a| a.member_id).filter(|&id| next.policy.by_id(id).is_none()).collect()
        });
        self.engine.set_policy(Arc::clone(&next.policy), &ended);
        self.generation = Some(next);
    }

    /// Receives one batch from port `p` and processes what this worker owns.
    fn receive(&mut self, now: Time, p: usize) -> usize {
        self.rx.clear();
        let n = match self.ports[p].io.recv(&mut self.rx) {
            Ok(n) => n,
            Err(_) => {
                self.counters.rx_errors += 1;
                self.rx.len()
            }
        };
        if n == 0 {
            return 0;
        }
        self.counters.rx[p] += n as u64;
        let side = self.sides[p];
        let policy = self.generation.as_ref().map(|g| &*g.policy);
        // Steering needs the parse only when there is another worker to
        // hand to, and the engine then takes that parse for the frames that
        // stay (a frame handed over is parsed again by its owner: the parse
        // stays on the core that made it). Pass 1 takes each frame's
        // steering key and prefetches its lookup, pass 2 resolves the keys,
        // hands frames over and moves the kept frames' parses along with
        // them.
        let Worker { rx, parsed, handoff, counters, egress, tx, cfg, steer_keys, fragments, fragment_lanes, .. } = self;
        steer_keys.clear();
        fragment_lanes.clear();
        // The lanes were made for the receive batch's capacity (`cfg.batch`).
        let steering = cfg.workers > 1;
        debug_assert!(rx.len() <= parsed.capacity());
        if steering {
            for (i, frame) in rx.frames().iter().enumerate() {
                let key = match parsed.parse(i, frame.as_slice()) {
                    Ok(meta) => {
                        if meta.frag.is_some() {
                            fragment_lanes.push(i);
                        }
                        steer::key(policy.is_some(), cfg.workers, side, meta)
                    }
                    Err(_) => steer::Key::Here, // a malformed frame: the engine counts it
                };
                steer::prefetch(policy, &key);
                steer_keys.push(key);
            }
        }
        if !fragment_lanes.is_empty() {
            counters.fragments_followed +=
                fragments.steer(policy, cfg.workers, side, parsed, fragment_lanes, steer_keys, now);
        }
        let mut keys = steer_keys.iter();
        let (mut seen, mut kept) = (0, 0);
        rx.retain_mut(|frame| {
            let key = keys.next().copied().unwrap_or(steer::Key::Here);
            let i = seen;
            seen += 1;
            frame.port = io::PortId(p as u8);
            if let Err(drop) = egress.check_arrival(now, p, frame, tx, counters) {
                counters.drop(drop);
                return false;
            }
            match steer::owner_of(policy, cfg.workers, &key) {
                Some(w) if w != cfg.index => {
                    let sent = handoff.outboxes[w].as_mut().is_some_and(|o| o.send(frame));
                    if sent {
                        counters.handed_off += 1;
                    } else {
                        counters.drop(Drop::HandoffRingFull);
                    }
                    false
                }
                _ => {
                    counters.same_core += 1;
                    if steering {
                        parsed.keep(i, kept);
                    }
                    kept += 1;
                    true
                }
            }
        });
        for o in self.handoff.outboxes.iter_mut().flatten() {
            o.flush();
        }
        let Worker { rx, engine, verdicts, egress, tx, counters, cfg, parsed, .. } = self;
        let parsed = steering.then_some(&*parsed);
        process(now, cfg.null_engine, engine, side, rx, parsed, verdicts, egress, tx, counters);
        n
    }

    /// Processes what other workers handed this one.
    fn receive_handed(&mut self, now: Time) -> usize {
        let mut total = 0;
        for i in 0..self.handoff.inboxes.len() {
            self.rx.clear();
            let n = self.handoff.inboxes[i].recv_into(&mut self.rx);
            if n == 0 {
                continue;
            }
            total += n;
            self.counters.handed_in += n as u64;
            // The frames were written on the sending core: their headers
            // start on their way here before the sort and the parse need
            // them. Where the two cores are far apart (another die: a
            // round trip of 400 ns instead of 85 on this VM at times),
            // the parse waited for each in turn (10 % more throughput).
            for f in self.rx.frames() {
                engine::prefetch_headers(f.as_slice());
            }
            // Sort by the side each frame came from.
            let [inside, outside] = &mut self.handed;
            for f in self.rx.frames_mut() {
                let batch = match self.sides.get(usize::from(f.port.0)) {
                    Some(Side::Outside) => &mut *outside,
                    _ => &mut *inside,
                };
                let _ = batch.push_swap(f);
            }
            for side in [Side::Inside, Side::Outside] {
                let Worker { handed, engine, verdicts, egress, tx, counters, cfg, .. } = self;
                let batch = &mut handed[side.index()];
                if !batch.is_empty() {
                    process(now, cfg.null_engine, engine, side, batch, None, verdicts, egress, tx, counters);
                    batch.clear();
                }
            }
        }
        total
    }

    /// Routes frames the engine held (fragments that came early) and now lets go.
    fn release_held(&mut self, now: Time) -> usize {
        let Worker { engine, egress, tx, counters, released, released_to, .. } = self;
        released.clear();
        released_to.clear();
        engine.poll_released(|to, bytes| {
            if released.push_copy(bytes, now.0, io::PortId(u8::MAX)) {
                released_to.push(to);
            } else {
                counters.drop(Drop::ReleaseOverflow);
            }
        });
        for (f, &to) in released.frames_mut().iter_mut().zip(released_to.iter()) {
            egress.forward(now, None, Some(to), f, tx, counters, false);
        }
        released_to.len()
    }

    /// Runs the ICMP errors the egress generated after the engine through the
    /// engine, as if they came from the side the offending packet was going to.
    fn reinject(&mut self, now: Time) -> usize {
        let mut n = 0;
        for side in [Side::Inside, Side::Outside] {
            if self.egress.reinject[side.index()].is_empty() {
                continue;
            }
            std::mem::swap(&mut self.egress.reinject[side.index()], &mut self.reinjected);
            let Worker { reinjected, engine, verdicts, egress, tx, counters, cfg, .. } = self;
            n += reinjected.len();
            process(now, cfg.null_engine, engine, side, reinjected, None, verdicts, egress, tx, counters);
            reinjected.clear();
        }
        n
    }

    /// Sends every port's tx batch; what a port does not take is counted.
    fn transmit(&mut self) {
        for p in 0..self.ports.len() {
            self.transmit_port(p);
        }
    }

    /// Sends the tx batches that are past half full, mid-step: a step's
    /// inflow to one port (its own receives, what other workers handed
    /// over, waiting and released frames, fragments of each) can exceed a
    /// batch, and what does not fit would be dropped (`tx_batch_full`)
    /// while the device's ring has room. Usually none is, and nothing is
    /// sent before the step's end.
    fn transmit_filling(&mut self) {
        for p in 0..self.ports.len() {
            if self.tx[p].len() > self.tx[p].capacity() / 2 {
                self.transmit_port(p);
            }
        }
    }

    fn transmit_port(&mut self, p: usize) {
        let (Some(q), Some(batch)) = (self.ports.get_mut(p), self.tx.get_mut(p)) else { return };
        if batch.is_empty() {
            return;
        }
        let mut sent = q.io.send(batch.frames()).unwrap_or(0);
        // Push out what the device still holds (AF_XDP in copy mode
        // sends 32 frames per wake-up): one more kick, not a wait.
        let _ = q.io.flush();
        if sent < batch.len() {
            // Short of ring slots or free chunks: the flush took back
            // what the kernel has sent since; one more try before a drop.
            sent += q.io.send(&batch.frames()[sent..]).unwrap_or(0);
            let _ = q.io.flush();
        }
        // The prefix sent holds the frames the device refused as too long.
        let refused = q.io.tx_refused().min(sent as u64);
        self.counters.drop_n(Drop::TxOversize, refused);
        self.counters.tx[p] += sent as u64 - refused;
        let unsent = batch.len() - sent;
        if unsent > 0 {
            self.counters.drop_n(Drop::TxRingFull, unsent as u64);
        }
        batch.clear();
    }

    /// Publishes a stats snapshot as of `now`.
    pub(crate) fn publish(&mut self, now: Time) {
        self.last_stats = now;
        let lost = self.ports.iter_mut().map(|q| q.io.receive_lost()).sum();
        self.counters.set_dropped(Drop::ReceiveLost, lost);
        // The spare if nobody reads it any more (a reader that still does
        // frees it when done, on its own thread), else a new one.
        let mut next = match self.spare_stats.take() {
            Some(s) if Arc::strong_count(&s) == 1 && Arc::weak_count(&s) == 0 => s,
            _ => Arc::default(),
        };
        // Not shared (no reader can reach the spare since it was swapped
        // out): no copy is made.
        let stats = Arc::make_mut(&mut next);
        stats.worker = self.cfg.index;
        stats.at = now;
        stats.generation = self.generation.as_ref().map_or(0, |g| g.number());
        stats.engine.clone_from(self.engine.counters());
        stats.dataplane.clone_from(&self.counters);
        stats.flows = self.engine.conntrack().len();
        stats.flow_capacity = self.engine.conntrack().capacity();
        stats.nat_bindings = self.engine.nat().len();
        stats.accounts.clear();
        stats.accounts.extend(self.engine.accounts().iter().copied());
        stats.egress = self.egress.stats();
        stats.shaper = self.engine.shaper_stats();
        stats.shaped.clear();
        stats.shaped.extend(self.engine.shaped_members());
        stats.shaper_held = self.engine.shaper_held();
        stats.waiting = self.egress.waiting();
        stats.timeouts = *self.timeouts.last();
        self.spare_stats = Some(self.shared.stats[self.cfg.index].swap(next));
    }
}

/// Engine, then egress, for one batch of frames that all came from `side`.
#[allow(clippy::too_many_arguments)]
fn process(
    now: Time,
    null_engine: bool,
    engine: &mut Engine,
    side: Side,
    batch: &mut Batch,
    parsed: Option<&Parsed>,
    verdicts: &mut Vec<Verdict>,
    egress: &mut Egress,
    tx: &mut [Batch],
    counters: &mut DataplaneCounters,
) {
    let n = batch.len();
    if n == 0 {
        return;
    }
    if verdicts.len() < n {
        verdicts.resize(n, Verdict::Held);
    }
    if null_engine {
        verdicts[..n].fill(Verdict::Forward(side.other()));
    } else if let Some(parsed) = parsed {
        engine.process_parsed(now, side, batch.frames_mut(), &mut verdicts[..n], parsed);
    } else {
        engine.process(now, side, batch.frames_mut(), &mut verdicts[..n]);
    }
    for (frame, v) in batch.frames_mut().iter_mut().zip(verdicts.iter()) {
        if let Verdict::Forward(to) = *v {
            let from = usize::from(frame.port.0);
            egress.forward(now, Some(from), Some(to), frame, tx, counters, false);
        }
    }
}

/// The scheduler slice a sleeping worker asks for (the kernel's least).
const SHORT_SLICE: Duration = Duration::from_micros(100);

/// `struct sched_attr`, its first version (48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Asks the scheduler for a `slice` of its own for the calling thread
/// (Linux 6.12+: `sched_setattr` with `sched_runtime` on the normal
/// policy): a task with a short slice preempts one with a longer slice when
/// it wakes, instead of waiting for that slice to end. Older kernels accept
/// and ignore it. Only a thread on the normal policy is touched (one an
/// operator made real-time, batch or idle stays so), and its nice value
/// stays. Best effort: a refusal leaves the thread as it was.
pub(crate) fn request_short_slice(slice: Duration) -> std::io::Result<()> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: sched_getattr writes at most `size` bytes into `attr`, which
    // has that many, for the calling thread (pid 0).
    let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, size, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if attr.policy != libc::SCHED_OTHER as u32 {
        return Ok(());
    }
    let attr = SchedAttr { size, flags: 0, runtime: slice.as_nanos() as u64, ..attr };
    // SAFETY: sched_setattr reads `size` bytes of the attribute we pass,
    // for the calling thread (pid 0), with no flags.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Pins the calling thread to `cpu`; the error is the kernel's refusal
/// (a CPU outside the process's cpuset, or offline).
pub(crate) fn pin_to(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it (cpu
    // is below CPU_SETSIZE), and sched_setaffinity reads exactly
    // size_of::<cpu_set_t>() bytes of it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice a thread asked for is the one the kernel reports back
    /// (`sched_getattr`'s `sched_runtime`, Linux 6.12+; older kernels
    /// report 0 and ignore the request).
    #[test]
    fn a_worker_gets_the_short_slice_it_asks_for() {
        std::thread::spawn(|| {
            match request_short_slice(SHORT_SLICE) {
                Ok(()) => {}
                // A sandbox that forbids the calls: the request is best effort.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOSYS)) => {
                    eprintln!("skipped: sched_setattr refused here: {e}");
                    return;
                }
                Err(e) => panic!("sched_setattr: {e}"),
            }
            let mut attr = [0u64; 7];
            // SAFETY: sched_getattr writes at most `size` (56) bytes into
            // the buffer, which has that many.
            let rc = unsafe {
                libc::syscall(libc::SYS_sched_getattr, 0, attr.as_mut_ptr(), std::mem::size_of_val(&attr) as u32, 0)
            };
            assert_eq!(rc, 0, "sched_getattr: {}", std::io::Error::last_os_error());
            // Layout: size + policy (u32 each), flags, nice + priority, runtime.
            let runtime = attr[3];
            assert!(runtime == 0 || runtime == SHORT_SLICE.as_nanos() as u64, "slice {runtime} ns");
            eprintln!("slice reported: {runtime} ns");
        })
        .join()
        .unwrap();
    }
}
