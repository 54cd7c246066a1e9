//! The member database on SQLite, in temporary files.

mod common;

use common::{data, Raw, TempDir};
use control::db::{CheckReport, Database, DbError, WatchMode};
use core::time::Duration;

/// A new SQLite database file with the schema, and a second connection to it.
async fn fresh(dir: &TempDir) -> (Database, Raw) {
    let file = dir.path("members.db");
    let db = Database::open_or_create(&format!("sqlite://{}", file.display())).await.expect("create");
    db.init().await.expect("init");
    let raw = Raw::sqlite(&file, true).await;
    (db, raw)
}

#[tokio::test]
async fn a_missing_file_says_how_to_create_it() {
    let dir = TempDir::new("missing");
    let url = format!("sqlite://{}", dir.path("nope.db").display());
    let e = Database::open(&url).await.expect_err("no such file");
    assert_eq!(e.to_string(), format!("cannot open database {url}: no such file; create it with `torwart db init`"));
    // A plain path is SQLite too, and open_or_create makes the file.
    let path = dir.path("made.db");
    let db = Database::open_or_create(path.to_str().expect("utf-8 path")).await.expect("create");
    assert!(!db.is_postgres());
    assert!(path.exists());
    let e = Database::open("mysql://x@y/z").await.expect_err("not ours");
    assert!(e.to_string().contains("not mysql"), "{e}");
}

#[tokio::test]
async fn the_docs_example_loads_as_the_sample() {
    let dir = TempDir::new("docs");
    let (db, raw) = fresh(&dir).await;
    common::docs_example_loads(&db, &raw).await;
}

#[tokio::test]
async fn json_import_round_trip() {
    let dir = TempDir::new("json");
    let (db, _) = fresh(&dir).await;
    common::import_round_trip(&db, &data("example.json")).await;
}

#[tokio::test]
async fn csv_import_round_trip() {
    let dir = TempDir::new("csv");
    let (db, _) = fresh(&dir).await;
    common::import_round_trip(&db, &data("example-csv")).await;
}

#[tokio::test]
async fn bad_rows_are_named_by_table_row_and_column() {
    let dir = TempDir::new("bad");
    let (db, raw) = fresh(&dir).await;
    common::bad_rows_are_named(&db, &raw).await;
}

