//! `torwart replay`: what would the gateway do with this traffic?
//!
//! Reads a capture taken on the inside port and one taken on the outside
//! port, merges them by timestamp, and runs them through one engine in
//! batches of consecutive frames from the same side, with capture time as
//! the engine's clock. Frames forwarded towards each side are written to
//! `to-inside.pcap` and `to-outside.pcap` with their original timestamps;
//! the counters say what was dropped and why.
//!
//! Replay is deterministic: the flow hash key is fixed (derived from
//! `--seed`), so eviction choices and so every output byte are the same on
//! every run. That is what makes it the base of the golden tests.
//!
//! Without captures it replays an embedded demonstration (a few members'
//! connections, an unsolicited probe, a blind reset, fragments), so that
//! the command shows what it does on a fresh machine.

use crate::Error;
use engine::members::{DOWN, UP};
use engine::{Config, Counters, Engine, Side, Time, Verdict};
use io::{Batch, IoError, PacketBuf, PcapReader, PcapWriter, PortId, TimedSource};
use policy::Policy;
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
}

/// One member's traffic as the replay counted it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct MemberUsage {
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub up_packets: u64,
    pub down_packets: u64,
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
    /// Every non-zero counter, in a stable order.
    pub counters: BTreeMap<&'static str, u64>,
    #[serde(skip)]
    pub raw: Counters,
    pub to_inside: PathBuf,
    pub to_outside: PathBuf,
    /// Timestamps of the first and last frame read (ns since the epoch).
    #[serde(skip)]
    pub first_ts_ns: u64,
    #[serde(skip)]
    pub last_ts_ns: u64,
    /// Traffic per member (by member id), when a member policy was used.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<u32, MemberUsage>,
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

/// Runs the replay and writes the output captures.
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

    let mut merged = io::Merged::new(inside, INSIDE, outside, OUTSIDE);
    let mut batch = Batch::new(BATCH, io::DEFAULT_FRAME_CAPACITY);
    let mut verdicts = [Verdict::Held; BATCH];
    let mut engine: Option<Engine> = None;
    let mut frames_in = [0u64; 2];
    let mut frames_out = [0u64; 2];
    let mut last_ts = 0u64;
    let mut first_ts = u64::MAX;
    loop {
        batch.clear();
        match merged.recv_same_port(&mut batch) {
            Ok(_) => {}
            Err(e) if e.is_eof() => break,
            Err(e) => return Err(e.into()),
        }
        let Some(first) = batch.frames().first() else { continue };
        let now = Time(first.ts_ns);
        last_ts = last_ts.max(batch.frames().last().map_or(0, |f| f.ts_ns));
        first_ts = first_ts.min(first.ts_ns);
        let side = side_of(first.port);
        let engine = engine.get_or_insert_with(|| {
            let mut e = Engine::new(opts.engine.clone(), now);
            if let Some(p) = &opts.policy {
                e.set_policy(Arc::clone(p), &[]);
            }
            e
        });
        engine.poll_timers(now);
        let n = batch.len();
        frames_in[side.index()] += n as u64;
        engine.process(now, side, batch.frames_mut(), &mut verdicts[..n]);
        for (f, v) in batch.frames().iter().zip(&verdicts[..n]) {
            if let Verdict::Forward(to) = v {
                out[to.index()].write_frame(f.as_slice(), f.ts_ns)?;
                frames_out[to.index()] += 1;
            }
        }
        let mut err = None;
        engine.poll_released(|to, bytes| {
            if let Err(e) = out[to.index()].write_frame(bytes, now.0) {
                err.get_or_insert(e);
            }
            frames_out[to.index()] += 1;
        });
        if let Some(e) = err {
            return Err(e.into());
        }
    }
    for w in out {
        w.finish()?;
    }
    let raw = engine.as_ref().map(|e| e.counters().clone()).unwrap_or_default();
    Ok(Report {
        inside: inside_name,
        outside: outside_name,
        frames_in,
        frames_out,
        flows_live: engine.as_ref().map_or(0, |e| e.conntrack().len()),
        oversized: merged.oversized(),
        counters: raw.entries().into_iter().filter(|(_, v)| *v != 0).collect(),
        raw,
        to_inside: paths[0].clone(),
        to_outside: paths[1].clone(),
        first_ts_ns: if first_ts == u64::MAX { 0 } else { first_ts },
        last_ts_ns: last_ts,
        members: engine
            .as_ref()
            .map(|e| {
                e.accounts()
                    .iter()
                    .map(|a| {
                        let u = MemberUsage {
                            up_bytes: a.bytes[UP],
                            down_bytes: a.bytes[DOWN],
                            up_packets: a.packets[UP],
                            down_packets: a.packets[DOWN],
                        };
                        (a.member_id, u)
                    })
                    .collect()
            })
            .unwrap_or_default(),
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
        for (id, u) in &r.members {
            println!(
                "         {:>8} {:>12} {:>10} {:>12} {:>10}",
                id, u.up_bytes, u.up_packets, u.down_bytes, u.down_packets
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
    }
}

/// The replay engine configuration: defaults, with the hash key from `seed`.
pub fn config(seed: u64) -> Config {
    Config { hash_key: [seed, seed ^ 0x5265_706c, seed.rotate_left(17), 0x0074_6f72_7761_7274], ..Config::default() }
}
