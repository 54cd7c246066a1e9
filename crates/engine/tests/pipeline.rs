//! The engine's pipeline driven packet by packet with a virtual clock.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::time::Duration;
use engine::{Config, DropReason, Engine, Reason, Side, Time, Verdict};
use wire::build::{self, Eth};
use wire::ethernet::MacAddr;
use wire::flow::proto;
use wire::tcp::TcpFlags;

const IN: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 0x11]), vlan: None };
const OUT: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 2]), dst: MacAddr([2, 0, 0, 0, 0, 0x12]), vlan: None };
const S: TcpFlags = TcpFlags::SYN;
const A: TcpFlags = TcpFlags::ACK;
const F: TcpFlags = TcpFlags::FIN;
const R: TcpFlags = TcpFlags::RST;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 80));

/// An engine with a virtual clock, fed one frame at a time.
struct Harness {
    e: Engine,
    now: Time,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Config::default())
    }

    fn with(cfg: Config) -> Harness {
        let now = Time::from_secs(1_000);
        Harness { e: Engine::new(cfg, now), now }
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.e.poll_timers(self.now);
    }

    fn send(&mut self, from: Side, mut frame: Vec<u8>) -> Verdict {
        let mut v = [Verdict::Held];
        self.e.process(self.now, from, std::slice::from_mut(&mut frame), &mut v);
        v[0]
    }

    fn tcp(&mut self, from_inside: bool, seq: u32, ack: u32, flags: TcpFlags, len: usize) -> Verdict {
        let f = if from_inside {
            frame(|b| build::tcp(b, &IN, CLIENT, SERVER, 40_000, 443, seq, ack, flags, 502, len))
        } else {
            frame(|b| build::tcp(b, &OUT, SERVER, CLIENT, 443, 40_000, seq, ack, flags, 502, len))
        };
        self.send(if from_inside { Side::Inside } else { Side::Outside }, f)
    }

    fn handshake(&mut self) {
        assert_eq!(self.tcp(true, 1000, 0, S, 0), OUT_);
        assert_eq!(self.tcp(false, 5000, 1001, S | A, 0), IN_);
        assert_eq!(self.tcp(true, 1001, 5001, A, 0), OUT_);
    }

    fn state(&self) -> &'static str {
        let (_, f) = self.e.conntrack().iter().next().expect("a flow");
        f.state_name()
    }

    fn dropped(&self, r: Reason) -> u64 {
        self.e.counters().dropped(r)
    }
}

const OUT_: Verdict = Verdict::Forward(Side::Outside);
const IN_: Verdict = Verdict::Forward(Side::Inside);

fn drop(r: Reason) -> Verdict {
    Verdict::Drop(DropReason::Refused(r))
}

fn frame(f: impl FnOnce(&mut [u8]) -> Result<usize, wire::BuildError>) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = f(&mut buf).expect("frame fits");
    buf.truncate(n);
    buf
}

#[test]
fn tcp_lifecycle_through_the_pipeline() {
    let mut h = Harness::new();
    h.handshake();
    assert_eq!(h.state(), "established");
    assert_eq!(h.tcp(true, 1001, 5001, A, 500), OUT_);
    assert_eq!(h.tcp(false, 5001, 1501, A, 1400), IN_);
    assert_eq!(h.tcp(true, 1501, 6401, F | A, 0), OUT_);
    assert_eq!(h.state(), "fin_wait");
    assert_eq!(h.tcp(false, 6401, 1502, A, 0), IN_);
    assert_eq!(h.state(), "close_wait");
    assert_eq!(h.tcp(false, 6401, 1502, F | A, 0), IN_);
    assert_eq!(h.state(), "last_ack");
    assert_eq!(h.tcp(true, 1502, 6402, A, 0), OUT_);
    assert_eq!(h.state(), "time_wait");
    // TIME_WAIT lasts 120 s, then the flow is gone and a late packet from
    // the outside is unsolicited.
    h.advance(Duration::from_secs(119));
    assert_eq!(h.e.conntrack().len(), 1);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.e.conntrack().len(), 0);
    assert_eq!(h.tcp(false, 6402, 1502, A, 0), drop(Reason::UnsolicitedInbound));
    assert_eq!(h.e.counters().flows_expired, 1);
}

