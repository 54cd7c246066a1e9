//! IPv4 headers (RFC 791), with the checksum of RFC 1071.
//!
//! The view is over the IP packet, from the version nibble on. The buffer may
//! be longer than the packet (Ethernet pads short frames to 60 bytes), so
//! everything after the header is bounded by the *total length* field, never
//! by the buffer: [`Packet::payload`] excludes the padding.
//!
//! Invariants after [`Packet::new_checked`]: the buffer holds at least 20
//! bytes, version is 4, IHL ≥ 5, IHL·4 ≤ total length ≤ buffer length. Every
//! getter then stays inside the buffer. Setters trust their caller; after a
//! setter changed a length field, check again before reading the payload.
//!
//! Fragment offsets are in bytes throughout this crate (the field counts
//! 8-byte units). Options are exposed raw and through a bounded iterator.

use core::net::Ipv4Addr;

use crate::checksum;
use crate::error::{BuildError, ParseError};

pub(crate) mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn be16(d: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([d[r.start], d[r.start + 1]])
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

    /// The checks of [`new_checked`](Self::new_checked).
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if self.version() != 4 {
            return Err(ParseError::IpVersionMismatch);
        }
        let hl = usize::from(self.header_len());
        if hl < HEADER_LEN {
            return Err(ParseError::Ipv4BadHeaderLen);
        }
        if len < hl {
            return Err(ParseError::Truncated);
        }
        let total = usize::from(self.total_len());
        if total < hl || total > len {
            return Err(ParseError::Ipv4BadTotalLen);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL·4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    fn flg_off(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flg_off() & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flg_off() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flg_off() & OFFSET_MASK) << 3
    }

    /// Whether this packet is a fragment (MF set or offset non-zero).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flg_off() & (FLAG_MF | OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let d = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let d = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }

    /// End of the header, clamped to the buffer.
    #[inline]
    fn hdr_end(&self) -> usize {
        usize::from(self.header_len()).clamp(HEADER_LEN, self.buffer.as_ref().len())
    }

    /// End of the packet, clamped to the buffer and not before the header.
    #[inline]
    fn pkt_end(&self) -> usize {
        usize::from(self.total_len()).clamp(self.hdr_end(), self.buffer.as_ref().len())
    }

    /// The header (with options).
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.hdr_end()]
    }

    /// Raw option bytes (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.hdr_end()]
    }

    /// The options, one by one.
    pub fn option_iter(&self) -> OptionIter<'_> {
        OptionIter { data: self.options() }
    }

    /// The payload, bounded by the total length (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.hdr_end()..self.pkt_end()]
    }

    /// The whole IP packet, bounded by the total length.
    #[inline]
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.pkt_end()]
    }

    /// Whether the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 4 and the header length in bytes (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: u8) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) & 0x0f);
    }

    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & !0x03) | (ecn & 0x03);
    }

    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    #[inline]
    fn set_flg_off(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_dont_frag(&mut self, df: bool) {
        let v = (self.flg_off() & !FLAG_DF) | if df { FLAG_DF } else { 0 };
        self.set_flg_off(v);
    }

    #[inline]
    pub fn set_more_frags(&mut self, mf: bool) {
        let v = (self.flg_off() & !FLAG_MF) | if mf { FLAG_MF } else { 0 };
        self.set_flg_off(v);
    }

    /// Fragment offset in bytes (rounded down to a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16) {
        let v = (self.flg_off() & !OFFSET_MASK) | (offset >> 3);
        self.set_flg_off(v);
    }

    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    #[inline]
    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = p;
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Recompute the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.header()));
        self.set_checksum(c);
    }

    /// Raw option bytes, for rewriting.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.hdr_end();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The payload, bounded by the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (s, e) = (self.hdr_end(), self.pkt_end());
        &mut self.buffer.as_mut()[s..e]
    }
}

/// Option type numbers (RFC 791 and the IANA registry).
pub mod option {
    pub const END_OF_LIST: u8 = 0;
    pub const NO_OPERATION: u8 = 1;
    pub const RECORD_ROUTE: u8 = 7;
    pub const TIMESTAMP: u8 = 68;
    pub const LOOSE_SOURCE_ROUTE: u8 = 131;
    pub const STRICT_SOURCE_ROUTE: u8 = 137;
    pub const ROUTER_ALERT: u8 = 148;
}

