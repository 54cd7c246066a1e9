//! `torwart db import`: member tables from JSON or CSV files.
//!
//! Two formats, one meaning: a file provides whole tables, with the column
//! names of `docs/members.md`.
//!
//! * **JSON**: one object with a key per table, each an array of row
//!   objects: `{"members": [{"id": 101, "name": "room-a101", "status":
//!   "active", "plan_id": 1}], "plans": [...]}`. Integers are numbers (or
//!   strings of digits), text is strings, `null` is SQL `NULL`; a key left
//!   out is `NULL` too. A key given twice (a table, or a column in one
//!   row) is refused with its line: JSON parsers disagree about which one
//!   counts (serde_json's maps keep the last), and a blocked member must
//!   not be imported as active because of it. A UTF-8 byte-order mark at
//!   the start is skipped. Numbers are kept as written, so `1e400` or `2.5`
//!   is named as it stands in the file.
//! * **CSV**: a directory with one `<table>.csv` per table
//!   (`members.csv`, `member_addresses.csv`, ...), or one such file, or any
//!   file for a named table ([`Database::import_table`]). The first line
//!   names the columns, in any order; fields are trimmed; an empty field is
//!   `NULL`. There are no comments, and a line that starts with `#` is
//!   refused with its line number: `#2 phone,8,101,10.0.1.3/32` may be a
//!   row commented out or a device called "#2 phone", and guessing either
//!   way imports something the operator did not mean (a value that starts
//!   with `#` is written in quotes). A quote left open is named with the
//!   line it opens on.
//!   Columns with a default or that may be `NULL` (`plans.weight`,
//!   `members.status`, `members.plan_id`, `member_addresses.device`,
//!   `public_addresses.first_port`/`last_port`,
//!   `global_blocks.direction`/`comment`) may be left out.
//!
//! An import **replaces the tables it provides**, row for row, and leaves
//! the others alone; `accounting` cannot be imported. A file that provides
//! no table, or an import that would delete every member, is refused (the
//! second is a `DELETE FROM members` in SQL when it is meant). Nothing is
//! written unless the result, the provided tables together with the
//! database's other tables, compiles: every problem is reported at once,
//! each with the file and line of the rows it names (`members.csv:7:
//! members row 44: plan 9 does not exist`). The write is one transaction:
//! members and plans are updated in place (rows of other tables refer to
//! them), the other provided tables are emptied and filled, then members
//! and plans that are gone are deleted.

use core::fmt;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use policy::{MemberDb, PolicyError, Problem, Table};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::backend::{int_from_text, Cells, Stmt, Tx, Value};
use super::check::{judge, Summary};
use super::read::{columns, read_row, table_named, unreadable, value_problem, TABLES};
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
    /// A JSON number as written: parsing it is the column's business, so
    /// that `1e400` is "not an integer" in its row, not a broken file.
    Number(String),
    Text(String),
    /// Something no column holds (a JSON `true`, an array).
    Other(String),
}

/// A row read from a file, with where it was.
#[derive(Debug)]
struct FileRow {
    cells: Vec<(String, FileCell)>,
    location: Location,
    /// Columns given more than once in the row (JSON): the column and the
    /// lines of its first and of a later value.
    twice: Vec<(String, u64, u64)>,
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
            FileCell::Number(n) => n.parse::<i64>().map(Some).map_err(|e| match e.kind() {
                core::num::IntErrorKind::PosOverflow | core::num::IntErrorKind::NegOverflow => {
                    format!("{n} is out of range (beyond 64 bits)")
                }
                _ => format!("{n} is not an integer"),
            }),
            FileCell::Text(s) => int_from_text(s).map(Some),
            FileCell::Other(s) => Err(format!("{s} is not an integer")),
        }
    }

    fn text(&self, column: &str) -> Result<Option<String>, String> {
        match self.cell(column) {
            FileCell::Null => Ok(None),
            FileCell::Number(n) => Ok(Some(n.clone())),
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

/// A JSON object's entries in the order written, every one: serde_json's
/// maps keep the last of a key given twice, and an import must refuse it.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Deserialize<'a> for Entries<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Entries<'a>, D::Error> {
        struct Each;
        impl<'a> Visitor<'a> for Each {
            type Value = Entries<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<Entries<'a>, M::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value::<&'a RawValue>()?));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Each)
    }
}