#[test]
fn unsolicited_inbound_is_dropped_and_counted() {
    let mut h = Harness::new();
    assert_eq!(h.tcp(false, 5000, 0, S, 0), drop(Reason::UnsolicitedInbound));
    let probe = frame(|b| build::udp(b, &OUT, SERVER, CLIENT, 53, 9999, 10));
    assert_eq!(h.send(Side::Outside, probe), drop(Reason::UnsolicitedInbound));
    assert_eq!(h.dropped(Reason::UnsolicitedInbound), 2);
    assert_eq!(h.e.conntrack().len(), 0);
}

#[test]
fn established_timeout_is_configurable_and_refreshed_by_traffic() {
    let mut cfg = Config::default();
    cfg.timeouts.tcp_established = Duration::from_secs(3600);
    let mut h = Harness::with(cfg);
    h.handshake();
    for _ in 0..5 {
        h.advance(Duration::from_secs(3000));
        assert_eq!(h.tcp(true, 1001, 5001, A, 0), OUT_, "traffic keeps the flow alive");
    }
    h.advance(Duration::from_secs(3601));
    assert_eq!(h.e.conntrack().len(), 0);
}

#[test]
fn twelve_hour_default_for_established() {
    let mut h = Harness::new();
    h.handshake();
    h.advance(Duration::from_secs(11 * 3600 + 3500));
    assert_eq!(h.tcp(false, 5001, 1001, A, 0), IN_);
    h.advance(Duration::from_secs(12 * 3600 + 1));
    assert_eq!(h.e.conntrack().len(), 0);
}

#[test]
fn udp_unreplied_and_stream_timeouts() {
    let mut h = Harness::new();
    let out = frame(|b| build::udp(b, &IN, CLIENT, SERVER, 5000, 53, 10));
    let back = frame(|b| build::udp(b, &OUT, SERVER, CLIENT, 53, 5000, 10));
    assert_eq!(h.send(Side::Inside, out.clone()), OUT_);
    h.advance(Duration::from_secs(31));
    assert_eq!(h.send(Side::Outside, back.clone()), drop(Reason::UnsolicitedInbound));
    // Answered: the stream timeout (120 s) applies.
    assert_eq!(h.send(Side::Inside, out), OUT_);
    assert_eq!(h.send(Side::Outside, back.clone()), IN_);
    h.advance(Duration::from_secs(100));
    assert_eq!(h.send(Side::Outside, back.clone()), IN_);
    h.advance(Duration::from_secs(121));
    assert_eq!(h.send(Side::Outside, back), drop(Reason::UnsolicitedInbound));
}

#[test]
fn icmp_echo_flow() {
    let mut h = Harness::new();
    let req = frame(|b| build::icmp_echo(b, &IN, CLIENT, SERVER, true, 7, 1, 32));
    let rep = frame(|b| build::icmp_echo(b, &OUT, SERVER, CLIENT, false, 7, 1, 32));
    let other = frame(|b| build::icmp_echo(b, &OUT, SERVER, CLIENT, false, 8, 1, 32));
    assert_eq!(h.send(Side::Outside, rep.clone()), drop(Reason::UnsolicitedInbound));
    assert_eq!(h.send(Side::Inside, req), OUT_);
    assert_eq!(h.send(Side::Outside, rep), IN_);
    assert_eq!(h.send(Side::Outside, other), drop(Reason::UnsolicitedInbound));
    // An echo request from the outside opens nothing, not even with the
    // identifier of the inside's ping.
    for id in [9, 7] {
        let inbound = frame(|b| build::icmp_echo(b, &OUT, SERVER, CLIENT, true, id, 1, 32));
        assert_eq!(h.send(Side::Outside, inbound), drop(Reason::UnsolicitedInbound));
    }
}

