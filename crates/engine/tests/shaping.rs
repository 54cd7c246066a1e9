//! Shaping through the engine, in virtual time: a test account is held to
//! its plan, its frames come back out through `poll_released` translated and
//! in order, a plan change applies to the running queue, and CoDel marks
//! ECN-capable traffic instead of dropping it.

use core::net::IpAddr;
use engine::{Config, Engine, Reason, ShapingConfig, Side, Time, Verdict};
use policy::sample;
use std::sync::Arc;
use wire::build::{self, Eth};
use wire::ethernet::MacAddr;

const IN: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 0x11]), vlan: None };
const TEST_BOX: &str = "10.0.9.1"; // member 102, plan "test": 2 Mbit/s up
const LAPTOP: &str = "10.0.1.1"; // member 101, plan "standard": 20 Mbit/s up, ceiling 100
const WEB: &str = "192.0.2.80";
const MS: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Run {
    e: Engine,
    now: u64,
    /// Bytes released towards the outside, per 1 ms tick.
    out: Vec<u64>,
    marked: usize,
    pending: u64,
}

impl Run {
    fn new(uplink_bps: u64) -> Run {
        let now = 1_000 * 1_000 * MS;
        let cfg = Config { shaping: Some(ShapingConfig::new([uplink_bps, uplink_bps], 1, 0, 0)), ..Config::default() };
        let mut e = Engine::new(cfg, Time(now));
        e.set_policy(Arc::new(policy::compile(&sample::example(), 1).unwrap()), &[]);
        Run { e, now, out: Vec::new(), marked: 0, pending: 0 }
    }

    /// One millisecond: `per_ms` frames of `len` bytes from `src`, then timers and releases.
    fn tick(&mut self, src: &str, per_ms: usize, len: usize, ecn: u8) {
        let mut frames: Vec<Vec<u8>> = (0..per_ms)
            .map(|i| {
                let mut b = vec![0u8; 2048];
                let n = build::udp(&mut b, &IN, ip(src), ip(WEB), 40000 + (i % 4) as u16, 443, len).unwrap();
                b.truncate(n);
                b[14 + 1] |= ecn;
                // The header checksum covers the TOS byte.
                let c = u16::from_be_bytes([b[24], b[25]]);
                let c = wire::checksum::update_u16(c, u16::from_be_bytes([0x45, 0]), u16::from_be_bytes([0x45, ecn]));
                b[24..26].copy_from_slice(&c.to_be_bytes());
                b
            })
            .collect();
        let mut v = vec![Verdict::Held; frames.len()];
        self.e.process(Time(self.now), Side::Inside, &mut frames, &mut v);
        let mut bytes: u64 = frames
            .iter()
            .zip(&v)
            .filter(|(_, v)| **v == Verdict::Forward(Side::Outside))
            .map(|(f, _)| f.len() as u64)
            .sum();
        // The worker polls its timers far more often than once a
        // millisecond (the uplink's division runs every 250 µs).
        let mut marked = 0;
        for _ in 0..10 {
            self.now += MS / 10;
            self.e.poll_timers(Time(self.now));
            self.e.poll_released(|to, f| {
                assert_eq!(to, Side::Outside);
                let m = wire::classify(f).unwrap();
                let public = m.key.src_v4().octets();
                assert_eq!(public[..3], [198, 51, 100], "translated before it was held");
                marked += usize::from(m.ecn == 3);
                bytes += f.len() as u64;
            });
        }
        self.marked += marked;
        self.out.push(bytes);
    }

    /// Frames from `src` without advancing time (several members per millisecond).
    fn tick_no_poll(&mut self, src: &str, per_ms: usize, len: usize) {
        let mut frames: Vec<Vec<u8>> = (0..per_ms)
            .map(|i| {
                let mut b = vec![0u8; 2048];
                let n = build::udp(&mut b, &IN, ip(src), ip(WEB), 40000 + (i % 4) as u16, 443, len).unwrap();
                b.truncate(n);
                b
            })
            .collect();
        let mut v = vec![Verdict::Held; frames.len()];
        self.e.process(Time(self.now), Side::Inside, &mut frames, &mut v);
        self.pending += frames
            .iter()
            .zip(&v)
            .filter(|(_, v)| **v == Verdict::Forward(Side::Outside))
            .map(|(f, _)| f.len() as u64)
            .sum::<u64>();
    }

