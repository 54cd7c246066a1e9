//! End to end, under faults a careless operator or a hostile network
//! brings: a port with more receive queues than workers (frames on an
//! unserved queue must never reach the kernel, which would forward them),
//! kernel forwarding left on, a port deleted and created again while
//! running, and a database locked at the stop (the usage goes to a spool
//! and is written at the next start).
//!
//! Topology, in namespaces this test makes: `o` (outside host 192.0.2.2)
//! ─ x1/p1 (4 queues each way) ─ `b` (the box, torwart on p0 and p1) ─
//! p0/x0 ─ `i` (a member's device 10.0.1.2). Needs root; elsewhere each
//! test says "skipped".

mod common;

use common::*;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use torwart::lab::netns;

#[test]
fn unserved_queues_kernel_forwarding_and_a_deleted_port() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new("q");
    let config = lab.configure();

    // Kernel forwarding on: refused, since the kernel would carry past
    // torwart what its policy refuses.
    lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=1");
    let _ = std::fs::remove_file(lab.stats_path());
    let log = std::fs::File::create(lab.log_path()).unwrap();
    let b = lab.b.clone();
    lab.ns
        .spawn("torwart", &b, env!("CARGO_BIN_EXE_torwart"), &["run", "--config", config.to_str().unwrap()], Some(log))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.ns.alive("torwart") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = lab.stop();
    let err = lab.log();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the kernel forwards") && err.contains("forwarding is not 0"), "{err}");
    lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=0");

    // One worker, four receive queues: unsolicited datagrams from outside
    // to the member, with the kernel's forwarding switched on behind
    // torwart's back. None may arrive; each was taken by torwart (and
    // dropped by the firewall) or dropped and counted by the XDP program.
    lab.start(&config);
    assert!(lab.log().contains("4 receive queues but 1 worker(s)"), "{}", lab.log());
    lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=1");
    let received = count_udp(&lab.i, 5000, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    send_udp(&lab.o, MEMBER, 5000, 40);
    assert_eq!(received.join().unwrap(), 0, "unsolicited datagrams reached the member");
    lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=0");
    lab.wait_for("the counters", |l| l.rx() + l.counter("xdp_unserved") >= 40);
    let unserved = lab.counter("xdp_unserved");
    eprintln!("rx {} xdp_unserved {unserved}", lab.rx());
    assert!(unserved > 0, "the datagrams all came in on queue 0; the test proves nothing:\n{}", lab.log());

    // The member's own traffic out works, and is counted.
    let answered = count_udp(&lab.o, 6000, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    send_udp(&lab.i, OUTSIDE_HOST, 6000, 10);
    let arrived = answered.join().unwrap();
    assert!(arrived > 0, "the member's datagrams never left:\n{}", lab.log());

    // The inside port deleted: logged, counted, visible; created again:
    // the workers start again on it, and frames are taken again. With the
    // kernel's forwarding switched on meanwhile: they start anyway (else
    // no program would hold the ports, and the kernel would forward
    // everything past the policy), and unsolicited datagrams stay out.
    lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=1");
    lab.sh(&lab.b, "ip link del p0");
    lab.wait_for("the lost port", |l| l.counter("port_lost") == 1 && l.stats().is_some_and(|s| !s.ports[0].present));
    assert!(lab.log().contains("port p0: the interface is gone"), "{}", lab.log());
    lab.add_inside_link();
    lab.wait_for("the workers on the port again", |l| l.counter("workers_restarted") == 1);
    assert!(lab.stats().is_some_and(|s| s.ports[0].present && s.forwarding));
    assert!(lab.log().contains("the workers start again anyway"), "{}", lab.log());
    let received = count_udp(&lab.i, 5001, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    send_udp(&lab.o, MEMBER, 5001, 40);
    assert_eq!(received.join().unwrap(), 0, "unsolicited datagrams reached the member after the restart");
    lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=0");
    let answered = count_udp(&lab.o, 6001, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    send_udp(&lab.i, OUTSIDE_HOST, 6001, 10);
    assert!(answered.join().unwrap() > 0, "nothing crossed after the port came back:\n{}", lab.log());

    assert_eq!(lab.stop(), Some(0), "{}", lab.log());
    let mode = mode(lab.stats_path());
    assert_eq!(mode & 0o007, 0, "the stats file is world-readable: {mode:o}");
    let _ = std::fs::remove_dir_all(&lab.dir);
}

#[test]
fn usage_the_database_refuses_at_a_stop_is_spooled_and_written_at_the_next_start() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new("s");
    let config = lab.configure();
    lab.start(&config);
    lab.member_traffic(6000, 10);
    let up_bytes = lab.usage().unwrap().up_bytes;

    // Another program holds the database locked through the stop.
    let db = lab.dir.join("t.db");
    let mut locker = lock(&db);
    let code = lab.stop();
    let _ = locker.kill();
    let _ = locker.wait();
    let log = lab.log();
    assert_eq!(code, Some(5), "{log}");
    assert!(log.contains("kept in") && log.contains("usage-spool"), "{log}");
    let db_mode = mode(&db);
    assert_eq!(db_mode & 0o007, 0, "the database is world-readable: {db_mode:o}");
    let spool = lab.dir.join("t.db.usage-spool");
    let mode = mode(&spool);
    assert_eq!(mode & 0o077, 0, "the spool is readable by others: {mode:o}");

    // The next start writes it, and removes the spool.
    lab.start(&config);
    assert!(lab.log().contains("usage spool") && lab.log().contains("written at start"), "{}", lab.log());
    assert!(!spool.exists());
    assert_eq!(lab.stop(), Some(0), "{}", lab.log());
    let periods = torwart::block_on(async {
        let d = control::db::Database::open(db.to_str().unwrap()).await.unwrap();
        let p = d.read_accounting(1).await.unwrap();
        d.close().await;
        p
    });
    let written: u64 = periods.iter().map(|p| p.up_bytes).sum();
    assert_eq!(written, up_bytes, "{periods:?}");
    let _ = std::fs::remove_dir_all(&lab.dir);
}

#[test]
fn a_second_sigterm_ends_a_stop_that_waits() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new("t");
    let config = lab.configure();
    lab.start(&config);
    lab.member_traffic(6000, 5);
    let mut locker = lock(&lab.dir.join("t.db"));
    let pid = lab.ns.pid("torwart").unwrap() as libc::pid_t;
    // SAFETY: kill with the pid of our own child and a valid signal.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    lab.wait_for("the stop to wait for the database", |l| l.log().contains("retrying until the deadline"));
    let second = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let code = lab.stop();
    let _ = locker.kill();
    let _ = locker.wait();
    assert_eq!(code, Some(1), "{}", lab.log());
    assert!(second.elapsed() < Duration::from_secs(3), "{:?}", second.elapsed());
    let _ = std::fs::remove_dir_all(&lab.dir);
}

/// Another program holding the SQLite database at `db` locked (BEGIN
/// EXCLUSIVE) for a minute, or until killed; returns once it holds it.
fn lock(db: &Path) -> std::process::Child {
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(60)",
        ])
        .arg(db)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(locker.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    locker
}

