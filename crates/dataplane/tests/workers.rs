//! The worker loop on in-memory ports, stepped on a virtual clock
//! ([`Lockstep`]): two workers, member traffic arriving on the wrong core
//! is handed to the owning one, translated there, and every frame is
//! accounted for (forwarded, or dropped with a reason). Nothing here
//! sleeps: the loop is the live one, its clock is the test's.

mod common;

use arc_swap::ArcSwap;
use common::*;
use core::net::{IpAddr, Ipv4Addr};
use dataplane::{Idle, Lockstep, Pacer, Pause, Step, Totals};
use engine::Time;
use io::{MemoryIo, PortId, SharedMemoryIo};
use policy::Generation;
use std::sync::Arc;
use std::time::Duration;
use wire::build::{self};

/// A UDP frame from member `m`'s first device.
fn from_member(m: u32, sport: u16) -> Vec<u8> {
    let device = IpAddr::V4(Ipv4Addr::from(policy::sample::campus_block(m).first() + 1));
    let server = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    let mut buf = [0u8; 256];
    let n = build::udp(&mut buf, &ETH, device, server, sport, 53, 32).unwrap();
    buf[..n].to_vec()
}

/// Two workers, each between an inside and an outside in-memory port,
/// under the campus policy of 64 members.
fn two_workers() -> (Arc<policy::Policy>, Vec<(SharedMemoryIo, SharedMemoryIo)>, Lockstep) {
    let published = published(64);
    let policy = Arc::clone(&published.load().policy);
    let ports: Vec<_> = (0..2).map(|_| (port("inside", 0), port("outside", 1))).collect();
    let setups = ports.iter().enumerate().map(|(w, (i, o))| worker(w, 2, i, o)).collect();
    (policy, ports, Lockstep::new(setups, Some(published), T0))
}

#[test]
fn frames_reach_their_owner_and_nothing_is_lost() {
    const WORKERS: usize = 2;
    let (policy, ports, mut workers) = two_workers();

    // One UDP flow per member device, each injected on worker `m % 3 % 2`:
    // about half arrive on a worker that does not own their member.
    let mut sent = 0u64;
    let mut expected_owner = [0u64; WORKERS];
    for m in 0..64u32 {
        let device = IpAddr::V4(Ipv4Addr::from(policy::sample::campus_block(m).first() + 1));
        assert_eq!(policy.member(policy.member_of_inside(device).expect("a member's device")).id, m + 1);
        let frame = from_member(m, 40000 + m as u16);
        for _ in 0..3 {
            ports[(m % 3 % 2) as usize].0.inject(&frame, T0.0);
            sent += 1;
            expected_owner[policy::owner(m + 1, WORKERS)] += 1;
        }
    }
    workers.settle(T0);
    let out: Vec<_> = ports.iter().flat_map(|(_, o)| o.take_sent()).collect();
    let (stats, _) = workers.finish(T0);
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
    for f in &out {
        let src = wire::classify(&f.data).unwrap().key.src_v4();
        assert_eq!(src.octets()[..3], [198, 18, 0], "translated to a public address: {src}");
    }
}

