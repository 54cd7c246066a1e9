//! Flow listings and the timeout histogram, from flows that real packets
//! made through the workers (in-memory ports): what a query lists under
//! each filter, limits and truncation, the bounded work per step, a worker
//! that does not answer, and that neither a query nor the histogram costs
//! a frame. The stepped tests run on a virtual clock ([`Lockstep`]); one
//! runs the live threads.

mod common;

use common::*;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use dataplane::flows::{QUERY_FLOWS_PER_STEP, QUERY_SLICE};
use dataplane::timeouts::{TimeoutHistogram, BUCKETS};
use dataplane::{Dataplane, FlowFilter, FlowInfo, Idle, Lockstep, QueryError, Totals};
use engine::Time;
use io::SharedMemoryIo;
use std::time::Duration;
use wire::build::{self};
use wire::TcpFlags;

const WORKERS: usize = 2;
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const DNS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PINGED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
const DNS6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x4860, 0, 0, 0, 0, 0, 0x8888);

/// The first device of member index `m` (member id `m + 1`).
fn device(m: u32) -> Ipv4Addr {
    Ipv4Addr::from(policy::sample::campus_block(m).first() + 1)
}

fn public(m: u32) -> Ipv4Addr {
    policy::sample::campus_public(m).0
}

fn v6_device(m: u32) -> Ipv6Addr {
    Ipv6Addr::from(policy::sample::campus_v6(m).first() + 1)
}

fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = build::udp(&mut buf, &ETH, src, dst, sport, dport, 32).unwrap();
    buf[..n].to_vec()
}

#[allow(clippy::too_many_arguments)]
fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32, ack: u32, flags: TcpFlags) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = build::tcp(&mut buf, &ETH, src, dst, sport, dport, seq, ack, flags, 65535, 0).unwrap();
    buf[..n].to_vec()
}

fn echo(src: IpAddr, dst: IpAddr, ident: u16) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = build::icmp_echo(&mut buf, &ETH, src, dst, true, ident, 1, 32).unwrap();
    buf[..n].to_vec()
}

/// Two workers whose tables hold six flows that packets made:
/// - member 1's TCP connection to SERVER:443, established (worker 1);
/// - member 2's UDP to DNS:53, answered (worker 0);
/// - member 3's UDP to DNS:53, unanswered (worker 1);
/// - member 4's ping to PINGED, unanswered (worker 0);
/// - member 1's IPv6 UDP to DNS6:53, unanswered, untranslated (worker 1);
/// - REMOTE's TCP SYN through member 1's port forward (public port 81 to
///   its device's port 80), syn_sent (worker 1).
///
/// Every frame enters on worker 0's ports: those of members of worker 1
/// are handed over. Returns the workers, the ports, member 1's TCP flow's
/// public port and the frames sent.
struct Net {
    workers: Lockstep,
    ports: Vec<(SharedMemoryIo, SharedMemoryIo)>,
    tcp_public_port: u16,
    sent: u64,
}