/// The member database on the PostgreSQL server `base` (a schema of its
/// own, dropped with this), reached from the box's namespace through a
/// [`Relay`]: the box's loopback is its own.
struct PgLab {
    base: String,
    schema: String,
    /// The schema's URL from here, and from the box.
    url: String,
    boxed_url: String,
    relay: Relay,
}

impl PgLab {
    fn new(lab: &Lab, base: &str) -> PgLab {
        let schema = format!("torwart_faults_{}_{}", std::process::id(), lab.b);
        psql(base, &format!("CREATE SCHEMA {schema}"));
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let (authority, _) = url.split_once("://").unwrap().1.split_once('/').unwrap();
        let server = authority.rsplit('@').next().unwrap().to_owned();
        let relay = Relay::start(&lab.b, &server);
        let boxed_url = url.replacen(&server, &format!("127.0.0.1:{}", relay.port), 1);
        let json = lab.dir.join("members.json");
        std::fs::write(&json, MEMBERS).unwrap();
        for args in [vec!["db", "init", "--db", &url], vec!["db", "import", json.to_str().unwrap(), "--db", &url]] {
            let out = lab.torwart(&args);
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        PgLab { base: base.to_owned(), schema, url, boxed_url, relay }
    }

    /// Bytes member 1 sent, as the database has them.
    fn written_up_bytes(&self) -> u64 {
        let url = self.url.clone();
        torwart::block_on(async move {
            let d = control::db::Database::open(&url).await.unwrap();
            let p = d.read_accounting(1).await.unwrap();
            d.close().await;
            p.iter().map(|p| p.up_bytes).sum()
        })
    }
}

impl Drop for PgLab {
    fn drop(&mut self) {
        self.relay.partition(false);
        psql(&self.base, &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
    }
}

fn psql(base: &str, sql: &str) {
    let out = Command::new("psql").args([base, "-v", "ON_ERROR_STOP=1", "-qc", sql]).output().expect("psql");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
}

fn postgres() -> Option<String> {
    let base = std::env::var("TORWART_TEST_POSTGRES").ok().filter(|_| root());
    if base.is_none() {
        println!("skipped: needs root and TORWART_TEST_POSTGRES");
    }
    base
}

#[test]
fn on_postgresql_the_password_is_never_logged_and_sigterm_ends_the_daemon() {
    let Some(base) = postgres() else { return };
    let mut lab = Lab::new("p");
    let pg = PgLab::new(&lab, &base);
    let password = pg.url.split("://").nth(1).and_then(|r| r.split('@').next()).and_then(|u| u.split(':').nth(1));
    let config = lab.configure_with(&pg.boxed_url);
    lab.start(&config);
    // Usage to write at the stop (the hang came after "usage written").
    lab.member_traffic(6000, 5);
    let started = Instant::now();
    let code = lab.stop();
    let took = started.elapsed();
    let log = lab.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(10), "the stop took {took:?}:\n{log}");
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        assert!(!log.contains(&format!(":{p}@")), "the password is in the log:\n{log}");
    }
    assert!(log.contains("database=postgres://") && log.contains("usage written"), "{log}");
    // The pool closed because its connections came back, not by the timeout.
    assert!(!log.contains("did not close"), "{log}");
    drop(pg);
    let _ = std::fs::remove_dir_all(&lab.dir);
}

