//! IEEE 802.1Q / 802.1ad VLAN tags.
//!
//! A tag sits where the EtherType would be: the outer EtherType (0x8100 for
//! 802.1Q, 0x88a8 for an 802.1ad service tag) is followed by 2 bytes of Tag
//! Control Information (3-bit priority code point, drop-eligible bit, 12-bit
//! VLAN id) and the inner EtherType. This view starts at the TCI, i.e. at the
//! Ethernet payload of a tagged frame, so tags stack by viewing the payload
//! again. Invariant after [`Packet::new_checked`]: at least [`HEADER_LEN`]
//! bytes.

use crate::error::{BuildError, ParseError};
use crate::ethernet::EtherType;

mod field {
    use core::ops::{Range, RangeFrom};
    pub const TCI: Range<usize> = 0..2;
    pub const ETHERTYPE: Range<usize> = 2..4;
    pub const PAYLOAD: RangeFrom<usize> = 4..;
}

/// Length of one tag after the outer EtherType.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of one VLAN tag and what follows it.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn tci(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::TCI];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// Priority code point (0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (0..=4095; 0 means priority tag only).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType of what follows the tag.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let d = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType(u16::from_be_bytes([d[0], d[1]]))
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_tci(&mut self, v: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_pcp(&mut self, pcp: u8) {
        let t = (self.tci() & 0x1fff) | (u16::from(pcp & 7) << 13);
        self.set_tci(t);
    }

    pub fn set_dei(&mut self, dei: bool) {
        let t = (self.tci() & !0x1000) | if dei { 0x1000 } else { 0 };
        self.set_tci(t);
    }

    pub fn set_vid(&mut self, vid: u16) {
        let t = (self.tci() & 0xf000) | (vid & 0x0fff);
        self.set_tci(t);
    }

    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&t.0.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// One VLAN tag as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub pcp: u8,
    pub dei: bool,
    pub vid: u16,
    pub ethertype: EtherType,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, ParseError> {
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Repr { pcp: p.pcp(), dei: p.dei(), vid: p.vid(), ethertype: p.ethertype() })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<(), BuildError> {
        if p.buffer.as_ref().len() < HEADER_LEN || self.pcp > 7 || self.vid > 0x0fff {
            return Err(if p.buffer.as_ref().len() < HEADER_LEN {
                BuildError::BufferTooSmall
            } else {
                BuildError::BadArgument
            });
        }
        p.set_tci((u16::from(self.pcp) << 13) | if self.dei { 0x1000 } else { 0 } | self.vid);
        p.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        // TCI 0xb07b: pcp 5, dei 1, vid 0x07b; inner IPv4.
        let b = [0xb0, 0x7b, 0x08, 0x00, 0x45];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.pcp(), p.dei(), p.vid(), p.ethertype()), (5, true, 0x7b, EtherType::IPV4));
        assert_eq!(p.payload(), &[0x45]);
        assert_eq!(Packet::new_checked(&b[..3]).unwrap_err(), ParseError::Truncated);
    }

    #[test]
    fn repr_roundtrip() {
        let r = Repr { pcp: 3, dei: false, vid: 4095, ethertype: EtherType::IPV6 };
        let mut b = [0u8; 4];
        r.emit(&mut Packet::new_unchecked(&mut b[..])).unwrap();
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
    }
}