/// A datagram to a public address that several members share, fragmented
/// on its way in, arriving on a worker that does not own its member: the
/// first fragment names the member by its port and is handed over; the
/// later one has no port and must follow it (it used to stay and wait, in
/// vain, for a first fragment that had gone to the other worker).
#[test]
fn later_fragments_to_a_shared_address_follow_their_first() {
    const WORKERS: usize = 2;
    let (policy, ports, mut workers) = two_workers();

    // Member id 5 (m = 4) is worker 1's; its address is shared with ids 6-8.
    let m = 4u32;
    assert_eq!(policy::owner(m + 1, WORKERS), 1);
    let (public, _, _) = policy::sample::campus_public(m);
    assert!(policy.sole_member_of_public(public).is_none(), "the address is shared");
    ports[1].0.inject(&from_member(m, 40000), T0.0);
    workers.settle(T0);
    let out = ports[1].1.take_sent();
    assert_eq!(out.len(), 1);
    let opened = wire::classify(&out[0].data).unwrap().key;
    assert_eq!(opened.src_v4(), public);

    // The answer, in two fragments, both arriving on worker 0.
    let server = opened.dst_ip();
    let mut d = vec![0u8; 8 + 2000];
    let n = build::udp_datagram(&mut d, server, IpAddr::V4(public), 53, opened.src_port, 2000).unwrap();
    d.truncate(n);
    let piece = |off: usize, end: usize, more: bool| {
        let mut buf = vec![0u8; 1600];
        let len =
            build::ip_fragment(&mut buf, &ETH, server, IpAddr::V4(public), 17, 77, off as u16, more, &d[off..end])
                .unwrap();
        buf.truncate(len);
        buf
    };
    let t = Time(T0.0 + 1_000_000);
    ports[0].1.inject(&piece(0, 1480, true), t.0);
    ports[0].1.inject(&piece(1480, d.len(), false), t.0);
    workers.settle(t);
    let delivered = ports[1].0.take_sent();
    let stray = ports[0].0.take_sent();
    let (stats, _) = workers.finish(t);
    let totals = Totals::of(stats.iter().map(|s| &**s));
    assert_eq!(stray.len(), 0);
    assert_eq!(delivered.len(), 2, "both fragments reach the member through its worker");
    let device = Ipv4Addr::from(policy::sample::campus_block(m).first() + 1);
    assert!(delivered.iter().all(|f| wire::classify(&f.data).unwrap().key.dst_v4() == device));
    assert_eq!(totals.dataplane.fragments_followed, 1);
    assert_eq!(totals.engine.total_drops(), 0, "{:?}", totals.engine.entries());
    assert_eq!(totals.dataplane.total_drops(), 0);
}

#[test]
fn a_full_transmit_ring_drops_and_counts() {
    let inside = port("inside", 0);
    // The outside port takes 8 frames and then refuses more until drained.
    let outside = SharedMemoryIo::new(MemoryIo::new("outside", PortId(1)).with_tx_ring(8));
    for i in 0..64u16 {
        inside.inject(&from_member(0, 1000 + i), T0.0);
    }
    let mut setup = worker(0, 1, &inside, &outside);
    setup.config.batch = 64;
    let mut workers = Lockstep::new(vec![setup], Some(published(8)), T0);
    workers.settle(T0);
    let (stats, _) = workers.finish(T0);
    let t = Totals::of(stats.iter().map(|s| &**s));
    assert_eq!(outside.take_sent().len(), 8);
    assert_eq!(t.dataplane.dropped(dataplane::Drop::TxRingFull), 56);
    assert_eq!(t.dataplane.tx[1], 8);
    assert_eq!(t.engine.tx_packets[1], 64, "the engine forwarded all; the port refused 56, counted");
}

/// One worker's inflow in one step can exceed its transmit batch (four
/// receive batches): here four workers hand it a batch each while it
/// receives its own. What it cannot hold is sent mid-step, not dropped
/// (`tx_batch_full`) while the port has room.
#[test]
fn a_step_whose_inflow_exceeds_a_transmit_batch_sends_it_all() {
    const WORKERS: usize = 5;
    let ports: Vec<_> = (0..WORKERS).map(|_| (port("inside", 0), port("outside", 1))).collect();
    let setups = workers_on(&ports, |s| s.config.batch = 4);
    let mut workers = Lockstep::new(setups, Some(published(64)), T0);
    // Members 5, 10, ... (ids m + 1) are worker 0's; every worker receives their frames.
    let mut sent = 0;
    for (w, (inside, _)) in ports.iter().enumerate() {
        for k in 0..40u32 {
            let m = 4 + 5 * (k % 12);
            inside.inject(&from_member(m, 1000 + (w as u16) * 100 + k as u16), T0.0);
            sent += 1;
        }
    }
    workers.settle(T0);
    let out: usize = ports.iter().map(|(_, o)| o.take_sent().len()).sum();
    let (stats, _) = workers.finish(T0);
    let t = Totals::of(stats.iter().map(|s| &**s));
    assert_eq!(t.dataplane.total_drops(), 0, "tx_batch_full: {}", t.dataplane.dropped(dataplane::Drop::TxBatchFull));
    assert_eq!(t.engine.total_drops(), 0, "{:?}", t.engine.entries());
    assert_eq!(out, sent);
}

