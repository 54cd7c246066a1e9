//! IP prefixes (CIDR networks) as the member database writes them.
//!
//! Every address column of the database is a prefix in CIDR notation: a
//! device is `10.0.3.7/32` (or just `10.0.3.7`), a member's IPv6 delegation
//! `2001:db8:0:12::/64`. A prefix here is always *canonical*: its host bits
//! are zero and its length fits the family. [`Ipv4Prefix::new`] and the
//! `FromStr` impls refuse anything else, so the compiler and the lookups
//! never meet `10.0.3.7/24` (is that `10.0.3.0/24`, or a typo for `/32`?);
//! the database layer reports such a value against its row instead.
//!
//! Two prefixes either nest or are disjoint (a property of CIDR the
//! compiler's overlap sweep relies on). For sweeps and interval lookups a
//! prefix is a closed range of integers, [`Ipv4Prefix::first`] ..=
//! [`Ipv4Prefix::last`].

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use crate::error::ParseError;

/// An IPv4 network: address with zero host bits, and a length 0..=32.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// An IPv6 network: address with zero host bits, and a length 0..=128.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

/// An IPv4 or IPv6 network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum IpPrefix {
    V4(Ipv4Prefix),
    V6(Ipv6Prefix),
}

const fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

const fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

impl Ipv4Prefix {
    /// The prefix `addr/len`; refused if `len > 32` or `addr` has host bits set.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Ipv4Prefix, ParseError> {
        if len > 32 {
            return Err(ParseError::PrefixLength { value: format!("{addr}/{len}"), max: 32 });
        }
        let bits = u32::from(addr);
        if bits & !mask32(len) != 0 {
            let network = Ipv4Addr::from(bits & mask32(len));
            return Err(ParseError::HostBits { value: format!("{addr}/{len}"), network: format!("{network}/{len}") });
        }
        Ok(Ipv4Prefix { addr, len })
    }

    /// `addr/len` with the host bits cleared, for constant tables (`len` at most 32).
    pub(crate) const fn canonical(addr: Ipv4Addr, len: u8) -> Ipv4Prefix {
        Ipv4Prefix { addr: Ipv4Addr::from_bits(addr.to_bits() & mask32(len)), len }
    }

    /// The single address `addr/32`.
    pub const fn host(addr: Ipv4Addr) -> Ipv4Prefix {
        Ipv4Prefix { addr, len: 32 }
    }

    pub const fn addr(self) -> Ipv4Addr {
        self.addr
    }

    pub const fn prefix_len(self) -> u8 {
        self.len
    }

    /// True for a /32, a single address.
    pub const fn is_host(self) -> bool {
        self.len == 32
    }

    /// The lowest address, as an integer.
    pub fn first(self) -> u32 {
        u32::from(self.addr)
    }

    /// The highest address, as an integer.
    pub fn last(self) -> u32 {
        u32::from(self.addr) | !mask32(self.len)
    }

    pub fn contains(self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask32(self.len) == u32::from(self.addr)
    }

    /// True if every address of `other` is in `self`.
    pub fn covers(self, other: Ipv4Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl Ipv6Prefix {
    /// The prefix `addr/len`; refused if `len > 128` or `addr` has host bits set.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Ipv6Prefix, ParseError> {
        if len > 128 {
            return Err(ParseError::PrefixLength { value: format!("{addr}/{len}"), max: 128 });
        }
        let bits = u128::from(addr);
        if bits & !mask128(len) != 0 {
            let network = Ipv6Addr::from(bits & mask128(len));
            return Err(ParseError::HostBits { value: format!("{addr}/{len}"), network: format!("{network}/{len}") });
        }
        Ok(Ipv6Prefix { addr, len })
    }

    /// `addr/len` with the host bits cleared, for constant tables (`len` at most 128).
    pub(crate) const fn canonical(addr: Ipv6Addr, len: u8) -> Ipv6Prefix {
        Ipv6Prefix { addr: Ipv6Addr::from_bits(addr.to_bits() & mask128(len)), len }
    }

    /// The single address `addr/128`.
    pub const fn host(addr: Ipv6Addr) -> Ipv6Prefix {
        Ipv6Prefix { addr, len: 128 }
    }

    pub const fn addr(self) -> Ipv6Addr {
        self.addr
    }

    pub const fn prefix_len(self) -> u8 {
        self.len
    }

    pub const fn is_host(self) -> bool {
        self.len == 128
    }

    pub fn first(self) -> u128 {
        u128::from(self.addr)
    }

    pub fn last(self) -> u128 {
        u128::from(self.addr) | !mask128(self.len)
    }

    pub fn contains(self, a: Ipv6Addr) -> bool {
        u128::from(a) & mask128(self.len) == u128::from(self.addr)
    }

    pub fn covers(self, other: Ipv6Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl IpPrefix {
    /// The single address `addr/32` or `addr/128`.
    pub const fn host(addr: IpAddr) -> IpPrefix {
        match addr {
            IpAddr::V4(a) => IpPrefix::V4(Ipv4Prefix::host(a)),
            IpAddr::V6(a) => IpPrefix::V6(Ipv6Prefix::host(a)),
        }
    }

    pub const fn addr(self) -> IpAddr {
        match self {
            IpPrefix::V4(p) => IpAddr::V4(p.addr),
            IpPrefix::V6(p) => IpAddr::V6(p.addr),
        }
    }

    pub const fn prefix_len(self) -> u8 {
        match self {
            IpPrefix::V4(p) => p.len,
            IpPrefix::V6(p) => p.len,
        }
    }

    pub fn contains(self, a: IpAddr) -> bool {
        match (self, a) {
            (IpPrefix::V4(p), IpAddr::V4(a)) => p.contains(a),
            (IpPrefix::V6(p), IpAddr::V6(a)) => p.contains(a),
            _ => false,
        }
    }
}

impl From<Ipv4Prefix> for IpPrefix {
    fn from(p: Ipv4Prefix) -> IpPrefix {
        IpPrefix::V4(p)
    }
}

impl From<Ipv6Prefix> for IpPrefix {
    fn from(p: Ipv6Prefix) -> IpPrefix {
        IpPrefix::V6(p)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpPrefix::V4(p) => p.fmt(f),
            IpPrefix::V6(p) => p.fmt(f),
        }
    }
}

/// Splits `"addr/len"`; a bare address is a host prefix.
fn split(s: &str) -> Result<(IpAddr, Option<u8>), ParseError> {
    let bad = || ParseError::Prefix { value: s.to_owned() };
    let s = s.trim();
    match s.split_once('/') {
        None => Ok((s.parse().map_err(|_| bad())?, None)),
        Some((a, l)) => {
            let addr = a.parse().map_err(|_| bad())?;
            let len = l.parse::<u8>().map_err(|_| bad())?;
            Ok((addr, Some(len)))
        }
    }
}

impl FromStr for IpPrefix {
    type Err = ParseError;

    /// `10.0.3.0/24`, `2001:db8::/64`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<IpPrefix, ParseError> {
        match split(s)? {
            (IpAddr::V4(a), len) => Ok(IpPrefix::V4(Ipv4Prefix::new(a, len.unwrap_or(32))?)),
            (IpAddr::V6(a), len) => Ok(IpPrefix::V6(Ipv6Prefix::new(a, len.unwrap_or(128))?)),
        }
    }
}

