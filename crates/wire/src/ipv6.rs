//! IPv6 headers (RFC 8200) and the walk of the extension header chain.
//!
//! The base header view is over the 40-byte fixed header and what follows; as
//! with IPv4 the payload is bounded by the *payload length* field, never by
//! the buffer (Ethernet padding is excluded). Jumbograms (RFC 2675) are not
//! supported: a payload length of 0 means an empty payload.
//!
//! Extension headers have their own small views ([`OptionsHeader`] for
//! hop-by-hop and destination options, [`RoutingHeader`], [`FragmentHeader`]).
//! Finding the transport header means walking the chain, which an attacker
//! controls; [`walk_chain`] is bounded to [`MAX_EXT_HEADERS`] headers and
//! [`MAX_EXT_BYTES`] bytes, so its cost is constant per packet. It stops at
//! the first header it does not know as an extension (TCP, UDP, ICMPv6, but
//! also ESP, No Next Header or any unknown value: that value becomes the
//! upper-layer protocol), and at a non-first fragment, whose data cannot be
//! parsed.
//!
//! RFC 7112: the first fragment (offset 0) of a fragmented packet must hold
//! the whole header chain *and* the upper-layer header; [`walk_chain`]
//! enforces this with [`ParseError::HeaderChainSplit`], which is what lets a
//! firewall decide on the first fragment alone.
//!
//! Invariants after [`Packet::new_checked`]: at least 40 bytes, version 6,
//! 40 + payload length ≤ buffer length.

use core::net::Ipv6Addr;

use crate::error::{BuildError, ParseError};
use crate::flow::proto;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Most extension headers [`walk_chain`] accepts.
pub const MAX_EXT_HEADERS: usize = 8;
/// Most bytes of extension headers [`walk_chain`] accepts.
pub const MAX_EXT_BYTES: usize = 512;

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn addr16(d: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&d[..16]);
    Ipv6Addr::from(a)
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, ParseError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if self.version() != 6 {
            return Err(ParseError::IpVersionMismatch);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(ParseError::Ipv6BadPayloadLen);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn word0(&self) -> u32 {
        let d = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    #[inline]
    pub fn version(&self) -> u8 {
        (self.word0() >> 28) as u8
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }

    /// DSCP (upper six bits of the traffic class).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    /// ECN (lower two bits of the traffic class).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0x03
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.word0() & 0x000f_ffff
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([d[0], d[1]])
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        addr16(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr16(&self.buffer.as_ref()[field::DST_ADDR])
    }

    #[inline]
    fn pkt_end(&self) -> usize {
        (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len())
    }

    /// Everything after the fixed header, bounded by the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.pkt_end()]
    }

    /// The whole packet, bounded by the payload length.
    #[inline]
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.pkt_end()]
    }

    /// Walk the extension header chain of this packet; offsets in the
    /// result are relative to the start of the payload.
    pub fn walk_chain(&self) -> Result<Chain, ParseError> {
        walk_chain(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn set_word0(&mut self, w: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let w = (self.word0() & 0x0fff_ffff) | (u32::from(v & 0x0f) << 28);
        self.set_word0(w);
    }

    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = (self.word0() & 0xf00f_ffff) | (u32::from(tc) << 20);
        self.set_word0(w);
    }

    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let tc = (self.traffic_class() & !0x03) | (ecn & 0x03);
        self.set_traffic_class(tc);
    }

    #[inline]
    pub fn set_flow_label(&mut self, fl: u32) {
        let w = (self.word0() & 0xfff0_0000) | (fl & 0x000f_ffff);
        self.set_word0(w);
    }

    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = nh;
    }

    #[inline]
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = h;
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.pkt_end();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The fixed IPv6 header as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: u16,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, ParseError> {
        p.check_len()?;
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<(), BuildError> {
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(BuildError::BufferTooSmall);
        }
        if self.flow_label > 0x000f_ffff {
            return Err(BuildError::BadArgument);
        }
        p.set_word0((6 << 28) | (u32::from(self.traffic_class) << 20) | self.flow_label);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

mod ext_field {
    pub const NXT_HDR: usize = 0;
    pub const LENGTH: usize = 1;
    pub const ROUTING_TYPE: usize = 2;
    pub const SEGMENTS_LEFT: usize = 3;
    pub const FRAG_OFF: core::ops::Range<usize> = 2..4;
    pub const FRAG_IDENT: core::ops::Range<usize> = 4..8;
    pub const DATA: usize = 2;
}

/// Length of the fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// Whether `nh` is an extension header that [`walk_chain`] steps over.
pub const fn is_extension(nh: u8) -> bool {
    matches!(
        nh,
        proto::IPV6_HOP_BY_HOP | proto::IPV6_ROUTING | proto::IPV6_FRAGMENT | proto::IPV6_DEST_OPTS | proto::AH
    )
}

/// Length in bytes of the extension header `nh` whose second byte is
/// `len_byte` (AH counts 4-byte words minus 2, the others 8-byte words
/// minus 1, the fragment header is always 8).
#[inline]
pub const fn ext_header_len(nh: u8, len_byte: u8) -> usize {
    match nh {
        proto::IPV6_FRAGMENT => FRAGMENT_HEADER_LEN,
        proto::AH => (len_byte as usize + 2) * 4,
        _ => (len_byte as usize + 1) * 8,
    }
}

/// A view of a hop-by-hop or destination options header.
#[derive(Debug, Clone)]
pub struct OptionsHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> OptionsHeader<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        OptionsHeader { buffer }
    }

    /// Checks that the whole header (per its length byte) fits.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < 8 || b.len() < ext_header_len(proto::IPV6_DEST_OPTS, b[ext_field::LENGTH]) {
            return Err(ParseError::Truncated);
        }
        Ok(OptionsHeader { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    /// Length of the header in bytes.
    pub fn header_len(&self) -> usize {
        ext_header_len(proto::IPV6_DEST_OPTS, self.buffer.as_ref()[ext_field::LENGTH])
    }

    /// Raw option bytes.
    pub fn options(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[ext_field::DATA..self.header_len().min(b.len())]
    }

    pub fn option_iter(&self) -> Ipv6OptionIter<'_> {
        Ipv6OptionIter { data: self.options() }
    }
}

