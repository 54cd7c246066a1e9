//! Members' round-trip times, timed from the TCP handshakes the engine
//! forwards (engine::rtt), on the example member database of
//! docs/members.md, with a virtual clock: the samples are exactly the times
//! between the frames fed.

use core::net::IpAddr;
use core::time::Duration;
use engine::members::{INSIDE, OUTSIDE};
use engine::rtt::Rtt;
use engine::{Config, Engine, Side, Time, Verdict};
use policy::sample;
use std::sync::Arc;
use wire::build::{self, Eth};
use wire::classify::classify;
use wire::ethernet::MacAddr;
use wire::tcp::TcpFlags;

const IN: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 0x11]), vlan: None };
const OUT: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 2]), dst: MacAddr([2, 0, 0, 0, 0, 0x12]), vlan: None };

const LAPTOP: &str = "10.0.1.1"; // member 101
const NAS: &str = "10.0.1.2"; // member 101, behind the forward 198.51.100.10:8080 -> :80
const PUBLIC_101: &str = "198.51.100.10";
const WEB: &str = "192.0.2.80";
const PEER: &str = "192.0.2.7";
const DEVICE_V6: &str = "2001:db8:0:101::10"; // member 101, open on TCP 443
const FAR_V6: &str = "2001:db8:aaaa::1";

const S: TcpFlags = TcpFlags::SYN;
const A: TcpFlags = TcpFlags::ACK;
const F: TcpFlags = TcpFlags::FIN;
const R: TcpFlags = TcpFlags::RST;
const FWD_OUT: Verdict = Verdict::Forward(Side::Outside);
const FWD_IN: Verdict = Verdict::Forward(Side::Inside);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One sample of `ms` milliseconds.
fn once(ms: u32) -> Rtt {
    Rtt { srtt_ns: ms * 1_000_000, min_ns: ms * 1_000_000, samples: 1 }
}

const UNMEASURED: Rtt = Rtt { srtt_ns: 0, min_ns: 0, samples: 0 };

/// The gateway of the example database with a virtual clock, fed one frame
/// at a time.
struct Gw {
    e: Engine,
    now: Time,
}

impl Gw {
    fn new() -> Gw {
        let now = Time::from_secs(1000);
        let mut e = Engine::new(Config::default(), now);
        e.set_policy(Arc::new(policy::compile(&sample::example(), 1).unwrap()), &[]);
        Gw { e, now }
    }

    fn after(&mut self, d: Duration) -> &mut Gw {
        self.now = self.now + d;
        self
    }

