//! The member database: SQLite or PostgreSQL, read into the member model.
//!
//! The member database is the source of truth of a torwart network
//! (`docs/members.md`). This module is the only code that talks to it. It
//!
//! * opens it by URL ([`Database::open`]): `sqlite://path` or a plain file
//!   path is SQLite, the embedded default; `postgres://...` is PostgreSQL.
//!   Both go through sqlx with the same SQL text, so there is one code path
//!   and the per-database differences fit in `backend.rs`;
//! * creates the schema ([`Database::init`], from `schema.sql`, which is
//!   the schema block of `docs/members.md` verbatim; a test keeps them
//!   equal), idempotently, plus the change tracking of [`Database::watch`];
//! * reads every table into a [`MemberDb`] ([`Database::load`]). A value
//!   that does not parse becomes a [`Problem`](policy::Problem) naming
//!   table, row and column, and reading goes on, so one run lists every
//!   problem. Tables may be operator views with the same column names;
//! * imports JSON or CSV files ([`Database::import`]), compiled before
//!   anything is written and written in one transaction;
//! * checks the database ([`Database::check`]): load plus
//!   [`policy::compile()`], every problem (value and compiler problems in
//!   one run) or a summary;
//! * adds traffic counters to the `accounting` table
//!   ([`Database::write_accounting`]), the only table torwart writes
//!   during operation;
//! * notices changes ([`Database::watch`]): LISTEN/NOTIFY with PostgreSQL,
//!   polling a change counter (or SQLite's `data_version`) otherwise.
//!
//! Everything is async (sqlx on tokio). Nothing here is on the packet
//! path: the daemon loads, compiles and swaps policies off it.
//!
//! No secrets in messages: a database is shown by its URL with the
//! password replaced by `***` ([`redacted`]), in every error and in
//! [`Database`]'s `Display`.

mod accounting;
mod backend;
mod check;
mod error;
mod import;
mod read;
mod schema;
mod watch;

use core::fmt;

use policy::{MemberDb, PolicyError};

pub use accounting::{AccountingPeriod, MemberTraffic};
pub use check::{CheckReport, Summary};
pub use error::{DbError, ImportError, Location};
pub use import::{last_good_json, parse_import, read_last_good, ImportReport};
pub use watch::{ChangeStream, WatchMode, WatchOptions, CHANNEL as NOTIFY_CHANNEL};

use backend::{Pool, Stmt, Tx};
use read::{read_row, select, Unreadable, TABLES};

/// An open member database: a small connection pool to SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Database {
    /// The URL for messages, without the password.
    url: String,
    pool: Pool,
}

impl Database {
    /// Opens an existing database: `sqlite://path`, `sqlite:path` or a
    /// plain file path (SQLite), or `postgres://user:password@host/db`
    /// (PostgreSQL). A missing SQLite file is an error that says how to
    /// create it; the schema is not checked here ([`Database::load`] names
    /// missing tables and columns).
    pub async fn open(url: &str) -> Result<Database, DbError> {
        Database::connect(url, false).await
    }

    /// Opens a database, creating a missing SQLite file (for `torwart db
    /// init`; then call [`Database::init`]). For PostgreSQL the same as
    /// [`Database::open`]: the database must exist.
    pub async fn open_or_create(url: &str) -> Result<Database, DbError> {
        Database::connect(url, true).await
    }

    /// Opens an existing database to read only (`torwart run --check`):
    /// an SQLite file is opened read-only, so nothing can be written to it
    /// or beside it; PostgreSQL as [`Database::open`].
    pub async fn open_read_only(url: &str) -> Result<Database, DbError> {
        let shown = redacted(url);
        let target = match backend::target(url, &shown)? {
            backend::Target::Sqlite(o) => backend::Target::Sqlite(Box::new((*o).read_only(true))),
            postgres => postgres,
        };
        let pool = Pool::connect(target, &shown, false).await?;
        Ok(Database { url: shown, pool })
    }

    /// A database whose connections are made when first needed: the URL is
    /// read now, but nothing need answer yet. For a start that goes on
    /// without the database (from the last good member database): the
    /// reloads and usage writes then fail, and are tried again, until it
    /// answers.
    pub fn open_lazy(url: &str) -> Result<Database, DbError> {
        let shown = redacted(url);
        let target = backend::target(url, &shown)?;
        Ok(Database { pool: Pool::connect_lazy(target), url: shown })
    }

