//! `/metrics`: the latest [`Snapshot`] in Prometheus' text exposition
//! format (0.0.4), written by `prometheus-client` from a collector that
//! reads the snapshot at scrape time, so a scrape costs the workers
//! nothing. Names are `torwart_*`; counters end in `_total`. Per-member
//! series are capped (`api.member_series`, the busiest members by bytes
//! first) so that 6,000 members do not make 24,000 series unasked.
//!
//! Every metric name is listed in [`NAMES`]; the Grafana dashboard in
//! `docs/` is checked against it.

use super::live::{Live, Snapshot, RELOAD_BOUNDS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Error;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Every name the exposition holds (after `_total`, `_bucket` and such).
pub const NAMES: &[&str] = &[
    "torwart_up",
    "torwart_build_info",
    "torwart_port_up",
    "torwart_port_link_downs_total",
    "torwart_rx_frames_total",
    "torwart_tx_frames_total",
    "torwart_traffic_bytes_total",
    "torwart_drops_total",
    "torwart_worker_load",
    "torwart_worker_flows",
    "torwart_worker_flow_capacity",
    "torwart_worker_handed_off_total",
    "torwart_worker_naps_total",
    "torwart_flows",
    "torwart_nat_bindings",
    "torwart_flow_remaining_seconds_bucket",
    "torwart_flow_remaining_seconds_gcount",
    "torwart_shaper_queue_delay_seconds",
    "torwart_shaper_backlog_bytes",
    "torwart_shaper_drops_total",
    "torwart_uplink_share_bps",
    "torwart_reloads_total",
    "torwart_policy_refused",
    "torwart_policy_from_last_good",
    "torwart_last_good_write_failures_total",
    "torwart_usage_flushes_total",
    "torwart_reload_duration_seconds_bucket",
    "torwart_reload_duration_seconds_sum",
    "torwart_reload_duration_seconds_count",
    "torwart_policy_generation",
    "torwart_member_bytes_total",
    "torwart_member_rtt_seconds",
    "torwart_router_events_total",
    "torwart_mirror_events_total",
    "torwart_pair_ready",
    "torwart_pair_peer_alive",
    "torwart_pair_peer_protocol",
    "torwart_pair_queued_records",
    "torwart_pair_complete",
    "torwart_pair_events_total",
    "torwart_workers_restarted_total",
];

/// The names `torwart_...` in `text` (a query, a rule file) that the
/// exposition does not hold: what the Grafana dashboard and the alerting
/// rules in `docs/` are checked with.
pub fn unexported(text: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("torwart_") {
        let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !NAMES.contains(&name.as_str()) {
            missing.push(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    missing
}

/// Every query in a Grafana dashboard: the panels' and annotations'
/// PromQL (`expr`) and the variables' (`query`).
pub fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        serde_json::Value::String(s) if k == "expr" || k == "query" => out.push(s.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The text of one scrape.
pub fn render(live: &Arc<Live>, member_series: usize) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition { live: Arc::clone(live), member_series }));
    let mut out = String::new();
    // Writing to a String cannot fail; a collector error would be ours.
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
        out.push_str("# torwart: the exposition failed\n");
    }
    out
}

pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug)]
struct Exposition {
    live: Arc<Live>,
    member_series: usize,
}

type Labels = Vec<(&'static str, String)>;

/// One family: a descriptor and its series.
fn family<'a>(
    e: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), Error> {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        one(&mut m, &labels, v, kind)?;
    }
    Ok(())
}

