//! Property tests: build → classify round trips, robustness on arbitrary and
//! mutated input, incremental checksums, and `Repr` round trips.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

use proptest::prelude::*;

use super::frames::*;
use crate::build::{self, Eth};
use crate::checksum;
use crate::classify::{classify, Meta, L4};
use crate::ethernet::{self, EtherType, MacAddr};
use crate::flow::{proto, FlowKey};
use crate::tcp::{self, TcpFlags};
use crate::{arp, icmpv4, icmpv6, ipv4, ipv6, udp, vlan};

fn src_v4() -> impl Strategy<Value = Ipv4Addr> {
    // Any unicast-looking source: classify refuses multicast and broadcast.
    (1u8..=223, any::<[u8; 3]>()).prop_map(|(a, r)| Ipv4Addr::new(a, r[0], r[1], r[2]))
}

fn src_v6() -> impl Strategy<Value = Ipv6Addr> {
    (0u8..=0xfe, any::<[u8; 15]>()).prop_map(|(a, r)| {
        let mut o = [0u8; 16];
        o[0] = a;
        o[1..].copy_from_slice(&r);
        Ipv6Addr::from(o)
    })
}

/// (src, dst) of one family, both unicast so either may answer.
fn addrs() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (src_v4(), src_v4()).prop_map(|(s, d)| (IpAddr::V4(s), IpAddr::V4(d))),
        (src_v6(), src_v6()).prop_map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d))),
    ]
}

fn eth() -> impl Strategy<Value = Eth> {
    (any::<[u8; 6]>(), any::<[u8; 6]>(), proptest::option::of(0u16..4096)).prop_map(|(s, d, vlan)| Eth {
        src: MacAddr(s),
        dst: MacAddr(d),
        vlan,
    })
}

#[derive(Clone, Debug)]
enum Kind {
    Tcp { flags: u8, seq: u32, ack: u32, window: u16 },
    Udp,
    Echo { request: bool, seq: u16 },
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u16>()).prop_map(|(flags, seq, ack, window)| Kind::Tcp {
            flags,
            seq,
            ack,
            window
        }),
        Just(Kind::Udp),
        (any::<bool>(), any::<u16>()).prop_map(|(request, seq)| Kind::Echo { request, seq }),
    ]
}

fn build_frame(buf: &mut [u8], e: &Eth, (s, d): (IpAddr, IpAddr), sp: u16, dp: u16, k: &Kind, len: usize) -> usize {
    match *k {
        Kind::Tcp { flags, seq, ack, window } => {
            build::tcp(buf, e, s, d, sp, dp, seq, ack, TcpFlags(flags), window, len).unwrap()
        }
        Kind::Udp => build::udp(buf, e, s, d, sp, dp, len).unwrap(),
        Kind::Echo { request, seq } => build::icmp_echo(buf, e, s, d, request, sp, seq, len).unwrap(),
    }
}

fn key_of(s: IpAddr, d: IpAddr, p: u8, sp: u16, dp: u16) -> FlowKey {
    match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => FlowKey::v4(s, d, p, sp, dp),
        (IpAddr::V6(s), IpAddr::V6(d)) => FlowKey::v6(s, d, p, sp, dp),
        _ => unreachable!(),
    }
}