#[tokio::test]
async fn an_invalid_import_writes_nothing_and_names_files_and_lines() {
    let dir = TempDir::new("invalid");
    let (db, _) = fresh(&dir).await;
    let json = dir.write(
        "bad.json",
        r#"{
  "plans": [{"id": 1, "name": "standard", "down_rate_kbit": 50000, "down_ceil_kbit": 200000,
             "up_rate_kbit": 20000, "up_ceil_kbit": 100000, "burst_bytes": 64000}],
  "networks": [{"id": 1, "prefix": "10.0.0.0/16", "kind": "internal"}],
  "members": [
    {"id": 1, "name": "a", "plan_id": 1},
    {"id": 2, "name": "b", "status": "paused"},
    {"id": 3, "name": "c", "plan": 1}
  ],
  "member_addresses": [
    {"id": 1, "member_id": 1, "network": "10.0.3.0/29"},
    {"id": 2, "member_id": 3, "network": "10.0.3.4/30"},
    {"id": 3, "member_id": 1, "network": "10.0.3.1/24"}
  ]
}"#,
    );
    let Err(DbError::Import(e)) = db.import(&json).await else { panic!("refused") };
    let text = e.to_string();
    let f = json.display();
    // Bad values and the compiler's problems with the rows that could be read, in one run.
    let expected = format!(
        "nothing imported: the result has 4 problems
{f}:7: members row 2: column status: unknown status \"paused\" (expected active, blocked or test)
{f}:8: members row 3: column plan: not a column of members (its columns are id, name, status, plan_id)
{f}:12, {f}:11: member_addresses row 2: 10.0.3.4/30 of member 3 overlaps member_addresses row 1 (10.0.3.0/29 of member 1)
{f}:13: member_addresses row 3: column network: 10.0.3.1/24 has host bits set (the network is 10.0.3.0/24)"
    );
    assert_eq!(text, expected);
    assert_eq!(db.load().await.expect("load"), policy::MemberDb::default(), "nothing written");

    // Values fixed, the overlap is still there, with its lines.
    let fixed = std::fs::read_to_string(&json)
        .expect("read")
        .replace(r#""status": "paused""#, r#""status": "active""#)
        .replace(r#""plan": 1"#, r#""plan_id": 1"#)
        .replace("10.0.3.1/24", "10.0.3.1");
    let json = dir.write("fixed.json", &fixed);
    let Err(DbError::Import(e)) = db.import(&json).await else { panic!("refused") };
    let f = json.display();
    assert_eq!(
        e.to_string(),
        format!(
            "nothing imported: the result has 1 problem
{f}:12, {f}:11: member_addresses row 2: 10.0.3.4/30 of member 3 overlaps member_addresses row 1 (10.0.3.0/29 of member 1)"
        )
    );
    assert_eq!(db.load().await.expect("load"), policy::MemberDb::default(), "nothing written");
}

#[tokio::test]
async fn a_csv_table_import_replaces_that_table_only() {
    let dir = TempDir::new("table");
    let (db, _) = fresh(&dir).await;
    db.import(&data("example.json")).await.expect("import");
    // Member 105 moves into 104's room: its addresses go, 104's /29 grows.
    let csv = dir.write(
        "addresses.csv",
        "id,member_id,network,device\n1,101,10.0.1.1/32,laptop\n2,101,10.0.1.2/32,nas\n3,101,2001:db8:0:101::/64,\n\
         4,102,10.0.9.1/32,test box\n5,103,10.0.2.1/32,desktop\n6,104,10.0.3.0/28,\n",
    );
    let report = db.import_table(policy::Table::MemberAddresses, &csv).await.expect("import the table");
    assert_eq!(report.tables, [(policy::Table::MemberAddresses, 6)]);
    let mut expected = policy::sample::example();
    expected.member_addresses.truncate(6);
    expected.member_addresses[5].network = "10.0.3.0/28".parse().expect("prefix");
    assert_eq!(db.load().await.expect("load"), expected);

    // A members.csv without member 103 leaves its addresses dangling: refused, with lines.
    let members = dir.write(
        "members.csv",
        "id,name,status,plan_id\n101,room-a101,active,1\n102,test-lab,test,2\n104,room-c301,active,1\n105,room-c302,active,1\n",
    );
    let Err(DbError::Import(e)) = db.import(&members).await else { panic!("refused") };
    assert!(e.to_string().contains("member_addresses row 5: member 103 does not exist"), "{e}");
    assert!(e.to_string().contains("public_addresses row 3: member 103 does not exist"), "{e}");
    assert_eq!(db.load().await.expect("load"), expected);
}

/// Operators may provide tables as views with the same columns.
#[tokio::test]
async fn a_view_is_read_like_a_table() {
    let dir = TempDir::new("view");
    let file = dir.path("members.db");
    // The operator's own table and a view over it, before torwart's init.
    // Their tools write with foreign keys off: the schema's REFERENCES
    // members cannot point at a view.
    let raw = Raw::sqlite_new(&file).await;
    raw.exec(
        "CREATE TABLE residents (person_id INTEGER PRIMARY KEY, room TEXT, locked INTEGER, lab INTEGER,
                                 tariff_id INTEGER, moved_out TEXT);
         CREATE VIEW members AS
         SELECT person_id AS id, room AS name,
                CASE WHEN locked THEN 'blocked' WHEN lab THEN 'test' ELSE 'active' END AS status,
                tariff_id AS plan_id
         FROM residents WHERE moved_out IS NULL;",
    )
    .await;
    let db = Database::open(&format!("sqlite://{}", file.display())).await.expect("open");
    db.init().await.expect("init keeps the view");
    let sql = common::docs_example_sql();
    let sql = sql.split(';').filter(|s| !s.contains("INSERT INTO members ")).collect::<Vec<_>>().join(";");
    let raw = Raw::sqlite(&file, false).await;
    raw.exec(&sql).await;
    raw.exec(
        "INSERT INTO residents VALUES (101, 'room-a101', 0, 0, 1, NULL), (102, 'test-lab', 0, 1, 2, NULL),
             (103, 'room-b204', 1, 0, 1, NULL), (104, 'room-c301', 0, 0, 1, NULL),
             (105, 'room-c302', 0, 0, 1, NULL), (106, 'gone', 0, 0, 1, '2026-01-01');",
    )
    .await;
    assert_eq!(db.load().await.expect("load through the view"), policy::sample::example());
    assert!(db.check().await.expect("check").is_valid());

    // The view's rows are checked like a table's.
    raw.exec("UPDATE residents SET tariff_id = 'basic' WHERE person_id = 104").await;
    let Err(DbError::Invalid(e)) = db.load().await else { panic!("refused") };
    assert_eq!(e.problems()[0].to_string(), "members row 104: column plan_id: \"basic\" is not an integer");

    // With a view among the member tables, the watch falls back to data_version.
    raw.exec("UPDATE residents SET tariff_id = 1 WHERE person_id = 104").await;
    let rename = |id: u32, name: &str| format!("UPDATE residents SET room = '{name}' WHERE person_id = {id}");
    common::watch_sees_changes(&db, &raw, WatchMode::PollDataVersion, &rename).await;
}