/// The UTF-8 byte-order mark some editors (and spreadsheet exports) put first.
const BOM: &str = "\u{feff}";

/// A file's text; a byte-order mark at the start is skipped.
fn read_text(path: &Path) -> Result<String, DbError> {
    text_of(path, fs::read(path).map_err(|e| file_error(path, e))?)
}

/// A file's bytes as text, its byte-order mark dropped.
fn text_of(path: &Path, bytes: Vec<u8>) -> Result<String, DbError> {
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        file_error(path, format!("line {line}: not UTF-8 text (byte {at} of the file)"))
    })?;
    if text.starts_with(BOM) {
        text.drain(..BOM.len());
    }
    Ok(text)
}

/// Reads a JSON import file.
fn read_json(path: &Path) -> Result<FileTables, DbError> {
    parse_json(path, &read_text(path)?)
}

/// Most columns one row of an import may name (a table has about ten):
/// a bound, so that checking a row's columns for repeats stays linear.
const MAX_COLUMNS: usize = 64;

/// Parses a JSON import (`path` names it in messages).
fn parse_json(path: &Path, text: &str) -> Result<FileTables, DbError> {
    let top: Entries<'_> = serde_json::from_str(text)
        .map_err(|e| file_error(path, format!("{e} (expected one object with an array of row objects per table)")))?;
    let line_starts: Vec<usize> = core::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    // Every value borrows from `text`, so its place in the file is its address.
    let line_of = |raw: &RawValue| {
        let offset = raw.get().as_ptr().addr().saturating_sub(text.as_ptr().addr());
        line_starts.partition_point(|&s| s <= offset) as u64
    };
    let mut tables = Vec::new();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (name, rows) in &top.0 {
        let line = line_of(rows);
        if let Some(first) = seen.insert(name, line) {
            return Err(file_error(
                path,
                format!("line {line}: table \"{name}\" is given twice (first on line {first}); which one is meant?"),
            ));
        }
        let table = table_named(name).ok_or_else(|| {
            file_error(path, format!("line {line}: unknown table \"{name}\" (the tables are {})", table_list()))
        })?;
        let rows: Vec<&RawValue> = serde_json::from_str(rows.get())
            .map_err(|_| file_error(path, format!("line {line}: {name} is not an array of row objects")))?;
        let mut read = Vec::with_capacity(rows.len());
        for raw in rows {
            let location = Location { file: path.to_owned(), line: line_of(raw) };
            let object: Entries<'_> = serde_json::from_str(raw.get())
                .map_err(|_| file_error(path, format!("line {}: a row of {name} is not an object", location.line)))?;
            if object.0.len() > MAX_COLUMNS {
                let n = object.0.len();
                let why =
                    format!("line {}: a row of {name} has {n} columns; rows have at most {MAX_COLUMNS}", location.line);
                return Err(file_error(path, why));
            }
            let mut cells: Vec<(String, FileCell)> = Vec::with_capacity(object.0.len());
            let mut lines: Vec<u64> = Vec::with_capacity(object.0.len());
            let mut twice = Vec::new();
            for (column, value) in object.0 {
                let line = line_of(value);
                if let Some(i) = cells.iter().position(|(c, _)| *c == column) {
                    twice.push((column, lines[i], line));
                    continue;
                }
                cells.push((column, file_cell(value)));
                lines.push(line);
            }
            read.push(FileRow { cells, location, twice });
        }
        tables.push((table, read));
    }
    Ok(tables)
}

