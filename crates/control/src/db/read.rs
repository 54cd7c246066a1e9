//! Rows into the member model, and every value that does not fit into a problem.
//!
//! The database, a JSON import and a CSV import all end here: a row is a
//! set of named [`Cells`], and this module turns it into the row struct of
//! [`policy::model`] or into one [`Problem`] per bad column (`members row
//! 7: column status: unknown status "paused" ...`). Reading never stops at
//! the first problem: every row of every table is read, so one run shows
//! the operator everything there is to fix.
//!
//! Only single values are judged here (does this parse, does it fit its
//! type); whether the rows fit together (references, overlaps, port ranges)
//! is the compiler's business ([`policy::compile()`]). Where the schema has
//! a default (`status` is `active`, `weight` is 1, ports 1-65535, comment
//! empty), a `NULL` takes it (in an import file, an absent or empty
//! value). A view must still have every column, by name.
//!
//! Integers are held to what the schema's `INTEGER` columns hold in
//! PostgreSQL, 32 bits signed, on both databases: SQLite would store a
//! member id of 3,000,000,000, PostgreSQL refuses it halfway through an
//! import with "integer out of range". Checking the range here, the same
//! way for a file, SQLite and PostgreSQL, names the row and column instead,
//! before anything is written.

use core::str::FromStr;

use policy::{
    BlockDirection, GlobalBlock, Ipv6Opening, Member, MemberAddress, MemberDb, Network, NetworkKind, Plan, PortForward,
    Problem, Protocol, PublicAddress, Rates, Rule, Status, Table,
};

use super::backend::Cells;

/// The member tables in the order they are read and written (referenced
/// tables before the tables that refer to them), with the columns torwart
/// reads from each, by name, in schema order.
pub(crate) const TABLES: [(Table, &[&str]); 8] = [
    (
        Table::Plans,
        &["id", "name", "down_rate_kbit", "down_ceil_kbit", "up_rate_kbit", "up_ceil_kbit", "burst_bytes", "weight"],
    ),
    (Table::Members, &["id", "name", "status", "plan_id"]),
    (Table::MemberAddresses, &["id", "member_id", "network", "device"]),
    (Table::PublicAddresses, &["id", "member_id", "address", "first_port", "last_port"]),
    (Table::PortForwards, &["id", "member_id", "protocol", "public_port", "internal_address", "internal_port"]),
    (Table::Ipv6Openings, &["id", "member_id", "destination", "protocol", "first_port", "last_port"]),
    (Table::Networks, &["id", "prefix", "kind"]),
    (Table::GlobalBlocks, &["id", "prefix", "direction", "comment"]),
];

/// The columns of `table`.
pub(crate) fn columns(table: Table) -> &'static [&'static str] {
    TABLES.iter().find(|(t, _)| *t == table).map_or(&[], |(_, c)| c)
}

/// A table by its SQL name.
pub(crate) fn table_named(name: &str) -> Option<Table> {
    TABLES.iter().map(|(t, _)| *t).find(|t| t.name() == name)
}

/// The `SELECT` that reads `table`, in key order.
pub(crate) fn select(table: Table) -> String {
    format!("SELECT {} FROM {} ORDER BY id", columns(table).join(", "), table.name())
}

/// The rule a bad value in `column` breaks.
///
/// `policy::Rule` has no variant for "a value that does not parse" yet, so
/// values are filed under the closest rule: port columns under
/// `InvalidPorts`, plan figures under `InvalidRates`, everything else
/// (ids, references, prefixes, words, names) under `UnknownReference`.
/// When `policy` grows `Rule::InvalidValue`, this is the one place to
/// change.
fn value_rule(table: Table, column: &str) -> Rule {
    match column {
        "first_port" | "last_port" | "public_port" | "internal_port" => Rule::InvalidPorts,
        _ if table == Table::Plans && column != "id" && column != "name" => Rule::InvalidRates,
        _ => Rule::InvalidValue,
    }
}

/// Reads the columns of one row, remembering every bad one.
struct Fields<'a> {
    cells: &'a dyn Cells,
    bad: Vec<(&'static str, String)>,
}

