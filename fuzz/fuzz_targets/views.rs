//! `new_checked` on every view type over the same bytes, then every getter
//! and iterator: once a view is checked, no content may make it panic.
#![no_main]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use wire::{arp, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp, udp, vlan};

fuzz_target!(|b: &[u8]| {
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
});
