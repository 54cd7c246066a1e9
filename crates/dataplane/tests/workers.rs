//! The real worker loop on in-memory ports: two workers, member traffic
//! arriving on the wrong core is handed to the owning one, translated there,
//! and every frame is accounted for (forwarded, or dropped with a reason).

use arc_swap::ArcSwap;
use core::net::{IpAddr, Ipv4Addr};
use dataplane::{Dataplane, Egress, Idle, PortQueue, Totals, WorkerConfig, WorkerSetup};
use engine::{Config, Side};
use io::{Batch, IoError, MemoryIo, PacketBuf, PacketIo, PortId};
use policy::Generation;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wire::build::{self, Eth};
use wire::MacAddr;

/// A memory port the test and a worker share.
#[derive(Clone)]
struct SharedPort(Arc<Mutex<MemoryIo>>);

impl PacketIo for SharedPort {
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        self.0.lock().unwrap().recv(batch)
    }
    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        self.0.lock().unwrap().send(frames)
    }
    fn name(&self) -> &str {
        "shared-memory"
    }
}

fn port(name: &str, id: u8) -> SharedPort {
    SharedPort(Arc::new(Mutex::new(MemoryIo::new(name, PortId(id)))))
}

/// A single worker between an inside and an outside port.
fn one_worker(
    inside: &SharedPort,
    outside: &SharedPort,
    batch: usize,
    idle: Idle,
    stats_every: Duration,
) -> WorkerSetup {
    WorkerSetup {
        config: WorkerConfig {
            index: 0,
            workers: 1,
            cpu: None,
            engine: Config { max_flows: 4096, ..Default::default() },
            batch,
            idle,
            stats_every,
        },
        ports: vec![
            PortQueue { name: "inside".into(), side: Side::Inside, io: Box::new(inside.clone()) },
            PortQueue { name: "outside".into(), side: Side::Outside, io: Box::new(outside.clone()) },
        ],
        egress: Egress::fixed(0, 1),
        engine: None,
        generation: None,
    }
}

#[test]
fn frames_reach_their_owner_and_nothing_is_lost() {
    const WORKERS: usize = 2;
    let members = policy::sample::campus(64);
    let compiled = policy::compile_with_key(&members, 1, [1, 2, 3, 4]).expect("sample compiles");
    let published = Arc::new(ArcSwap::from_pointee(Generation::first(Arc::new(compiled))));
    let policy = Arc::clone(&published.load().policy);

    let mut inside = Vec::new();
    let mut outside = Vec::new();
    let mut setups = Vec::new();
    for w in 0..WORKERS {
        let (i, o) = (port("inside", 0), port("outside", 1));
        inside.push(i.clone());
        outside.push(o.clone());
        let engine = Config { max_flows: 4096, hash_key: [w as u64 + 7, 2, 3, 4], ..Default::default() };
        setups.push(WorkerSetup {
            config: WorkerConfig {
                index: w,
                workers: WORKERS,
                cpu: None,
                engine,
                batch: 32,
                idle: Idle::Sleep { spins: 16, sleep: Duration::from_micros(100), coalesce: Duration::ZERO },
                stats_every: Duration::from_millis(20),
            },
            ports: vec![
                PortQueue { name: "inside".into(), side: Side::Inside, io: Box::new(i) },
                PortQueue { name: "outside".into(), side: Side::Outside, io: Box::new(o) },
            ],
            egress: Egress::fixed(0, 1),
            engine: None,
            generation: None,
        });
    }

    // One UDP flow per member device, each injected on worker `m % 3 % 2`:
    // about half arrive on a worker that does not own their member.
    let eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan: None };
    let server = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    let mut buf = [0u8; 256];
    let mut sent = 0u64;
    let mut expected_owner = [0u64; WORKERS];
    for m in 0..64u32 {
        let device = IpAddr::V4(Ipv4Addr::from(policy::sample::campus_block(m).first() + 1));
        let owner = policy::owner(m + 1, WORKERS);
        assert_eq!(policy.member(policy.member_of_inside(device).expect("a member's device")).id, m + 1);
        let n = build::udp(&mut buf, &eth, device, server, 40000 + m as u16, 53, 32).unwrap();
        for _ in 0..3 {
            inside[(m % 3 % 2) as usize].0.lock().unwrap().inject(&buf[..n], 0);
            sent += 1;
            expected_owner[owner] += 1;
        }
    }
    let dp = Dataplane::start(setups, Some(Arc::clone(&published))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        for o in &outside {
            out.extend(o.0.lock().unwrap().take_sent());
        }
        if out.len() as u64 == sent || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = dp.stop();
    let totals = Totals::of(stats.iter().map(|s| &**s));
    assert_eq!(totals.engine.total_drops(), 0, "{:?}", totals.engine.entries());
    assert_eq!(totals.dataplane.total_drops(), 0);
    assert!(totals.dataplane.handed_off > 0, "some frames arrived on the wrong worker");
    assert_eq!(totals.dataplane.handed_off, totals.dataplane.handed_in);
    assert_eq!(totals.dataplane.same_core + totals.dataplane.handed_off, sent);
    for (w, s) in stats.iter().enumerate() {
        // Every frame was translated on its member's worker and left by it.
        assert_eq!(s.dataplane.tx[1], expected_owner[w], "worker {w}");
        let counted: u64 = s.accounts.iter().map(|a| a.packets[0]).sum();
        assert_eq!(counted, expected_owner[w], "worker {w} accounted its own members");
        assert!(s.accounts.iter().all(|a| policy::owner(a.member_id, WORKERS) == w));
    }
    assert_eq!(out.len() as u64, sent);
    {
        for f in &out {
            let meta = wire::classify(&f.data).unwrap();
            let src = meta.key.src_v4();
            assert_eq!(src.octets()[..3], [198, 18, 0], "translated to a public address: {src}");
        }
    }
}