    /// One millisecond of timers and releases after `tick_no_poll`s.
    fn poll_ms(&mut self) {
        let mut bytes = std::mem::take(&mut self.pending);
        for _ in 0..10 {
            self.now += MS / 10;
            self.e.poll_timers(Time(self.now));
            self.e.poll_released(|_, f| bytes += f.len() as u64);
        }
        self.out.push(bytes);
    }

    fn rate_bps(&self, last_ms: usize) -> f64 {
        let b: u64 = self.out[self.out.len() - last_ms..].iter().sum();
        b as f64 * 8.0 / (last_ms as f64 / 1000.0)
    }
}

#[test]
fn a_test_account_is_held_to_its_plan() {
    let mut r = Run::new(1_000_000_000);
    // 1000-byte frames, 2 per ms: 16 Mbit/s offered against a 2 Mbit/s plan.
    for _ in 0..3000 {
        r.tick(TEST_BOX, 2, 958, 0);
    }
    let rate = r.rate_bps(1000);
    let err = (rate - 2e6).abs() / 2e6;
    println!("test account: {:.3} Mbit/s over the last second ({:.2} % off)", rate / 1e6, err * 100.0);
    assert!(err < 0.02, "{rate}");
    let c = r.e.counters();
    assert!(c.shaper_queued > 0 && c.shaper_released > 0);
    let dropped: u64 = [Reason::ShaperCodelDrop, Reason::ShaperSojournLimit, Reason::ShaperQueueFull]
        .iter()
        .map(|&x| c.dropped(x))
        .sum();
    assert!(dropped > 0, "the excess is dropped, by named reasons");
    assert_eq!(c.shaper_dropped, dropped);
    // Accounting counts what the firewall let through, before the shaper.
    let a = r.e.accounts().get(102).unwrap();
    assert_eq!(a.packets[0], 6000);
    let held = r.e.shaper_held() as u64;
    assert_eq!(
        c.shaper_queued,
        c.shaper_released + held + c.dropped(Reason::ShaperCodelDrop) + c.dropped(Reason::ShaperSojournLimit),
        "every queued frame is released, dropped or still held"
    );
    let s = r.e.member_shaping(102).unwrap()[0].unwrap();
    // At 2 Mbit/s one 1000-byte frame takes 4 ms on the wire: the shaper
    // keeps at least 4 frames' time before it calls a packet a flood.
    assert!(s.last_sojourn_ns <= 4 * 4 * MS + 2 * 4 * MS, "{s:?}");
    // The walk the worker's stats take finds the member, as the lookup by id does.
    let shaped: Vec<_> = r.e.shaped_members().collect();
    assert_eq!(shaped, vec![(102, r.e.member_shaping(102).unwrap())]);
}

#[test]
fn a_member_under_its_rate_is_not_delayed() {
    let mut r = Run::new(1_000_000_000);
    // 1 Mbit/s from a member with a 20 Mbit/s plan: everything passes at once.
    for _ in 0..500 {
        r.tick(LAPTOP, 1, 83, 0);
    }
    let c = r.e.counters();
    // (The core's share bucket starts empty: the very first frame may wait a tick.)
    assert!(c.shaper_passed >= 499, "{}", c.shaper_passed);
    assert_eq!(c.shaper_passed + c.shaper_queued, 500);
    assert_eq!(c.shaper_dropped, 0);
}

#[test]
fn ecn_capable_traffic_is_marked_not_dropped() {
    let mut r = Run::new(1_000_000_000);
    for _ in 0..3000 {
        r.tick(TEST_BOX, 1, 958, 2); // ECT(0), 8 Mbit/s against 2
    }
    let c = r.e.counters();
    println!("marked {} released {} dropped {}", c.shaper_ecn_marked, c.shaper_released, c.shaper_dropped);
    assert!(r.marked > 0);
    assert_eq!(r.marked as u64, c.shaper_ecn_marked);
}

