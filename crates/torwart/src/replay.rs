//! `torwart replay`: what would the gateway do with this traffic?
//!
//! Reads a capture taken on the inside port and one taken on the outside
//! port, merges them by timestamp, and hands them in batches of consecutive
//! frames from the same side to the gateway's own workers
//! ([`dataplane::Lockstep`]: the live loop, stepped on capture time), with
//! steering and handoff between workers, the engine, egress and shaping.
//! Frames forwarded towards each side are written to `to-inside.pcap` and
//! `to-outside.pcap` with their original timestamps (or the time a shaper
//! released them); the counters say what was dropped and why.
//!
//! Egress is static (frames leave unchanged by their side's port) unless
//! routes are given ([`Options::routes`], a file of
//! [`control::routes::StaticRoutes`]): then the workers route as the daemon
//! does over the kernel's tables (next hop and MAC rewrite, TTL, ICMP
//! errors, fragmentation), with the file's tables instead of the kernel's.
//!
//! Replay is deterministic: the flow hash key is fixed (derived from
//! `--seed`), so eviction choices and so every output byte are the same on
//! every run. That is what makes it the base of the golden tests.
//!
//! Without captures it replays an embedded demonstration (a few members'
//! connections, an unsolicited probe, a blind reset, fragments), so that
//! the command shows what it does on a fresh machine.

use crate::Error;
use arc_swap::ArcSwap;
use control::db::MemberTraffic;
use control::routes::StaticRoutes;
use dataplane::{Egress, Lockstep, PortQueue, Totals, WorkerConfig, WorkerSetup};
use engine::{Config, Counters, Side, Time};
use io::{Batch, IoError, MemoryIo, PacketBuf, PcapReader, PcapWriter, PortId, SharedMemoryIo, TimedSource};
use policy::{Generation, Policy};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The embedded demonstration captures (also golden test inputs).
pub const DEMO_INSIDE: &[u8] = include_bytes!("../../../tests/golden/demo/inside.pcap");
pub const DEMO_OUTSIDE: &[u8] = include_bytes!("../../../tests/golden/demo/outside.pcap");

pub const INSIDE: PortId = PortId(0);
pub const OUTSIDE: PortId = PortId(1);

/// Frames per engine batch during replay.
pub const BATCH: usize = 32;

/// Where replay's frames come from.
#[derive(Debug)]
pub enum Input {
    File(PathBuf),
    Bytes(&'static str, &'static [u8]),
    None,
}

#[derive(Debug)]
pub struct Options {
    pub inside: Input,
    pub outside: Input,
    pub out_dir: PathBuf,
    pub engine: Config,
    /// The member policy; without one the classic stateful policy applies.
    pub policy: Option<Arc<Policy>>,
    /// Workers, each with its own queue of both ports (frames are spread
    /// over them by a hash, as a NIC does, and steered to their owner).
    pub workers: usize,
    /// Shape members by their plans ([`shaping`]).
    pub shaping: Option<engine::ShapingConfig>,
    /// Route with these tables (one link of each side must be a port: the
    /// captures' ports); `None`: static egress.
    pub routes: Option<StaticRoutes>,
}

/// How often replay time moves while the shapers hold frames (and the
/// poll gap their uplink re-division is built for).
pub const SHAPER_TICK_NS: u64 = 1_000_000;

/// The most replay time runs on after the captures end, for the shapers
/// to release what they hold.
pub const SHAPER_DRAIN_NS: u64 = 10_000_000_000;

/// Shaping for a replay with `workers` workers: every member by plan, the
/// uplink unlimited.
pub fn shaping(workers: usize) -> engine::ShapingConfig {
    engine::ShapingConfig::new([u64::MAX / 4, u64::MAX / 4], workers.max(1), 0, SHAPER_TICK_NS)
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub inside: String,
    pub outside: String,
    pub frames_in: [u64; 2],
    pub frames_out: [u64; 2],
    pub flows_live: usize,
    /// Frames of the captures larger than a frame buffer (jumbo or GRO
    /// super-packets), dropped before the engine.
    pub oversized: u64,
    /// Every non-zero counter, in a stable order (the router's as
    /// `router_<name>`, as in the daemon's stats).
    pub counters: BTreeMap<String, u64>,
    #[serde(skip)]
    pub raw: Counters,
    pub to_inside: PathBuf,
    pub to_outside: PathBuf,
    /// Timestamps of the first and last frame read (ns since the epoch).
    #[serde(skip)]
    pub first_ts_ns: u64,
    #[serde(skip)]
    pub last_ts_ns: u64,
    /// Traffic per member (by member id), when a member policy was used:
    /// the shape of the daemon's stats and of its accounting.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberTraffic>,
}

