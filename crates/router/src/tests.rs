//! Forwarding and LPM tests: frames built with `wire::build`, decisions
//! checked by parsing the results back with `wire`'s views.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use wire::build::{self, Eth};
use wire::classify::{classify, L4};
use wire::ethernet::{self, EtherType};
use wire::{icmpv4, icmpv6, ipv4, ipv6, MacAddr};

use crate::*;

const IN: u32 = 1;
const OUT: u32 = 2;
const DOWN: u32 = 4;
const NOT_PORT: u32 = 9;
const MAC_IN: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const MAC_OUT: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const MAC_SENDER: MacAddr = MacAddr([2, 0xaa, 0, 0, 0, 1]);
const MAC_GW: MacAddr = MacAddr([2, 0xbb, 0, 0, 0, 1]);
const MAC_HOST: MacAddr = MacAddr([2, 0xbb, 0, 0, 0, 2]);
const MAC_GW6: MacAddr = MacAddr([2, 0xbb, 0, 0, 0, 6]);
const BUF: usize = 2048;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}
fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}
fn a(s: &str, len: u8) -> IfAddr {
    IfAddr { addr: s.parse().unwrap(), prefix_len: len }
}
fn route(p: &str, len: u8, kind: RouteKind, ifindex: u32, gw: Option<&str>, mtu: Option<u32>) -> Route {
    Route {
        prefix: p.parse().unwrap(),
        prefix_len: len,
        kind,
        ifindex,
        gateway: gw.map(|g| g.parse().unwrap()),
        mtu,
        metric: 0,
    }
}

fn link(ifindex: u32, name: &str, mac: MacAddr, mtu: u32, up: bool, addrs: Vec<IfAddr>) -> Link {
    Link { ifindex, name: name.into(), mac, mtu, up, addrs }
}

fn tables(with_v4_default: bool) -> RouteTables {
    use RouteKind::*;
    let mut b = TablesBuilder::new();
    b.link(link(IN, "in0", MAC_IN, 1500, true, vec![a("192.0.2.1", 24), a("fe80::1", 64), a("2001:db8:1::1", 64)]))
        .link(link(OUT, "out0", MAC_OUT, 1500, true, vec![a("198.51.100.1", 24), a("2001:db8:2::1", 64)]))
        .link(link(DOWN, "down0", MacAddr([2, 0, 0, 0, 0, 4]), 1500, false, vec![]))
        .local_addr(a("127.0.0.1", 8))
        .route(route("192.0.2.0", 24, Unicast, IN, None, None))
        .route(route("203.0.113.0", 24, Unicast, OUT, None, None))
        .route(route("10.99.0.0", 16, Blackhole, 0, None, None))
        .route(route("10.98.0.0", 16, Unreachable, 0, None, None))
        .route(route("10.97.0.0", 16, Prohibit, 0, None, None))
        .route(route("10.50.0.0", 16, Unicast, OUT, Some("198.51.100.254"), Some(576)))
        .route(route("10.60.0.0", 16, Unicast, NOT_PORT, None, None))
        .route(route("10.70.0.0", 16, Unicast, DOWN, None, None))
        .route(route("2000::", 3, Unicast, OUT, Some("2001:db8:2::fe"), None))
        .route(route("2001:db8:99::", 48, Prohibit, 0, None, None))
        .route(route("2001:db8:50::", 48, Unicast, OUT, Some("2001:db8:2::fe"), Some(1280)))
        .neighbour(OUT, v4("198.51.100.254"), MAC_GW)
        .neighbour(OUT, v4("203.0.113.5"), MAC_HOST)
        .neighbour(OUT, v6("2001:db8:2::fe"), MAC_GW6);
    if with_v4_default {
        b.route(route("0.0.0.0", 0, Unicast, OUT, Some("198.51.100.254"), None));
    }
    b.build()
}

fn eth() -> Eth {
    Eth { src: MAC_SENDER, dst: MAC_IN, vlan: None }
}

fn udp(src: &str, dst: &str, payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; 70_000];
    let n = build::udp(&mut b, &eth(), src.parse().unwrap(), dst.parse().unwrap(), 4000, 53, payload).unwrap();
    b.truncate(n);
    b
}

/// Rewrite the IPv4 header of `f` through `edit`, then fix its checksum.
fn edit_v4(f: &mut [u8], edit: impl FnOnce(&mut ipv4::Packet<&mut [u8]>)) {
    let mut p = ipv4::Packet::new_unchecked(&mut f[ethernet::HEADER_LEN..]);
    edit(&mut p);
    p.fill_checksum();
}