fn six_flows() -> Net {
    let ports: Vec<_> = (0..WORKERS).map(|_| (port("inside", 0), port("outside", 1))).collect();
    let setups = ports.iter().enumerate().map(|(w, (i, o))| worker(w, WORKERS, i, o)).collect();
    let mut net = Net { workers: Lockstep::new(setups, Some(published(64)), T0), ports, tcp_public_port: 0, sent: 0 };
    let v4 = |a: Ipv4Addr| IpAddr::V4(a);
    // Member 1 opens a connection; the SYN leaves translated.
    net.inside(&tcp(v4(device(0)), v4(SERVER), 40001, 443, 1000, 0, TcpFlags::SYN));
    let out = net.take_out();
    assert_eq!(out.len(), 1);
    let syn = wire::classify(&out[0]).unwrap().key;
    assert_eq!(syn.src_ip(), v4(public(0)));
    net.tcp_public_port = syn.src_port;
    let syn_ack = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);
    net.outside(&tcp(v4(SERVER), v4(public(0)), 443, syn.src_port, 5000, 1001, syn_ack));
    net.inside(&tcp(v4(device(0)), v4(SERVER), 40001, 443, 1001, 5001, TcpFlags::ACK));
    assert_eq!(net.take_out().len(), 2, "the SYN-ACK in, the ACK out");
    // Member 2 asks DNS and is answered.
    net.inside(&udp(v4(device(1)), v4(DNS), 5000, 53));
    let out = net.take_out();
    assert_eq!(out.len(), 1);
    let q = wire::classify(&out[0]).unwrap().key;
    net.outside(&udp(v4(DNS), q.src_ip(), 53, q.src_port));
    net.inside(&udp(v4(device(2)), v4(DNS), 6000, 53));
    net.inside(&echo(v4(device(3)), v4(PINGED), 77));
    net.inside(&udp(IpAddr::V6(v6_device(0)), IpAddr::V6(DNS6), 7000, 53));
    net.outside(&tcp(v4(REMOTE), v4(public(0)), 50000, 81, 9000, 0, TcpFlags::SYN));
    assert_eq!(net.take_out().len(), 5, "every other frame passed");
    net
}

impl Net {
    fn inside(&mut self, frame: &[u8]) {
        self.ports[0].0.inject(frame, T0.0);
        self.sent += 1;
        self.workers.settle(T0);
    }

    fn outside(&mut self, frame: &[u8]) {
        self.ports[0].1.inject(frame, T0.0);
        self.sent += 1;
        self.workers.settle(T0);
    }

    /// The frames the workers sent (either side) since the last call.
    fn take_out(&mut self) -> Vec<Vec<u8>> {
        self.ports.iter().flat_map(|(i, o)| i.take_sent().into_iter().chain(o.take_sent())).map(|f| f.data).collect()
    }

    /// Lists as the API does, stepping the workers at `now` until they
    /// answer (each walks its table in CAPACITY / QUERY_SLICE steps).
    fn list(&mut self, now: Time, filter: &FlowFilter, limit: usize) -> (Vec<FlowInfo>, bool) {
        let queries = self.workers.flow_queries();
        let mut pending = queries.start(filter, limit).expect("a valid query");
        for _ in 0..CAPACITY as usize / QUERY_SLICE + limit / QUERY_FLOWS_PER_STEP + 1 {
            self.workers.step(now);
            if let Some(answer) = pending.poll() {
                return answer;
            }
        }
        panic!("no answer from workers {:?}", pending.waiting_for());
    }

    fn count(&mut self, filter: FlowFilter) -> usize {
        let (flows, truncated) = self.list(T0, &filter, 100);
        assert!(!truncated);
        flows.len()
    }
}

fn sock(a: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(a.into(), port)
}

#[test]
fn flows_made_by_packets_are_listed_with_their_ends_member_and_state() {
    let mut net = six_flows();
    let (flows, truncated) = net.list(T0, &FlowFilter::default(), 100);
    assert!(!truncated);
    assert_eq!(flows.len(), 6, "{flows:#?}");
    let established = flows.iter().find(|f| f.state == "established").expect("the TCP connection");
    assert_eq!(
        *established,
        FlowInfo {
            protocol: 6,
            state: "established",
            remaining: Duration::from_secs(12 * 3600),
            inside: sock(device(0), 40001),
            outside: sock(SERVER, 443),
            public: Some(sock(public(0), net.tcp_public_port)),
            member_id: Some(1),
            worker: policy::owner(1, WORKERS),
        }
    );
    let forwarded = flows.iter().find(|f| f.outside.ip() == REMOTE).expect("the forwarded connection");
    assert_eq!(
        (forwarded.state, forwarded.inside, forwarded.public, forwarded.member_id),
        ("syn_sent", sock(device(0), 80), Some(sock(public(0), 81)), Some(1))
    );
    assert_eq!(forwarded.remaining, Duration::from_secs(120));
    let v6 = flows.iter().find(|f| f.inside.is_ipv6()).expect("the IPv6 flow");
    assert_eq!((v6.inside, v6.outside, v6.public), (sock(v6_device(0), 7000), sock(DNS6, 53), None));
    assert_eq!((v6.state, v6.remaining), ("unanswered", Duration::from_secs(30)));
    let ping = flows.iter().find(|f| f.protocol == 1).expect("the ping");
    assert_eq!((ping.inside, ping.outside.ip(), ping.member_id), (sock(device(3), 77), IpAddr::V4(PINGED), Some(4)));
    // Each flow is listed by the worker that owns its member.
    for f in &flows {
        assert_eq!(f.worker, policy::owner(f.member_id.unwrap(), WORKERS), "{f:?}");
    }
    // The same flows later: less time left.
    let later = Time(T0.0 + 10_000_000_000);
    let (flows, _) = net.list(later, &FlowFilter { state: Some("answered".into()), ..Default::default() }, 100);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].remaining, Duration::from_secs(120 - 10));
}

