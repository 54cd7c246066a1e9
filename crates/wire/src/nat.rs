//! Rewriting an IPv4 packet from one flow key to another (NAT).
//!
//! A translation is described by two keys: the one the packet carries and
//! the one it must leave with. [`translate_v4`] rewrites whatever differs —
//! source address and port (SNAT), destination address and port (DNAT), or
//! both (hairpinning) — and updates the IPv4 header checksum and the
//! transport checksum incrementally (RFC 1624), never by summing the
//! payload again. For ICMP echo the identifier plays the port.
//!
//! Checksum rules: TCP always carries a checksum over a pseudo header that
//! includes the addresses; UDP over IPv4 may carry none (zero), which stays
//! zero, and a computed zero is sent as 0xffff (RFC 768); ICMP has no pseudo
//! header, so only an identifier change touches its checksum.
//!
//! Non-first fragments carry no transport header: only addresses change,
//! and the transport checksum (in the first fragment) is the first
//! fragment's business. Callers must translate every fragment of a datagram
//! with the same keys.

use crate::checksum;
use crate::classify::{Meta, L4};
use crate::flow::{proto, Family, FlowKey};
use crate::{icmpv4, ipv4, tcp, udp};
use core::net::Ipv4Addr;

/// Why a packet could not be translated (the caller drops and counts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatError {
    /// Only IPv4 is translated.
    NotIpv4,
    /// The frame is not the one `meta` describes (shorter than its offsets).
    Mismatch,
}

/// Rewrites `frame` (classified as `meta`) so that it carries `to` instead
/// of `meta.key`. Addresses are IPv4; ports of `to` are ignored for
/// protocols without ports.
pub fn translate_v4(frame: &mut [u8], meta: &Meta, to: &FlowKey) -> Result<(), NatError> {
    translate_v4_summed(frame, meta, to, Sums::between(&meta.key, to))
}

/// The checksum changes of a translation from one key to another (RFC
/// 1624's `~m + m'` summed over the changed words, folded): over the
/// addresses (the IPv4 header) and over addresses and ports (the TCP and
/// UDP headers with their pseudo header). A flow's translation never
/// changes, so conntrack works these out once per flow and direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub addresses: u16,
    pub transport: u16,
}

impl Sums {
    /// The sums for rewriting `from` into `to` (IPv4 keys).
    pub fn between(from: &FlowKey, to: &FlowKey) -> Sums {
        let (addresses, ports) = changes(from, to);
        // Folded first, the checksums come out the same: the fold keeps a
        // sum's value modulo 0xffff, and a nonzero sum nonzero.
        Sums { addresses: checksum::fold(addresses), transport: checksum::fold(addresses + ports) }
    }
}

