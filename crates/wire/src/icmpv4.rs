//! ICMP for IPv4 (RFC 792, RFC 1191 for the next-hop MTU).
//!
//! Every message starts with type, code and checksum, followed by 4 bytes
//! whose meaning depends on the type (echo identifier and sequence number,
//! next-hop MTU, pointer, gateway) and then the body. For the error types
//! (destination unreachable, source quench, redirect, time exceeded,
//! parameter problem) the body quotes the invoking packet: its IP header and
//! at least the first 8 bytes of its payload, which is how a stateful
//! firewall or NAT finds the connection an error belongs to.
//!
//! Invariant after [`Packet::new_checked`]: at least [`HEADER_LEN`] (8) bytes.
//! The checksum covers the whole buffer, so the view must end where the
//! message ends (slice it to the IP payload).

use crate::checksum;
use crate::error::ParseError;

mod field {
    use core::ops::{Range, RangeFrom};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    pub const REST: Range<usize> = 4..8;
    pub const NEXT_HOP_MTU: Range<usize> = 6..8;
    pub const POINTER: usize = 4;
    pub const BODY: RangeFrom<usize> = 8..;
}

/// Length of the fixed part (type, code, checksum, 4 type-specific bytes).
pub const HEADER_LEN: usize = field::BODY.start;

/// Message types.
pub mod msg {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const ROUTER_ADVERT: u8 = 9;
    pub const ROUTER_SOLICIT: u8 = 10;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;
    pub const TIMESTAMP: u8 = 13;
    pub const TIMESTAMP_REPLY: u8 = 14;
}

/// Codes of destination unreachable.
pub mod unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Codes of time exceeded.
pub mod time_exceeded {
    pub const TTL: u8 = 0;
    pub const REASSEMBLY: u8 = 1;
}

/// Whether `t` is an error message that quotes the invoking packet.
#[inline]
pub const fn is_error(t: u8) -> bool {
    matches!(t, msg::DEST_UNREACHABLE | msg::SOURCE_QUENCH | msg::REDIRECT | msg::TIME_EXCEEDED | msg::PARAM_PROBLEM)
}

/// Whether `t` is echo request or reply.
#[inline]
pub const fn is_echo(t: u8) -> bool {
    matches!(t, msg::ECHO_REQUEST | msg::ECHO_REPLY)
}

/// A view of an ICMPv4 message.
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

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Next-hop MTU of a "fragmentation needed" (type 3 code 4), RFC 1191.
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Pointer of a parameter problem.
    #[inline]
    pub fn pointer(&self) -> u8 {
        self.buffer.as_ref()[field::POINTER]
    }

    /// The 4 type-specific bytes after the checksum.
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        let d = &self.buffer.as_ref()[field::REST];
        [d[0], d[1], d[2], d[3]]
    }

    /// Everything after the 8-byte header.
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

    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
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
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        self.buffer.as_mut()[field::NEXT_HOP_MTU].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_rest_of_header(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&v);
    }

    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::BODY]
    }

    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}
