//! Crafting valid frames into a caller's buffer, for tests, benchmarks and
//! fuzz seeds.
//!
//! Every function writes one complete Ethernet frame (with an optional
//! 802.1Q tag) at the start of `buf` and returns its length; nothing is
//! allocated. Headers carry correct lengths and checksums, IPv4 TTL and IPv6
//! hop limit are 64, the IPv4 identification is 0 unless a fragment asks for
//! one, and payload byte `i` is `i as u8`, so output is deterministic. Frames
//! are not padded to the 60-byte Ethernet minimum. The address family follows
//! `src`/`dst` (which must agree, else [`BuildError::FamilyMismatch`]).
//!
//! A TCP segment with SYN set carries the options MSS 1460, NOP, window
//! scale 7 (8 bytes), like a real opening segment.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::BuildError;
use crate::ethernet::{self, EtherType, MacAddr};
use crate::flow::proto;
use crate::tcp::{self, TcpFlags};
use crate::{icmpv4, icmpv6, ipv4, ipv6, udp, vlan};

/// Link-layer parameters of a crafted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eth {
    pub src: MacAddr,
    pub dst: MacAddr,
    /// Add one 802.1Q tag with this VID.
    pub vlan: Option<u16>,
}

/// Most bytes of the invoking packet an ICMPv4 error quotes (576 - 20 - 8, RFC 792/1812).
pub const ICMPV4_QUOTE_MAX: usize = 576 - ipv4::HEADER_LEN - icmpv4::HEADER_LEN;
/// Most bytes of the invoking packet an ICMPv6 error quotes (1280 - 40 - 8, RFC 4443).
pub const ICMPV6_QUOTE_MAX: usize = 1280 - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;

/// Options a SYN carries: MSS 1460, NOP, window scale 7.
const SYN_OPTIONS: [u8; 8] = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];

/// Fill `b` with the deterministic payload pattern.
pub fn fill_pattern(b: &mut [u8]) {
    for (i, x) in b.iter_mut().enumerate() {
        *x = i as u8;
    }
}

#[derive(Clone, Copy)]
enum Fam {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn family(src: IpAddr, dst: IpAddr) -> Result<Fam, BuildError> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ok(Fam::V4(s, d)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ok(Fam::V6(s, d)),
        _ => Err(BuildError::FamilyMismatch),
    }
}

/// Fragment parameters for [`ip_headers`].
#[derive(Clone, Copy)]
struct Frag {
    ident: u32,
    offset: u16,
    more: bool,
}

/// Write Ethernet, VLAN and IP headers for `l4_len` bytes of `protocol`;
/// returns (offset of the transport header, end of the frame).
fn ip_headers(
    buf: &mut [u8],
    eth: &Eth,
    fam: Fam,
    protocol: u8,
    l4_len: usize,
    frag: Option<Frag>,
) -> Result<(usize, usize), BuildError> {
    let ethertype = match fam {
        Fam::V4(..) => EtherType::IPV4,
        Fam::V6(..) => EtherType::IPV6,
    };
    let l2 = ethernet::HEADER_LEN + if eth.vlan.is_some() { vlan::HEADER_LEN } else { 0 };
    let l3_hdr = match fam {
        Fam::V4(..) => ipv4::HEADER_LEN,
        Fam::V6(..) => ipv6::HEADER_LEN + if frag.is_some() { ipv6::FRAGMENT_HEADER_LEN } else { 0 },
    };
    let ip_payload = l3_hdr - if matches!(fam, Fam::V4(..)) { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN } + l4_len;
    let payload_len = u16::try_from(ip_payload).map_err(|_| BuildError::BadArgument)?;
    if matches!(fam, Fam::V4(..)) && usize::from(payload_len) + ipv4::HEADER_LEN > usize::from(u16::MAX) {
        return Err(BuildError::BadArgument);
    }
    if frag.is_some_and(|f| f.offset % 8 != 0) {
        return Err(BuildError::BadArgument);
    }
    let end = l2 + l3_hdr + l4_len;
    if buf.len() < end {
        return Err(BuildError::BufferTooSmall);
    }
    let outer = ethernet::Repr {
        src_addr: eth.src,
        dst_addr: eth.dst,
        ethertype: if eth.vlan.is_some() { EtherType::VLAN } else { ethertype },
    };
    outer.emit(&mut ethernet::Frame::new_unchecked(&mut buf[..]))?;
    if let Some(vid) = eth.vlan {
        let tag = vlan::Repr { pcp: 0, dei: false, vid, ethertype };
        tag.emit(&mut vlan::Packet::new_unchecked(&mut buf[ethernet::HEADER_LEN..]))?;
    }
    match fam {
        Fam::V4(s, d) => {
            let ident = match frag {
                Some(f) => u16::try_from(f.ident).map_err(|_| BuildError::BadArgument)?,
                None => 0,
            };
            let r = ipv4::Repr {
                src_addr: s,
                dst_addr: d,
                protocol,
                payload_len,
                ttl: 64,
                dscp: 0,
                ecn: 0,
                ident,
                dont_frag: false,
                more_frags: frag.is_some_and(|f| f.more),
                frag_offset: frag.map_or(0, |f| f.offset),
            };
            r.emit(&mut ipv4::Packet::new_unchecked(&mut buf[l2..end]))?;
        }
        Fam::V6(s, d) => {
            let r = ipv6::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: if frag.is_some() { proto::IPV6_FRAGMENT } else { protocol },
                payload_len,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            };
            r.emit(&mut ipv6::Packet::new_unchecked(&mut buf[l2..end]))?;
            if let Some(f) = frag {
                let h = &mut buf[l2 + ipv6::HEADER_LEN..l2 + ipv6::HEADER_LEN + ipv6::FRAGMENT_HEADER_LEN];
                ipv6::FragmentHeader::new_unchecked(h).set(protocol, f.offset, f.more, f.ident);
            }
        }
    }
    Ok((l2 + l3_hdr, end))
}

