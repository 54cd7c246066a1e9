//! The two databases behind one small surface.
//!
//! torwart speaks to SQLite and PostgreSQL through sqlx with the same SQL
//! text: the schema and every statement here use portable SQL (`$1`
//! placeholders, `INSERT ... ON CONFLICT`, which SQLite has understood
//! since 3.24), so the only per-database code is this module: opening a
//! pool, binding values, and reading a cell of a result row.
//!
//! Cells are read by column name and by the type the *value* has, not the
//! type the column was declared with, because an operator's view may hand
//! over an integer as `INT2`, `INT8` or, in SQLite, as text. A value of the
//! wrong kind is an error message for a [`Problem`](policy::Problem)
//! naming the row, never a panic and never a silent `0`.
//!
//! Opening says the real cause. A pool retries a failing connect until its
//! acquire timeout and then reports only "timed out", so a closed port
//! took ten seconds to say nothing useful; one plain connection first
//! fails at once with the driver's own error ("connection refused").
//! SQLite's "unable to open database file" does not say why either;
//! opening the file first does ("permission denied"), with the path.
//!
//! A SQLite file can be replaced under a running daemon: a new export
//! renamed over the old one, as scripts publish files. A connection keeps
//! the file it opened, unlinked or not, so the pool's idle connections
//! would go on reading the old members (a member blocked in the new file
//! kept forwarding) and writing usage into a file nobody sees again. So
//! before a connection is taken from the pool the path is looked at (one
//! `stat`, on a query, never per packet): once it names another file, the
//! connections opened before that was noticed are closed, and new ones
//! open the file the path names now ([`FileWatch`]).

use core::str::FromStr;
use core::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Connection, Decode, Row, TypeInfo, ValueRef};

use super::error::DbError;

/// How long opening waits for a connection before it says why not.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A value to bind to a `$n` placeholder.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
    NullInt,
    NullText,
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<u16> for Value {
    fn from(v: u16) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}

impl From<Option<u32>> for Value {
    fn from(v: Option<u32>) -> Value {
        v.map_or(Value::NullInt, Value::from)
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        v.map_or(Value::NullText, Value::Text)
    }
}

/// One SQL statement with its parameters.
#[derive(Clone, Debug)]
pub(crate) struct Stmt {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Stmt {
        Stmt { sql: sql.into(), params }
    }
}

/// The identity of the file at `path` (device, inode), `None` if there is none.
pub(crate) fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Which file a SQLite path names, and since when that was seen.
#[derive(Debug)]
struct FileWatch {
    path: std::path::PathBuf,
    seen: std::sync::Mutex<(Option<(u64, u64)>, std::time::Instant)>,
}

impl FileWatch {
    fn new(path: &std::path::Path) -> FileWatch {
        let seen = (file_id(path), std::time::Instant::now());
        FileWatch { path: path.to_owned(), seen: std::sync::Mutex::new(seen) }
    }

    /// Whether a connection opened `age` ago may still hold the file the
    /// path names: not if the path was seen to name another one since.
    fn current(&self, age: Duration) -> bool {
        let (id, now) = (file_id(&self.path), std::time::Instant::now());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0 != id {
            *seen = (id, now);
        }
        age <= now.saturating_duration_since(seen.1)
    }
}

/// The connection pool of one of the two databases.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite { pool: SqlitePool, options: Box<SqliteConnectOptions> },
    Postgres { pool: PgPool },
}

/// What a database URL names.
pub(crate) enum Target {
    Sqlite(Box<SqliteConnectOptions>),
    Postgres(Box<PgConnectOptions>),
}

