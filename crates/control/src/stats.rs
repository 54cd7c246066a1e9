//! The daemon's telemetry as one typed document, [`Stats`]: what the stats
//! file holds, what `torwart lab` and the tests read back, and what the
//! coming API and metrics serve. Written with serde, so its shape is
//! stated once here and not again by each reader.
//!
//! Member usage has one shape, [`MemberTraffic`] (the accounting ledger's):
//! per member, bytes and packets up (from the member) and down.

use crate::db::MemberTraffic;
use dataplane::{DataplaneCounters, Totals, WorkerStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The whole document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// The oldest policy generation a worker runs (0: none yet).
    pub generation: u64,
    /// The newest generation published.
    pub published_generation: u64,
    pub routes_generation: u64,
    /// The workers run (not while they start again on a port that came back).
    pub forwarding: bool,
    pub ports: Vec<PortStatus>,
    pub flows: usize,
    pub nat_bindings: usize,
    /// Every counter by its stable name: the engine's (drops by reason
    /// among them), frames received and sent (`rx_frames`, `tx_frames`,
    /// all starts of the workers), the dataplane's drops, handoff, the router's
    /// (`router_*`), `xdp_unserved`, `af_packet_not_admitted`, `port_lost`, `workers_restarted`,
    /// periodic usage flushes written and failed (`usage_flushes`,
    /// `usage_flush_failures`: the database refused or did not answer),
    /// the kernel mirror's (`mirror_*`: notifications applied, overruns
    /// that cost a full dump, dumps after a link or address change,
    /// messages that did not decode, neighbour resolutions sent, refused
    /// by the kernel, or dropped as too many).
    pub counters: BTreeMap<String, u64>,
    /// Usage per member since the workers started, by member id.
    pub members: Vec<MemberTraffic>,
    pub workers: Vec<Worker>,
    /// Members with a plan, per direction.
    pub shaping: Vec<MemberShaping>,
    /// Each worker's shapers.
    pub shaper_load: Vec<ShaperLoad>,
    /// The pair's state sync, if this box is one of a pair.
    pub pair: Option<PairStats>,
    /// Flows by remaining time in the tables, per protocol and state (the
    /// series with flows), counted in each worker's last full pass of its
    /// table (every 2 s): `counts[i]` for remaining time up to
    /// `dataplane::timeouts::BOUNDS_S[i]`, the last for the rest.
    pub timeouts: Vec<TimeoutSeries>,
    /// Members' round-trip times, from the TCP handshakes of their flows
    /// (only members with a sample), by member id.
    pub latency: Vec<MemberLatency>,
}

/// A member's round-trip times (`engine::rtt`), merged over the workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberLatency {
    pub member_id: u32,
    /// Between the box and the member's devices: smoothed, and the smallest sample.
    pub inside_us: Option<u64>,
    pub inside_min_us: Option<u64>,
    /// Between the box and the far ends of the member's flows.
    pub outside_us: Option<u64>,
    pub outside_min_us: Option<u64>,
}

/// One protocol and state's flows by remaining time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeoutSeries {
    pub protocol: String,
    pub state: String,
    pub counts: Vec<u64>,
}

/// The pair's state sync ([`crate::pair`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PairStats {
    /// The sync thread runs.
    pub running: bool,
    /// May this box take over the other's traffic ([`sync::Peer::ready`]).
    pub ready: bool,
    /// This box holds all of the other box's state.
    pub complete: bool,
    pub peer_alive: bool,
    pub session: String,
    pub peer_session: Option<String>,
    /// Records waiting to be sent, datagrams not yet acknowledged.
    pub queued: usize,
    pub unacked: usize,
    /// The full resync this box is sending, if any.
    pub resync: Option<u32>,
    /// Records the workers lost (their ring or change log was full).
    pub workers_lost: u64,
    /// The sync protocol's version this box speaks, and the peer's as its
    /// hellos give it (0: the first release), once heard. A box syncs with
    /// one of the previous version (an upgrade half done), not older.
    pub protocol: u64,
    pub peer_protocol: Option<u64>,
    /// The protocol's counts, and the workers' (`worker_*`) summed.
    pub counters: BTreeMap<String, u64>,
}