fn one(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: f64, kind: MetricType) -> Result<(), Error> {
    let mut f = m.encode_family(labels)?;
    match kind {
        MetricType::Counter => f.encode_counter::<NoLabelSet, f64, f64>(&v, None),
        _ => f.encode_gauge(&v),
    }
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        let s = self.live.snapshot.load();
        let st = &s.stats;
        let (counter, gauge) = (MetricType::Counter, MetricType::Gauge);
        let worker = |w: usize| vec![("worker", w.to_string())];
        family(&mut e, "torwart_up", "1 while the daemon serves", gauge, [(vec![], 1.0)])?;
        // A pair syncs across one version of the protocol (an upgrade half
        // done), not more: what an upgrade's dashboard compares.
        let build = vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("sync_protocol", sync::peer::PROTOCOL.to_string()),
        ];
        family(
            &mut e,
            "torwart_build_info",
            "1, labelled with this build's version and sync protocol",
            gauge,
            [(build, 1.0)],
        )?;
        let port = |p: &crate::stats::PortStatus| vec![("interface", p.interface.clone()), ("side", p.side.clone())];
        family(
            &mut e,
            "torwart_port_up",
            "1 while a port's interface exists, is up and has carrier",
            gauge,
            st.ports.iter().map(|p| (port(p), f64::from(u8::from(p.up)))),
        )?;
        family(
            &mut e,
            "torwart_port_link_downs",
            "Times a port's link went down, or its interface went away",
            counter,
            st.ports.iter().map(|p| (port(p), (p.downs + p.lost) as f64)),
        )?;
        family(
            &mut e,
            "torwart_rx_frames",
            "Frames received, by worker",
            counter,
            st.workers.iter().map(|w| (worker(w.worker), w.rx.iter().sum::<u64>() as f64)),
        )?;
        family(
            &mut e,
            "torwart_tx_frames",
            "Frames sent, by worker",
            counter,
            st.workers.iter().map(|w| (worker(w.worker), w.tx.iter().sum::<u64>() as f64)),
        )?;
        let (up, down) = st.members.iter().fold((0u64, 0u64), |(u, d), m| (u + m.up_bytes, d + m.down_bytes));
        family(
            &mut e,
            "torwart_traffic_bytes",
            "Bytes of members' traffic: up from members, down to them",
            counter,
            [(vec![("direction", "up".into())], up as f64), (vec![("direction", "down".into())], down as f64)],
        )?;
        family(
            &mut e,
            "torwart_drops",
            "Frames dropped, by reason",
            counter,
            super::live::drop_names().map(|n| (vec![("reason", n.to_owned())], st.counter(n) as f64)),
        )?;
        family(
            &mut e,
            "torwart_worker_load",
            "Share of a worker's loops that found work, over the last second",
            gauge,
            st.workers.iter().zip(&s.load).map(|(w, l)| (worker(w.worker), *l)),
        )?;
        // Each worker has a table of its own, and its members' flows fill
        // it: the fullest is the one to watch.
        family(
            &mut e,
            "torwart_worker_flows",
            "Flows in a worker's table",
            gauge,
            st.workers.iter().map(|w| (worker(w.worker), w.flows as f64)),
        )?;
        family(
            &mut e,
            "torwart_worker_flow_capacity",
            "Flows a worker's table holds at most ([engine] max_flows)",
            gauge,
            st.workers.iter().map(|w| (worker(w.worker), w.flow_capacity as f64)),
        )?;
        family(
            &mut e,
            "torwart_workers_restarted",
            "Times the workers were started again: a port came back, or a worker died or could not run",
            counter,
            [(vec![], st.counter("workers_restarted") as f64)],
        )?;
        family(
            &mut e,
            "torwart_worker_handed_off",
            "Frames a worker handed to the worker that owns their flow",
            counter,
            st.workers.iter().map(|w| (worker(w.worker), w.handed_off as f64)),
        )?;
        family(
            &mut e,
            "torwart_worker_naps",
            "Times a worker slept for want of work",
            counter,
            st.workers.iter().map(|w| (worker(w.worker), w.naps as f64)),
        )?;
        family(
            &mut e,
            "torwart_worker_naps_skipped",
            "Times traffic stopped with too little load for a worker to nap (adaptive moderation)",
            counter,
            st.workers.iter().map(|w| (worker(w.worker), w.naps_skipped as f64)),
        )?;
        flows(&mut e, &s)?;
        family(&mut e, "torwart_nat_bindings", "NAT bindings", gauge, [(vec![], st.nat_bindings as f64)])?;
        shaping(&mut e, &s)?;
        self.reloads(&mut e)?;
        family(
            &mut e,
            "torwart_policy_generation",
            "The policy generation every worker runs",
            gauge,
            [(vec![], st.generation as f64)],
        )?;
        self.members(&mut e, &s)?;
        // The router's and the kernel mirror's counters, by their names in
        // the stats document without the prefix.
        let prefixed = |prefix: &'static str| {
            st.counters
                .iter()
                .filter_map(move |(n, v)| Some((vec![("event", n.strip_prefix(prefix)?.to_owned())], *v as f64)))
        };
        family(
            &mut e,
            "torwart_router_events",
            "The router's counts: frames forwarded and fragmented, ICMP errors sent and suppressed, drops by reason",
            counter,
            prefixed("router_"),
        )?;
        family(
            &mut e,
            "torwart_mirror_events",
            "The kernel mirror's counts: notifications, overruns (each a full dump), undecodable messages, neighbour resolutions",
            counter,
            prefixed("mirror_"),
        )?;
        if let Some(p) = &st.pair {
            let b = |v: bool| if v { 1.0 } else { 0.0 };
            family(
                &mut e,
                "torwart_pair_ready",
                "May this box take the other's traffic",
                gauge,
                [(vec![], b(p.ready))],
            )?;
            family(&mut e, "torwart_pair_peer_alive", "The other box answers", gauge, [(vec![], b(p.peer_alive))])?;
            family(
                &mut e,
                "torwart_pair_peer_protocol",
                "The sync protocol version the other box's hellos give (0: the first release), once heard",
                gauge,
                p.peer_protocol.map(|v| (vec![], v as f64)),
            )?;
            family(
                &mut e,
                "torwart_pair_queued_records",
                "Sync records waiting to be sent",
                gauge,
                [(vec![], p.queued as f64)],
            )?;
            family(
                &mut e,
                "torwart_pair_complete",
                "This box holds all of the other box's state",
                gauge,
                [(vec![], b(p.complete))],
            )?;
            family(
                &mut e,
                "torwart_pair_events",
                "The state sync's counts: datagrams and records sent and received, records lost, \
                 datagrams refused by why (refused_tag: forged, or the two boxes' keys differ), resyncs, \
                 and the workers' (worker_*)",
                counter,
                p.counters.iter().map(|(n, v)| (vec![("event", n.clone())], *v as f64)),
            )?;
        }
        Ok(())
    }
}

