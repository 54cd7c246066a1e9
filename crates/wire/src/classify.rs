//! The hot-path entry point: one pass over an untrusted frame, yielding the
//! offsets and the flow key the engine needs.
//!
//! [`classify`] is the single place where frames from the wire are checked.
//! It walks Ethernet, up to two VLAN tags (802.1Q or 802.1ad), the IPv4
//! header (whose checksum it verifies) or the IPv6 header and its extension
//! chain, and the transport header, and refuses anything inconsistent with a
//! [`ParseError`] that the engine counts as a drop reason. It copies nothing
//! but header fields and allocates nothing; its cost is bounded by the
//! header sizes (the IPv6 walk by [`ipv6::MAX_EXT_HEADERS`] and
//! [`ipv6::MAX_EXT_BYTES`]), never by the payload. Transport checksums are
//! not verified here (that is the end hosts' business and the NIC's).
//!
//! Invariants of a returned [`Meta`]: `l3_offset ≤ l4_offset ≤ l3_end ≤
//! frame.len()`; for TCP the full header (options included) lies within
//! `l4_offset..l3_end`; for UDP and ICMP the first 8 bytes do; for an ICMP
//! error `inner_l3_offset + (inner IP header) + 8 ≤ l3_end`. So the engine
//! can index the frame with these offsets, or use the views'
//! `new_unchecked`, without further checks.
//!
//! Fragments (RFC 791, RFC 8200 §4.5): a non-first fragment has no transport
//! header, so its key has ports 0 and [`L4::Fragment`]; a first fragment must
//! hold the whole transport header (RFC 1858, RFC 7112), else
//! [`ParseError::TinyFragment`] (IPv4) or [`ParseError::HeaderChainSplit`]
//! (IPv6). The UDP length of a first fragment refers to the whole datagram and
//! is not checked against the fragment.
//!
//! ICMP errors carry the key of the packet they quote, *as it was sent* (its
//! source is the host that sent the original packet), so that the engine can
//! look up the connection with `inner` (or `inner.reversed()`). Only one
//! level is looked into: an ICMP error quoting an ICMP error gets ports 0.

pub use crate::error::ParseError;
use crate::ethernet::{self, EtherType};
use crate::flow::{proto, FlowKey};
use crate::tcp::{self, TcpFlags};
use crate::{icmpv4, icmpv6, ipv4, ipv6, udp, vlan};

/// Fragment fields of an IPv4 header or an IPv6 fragment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// IPv4 identification (16 bits, zero-extended) or IPv6 identification.
    pub ident: u32,
    /// Offset in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Where this fragment's share of the datagram starts in the frame: after
    /// the IPv4 header, or after the IPv6 fragment header (headers that
    /// follow it belong to the fragmented part).
    pub data_offset: u16,
}

/// What the transport layer of a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        window: u16,
        /// Bytes after the TCP header within the IP packet (of this fragment).
        payload_len: u16,
        /// Window scale option; parsed only on segments with SYN set.
        wscale: Option<u8>,
    },
    Udp,
    /// ICMP or ICMPv6 echo; the key's ports are both the identifier.
    IcmpEcho {
        request: bool,
    },
    /// ICMP or ICMPv6 error quoting an invoking packet.
    IcmpError {
        msg_type: u8,
        code: u8,
        /// Key of the invoking packet as it was sent (its src is the original sender).
        inner: FlowKey,
        /// Start of the quoted IP header in the frame.
        inner_l3_offset: u16,
    },
    /// Any other ICMP/ICMPv6 message (NDP, router advertisement, MLD, ...).
    IcmpOther {
        msg_type: u8,
        code: u8,
    },
    /// Any other protocol (GRE, ESP, ...); ports 0.
    Other,
    /// Non-first fragment: no transport header.
    Fragment,
}

/// What [`classify`] learned about a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// VID of the outermost VLAN tag, if any (0 for a priority tag).
    pub vlan: Option<u16>,
    /// Start of the IP header in the frame.
    pub l3_offset: u16,
    /// Start of the transport header (for a non-first fragment, of its data).
    pub l4_offset: u16,
    /// End of the IP packet in the frame (Ethernet padding excluded).
    pub l3_end: u16,
    /// 5-tuple in packet direction.
    pub key: FlowKey,
    pub frag: Option<Fragment>,
    pub l4: L4,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The 2-bit ECN field.
    pub ecn: u8,
}

