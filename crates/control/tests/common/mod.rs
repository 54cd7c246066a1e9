//! What the SQLite and the PostgreSQL tests share: temporary databases, a
//! second connection to change things behind torwart's back, and the
//! scenarios both databases must pass.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use control::db::{ChangeStream, CheckReport, Database, DbError, MemberTraffic, WatchMode};
use sqlx::{AssertSqlSafe, Connection};

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!("{tag}_{}_{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// A file under `tests/data`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// A directory removed with everything in it when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(&format!("torwart-control-{tag}")));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` in the directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write a test file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Says something on the terminal even though the test harness captures output.
pub fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// A second connection, for changes torwart did not make.
pub enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    /// A connection to SQLite `file`; `foreign_keys` as an operator's tool may have it.
    pub async fn sqlite(file: &Path, foreign_keys: bool) -> Raw {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file).foreign_keys(foreign_keys);
        Raw::Sqlite(sqlx::SqlitePool::connect_with(options).await.expect("second SQLite connection"))
    }

    /// A connection to a new SQLite file.
    pub async fn sqlite_new(file: &Path) -> Raw {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file).create_if_missing(true);
        Raw::Sqlite(sqlx::SqlitePool::connect_with(options).await.expect("create a SQLite file"))
    }

    pub async fn postgres(url: &str) -> Raw {
        Raw::Postgres(sqlx::PgPool::connect(url).await.expect("second PostgreSQL connection"))
    }

    /// The SQLite pool (a test of SQLite only asks).
    pub fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match self {
            Raw::Sqlite(p) => p,
            Raw::Postgres(_) => panic!("not SQLite"),
        }
    }

    /// Runs `sql` (one or more statements).
    pub async fn exec(&self, sql: &str) {
        let q = || sqlx::raw_sql(AssertSqlSafe(sql.to_owned()));
        match self {
            Raw::Sqlite(p) => q().execute(p).await.map(drop),
            Raw::Postgres(p) => q().execute(p).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A PostgreSQL schema of its own for one test, dropped afterwards.
pub struct Pg {
    /// The test server's URL with the schema as search path.
    pub url: String,
    schema: String,
    base: String,
}

/// PostgreSQL tests run one at a time: notifications are per database,
/// and a watch test must only see its own.
pub static PG_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Pg {
    /// The test server from `TORWART_TEST_POSTGRES`, or `None` (skip) when
    /// it is not set; in CI (`CI=true`) a missing server fails the test.
    pub async fn new() -> Option<Pg> {
        let Ok(base) = std::env::var("TORWART_TEST_POSTGRES") else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "TORWART_TEST_POSTGRES is not set: in CI the PostgreSQL tests must run (.ci/run sets it)");
            notice(
                "NOTICE: skipping a PostgreSQL test: set TORWART_TEST_POSTGRES=postgres://user:pw@host/db to run it",
            );
            return None;
        };
        let schema = unique("torwart_test");
        let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect to TORWART_TEST_POSTGRES");
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create the test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        // The schema is also the connections' application_name, so the
        // cleanup can end any this test left behind.
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}&application_name={schema}");
        Some(Pg { url, schema, base })
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
        // Drop runs inside the test's runtime, which cannot block on itself.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&base).await?;
                // A connection dropped with the test's runtime may still sit
                // in a transaction, holding locks the DROP would wait for.
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{schema}'"
                )))
                .execute(&mut admin)
                .await?;
                sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                    .execute(&mut admin)
                    .await
                    .map(drop)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            notice(&format!("could not drop test schema {}", self.schema));
        }
    }
}