fn set_hop_limit(f: &mut [u8], h: u8) {
    ipv6::Packet::new_unchecked(&mut f[ethernet::HEADER_LEN..]).set_hop_limit(h);
}

fn router() -> Router {
    Router::new(RouterConfig::default(), 0)
}

fn fwd(r: &mut Router, t: &RouteTables, f: &mut [u8], icmp: &mut [u8]) -> Decision {
    r.forward(t, IN, f, 0, icmp, &mut NoFragments)
}

fn sent(d: Decision) -> usize {
    match d {
        Decision::Drop { icmp: Icmp::Sent { ifindex, len }, .. } => {
            assert_eq!(ifindex, IN, "errors go back out of the ingress port");
            len
        }
        other => panic!("expected an ICMP error, got {other:?}"),
    }
}

/// Parse an ICMPv4 error frame; returns (type, code, rest of header, quote).
fn parse_icmp4(f: &[u8], expect_src: &str, expect_dst: &str) -> (u8, u8, [u8; 4], Vec<u8>) {
    let e = ethernet::Frame::new_checked(f).unwrap();
    assert_eq!((e.src_addr(), e.dst_addr(), e.ethertype()), (MAC_IN, MAC_SENDER, EtherType::IPV4));
    let ip = ipv4::Packet::new_checked(e.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(IpAddr::V4(ip.src_addr()), v4(expect_src));
    assert_eq!(IpAddr::V4(ip.dst_addr()), v4(expect_dst));
    assert!(usize::from(ip.total_len()) <= 576);
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    (icmp.msg_type(), icmp.code(), icmp.rest_of_header(), icmp.body().to_vec())
}

fn parse_icmp6(f: &[u8], expect_src: &str, expect_dst: &str) -> (u8, u8, u32, Vec<u8>) {
    let e = ethernet::Frame::new_checked(f).unwrap();
    assert_eq!((e.src_addr(), e.dst_addr(), e.ethertype()), (MAC_IN, MAC_SENDER, EtherType::IPV6));
    let ip = ipv6::Packet::new_checked(e.payload()).unwrap();
    assert_eq!(IpAddr::V6(ip.src_addr()), v6(expect_src));
    assert_eq!(IpAddr::V6(ip.dst_addr()), v6(expect_dst));
    assert!(ipv6::HEADER_LEN + usize::from(ip.payload_len()) <= 1280);
    let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
    (icmp.msg_type(), icmp.code(), icmp.pointer(), icmp.body().to_vec())
}

fn ip_of(f: &[u8]) -> &[u8] {
    &f[ethernet::HEADER_LEN..]
}

#[test]
fn forwards_ipv4_via_gateway_with_ttl_and_checksum() {
    let t = tables(true);
    let mut r = router();
    let mut f = udp("192.0.2.10", "8.8.8.8", 100);
    let orig = f.clone();
    let d = fwd(&mut r, &t, &mut f, &mut [0; BUF]);
    assert_eq!(d, Decision::Out { ifindex: OUT });
    let e = ethernet::Frame::new_checked(&f[..]).unwrap();
    assert_eq!((e.src_addr(), e.dst_addr()), (MAC_OUT, MAC_GW));
    let ip = ipv4::Packet::new_checked(ip_of(&f)).unwrap();
    assert_eq!(ip.ttl(), 63);
    assert!(ip.verify_checksum(), "incremental update must verify");
    let incremental = ip.checksum();
    let mut recomputed = f.clone();
    edit_v4(&mut recomputed, |_| {});
    assert_eq!(incremental, ipv4::Packet::new_checked(ip_of(&recomputed)).unwrap().checksum());
    // Nothing but MACs, TTL and checksum changed.
    let diff: Vec<usize> = (0..f.len()).filter(|&i| f[i] != orig[i]).collect();
    assert!(diff.iter().all(|&i| i < 12 || i == 14 + 8 || i == 14 + 10 || i == 14 + 11), "{diff:?}");
    assert_eq!(r.counters().forwarded, 1);
}

#[test]
fn forwards_on_link_and_ipv6() {
    let t = tables(true);
    let mut r = router();
    let mut f = udp("192.0.2.10", "203.0.113.5", 10);
    assert_eq!(fwd(&mut r, &t, &mut f, &mut [0; BUF]), Decision::Out { ifindex: OUT });
    assert_eq!(ethernet::Frame::new_checked(&f[..]).unwrap().dst_addr(), MAC_HOST);

    let mut f = udp("2001:db8:1::10", "2001:db8:77::1", 10);
    assert_eq!(fwd(&mut r, &t, &mut f, &mut [0; BUF]), Decision::Out { ifindex: OUT });
    let e = ethernet::Frame::new_checked(&f[..]).unwrap();
    assert_eq!((e.src_addr(), e.dst_addr()), (MAC_OUT, MAC_GW6));
    assert_eq!(ipv6::Packet::new_checked(ip_of(&f)).unwrap().hop_limit(), 63);
    // The UDP checksum does not cover the hop limit: still valid.
    assert!(matches!(classify(&f).unwrap().l4, L4::Udp));
}

#[test]
fn ttl_expired_v4_gets_time_exceeded_before_the_engine() {
    let t = tables(true);
    let mut r = router();
    let mut f = udp("192.0.2.10", "8.8.8.8", 40);
    edit_v4(&mut f, |p| p.set_ttl(1));
    let mut icmp = [0u8; BUF];
    let d = r.check_ttl(&t, IN, &f, 0, &mut icmp).expect("expired");
    assert_eq!(d.reason(), Some(Reason::TtlExceeded));
    let len = sent(d);
    let (ty, code, _, quote) = parse_icmp4(&icmp[..len], "192.0.2.1", "192.0.2.10");
    assert_eq!((ty, code), (icmpv4::msg::TIME_EXCEEDED, icmpv4::time_exceeded::TTL));
    assert_eq!(quote, ip_of(&f), "the whole (short) packet is quoted as received");
    // wire sees the error as quoting the original flow.
    match classify(&icmp[..len]).unwrap().l4 {
        L4::IcmpError { inner, .. } => assert_eq!(inner.dst_ip(), v4("8.8.8.8")),
        other => panic!("{other:?}"),
    }
    // TTL 2 passes; TTL 1 to the box itself passes (the kernel's business).
    edit_v4(&mut f, |p| p.set_ttl(2));
    assert_eq!(r.check_ttl(&t, IN, &f, 0, &mut icmp), None);
    let mut local = udp("192.0.2.10", "198.51.100.1", 4);
    edit_v4(&mut local, |p| p.set_ttl(1));
    assert_eq!(r.check_ttl(&t, IN, &local, 0, &mut icmp), None);
    // forward() enforces it too, for callers that skip check_ttl.
    edit_v4(&mut f, |p| p.set_ttl(0));
    assert_eq!(fwd(&mut r, &t, &mut f, &mut icmp).reason(), Some(Reason::TtlExceeded));
    assert_eq!(r.counters().drop_count(Reason::TtlExceeded), 2);
    assert_eq!(r.counters().icmp_sent, 2);
}

#[test]
fn hop_limit_expired_v6_uses_a_global_source() {
    let t = tables(true);
    let mut r = router();
    let mut f = udp("2001:db8:1::10", "2001:db8:77::1", 40);
    set_hop_limit(&mut f, 1);
    let mut icmp = [0u8; BUF];
    let len = sent(r.check_ttl(&t, IN, &f, 0, &mut icmp).unwrap());
    // fe80::1 is listed first on the ingress link; the global one is chosen.
    let (ty, code, _, quote) = parse_icmp6(&icmp[..len], "2001:db8:1::1", "2001:db8:1::10");
    assert_eq!((ty, code), (icmpv6::msg::TIME_EXCEEDED, 0));
    assert_eq!(quote, ip_of(&f));
}

#[test]
fn icmpv6_falls_back_to_link_local_source() {
    let mut b = TablesBuilder::new();
    b.link(link(IN, "in0", MAC_IN, 1500, true, vec![a("fe80::1", 64)]));
    let t = b.build();
    let mut r = router();
    let mut f = udp("2001:db8:1::10", "2001:db8:77::1", 40);
    set_hop_limit(&mut f, 1);
    let mut icmp = [0u8; BUF];
    let len = sent(r.check_ttl(&t, IN, &f, 0, &mut icmp).unwrap());
    parse_icmp6(&icmp[..len], "fe80::1", "2001:db8:1::10");
}

#[test]
fn unreachable_kinds() {
    let mut r = router();
    let mut icmp = [0u8; BUF];
    let cases = [
        (false, "8.8.8.8", Reason::NoRoute, icmpv4::unreachable::NET),
        (true, "10.98.1.1", Reason::UnreachableRoute, icmpv4::unreachable::HOST),
        (true, "10.97.1.1", Reason::ProhibitRoute, icmpv4::unreachable::ADMIN_PROHIBITED),
    ];
    for (default, dst, reason, code) in cases {
        let t = tables(default);
        let mut f = udp("192.0.2.10", dst, 30);
        let d = fwd(&mut r, &t, &mut f, &mut icmp);
        assert_eq!(d.reason(), Some(reason));
        let (ty, c, rest, quote) = parse_icmp4(&icmp[..sent(d)], "192.0.2.1", "192.0.2.10");
        assert_eq!((ty, c, rest), (icmpv4::msg::DEST_UNREACHABLE, code, [0; 4]));
        assert_eq!(quote, ip_of(&f));
    }
    let t = tables(true);
    for (dst, reason, code) in [
        ("4000::1", Reason::NoRoute, icmpv6::unreachable::NO_ROUTE),
        ("2001:db8:99::1", Reason::ProhibitRoute, icmpv6::unreachable::ADMIN_PROHIBITED),
    ] {
        let mut f = udp("2001:db8:1::10", dst, 30);
        let d = fwd(&mut r, &t, &mut f, &mut icmp);
        assert_eq!(d.reason(), Some(reason));
        let (ty, c, _, _) = parse_icmp6(&icmp[..sent(d)], "2001:db8:1::1", "2001:db8:1::10");
        assert_eq!((ty, c), (icmpv6::msg::DEST_UNREACHABLE, code));
    }
    // A blackhole is silent.
    let mut f = udp("192.0.2.10", "10.99.0.1", 30);
    assert_eq!(fwd(&mut r, &t, &mut f, &mut icmp), Decision::Drop { reason: Reason::BlackholeRoute, icmp: Icmp::None });
}

#[test]
fn too_big_with_df_and_v6() {
    let t = tables(true);
    let mut r = router();
    let mut icmp = [0u8; BUF];
    let mut f = udp("192.0.2.10", "10.50.0.1", 1000);
    edit_v4(&mut f, |p| p.set_dont_frag(true));
    let d = fwd(&mut r, &t, &mut f, &mut icmp);
    assert_eq!(d.reason(), Some(Reason::TooBig));
    let (ty, code, rest, quote) = parse_icmp4(&icmp[..sent(d)], "192.0.2.1", "192.0.2.10");
    assert_eq!((ty, code), (icmpv4::msg::DEST_UNREACHABLE, icmpv4::unreachable::FRAG_NEEDED));
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 576, "next-hop MTU is the route's");
    assert_eq!(quote.len(), build::ICMPV4_QUOTE_MAX);
    assert_eq!(quote[..], ip_of(&f)[..quote.len()]);
    // TTL was not touched on the way to the error.
    assert_eq!(ipv4::Packet::new_checked(ip_of(&f)).unwrap().ttl(), 64);

    let mut f = udp("2001:db8:1::10", "2001:db8:50::1", 1300);
    let d = fwd(&mut r, &t, &mut f, &mut icmp);
    assert_eq!(d.reason(), Some(Reason::TooBig));
    let (ty, code, mtu, quote) = parse_icmp6(&icmp[..sent(d)], "2001:db8:1::1", "2001:db8:1::10");
    assert_eq!((ty, code, mtu), (icmpv6::msg::PACKET_TOO_BIG, 0, 1280));
    assert_eq!(quote.len(), build::ICMPV6_QUOTE_MAX);
    // Exactly the MTU passes.
    let mut f = udp("2001:db8:1::10", "2001:db8:50::1", 1280 - 48);
    assert_eq!(fwd(&mut r, &t, &mut f, &mut icmp), Decision::Out { ifindex: OUT });
}

