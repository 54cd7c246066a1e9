//! Random enqueue/poll/plan sequences never lose, duplicate or invent a
//! handle, and never panic.
use proptest::prelude::*;
use shaper::{Config, Departure, Packet, Plan, Shaper, UplinkConfig, UplinkExchange, Verdict};
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    Enqueue { dt: u64, slot: u32, len: u32, flow: u32, ect: bool },
    Poll { dt: u64, budget: usize },
    SetPlan { slot: u32, plan: Option<(u64, u64, u32, u32)> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2_000_000u64, 0..6u32, 0..10_000u32, any::<u32>(), any::<bool>())
            .prop_map(|(dt, slot, len, flow, ect)| Op::Enqueue { dt, slot, len, flow, ect }),
        3 => (0..50_000_000u64, 0..64usize).prop_map(|(dt, budget)| Op::Poll { dt, budget }),
        1 => (0..6u32, proptest::option::of((0..u64::MAX, 0..u64::MAX, any::<u32>(), any::<u32>())))
            .prop_map(|(slot, plan)| Op::SetPlan { slot, plan }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_handle_comes_out_exactly_once(ops in proptest::collection::vec(op(), 1..400), capacity in 1..u64::MAX, cores in 1..3usize) {
        let exchange = Arc::new(UplinkExchange::new(UplinkConfig::new(capacity, cores)));
        let config = Config { pool_packets: 64, member_limit_packets: 16, flows_per_member: 4, ..Config::default() };
        let mut shaper: Shaper<u32> = Shaper::new(config, exchange, cores - 1, 0).unwrap();
        let mut now = 0u64;
        let mut next = 0u32;
        let mut state: Vec<u8> = Vec::new(); // 0 inside, 1 out
        let mut out = Vec::new();
        let settle = |out: &mut Vec<Departure<u32>>, state: &mut Vec<u8>| {
            for d in out.drain(..) {
                let h = match d { Departure::Release { handle, .. } | Departure::Dropped { handle, .. } => handle };
                assert_eq!(state[h as usize], 0, "handle {} out twice", h);
                state[h as usize] = 1;
            }
        };
        for op in ops {
            match op {
                Op::Enqueue { dt, slot, len, flow, ect } => {
                    now += dt;
                    let handle = next;
                    next += 1;
                    state.push(0);
                    match shaper.enqueue(now, slot, Packet { handle, len, flow_hash: flow, ect }) {
                        Verdict::Pass(h) | Verdict::Dropped(h, _) => { assert_eq!(h, handle); state[h as usize] = 1; }
                        Verdict::Queued => {}
                    }
                }
                Op::Poll { dt, budget } => {
                    now += dt;
                    shaper.poll(now, budget, &mut out);
                    settle(&mut out, &mut state);
                }
                Op::SetPlan { slot, plan } => {
                    let plan = plan.map(|(rate_bps, ceil_bps, burst_bytes, weight)| Plan { rate_bps, ceil_bps, burst_bytes, weight });
                    shaper.set_member(now, slot, plan, &mut out).unwrap();
                    settle(&mut out, &mut state);
                }
            }
        }
        // Remove every member: whatever is still queued comes out now.
        for slot in 0..6 {
            shaper.set_member(now, slot, None, &mut out).unwrap();
        }
        settle(&mut out, &mut state);
        prop_assert!(state.iter().all(|&s| s == 1), "lost handles: {:?}", state.iter().enumerate().filter(|(_, &s)| s == 0).map(|(i, _)| i).collect::<Vec<_>>());
        prop_assert_eq!(shaper.stats().backlog_packets, 0);
        prop_assert_eq!(shaper.stats().backlogged_members, 0);
    }
}