impl FromStr for Ipv4Prefix {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Ipv4Prefix, ParseError> {
        match s.parse()? {
            IpPrefix::V4(p) => Ok(p),
            IpPrefix::V6(_) => Err(ParseError::Family { value: s.trim().to_owned(), expected: "IPv4" }),
        }
    }
}

impl FromStr for Ipv6Prefix {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Ipv6Prefix, ParseError> {
        match s.parse()? {
            IpPrefix::V6(p) => Ok(p),
            IpPrefix::V4(_) => Err(ParseError::Family { value: s.trim().to_owned(), expected: "IPv6" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_prefixes_and_hosts() {
        let p: IpPrefix = "10.0.3.0/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.3.0/24");
        let h: IpPrefix = "10.0.3.7".parse().unwrap();
        assert_eq!(h.to_string(), "10.0.3.7/32");
        let v6: Ipv6Prefix = "2001:db8:0:12::/64".parse().unwrap();
        assert_eq!(v6.first(), u128::from("2001:db8:0:12::".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(v6.last() - v6.first(), u128::from(u64::MAX));
        let all: Ipv4Prefix = "0.0.0.0/0".parse().unwrap();
        assert_eq!((all.first(), all.last()), (0, u32::MAX));
    }

    #[test]
    fn refuses_host_bits_long_lengths_and_wrong_family() {
        let e = "10.0.3.7/24".parse::<IpPrefix>().unwrap_err();
        assert_eq!(e.to_string(), "10.0.3.7/24 has host bits set (the network is 10.0.3.0/24)");
        assert!("10.0.0.0/33".parse::<IpPrefix>().unwrap_err().to_string().contains("longer than 32"));
        assert!("2001:db8::/129".parse::<IpPrefix>().is_err());
        assert!("10.0.0.0/x".parse::<IpPrefix>().is_err());
        assert!("10.0.0.0".parse::<Ipv6Prefix>().unwrap_err().to_string().contains("not an IPv6"));
    }

    #[test]
    fn containment() {
        let p: Ipv4Prefix = "10.0.3.0/24".parse().unwrap();
        assert!(p.contains(Ipv4Addr::new(10, 0, 3, 255)));
        assert!(!p.contains(Ipv4Addr::new(10, 0, 4, 0)));
        assert!(p.covers("10.0.3.128/25".parse().unwrap()));
        assert!(!p.covers("10.0.0.0/16".parse().unwrap()));
    }
}