/// Reassemble IPv4 fragments; checks each one on the way.
fn reassemble(frames: &[&[u8]], mtu: usize) -> (Vec<u8>, Vec<usize>) {
    let mut data = Vec::new();
    let mut hls = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let e = ethernet::Frame::new_checked(*f).unwrap();
        assert_eq!((e.src_addr(), e.dst_addr(), e.ethertype()), (MAC_OUT, MAC_GW, EtherType::IPV4));
        let p = ipv4::Packet::new_checked(e.payload()).unwrap();
        assert!(p.verify_checksum());
        assert!(usize::from(p.total_len()) <= mtu);
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.ident(), 0x1234);
        assert_eq!(usize::from(p.frag_offset()), data.len(), "fragments are contiguous");
        assert_eq!(p.more_frags(), i + 1 < frames.len());
        if i + 1 < frames.len() {
            assert_eq!(p.payload().len() % 8, 0);
        }
        data.extend_from_slice(p.payload());
        hls.push(usize::from(p.header_len()));
    }
    (data, hls)
}

#[test]
fn fragments_ipv4_without_df() {
    let t = tables(true);
    let mut r = router();
    let mut f = udp("192.0.2.10", "10.50.0.1", 1400);
    edit_v4(&mut f, |p| p.set_ident(0x1234));
    let orig_payload = ipv4::Packet::new_checked(ip_of(&f)).unwrap().payload().to_vec();
    let mut bufs = [[0u8; 600]; 4];
    let mut lens = [0usize; 4];
    let mut sink = FragmentBufs::new(&mut bufs, &mut lens);
    let d = r.forward(&t, IN, &mut f, 0, &mut [0; BUF], &mut sink);
    assert_eq!(d, Decision::Fragmented { ifindex: OUT, count: 3 });
    let frames: Vec<&[u8]> = sink.frames().collect();
    let (data, _) = reassemble(&frames, 576);
    assert_eq!(data, orig_payload);
    assert_eq!((r.counters().fragmented, r.counters().fragments), (1, 3));

    // Too few buffers, or none: dropped and counted.
    let mut f = udp("192.0.2.10", "10.50.0.1", 1400);
    let mut bufs = [[0u8; 600]; 2];
    let mut lens = [0usize; 2];
    let d = r.forward(&t, IN, &mut f, 0, &mut [0; BUF], &mut FragmentBufs::new(&mut bufs, &mut lens));
    assert_eq!(d.reason(), Some(Reason::NeedsFragmentation));
    let mut f = udp("192.0.2.10", "10.50.0.1", 1400);
    assert_eq!(fwd(&mut r, &t, &mut f, &mut [0; BUF]).reason(), Some(Reason::NeedsFragmentation));
}

