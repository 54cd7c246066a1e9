//! Addresses that are never a member's device and never a public address.
//!
//! Some ranges mean the same thing on every network (the IANA
//! special-purpose registries, RFC 6890): a packet from `127.0.0.1` never
//! left the host that sent it, `224.0.0.1` is a group, not a device,
//! `0.0.0.0` is "no address yet", `255.255.255.255` reaches a whole link
//! and no router forwards it, `169.254.0.0/16` and `fe80::/10` end at the
//! link, `240.0.0.0/4` is reserved. A member database that puts one of
//! them in `member_addresses` or `public_addresses` holds a typo or a
//! placeholder, and a policy built from it would translate members' traffic
//! to an address no reply can reach. The compiler refuses them, naming the
//! row.
//!
//! What stays allowed, on purpose: the private ranges of RFC 1918, the
//! shared address space `100.64.0.0/10` and the documentation and
//! benchmarking ranges. Labs and networks behind a carrier's NAT use them
//! as "public" addresses, and the lab of this repository does.

use core::fmt;

use crate::prefix::{IpPrefix, Ipv4Prefix, Ipv6Prefix};

/// A special-purpose range, for messages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Special {
    /// The range.
    pub prefix: IpPrefix,
    /// Its name with an article, for "x is ...": "a loopback", "the broadcast".
    article: &'static str,
    /// Its name alone, for "x includes ... addresses".
    kind: &'static str,
}

const fn v4(a: [u8; 4], len: u8, article: &'static str, kind: &'static str) -> Special {
    let addr = core::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]);
    Special { prefix: IpPrefix::V4(Ipv4Prefix::canonical(addr, len)), article, kind }
}

const fn v6(a: u128, len: u8, article: &'static str, kind: &'static str) -> Special {
    let addr = core::net::Ipv6Addr::from_bits(a);
    Special { prefix: IpPrefix::V6(Ipv6Prefix::canonical(addr, len)), article, kind }
}

/// The ranges, most specific first (the broadcast address before the
/// reserved range that holds it), so a single address gets its precise name.
const SPECIAL: [Special; 10] = [
    v4([0, 0, 0, 0], 8, "an unspecified (\"this network\")", "unspecified (\"this network\")"),
    v4([127, 0, 0, 0], 8, "a loopback", "loopback"),
    v4([169, 254, 0, 0], 16, "a link-local", "link-local"),
    v4([224, 0, 0, 0], 4, "a multicast", "multicast"),
    v4([255, 255, 255, 255], 32, "the broadcast", "broadcast"),
    v4([240, 0, 0, 0], 4, "a reserved", "reserved"),
    v6(0, 128, "the unspecified", "unspecified"),
    v6(1, 128, "the loopback", "loopback"),
    v6(0xfe80 << 112, 10, "a link-local", "link-local"),
    v6(0xff00 << 112, 8, "a multicast", "multicast"),
];

/// The first special-purpose range `prefix` lies in or overlaps, if any.
pub(crate) fn special(prefix: IpPrefix) -> Option<Special> {
    SPECIAL.iter().copied().find(|s| overlaps(s.prefix, prefix))
}

/// Two CIDR prefixes overlap exactly when one holds the other.
fn overlaps(a: IpPrefix, b: IpPrefix) -> bool {
    match (a, b) {
        (IpPrefix::V4(a), IpPrefix::V4(b)) => a.covers(b) || b.covers(a),
        (IpPrefix::V6(a), IpPrefix::V6(b)) => a.covers(b) || b.covers(a),
        _ => false,
    }
}

/// What `what` (an address or prefix) has to do with a special range:
/// `127.0.0.1 is a loopback address (127.0.0.0/8)`, or for a prefix that
/// holds one, `0.0.0.0/0 includes loopback addresses (127.0.0.0/8)`.
pub(crate) struct Described<'a> {
    pub what: &'a dyn fmt::Display,
    pub prefix: IpPrefix,
    pub special: Special,
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.special;
        let inside = match (s.prefix, self.prefix) {
            (IpPrefix::V4(a), IpPrefix::V4(b)) => a.covers(b),
            (IpPrefix::V6(a), IpPrefix::V6(b)) => a.covers(b),
            _ => false,
        };
        if inside {
            write!(f, "{} is {} address ({})", self.what, s.article, s.prefix)
        } else {
            write!(f, "{} includes {} addresses ({})", self.what, s.kind, s.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(p: &str) -> Option<String> {
        let prefix: IpPrefix = p.parse().unwrap();
        special(prefix).map(|special| Described { what: &prefix, prefix, special }.to_string())
    }

    #[test]
    fn special_ranges_are_named_and_private_ones_allowed() {
        assert_eq!(said("127.0.0.1").unwrap(), "127.0.0.1/32 is a loopback address (127.0.0.0/8)");
        assert_eq!(
            said("255.255.255.255").unwrap(),
            "255.255.255.255/32 is the broadcast address (255.255.255.255/32)"
        );
        assert_eq!(said("240.0.0.7").unwrap(), "240.0.0.7/32 is a reserved address (240.0.0.0/4)");
        assert_eq!(said("0.0.0.0").unwrap(), "0.0.0.0/32 is an unspecified (\"this network\") address (0.0.0.0/8)");
        assert_eq!(said("224.0.0.1").unwrap(), "224.0.0.1/32 is a multicast address (224.0.0.0/4)");
        assert_eq!(said("169.254.1.1").unwrap(), "169.254.1.1/32 is a link-local address (169.254.0.0/16)");
        assert_eq!(
            said("0.0.0.0/0").unwrap(),
            "0.0.0.0/0 includes unspecified (\"this network\") addresses (0.0.0.0/8)"
        );
        assert_eq!(said("::1").unwrap(), "::1/128 is the loopback address (::1/128)");
        assert_eq!(said("::").unwrap(), "::/128 is the unspecified address (::/128)");
        assert_eq!(said("ff02::/16").unwrap(), "ff02::/16 is a multicast address (ff00::/8)");
        assert_eq!(said("fe80::/64").unwrap(), "fe80::/64 is a link-local address (fe80::/10)");
        assert_eq!(said("::/0").unwrap(), "::/0 includes unspecified addresses (::/128)");
        for fine in ["10.0.0.1", "172.16.0.0/12", "192.168.1.0/24", "100.64.0.1", "198.51.100.7", "198.18.0.11"] {
            assert_eq!(said(fine), None, "{fine}");
        }
        for fine in ["2001:db8::/32", "fd00::/8", "2001:db8:0:101::/64"] {
            assert_eq!(said(fine), None, "{fine}");
        }
    }
}
