//! TCP segment headers (RFC 9293) and their options (RFC 7323, RFC 2018).
//!
//! The view is over the whole segment: header, options and payload, so the
//! buffer must end where the segment ends (slice it to the IP payload, which
//! excludes Ethernet padding). The checksum covers a pseudo header, which is
//! why [`Packet::verify_checksum`] and [`Packet::fill_checksum`] take the IP
//! addresses.
//!
//! Invariants after [`Packet::new_checked`]: at least 20 bytes, data offset
//! ≥ 5, header length ≤ buffer length. Options are exposed raw and through
//! [`OptionIter`], which consumes at least one byte per step (so it ends on
//! 40 bytes of anything) and turns malformed options into one error, after
//! which it stops.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::ParseError;
use crate::flow::proto;

pub(crate) mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// The eight TCP flag bits (the byte at offset 13).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);
    pub const NONE: TcpFlags = TcpFlags(0);

    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// All bits of `other` are set.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Any bit of `other` is set.
    #[inline]
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    #[inline]
    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }

    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl core::ops::BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl core::ops::Not for TcpFlags {
    type Output = TcpFlags;
    fn not(self) -> TcpFlags {
        TcpFlags(!self.0)
    }
}

impl fmt::Display for TcpFlags {
    /// One letter per set flag in the order F S R P A U E C (a SYN-ACK is
    /// `SA`); `-` when none is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        for (i, c) in "FSRPAUEC".chars().enumerate() {
            if self.0 & (1 << i) != 0 {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self})")
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn be16(d: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([d[r.start], d[r.start + 1]])
}

#[inline]
fn be32(d: &[u8], r: core::ops::Range<usize>) -> u32 {
    u32::from_be_bytes([d[r.start], d[r.start + 1], d[r.start + 2], d[r.start + 3]])
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
        let hl = usize::from(self.header_len());
        if hl < HEADER_LEN || hl > len {
            return Err(ParseError::TcpBadHeaderLen);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset · 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    #[inline]
    fn hdr_end(&self) -> usize {
        usize::from(self.header_len()).clamp(HEADER_LEN, self.buffer.as_ref().len())
    }

    /// Raw option bytes.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.hdr_end()]
    }

    pub fn option_iter(&self) -> OptionIter<'_> {
        OptionIter::new(self.options())
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.hdr_end()..]
    }

    /// Length of the segment for the pseudo header.
    #[inline]
    fn seg_len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    fn sum_with(&self, pseudo: u32) -> u16 {
        checksum::fold(pseudo + checksum::sum(self.buffer.as_ref()))
    }

    /// Verify the checksum with an IPv4 pseudo header.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let Ok(len) = u16::try_from(self.seg_len()) else {
            return false;
        };
        self.sum_with(checksum::pseudo_v4(src, dst, proto::TCP, len)) == 0xffff
    }

    /// Verify the checksum with an IPv6 pseudo header.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let Ok(len) = u32::try_from(self.seg_len()) else {
            return false;
        };
        self.sum_with(checksum::pseudo_v6(src, dst, proto::TCP, len)) == 0xffff
    }

    /// Verify the checksum; `false` if the families differ.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.verify_checksum_v4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.verify_checksum_v6(&s, &d),
            _ => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&p.to_be_bytes());
    }

    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&p.to_be_bytes());
    }

    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Header length in bytes (a multiple of 4, 20..=60); clears the NS bit.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        self.buffer.as_mut()[field::DATA_OFF] = (len / 4) << 4;
    }

    #[inline]
    pub fn set_flags(&mut self, f: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = f.0;
    }

    #[inline]
    pub fn set_window_len(&mut self, w: u16) {
        self.buffer.as_mut()[field::WIN_SIZE].copy_from_slice(&w.to_be_bytes());
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    #[inline]
    pub fn set_urgent_at(&mut self, u: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&u.to_be_bytes());
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.hdr_end();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let s = self.hdr_end();
        &mut self.buffer.as_mut()[s..]
    }

    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.seg_len() as u16;
        let c = !self.sum_with(checksum::pseudo_v4(src, dst, proto::TCP, len));
        self.set_checksum(c);
    }

    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let len = self.seg_len() as u32;
        let c = !self.sum_with(checksum::pseudo_v6(src, dst, proto::TCP, len));
        self.set_checksum(c);
    }

    /// Compute and store the checksum; does nothing if the families differ.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.fill_checksum_v4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.fill_checksum_v6(&s, &d),
            _ => {}
        }
    }
}

