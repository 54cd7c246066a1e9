//! `torwart db check`: is this database one torwart would run with?
//!
//! A check is exactly what a reload does short of swapping: read every
//! table, then compile. The answer is either every problem (values that do
//! not parse first: the compiler runs once every value parses, because a
//! row that could not be read would otherwise show up again as a dangling
//! reference) or a summary of what the policy would hold.

use core::fmt;
use std::collections::BTreeSet;

use policy::{MemberDb, PolicyError, Status};

use super::{Database, DbError};

/// The outcome of [`Database::check`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CheckReport {
    /// The database compiles; what it holds.
    Valid(Summary),
    /// Every problem, each naming table and row.
    Invalid(PolicyError),
}

impl CheckReport {
    pub fn is_valid(&self) -> bool {
        matches!(self, CheckReport::Valid(_))
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckReport::Valid(s) => write!(f, "the member database is valid: {s}"),
            CheckReport::Invalid(e) => e.fmt(f),
        }
    }
}

/// Counts of a valid member database.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Summary {
    pub plans: usize,
    pub active_members: usize,
    pub blocked_members: usize,
    pub test_members: usize,
    /// Rows of `member_addresses`, IPv4 and IPv6.
    pub ipv4_member_addresses: usize,
    pub ipv6_member_addresses: usize,
    /// Members with a public address, and how many distinct addresses they use.
    pub members_with_public_address: usize,
    pub public_addresses: usize,
    pub port_forwards: usize,
    pub ipv6_openings: usize,
    pub networks: usize,
    pub global_blocks: usize,
}

impl Summary {
    pub fn of(db: &MemberDb) -> Summary {
        let status = |s| db.members.iter().filter(|m| m.status == s).count();
        let v4 = db.member_addresses.iter().filter(|a| matches!(a.network, policy::IpPrefix::V4(_))).count();
        Summary {
            plans: db.plans.len(),
            active_members: status(Status::Active),
            blocked_members: status(Status::Blocked),
            test_members: status(Status::Test),
            ipv4_member_addresses: v4,
            ipv6_member_addresses: db.member_addresses.len() - v4,
            members_with_public_address: db.public_addresses.len(),
            public_addresses: db.public_addresses.iter().map(|p| p.address).collect::<BTreeSet<_>>().len(),
            port_forwards: db.port_forwards.len(),
            ipv6_openings: db.ipv6_openings.len(),
            networks: db.networks.len(),
            global_blocks: db.global_blocks.len(),
        }
    }

    pub fn members(&self) -> usize {
        self.active_members + self.blocked_members + self.test_members
    }
}

impl fmt::Display for Summary {
    /// One line: `5 members (3 active, 1 blocked, 1 test), 2 plans, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} members ({} active, {} blocked, {} test), {} plans, {} member addresses ({} IPv4, {} IPv6), \
             {} public addresses for {} members, {} port forwards, {} IPv6 openings, {} networks, {} global blocks",
            self.members(),
            self.active_members,
            self.blocked_members,
            self.test_members,
            self.plans,
            self.ipv4_member_addresses + self.ipv6_member_addresses,
            self.ipv4_member_addresses,
            self.ipv6_member_addresses,
            self.public_addresses,
            self.members_with_public_address,
            self.port_forwards,
            self.ipv6_openings,
            self.networks,
            self.global_blocks,
        )
    }
}

impl Database {
    /// Reads and compiles the database: every problem, or a summary.
    /// `Err` only when the database cannot be read at all (unreachable,
    /// a table or column missing).
    pub async fn check(&self) -> Result<CheckReport, DbError> {
        match self.load().await {
            Ok(db) => Ok(match policy::compile(&db, 0) {
                Ok(_) => CheckReport::Valid(Summary::of(&db)),
                Err(e) => CheckReport::Invalid(e),
            }),
            Err(DbError::Invalid(e)) => Ok(CheckReport::Invalid(e)),
            Err(other) => Err(other),
        }
    }
}
