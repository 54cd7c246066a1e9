//! `torwart bench`: the engine's cost per packet on a named scenario.
//!
//! Each worker core gets its own engine, its own members (the member with
//! id `i` belongs to core `policy::owner(i, cores)`, as the dataplane assigns them) and its own
//! traffic, so cores share nothing, as in production. A worker first opens
//! all its flows through the engine (warm table), then measures:
//! * the fill cost alone: copying prepared headers into the batch buffers,
//!   standing in for the NIC writing frames to memory;
//! * the full loop: fill, then [`engine::Engine::process`] and timers.
//!
//! Virtual time advances at the offered rate (`--offered-mpps` per core),
//! not at the benchmark's speed, so timeouts behave as they would at that
//! load. Results are rates and per-packet costs; TSC cycles are at the
//! TSC's nominal frequency. Compare runs made in the same session only:
//! these machines are shared.

use crate::scenario::{self, FlowSpec, Params, Traffic, NEW_FLOW};
use arc_swap::ArcSwapOption;
use core::net::IpAddr;
use engine::{Config, Counters, Engine, Side, Time, Verdict};
use policy::Policy;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use wire::FrameBuf;

#[derive(Clone, Debug)]
pub struct Options {
    pub scenario: Params,
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
    /// Run through the live dataplane's workers (steering, handoff rings,
    /// batches in and out of ports) instead of calling the engine directly;
    /// frames arrive spread over the workers regardless of member (as a NIC's
    /// hash would spread them), so most are handed off.
    pub dataplane: bool,
}

