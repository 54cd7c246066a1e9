//! Writes the fuzz seed corpus (`fuzz/seeds/`). Ignored by default; run with
//! `cargo test -p wire write_fuzz_seeds -- --ignored` after changing frames.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::frames::*;
use crate::build::{self, Eth};
use crate::ethernet::MacAddr;
use crate::tcp::TcpFlags;

#[test]
#[ignore = "writes files into the repository"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    std::fs::create_dir_all(&dir).unwrap();
    let put = |name: &str, b: &[u8]| std::fs::write(dir.join(name), b).unwrap();
    put("tcp_syn", &TCP_SYN);
    put("tcp_synack", &TCP_SYNACK);
    put("udp_dns", &UDP_DNS);
    put("icmp_echo_reply", &ICMP_ECHO_REPLY);
    put("icmp_port_unreach", &ICMP_PORT_UNREACH);
    put("arp_request", &ARP_REQUEST);
    put("icmpv6_ns", &ICMPV6_NS);
    put("icmpv6_echo_reply", &ICMPV6_ECHO_REPLY);
    put("ipv6_hbh_frag1", &IPV6_HBH_FRAG1);
    put("ipv6_hbh_frag2", &IPV6_HBH_FRAG2);
    put("mld2_hbh", &MLD2_HBH_GOPACKET);
    let e = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan: Some(100) };
    let (a6, b6) = (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)));
    let (a4, b4) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let mut b = [0u8; 1600];
    let n = build::tcp(&mut b, &e, a6, b6, 1, 2, 3, 4, TcpFlags::SYN, 5, 10).unwrap();
    put("vlan_tcp6_syn", &b[..n]);
    let mut inner = [0u8; 200];
    let m = build::udp(&mut inner, &e, a6, b6, 5000, 53, 40).unwrap();
    let n = build::icmp_too_big(&mut b, &e, b6, a6, 1280, &inner[18..m]).unwrap();
    put("vlan_icmp6_too_big", &b[..n]);
    let m = build::tcp(&mut inner, &e, a4, b4, 5000, 80, 1, 2, TcpFlags::ACK, 9, 30).unwrap();
    let n = build::icmp_error(&mut b, &e, b4, a4, 11, 0, &inner[18..m]).unwrap();
    put("vlan_icmp_time_exceeded", &b[..n]);
}
