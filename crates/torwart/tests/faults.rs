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

use control::stats::Stats;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use torwart::lab::netns::{self, Namespaces};

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

const MEMBER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const OUTSIDE_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

const MEMBERS: &str = r#"{
  "plans": [{"id": 1, "name": "standard", "down_rate_kbit": 50000, "down_ceil_kbit": 1000000,
             "up_rate_kbit": 20000, "up_ceil_kbit": 1000000, "burst_bytes": 64000, "weight": 1}],
  "networks": [{"id": 1, "prefix": "10.0.1.0/24", "kind": "internal"},
               {"id": 2, "prefix": "10.0.1.1/32", "kind": "box"}],
  "members": [{"id": 1, "name": "alice", "status": "active", "plan_id": 1}],
  "member_addresses": [{"id": 1, "member_id": 1, "network": "10.0.1.2", "device": "laptop"}],
  "public_addresses": [{"id": 1, "member_id": 1, "address": "198.18.0.11"}],
  "port_forwards": [], "ipv6_openings": [], "global_blocks": []
}"#;

struct Lab {
    ns: Namespaces,
    b: String,
    o: String,
    i: String,
    dir: PathBuf,
    /// Last: released once the namespaces are gone.
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        torwart::lab::preflight(false).expect("the lab's tools");
        // One lab at a time: both run torwart, which takes a core.
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let p = format!("twf{}{tag}", std::process::id() % 10000);
        let (b, o, i) = (format!("{p}b"), format!("{p}o"), format!("{p}i"));
        let mut ns = Namespaces::new();
        for n in [&b, &o, &i] {
            ns.add(n).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("torwart-faults-{p}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab { ns, b, o, i, dir, _one: guard };
        let q = ["numtxqueues", "4", "numrxqueues", "4"];
        let mut outside = vec!["-n", &lab.b, "link", "add", "p1"];
        outside.extend(q);
        outside.extend(["type", "veth", "peer", "name", "x1", "netns", &lab.o]);
        outside.extend(q);
        netns::ip(&outside).unwrap();
        lab.add_inside_link();
        lab.sh(&lab.b, "ip addr add 192.0.2.1/24 dev p1 && ip link set p1 up && ip link set lo up");
        lab.sh(&lab.o, "ip addr add 192.0.2.2/24 dev x1 && ip link set x1 up && ip link set lo up");
        lab.sh(&lab.o, "ip route add 10.0.0.0/8 via 192.0.2.1 && ip route add 198.18.0.0/15 via 192.0.2.1");
        lab.sh(&lab.i, "ip link set lo up");
        lab.sh(&lab.b, "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0");
        for (n, dev) in [(&lab.o, "x1"), (&lab.i, "x0")] {
            // Local sockets' frames carry unfinished checksums on veth (offload).
            lab.sh(n, &format!("ethtool -K {dev} tx off >/dev/null"));
        }
        lab
    }

    /// The inside link p0 (box) ─ x0 (member), addressed and up.
    fn add_inside_link(&self) {
        netns::ip(&["-n", &self.b, "link", "add", "p0", "type", "veth", "peer", "name", "x0", "netns", &self.i])
            .unwrap();
        self.sh(&self.b, "ip addr add 10.0.1.1/24 dev p0 && ip link set p0 up");
        self.sh(&self.i, "ip addr add 10.0.1.2/24 dev x0 && ip link set x0 up");
        let _ = self.ns.exec(&self.i, "ip", &["route", "replace", "default", "via", "10.0.1.1"]);
        let _ = self.ns.exec(&self.i, "ethtool", &["-K", "x0", "tx", "off"]);
    }

    fn sh(&self, ns: &str, script: &str) {
        self.ns.exec(ns, "sh", &["-c", script]).unwrap_or_else(|e| panic!("{script}: {e}"));
    }

    fn torwart(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_torwart")).args(args).output().unwrap()
    }

    /// An SQLite database with one member, and a configuration using it.
    fn configure(&self) -> PathBuf {
        let db = self.dir.join("t.db");
        let json = self.dir.join("members.json");
        std::fs::write(&json, MEMBERS).unwrap();
        for args in [
            vec!["db", "init", "--db", db.to_str().unwrap()],
            vec!["db", "import", json.to_str().unwrap(), "--db", db.to_str().unwrap()],
        ] {
            let out = self.torwart(&args);
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.configure_with(db.to_str().unwrap())
    }

    /// A configuration using the database at `db` (a path or URL).
    fn configure_with(&self, db: &str) -> PathBuf {
        let config = self.dir.join("torwart.toml");
        std::fs::write(
            &config,
            format!(
                "database = \"{}\"\n[[ports]]\ninterface = \"p0\"\nside = \"inside\"\n[[ports]]\ninterface = \"p1\"\n\
                 side = \"outside\"\n[workers]\ncount = 1\nidle = \"sleep\"\n[accounting]\nflush_interval = \"60s\"\n\
                 [stats]\nfile = \"{}\"\ninterval = \"100ms\"\n",
                db,
                self.stats_path().display()
            ),
        )
        .unwrap();
        config
    }

    fn stats_path(&self) -> PathBuf {
        self.dir.join("stats.json")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("torwart.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `torwart run` in the box; returns once it is running.
    fn start(&mut self, config: &Path) {
        let _ = std::fs::remove_file(self.stats_path());
        let log = std::fs::File::create(self.log_path()).unwrap();
        let b = self.b.clone();
        self.ns
            .spawn(
                "torwart",
                &b,
                env!("CARGO_BIN_EXE_torwart"),
                &["run", "--config", config.to_str().unwrap()],
                Some(log),
            )
            .unwrap();
        self.wait_for("started", |l| l.stats().is_some());
    }

    fn wait_for(&mut self, what: &str, mut done: impl FnMut(&mut Lab) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            assert!(self.ns.alive("torwart"), "torwart exited while waiting for {what}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}:\n{}", self.log());
    }

    fn stats(&self) -> Option<Stats> {
        Stats::read(&self.stats_path()).ok()
    }

    fn counter(&self, name: &str) -> u64 {
        self.stats().map_or(0, |s| s.counter(name))
    }

    fn rx(&self) -> u64 {
        self.stats().map_or(0, |s| s.rx())
    }

    /// The member's usage as torwart counts it (member 1, alice).
    fn usage(&self) -> Option<control::db::MemberTraffic> {
        self.stats()?.member(1).copied()
    }

    /// The member sends `n` datagrams out; returns once its usage counts them.
    fn member_traffic(&mut self, port: u16, n: u64) {
        send_udp(&self.i, OUTSIDE_HOST, port, n as usize);
        self.wait_for("the member's usage", |l| l.usage().is_some_and(|u| u.up_packets >= n));
    }

    /// Stops torwart with SIGTERM; its exit code.
    fn stop(&mut self) -> Option<i32> {
        self.ns.stop("torwart", Duration::from_secs(30)).and_then(|s| s.code())
    }
}

/// The permission bits of the file at `path`.
fn mode(path: impl AsRef<Path>) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o7777
}

/// Runs `f` in a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns).unwrap();
        f()
    })
}

/// Sends `n` datagrams from `from`'s namespace to `to`, each from a new
/// socket (so a new source port, spread over the link's queues).
fn send_udp(ns: &str, to: Ipv4Addr, port: u16, n: usize) {
    in_ns(ns, move || {
        for k in 0..n {
            // Apart, so that the first ones do not all meet an unresolved neighbour.
            std::thread::sleep(Duration::from_millis(20));
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(format!("probe {k}").as_bytes(), SocketAddrV4::new(to, port)).unwrap();
        }
    })
    .join()
    .unwrap();
}

/// Counts the datagrams arriving on `port` in `ns` during `window`.
fn count_udp(ns: &str, port: u16, window: Duration) -> std::thread::JoinHandle<usize> {
    in_ns(ns, move || {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let deadline = Instant::now() + window;
        let mut n = 0;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if s.recv(&mut buf).is_ok() {
                n += 1;
            }
        }
        n
    })
}

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