/// A frame buffer of the benchmark's batches.
struct Frame {
    data: Box<[u8; 2048]>,
    len: usize,
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
    /// Of `ns_per_packet`, what filling the buffers costs.
    pub fill_ns_per_packet: f64,
    pub engine_ns_per_packet: f64,
    pub flows_warm: usize,
    pub flows_end: usize,
    pub table_memory_mib: f64,
    pub nat_bindings: usize,
    pub reloads_picked_up: u32,
    /// Frames handed to another worker, and frames processed where they arrived (dataplane mode).
    pub handed_off: u64,
    pub same_core: u64,
    /// Frames the dataplane dropped (handoff ring full, tx): dataplane mode.
    pub dataplane_drops: u64,
    #[serde(skip)]
    pub counters: Counters,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
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

/// Copies the headers of `seq`'s packets into `frames`; returns how many.
/// Prefetches the templates of a batch (as a NIC's DMA would have the
/// frames in memory before the CPU looks, not one dependent miss each).
#[inline]
fn prefetch(t: &Traffic, seq: &[u32]) {
    for &p in seq {
        let tpl = if p & NEW_FLOW != 0 { &t.new_flows[(p & !NEW_FLOW) as usize] } else { &t.templates[p as usize] };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint and cannot fault.
        unsafe {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch((tpl as *const scenario::Template).cast(), _MM_HINT_T0);
            _mm_prefetch((tpl as *const scenario::Template).cast::<i8>().wrapping_add(64), _MM_HINT_T0);
        }
    }
}

#[inline]
fn fill(t: &Traffic, seq: &[u32], lap: u32, frames: &mut [Frame]) -> usize {
    for (frame, &p) in frames.iter_mut().zip(seq) {
        let tpl = if p & NEW_FLOW != 0 { &t.new_flows[(p & !NEW_FLOW) as usize] } else { &t.templates[p as usize] };
        frame.data[..scenario::HEADER_BYTES].copy_from_slice(&tpl.head);
        frame.len = usize::from(tpl.len);
        if p & NEW_FLOW != 0 && tpl.port_at != 0 {
            // A new source port each lap, so the flow is new every time.
            let at = usize::from(tpl.port_at);
            let port = u16::from_be_bytes([tpl.head[at], tpl.head[at + 1]]) ^ (lap.wrapping_mul(0x9e37) as u16);
            frame.data[at..at + 2].copy_from_slice(&port.to_be_bytes());
        }
    }
    seq.len().min(frames.len())
}

/// Opens flow `f` through the engine packet by packet, as its ends would,
/// and returns where the flow is seen on the outside (after NAT), or `None`
/// if policy refused it.
fn open_flow(engine: &mut Engine, now: Time, f: &FlowSpec, frame: &mut Frame) -> Option<(IpAddr, u16)> {
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

struct Worker<'a> {
    core: usize,
    opts: &'a Options,
    shaping: Option<engine::ShapingConfig>,
    traffic: Traffic,
    progress: &'a AtomicU64,
}

impl Worker<'_> {
    /// A new engine for this core with every flow of its traffic open (and
    /// the inbound templates re-addressed to where NAT put the flows).
    fn warm(&mut self, published: &ArcSwapOption<Policy>) -> (Engine, Time) {
        let o = self.opts;
        let t = &self.traffic;
        let cfg = Config {
            max_flows: (t.flows.len() as u32 * 2).next_power_of_two().max(1024),
            hash_key: [o.seed ^ 0x1111, o.seed ^ 0x2222, self.core as u64, 0x7477_6172],
            shaping: self.shaping.clone(),
            ..Config::default()
        };
        let ns_per_packet_virtual = (1000.0 / o.offered_mpps) as u64;
        let mut now = Time::from_secs(1_000);
        let mut engine = Engine::new(cfg, now);
        let mut frames: Vec<Frame> = (0..o.batch).map(|_| Frame { data: Box::new([0u8; 2048]), len: 0 }).collect();
        let mut verdicts = vec![Verdict::Held; o.batch];
        if let Some(p) = published.load_full() {
            engine.set_policy(p, &[]);
            // Packet by packet, as the ends would: the answer goes to where
            // the NAT put the flow.
            // Time passes at the offered rate, so that a shaper drains as it would.
            let mut endpoints = Vec::with_capacity(t.flows.len());
            for (i, f) in t.flows.iter().enumerate() {
                endpoints.push(open_flow(&mut engine, now, f, &mut frames[0]));
                now = Time(now.0 + 3 * ns_per_packet_virtual);
                if i % 32 == 31 {
                    engine.poll_timers(now);
                    engine.poll_released(|_, _| {});
                }
            }
            self.traffic.readdress_inbound(&endpoints);
        } else {
            let mut hs = Vec::new();
            for f in &t.flows {
                f.handshake(&mut hs);
            }
            for chunk in hs.chunks(o.batch) {
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
        (engine, now)
    }

    fn run(mut self, start: &Barrier, stop: &AtomicBool, published: &ArcSwapOption<Policy>) -> CoreResult {
        let o = self.opts;
        let ns_per_packet_virtual = (1000.0 / o.offered_mpps) as u64;
        // Virtual time goes on from where the warm-up left it.
        let (mut engine, mut now) = self.warm(published);
        let mut frames: Vec<Frame> = (0..o.batch).map(|_| Frame { data: Box::new([0u8; 2048]), len: 0 }).collect();
        let mut verdicts = vec![Verdict::Held; o.batch];
        let t = &self.traffic;
        let flows_warm = engine.conntrack().len();
        let warm_counters = engine.counters().clone();

        start.wait();
        // Fill alone, for a tenth of the time (at least 0.2 s).
        let fill_for = Duration::from_secs_f64((o.seconds / 10.0).max(0.2));
        let t0 = Instant::now();
        let mut filled = 0u64;
        let mut lap = 0u32;
        'fill: loop {
            for (k, b) in t.sequence.iter().enumerate() {
                if let Some(next) = t.sequence.get(k + 1) {
                    prefetch(t, &next.packets);
                }
                filled += fill(t, &b.packets, lap, &mut frames) as u64;
                core::hint::black_box(&frames);
            }
            lap += 1;
            if t0.elapsed() >= fill_for {
                break 'fill;
            }
        }
        let fill_ns = t0.elapsed().as_nanos() as f64 / filled as f64;

        // The measured loop.
        let run_for = Duration::from_secs_f64(o.seconds);
        let t0 = Instant::now();
        let c0 = rdtsc();
        let mut packets = 0u64;
        let mut batches = 0u64;
        let mut picked_up = 0u32;
        'run: loop {
            for (k, b) in t.sequence.iter().enumerate() {
                if let Some(next) = t.sequence.get(k + 1) {
                    prefetch(t, &next.packets);
                }
                let n = fill(t, &b.packets, lap, &mut frames);
                let side = if b.from_inside { Side::Inside } else { Side::Outside };
                if o.reloads > 0 {
                    // One atomic load per batch: the whole cost of noticing a reload.
                    let p = published.load();
                    if let (Some(p), Some(mine)) = (&*p, engine.policy()) {
                        if mine.generation() != p.generation() {
                            engine.set_policy(Arc::clone(p), &[]);
                            picked_up += 1;
                        }
                    }
                }
                engine.process(now, side, &mut frames[..n], &mut verdicts[..n]);
                engine.poll_released(|_, _| {});
                now = Time(now.0 + ns_per_packet_virtual * n as u64);
                engine.poll_timers(now);
                packets += n as u64;
                batches += 1;
                if batches % 256 == 0 {
                    self.progress.store(packets, Ordering::Relaxed);
                    if t0.elapsed() >= run_for || stop.load(Ordering::Relaxed) {
                        break 'run;
                    }
                }
            }
            lap += 1;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cycles = rdtsc().wrapping_sub(c0) as f64;
        self.progress.store(packets, Ordering::Relaxed);
        let ns = elapsed * 1e9 / packets as f64;
        let mut counters = engine.counters().clone();
        counters.subtract(&warm_counters);
        CoreResult {
            core: self.core,
            cpu: None,
            packets,
            seconds: elapsed,
            mpps: packets as f64 / elapsed / 1e6,
            ns_per_packet: ns,
            tsc_cycles_per_packet: cycles / packets as f64,
            fill_ns_per_packet: fill_ns,
            engine_ns_per_packet: (ns - fill_ns).max(0.0),
            flows_warm,
            flows_end: engine.conntrack().len(),
            table_memory_mib: engine.conntrack().memory() as f64 / (1024.0 * 1024.0),
            nat_bindings: engine.nat().len(),
            reloads_picked_up: picked_up,
            handed_off: 0,
            same_core: packets,
            dataplane_drops: 0,
            counters,
        }
    }
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
    let published = ArcSwapOption::<Policy>::empty();
    if let Some(db) = &db {
        let t0 = Instant::now();
        let compiled = policy::compile(db, 1).expect("the scenario's database is valid");
        compile_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
        published.store(Some(Arc::new(compiled)));
    }
    // Enough sequence to not fit in cache: about 1M packets per core.
    let batches = (1 << 20) / opts.batch;
    let traffic: Vec<Traffic> = (0..cores)
        .map(|c| {
            // Member index `m` has id `m + 1`; the dataplane gives it to `policy::owner(id)`.
            let members: Vec<u32> = (0..p.members).filter(|m| policy::owner(m + 1, cores) == c).collect();
            scenario::traffic(p, &members, flows_total / cores, batches, opts.batch, opts.seed.wrapping_add(c as u64))
        })
        .collect();
    let (bytes_in, bytes_out, seq_packets, new_packets) = traffic.iter().fold((0, 0, 0, 0), |a, t| {
        let new: usize = t.sequence.iter().map(|b| b.packets.iter().filter(|p| **p & NEW_FLOW != 0).count()).sum();
        (a.0 + t.bytes_in, a.1 + t.bytes_out, a.2 + t.packets, a.3 + new as u64)
    });

    let progress: Vec<AtomicU64> = (0..cores).map(|_| AtomicU64::new(0)).collect();
    let start = Barrier::new(cores + 1);
    let stop = AtomicBool::new(false);
    if opts.progress && opts.dataplane {
        eprintln!("warming {} flows, then running the dataplane's workers...", flows_total);
    }
    let (mut results, reload_ms): (Vec<CoreResult>, Vec<f64>) = if opts.dataplane {
        (run_dataplane(opts, &published, traffic, shaping.as_ref(), &cpus), Vec::new())
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = traffic
                .into_iter()
                .enumerate()
                .map(|(c, t)| {
                    let (progress, start, stop, published) = (&progress[c], &start, &stop, &published);
                    let cpu = cpus.get(c % cpus.len().max(1)).copied();
                    let shaping = shaping.as_ref().map(|s| s.for_core(c));
                    s.spawn(move || {
                        if let Some(id) = cpu {
                            core_affinity::set_for_current(id);
                        }
                        let w = Worker { core: c, opts, shaping, traffic: t, progress };
                        let mut r = w.run(start, stop, published);
                        r.cpu = cpu.map(|c| c.id);
                        r
                    })
                })
                .collect();
            if opts.progress {
                eprintln!("warming {} flows...", flows_total);
            }
            start.wait();
            let t0 = Instant::now();
            // The reloader: recompiles the database and publishes a new
            // generation at even intervals during the measured run.
            let reloader = db.as_ref().filter(|_| opts.reloads > 0).map(|db| {
                let published = &published;
                let every = Duration::from_secs_f64(opts.seconds / f64::from(opts.reloads + 1));
                s.spawn(move || {
                    let mut ms = Vec::new();
                    for g in 0..opts.reloads {
                        std::thread::sleep(every);
                        let t = Instant::now();
                        let p = policy::compile(db, 2 + u64::from(g)).expect("valid");
                        published.store(Some(Arc::new(p)));
                        ms.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    ms
                })
            });
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
            let results: Vec<CoreResult> = handles.into_iter().map(|h| h.join().expect("bench worker")).collect();
            let reload_ms = reloader.map(|r| r.join().expect("reloader")).unwrap_or_default();
            (results, reload_ms)
        })
    };
    results.sort_by_key(|r| r.core);