#[test]
fn each_filter_selects_its_flows() {
    let mut net = six_flows();
    let f = FlowFilter::default;
    let ip = |a: Ipv4Addr| Some(IpAddr::V4(a));
    assert_eq!(net.count(FlowFilter { member: Some(1), ..f() }), 3, "TCP out and in, IPv6");
    assert_eq!(net.count(FlowFilter { member: Some(2), ..f() }), 1);
    assert_eq!(net.count(FlowFilter { member: Some(64), ..f() }), 0);
    // Any of the three ends: the far end, the public end, the device.
    assert_eq!(net.count(FlowFilter { address: ip(DNS), ..f() }), 2);
    assert_eq!(net.count(FlowFilter { address: ip(public(0)), ..f() }), 5, "every translated flow");
    assert_eq!(net.count(FlowFilter { address: ip(device(0)), ..f() }), 2);
    assert_eq!(net.count(FlowFilter { address: Some(IpAddr::V6(v6_device(0))), ..f() }), 1);
    assert_eq!(net.count(FlowFilter { port: Some(443), ..f() }), 1);
    assert_eq!(net.count(FlowFilter { port: Some(53), ..f() }), 3);
    assert_eq!(net.count(FlowFilter { port: Some(81), ..f() }), 1, "the forward's public port");
    assert_eq!(net.count(FlowFilter { port: Some(80), ..f() }), 1, "the forward's inside port");
    assert_eq!(net.count(FlowFilter { port: Some(40001), ..f() }), 1);
    let pp = net.tcp_public_port;
    assert_eq!(net.count(FlowFilter { port: Some(pp), ..f() }), 1, "the public port of the connection");
    assert_eq!(net.count(FlowFilter { protocol: Some(17), ..f() }), 3);
    assert_eq!(net.count(FlowFilter { protocol: Some(6), ..f() }), 2);
    assert_eq!(net.count(FlowFilter { protocol: Some(1), ..f() }), 1);
    assert_eq!(net.count(FlowFilter { state: Some("ESTABLISHED".into()), ..f() }), 1, "any case");
    assert_eq!(net.count(FlowFilter { state: Some("syn_sent".into()), ..f() }), 1);
    assert_eq!(net.count(FlowFilter { state: Some("unanswered".into()), ..f() }), 3);
    assert_eq!(net.count(FlowFilter { state: Some("Answered".into()), ..f() }), 1);
    assert_eq!(net.count(FlowFilter { state: Some("time_wait".into()), ..f() }), 0);
    // Filters combine; an address and a port may match different ends.
    assert_eq!(net.count(FlowFilter { protocol: Some(17), member: Some(1), ..f() }), 1);
    assert_eq!(net.count(FlowFilter { address: ip(device(0)), port: Some(443), ..f() }), 1);
    assert_eq!(net.count(FlowFilter { address: ip(DNS), port: Some(443), ..f() }), 0);
    let queries = net.workers.flow_queries();
    let bad = FlowFilter { state: Some("bogus".into()), ..f() };
    assert!(matches!(queries.start(&bad, 10), Err(QueryError::UnknownState(s)) if s == "bogus"));
}