/// A PostgreSQL password in a pgpass file (`PGPASSFILE`, as the packaged
/// unit names it), not in the URL of a configuration the operators' group
/// reads: torwart connects with it. A file others may read is ignored, as
/// libpq ignores it, and the server then refuses the login.
#[test]
fn a_password_file_keeps_the_password_out_of_the_url() {
    let Some(base) = postgres() else { return };
    // postgres://user:password@host:port/db
    let rest = base.split_once("://").map(|(_, r)| r).expect("a URL");
    let (userinfo, place) = rest.rsplit_once('@').expect("user info");
    let (user, password) = userinfo.split_once(':').expect("TORWART_TEST_POSTGRES has a password");
    let (hostport, db) = place.split_once('/').expect("a database");
    let db = db.split('?').next().unwrap_or(db);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    let dir = std::env::temp_dir().join(format!("torwart-pgpass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pgpass = dir.join("pgpass");
    std::fs::write(&pgpass, format!("# torwart's\n{host}:{port}:{db}:{user}:{password}\n")).unwrap();
    let url = format!("postgres://{user}@{hostport}/{db}");
    let check = |mode: u32| {
        std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_torwart"))
            .args(["db", "check", "--db", &url])
            .env("PGPASSFILE", &pgpass)
            .env_remove("PGPASSWORD")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
        )
    };
    // Connected: the check passed, or what it says is about the tables
    // (none in this schema), not the login.
    let (passed, said) = check(0o600);
    assert!(passed || said.contains("cannot read table"), "{said}");
    assert!(!said.contains("password authentication failed") && !said.contains("cannot open"), "{said}");
    let (passed, said) = check(0o644);
    assert!(!passed && said.contains("password authentication failed"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The database gone without a word for a minute (a partition: what is
/// sent vanishes, nothing answers) under a stream of the member's traffic:
/// forwarding goes on with the policy it has, the daemon keeps publishing
/// its figures and answering signals, a reload is refused, and the usage of
/// that minute reaches the database once it is back, exactly once.
#[test]
fn a_database_gone_for_a_minute_stops_neither_forwarding_nor_the_daemon_and_loses_no_usage() {
    let Some(base) = postgres() else { return };
    let mut lab = Lab::new("g");
    let pg = PgLab::new(&lab, &base);
    let config = lab.configure_with(&pg.boxed_url);
    let text = std::fs::read_to_string(&config).unwrap().replace("flush_interval = \"60s\"", "flush_interval = \"1s\"");
    std::fs::write(&config, text).unwrap();
    // The outside host's address resolved (torwart drops a frame to a
    // neighbour the kernel has not resolved yet, and counts it).
    lab.sh(&lab.b, "ping -c 1 -W 2 192.0.2.2 >/dev/null");
    lab.start(&config);
    let outage = Duration::from_secs(60);
    let stream = outage + Duration::from_secs(12);
    let received = count_udp(&lab.o, 7000, stream + Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    // 50 datagrams a second, one flow, through the whole outage.
    let sender = in_ns(&lab.i, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let (start, mut sent) = (Instant::now(), 0usize);
        while start.elapsed() < stream {
            s.send_to(format!("stream {sent}").as_bytes(), (OUTSIDE_HOST, 7000)).unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    });
    lab.wait_for("a flush", |l| l.counter("usage_flushes") >= 2);
    std::thread::sleep(Duration::from_secs(3));

    pg.relay.partition(true);
    let cut = Instant::now();
    let pid = lab.ns.pid("torwart").unwrap() as libc::pid_t;
    // SAFETY: kill with the pid of our own child and a valid signal.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    // The stats file goes on: a failed flush holds the control loop at
    // most its timeout (5 s).
    let (mut last_rx, mut last_change, mut longest) = (lab.rx(), Instant::now(), Duration::ZERO);
    while cut.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(100));
        let rx = lab.rx();
        if rx != last_rx {
            longest = longest.max(last_change.elapsed());
            (last_rx, last_change) = (rx, Instant::now());
        }
    }
    longest = longest.max(last_change.elapsed());
    let failures = lab.counter("usage_flush_failures");
    let during = lab.usage().unwrap().up_bytes;
    pg.relay.partition(false);

    let sent = sender.join().unwrap();
    let got = received.join().unwrap();
    eprintln!("sent {sent}, received {got}; stats stalled at most {longest:?}; {failures} failed flushes");
    assert_eq!(got, sent, "datagrams lost while the database was gone:\n{}", lab.log());
    assert!(longest < Duration::from_secs(7), "the stats stalled {longest:?}:\n{}", lab.log());
    assert!(failures >= 3, "{failures} failed flushes in a minute:\n{}", lab.log());
    let log = lab.log();
    assert!(log.contains("usage not written (kept for the next flush)"), "{log}");
    // Back: the usage of the minute is written, at the next flush.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.written_up_bytes() < during && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(pg.written_up_bytes() >= during, "the minute's usage never reached the database:\n{}", lab.log());
    lab.wait_for("the reload refused", |l| l.log().contains("reload refused, the running policy stays"));
    assert_eq!(lab.stop(), Some(0), "{}", lab.log());
    let usage = lab.usage().unwrap();
    assert_eq!(usage.up_packets, sent as u64, "the member's datagrams, as counted");
    assert_eq!(pg.written_up_bytes(), usage.up_bytes, "written once, all of it:\n{}", lab.log());
    drop(pg);
    let _ = std::fs::remove_dir_all(&lab.dir);
}

#[test]
fn a_start_the_database_cannot_serve_forwards_with_the_last_good_member_database() {
    let Some(base) = postgres() else { return };
    let mut lab = Lab::new("l");
    let pg = PgLab::new(&lab, &base);
    let config = lab.configure_with(&pg.boxed_url);
    let sock = lab.api_socket();
    let status = |lab: &Lab| {
        let out = lab.torwart(&["status", "--json", "--socket", sock.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<control::api::json::StatusDoc>(&out.stdout).unwrap()
    };
    lab.sh(&lab.b, "ping -c 1 -W 2 192.0.2.2 >/dev/null");
    lab.start(&config);
    lab.member_traffic(7100, 5);
    assert_eq!(lab.stop(), Some(0), "{}", lab.log());
    let last_good = lab.last_good_path();
    assert_eq!(mode(&last_good) & 0o077, 0, "the last good member database is readable by others");

    // The database gone without a word at the start: after the connect's
    // timeout, the box forwards with the last good member database.
    pg.relay.partition(true);
    lab.start(&config);
    lab.member_traffic(7101, 5);
    let log = lab.log();
    assert!(log.contains("forwarding with the last good one") && log.contains(last_good.to_str().unwrap()), "{log}");
    let s = status(&lab);
    assert!(s.policy_from_last_good && s.policy_refused && s.forwarding, "{s:?}");
    // Meanwhile the member is blocked; once the database answers again,
    // the box follows it.
    psql(&base, &format!("UPDATE {}.members SET status = 'blocked' WHERE id = 1", pg.schema));
    pg.relay.partition(false);
    // A watch that was waiting for the partitioned database gives up
    // after 10 s, and the next is tried 5 s later.
    lab.wait_for_within("a reload from the database", Duration::from_secs(40), |l| {
        l.log().contains("gives a policy again")
    });
    let s = status(&lab);
    assert!(!s.policy_from_last_good && !s.policy_refused, "{s:?}");
    // Written again for the change; not for a reload that changes nothing.
    let written = std::fs::metadata(&last_good).unwrap().modified().unwrap();
    assert!(std::fs::read_to_string(&last_good).unwrap().contains("\"status\":\"blocked\""));
    let reloads = lab.log().matches("policy reloaded").count();
    let pid = lab.ns.pid("torwart").unwrap() as libc::pid_t;
    // SAFETY: kill with the pid of our own child and a valid signal.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    lab.wait_for("the reload SIGHUP asks for", |l| l.log().matches("policy reloaded").count() > reloads);
    assert_eq!(std::fs::metadata(&last_good).unwrap().modified().unwrap(), written, "written again unchanged");
    let blocked = lab.counter("member_blocked");
    send_udp(&lab.i, OUTSIDE_HOST, 7102, 5);
    lab.wait_for("the blocked member's datagrams refused", |l| l.counter("member_blocked") >= blocked + 5);
    assert_eq!(lab.stop(), Some(0), "{}", lab.log());

    // A row the compiler refuses at the start: the last good member
    // database is the one the reload wrote (the member blocked), and the
    // refused row is named.
    psql(&base, &format!("UPDATE {}.members SET status = 'active' WHERE id = 1", pg.schema));
    psql(
        &base,
        &format!(
            "INSERT INTO {}.port_forwards (id, member_id, protocol, public_port, internal_address, internal_port) \
             VALUES (7, 1, 'tcp', 8080, '10.0.9.9', 80)",
            pg.schema
        ),
    );
    lab.start(&config);
    let log = lab.log();
    assert!(log.contains("forwarding with the last good one") && log.contains("port_forwards row 7"), "{log}");
    assert!(status(&lab).policy_from_last_good);
    let blocked = lab.counter("member_blocked");
    send_udp(&lab.i, OUTSIDE_HOST, 7103, 5);
    lab.wait_for("the member blocked as last good", |l| l.counter("member_blocked") >= blocked + 5);
    assert_eq!(lab.stop(), Some(0), "{}", lab.log());

    // A check still fails, and says what a start would do.
    let (code, _, err) = check(&lab, &config);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("port_forwards row 7") && err.contains("a start would forward with the last good"), "{err}");
    // Without a last good one, such a start fails, as it always did.
    std::fs::remove_file(&last_good).unwrap();
    let out = lab
        .ns
        .output(
            &lab.b,
            env!("CARGO_BIN_EXE_torwart"),
            &["run", "--config", config.to_str().unwrap()],
            Duration::from_secs(20),
        )
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("port_forwards row 7") && !last_good.exists(), "{err}");
    drop(pg);
    let _ = std::fs::remove_dir_all(&lab.dir);
}

/// A TCP relay: listens on 127.0.0.1 in namespace `ns` (on port `port`)
/// and connects each client to `server` from this namespace. With a
/// partition to switch on and off: while it is on, what
/// either side sends vanishes and new connections are taken and never
/// answered (a database gone without a word); when it ends, the connections
/// it cut are closed (their streams lost bytes), and new ones work again.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    /// Every connection's two sockets, and whether the partition cut it.
    conns: Arc<Mutex<Vec<(TcpStream, TcpStream, bool)>>>,
}

impl Relay {
    fn start(ns: &str, server: &str) -> Relay {
        let listener = in_ns(ns, || {
            netns::ip(&["link", "set", "lo", "up"]).ok();
            std::net::TcpListener::bind("127.0.0.1:0").unwrap()
        })
        .join()
        .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, conns) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let server = server.to_owned();
        let (down2, conns2) = (Arc::clone(&down), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if down2.load(Ordering::SeqCst) {
                    // Taken, and never answered.
                    let c2 = client.try_clone().unwrap();
                    conns2.lock().unwrap().push((client, c2, true));
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&server) else { continue };
                conns2.lock().unwrap().push((client.try_clone().unwrap(), upstream.try_clone().unwrap(), false));
                for (from, to) in [(client.try_clone().unwrap(), upstream.try_clone().unwrap()), (upstream, client)] {
                    let down = Arc::clone(&down2);
                    std::thread::spawn(move || pump(from, to, &down));
                }
            }
        });
        Relay { port, down, conns }
    }

    fn partition(&self, on: bool) {
        let mut conns = self.conns.lock().unwrap();
        if on {
            self.down.store(true, Ordering::SeqCst);
            for c in conns.iter_mut() {
                c.2 = true;
            }
        } else {
            for (a, b, cut) in conns.iter() {
                if *cut {
                    let _ = a.shutdown(std::net::Shutdown::Both);
                    let _ = b.shutdown(std::net::Shutdown::Both);
                }
            }
            conns.retain(|c| !c.2);
            self.down.store(false, Ordering::SeqCst);
        }
    }
}

