//! Per-packet cost does not depend on the number of members: the wheel and
//! queue work per operation (slots swept, members looked at) is the same
//! with 1,000 and 240,000 members, and under full overload (every member
//! backlogged) the member operations per packet — wheel sweeps and cascades,
//! due misses, nodes of the division's aggregate — are flat from 1,000 to
//! 240,000 backlogged members. Counts, not timings.
mod common;

use common::*;
use shaper::{Config, Departure, Packet, Plan, Shaper, UplinkConfig, UplinkExchange, Verdict};
use std::sync::Arc;

/// Work per packet for a shaper with `members` members of which 500 are busy.
fn work_per_packet(members: u32) -> (f64, f64) {
    let exchange = Arc::new(UplinkExchange::new(UplinkConfig::new(10_000 * MBIT, 1)));
    let config = Config { pool_packets: 200_000, ..Config::default() };
    let mut shaper: Shaper<u64> = Shaper::new(config, exchange, 0, 0).unwrap();
    let mut sink = Vec::new();
    for slot in 0..members {
        let plan = Plan { rate_bps: 2 * MBIT, ceil_bps: 4 * MBIT, burst_bytes: 3_000, weight: 1 };
        shaper.set_member(0, slot, Some(plan), &mut sink).unwrap();
    }
    // 500 busy members spread over the slot range, each offered 8 Mbit/s.
    let busy: Vec<u32> = (0..500u32).map(|i| (u64::from(i) * u64::from(members) / 500) as u32).collect();
    let mut handle = 0u64;
    let mut packets = 0u64;
    let mut out: Vec<Departure<u64>> = Vec::with_capacity(4096);
    let step = 100 * US;
    let mut now = 0;
    while now < 500 * MS {
        now += step;
        for (i, &slot) in busy.iter().enumerate() {
            // 8 Mbit/s of 1000-byte packets: one per ms.
            if (now / step + i as u64) % 10 == 0 {
                let p = Packet { handle, len: 1_000, flow_hash: i as u32, ect: false };
                handle += 1;
                packets += 1;
                if let Verdict::Queued = shaper.enqueue(now, slot, p) {}
            }
        }
        out.clear();
        shaper.poll(now, 4096, &mut out);
    }
    let s = shaper.stats();
    println!(
        "{members} members: {packets} packets, {} slots swept, {} members swept, {} due misses, {} released",
        s.slots_swept, s.members_swept, s.due_misses, s.released_packets
    );
    (s.slots_swept as f64 / packets as f64, (s.members_swept + s.due_misses) as f64 / packets as f64)
}

#[test]
fn per_packet_work_does_not_grow_with_members() {
    let (slots_small, members_small) = work_per_packet(1_000);
    let (slots_large, members_large) = work_per_packet(240_000);
    println!("per packet: slots {slots_small:.3} vs {slots_large:.3}; members looked at {members_small:.3} vs {members_large:.3}");
    // Slots swept depend only on time, members looked at only on the busy ones.
    assert!((slots_large - slots_small).abs() <= 0.01 * slots_small.max(0.01));
    assert!(members_large <= members_small * 1.05 + 0.01);
    assert!(members_large < 2.0, "members looked at per packet: {members_large}");
}

/// Work per released packet under full overload, every member backlogged.
#[derive(Clone, Copy, Debug)]
struct OverloadWork {
    /// Wheel slots swept (depends on time only).
    slots: f64,
    /// Members looked at by the wheel and the due list (swept, parked again, missed).
    wheel_members: f64,
    /// The per-period division and re-timing (histogram nodes, claims, members re-timed).
    period: f64,
    /// Members backlogged at the end, as a fraction of all.
    backlogged: f64,
}

impl OverloadWork {
    fn member_ops(&self) -> f64 {
        self.wheel_members + self.period
    }
}