/// One hop-by-hop or destination option (RFC 8200 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Option<'a> {
    Pad1,
    PadN(u8),
    /// Type byte and data.
    Other {
        kind: u8,
        data: &'a [u8],
    },
}

/// Iterator over the TLV options of an options header; a malformed option
/// yields one `Err(Ipv6BadExtHeader)` and ends it.
#[derive(Clone, Debug)]
pub struct Ipv6OptionIter<'a> {
    data: &'a [u8],
}

impl<'a> Ipv6OptionIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Ipv6OptionIter { data }
    }
}

impl<'a> Iterator for Ipv6OptionIter<'a> {
    type Item = Result<Ipv6Option<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, rest) = self.data.split_first()?;
        if kind == 0 {
            self.data = rest;
            return Some(Ok(Ipv6Option::Pad1));
        }
        let Some(&len) = rest.first() else {
            self.data = &[];
            return Some(Err(ParseError::Ipv6BadExtHeader));
        };
        let end = 2 + usize::from(len);
        if end > self.data.len() {
            self.data = &[];
            return Some(Err(ParseError::Ipv6BadExtHeader));
        }
        let data = &self.data[2..end];
        self.data = &self.data[end..];
        Some(Ok(if kind == 1 { Ipv6Option::PadN(len) } else { Ipv6Option::Other { kind, data } }))
    }
}

/// A view of a routing header (RFC 8200 §4.4).
#[derive(Debug, Clone)]
pub struct RoutingHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RoutingHeader<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        RoutingHeader { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < 8 || b.len() < ext_header_len(proto::IPV6_ROUTING, b[ext_field::LENGTH]) {
            return Err(ParseError::Truncated);
        }
        Ok(RoutingHeader { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    pub fn header_len(&self) -> usize {
        ext_header_len(proto::IPV6_ROUTING, self.buffer.as_ref()[ext_field::LENGTH])
    }

    pub fn routing_type(&self) -> u8 {
        self.buffer.as_ref()[ext_field::ROUTING_TYPE]
    }

    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[ext_field::SEGMENTS_LEFT]
    }

    /// Type-specific data after the 4 fixed bytes.
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[4..self.header_len().min(b.len())]
    }
}