/// A JSON value as a cell; numbers stay as written.
fn file_cell(value: &RawValue) -> FileCell {
    let text = value.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str(text).map_or_else(|_| FileCell::Other(text.to_owned()), FileCell::Text),
        Some(b'-' | b'0'..=b'9') => FileCell::Number(text.to_owned()),
        _ if text == "null" => FileCell::Null,
        _ => FileCell::Other(text.to_owned()),
    }
}

/// The line a quote opens on that no quote closes, following the CSV
/// reader's rules (RFC 4180): a quote opens a field only at its start,
/// `""` inside a quoted field is a quote. The reader would take the rest of
/// the file as that field and complain about the number of fields instead.
fn open_quote(bytes: &[u8]) -> Option<u64> {
    enum At {
        FieldStart,
        Field,
        Quoted,
        QuoteInQuoted,
    }
    let (mut at, mut line, mut opened) = (At::FieldStart, 1u64, 0u64);
    for &b in bytes {
        at = match (at, b) {
            (At::FieldStart, b'"') => {
                opened = line;
                At::Quoted
            }
            (At::Quoted, b'"') => At::QuoteInQuoted,
            (At::Quoted, _) => At::Quoted,
            (At::QuoteInQuoted, b'"') => At::Quoted,
            (_, b',' | b'\n') => At::FieldStart,
            (_, _) => At::Field,
        };
        if b == b'\n' {
            line += 1;
        }
    }
    matches!(at, At::Quoted).then_some(opened)
}

/// A CSV reader's error, with its line.
fn csv_error(path: &Path, e: &csv::Error) -> DbError {
    let cause = match e.kind() {
        csv::ErrorKind::Utf8 { pos: Some(pos), .. } => format!("line {}: not UTF-8 text", pos.line()),
        _ => e.to_string(),
    };
    file_error(path, cause)
}

/// Reads one CSV file holding `table`.
fn read_csv(table: Table, path: &Path) -> Result<Vec<FileRow>, DbError> {
    parse_csv(table, path, fs::read(path).map_err(|e| file_error(path, e))?)
}

/// Parses one CSV file holding `table` (`path` names it in messages).
fn parse_csv(table: Table, path: &Path, mut bytes: Vec<u8>) -> Result<Vec<FileRow>, DbError> {
    if bytes.starts_with(BOM.as_bytes()) {
        bytes.drain(..BOM.len());
    }
    if let Some(line) = open_quote(&bytes) {
        return Err(file_error(path, format!("line {line}: a quote opens a field and is never closed")));
    }
    // Flexible: the number of fields is checked below, after the lines that start with #.
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(bytes.as_slice());
    let header: Vec<String> = reader.headers().map_err(|e| csv_error(path, &e))?.iter().map(str::to_owned).collect();
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
    let mut hashed = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, &e))?;
        let (line, start) = record.position().map_or((0, 0), |p| (p.line(), p.byte() as usize));
        // A commented-out row or a value that starts with #? Nobody can tell, so neither is guessed.
        if bytes.get(start..).unwrap_or_default().trim_ascii_start().starts_with(b"#") {
            hashed.push(line);
            continue;
        }
        if record.len() != header.len() {
            let (n, m) = (record.len(), header.len());
            let cause = format!(
                "line {line}: {n} field{} where the header names {m} column{}",
                if n == 1 { "" } else { "s" },
                if m == 1 { "" } else { "s" }
            );
            return Err(file_error(path, cause));
        }
        let cells = header
            .iter()
            .zip(record.iter())
            .map(|(c, v)| (c.clone(), if v.is_empty() { FileCell::Null } else { FileCell::Text(v.to_owned()) }))
            .collect();
        rows.push(FileRow { cells, location: Location { file: path.to_owned(), line }, twice: Vec::new() });
    }
    if let Some((last, init)) = hashed.split_last() {
        let lines = match init {
            [] => format!("line {last} starts"),
            _ => format!("lines {} and {last} start", init.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
        };
        return Err(file_error(
            path,
            format!(
                "{lines} with #, but CSV files have no comments: remove the line, or quote a value that \
                 starts with # (\"#2 phone\")"
            ),
        ));
    }
    Ok(rows)
}