#[test]
fn fragments_copy_only_copied_options_and_keep_mf_of_a_fragment() {
    let t = tables(true);
    let mut r = router();
    let f = udp("192.0.2.10", "10.50.0.1", 1000);
    // Insert 8 option bytes: record route (not copied), NOP, router alert (copied).
    let opts = [7u8, 3, 4, 1, 148, 4, 0, 0];
    let mut g = f[..ethernet::HEADER_LEN + ipv4::HEADER_LEN].to_vec();
    g.extend_from_slice(&opts);
    g.extend_from_slice(&f[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]);
    edit_v4(&mut g, |p| {
        p.set_version_and_header_len(28);
        p.set_total_len(p.total_len() + 8);
        p.set_ident(0x1234);
        // Itself a first fragment with more to come.
        p.set_more_frags(true);
    });
    let orig_payload = ipv4::Packet::new_checked(ip_of(&g)).unwrap().payload().to_vec();
    let mut bufs = [[0u8; 600]; 4];
    let mut lens = [0usize; 4];
    let mut sink = FragmentBufs::new(&mut bufs, &mut lens);
    let d = r.forward(&t, IN, &mut g, 0, &mut [0; BUF], &mut sink);
    let Decision::Fragmented { count, .. } = d else { panic!("{d:?}") };
    let frames: Vec<&[u8]> = sink.frames().collect();
    assert_eq!(frames.len(), count);
    // The last piece keeps MF: check by hand, then reassemble the rest.
    let last = ipv4::Packet::new_checked(ip_of(frames[count - 1])).unwrap();
    assert!(last.more_frags());
    let mut data = Vec::new();
    for (i, fr) in frames.iter().enumerate() {
        let p = ipv4::Packet::new_checked(ip_of(fr)).unwrap();
        assert!(p.verify_checksum());
        assert!(usize::from(p.total_len()) <= 576);
        assert_eq!(usize::from(p.frag_offset()), data.len());
        if i == 0 {
            assert_eq!(p.options(), &opts);
        } else {
            assert_eq!(p.options(), &[148, 4, 0, 0], "only the copied option");
        }
        data.extend_from_slice(p.payload());
    }
    assert_eq!(data, orig_payload);
}

