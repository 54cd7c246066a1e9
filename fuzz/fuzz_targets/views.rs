//! `new_checked` on every view type over the same bytes, then every getter
//! and iterator: once a view is checked, no content may make it panic.
//! Also: every `Repr` that parses emits back to the same `Repr`, and a valid
//! checksum stays valid after an RFC 1624 incremental update and after
//! `fill_checksum` (the NAT rewrite path).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run views` (see fuzz/README.md).
#![no_main]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use wire::{arp, checksum, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp, udp, vlan};

fuzz_target!(|b: &[u8]| {
    views(b);
    round_trips(b);
    rewrites(b);
});

fn views(b: &[u8]) {
    let (v4, v6) = (
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    );
    if let Ok(f) = ethernet::Frame::new_checked(b) {
        let _ = (
            f.src_addr(),
            f.dst_addr(),
            f.ethertype(),
            f.payload().len(),
            ethernet::Repr::parse(&f),
        );
    }
    if let Ok(p) = vlan::Packet::new_checked(b) {
        let _ = (
            p.pcp(),
            p.dei(),
            p.vid(),
            p.ethertype(),
            p.payload().len(),
            vlan::Repr::parse(&p),
        );
    }
    if let Ok(p) = arp::Packet::new_checked(b) {
        let _ = (
            p.operation(),
            p.sender_hardware_addr(),
            p.target_protocol_addr(),
            arp::Repr::parse(&p),
        );
    }
    if let Ok(p) = ipv4::Packet::new_checked(b) {
        let _ = (
            p.header_len(),
            p.total_len(),
            p.frag_offset(),
            p.src_addr(),
            p.verify_checksum(),
        );
        let _ = (
            p.options().len(),
            p.option_iter().count(),
            p.payload().len(),
            ipv4::Repr::parse(&p),
        );
    }
    if let Ok(p) = ipv6::Packet::new_checked(b) {
        let _ = (
            p.flow_label(),
            p.payload().len(),
            p.walk_chain(),
            ipv6::Repr::parse(&p),
        );
    }
    if let Ok(h) = ipv6::OptionsHeader::new_checked(b) {
        let _ = (h.next_header(), h.header_len(), h.option_iter().count());
    }
    if let Ok(h) = ipv6::RoutingHeader::new_checked(b) {
        let _ = (h.routing_type(), h.segments_left(), h.data().len());
    }
    if let Ok(h) = ipv6::FragmentHeader::new_checked(b) {
        let _ = (h.frag_offset(), h.more_frags(), h.ident());
    }
    if let Ok(t) = tcp::Packet::new_checked(b) {
        let _ = (
            t.seq_number(),
            t.flags(),
            t.options().len(),
            t.option_iter().count(),
            t.payload().len(),
        );
        let _ = (
            t.verify_checksum(v4, v4),
            t.verify_checksum(v6, v6),
            t.verify_checksum(v4, v6),
        );
    }
    if let Ok(u) = udp::Packet::new_checked(b) {
        let _ = (
            u.len(),
            u.payload().len(),
            u.verify_checksum(v4, v4),
            u.verify_checksum(v6, v6),
            udp::Repr::parse(&u),
        );
    }
    if let Ok(i) = icmpv4::Packet::new_checked(b) {
        let _ = (
            i.msg_type(),
            i.echo_ident(),
            i.next_hop_mtu(),
            i.embedded(),
            i.verify_checksum(),
        );
    }
    if let Ok(i) = icmpv6::Packet::new_checked(b) {
        let _ = (
            i.mtu(),
            i.pointer(),
            i.nd_target(),
            i.embedded(),
            i.verify_checksum(&Ipv6Addr::LOCALHOST, &Ipv6Addr::UNSPECIFIED),
        );
    }
}

/// `Repr::parse` → `emit` into a fresh buffer → `Repr::parse` gives the same `Repr`.
fn round_trips(b: &[u8]) {
    let mut out = vec![0u8; 20 + b.len() + 64];
    if let Ok(r) = ethernet::Frame::new_checked(b).and_then(|f| ethernet::Repr::parse(&f)) {
        let mut f = ethernet::Frame::new_unchecked(&mut out[..r.buffer_len()]);
        r.emit(&mut f).expect("emit a parsed ethernet::Repr");
        assert_eq!(ethernet::Repr::parse(&ethernet::Frame::new_checked(&out[..r.buffer_len()]).unwrap()), Ok(r));
    }
    if let Ok(r) = vlan::Packet::new_checked(b).and_then(|p| vlan::Repr::parse(&p)) {
        let mut p = vlan::Packet::new_unchecked(&mut out[..r.buffer_len()]);
        r.emit(&mut p).expect("emit a parsed vlan::Repr");
        assert_eq!(vlan::Repr::parse(&vlan::Packet::new_checked(&out[..r.buffer_len()]).unwrap()), Ok(r));
    }
    if let Ok(r) = arp::Packet::new_checked(b).and_then(|p| arp::Repr::parse(&p)) {
        let mut p = arp::Packet::new_unchecked(&mut out[..r.buffer_len()]);
        r.emit(&mut p).expect("emit a parsed arp::Repr");
        assert_eq!(arp::Repr::parse(&arp::Packet::new_checked(&out[..r.buffer_len()]).unwrap()), Ok(r));
    }
    if let Ok(r) = ipv4::Packet::new_checked(b).and_then(|p| ipv4::Repr::parse(&p)) {
        let n = r.buffer_len() + usize::from(r.payload_len);
        out.resize(out.len().max(n), 0);
        let mut p = ipv4::Packet::new_unchecked(&mut out[..n]);
        r.emit(&mut p).expect("emit a parsed ipv4::Repr");
        assert_eq!(ipv4::Repr::parse(&ipv4::Packet::new_checked(&out[..n]).unwrap()), Ok(r));
    }
    if let Ok(r) = ipv6::Packet::new_checked(b).and_then(|p| ipv6::Repr::parse(&p)) {
        let n = r.buffer_len() + usize::from(r.payload_len);
        out.resize(out.len().max(n), 0);
        let mut p = ipv6::Packet::new_unchecked(&mut out[..n]);
        r.emit(&mut p).expect("emit a parsed ipv6::Repr");
        assert_eq!(ipv6::Repr::parse(&ipv6::Packet::new_checked(&out[..n]).unwrap()), Ok(r));
    }
    if let Ok(r) = udp::Packet::new_checked(b).and_then(|p| udp::Repr::parse(&p)) {
        let n = r.buffer_len();
        out.resize(out.len().max(n), 0);
        let mut p = udp::Packet::new_unchecked(&mut out[..n]);
        r.emit(&mut p).expect("emit a parsed udp::Repr");
        assert_eq!(udp::Repr::parse(&udp::Packet::new_checked(&out[..n]).unwrap()), Ok(r));
    }
}

