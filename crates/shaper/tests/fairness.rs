//! Weighted max-min fairness among members with different demands, plans
//! and weights, on one core and split over two cores sharing an exchange.
mod common;

use common::*;
use shaper::{Config, UplinkConfig};

/// (demand, rate, ceil, weight) in bit/s; the expected max-min split of 100 Mbit/s is
/// 10 (light), 18.3 (w1), 36.7 (w2), 15 (ceiling), 20 (guaranteed rate above the level).
const MEMBERS: [(u64, u64, u64, u32); 5] = [
    (10 * MBIT, 2 * MBIT, 100 * MBIT, 1),
    (80 * MBIT, 2 * MBIT, 100 * MBIT, 1),
    (80 * MBIT, 2 * MBIT, 100 * MBIT, 2),
    (80 * MBIT, 2 * MBIT, 15 * MBIT, 4),
    (80 * MBIT, 20 * MBIT, 100 * MBIT, 1),
];
const CAPACITY: u64 = 100 * MBIT;

fn run(cores: usize, core_of: impl Fn(usize) -> usize) -> f64 {
    let mut sim = Sim::new(UplinkConfig::new(CAPACITY, cores), Config::default());
    for (i, &(demand, rate, ceil, weight)) in MEMBERS.iter().enumerate() {
        let core = core_of(i);
        sim.member(core, i as u32, plan(rate, ceil, weight));
        // Two flows per member, each half the demand.
        for flow in 0..2u32 {
            sim.add(Source::new(core, i as u32, flow << 31, 1_500, Pace::Open { rate_bps: demand / 2 }));
        }
    }
    sim.run(2 * SEC);
    let reference = max_min(CAPACITY as f64, &MEMBERS.map(|(d, r, c, w)| (d as f64, r as f64, c as f64, f64::from(w))));
    let mut normalised = Vec::new();
    for (i, fair) in reference.iter().enumerate() {
        let got = sim.released_bytes(core_of(i), i as u32, SEC, 2 * SEC) as f64 * 8.0;
        println!("member {i} on core {}: got {:>6.2} Mbit/s, fair {:>6.2}", core_of(i), got / 1e6, fair / 1e6);
        normalised.push(got / fair);
    }
    let total: u64 = (0..MEMBERS.len()).map(|i| sim.released_bytes(core_of(i), i as u32, SEC, 2 * SEC)).sum();
    println!("total {:.2} Mbit/s", total as f64 * 8.0 / 1e6);
    for (k, s) in sim.shapers.iter().enumerate() {
        let st = s.stats();
        println!("core {k}: share {} fair level {} light {}", st.share_bps, st.fair_level, st.light_bps);
    }
    let index = jain(&normalised);
    println!("Jain's index over normalised shares ({cores} core(s)): {index:.5}");
    assert!(total as f64 * 8.0 > 0.97 * CAPACITY as f64, "uplink underused: {total}");
    index
}

#[test]
fn max_min_fair_on_one_core() {
    let index = run(1, |_| 0);
    assert!(index >= 0.99, "{index}");
}

#[test]
fn max_min_fair_across_two_cores() {
    // Light, w1 and ceiling-capped on core 0; w2 and guaranteed on core 1.
    let index = run(2, |i| if matches!(i, 0 | 1 | 3) { 0 } else { 1 });
    assert!(index >= 0.99, "{index}");
}

#[test]
fn max_min_fair_with_a_core_of_heavy_members_against_one_heavy_member() {
    // One heavy member alone on core 0 against three on core 1: a split by
    // core demand alone would give core 0 half; max-min gives it a quarter.
    let mut sim = Sim::new(UplinkConfig::new(CAPACITY, 2), Config::default());
    for i in 0..4u32 {
        let core = usize::from(i > 0);
        sim.member(core, i, plan(MBIT, CAPACITY, 1));
        sim.add(Source::new(core, i, 0, 1_500, Pace::Open { rate_bps: 60 * MBIT }));
    }
    sim.run(2 * SEC);
    let shares: Vec<f64> =
        (0..4u32).map(|i| sim.released_bytes(usize::from(i > 0), i, SEC, 2 * SEC) as f64 * 8.0 / 25e6).collect();
    let index = jain(&shares);
    println!("1 vs 3 heavy members: normalised {shares:?}, Jain {index:.5}");
    assert!(index >= 0.99, "{index}");
}