/// The example block of `docs/members.md` (the INSERTs), as SQL.
pub fn docs_example_sql() -> String {
    let docs = include_str!("../../../../docs/members.md");
    docs.split("```sql\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(sql, _)| sql))
        .find(|sql| sql.contains("INSERT INTO plans"))
        .expect("docs/members.md has the example block")
        .to_owned()
}

/// SQL that renames a member in the `members` table.
pub fn rename(id: u32, name: &str) -> String {
    format!("UPDATE members SET name = '{name}' WHERE id = {id}")
}

/// Waits up to `limit` for a change; how long it took.
pub async fn change_within(stream: &mut ChangeStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    match tokio::time::timeout(limit, stream.changed()).await {
        Ok(Ok(())) => Some(start.elapsed()),
        Ok(Err(e)) => panic!("watch error: {e}"),
        Err(_) => None,
    }
}

// Scenarios both databases pass.

/// The SQL example of the docs, inserted by hand, loads as `policy::sample::example()`.
pub async fn docs_example_loads(db: &Database, raw: &Raw) {
    db.init().await.expect("init");
    db.init().await.expect("init again");
    assert_eq!(db.load().await.expect("load the empty database"), policy::MemberDb::default());
    raw.exec(&docs_example_sql()).await;
    assert_eq!(db.load().await.expect("load"), policy::sample::example());
    let CheckReport::Valid(summary) = db.check().await.expect("check") else { panic!("the example is valid") };
    assert_eq!(
        (summary.members(), summary.active_members, summary.blocked_members, summary.test_members),
        (5, 3, 1, 1)
    );
    assert_eq!((summary.ipv4_member_addresses, summary.ipv6_member_addresses), (6, 1));
    assert_eq!((summary.public_addresses, summary.members_with_public_address), (4, 5));
    assert_eq!((summary.port_forwards, summary.ipv6_openings, summary.global_blocks), (1, 1, 1));
}

/// An import of `file` loads as the example.
pub async fn import_round_trip(db: &Database, file: &Path) {
    db.init().await.expect("init");
    let report = db.import(file).await.unwrap_or_else(|e| panic!("import {}: {e}", file.display()));
    assert_eq!(report.tables.len(), 8, "{report}");
    assert_eq!(db.load().await.expect("load"), policy::sample::example());
    // Again: an import replaces, it does not add.
    db.import(file).await.expect("import again");
    assert_eq!(db.load().await.expect("load"), policy::sample::example());
}

/// Bad values are reported with table, row and column, all of them.
pub async fn bad_rows_are_named(db: &Database, raw: &Raw) {
    db.init().await.expect("init");
    db.import(&data("example.json")).await.expect("import");
    raw.exec(
        "INSERT INTO member_addresses (id, member_id, network) VALUES (8, 104, '10.0.3.7/24');
         INSERT INTO members (id, name, status) VALUES (106, 'room-c303', 'active');
         INSERT INTO public_addresses (id, member_id, address) VALUES (6, 106, '198.51.100.300');
         INSERT INTO port_forwards (id, member_id, protocol, public_port, internal_address, internal_port)
             VALUES (2, 101, 'tcp', 8081, '10.0.1.999', 81);",
    )
    .await;
    let expected = [
        "member_addresses row 8: column network: 10.0.3.7/24 has host bits set (the network is 10.0.3.0/24)",
        "public_addresses row 6: column address: 198.51.100.300 is not an IPv4 address",
        "port_forwards row 2: column internal_address: 10.0.1.999 is not an IPv4 address",
    ];
    let Err(DbError::Invalid(e)) = db.load().await else { panic!("the bad rows are refused") };
    let got: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
    assert_eq!(got, expected);
    assert!(e.to_string().starts_with("the member database has 3 problems\n"), "{e}");
    let CheckReport::Invalid(e) = db.check().await.expect("check") else { panic!("check refuses") };
    assert_eq!(e.problems().len(), 3);
}

/// Flushes add up per member, period and direction.
pub async fn accounting_accumulates(db: &Database) {
    db.init().await.expect("init");
    let t = |member_id, up_bytes, down_bytes, up_packets, down_packets| MemberTraffic {
        member_id,
        up_bytes,
        down_bytes,
        up_packets,
        down_packets,
    };
    db.write_accounting(1_800_000_000, &[t(101, 1000, 5000, 10, 20), t(102, 1, 0, 1, 0)]).await.expect("flush");
    db.write_accounting(1_800_000_000, &[t(101, 500, 0, 5, 0), t(101, 0, 1000, 0, 4)]).await.expect("flush");
    db.write_accounting(1_800_000_300, &[t(101, 7, 8, 1, 1), t(103, 0, 0, 0, 0)]).await.expect("flush");
    let p = db.read_accounting(101).await.expect("read");
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].period_start, p[0].up_bytes, p[0].down_bytes, p[0].up_packets, p[0].down_packets),
        (1_800_000_000, 1500, 6000, 15, 24)
    );
    assert_eq!(
        (p[1].period_start, p[1].up_bytes, p[1].down_bytes, p[1].up_packets, p[1].down_packets),
        (1_800_000_300, 7, 8, 1, 1)
    );
    let p = db.read_accounting(102).await.expect("read");
    assert_eq!((p.len(), p[0].up_bytes, p[0].down_bytes), (1, 1, 0));
    assert!(db.read_accounting(103).await.expect("read").is_empty(), "idle members cost no rows");
    let too_big = db.write_accounting(1_800_000_600, &[t(104, u64::MAX, 0, 1, 0)]).await;
    assert!(matches!(too_big, Err(DbError::Value(_))), "{too_big:?}");
}