#[test]
fn neighbour_missing_and_egress_problems() {
    let t = tables(true);
    let mut r = router();
    let mut icmp = [0u8; BUF];
    let mut f = udp("192.0.2.10", "203.0.113.6", 10);
    let orig = f.clone();
    assert_eq!(
        fwd(&mut r, &t, &mut f, &mut icmp),
        Decision::NeighbourMissing { ifindex: OUT, next_hop: v4("203.0.113.6") }
    );
    assert_eq!(f, orig, "a dropped frame is not rewritten");
    let mut f = udp("192.0.2.10", "10.60.0.1", 10);
    assert_eq!(fwd(&mut r, &t, &mut f, &mut icmp).reason(), Some(Reason::EgressNotPort));
    let mut f = udp("192.0.2.10", "10.70.0.1", 10);
    assert_eq!(fwd(&mut r, &t, &mut f, &mut icmp).reason(), Some(Reason::EgressDown));
    assert_eq!(r.counters().drop_count(Reason::NeighbourMissing), 1);
}

#[test]
fn local_broadcast_multicast_link_local_vlan_not_ip() {
    let t = tables(true);
    let mut r = router();
    let mut icmp = [0u8; BUF];
    let mut check = |mut f: Vec<u8>, reason: Reason| {
        let d = r.forward(&t, IN, &mut f, 0, &mut icmp, &mut NoFragments);
        assert_eq!(d, Decision::Drop { reason, icmp: Icmp::None });
    };
    check(udp("192.0.2.10", "198.51.100.1", 4), Reason::Local);
    check(udp("192.0.2.10", "127.0.0.1", 4), Reason::Local);
    check(udp("2001:db8:1::10", "2001:db8:2::1", 4), Reason::Local);
    check(udp("192.0.2.10", "198.51.100.255", 4), Reason::DirectedBroadcast);
    check(udp("192.0.2.10", "255.255.255.255", 4), Reason::NotUnicast);
    check(udp("192.0.2.10", "239.1.1.1", 4), Reason::NotUnicast);
    check(udp("2001:db8:1::10", "ff0e::1", 4), Reason::NotUnicast);
    check(udp("192.0.2.10", "169.254.1.1", 4), Reason::LinkLocal);
    check(udp("fe80::10", "2001:db8:77::1", 4), Reason::LinkLocal);
    let mut tagged = vec![0u8; 200];
    let n = build::udp(
        &mut tagged,
        &Eth { vlan: Some(7), ..eth() },
        "192.0.2.10".parse().unwrap(),
        "8.8.8.8".parse().unwrap(),
        1,
        2,
        4,
    )
    .unwrap();
    tagged.truncate(n);
    check(tagged, Reason::VlanTagged);
    let mut arp = udp("192.0.2.10", "8.8.8.8", 4);
    ethernet::Frame::new_unchecked(&mut arp[..]).set_ethertype(EtherType::ARP);
    check(arp, Reason::NotIp);
    let mut bad = udp("192.0.2.10", "8.8.8.8", 4);
    bad.truncate(30);
    check(bad, Reason::Malformed);
    check(vec![0u8; 5], Reason::Malformed);
    assert_eq!(r.counters().drop_count(Reason::Local), 3);
    assert_eq!(r.counters().icmp_sent, 0);
}