#[test]
fn icmp_errors_are_related_never_state() {
    let mut h = Harness::new();
    let query = frame(|b| build::udp(b, &IN, CLIENT, SERVER, 5000, 53, 10));
    assert_eq!(h.send(Side::Inside, query.clone()), OUT_);
    let flows = h.e.conntrack().len();
    // Port unreachable from the server, and from a router on the way.
    let err = frame(|b| build::icmp_error(b, &OUT, SERVER, CLIENT, 3, 3, &query[14..]));
    assert_eq!(h.send(Side::Outside, err), IN_);
    let err = frame(|b| build::icmp_error(b, &OUT, v4(192, 0, 2, 1), CLIENT, 11, 0, &query[14..]));
    assert_eq!(h.send(Side::Outside, err), IN_);
    assert_eq!(h.e.counters().icmp_related, 2);
    assert_eq!(h.e.conntrack().len(), flows, "errors create no state");
    // Quoting a packet of no flow: dropped.
    let other = frame(|b| build::udp(b, &IN, CLIENT, SERVER, 5001, 53, 10));
    let err = frame(|b| build::icmp_error(b, &OUT, SERVER, CLIENT, 3, 3, &other[14..]));
    assert_eq!(h.send(Side::Outside, err), drop(Reason::IcmpErrorNoFlow));
    // Sent to someone other than the quoted packet's sender: dropped.
    let err = frame(|b| build::icmp_error(b, &OUT, SERVER, v4(10, 0, 0, 10), 3, 3, &query[14..]));
    assert_eq!(h.send(Side::Outside, err), drop(Reason::IcmpErrorWrongDirection));
    // Coming from the inside about the inside's own packet: wrong direction.
    let err = frame(|b| build::icmp_error(b, &IN, SERVER, CLIENT, 3, 3, &query[14..]));
    assert_eq!(h.send(Side::Inside, err), drop(Reason::IcmpErrorWrongDirection));
    // ICMPv6 packet-too-big about an IPv6 flow.
    let c6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
    let s6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 1, 0, 0, 0, 1));
    let big = frame(|b| build::tcp(b, &IN, c6, s6, 1234, 443, 1, 0, S, 502, 0));
    assert_eq!(h.send(Side::Inside, big.clone()), OUT_);
    let ptb =
        frame(|b| build::icmp_too_big(b, &OUT, v4(0, 0, 0, 0).is_ipv4().then_some(s6).unwrap(), c6, 1280, &big[14..]));
    assert_eq!(h.send(Side::Outside, ptb), IN_);
}

#[test]
fn blind_reset_and_syn_cannot_tear_a_connection_down() {
    let mut h = Harness::new();
    h.handshake();
    assert_eq!(h.tcp(false, 5001 + 1_000_000_000, 0, R, 0), drop(Reason::TcpRstOutOfWindow));
    assert_eq!(h.tcp(false, 5001 + 1_000_000_000, 0, S, 0), drop(Reason::TcpSynInConnection));
    assert_eq!(h.state(), "established");
    assert_eq!(h.tcp(true, 1001, 5001, A, 10), OUT_);
    assert_eq!(h.tcp(false, 5001, 1011, R, 0), IN_);
    assert_eq!(h.state(), "close");
    // CLOSE lasts 10 s.
    h.advance(Duration::from_secs(11));
    assert_eq!(h.e.conntrack().len(), 0);
}

#[test]
fn packets_of_a_flow_on_the_wrong_side_are_dropped() {
    let mut h = Harness::new();
    h.handshake();
    // The server's packet arriving on the inside port: spoofed.
    let f = frame(|b| build::tcp(b, &IN, SERVER, CLIENT, 443, 40_000, 5001, 1001, A, 502, 0));
    assert_eq!(h.send(Side::Inside, f), drop(Reason::WrongSide));
}

#[test]
fn bad_flags_and_no_flow_tcp() {
    let mut h = Harness::with(Config { tcp_loose: false, ..Config::default() });
    assert_eq!(h.tcp(true, 1, 0, S | F, 0), drop(Reason::TcpBadFlags));
    assert_eq!(h.tcp(true, 1, 0, TcpFlags::default(), 0), drop(Reason::TcpBadFlags));
    assert_eq!(h.tcp(true, 1, 1, A, 0), drop(Reason::TcpNoFlow));
    // With loose pick-up (the default) a mid-stream ACK from the inside opens the flow.
    let mut h = Harness::new();
    assert_eq!(h.tcp(true, 1, 1, A, 0), OUT_);
    assert_eq!(h.tcp(false, 1, 1, A, 0), IN_);
    assert_eq!(h.e.counters().flows_picked_up, 1);
}