/// [`translate_v4`] with the checksum changes from `meta.key` to `to`
/// given: `sums` must be [`Sums::between`] the two (a caller that keeps
/// them per flow saves working them out per packet).
pub fn translate_v4_summed(frame: &mut [u8], meta: &Meta, to: &FlowKey, sums: Sums) -> Result<(), NatError> {
    let from = &meta.key;
    if from.family != Family::V4 || to.family != Family::V4 {
        return Err(NatError::NotIpv4);
    }
    let (l3, l4, end) = (usize::from(meta.l3_offset), usize::from(meta.l4_offset), usize::from(meta.l3_end));
    if end > frame.len() || l4 > end || l3 + ipv4::HEADER_LEN > l4 {
        return Err(NatError::Mismatch);
    }
    let (hdr, rest) = frame[..end].split_at_mut(l4);
    // The headers as fixed-size arrays: every field below sits at a
    // constant offset that the compiler checks once, not per access (this
    // runs for every translated packet).
    let Some(ip) = hdr[l3..].first_chunk_mut::<{ ipv4::HEADER_LEN }>() else {
        return Err(NatError::Mismatch);
    };
    // RFC 1624 eqn 3 once per checksum, with every changed word's `~m + m'`
    // summed first: the same result as updating word by word (the
    // property tests compare with a frame built anew), in one fold. With
    // nothing changed the sum is 0 and the checksum stays as it is.
    debug_assert_eq!(sums, Sums::between(from, to), "sums kept for another translation");
    let (addresses, transport) = (u32::from(sums.addresses), u32::from(sums.transport));
    put16(ip, ipv4::field::CHECKSUM, updated(get16(ip, ipv4::field::CHECKSUM), addresses));
    ip[ipv4::field::SRC_ADDR].copy_from_slice(&to.src[..4]);
    ip[ipv4::field::DST_ADDR].copy_from_slice(&to.dst[..4]);

    match meta.l4 {
        L4::Tcp { .. } => {
            if let Some(t) = rest.first_chunk_mut::<{ tcp::HEADER_LEN }>() {
                put16(t, tcp::field::CHECKSUM, updated(get16(t, tcp::field::CHECKSUM), transport));
                put16(t, tcp::field::SRC_PORT, to.src_port);
                put16(t, tcp::field::DST_PORT, to.dst_port);
            }
        }
        L4::Udp => {
            if let Some(u) = rest.first_chunk_mut::<{ udp::HEADER_LEN }>() {
                let old = get16(u, udp::field::CHECKSUM);
                if old != 0 {
                    let c = updated(old, transport);
                    put16(u, udp::field::CHECKSUM, if c == 0 { 0xffff } else { c });
                }
                put16(u, udp::field::SRC_PORT, to.src_port);
                put16(u, udp::field::DST_PORT, to.dst_port);
            }
        }
        L4::IcmpEcho { request } if meta.key.proto == proto::ICMP && rest.len() >= icmpv4::HEADER_LEN => {
            // The identifier is a request's source port, a reply's destination port.
            let ident = if request { to.src_port } else { to.dst_port };
            let mut i = icmpv4::Packet::new_unchecked(rest);
            let old = i.echo_ident();
            if old != ident {
                i.set_checksum(checksum::update_u16(i.checksum(), old, ident));
                i.set_echo_ident(ident);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The big-endian 16-bit field `f` (one of the headers' `field`s) of a
/// header held as an array: a constant range, checked at compile time.
#[inline(always)]
fn get16<const N: usize>(h: &[u8; N], f: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([h[f.start], h[f.start + 1]])
}

/// Writes the big-endian 16-bit field `f` of a header held as an array.
#[inline(always)]
fn put16<const N: usize>(h: &mut [u8; N], f: core::ops::Range<usize>, v: u16) {
    h[f].copy_from_slice(&v.to_be_bytes());
}

/// The sums of RFC 1624's `~m + m'` over the IPv4 addresses and over the
/// ports that change from `from` to `to`.
#[inline]
fn changes(from: &FlowKey, to: &FlowKey) -> (u32, u32) {
    let addresses = change_u32(word(&from.src), word(&to.src)) + change_u32(word(&from.dst), word(&to.dst));
    let ports = change_u16(from.src_port, to.src_port) + change_u16(from.dst_port, to.dst_port);
    (addresses, ports)
}

/// RFC 1624 eqn 3, `~(~HC + Σ(~m + m'))`, for the summed `change` of every
/// changed word: the same result as updating word by word, since each
/// step's fold keeps the sum's value modulo 0xffff and a nonzero sum
/// nonzero.
#[inline]
fn updated(csum: u16, change: u32) -> u16 {
    !checksum::fold(u32::from(!csum) + change)
}

/// `~m + m'` (RFC 1624) for a 32-bit field changing from `old` to `new`:
/// 0 when it does not change, so that an unchanged field adds nothing.
#[inline]
fn change_u32(old: u32, new: u32) -> u32 {
    let change = u32::from(!(old >> 16) as u16) + u32::from(!(old as u16)) + (new >> 16) + (new & 0xffff);
    change * u32::from(old != new)
}

/// An IPv4 address of a key as a number (its first four bytes, in network order).
#[inline(always)]
fn word(a: &[u8; 16]) -> u32 {
    u32::from_be_bytes([a[0], a[1], a[2], a[3]])
}

/// `~m + m'` for a 16-bit field; 0 when it does not change.
#[inline]
fn change_u16(old: u16, new: u16) -> u32 {
    (u32::from(!old) + u32::from(new)) * u32::from(old != new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{self, Eth};
    use crate::classify::classify;
    use crate::ethernet::MacAddr;
    use crate::tcp::TcpFlags;
    use core::net::IpAddr;
    use proptest::prelude::*;

    const ETH: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan: None };

    fn build(kind: u8, s: Ipv4Addr, d: Ipv4Addr, sp: u16, dp: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        let (s, d) = (IpAddr::V4(s), IpAddr::V4(d));
        let n = match kind {
            0 => build::tcp(&mut b, &ETH, s, d, sp, dp, 7, 9, TcpFlags::ACK, 100, len),
            1 => build::udp(&mut b, &ETH, s, d, sp, dp, len),
            _ => build::icmp_echo(&mut b, &ETH, s, d, true, sp, 1, len),
        }
        .unwrap();
        b.truncate(n);
        b
    }

    proptest! {
        /// A translated packet is byte for byte the packet built with the
        /// new addresses and ports: incremental checksums equal full ones.
        #[test]
        fn translation_equals_building_anew(
            kind in 0u8..3, s: u32, d: u32, sp: u16, dp: u16, ns: u32, nd: u32, nsp: u16, ndp: u16, len in 0usize..600,
        ) {
            let (s, d, ns, nd) = (Ipv4Addr::from(s), Ipv4Addr::from(d), Ipv4Addr::from(ns), Ipv4Addr::from(nd));
            prop_assume!(!s.is_multicast() && !s.is_broadcast() && !ns.is_multicast() && !ns.is_broadcast());
            let (dp, ndp) = if kind == 2 { (0, 0) } else { (dp, ndp) };
            let mut f = build(kind, s, d, sp, dp, len);
            let m = classify(&f).unwrap();
            let mut to = m.key;
            to.set_src_v4(ns);
            to.set_dst_v4(nd);
            to.src_port = nsp;
            to.dst_port = ndp;
            translate_v4(&mut f, &m, &to).unwrap();
            let want = build(kind, ns, nd, nsp, ndp, len);
            prop_assert_eq!(&f, &want);
            prop_assert_eq!(classify(&f).unwrap().key, to);
        }
    }

    #[test]
    fn absent_udp_checksum_stays_absent() {
        let mut f = build(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1), 1000, 53, 20);
        let m = classify(&f).unwrap();
        let csum_at = usize::from(m.l4_offset) + 6;
        f[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
        let mut to = m.key;
        to.set_src_v4(Ipv4Addr::new(198, 51, 100, 1));
        to.src_port = 40_000;
        translate_v4(&mut f, &m, &to).unwrap();
        assert_eq!(&f[csum_at..csum_at + 2], &[0, 0]);
        assert_eq!(classify(&f).unwrap().key, to);
    }

    #[test]
    fn ipv6_is_not_translated() {
        let mut b = vec![0u8; 256];
        let s = IpAddr::V6("2001:db8::1".parse().unwrap());
        let d = IpAddr::V6("2001:db8::2".parse().unwrap());
        let n = build::udp(&mut b, &ETH, s, d, 1, 2, 0).unwrap();
        let m = classify(&b[..n]).unwrap();
        assert_eq!(translate_v4(&mut b[..n], &m, &m.key), Err(NatError::NotIpv4));
    }
}

/// Rewrites an ICMPv4 error (classified as `meta`) whose quoted packet must
/// read as `inner_to` and whose outer header must carry `outer_to`'s
/// addresses. RFC 5508: the quoted IP header and ports are translated like
/// the packet they quote, every checksum stays right (outer IP, quoted IP,
/// the quoted transport checksum where the quote holds it, and the ICMP
/// checksum over all of it), all incrementally.
pub fn translate_icmp_error_v4(
    frame: &mut [u8],
    meta: &Meta,
    outer_to: (Ipv4Addr, Ipv4Addr),
    inner_to: &FlowKey,
) -> Result<(), NatError> {
    let L4::IcmpError { inner, inner_l3_offset, .. } = meta.l4 else {
        return Err(NatError::Mismatch);
    };
    if meta.key.family != Family::V4 || inner.family != Family::V4 || inner_to.family != Family::V4 {
        return Err(NatError::NotIpv4);
    }
    let (l3, icmp_at, end) = (usize::from(meta.l3_offset), usize::from(meta.l4_offset), usize::from(meta.l3_end));
    let q = usize::from(inner_l3_offset);
    if end > frame.len() || q + ipv4::HEADER_LEN > end || icmp_at + icmpv4::HEADER_LEN > q {
        return Err(NatError::Mismatch);
    }
    // Outer header (ICMP has no pseudo header: its checksum does not see it).
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[l3..icmp_at]);
        let mut c = ip.checksum();
        let (os, od) = (ip.src_addr(), ip.dst_addr());
        c = checksum::update_u32(c, u32::from(os), u32::from(outer_to.0));
        c = checksum::update_u32(c, u32::from(od), u32::from(outer_to.1));
        ip.set_src_addr(outer_to.0);
        ip.set_dst_addr(outer_to.1);
        ip.set_checksum(c);
    }
    // The quoted packet: remember its bytes, rewrite, then fold the
    // difference into the ICMP checksum.
    let ihl = usize::from(frame[q] & 0x0f) * 4;
    let tp = q + ihl;
    let region_end = end.min(tp + tcp::HEADER_LEN);
    let region_end = q + (region_end - q) / 2 * 2;
    let mut old = [0u8; 80];
    let n = region_end - q;
    old[..n].copy_from_slice(&frame[q..region_end]);
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[q..tp]);
        let mut c = ip.checksum();
        c = checksum::update_u32(c, u32::from(inner.src_v4()), u32::from(inner_to.src_v4()));
        c = checksum::update_u32(c, u32::from(inner.dst_v4()), u32::from(inner_to.dst_v4()));
        ip.set_src_addr(inner_to.src_v4());
        ip.set_dst_addr(inner_to.dst_v4());
        ip.set_checksum(c);
    }
    let quoted = &mut frame[tp..end];
    match inner.proto {
        proto::TCP | proto::UDP if quoted.len() >= 4 => {
            let csum_at = if inner.proto == proto::TCP { 16 } else { 6 };
            if quoted.len() >= csum_at + 2 {
                let old_c = u16::from_be_bytes([quoted[csum_at], quoted[csum_at + 1]]);
                if !(inner.proto == proto::UDP && old_c == 0) {
                    let (addresses, ports) = changes(&inner, inner_to);
                    let mut c = updated(old_c, addresses + ports);
                    if inner.proto == proto::UDP && c == 0 {
                        c = 0xffff;
                    }
                    quoted[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
                }
            }
            quoted[0..2].copy_from_slice(&inner_to.src_port.to_be_bytes());
            quoted[2..4].copy_from_slice(&inner_to.dst_port.to_be_bytes());
        }
        proto::ICMP if quoted.len() >= 8 => {
            // A quoted echo: its identifier (source port of a request,
            // destination port of a reply) and its own checksum.
            let request = quoted[0] == icmpv4::msg::ECHO_REQUEST;
            let (old_id, new_id) =
                if request { (inner.src_port, inner_to.src_port) } else { (inner.dst_port, inner_to.dst_port) };
            let old_c = u16::from_be_bytes([quoted[2], quoted[3]]);
            quoted[2..4].copy_from_slice(&checksum::update_u16(old_c, old_id, new_id).to_be_bytes());
            quoted[4..6].copy_from_slice(&new_id.to_be_bytes());
        }
        _ => {}
    }
    let new_region = &frame[q..region_end];
    let icmp_c = u16::from_be_bytes([frame[icmp_at + 2], frame[icmp_at + 3]]);
    let c = checksum::update_bytes(icmp_c, &old[..n], new_region);
    frame[icmp_at + 2..icmp_at + 4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod icmp_tests {
    use super::*;
    use crate::build::{self, Eth};
    use crate::classify::classify;
    use crate::ethernet::MacAddr;
    use crate::tcp::TcpFlags;
    use core::net::IpAddr;
    use proptest::prelude::*;

    const ETH: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan: None };

    fn invoking(kind: u8, s: Ipv4Addr, d: Ipv4Addr, sp: u16, dp: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        let (s, d) = (IpAddr::V4(s), IpAddr::V4(d));
        let n = match kind {
            0 => build::tcp(&mut b, &ETH, s, d, sp, dp, 7, 9, TcpFlags::ACK, 100, len),
            1 => build::udp(&mut b, &ETH, s, d, sp, dp, len),
            _ => build::icmp_echo(&mut b, &ETH, s, d, true, sp, 1, len),
        }
        .unwrap();
        b[14..n].to_vec()
    }

    fn error(router: Ipv4Addr, to: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        let n = build::icmp_error(&mut b, &ETH, IpAddr::V4(router), IpAddr::V4(to), 3, 3, quoted).unwrap();
        b.truncate(n);
        b
    }

    proptest! {
        /// Translating an error gives the error built about the translated packet.
        #[test]
        fn error_translation_equals_building_anew(
            kind in 0u8..3, s: u32, d: u32, sp: u16, dp: u16, ns: u32, nsp: u16, router: u32, len in 0usize..700,
        ) {
            let (s, d, ns, router) = (Ipv4Addr::from(s), Ipv4Addr::from(d), Ipv4Addr::from(ns), Ipv4Addr::from(router));
            prop_assume!(![s, ns, router].iter().any(|a| a.is_multicast() || a.is_broadcast()));
            let dp = if kind == 2 { 0 } else { dp };
            // The packet as it left (translated), the error about it, coming back.
            let sent = invoking(kind, ns, d, nsp, dp, len);
            let mut err = error(router, ns, &sent);
            let m = classify(&err).unwrap();
            // Untranslate: the quoted packet as the member sent it.
            let original = invoking(kind, s, d, sp, dp, len);
            let inner_to = classify(&[&[0u8; 14][..], &original].concat().iter().enumerate()
                .map(|(i, b)| if i == 12 { 8 } else if i == 13 { 0 } else { *b }).collect::<Vec<_>>()).unwrap().key;
            translate_icmp_error_v4(&mut err, &m, (router, s), &inner_to).unwrap();
            let want = error(router, s, &original);
            prop_assert_eq!(err, want);
        }
    }
}

/// Marks an ECN-capable IP packet Congestion Experienced (RFC 3168 §5):
/// ECT(0) or ECT(1) becomes CE; a not-ECT or already-CE packet is left as
/// it is. IPv4's header checksum is updated incrementally. Returns whether
/// the frame was changed. Frames that are not IP (or are cut short) are
/// left alone.
pub fn mark_ce(frame: &mut [u8]) -> bool {
    use crate::ethernet::{self, EtherType};
    const ECN_MASK: u8 = 0b11;
    const CE: u8 = 0b11;
    const VLAN_TAG_LEN: usize = 4;
    let mut at = ethernet::HEADER_LEN - 2;
    let mut ethertype = [0u8; 2];
    // At most two tags (QinQ), as the classifier accepts.
    for _ in 0..3 {
        let Some(t) = frame.get(at..at + 2) else { return false };
        ethertype.copy_from_slice(t);
        let et = EtherType(u16::from_be_bytes(ethertype));
        at += 2;
        if !et.is_vlan() {
            break;
        }
        at += VLAN_TAG_LEN - 2;
    }
    let l3 = at;
    match EtherType(u16::from_be_bytes(ethertype)) {
        EtherType::IPV4 => {
            let Some(h) = frame.get_mut(l3..l3 + ipv4::HEADER_LEN) else { return false };
            let tos = h[1];
            if tos & ECN_MASK == 0 || tos & ECN_MASK == CE {
                return false;
            }
            let old = u16::from_be_bytes([h[0], h[1]]);
            h[1] = tos | CE;
            let new = u16::from_be_bytes([h[0], h[1]]);
            let csum = u16::from_be_bytes([h[10], h[11]]);
            let c = checksum::update_u16(csum, old, new);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            true
        }
        EtherType::IPV6 => {
            // Traffic class straddles bytes 0 and 1; its ECN bits are byte 1's 0x30.
            const ECN_SHIFT: u8 = 4;
            let Some(h) = frame.get_mut(l3..l3 + 2) else { return false };
            let ecn = (h[1] >> ECN_SHIFT) & ECN_MASK;
            if ecn == 0 || ecn == CE {
                return false;
            }
            h[1] |= CE << ECN_SHIFT;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod ce_tests {
    use super::mark_ce;
    use crate::build::{self, Eth};
    use crate::MacAddr;
    use core::net::IpAddr;

    #[test]
    fn marks_ect_and_keeps_the_checksum_right() {
        let eth = Eth { src: MacAddr([2; 6]), dst: MacAddr([4; 6]), vlan: Some(7) };
        let mut buf = [0u8; 128];
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let n = build::udp(&mut buf, &eth, a, b, 1, 2, 8).unwrap();
        let l3 = 18;
        assert!(!mark_ce(&mut buf[..n]), "not ECT: unchanged");
        buf[l3 + 1] |= 0b10; // ECT(0)
        let c = crate::checksum::finish(crate::checksum::sum(&{
            let mut h = buf[l3..l3 + 20].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        }));
        buf[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        assert!(mark_ce(&mut buf[..n]));
        assert_eq!(buf[l3 + 1] & 0b11, 0b11);
        assert_eq!(crate::checksum::finish(crate::checksum::sum(&buf[l3..l3 + 20])), 0, "header checksum verifies");
        assert!(!mark_ce(&mut buf[..n]), "already CE");
        let (a, b): (IpAddr, IpAddr) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        let n = build::udp(&mut buf, &eth, a, b, 1, 2, 8).unwrap();
        buf[l3 + 1] |= 0b01 << 4; // ECT(1)
        assert!(mark_ce(&mut buf[..n]));
        assert_eq!((buf[l3 + 1] >> 4) & 0b11, 0b11);
        assert!(!mark_ce(&mut buf[..5]));
    }
}