    /// A TCP segment `s:sp -> d:dp` from side `from`; its verdict and the
    /// frame as it left.
    #[allow(clippy::too_many_arguments)]
    fn tcp(&mut self, from: Side, s: &str, d: &str, sp: u16, dp: u16, flags: TcpFlags, seq: u32, ack: u32) -> Verdict {
        self.tcp_len(from, s, d, sp, dp, flags, seq, ack, 0).0
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_len(
        &mut self,
        from: Side,
        s: &str,
        d: &str,
        sp: u16,
        dp: u16,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        len: usize,
    ) -> (Verdict, Vec<u8>) {
        let eth = if from == Side::Inside { IN } else { OUT };
        let mut b = vec![0u8; 2048];
        let n = build::tcp(&mut b, &eth, ip(s), ip(d), sp, dp, seq, ack, flags, 502, len).unwrap();
        b.truncate(n);
        let mut f = [b];
        let mut v = [Verdict::Held];
        self.e.process(self.now, from, &mut f, &mut v);
        self.e.poll_timers(self.now);
        let [f] = f;
        (v[0], f)
    }

    /// Member `id`'s round-trip time on `side`.
    fn rtt(&self, id: u32, side: usize) -> Rtt {
        self.e.accounts().get(id).expect("member counted").rtt(side)
    }

    /// The laptop opens a connection to WEB from port `sp` (ISNs 1000 and
    /// 5000): SYN now, SYN-ACK `outside` later, ACK `inside` after that.
    fn laptop_handshake(&mut self, sp: u16, outside: Duration, inside: Duration) {
        assert_eq!(self.tcp(Side::Inside, LAPTOP, WEB, sp, 443, S, 1000, 0), FWD_OUT);
        assert_eq!(self.after(outside).tcp(Side::Outside, WEB, PUBLIC_101, 443, sp, S | A, 5000, 1001), FWD_IN);
        assert_eq!(self.after(inside).tcp(Side::Inside, LAPTOP, WEB, sp, 443, A, 1001, 5001), FWD_OUT);
    }
}

#[test]
fn a_members_connection_times_the_device_inside_and_the_server_outside() {
    let mut g = Gw::new();
    g.laptop_handshake(40_000, ms(30), ms(5));
    assert_eq!(g.rtt(101, INSIDE), once(5), "SYN-ACK to ACK: the laptop's round trip");
    assert_eq!(g.rtt(101, OUTSIDE), once(30), "SYN to SYN-ACK: the server's round trip");
    let c = g.e.counters();
    assert_eq!((c.slow_path, c.fast_path, c.total_drops()), (1, 2, 0));
}

#[test]
fn a_port_forward_times_the_other_way_round() {
    let mut g = Gw::new();
    // Opened from the outside: the NAS answers, the peer acknowledges.
    assert_eq!(g.tcp(Side::Outside, PEER, PUBLIC_101, 5555, 8080, S, 1000, 0), FWD_IN);
    assert_eq!(g.after(ms(2)).tcp(Side::Inside, NAS, PEER, 80, 5555, S | A, 5000, 1001), FWD_OUT);
    assert_eq!(g.after(ms(40)).tcp(Side::Outside, PEER, PUBLIC_101, 5555, 8080, A, 1001, 5001), FWD_IN);
    assert_eq!(g.rtt(101, INSIDE), once(2), "SYN to SYN-ACK: the NAS's round trip");
    assert_eq!(g.rtt(101, OUTSIDE), once(40), "SYN-ACK to ACK: the peer's round trip");
    assert_eq!(g.e.counters().total_drops(), 0);
}

#[test]
fn a_retransmitted_syn_gives_no_sample_of_the_responder() {
    let mut g = Gw::new();
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1000, 0), FWD_OUT);
    // Resent after the initial RTO: the SYN-ACK may answer either copy.
    assert_eq!(g.after(ms(1000)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1000, 0), FWD_OUT);
    assert_eq!(g.after(ms(30)).tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 5000, 1001), FWD_IN);
    assert_eq!(g.after(ms(5)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 1001, 5001), FWD_OUT);
    assert_eq!(g.rtt(101, OUTSIDE), UNMEASURED, "Karn's rule: no sample from a resent SYN");
    assert_eq!(g.rtt(101, INSIDE), once(5), "the SYN-ACK was sent once");
    let c = g.e.counters();
    assert_eq!((c.slow_path, c.fast_path, c.total_drops()), (1, 3, 0));
}

#[test]
fn a_retransmitted_syn_ack_gives_no_sample_of_the_opener() {
    let mut g = Gw::new();
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1000, 0), FWD_OUT);
    assert_eq!(g.after(ms(30)).tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 5000, 1001), FWD_IN);
    assert_eq!(g.after(ms(1000)).tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 5000, 1001), FWD_IN);
    assert_eq!(g.after(ms(5)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 1001, 5001), FWD_OUT);
    assert_eq!(g.rtt(101, OUTSIDE), once(30));
    assert_eq!(g.rtt(101, INSIDE), UNMEASURED, "Karn's rule: the ACK may answer either SYN-ACK");

    // The opener's SYN resent after the answer passed (the answer was lost
    // on its way to the device): its ACK may answer a later SYN-ACK.
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_001, 443, S, 1000, 0), FWD_OUT);
    assert_eq!(g.after(ms(20)).tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_001, S | A, 5000, 1001), FWD_IN);
    assert_eq!(g.after(ms(1000)).tcp(Side::Inside, LAPTOP, WEB, 40_001, 443, S, 1000, 0), FWD_OUT);
    assert_eq!(g.after(ms(5)).tcp(Side::Inside, LAPTOP, WEB, 40_001, 443, A, 1001, 5001), FWD_OUT);
    let mut want = once(30);
    want.add(20_000_000);
    assert_eq!(g.rtt(101, OUTSIDE), want);
    assert_eq!(g.rtt(101, INSIDE), UNMEASURED);
    assert_eq!(g.e.counters().total_drops(), 0);
}