/// The live loop's pacing, step by step: straight on while there is work,
/// a nap after work when there is load to amortise (adaptive interrupt
/// moderation), then `spins` empty steps, then waits on the ports.
#[test]
fn the_pacer_naps_after_work_then_spins_then_waits() {
    const US: u64 = 1_000;
    let idle = Idle::Sleep { spins: 2, sleep: Duration::from_millis(1), coalesce: Duration::from_micros(200) };
    let work = |n| Step { work: n, frames: n, receiving: true, done: false };
    let empty = work(0);
    let mut p = Pacer::default();
    // The first traffic: no rate yet, so no nap; the spins, then a wait.
    assert_eq!(p.after(&work(5), idle, 1_000 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 1_000 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 1_001 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 1_002 * US), Pause::Wait(Duration::from_millis(1)));
    // 35 kpps (7 frames in 200 µs): a nap of `coalesce` gathers 7, so it is taken.
    assert_eq!(p.after(&work(7), idle, 1_200 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 1_200 * US), Pause::Nap(Duration::from_micros(200)));
    assert_eq!(p.after(&work(7), idle, 1_400 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 1_400 * US), Pause::Nap(Duration::from_micros(200)));
    // 1 Mpps (200 frames in 200 µs): a nap as long as a batch takes to arrive.
    assert_eq!(p.after(&work(64), idle, 1_600 * US), Pause::None);
    assert_eq!(p.after(&work(64), idle, 1_600 * US), Pause::None);
    assert_eq!(p.after(&work(72), idle, 1_600 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 1_600 * US), Pause::Nap(Duration::from_micros(64)));
    // A lone frame (a ping's reply) 5 ms later: no load, no nap; it is not held.
    assert_eq!(p.after(&work(1), idle, 6_600 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 6_600 * US), Pause::None);
    assert_eq!(p.naps_skipped(), 2);
    // After a long pause the rate is unknown: no nap either.
    assert_eq!(p.after(&work(50), idle, 60_000 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 60_000 * US), Pause::None);
    assert_eq!(p.naps_skipped(), 3);
    // Work that is not frames (sync records, a flow listing's entries)
    // keeps the worker going but is no arrival rate to nap for.
    let records = Step { work: 500, frames: 0, receiving: true, done: false };
    assert_eq!(p.after(&records, idle, 60_100 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 60_100 * US), Pause::None);
    assert_eq!(p.naps_skipped(), 4);
    // 12 kpps: a nap gathers 2.4 frames, worth one wake-up instead of two
    // or three; 5 kpps, one frame a nap, is not.
    assert_eq!(p.after(&work(12), idle, 61_100 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 61_100 * US), Pause::Nap(Duration::from_micros(200)));
    assert_eq!(p.after(&work(5), idle, 62_100 * US), Pause::None);
    assert_eq!(p.after(&empty, idle, 62_100 * US), Pause::None);
    assert_eq!(p.naps_skipped(), 5);
    // No moderation: a wait after the spins; a busy worker never pauses.
    let plain = Idle::Sleep { spins: 1, sleep: Duration::from_millis(1), coalesce: Duration::ZERO };
    let mut p = Pacer::default();
    assert_eq!(p.after(&work(5), plain, US), Pause::None);
    assert_eq!(p.after(&empty, plain, 2 * US), Pause::None);
    assert_eq!(p.after(&empty, plain, 3 * US), Pause::Wait(Duration::from_millis(1)));
    let mut p = Pacer::default();
    for i in 0..100 {
        assert_eq!(p.after(&empty, Idle::Busy, i * US), Pause::None);
    }
}

