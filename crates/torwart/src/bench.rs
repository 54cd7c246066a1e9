//! `torwart bench`: the gateway's cost per packet on a named scenario.
//!
//! Each core gets its own engine, its own members (the member with id `i`
//! belongs to core `policy::owner(i, cores)`, as the dataplane assigns
//! them) and its own traffic. The engine is first warmed: every flow of its
//! traffic is opened through it, packet by packet, as the ends would. Then
//! the dataplane's own loop (a worker's step: policy pick-up, ports,
//! steering, the engine, egress, timers, shaper releases, transmit) runs
//! over generator ports ([`GenPort`]) that play the traffic from prepared
//! headers, standing in for a NIC writing frames to memory:
//! * by default, each core steps one worker in its own thread with
//!   [`dataplane::Lockstep`] on virtual time, and its ports play only its
//!   own members' traffic (as a NIC spreading by member would): cores share
//!   nothing. Before the measured run the generator ports are timed alone
//!   (`fill`), so that the loop's own cost can be told apart;
//! * `--dataplane` starts the live dataplane (a thread per worker, on the
//!   real clock), and each worker's ports play every core's traffic in
//!   turn, so most frames are handed to their member's worker.
//!
//! Virtual time advances at the offered rate (`--offered-mpps` per core,
//! counted in frames the generator delivered), not at the benchmark's
//! speed, so timeouts and shapers behave as they would at that load.
//! Reloads (`--reloads`) are compiled by a thread of their own and
//! published as the daemon publishes them; the workers pick them up as in
//! production. Results are rates and per-packet costs; TSC cycles are at
//! the TSC's nominal frequency. Compare runs made in the same session
//! only: these machines are shared.

use crate::scenario::{self, FlowSpec, Params, Traffic, NEW_FLOW};
use arc_swap::ArcSwap;
use core::net::IpAddr;
use dataplane::{Egress, Lockstep, PortQueue, WorkerConfig, WorkerSetup, WorkerStats};
use engine::{Config, Counters, Engine, Side, Time, Verdict};
use policy::{Generation, MemberDb, Policy};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Barrier;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};
use wire::FrameBuf;

#[derive(Clone, Debug)]
pub struct Options {
    pub scenario: Params,
    /// Which flows the packets belong to ([`scenario::Locality`]).
    pub locality: scenario::Locality,
    pub seed: u64,
    pub cores: usize,
    pub seconds: f64,
    pub batch: usize,
    pub offered_mpps: f64,
    /// Scale the scenario's flow count (1.0 = as specified).
    pub flow_scale: f64,
    pub progress: bool,
    /// Run the member pipeline (policy compiled from the scenario's
    /// members, NAT, accounting); off measures connection tracking alone
    /// with the classic policy.
    pub members: bool,
    /// Policy generations published during the measured run (a reloader
    /// thread recompiles and swaps them; workers pick them up between batches).
    pub reloads: u32,
    /// Shape every member by its plan, with this uplink capacity per direction
    /// in bit/s (`None`: no shaping).
    pub shaping: Option<u64>,
    /// Run through the live dataplane's threads on the real clock instead
    /// of one worker per core stepped on virtual time; frames arrive spread
    /// over the workers regardless of member (as a NIC's hash would spread
    /// them), so most are handed off.
    pub dataplane: bool,
    /// Dataplane mode: serve the daemon's API while the workers run, publish
    /// their figures to it every second, and scrape `/metrics`, status and
    /// members every second (the cost of being watched).
    pub scrape: bool,
    /// Bypass the engine in the workers (`WorkerConfig::null_engine`): the
    /// loop's own floor, which the engine's work comes on top of.
    pub null_engine: bool,
    /// Dataplane mode: each worker's ports play only the traffic of the
    /// members it owns, so nothing is handed over (steering still runs):
    /// the reference that shows what the handoff costs.
    pub no_handoff: bool,
    /// Dataplane mode: each core runs a dataplane of its own with one
    /// worker, playing only its own members' traffic (no steering, nothing
    /// shared): what the machine's cores give together when nothing
    /// crosses between them, the ceiling for the workers' scaling measured
    /// the same way in the same run.
    pub independent: bool,
}

/// A frame buffer of the warm-up's batches.
pub(crate) struct Frame {
    pub(crate) data: Box<[u8; 2048]>,
    pub(crate) len: usize,
}