fn syn_from(h: &mut Harness, i: u32) -> Verdict {
    let src = IpAddr::V4(Ipv4Addr::from(0x0a00_1000 + i));
    let f = frame(|b| build::tcp(b, &IN, src, SERVER, 1024 + (i % 50_000) as u16, 443, i, 0, S, 502, 0));
    h.send(Side::Inside, f)
}

#[test]
fn a_full_table_evicts_unanswered_flows_never_established_ones() {
    let mut h = Harness::with(Config { max_flows: 64, ..Config::default() });
    h.handshake();
    // A flood of SYNs nobody answers, far more than the table holds.
    for i in 0..10_000 {
        let v = syn_from(&mut h, i);
        assert!(v == OUT_ || v == drop(Reason::FlowTableFull), "{v:?}");
    }
    assert!(h.e.conntrack().len() <= 64);
    assert!(h.e.counters().flows_evicted > 9_000, "{:?}", h.e.counters());
    // The established connection survived the flood, both ways.
    assert_eq!(h.tcp(true, 1001, 5001, A, 10), OUT_);
    assert_eq!(h.tcp(false, 5001, 1011, A, 10), IN_);
}

#[test]
fn a_full_table_evicts_answered_half_open_flows_too() {
    // A SYN flood at a server that answers (a port forward): every SYN is
    // answered by a SYN-ACK, no handshake completes.
    let mut h = Harness::with(Config { max_flows: 64, ..Config::default() });
    h.handshake();
    for i in 0..5_000u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_3000 + i));
        let port = 1024 + (i % 50_000) as u16;
        let syn = frame(|b| build::tcp(b, &IN, src, SERVER, port, 443, i, 0, S, 502, 0));
        assert_eq!(h.send(Side::Inside, syn), OUT_, "SYN {i}");
        let sa = frame(|b| build::tcp(b, &OUT, SERVER, src, 443, port, 9, i + 1, S | A, 502, 0));
        assert_eq!(h.send(Side::Outside, sa), IN_, "SYN-ACK {i}");
    }
    assert!(h.e.conntrack().len() <= 64);
    assert!(h.e.counters().flows_evicted > 4_000, "{:?}", h.e.counters());
    assert_eq!(h.dropped(Reason::FlowTableFull), 0);
    // The established connection survived, both ways.
    assert_eq!(h.tcp(true, 1001, 5001, A, 10), OUT_);
    assert_eq!(h.tcp(false, 5001, 1011, A, 10), IN_);
}

#[test]
fn a_young_handshake_outlives_a_flood_that_fills_the_table() {
    // A flood fills a table of 1,024 flows at 10 SYNs a millisecond, every
    // SYN answered by a SYN-ACK; among it, 200 legitimate handshakes whose
    // third segment comes 20 ms (200 flood SYNs, a fifth of the table)
    // after their SYN-ACK. Taking the first candidate evicted 79 to 84 of
    // them (by the hash key); the oldest of four, 0 to 3.
    // (Without picking up connections mid-stream: an evicted handshake's
    // third segment would make a new flow.)
    let mut h = Harness::with(Config { max_flows: 1024, tcp_loose: false, ..Config::default() });
    let mut flood = 0u32;
    let syn_ack = |h: &mut Harness, src: IpAddr, port: u16, seq: u32| {
        let syn = frame(|b| build::tcp(b, &IN, src, SERVER, port, 443, seq, 0, S, 502, 0));
        let sent = h.send(Side::Inside, syn);
        let sa = frame(|b| build::tcp(b, &OUT, SERVER, src, 443, port, 9, seq + 1, S | A, 502, 0));
        (sent, h.send(Side::Outside, sa))
    };
    let mut pending = std::collections::VecDeque::new();
    let mut completed = 0;
    for ms in 0..400u32 {
        for _ in 0..10 {
            flood += 1;
            let src = IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + flood));
            assert_eq!(syn_ack(&mut h, src, 1024 + (flood % 50_000) as u16, flood), (OUT_, IN_));
        }
        if (100..300).contains(&ms) {
            let src = IpAddr::V4(Ipv4Addr::from(0x0a20_0000 + ms));
            assert_eq!(syn_ack(&mut h, src, 5000, 77), (OUT_, IN_), "legitimate SYN at {ms} ms");
            pending.push_back((ms + 20, src));
        }
        while pending.front().is_some_and(|(due, _)| *due == ms) {
            let (_, src) = pending.pop_front().unwrap();
            let ack = frame(|b| build::tcp(b, &IN, src, SERVER, 5000, 443, 78, 10, A, 502, 0));
            if h.send(Side::Inside, ack) == OUT_ {
                completed += 1;
            }
        }
        h.advance(Duration::from_millis(1));
    }
    assert!(h.e.counters().flows_evicted > 2_500, "{:?}", h.e.counters());
    assert!(completed >= 195, "{completed} of 200 handshakes completed");
}