#[test]
fn a_limit_truncates_and_says_so() {
    let mut net = six_flows();
    let all = FlowFilter::default();
    let (flows, truncated) = net.list(T0, &all, 6);
    assert_eq!((flows.len(), truncated), (6, false));
    for limit in [0, 1, 2, 5] {
        let (flows, truncated) = net.list(T0, &all, limit);
        assert_eq!((flows.len(), truncated), (limit, true), "limit {limit}");
    }
    // Within one worker's share: member 1's three flows are worker 1's.
    let (flows, truncated) = net.list(T0, &FlowFilter { member: Some(1), ..Default::default() }, 2);
    assert_eq!((flows.len(), truncated), (2, true));
    let (flows, truncated) = net.list(T0, &FlowFilter { member: Some(1), ..Default::default() }, 3);
    assert_eq!((flows.len(), truncated), (3, false));
}

/// A worker walks its table QUERY_SLICE entries a step, answers after
/// CAPACITY / QUERY_SLICE steps, and counts the query and what it looked at.
#[test]
fn a_query_is_walked_a_bounded_slice_per_step() {
    let mut net = six_flows();
    let queries = net.workers.flow_queries();
    let before = Totals::of(net.workers.stats(T0).iter().map(|s| &**s)).dataplane;
    let mut pending = queries.start(&FlowFilter::default(), 100).unwrap();
    let steps = CAPACITY as usize / QUERY_SLICE;
    let mut visits = before.flow_query_visits;
    for step in 1..=steps {
        assert!(pending.poll().is_none(), "answered after {} of {steps} steps", step - 1);
        let work = net.workers.step(T0);
        let now = Totals::of(net.workers.stats(T0).iter().map(|s| &**s)).dataplane;
        assert_eq!(now.flow_query_visits - visits, (WORKERS * QUERY_SLICE) as u64, "step {step}");
        assert_eq!(work, WORKERS * QUERY_SLICE, "a walk is work: an idle worker goes on");
        visits = now.flow_query_visits;
    }
    let (flows, _) = pending.poll().expect("answered once the tables are walked");
    assert_eq!(flows.len(), 6);
    let after = Totals::of(net.workers.stats(T0).iter().map(|s| &**s)).dataplane;
    assert_eq!(after.flow_queries - before.flow_queries, WORKERS as u64);
    assert_eq!(net.workers.step(T0), 0, "nothing left to walk");
}

/// A query whose workers are not stepped fails naming them; the workers
/// then drop it at once, and the next query gets its own answer. Workers
/// that have not taken four queries are named at once; a query waiting for
/// another gives up at its deadline.
#[test]
fn a_worker_that_does_not_answer_is_named_and_its_late_answer_is_dropped() {
    let mut net = six_flows();
    let queries = net.workers.flow_queries();
    let err = queries.query(&FlowFilter::default(), 100, Duration::from_millis(5)).unwrap_err();
    assert_eq!(err, QueryError::NoAnswer { workers: vec![0, 1], deadline: Duration::from_millis(5) });
    assert!(err.to_string().contains("[0, 1]"), "{err}");
    // Given up: the workers hand the buffer back without walking.
    net.workers.step(T0);
    let t = Totals::of(net.workers.stats(T0).iter().map(|s| &**s)).dataplane;
    assert_eq!((t.flow_queries_abandoned, t.flow_queries, t.flow_query_visits), (2, 0, 0));
    let (flows, _) = net.list(T0, &FlowFilter { protocol: Some(6), ..Default::default() }, 100);
    assert_eq!(flows.len(), 2);
    // Workers stuck behind a full ring of queries are named at once.
    for _ in 0..4 {
        assert!(matches!(queries.query(&FlowFilter::default(), 1, Duration::ZERO), Err(QueryError::NoAnswer { .. })));
    }
    assert_eq!(queries.start(&FlowFilter::default(), 1).unwrap_err(), QueryError::Busy(0));
    net.workers.settle(T0);
    assert_eq!(net.count(FlowFilter::default()), 6);
    // A query waits for the one before it, within its own deadline.
    let first = queries.start(&FlowFilter::default(), 1).unwrap();
    let other = queries.clone();
    let late = std::thread::spawn(move || other.query(&FlowFilter::default(), 1, Duration::from_millis(5)));
    assert_eq!(late.join().unwrap(), Err(QueryError::Crowded(Duration::from_millis(5))));
    drop(first);
    net.workers.settle(T0);
    assert_eq!(net.count(FlowFilter::default()), 6);
    let t = Totals::of(net.workers.stats(T0).iter().map(|s| &**s)).dataplane;
    assert_eq!(
        t.flow_queries_abandoned,
        2 * (1 + 4 + 1),
        "each worker: the first, four, `first` (the busy one reached none)"
    );
}