impl FrameBuf for Frame {
    fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CoreResult {
    pub core: usize,
    pub cpu: Option<usize>,
    pub packets: u64,
    pub seconds: f64,
    pub mpps: f64,
    pub ns_per_packet: f64,
    pub tsc_cycles_per_packet: f64,
    /// Of `ns_per_packet`, what the generator ports cost (filling the
    /// receive batches); not measured in dataplane mode.
    pub fill_ns_per_packet: f64,
    pub engine_ns_per_packet: f64,
    pub flows_warm: usize,
    pub flows_end: usize,
    pub table_memory_mib: f64,
    pub nat_bindings: usize,
    /// Policy generations the worker went through during the run.
    pub reloads_picked_up: u32,
    /// Frames handed to another worker, and frames processed where they arrived.
    pub handed_off: u64,
    pub same_core: u64,
    /// Frames the dataplane dropped (handoff ring full, tx).
    pub dataplane_drops: u64,
    #[serde(skip)]
    pub counters: Counters,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub locality: scenario::Locality,
    pub seed: u64,
    pub cores: usize,
    pub batch: usize,
    pub flows: u64,
    pub members: u32,
    pub packets: u64,
    pub mpps: f64,
    pub mpps_per_core: f64,
    pub ns_per_packet: f64,
    pub tsc_cycles_per_packet: f64,
    pub engine_ns_per_packet: f64,
    pub inbound_byte_share: f64,
    pub new_flow_share: f64,
    pub fast_path_share: f64,
    pub per_core: Vec<CoreResult>,
    pub counters: std::collections::BTreeMap<&'static str, u64>,
    pub members_pipeline: bool,
    /// Time to compile the scenario's member database into a policy.
    pub policy_compile_ms: Option<f64>,
    /// Generations published during the run, and the slowest compile of them.
    pub reloads: u32,
    pub reload_compile_ms_max: Option<f64>,
    /// Dataplane mode: the share of frames handed to another worker.
    pub handoff_share: Option<f64>,
    /// Shaping: the share of packets the shapers passed at once, queued, dropped.
    pub shaped: Option<[f64; 3]>,
    /// The workers bypassed the engine (`--null-engine`).
    pub null_engine: bool,
    /// Dataplane mode: one dataplane per core, one worker each (`Options::independent`).
    pub independent: bool,
    /// With two cores or more: a cache line's round trip between the CPUs
    /// of the first two cores, in ns, measured before and after the run.
    /// A VM's vCPUs can sit on neighbouring physical cores or on different
    /// dies, and move between the two: everything that crosses between
    /// workers (the handoff) costs several times as much on the far
    /// placement, so series compare only at the same placement.
    pub core_round_trip_ns: Option<[f64; 2]>,
}

/// A cache line's round trip between CPUs `a` and `b` in ns: two threads
/// pinned there pass a counter back and forth through one line (the
/// median of 9 rounds of 2,000 trips). `None` if the threads cannot be
/// pinned.
pub fn core_round_trip_ns(a: core_affinity::CoreId, b: core_affinity::CoreId) -> Option<f64> {
    #[repr(align(128))]
    struct Line(AtomicU64);
    const TRIPS: u64 = 2_000;
    const ROUNDS: u64 = 9;
    let line = Line(AtomicU64::new(0));
    let (line, stop) = (&line, &AtomicBool::new(false));
    std::thread::scope(|s| {
        let answerer = s.spawn(move || {
            if !core_affinity::set_for_current(b) {
                stop.store(true, Ordering::Relaxed);
                return;
            }
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let v = line.0.load(Ordering::Acquire);
                if v != seen && v % 2 == 1 {
                    line.0.store(v + 1, Ordering::Release);
                    seen = v + 1;
                }
                std::hint::spin_loop();
            }
        });
        // A thread of its own, so that the caller's affinity stays as it was.
        let initiator = s.spawn(move || {
            let mut rounds = Vec::with_capacity(ROUNDS as usize);
            if !core_affinity::set_for_current(a) {
                return rounds;
            }
            let mut v = 0;
            'rounds: for _ in 0..ROUNDS {
                let t0 = Instant::now();
                for _ in 0..TRIPS {
                    line.0.store(v + 1, Ordering::Release);
                    // Bounded: an answerer that could not be pinned has
                    // set `stop` and will not answer.
                    while line.0.load(Ordering::Acquire) != v + 2 {
                        if stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(1) {
                            break 'rounds;
                        }
                        std::hint::spin_loop();
                    }
                    v += 2;
                }
                rounds.push(t0.elapsed().as_nanos() as f64 / TRIPS as f64);
            }
            rounds
        });
        let mut rounds = initiator.join().unwrap_or_default();
        stop.store(true, Ordering::Relaxed);
        let _ = answerer.join();
        (rounds.len() == ROUNDS as usize).then(|| {
            rounds.sort_by(f64::total_cmp);
            rounds[rounds.len() / 2]
        })
    })
}

fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a register; it has no memory effects.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// Where the workers find the policy: the generation last published.
type Published = ArcSwap<Generation>;

/// Opens flow `f` through the engine packet by packet, as its ends would,
/// and returns where the flow is seen on the outside (after NAT), or `None`
/// if policy refused it.
pub(crate) fn open_flow(engine: &mut Engine, now: Time, f: &FlowSpec, frame: &mut Frame) -> Option<(IpAddr, u16)> {
    let mut send = |engine: &mut Engine, side: Side, bytes: &[u8]| {
        frame.data[..bytes.len()].copy_from_slice(bytes);
        frame.len = bytes.len();
        let mut v = [Verdict::Held];
        engine.process(now, side, core::slice::from_mut(frame), &mut v);
        // Held: the shaper queued it (already translated); the flow is open all the same.
        matches!(v[0], Verdict::Forward(_) | Verdict::Held)
            .then(|| wire::classify::classify(frame.bytes()).ok())
            .flatten()
    };
    let mut hs = Vec::new();
    f.handshake(&mut hs);
    let out = send(engine, Side::Inside, &hs[0].1)?;
    let endpoint = (out.key.src_ip(), out.key.src_port);
    let seen = FlowSpec { client: endpoint.0, client_port: endpoint.1, ..*f };
    let mut answer = Vec::new();
    seen.handshake(&mut answer);
    send(engine, Side::Outside, &answer[1].1)?;
    if hs.len() > 2 {
        send(engine, Side::Inside, &hs[2].1)?;
    }
    Some(endpoint)
}

/// One core's engine with every flow of its traffic open, and that traffic
/// (the inbound templates re-addressed to where NAT put the flows).
struct Warm {
    engine: Engine,
    /// Virtual time at the end of the warm-up: the run goes on from there.
    now: Time,
    traffic: Traffic,
    flows: usize,
    counters: Counters,
}

