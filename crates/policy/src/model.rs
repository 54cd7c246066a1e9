//! The member database as plain data: the compiler's input.
//!
//! [`MemberDb`] has one `Vec` per table of `docs/members.md`, one struct per
//! row, fields named after the columns. The database layer fills it from
//! SQLite, PostgreSQL or a CSV/JSON import; tests build it by hand or with
//! [`crate::sample`]. Nothing here is validated: a `MemberDb` may hold any
//! mess a database can hold (duplicate keys, dangling references,
//! overlapping addresses), and [`crate::compile()`] says what is wrong with
//! it. Only single column values are typed strictly (a prefix is
//! canonical, a status is one of three words), because those are checked
//! where the text is read.
//!
//! Fields are named after the columns. Every row carries its primary key
//! (`id`) so that a problem can name it; members and plans are referred to
//! by their ids (`member_id`, `plan_id`), as in the database. The one
//! difference: a plan's rate columns are grouped in [`Rates`].

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

use crate::error::ParseError;
use crate::prefix::{IpPrefix, Ipv6Prefix};

/// All tables of the member database.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct MemberDb {
    pub plans: Vec<Plan>,
    pub members: Vec<Member>,
    pub member_addresses: Vec<MemberAddress>,
    pub public_addresses: Vec<PublicAddress>,
    pub port_forwards: Vec<PortForward>,
    pub ipv6_openings: Vec<Ipv6Opening>,
    pub networks: Vec<Network>,
    pub global_blocks: Vec<GlobalBlock>,
}

/// What the shaper gives a member: per direction a guaranteed rate and a
/// ceiling, in kbit/s, a burst and a weight for sharing a congested uplink.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Rates {
    /// Towards the member (inbound), guaranteed.
    pub down_rate_kbit: u32,
    /// Towards the member, the most they get when the uplink is idle.
    pub down_ceil_kbit: u32,
    /// From the member (outbound), guaranteed.
    pub up_rate_kbit: u32,
    pub up_ceil_kbit: u32,
    /// Bytes a member may send at line rate after being idle.
    pub burst_bytes: u32,
    /// Share of a congested uplink relative to other plans (max-min fair, weighted).
    pub weight: u32,
}

/// A row of `plans`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Plan {
    pub id: u32,
    pub name: String,
    pub rates: Rates,
}

/// A member's standing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Status {
    /// A normal member.
    Active,
    /// Every packet of the member is dropped; their flows end.
    Blocked,
    /// A test account: like `active`, but always shaped to its plan.
    Test,
}

/// A row of `members`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Member {
    /// The member id, the primary key; stable across reloads.
    pub id: u32,
    /// A handle operators recognise (room number, login, ...).
    pub name: String,
    pub status: Status,
    /// The plan; a member without a plan is not shaped (test accounts must have one).
    pub plan_id: Option<u32>,
}

/// A row of `member_addresses`: a device address or a prefix routed to the member.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MemberAddress {
    pub id: i64,
    pub member_id: u32,
    pub network: IpPrefix,
    pub device: Option<String>,
}

/// A row of `public_addresses`: the IPv4 address (and ports) a member's
/// connections leave with.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicAddress {
    pub id: i64,
    pub member_id: u32,
    pub address: Ipv4Addr,
    /// First port of the member's range (at least 1).
    pub first_port: u16,
    /// Last port of the range, inclusive.
    pub last_port: u16,
}

/// Transport protocol of a port forward or IPv6 opening.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number (6 or 17).
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => wire::flow::proto::TCP,
            Protocol::Udp => wire::flow::proto::UDP,
        }
    }
}

/// A row of `port_forwards`: a public port of the member's public address
/// that reaches one of their devices.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PortForward {
    pub id: i64,
    pub member_id: u32,
    pub protocol: Protocol,
    pub public_port: u16,
    pub internal_address: Ipv4Addr,
    pub internal_port: u16,
}

/// A row of `ipv6_openings`: unsolicited inbound IPv6 the firewall lets
/// through to (part of) a member's prefix.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ipv6Opening {
    pub id: i64,
    pub member_id: u32,
    pub destination: Ipv6Prefix,
    pub protocol: Protocol,
    pub first_port: u16,
    pub last_port: u16,
}

/// What a row of `networks` is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum NetworkKind {
    /// Addresses legitimately found on the inside: the ranges member
    /// addresses come from, infrastructure.
    Internal,
    /// The gateway's own addresses.
    Box,
}

/// A row of `networks`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Network {
    pub id: i64,
    pub prefix: IpPrefix,
    pub kind: NetworkKind,
}

/// Which packets a global block applies to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum BlockDirection {
    /// Packets from the outside to the inside.
    Inbound,
    /// Packets from the inside to the outside.
    Outbound,
    Both,
}

/// A row of `global_blocks`: a prefix no packet may come from or go to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GlobalBlock {
    pub id: i64,
    pub prefix: IpPrefix,
    pub direction: BlockDirection,
    pub comment: String,
}

/// The database's words for the enums, parsed and printed the same way.
macro_rules! words {
    ($ty:ident, $what:literal, $expected:literal, $($variant:ident => $word:literal),+) => {
        impl $ty {
            /// The word the database uses.
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<$ty, ParseError> {
                match s.trim() {
                    $(w if w.eq_ignore_ascii_case($word) => Ok($ty::$variant),)+
                    _ => Err(ParseError::Word { what: $what, value: s.to_owned(), expected: $expected }),
                }
            }
        }
    };
}

words!(Status, "status", "active, blocked or test", Active => "active", Blocked => "blocked", Test => "test");
words!(Protocol, "protocol", "tcp or udp", Tcp => "tcp", Udp => "udp");
words!(NetworkKind, "network kind", "internal or box", Internal => "internal", Box => "box");
words!(BlockDirection, "direction", "inbound, outbound or both",
    Inbound => "inbound", Outbound => "outbound", Both => "both");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in [Status::Active, Status::Blocked, Status::Test] {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!(Protocol::Udp.number(), 17);
        assert_eq!(
            "sideways".parse::<BlockDirection>().unwrap_err().to_string(),
            "unknown direction \"sideways\" (expected inbound, outbound or both)"
        );
        assert_eq!("box".parse::<NetworkKind>().unwrap(), NetworkKind::Box);
    }
}