    let mut total = Counters::default();
    for r in &results {
        total.add(&r.counters);
    }
    let packets: u64 = results.iter().map(|r| r.packets).sum();
    let mpps: f64 = results.iter().map(|r| r.mpps).sum();
    let avg = |f: fn(&CoreResult) -> f64| results.iter().map(f).sum::<f64>() / results.len() as f64;
    Report {
        scenario: p.name,
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
    }
}

/// A port that replays the scenario's traffic into a dataplane worker and
/// swallows what the worker sends. Worker `w`'s port plays the traffic of
/// every core's members in turn, so `(cores - 1) / cores` of its frames
/// belong to another worker: what a NIC hashing by flow (not by member) does.
struct GenPort {
    traffic: Arc<Vec<Traffic>>,
    inside: bool,
    worker: usize,
    turn: usize,
    cursor: Vec<usize>,
    lap: u32,
}

impl io::PacketIo for GenPort {
    fn recv(&mut self, batch: &mut io::Batch) -> Result<usize, io::IoError> {
        let cores = self.traffic.len();
        let ti = (self.worker + self.turn) % cores;
        self.turn += 1;
        let t = &self.traffic[ti];
        let len = t.sequence.len();
        for _ in 0..len {
            let b = &t.sequence[self.cursor[ti]];
            self.cursor[ti] += 1;
            if self.cursor[ti] == len {
                self.cursor[ti] = 0;
                self.lap = self.lap.wrapping_add(1);
            }
            if b.from_inside != self.inside {
                continue;
            }
            let mut n = 0;
            for &p in &b.packets {
                let Some(slot) = batch.next_slot() else { break };
                let tpl =
                    if p & NEW_FLOW != 0 { &t.new_flows[(p & !NEW_FLOW) as usize] } else { &t.templates[p as usize] };
                let data = slot.storage_mut();
                data[..scenario::HEADER_BYTES].copy_from_slice(&tpl.head);
                if p & NEW_FLOW != 0 && tpl.port_at != 0 {
                    let at = usize::from(tpl.port_at);
                    let port =
                        u16::from_be_bytes([tpl.head[at], tpl.head[at + 1]]) ^ (self.lap.wrapping_mul(0x9e37) as u16);
                    data[at..at + 2].copy_from_slice(&port.to_be_bytes());
                }
                if !slot.set_len(usize::from(tpl.len)) || !batch.commit_slot() {
                    break;
                }
                n += 1;
            }
            return Ok(n);
        }
        Ok(0)
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

/// The progress counter of warm-up-only workers (dataplane mode reports through the workers' stats).
static NO_PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Dataplane mode: warms one engine per worker, then runs the live
/// dataplane's workers over generator ports for `opts.seconds`.
fn run_dataplane(
    opts: &Options,
    published: &ArcSwapOption<Policy>,
    traffic: Vec<Traffic>,
    shaping: Option<&engine::ShapingConfig>,
    cpus: &[core_affinity::CoreId],
) -> Vec<CoreResult> {
    let cores = traffic.len();
    let warmed: Vec<(Engine, Traffic)> = std::thread::scope(|s| {
        let handles: Vec<_> = traffic
            .into_iter()
            .enumerate()
            .map(|(c, t)| {
                let shaping = shaping.map(|x| x.for_core(c));
                s.spawn(move || {
                    let mut w = Worker { core: c, opts, shaping, traffic: t, progress: &NO_PROGRESS };
                    let (e, _) = w.warm(published);
                    (e, w.traffic)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("warm-up")).collect()
    });
    let mut engines = Vec::new();
    let mut all = Vec::new();
    for (e, t) in warmed {
        engines.push(e);
        all.push(t);
    }
    let traffic = Arc::new(all);
    let warm: Vec<(usize, Counters)> = engines.iter().map(|e| (e.conntrack().len(), e.counters().clone())).collect();
    let generation =
        published.load_full().map(|p| Arc::new(arc_swap::ArcSwap::from_pointee(policy::Generation::first(p))));
    let setups = engines
        .into_iter()
        .enumerate()
        .map(|(c, engine)| {
            let port = |inside| GenPort {
                traffic: Arc::clone(&traffic),
                inside,
                worker: c,
                turn: 0,
                cursor: vec![0; cores],
                lap: 0,
            };
            dataplane::WorkerSetup {
                config: dataplane::WorkerConfig {
                    index: c,
                    workers: cores,
                    cpu: cpus.get(c % cpus.len().max(1)).map(|id| id.id),
                    engine: engine.config().clone(),
                    batch: opts.batch,
                    idle: dataplane::Idle::Busy,
                    stats_every: Duration::from_millis(100),
                },
                ports: vec![
                    dataplane::PortQueue { name: "inside".into(), side: Side::Inside, io: Box::new(port(true)) },
                    dataplane::PortQueue { name: "outside".into(), side: Side::Outside, io: Box::new(port(false)) },
                ],
                egress: dataplane::Egress::fixed(0, 1),
                engine: Some(engine),
                generation: None,
            }
        })
        .collect();
    let t0 = Instant::now();
    let dp = dataplane::Dataplane::start(setups, generation).expect("the dataplane's workers start");
    std::thread::sleep(Duration::from_secs_f64(opts.seconds));
    let stats = dp.stop();
    let elapsed = t0.elapsed().as_secs_f64();
    stats
        .iter()
        .zip(warm)
        .map(|(s, (flows_warm, warm_counters))| {
            let mut counters = s.engine.clone();
            counters.subtract(&warm_counters);
            let packets = counters.rx_packets[0] + counters.rx_packets[1];
            let ns = elapsed * 1e9 / packets.max(1) as f64;
            CoreResult {
                core: s.worker,
                cpu: cpus.get(s.worker % cpus.len().max(1)).map(|id| id.id),
                packets,
                seconds: elapsed,
                mpps: packets as f64 / elapsed / 1e6,
                ns_per_packet: ns,
                tsc_cycles_per_packet: 0.0,
                fill_ns_per_packet: 0.0,
                engine_ns_per_packet: ns,
                flows_warm,
                flows_end: s.flows,
                table_memory_mib: 0.0,
                nat_bindings: s.nat_bindings,
                reloads_picked_up: 0,
                handed_off: s.dataplane.handed_off,
                same_core: s.dataplane.same_core,
                dataplane_drops: s.dataplane.total_drops(),
                counters,
            }
        })
        .collect()
}

/// The human-readable report.
pub fn print(r: &Report) {
    println!(
        "scenario       {} (seed {}), {} flows, {} members, batch {}",
        r.scenario, r.seed, r.flows, r.members, r.batch
    );
    println!(
        "traffic        {:.1} % of bytes inbound, {:.2} % of packets open a flow, {:.1} % fast path",
        r.inbound_byte_share * 100.0,
        r.new_flow_share * 100.0,
        r.fast_path_share * 100.0
    );
    if let Some(h) = r.handoff_share {
        let drops: u64 = r.per_core.iter().map(|c| c.dataplane_drops).sum();
        println!(
            "dataplane      workers over generator ports: {:.1} % of frames handed to the owning worker, {drops} dropped by the dataplane",
            h * 100.0
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