/// Parses an import file's contents without a database, as `torwart db
/// import` would read a file named `name` (`*.json`, or `<table>.csv`):
/// the rows it holds, or what is wrong with it. For checks and fuzzing.
pub fn parse_import(name: &Path, data: &[u8]) -> Result<usize, DbError> {
    let ext = name.extension().and_then(|x| x.to_str()).unwrap_or_default();
    let tables = if ext == "json" {
        parse_json(name, &text_of(name, data.to_vec())?)?
    } else {
        let stem = name.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let table = table_named(stem).ok_or_else(|| file_error(name, "which table?"))?;
        vec![(table, parse_csv(table, name, data.to_vec())?)]
    };
    Ok(tables.iter().map(|(_, rows)| rows.len()).sum())
}

/// The last member database that compiled, as a JSON import file (the
/// format of `torwart db import`): what a start falls back on when the
/// database cannot give it a policy. Every table, every row, in key order.
pub fn last_good_json(db: &MemberDb) -> String {
    // A row a line, so that what a reader names by its line is one row.
    let mut tables = Vec::new();
    for (table, names) in TABLES {
        let rows: Vec<String> = table_rows(db, table)
            .into_iter()
            .map(|row| {
                let cells = names.iter().zip(row).map(|(name, v)| {
                    let v = match v {
                        Value::Int(i) => serde_json::Value::from(i),
                        Value::Text(s) => serde_json::Value::from(s),
                        Value::NullInt | Value::NullText => serde_json::Value::Null,
                    };
                    ((*name).to_owned(), v)
                });
                serde_json::Value::Object(cells.collect()).to_string()
            })
            .collect();
        let rows = if rows.is_empty() { String::new() } else { format!("\n  {}\n", rows.join(",\n  ")) };
        tables.push(format!("\"{}\": [{rows}]", table.name()));
    }
    format!("{{\n{}\n}}\n", tables.join(",\n"))
}

/// Reads a file [`last_good_json`] wrote: every table, every row readable,
/// or the error names what is not (whether the rows compile is the
/// caller's question).
pub fn read_last_good(path: &Path) -> Result<MemberDb, DbError> {
    let bad = |cause: String| DbError::LastGood { path: path.to_owned(), cause };
    let text = read_own_file(path).map_err(bad)?;
    let tables = parse_json(path, &text).map_err(|e| match e {
        DbError::File { cause, .. } => bad(cause),
        e => bad(e.to_string()),
    })?;
    let mut db = MemberDb::default();
    let mut problems = Vec::new();
    for (table, rows) in &tables {
        for (i, row) in rows.iter().enumerate() {
            if !row.twice.is_empty() {
                return Err(bad(format!("line {}: a column is given twice", row.location.line)));
            }
            if let Err(u) = read_row(*table, row, i + 1, &mut db) {
                problems.extend(u.problems);
            }
        }
    }
    let missing: Vec<&str> =
        TABLES.iter().map(|(t, _)| t.name()).filter(|n| !tables.iter().any(|(t, _)| t.name() == *n)).collect();
    if !missing.is_empty() {
        return Err(bad(format!("tables missing: {}", missing.join(", "))));
    }
    if !problems.is_empty() {
        return Err(bad(PolicyError::new(problems).to_string()));
    }
    Ok(db)
}