/// Warms an engine for `core` with `traffic` under `policy` (none: the
/// classic policy), calling the engine directly: this is set-up, not the
/// measured path. Its virtual clock starts at `start`.
fn warm(
    opts: &Options,
    start: Time,
    core: usize,
    shaping: Option<engine::ShapingConfig>,
    mut traffic: Traffic,
    policy: Option<Arc<Policy>>,
) -> Warm {
    let cfg = Config {
        max_flows: (traffic.flows.len() as u32 * 2).next_power_of_two().max(1024),
        hash_key: [opts.seed ^ 0x1111, opts.seed ^ 0x2222, core as u64, 0x7477_6172],
        shaping,
        ..Config::default()
    };
    let ns_per_packet_virtual = virtual_ns_per_packet(opts);
    let mut now = start;
    let mut engine = Engine::new(cfg, now);
    let mut frames: Vec<Frame> = (0..opts.batch).map(|_| Frame { data: Box::new([0u8; 2048]), len: 0 }).collect();
    let mut verdicts = vec![Verdict::Held; opts.batch];
    if let Some(p) = policy {
        engine.set_policy(p, &[]);
        // Packet by packet, as the ends would: the answer goes to where
        // the NAT put the flow.
        // Time passes at the offered rate, so that a shaper drains as it would.
        let mut endpoints = Vec::with_capacity(traffic.flows.len());
        for (i, f) in traffic.flows.iter().enumerate() {
            endpoints.push(open_flow(&mut engine, now, f, &mut frames[0]));
            now = Time(now.0 + 3 * ns_per_packet_virtual);
            if i % 32 == 31 {
                engine.poll_timers(now);
                engine.poll_released(|_, _| {});
            }
        }
        traffic.readdress_inbound(&endpoints);
    } else {
        let mut hs = Vec::new();
        for f in &traffic.flows {
            f.handshake(&mut hs);
        }
        for chunk in hs.chunks(opts.batch) {
            for from_inside in [true, false] {
                let mut n = 0;
                for (_, bytes) in chunk.iter().filter(|(fi, _)| *fi == from_inside) {
                    frames[n].data[..bytes.len()].copy_from_slice(bytes);
                    frames[n].len = bytes.len();
                    n += 1;
                }
                let side = if from_inside { Side::Inside } else { Side::Outside };
                engine.process(now, side, &mut frames[..n], &mut verdicts[..n]);
            }
            now = Time(now.0 + ns_per_packet_virtual * chunk.len() as u64);
        }
    }
    let (flows, counters) = (engine.conntrack().len(), engine.counters().clone());
    Warm { engine, now, traffic, flows, counters }
}

fn virtual_ns_per_packet(opts: &Options) -> u64 {
    (1000.0 / opts.offered_mpps) as u64
}

/// The generator ports of worker `worker` over `traffic`, and the counters
/// of frames each delivered.
fn generator_ports(
    traffic: &Arc<Vec<Traffic>>,
    worker: usize,
    own_only: bool,
) -> (Vec<PortQueue>, [Arc<AtomicU64>; 2]) {
    let [inside, outside] = [true, false].map(|inside| GenPort::new(traffic, inside, worker, own_only));
    let delivered = [Arc::clone(&inside.delivered), Arc::clone(&outside.delivered)];
    let ports = vec![
        PortQueue { name: "inside".into(), side: Side::Inside, io: Box::new(inside) },
        PortQueue { name: "outside".into(), side: Side::Outside, io: Box::new(outside) },
    ];
    (ports, delivered)
}

/// Worker `index` of `workers`: its warmed engine, the generation that
/// engine runs, and its generator ports; static egress (inside port 0,
/// outside port 1), as in the in-memory tests.
fn worker_setup(
    opts: &Options,
    index: usize,
    workers: usize,
    cpu: Option<usize>,
    engine: Engine,
    generation: Option<Arc<Generation>>,
    ports: Vec<PortQueue>,
) -> WorkerSetup {
    WorkerSetup {
        config: WorkerConfig {
            index,
            workers,
            cpu,
            engine: engine.config().clone(),
            batch: opts.batch,
            idle: dataplane::Idle::Busy,
            // As often as the daemon's workers publish (the worker's clock:
            // virtual time by default).
            stats_every: Duration::from_millis(250),
            null_engine: opts.null_engine,
        },
        ports,
        egress: Egress::fixed(0, 1),
        engine: Some(engine),
        generation,
    }
}

/// The generator ports' own cost per frame (ns): filling receive batches
/// from the templates, timed alone for a tenth of the run (at least 0.2 s).
fn time_fill(opts: &Options, traffic: &Arc<Vec<Traffic>>) -> f64 {
    let mut ports = [true, false].map(|inside| GenPort::new(traffic, inside, 0, true));
    let mut batch = io::Batch::new(opts.batch, io::DEFAULT_FRAME_CAPACITY);
    let fill_for = Duration::from_secs_f64((opts.seconds / 10.0).max(0.2));
    let t0 = Instant::now();
    let mut filled = 0u64;
    'fill: loop {
        for _ in 0..64 {
            for p in &mut ports {
                use io::PacketIo;
                batch.clear();
                filled += p.recv(&mut batch).unwrap_or(0) as u64;
                core::hint::black_box(&batch);
            }
        }
        if t0.elapsed() >= fill_for {
            break 'fill;
        }
    }
    t0.elapsed().as_nanos() as f64 / filled.max(1) as f64
}

/// How a measured run went, beside what its worker published.
struct Measured {
    core: usize,
    cpu: Option<usize>,
    seconds: f64,
    /// TSC cycles over the run (`None` where not measured).
    cycles: Option<f64>,
    fill_ns: f64,
}

/// The result of one worker from its final stats, its engine as it was
/// left, and the warm-up's flows and counters (taken off).
fn core_result(
    m: Measured,
    stats: &WorkerStats,
    engine: Option<&Engine>,
    warm: (usize, &Counters),
    first_generation: u64,
    null_engine: bool,
) -> CoreResult {
    let mut counters = stats.engine.clone();
    counters.subtract(warm.1);
    // The engine counts what it processed; a bypassed engine counts
    // nothing, so then the worker's own figures do (the warm-up ran on
    // the engine alone, so they start at zero): frames it kept and frames
    // handed to it.
    let packets = if null_engine {
        stats.dataplane.same_core + stats.dataplane.handed_in
    } else {
        counters.rx_packets[0] + counters.rx_packets[1]
    };
    let ns = m.seconds * 1e9 / packets.max(1) as f64;
    CoreResult {
        core: m.core,
        cpu: m.cpu,
        packets,
        seconds: m.seconds,
        mpps: packets as f64 / m.seconds / 1e6,
        ns_per_packet: ns,
        tsc_cycles_per_packet: m.cycles.map_or(0.0, |c| c / packets.max(1) as f64),
        fill_ns_per_packet: m.fill_ns,
        engine_ns_per_packet: (ns - m.fill_ns).max(0.0),
        flows_warm: warm.0,
        flows_end: stats.flows,
        table_memory_mib: engine.map_or(0.0, |e| e.conntrack().memory() as f64 / (1024.0 * 1024.0)),
        nat_bindings: stats.nat_bindings,
        reloads_picked_up: stats.generation.saturating_sub(first_generation) as u32,
        handed_off: stats.dataplane.handed_off,
        same_core: stats.dataplane.same_core,
        dataplane_drops: stats.dataplane.total_drops(),
        counters,
    }
}