/// After a pass over each table the histogram holds every flow in the
/// bucket of its remaining time: the established connection in the 12 h
/// one, the UDP flows in short ones.
#[test]
fn the_timeout_histogram_counts_the_flows_after_a_pass() {
    let mut net = six_flows();
    let gap = Duration::from_secs(2) / (CAPACITY / 256);
    // The first pass began before the flows were made: wait for the second.
    let mut now = T0;
    let mut h = TimeoutHistogram::default();
    for _ in 0..3 * CAPACITY / 256 {
        now = now + gap;
        net.workers.settle(now);
        h = Totals::of(net.workers.stats(now).iter().map(|s| &**s)).timeouts;
        if h.passes >= 2 {
            break;
        }
    }
    assert!(h.passes >= 2, "{} passes by {:?}", h.passes, now.since(T0));
    assert!(now.since(T0) <= Duration::from_secs(5), "a pass takes 2 s: {:?}", now.since(T0));
    let bucket = |s: u64| TimeoutHistogram::bucket_of(Duration::from_secs(s));
    let one_in = |b: usize| {
        let mut c = [0u64; BUCKETS];
        c[b] = 1;
        c
    };
    assert_eq!(bucket(43_000), 10, "(6 h, 12 h]");
    assert_eq!(h.get("tcp", "established"), Some(&one_in(bucket(43_000))));
    assert_eq!(h.get("tcp", "syn_sent"), Some(&one_in(bucket(115))));
    assert_eq!(h.get("udp", "answered"), Some(&one_in(bucket(115))));
    let mut two = [0u64; BUCKETS];
    two[bucket(25)] = 2;
    assert_eq!(h.get("udp", "unanswered"), Some(&two), "IPv4 and IPv6, 30 s timeouts");
    assert_eq!(h.get("icmp", "unanswered"), Some(&one_in(bucket(25))));
    assert_eq!(h.flows(), 6);
    let per_worker: Vec<u64> = net.workers.stats(now).iter().map(|s| s.timeouts.flows()).collect();
    assert_eq!(per_worker, [2, 4]);
    // The 30 s flows expire; the next pass no longer counts them.
    let passes = h.passes;
    let later = now + Duration::from_secs(31);
    net.workers.settle(later);
    let mut now = later;
    for _ in 0..3 * CAPACITY / 256 {
        if h.passes >= passes + 2 {
            break;
        }
        now = now + gap;
        net.workers.settle(now);
        h = Totals::of(net.workers.stats(now).iter().map(|s| &**s)).timeouts;
    }
    assert_eq!(h.flows(), 3);
    assert_eq!(h.get("udp", "unanswered").unwrap().iter().sum::<u64>(), 0);
}