/// Exercise every view accessor reachable from a `Meta`; must never panic.
fn touch_views(frame: &[u8], m: &Meta) {
    assert!(m.l3_offset <= m.l4_offset && m.l4_offset <= m.l3_end && usize::from(m.l3_end) <= frame.len());
    let l3 = m.l3(frame);
    let l4 = m.l4(frame);
    let mut acc = 0u64;
    match m.key.family {
        crate::Family::V4 => {
            let ip = ipv4::Packet::new_checked(l3).unwrap();
            acc += u64::from(ip.ttl()) + ip.option_iter().count() as u64 + ip.payload().len() as u64;
        }
        crate::Family::V6 => {
            let ip = ipv6::Packet::new_checked(l3).unwrap();
            let c = ip.walk_chain().unwrap();
            acc += u64::from(c.upper_offset) + u64::from(ip.flow_label());
        }
    }
    match m.l4 {
        L4::Tcp { .. } => {
            let t = tcp::Packet::new_checked(l4).unwrap();
            acc += t.option_iter().count() as u64 + t.payload().len() as u64 + u64::from(t.urgent_at());
        }
        L4::Udp => {
            assert!(l4.len() >= 8);
            acc += u64::from(udp::Packet::new_unchecked(l4).src_port());
        }
        L4::IcmpEcho { .. } | L4::IcmpOther { .. } => {
            let i = icmpv4::Packet::new_checked(l4).unwrap();
            acc += u64::from(i.echo_ident());
        }
        L4::IcmpError { inner_l3_offset, .. } => {
            let inner = &frame[usize::from(inner_l3_offset)..usize::from(m.l3_end)];
            let i6 = icmpv6::Packet::new_checked(l4).unwrap();
            acc += inner.len() as u64 + u64::from(i6.mtu()) + i6.embedded().map_or(0, |e| e.len() as u64);
        }
        L4::Other | L4::Fragment => {}
    }
    core::hint::black_box(acc);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn build_then_classify(e in eth(), a in addrs(), sp in any::<u16>(), dp in any::<u16>(), k in kind(), len in 0usize..300) {
        let mut buf = [0u8; 1600];
        let n = build_frame(&mut buf, &e, a, sp, dp, &k, len);
        let f = &buf[..n];
        let m = classify(f).unwrap();
        touch_views(f, &m);
        prop_assert_eq!(m.vlan, e.vlan);
        prop_assert_eq!(usize::from(m.l3_end), n);
        prop_assert_eq!(m.ttl, 64);
        prop_assert_eq!(m.frag, None);
        let (s, d) = a;
        let v6 = s.is_ipv6();
        let l4 = m.l4(f);
        match k {
            Kind::Tcp { flags, seq, ack, window } => {
                prop_assert_eq!(m.key, key_of(s, d, proto::TCP, sp, dp));
                let syn = TcpFlags(flags).contains(TcpFlags::SYN);
                prop_assert_eq!(m.l4, L4::Tcp {
                    flags: TcpFlags(flags), seq, ack, window, payload_len: len as u16,
                    wscale: if syn { Some(7) } else { None },
                });
                prop_assert!(tcp::Packet::new_checked(l4).unwrap().verify_checksum(s, d));
            }
            Kind::Udp => {
                prop_assert_eq!(m.key, key_of(s, d, proto::UDP, sp, dp));
                prop_assert!(udp::Packet::new_checked(l4).unwrap().verify_checksum(s, d));
            }
            Kind::Echo { request, .. } => {
                let p = if v6 { proto::ICMPV6 } else { proto::ICMP };
                let (ksp, kdp) = if request { (sp, 0) } else { (0, sp) };
                prop_assert_eq!(m.key, key_of(s, d, p, ksp, kdp));
                prop_assert_eq!(m.l4, L4::IcmpEcho { request });
                if let (IpAddr::V6(s6), IpAddr::V6(d6)) = a {
                    prop_assert!(icmpv6::Packet::new_checked(l4).unwrap().verify_checksum(&s6, &d6));
                } else {
                    prop_assert!(icmpv4::Packet::new_checked(l4).unwrap().verify_checksum());
                }
            }
        }
        if !v6 {
            prop_assert!(ipv4::Packet::new_checked(m.l3(f)).unwrap().verify_checksum());
        }
    }

    #[test]
    fn icmp_error_carries_the_original_key(
        e in eth(), a in addrs(), sp in any::<u16>(), dp in any::<u16>(), k in kind(), len in 0usize..1500, code in any::<u8>(), mtu in 68u32..65535,
    ) {
        let mut orig = [0u8; 1600];
        let n = build_frame(&mut orig, &e, a, sp, dp, &k, len);
        let om = classify(&orig[..n]).unwrap();
        let invoking = om.l3(&orig[..n]);
        let (s, d) = a;
        // The original's destination (or a router) answers the original's source.
        let mut buf = [0u8; 1600];
        let (t, n2) = if om.key.family == crate::Family::V4 {
            (icmpv4::msg::TIME_EXCEEDED, build::icmp_error(&mut buf, &e, d, s, icmpv4::msg::TIME_EXCEEDED, code, invoking).unwrap())
        } else {
            (icmpv6::msg::PACKET_TOO_BIG, build::icmp_too_big(&mut buf, &e, d, s, mtu, invoking).unwrap())
        };
        let m = classify(&buf[..n2]).unwrap();
        touch_views(&buf[..n2], &m);
        let L4::IcmpError { msg_type, inner, inner_l3_offset, .. } = m.l4 else { panic!("{:?}", m.l4) };
        prop_assert_eq!(msg_type, t);
        prop_assert_eq!(inner, om.key);
        prop_assert_eq!(inner_l3_offset, m.l4_offset + 8);
        let ip_len = usize::from(m.l3_end - m.l3_offset);
        let limit = if om.key.family == crate::Family::V4 { 576 } else { 1280 };
        prop_assert!(ip_len <= limit);
        if let (IpAddr::V6(s6), IpAddr::V6(d6)) = (d, s) {
            let i = icmpv6::Packet::new_checked(m.l4(&buf[..n2])).unwrap();
            prop_assert!(i.verify_checksum(&s6, &d6));
            prop_assert_eq!(i.mtu(), mtu);
        }
    }

    #[test]
    fn fragments_classify(e in eth(), a in addrs(), sp in any::<u16>(), dp in any::<u16>(), len in 1usize..3000, ident in any::<u16>(), cut in 1usize..200) {
        let (s, d) = a;
        let mut dgram = [0u8; 3100];
        let dl = build::udp_datagram(&mut dgram, s, d, sp, dp, len).unwrap();
        let step = cut * 8;
        let mut off = 0;
        let mut buf = [0u8; 3200];
        let mut reassembled = Vec::new();
        while off < dl {
            let end = (off + step).min(dl);
            let more = end < dl;
            let n = build::ip_fragment(&mut buf, &e, s, d, proto::UDP, u32::from(ident), off as u16, more, &dgram[off..end]).unwrap();
            let m = classify(&buf[..n]).unwrap();
            touch_views(&buf[..n], &m);
            match m.frag {
                Some(f) => prop_assert_eq!((f.ident, usize::from(f.offset), f.more), (u32::from(ident), off, more)),
                // IPv4 offset 0 without MF is no fragment at all (IPv6 keeps an atomic fragment header).
                None => prop_assert!(off == 0 && !more && s.is_ipv4()),
            }
            if off == 0 {
                prop_assert_eq!(m.key, key_of(s, d, proto::UDP, sp, dp));
                prop_assert_eq!(m.l4, L4::Udp);
            } else {
                prop_assert_eq!(m.key, key_of(s, d, proto::UDP, 0, 0));
                prop_assert_eq!(m.l4, L4::Fragment);
            }
            reassembled.extend_from_slice(m.l4(&buf[..n]));
            off = end;
        }
        prop_assert_eq!(&reassembled[..], &dgram[..dl]);
        prop_assert!(udp::Packet::new_checked(&reassembled[..]).unwrap().verify_checksum(s, d));
    }

    #[test]
    fn classify_never_panics_on_noise(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(m) = classify(&b) {
            touch_views(&b, &m);
        }
    }

    #[test]
    fn classify_never_panics_on_ip_noise(et in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100)], ver in 0u8..16, tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&et.to_be_bytes());
        b.push(ver << 4 | 5);
        b.extend_from_slice(&tail);
        if let Ok(m) = classify(&b) {
            touch_views(&b, &m);
        }
    }

    #[test]
    fn classify_never_panics_on_mutations(
        e in eth(), a in addrs(), sp in any::<u16>(), dp in any::<u16>(), k in kind(), len in 0usize..100,
        flips in proptest::collection::vec((any::<usize>(), 0u8..8), 0..6), cut in any::<usize>(), fix in any::<bool>(),
    ) {
        let mut buf = [0u8; 512];
        let n = build_frame(&mut buf, &e, a, sp, dp, &k, len);
        // Also mutate an ICMP error quoting the frame, to reach the inner parser.
        let mut err = [0u8; 700];
        let (s, d) = a;
        let inner = classify(&buf[..n]).unwrap().l3(&buf[..n]).to_vec();
        let n2 = build::icmp_error(&mut err, &e, d, s, 3, 1, &inner).unwrap();
        for (frame, len) in [(&mut buf[..], n), (&mut err[..], n2)] {
            let l3 = if e.vlan.is_some() { 18 } else { 14 };
            for &(pos, bit) in &flips {
                frame[pos % len] ^= 1 << bit;
            }
            if fix && frame.len() > l3 + 20 && frame[l3] >> 4 == 4 {
                // Keep the IPv4 checksum valid so mutations reach deeper layers.
                let hl = usize::from(frame[l3] & 0x0f) * 4;
                if hl >= 20 && l3 + hl <= len {
                    ipv4::Packet::new_unchecked(&mut frame[l3..len]).fill_checksum();
                }
            }
            let f = &frame[..len - cut % (len + 1)];
            if let Ok(m) = classify(f) {
                touch_views(f, &m);
            }
        }
    }

    #[test]
    fn incremental_checksum_matches_recompute_v4(
        e in eth(), s in src_v4(), d in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(), tcp_or_udp in any::<bool>(), len in 0usize..200,
        new_src in any::<u32>(), new_port in any::<u16>(), no_udp_csum in any::<bool>(),
    ) {
        let d = Ipv4Addr::from_bits(d);
        let new_src = Ipv4Addr::from_bits(new_src);
        let mut buf = [0u8; 400];
        let n = if tcp_or_udp {
            build::tcp(&mut buf, &e, s.into(), d.into(), sp, dp, 1, 2, TcpFlags::ACK, 3, len).unwrap()
        } else {
            build::udp(&mut buf, &e, s.into(), d.into(), sp, dp, len).unwrap()
        };
        let m = classify(&buf[..n]).unwrap();
        let (l3, l4) = (usize::from(m.l3_offset), usize::from(m.l4_offset));
        if !tcp_or_udp && no_udp_csum {
            udp::Packet::new_unchecked(&mut buf[l4..n]).set_checksum(0);
        }
        // Incremental: source address in the IP header, address + port in the transport checksum.
        let mut inc = buf;
        {
            let mut ip = ipv4::Packet::new_unchecked(&mut inc[l3..n]);
            let c = checksum::update_u32(ip.checksum(), s.to_bits(), new_src.to_bits());
            ip.set_src_addr(new_src);
            ip.set_checksum(c);
        }
        if tcp_or_udp {
            let mut t = tcp::Packet::new_unchecked(&mut inc[l4..n]);
            let c = checksum::update_bytes(t.checksum(), &s.octets(), &new_src.octets());
            let c = checksum::update_u16(c, sp, new_port);
            t.set_src_port(new_port);
            t.set_checksum(c);
        } else {
            let mut u = udp::Packet::new_unchecked(&mut inc[l4..n]);
            let c = checksum::update_udp(u.checksum(), &s.octets(), &new_src.octets());
            let c = checksum::update_udp(c, &sp.to_be_bytes(), &new_port.to_be_bytes());
            u.set_src_port(new_port);
            u.set_checksum(c);
        }
        // Full recompute of the same rewrite.
        let mut full = buf;
        {
            let mut ip = ipv4::Packet::new_unchecked(&mut full[l3..n]);
            ip.set_src_addr(new_src);
            ip.fill_checksum();
        }
        if tcp_or_udp {
            let mut t = tcp::Packet::new_unchecked(&mut full[l4..n]);
            t.set_src_port(new_port);
            t.fill_checksum_v4(new_src, d);
        } else {
            let mut u = udp::Packet::new_unchecked(&mut full[l4..n]);
            u.set_src_port(new_port);
            if !no_udp_csum {
                u.fill_checksum_v4(new_src, d);
            }
        }
        prop_assert_eq!(&inc[..n], &full[..n]);
        prop_assert!(ipv4::Packet::new_checked(&inc[l3..n]).unwrap().verify_checksum());
    }

    #[test]
    fn incremental_checksum_matches_recompute_v6(
        e in eth(), s in src_v6(), d in any::<u128>(), sp in any::<u16>(), dp in any::<u16>(), tcp_or_udp in any::<bool>(), len in 0usize..200,
        new_dst in any::<u128>(), new_port in any::<u16>(),
    ) {
        let (d, new_dst) = (Ipv6Addr::from_bits(d), Ipv6Addr::from_bits(new_dst));
        let mut buf = [0u8; 400];
        let n = if tcp_or_udp {
            build::tcp(&mut buf, &e, s.into(), d.into(), sp, dp, 1, 2, TcpFlags::ACK, 3, len).unwrap()
        } else {
            build::udp(&mut buf, &e, s.into(), d.into(), sp, dp, len).unwrap()
        };
        let m = classify(&buf[..n]).unwrap();
        let (l3, l4) = (usize::from(m.l3_offset), usize::from(m.l4_offset));
        let mut inc = buf;
        ipv6::Packet::new_unchecked(&mut inc[l3..n]).set_dst_addr(new_dst);
        let mut full = inc;
        if tcp_or_udp {
            let mut t = tcp::Packet::new_unchecked(&mut inc[l4..n]);
            let c = checksum::update_bytes(t.checksum(), &d.octets(), &new_dst.octets());
            t.set_checksum(checksum::update_u16(c, dp, new_port));
            t.set_dst_port(new_port);
            let mut t = tcp::Packet::new_unchecked(&mut full[l4..n]);
            t.set_dst_port(new_port);
            t.fill_checksum_v6(&s, &new_dst);
        } else {
            let mut u = udp::Packet::new_unchecked(&mut inc[l4..n]);
            let c = checksum::update_udp(u.checksum(), &d.octets(), &new_dst.octets());
            u.set_checksum(checksum::update_udp(c, &dp.to_be_bytes(), &new_port.to_be_bytes()));
            u.set_dst_port(new_port);
            let mut u = udp::Packet::new_unchecked(&mut full[l4..n]);
            u.set_dst_port(new_port);
            u.fill_checksum_v6(&s, &new_dst);
        }
        prop_assert_eq!(&inc[..n], &full[..n]);
    }

    #[test]
    fn ipv4_repr_roundtrip(
        s in any::<u32>(), d in any::<u32>(), protocol in any::<u8>(), payload_len in 0u16..=65515, ttl in any::<u8>(),
        dscp in 0u8..64, ecn in 0u8..4, ident in any::<u16>(), dont_frag in any::<bool>(), more_frags in any::<bool>(), off in 0u16..8192,
    ) {
        let r = ipv4::Repr {
            src_addr: Ipv4Addr::from_bits(s), dst_addr: Ipv4Addr::from_bits(d), protocol, payload_len, ttl, dscp, ecn,
            ident, dont_frag, more_frags, frag_offset: off * 8,
        };
        let mut b = vec![0u8; r.buffer_len() + usize::from(payload_len)];
        r.emit(&mut ipv4::Packet::new_unchecked(&mut b[..])).unwrap();
        let p = ipv4::Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(ipv4::Repr::parse(&p).unwrap(), r);
    }

    #[test]
    fn ipv6_repr_roundtrip(s in any::<u128>(), d in any::<u128>(), nh in any::<u8>(), payload_len in 0u16..2000, hop in any::<u8>(), tc in any::<u8>(), fl in 0u32..0x10_0000) {
        let r = ipv6::Repr {
            src_addr: Ipv6Addr::from_bits(s), dst_addr: Ipv6Addr::from_bits(d), next_header: nh, payload_len,
            hop_limit: hop, traffic_class: tc, flow_label: fl,
        };
        let mut b = vec![0u8; r.buffer_len() + usize::from(payload_len)];
        r.emit(&mut ipv6::Packet::new_unchecked(&mut b[..])).unwrap();
        prop_assert_eq!(ipv6::Repr::parse(&ipv6::Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn small_reprs_roundtrip(
        s in any::<[u8; 6]>(), d in any::<[u8; 6]>(), et in any::<u16>(), pcp in 0u8..8, dei in any::<bool>(), vid in 0u16..4096,
        op in any::<u16>(), spa in any::<u32>(), tpa in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(), ulen in 0u16..500,
    ) {
        let er = ethernet::Repr { src_addr: MacAddr(s), dst_addr: MacAddr(d), ethertype: EtherType(et) };
        let mut b = [0u8; 14];
        er.emit(&mut ethernet::Frame::new_unchecked(&mut b[..])).unwrap();
        prop_assert_eq!(ethernet::Repr::parse(&ethernet::Frame::new_checked(&b[..]).unwrap()).unwrap(), er);

        let vr = vlan::Repr { pcp, dei, vid, ethertype: EtherType(et) };
        let mut b = [0u8; 4];
        vr.emit(&mut vlan::Packet::new_unchecked(&mut b[..])).unwrap();
        prop_assert_eq!(vlan::Repr::parse(&vlan::Packet::new_checked(&b[..]).unwrap()).unwrap(), vr);

        let ar = arp::Repr {
            operation: op, sender_hardware_addr: MacAddr(s), sender_protocol_addr: Ipv4Addr::from_bits(spa),
            target_hardware_addr: MacAddr(d), target_protocol_addr: Ipv4Addr::from_bits(tpa),
        };
        let mut b = [0u8; 28];
        ar.emit(&mut arp::Packet::new_unchecked(&mut b[..])).unwrap();
        prop_assert_eq!(arp::Repr::parse(&arp::Packet::new_checked(&b[..]).unwrap()).unwrap(), ar);

        let ur = udp::Repr { src_port: sp, dst_port: dp, payload_len: ulen };
        let mut b = vec![0u8; ur.buffer_len()];
        ur.emit(&mut udp::Packet::new_unchecked(&mut b[..])).unwrap();
        prop_assert_eq!(udp::Repr::parse(&udp::Packet::new_checked(&b[..]).unwrap()).unwrap(), ur);
    }
}

#[test]
fn udp_checksum_that_computes_to_zero_is_sent_as_ffff() {
    // Find the port rewrite whose full recompute yields 0 (sent as 0xffff) and
    // check that the incremental update agrees; then rewrite back.
    let (s, d) = (Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(192, 0, 2, 9));
    let mut orig = [0u8; 64];
    let n = build::udp_datagram(&mut orig, s.into(), d.into(), 1234, 53, 20).unwrap();
    let old = udp::Packet::new_checked(&orig[..n]).unwrap().checksum();
    let mut hit = false;
    for port in 0..=u16::MAX {
        let mut full = orig;
        let mut u = udp::Packet::new_unchecked(&mut full[..n]);
        u.set_src_port(port);
        u.fill_checksum_v4(s, d);
        if u.checksum() != 0xffff {
            continue;
        }
        hit = true;
        let inc = checksum::update_udp(old, &1234u16.to_be_bytes(), &port.to_be_bytes());
        assert_eq!(inc, 0xffff);
        assert!(u.verify_checksum_v4(s, d));
        // And back: from the 0xffff form to the original value.
        assert_eq!(checksum::update_udp(0xffff, &port.to_be_bytes(), &1234u16.to_be_bytes()), old);
    }
    assert!(hit);
}

#[test]
fn captured_frames_survive_every_truncation_and_bit_flip() {
    for f in [
        &TCP_SYN[..],
        &UDP_DNS,
        &ICMP_ECHO_REPLY,
        &ICMP_PORT_UNREACH,
        &ICMPV6_NS,
        &IPV6_HBH_FRAG1[..200],
        &IPV6_HBH_FRAG2[..120],
        &MLD2_HBH_GOPACKET,
    ] {
        for cut in 0..=f.len() {
            if let Ok(m) = classify(&f[..cut]) {
                touch_views(&f[..cut], &m);
            }
        }
        for i in 0..f.len() * 8 {
            let mut g = f.to_vec();
            g[i / 8] ^= 1 << (i % 8);
            if let Ok(m) = classify(&g) {
                touch_views(&g, &m);
            }
        }
    }
}