/// A view of a fragment header (RFC 8200 §4.5).
#[derive(Debug, Clone)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        FragmentHeader { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(FragmentHeader { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    fn off_word(&self) -> u16 {
        let d = &self.buffer.as_ref()[ext_field::FRAG_OFF];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        self.off_word() & !0x7
    }

    pub fn more_frags(&self) -> bool {
        self.off_word() & 1 != 0
    }

    pub fn ident(&self) -> u32 {
        let d = &self.buffer.as_ref()[ext_field::FRAG_IDENT];
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> FragmentHeader<T> {
    /// Write a whole fragment header.
    pub fn set(&mut self, next_header: u8, offset: u16, more: bool, ident: u32) {
        let b = self.buffer.as_mut();
        b[ext_field::NXT_HDR] = next_header;
        b[ext_field::LENGTH] = 0;
        b[ext_field::FRAG_OFF].copy_from_slice(&((offset & !0x7) | u16::from(more)).to_be_bytes());
        b[ext_field::FRAG_IDENT].copy_from_slice(&ident.to_be_bytes());
    }
}

/// The fragment header found by [`walk_chain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragInfo {
    pub ident: u32,
    /// In bytes.
    pub offset: u16,
    pub more: bool,
    /// Where the fragment header starts, relative to the IPv6 payload.
    pub header_offset: u16,
}

/// What [`walk_chain`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Upper-layer protocol (for a non-first fragment, the fragment header's next header).
    pub upper_proto: u8,
    /// Offset of the upper-layer header (or fragment data) relative to the IPv6 payload.
    pub upper_offset: u16,
    pub frag: Option<FragInfo>,
    /// Number of extension headers stepped over.
    pub ext_count: u8,
}

/// Minimal upper-layer header that RFC 7112 asks a first fragment to hold.
const fn min_upper_len(p: u8) -> usize {
    match p {
        proto::TCP => 20,
        proto::UDP | proto::ICMPV6 => 8,
        _ => 0,
    }
}