impl Meta {
    /// A placeholder to classify into.
    pub const EMPTY: Meta = Meta {
        vlan: None,
        l3_offset: 0,
        l4_offset: 0,
        l3_end: 0,
        key: FlowKey::v4(core::net::Ipv4Addr::UNSPECIFIED, core::net::Ipv4Addr::UNSPECIFIED, 0, 0, 0),
        frag: None,
        l4: L4::Other,
        ttl: 0,
        ecn: 0,
    };

    /// The IP packet within `frame` (empty if `frame` is not the classified one).
    #[inline]
    pub fn l3<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame.get(usize::from(self.l3_offset)..usize::from(self.l3_end)).unwrap_or(&[])
    }

    /// The transport header and payload within `frame`.
    #[inline]
    pub fn l4<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame.get(usize::from(self.l4_offset)..usize::from(self.l3_end)).unwrap_or(&[])
    }

    /// Whether this is a non-first fragment.
    #[inline]
    pub fn is_later_fragment(&self) -> bool {
        matches!(self.frag, Some(f) if f.offset != 0)
    }
}

/// Parse and check one Ethernet frame. See the module documentation.
/// Classifies `frame`; see the module docs. A convenience over [`classify_into`].
#[inline]
pub fn classify(frame: &[u8]) -> Result<Meta, ParseError> {
    let mut m = Meta::EMPTY;
    classify_into(frame, &mut m).map(|()| m)
}

/// Classifies `frame` into `out`, field by field. The hot path uses this
/// form: a `Meta` returned by value is built on the stack and copied, and
/// the copy reads back stores still in flight (a store-forwarding stall
/// that cost more than the parsing itself). On error `out` is unspecified.
#[inline]
pub fn classify_into(frame: &[u8], out: &mut Meta) -> Result<(), ParseError> {
    if frame.len() > usize::from(u16::MAX) {
        return Err(ParseError::FrameTooLong);
    }
    let eth = ethernet::Frame::new_checked(frame)?;
    let mut ethertype = eth.ethertype();
    let mut off = ethernet::HEADER_LEN;
    let mut vlan_id = None;
    let mut tags = 0;
    while ethertype.is_vlan() {
        if tags == 2 {
            return Err(ParseError::TooManyVlanTags);
        }
        let tag = vlan::Packet::new_checked(&frame[off..])?;
        vlan_id.get_or_insert(tag.vid());
        ethertype = tag.ethertype();
        off += vlan::HEADER_LEN;
        tags += 1;
    }
    match ethertype {
        EtherType::IPV4 => {
            out.vlan = vlan_id;
            classify_v4(frame, off, out)
        }
        EtherType::IPV6 => {
            out.vlan = vlan_id;
            classify_v6(frame, off, out)
        }
        _ => Err(ParseError::NotIp),
    }
}

/// Bytes of transport header a first fragment must hold.
#[inline]
const fn min_transport_len(p: u8) -> usize {
    match p {
        proto::TCP => tcp::HEADER_LEN,
        proto::UDP => udp::HEADER_LEN,
        proto::ICMP | proto::ICMPV6 => icmpv4::HEADER_LEN,
        _ => 0,
    }
}

#[inline]
fn classify_v4(frame: &[u8], l3: usize, out: &mut Meta) -> Result<(), ParseError> {
    let ip = ipv4::Packet::new_checked(&frame[l3..])?;
    if !ip.verify_checksum() {
        return Err(ParseError::Ipv4BadChecksum);
    }
    let src = ip.src_addr();
    if src.is_multicast() || src.is_broadcast() {
        return Err(ParseError::BadIpAddress);
    }
    let l4_off = l3 + usize::from(ip.header_len());
    let l3_end = l3 + usize::from(ip.total_len());
    let protocol = ip.protocol();
    let frag = ip.is_fragment().then(|| Fragment {
        ident: u32::from(ip.ident()),
        offset: ip.frag_offset(),
        more: ip.more_frags(),
        data_offset: l4_off as u16,
    });
    let l4_bytes = &frame[l4_off..l3_end];
    let (sport, dport) = match frag {
        Some(f) if f.offset != 0 => {
            // RFC 1858: offset 8 can only be meant to overwrite TCP flags.
            if protocol == proto::TCP && f.offset == 8 {
                return Err(ParseError::TinyFragment);
            }
            out.l4 = L4::Fragment;
            (0, 0)
        }
        Some(_) if l4_bytes.len() < min_transport_len(protocol) => return Err(ParseError::TinyFragment),
        _ => transport(l4_bytes, protocol, false, l4_off, frag.is_some_and(|f| f.more), &mut out.l4)?,
    };
    out.l3_offset = l3 as u16;
    out.l4_offset = l4_off as u16;
    out.l3_end = l3_end as u16;
    out.key = FlowKey::v4(src, ip.dst_addr(), protocol, sport, dport);
    out.frag = frag;
    out.ttl = ip.ttl();
    out.ecn = ip.ecn();
    Ok(())
}

