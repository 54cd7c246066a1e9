//! ICMP errors the router originates: which ones, to whom, from where.
//!
//! Types and codes (RFC 792, RFC 1812 §5.2.7.1, RFC 4443 §3):
//!
//! | situation | ICMPv4 | ICMPv6 |
//! |---|---|---|
//! | TTL / hop limit expired | 11/0 time exceeded | 3/0 time exceeded |
//! | no route | 3/0 net unreachable | 1/0 no route |
//! | `unreachable` route | 3/1 host unreachable | 1/0 no route |
//! | `prohibit` route | 3/13 administratively prohibited | 1/1 administratively prohibited |
//! | larger than the egress MTU | 3/4 fragmentation needed + next-hop MTU (RFC 1191) | 2/0 packet too big + MTU (RFC 8201) |
//!
//! **Never** about (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)): an ICMP error
//! (ICMPv4 types 3, 4, 5, 11, 12; ICMPv6 types 0-127), a fragment other than
//! the first, a packet sent to a multicast or broadcast IP address or as a
//! link-layer multicast/broadcast, or a packet whose source does not name a
//! single host. (RFC 4443 allows packet-too-big about multicast, but torwart
//! does not forward multicast.)
//!
//! **Addresses.** Source: the box's address on the interface the offending
//! packet came in on (its first IPv4 address; its first global IPv6 address,
//! else a link-local one), so traceroute shows the interface facing the
//! sender. Destination: the offending packet's source. The frame goes back
//! out of the ingress interface to the MAC the packet came from: that
//! neighbour just sent us the packet, so it can deliver the answer (and no
//! route or neighbour lookup can fail on the error path).
//!
//! The quote is the offending IP packet as the router saw it, cut to keep
//! the error within 576 (IPv4) or 1280 (IPv6) bytes (`wire::build`).

use std::net::{IpAddr, Ipv4Addr};

use wire::build::{self, Eth};
use wire::flow::proto;
use wire::{ethernet, icmpv4, icmpv6, ipv4, ipv6};

use crate::reason::IcmpSuppressed;
use crate::tables::{LocalKind, RouteTables};

/// The error to send, independent of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IcmpError {
    TimeExceeded,
    NetUnreachable,
    HostUnreachable,
    AdminProhibited,
    /// Carries the MTU to announce.
    TooBig(u32),
}

impl IcmpError {
    /// (type, code) for errors other than `TooBig`.
    fn type_code(self, v6: bool) -> (u8, u8) {
        use IcmpError::*;
        match (self, v6) {
            (TimeExceeded, false) => (icmpv4::msg::TIME_EXCEEDED, icmpv4::time_exceeded::TTL),
            (NetUnreachable, false) => (icmpv4::msg::DEST_UNREACHABLE, icmpv4::unreachable::NET),
            (HostUnreachable, false) => (icmpv4::msg::DEST_UNREACHABLE, icmpv4::unreachable::HOST),
            (AdminProhibited, false) => (icmpv4::msg::DEST_UNREACHABLE, icmpv4::unreachable::ADMIN_PROHIBITED),
            (TooBig(_), false) => (icmpv4::msg::DEST_UNREACHABLE, icmpv4::unreachable::FRAG_NEEDED),
            (TimeExceeded, true) => (icmpv6::msg::TIME_EXCEEDED, ICMPV6_HOP_LIMIT_EXCEEDED),
            (NetUnreachable | HostUnreachable, true) => (icmpv6::msg::DEST_UNREACHABLE, icmpv6::unreachable::NO_ROUTE),
            (AdminProhibited, true) => (icmpv6::msg::DEST_UNREACHABLE, icmpv6::unreachable::ADMIN_PROHIBITED),
            (TooBig(_), true) => (icmpv6::msg::PACKET_TOO_BIG, 0),
        }
    }
}

/// ICMPv6 time exceeded code 0 (RFC 4443 §3.3).
const ICMPV6_HOP_LIMIT_EXCEEDED: u8 = 0;
/// ICMPv6 types below this are errors (RFC 4443 §2.1).
const ICMPV6_INFO_MIN: u8 = 128;
/// 240.0.0.0/4, reserved (class E): not a host's source address.
const CLASS_E_FIRST_OCTET: u8 = 240;