impl<'a> Fields<'a> {
    fn new(cells: &'a dyn Cells) -> Fields<'a> {
        Fields { cells, bad: Vec::new() }
    }

    fn fail<T>(&mut self, column: &'static str, why: String) -> Option<T> {
        self.bad.push((column, why));
        None
    }

    /// An integer column converted to `T`; `default` for `NULL`
    /// (`None`: the column is required). `None` when the value is bad.
    fn num<T: TryFrom<i64> + Copy>(&mut self, column: &'static str, default: Option<T>, range: Range) -> Option<T> {
        match self.opt_num(column, range)? {
            Some(v) => Some(v),
            None => match default {
                Some(d) => Some(d),
                None => self.fail(column, "has no value".into()),
            },
        }
    }

    /// A nullable integer column: `Some(None)` for `NULL`, `None` when bad.
    fn opt_num<T: TryFrom<i64>>(&mut self, column: &'static str, range: Range) -> Option<Option<T>> {
        match self.cells.int(column) {
            Ok(None) => Some(None),
            Ok(Some(v)) => match T::try_from(v) {
                Ok(t) if (range.low..=range.high).contains(&v) => Some(Some(t)),
                _ => self.fail(column, format!("{v} is out of range ({})", range.what)),
            },
            Err(why) => self.fail(column, why),
        }
    }

    /// A text column; `default` for `NULL`.
    fn text(&mut self, column: &'static str, default: Option<&str>) -> Option<String> {
        match self.opt_text(column)? {
            Some(s) => Some(s),
            None => match default {
                Some(d) => Some(d.to_owned()),
                None => self.fail(column, "has no value".into()),
            },
        }
    }

    fn opt_text(&mut self, column: &'static str) -> Option<Option<String>> {
        match self.cells.text(column) {
            Ok(v) => Some(v),
            Err(why) => self.fail(column, why),
        }
    }

    /// A text column parsed as `T` (a prefix, an address, a status word).
    fn parse<T: FromStr>(&mut self, column: &'static str, default: Option<&str>) -> Option<T>
    where
        T::Err: core::fmt::Display,
    {
        let s = self.text(column, default)?;
        match s.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => self.fail(column, e.to_string()),
        }
    }

    /// An IPv4 address column (`198.51.100.7`; `/32` is accepted too).
    fn ipv4(&mut self, column: &'static str) -> Option<core::net::Ipv4Addr> {
        let s = self.text(column, None)?;
        let t = s.trim();
        let bare = t.strip_suffix("/32").unwrap_or(t);
        match bare.parse() {
            Ok(a) => Some(a),
            Err(_) => self.fail(column, format!("{s} is not an IPv4 address")),
        }
    }

    /// The row's problems: one per bad column, against row `id` (when the
    /// id itself could be read).
    fn problems(self, table: Table, id: Option<i64>) -> Vec<Problem> {
        self.bad.into_iter().map(|(column, why)| value_problem(table, id, column, &why)).collect()
    }
}

/// The problem with the value in `column` of row `id`.
pub(crate) fn value_problem(table: Table, id: Option<i64>, column: &str, why: &str) -> Problem {
    Problem {
        table,
        rows: id.into_iter().collect(),
        related: Vec::new(),
        rule: value_rule(table, column),
        message: format!("column {column}: {why}"),
    }
}

/// The values an integer column may hold, and how to say so.
#[derive(Clone, Copy)]
struct Range {
    low: i64,
    high: i64,
    what: &'static str,
}

/// Ids of plans and members, references to them, rates, burst, weight:
/// non-negative 32-bit `INTEGER`s (the model holds them as `u32`).
const COUNT: Range = Range { low: 0, high: i32::MAX as i64, what: "0 to 2147483647, a 32-bit INTEGER" };
/// Ids of the other tables: any 32-bit `INTEGER`.
const KEY: Range =
    Range { low: i32::MIN as i64, high: i32::MAX as i64, what: "-2147483648 to 2147483647, a 32-bit INTEGER" };
const PORT: Range = Range { low: 0, high: 65535, what: "a port is 0 to 65535" };

/// A row that could not be read into the model: its problems, and what
/// could be made out of it anyway, so that the compiler's judgement of the
/// other rows does not report its absence as more problems
/// ([`super::check::judge`]).
#[derive(Clone, Debug)]
pub(crate) struct Unreadable {
    pub table: Table,
    /// Its id, if that much could be read.
    pub id: Option<i64>,
    /// Its member, if it has a `member_id` and that could be read.
    pub member_id: Option<i64>,
    pub problems: Vec<Problem>,
}

/// Reads one row of `table` into `db`, or says what is wrong with it.
/// `position` (1-based) names the row when its id cannot be read.
pub(crate) fn read_row(table: Table, cells: &dyn Cells, position: usize, db: &mut MemberDb) -> Result<(), Unreadable> {
    read_row_values(table, cells, position, db).map_err(|problems| unreadable(table, cells, problems))
}

/// A row of `table` set aside with `problems`, with what can be made out of it.
pub(crate) fn unreadable(table: Table, cells: &dyn Cells, problems: Vec<Problem>) -> Unreadable {
    let member_id = if columns(table).contains(&"member_id") { cells.int("member_id").ok().flatten() } else { None };
    Unreadable { table, id: cells.int("id").ok().flatten(), member_id, problems }
}

fn read_row_values(table: Table, cells: &dyn Cells, position: usize, db: &mut MemberDb) -> Result<(), Vec<Problem>> {
    let mut f = Fields::new(cells);
    // The id names the row in every problem, so it is read first and as
    // loosely as possible; its type is judged below with the rest.
    let raw_id = cells.int("id").ok().flatten();
    let done = match table {
        Table::Plans => read_plan(&mut f).map(|r| db.plans.push(r)),
        Table::Members => read_member(&mut f).map(|r| db.members.push(r)),
        Table::MemberAddresses => read_member_address(&mut f).map(|r| db.member_addresses.push(r)),
        Table::PublicAddresses => read_public_address(&mut f).map(|r| db.public_addresses.push(r)),
        Table::PortForwards => read_port_forward(&mut f).map(|r| db.port_forwards.push(r)),
        Table::Ipv6Openings => read_ipv6_opening(&mut f).map(|r| db.ipv6_openings.push(r)),
        Table::Networks => read_network(&mut f).map(|r| db.networks.push(r)),
        Table::GlobalBlocks => read_global_block(&mut f).map(|r| db.global_blocks.push(r)),
    };
    match (done, raw_id) {
        (Some(()), _) if f.bad.is_empty() => Ok(()),
        (_, Some(id)) => Err(f.problems(table, Some(id))),
        (_, None) => {
            // Without an id the problem can only point at the row's place.
            let mut problems = f.problems(table, None);
            for p in &mut problems {
                p.message = format!("row {position} as read (its id is unreadable): {}", p.message);
            }
            Err(problems)
        }
    }
}

fn read_plan(f: &mut Fields<'_>) -> Option<Plan> {
    let id = f.num::<u32>("id", None, COUNT);
    let name = f.text("name", None);
    let down_rate_kbit = f.num("down_rate_kbit", None, COUNT);
    let down_ceil_kbit = f.num("down_ceil_kbit", None, COUNT);
    let up_rate_kbit = f.num("up_rate_kbit", None, COUNT);
    let up_ceil_kbit = f.num("up_ceil_kbit", None, COUNT);
    let burst_bytes = f.num("burst_bytes", None, COUNT);
    let weight = f.num("weight", Some(1), COUNT);
    Some(Plan {
        id: id?,
        name: name?,
        rates: Rates {
            down_rate_kbit: down_rate_kbit?,
            down_ceil_kbit: down_ceil_kbit?,
            up_rate_kbit: up_rate_kbit?,
            up_ceil_kbit: up_ceil_kbit?,
            burst_bytes: burst_bytes?,
            weight: weight?,
        },
    })
}

fn read_member(f: &mut Fields<'_>) -> Option<Member> {
    let id = f.num::<u32>("id", None, COUNT);
    let name = f.text("name", None);
    let status = f.parse::<Status>("status", Some("active"));
    let plan_id = f.opt_num::<u32>("plan_id", COUNT);
    Some(Member { id: id?, name: name?, status: status?, plan_id: plan_id? })
}

fn read_member_address(f: &mut Fields<'_>) -> Option<MemberAddress> {
    let id = f.num::<i64>("id", None, KEY);
    let member_id = f.num::<u32>("member_id", None, COUNT);
    let network = f.parse("network", None);
    let device = f.opt_text("device");
    Some(MemberAddress { id: id?, member_id: member_id?, network: network?, device: device? })
}

fn read_public_address(f: &mut Fields<'_>) -> Option<PublicAddress> {
    let id = f.num::<i64>("id", None, KEY);
    let member_id = f.num::<u32>("member_id", None, COUNT);
    let address = f.ipv4("address");
    let first_port = f.num::<u16>("first_port", Some(1), PORT);
    let last_port = f.num::<u16>("last_port", Some(65535), PORT);
    Some(PublicAddress {
        id: id?,
        member_id: member_id?,
        address: address?,
        first_port: first_port?,
        last_port: last_port?,
    })
}

fn read_port_forward(f: &mut Fields<'_>) -> Option<PortForward> {
    let id = f.num::<i64>("id", None, KEY);
    let member_id = f.num::<u32>("member_id", None, COUNT);
    let protocol = f.parse::<Protocol>("protocol", None);
    let public_port = f.num::<u16>("public_port", None, PORT);
    let internal_address = f.ipv4("internal_address");
    let internal_port = f.num::<u16>("internal_port", None, PORT);
    Some(PortForward {
        id: id?,
        member_id: member_id?,
        protocol: protocol?,
        public_port: public_port?,
        internal_address: internal_address?,
        internal_port: internal_port?,
    })
}

fn read_ipv6_opening(f: &mut Fields<'_>) -> Option<Ipv6Opening> {
    let id = f.num::<i64>("id", None, KEY);
    let member_id = f.num::<u32>("member_id", None, COUNT);
    let destination = f.parse("destination", None);
    let protocol = f.parse::<Protocol>("protocol", None);
    let first_port = f.num::<u16>("first_port", None, PORT);
    let last_port = f.num::<u16>("last_port", None, PORT);
    Some(Ipv6Opening {
        id: id?,
        member_id: member_id?,
        destination: destination?,
        protocol: protocol?,
        first_port: first_port?,
        last_port: last_port?,
    })
}

fn read_network(f: &mut Fields<'_>) -> Option<Network> {
    let id = f.num::<i64>("id", None, KEY);
    let prefix = f.parse("prefix", None);
    let kind = f.parse::<NetworkKind>("kind", None);
    Some(Network { id: id?, prefix: prefix?, kind: kind? })
}

fn read_global_block(f: &mut Fields<'_>) -> Option<GlobalBlock> {
    let id = f.num::<i64>("id", None, KEY);
    let prefix = f.parse("prefix", None);
    let direction = f.parse::<BlockDirection>("direction", Some("both"));
    let comment = f.text("comment", Some(""));
    Some(GlobalBlock { id: id?, prefix: prefix?, direction: direction?, comment: comment? })
}