#[inline]
fn classify_v6(frame: &[u8], l3: usize, out: &mut Meta) -> Result<(), ParseError> {
    let ip = ipv6::Packet::new_checked(&frame[l3..])?;
    let src = ip.src_addr();
    if src.is_multicast() {
        return Err(ParseError::BadIpAddress);
    }
    let chain = ip.walk_chain()?;
    let l4_off = l3 + ipv6::HEADER_LEN + usize::from(chain.upper_offset);
    let l3_end = l3 + ipv6::HEADER_LEN + usize::from(ip.payload_len());
    let protocol = chain.upper_proto;
    let frag = chain.frag.map(|f| Fragment {
        ident: f.ident,
        offset: f.offset,
        more: f.more,
        data_offset: (l3 + ipv6::HEADER_LEN + usize::from(f.header_offset) + 8) as u16,
    });
    let (sport, dport) = match frag {
        Some(f) if f.offset != 0 => {
            out.l4 = L4::Fragment;
            (0, 0)
        }
        _ => transport(&frame[l4_off..l3_end], protocol, true, l4_off, frag.is_some_and(|f| f.more), &mut out.l4)?,
    };
    out.l3_offset = l3 as u16;
    out.l4_offset = l4_off as u16;
    out.l3_end = l3_end as u16;
    out.key = FlowKey::v6(src, ip.dst_addr(), protocol, sport, dport);
    out.frag = frag;
    out.ttl = ip.hop_limit();
    out.ecn = ip.ecn();
    Ok(())
}

/// Parse the transport header in `l4` (bounded by the IP packet).
/// `partial`: this is a first fragment with more to come, so length fields
/// that describe the whole datagram cannot be checked.
#[inline]
fn transport(
    l4: &[u8],
    protocol: u8,
    v6: bool,
    l4_off: usize,
    partial: bool,
    out: &mut L4,
) -> Result<(u16, u16), ParseError> {
    match protocol {
        proto::TCP => {
            let t = tcp::Packet::new_checked(l4)?;
            let flags = t.flags();
            let wscale = if flags.contains(TcpFlags::SYN) { tcp::window_scale(t.options()) } else { None };
            *out = L4::Tcp {
                flags,
                seq: t.seq_number(),
                ack: t.ack_number(),
                window: t.window_len(),
                payload_len: t.payload().len() as u16,
                wscale,
            };
            Ok((t.src_port(), t.dst_port()))
        }
        proto::UDP => {
            let u = if partial {
                if l4.len() < udp::HEADER_LEN {
                    return Err(ParseError::Truncated);
                }
                udp::Packet::new_unchecked(l4)
            } else {
                udp::Packet::new_checked(l4)?
            };
            *out = L4::Udp;
            Ok((u.src_port(), u.dst_port()))
        }
        proto::ICMP if !v6 => {
            let i = icmpv4::Packet::new_checked(l4)?;
            let (t, code) = (i.msg_type(), i.code());
            if icmpv4::is_echo(t) {
                let request = t == icmpv4::msg::ECHO_REQUEST;
                *out = L4::IcmpEcho { request };
                Ok(echo_ports(request, i.echo_ident()))
            } else if icmpv4::is_error(t) {
                let inner = inner_v4(i.body())?;
                let inner_l3_offset = (l4_off + icmpv4::HEADER_LEN) as u16;
                *out = L4::IcmpError { msg_type: t, code, inner, inner_l3_offset };
                Ok((0, 0))
            } else {
                {
                    *out = L4::IcmpOther { msg_type: t, code };
                    Ok((0, 0))
                }
            }
        }
        proto::ICMPV6 if v6 => {
            let i = icmpv6::Packet::new_checked(l4)?;
            let (t, code) = (i.msg_type(), i.code());
            if icmpv6::is_echo(t) {
                let request = t == icmpv6::msg::ECHO_REQUEST;
                *out = L4::IcmpEcho { request };
                Ok(echo_ports(request, i.echo_ident()))
            } else if icmpv6::is_error(t) {
                let inner = inner_v6(i.body())?;
                let inner_l3_offset = (l4_off + icmpv6::HEADER_LEN) as u16;
                *out = L4::IcmpError { msg_type: t, code, inner, inner_l3_offset };
                Ok((0, 0))
            } else {
                {
                    *out = L4::IcmpOther { msg_type: t, code };
                    Ok((0, 0))
                }
            }
        }
        _ => {
            *out = L4::Other;
            Ok((0, 0))
        }
    }
}