/// Shaping in the loop, on the virtual clock: a member whose plan allows
/// 1 Mbit/s up sends a burst of 200 frames (14,800 bytes) at once; the
/// shaper lets its 3000-byte burst pass and holds the rest, releasing it
/// as virtual time passes, the last frame after some 94 ms.
#[test]
fn the_shaper_releases_held_frames_as_virtual_time_passes() {
    let mut members = policy::sample::campus(1);
    let plan_id = members.members[0].plan_id.expect("the sample member has a plan");
    let plan = members.plans.iter_mut().find(|p| p.id == plan_id).expect("its plan");
    plan.rates.up_rate_kbit = 1000;
    plan.rates.up_ceil_kbit = 1000;
    plan.rates.burst_bytes = 3000;
    let compiled = policy::compile_with_key(&members, 1, [1, 2, 3, 4]).expect("sample compiles");
    let published = Arc::new(ArcSwap::from_pointee(Generation::first(Arc::new(compiled))));
    let (inside, outside) = (port("inside", 0), port("outside", 1));
    let mut setup = worker(0, 1, &inside, &outside);
    let mut shaping = engine::ShapingConfig::new([u64::MAX / 4, u64::MAX / 4], 1, 0, 0);
    shaping.pool_frames = 1024;
    shaping.shaper.sojourn_limit_ns = u64::MAX / 4;
    shaping.shaper.codel_target_ns = 1_000_000_000;
    shaping.shaper.codel_interval_ns = 10_000_000_000;
    setup.config.engine.shaping = Some(shaping.for_core(0));
    let mut workers = Lockstep::new(vec![setup], Some(published), T0);
    for i in 0..200u16 {
        inside.inject(&from_member(0, 1000 + i % 8), T0.0);
    }
    workers.settle(T0);
    let at_once: usize = outside.take_sent().iter().map(|f| f.data.len()).sum();
    assert!(at_once <= 3000 + 74, "{at_once} bytes passed at once with a 3000-byte burst");
    assert!(workers.holding() > 150, "held: {}", workers.holding());
    let (mut out, mut last) = (at_once / 74, T0);
    let mut now = T0;
    while workers.holding() > 0 && now.0 < T0.0 + 1_000_000_000 {
        now = Time(now.0 + 1_000_000);
        workers.settle(now);
        let n = outside.take_sent().len();
        if n > 0 {
            (out, last) = (out + n, now);
        }
    }
    let (stats, _) = workers.finish(now);
    let t = Totals::of(stats.iter().map(|s| &**s));
    assert_eq!(out, 200, "every frame released: {:?}", t.engine.entries());
    assert_eq!(t.engine.total_drops() + t.dataplane.total_drops(), 0);
    // (14,800 - 3000) bytes at 1 Mbit/s take 94.4 ms.
    let took_ms = (last.0 - T0.0) / 1_000_000;
    assert!((90..=110).contains(&took_ms), "the last frame left after {took_ms} ms");
}

/// The benchmarks' floor: with the engine bypassed, every frame crosses to
/// the other side untouched, even one the policy refuses (from outside, to
/// nobody's address) and one it would rewrite (a member's, which NAT would
/// give its public address); nothing is counted by the engine.
#[test]
fn the_null_engine_forwards_everything_untouched() {
    let (inside, outside) = (port("inside", 0), port("outside", 1));
    let member = from_member(3, 4000);
    let mut stranger = [0u8; 256];
    let n = build::udp(
        &mut stranger,
        &ETH,
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)),
        53,
        4000,
        32,
    )
    .unwrap();
    let stranger = stranger[..n].to_vec();
    for mut null_engine in [false, true] {
        inside.inject(&member, T0.0);
        outside.inject(&stranger, T0.0);
        let mut setup = worker(0, 1, &inside, &outside);
        std::mem::swap(&mut setup.config.null_engine, &mut null_engine);
        let null_engine = setup.config.null_engine;
        let mut workers = Lockstep::new(vec![setup], Some(published(8)), T0);
        workers.settle(T0);
        let (stats, _) = workers.finish(T0);
        let t = Totals::of(stats.iter().map(|s| &**s));
        let data = |frames: Vec<io::memory::Frame>| frames.into_iter().map(|f| f.data).collect::<Vec<_>>();
        let (out, back) = (data(outside.take_sent()), data(inside.take_sent()));
        if null_engine {
            assert_eq!(out, vec![member.clone()], "the member's frame, not translated");
            assert_eq!(back, vec![stranger.clone()], "the refused frame, forwarded");
            assert_eq!(t.engine.total_drops(), 0);
        } else {
            assert_eq!(out.len(), 1);
            assert_ne!(out[0], member, "the engine translates the member's frame");
            assert!(back.is_empty(), "the engine refuses the stranger's frame");
            assert_eq!(t.engine.total_drops(), 1);
        }
    }
}