    async fn connect(url: &str, create: bool) -> Result<Database, DbError> {
        let shown = redacted(url);
        let target = backend::target(url, &shown)?;
        let pool = Pool::connect(target, &shown, create).await?;
        Ok(Database { url: shown, pool })
    }

    /// The database's URL with its password redacted, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.pool.is_postgres()
    }

    /// Closes the connections (they close on drop too, less politely).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads every member table into the model, in key order, from one
    /// consistent snapshot. Values that do not parse are reported all
    /// together as [`DbError::Invalid`], each naming table, row and
    /// column; whether the rows fit together is [`policy::compile()`]'s
    /// business (see [`Database::check`]).
    pub async fn load(&self) -> Result<MemberDb, DbError> {
        let (db, unreadable) = self.read_all().await?;
        if unreadable.is_empty() {
            Ok(db)
        } else {
            Err(DbError::Invalid(PolicyError::new(unreadable.into_iter().flat_map(|u| u.problems).collect())))
        }
    }

    /// Every table from one snapshot: the rows that could be read, and those that could not.
    async fn read_all(&self) -> Result<(MemberDb, Vec<Unreadable>), DbError> {
        let mut tx = self.begin_read().await?;
        let read = self.read_tables(&mut tx, &TABLES.map(|(t, _)| t)).await?;
        tx.rollback().await.map_err(|e| self.sql("cannot finish reading", e))?;
        Ok(read)
    }

    /// A read-only transaction that sees one snapshot of the database.
    async fn begin_read(&self) -> Result<Tx, DbError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.sql("cannot start reading", e))?;
        if self.pool.is_postgres() {
            tx.execute(Stmt::new("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", vec![]))
                .await
                .map_err(|e| self.sql("cannot start reading", e))?;
        }
        Ok(tx)
    }

    /// Reads `tables` into a model; rows with bad values are set aside with their problems.
    async fn read_tables(&self, tx: &mut Tx, tables: &[policy::Table]) -> Result<(MemberDb, Vec<Unreadable>), DbError> {
        let mut db = MemberDb::default();
        let mut unreadable = Vec::new();
        for &table in tables {
            let rows = tx
                .fetch(Stmt::new(select(table), vec![]))
                .await
                .map_err(|e| self.sql(format!("cannot read table {table}"), e))?;
            for i in 0..rows.len() {
                if let Some(cells) = rows.get(i) {
                    if let Err(u) = read_row(table, cells, i + 1, &mut db) {
                        unreadable.push(u);
                    }
                }
            }
        }
        Ok((db, unreadable))
    }

    fn sql(&self, doing: impl Into<String>, source: sqlx::Error) -> DbError {
        DbError::Sql { url: self.url.clone(), doing: doing.into(), source }
    }
}