/// NAT-style rewrites keep valid checksums valid.
fn rewrites(b: &[u8]) {
    let (a4, n4) = (Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(192, 0, 2, 200));
    let mut buf = b.to_vec();
    if let Ok(mut p) = ipv4::Packet::new_checked(&mut buf[..]) {
        if p.verify_checksum() {
            let old = u32::from(p.src_addr());
            let new = old.rotate_left(7) ^ 0x5a5a_a5a5;
            let c = checksum::update_u32(p.checksum(), old, new);
            p.set_src_addr(Ipv4Addr::from(new));
            p.set_checksum(c);
            assert!(p.verify_checksum(), "update_u32 broke the IPv4 header checksum");
            let old_ttl_word = u16::from_be_bytes([p.ttl(), p.protocol()]);
            let ttl = p.ttl().wrapping_sub(1);
            let c = checksum::update_u16(p.checksum(), old_ttl_word, u16::from_be_bytes([ttl, p.protocol()]));
            p.set_ttl(ttl);
            p.set_checksum(c);
            assert!(p.verify_checksum(), "update_u16 broke the IPv4 header checksum");
        }
        p.fill_checksum();
        assert!(p.verify_checksum(), "fill_checksum did not verify");
    }
    let mut buf = b.to_vec();
    if let Ok(mut t) = tcp::Packet::new_checked(&mut buf[..]) {
        if t.verify_checksum_v4(a4, n4) {
            let old = t.src_port();
            let new = old.wrapping_mul(31).wrapping_add(1);
            let c = checksum::update_u16(t.checksum(), old, new);
            t.set_src_port(new);
            t.set_checksum(c);
            assert!(t.verify_checksum_v4(a4, n4), "update_u16 broke the TCP checksum");
            // Source NAT: the pseudo header's address changes.
            let c = checksum::update_u32(t.checksum(), u32::from(a4), u32::from(n4));
            t.set_checksum(c);
            assert!(t.verify_checksum_v4(n4, n4), "update_u32 (pseudo header) broke the TCP checksum");
        }
        if u16::try_from(t.payload().len() + usize::from(t.header_len())).is_ok() {
            t.fill_checksum_v4(a4, n4);
            assert!(t.verify_checksum_v4(a4, n4), "tcp fill_checksum_v4 did not verify");
            t.fill_checksum_v6(&Ipv6Addr::LOCALHOST, &Ipv6Addr::UNSPECIFIED);
            assert!(t.verify_checksum_v6(&Ipv6Addr::LOCALHOST, &Ipv6Addr::UNSPECIFIED), "tcp fill_checksum_v6 did not verify");
        }
    }
    let mut buf = b.to_vec();
    if let Ok(mut u) = udp::Packet::new_checked(&mut buf[..]) {
        let v6 = (Ipv6Addr::LOCALHOST, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        if u.checksum() != 0 && u.verify_checksum_v6(&v6.0, &v6.1) {
            let old = u.dst_port().to_be_bytes();
            let new = u.dst_port().wrapping_add(1000).to_be_bytes();
            let c = checksum::update_udp(u.checksum(), &old, &new);
            u.set_dst_port(u16::from_be_bytes(new));
            u.set_checksum(c);
            assert!(u.verify_checksum_v6(&v6.0, &v6.1), "update_udp broke the UDP checksum");
        }
        u.fill_checksum_v4(a4, n4);
        assert!(u.verify_checksum_v4(a4, n4), "udp fill_checksum_v4 did not verify");
        u.fill_checksum_v6(&v6.0, &v6.1);
        assert!(u.verify_checksum_v6(&v6.0, &v6.1), "udp fill_checksum_v6 did not verify");
    }
    let mut buf = b.to_vec();
    if let Ok(mut i) = icmpv4::Packet::new_checked(&mut buf[..]) {
        i.fill_checksum();
        assert!(i.verify_checksum(), "icmpv4 fill_checksum did not verify");
    }
    let mut buf = b.to_vec();
    if let Ok(mut i) = icmpv6::Packet::new_checked(&mut buf[..]) {
        i.fill_checksum(&Ipv6Addr::LOCALHOST, &Ipv6Addr::UNSPECIFIED);
        assert!(i.verify_checksum(&Ipv6Addr::LOCALHOST, &Ipv6Addr::UNSPECIFIED), "icmpv6 fill_checksum did not verify");
    }
}