#[test]
fn a_full_transmit_ring_drops_and_counts() {
    let members = policy::sample::campus(8);
    let compiled = policy::compile_with_key(&members, 1, [1, 2, 3, 4]).expect("sample compiles");
    let published = Arc::new(ArcSwap::from_pointee(Generation::first(Arc::new(compiled))));
    let inside = port("inside", 0);
    // The outside port takes 8 frames and then refuses more until drained.
    let outside = SharedPort(Arc::new(Mutex::new(MemoryIo::new("outside", PortId(1)).with_tx_ring(8))));
    let eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan: None };
    let device = IpAddr::V4(Ipv4Addr::from(policy::sample::campus_block(0).first() + 1));
    let mut buf = [0u8; 256];
    for i in 0..64u16 {
        let n =
            build::udp(&mut buf, &eth, device, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 1000 + i, 53, 16).unwrap();
        inside.0.lock().unwrap().inject(&buf[..n], 0);
    }
    let idle = Idle::Sleep { spins: 16, sleep: Duration::from_micros(100), coalesce: Duration::ZERO };
    let setup = one_worker(&inside, &outside, 64, idle, Duration::from_millis(20));
    let dp = Dataplane::start(vec![setup], Some(published)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while inside.0.lock().unwrap().rx_pending() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    let stats = dp.stop();
    let t = Totals::of(stats.iter().map(|s| &**s));
    let sent = outside.0.lock().unwrap().take_sent().len() as u64;
    assert_eq!(sent, 8);
    assert_eq!(t.dataplane.dropped(dataplane::Drop::TxRingFull), 56);
    assert_eq!(t.dataplane.tx[1], 8);
    assert_eq!(t.engine.tx_packets[1], 64, "the engine forwarded all; the port refused 56, counted");
}

/// Interrupt moderation: while traffic flows the worker naps instead of
/// waiting for the next frame, still forwards everything, and goes back
/// to waiting on its ports once a nap finds nothing.
#[test]
fn a_coalescing_worker_naps_while_traffic_flows_and_loses_nothing() {
    let members = policy::sample::campus(8);
    let compiled = policy::compile_with_key(&members, 1, [1, 2, 3, 4]).expect("sample compiles");
    let published = Arc::new(ArcSwap::from_pointee(Generation::first(Arc::new(compiled))));
    let (inside, outside) = (port("inside", 0), port("outside", 1));
    let idle = Idle::Sleep { spins: 4, sleep: Duration::from_millis(1), coalesce: Duration::from_micros(100) };
    let setup = one_worker(&inside, &outside, 32, idle, Duration::from_millis(5));
    let dp = Dataplane::start(vec![setup], Some(Arc::clone(&published))).unwrap();
    let eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan: None };
    let device = IpAddr::V4(Ipv4Addr::from(policy::sample::campus_block(0).first() + 1));
    let server = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    let mut buf = [0u8; 256];
    let mut sent = 0;
    let mut out = 0;
    // A trickle: a few frames every 50 µs or so for some 40 ms.
    for i in 0..1600u16 {
        let n = build::udp(&mut buf, &eth, device, server, 1000 + i % 16, 53, 16).unwrap();
        inside.0.lock().unwrap().inject(&buf[..n], 0);
        sent += 1;
        if i % 4 == 3 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while out < sent && Instant::now() < deadline {
        out += outside.0.lock().unwrap().take_sent().len();
        std::thread::sleep(Duration::from_millis(5));
    }
    // Quiet for a while: the worker must go back to waiting on its ports.
    std::thread::sleep(Duration::from_millis(30));
    let stats = dp.stop();
    let totals = Totals::of(stats.iter().map(|s| &**s));
    assert_eq!(out, sent, "every frame forwarded");
    assert_eq!(totals.dataplane.total_drops() + totals.engine.total_drops(), 0);
    assert!(totals.dataplane.naps > 0, "naps while the trickle flowed");
    assert!(totals.dataplane.waits > 0, "waits on the ports once it stopped");
    // Without moderation a worker wakes about once per burst; with it, at
    // most once per nap (100 µs) while bursts come every 50 µs or more.
    assert!(
        totals.dataplane.naps + totals.dataplane.waits < sent as u64 / 2,
        "{} naps and {} waits for {sent} frames",
        totals.dataplane.naps,
        totals.dataplane.waits
    );
}
