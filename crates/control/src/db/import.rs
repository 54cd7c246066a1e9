//! `torwart db import`: member tables from JSON or CSV files.
//!
//! Two formats, one meaning: a file provides whole tables, with the column
//! names of `docs/members.md`.
//!
//! * **JSON**: one object with a key per table, each an array of row
//!   objects: `{"members": [{"id": 101, "name": "room-a101", "status":
//!   "active", "plan_id": 1}], "plans": [...]}`. Integers are numbers (or
//!   strings of digits), text is strings, `null` is SQL `NULL`; a key left
//!   out is `NULL` too.
//! * **CSV**: a directory with one `<table>.csv` per table
//!   (`members.csv`, `member_addresses.csv`, ...), or one such file, or any
//!   file for a named table ([`Database::import_table`]). The first line
//!   names the columns, in any order; fields are trimmed; an empty field is
//!   `NULL`; lines starting with `#` are comments. Columns with a default
//!   or that may be `NULL` (`plans.weight`, `members.status`,
//!   `members.plan_id`, `member_addresses.device`, `public_addresses.
//!   first_port`/`last_port`, `global_blocks.direction`/`comment`) may be
//!   left out.
//!
//! An import **replaces the tables it provides**, row for row, and leaves
//! the others alone; `accounting` cannot be imported. Nothing is written
//! unless the result, the provided tables together with the database's
//! other tables, compiles: every problem is reported at once, each with
//! the file and line of the rows it names (`members.csv:7: members row 44:
//! plan 9 does not exist`). The write is one transaction: members and plans
//! are updated in place (rows of other tables refer to them), the other
//! provided tables are emptied and filled, then members and plans that are
//! gone are deleted.

use core::fmt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use policy::{MemberDb, Problem, Table};
use serde_json::value::RawValue;

use super::backend::{int_from_text, Cells, Stmt, Tx, Value};
use super::check::Summary;
use super::read::{columns, read_row, table_named, value_problem, TABLES};
use super::{Database, DbError, ImportError, Location};

/// Columns a CSV file may leave out (they have a default or may be `NULL`).
const OPTIONAL: [(Table, &str); 8] = [
    (Table::Plans, "weight"),
    (Table::Members, "status"),
    (Table::Members, "plan_id"),
    (Table::MemberAddresses, "device"),
    (Table::PublicAddresses, "first_port"),
    (Table::PublicAddresses, "last_port"),
    (Table::GlobalBlocks, "direction"),
    (Table::GlobalBlocks, "comment"),
];

/// Rows per `INSERT`: well below both databases' parameter limits.
const BATCH: usize = 200;

/// What an import wrote.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ImportReport {
    /// The tables replaced and their new row counts, in schema order.
    pub tables: Vec<(Table, usize)>,
    /// The whole database after the import.
    pub summary: Summary,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("imported ")?;
        for (i, (table, rows)) in self.tables.iter().enumerate() {
            write!(f, "{}{table} ({rows} rows)", if i > 0 { ", " } else { "" })?;
        }
        write!(f, "; the database now has {}", self.summary)
    }
}

/// A value read from a file.
#[derive(Clone, Debug)]
enum FileCell {
    Null,
    Number(serde_json::Number),
    Text(String),
    /// Something no column holds (a JSON `true`, an array).
    Other(String),
}

/// A row read from a file, with where it was.
#[derive(Debug)]
struct FileRow {
    cells: Vec<(String, FileCell)>,
    location: Location,
}

impl FileRow {
    fn cell(&self, column: &str) -> &FileCell {
        self.cells.iter().find(|(c, _)| c == column).map_or(&FileCell::Null, |(_, v)| v)
    }
}

impl Cells for FileRow {
    fn int(&self, column: &str) -> Result<Option<i64>, String> {
        match self.cell(column) {
            FileCell::Null => Ok(None),
            FileCell::Number(n) => n.as_i64().map(Some).ok_or_else(|| format!("{n} is not an integer")),
            FileCell::Text(s) => int_from_text(s).map(Some),
            FileCell::Other(s) => Err(format!("{s} is not an integer")),
        }
    }

    fn text(&self, column: &str) -> Result<Option<String>, String> {
        match self.cell(column) {
            FileCell::Null => Ok(None),
            FileCell::Number(n) => Ok(Some(n.to_string())),
            FileCell::Text(s) => Ok(Some(s.clone())),
            FileCell::Other(s) => Err(format!("{s} is not text")),
        }
    }
}

/// Tables read from files, in the order met.
type FileTables = Vec<(Table, Vec<FileRow>)>;