/// `members` members, each offered twice its fair share of a 10 Gbit/s core,
/// so that all are backlogged; work counted over the second of two seconds.
fn overload_work(members: u32) -> OverloadWork {
    const CAPACITY: u64 = 10_000 * MBIT;
    const LEN: u32 = 1_000;
    let exchange = Arc::new(UplinkExchange::new(UplinkConfig::new(CAPACITY, 1)));
    // Queues of four packets (the excess is tail-dropped at once); no CoDel
    // or sojourn drops, so that every offered packet is either refused at
    // enqueue or released and the work is that of shaping alone.
    let config = Config {
        pool_packets: members * 4 + 1_024,
        member_limit_packets: 4,
        flows_per_member: 2,
        codel_target_ns: 100 * SEC,
        codel_interval_ns: 100 * SEC,
        sojourn_limit_ns: 100 * SEC,
        ..Config::default()
    };
    let mut shaper: Shaper<u64> = Shaper::new(config, exchange, 0, 0).unwrap();
    let mut sink = Vec::new();
    for slot in 0..members {
        // Weights 1 to 4; every tenth member with a ceiling that pins it on the small core.
        let weight = 1 + slot % 4;
        let ceil_bps = if slot % 10 == 0 { 2 * MBIT } else { 100 * MBIT };
        // A burst of one packet: a member kept waiting in the due list by the core
        // bucket does not bank tokens, so the start (every member due at once)
        // drains and all sizes reach the same steady state.
        let plan = Plan { rate_bps: 1_000 * u64::from(weight), ceil_bps, burst_bytes: LEN, weight };
        shaper.set_member(0, slot, Some(plan), &mut sink).unwrap();
    }
    let offered_pps = 2 * CAPACITY / (8 * u64::from(LEN));
    let step = 50 * US;
    let per_step = offered_pps * step / SEC;
    let mut out: Vec<Departure<u64>> = Vec::with_capacity(8_192);
    let (mut now, mut handle, mut cursor) = (0u64, 0u64, 0u32);
    let mut before = shaper.stats();
    let mut last = before;
    while now < 2 * SEC {
        now += step;
        // Round robin over members: each is offered 2 × capacity / members.
        for _ in 0..per_step {
            let p = Packet { handle, len: LEN, flow_hash: (handle as u32).wrapping_mul(0x9E37_79B9), ect: false };
            handle += 1;
            if let Verdict::Dropped(..) = shaper.enqueue(now, cursor, p) {}
            cursor = (cursor + 1) % members;
        }
        out.clear();
        shaper.poll(now, 8_192, &mut out);
        if now == SEC {
            before = shaper.stats();
        }
        last = shaper.stats();
    }
    let s = last;
    println!(
        "  swept {} misses {} released {} passed {} backlog pkts {} share {} light {}",
        s.members_swept - before.members_swept,
        s.due_misses - before.due_misses,
        s.released_packets - before.released_packets,
        s.passed_packets - before.passed_packets,
        s.backlog_packets,
        s.share_bps,
        s.light_bps
    );
    let packets = (s.released_packets + s.passed_packets - before.released_packets - before.passed_packets) as f64;
    let work = OverloadWork {
        slots: (s.slots_swept - before.slots_swept) as f64 / packets,
        wheel_members: (s.members_swept + s.due_misses - before.members_swept - before.due_misses) as f64 / packets,
        period: (s.division_work - before.division_work) as f64 / packets,
        backlogged: f64::from(s.backlogged_members) / f64::from(members),
    };
    println!(
        "{members} members under overload: {packets} packets out in 1 s ({:.2} Gbit/s), fair level {}, backlogged {:.3}; per packet: slots {:.3}, wheel member ops {:.3}, division work {:.3}, member ops {:.3}",
        packets * f64::from(LEN) * 8.0 / 1e9,
        s.fair_level,
        work.backlogged,
        work.slots,
        work.wheel_members,
        work.period,
        work.member_ops(),
    );
    work
}

#[test]
fn per_packet_work_under_overload_does_not_grow_with_backlogged_members() {
    let works: Vec<OverloadWork> = [1_000, 24_000, 240_000].into_iter().map(overload_work).collect();
    for w in &works {
        assert!(w.backlogged > 0.95, "not all members backlogged: {w:?}");
    }
    let ops: Vec<f64> = works.iter().map(OverloadWork::member_ops).collect();
    let (lo, hi) = ops.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    println!("member operations per packet at 1k / 24k / 240k backlogged: {ops:.3?}");
    assert!(hi <= 1.2 * lo, "member operations per packet not flat within 20 %: {ops:?}");
    let slots: Vec<f64> = works.iter().map(|w| w.slots).collect();
    assert!(slots.iter().all(|&s| (s - slots[0]).abs() <= 0.01 * slots[0].max(0.01)), "{slots:?}");
}
