//! UDP datagram headers (RFC 768; IPv6 rules from RFC 8200 §8.1).
//!
//! The datagram's extent is its own length field, checked once: after
//! [`Packet::new_checked`], 8 ≤ length ≤ buffer length, and the payload and
//! the checksum cover exactly `length` bytes (anything after is padding).
//!
//! The checksum field has two special values. On IPv4, 0 means "no checksum"
//! and verifies as valid; on IPv6 a checksum is mandatory, so 0 fails. A
//! checksum that computes to 0 is transmitted as 0xffff (both families); the
//! incremental variant of this rule lives in [`checksum::update_udp`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::{BuildError, ParseError};
use crate::flow::proto;

pub(crate) mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A view of a UDP datagram.
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

    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let l = usize::from(self.len());
        if l < HEADER_LEN || l > len {
            return Err(ParseError::UdpBadLength);
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

    /// The length field (header + payload).
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    fn end(&self) -> usize {
        usize::from(self.len()).clamp(HEADER_LEN, self.buffer.as_ref().len())
    }

    /// The payload, bounded by the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.end()]
    }

    fn sum_with(&self, pseudo: u32) -> u16 {
        checksum::fold(pseudo + checksum::sum(&self.buffer.as_ref()[..self.end()]))
    }

    /// Verify with an IPv4 pseudo header; an absent (0) checksum is valid.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || self.sum_with(checksum::pseudo_v4(src, dst, proto::UDP, self.end() as u16)) == 0xffff
    }

    /// Verify with an IPv6 pseudo header; a 0 checksum is invalid.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.checksum() != 0 && self.sum_with(checksum::pseudo_v6(src, dst, proto::UDP, self.end() as u32)) == 0xffff
    }

    /// Verify; `false` if the families differ.
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
    pub fn set_len(&mut self, l: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&l.to_be_bytes());
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let e = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN..e]
    }

    fn store(&mut self, sum: u16) {
        // RFC 768: a computed 0 goes on the wire as all ones.
        let c = match !sum {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }

    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let s = self.sum_with(checksum::pseudo_v4(src, dst, proto::UDP, self.end() as u16));
        self.store(s);
    }

    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let s = self.sum_with(checksum::pseudo_v6(src, dst, proto::UDP, self.end() as u32));
        self.store(s);
    }

    /// Compute and store; does nothing if the families differ.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.fill_checksum_v4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.fill_checksum_v6(&s, &d),
            _ => {}
        }
    }
}

/// A UDP header as plain values (the checksum is computed by `emit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, ParseError> {
        p.check_len()?;
        Ok(Repr { src_port: p.src_port(), dst_port: p.dst_port(), payload_len: p.len() - HEADER_LEN as u16 })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Write the header (the payload must already be in place, or be written
    /// before calling `fill_checksum`); the checksum field is set to 0.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<(), BuildError> {
        if usize::from(self.payload_len) > usize::from(u16::MAX) - HEADER_LEN {
            return Err(BuildError::BadArgument);
        }
        if p.buffer.as_ref().len() < self.buffer_len() {
            return Err(BuildError::BufferTooSmall);
        }
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(self.payload_len + HEADER_LEN as u16);
        p.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        let mut b = [0u8; 12];
        b[5] = 10;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 2);
        assert_eq!(Packet::new_checked(&b[..7]).unwrap_err(), ParseError::Truncated);
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), ParseError::UdpBadLength);
        b[5] = 13;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), ParseError::UdpBadLength);
    }

    #[test]
    fn zero_checksum_rules() {
        let mut b = [0u8; 8];
        b[5] = 8;
        let p = Packet::new_checked(&b[..]).unwrap();
        let (a, z) = (Ipv4Addr::new(10, 0, 0, 1), Ipv6Addr::LOCALHOST);
        assert!(p.verify_checksum_v4(a, a));
        assert!(!p.verify_checksum_v6(&z, &z));
    }
}
