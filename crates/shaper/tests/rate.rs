//! Rate accuracy and borrowing, in virtual time.
mod common;

use common::*;
use shaper::{Config, UplinkConfig};

#[test]
fn a_single_member_converges_to_its_rate_within_2_percent() {
    let mut sim = Sim::new(UplinkConfig::new(1_000 * MBIT, 1), Config::default());
    sim.member(0, 7, plan(10 * MBIT, 10 * MBIT, 1));
    sim.add(Source::new(0, 7, 1, 1_500, Pace::Open { rate_bps: 20 * MBIT }));
    sim.add(Source::new(0, 7, 0x9000_0000, 1_500, Pace::Open { rate_bps: 20 * MBIT }));
    sim.run(2 * SEC);
    let got = sim.released_bytes(0, 7, SEC, 2 * SEC) as f64 * 8.0;
    let error = (got - 10e6).abs() / 10e6;
    println!("single member: {got:.0} bit/s over 1 s, error {:.3} %", error * 100.0);
    assert!(error < 0.02, "error {error}");
    let stats = sim.shapers[0].member_stats(7, sim.now).unwrap();
    println!("member stats: {stats:?}");
    assert!(stats.reasons.dropped() > 0);
    let rate_err = (stats.rate_bps as f64 - 10e6).abs() / 10e6;
    assert!(rate_err < 0.05, "measured rate {}", stats.rate_bps);
}

#[test]
fn a_member_borrows_up_to_its_ceiling_on_an_idle_uplink() {
    let mut sim = Sim::new(UplinkConfig::new(100 * MBIT, 1), Config::default());
    sim.member(0, 1, plan(5 * MBIT, 50 * MBIT, 1));
    sim.add(Source::new(0, 1, 1, 1_500, Pace::Open { rate_bps: 80 * MBIT }));
    sim.run(1_500 * MS);
    let got = sim.released_bytes(0, 1, 500 * MS, 1_500 * MS) as f64 * 8.0;
    println!("borrowing alone: {got:.0} bit/s (ceiling 50 Mbit/s)");
    assert!((got - 50e6).abs() / 50e6 < 0.02, "{got}");
}

#[test]
fn two_borrowers_split_the_uplink_and_a_light_one_is_untouched() {
    let mut sim = Sim::new(UplinkConfig::new(100 * MBIT, 1), Config::default());
    sim.member(0, 1, plan(10 * MBIT, 80 * MBIT, 1));
    sim.member(0, 2, plan(10 * MBIT, 80 * MBIT, 1));
    sim.member(0, 3, plan(10 * MBIT, 80 * MBIT, 1));
    sim.add(Source::new(0, 1, 1, 1_500, Pace::Open { rate_bps: 90 * MBIT }));
    sim.add(Source::new(0, 2, 1, 1_500, Pace::Open { rate_bps: 90 * MBIT }));
    let light = sim.add(Source::new(0, 3, 1, 200, Pace::Open { rate_bps: 2 * MBIT }));
    sim.run(1_500 * MS);
    let a = sim.released_bytes(0, 1, 500 * MS, 1_500 * MS) as f64 * 8.0;
    let b = sim.released_bytes(0, 2, 500 * MS, 1_500 * MS) as f64 * 8.0;
    let c = sim.released_bytes(0, 3, 500 * MS, 1_500 * MS) as f64 * 8.0;
    println!("split: {a:.0} {b:.0} light {c:.0}; core {:?}", sim.shapers[0].stats());
    assert!((c - 2e6).abs() / 2e6 < 0.02, "light member got {c}");
    assert!((a - 49e6).abs() / 49e6 < 0.03 && (b - 49e6).abs() / 49e6 < 0.03, "{a} {b}");
    assert!(a + b + c <= 100e6 * 1.001);
    let light_sojourn = sim.sojourns(light, 500 * MS, 1_500 * MS);
    assert!(percentile(&light_sojourn, 0.99) < MS, "light member queued: {:?}", percentile(&light_sojourn, 0.99));
}
