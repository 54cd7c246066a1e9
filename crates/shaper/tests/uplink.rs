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

/// The share of the uplink one core releases when its caller takes arrivals
/// and polls only every `gap_ns` (a napping worker), with a re-division
/// period of `period_ns`; and the worst excess over the capacity in any
/// window, with its bound.
fn polled_every(gap_ns: u64, period_ns: u64) -> (f64, f64, u64) {
    let capacity = 200 * MBIT;
    let uplink = UplinkConfig { period_ns, ..UplinkConfig::new(capacity, 1) };
    let mut sim = Sim::new(uplink, Config::default());
    sim.step_ns = gap_ns;
    sim.arrivals_at_step = true;
    for i in 0..8u32 {
        let plan = shaper::Plan { rate_bps: MBIT, ceil_bps: 100 * MBIT, burst_bytes: 64_000, weight: 1 };
        sim.member(0, i, plan);
        sim.add(Source::new(0, i, i << 28, 1_500, Pace::Open { rate_bps: 60 * MBIT }));
    }
    sim.run(1_000 * MS);
    let mut departures: Vec<(u64, u64)> =
        sim.fates.iter().filter(|f| f.released).filter_map(|f| f.out_ns.map(|t| (t, u64::from(f.len)))).collect();
    departures.sort_unstable();
    let sent: u64 = departures.iter().filter(|d| d.0 > 200 * MS).map(|d| d.1).sum();
    let utilisation = sent as f64 * 8.0 / (capacity as f64 * 0.8);
    (utilisation, max_excess(&departures, capacity), sim.exchange.overshoot_bound_bytes())
}

/// A shaper polled less often than its period skips epochs (held to the
/// idle floor for them) and its core bucket, one period deep, overflows
/// between polls; with a period of twice the gap (what
/// `engine::ShapingConfig` sets for a sleeping worker) it keeps the uplink
/// full, within the bound.
#[test]
fn a_core_polled_every_300_us_keeps_the_uplink_with_a_period_of_twice_that() {
    let gap = 300 * US;
    let (lost, _, _) = polled_every(gap, 250 * US);
    let (kept, worst, bound) = polled_every(gap, 2 * gap);
    println!(
        "polled every 300 us: {:.1} % of the uplink with a 250 us period, {:.1} % with 600 us; excess {worst:.0} of {bound} bytes",
        lost * 100.0,
        kept * 100.0
    );
    assert!(lost < 0.9, "epochs missed, the floor for them: {lost}");
    assert!(kept > 0.98, "the uplink stays full: {kept}");
    assert!(worst <= bound as f64, "excess {worst} above the bound {bound}");
}