/// One core of the default mode: one worker stepped in this thread on
/// virtual time, its ports playing its own traffic. Waits at `start` with
/// the other cores, then runs for `opts.seconds` (or until `stop`).
fn run_core(
    opts: &Options,
    core: usize,
    warm: Warm,
    published: Option<&Arc<Published>>,
    start: &Barrier,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> CoreResult {
    let ns_per_packet_virtual = virtual_ns_per_packet(opts);
    let Warm { engine, now: begin, traffic, flows, counters: warm_counters } = warm;
    let traffic = Arc::new(vec![traffic]);
    let (ports, delivered) = generator_ports(&traffic, 0, true);
    let generation = published.map(|p| p.load_full());
    let first_generation = generation.as_ref().map_or(0, |g| g.number());
    let setup = worker_setup(opts, 0, 1, None, engine, generation, ports);
    let mut workers = Lockstep::new(vec![setup], published.cloned(), begin);

    start.wait();
    let fill_ns = time_fill(opts, &traffic);

    // The measured loop: a worker step, then time moves on by what the
    // generator delivered.
    let run_for = Duration::from_secs_f64(opts.seconds);
    let mut now = begin;
    let t0 = Instant::now();
    let c0 = rdtsc();
    let mut steps = 0u64;
    loop {
        workers.step(now);
        let offered: u64 = delivered.iter().map(|d| d.load(Ordering::Relaxed)).sum();
        now = Time(begin.0 + ns_per_packet_virtual * offered);
        steps += 1;
        if steps % 256 == 0 {
            progress.store(offered, Ordering::Relaxed);
            if t0.elapsed() >= run_for || stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cycles = rdtsc().wrapping_sub(c0) as f64;
    progress.store(delivered.iter().map(|d| d.load(Ordering::Relaxed)).sum(), Ordering::Relaxed);
    let (stats, kept) = workers.finish(now);
    let m = Measured { core, cpu: None, seconds, cycles: Some(cycles), fill_ns };
    core_result(
        m,
        &stats[0],
        kept.first().map(|k| &k.engine),
        (flows, &warm_counters),
        first_generation,
        opts.null_engine,
    )
}

/// Publishes `opts.reloads` new generations at even intervals over the
/// measured run, each compiled from `db` and diffed against the running
/// one, as the daemon's reloader does. Returns each compile's time in ms.
fn reload_during(opts: &Options, db: &MemberDb, published: &Published) -> Vec<f64> {
    let every = Duration::from_secs_f64(opts.seconds / f64::from(opts.reloads + 1));
    (0..opts.reloads)
        .map(|_| {
            std::thread::sleep(every);
            let current = published.load_full();
            let t = Instant::now();
            let next = policy::compile(db, current.number() + 1).expect("the scenario's database is valid");
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let ended = policy::diff(&current.policy, &next).flows_to_end().collect();
            published.store(Arc::new(current.next(Arc::new(next), ended)));
            ms
        })
        .collect()
}

/// Starts the reloader, if there are reloads to publish and a policy to reload.
fn spawn_reloader<'s>(
    s: &'s Scope<'s, '_>,
    opts: &'s Options,
    db: Option<&'s MemberDb>,
    published: Option<&'s Arc<Published>>,
) -> Option<ScopedJoinHandle<'s, Vec<f64>>> {
    let (db, published) = (db?, published?);
    (opts.reloads > 0).then(|| s.spawn(move || reload_during(opts, db, published)))
}

/// Runs the benchmark; progress goes to stderr.
pub fn run(opts: &Options) -> Report {
    let p = &opts.scenario;
    let cores = opts.cores.max(1);
    let shaping = opts.shaping.map(|bps| engine::ShapingConfig::new([bps, bps], cores, 0, 0));
    let flows_total = ((f64::from(p.flows) * opts.flow_scale) as usize).max(cores);
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    if opts.progress {
        eprintln!(
            "torwart bench: {} ({} members, {} flows) on {} core(s), generating traffic from seed {}...",
            p.name, p.members, flows_total, cores, opts.seed
        );
    }
    // The member database of the scenario and its compiled policy.
    let db = opts.members.then(|| policy::sample::campus(p.members));
    let mut compile_ms = None;
    let published = db.as_ref().map(|db| {
        let t0 = Instant::now();
        let compiled = policy::compile(db, 1).expect("the scenario's database is valid");
        compile_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
        Arc::new(Published::from_pointee(Generation::first(Arc::new(compiled))))
    });
    // Enough sequence to not fit in cache: about 1M packets per core.
    let batches = (1 << 20) / opts.batch;
    let traffic: Vec<Traffic> = (0..cores)
        .map(|c| {
            // Member index `m` has id `m + 1`; the dataplane gives it to `policy::owner(id)`.
            let members: Vec<u32> = (0..p.members).filter(|m| policy::owner(m + 1, cores) == c).collect();
            let seed = opts.seed.wrapping_add(c as u64);
            scenario::traffic_with(p, &members, flows_total / cores, batches, opts.batch, seed, opts.locality)
        })
        .collect();
    let (bytes_in, bytes_out, seq_packets, new_packets) = traffic.iter().fold((0, 0, 0, 0), |a, t| {
        let new: usize = t.sequence.iter().map(|b| b.packets.iter().filter(|p| **p & NEW_FLOW != 0).count()).sum();
        (a.0 + t.bytes_in, a.1 + t.bytes_out, a.2 + t.packets, a.3 + new as u64)
    });

    let run = Run { opts, db: db.as_ref(), published: published.as_ref(), shaping: shaping.as_ref(), cpus: &cpus };
    let round_trip = || match (cores >= 2, run.cpu(0), run.cpu(1)) {
        (true, Some(a), Some(b)) if a != b => core_round_trip_ns(a, b),
        _ => None,
    };
    let round_trip_before = round_trip();
    let (mut results, reload_ms) = if opts.dataplane {
        if opts.progress {
            eprintln!("warming {} flows, then running the dataplane's workers...", flows_total);
        }
        run.dataplane(traffic)
    } else {
        run.cores(traffic, flows_total)
    };
    results.sort_by_key(|r| r.core);
    let core_round_trip_ns = round_trip_before.zip(round_trip()).map(|(a, b)| [a, b]);

    let mut total = Counters::default();
    for r in &results {
        total.add(&r.counters);
    }
    let packets: u64 = results.iter().map(|r| r.packets).sum();
    let mpps: f64 = results.iter().map(|r| r.mpps).sum();
    let avg = |f: fn(&CoreResult) -> f64| results.iter().map(f).sum::<f64>() / results.len() as f64;
    Report {
        scenario: p.name,
        locality: opts.locality,
        seed: opts.seed,
        cores,
        batch: opts.batch,
        flows: flows_total as u64,
        members: p.members,
        packets,
        mpps,
        mpps_per_core: mpps / cores as f64,
        ns_per_packet: avg(|r| r.ns_per_packet),
        tsc_cycles_per_packet: avg(|r| r.tsc_cycles_per_packet),
        engine_ns_per_packet: avg(|r| r.engine_ns_per_packet),
        inbound_byte_share: bytes_in as f64 / (bytes_in + bytes_out).max(1) as f64,
        new_flow_share: new_packets as f64 / seq_packets.max(1) as f64,
        fast_path_share: total.fast_path as f64 / (total.fast_path + total.slow_path).max(1) as f64,
        counters: total.entries().into_iter().filter(|(_, v)| *v != 0).collect(),
        members_pipeline: opts.members,
        policy_compile_ms: compile_ms,
        reloads: reload_ms.len() as u32,
        reload_compile_ms_max: reload_ms
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))),
        handoff_share: opts.dataplane.then(|| {
            let h: u64 = results.iter().map(|r| r.handed_off).sum();
            let same: u64 = results.iter().map(|r| r.same_core).sum();
            h as f64 / (h + same).max(1) as f64
        }),
        shaped: opts.shaping.map(|_| {
            let all = (total.shaper_passed + total.shaper_queued + total.shaper_dropped).max(1) as f64;
            [total.shaper_passed as f64 / all, total.shaper_queued as f64 / all, total.shaper_dropped as f64 / all]
        }),
        per_core: results,
        null_engine: opts.null_engine,
        independent: opts.dataplane && opts.independent,
        core_round_trip_ns,
    }
}