/// A TTL-1 packet that must not draw an error; returns why.
fn suppressed(t: &RouteTables, mut f: Vec<u8>) -> IcmpSuppressed {
    let mut r = router();
    match r.forward(t, IN, &mut f, 0, &mut [0; BUF], &mut NoFragments) {
        Decision::Drop { reason: Reason::TtlExceeded, icmp: Icmp::Suppressed(s) } => {
            assert_eq!(r.counters().suppressed_count(s), 1);
            s
        }
        d => panic!("{d:?}"),
    }
}

fn expired_v4(mut f: Vec<u8>) -> Vec<u8> {
    edit_v4(&mut f, |p| p.set_ttl(1));
    f
}

#[test]
fn never_an_error_about_an_error_a_later_fragment_or_a_group() {
    let t = tables(true);
    let mut b = vec![0u8; 600];
    let (src, dst) = ("192.0.2.10".parse().unwrap(), "8.8.8.8".parse().unwrap());
    // An ICMP error (quoting whatever) with TTL 1.
    let n = build::icmp_error(&mut b, &eth(), src, dst, icmpv4::msg::DEST_UNREACHABLE, 1, &[0x45; 28]).unwrap();
    assert_eq!(suppressed(&t, expired_v4(b[..n].to_vec())), IcmpSuppressed::AboutIcmpError);
    // An echo request is not an error: it gets one.
    let n = build::icmp_echo(&mut b, &eth(), src, dst, true, 1, 1, 8).unwrap();
    let mut r = router();
    let mut f = expired_v4(b[..n].to_vec());
    sent(r.forward(&t, IN, &mut f, 0, &mut [0; BUF], &mut NoFragments));
    // ICMPv6 error about an error.
    let (s6, d6) = ("2001:db8:1::10".parse().unwrap(), "2001:db8:77::1".parse().unwrap());
    let n = build::icmp_error(&mut b, &eth(), s6, d6, icmpv6::msg::TIME_EXCEEDED, 0, &[0x60; 48]).unwrap();
    let mut f = b[..n].to_vec();
    set_hop_limit(&mut f, 1);
    assert_eq!(suppressed(&t, f), IcmpSuppressed::AboutIcmpError);
    // A later fragment, v4 and v6.
    let data = [0u8; 64];
    let n = build::ip_fragment(&mut b, &eth(), src, dst, 17, 9, 64, true, &data).unwrap();
    assert_eq!(suppressed(&t, expired_v4(b[..n].to_vec())), IcmpSuppressed::NonFirstFragment);
    let n = build::ip_fragment(&mut b, &eth(), s6, d6, 17, 9, 64, false, &data).unwrap();
    let mut f = b[..n].to_vec();
    set_hop_limit(&mut f, 1);
    assert_eq!(suppressed(&t, f), IcmpSuppressed::NonFirstFragment);
    // Sent as link-layer broadcast.
    let mut f = expired_v4(udp("192.0.2.10", "8.8.8.8", 4));
    ethernet::Frame::new_unchecked(&mut f[..]).set_dst_addr(MacAddr::BROADCAST);
    assert_eq!(suppressed(&t, f), IcmpSuppressed::NotUnicast);
    // From a source that is no single host.
    for s in ["0.0.0.1", "240.0.0.1", "192.0.2.255"] {
        assert_eq!(suppressed(&t, expired_v4(udp(s, "8.8.8.8", 4))), IcmpSuppressed::BadSource, "{s}");
    }
    // From a port without addresses, or an unknown one.
    let mut b2 = TablesBuilder::new();
    b2.link(link(IN, "in0", MAC_IN, 1500, true, vec![]));
    assert_eq!(suppressed(&b2.build(), expired_v4(udp("192.0.2.10", "8.8.8.8", 4))), IcmpSuppressed::NoSourceAddress);
    assert_eq!(
        suppressed(&RouteTables::empty(), expired_v4(udp("192.0.2.10", "8.8.8.8", 4))),
        IcmpSuppressed::IngressUnknown
    );
    // An ICMP buffer too small.
    let mut r = router();
    let mut f = expired_v4(udp("192.0.2.10", "8.8.8.8", 4));
    let d = r.forward(&t, IN, &mut f, 0, &mut [0; 20], &mut NoFragments);
    assert_eq!(
        d,
        Decision::Drop { reason: Reason::TtlExceeded, icmp: Icmp::Suppressed(IcmpSuppressed::BufferTooSmall) }
    );
}