impl fmt::Display for Database {
    /// The URL with the password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// `url` with its password replaced by `***`, for messages and logs:
/// `postgres://torwart:secret@host/db` becomes
/// `postgres://torwart:***@host/db`, a `password=` parameter becomes
/// `password=***`; a URL without a password, or a file path, is unchanged.
///
/// The user info ends at the last `@` before the path, as in a URL. A
/// password with an unescaped `/`, `?` or `#` makes no URL (the database
/// driver refuses it), but is still hidden: then everything between `://`
/// and the last `@` is.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if authority.is_empty() {
        // `sqlite:///var/lib/m@x.db`: no user info, only a path.
        return url.to_owned();
    }
    let (authority, tail) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => (format!("{user}:***@{host}"), tail),
            None => (authority.to_owned(), tail),
        },
        None => match rest.rsplit_once('@') {
            // Not a URL's user info: hide all of it.
            Some((_, after)) => (format!("***@{after}"), ""),
            None => (authority.to_owned(), tail),
        },
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `text` with every URL's password in it redacted ([`redacted`]): for
/// messages that may quote a configuration line (a TOML error shows the
/// line it stopped at, `database = "postgres://user:secret@..."` too).
/// A URL starts after a space or quote; one that a quote opened runs to
/// the last such quote on its line (a password may hold the other quotes,
/// or this one escaped), any other to the line's end (it may hold spaces).
pub fn redacted_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let quote = |c: char| matches!(c, '"' | '\'' | '`');
        let (start, opener) = match rest[..at].char_indices().rev().find(|&(_, c)| c.is_whitespace() || quote(c)) {
            Some((i, c)) => (i + c.len_utf8(), quote(c).then_some(c)),
            None => (0, None),
        };
        let line_end = rest[at..].find('\n').map_or(rest.len(), |i| at + i);
        let end = match opener {
            Some(q) => rest[at..line_end].rfind(q).map_or(line_end, |i| at + i),
            None => line_end,
        };
        out.push_str(&rest[..start]);
        out.push_str(&redacted(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_good_database_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("torwart-last-good-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.last-good.json");
        let mut example = policy::sample::example();
        // NULLs and text that needs escaping survive too.
        example.members[0].name = "room \"a\" \\ 101 ü".into();
        example.member_addresses[0].device = None;
        for db in [example, policy::sample::campus(300), MemberDb::default()] {
            std::fs::write(&path, last_good_json(&db)).unwrap();
            assert_eq!(read_last_good(&path).unwrap(), db);
        }
        // What is wrong with a damaged one is named, with the file.
        let text = last_good_json(&policy::sample::example());
        for (damaged, names) in [
            (text[..text.len() / 2].to_owned(), "EOF"),
            (text.replacen("\"status\":\"active\"", "\"status\":\"paused\"", 1), "paused"),
            (text.replacen("\"networks\":", "\"nets\":", 1), "nets"),
            ("{\"members\": []}".to_owned(), "tables missing: plans"),
        ] {
            std::fs::write(&path, damaged).unwrap();
            let e = read_last_good(&path).unwrap_err().to_string();
            assert!(e.starts_with(&format!("cannot use the last good member database {}", path.display())), "{e}");
            assert!(e.contains(names), "{e}");
        }
        // One row a line.
        assert!(text.lines().all(|l| l.matches("{\"").count() <= 1), "{text}");
        // Only a file of this user that nobody else may write: what it
        // says becomes the policy.
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_last_good(&path).unwrap_err().to_string();
        assert!(e.contains("nobody else may write") && e.contains("mode 666"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_last_good(&link).is_err(), "a link is followed");
        assert_eq!(read_last_good(&path).unwrap(), policy::sample::example());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passwords_in_a_quoted_line_are_hidden() {
        let cases = [
            "1 | database = \"postgres://torwart:se cret\\x@db/m\"\n  |            ^",
            "database = \"postgres://torwart:it's@db/m\"",
            "database = \"postgres://torwart:pa\\\"ss@db/m\" # \"quoted\"",
            "database = 'postgres://torwart:a\"b`c@db/m'",
            "database =\u{a0}postgres://torwart:nbsp word@db/m",
            "invalid type: string \"postgres://torwart:x@y@db/m\", expected u32",
        ];
        for line in cases {
            let shown = redacted_text(line);
            for secret in ["se cret", "cret", "it's", "pa\\\"ss", "a\"b`c", "nbsp word", "x@y"] {
                assert!(!shown.contains(secret), "{line:?} -> {shown:?}");
            }
            assert!(shown.contains("postgres://torwart:***@db/m"), "{line:?} -> {shown:?}");
        }
        assert_eq!(redacted_text("no URL here: a@b:c"), "no URL here: a@b:c");
        assert_eq!(redacted_text("://"), "://");
        assert_eq!(redacted_text("\u{3000}://x\u{a0}"), "\u{3000}://x\u{a0}");
        assert_eq!(redacted("sqlite:///var/lib/m@x.db"), "sqlite:///var/lib/m@x.db");
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redacted("postgres://torwart:secret@127.0.0.1:5432/db"), "postgres://torwart:***@127.0.0.1:5432/db");
        assert_eq!(
            redacted("postgres://u:p@ss@h/db?password=x&sslmode=disable"),
            "postgres://u:***@h/db?password=***&sslmode=disable"
        );
        assert_eq!(redacted("postgres://h/db?PASSWORD=x"), "postgres://h/db?PASSWORD=***");
        assert_eq!(redacted("postgres://torwart@h/db"), "postgres://torwart@h/db");
        assert_eq!(redacted("postgres://u:se/cr?et@h/db"), "postgres://***@h/db");
        assert_eq!(redacted("sqlite:///var/lib/torwart/members.db"), "sqlite:///var/lib/torwart/members.db");
        assert_eq!(redacted("members.db"), "members.db");
    }
}