/// A change through another connection reaches the watch within a second;
/// accounting flushes do not look like changes (except in `data_version` mode).
pub async fn watch_sees_changes(db: &Database, raw: &Raw, mode: WatchMode, rename: &dyn Fn(u32, &str) -> String) {
    let options =
        control::db::WatchOptions { poll_interval: Duration::from_millis(50), debounce: Duration::from_millis(100) };
    let mut stream = db.watch(options).await.expect("watch");
    assert_eq!(stream.mode(), mode);
    // Let the watch settle (a listener is up, a poller has its first value).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stream.try_changed().is_none(), "nothing changed yet");

    raw.exec(&rename(101, "room-a101-new")).await;
    let took = change_within(&mut stream, Duration::from_secs(1)).await.expect("the change arrives within 1 s");
    notice(&format!("{mode:?}: change seen after {took:?}"));
    assert_eq!(db.load().await.expect("load").members[0].name, "room-a101-new");

    // A burst is one notification.
    raw.exec(&rename(102, "a")).await;
    raw.exec(&rename(103, "b")).await;
    raw.exec("DELETE FROM global_blocks").await;
    assert!(change_within(&mut stream, Duration::from_secs(1)).await.is_some(), "the burst arrives");
    assert!(change_within(&mut stream, Duration::from_millis(400)).await.is_none(), "once");

    if mode != WatchMode::PollDataVersion {
        let traffic = MemberTraffic { member_id: 101, up_bytes: 1, ..MemberTraffic::default() };
        db.write_accounting(1_800_000_000, &[traffic]).await.expect("flush");
        assert!(change_within(&mut stream, Duration::from_millis(400)).await.is_none(), "accounting is no change");
    }
}

/// A change in the database reaches a running reloader's published policy
/// within a second; a change that does not compile leaves it as it was.
pub async fn reloads_follow_the_database(db: Database, raw: &Raw) {
    use control::reload::Reloader;
    let stream = db.watch(control::db::WatchOptions::default()).await.expect("watch");
    let reloader = Reloader::start(db, [1, 2, 3, 4]).await.expect("the example compiles");
    let published = reloader.published();
    let before = published.load().number();
    let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&reports);
    let task = tokio::spawn(reloader.run(stream, move |r| sink.lock().expect("reports").push(r.map(|r| r.generation))));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t0 = Instant::now();
    raw.exec("UPDATE members SET status = 'blocked' WHERE id = 101").await;
    let blocked = |p: &policy::Policy| p.by_id(101).is_some_and(|m| p.member(m).status == policy::Status::Blocked);
    while !blocked(&published.load().policy) {
        assert!(t0.elapsed() < Duration::from_secs(1), "the change did not reach the running policy within a second");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let generation = published.load();
    assert_eq!(generation.number(), before + 1);
    assert_eq!(generation.ended_since(before), Some(vec![101]), "the blocked member's flows are to end");

    // An overlapping address: refused, named, and the running policy stays.
    raw.exec("INSERT INTO member_addresses (id, member_id, network, device) VALUES (99, 102, '10.0.1.0/30', NULL)")
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(published.load().number(), before + 1, "an invalid database must not be published");
    let refused = reports
        .lock()
        .expect("reports")
        .iter()
        .any(|r| matches!(r, Err(DbError::Invalid(e)) if e.to_string().contains("member_addresses row 99")));
    assert!(refused, "the refusal names the row: {:?}", reports.lock().expect("reports"));
    task.abort();
}

/// Periodic flushes of running totals, and the final one at a stop, write
/// exactly what was counted; a failed flush loses nothing.
pub async fn ledger_writes_exactly_what_was_counted(db: &Database) {
    use control::ledger::{Ledger, Periods};
    let t = |id, ub, db_, up, dp| MemberTraffic {
        member_id: id,
        up_bytes: ub,
        down_bytes: db_,
        up_packets: up,
        down_packets: dp,
    };
    let mut ledger = Ledger::new();
    let hour = Periods::HOURLY;
    let now = 1_764_000_000i64;
    // Running totals as the cores report them, three flushes in one hour.
    ledger.flush(db, hour, now, &[t(101, 100, 1000, 1, 2)]).await.expect("flush");
    ledger.flush(db, hour, now + 60, &[t(101, 150, 1500, 2, 3), t(104, 10, 20, 1, 1)]).await.expect("flush");
    // Nothing new: nothing written.
    assert_eq!(ledger.flush(db, hour, now + 61, &[t(101, 150, 1500, 2, 3)]).await.expect("flush"), 0);
    // The stop: the last flush.
    ledger.flush(db, hour, now + 120, &[t(101, 400, 1500, 5, 3), t(104, 10, 20, 1, 1)]).await.expect("flush");
    let rows = db.read_accounting(101).await.expect("read");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].up_bytes, rows[0].down_bytes, rows[0].up_packets, rows[0].down_packets), (400, 1500, 5, 3));
    assert_eq!(rows[0].period_start, hour.start(now));
    let rows = db.read_accounting(104).await.expect("read");
    assert_eq!((rows[0].up_bytes, rows[0].down_bytes), (10, 20));
}