/// What both modes run with.
struct Run<'a> {
    opts: &'a Options,
    db: Option<&'a MemberDb>,
    published: Option<&'a Arc<Published>>,
    shaping: Option<&'a engine::ShapingConfig>,
    cpus: &'a [core_affinity::CoreId],
}

impl Run<'_> {
    fn cpu(&self, core: usize) -> Option<core_affinity::CoreId> {
        self.cpus.get(core % self.cpus.len().max(1)).copied()
    }

    fn warm(&self, core: usize, traffic: Traffic) -> Warm {
        let policy = self.published.map(|p| Arc::clone(&p.load().policy));
        // The live dataplane's workers go on at the monotonic clock, so
        // their warm-up starts there: from any other start the flows it
        // made would be as old as the machine's uptime when the workers
        // began, and all expire in their first step (until 2026-12-05 the
        // dataplane mode measured that: every warmed flow expired, then
        // picked up again or refused as unsolicited). Stepped on virtual
        // time, a core starts at 1,000 s on every machine.
        let start = if self.opts.dataplane { dataplane::monotonic_now() } else { Time::from_secs(1_000) };
        warm(self.opts, start, core, self.shaping.map(|s| s.for_core(core)), traffic, policy)
    }

    /// The default mode: a thread per core, pinned, that warms its engine
    /// and steps its worker ([`run_core`]); this thread reloads (if asked)
    /// and reports progress. Returns the cores' results and the reloads' compile times.
    fn cores(&self, traffic: Vec<Traffic>, flows_total: usize) -> (Vec<CoreResult>, Vec<f64>) {
        let opts = self.opts;
        let cores = traffic.len();
        let progress: Vec<AtomicU64> = (0..cores).map(|_| AtomicU64::new(0)).collect();
        let start = Barrier::new(cores + 1);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let handles: Vec<_> = traffic
                .into_iter()
                .enumerate()
                .map(|(c, t)| {
                    let (progress, start, stop) = (&progress[c], &start, &stop);
                    let cpu = self.cpu(c);
                    s.spawn(move || {
                        // Reported only where the thread was pinned.
                        let pinned = cpu.filter(|&id| core_affinity::set_for_current(id));
                        let warm = self.warm(c, t);
                        let mut r = run_core(opts, c, warm, self.published, start, stop, progress);
                        r.cpu = pinned.map(|c| c.id);
                        r
                    })
                })
                .collect();
            if opts.progress {
                eprintln!("warming {} flows...", flows_total);
            }
            start.wait();
            let t0 = Instant::now();
            let reloader = spawn_reloader(s, opts, self.db, self.published);
            while !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(250));
                if opts.progress {
                    let n: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
                    let el = t0.elapsed().as_secs_f64();
                    eprint!("\r  {:5.1} s  {:>12} packets  {:7.2} Mpps   ", el, n, n as f64 / el.max(1e-9) / 1e6);
                }
                if t0.elapsed().as_secs_f64() > opts.seconds * 4.0 + 30.0 {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            if opts.progress {
                eprintln!();
            }
            let results = handles.into_iter().map(|h| h.join().expect("bench worker")).collect();
            (results, reloader.map(|r| r.join().expect("reloader")).unwrap_or_default())
        })
    }

    /// Dataplane mode: warms one engine per worker, then runs the live
    /// dataplane's workers over generator ports for `opts.seconds`, each
    /// worker's ports playing every core's traffic in turn.
    fn dataplane(&self, traffic: Vec<Traffic>) -> (Vec<CoreResult>, Vec<f64>) {
        let opts = self.opts;
        let cores = traffic.len();
        let warmed: Vec<Warm> = std::thread::scope(|s| {
            let handles: Vec<_> =
                traffic.into_iter().enumerate().map(|(c, t)| s.spawn(move || self.warm(c, t))).collect();
            handles.into_iter().map(|h| h.join().expect("warm-up")).collect()
        });
        // The warm-up's virtual time may run ahead of the clock (3 packets
        // a flow at the offered rate): the workers start once the clock
        // has caught up, so that their time does not stand still.
        let warmed_until = warmed.iter().map(|w| w.now).max().unwrap_or(Time(0));
        let ahead = Duration::from_nanos(warmed_until.0.saturating_sub(dataplane::monotonic_now().0));
        if opts.progress && ahead > Duration::from_secs(1) {
            eprintln!("waiting {:.1} s for the clock to reach the warm-up's virtual time...", ahead.as_secs_f64());
        }
        while dataplane::monotonic_now() < warmed_until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut engines = Vec::with_capacity(cores);
        let mut all = Vec::with_capacity(cores);
        let mut warm = Vec::with_capacity(cores);
        for w in warmed {
            engines.push(w.engine);
            all.push(w.traffic);
            warm.push((w.flows, w.counters));
        }
        let traffic = Arc::new(all);
        let generation = self.published.map(|p| p.load_full());
        let first_generation = generation.as_ref().map_or(0, |g| g.number());
        let setups = engines
            .into_iter()
            .enumerate()
            .map(|(c, engine)| {
                let cpu = self.cpu(c).map(|id| id.id);
                let (index, workers) = if opts.independent { (0, 1) } else { (c, cores) };
                let own_only = opts.no_handoff || opts.independent;
                let ports = generator_ports(&traffic, c, own_only).0;
                worker_setup(opts, index, workers, cpu, engine, generation.clone(), ports)
            })
            .collect::<Vec<_>>();
        // One dataplane of all the workers, or one of its own for each.
        let groups: Vec<Vec<WorkerSetup>> =
            if opts.independent { setups.into_iter().map(|s| vec![s]).collect() } else { vec![setups] };
        std::thread::scope(|s| {
            let t0 = Instant::now();
            let dps: Vec<_> = groups
                .into_iter()
                .map(|g| {
                    dataplane::Dataplane::start(g, self.published.cloned()).expect("the dataplane's workers start")
                })
                .collect();
            let reloader = spawn_reloader(s, opts, self.db, self.published);
            match (opts.scrape, &dps[..]) {
                (true, [dp]) => {
                    let scrapes = watched(dp, self.db, Duration::from_secs_f64(opts.seconds));
                    if opts.progress {
                        eprintln!("scraped {scrapes} times while the workers ran");
                    }
                }
                _ => std::thread::sleep(Duration::from_secs_f64(opts.seconds)),
            }
            let (mut stats, mut kept) = (Vec::new(), Vec::new());
            for dp in dps {
                let (s, k) = dp.stop_keeping_engines();
                stats.extend(s);
                kept.extend(k);
            }
            let seconds = t0.elapsed().as_secs_f64();
            let results = stats
                .iter()
                .zip(&kept)
                .zip(&warm)
                .enumerate()
                .map(|(core, ((s, k), (flows, counters)))| {
                    let cpu = self.cpu(core).map(|id| id.id);
                    let m = Measured { core, cpu, seconds, cycles: None, fill_ns: 0.0 };
                    core_result(
                        m,
                        s,
                        k.as_ref().map(|k| &k.engine),
                        (*flows, counters),
                        first_generation,
                        opts.null_engine,
                    )
                })
                .collect();
            (results, reloader.map(|r| r.join().expect("reloader")).unwrap_or_default())
        })
    }
}

