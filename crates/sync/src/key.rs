//! The shared keys that authenticate sync messages.
//!
//! Both boxes hold the same key file: one key per line, 64 hex digits
//! (32 bytes), `#` comments and blank lines allowed. The first key signs
//! what this box sends; every key in the file is accepted on receipt, so a
//! key is rotated without a moment in which the boxes disagree: add the
//! new key as the second line on both boxes, then make it the first on
//! both, then remove the old one.
//!
//! A message carries the one-byte id of the key that signed it (derived
//! from the key, not secret), so a receiver tries only the key it names.
//! The tag is HMAC-SHA-256 over the whole message, truncated to 16 bytes.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a message's tag.
pub const TAG_LEN: usize = 16;
/// Keys a file may hold: the one in use and the ones being rotated to or from.
pub const MAX_KEYS: usize = 2;
/// Bytes a key file may have; anything longer is not a key file.
pub const MAX_FILE_LEN: usize = 4096;

/// One key, ready to sign and verify.
#[derive(Clone)]
pub struct Key {
    id: u8,
    mac: Hmac<Sha256>,
}

impl core::fmt::Debug for Key {
    /// Shows the id, never the key.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Key(id {})", self.id)
    }
}

impl Key {
    pub fn new(bytes: &[u8; KEY_LEN]) -> Key {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(bytes).expect("HMAC takes a key of any length");
        let mut id = mac.clone();
        id.update(b"torwart sync key id");
        Key { id: id.finalize().into_bytes()[0], mac }
    }

    /// The id messages signed with this key carry.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The tag of `message`.
    pub fn tag(&self, message: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.mac.clone();
        m.update(message);
        let full = m.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Does `tag` authenticate `message`? Compared in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(message);
        m.verify_truncated_left(tag).is_ok()
    }
}

/// The keys of a key file: the first signs, all verify.
#[derive(Clone, Debug)]
pub struct Keys {
    keys: Vec<Key>,
}

/// What is wrong with a key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFileError {
    TooLong {
        bytes: usize,
    },
    Empty,
    /// Line `line` (from 1) is not 64 hex digits.
    NotAKey {
        line: usize,
    },
    TooMany {
        keys: usize,
    },
    /// Two lines hold keys with the same id; one of them must go.
    SameId {
        line: usize,
    },
}

impl core::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyFileError::TooLong { bytes } => write!(f, "{bytes} bytes, more than a key file's {MAX_FILE_LEN}"),
            KeyFileError::Empty => write!(f, "no key in it (one key per line: 64 hex digits)"),
            KeyFileError::NotAKey { line } => write!(f, "line {line} is not a key (64 hex digits)"),
            KeyFileError::TooMany { keys } => {
                write!(f, "{keys} keys; at most {MAX_KEYS} (the one in use and one being rotated)")
            }
            KeyFileError::SameId { line } => {
                write!(f, "the key on line {line} has the same id as an earlier one; make a new key")
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

impl Keys {
    /// Reads a key file's text. Linear in its length, which is bounded.
    pub fn parse(text: &str) -> Result<Keys, KeyFileError> {
        if text.len() > MAX_FILE_LEN {
            return Err(KeyFileError::TooLong { bytes: text.len() });
        }
        let mut keys: Vec<Key> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex_key(line).ok_or(KeyFileError::NotAKey { line: i + 1 })?;
            let key = Key::new(&bytes);
            if keys.iter().any(|k| k.id == key.id) {
                return Err(KeyFileError::SameId { line: i + 1 });
            }
            keys.push(key);
        }
        match keys.len() {
            0 => Err(KeyFileError::Empty),
            n if n > MAX_KEYS => Err(KeyFileError::TooMany { keys: n }),
            _ => Ok(Keys { keys }),
        }
    }

    pub fn from_keys(first: Key, others: impl IntoIterator<Item = Key>) -> Keys {
        let mut keys = vec![first];
        keys.extend(others);
        keys.truncate(MAX_KEYS);
        Keys { keys }
    }

    /// The key that signs.
    pub fn signing(&self) -> &Key {
        &self.keys[0]
    }

    /// The key with this id, if the file holds one.
    pub fn by_id(&self, id: u8) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }
}

fn hex_key(s: &str) -> Option<[u8; KEY_LEN]> {
    let s = s.as_bytes();
    if s.len() != KEY_LEN * 2 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; KEY_LEN];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_key_file_with_comments_and_two_keys() {
        let keys = Keys::parse(&format!("# sync key\n\n{A}\n  {B}  \n")).unwrap();
        let a = Key::new(&hex_key(A).unwrap());
        assert_eq!(keys.signing().id(), a.id());
        let tag = a.tag(b"hello");
        assert!(keys.by_id(a.id()).unwrap().verify(b"hello", &tag));
        assert!(!keys.by_id(a.id()).unwrap().verify(b"hellp", &tag));
        let b = Key::new(&hex_key(B).unwrap());
        assert!(!b.verify(b"hello", &tag));
    }

    #[test]
    fn bad_key_files_name_what_is_wrong() {
        assert_eq!(Keys::parse("# nothing\n").unwrap_err(), KeyFileError::Empty);
        assert_eq!(Keys::parse(&format!("{A}\nxyz\n")).unwrap_err(), KeyFileError::NotAKey { line: 2 });
        assert_eq!(Keys::parse(&A[..62]).unwrap_err(), KeyFileError::NotAKey { line: 1 });
        assert_eq!(Keys::parse(&format!("{A}\n{A}\n")).unwrap_err(), KeyFileError::SameId { line: 2 });
        let c = "aa".repeat(32);
        assert_eq!(Keys::parse(&format!("{A}\n{B}\n{c}\n")).unwrap_err(), KeyFileError::TooMany { keys: 3 });
        assert!(matches!(Keys::parse(&"#".repeat(5000)), Err(KeyFileError::TooLong { .. })));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = Key::new(&[0x42; KEY_LEN]);
        assert!(!format!("{k:?}").contains("42, 42"));
    }
}