/// Flows by protocol and state, and by remaining time in the table: a
/// histogram of what is in the tables now (cumulative counts by `le`, as
/// a gauge, since it goes down as well as up), from the workers' last pass
/// over their tables (every 2 s).
fn flows(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let series = &s.stats.timeouts;
    let labels = |t: &crate::stats::TimeoutSeries| vec![("protocol", t.protocol.clone()), ("state", t.state.clone())];
    family(
        e,
        "torwart_flows",
        "Flows in the tables, by protocol and state",
        MetricType::Gauge,
        series.iter().map(|t| (labels(t), t.counts.iter().sum::<u64>() as f64)),
    )?;
    let mut buckets = Vec::new();
    for t in series {
        let mut cumulative = 0;
        for (i, n) in t.counts.iter().enumerate() {
            cumulative += n;
            let le = dataplane::timeouts::BOUNDS_S.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let mut l = labels(t);
            l.push(("le", le));
            buckets.push((l, cumulative as f64));
        }
    }
    family(
        e,
        "torwart_flow_remaining_seconds_bucket",
        "Flows whose remaining time in the table is at most le seconds, by protocol and state",
        MetricType::Gauge,
        buckets,
    )?;
    family(
        e,
        "torwart_flow_remaining_seconds_gcount",
        "Flows counted in the remaining-time histogram, by protocol and state",
        MetricType::Gauge,
        series.iter().map(|t| (labels(t), t.counts.iter().sum::<u64>() as f64)),
    )
}