/// A configured port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortStatus {
    pub interface: String,
    /// "inside" or "outside".
    pub side: String,
    /// The interface exists.
    pub present: bool,
    /// Times it disappeared.
    pub lost: u64,
    /// Up, with carrier (false while missing).
    pub up: bool,
    /// Times its link went down (administratively, or its carrier).
    pub downs: u64,
}

/// One worker's own figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Worker {
    pub worker: usize,
    pub generation: u64,
    pub flows: usize,
    /// The flows its table holds at most.
    pub flow_capacity: usize,
    pub nat_bindings: usize,
    /// Frames received, by port index.
    pub rx: Vec<u64>,
    /// Frames sent, by port index.
    pub tx: Vec<u64>,
    pub same_core: u64,
    pub handed_off: u64,
    pub handed_in: u64,
    pub loops: u64,
    pub idle_loops: u64,
    pub waits: u64,
    pub naps: u64,
    /// Times traffic stopped with too little load to nap for.
    pub naps_skipped: u64,
    /// Frames waiting for their next hop's resolution now.
    pub waiting: usize,
}

/// One member's shaping in both directions (`None`: not shaped that way).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberShaping {
    pub member_id: u32,
    pub up: Option<Direction>,
    pub down: Option<Direction>,
}

/// One member's shaping in one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Direction {
    /// What it sent lately.
    pub rate_bps: u64,
    /// What it may send now (its fair share between rate and ceiling).
    pub allowed_bps: u64,
    pub plan_rate_bps: u64,
    pub plan_ceil_bps: u64,
    pub backlog_packets: u32,
    pub backlog_bytes: u64,
    /// How long the last packet released had waited.
    pub queue_delay_us: u64,
    pub released_packets: u64,
    pub passed_packets: u64,
    /// Drops by reason name (only those that happened).
    pub drops: BTreeMap<String, u64>,
}

/// One worker's shapers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShaperLoad {
    pub worker: usize,
    pub held_frames: usize,
    pub up: CoreLoad,
    pub down: CoreLoad,
}

/// One worker's shaper in one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoreLoad {
    pub members: u32,
    pub backlogged: u32,
    pub backlog_bytes: u64,
    /// This worker's share of the uplink now.
    pub share_bps: u64,
}

/// Frames the ports' BPF programs dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramDrops {
    /// Transit frames on a queue without an AF_XDP socket (`xdp_unserved`).
    pub unserved: u64,
    /// Transit frames an AF_PACKET port's admission program dropped for
    /// want of credit: the worker was behind (`af_packet_not_admitted`).
    pub not_admitted: u64,
}

impl ProgramDrops {
    /// The sum of both, `other` missing counting as zero.
    pub fn plus(self, other: Option<ProgramDrops>) -> ProgramDrops {
        let o = other.unwrap_or_default();
        ProgramDrops { unserved: self.unserved + o.unserved, not_admitted: self.not_admitted + o.not_admitted }
    }
}

/// What the daemon adds to the workers' own figures.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub published_generation: u64,
    pub routes_generation: u64,
    pub forwarding: bool,
    pub ports: Vec<PortStatus>,
    /// Dataplane counters of workers stopped for a restart.
    pub carried: DataplaneCounters,
    pub program_drops: ProgramDrops,
    pub restarts: u64,
    /// Periodic usage flushes `[written, failed]`.
    pub flushes: [u64; 2],
    pub pair: Option<PairStats>,
    /// The kernel mirror's counters (notifications, dumps, resolutions).
    pub mirror: crate::mirror::MirrorStats,
}