/// A query under way changes nothing for the frames: those received in a
/// step leave in that step, every one is counted, none dropped; each step
/// looks at QUERY_SLICE entries and lists QUERY_FLOWS_PER_STEP flows at most.
#[test]
fn a_query_neither_delays_nor_loses_frames() {
    let (inside, outside) = (port("inside", 0), port("outside", 1));
    let mut workers = Lockstep::new(vec![worker(0, 1, &inside, &outside)], Some(published(64)), T0);
    let queries = workers.flow_queries();
    let mut now = T0;
    let (mut sent, mut answered, mut visits) = (0u64, 0, 0);
    let mut pending = None;
    for round in 0..40u32 {
        now = now + Duration::from_millis(1);
        for i in 0..32u32 {
            let m = (round * 32 + i) % 64;
            inside.inject(&udp(IpAddr::V4(device(m)), IpAddr::V4(DNS), 1024 + round as u16, 53), now.0);
            sent += 1;
        }
        let p = pending.get_or_insert_with(|| queries.start(&FlowFilter::default(), 10_000).unwrap());
        workers.step(now);
        assert_eq!(outside.take_sent().len(), 32, "round {round}: the step's frames left in it");
        let seen = workers.stats(now)[0].dataplane.flow_query_visits;
        assert!(seen - visits <= QUERY_SLICE as u64, "round {round}: {} entries", seen - visits);
        visits = seen;
        if let Some((flows, truncated)) = p.poll() {
            assert!(!truncated && !flows.is_empty());
            answered += 1;
            pending = None;
        }
    }
    drop(pending);
    // The whole table listed: at most QUERY_FLOWS_PER_STEP flows a step.
    let mut p = queries.start(&FlowFilter::default(), 10_000).unwrap();
    let mut steps = 0;
    let (flows, truncated) = loop {
        workers.step(now);
        steps += 1;
        if let Some(answer) = p.poll() {
            break answer;
        }
    };
    assert_eq!((flows.len(), truncated), (40 * 32, false));
    let least = flows.len().div_ceil(QUERY_FLOWS_PER_STEP);
    assert!((least..=least + CAPACITY as usize / QUERY_SLICE).contains(&steps), "{steps} steps");
    answered += 1;
    let (stats, _) = workers.finish(now);
    let t = Totals::of(stats.iter().map(|s| &**s));
    assert!(answered >= 2, "{answered} answers");
    assert_eq!((t.dataplane.rx[0], t.dataplane.tx[1]), (sent, sent));
    assert_eq!(t.dataplane.total_drops() + t.engine.total_drops(), 0, "{:?}", t.engine.entries());
    assert_eq!(t.dataplane.flow_queries, answered as u64);
}

