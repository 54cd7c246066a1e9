//! Every drop reason is reachable, each from the smallest frame that shows it.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::BTreeSet;
use std::vec::Vec;

use super::frames::*;
use crate::build::{self, Eth};
use crate::classify::classify;
use crate::ethernet::MacAddr;
use crate::flow::proto;
use crate::tcp::TcpFlags;
use crate::{arp, ipv4, tcp, ParseError};

const ETH: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan: None };
const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

fn udp4() -> Vec<u8> {
    let mut b = vec![0u8; 128];
    let n = build::udp(&mut b, &ETH, A4, B4, 1000, 53, 10).unwrap();
    b.truncate(n);
    b
}

fn refix_ip4(f: &mut [u8]) {
    ipv4::Packet::new_unchecked(&mut f[14..]).fill_checksum();
}

/// IPv6 UDP frame whose payload starts with the given extension headers.
fn udp6_with_ext(first_nh: u8, ext: &[u8], udp_len: usize) -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    let n = build::udp(&mut b, &ETH, A6, B6, 1000, 53, udp_len.saturating_sub(8)).unwrap();
    b.truncate(n);
    let udp = b[54..].to_vec();
    b.truncate(54);
    b.extend_from_slice(ext);
    b.extend_from_slice(&udp[..udp_len.min(udp.len())]);
    b[20] = first_nh;
    let pl = (b.len() - 54) as u16;
    b[18..20].copy_from_slice(&pl.to_be_bytes());
    b
}

#[test]
fn every_parse_error_is_reachable() {
    let mut seen = BTreeSet::new();
    let mut expect = |r: Result<(), ParseError>, e: ParseError| {
        assert_eq!(r, Err(e), "expected {}", e.name());
        seen.insert(e);
    };
    let c = |f: &[u8]| classify(f).map(|_| ());

    expect(c(&UDP_DNS[..20]), ParseError::Truncated);
    expect(c(&vec![0u8; 70_000]), ParseError::FrameTooLong);
    expect(c(&ARP_REQUEST), ParseError::NotIp);

    let mut f = UDP_DNS[..12].to_vec();
    for _ in 0..3 {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
    }
    f.extend_from_slice(&UDP_DNS[12..]);
    expect(c(&f), ParseError::TooManyVlanTags);

    let mut f = udp4();
    f[14] = 0x65;
    expect(c(&f), ParseError::IpVersionMismatch);
    f[14] = 0x44;
    expect(c(&f), ParseError::Ipv4BadHeaderLen);
    let mut f = udp4();
    f[17] += 1;
    refix_ip4(&mut f);
    expect(c(&f), ParseError::Ipv4BadTotalLen);
    let mut f = udp4();
    f[22] -= 1; // TTL without checksum fix
    expect(c(&f), ParseError::Ipv4BadChecksum);
    let bad_opt: Vec<_> = ipv4::OptionIter::new(&[7, 9, 0]).collect();
    expect(bad_opt[0].map(|_| ()), ParseError::Ipv4BadOption);
    let mut f = udp4();
    f[26..30].copy_from_slice(&[224, 0, 0, 1]);
    refix_ip4(&mut f);
    expect(c(&f), ParseError::BadIpAddress);

    let mut f = udp6_with_ext(proto::UDP, &[], 18);
    f[19] += 1;
    expect(c(&f), ParseError::Ipv6BadPayloadLen);
    let mut ext = Vec::new();
    for i in 0..9 {
        ext.extend_from_slice(&[if i == 8 { proto::UDP } else { proto::IPV6_DEST_OPTS }, 0, 1, 4, 0, 0, 0, 0]);
    }
    expect(c(&udp6_with_ext(proto::IPV6_DEST_OPTS, &ext, 18)), ParseError::Ipv6ExtChainTooLong);
    let ext = [proto::IPV6_HOP_BY_HOP, 0, 1, 4, 0, 0, 0, 0, proto::UDP, 0, 1, 4, 0, 0, 0, 0];
    expect(c(&udp6_with_ext(proto::IPV6_DEST_OPTS, &ext, 18)), ParseError::Ipv6BadExtHeader);
    // First fragment holding only 4 bytes of the UDP header.
    let frag = [proto::UDP, 0, 0, 1, 0, 0, 0, 9];
    expect(c(&udp6_with_ext(proto::IPV6_FRAGMENT, &frag, 4)), ParseError::HeaderChainSplit);

    let mut b = [0u8; 128];
    let n = build::ip_fragment(&mut b, &ETH, A4, B4, proto::TCP, 9, 0, true, &[0u8; 16]).unwrap();
    expect(c(&b[..n]), ParseError::TinyFragment);

    let n = build::tcp(&mut b, &ETH, A4, B4, 1, 2, 3, 4, TcpFlags::ACK, 5, 0).unwrap();
    b[46] = 0xf0;
    expect(c(&b[..n]), ParseError::TcpBadHeaderLen);
    let bad_opt: Vec<_> = tcp::OptionIter::new(&[2, 0]).collect();
    expect(bad_opt[0].map(|_| ()), ParseError::TcpBadOption);

    let mut f = udp4();
    f[38..40].copy_from_slice(&4u16.to_be_bytes());
    expect(c(&f), ParseError::UdpBadLength);

    let n = build::ip_fragment(&mut b, &ETH, A4, B4, proto::ICMP, 0, 0, false, &[8, 0, 0, 0]).unwrap();
    expect(c(&b[..n]), ParseError::IcmpTruncated);
    let n = build::icmp_error(&mut b, &ETH, B4, A4, 3, 3, &udp4()[14..24]).unwrap();
    expect(c(&b[..n]), ParseError::IcmpErrorBadInner);

    let mut a = [0u8; 28];
    a[1] = 6;
    expect(arp::Repr::parse(&arp::Packet::new_checked(&a[..]).unwrap()).map(|_| ()), ParseError::ArpUnsupported);

    let all: BTreeSet<_> = ParseError::ALL.iter().copied().collect();
    let missing: Vec<_> = all.difference(&seen).map(|e| e.name()).collect();
    assert!(missing.is_empty(), "unreached: {missing:?}");
}