/// Serves the daemon's API for `run` while the workers run: publishes their
/// figures every second, as the daemon does, and fetches `/metrics`,
/// `/api/status` and `/api/members` every second, as Prometheus and the web
/// page do (over the API's socket, which serves everything: over TCP on
/// loopback without a token the members would be refused). Returns the
/// number of scrapes that answered 200.
fn watched(dp: &dataplane::Dataplane, db: Option<&MemberDb>, run: Duration) -> u64 {
    use control::api::{live::Live, Api, ApiState};
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime");
    let members = Arc::new(ArcSwap::from_pointee(db.cloned().unwrap_or_default()));
    let live = Arc::new(Live::new(members));
    let state = ApiState {
        live: Arc::clone(&live),
        db: None,
        reload_now: Arc::new(tokio::sync::Notify::new()),
        member_series: 1000,
    };
    let dir = std::env::temp_dir().join(format!("torwart-bench-api-{}", std::process::id()));
    let socket = dir.join("api.sock");
    let config = control::config::ApiConfig { socket: socket.clone(), ..Default::default() };
    let api = Api::start(&runtime, &config, None, state).expect("the API");
    let (t0, mut last) = (Instant::now(), None);
    let mut answered = 0;
    while t0.elapsed() < run {
        let now = Instant::now();
        let stats = control::stats::Stats::collect(&dp.stats(), &control::stats::Context::default());
        live.publish(stats, now, 0, last);
        last = Some(now);
        for path in ["/metrics", "/api/status", "/api/members?limit=100"] {
            answered += u64::from(http_get(&socket, path));
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(now.elapsed()).min(run.saturating_sub(t0.elapsed())));
    }
    api.stop();
    let _ = std::fs::remove_dir_all(&dir);
    answered
}

/// One HTTP/1.0 GET over the API's socket; whether it answered 200.
fn http_get(socket: &std::path::Path, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: torwart\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200")
}

