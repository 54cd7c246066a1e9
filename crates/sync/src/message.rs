//! The datagram: a fixed header, the records, and a tag over both.
//!
//! ```text
//!  0  "TWS" version(1)        4  kind   5  key id   6..8  zero
//!  8  sender's session       16  receiver's session (0: not known yet)
//! 24  number: counts every datagram of the session, from 1
//! 32  sequence number (data; 0 otherwise)
//! 40  cumulative acknowledgement: every data datagram up to here arrived
//! 48  selective acknowledgements: bit i = ack + 2 + i arrived
//! 56  nonce (hello: the sender's challenge)
//! 64  echo  (hello: the receiver's challenge, answered)
//! 72  records (data only)
//!     tag: HMAC-SHA-256 of everything before it, 16 bytes
//! ```
//!
//! [`open`] checks the length, the magic, the key id and the tag before it
//! reads a single field, so nothing unauthenticated is ever interpreted.

use crate::key::{Keys, TAG_LEN};
use crate::record::{Malformed, Reader};

pub const MAGIC: [u8; 4] = *b"TWS\x01";
pub const HEADER_LEN: usize = 72;
/// The smallest datagram: a header and a tag.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// The largest datagram accepted: one that fits a 9000-byte jumbo frame.
pub const MAX_LEN: usize = 8952;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Liveness and the session handshake.
    Hello = 1,
    /// Records, numbered.
    Data = 2,
    /// Acknowledgements only.
    Ack = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub sender: u64,
    pub receiver: u64,
    pub number: u64,
    pub seq: u64,
    pub ack: u64,
    pub sack: u64,
    pub nonce: u64,
    pub echo: u64,
}

/// Why a datagram was refused before any of it was believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    TooShort,
    TooLong,
    /// Not a torwart sync message, or another version of the protocol.
    Magic,
    /// Signed with a key this box does not hold.
    UnknownKey,
    /// The tag does not match: forged, corrupted, or another key.
    Tag,
    /// Authenticated but not well formed (a bug or version skew in the peer).
    Malformed(Malformed),
}

/// Seals a datagram in `buf`: `buf[HEADER_LEN..HEADER_LEN + payload]` holds
/// the records already; writes the header and the tag, returns the length.
pub fn seal(keys: &Keys, kind: Kind, h: &Header, buf: &mut [u8], payload: usize) -> usize {
    let key = keys.signing();
    buf[..4].copy_from_slice(&MAGIC);
    buf[4] = kind as u8;
    buf[5] = key.id();
    buf[6..8].fill(0);
    for (i, v) in [h.sender, h.receiver, h.number, h.seq, h.ack, h.sack, h.nonce, h.echo].into_iter().enumerate() {
        buf[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_be_bytes());
    }
    let end = HEADER_LEN + payload;
    let tag = key.tag(&buf[..end]);
    buf[end..end + TAG_LEN].copy_from_slice(&tag);
    end + TAG_LEN
}

/// Authenticates `datagram` and returns its kind, header and payload.
pub fn open<'a>(keys: &Keys, datagram: &'a [u8]) -> Result<(Kind, Header, &'a [u8]), Refused> {
    if datagram.len() < MIN_LEN {
        return Err(Refused::TooShort);
    }
    if datagram.len() > MAX_LEN {
        return Err(Refused::TooLong);
    }
    if datagram[..4] != MAGIC {
        return Err(Refused::Magic);
    }
    let key = keys.by_id(datagram[5]).ok_or(Refused::UnknownKey)?;
    let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    if !key.verify(signed, tag) {
        return Err(Refused::Tag);
    }
    let kind = match signed[4] {
        1 => Kind::Hello,
        2 => Kind::Data,
        3 => Kind::Ack,
        _ => return Err(Refused::Malformed(Malformed::Field("kind"))),
    };
    if signed[6..8] != [0, 0] {
        return Err(Refused::Malformed(Malformed::Field("reserved")));
    }
    let mut r = Reader { b: &signed[8..HEADER_LEN], at: 0 };
    let mut word = || r.u64().map_err(Refused::Malformed);
    let h = Header {
        sender: word()?,
        receiver: word()?,
        number: word()?,
        seq: word()?,
        ack: word()?,
        sack: word()?,
        nonce: word()?,
        echo: word()?,
    };
    let payload = &signed[HEADER_LEN..];
    if kind != Kind::Data && !payload.is_empty() {
        return Err(Refused::Malformed(Malformed::Field("payload outside data")));
    }
    Ok((kind, h, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    #[test]
    fn sealed_opens_and_any_changed_byte_is_refused() {
        let keys = Keys::from_keys(Key::new(&[7; 32]), []);
        let mut buf = [0u8; 200];
        buf[HEADER_LEN..HEADER_LEN + 3].copy_from_slice(&[6, 0, 0]); // a Gap record
        let h = Header { sender: 1, receiver: 2, number: 8, seq: 3, ack: 4, sack: 5, nonce: 6, echo: 7 };
        let n = seal(&keys, Kind::Data, &h, &mut buf, 3);
        assert_eq!(open(&keys, &buf[..n]), Ok((Kind::Data, h, &buf[HEADER_LEN..HEADER_LEN + 3])));
        for i in 0..n {
            let mut bad = buf;
            bad[i] ^= 1;
            assert!(open(&keys, &bad[..n]).is_err(), "byte {i}");
        }
        assert_eq!(open(&keys, &buf[..n - 1]), Err(Refused::Tag));
        assert_eq!(open(&keys, &buf[..MIN_LEN - 1]), Err(Refused::TooShort));
        let other = Keys::from_keys(Key::new(&[8; 32]), []);
        assert!(matches!(open(&other, &buf[..n]), Err(Refused::UnknownKey | Refused::Tag)));
        // During a rotation, the receiver holding both keys accepts either.
        let both = Keys::from_keys(Key::new(&[8; 32]), [Key::new(&[7; 32])]);
        assert!(open(&both, &buf[..n]).is_ok());
    }
}