/// Reads a database URL: `postgres://` (or `postgresql://`) is PostgreSQL,
/// `sqlite:` and a plain file path are SQLite. `shown` is the URL for
/// messages.
pub(crate) fn target(url: &str, shown: &str) -> Result<Target, DbError> {
    let open_error = |cause: String| DbError::Open { url: shown.to_owned(), cause };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => PgConnectOptions::from_str(url)
            .map(|o| Target::Postgres(Box::new(o)))
            .map_err(|e| open_error(format!("not a usable PostgreSQL URL: {e}"))),
        Some("sqlite") => SqliteConnectOptions::from_str(url)
            .map(|o| Target::Sqlite(Box::new(o)))
            .map_err(|e| open_error(format!("not a usable SQLite URL: {e}"))),
        Some(other) => Err(open_error(format!(
            "torwart reads SQLite (sqlite://path, or a file path) and PostgreSQL (postgres://...), not {other}"
        ))),
        None if url.starts_with("sqlite:") => SqliteConnectOptions::from_str(url)
            .map(|o| Target::Sqlite(Box::new(o)))
            .map_err(|e| open_error(format!("not a usable SQLite URL: {e}"))),
        None => Ok(Target::Sqlite(Box::new(SqliteConnectOptions::new().filename(url)))),
    }
}

/// The pool's settings for an SQLite file: a connection to a file that
/// was replaced since it was opened is not reused (see [`FileWatch`]).
fn sqlite_pool(options: &SqliteConnectOptions) -> SqlitePoolOptions {
    let in_memory = options.get_filename().as_os_str() == ":memory:";
    let file = std::sync::Arc::new(FileWatch::new(options.get_filename()));
    SqlitePoolOptions::new()
        .before_acquire(move |_, meta| {
            let current = in_memory || file.current(meta.age);
            Box::pin(async move { Ok(current) })
        })
        .max_connections(4)
        .acquire_timeout(CONNECT_TIMEOUT)
}

fn postgres_pool() -> PgPoolOptions {
    PgPoolOptions::new().max_connections(4).acquire_timeout(CONNECT_TIMEOUT)
}

impl Pool {
    /// Connects; `create` makes a missing SQLite file.
    pub async fn connect(target: Target, shown: &str, create: bool) -> Result<Pool, DbError> {
        let open_error = |cause: String| DbError::Open { url: shown.to_owned(), cause };
        match target {
            Target::Sqlite(options) => {
                let file = options.get_filename();
                let in_memory = file.as_os_str() == ":memory:";
                if !in_memory {
                    match std::fs::File::open(file) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(open_error("no such file; create it with `torwart db init`".into()));
                        }
                        // Not "no such file" when a directory on the way may not be searched.
                        Err(e) => return Err(open_error(format!("cannot read {}: {}", file.display(), io_cause(&e)))),
                    }
                }
                let options = Box::new((*options).create_if_missing(create));
                let pool =
                    sqlite_pool(&options).connect_with((*options).clone()).await.map_err(|e| open_error(cause(&e)))?;
                Ok(Pool::Sqlite { pool, options })
            }
            Target::Postgres(options) => {
                match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
                    Ok(Ok(first)) => {
                        let _ = first.close().await;
                    }
                    Ok(Err(e)) => return Err(open_error(cause(&e))),
                    Err(_) => {
                        let waited = CONNECT_TIMEOUT.as_secs();
                        return Err(open_error(format!("no answer within {waited} s (is the host reachable?)")));
                    }
                }
                let pool = postgres_pool().connect_with(*options).await.map_err(|e| open_error(cause(&e)))?;
                Ok(Pool::Postgres { pool })
            }
        }
    }

    /// Connects when a connection is first asked for (see [`Pool::connect`]
    /// for the settings; a missing SQLite file is not made).
    pub fn connect_lazy(target: Target) -> Pool {
        match target {
            Target::Sqlite(options) => {
                let pool = sqlite_pool(&options).connect_lazy_with((*options).clone());
                Pool::Sqlite { pool, options }
            }
            Target::Postgres(options) => Pool::Postgres { pool: postgres_pool().connect_lazy_with(*options) },
        }
    }

    /// The SQLite file, if this is SQLite (and not in memory).
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        match self {
            Pool::Sqlite { options, .. } if options.get_filename().as_os_str() != ":memory:" => {
                Some(options.get_filename())
            }
            _ => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Pool::Postgres { .. })
    }

    /// Runs a query outside a transaction and returns its rows.
    pub async fn fetch(&self, stmt: Stmt) -> Result<Rows, sqlx::Error> {
        match self {
            Pool::Sqlite { pool, .. } => Ok(Rows::Sqlite(sqlite_query(stmt).fetch_all(pool).await?)),
            Pool::Postgres { pool } => Ok(Rows::Postgres(pg_query(stmt).fetch_all(pool).await?)),
        }
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Pool::Sqlite { pool, .. } => Ok(Tx::Sqlite(pool.begin().await?)),
            Pool::Postgres { pool } => Ok(Tx::Postgres(pool.begin().await?)),
        }
    }

    /// A transaction that will write: SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so reading and then writing in it cannot fail
    /// halfway because another connection wrote in between.
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Pool::Sqlite { pool, .. } => Ok(Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)),
            Pool::Postgres { pool } => Ok(Tx::Postgres(pool.begin().await?)),
        }
    }

    pub async fn close(&self) {
        match self {
            Pool::Sqlite { pool, .. } => pool.close().await,
            Pool::Postgres { pool } => pool.close().await,
        }
    }
}