impl Stats {
    /// The document for the workers' latest `stats`.
    pub fn collect(stats: &[Arc<WorkerStats>], cx: &Context) -> Stats {
        let mut totals = Totals::of(stats.iter().map(|s| &**s));
        totals.dataplane.add(&cx.carried);
        Stats {
            generation: stats.iter().map(|s| s.generation).min().unwrap_or(0),
            published_generation: cx.published_generation,
            routes_generation: cx.routes_generation,
            forwarding: cx.forwarding,
            ports: cx.ports.clone(),
            flows: totals.flows,
            nat_bindings: totals.nat_bindings,
            counters: counters(stats, &totals, cx),
            members: usage(stats),
            latency: latency(stats),
            workers: stats.iter().map(|s| worker(s)).collect(),
            shaping: stats
                .iter()
                .flat_map(|s| s.shaped.iter())
                .map(|(id, m)| MemberShaping {
                    member_id: *id,
                    up: m[0].as_ref().map(direction),
                    down: m[1].as_ref().map(direction),
                })
                .collect(),
            shaper_load: stats.iter().filter_map(|s| shaper_load(s)).collect(),
            pair: cx.pair.clone(),
            timeouts: totals
                .timeouts
                .series()
                .filter(|(_, _, c)| c.iter().any(|n| *n > 0))
                .map(|(p, st, c)| TimeoutSeries { protocol: p.into(), state: st.into(), counts: c.to_vec() })
                .collect(),
        }
    }

    /// Reads a stats file.
    pub fn read(path: &Path) -> Result<Stats, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A counter by name, 0 if absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// A member's usage, if it has any.
    pub fn member(&self, id: u32) -> Option<&MemberTraffic> {
        self.members.iter().find(|m| m.member_id == id)
    }

    /// Frames received by all workers on all ports.
    pub fn rx(&self) -> u64 {
        self.workers.iter().flat_map(|w| &w.rx).sum()
    }
}

fn counters(stats: &[Arc<WorkerStats>], totals: &Totals, cx: &Context) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    for (name, v) in totals.engine.entries() {
        counters.insert(name.to_owned(), v);
    }
    for (d, v) in totals.dataplane.drops() {
        counters.insert(d.name().to_owned(), v);
    }
    counters.insert("rx_frames".into(), totals.dataplane.rx.iter().sum());
    counters.insert("tx_frames".into(), totals.dataplane.tx.iter().sum());
    counters.insert("handoff_same_core".into(), totals.dataplane.same_core);
    counters.insert("handoff_handed_off".into(), totals.dataplane.handed_off);
    counters.insert("handoff_fragments_followed".into(), totals.dataplane.fragments_followed);
    counters.insert("neighbour_waited".into(), totals.dataplane.neighbour_waited);
    counters.insert("xdp_unserved".into(), cx.program_drops.unserved);
    counters.insert("af_packet_not_admitted".into(), cx.program_drops.not_admitted);
    counters.insert("port_lost".into(), cx.ports.iter().map(|p| p.lost).sum());
    counters.insert("port_link_down".into(), cx.ports.iter().map(|p| p.downs).sum());
    counters.insert("workers_restarted".into(), cx.restarts);
    counters.insert("usage_flushes".into(), cx.flushes[0]);
    counters.insert("usage_flush_failures".into(), cx.flushes[1]);
    let m = &cx.mirror;
    counters.insert("mirror_notifications".into(), m.notifications);
    counters.insert("mirror_overruns".into(), m.redumps);
    counters.insert("mirror_resyncs".into(), m.resyncs);
    counters.insert("mirror_decode_errors".into(), m.decode_errors);
    counters.insert("mirror_resolve_sent".into(), m.resolve_sent);
    counters.insert("mirror_resolve_failed".into(), m.resolve_failed);
    counters.insert("mirror_resolve_dropped".into(), m.resolve_queue_full + m.resolve_pending_full);
    for s in stats {
        for (name, v) in s.egress.router_named() {
            *counters.entry(format!("router_{name}")).or_insert(0) += v;
        }
    }
    counters
}

/// Usage per member, summed over workers, by member id.
pub fn usage(stats: &[Arc<WorkerStats>]) -> Vec<MemberTraffic> {
    let mut members: BTreeMap<u32, MemberTraffic> = BTreeMap::new();
    for a in stats.iter().flat_map(|s| s.accounts.iter()) {
        let m = members.entry(a.member_id).or_insert(MemberTraffic { member_id: a.member_id, ..Default::default() });
        m.up_bytes += a.bytes[0];
        m.up_packets += a.packets[0];
        m.down_bytes += a.bytes[1];
        m.down_packets += a.packets[1];
    }
    members.into_values().collect()
}