/// The text of `path` if it is a file of this process's user that nobody
/// else may write (what [`last_good_json`]'s writer leaves): a link, or a
/// file someone else could have put or changed, is refused, since what it
/// says would become the policy.
fn read_own_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "it must be a file of this user (uid {uid}) that nobody else may write, and is owned by uid {} with mode \
             {:o}",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    text_of(path, bytes).map_err(|e| e.to_string())
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
        self.import_tables(path, tables).await
    }

    /// Imports one CSV file (any name) as `table`.
    pub async fn import_table(&self, table: Table, path: &Path) -> Result<ImportReport, DbError> {
        let rows = read_csv(table, path)?;
        self.import_tables(path, vec![(table, rows)]).await
    }

    async fn import_tables(&self, source: &Path, files: FileTables) -> Result<ImportReport, DbError> {
        if files.is_empty() {
            let why = format!(
                "the file provides no table, so there is nothing to import (a JSON import is an object with an \
                 array of rows per table: {})",
                table_list()
            );
            return Err(file_error(source, why));
        }
        let mut problems: Vec<(Problem, Vec<Location>)> = Vec::new();
        let mut unread = Vec::new();
        let mut seen: HashSet<Table> = HashSet::new();
        let mut imported = MemberDb::default();
        let mut places: HashMap<(Table, i64), Vec<Location>> = HashMap::new();
        for (table, rows) in &files {
            if !seen.insert(*table) {
                let path = rows.first().map_or_else(|| source.to_owned(), |r| r.location.file.clone());
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
                for (column, first, again) in &row.twice {
                    let why = format!("given twice in one row (lines {first} and {again}); which value is meant?");
                    let at = Location { file: row.location.file.clone(), line: *again };
                    problems.push((value_problem(*table, id, column, &why), vec![at]));
                }
                // A row with a column given twice is not used, whatever its values.
                let mut scratch = MemberDb::default();
                let into = if row.twice.is_empty() { &mut imported } else { &mut scratch };
                match read_row(*table, row, i + 1, into) {
                    Err(mut u) => {
                        problems.extend(u.problems.drain(..).map(|p| (p, vec![row.location.clone()])));
                        unread.push(u);
                    }
                    Ok(()) if !row.twice.is_empty() => unread.push(unreadable(*table, row, Vec::new())),
                    Ok(()) => {}
                }
            }
        }
        let provided: Vec<Table> = TABLES.iter().map(|(t, _)| *t).filter(|t| seen.contains(t)).collect();
        let kept: Vec<Table> = TABLES.iter().map(|(t, _)| *t).filter(|t| !seen.contains(t)).collect();

        let mut tx = self.pool.begin_write().await.map_err(|e| self.sql("cannot start the import", e))?;
        // Before judging: with the members gone, every row that refers to
        // them is a problem too, and this is the one to read.
        let no_members = imported.members.is_empty() && !unread.iter().any(|u| u.table == Table::Members);
        if provided.contains(&Table::Members) && no_members {
            let count = Stmt::new("SELECT COUNT(*) AS n FROM members", vec![]);
            let rows = tx.fetch(count).await.map_err(|e| self.sql("cannot count the members", e))?;
            let n = rows.get(0).and_then(|r| r.int("n").ok().flatten()).unwrap_or_default();
            if n > 0 {
                let why = format!(
                    "it would delete every member (the database has {n}, the import none); nothing imported \
                     (to remove every member on purpose: DELETE FROM members)"
                );
                return Err(file_error(source, why));
            }
        }
        let (current, current_unread) = self.read_tables(&mut tx, &kept).await?;
        for mut u in current_unread {
            problems.extend(u.problems.drain(..).map(|p| (p, Vec::new())));
            unread.push(u);
        }
        let merged = merge(imported, current);
        // Value problems and the compiler's, in one run.
        for p in judge(&merged, &unread) {
            let rows = p.rows.iter().map(|&r| (p.table, r)).chain(p.related.iter().copied());
            let mut at: Vec<Location> = rows.filter_map(|k| places.get(&k)).flatten().cloned().collect();
            at.dedup();
            problems.push((p, at));
        }
        if !problems.is_empty() {
            // In table order, as the compiler reports (the files were read in name order);
            // stable, so a row's value problems come before the compiler's.
            problems.sort_by_key(|(p, _)| (p.table, p.rows.first().copied()));
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