#[test]
fn a_plan_change_applies_to_the_running_queue() {
    let mut r = Run::new(1_000_000_000);
    for _ in 0..1500 {
        r.tick(TEST_BOX, 2, 958, 0);
    }
    let mut db = sample::example();
    for p in &mut db.plans {
        if p.id == 2 {
            p.rates.up_rate_kbit = 6000;
            p.rates.up_ceil_kbit = 6000;
        }
    }
    r.e.set_policy(Arc::new(policy::compile(&db, 2).unwrap()), &[]);
    for _ in 0..2000 {
        r.tick(TEST_BOX, 2, 958, 0);
    }
    let rate = r.rate_bps(1000);
    println!("after the change: {:.3} Mbit/s", rate / 1e6);
    assert!((rate - 6e6).abs() / 6e6 < 0.02, "{rate}");
}

#[test]
fn downloads_are_shaped_too() {
    let mut r = Run::new(1_000_000_000);
    // Open the flow from the inside, then answer it at 16 Mbit/s against a 4 Mbit/s plan.
    r.tick(TEST_BOX, 1, 100, 0);
    let mut released = 0u64;
    let mut last_second = 0u64;
    for ms in 0..3000u64 {
        let mut frames: Vec<Vec<u8>> = (0..2)
            .map(|_| {
                let mut b = vec![0u8; 2048];
                let n = build::udp(&mut b, &IN, ip(WEB), ip("198.51.100.30"), 443, 40000, 958).unwrap();
                b.truncate(n);
                b
            })
            .collect();
        let mut v = vec![Verdict::Held; 2];
        r.e.process(Time(r.now), Side::Outside, &mut frames, &mut v);
        let mut bytes: u64 = frames
            .iter()
            .zip(&v)
            .filter(|(_, v)| **v == Verdict::Forward(Side::Inside))
            .map(|(f, _)| f.len() as u64)
            .sum();
        for _ in 0..10 {
            r.now += MS / 10;
            r.e.poll_timers(Time(r.now));
            r.e.poll_released(|to, f| {
                assert_eq!(to, Side::Inside);
                bytes += f.len() as u64;
            });
        }
        released += bytes;
        if ms >= 2000 {
            last_second += bytes;
        }
    }
    let rate = last_second as f64 * 8.0;
    println!("download: {:.3} Mbit/s ({released} bytes in all)", rate / 1e6);
    assert!((rate - 4e6).abs() / 4e6 < 0.02, "{rate}");
}

#[test]
fn the_uplink_capacity_holds_when_members_together_exceed_it() {
    // 10 Mbit/s uplink; the laptop's member (20 Mbit/s plan, ceiling 100) sends 16 Mbit/s.
    let mut r = Run::new(10_000_000);
    for _ in 0..3000 {
        r.tick(LAPTOP, 2, 958, 0);
    }
    let rate = r.rate_bps(1000);
    println!("uplink-limited: {:.3} Mbit/s", rate / 1e6);
    assert!((10e6 * 0.95..=10e6 * 1.02).contains(&rate), "{rate}");
}

#[test]
fn many_light_members_together_are_held_to_the_uplink() {
    // Three members at 4 Mbit/s each, each far under its plan (20 Mbit/s),
    // together 12 Mbit/s on a 10 Mbit/s uplink.
    let mut r = Run::new(10_000_000);
    for _ in 0..3000 {
        for src in [LAPTOP, "10.0.3.1", "10.0.3.9"] {
            r.tick_no_poll(src, 1, 458);
        }
        r.poll_ms();
    }
    let rate = r.rate_bps(1000);
    println!("three light members on a 10 Mbit/s uplink: {:.3} Mbit/s", rate / 1e6);
    assert!(rate <= 10e6 * 1.02, "{rate}");
}
