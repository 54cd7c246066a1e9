//! Holes a review found in `torwart db import` and `db check`, each
//! reproduced on a real SQLite file and, when `TORWART_TEST_POSTGRES` is
//! set, on a real PostgreSQL server, with the answer an operator needs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{data, Pg, Raw, TempDir, PG_SERIAL};
use control::db::{CheckReport, Database, DbError};

/// A SQLite database with the schema in `dir`, and a second connection.
async fn sqlite(dir: &TempDir) -> (Database, Raw) {
    let file = dir.path("members.db");
    let db = Database::open_or_create(&format!("sqlite://{}", file.display())).await.expect("create");
    db.init().await.expect("init");
    (db, Raw::sqlite(&file, true).await)
}

/// A PostgreSQL database with the schema in a fresh schema, and a second connection.
async fn postgres(pg: &Pg) -> (Database, Raw) {
    let db = Database::open(&pg.url).await.expect("open PostgreSQL");
    db.init().await.expect("init");
    (db, Raw::postgres(&pg.url).await)
}

/// The problems of a refused import, one string each (with their places).
async fn import_refused(db: &Database, file: &Path) -> String {
    match db.import(file).await {
        Err(DbError::Import(e)) => e.to_string(),
        other => panic!("{} must be refused with problems, got {other:?}", file.display()),
    }
}

/// The error of an import refused as a whole.
async fn import_error(db: &Database, file: &Path) -> String {
    match db.import(file).await {
        Err(e @ DbError::File { .. }) => e.to_string(),
        other => panic!("{} must be refused, got {other:?}", file.display()),
    }
}

/// What `db check` says about an invalid database, one problem a line.
async fn check_problems(db: &Database) -> Vec<String> {
    match db.check().await.expect("check") {
        CheckReport::Invalid(e) => e.problems().iter().map(ToString::to_string).collect(),
        CheckReport::Valid(s) => panic!("the database must be invalid, but check says valid: {s}"),
    }
}

/// The example as JSON text, with `from` replaced by `to`.
fn example_with(replacements: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(data("example.json")).expect("read the example");
    for (from, to) in replacements {
        assert!(text.contains(from), "the example has {from}");
        text = text.replacen(from, to, 1);
    }
    text
}

// 6. A JSON key given twice.

async fn duplicate_json_keys(db: &Database, dir: &TempDir) {
    db.import(&data("example.json")).await.expect("import the example");
    let before = db.load().await.expect("load");

    // A table twice: serde_json kept the last, and the members of the first were dropped.
    let mut text = example_with(&[]);
    let tail = text.rfind('}').expect("the closing brace");
    text.replace_range(tail.., ",\n  \"members\": [{\"id\": 101, \"name\": \"room-a101\"}]\n}\n");
    let file = dir.write("members-twice.json", &text);
    let e = import_error(db, &file).await;
    let last = text.lines().count() - 1;
    assert_eq!(
        e,
        format!(
            "cannot import {}: line {last}: table \"members\" is given twice (first on line 15); which one is meant?",
            file.display()
        )
    );

    // A column twice in a row: the blocked member was imported as active.
    let file = dir.write(
        "status-twice.json",
        &example_with(&[(
            r#"{"id": 103, "name": "room-b204", "status": "blocked", "plan_id": 1},"#,
            "{\"id\": 103, \"name\": \"room-b204\", \"status\": \"blocked\",\n     \"plan_id\": 1, \"status\": \"active\"},",
        )]),
    );
    let f = file.display();
    assert_eq!(
        import_refused(db, &file).await,
        format!(
            "nothing imported: the result has 1 problem\n\
             {f}:19: members row 103: column status: given twice in one row (lines 18 and 19); which value is meant?"
        )
    );
    assert_eq!(db.load().await.expect("load"), before, "nothing written");
}

#[tokio::test]
async fn a_json_key_given_twice_is_refused_with_its_line() {
    let dir = TempDir::new("twice");
    let (db, _) = sqlite(&dir).await;
    duplicate_json_keys(&db, &dir).await;
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, _) = postgres(&pg).await;
    duplicate_json_keys(&db, &dir).await;
}

// 7. CSV has no comments: a line starting with # is refused, not skipped.