/// A source with no frames, for a side without a capture.
struct Nothing;

impl TimedSource for Nothing {
    fn peek_ts(&mut self) -> Result<Option<u64>, IoError> {
        Ok(None)
    }
    fn read_next(&mut self, _: &mut PacketBuf) -> Result<bool, IoError> {
        Ok(false)
    }
}

fn open(input: &Input) -> Result<(String, Box<dyn TimedSource>), Error> {
    Ok(match input {
        Input::File(p) => (p.display().to_string(), Box::new(PcapReader::open(p)?)),
        Input::Bytes(name, b) => (name.to_string(), Box::new(PcapReader::new(*name, *b)?)),
        Input::None => ("(none)".to_string(), Box::new(Nothing)),
    })
}

fn side_of(port: PortId) -> Side {
    if port == INSIDE {
        Side::Inside
    } else {
        Side::Outside
    }
}

/// One worker's two ports, shared with the replay that fills and drains them.
struct WorkerPorts {
    /// By port index: inside, outside.
    ports: [SharedMemoryIo; 2],
}

/// The workers of a replay: the live loop stepped on capture time.
fn workers(opts: &Options, egress: &Egresses, now: Time) -> (Lockstep, Vec<WorkerPorts>) {
    let n = opts.workers.max(1);
    let ports: Vec<WorkerPorts> = (0..n)
        .map(|_| WorkerPorts {
            ports: [
                SharedMemoryIo::new(MemoryIo::new("inside", INSIDE)),
                SharedMemoryIo::new(MemoryIo::new("outside", OUTSIDE)),
            ],
        })
        .collect();
    let setups = ports
        .iter()
        .enumerate()
        .map(|(w, p)| WorkerSetup {
            config: WorkerConfig {
                index: w,
                workers: n,
                cpu: None,
                engine: engine::Config { shaping: opts.shaping.as_ref().map(|s| s.for_core(w)), ..opts.engine.clone() },
                batch: BATCH,
                idle: dataplane::Idle::Busy,
                stats_every: std::time::Duration::from_secs(3600),
                null_engine: false,
            },
            ports: vec![
                PortQueue { name: "inside".into(), side: Side::Inside, io: Box::new(p.ports[0].clone()) },
                PortQueue { name: "outside".into(), side: Side::Outside, io: Box::new(p.ports[1].clone()) },
            ],
            egress: egress.make(now),
            engine: None,
            generation: None,
        })
        .collect();
    let policy = opts.policy.as_ref().map(|p| Arc::new(ArcSwap::from_pointee(Generation::first(Arc::clone(p)))));
    (Lockstep::new(setups, policy, now), ports)
}

/// How the workers' egresses are made: static, or routed over given tables.
enum Egresses {
    Fixed,
    Routed {
        tables: Arc<ArcSwap<router::RouteTables>>,
        /// `(ifindex, side)` of the inside and the outside port.
        ports: Vec<(u32, Side)>,
        resolver: router::Resolver,
        /// Where the workers' neighbour resolutions go: nobody answers
        /// them (the tables are fixed), but they are sent as in the daemon.
        _requests: std::sync::mpsc::Receiver<(u32, std::net::IpAddr)>,
    },
}

/// Most neighbour resolutions waiting at once (then dropped, as in the daemon).
const RESOLUTIONS: usize = 64;

impl Egresses {
    fn new(routes: Option<&StaticRoutes>) -> Result<Egresses, Error> {
        let Some(routes) = routes else { return Ok(Egresses::Fixed) };
        let port = |side: Side| {
            let mut of_side = routes.ports.iter().filter(|p| p.1 == side);
            match (of_side.next(), of_side.next()) {
                (Some(&p), None) => Ok(p),
                _ => Err(Error::Usage(format!(
                    "the routes give {} {} port(s): replay has one port per side (its captures), so give one link \
                     with side = \"{}\"",
                    routes.ports.iter().filter(|p| p.1 == side).count(),
                    side.name(),
                    side.name()
                ))),
            }
        };
        let ports = vec![port(Side::Inside)?, port(Side::Outside)?];
        let (resolver, requests) = router::Resolver::channel(RESOLUTIONS);
        Ok(Egresses::Routed {
            tables: Arc::new(ArcSwap::from_pointee(routes.tables.clone())),
            ports,
            resolver,
            _requests: requests,
        })
    }