fn file_error(path: &Path, cause: impl fmt::Display) -> DbError {
    DbError::File { path: path.to_owned(), cause: cause.to_string() }
}

fn table_list() -> String {
    TABLES.iter().map(|(t, _)| t.name()).collect::<Vec<_>>().join(", ")
}

/// Reads a JSON import file.
fn read_json(path: &Path) -> Result<FileTables, DbError> {
    let text = fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let top: BTreeMap<String, Vec<&RawValue>> = serde_json::from_str(&text)
        .map_err(|e| file_error(path, format!("{e} (expected one object with an array of row objects per table)")))?;
    let line_starts: Vec<usize> = core::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    let line_of = |raw: &RawValue| {
        let offset = raw.get().as_ptr().addr().saturating_sub(text.as_ptr().addr());
        line_starts.partition_point(|&s| s <= offset) as u64
    };
    let mut tables = Vec::new();
    for (name, rows) in top {
        let table = table_named(&name)
            .ok_or_else(|| file_error(path, format!("unknown table \"{name}\" (the tables are {})", table_list())))?;
        let mut read = Vec::with_capacity(rows.len());
        for raw in rows {
            let location = Location { file: path.to_owned(), line: line_of(raw) };
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw.get())
                .map_err(|_| file_error(path, format!("line {}: a row of {name} is not an object", location.line)))?;
            let cells = object
                .into_iter()
                .map(|(column, v)| {
                    let cell = match v {
                        serde_json::Value::Null => FileCell::Null,
                        serde_json::Value::Number(n) => FileCell::Number(n),
                        serde_json::Value::String(s) => FileCell::Text(s),
                        other => FileCell::Other(other.to_string()),
                    };
                    (column, cell)
                })
                .collect();
            read.push(FileRow { cells, location });
        }
        tables.push((table, read));
    }
    Ok(tables)
}

/// Reads one CSV file holding `table`.
fn read_csv(table: Table, path: &Path) -> Result<Vec<FileRow>, DbError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .map_err(|e| file_error(path, e))?;
    let header: Vec<String> = reader.headers().map_err(|e| file_error(path, e))?.iter().map(str::to_owned).collect();
    let known = columns(table);
    let expected = || format!("the columns of {table} are {}", known.join(", "));
    for (i, column) in header.iter().enumerate() {
        if !known.contains(&column.as_str()) {
            return Err(file_error(path, format!("line 1: unknown column \"{column}\" ({})", expected())));
        }
        if header[..i].contains(column) {
            return Err(file_error(path, format!("line 1: column {column} is named twice")));
        }
    }
    let missing: Vec<&str> =
        known.iter().copied().filter(|c| !header.iter().any(|h| h == c) && !OPTIONAL.contains(&(table, c))).collect();
    if !missing.is_empty() {
        return Err(file_error(path, format!("line 1: column {} missing ({})", missing.join(", "), expected())));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| file_error(path, e))?;
        let line = record.position().map_or(0, csv::Position::line);
        let cells = header
            .iter()
            .zip(record.iter())
            .map(|(c, v)| (c.clone(), if v.is_empty() { FileCell::Null } else { FileCell::Text(v.to_owned()) }))
            .collect();
        rows.push(FileRow { cells, location: Location { file: path.to_owned(), line } });
    }
    Ok(rows)
}

/// Reads a directory of `<table>.csv` files.
fn read_csv_dir(dir: &Path) -> Result<FileTables, DbError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| file_error(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")))
        .collect();
    files.sort();
    let mut tables = Vec::new();
    for file in files {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let table = table_named(stem).ok_or_else(|| {
            file_error(&file, format!("not a table file: CSV files are named after their table ({})", table_list()))
        })?;
        tables.push((table, read_csv(table, &file)?));
    }
    if tables.is_empty() {
        return Err(file_error(dir, format!("no <table>.csv files in the directory (tables: {})", table_list())));
    }
    Ok(tables)
}

impl Database {
    /// Imports `path`: a JSON file (`.json`), a directory of `<table>.csv`
    /// files, or one `<table>.csv` file. See the module docs for the
    /// formats; nothing is written unless the result compiles.
    pub async fn import(&self, path: &Path) -> Result<ImportReport, DbError> {
        let tables = if path.is_dir() {
            read_csv_dir(path)?
        } else {
            let ext = path.extension().and_then(|x| x.to_str()).unwrap_or_default().to_ascii_lowercase();
            match ext.as_str() {
                "json" => read_json(path)?,
                "csv" => {
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                    let table = table_named(stem).ok_or_else(|| {
                        file_error(
                            path,
                            format!("which table? name the file after it ({}), or import it as a table", table_list()),
                        )
                    })?;
                    vec![(table, read_csv(table, path)?)]
                }
                _ => return Err(file_error(path, "expected a .json file, a .csv file or a directory of .csv files")),
            }
        };
        self.import_tables(tables).await
    }