fn shaping(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let st = &s.stats;
    let dirs = ["up", "down"];
    let mut delay = [0u64; 2];
    let mut drops: std::collections::BTreeMap<(usize, String), u64> = Default::default();
    for m in &st.shaping {
        for (i, d) in [&m.up, &m.down].into_iter().enumerate() {
            let Some(d) = d else { continue };
            delay[i] = delay[i].max(d.queue_delay_us);
            for (reason, v) in &d.drops {
                *drops.entry((i, reason.clone())).or_default() += v;
            }
        }
    }
    let dir = |i: usize| ("direction", dirs[i].to_owned());
    family(
        e,
        "torwart_shaper_queue_delay_seconds",
        "The longest queue delay of a member's last released packet",
        MetricType::Gauge,
        (0..2).map(|i| (vec![dir(i)], delay[i] as f64 / 1e6)),
    )?;
    let load = |f: fn(&crate::stats::CoreLoad) -> u64| {
        st.shaper_load
            .iter()
            .flat_map(move |l| [(l.worker, 0, f(&l.up)), (l.worker, 1, f(&l.down))])
            .map(|(w, i, v)| (vec![("worker", w.to_string()), dir(i)], v as f64))
            .collect::<Vec<_>>()
    };
    family(e, "torwart_shaper_backlog_bytes", "Bytes the shapers hold", MetricType::Gauge, load(|c| c.backlog_bytes))?;
    family(
        e,
        "torwart_uplink_share_bps",
        "A worker's share of the uplink now",
        MetricType::Gauge,
        load(|c| c.share_bps),
    )?;
    family(
        e,
        "torwart_shaper_drops",
        "Packets the shapers dropped, by reason",
        MetricType::Counter,
        drops.into_iter().map(|((i, r), v)| (vec![dir(i), ("reason", r)], v as f64)),
    )
}