#[tokio::test]
async fn accounting_accumulates() {
    let dir = TempDir::new("accounting");
    let (db, _) = fresh(&dir).await;
    common::accounting_accumulates(&db).await;
}

#[tokio::test]
async fn the_watch_sees_another_connections_change() {
    let dir = TempDir::new("watch");
    let (db, raw) = fresh(&dir).await;
    db.import(&data("example.json")).await.expect("import");
    common::watch_sees_changes(&db, &raw, WatchMode::PollCounter, &common::rename).await;
}

/// A new export renamed over the database file while the daemon runs (as
/// scripts publish files): the watch sees it even when its change counter
/// is the old file's, the next load reads it, and usage is written into
/// it, not into the unlinked old file that connections still held.
#[tokio::test]
async fn a_file_renamed_over_the_database_is_the_one_read_and_written() {
    let dir = TempDir::new("replaced");
    let (db, raw) = fresh(&dir).await;
    db.import(&data("example.json")).await.expect("import");
    let options =
        control::db::WatchOptions { poll_interval: Duration::from_millis(50), debounce: Duration::from_millis(100) };
    let mut stream = db.watch(options).await.expect("watch");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(db.load().await.expect("load").members[0].name, "room-a101");

    // The new file: a copy with member 101 renamed and the counter put back.
    let (file, new) = (dir.path("members.db"), dir.path("export.db"));
    raw.exec(&format!("VACUUM INTO '{}'", new.display())).await;
    let counter = "SELECT counter FROM torwart_changes WHERE id = 1";
    let before: i64 = sqlx::query_scalar(counter).fetch_one(raw.sqlite_pool()).await.expect("counter");
    let export = Raw::sqlite(&new, true).await;
    export.exec(&common::rename(101, "room-a101-export")).await;
    export.exec(&format!("UPDATE torwart_changes SET counter = {before} WHERE id = 1")).await;
    drop(export);
    std::fs::rename(&new, &file).expect("rename over the database");

    assert!(
        common::change_within(&mut stream, Duration::from_secs(1)).await.is_some(),
        "the replaced file is a change"
    );
    assert_eq!(db.load().await.expect("load").members[0].name, "room-a101-export");
    let traffic = control::db::MemberTraffic { member_id: 101, up_bytes: 77, ..Default::default() };
    db.write_accounting(1_800_000_000, &[traffic]).await.expect("flush");
    let fresh = Database::open(&format!("sqlite://{}", file.display())).await.expect("open the new file");
    let written = fresh.read_accounting(101).await.expect("read");
    assert_eq!(written.iter().map(|p| p.up_bytes).sum::<u64>(), 77, "{written:?}");
}

#[tokio::test]
async fn check_reports_compiler_problems() {
    let dir = TempDir::new("check");
    let (db, raw) = fresh(&dir).await;
    db.import(&data("example.json")).await.expect("import");
    raw.exec("UPDATE public_addresses SET first_port = 30000 WHERE id = 5").await;
    let report = db.check().await.expect("check");
    let CheckReport::Invalid(e) = &report else { panic!("overlap found") };
    assert_eq!(e.problems().len(), 1);
    assert!(
        report.to_string().contains("public_addresses rows 4 and 5: members 104 and 105 share 198.51.100.20"),
        "{report}"
    );
}

#[tokio::test]
async fn a_change_reaches_the_running_policy_within_a_second() {
    let dir = TempDir::new("reload");
    let (db, raw) = fresh(&dir).await;
    db.import(&data("example.json")).await.expect("import");
    common::reloads_follow_the_database(db, &raw).await;
}

#[tokio::test]
async fn the_ledger_writes_exactly_what_was_counted() {
    let dir = TempDir::new("ledger");
    let (db, _raw) = fresh(&dir).await;
    db.import(&data("example.json")).await.expect("import");
    common::ledger_writes_exactly_what_was_counted(&db).await;
}