    /// Imports one CSV file (any name) as `table`.
    pub async fn import_table(&self, table: Table, path: &Path) -> Result<ImportReport, DbError> {
        let rows = read_csv(table, path)?;
        self.import_tables(vec![(table, rows)]).await
    }

    async fn import_tables(&self, files: FileTables) -> Result<ImportReport, DbError> {
        let mut problems: Vec<(Problem, Vec<Location>)> = Vec::new();
        let mut seen: HashSet<Table> = HashSet::new();
        let mut imported = MemberDb::default();
        let mut places: HashMap<(Table, i64), Vec<Location>> = HashMap::new();
        for (table, rows) in &files {
            if !seen.insert(*table) {
                let path = rows.first().map(|r| r.location.file.clone()).unwrap_or_default();
                return Err(file_error(&path, format!("table {table} is provided twice")));
            }
            let known = columns(*table);
            for (i, row) in rows.iter().enumerate() {
                let id = row.int("id").ok().flatten();
                if let Some(id) = id {
                    places.entry((*table, id)).or_default().push(row.location.clone());
                }
                for (column, _) in &row.cells {
                    if !known.contains(&column.as_str()) {
                        let why = format!("not a column of {table} (its columns are {})", known.join(", "));
                        problems.push((value_problem(*table, id, column, &why), vec![row.location.clone()]));
                    }
                }
                if let Err(ps) = read_row(*table, row, i + 1, &mut imported) {
                    problems.extend(ps.into_iter().map(|p| (p, vec![row.location.clone()])));
                }
            }
        }
        let provided: Vec<Table> = TABLES.iter().map(|(t, _)| *t).filter(|t| seen.contains(t)).collect();
        let kept: Vec<Table> = TABLES.iter().map(|(t, _)| *t).filter(|t| !seen.contains(t)).collect();

        let mut tx = self.pool.begin_write().await.map_err(|e| self.sql("cannot start the import", e))?;
        let (current, current_problems) = self.read_tables(&mut tx, &kept).await?;
        problems.extend(current_problems.into_iter().map(|p| (p, Vec::new())));
        if !problems.is_empty() {
            // In table order, as the compiler reports (the files were read in name order).
            problems.sort_by_key(|(p, _)| (p.table, p.rows.first().copied()));
            return Err(DbError::Import(ImportError { problems }));
        }
        let merged = merge(imported, current);
        if let Err(e) = policy::compile(&merged, 0) {
            let problems = e
                .into_problems()
                .into_iter()
                .map(|p| {
                    let rows = p.rows.iter().map(|&r| (p.table, r)).chain(p.related.iter().copied());
                    let mut at: Vec<Location> = rows.filter_map(|k| places.get(&k)).flatten().cloned().collect();
                    at.dedup();
                    (p, at)
                })
                .collect();
            return Err(DbError::Import(ImportError { problems }));
        }
        self.write_tables(&mut tx, &provided, &merged).await?;
        tx.commit().await.map_err(|e| self.sql("cannot commit the import", e))?;
        let tables = provided.iter().map(|&t| (t, table_rows(&merged, t).len())).collect();
        Ok(ImportReport { tables, summary: Summary::of(&merged) })
    }

    /// Replaces the `provided` tables with `db`'s rows (see the module docs for the order).
    async fn write_tables(&self, tx: &mut Tx, provided: &[Table], db: &MemberDb) -> Result<(), DbError> {
        let err = |table: Table| move |e| self.sql(format!("cannot write table {table}"), e);
        let referenced = [Table::Plans, Table::Members];
        for &table in provided.iter().filter(|t| referenced.contains(t)) {
            insert(tx, table, &table_rows(db, table), true).await.map_err(err(table))?;
        }
        for &table in provided.iter().filter(|t| !referenced.contains(t)) {
            tx.execute(Stmt::new(format!("DELETE FROM {table}"), vec![])).await.map_err(err(table))?;
            insert(tx, table, &table_rows(db, table), false).await.map_err(err(table))?;
        }
        // Gone members before gone plans: members refer to plans.
        for table in [Table::Members, Table::Plans] {
            if !provided.contains(&table) {
                continue;
            }
            let keep: HashSet<i64> = table_rows(db, table)
                .iter()
                .filter_map(|r| match r.first() {
                    Some(Value::Int(id)) => Some(*id),
                    _ => None,
                })
                .collect();
            let rows = tx.fetch(Stmt::new(format!("SELECT id FROM {table}"), vec![])).await.map_err(err(table))?;
            let mut gone = Vec::new();
            for i in 0..rows.len() {
                if let Some(Ok(Some(id))) = rows.get(i).map(|r| r.int("id")) {
                    if !keep.contains(&id) {
                        gone.push(id);
                    }
                }
            }
            for id in gone {
                let stmt = Stmt::new(format!("DELETE FROM {table} WHERE id = $1"), vec![Value::Int(id)]);
                tx.execute(stmt).await.map_err(err(table))?;
            }
        }
        Ok(())
    }
}

