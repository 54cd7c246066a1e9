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
use std::path::Path;
use std::process::{Command, Stdio};
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
    // the workers start again on it, and frames are taken again.
    lab.sh(&lab.b, "ip link del p0");
    lab.wait_for("the lost port", |l| l.counter("port_lost") == 1 && l.stats().is_some_and(|s| !s.ports[0].present));
    assert!(lab.log().contains("port p0: the interface is gone"), "{}", lab.log());
    lab.add_inside_link();
    lab.wait_for("the workers on the port again", |l| l.counter("workers_restarted") == 1);
    assert!(lab.stats().is_some_and(|s| s.ports[0].present && s.forwarding));
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

#[test]
fn on_postgresql_the_password_is_never_logged_and_sigterm_ends_the_daemon() {
    let Some(base) = std::env::var("TORWART_TEST_POSTGRES").ok().filter(|_| root()) else {
        println!("skipped: needs root and TORWART_TEST_POSTGRES");
        return;
    };
    let mut lab = Lab::new("p");
    let schema = format!("torwart_faults_{}", std::process::id());
    let psql = |sql: &str| {
        let out = Command::new("psql").args([&base, "-v", "ON_ERROR_STOP=1", "-qc", sql]).output().expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    };
    psql(&format!("CREATE SCHEMA {schema}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    // The daemon runs in the box's namespace, whose loopback is its own:
    // it reaches the server through a relay listening there.
    let (authority, _) = url.split_once("://").unwrap().1.split_once('/').unwrap();
    let server = authority.rsplit('@').next().unwrap().to_owned();
    let relay = relay(&lab.b, &server);
    let boxed_url = url.replacen(&server, &format!("127.0.0.1:{relay}"), 1);
    let password = url.split("://").nth(1).and_then(|r| r.split('@').next()).and_then(|u| u.split(':').nth(1));
    let json = lab.dir.join("members.json");
    std::fs::write(&json, MEMBERS).unwrap();
    for args in [vec!["db", "init", "--db", &url], vec!["db", "import", json.to_str().unwrap(), "--db", &url]] {
        let out = lab.torwart(&args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let config = lab.configure_with(&boxed_url);
    lab.start(&config);
    // Usage to write at the stop (the hang came after "usage written").
    lab.member_traffic(6000, 5);
    let started = Instant::now();
    let code = lab.stop();
    let took = started.elapsed();
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
    let log = lab.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(10), "the stop took {took:?}:\n{log}");
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        assert!(!log.contains(&format!(":{p}@")), "the password is in the log:\n{log}");
    }
    assert!(log.contains("database=postgres://") && log.contains("usage written"), "{log}");
    // The pool closed because its connections came back, not by the timeout.
    assert!(!log.contains("did not close"), "{log}");
    let _ = std::fs::remove_dir_all(&lab.dir);
}

/// A TCP relay: listens on 127.0.0.1 in namespace `ns` (on the port it
/// returns) and connects each client to `server` from this namespace.
fn relay(ns: &str, server: &str) -> u16 {
    let listener = in_ns(ns, || {
        netns::ip(&["link", "set", "lo", "up"]).ok();
        std::net::TcpListener::bind("127.0.0.1:0").unwrap()
    })
    .join()
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = server.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(upstream) = std::net::TcpStream::connect(&server) else { continue };
            for (mut from, mut to) in [(client.try_clone().unwrap(), upstream.try_clone().unwrap()), (upstream, client)]
            {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}
