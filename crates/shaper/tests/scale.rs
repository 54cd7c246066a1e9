//! Per-packet cost does not depend on the number of members: the wheel and
//! queue work per operation (slots swept, members looked at) is the same
//! with 1,000 and 240,000 members. Counts, not timings.
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