/// The "ports" of an echo: the identifier as the source port of a request
/// and as the destination port of a reply, so that the reverse of a
/// request's key is its reply's key, and a request never matches a flow
/// opened by a request from the other side.
#[inline]
fn echo_ports(request: bool, ident: u16) -> (u16, u16) {
    if request {
        (ident, 0)
    } else {
        (0, ident)
    }
}

/// Ports of a quoted transport header (`h` holds at least 8 bytes).
#[inline]
fn inner_ports(protocol: u8, h: &[u8]) -> (u16, u16) {
    match protocol {
        proto::TCP | proto::UDP => (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]])),
        proto::ICMP if icmpv4::is_echo(h[0]) => {
            echo_ports(h[0] == icmpv4::msg::ECHO_REQUEST, u16::from_be_bytes([h[4], h[5]]))
        }
        proto::ICMPV6 if icmpv6::is_echo(h[0]) => {
            echo_ports(h[0] == icmpv6::msg::ECHO_REQUEST, u16::from_be_bytes([h[4], h[5]]))
        }
        _ => (0, 0),
    }
}

/// The key of an IPv4 packet quoted in an ICMP error. The quote is usually
/// truncated, so the total length is not checked against it.
fn inner_v4(b: &[u8]) -> Result<FlowKey, ParseError> {
    const BAD: ParseError = ParseError::IcmpErrorBadInner;
    if b.len() < ipv4::HEADER_LEN {
        return Err(BAD);
    }
    let ip = ipv4::Packet::new_unchecked(b);
    let hl = usize::from(ip.header_len());
    if ip.version() != 4 || hl < ipv4::HEADER_LEN {
        return Err(BAD);
    }
    let h = b.get(hl..hl + 8).ok_or(BAD)?;
    let protocol = ip.protocol();
    let (sp, dp) = if ip.frag_offset() != 0 { (0, 0) } else { inner_ports(protocol, h) };
    Ok(FlowKey::v4(ip.src_addr(), ip.dst_addr(), protocol, sp, dp))
}

/// The key of an IPv6 packet quoted in an ICMPv6 error.
fn inner_v6(b: &[u8]) -> Result<FlowKey, ParseError> {
    const BAD: ParseError = ParseError::IcmpErrorBadInner;
    if b.len() < ipv6::HEADER_LEN {
        return Err(BAD);
    }
    let ip = ipv6::Packet::new_unchecked(b);
    if ip.version() != 6 {
        return Err(BAD);
    }
    let chain = ipv6::walk_chain(ip.next_header(), &b[ipv6::HEADER_LEN..]).map_err(|_| BAD)?;
    let upper = ipv6::HEADER_LEN + usize::from(chain.upper_offset);
    let h = b.get(upper..upper + 8).ok_or(BAD)?;
    let later = matches!(chain.frag, Some(f) if f.offset != 0);
    let (sp, dp) = if later { (0, 0) } else { inner_ports(chain.upper_proto, h) };
    Ok(FlowKey::v6(ip.src_addr(), ip.dst_addr(), chain.upper_proto, sp, dp))
}
