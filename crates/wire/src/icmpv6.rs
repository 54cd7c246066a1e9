//! ICMPv6 (RFC 4443) and the Neighbor Discovery message types (RFC 4861).
//!
//! Same layout as ICMPv4: type, code, checksum, 4 type-specific bytes (echo
//! identifier and sequence, packet-too-big MTU, parameter-problem pointer),
//! then the body. Error messages (types 1-4) quote as much of the invoking
//! packet as fits in the minimum MTU of 1280 bytes. Unlike ICMPv4 the
//! checksum covers an IPv6 pseudo header, so it needs the addresses.
//!
//! Invariant after [`Packet::new_checked`]: at least [`HEADER_LEN`] (8) bytes;
//! the buffer must end where the message ends.

use core::net::Ipv6Addr;

use crate::checksum;
use crate::error::ParseError;
use crate::flow::proto;

mod field {
    use core::ops::{Range, RangeFrom};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    pub const MTU: Range<usize> = 4..8;
    pub const POINTER: Range<usize> = 4..8;
    pub const BODY: RangeFrom<usize> = 8..;
    /// Target address of neighbor solicitation/advertisement.
    pub const ND_TARGET: Range<usize> = 8..24;
}

/// Length of the fixed part.
pub const HEADER_LEN: usize = field::BODY.start;

/// Message types.
pub mod msg {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const MLD_QUERY: u8 = 130;
    pub const MLD_REPORT: u8 = 131;
    pub const MLD_DONE: u8 = 132;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    pub const REDIRECT: u8 = 137;
    pub const MLDV2_REPORT: u8 = 143;
}

/// Codes of destination unreachable.
pub mod unreachable {
    pub const NO_ROUTE: u8 = 0;
    pub const ADMIN_PROHIBITED: u8 = 1;
    pub const ADDRESS: u8 = 3;
    pub const PORT: u8 = 4;
}

/// Whether `t` is an error message that quotes the invoking packet.
#[inline]
pub const fn is_error(t: u8) -> bool {
    matches!(t, msg::DEST_UNREACHABLE | msg::PACKET_TOO_BIG | msg::TIME_EXCEEDED | msg::PARAM_PROBLEM)
}

/// Whether `t` is echo request or reply.
#[inline]
pub const fn is_echo(t: u8) -> bool {
    matches!(t, msg::ECHO_REQUEST | msg::ECHO_REPLY)
}

/// Whether `t` is a Neighbor Discovery message (133..=137).
#[inline]
pub const fn is_ndp(t: u8) -> bool {
    matches!(t, msg::ROUTER_SOLICIT..=msg::REDIRECT)
}

/// A view of an ICMPv6 message.
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
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::IcmpTruncated);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// MTU of a packet-too-big message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::MTU)
    }

    /// Pointer of a parameter-problem message.
    #[inline]
    pub fn pointer(&self) -> u32 {
        be32(self.buffer.as_ref(), field::POINTER)
    }

    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY]
    }

    /// The quoted invoking packet, for error types; `None` otherwise.
    #[inline]
    pub fn embedded(&self) -> Option<&[u8]> {
        if is_error(self.msg_type()) {
            Some(self.body())
        } else {
            None
        }
    }

    /// Target address of a neighbor solicitation or advertisement, if the
    /// message is one and is long enough.
    pub fn nd_target(&self) -> Option<Ipv6Addr> {
        if !matches!(self.msg_type(), msg::NEIGHBOR_SOLICIT | msg::NEIGHBOR_ADVERT) {
            return None;
        }
        let d: [u8; 16] = self.buffer.as_ref().get(field::ND_TARGET)?.try_into().ok()?;
        Some(Ipv6Addr::from(d))
    }

    fn sum_with(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u16 {
        let b = self.buffer.as_ref();
        checksum::fold(checksum::pseudo_v6(src, dst, proto::ICMPV6, b.len() as u32) + checksum::sum(b))
    }

    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.sum_with(src, dst) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    #[inline]
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_SEQNO].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_mtu(&mut self, v: u32) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_pointer(&mut self, v: u32) {
        self.buffer.as_mut()[field::POINTER].copy_from_slice(&v.to_be_bytes());
    }

    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::BODY]
    }

    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let c = !self.sum_with(src, dst);
        self.set_checksum(c);
    }
}
