//! The member database on a real PostgreSQL server.
//!
//! The server is `TORWART_TEST_POSTGRES` (`.ci/run` installs one and sets
//! it). Without it these tests print a notice and pass, except in CI
//! (`CI=true`), where they fail. Each test works in a schema of its own,
//! dropped at the end, and they run one at a time (`PG_SERIAL`), so a
//! watch test only sees its own notifications.

mod common;

use common::{data, Pg, Raw, PG_SERIAL};
use control::db::{Database, WatchMode};

/// A database with the schema in a fresh PostgreSQL schema, and a second connection.
async fn fresh(pg: &Pg) -> (Database, Raw) {
    let db = Database::open(&pg.url).await.expect("open PostgreSQL");
    assert!(db.is_postgres());
    db.init().await.expect("init");
    (db, Raw::postgres(&pg.url).await)
}

#[tokio::test]
async fn the_docs_example_loads_as_the_sample() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, raw) = fresh(&pg).await;
    common::docs_example_loads(&db, &raw).await;
}

#[tokio::test]
async fn json_and_csv_import_round_trip() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, _) = fresh(&pg).await;
    common::import_round_trip(&db, &data("example.json")).await;
    common::import_round_trip(&db, &data("example-csv")).await;
}

#[tokio::test]
async fn bad_rows_are_named_by_table_row_and_column() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, raw) = fresh(&pg).await;
    common::bad_rows_are_named(&db, &raw).await;
}

#[tokio::test]
async fn accounting_accumulates() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, _) = fresh(&pg).await;
    common::accounting_accumulates(&db).await;
}

#[tokio::test]
async fn a_change_is_notified_within_a_second() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, raw) = fresh(&pg).await;
    db.import(&data("example.json")).await.expect("import");
    common::watch_sees_changes(&db, &raw, WatchMode::Notify, &common::rename).await;
    // TRUNCATE is a change too.
    let mut stream = db.watch(control::db::WatchOptions::default()).await.expect("watch");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    raw.exec("TRUNCATE global_blocks").await;
    assert!(common::change_within(&mut stream, std::time::Duration::from_secs(1)).await.is_some());
}

#[tokio::test]
async fn wrong_credentials_are_reported_without_the_password() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let Some((scheme, rest)) = pg.url.split_once("://") else { panic!("a URL") };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let url = format!("{scheme}://torwart:not-the-password@{host}");
    let e = Database::open(&url).await.expect_err("refused");
    let text = e.to_string();
    assert!(text.starts_with(&format!("cannot open database {scheme}://torwart:***@")), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}

#[tokio::test]
async fn a_change_reaches_the_running_policy_within_a_second() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, raw) = fresh(&pg).await;
    db.import(&data("example.json")).await.expect("import");
    common::reloads_follow_the_database(db, &raw).await;
}

#[tokio::test]
async fn the_ledger_writes_exactly_what_was_counted() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, _raw) = fresh(&pg).await;
    db.import(&data("example.json")).await.expect("import");
    common::ledger_writes_exactly_what_was_counted(&db).await;
}

/// A daemon whose role may use the tables but not create any (PostgreSQL
/// 15 and later give nobody CREATE on `public`): `db init` ran as another
/// role, and the flushes must still be written.
#[tokio::test]
async fn usage_is_written_by_a_role_that_may_not_create_tables() {
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, raw) = fresh(&pg).await;
    db.import(&data("example.json")).await.expect("import");
    raw.exec("DO $$ BEGIN EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM CURRENT_USER', current_schema()); END $$")
        .await;
    let traffic = control::db::MemberTraffic { member_id: 101, up_bytes: 1500, up_packets: 1, ..Default::default() };
    assert!(db.write_accounting_once("box-a", 1, 1_800_000_000, &[traffic]).await.expect("flush"));
    assert!(!db.write_accounting_once("box-a", 1, 1_800_000_000, &[traffic]).await.expect("again"), "written once");
    let periods = db.read_accounting(101).await.expect("read");
    assert_eq!(periods.iter().map(|p| p.up_bytes).sum::<u64>(), 1500);
}
