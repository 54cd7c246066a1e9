//! `torwart db check`: is this database one torwart would run with?
//!
//! A check is exactly what a reload does short of swapping: read every
//! table, then compile. The answer is either every problem or a summary of
//! what the policy would hold.
//!
//! Every problem in one run, and no false ones: values that do not parse
//! are reported against their rows, and the compiler still judges every
//! row that could be read ([`judge`]), so an overlap is not hidden behind
//! a typo until the next run. A row that could not be read is absent from
//! what the compiler sees, and its absence must not become more problems:
//! a member whose status does not parse still exists for the rows that
//! refer to it (a stand-in takes its place), and a forward to an address
//! whose row does not parse is not "not an address of member 7". The same
//! judgement serves `import` ([`Database::import`]).

use core::fmt;
use std::collections::{BTreeSet, HashMap, HashSet};

use policy::{Member, MemberDb, Plan, PolicyError, Problem, Rates, Rule, Status, Table};

use super::read::Unreadable;
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
        let (db, unreadable) = self.read_all().await?;
        let mut problems: Vec<Problem> = unreadable.iter().flat_map(|u| u.problems.iter().cloned()).collect();
        problems.extend(judge(&db, &unreadable));
        if problems.is_empty() {
            return Ok(CheckReport::Valid(Summary::of(&db)));
        }
        // Stable: a row's value problems before the compiler's.
        problems.sort_by_key(|p| (p.table, p.rows.first().copied()));
        Ok(CheckReport::Invalid(PolicyError::new(problems)))
    }
}

/// The compiler's problems with `db`, the rows that could be read, knowing
/// that the `unreadable` rows exist too (their own problems are the
/// caller's): ids they share with readable rows, and every problem of the
/// compiler except those their absence causes.
pub(crate) fn judge(db: &MemberDb, unreadable: &[Unreadable]) -> Vec<Problem> {
    if unreadable.is_empty() {
        return policy::compile(db, 0).err().map(PolicyError::into_problems).unwrap_or_default();
    }
    let mut problems = Vec::new();

    // Ids an unreadable row shares with other rows (the compiler only sees
    // the readable ones; it reports those it sees twice itself).
    let mut unread_ids: HashMap<(Table, i64), usize> = HashMap::new();
    for u in unreadable {
        if let Some(id) = u.id {
            *unread_ids.entry((u.table, id)).or_default() += 1;
        }
    }
    let tables: HashSet<Table> = unreadable.iter().map(|u| u.table).collect();
    let mut read_ids: HashMap<(Table, i64), usize> = HashMap::new();
    for &table in &tables {
        for id in ids(db, table) {
            *read_ids.entry((table, id)).or_default() += 1;
        }
    }
    let readable = |table: Table, id: i64| read_ids.get(&(table, id)).copied().unwrap_or_default();
    let mut shared: Vec<(Table, i64, usize)> = unread_ids
        .iter()
        .filter(|&(&(table, id), _)| readable(table, id) <= 1)
        .map(|(&(table, id), &n)| (table, id, n + readable(table, id)))
        .filter(|&(_, _, n)| n >= 2)
        .collect();
    shared.sort_unstable();
    for (table, id, n) in shared {
        let message = format!("the id {id} is used by {n} rows; ids must be unique");
        problems.push(Problem { table, rows: vec![id], related: Vec::new(), rule: Rule::DuplicateId, message });
    }

    // Stand-ins for unreadable members and plans, so references to them hold.
    let mut with_stand_ins = db.clone();
    let mut unknown_ids: HashSet<Table> = HashSet::new();
    let mut stood_in: HashSet<(Table, u32)> = HashSet::new();
    for u in unreadable.iter().filter(|u| matches!(u.table, Table::Members | Table::Plans)) {
        let Some(id) = u.id.and_then(|id| u32::try_from(id).ok()) else {
            // Any reference might have been to this row.
            unknown_ids.insert(u.table);
            continue;
        };
        if readable(u.table, i64::from(id)) > 0 || !stood_in.insert((u.table, id)) {
            continue;
        }
        if u.table == Table::Members {
            with_stand_ins.members.push(Member { id, name: String::new(), status: Status::Active, plan_id: None });
        } else {
            let rates = Rates {
                down_rate_kbit: 1,
                down_ceil_kbit: 1,
                up_rate_kbit: 1,
                up_ceil_kbit: 1,
                burst_bytes: policy::MIN_BURST_BYTES,
                weight: 1,
            };
            with_stand_ins.plans.push(Plan { id, name: String::new(), rates });
        }
    }
    // The members of unreadable rows: a forward to or an opening in an
    // address of theirs, a forward from their public address, cannot be judged.
    let members_of = |table: Table| {
        let rows = unreadable.iter().filter(|u| u.table == table);
        let any = rows.clone().any(|u| u.member_id.is_none());
        let members: HashSet<i64> = rows.filter_map(|u| u.member_id).collect();
        move |member: Option<u32>| any || member.is_some_and(|m| members.contains(&i64::from(m)))
    };
    let lost_address = members_of(Table::MemberAddresses);
    let lost_public = members_of(Table::PublicAddresses);
    let forwards: HashMap<i64, u32> = db.port_forwards.iter().map(|f| (f.id, f.member_id)).collect();
    let openings: HashMap<i64, u32> = db.ipv6_openings.iter().map(|o| (o.id, o.member_id)).collect();
    let forward_member = |row: i64| forwards.get(&row).copied();
    let opening_member = |row: i64| openings.get(&row).copied();

    let compiled = policy::compile(&with_stand_ins, 0).err().map(PolicyError::into_problems).unwrap_or_default();
    problems.extend(compiled.into_iter().filter(|p| {
        let row = p.rows.first().copied().unwrap_or_default();
        let caused = match p.rule {
            Rule::UnknownReference => p.related.iter().any(|(t, _)| unknown_ids.contains(t)),
            Rule::NotMemberAddress => lost_address(forward_member(row)),
            Rule::OpeningOutsidePrefix => lost_address(opening_member(row)),
            Rule::NoPublicAddress | Rule::PortOutsideRange => lost_public(forward_member(row)),
            _ => false,
        };
        !caused
    }));
    problems
}

/// The ids of `table`'s rows in `db`.
fn ids(db: &MemberDb, table: Table) -> Box<dyn Iterator<Item = i64> + '_> {
    match table {
        Table::Plans => Box::new(db.plans.iter().map(|r| i64::from(r.id))),
        Table::Members => Box::new(db.members.iter().map(|r| i64::from(r.id))),
        Table::MemberAddresses => Box::new(db.member_addresses.iter().map(|r| r.id)),
        Table::PublicAddresses => Box::new(db.public_addresses.iter().map(|r| r.id)),
        Table::PortForwards => Box::new(db.port_forwards.iter().map(|r| r.id)),
        Table::Ipv6Openings => Box::new(db.ipv6_openings.iter().map(|r| r.id)),
        Table::Networks => Box::new(db.networks.iter().map(|r| r.id)),
        Table::GlobalBlocks => Box::new(db.global_blocks.iter().map(|r| r.id)),
    }
}