#[test]
fn a_table_full_of_established_flows_refuses_new_ones() {
    let mut h = Harness::with(Config { max_flows: 32, ..Config::default() });
    let mut refused = 0;
    for i in 0..200u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_2000 + i));
        let syn = frame(|b| build::tcp(b, &IN, src, SERVER, 2000, 443, 7, 0, S, 502, 0));
        match h.send(Side::Inside, syn) {
            OUT_ => {
                let sa = frame(|b| build::tcp(b, &OUT, SERVER, src, 443, 2000, 9, 8, S | A, 502, 0));
                assert_eq!(h.send(Side::Outside, sa), IN_);
                let ack = frame(|b| build::tcp(b, &IN, src, SERVER, 2000, 443, 8, 10, A, 502, 0));
                assert_eq!(h.send(Side::Inside, ack), OUT_);
            }
            v => {
                assert_eq!(v, drop(Reason::FlowTableFull));
                refused += 1;
            }
        }
    }
    assert_eq!(h.e.conntrack().len(), 32);
    assert_eq!(refused, 200 - 32);
    assert_eq!(h.dropped(Reason::FlowTableFull), refused);
    assert_eq!(h.e.counters().flows_evicted, 0);
}

fn udp_dgram(payload: usize) -> Vec<u8> {
    let mut d = vec![0u8; 8 + payload];
    let n = build::udp_datagram(&mut d, CLIENT, SERVER, 7000, 4500, payload).unwrap();
    d.truncate(n);
    d
}

fn piece(from_inside: bool, ident: u32, d: &[u8], off: usize, end: usize, more: bool) -> Vec<u8> {
    let (eth, s, t) = if from_inside { (IN, CLIENT, SERVER) } else { (OUT, SERVER, CLIENT) };
    frame(|b| build::ip_fragment(b, &eth, s, t, proto::UDP, ident, off as u16, more, &d[off..end]))
}

#[test]
fn fragments_follow_their_first_fragment_in_any_order() {
    let mut h = Harness::new();
    let d = udp_dgram(3000);
    // Last, middle, first: the two early ones are held, then released.
    assert_eq!(h.send(Side::Inside, piece(true, 1, &d, 2000, d.len(), false)), Verdict::Held);
    assert_eq!(h.send(Side::Inside, piece(true, 1, &d, 1000, 2000, true)), Verdict::Held);
    assert_eq!(h.send(Side::Inside, piece(true, 1, &d, 0, 1000, true)), OUT_);
    let mut released = Vec::new();
    h.e.poll_released(|to, b| released.push((to, b.len())));
    assert_eq!(released.len(), 2);
    assert!(released.iter().all(|(to, _)| *to == Side::Outside));
    assert_eq!(h.e.datagrams(), 0, "a complete datagram is forgotten");

    // From the outside, unsolicited: first fragment dropped, so are the rest.
    let d = udp_dgram(1500);
    assert_eq!(h.send(Side::Outside, piece(false, 2, &d, 0, 800, true)), drop(Reason::UnsolicitedInbound));
    assert_eq!(h.send(Side::Outside, piece(false, 2, &d, 800, d.len(), false)), drop(Reason::FragmentOfDropped));
}