/// Option kinds.
pub mod option {
    pub const END_OF_LIST: u8 = 0;
    pub const NO_OPERATION: u8 = 1;
    pub const MAX_SEGMENT_SIZE: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// One TCP option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    EndOfList,
    NoOperation,
    MaxSegmentSize(u16),
    WindowScale(u8),
    SackPermitted,
    /// Raw SACK blocks: a multiple of 8 bytes, (left, right) edge pairs.
    Sack(&'a [u8]),
    Timestamps {
        tsval: u32,
        tsecr: u32,
    },
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

/// Iterator over TCP options. Ends after End-of-List. A malformed option
/// (length < 2, beyond the options, wrong size for its kind) yields one
/// `Err(TcpBadOption)` and ends the iteration.
#[derive(Clone, Debug)]
pub struct OptionIter<'a> {
    data: &'a [u8],
}

impl<'a> OptionIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        OptionIter { data }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<TcpOption<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, rest) = self.data.split_first()?;
        match kind {
            option::END_OF_LIST => {
                self.data = &[];
                return Some(Ok(TcpOption::EndOfList));
            }
            option::NO_OPERATION => {
                self.data = rest;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        let len = rest.first().map_or(0, |&l| usize::from(l));
        let bad = || Some(Err(ParseError::TcpBadOption));
        if len < 2 || len > self.data.len() {
            self.data = &[];
            return bad();
        }
        let d = &self.data[2..len];
        self.data = &self.data[len..];
        let opt = match (kind, d.len()) {
            (option::MAX_SEGMENT_SIZE, 2) => TcpOption::MaxSegmentSize(u16::from_be_bytes([d[0], d[1]])),
            (option::WINDOW_SCALE, 1) => TcpOption::WindowScale(d[0]),
            (option::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (option::SACK, n) if n % 8 == 0 && n > 0 => TcpOption::Sack(d),
            (option::TIMESTAMPS, 8) => TcpOption::Timestamps {
                tsval: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
                tsecr: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            },
            (
                option::MAX_SEGMENT_SIZE
                | option::WINDOW_SCALE
                | option::SACK_PERMITTED
                | option::SACK
                | option::TIMESTAMPS,
                _,
            ) => {
                self.data = &[];
                return bad();
            }
            (kind, _) => TcpOption::Unknown { kind, data: d },
        };
        Some(Ok(opt))
    }
}

/// The window scale option among raw option bytes, if present and well
/// formed up to it.
pub fn window_scale(options: &[u8]) -> Option<u8> {
    for o in OptionIter::new(options) {
        match o {
            Ok(TcpOption::WindowScale(s)) => return Some(s),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_display() {
        assert_eq!(std::format!("{}", TcpFlags::SYN | TcpFlags::ACK), "SA");
        assert_eq!(std::format!("{}", TcpFlags(0xff)), "FSRPAUEC");
        assert_eq!(std::format!("{}", TcpFlags::NONE), "-");
        assert!((TcpFlags::SYN | TcpFlags::ACK).contains(TcpFlags::SYN));
        assert!(!TcpFlags::SYN.contains(TcpFlags::SYN | TcpFlags::ACK));
    }

    #[test]
    fn options_never_loop() {
        // A zero-length option must end the iteration with an error.
        let v: std::vec::Vec<_> = OptionIter::new(&[1, 2, 0, 0, 0]).collect();
        assert_eq!(v, [Ok(TcpOption::NoOperation), Err(ParseError::TcpBadOption)]);
        let v: std::vec::Vec<_> = OptionIter::new(&[3, 3, 7, 2, 3, 5]).collect();
        assert_eq!(v, [Ok(TcpOption::WindowScale(7)), Err(ParseError::TcpBadOption)]);
        let v: std::vec::Vec<_> = OptionIter::new(&[0xfe, 4, 1, 2, 0, 9]).collect();
        assert_eq!(v, [Ok(TcpOption::Unknown { kind: 0xfe, data: &[1, 2] }), Ok(TcpOption::EndOfList)]);
        assert_eq!(window_scale(&[1, 1, 3, 3, 14]), Some(14));
        assert_eq!(window_scale(&[2, 0, 3, 3, 14]), None);
    }

    #[test]
    fn checks() {
        let mut b = [0u8; 24];
        b[12] = 0x50;
        assert!(Packet::new_checked(&b[..]).is_ok());
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), ParseError::Truncated);
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), ParseError::TcpBadHeaderLen);
        b[12] = 0x70;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), ParseError::TcpBadHeaderLen);
    }
}