/// The live threads: queries from several threads at once while frames
/// flow, each answered in full; no frame lost; after the stop, a query
/// says so.
#[test]
fn live_workers_answer_concurrent_queries_while_traffic_flows() {
    let ports: Vec<_> = (0..WORKERS).map(|_| (port("inside", 0), port("outside", 1))).collect();
    let setups = workers_on(&ports, |s| {
        s.config.idle = Idle::Sleep { spins: 16, sleep: Duration::from_millis(1), coalesce: Duration::ZERO }
    });
    let dp = Dataplane::start(setups, Some(published(64))).expect("workers start");
    let queries = dp.flow_queries();
    const FRAMES: u64 = 4000;
    const QUERIES: usize = 10;
    let answers = std::thread::scope(|s| {
        let feeder = s.spawn(|| {
            for n in 0..FRAMES {
                let m = (n % 64) as u32;
                let frame = udp(IpAddr::V4(device(m)), IpAddr::V4(DNS), 2000 + (n % 100) as u16, 53);
                ports[(n % 2) as usize].0.inject(&frame, 0);
                if n % 64 == 63 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        let askers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    (0..QUERIES)
                        .map(|_| {
                            queries.query(
                                &FlowFilter { protocol: Some(17), ..Default::default() },
                                10_000,
                                Duration::from_secs(10),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        feeder.join().unwrap();
        askers.into_iter().flat_map(|a| a.join().unwrap()).collect::<Vec<_>>()
    });
    for a in &answers {
        let (flows, truncated) = a.as_ref().expect("answered within the deadline");
        assert!(!truncated);
        assert!(flows.iter().all(|f| f.protocol == 17 && f.member_id.is_some()));
    }
    // Every frame leaves (the workers may still be at it).
    let mut out = 0;
    for _ in 0..10_000 {
        out += ports.iter().map(|(_, o)| o.take_sent().len() as u64).sum::<u64>();
        if out == FRAMES {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (flows, _) = queries.query(&FlowFilter::default(), 10_000, Duration::from_secs(10)).unwrap();
    assert_eq!(flows.len(), 1600, "one flow per (member, port) pair: n % 64, n % 100 for n below 4000");
    let stats = dp.stop();
    let t = Totals::of(stats.iter().map(|s| &**s));
    assert_eq!(out, FRAMES);
    assert_eq!((t.dataplane.rx.iter().sum::<u64>(), t.dataplane.tx.iter().sum::<u64>()), (FRAMES, FRAMES));
    assert_eq!(t.dataplane.total_drops() + t.engine.total_drops(), 0, "{:?}", t.engine.entries());
    assert_eq!(t.dataplane.flow_queries, (WORKERS * (3 * QUERIES + 1)) as u64);
    assert_eq!(t.dataplane.flow_queries_abandoned, 0);
    assert_eq!(queries.query(&FlowFilter::default(), 1, Duration::from_secs(1)), Err(QueryError::Stopped));
}

/// A pair's box whose workers restart (a port came back) keeps their
/// rings to the sync thread: what the other box sent while they were
/// stopped, acknowledged to it already, is installed when they start
/// again (new rings lost it, and the other box never sent it again).
#[test]
fn restarted_workers_keep_their_rings_to_the_sync_thread() {
    use engine::conntrack::ProtoState;
    use engine::{Side, Synced};
    use std::sync::atomic::Ordering;
    let ports: Vec<_> = (0..WORKERS).map(|_| (port("inside", 0), port("outside", 1))).collect();
    let (syncs, mut hubs) = dataplane::synclink::links(WORKERS);
    let dp =
        Dataplane::try_start_synced(workers_on(&ports, |_| {}), Some(published(64)), syncs).expect("workers start");
    let (_, kept) = dp.stop_keeping_engines();
    assert!(kept.iter().all(|k| k.as_ref().is_some_and(|k| k.sync.is_some())), "{kept:?}");
    // While they are stopped, the other box reports a flow.
    let k = wire::FlowKey::v4(device(3), DNS, wire::flow::proto::UDP, 4000, 53);
    let reported = Synced {
        keys: [k, k.reversed()],
        orig_side: Side::Inside,
        reply_side: Side::Outside,
        answered: true,
        state: ProtoState::Udp,
        remaining: Duration::from_secs(100),
        member_id: None,
        nat: None,
        packets: [1, 1],
        bytes: [80, 80],
        copy: false,
    };
    hubs[0].incoming.push(sync::Record::Flow(sync::FlowRecord::from_synced(&reported))).unwrap();
    // Started again with their engines and their rings.
    let mut setups = workers_on(&ports, |_| {});
    let mut syncs = Vec::new();
    for (s, k) in setups.iter_mut().zip(kept) {
        let k = k.expect("every worker left its state");
        (s.engine, s.generation) = (Some(k.engine), k.generation);
        syncs.push(k.sync.expect("and its rings"));
    }
    let dp = Dataplane::try_start_synced(setups, Some(published(64)), syncs).expect("workers start again");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while hubs[0].shared.counts.installed.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < end, "the flow sent meanwhile was never installed");
        std::thread::sleep(Duration::from_millis(10));
    }
    dp.stop();
}