    fn make(&self, now: Time) -> Egress {
        match self {
            Egresses::Fixed => Egress::fixed(INSIDE.0.into(), OUTSIDE.0.into()),
            Egresses::Routed { tables, ports, resolver, .. } => Egress::routed(
                Arc::clone(tables),
                resolver.clone(),
                ports.clone(),
                router::RouterConfig::default(),
                now,
            ),
        }
    }
}

/// The worker whose queue a frame arrives on, as a NIC's receive-side
/// scaling would pick it: by a hash of its addresses and ports, so that a
/// flow's frames in one direction stay on one queue.
fn queue_of(frame: &[u8], workers: usize) -> usize {
    if workers < 2 {
        return 0;
    }
    let Ok(meta) = wire::classify(frame) else { return 0 };
    let k = &meta.key;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in k.src.iter().chain(&k.dst).chain(&k.src_port.to_be_bytes()).chain(&k.dst_port.to_be_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers as u64) as usize
}

/// Writes what the workers' ports sent to the output captures.
fn drain(ports: &[WorkerPorts], out: &mut [PcapWriter; 2], frames_out: &mut [u64; 2]) -> Result<(), Error> {
    for w in ports {
        for (side, port) in w.ports.iter().enumerate() {
            for f in port.take_sent() {
                out[side].write_frame(&f.data, f.ts_ns)?;
                frames_out[side] += 1;
            }
        }
    }
    Ok(())
}

/// Ticks in a row that may release nothing before replay time jumps to
/// the next frame (a member held at rate 0, say): a second of replay time.
const IDLE_TICKS: u32 = 1000;

/// Moves replay time from `from` towards `to` in [`SHAPER_TICK_NS`] steps
/// while the shapers hold frames, writing out what they release; returns
/// the time reached. Stops early after [`IDLE_TICKS`] ticks without a
/// release, so a gap in a capture costs at most that many steps.
fn release_until(
    lockstep: &mut Lockstep,
    ports: &[WorkerPorts],
    from: u64,
    to: u64,
    out: &mut [PcapWriter; 2],
    frames_out: &mut [u64; 2],
) -> Result<u64, Error> {
    let mut t = from;
    let mut idle = 0;
    while lockstep.shaper_held() > 0 && t.saturating_add(SHAPER_TICK_NS) < to && idle < IDLE_TICKS {
        t += SHAPER_TICK_NS;
        let before = frames_out[0] + frames_out[1];
        lockstep.settle(Time(t));
        drain(ports, out, frames_out)?;
        idle = if frames_out[0] + frames_out[1] > before { 0 } else { idle + 1 };
    }
    Ok(t)
}

/// Runs the replay and writes the output captures.
///
/// The captures' frames are handed to the workers' port queues in batches
/// of consecutive frames from one side, each batch at its first frame's
/// time: timers run to that time first, then the workers step until they
/// have nothing left to do, and what their ports sent is written out.
pub fn run(opts: &Options) -> Result<Report, Error> {
    let (inside_name, inside) = open(&opts.inside)?;
    let (outside_name, outside) = open(&opts.outside)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| Error::File {
        op: "create directory",
        path: opts.out_dir.clone(),
        source,
    })?;
    let paths = [opts.out_dir.join("to-inside.pcap"), opts.out_dir.join("to-outside.pcap")];
    let mut out = [PcapWriter::create(&paths[0])?, PcapWriter::create(&paths[1])?];

    let egress = Egresses::new(opts.routes.as_ref())?;
    let mut merged = io::Merged::new(inside, INSIDE, outside, OUTSIDE);
    let mut batch = Batch::new(BATCH, io::DEFAULT_FRAME_CAPACITY);
    let mut running: Option<(Lockstep, Vec<WorkerPorts>)> = None;
    let mut frames_in = [0u64; 2];
    let mut frames_out = [0u64; 2];
    let (mut first_ts, mut last_ts) = (u64::MAX, 0u64);
    let mut clock = 0u64;
    loop {
        batch.clear();
        match merged.recv_same_port(&mut batch) {
            Ok(_) => {}
            Err(e) if e.is_eof() => break,
            Err(e) => return Err(e.into()),
        }
        let Some(first) = batch.frames().first() else { continue };
        let now = Time(first.ts_ns);
        first_ts = first_ts.min(first.ts_ns);
        last_ts = last_ts.max(batch.frames().last().map_or(0, |f| f.ts_ns));
        let side = side_of(first.port);
        let (lockstep, ports) = running.get_or_insert_with(|| workers(opts, &egress, now));
        // What the shapers let go before these frames, in time.
        release_until(lockstep, ports, clock.max(first_ts), now.0, &mut out, &mut frames_out)?;
        // Timers up to now first (what expired before these frames is gone).
        lockstep.step(now);
        for f in batch.frames() {
            ports[queue_of(f.as_slice(), ports.len())].ports[side.index()].inject(f.as_slice(), f.ts_ns);
        }
        frames_in[side.index()] += batch.len() as u64;
        lockstep.settle(now);
        drain(ports, &mut out, &mut frames_out)?;
        clock = now.0;
    }
    let stats = match running {
        Some((mut lockstep, ports)) => {
            let end = release_until(
                &mut lockstep,
                &ports,
                clock,
                last_ts.saturating_add(SHAPER_DRAIN_NS),
                &mut out,
                &mut frames_out,
            )?;
            let (stats, _) = lockstep.finish(Time(end.max(last_ts)));
            drain(&ports, &mut out, &mut frames_out)?;
            stats
        }
        None => Vec::new(),
    };
    for w in out {
        w.finish()?;
    }
    let totals = Totals::of(stats.iter().map(|s| &**s));
    let raw = totals.engine.clone();
    let mut counters: BTreeMap<String, u64> = raw.entries().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    counters.extend(totals.dataplane.drops().map(|(d, v)| (d.name().to_owned(), v)));
    counters.insert("handoff_handed_off".into(), totals.dataplane.handed_off);
    for (name, v) in stats.iter().flat_map(|s| s.egress.router_named()) {
        *counters.entry(format!("router_{name}")).or_insert(0) += v;
    }
    counters.retain(|_, v| *v != 0);
    let members = control::stats::usage(&stats);
    Ok(Report {
        inside: inside_name,
        outside: outside_name,
        frames_in,
        frames_out,
        flows_live: totals.flows,
        oversized: merged.oversized(),
        counters,
        raw,
        to_inside: paths[0].clone(),
        to_outside: paths[1].clone(),
        first_ts_ns: if first_ts == u64::MAX { 0 } else { first_ts },
        last_ts_ns: last_ts,
        members,
    })
}