#[test]
fn icmp_rate_limit_uses_virtual_time() {
    let t = tables(true);
    let mut r = Router::new(RouterConfig { icmp_rate: 10, icmp_burst: 2 }, 0);
    let f = expired_v4(udp("192.0.2.10", "8.8.8.8", 4));
    let mut icmp = [0u8; BUF];
    let mut at = |r: &mut Router, now: u64| match r.check_ttl(&t, IN, &f, now, &mut icmp) {
        Some(Decision::Drop { icmp: Icmp::Sent { .. }, .. }) => true,
        Some(Decision::Drop { icmp: Icmp::Suppressed(IcmpSuppressed::RateLimited), .. }) => false,
        d => panic!("{d:?}"),
    };
    let burst: Vec<bool> = (0..5).map(|_| at(&mut r, 0)).collect();
    assert_eq!(burst, [true, true, false, false, false]);
    assert!(!at(&mut r, 99_000_000));
    assert!(at(&mut r, 100_000_000), "one token per 100 ms");
    let c = r.counters();
    assert_eq!((c.icmp_sent, c.suppressed_count(IcmpSuppressed::RateLimited)), (3, 4));
    assert_eq!(c.drop_count(Reason::TtlExceeded), 7);
    let named: Vec<_> = c.named().filter(|(_, _, v)| *v > 0).collect();
    assert!(named.contains(&("icmp_suppressed", "rate_limited", 4)), "{named:?}");
}

#[test]
fn names_are_unique_and_snake_case() {
    let mut names: Vec<&str> = Reason::ALL.iter().map(Reason::name).collect();
    names.extend(IcmpSuppressed::ALL.iter().map(IcmpSuppressed::name));
    for n in &names {
        assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
    }
    let (r, s) = (Reason::ALL.len(), IcmpSuppressed::ALL.len());
    names[..r].sort_unstable();
    names[r..].sort_unstable();
    assert!(names[..r].windows(2).all(|w| w[0] != w[1]) && names[r..].windows(2).all(|w| w[0] != w[1]));
    assert!(Reason::ALL.iter().enumerate().all(|(i, x)| x.index() == i) && s == IcmpSuppressed::COUNT);
}

// ---- LPM against a linear scan ----