#[tokio::test]
async fn a_csv_line_starting_with_hash_is_refused_not_skipped() {
    let dir = TempDir::new("hash");
    let (db, _) = sqlite(&dir).await;
    db.import(&data("example.json")).await.expect("import the example");
    let before = db.load().await.expect("load");
    let rows = "device,id,member_id,network\nlaptop,1,101,10.0.1.1/32\nnas,2,101,10.0.1.2\n\
                ,3,101,2001:db8:0:101::/64\ntest box,4,102,10.0.9.1/32\ndesktop,5,103,10.0.2.1/32\n\
                ,6,104,10.0.3.0/29\n,7,105,10.0.3.8/29\n";
    let file = dir.write("member_addresses.csv", &format!("{rows}#2 phone,8,101,10.0.1.3/32\n"));
    assert_eq!(
        import_error(&db, &file).await,
        format!(
            "cannot import {}: line 9 starts with #, but CSV files have no comments: remove the line, \
             or quote a value that starts with # (\"#2 phone\")",
            file.display()
        )
    );
    assert_eq!(db.load().await.expect("load"), before, "nothing written");

    // A comment line with another number of fields, and one more: all named.
    let (header, body) = rows.split_once('\n').expect("a header");
    let file = dir.write("member_addresses.csv", &format!("{header}\n# the first floor\n{body}  # a note\n"));
    let e = import_error(&db, &file).await;
    assert!(e.ends_with(": lines 2 and 10 start with #, but CSV files have no comments: remove the line, or quote a value that starts with # (\"#2 phone\")"), "{e}");

    // Quoted, the value is the device's name, as written.
    let file = dir.write("member_addresses.csv", &format!("{rows}\"#2 phone\",8,101,10.0.1.3/32\n"));
    db.import(&file).await.expect("a quoted # is a value");
    let db_now = db.load().await.expect("load");
    let added = db_now.member_addresses.iter().find(|a| a.id == 8).expect("row 8 imported");
    assert_eq!(added.device.as_deref(), Some("#2 phone"));
}

// 8. Special-purpose and box addresses as public addresses or member prefixes.