/// The human-readable report.
pub fn print(r: &Report) {
    println!(
        "read     {} frames from the inside ({}), {} from the outside ({})",
        r.frames_in[0], r.inside, r.frames_in[1], r.outside
    );
    println!(
        "wrote    {} frames to {}, {} to {}",
        r.frames_out[0],
        r.to_inside.display(),
        r.frames_out[1],
        r.to_outside.display()
    );
    let c = &r.raw;
    println!(
        "flows    {} created, {} expired, {} evicted, {} picked up mid-stream, {} live at the end",
        c.flows_created, c.flows_expired, c.flows_evicted, c.flows_picked_up, r.flows_live
    );
    println!("path     {} fast, {} slow, {} ICMP errors related to a flow", c.fast_path, c.slow_path, c.icmp_related);
    if !r.members.is_empty() {
        println!("members  {:>8} {:>12} {:>10} {:>12} {:>10}", "id", "up bytes", "up pkts", "down bytes", "down pkts");
        for u in &r.members {
            println!(
                "         {:>8} {:>12} {:>10} {:>12} {:>10}",
                u.member_id, u.up_bytes, u.up_packets, u.down_bytes, u.down_packets
            );
        }
    }
    if r.oversized > 0 {
        println!("oversized {} frames larger than a frame buffer, dropped before the engine", r.oversized);
    }
    let drops: Vec<_> = engine::DropReason::all().filter(|d| c.dropped(*d) > 0).collect();
    if drops.is_empty() {
        println!("dropped  nothing");
    } else {
        println!("dropped  {} frames:", c.total_drops());
        for d in drops {
            println!("  {:<28} {}", d.name(), c.dropped(d));
        }
    }
}

/// Options for a replay of `inside`/`outside` files into `out_dir` with the
/// default engine and a fixed hash key from `seed`.
pub fn options(inside: Option<&Path>, outside: Option<&Path>, out_dir: &Path, seed: u64) -> Options {
    let input = |p: Option<&Path>| p.map_or(Input::None, |p| Input::File(p.to_path_buf()));
    Options {
        inside: input(inside),
        outside: input(outside),
        out_dir: out_dir.to_path_buf(),
        engine: config(seed),
        policy: None,
        workers: 1,
        shaping: None,
        routes: None,
    }
}

/// The replay engine configuration: defaults, with the hash key from `seed`.
pub fn config(seed: u64) -> Config {
    Config { hash_key: [seed, seed ^ 0x5265_706c, seed.rotate_left(17), 0x0074_6f72_7761_7274], ..Config::default() }
}
