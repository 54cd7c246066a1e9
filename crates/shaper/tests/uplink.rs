//! The cross-core overshoot bound, checked on every window of a run.
mod common;

use common::*;
use shaper::{Config, UplinkConfig};

/// The largest `bytes(t1..=t2) − C·(t2 − t1)` over all windows, from a time-sorted departure list.
fn max_excess(departures: &[(u64, u64)], capacity_bps: u64) -> f64 {
    // D(t) = bytes released up to and including t − C·t; the excess of a window
    // [t1, t2] is D(t2) − D(t1⁻), maximised with a running minimum.
    let rate = capacity_bps as f64 / 8.0 / 1e9; // bytes per ns
    let mut cumulative = 0.0;
    let mut min_before = 0.0f64; // D just before the first departure (t = 0)
    let mut worst = 0.0f64;
    let mut i = 0;
    while i < departures.len() {
        let t = departures[i].0;
        let before = cumulative - rate * t as f64;
        min_before = min_before.min(before);
        while i < departures.len() && departures[i].0 == t {
            cumulative += departures[i].1 as f64;
            i += 1;
        }
        worst = worst.max(cumulative - rate * t as f64 - min_before);
    }
    worst
}

#[test]
fn two_cores_never_exceed_capacity_by_more_than_the_bound() {
    let capacity = 200 * MBIT;
    let uplink = UplinkConfig::new(capacity, 2);
    let mut sim = Sim::new(uplink, Config::default());
    // Heavy, bursty and on-off members on both cores, ceilings above the capacity.
    for core in 0..2 {
        for i in 0..6u32 {
            sim.member(
                core,
                i,
                shaper::Plan { rate_bps: MBIT, ceil_bps: 400 * MBIT, burst_bytes: 64_000, weight: 1 + i % 3 },
            );
            let rate = if i % 2 == 0 { 90 * MBIT } else { 15 * MBIT };
            sim.add(Source::new(core, i, i << 28, 1_500 - 100 * i, Pace::Open { rate_bps: rate }));
        }
    }
    // Core 1's members pause half-way and come back: shares move between cores.
    sim.run(600 * MS);
    let kept: Vec<Source> = sim.sources.iter().filter(|s| s.core == 0).cloned().collect();
    let paused: Vec<Source> = std::mem::replace(&mut sim.sources, kept);
    sim.run(900 * MS);
    let resumed: Vec<Source> = paused.into_iter().filter(|s| s.core == 1).collect();
    sim.sources.extend(resumed);
    sim.run(1_500 * MS);

    let mut departures: Vec<(u64, u64)> =
        sim.fates.iter().filter(|f| f.released).filter_map(|f| f.out_ns.map(|t| (t, u64::from(f.len)))).collect();
    departures.sort_unstable();
    let worst = max_excess(&departures, capacity);
    let bound = sim.exchange.overshoot_bound_bytes();
    let total: u64 = departures.iter().map(|d| d.1).sum();
    println!(
        "sent {:.1} Mbit/s on average; worst excess over any window {worst:.0} bytes; bound {bound} bytes",
        total as f64 * 8.0 / 1.5 / 1e6
    );
    assert!(worst <= bound as f64, "excess {worst} above the bound {bound}");
    // And the uplink was used (shaping is not trivially idle).
    assert!(total as f64 * 8.0 / 1.5 > 0.9 * capacity as f64);
    for s in &sim.shapers {
        assert_eq!(s.stats().late_epochs, 0);
    }
}