/// `INSERT`s `rows` into `table` in batches; `upsert` updates rows whose id exists.
async fn insert(tx: &mut Tx, table: Table, rows: &[Vec<Value>], upsert: bool) -> Result<(), sqlx::Error> {
    let cols = columns(table);
    for chunk in rows.chunks(BATCH) {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
        let mut params = Vec::with_capacity(cols.len() * chunk.len());
        for (i, row) in chunk.iter().enumerate() {
            sql.push_str(if i > 0 { ", (" } else { "(" });
            for j in 0..row.len() {
                let sep = if j > 0 { ", " } else { "" };
                sql.push_str(&format!("{sep}${}", params.len() + j + 1));
            }
            sql.push(')');
            params.extend(row.iter().cloned());
        }
        if upsert {
            let set: Vec<String> = cols.iter().skip(1).map(|c| format!("{c} = excluded.{c}")).collect();
            sql.push_str(&format!(" ON CONFLICT (id) DO UPDATE SET {}", set.join(", ")));
        }
        tx.execute(Stmt::new(sql, params)).await?;
    }
    Ok(())
}

/// The imported tables plus the database's others (each table comes from one side).
fn merge(mut a: MemberDb, b: MemberDb) -> MemberDb {
    a.plans.extend(b.plans);
    a.members.extend(b.members);
    a.member_addresses.extend(b.member_addresses);
    a.public_addresses.extend(b.public_addresses);
    a.port_forwards.extend(b.port_forwards);
    a.ipv6_openings.extend(b.ipv6_openings);
    a.networks.extend(b.networks);
    a.global_blocks.extend(b.global_blocks);
    a
}

/// `table`'s rows as values for its columns (in [`columns`] order), as written.
fn table_rows(db: &MemberDb, table: Table) -> Vec<Vec<Value>> {
    let text = |s: &dyn fmt::Display| Value::Text(s.to_string());
    match table {
        Table::Plans => db
            .plans
            .iter()
            .map(|p| {
                let r = &p.rates;
                vec![
                    p.id.into(),
                    p.name.as_str().into(),
                    r.down_rate_kbit.into(),
                    r.down_ceil_kbit.into(),
                    r.up_rate_kbit.into(),
                    r.up_ceil_kbit.into(),
                    r.burst_bytes.into(),
                    r.weight.into(),
                ]
            })
            .collect(),
        Table::Members => db
            .members
            .iter()
            .map(|m| vec![m.id.into(), m.name.as_str().into(), m.status.as_str().into(), m.plan_id.into()])
            .collect(),
        Table::MemberAddresses => db
            .member_addresses
            .iter()
            .map(|a| vec![a.id.into(), a.member_id.into(), text(&a.network), a.device.clone().into()])
            .collect(),
        Table::PublicAddresses => db
            .public_addresses
            .iter()
            .map(|p| vec![p.id.into(), p.member_id.into(), text(&p.address), p.first_port.into(), p.last_port.into()])
            .collect(),
        Table::PortForwards => db
            .port_forwards
            .iter()
            .map(|f| {
                vec![
                    f.id.into(),
                    f.member_id.into(),
                    f.protocol.as_str().into(),
                    f.public_port.into(),
                    text(&f.internal_address),
                    f.internal_port.into(),
                ]
            })
            .collect(),
        Table::Ipv6Openings => db
            .ipv6_openings
            .iter()
            .map(|o| {
                vec![
                    o.id.into(),
                    o.member_id.into(),
                    text(&o.destination),
                    o.protocol.as_str().into(),
                    o.first_port.into(),
                    o.last_port.into(),
                ]
            })
            .collect(),
        Table::Networks => {
            db.networks.iter().map(|n| vec![n.id.into(), text(&n.prefix), n.kind.as_str().into()]).collect()
        }
        Table::GlobalBlocks => db
            .global_blocks
            .iter()
            .map(|b| vec![b.id.into(), text(&b.prefix), b.direction.as_str().into(), b.comment.as_str().into()])
            .collect(),
    }
}