#[test]
fn overlapping_and_malformed_fragments_are_dropped() {
    let mut h = Harness::new();
    let d = udp_dgram(200);
    assert_eq!(h.send(Side::Inside, piece(true, 3, &d, 0, 96, true)), OUT_);
    assert_eq!(h.send(Side::Inside, piece(true, 3, &d, 88, 160, true)), drop(Reason::FragmentOverlap));
    assert_eq!(h.send(Side::Inside, piece(true, 3, &d, 160, d.len(), false)), drop(Reason::FragmentOverlap));
    // A non-last fragment whose length is not a multiple of 8.
    assert_eq!(h.send(Side::Inside, piece(true, 4, &d, 0, 90, true)), drop(Reason::FragmentBadLength));
    // Held fragments whose first never comes time out.
    assert_eq!(h.send(Side::Inside, piece(true, 5, &d, 96, d.len(), false)), Verdict::Held);
    h.advance(Duration::from_secs(31));
    assert_eq!(h.dropped(Reason::FragmentTimeout), 1);
    assert_eq!(h.e.datagrams(), 0);
}

#[test]
fn fragment_tracking_is_bounded() {
    let mut h = Harness::with(Config { max_datagrams: 8, frag_stash: 4, ..Config::default() });
    let d = udp_dgram(100);
    let mut held = 0;
    for ident in 0..100 {
        match h.send(Side::Inside, piece(true, ident, &d, 56, d.len(), false)) {
            Verdict::Held => held += 1,
            v => assert_eq!(v, drop(Reason::FragmentTableFull)),
        }
    }
    assert_eq!(held, 4);
    assert!(h.e.datagrams() <= 8);
}

#[test]
fn malformed_frames_are_dropped_with_the_parser_reason() {
    let mut h = Harness::new();
    let good = frame(|b| build::udp(b, &IN, CLIENT, SERVER, 5000, 53, 10));
    let v = h.send(Side::Inside, good[..20].to_vec());
    assert!(matches!(v, Verdict::Drop(DropReason::Malformed(_))), "{v:?}");
    assert_eq!(h.e.counters().total_drops(), 1);
}

#[test]
fn in_order_datagrams_are_forgotten_when_complete() {
    let mut h = Harness::new();
    let d = udp_dgram(1500);
    assert_eq!(h.send(Side::Inside, piece(true, 7, &d, 0, 800, true)), OUT_);
    assert_eq!(h.send(Side::Inside, piece(true, 7, &d, 800, d.len(), false)), OUT_);
    assert_eq!(h.e.datagrams(), 0);
}

#[test]
fn a_second_first_fragment_for_another_port_is_an_attack() {
    let mut h = Harness::new();
    // The inside client talks to the server; the server answers fragmented.
    let out = frame(|b| build::udp(b, &IN, CLIENT, SERVER, 7000, 4500, 10));
    assert_eq!(h.send(Side::Inside, out), OUT_);
    let mut reply = vec![0u8; 8 + 1500];
    let n = build::udp_datagram(&mut reply, SERVER, CLIENT, 4500, 7000, 1500).unwrap();
    reply.truncate(n);
    assert_eq!(h.send(Side::Outside, piece(false, 9, &reply, 0, 800, true)), IN_);
    // Same datagram identity, first fragment again, but aimed at another port.
    let mut evil = vec![0u8; 8 + 1500];
    let n = build::udp_datagram(&mut evil, SERVER, CLIENT, 4500, 161, 1500).unwrap();
    evil.truncate(n);
    assert_eq!(h.send(Side::Outside, piece(false, 9, &evil, 0, 800, true)), drop(Reason::FragmentOverlap));
    assert_eq!(h.send(Side::Outside, piece(false, 9, &reply, 800, reply.len(), false)), drop(Reason::FragmentOverlap));
}

#[test]
fn datagrams_from_each_side_are_kept_apart() {
    let mut h = Harness::new();
    let d = udp_dgram(1500);
    // A spoofed first fragment from the outside with the inside datagram's identity.
    assert_eq!(h.send(Side::Outside, piece(true, 11, &d, 0, 800, true)), drop(Reason::UnsolicitedInbound));
    // The real datagram from the inside is not affected.
    assert_eq!(h.send(Side::Inside, piece(true, 11, &d, 0, 800, true)), OUT_);
    assert_eq!(h.send(Side::Inside, piece(true, 11, &d, 800, d.len(), false)), OUT_);
}