/// Round-trip times per member, merged over workers (weighted by samples).
pub fn latency(stats: &[Arc<WorkerStats>]) -> Vec<MemberLatency> {
    use engine::members::{INSIDE, OUTSIDE};
    let mut merged: BTreeMap<u32, [engine::rtt::Rtt; 2]> = BTreeMap::new();
    for a in stats.iter().flat_map(|s| s.accounts.iter()) {
        let (i, o) = (a.rtt(INSIDE), a.rtt(OUTSIDE));
        if i.samples == 0 && o.samples == 0 {
            continue;
        }
        let m = merged.entry(a.member_id).or_default();
        m[0].merge(&i);
        m[1].merge(&o);
    }
    let us = |r: &engine::rtt::Rtt, v: u32| (r.samples > 0).then_some(u64::from(v) / 1000);
    merged
        .into_iter()
        .map(|(member_id, [i, o])| MemberLatency {
            member_id,
            inside_us: us(&i, i.srtt_ns),
            inside_min_us: us(&i, i.min_ns),
            outside_us: us(&o, o.srtt_ns),
            outside_min_us: us(&o, o.min_ns),
        })
        .collect()
}

fn worker(s: &WorkerStats) -> Worker {
    let d = &s.dataplane;
    Worker {
        worker: s.worker,
        generation: s.generation,
        flows: s.flows,
        flow_capacity: s.flow_capacity,
        nat_bindings: s.nat_bindings,
        rx: d.rx.clone(),
        tx: d.tx.clone(),
        same_core: d.same_core,
        handed_off: d.handed_off,
        handed_in: d.handed_in,
        waiting: s.waiting,
        loops: d.loops,
        idle_loops: d.idle_loops,
        waits: d.waits,
        naps: d.naps,
        naps_skipped: d.naps_skipped,
    }
}

fn direction(m: &shaper::MemberStats) -> Direction {
    Direction {
        rate_bps: m.rate_bps,
        allowed_bps: m.allowed_bps,
        plan_rate_bps: m.plan.rate_bps,
        plan_ceil_bps: m.plan.ceil_bps,
        backlog_packets: m.backlog_packets,
        backlog_bytes: m.backlog_bytes,
        queue_delay_us: m.last_sojourn_ns / 1000,
        released_packets: m.released_packets,
        passed_packets: m.passed_packets,
        drops: shaper::Reason::ALL
            .iter()
            .map(|r| (r.name().to_owned(), m.reasons.get(*r)))
            .filter(|(_, v)| *v > 0)
            .collect(),
    }
}

fn shaper_load(s: &WorkerStats) -> Option<ShaperLoad> {
    let [up, down] = s.shaper.as_ref()?;
    let load = |c: &shaper::CoreStats| CoreLoad {
        members: c.members,
        backlogged: c.backlogged_members,
        backlog_bytes: c.backlog_bytes,
        share_bps: c.share_bps,
    };
    Some(ShaperLoad { worker: s.worker, held_frames: s.shaper_held, up: load(up), down: load(down) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_reads_back_as_written() {
        let account = |member_id, bytes, packets| {
            let mut a = engine::members::Account::default();
            (a.member_id, a.bytes, a.packets) = (member_id, bytes, packets);
            a
        };
        let mut w = WorkerStats::default();
        w.accounts.push(account(7, [100, 2000], [1, 3]));
        w.accounts.push(account(3, [5, 6], [1, 1]));
        let cx = Context {
            forwarding: true,
            program_drops: ProgramDrops { unserved: 4, not_admitted: 6 },
            mirror: crate::mirror::MirrorStats {
                redumps: 2,
                resolve_queue_full: 1,
                resolve_pending_full: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let stats = Stats::collect(&[Arc::new(w.clone()), Arc::new(w)], &cx);
        assert_eq!(stats.members.iter().map(|m| m.member_id).collect::<Vec<_>>(), [3, 7]);
        assert_eq!(stats.member(7).map(|m| (m.up_bytes, m.down_bytes, m.down_packets)), Some((200, 4000, 6)));
        assert_eq!(stats.counter("xdp_unserved"), 4);
        assert_eq!(stats.counter("af_packet_not_admitted"), 6);
        assert_eq!((stats.counter("mirror_overruns"), stats.counter("mirror_resolve_dropped")), (2, 4));
        let text = serde_json::to_string_pretty(&stats).unwrap();
        assert_eq!(serde_json::from_str::<Stats>(&text).unwrap(), stats);
    }
}