/// A port that replays the scenario's traffic into a worker and swallows
/// what the worker sends. Worker `w`'s port plays the traffic of every
/// core in `traffic` in turn, so with `n` cores' traffic `(n - 1) / n` of
/// its frames belong to another worker: what a NIC hashing by flow (not by
/// member) does. Given one core's traffic, it plays only that.
struct GenPort {
    traffic: Arc<Vec<Traffic>>,
    inside: bool,
    worker: usize,
    /// Play only `worker`'s own traffic (else every worker's in turn).
    own_only: bool,
    turn: usize,
    cursor: Vec<usize>,
    lap: u32,
    /// Frames delivered so far (written by this port only): the offered load.
    delivered: Arc<AtomicU64>,
}

impl GenPort {
    fn new(traffic: &Arc<Vec<Traffic>>, inside: bool, worker: usize, own_only: bool) -> GenPort {
        GenPort {
            traffic: Arc::clone(traffic),
            inside,
            worker,
            own_only,
            turn: 0,
            cursor: vec![0; traffic.len()],
            lap: 0,
            delivered: Arc::default(),
        }
    }
}

/// The template of packet `p` of `t` (see [`scenario::SeqBatch::packets`]).
#[inline]
fn template(t: &Traffic, p: u32) -> &scenario::Template {
    if p & NEW_FLOW != 0 {
        &t.new_flows[(p & !NEW_FLOW) as usize]
    } else {
        &t.templates[p as usize]
    }
}

/// Prefetches the templates of a batch (not one dependent miss each):
/// every cache line of each, as a template may straddle three.
#[inline]
fn prefetch(t: &Traffic, seq: &[u32]) {
    for &p in seq {
        let tpl = (template(t, p) as *const scenario::Template).cast::<i8>();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint and cannot fault.
        unsafe {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch(tpl, _MM_HINT_T0);
            _mm_prefetch(tpl.wrapping_add(64), _MM_HINT_T0);
            _mm_prefetch(tpl.wrapping_add(std::mem::size_of::<scenario::Template>() - 1), _MM_HINT_T0);
        }
    }
}

/// The index of the next batch from `inside` (or the outside) in `seq`
/// from `*cursor` on, if there is one; a wrap counts a lap.
fn next_batch(seq: &[scenario::SeqBatch], inside: bool, cursor: &mut usize, lap: &mut u32) -> Option<usize> {
    for _ in 0..seq.len() {
        if seq[*cursor].from_inside == inside {
            return Some(*cursor);
        }
        advance(seq, cursor, lap);
    }
    None
}

fn advance(seq: &[scenario::SeqBatch], cursor: &mut usize, lap: &mut u32) {
    *cursor += 1;
    if *cursor == seq.len() {
        *cursor = 0;
        *lap = lap.wrapping_add(1);
    }
}