impl Exposition {
    fn reloads(&self, e: &mut DescriptorEncoder) -> Result<(), Error> {
        let c = &self.live.reload_counts;
        family(
            e,
            "torwart_reloads",
            "Reloads of the member database, done or refused",
            MetricType::Counter,
            [
                (vec![("result", "ok".into())], c.ok.load(Ordering::Relaxed) as f64),
                (vec![("result", "refused".into())], c.refused.load(Ordering::Relaxed) as f64),
            ],
        )?;
        family(
            e,
            "torwart_policy_refused",
            "1 while the latest reload was refused: the running policy is older than the member database",
            MetricType::Gauge,
            [(vec![], if c.policy_refused() { 1.0 } else { 0.0 })],
        )?;
        family(
            e,
            "torwart_policy_from_last_good",
            "1 while the running policy is the last good member database's: the start could not have one from the \
             database",
            MetricType::Gauge,
            [(vec![], if c.policy_from_last_good() { 1.0 } else { 0.0 })],
        )?;
        family(
            e,
            "torwart_last_good_write_failures",
            "Writes of the last good member database that failed (the older file stays)",
            MetricType::Counter,
            [(vec![], c.last_good_failures.load(Ordering::Relaxed) as f64)],
        )?;
        let written = c.last_good_written.load(Ordering::Relaxed);
        family(
            e,
            "torwart_last_good_written_timestamp_seconds",
            "When this process last wrote the last good member database (Unix time)",
            MetricType::Gauge,
            (written > 0).then(|| (vec![], written as f64)),
        )?;
        let st = self.live.snapshot.load();
        family(
            e,
            "torwart_usage_flushes",
            "Periodic writes of member usage to the database, written or failed (kept for the next)",
            MetricType::Counter,
            [
                (vec![("result", "written".into())], st.stats.counter("usage_flushes") as f64),
                (vec![("result", "failed".into())], st.stats.counter("usage_flush_failures") as f64),
            ],
        )?;
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(RELOAD_BOUNDS.len() + 1);
        for (i, b) in c.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            buckets.push((RELOAD_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), cumulative));
        }
        let sum = c.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let mut m = e.encode_descriptor(
            "torwart_reload_duration_seconds",
            "Time to load, compile and publish a reload",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(sum, cumulative, &buckets, None)
    }

    fn members(&self, e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
        let mut busiest: Vec<_> = s.stats.members.iter().collect();
        busiest.sort_by_key(|m| std::cmp::Reverse(m.up_bytes + m.down_bytes));
        busiest.truncate(self.member_series);
        busiest.sort_by_key(|m| m.member_id);
        family(
            e,
            "torwart_member_bytes",
            "Bytes of a member's traffic since the start (the busiest members)",
            MetricType::Counter,
            busiest.iter().flat_map(|m| {
                let id = m.member_id.to_string();
                [
                    (vec![("member", id.clone()), ("direction", "up".into())], m.up_bytes as f64),
                    (vec![("member", id), ("direction", "down".into())], m.down_bytes as f64),
                ]
            }),
        )?;
        let rtt = |id: u32| s.stats.latency.binary_search_by_key(&id, |l| l.member_id).ok().map(|i| s.stats.latency[i]);
        family(
            e,
            "torwart_member_rtt_seconds",
            "A member's smoothed round-trip time from TCP handshakes: inside to its devices, outside to the far ends",
            MetricType::Gauge,
            busiest.iter().filter_map(|m| rtt(m.member_id)).flat_map(|l| {
                let id = l.member_id.to_string();
                [("inside", l.inside_us), ("outside", l.outside_us)].into_iter().filter_map(move |(side, us)| {
                    us.map(|us| (vec![("member", id.clone()), ("side", side.to_owned())], us as f64 / 1e6))
                })
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Direction, MemberShaping, PairStats, ShaperLoad, Stats, TimeoutSeries, Worker};

    /// A snapshot with something in every family.
    fn busy() -> Arc<Live> {
        let live = Arc::new(Live::new(Arc::default()));
        let pair =
            PairStats { counters: [("records_lost".into(), 4)].into(), peer_protocol: Some(2), ..Default::default() };
        let mut st = Stats { flows: 3, nat_bindings: 1, pair: Some(pair), ..Default::default() };
        st.counters.insert("workers_restarted".into(), 2);
        st.workers.push(Worker { worker: 0, rx: vec![5, 6], tx: vec![4, 4], ..Default::default() });
        st.ports.push(crate::stats::PortStatus {
            interface: "p1".into(),
            side: "outside".into(),
            present: true,
            lost: 0,
            up: true,
            downs: 2,
        });
        st.members.push(crate::db::MemberTraffic {
            member_id: 7,
            up_bytes: 100,
            down_bytes: 900,
            ..Default::default()
        });
        st.latency.push(crate::stats::MemberLatency {
            member_id: 7,
            inside_us: Some(2500),
            outside_us: Some(18_000),
            ..Default::default()
        });
        st.timeouts.push(TimeoutSeries { protocol: "tcp".into(), state: "established".into(), counts: vec![1; 13] });
        st.shaping.push(MemberShaping {
            member_id: 7,
            up: Some(Direction { queue_delay_us: 1500, drops: [("codel".into(), 2)].into(), ..Default::default() }),
            down: None,
        });
        st.shaper_load.push(ShaperLoad { worker: 0, ..Default::default() });
        st.counters.insert("router_forwarded".into(), 5);
        st.counters.insert("mirror_overruns".into(), 1);
        live.publish(st, std::time::Instant::now(), 1, None);
        live.reloaded(1, &reload_done(2));
        live
    }

    /// A reload to `generation` that changed nothing and took 3 ms.
    fn reload_done(generation: u64) -> crate::reload::Reloaded {
        crate::reload::Reloaded {
            generation,
            changes: String::new(),
            ended: 0,
            compile: std::time::Duration::from_millis(3),
        }
    }

    #[test]
    fn every_name_is_exported() {
        let text = render(&busy(), 10);
        for name in NAMES {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
        }
        assert!(text.contains("torwart_member_bytes_total{member=\"7\",direction=\"down\"} 900"), "{text}");
        assert!(text
            .contains("torwart_flow_remaining_seconds_bucket{protocol=\"tcp\",state=\"established\",le=\"+Inf\"} 13"));
        assert!(text.contains("torwart_reload_duration_seconds_count 1"), "{text}");
        assert!(text.contains("torwart_port_up{interface=\"p1\",side=\"outside\"} 1"), "{text}");
        assert!(text.contains("torwart_port_link_downs_total{interface=\"p1\",side=\"outside\"} 2"), "{text}");
        assert!(text.contains("torwart_shaper_queue_delay_seconds{direction=\"up\"} 0.0015"), "{text}");
        assert!(text.contains("torwart_router_events_total{event=\"forwarded\"} 5"), "{text}");
        assert!(text.contains("torwart_mirror_events_total{event=\"overruns\"} 1"), "{text}");
        assert!(text.contains("torwart_pair_events_total{event=\"records_lost\"} 4"), "{text}");
        assert!(text.contains("torwart_workers_restarted_total 2"), "{text}");
    }

    #[test]
    fn a_refused_reload_shows_until_one_is_done() {
        let live = busy();
        {
            let t = render(&live, 0);
            assert!(t.contains("torwart_policy_refused 0.0\n"), "{t}");
        }
        live.refused(2, "members row 3: status: \"x\" is not a status".into());
        let text = render(&live, 0);
        assert!(text.contains("torwart_policy_refused 1.0\n"), "{text}");
        assert!(text.contains("torwart_reloads_total{result=\"refused\"} 1.0\n"), "{text}");
        live.reloaded(3, &reload_done(3));
        {
            let t = render(&live, 0);
            assert!(t.contains("torwart_policy_refused 0.0\n"), "{t}");
        }
    }

    #[test]
    fn a_start_from_the_last_good_database_shows_until_a_reload_is_done() {
        let live = busy();
        assert!(render(&live, 0).contains("torwart_policy_from_last_good 0.0\n"));
        live.started_from_last_good(2, "cannot open postgres://torwart:***@db/members: refused".into());
        let text = render(&live, 0);
        assert!(text.contains("torwart_policy_from_last_good 1.0\n"), "{text}");
        assert!(text.contains("torwart_policy_refused 1.0\n"), "{text}");
        live.refused(3, "members row 3: status: \"x\" is not a status".into());
        assert!(render(&live, 0).contains("torwart_policy_from_last_good 1.0\n"));
        live.reloaded(4, &reload_done(2));
        let text = render(&live, 0);
        assert!(text.contains("torwart_policy_from_last_good 0.0\n"), "{text}");
        assert!(text.contains("torwart_policy_refused 0.0\n"), "{text}");
        // Its writes: when the last one was, and how many failed.
        assert!(!text.lines().any(|l| l.starts_with("torwart_last_good_written_timestamp_seconds")), "{text}");
        assert!(text.contains("torwart_last_good_write_failures_total 0.0\n"), "{text}");
        live.reload_counts.last_good_written.store(1_796_000_000, Ordering::Relaxed);
        live.reload_counts.last_good_failures.fetch_add(2, Ordering::Relaxed);
        let text = render(&live, 0);
        assert!(text.contains("torwart_last_good_written_timestamp_seconds 1796000000.0\n"), "{text}");
        assert!(text.contains("torwart_last_good_write_failures_total 2.0\n"), "{text}");
    }

    #[test]
    fn per_member_series_are_capped_busiest_first() {
        let live = busy();
        let mut st = live.snapshot.load().stats.clone();
        for id in 100..200 {
            st.members.push(crate::db::MemberTraffic { member_id: id, up_bytes: u64::from(id), ..Default::default() });
        }
        live.publish(st, std::time::Instant::now(), 2, None);
        let text = render(&live, 3);
        let members: Vec<_> = text.lines().filter(|l| l.starts_with("torwart_member_bytes_total{")).collect();
        assert_eq!(members.len(), 6, "{members:?}");
        for id in ["7", "198", "199"] {
            assert!(members.iter().any(|l| l.contains(&format!("member=\"{id}\""))), "{members:?}");
        }
    }

    /// The dashboard in docs/ is JSON, and every metric its queries name is exported.
    #[test]
    fn the_grafana_dashboard_asks_only_for_exported_metrics() {
        let text = include_str!("../../../../docs/grafana-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(text).expect("the dashboard is JSON");
        let queries = dashboard_queries(&dashboard);
        assert!(queries.len() >= 10, "{} queries", queries.len());
        for q in &queries {
            assert_eq!(unexported(q), Vec::<String>::new(), "the dashboard asks for what is not exported: {q}");
        }
    }
}