#[test]
fn stray_later_fragments_do_not_block_first_fragments() {
    let mut h = Harness::with(Config { max_datagrams: 16, frag_stash: 8, ..Config::default() });
    let d = udp_dgram(1500);
    for ident in 100..200 {
        let v = h.send(Side::Outside, piece(false, ident, &d, 800, d.len(), false));
        assert!(v == Verdict::Held || v == drop(Reason::FragmentTableFull), "{v:?}");
    }
    // A member's fragmented datagram still goes out.
    assert_eq!(h.send(Side::Inside, piece(true, 5, &d, 0, 800, true)), OUT_);
    assert_eq!(h.send(Side::Inside, piece(true, 5, &d, 800, d.len(), false)), OUT_);
}

#[test]
fn overlap_drops_held_fragments_and_counts_them() {
    let mut h = Harness::new();
    let d = udp_dgram(2000);
    assert_eq!(h.send(Side::Inside, piece(true, 3, &d, 800, 1600, true)), Verdict::Held);
    assert_eq!(h.send(Side::Inside, piece(true, 3, &d, 1000, 1800, true)), drop(Reason::FragmentOverlap));
    // The held fragment went with the datagram and is counted.
    assert_eq!(h.dropped(Reason::FragmentOverlap), 2);
    assert_eq!(h.e.counters().fragments_held, 1);
}

#[test]
fn a_fragmented_tcp_segment_does_not_wedge_the_connection() {
    let mut h = Harness::new();
    h.handshake();
    // The client sends a 1400-byte segment in two fragments.
    let mut seg = vec![0u8; 2048];
    let n = build::tcp(&mut seg, &IN, CLIENT, SERVER, 40_000, 443, 1001, 5001, A, 502, 1400).unwrap();
    let dgram = seg[14 + 20..n].to_vec();
    let p1 = frame(|b| build::ip_fragment(b, &IN, CLIENT, SERVER, proto::TCP, 77, 0, true, &dgram[..800]));
    let p2 = frame(|b| build::ip_fragment(b, &IN, CLIENT, SERVER, proto::TCP, 77, 800, false, &dgram[800..]));
    assert_eq!(h.send(Side::Inside, p1), OUT_);
    assert_eq!(h.send(Side::Inside, p2), OUT_);
    // The server acknowledges all of it.
    assert_eq!(h.tcp(false, 5001, 2401, A, 0), IN_);
}

/// A batch's flows are looked up before any of its packets is decided, so
/// a packet whose flow an earlier packet of the same batch made or ended
/// must be looked up again. One batch of 70 frames (more than the daemon's
/// 64 a batch) opens ten flows and carries six more packets of each; the
/// next batch, past the flows' deadline but before the timers ran, meets
/// each expired flow first, then its next packet.
#[test]
fn flows_made_or_ended_by_a_batch_are_seen_by_its_later_packets() {
    let mut h = Harness::new();
    let udp = |port: u16| frame(|b| build::udp(b, &IN, CLIENT, SERVER, port, 53, 10));
    let run = |h: &mut Harness, rounds: usize| {
        let mut batch: Vec<Vec<u8>> = (0..rounds).flat_map(|_| (0..10).map(|i| udp(6000 + i))).collect();
        let mut v = vec![Verdict::Held; batch.len()];
        h.e.process(h.now, Side::Inside, &mut batch, &mut v);
        assert!(v.iter().all(|x| *x == OUT_), "{v:?}");
    };
    run(&mut h, 7);
    let c = h.e.counters();
    assert_eq!((c.flows_created, c.fast_path), (10, 60));
    assert_eq!(h.e.conntrack().len(), 10);
    // Unanswered UDP lasts 30 s.
    h.now = h.now + Duration::from_secs(31);
    run(&mut h, 2);
    let c = h.e.counters();
    assert_eq!((c.flows_expired, c.flows_created, c.fast_path), (10, 20, 70));
    assert_eq!(h.e.conntrack().len(), 10);
}