impl io::PacketIo for GenPort {
    fn recv(&mut self, batch: &mut io::Batch) -> Result<usize, io::IoError> {
        let ti = if self.own_only { self.worker } else { (self.worker + self.turn) % self.traffic.len() };
        self.turn += 1;
        let t = &self.traffic[ti];
        let cursor = &mut self.cursor[ti];
        let Some(k) = next_batch(&t.sequence, self.inside, cursor, &mut self.lap) else { return Ok(0) };
        let lap = self.lap;
        advance(&t.sequence, cursor, &mut self.lap);
        // The templates of this side's next batch first, on their way to
        // the cache while this one is copied and processed (as a NIC's DMA
        // would have the frames in memory before the CPU looks).
        if let Some(next) = next_batch(&t.sequence, self.inside, cursor, &mut self.lap) {
            prefetch(t, &t.sequence[next].packets);
        }
        let mut n = 0;
        for &p in &t.sequence[k].packets {
            let Some(slot) = batch.next_slot() else { break };
            let tpl = template(t, p);
            let data = slot.storage_mut();
            data[..scenario::HEADER_BYTES].copy_from_slice(&tpl.head);
            if p & NEW_FLOW != 0 && tpl.port_at != 0 {
                // A new source port each lap, so the flow is new every time.
                let at = usize::from(tpl.port_at);
                let port = u16::from_be_bytes([tpl.head[at], tpl.head[at + 1]]) ^ (lap.wrapping_mul(0x9e37) as u16);
                data[at..at + 2].copy_from_slice(&port.to_be_bytes());
            }
            if !slot.set_len(usize::from(tpl.len)) || !batch.commit_slot() {
                break;
            }
            n += 1;
        }
        // One writer: a load and a store, not a locked add.
        self.delivered.store(self.delivered.load(Ordering::Relaxed) + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn send(&mut self, frames: &[io::PacketBuf]) -> Result<usize, io::IoError> {
        Ok(frames.len())
    }

    fn name(&self) -> &str {
        if self.inside {
            "generator-inside"
        } else {
            "generator-outside"
        }
    }
}

/// The human-readable report.
pub fn print(r: &Report) {
    println!(
        "scenario       {} (seed {}), {} flows, {} members, batch {}, {} locality",
        r.scenario,
        r.seed,
        r.flows,
        r.members,
        r.batch,
        match r.locality {
            scenario::Locality::Uniform => "uniform",
            scenario::Locality::Realistic => "realistic",
        }
    );
    println!(
        "traffic        {:.1} % of bytes inbound, {:.2} % of packets open a flow, {:.1} % fast path",
        r.inbound_byte_share * 100.0,
        r.new_flow_share * 100.0,
        r.fast_path_share * 100.0
    );
    if r.independent {
        println!("dataplane      one dataplane per core, one worker each, nothing shared: the cores' ceiling");
    } else if let Some(h) = r.handoff_share {
        let drops: u64 = r.per_core.iter().map(|c| c.dataplane_drops).sum();
        println!(
            "dataplane      workers over generator ports: {:.1} % of frames handed to the owning worker, {drops} dropped by the dataplane",
            h * 100.0
        );
    }
    if let Some([before, after]) = r.core_round_trip_ns {
        println!(
            "placement      a cache line's round trip between the first two cores' CPUs: {before:.0} ns before the run, {after:.0} ns after"
        );
    }
    if let Some([p, q, d]) = r.shaped {
        println!(
            "shaping        every member by plan: {:.1} % passed at once, {:.1} % queued, {:.1} % dropped by the shaper",
            p * 100.0,
            q * 100.0,
            d * 100.0
        );
    }
    println!(
        "{:>4} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "core", "cpu", "packets", "Mpps", "ns/pkt", "cyc/pkt", "fill ns", "engine ns", "flows"
    );
    for c in &r.per_core {
        println!(
            "{:>4} {:>5} {:>10} {:>9.2} {:>9.1} {:>9.0} {:>9.1} {:>10.1} {:>9}",
            c.core,
            c.cpu.map_or("-".to_string(), |c| c.to_string()),
            c.packets,
            c.mpps,
            c.ns_per_packet,
            c.tsc_cycles_per_packet,
            c.fill_ns_per_packet,
            c.engine_ns_per_packet,
            c.flows_end
        );
    }
    println!("total          {:.2} Mpps on {} core(s), {:.2} Mpps per core", r.mpps, r.cores, r.mpps_per_core);
    if r.null_engine {
        println!("engine         bypassed (--null-engine): the loop's floor; no firewall, NAT, accounting or shaping");
    }
    if let Some(ms) = r.policy_compile_ms {
        println!("policy         member pipeline on; {} members compiled in {:.1} ms", r.members, ms);
    } else {
        println!("policy         classic stateful policy (--no-members): connection tracking alone");
    }
    if r.reloads > 0 {
        let picked: Vec<_> = r.per_core.iter().map(|c| c.reloads_picked_up.to_string()).collect();
        println!(
            "reloads        {} published during the run (slowest compile {:.1} ms, off the packet path), picked up per core: {}",
            r.reloads,
            r.reload_compile_ms_max.unwrap_or(0.0),
            picked.join(", ")
        );
    }
    let drops: Vec<_> = r.counters.iter().filter(|(k, _)| engine::DropReason::all().any(|d| d.name() == **k)).collect();
    if !drops.is_empty() {
        println!("drops          {}", drops.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pinned threads pass the line back and forth: a round trip takes
    /// some time, and not a second, and the measurement ends in bounded
    /// time even when the other tests keep the CPUs busy (a round whose
    /// answers take too long gives no figure). A CPU that does not exist
    /// cannot be pinned to, and gives no figure instead of a hang.
    #[test]
    fn a_round_trip_between_two_cpus_is_measured() {
        let cpus = core_affinity::get_core_ids().unwrap_or_default();
        if let [a, b, ..] = cpus[..] {
            let t0 = Instant::now();
            if let Some(ns) = core_round_trip_ns(a, b) {
                assert!(ns > 0.0 && ns < 1e9, "{ns} ns");
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        }
        let nowhere = core_affinity::CoreId { id: 1023 }; // a CPU this VM lacks, within a cpu_set_t
        assert_eq!(core_round_trip_ns(nowhere, nowhere), None);
        if let Some(&a) = cpus.first() {
            assert_eq!(core_round_trip_ns(a, nowhere), None);
        }
    }

    fn quick(null_engine: bool, dataplane: bool) -> Report {
        run(&quick_options(null_engine, dataplane))
    }

    fn quick_options(null_engine: bool, dataplane: bool) -> Options {
        Options {
            scenario: scenario::by_name("campus-2018").expect("the scenario").clone(),
            locality: scenario::Locality::Uniform,
            seed: 1,
            cores: 1,
            seconds: 0.3,
            batch: 32,
            offered_mpps: 1.0,
            flow_scale: 0.005,
            progress: false,
            members: true,
            reloads: 0,
            shaping: None,
            dataplane,
            scrape: false,
            null_engine,
            no_handoff: false,
            independent: false,
        }
    }

    /// The floor mode counts what the workers moved (the engine, bypassed,
    /// counts nothing), in both modes, and says so in the report.
    #[test]
    fn the_null_engine_floor_is_measured_from_the_workers() {
        for dataplane in [false, true] {
            let engine = quick(false, dataplane);
            let floor = quick(true, dataplane);
            assert!(engine.packets > 0 && !engine.null_engine);
            assert!(floor.packets > 0 && floor.null_engine, "dataplane {dataplane}: {} packets", floor.packets);
            assert!(!floor.counters.contains_key("rx_inside_packets"), "the engine saw nothing: {:?}", floor.counters);
            assert!(engine.counters.contains_key("rx_inside_packets"));
        }
    }

    /// Independent dataplanes, one per core: each worker sees only its own
    /// members' traffic and hands nothing over, and each core's figures
    /// are its own.
    #[test]
    fn independent_dataplanes_hand_nothing_over() {
        if core_affinity::get_core_ids().map_or(0, |c| c.len()) < 2 {
            println!("skipped: needs two CPUs");
            return;
        }
        let mut opts = quick_options(false, true);
        opts.cores = 2;
        opts.independent = true;
        let r = run(&opts);
        assert!(r.independent);
        assert_eq!(r.handoff_share, Some(0.0), "{:?}", r.handoff_share);
        assert_eq!(r.per_core.iter().map(|c| c.core).collect::<Vec<_>>(), [0, 1]);
        assert!(r.per_core.iter().all(|c| c.packets > 0 && c.handed_off == 0), "{:?}", r.per_core);
        assert_eq!(r.counters.get("flows_expired").copied().unwrap_or(0), 0);
    }

    /// Both modes measure the warmed flows, not a table that expired when
    /// the run began: the live workers' clock (the monotonic one, at the
    /// machine's uptime) must not jump past the warm-up's.
    #[test]
    fn the_warmed_flows_live_through_the_run() {
        for dataplane in [false, true] {
            let r = quick(false, dataplane);
            let expired = r.counters.get("flows_expired").copied().unwrap_or(0);
            assert_eq!(expired, 0, "dataplane {dataplane}: {expired} of {} flows expired", r.flows);
            let fast = r.counters.get("fast_path").copied().unwrap_or(0);
            let slow = r.counters.get("slow_path").copied().unwrap_or(0);
            assert!(fast > 20 * slow, "dataplane {dataplane}: {fast} packets on the fast path, {slow} on the slow");
        }
    }
}