/// A sqlx error's cause, the way an operator wants to read it.
pub(crate) fn cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Io(io) => io_cause(io),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".into(),
        other => other.to_string(),
    }
}

/// An I/O error in lower case ("connection refused (os error 111)"), as
/// it reads after "cannot open database ...: ".
fn io_cause(e: &std::io::Error) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn sqlite_query(stmt: Stmt) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let mut q = sqlx::query(AssertSqlSafe(stmt.sql));
    for p in stmt.params {
        q = match p {
            Value::Int(v) => q.bind(v),
            Value::Text(s) => q.bind(s),
            Value::NullInt => q.bind(None::<i64>),
            Value::NullText => q.bind(None::<String>),
        };
    }
    q
}

fn pg_query(stmt: Stmt) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(AssertSqlSafe(stmt.sql));
    for p in stmt.params {
        q = match p {
            Value::Int(v) => q.bind(v),
            Value::Text(s) => q.bind(s),
            Value::NullInt => q.bind(None::<i64>),
            Value::NullText => q.bind(None::<String>),
        };
    }
    q
}

/// A transaction on either database; dropped without [`Tx::commit`] it rolls back.
pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn execute(&mut self, stmt: Stmt) -> Result<u64, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => Ok(sqlite_query(stmt).execute(&mut **tx).await?.rows_affected()),
            Tx::Postgres(tx) => Ok(pg_query(stmt).execute(&mut **tx).await?.rows_affected()),
        }
    }

    pub async fn fetch(&mut self, stmt: Stmt) -> Result<Rows, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => Ok(Rows::Sqlite(sqlite_query(stmt).fetch_all(&mut **tx).await?)),
            Tx::Postgres(tx) => Ok(Rows::Postgres(pg_query(stmt).fetch_all(&mut **tx).await?)),
        }
    }

    /// Ends a transaction without keeping anything. Read transactions end
    /// this way rather than by drop, so the connection does not sit in an
    /// open transaction (holding its snapshot and locks) until its next use.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Result rows of either database.
pub(crate) enum Rows {
    Sqlite(Vec<SqliteRow>),
    Postgres(Vec<PgRow>),
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Sqlite(r) => r.len(),
            Rows::Postgres(r) => r.len(),
        }
    }

    /// Row `i` as a [`Cells`].
    pub fn get(&self, i: usize) -> Option<&dyn Cells> {
        match self {
            Rows::Sqlite(r) => r.get(i).map(|r| r as &dyn Cells),
            Rows::Postgres(r) => r.get(i).map(|r| r as &dyn Cells),
        }
    }
}