/// What the router knows about the offending packet: its place in the
/// frame and its addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offending {
    /// Start of the IP header in the frame.
    pub l3: usize,
    /// End of the IP packet in the frame.
    pub l3_end: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// Whether RFC 1812 / RFC 4443 allow an error about this packet.
pub(crate) fn eligible(tables: &RouteTables, frame: &[u8], p: &Offending) -> Result<(), IcmpSuppressed> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| IcmpSuppressed::Unparseable)?;
    if eth.dst_addr().is_multicast() {
        return Err(IcmpSuppressed::NotUnicast);
    }
    let ip = frame.get(p.l3..p.l3_end).ok_or(IcmpSuppressed::Unparseable)?;
    match (p.src, p.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            if dst.is_multicast() || dst.is_broadcast() || tables.local_kind(p.dst) == Some(LocalKind::Broadcast) {
                return Err(IcmpSuppressed::NotUnicast);
            }
            if !v4_names_a_host(src) || tables.local_kind(p.src) == Some(LocalKind::Broadcast) {
                return Err(IcmpSuppressed::BadSource);
            }
            let pkt = ipv4::Packet::new_checked(ip).map_err(|_| IcmpSuppressed::Unparseable)?;
            if pkt.frag_offset() != 0 {
                return Err(IcmpSuppressed::NonFirstFragment);
            }
            if pkt.protocol() == proto::ICMP {
                // Too short to carry a type: treat as an error, say nothing.
                let t = pkt.payload().first().copied().ok_or(IcmpSuppressed::AboutIcmpError)?;
                if icmpv4::is_error(t) {
                    return Err(IcmpSuppressed::AboutIcmpError);
                }
            }
            Ok(())
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            if dst.is_multicast() {
                return Err(IcmpSuppressed::NotUnicast);
            }
            if src.is_unspecified() || src.is_multicast() || src.is_loopback() {
                return Err(IcmpSuppressed::BadSource);
            }
            let pkt = ipv6::Packet::new_checked(ip).map_err(|_| IcmpSuppressed::Unparseable)?;
            let chain = pkt.walk_chain().map_err(|_| IcmpSuppressed::Unparseable)?;
            if chain.frag.is_some_and(|f| f.offset != 0) {
                return Err(IcmpSuppressed::NonFirstFragment);
            }
            if chain.upper_proto == proto::ICMPV6 {
                let t = pkt
                    .payload()
                    .get(usize::from(chain.upper_offset))
                    .copied()
                    .ok_or(IcmpSuppressed::AboutIcmpError)?;
                if t < ICMPV6_INFO_MIN {
                    return Err(IcmpSuppressed::AboutIcmpError);
                }
            }
            Ok(())
        }
        _ => Err(IcmpSuppressed::Unparseable),
    }
}

/// A source address that names one host: not 0/8 "this network", loopback,
/// multicast, limited broadcast or class E.
fn v4_names_a_host(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first != 0 && !a.is_loopback() && !a.is_multicast() && first < CLASS_E_FIRST_OCTET
}

/// Write the error frame into `out`; returns its length. The caller has
/// checked eligibility and the rate limit.
pub(crate) fn write(
    tables: &RouteTables,
    ingress: u32,
    frame: &[u8],
    p: &Offending,
    kind: IcmpError,
    out: &mut [u8],
) -> Result<usize, IcmpSuppressed> {
    let link = tables.link(ingress).ok_or(IcmpSuppressed::IngressUnknown)?;
    let src: IpAddr = match p.src {
        IpAddr::V4(_) => link.icmp_source_v4().map(IpAddr::V4),
        IpAddr::V6(_) => link.icmp_source_v6().map(IpAddr::V6),
    }
    .ok_or(IcmpSuppressed::NoSourceAddress)?;
    // Back to the neighbour that sent us the packet.
    let sender = ethernet::Frame::new_checked(frame).map_err(|_| IcmpSuppressed::Unparseable)?.src_addr();
    let eth = Eth { src: link.mac, dst: sender, vlan: None };
    let quote = frame.get(p.l3..p.l3_end).ok_or(IcmpSuppressed::Unparseable)?;
    let res = match kind {
        IcmpError::TooBig(mtu) => build::icmp_too_big(out, &eth, src, p.src, mtu, quote),
        k => {
            let (t, c) = k.type_code(p.src.is_ipv6());
            build::icmp_error(out, &eth, src, p.src, t, c, quote)
        }
    };
    res.map_err(|_| IcmpSuppressed::BufferTooSmall)
}
