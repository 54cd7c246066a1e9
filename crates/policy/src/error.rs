//! What can be wrong with a member database, said so an operator can fix it.
//!
//! The compiler does not stop at the first problem: a database edited by
//! hand, or imported from another system, usually has several, and fixing
//! them one reload at a time is slow. [`PolicyError`] carries every
//! [`Problem`] found; each names its table and the row id(s) involved (the
//! primary keys, so `SELECT * FROM member_addresses WHERE id = 17` finds
//! it) and says what is wrong in the network's own terms:
//!
//! ```text
//! member_addresses row 17: 10.0.3.0/24 of member 9 overlaps member_addresses row 4 (10.0.3.7/32 of member 12)
//! ```
//!
//! [`ParseError`] is the other error of the crate: a single column value
//! (a prefix, a status word) that does not parse. The database layer meets
//! those before the compiler does and reports them against their row in
//! the same `table row N: ...` form.

use core::fmt;

/// The tables of the member database (`docs/members.md`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Table {
    Plans,
    Members,
    MemberAddresses,
    PublicAddresses,
    PortForwards,
    Ipv6Openings,
    Networks,
    GlobalBlocks,
}

impl Table {
    /// The table's SQL name.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Plans => "plans",
            Table::Members => "members",
            Table::MemberAddresses => "member_addresses",
            Table::PublicAddresses => "public_addresses",
            Table::PortForwards => "port_forwards",
            Table::Ipv6Openings => "ipv6_openings",
            Table::Networks => "networks",
            Table::GlobalBlocks => "global_blocks",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which rule a [`Problem`] breaks; lets tools group and count problems
/// without parsing messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[non_exhaustive]
pub enum Rule {
    /// A column's value does not parse (a malformed address, an unknown status).
    InvalidValue,
    /// Two rows of one table share a primary key.
    DuplicateId,
    /// A row refers to a member or plan that does not exist.
    UnknownReference,
    /// A plan's rates, burst or weight are out of bounds.
    InvalidRates,
    /// A test account has no plan.
    TestWithoutPlan,
    /// A member address is outside every `internal` network.
    OutsideInternal,
    /// A member address overlaps the box's own addresses, or a public
    /// address is one of them.
    BoxAddress,
    /// A member or public address is in a special-purpose range (loopback,
    /// multicast, unspecified, broadcast, link-local, reserved).
    SpecialAddress,
    /// Two members claim overlapping addresses.
    AddressOverlap,
    /// The same address is listed twice for one member.
    DuplicateAddress,
    /// A port range is empty or includes port 0.
    InvalidPorts,
    /// A member has more than one public address.
    SeveralPublicAddresses,
    /// Members share a public address with overlapping port ranges.
    PortRangeOverlap,
    /// A port forward of a member without a public address.
    NoPublicAddress,
    /// A forward's public port is outside the member's port range.
    PortOutsideRange,
    /// A forward's internal address is not the member's.
    NotMemberAddress,
    /// Two forwards of one public port and protocol.
    DuplicateForward,
    /// An IPv6 opening outside the member's IPv6 prefixes.
    OpeningOutsidePrefix,
}

/// One thing wrong with the database, with the rows to look at.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Problem {
    /// The table the rows are in.
    pub table: Table,
    /// The primary keys of the rows at fault (in the message's prefix).
    pub rows: Vec<i64>,
    /// Other rows the message mentions (the row a conflict is with, the
    /// network a rule refers to).
    pub related: Vec<(Table, i64)>,
    /// The rule broken.
    pub rule: Rule,
    /// What is wrong, in operator language, without the `table row N:` prefix.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `member_addresses row 17: ...` or `public_addresses rows 3 and 9: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.table)?;
        match self.rows.as_slice() {
            [] => {}
            [one] => write!(f, "row {one}")?,
            [init @ .., last] => {
                f.write_str("rows ")?;
                for (i, r) in init.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{r}")?;
                }
                write!(f, " and {last}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a database did not compile: every problem found, in table order.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub struct PolicyError {
    problems: Vec<Problem>,
}

impl PolicyError {
    /// An error made of these problems (the database layer adds its own
    /// parse problems to the compiler's this way).
    pub fn new(problems: Vec<Problem>) -> PolicyError {
        PolicyError { problems }
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

impl fmt::Display for PolicyError {
    /// One line per problem, after a count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "the member database has {n} problem{}", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

/// A column value that does not parse.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("{value} is not an address or prefix in CIDR notation (like 10.0.3.0/24 or 2001:db8::/64)")]
    Prefix { value: String },
    #[error("{value} has a prefix length longer than {max}")]
    PrefixLength { value: String, max: u8 },
    #[error("{value} has host bits set (the network is {network})")]
    HostBits { value: String, network: String },
    #[error("{value} is not an {expected} prefix")]
    Family { value: String, expected: &'static str },
    #[error("unknown {what} \"{value}\" (expected {expected})")]
    Word { what: &'static str, value: String, expected: &'static str },
}