fn naive(routes: &[Route], dst: IpAddr) -> Option<&Route> {
    let bits = |a: IpAddr| -> (u128, u8) {
        match a {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let (d, w) = bits(dst);
    routes
        .iter()
        .filter(|r| r.prefix.is_ipv4() == dst.is_ipv4() && r.prefix_len <= w)
        .filter(|r| {
            let (p, _) = bits(r.prefix);
            let shift = u32::from(w - r.prefix_len);
            r.prefix_len == 0 || (p >> shift) == (d >> shift)
        })
        // Longest prefix, then lowest metric; ties by first listed.
        .min_by_key(|r| (std::cmp::Reverse(r.prefix_len), r.metric))
}

fn same_route(a: Option<&Route>, b: Option<&Route>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a.prefix_len, a.metric, a.ifindex) == (b.prefix_len, b.metric, b.ifindex),
        _ => false,
    }
}

/// Addresses drawn near each other so that prefixes overlap often.
fn arb_v4() -> impl Strategy<Value = Ipv4Addr> {
    (0u8..4, any::<u8>(), any::<u16>()).prop_map(|(a, b, c)| Ipv4Addr::new(10, a, b, (c & 0xff) as u8))
}

fn arb_v6() -> impl Strategy<Value = Ipv6Addr> {
    (0u16..4, any::<u16>(), any::<u64>()).prop_map(|(a, b, c)| {
        Ipv6Addr::from((0x2001_0db8u128 << 96) | (u128::from(a) << 80) | (u128::from(b) << 64) | u128::from(c))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn lpm_matches_linear_scan(
        r4 in prop::collection::vec((arb_v4(), 0u8..=32, 0u32..3), 0..60),
        r6 in prop::collection::vec((arb_v6(), 0u8..=128, 0u32..3), 0..60),
        q4 in prop::collection::vec(arb_v4(), 50),
        q6 in prop::collection::vec(arb_v6(), 50),
    ) {
        let mut routes = Vec::new();
        for (i, (p, len, metric)) in r4.iter().enumerate() {
            routes.push(Route { prefix: IpAddr::V4(*p), prefix_len: *len, kind: RouteKind::Unicast, ifindex: i as u32, gateway: None, mtu: None, metric: *metric });
        }
        for (i, (p, len, metric)) in r6.iter().enumerate() {
            routes.push(Route { prefix: IpAddr::V6(*p), prefix_len: *len, kind: RouteKind::Unicast, ifindex: 1000 + i as u32, gateway: None, mtu: None, metric: *metric });
        }
        let mut b = TablesBuilder::new();
        for r in &routes {
            b.route(r.clone());
        }
        let t = b.build();
        let queries = q4.iter().map(|a| IpAddr::V4(*a)).chain(q6.iter().map(|a| IpAddr::V6(*a)))
            .chain(routes.iter().map(|r| r.prefix));
        for q in queries {
            let got = t.lookup(q);
            let want = naive(&routes, q);
            prop_assert!(same_route(got, want), "{q}: got {got:?}, want {want:?}");
            if let Some(g) = got {
                // A tie (same prefix, same metric) may pick either route, so
                // compare the prefix the route stands for too.
                prop_assert_eq!(g.prefix_len, want.map_or(0, |w| w.prefix_len));
            }
        }
    }

    #[test]
    fn no_frame_makes_the_router_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), ttl in 0u8..3, v6 in any::<bool>()) {
        let t = tables(true);
        let mut r = router();
        // Random bytes behind a plausible Ethernet + IP start, and raw.
        let mut f = if v6 { udp("2001:db8:1::10", "2001:db8:77::1", 0) } else { udp("192.0.2.10", "8.8.8.8", 0) };
        f.truncate(ethernet::HEADER_LEN + 1);
        f.extend_from_slice(&bytes);
        if !v6 && f.len() > ethernet::HEADER_LEN + 8 {
            f[ethernet::HEADER_LEN + 8] = ttl;
        }
        for mut frame in [f, bytes.clone()] {
            let mut icmp = [0u8; BUF];
            let _ = r.check_ttl(&t, IN, &frame, 0, &mut icmp);
            let mut bufs = [[0u8; 300]; 2];
            let mut lens = [0usize; 2];
            let _ = r.forward(&t, IN, &mut frame, 0, &mut icmp, &mut FragmentBufs::new(&mut bufs, &mut lens));
        }
    }
}

/// The box's own addresses are every interface's (a loopback one too: the
/// kernel takes a frame to it on any interface), not its broadcasts.
#[test]
fn own_addresses_cover_every_interface() {
    let t = tables(false);
    let mut own: Vec<IpAddr> = t.own_addresses().collect();
    own.sort();
    let mut want = vec![
        v4("127.0.0.1"),
        v4("192.0.2.1"),
        v4("198.51.100.1"),
        v6("2001:db8:1::1"),
        v6("2001:db8:2::1"),
        v6("fe80::1"),
    ];
    want.sort();
    assert_eq!(own, want);
}