#[test]
fn packets_after_the_handshake_change_nothing() {
    let mut g = Gw::new();
    g.laptop_handshake(40_000, ms(30), ms(5));
    let (inside, outside) = (g.rtt(101, INSIDE), g.rtt(101, OUTSIDE));
    // Data both ways, a duplicate ACK, a close, all at other intervals.
    g.after(ms(100)).tcp_len(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 1001, 5001, 100);
    g.after(ms(7)).tcp_len(Side::Outside, WEB, PUBLIC_101, 443, 40_000, A, 5001, 1101, 1000);
    g.after(ms(300)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 1101, 6001);
    g.after(ms(300)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 1101, 6001);
    g.after(ms(11)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, F | A, 1101, 6001);
    g.after(ms(13)).tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, F | A, 6001, 1102);
    g.after(ms(17)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 1102, 6002);
    // A connection picked up mid-stream has no handshake to time.
    g.after(ms(50)).tcp_len(Side::Inside, LAPTOP, WEB, 40_001, 443, A, 77_000, 99_000, 10);
    g.after(ms(9)).tcp_len(Side::Outside, WEB, PUBLIC_101, 443, 40_001, A, 99_000, 77_010, 10);
    // Nor has UDP.
    let mut b = vec![0u8; 256];
    let n = build::udp(&mut b, &IN, ip(LAPTOP), ip(WEB), 5353, 53, 20).unwrap();
    let mut f = [b[..n].to_vec()];
    let mut v = [Verdict::Held];
    g.e.process(g.now, Side::Inside, &mut f, &mut v);
    assert_eq!(v[0], FWD_OUT);
    let k = classify(&f[0]).unwrap().key;
    let n = build::udp(&mut b, &OUT, ip(WEB), k.src_ip(), 53, k.src_port, 20).unwrap();
    let mut f = [b[..n].to_vec()];
    g.after(ms(3));
    g.e.process(g.now, Side::Outside, &mut f, &mut v);
    assert_eq!(v[0], FWD_IN);

    assert_eq!(g.rtt(101, INSIDE), inside);
    assert_eq!(g.rtt(101, OUTSIDE), outside);
    let c = g.e.counters();
    assert_eq!((c.fast_path, c.flows_picked_up, c.total_drops()), (11, 1, 0));
}

#[test]
fn samples_smooth_as_srtt_and_keep_the_least() {
    let mut g = Gw::new();
    g.laptop_handshake(40_000, ms(32), ms(8));
    g.laptop_handshake(40_001, ms(16), ms(24));
    g.laptop_handshake(40_002, ms(48), ms(8));
    // RFC 6298: SRTT <- SRTT + (R - SRTT) / 8, the first R taken as is.
    let srtt = |a: i64, b: i64, c: i64| {
        let step = |s: i64, r: i64| s + (r * 1_000_000 - s) / 8;
        step(step(a * 1_000_000, b), c) as u32
    };
    assert_eq!(g.rtt(101, OUTSIDE), Rtt { srtt_ns: srtt(32, 16, 48), min_ns: 16_000_000, samples: 3 });
    assert_eq!(g.rtt(101, INSIDE), Rtt { srtt_ns: srtt(8, 24, 8), min_ns: 8_000_000, samples: 3 });
}

#[test]
fn a_connection_reopened_on_its_four_tuple_is_timed_afresh() {
    let mut g = Gw::new();
    g.laptop_handshake(40_000, ms(30), ms(5));
    // The server resets it; the laptop opens the same 4-tuple again
    // before the closed connection is forgotten.
    assert_eq!(g.after(ms(10)).tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, R, 5001, 0), FWD_IN);
    assert_eq!(g.after(ms(5_000)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 900_000, 0), FWD_OUT);
    assert_eq!(g.after(ms(70)).tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 7000, 900_001), FWD_IN);
    assert_eq!(g.after(ms(3)).tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 900_001, 7001), FWD_OUT);
    let (mut inside, mut outside) = (once(5), once(30));
    inside.add(3_000_000);
    outside.add(70_000_000);
    assert_eq!((g.rtt(101, INSIDE), g.rtt(101, OUTSIDE)), (inside, outside));
    let c = g.e.counters();
    assert_eq!((c.flows_created, c.total_drops()), (1, 0));
}