/// One IPv4 option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Option<'a> {
    EndOfList,
    NoOperation,
    /// Any other option: its type byte and its data (after type and length).
    Other {
        kind: u8,
        data: &'a [u8],
    },
}

/// Iterator over IPv4 options. Stops after End-of-List; a malformed option
/// yields one `Err(Ipv4BadOption)` and ends the iteration. Each step consumes
/// at least one byte, so the iteration is bounded by the 40-byte options area.
#[derive(Clone, Debug)]
pub struct OptionIter<'a> {
    data: &'a [u8],
}

impl<'a> OptionIter<'a> {
    /// Iterate over raw option bytes.
    pub fn new(data: &'a [u8]) -> OptionIter<'a> {
        OptionIter { data }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<Ipv4Option<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, rest) = self.data.split_first()?;
        match kind {
            option::END_OF_LIST => {
                self.data = &[];
                Some(Ok(Ipv4Option::EndOfList))
            }
            option::NO_OPERATION => {
                self.data = rest;
                Some(Ok(Ipv4Option::NoOperation))
            }
            _ => {
                let len = rest.first().map_or(0, |&l| usize::from(l));
                if len < 2 || len > self.data.len() {
                    self.data = &[];
                    return Some(Err(ParseError::Ipv4BadOption));
                }
                let data = &self.data[2..len];
                self.data = &self.data[len..];
                Some(Ok(Ipv4Option::Other { kind, data }))
            }
        }
    }
}

/// An IPv4 header without options, as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    pub payload_len: u16,
    pub ttl: u8,
    pub dscp: u8,
    pub ecn: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// In bytes, a multiple of 8.
    pub frag_offset: u16,
}

impl Repr {
    /// Parse a checked packet. Options are skipped (not represented); the
    /// header checksum must verify.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, ParseError> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(ParseError::Ipv4BadChecksum);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.total_len() - u16::from(p.header_len()),
            ttl: p.ttl(),
            dscp: p.dscp(),
            ecn: p.ecn(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
        })
    }

    /// Header length emitted (no options).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header and its checksum. The buffer must hold the header;
    /// the payload is not touched.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<(), BuildError> {
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(BuildError::BufferTooSmall);
        }
        if self.payload_len > u16::MAX - HEADER_LEN as u16
            || self.dscp > 63
            || self.ecn > 3
            || self.frag_offset % 8 != 0
        {
            return Err(BuildError::BadArgument);
        }
        p.set_version_and_header_len(HEADER_LEN as u8);
        p.buffer.as_mut()[field::DSCP_ECN] = (self.dscp << 2) | self.ecn;
        p.set_total_len(self.payload_len + HEADER_LEN as u16);
        p.set_ident(self.ident);
        p.set_flg_off(
            if self.dont_frag { FLAG_DF } else { 0 }
                | if self.more_frags { FLAG_MF } else { 0 }
                | (self.frag_offset >> 3),
        );
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&20u16.to_be_bytes());
        b
    }

    #[test]
    fn checks() {
        let b = header();
        assert!(Packet::new_checked(&b[..]).is_ok());
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), ParseError::Truncated);
        let mut v = b;
        v[0] = 0x65;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::IpVersionMismatch);
        v[0] = 0x44;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::Ipv4BadHeaderLen);
        v[0] = 0x4f;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::Truncated);
        v = b;
        v[3] = 19;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::Ipv4BadTotalLen);
        v[3] = 25;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), ParseError::Ipv4BadTotalLen);
    }

    #[test]
    fn option_iter_is_bounded() {
        let opts = [1, 148, 4, 0, 0, 7, 0, 1];
        let v: std::vec::Vec<_> = OptionIter::new(&opts).collect();
        assert_eq!(v[0], Ok(Ipv4Option::NoOperation));
        assert_eq!(v[1], Ok(Ipv4Option::Other { kind: 148, data: &[0, 0] }));
        assert_eq!(v[2], Err(ParseError::Ipv4BadOption));
        assert_eq!(v.len(), 3);
        let v: std::vec::Vec<_> = OptionIter::new(&[0, 1, 1]).collect();
        assert_eq!(v, [Ok(Ipv4Option::EndOfList)]);
    }

    #[test]
    fn payload_excludes_padding() {
        let mut b = [0u8; 46];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }
}