/// The columns of one row, by name, from a database or an import file.
/// `Ok(None)` is SQL `NULL` (or, in a file, an absent or empty value);
/// `Err` says what the value is instead, for the problem report.
pub(crate) trait Cells {
    fn int(&self, column: &str) -> Result<Option<i64>, String>;
    fn text(&self, column: &str) -> Result<Option<String>, String>;
}

/// Integers may arrive as text (SQLite views, CSV files): accept what parses exactly.
pub(crate) fn int_from_text(s: &str) -> Result<i64, String> {
    s.trim().parse::<i64>().map_err(|_| format!("\"{s}\" is not an integer"))
}

impl Cells for SqliteRow {
    fn int(&self, column: &str) -> Result<Option<i64>, String> {
        let v = self.try_get_raw(column).map_err(|e| cause(&e))?;
        if v.is_null() {
            return Ok(None);
        }
        let kind = v.type_info().name().to_owned();
        match kind.as_str() {
            "INTEGER" => <i64 as Decode<sqlx::Sqlite>>::decode(v).map(Some).map_err(|e| e.to_string()),
            "TEXT" => {
                let s = <String as Decode<sqlx::Sqlite>>::decode(v).map_err(|e| e.to_string())?;
                int_from_text(&s).map(Some)
            }
            "REAL" => {
                let f = <f64 as Decode<sqlx::Sqlite>>::decode(v).map_err(|e| e.to_string())?;
                float_to_int(f).map(Some)
            }
            other => Err(format!("holds a {other} value, not an integer")),
        }
    }

    fn text(&self, column: &str) -> Result<Option<String>, String> {
        let v = self.try_get_raw(column).map_err(|e| cause(&e))?;
        if v.is_null() {
            return Ok(None);
        }
        let kind = v.type_info().name().to_owned();
        match kind.as_str() {
            "TEXT" => <String as Decode<sqlx::Sqlite>>::decode(v).map(Some).map_err(|e| e.to_string()),
            // A number where text is expected (a name "42"): its digits are the text.
            "INTEGER" => {
                <i64 as Decode<sqlx::Sqlite>>::decode(v).map(|i| Some(i.to_string())).map_err(|e| e.to_string())
            }
            other => Err(format!("holds a {other} value, not text")),
        }
    }
}

fn float_to_int(f: f64) -> Result<i64, String> {
    if f.fract() == 0.0 && (-9.0e15..=9.0e15).contains(&f) {
        // Integral and within 2^53: the conversion is exact.
        Ok(f as i64)
    } else {
        Err(format!("{f} is not an integer"))
    }
}

impl Cells for PgRow {
    fn int(&self, column: &str) -> Result<Option<i64>, String> {
        let v = self.try_get_raw(column).map_err(|e| cause(&e))?;
        if v.is_null() {
            return Ok(None);
        }
        let kind = v.type_info().name().to_owned();
        let r = match kind.as_str() {
            "INT8" => <i64 as Decode<sqlx::Postgres>>::decode(v),
            "INT4" => <i32 as Decode<sqlx::Postgres>>::decode(v).map(i64::from),
            "INT2" => <i16 as Decode<sqlx::Postgres>>::decode(v).map(i64::from),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
                let s = <String as Decode<sqlx::Postgres>>::decode(v).map_err(|e| e.to_string())?;
                return int_from_text(&s).map(Some);
            }
            other => {
                return Err(format!(
                    "has the PostgreSQL type {other}; torwart reads integers (cast it: {column}::bigint)"
                ))
            }
        };
        r.map(Some).map_err(|e| e.to_string())
    }

    fn text(&self, column: &str) -> Result<Option<String>, String> {
        let v = self.try_get_raw(column).map_err(|e| cause(&e))?;
        if v.is_null() {
            return Ok(None);
        }
        let kind = v.type_info().name().to_owned();
        match kind.as_str() {
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
                <String as Decode<sqlx::Postgres>>::decode(v).map(Some).map_err(|e| e.to_string())
            }
            other => Err(format!("has the PostgreSQL type {other}; torwart reads text (cast it: {column}::text)")),
        }
    }
}