/// Copies `from` to `to`, dropping what arrives during a partition.
fn pump(mut from: TcpStream, mut to: TcpStream, down: &AtomicBool) {
    let mut buf = [0u8; 16 << 10];
    let mut cut = false;
    loop {
        let n = match std::io::Read::read(&mut from, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        cut |= down.load(Ordering::SeqCst);
        if !cut && std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A stream of the member's datagrams while the outside link flaps (the
/// box's port taken down, then the far end's, so the port loses its
/// carrier) and its route is deleted, added again and moved to another
/// next hop. What is sent while the path is down is lost (and counted,
/// `router_egress_down`, `router_no_route`); once it is back, every
/// datagram arrives again within a second, with no restart of anything.
#[test]
fn link_flaps_and_route_changes_under_load() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new("f");
    // A host beyond the outside router: 203.0.113.9, reached via 192.0.2.2,
    // and via 192.0.2.3 (the same router's second address) after the move.
    lab.sh(&lab.o, "ip addr add 203.0.113.9/32 dev lo && ip addr add 192.0.2.3/24 dev x1");
    lab.sh(&lab.b, "ip route add 203.0.113.0/24 via 192.0.2.2");
    lab.sh(&lab.b, "ping -c 1 -W 2 192.0.2.2 >/dev/null && ping -c 1 -W 2 192.0.2.3 >/dev/null");
    let config = lab.configure();
    lab.start(&config);
    let t0 = Instant::now();
    let run = Duration::from_secs(16);
    let arrivals = in_ns(&lab.o, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:7002").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut got = std::collections::BTreeSet::new();
        let mut buf = [0u8; 64];
        while t0.elapsed() < run + Duration::from_secs(2) {
            if let Ok(n) = s.recv(&mut buf) {
                if let Some(seq) = std::str::from_utf8(&buf[..n]).ok().and_then(|t| t.parse::<u32>().ok()) {
                    got.insert(seq);
                }
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    // 200 datagrams a second; the time each was sent, by sequence number.
    let sender = in_ns(&lab.i, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut sent = Vec::new();
        while t0.elapsed() < run {
            let _ = s.send_to((sent.len() as u32).to_string().as_bytes(), ("203.0.113.9", 7002));
            sent.push(t0.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    // (at, what, script in the box or outside); each disruption is undone
    // a second later.
    let b = lab.b.clone();
    let o = lab.o.clone();
    let events: [(u64, &str, &str, &str); 7] = [
        (2000, "p1 down", &b, "ip link set p1 down"),
        // The kernel drops the routes through a link taken down: the
        // operator (or the routing daemon) puts them back.
        (3000, "p1 up", &b, "ip link set p1 up && ip route replace 203.0.113.0/24 via 192.0.2.2"),
        (5000, "far end down (no carrier)", &o, "ip link set x1 down"),
        (6000, "far end up", &o, "ip link set x1 up && ip route replace 10.0.0.0/8 via 192.0.2.1"),
        (8000, "route deleted", &b, "ip route del 203.0.113.0/24"),
        (9000, "route back", &b, "ip route add 203.0.113.0/24 via 192.0.2.2"),
        (11_000, "route moved to 192.0.2.3", &b, "ip route replace 203.0.113.0/24 via 192.0.2.3"),
    ];
    let mut done = Vec::new();
    for (at, what, ns, script) in events {
        let at = Duration::from_millis(at);
        std::thread::sleep(at.saturating_sub(t0.elapsed()));
        lab.sh(ns, script);
        done.push((t0.elapsed(), what));
    }
    let sent = sender.join().unwrap();
    let got = arrivals.join().unwrap();
    // The windows in which datagrams may be lost: from each disruption to
    // a second after it is undone. The move of the route loses none: what
    // goes to the new next hop before the kernel has resolved it (taking
    // p1 down flushed its neighbours) waits for it (router_neighbour_missing,
    // neighbour_waited).
    let windows = [(done[0].0, done[1].0), (done[2].0, done[3].0), (done[4].0, done[5].0)];
    let mut lost_outside = Vec::new();
    let mut recovery = [Duration::ZERO; 3];
    let mut lost = 0;
    for (seq, at) in sent.iter().enumerate() {
        if got.contains(&(seq as u32)) {
            continue;
        }
        lost += 1;
        match windows
            .iter()
            .position(|(down, up)| *at + Duration::from_millis(50) >= *down && *at <= *up + Duration::from_secs(1))
        {
            Some(w) => recovery[w] = recovery[w].max(at.saturating_sub(windows[w].1)),
            None => lost_outside.push((seq, *at)),
        }
    }
    eprintln!(
        "sent {}, lost {lost}; the last lost after each restore: {recovery:?}; events {done:?}; counters: egress_down {} \
         no_route {} neighbour_missing {} waited {} port_link_down {}",
        sent.len(),
        lab.counter("router_egress_down"),
        lab.counter("router_no_route"),
        lab.counter("router_neighbour_missing"),
        lab.counter("neighbour_waited"),
        lab.counter("port_link_down")
    );
    assert!(lost_outside.is_empty(), "lost outside the disruptions: {lost_outside:?}\n{}", lab.log());
    // Back within a second each.
    assert!(recovery.iter().all(|r| *r < Duration::from_secs(1)), "{recovery:?}");
    assert!(lost > 0, "nothing was lost: the disruptions did not disrupt, the test proves nothing");
    let log = lab.log();
    assert!(log.contains("port p1: link down") && log.contains("port p1: link up"), "{log}");
    lab.wait_for("the counters", |l| {
        l.counter("port_link_down") == 2 && l.counter("router_egress_down") > 0 && l.counter("router_no_route") > 0
    });
    assert!(lab.stats().is_some_and(|s| s.ports.iter().all(|p| p.up && p.present)));
    assert_eq!(lab.counter("workers_restarted"), 0);
    assert_eq!(lab.stop(), Some(0), "{}", lab.log());
    let _ = std::fs::remove_dir_all(&lab.dir);
}

/// A filesystem of `size` mounted at `dir` while it lives.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(dir.to_owned())
    }

    /// Fills it to the last byte (as a runaway log would).
    fn fill(&self) {
        let _ = Command::new("dd")
            .arg(format!("of={}", self.0.join("fill").display()))
            .args(["if=/dev/zero", "bs=4k"])
            .output();
        assert_eq!(self.available(), 0, "the disk is not full");
    }

    /// Bytes free (tmpfs keeps none for root).
    fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the zeroed struct we own from a NUL-terminated path.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut st), 0);
            st.f_bavail * st.f_frsize
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("fill")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The accounting's disk full, under a stream of the member's traffic:
/// forwarding goes on; the flushes fail, are counted and tried again; the
/// usage of a stop meanwhile goes where there is room (the database and
/// its spool cannot take it) and the exit code says so; once there is room
/// again, every byte counted is in the database, once.
#[test]
fn a_full_disk_under_the_accounting_loses_no_usage() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new("d");
    let disk = Tmpfs::mount(&lab.dir.join("disk"), "4m");
    let db = disk.0.join("t.db");
    let json = lab.dir.join("members.json");
    std::fs::write(&json, MEMBERS).unwrap();
    let db_arg = db.to_str().unwrap();
    for args in [vec!["db", "init", "--db", db_arg], vec!["db", "import", json.to_str().unwrap(), "--db", db_arg]] {
        let out = lab.torwart(&args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let config = lab.configure_with(db_arg);
    let text = std::fs::read_to_string(&config).unwrap().replace("flush_interval = \"60s\"", "flush_interval = \"1s\"");
    std::fs::write(&config, text).unwrap();
    lab.sh(&lab.b, "ping -c 1 -W 2 192.0.2.2 >/dev/null");
    let written = |db: &Path| {
        let db = db.to_str().unwrap().to_owned();
        torwart::block_on(async move {
            let d = control::db::Database::open(&db).await.unwrap();
            let p = d.read_accounting(1).await.unwrap();
            d.close().await;
            p.iter().map(|p| p.up_bytes).sum::<u64>()
        })
    };

    // First run: the disk fills while the member's traffic flows, and the
    // daemon stops before there is room again.
    lab.start(&config);
    let received = count_udp(&lab.o, 7003, Duration::from_secs(12));
    std::thread::sleep(Duration::from_millis(300));
    let sender = in_ns(&lab.i, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for k in 0..500 {
            s.send_to(format!("full {k}").as_bytes(), (OUTSIDE_HOST, 7003)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    lab.wait_for("a flush", |l| l.counter("usage_flushes") >= 2);
    disk.fill();
    lab.wait_for("flushes failing", |l| l.counter("usage_flush_failures") >= 1);
    sender.join().unwrap();
    assert_eq!(received.join().unwrap(), 500, "datagrams lost with the disk full:\n{}", lab.log());
    let first = lab.usage().unwrap();
    assert_eq!(first.up_packets, 500);
    let code = lab.stop();
    let log = lab.log();
    assert_eq!(code, Some(5), "{log}");
    assert!(log.contains("database or disk is full"), "{log}");
    // Kept in memory, named in the error, for the operator to move.
    let kept = log
        .split("kept in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("where the usage went is not said:\n{log}"));
    assert!(kept.starts_with("/run/torwart"), "{}", kept.display());
    assert_eq!(mode(&kept) & 0o077, 0, "the kept usage is readable by others");

    // Room again. The next start writes the kept file itself; the operator
    // has also copied it to the spool's place: the usage, numbered, is
    // written once all the same.
    disk.free();
    std::fs::copy(&kept, disk.0.join("t.db.usage-spool")).unwrap();
    lab.start(&config);
    assert!(lab.log().contains("written at start"), "{}", lab.log());
    assert!(!kept.exists(), "the kept file was not written at start:\n{}", lab.log());
    assert_eq!(written(&db), first.up_bytes, "the first run's usage, all of it, once");

    // Second run: the disk fills and empties while the daemon runs; the
    // next flush after writes what the failed ones kept.
    lab.member_traffic(7004, 20);
    lab.wait_for("a flush", |l| l.counter("usage_flushes") >= 2);
    disk.fill();
    lab.member_traffic(7004, 40);
    let failures = lab.counter("usage_flush_failures");
    lab.wait_for("a flush failing", |l| l.counter("usage_flush_failures") > failures);
    disk.free();
    let second = lab.usage().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while written(&db) < first.up_bytes + second.up_bytes && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(written(&db), first.up_bytes + second.up_bytes, "{}", lab.log());
    assert_eq!(lab.stop(), Some(0), "{}", lab.log());
    assert_eq!(written(&db), first.up_bytes + second.up_bytes, "written once");
    drop(disk);
    let _ = std::fs::remove_dir_all(&lab.dir);
}

/// `torwart run --check` in the box.
fn check(lab: &Lab, config: &Path) -> (Option<i32>, String, String) {
    let bin = env!("CARGO_BIN_EXE_torwart");
    let out = lab
        .ns
        .output(&lab.b, bin, &["run", "--check", "--config", config.to_str().unwrap()], Duration::from_secs(20))
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// An operator checks an edited configuration before restarting: `torwart
/// run --check` says what a start would refuse, with the start's words and
/// exit code, and changes nothing (no port attached, no socket, the
/// database untouched), also while the daemon runs.
#[test]
fn a_configuration_is_checked_without_changing_anything() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new("c");
    let config = lab.configure();
    let db = lab.dir.join("t.db");
    let db_before = std::fs::read(&db).unwrap();
    let xdp = |lab: &Lab| {
        let out = lab.ns.output(&lab.b, "ip", &["link", "show"], Duration::from_secs(5)).unwrap();
        String::from_utf8_lossy(&out.stdout).contains("xdp")
    };

    let (code, out, err) = check(&lab, &config);
    assert_eq!(code, Some(0), "{out}{err}");
    for part in ["inside p0 (MTU 1500)", "outside p1", "1 worker(s)", "1 members (1 active", "the policy compiles"] {
        assert!(out.contains(part), "{part:?} missing from:\n{out}");
    }
    // The lab's outside link has 4 receive queues, served by 1 worker.
    assert!(out.contains("warning        port p1: 4 receive queues but 1 worker(s)"), "{out}");
    assert!(!xdp(&lab), "an XDP program was attached");
    assert!(!lab.api_socket().exists(), "the API socket was made");
    assert!(!lab.stats_path().exists(), "the stats file was written");
    assert_eq!(std::fs::read(&db).unwrap(), db_before, "the database changed");

    // Each mistake, with the start's exit code and a message that names it.
    let good = std::fs::read_to_string(&config).unwrap();
    let socket = lab.api_socket().display().to_string();
    let not_a_socket = lab.dir.join("not-a-socket");
    std::fs::write(&not_a_socket, "").unwrap();
    let cases: [(&str, String, i32, &str); 5] = [
        ("a typo", good.replace("side = \"outside\"", "side = \"outsde\""), 2, "outsde"),
        ("a port that is not there", good.replace("\"p1\"", "\"p9\""), 3, "p9"),
        ("a missing database", good.replace("t.db", "gone.db"), 5, "gone.db"),
        (
            "an API socket path that is a file",
            good.replace(&socket, &not_a_socket.display().to_string()),
            6,
            "not a socket",
        ),
        (
            "a token file others may read",
            format!("{good}token_file = \"{}\"\n", lab.dir.join("token").display()),
            2,
            "chmod 600",
        ),
    ];
    std::fs::write(lab.dir.join("token"), "0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(lab.dir.join("token"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let edited = lab.dir.join("edited.toml");
    for (what, text, want, named) in &cases {
        std::fs::write(&edited, text).unwrap();
        let (code, out, err) = check(&lab, &edited);
        assert_eq!(code, Some(*want), "{what}: {out}{err}");
        assert!(err.contains(named), "{what}: the message does not name {named:?}: {err}");
    }
    assert!(!lab.dir.join("gone.db").exists(), "the check made a database");

    // A member database the compiler refuses: the row is named.
    let bad = lab.dir.join("bad.db");
    std::fs::copy(&db, &bad).unwrap();
    let sql = "INSERT INTO member_addresses (id, member_id, network, device) VALUES (99, 1, '10.9.9.9', 'x')";
    let status = Command::new("sqlite3").arg(&bad).arg(sql).status().unwrap();
    assert!(status.success());
    std::fs::write(&edited, good.replace("t.db", "bad.db")).unwrap();
    let (code, out, err) = check(&lab, &edited);
    assert_eq!(code, Some(5), "{out}{err}");
    assert!(err.contains("member_addresses") && err.contains("10.9.9.9"), "{err}");

    // The kernel forwarding: refused, as the start refuses it.
    lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=1");
    let (code, _, err) = check(&lab, &config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the kernel forwards"), "{err}");
    lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=0");

    // Beside the running daemon, which goes on undisturbed.
    lab.start(&config);
    let (code, out, err) = check(&lab, &config);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(the running daemon's)"), "the daemon's socket is named: {out}");
    // A second daemon on the same configuration (a careless second start)
    // is refused before it touches a port, and the first keeps its socket.
    let bin = env!("CARGO_BIN_EXE_torwart");
    let second =
        lab.ns.output(&lab.b, bin, &["run", "--config", config.to_str().unwrap()], Duration::from_secs(20)).unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(6), "{err}");
    assert!(err.contains("another torwart answers"), "{err}");
    let (code, out, err) = check(&lab, &config);
    assert!(code == Some(0) && out.contains("(the running daemon's)"), "{out}{err}");
    lab.member_traffic(6000, 5);
    assert_eq!(lab.stop(), Some(0), "{}", lab.log());
    let _ = std::fs::remove_dir_all(&lab.dir);
}
