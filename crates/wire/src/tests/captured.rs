//! Every format checked against frames a real network stack produced.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

use super::frames::*;
use crate::classify::{classify, Fragment, L4};
use crate::ethernet::{self, EtherType, MacAddr};
use crate::flow::{proto, FlowKey};
use crate::tcp::{TcpFlags, TcpOption};
use crate::{arp, icmpv4, icmpv6, ipv4, ipv6, tcp, udp, vlan, ParseError};

const HOST4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const HOST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

fn ip4(frame: &[u8]) -> ipv4::Packet<&[u8]> {
    let eth = ethernet::Frame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), EtherType::IPV4);
    let ip = ipv4::Packet::new_checked(&frame[ethernet::HEADER_LEN..]).unwrap();
    assert!(ip.verify_checksum());
    ip
}

fn ip6(frame: &[u8]) -> ipv6::Packet<&[u8]> {
    let eth = ethernet::Frame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), EtherType::IPV6);
    ipv6::Packet::new_checked(&frame[ethernet::HEADER_LEN..]).unwrap()
}

#[test]
fn tcp_syn_with_options() {
    let eth = ethernet::Frame::new_checked(&TCP_SYN[..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (HOST_MAC, PEER_MAC));
    let ip = ip4(&TCP_SYN);
    assert_eq!((ip.version(), ip.header_len(), ip.total_len()), (4, 20, 60));
    assert_eq!(
        (ip.ttl(), ip.protocol(), ip.dont_frag(), ip.more_frags(), ip.frag_offset()),
        (64, proto::TCP, true, false, 0)
    );
    assert_eq!((ip.src_addr(), ip.dst_addr()), (HOST4, PEER4));
    assert!(ip.options().is_empty());
    let t = tcp::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((t.src_port(), t.dst_port(), t.header_len()), (58324, 80, 40));
    assert_eq!(t.flags(), TcpFlags::SYN);
    assert_eq!((t.seq_number(), t.ack_number(), t.window_len()), (0xf939_bc63, 0, 64240));
    assert!(t.verify_checksum(IpAddr::V4(HOST4), IpAddr::V4(PEER4)));
    assert!(!t.verify_checksum(IpAddr::V4(PEER4), IpAddr::V4(PEER4)));
    let opts: Vec<_> = t.option_iter().map(Result::unwrap).collect();
    assert_eq!(
        opts,
        [
            TcpOption::MaxSegmentSize(1460),
            TcpOption::SackPermitted,
            TcpOption::Timestamps { tsval: 0x4351_1bfb, tsecr: 0 },
            TcpOption::NoOperation,
            TcpOption::WindowScale(10),
        ]
    );
    let m = classify(&TCP_SYN).unwrap();
    assert_eq!(m.key, FlowKey::v4(HOST4, PEER4, proto::TCP, 58324, 80));
    assert_eq!((m.vlan, m.l3_offset, m.l4_offset, m.l3_end, m.ttl, m.ecn, m.frag), (None, 14, 34, 74, 64, 0, None));
    assert_eq!(
        m.l4,
        L4::Tcp { flags: TcpFlags::SYN, seq: 0xf939_bc63, ack: 0, window: 64240, payload_len: 0, wscale: Some(10) }
    );
}

#[test]
fn tcp_synack() {
    let m = classify(&TCP_SYNACK).unwrap();
    assert_eq!(m.key, FlowKey::v4(HOST4, PEER4, proto::TCP, 8080, 50000));
    let L4::Tcp { flags, ack, wscale, .. } = m.l4 else { panic!("{:?}", m.l4) };
    assert_eq!(std::format!("{flags}"), "SA");
    assert_eq!((ack, wscale), (0x1122_3345, Some(10)));
    let ip = ip4(&TCP_SYNACK);
    let t = tcp::Packet::new_checked(ip.payload()).unwrap();
    assert!(t.verify_checksum_v4(HOST4, PEER4));
}

#[test]
fn udp_dns_query() {
    let ip = ip4(&UDP_DNS);
    let u = udp::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((u.src_port(), u.dst_port(), u.len()), (53000, 53, 37));
    assert!(u.verify_checksum_v4(HOST4, PEER4));
    assert_eq!(&u.payload()[12..25], b"\x07example\x03com\0");
    assert_eq!(udp::Repr::parse(&u).unwrap(), udp::Repr { src_port: 53000, dst_port: 53, payload_len: 29 });
    let m = classify(&UDP_DNS).unwrap();
    assert_eq!(m.key, FlowKey::v4(HOST4, PEER4, proto::UDP, 53000, 53));
    assert_eq!(m.l4, L4::Udp);
}

#[test]
fn padded_frame_excludes_padding() {
    // The DNS frame padded like a 60-byte minimum frame plus trailer junk.
    let mut f = UDP_DNS.to_vec();
    f.extend_from_slice(&[0xee; 9]);
    let m = classify(&f).unwrap();
    assert_eq!(usize::from(m.l3_end), UDP_DNS.len());
    assert_eq!(ipv4::Packet::new_checked(&f[14..]).unwrap().payload().len(), 37);
}

#[test]
fn icmp_echo_reply() {
    let ip = ip4(&ICMP_ECHO_REPLY);
    let i = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((i.msg_type(), i.code(), i.echo_ident(), i.echo_seq_no()), (icmpv4::msg::ECHO_REPLY, 0, 0x4242, 1));
    assert!(i.verify_checksum());
    assert_eq!(i.embedded(), None);
    let m = classify(&ICMP_ECHO_REPLY).unwrap();
    assert_eq!(m.key, FlowKey::v4(HOST4, PEER4, proto::ICMP, 0, 0x4242));
    assert_eq!(m.l4, L4::IcmpEcho { request: false });
}

#[test]
fn icmp_port_unreachable() {
    let ip = ip4(&ICMP_PORT_UNREACH);
    assert_eq!(ip.dscp(), 0x30); // kernel sends ICMP errors as CS6
    let i = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert!(i.verify_checksum());
    assert_eq!((i.msg_type(), i.code()), (icmpv4::msg::DEST_UNREACHABLE, icmpv4::unreachable::PORT));
    let inner = ipv4::Packet::new_checked(i.embedded().unwrap()).unwrap();
    assert!(inner.verify_checksum());
    assert_eq!((inner.src_addr(), inner.ident()), (PEER4, 0x1234));
    let m = classify(&ICMP_PORT_UNREACH).unwrap();
    assert_eq!(m.key, FlowKey::v4(HOST4, PEER4, proto::ICMP, 0, 0));
    assert_eq!(
        m.l4,
        L4::IcmpError {
            msg_type: 3,
            code: 3,
            inner: FlowKey::v4(PEER4, HOST4, proto::UDP, 40000, 33434),
            inner_l3_offset: 42,
        }
    );
}

#[test]
fn arp_request() {
    let eth = ethernet::Frame::new_checked(&ARP_REQUEST[..]).unwrap();
    assert_eq!((eth.dst_addr(), eth.ethertype()), (MacAddr::BROADCAST, EtherType::ARP));
    let p = arp::Packet::new_checked(eth.payload()).unwrap();
    let r = arp::Repr::parse(&p).unwrap();
    assert_eq!(
        r,
        arp::Repr {
            operation: arp::op::REQUEST,
            sender_hardware_addr: HOST_MAC,
            sender_protocol_addr: HOST4,
            target_hardware_addr: MacAddr::ZERO,
            target_protocol_addr: Ipv4Addr::new(192, 0, 2, 77),
        }
    );
    let mut buf = [0u8; 28];
    r.emit(&mut arp::Packet::new_unchecked(&mut buf[..])).unwrap();
    assert_eq!(&buf[..], eth.payload());
    assert_eq!(classify(&ARP_REQUEST), Err(ParseError::NotIp));
}

#[test]
fn icmpv6_neighbour_solicitation() {
    let ip = ip6(&ICMPV6_NS);
    assert_eq!((ip.hop_limit(), ip.next_header(), ip.payload_len()), (255, proto::ICMPV6, 32));
    assert_eq!(ip.dst_addr(), "ff02::1:ff00:77".parse::<Ipv6Addr>().unwrap());
    let i = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(i.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
    assert!(icmpv6::is_ndp(i.msg_type()));
    assert_eq!(i.nd_target(), Some("2001:db8::77".parse().unwrap()));
    let m = classify(&ICMPV6_NS).unwrap();
    assert_eq!(m.l4, L4::IcmpOther { msg_type: icmpv6::msg::NEIGHBOR_SOLICIT, code: 0 });
    assert_eq!((m.key.src_port, m.key.dst_port, m.ttl), (0, 0, 255));
}

#[test]
fn icmpv6_neighbour_advertisement_public_capture() {
    let ip = ip6(&NDP_NA_GOPACKET);
    let i = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(i.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
    assert_eq!(i.nd_target(), Some(ip.src_addr()));
    assert_eq!(classify(&NDP_NA_GOPACKET).unwrap().l4, L4::IcmpOther { msg_type: 136, code: 0 });
}

#[test]
fn mldv2_with_hop_by_hop_public_capture() {
    let ip = ip6(&MLD2_HBH_GOPACKET);
    let chain = ip.walk_chain().unwrap();
    assert_eq!((chain.upper_proto, chain.upper_offset, chain.ext_count, chain.frag), (proto::ICMPV6, 8, 1, None));
    let hbh = ipv6::OptionsHeader::new_checked(ip.payload()).unwrap();
    let opts: Vec<_> = hbh.option_iter().map(Result::unwrap).collect();
    assert_eq!(opts, [ipv6::Ipv6Option::Other { kind: 5, data: &[0, 0] }, ipv6::Ipv6Option::PadN(0)]);
    let i = icmpv6::Packet::new_checked(&ip.payload()[8..]).unwrap();
    assert!(i.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
    let m = classify(&MLD2_HBH_GOPACKET).unwrap();
    assert_eq!(m.l4, L4::IcmpOther { msg_type: icmpv6::msg::MLDV2_REPORT, code: 0 });
    assert_eq!(m.l4_offset, 14 + 40 + 8);
}

#[test]
fn icmpv6_echo_reply() {
    let ip = ip6(&ICMPV6_ECHO_REPLY);
    let i = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(i.verify_checksum(&HOST6, &PEER6));
    let m = classify(&ICMPV6_ECHO_REPLY).unwrap();
    assert_eq!(m.key, FlowKey::v6(HOST6, PEER6, proto::ICMPV6, 0, 0x77));
    assert_eq!(m.l4, L4::IcmpEcho { request: false });
}

#[test]
fn ipv6_hop_by_hop_and_fragments() {
    let ip = ip6(&IPV6_HBH_FRAG1);
    assert_eq!(ip.next_header(), proto::IPV6_HOP_BY_HOP);
    let hbh = ipv6::OptionsHeader::new_checked(ip.payload()).unwrap();
    assert_eq!((hbh.next_header(), hbh.header_len()), (proto::IPV6_FRAGMENT, 8));
    let fh = ipv6::FragmentHeader::new_checked(&ip.payload()[8..]).unwrap();
    assert_eq!((fh.next_header(), fh.frag_offset(), fh.more_frags(), fh.ident()), (proto::UDP, 0, true, 0x83fe_22bc));
    let chain = ip.walk_chain().unwrap();
    assert_eq!(chain.upper_offset, 16);
    assert_eq!(chain.ext_count, 2);

    let m1 = classify(&IPV6_HBH_FRAG1).unwrap();
    assert_eq!(m1.key, FlowKey::v6(HOST6, PEER6, proto::UDP, 53001, 5353));
    assert_eq!(m1.frag, Some(Fragment { ident: 0x83fe_22bc, offset: 0, more: true, data_offset: 14 + 40 + 16 }));
    assert_eq!((m1.l4, m1.l4_offset, m1.l3_end), (L4::Udp, 14 + 40 + 16, 1294));

    let m2 = classify(&IPV6_HBH_FRAG2).unwrap();
    assert_eq!(m2.key, FlowKey::v6(HOST6, PEER6, proto::UDP, 0, 0));
    assert_eq!(m2.frag, Some(Fragment { ident: 0x83fe_22bc, offset: 1224, more: false, data_offset: 14 + 40 + 16 }));
    assert_eq!((m2.l4, m2.l4_offset), (L4::Fragment, 14 + 40 + 16)); // hop-by-hop is repeated: unfragmentable part
    assert!(m2.is_later_fragment());

    // Reassemble and check the UDP checksum the kernel computed over the whole datagram.
    let mut dgram = m1.l4(&IPV6_HBH_FRAG1).to_vec();
    assert_eq!(dgram.len(), 1224);
    dgram.extend_from_slice(m2.l4(&IPV6_HBH_FRAG2));
    let u = udp::Packet::new_checked(&dgram[..]).unwrap();
    assert_eq!(u.len(), 2008);
    assert!(u.verify_checksum_v6(&HOST6, &PEER6));
}

#[test]
fn vlan_tagged_and_qinq() {
    // The captured DNS frame re-tagged as a trunk port would send it
    // (the test kernel has no 802.1Q support to produce one itself).
    let mut f = UDP_DNS[..12].to_vec();
    f.extend_from_slice(&[0x81, 0x00, 0x60, 0x64]);
    f.extend_from_slice(&UDP_DNS[12..]);
    let tag = vlan::Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((tag.pcp(), tag.dei(), tag.vid(), tag.ethertype()), (3, false, 100, EtherType::IPV4));
    let m = classify(&f).unwrap();
    assert_eq!((m.vlan, m.l3_offset), (Some(100), 18));
    assert_eq!(m.key, classify(&UDP_DNS).unwrap().key);

    let mut q = UDP_DNS[..12].to_vec();
    q.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64]);
    q.extend_from_slice(&UDP_DNS[12..]);
    let m = classify(&q).unwrap();
    assert_eq!((m.vlan, m.l3_offset, m.l4_offset), (Some(10), 22, 42));
}

#[test]
fn rewrite_captured_syn_incrementally() {
    // NAT the captured SYN's source and check both checksums against a recompute.
    let mut f = TCP_SYN;
    let new_src = Ipv4Addr::new(203, 0, 113, 7);
    let (old_src, old_port) = (HOST4, 58324u16);
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut f[14..]);
        let c = crate::checksum::update_u32(ip.checksum(), old_src.to_bits(), new_src.to_bits());
        ip.set_src_addr(new_src);
        ip.set_checksum(c);
        assert!(ip.verify_checksum());
    }
    {
        let mut t = tcp::Packet::new_unchecked(&mut f[34..]);
        let c = crate::checksum::update_u32(t.checksum(), old_src.to_bits(), new_src.to_bits());
        let c = crate::checksum::update_u16(c, old_port, 40000);
        t.set_src_port(40000);
        t.set_checksum(c);
        assert!(t.verify_checksum_v4(new_src, PEER4));
    }
}