/// Walk an IPv6 extension header chain.
///
/// `next_header` is the base header's next header, `payload` the bytes after
/// the fixed header (bounded by the payload length). Errors: a header that
/// does not fit → `Truncated`, or `HeaderChainSplit` if a first fragment was
/// seen; more than [`MAX_EXT_HEADERS`] headers or [`MAX_EXT_BYTES`] bytes →
/// `Ipv6ExtChainTooLong`; hop-by-hop anywhere but first → `Ipv6BadExtHeader`;
/// a first fragment without the upper-layer header (TCP 20 bytes, UDP and
/// ICMPv6 8) → `HeaderChainSplit`.
pub fn walk_chain(next_header: u8, payload: &[u8]) -> Result<Chain, ParseError> {
    let mut nh = next_header;
    let mut off = 0usize;
    let mut count = 0usize;
    let mut frag: Option<FragInfo> = None;
    let split_or_trunc = |f: &Option<FragInfo>| {
        if f.is_some() {
            ParseError::HeaderChainSplit
        } else {
            ParseError::Truncated
        }
    };
    while is_extension(nh) {
        if count == MAX_EXT_HEADERS {
            return Err(ParseError::Ipv6ExtChainTooLong);
        }
        if nh == proto::IPV6_HOP_BY_HOP && count != 0 {
            return Err(ParseError::Ipv6BadExtHeader);
        }
        let hdr = &payload[off.min(payload.len())..];
        if hdr.len() < 8 {
            return Err(split_or_trunc(&frag));
        }
        let len = ext_header_len(nh, hdr[ext_field::LENGTH]);
        if off + len > MAX_EXT_BYTES {
            return Err(ParseError::Ipv6ExtChainTooLong);
        }
        if len > hdr.len() {
            return Err(split_or_trunc(&frag));
        }
        count += 1;
        let this_nh = nh;
        nh = hdr[ext_field::NXT_HDR];
        if this_nh == proto::IPV6_FRAGMENT {
            if frag.is_some() {
                // Two fragment headers: nonsense that only an attacker sends.
                return Err(ParseError::Ipv6BadExtHeader);
            }
            let f = FragmentHeader::new_unchecked(hdr);
            let info =
                FragInfo { ident: f.ident(), offset: f.frag_offset(), more: f.more_frags(), header_offset: off as u16 };
            frag = Some(info);
            off += len;
            if info.offset != 0 {
                // Non-first fragment: what follows is data, not headers.
                return Ok(Chain { upper_proto: nh, upper_offset: off as u16, frag, ext_count: count as u8 });
            }
        } else {
            off += len;
        }
    }
    if let Some(f) = frag {
        if f.offset == 0 && payload.len().saturating_sub(off) < min_upper_len(nh) {
            return Err(ParseError::HeaderChainSplit);
        }
    }
    Ok(Chain { upper_proto: nh, upper_offset: off as u16, frag, ext_count: count as u8 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_limits() {
        // 9 destination option headers of 8 bytes each.
        let mut p = [0u8; 9 * 8];
        for i in 0..9 {
            p[i * 8] = if i == 8 { proto::UDP } else { proto::IPV6_DEST_OPTS };
        }
        assert_eq!(walk_chain(proto::IPV6_DEST_OPTS, &p[..60]).unwrap_err(), ParseError::Truncated);
        assert_eq!(walk_chain(proto::IPV6_DEST_OPTS, &p).unwrap_err(), ParseError::Ipv6ExtChainTooLong);
        // One header of 520 bytes.
        let mut big = [0u8; 600];
        big[0] = proto::UDP;
        big[1] = 64;
        assert_eq!(walk_chain(proto::IPV6_DEST_OPTS, &big).unwrap_err(), ParseError::Ipv6ExtChainTooLong);
        // Hop-by-hop second.
        let mut hbh = [0u8; 16];
        hbh[0] = proto::IPV6_HOP_BY_HOP;
        assert_eq!(walk_chain(proto::IPV6_DEST_OPTS, &hbh).unwrap_err(), ParseError::Ipv6BadExtHeader);
        // Unknown value ends the walk.
        let c = walk_chain(253, &[]).unwrap();
        assert_eq!((c.upper_proto, c.upper_offset, c.frag), (253, 0, None));
    }

    #[test]
    fn first_fragment_must_hold_upper_header() {
        let mut p = [0u8; 8 + 20];
        FragmentHeader::new_unchecked(&mut p[..8]).set(proto::TCP, 0, true, 7);
        assert!(walk_chain(proto::IPV6_FRAGMENT, &p).is_ok());
        assert_eq!(walk_chain(proto::IPV6_FRAGMENT, &p[..27]).unwrap_err(), ParseError::HeaderChainSplit);
        // Fragment header followed by a destination options header that is cut.
        FragmentHeader::new_unchecked(&mut p[..8]).set(proto::IPV6_DEST_OPTS, 0, true, 7);
        p[9] = 3; // 32 bytes
        assert_eq!(walk_chain(proto::IPV6_FRAGMENT, &p).unwrap_err(), ParseError::HeaderChainSplit);
        // A non-first fragment stops the walk at its data.
        FragmentHeader::new_unchecked(&mut p[..8]).set(proto::IPV6_DEST_OPTS, 1448, false, 7);
        let c = walk_chain(proto::IPV6_FRAGMENT, &p).unwrap();
        assert_eq!(c.upper_proto, proto::IPV6_DEST_OPTS);
        assert_eq!(c.upper_offset, 8);
        assert_eq!(c.frag, Some(FragInfo { ident: 7, offset: 1448, more: false, header_offset: 0 }));
    }

    #[test]
    fn option_iter_bounded() {
        let v: std::vec::Vec<_> = Ipv6OptionIter::new(&[0, 1, 1, 0, 5, 9, 1]).collect();
        assert_eq!(v, [Ok(Ipv6Option::Pad1), Ok(Ipv6Option::PadN(1)), Err(ParseError::Ipv6BadExtHeader)]);
    }
}