#[test]
fn an_absurd_sample_is_dropped() {
    let mut g = Gw::new();
    // An answer 5 s after the SYN, which the box saw once: the server's
    // first SYN-ACK was lost before it, or the server is broken.
    g.laptop_handshake(40_000, ms(5_000), ms(5));
    assert_eq!(g.rtt(101, OUTSIDE), UNMEASURED);
    assert_eq!(g.rtt(101, INSIDE), once(5));
}

#[test]
fn a_hairpinned_connection_times_only_its_openers_device() {
    let mut g = Gw::new();
    // Member 104 reaches member 101's forwarded server by its public address.
    let (v, f) = g.tcp_len(Side::Inside, "10.0.3.1", PUBLIC_101, 6000, 8080, S, 1000, 0, 0);
    assert_eq!(v, FWD_IN);
    let port = classify(&f).unwrap().key.src_port;
    assert_eq!(g.after(ms(2)).tcp(Side::Inside, NAS, "198.51.100.20", 80, port, S | A, 5000, 1001), FWD_IN);
    assert_eq!(g.after(ms(9)).tcp(Side::Inside, "10.0.3.1", PUBLIC_101, 6000, 8080, A, 1001, 5001), FWD_IN);
    assert_eq!(g.rtt(104, INSIDE), once(9), "the opener's device");
    assert_eq!(g.rtt(104, OUTSIDE), UNMEASURED, "the responder is another member's device, not the internet");
    assert!(g.e.accounts().get(101).is_none(), "the NAS's member is not charged for it");
}

#[test]
fn ipv6_connections_are_timed_both_ways() {
    let mut g = Gw::new();
    // The device opens one...
    assert_eq!(g.tcp(Side::Inside, DEVICE_V6, FAR_V6, 40_000, 443, S, 1000, 0), FWD_OUT);
    assert_eq!(g.after(ms(25)).tcp(Side::Outside, FAR_V6, DEVICE_V6, 443, 40_000, S | A, 5000, 1001), FWD_IN);
    assert_eq!(g.after(ms(4)).tcp(Side::Inside, DEVICE_V6, FAR_V6, 40_000, 443, A, 1001, 5001), FWD_OUT);
    assert_eq!((g.rtt(101, INSIDE), g.rtt(101, OUTSIDE)), (once(4), once(25)));
    // ...and is reached through its opening.
    assert_eq!(g.tcp(Side::Outside, FAR_V6, DEVICE_V6, 7000, 443, S, 1000, 0), FWD_IN);
    assert_eq!(g.after(ms(12)).tcp(Side::Inside, DEVICE_V6, FAR_V6, 443, 7000, S | A, 5000, 1001), FWD_OUT);
    assert_eq!(g.after(ms(33)).tcp(Side::Outside, FAR_V6, DEVICE_V6, 7000, 443, A, 1001, 5001), FWD_IN);
    let (mut inside, mut outside) = (once(4), once(25));
    inside.add(12_000_000);
    outside.add(33_000_000);
    assert_eq!((g.rtt(101, INSIDE), g.rtt(101, OUTSIDE)), (inside, outside));
    assert_eq!(g.e.counters().total_drops(), 0);
}

#[test]
fn flows_of_no_member_are_not_timed() {
    // Without a member policy, flows belong to nobody: nothing to charge.
    let mut e = Engine::new(Config::default(), Time::from_secs(1));
    let mut b = vec![0u8; 256];
    let (c, s) = (ip("10.0.0.9"), ip(WEB));
    let mut step = |e: &mut Engine, at: u64, from: Side, eth: &Eth, src, dst, sp, dp, flags, seq, ack| {
        let n = build::tcp(&mut b, eth, src, dst, sp, dp, seq, ack, flags, 502, 0).unwrap();
        let mut f = [b[..n].to_vec()];
        let mut v = [Verdict::Held];
        e.process(Time::from_millis(at), from, &mut f, &mut v);
        v[0]
    };
    assert_eq!(step(&mut e, 1000, Side::Inside, &IN, c, s, 1, 443, S, 1, 0), FWD_OUT);
    assert_eq!(step(&mut e, 1010, Side::Outside, &OUT, s, c, 443, 1, S | A, 9, 2), FWD_IN);
    assert_eq!(step(&mut e, 1020, Side::Inside, &IN, c, s, 1, 443, A, 2, 10), FWD_OUT);
    assert!(e.accounts().is_empty());
    assert_eq!(e.counters().fast_path, 2);
}