/// A TCP segment with `payload_len` pattern bytes.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    buf: &mut [u8],
    eth: &Eth,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    window: u16,
    payload_len: usize,
) -> Result<usize, BuildError> {
    let fam = family(src, dst)?;
    let opts: &[u8] = if flags.contains(TcpFlags::SYN) { &SYN_OPTIONS } else { &[] };
    let hl = tcp::HEADER_LEN + opts.len();
    let (l4, end) = ip_headers(buf, eth, fam, proto::TCP, hl + payload_len, None)?;
    let mut t = tcp::Packet::new_unchecked(&mut buf[l4..end]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_header_len(hl as u8);
    t.set_flags(flags);
    t.set_window_len(window);
    t.set_urgent_at(0);
    t.options_mut().copy_from_slice(opts);
    fill_pattern(t.payload_mut());
    t.fill_checksum(src, dst);
    Ok(end)
}

/// Just a UDP datagram (header + `payload_len` pattern bytes, checksum over
/// the pseudo header of `src`/`dst`), without IP or Ethernet: the input for
/// [`ip_fragment`]. Returns its length.
pub fn udp_datagram(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Result<usize, BuildError> {
    family(src, dst)?;
    let len = udp::HEADER_LEN + payload_len;
    let payload_len = u16::try_from(payload_len).map_err(|_| BuildError::BadArgument)?;
    if buf.len() < len {
        return Err(BuildError::BufferTooSmall);
    }
    let mut u = udp::Packet::new_unchecked(&mut buf[..len]);
    udp::Repr { src_port: sport, dst_port: dport, payload_len }.emit(&mut u)?;
    fill_pattern(u.payload_mut());
    u.fill_checksum(src, dst);
    Ok(len)
}

/// A UDP datagram with `payload_len` pattern bytes.
pub fn udp(
    buf: &mut [u8],
    eth: &Eth,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Result<usize, BuildError> {
    let fam = family(src, dst)?;
    let (l4, end) = ip_headers(buf, eth, fam, proto::UDP, udp::HEADER_LEN + payload_len, None)?;
    udp_datagram(&mut buf[l4..end], src, dst, sport, dport, payload_len)?;
    Ok(end)
}

/// One fragment of an IP packet whose transport data (header included) is
/// `datagram`: `data` is this fragment's slice of it, `offset` its position
/// in bytes (a multiple of 8), `more` whether fragments follow. IPv4 uses the
/// low 16 bits of `ident` (larger values are refused); IPv6 adds a fragment
/// header.
#[allow(clippy::too_many_arguments)]
pub fn ip_fragment(
    buf: &mut [u8],
    eth: &Eth,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    ident: u32,
    offset: u16,
    more: bool,
    data: &[u8],
) -> Result<usize, BuildError> {
    let fam = family(src, dst)?;
    let frag = Frag { ident, offset, more };
    let (l4, end) = ip_headers(buf, eth, fam, protocol, data.len(), Some(frag))?;
    buf[l4..end].copy_from_slice(data);
    Ok(end)
}

/// Write an ICMP/ICMPv6 message whose 4 type-specific bytes are `rest` and
/// whose body is `body` (or, if `None`, `pattern_len` pattern bytes).
#[allow(clippy::too_many_arguments)]
fn icmp(
    buf: &mut [u8],
    eth: &Eth,
    src: IpAddr,
    dst: IpAddr,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    body: Option<&[u8]>,
    pattern_len: usize,
) -> Result<usize, BuildError> {
    let fam = family(src, dst)?;
    let body_len = body.map_or(pattern_len, <[u8]>::len);
    let protocol = match fam {
        Fam::V4(..) => proto::ICMP,
        Fam::V6(..) => proto::ICMPV6,
    };
    let (l4, end) = ip_headers(buf, eth, fam, protocol, icmpv4::HEADER_LEN + body_len, None)?;
    let msg = &mut buf[l4..end];
    match body {
        Some(b) => msg[icmpv4::HEADER_LEN..].copy_from_slice(b),
        None => fill_pattern(&mut msg[icmpv4::HEADER_LEN..]),
    }
    match fam {
        Fam::V4(..) => {
            let mut p = icmpv4::Packet::new_unchecked(msg);
            p.set_msg_type(msg_type);
            p.set_code(code);
            p.set_rest_of_header(rest);
            p.fill_checksum();
        }
        Fam::V6(s, d) => {
            let mut p = icmpv6::Packet::new_unchecked(msg);
            p.set_msg_type(msg_type);
            p.set_code(code);
            p.set_pointer(u32::from_be_bytes(rest));
            p.fill_checksum(&s, &d);
        }
    }
    Ok(end)
}

/// An ICMP (IPv4) or ICMPv6 echo request or reply with `payload_len` pattern bytes.
#[allow(clippy::too_many_arguments)]
pub fn icmp_echo(
    buf: &mut [u8],
    eth: &Eth,
    src: IpAddr,
    dst: IpAddr,
    request: bool,
    ident: u16,
    seq: u16,
    payload_len: usize,
) -> Result<usize, BuildError> {
    let msg_type = match (family(src, dst)?, request) {
        (Fam::V4(..), true) => icmpv4::msg::ECHO_REQUEST,
        (Fam::V4(..), false) => icmpv4::msg::ECHO_REPLY,
        (Fam::V6(..), true) => icmpv6::msg::ECHO_REQUEST,
        (Fam::V6(..), false) => icmpv6::msg::ECHO_REPLY,
    };
    let i = ident.to_be_bytes();
    let s = seq.to_be_bytes();
    icmp(buf, eth, src, dst, msg_type, 0, [i[0], i[1], s[0], s[1]], None, payload_len)
}

fn quote(fam: Fam, invoking: &[u8]) -> &[u8] {
    let max = match fam {
        Fam::V4(..) => ICMPV4_QUOTE_MAX,
        Fam::V6(..) => ICMPV6_QUOTE_MAX,
    };
    &invoking[..invoking.len().min(max)]
}

/// An ICMP/ICMPv6 error quoting `invoking_ip_packet` (from its IP header on),
/// cut so the error's IP packet stays within 576 (IPv4) or 1280 (IPv6)
/// bytes. The 4 type-specific bytes are zero.
#[allow(clippy::too_many_arguments)]
pub fn icmp_error(
    buf: &mut [u8],
    eth: &Eth,
    src: IpAddr,
    dst: IpAddr,
    msg_type: u8,
    code: u8,
    invoking_ip_packet: &[u8],
) -> Result<usize, BuildError> {
    let q = quote(family(src, dst)?, invoking_ip_packet);
    icmp(buf, eth, src, dst, msg_type, code, [0; 4], Some(q), 0)
}

/// "Fragmentation needed" (ICMPv4 type 3 code 4, next-hop MTU, RFC 1191) or
/// ICMPv6 "packet too big" (type 2, RFC 4443), quoting like [`icmp_error`].
/// An IPv4 `mtu` above 65535 is refused.
pub fn icmp_too_big(
    buf: &mut [u8],
    eth: &Eth,
    src: IpAddr,
    dst: IpAddr,
    mtu: u32,
    invoking_ip_packet: &[u8],
) -> Result<usize, BuildError> {
    let fam = family(src, dst)?;
    let q = quote(fam, invoking_ip_packet);
    match fam {
        Fam::V4(..) => {
            let m = u16::try_from(mtu).map_err(|_| BuildError::BadArgument)?.to_be_bytes();
            let (t, c) = (icmpv4::msg::DEST_UNREACHABLE, icmpv4::unreachable::FRAG_NEEDED);
            icmp(buf, eth, src, dst, t, c, [0, 0, m[0], m[1]], Some(q), 0)
        }
        Fam::V6(..) => icmp(buf, eth, src, dst, icmpv6::msg::PACKET_TOO_BIG, 0, mtu.to_be_bytes(), Some(q), 0),
    }
}
