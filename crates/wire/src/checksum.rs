//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the one's-complement of the one's-complement sum of the
//! data taken as big-endian 16-bit words. This module keeps the two halves
//! apart: [`sum`] and the pseudo-header functions return a *partial sum*
//! (a `u32` that can be added to other partial sums, always at most 0xffff
//! so that many can be added without overflow), [`fold`] folds the carries
//! into 16 bits, and [`finish`] complements the folded sum into the value
//! that goes on the wire.
//!
//! Adding partial sums is only correct when every span but the last has even
//! length (an odd span would shift the next one by a byte); headers are
//! always even, so this only concerns payloads, which come last.
//!
//! Rewriting an address or a port (NAT) must not touch the payload, so the
//! checksum is patched with RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`,
//! instead of being recomputed. Equation 3 (unlike eqn 2 of RFC 1141) never
//! produces 0xffff where a full recomputation would produce 0, which is what
//! makes `update == recompute` hold exactly; the property tests check it.
//!
//! UDP adds one wrinkle (RFC 768): a checksum that computes to 0 is sent as
//! 0xffff, and a transmitted 0 means "no checksum" (IPv4 only). [`update_udp`]
//! keeps an absent checksum absent and applies the 0 → 0xffff rule.

use core::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as big-endian 16-bit words, folded to at
/// most 0xffff. An odd final byte is padded with a zero byte.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // 64-bit words with end-around carry give the same one's-complement sum
    // as 16-bit words (RFC 1071 §2(B)), in a quarter of the additions and
    // without a data-dependent loop at the end.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(w);
        acc = s + u64::from(carry);
    }
    let (s, carry) = acc.overflowing_add(tail(chunks.remainder()));
    fold64(s + u64::from(carry))
}

/// The last 0 to 7 bytes as the high bytes of a big-endian word (the rest
/// zero), read in at most three loads: a copy into a zeroed word would be a
/// call to `memcpy` and a stalled load of what it stored.
#[inline]
fn tail(mut rest: &[u8]) -> u64 {
    let mut word = 0u64;
    let mut shift = 64;
    if let [a, b, c, d, more @ ..] = rest {
        shift -= 32;
        word |= u64::from(u32::from_be_bytes([*a, *b, *c, *d])) << shift;
        rest = more;
    }
    if let [a, b, more @ ..] = rest {
        shift -= 16;
        word |= u64::from(u16::from_be_bytes([*a, *b])) << shift;
        rest = more;
    }
    if let [a, ..] = rest {
        shift -= 8;
        word |= u64::from(*a) << shift;
    }
    word
}

/// Folds a 64-bit one's-complement accumulator to at most 0xffff, branch-free.
#[inline]
fn fold64(acc: u64) -> u32 {
    let a = (acc & 0xffff_ffff) + (acc >> 32);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    a as u32
}

/// Fold the carries of a partial sum into 16 bits (no complement).
#[inline]
pub fn fold(s: u32) -> u16 {
    // Two rounds carry any u32 into 16 bits: the first leaves at most
    // 0x1fffe, the second at most 0xffff.
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for a partial sum: `!fold(s)`.
#[inline]
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Partial sum of the IPv4 pseudo header (RFC 793 §3.1, RFC 768).
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let acc = u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(protocol)
        + u32::from(len);
    u32::from(fold(acc))
}

/// Partial sum of the IPv6 pseudo header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let acc = sum(&src.octets()) + sum(&dst.octets()) + (len >> 16) + (len & 0xffff) + u32::from(next_header);
    u32::from(fold(acc))
}

/// RFC 1624 eqn 3 for one 16-bit word changing from `old` to `new`.
#[inline]
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// RFC 1624 eqn 3 for a 32-bit field (an IPv4 address, a sequence number).
#[inline]
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    let acc =
        u32::from(!csum) + u32::from(!(old >> 16) as u16) + u32::from(!(old as u16)) + (new >> 16) + (new & 0xffff);
    !fold(acc)
}

/// RFC 1624 eqn 3 for a span of bytes (an IPv6 address). `old` and `new`
/// must have the same, even, length and start at an even offset of the
/// checksummed data; otherwise the result is meaningless (but no panic).
#[inline]
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert!(old.len() % 2 == 0);
    let acc = u32::from(!csum) + u32::from(!fold(sum(old))) + sum(new);
    !fold(acc)
}

/// [`update_bytes`] for a UDP checksum: an absent (zero) checksum stays
/// absent, and a result of 0 is sent as 0xffff (RFC 768).
#[inline]
pub fn update_udp(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    if csum == 0 {
        return 0;
    }
    match update_bytes(csum, old, new) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn sum_agrees_with_16_bit_words_at_every_length() {
        let data: Vec<u8> = (0..64u32).map(|i| (i.wrapping_mul(0x9e37_79b9) >> 13) as u8 | 0x80).collect();
        for len in 0..=data.len() {
            let words = data[..len].chunks(2).map(|w| u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0)));
            let reference = words.fold(0u32, |acc, w| u32::from(fold(acc + w)));
            assert_eq!(fold(sum(&data[..len])), reference as u16, "{len} bytes");
        }
    }

    #[test]
    fn sum_never_exceeds_16_bits() {
        let big = [0xffu8; 9001];
        assert!(sum(&big) <= 0xffff);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285, HC' = 0x0000.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn update_u32_matches_two_u16() {
        let c = 0x1234;
        assert_eq!(update_u32(c, 0x0a00_0001, 0xc000_0201), update_u16(update_u16(c, 0x0a00, 0xc000), 0x0001, 0x0201));
    }

    #[test]
    fn udp_zero_stays_zero() {
        assert_eq!(update_udp(0, &[1, 2], &[3, 4]), 0);
    }
}
