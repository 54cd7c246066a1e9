//! Flow keys: the 5-tuple that names one direction of a connection.
//!
//! A [`FlowKey`] is what connection tracking hashes and compares, so it is a
//! plain, fixed-size value: both address families share one layout (an IPv4
//! address sits in the first four bytes of the 16-byte field, the rest zero),
//! which keeps the hash input and the equality test branch-free.
//!
//! For ICMP echo and ICMPv6 echo the identifier is a request's source port
//! and a reply's destination port (the other port zero), so that
//! [`FlowKey::reversed`] of a request's key is exactly the reply's key.
//! For a non-first fragment (no transport header) both ports are zero.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers torwart looks at.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6_HOP_BY_HOP: u8 = 0;
    pub const IPV6_ROUTING: u8 = 43;
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NO_NEXT: u8 = 59;
    pub const IPV6_DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
}

/// Address family of a flow.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[repr(u8)]
pub enum Family {
    V4 = 4,
    V6 = 6,
}

/// One direction of a connection: addresses, ports (or ICMP identifier) and protocol.
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
// Aligned so that copies and comparisons are whole-word moves.
#[repr(C, align(8))]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub family: Family,
}

impl PartialEq for FlowKey {
    /// Five word compares instead of a field-by-field walk: this runs once
    /// per packet in the flow lookup. Same result as comparing the fields.
    #[inline]
    fn eq(&self, other: &FlowKey) -> bool {
        // Folded, not `==` on the arrays: that compiles to a call of
        // `memcmp` (40 bytes), twice the instructions of the fold.
        let (a, b) = (self.words(), other.words());
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
    }
}

impl core::hash::Hash for FlowKey {
    /// The words equality compares, so equal keys hash alike.
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        for w in self.words() {
            h.write_u64(w);
        }
    }
}

impl FlowKey {
    /// The key as five 64-bit words (what the flow hash takes and what
    /// equality compares); equal keys have equal words and vice versa.
    #[inline]
    pub fn words(&self) -> [u64; 5] {
        let w = |b: &[u8; 16], i: usize| {
            u64::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]])
        };
        let tail = u64::from(self.src_port)
            | u64::from(self.dst_port) << 16
            | u64::from(self.proto) << 32
            | (self.family as u64) << 40;
        [w(&self.src, 0), w(&self.src, 8), w(&self.dst, 0), w(&self.dst, 8), tail]
    }

    /// The same key with other ports.
    #[inline]
    pub const fn with_ports(&self, src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey { src_port, dst_port, ..*self }
    }

    /// A key for an IPv4 flow.
    pub const fn v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey { src: pad4(src.octets()), dst: pad4(dst.octets()), src_port, dst_port, proto, family: Family::V4 }
    }

    /// A key for an IPv6 flow.
    pub const fn v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey { src: src.octets(), dst: dst.octets(), src_port, dst_port, proto, family: Family::V6 }
    }

    /// The key of the opposite direction of the same connection.
    #[inline]
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
            family: self.family,
        }
    }

    pub fn src_ip(&self) -> IpAddr {
        addr(self.family, &self.src)
    }

    pub fn dst_ip(&self) -> IpAddr {
        addr(self.family, &self.dst)
    }

    /// The IPv4 source address; meaningful only for [`Family::V4`] keys.
    #[inline]
    pub fn src_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.src[0], self.src[1], self.src[2], self.src[3])
    }

    /// The IPv4 destination address; meaningful only for [`Family::V4`] keys.
    #[inline]
    pub fn dst_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.dst[0], self.dst[1], self.dst[2], self.dst[3])
    }

    #[inline]
    pub fn set_src_v4(&mut self, a: Ipv4Addr) {
        self.src = pad4(a.octets());
    }

    #[inline]
    pub fn set_dst_v4(&mut self, a: Ipv4Addr) {
        self.dst = pad4(a.octets());
    }
}

const fn pad4(o: [u8; 4]) -> [u8; 16] {
    // One 32-bit value widened, not four byte stores: later 16-byte loads of
    // the key then forward from the store instead of stalling on it.
    (u32::from_le_bytes(o) as u128).to_le_bytes()
}

fn addr(family: Family, b: &[u8; 16]) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(*b)),
    }
}

/// The name of IP protocol `p` as `conntrack -L` says it, if it is one of these four.
pub fn proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        proto::ICMPV6 => "icmpv6",
        _ => return None,
    })
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for FlowKey {
    /// `tcp 10.0.0.1:1234 -> 192.0.2.1:80`, IPv6 addresses in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match proto_name(self.proto) {
            Some(n) => write!(f, "{n} ")?,
            None => write!(f, "proto{} ", self.proto)?,
        }
        match self.family {
            Family::V4 => write!(f, "{}:{} -> {}:{}", self.src_v4(), self.src_port, self.dst_v4(), self.dst_port),
            Family::V6 => write!(f, "[{}]:{} -> [{}]:{}", self.src_ip(), self.src_port, self.dst_ip(), self.dst_port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_twice_is_identity() {
        let k = FlowKey::v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1), proto::TCP, 1234, 80);
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().src_v4(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(k.reversed().src_port, 80);
        assert_eq!(format!("{k}"), "tcp 10.0.0.1:1234 -> 192.0.2.1:80");
    }
}