async fn special_addresses(db: &Database, raw: &Raw, dir: &TempDir) {
    let file = dir.write(
        "special.json",
        &example_with(&[
            (r#""address": "198.51.100.10""#, r#""address": "0.0.0.0""#),
            (r#""address": "198.51.100.30""#, r#""address": "255.255.255.255""#),
            (r#""address": "198.51.100.11""#, r#""address": "127.0.0.1""#),
        ]),
    );
    let f = file.display();
    let why = "a public address must be one the internet can reach the box at";
    assert_eq!(
        import_refused(db, &file).await,
        format!(
            "nothing imported: the result has 3 problems\n\
             {f}:32: public_addresses row 1: 0.0.0.0 of member 101 is an unspecified (\"this network\") address (0.0.0.0/8); {why}\n\
             {f}:33: public_addresses row 2: 255.255.255.255 of member 102 is the broadcast address (255.255.255.255/32); {why}\n\
             {f}:34: public_addresses row 3: 127.0.0.1 of member 103 is a loopback address (127.0.0.0/8); {why}"
        ),
        "member 101's forward, now without a public address, is not a second problem"
    );

    // The same rows in the database: `db check` (and so every reload) refuses them too.
    db.import(&data("example.json")).await.expect("import the example");
    raw.exec(
        "UPDATE public_addresses SET address = '224.0.0.1' WHERE id = 1;
         UPDATE public_addresses SET address = '169.254.0.1' WHERE id = 2;
         UPDATE public_addresses SET address = '240.0.0.1' WHERE id = 3;
         INSERT INTO networks (id, prefix, kind) VALUES (6, '198.51.100.20/32', 'box'), (7, '::/0', 'internal');
         INSERT INTO member_addresses (id, member_id, network) VALUES (8, 104, 'ff02::/16'), (9, 105, '::1');",
    )
    .await;
    assert_eq!(
        check_problems(db).await,
        [
            "member_addresses row 8: ff02::/16 of member 104 is a multicast address (ff00::/8); no device sends from such an address",
            "member_addresses row 9: ::1/128 of member 105 is the loopback address (::1/128); no device sends from such an address",
            &format!("public_addresses row 1: 224.0.0.1 of member 101 is a multicast address (224.0.0.0/4); {why}"),
            &format!("public_addresses row 2: 169.254.0.1 of member 102 is a link-local address (169.254.0.0/16); {why}"),
            &format!("public_addresses row 3: 240.0.0.1 of member 103 is a reserved address (240.0.0.0/4); {why}"),
            "public_addresses row 4: 198.51.100.20 of member 104 is the box's own address (198.51.100.20/32, networks row 6); members' connections cannot leave with it",
            "public_addresses row 5: 198.51.100.20 of member 105 is the box's own address (198.51.100.20/32, networks row 6); members' connections cannot leave with it",
        ]
    );
}

#[tokio::test]
async fn special_and_box_addresses_are_refused() {
    let dir = TempDir::new("special");
    let (db, raw) = sqlite(&dir).await;
    special_addresses(&db, &raw, &dir).await;
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, raw) = postgres(&pg).await;
    special_addresses(&db, &raw, &dir).await;
}

// 14. Values beyond a 32-bit INTEGER: the same answer on both databases, before writing.

async fn out_of_range(db: &Database, file: &Path) -> String {
    let text = import_refused(db, file).await;
    assert_eq!(db.load().await.expect("load"), policy::MemberDb::default(), "nothing written");
    text
}

#[tokio::test]
async fn integers_beyond_32_bits_are_named_the_same_on_both_databases() {
    let dir = TempDir::new("range");
    let file = dir.write(
        "big.json",
        &example_with(&[
            (r#""down_ceil_kbit": 200000"#, r#""down_ceil_kbit": 3000000000"#),
            (r#"{"id": 105, "name": "room-c302""#, r#"{"id": 3000000000, "name": "room-c302""#),
        ]),
    );
    let f = file.display();
    let range = "out of range (0 to 2147483647, a 32-bit INTEGER)";
    let expected = format!(
        "nothing imported: the result has 4 problems\n\
         {f}:3: plans row 1: column down_ceil_kbit: 3000000000 is {range}\n\
         {f}:20: members row 3000000000: column id: 3000000000 is {range}\n\
         {f}:29: member_addresses row 7: member 105 does not exist\n\
         {f}:36: public_addresses row 5: member 105 does not exist"
    );
    let (db, raw) = sqlite(&dir).await;
    assert_eq!(out_of_range(&db, &file).await, expected);
    // SQLite would store it: a check of such a database says the same.
    raw.exec(&common::docs_example_sql()).await;
    raw.exec("UPDATE plans SET down_ceil_kbit = 3000000000 WHERE id = 1").await;
    assert_eq!(check_problems(&db).await, [format!("plans row 1: column down_ceil_kbit: 3000000000 is {range}")]);

    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, _) = postgres(&pg).await;
    assert_eq!(out_of_range(&db, &file).await, expected, "the same as on SQLite");
}

// 15. Error messages that give the real cause.

#[tokio::test]
async fn a_closed_postgresql_port_says_connection_refused_at_once() {
    // Port 1 on the loopback: nothing listens there.
    let url = "postgres://torwart:secret@127.0.0.1:1/torwart";
    let start = Instant::now();
    let e = Database::open(url).await.expect_err("nothing listens on port 1");
    let took = start.elapsed();
    let text = e.to_string();
    assert!(took < Duration::from_secs(3), "took {took:?}: {text}");
    assert!(text.starts_with("cannot open database postgres://torwart:***@127.0.0.1:1/torwart: "), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

async fn bad_files(db: &Database, dir: &TempDir) {
    // A number no integer column holds: named, in its row and column.
    let file = dir.write("huge.json", &example_with(&[(r#""burst_bytes": 64000"#, r#""burst_bytes": 1e400"#)]));
    assert_eq!(
        import_refused(db, &file).await,
        format!(
            "nothing imported: the result has 1 problem\n{}:3: plans row 1: column burst_bytes: 1e400 is not an integer",
            file.display()
        )
    );

    // A byte-order mark (spreadsheet exports): skipped, in JSON and CSV.
    let file = dir.write("bom.json", &format!("\u{feff}{}", example_with(&[])));
    db.import(&file).await.expect("a JSON file with a byte-order mark imports");
    assert_eq!(db.load().await.expect("load"), policy::sample::example());
    let members = std::fs::read_to_string(data("example-csv/members.csv")).expect("read");
    let file = dir.write("members.csv", &format!("\u{feff}{members}"));
    db.import(&file).await.expect("a CSV file with a byte-order mark imports");
    assert_eq!(db.load().await.expect("load"), policy::sample::example());

    // A quote never closed: named with the line it opens on.
    let file = dir.write("members.csv", &members.replacen("103, room-b204,", "103,\"room-b204,", 1));
    assert_eq!(
        import_error(db, &file).await,
        format!("cannot import {}: line 4: a quote opens a field and is never closed", file.display())
    );

    // A file without tables, and an import that would delete every member.
    let file = dir.write("empty.json", "{}");
    let e = import_error(db, &file).await;
    assert!(e.starts_with(&format!("cannot import {}: the file provides no table", file.display())), "{e}");
    let file = dir.write("members.csv", "id,name,status,plan_id\n");
    assert_eq!(
        import_error(db, &file).await,
        format!(
            "cannot import {}: it would delete every member (the database has 5, the import none); nothing imported \
             (to remove every member on purpose: DELETE FROM members)",
            file.display()
        )
    );
    assert_eq!(db.load().await.expect("load"), policy::sample::example(), "nothing written");
}

#[tokio::test]
async fn bad_files_are_explained() {
    let dir = TempDir::new("files");
    let (db, _) = sqlite(&dir).await;
    bad_files(&db, &dir).await;
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, _) = postgres(&pg).await;
    bad_files(&db, &dir).await;
}

/// Set in the child process of the test below: the file it must fail to open.
const UNREADABLE: &str = "TORWART_TEST_UNREADABLE_DB";

#[tokio::test]
async fn an_unreadable_sqlite_file_says_permission_denied() {
    if let Ok(path) = std::env::var(UNREADABLE) {
        // The child, not root.
        let e = Database::open(&path).await.expect_err("the file is unreadable");
        assert_eq!(
            e.to_string(),
            format!("cannot open database {path}: cannot read {path}: permission denied (os error 13)")
        );
        return;
    }
    let dir = TempDir::new("unreadable");
    let (db, _) = sqlite(&dir).await;
    db.close().await;
    let file = dir.path("members.db");
    let path = file.to_str().expect("a UTF-8 path").to_owned();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let e = Database::open(&path).await.expect_err("the file is unreadable");
        assert_eq!(
            e.to_string(),
            format!("cannot open database {path}: cannot read {path}: permission denied (os error 13)")
        );
        return;
    }
    // Root reads any file: run this test again as nobody.
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--exact", "an_unreadable_sqlite_file_says_permission_denied", "--nocapture"])
        .env(UNREADABLE, &path)
        .output();
    match out {
        Ok(out) => assert!(
            out.status.success(),
            "as nobody: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => common::notice(&format!("NOTICE: skipping the unreadable-file test as root: setpriv: {e}")),
    }
}

// 16. Every problem in one run, and no false ones.

async fn one_run(db: &Database, raw: &Raw) {
    db.import(&data("example.json")).await.expect("import the example");
    // The box's own address over member 101's NAS, the target of its forward.
    raw.exec("INSERT INTO networks (id, prefix, kind) VALUES (6, '10.0.1.2/32', 'box')").await;
    assert_eq!(
        check_problems(db).await,
        ["member_addresses row 2: 10.0.1.2/32 of member 101 overlaps the box's own 10.0.1.2/32 (networks row 6)"],
        "the forward to the NAS is not a second problem"
    );
    raw.exec("DELETE FROM networks WHERE id = 6").await;

    // Bad values and an overlap: all in the first run. Member 101's NAS
    // address and public address do not parse: its forward to the NAS,
    // from that public address, is not reported as dangling on top.
    raw.exec(
        "UPDATE member_addresses SET network = '10.0.1.2/24' WHERE id = 2;
         UPDATE public_addresses SET address = '198.51.100.300' WHERE id = 1;
         INSERT INTO member_addresses (id, member_id, network) VALUES (8, 104, '10.0.1.0/30');",
    )
    .await;
    assert_eq!(
        check_problems(db).await,
        [
            "member_addresses row 2: column network: 10.0.1.2/24 has host bits set (the network is 10.0.1.0/24)",
            "member_addresses row 8: 10.0.1.0/30 of member 104 overlaps member_addresses row 1 (10.0.1.1/32 of member 101)",
            "public_addresses row 1: column address: 198.51.100.300 is not an IPv4 address",
        ]
    );
}

#[tokio::test]
async fn check_names_every_problem_in_one_run_and_no_false_ones() {
    let dir = TempDir::new("onerun");
    let (db, raw) = sqlite(&dir).await;
    one_run(&db, &raw).await;
    let _serial = PG_SERIAL.lock().await;
    let Some(pg) = Pg::new().await else { return };
    let (db, raw) = postgres(&pg).await;
    one_run(&db, &raw).await;
}

#[tokio::test]
async fn a_database_shows_without_its_password() {
    assert_eq!(
        control::db::redacted("postgres://tw:s3cret@db.example/members"),
        "postgres://tw:***@db.example/members"
    );
    let dir = TempDir::new("display");
    let (db, _) = sqlite(&dir).await;
    assert_eq!(db.to_string(), format!("sqlite://{}", dir.path("members.db").display()));
}

/// A row naming very many columns is refused before its columns are
/// compared for repeats (which would be quadratic), and the parse of a big
/// file stays linear.
#[test]
fn a_row_with_thousands_of_columns_is_refused_at_once() {
    let columns: Vec<String> = (0..100_000).map(|i| format!("\"c{i}\": 1")).collect();
    let json = format!("{{\"plans\": [{{{}}}]}}", columns.join(", "));
    let started = std::time::Instant::now();
    let err = control::db::parse_import(std::path::Path::new("big.json"), json.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("has 100000 columns; rows have at most 64"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}
