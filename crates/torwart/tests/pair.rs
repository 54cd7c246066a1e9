//! Two boxes as a pair, end to end: connections made through box `a` go
//! on through box `b` after `a` is killed (`kill -9`), with the same public
//! source port and no reset, because `b` already holds their state.
//!
//! Topology, in namespaces this test makes:
//!
//! ```text
//!   c (member 10.0.1.2 on a bridge "lan") ── p0 a p1 ── o (server 192.0.2.2 on a bridge)
//!                                  └── p0 b p1 ──┘
//!                      a s0 ── sync link 10.99.0.0/30 ── s0 b
//! ```
//!
//! The gateway addresses (10.0.1.1 inside, 192.0.2.1 outside) are moved by
//! keepalived (VRRP on the inside link, 100 ms adverts, `b` refusing them
//! while its readiness file says it is still syncing), as docs/pair.md
//! describes; box `a` dies whole: torwart and keepalived killed, its links
//! down. Without keepalived installed, the test moves the addresses itself
//! and flushes the neighbour caches, as a gratuitous ARP would.
//! Needs root; elsewhere it says "skipped".

use control::stats::Stats;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use torwart::lab::netns::{self, Namespaces};

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

const MEMBERS: &str = r#"{
  "plans": [{"id": 1, "name": "standard", "down_rate_kbit": 50000, "down_ceil_kbit": 1000000,
             "up_rate_kbit": 20000, "up_ceil_kbit": 1000000, "burst_bytes": 64000, "weight": 1}],
  "networks": [{"id": 1, "prefix": "10.0.1.0/24", "kind": "internal"},
               {"id": 2, "prefix": "10.0.1.1/32", "kind": "box"},
               {"id": 3, "prefix": "10.0.1.11/32", "kind": "box"},
               {"id": 4, "prefix": "10.0.1.12/32", "kind": "box"}],
  "members": [{"id": 1, "name": "alice", "status": "active", "plan_id": 1}],
  "member_addresses": [{"id": 1, "member_id": 1, "network": "10.0.1.2", "device": "laptop"}],
  "public_addresses": [{"id": 1, "member_id": 1, "address": "198.18.0.11", "first_port": 20000, "last_port": 40000}],
  "port_forwards": [], "ipv6_openings": [], "global_blocks": []
}"#;

const KEY: &str = "# test key\n5a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70717273747576777879\n";

struct Pair {
    ns: Namespaces,
    c: String,
    a: String,
    b: String,
    o: String,
    dir: PathBuf,
    /// The boxes that should be running.
    running: Vec<&'static str>,
}

impl Pair {
    fn new(keepalived: bool) -> Pair {
        torwart::lab::preflight(false).expect("the lab's tools");
        let p = format!("twp{}", std::process::id() % 10000);
        let [c, a, b, o] = ["c", "a", "b", "o"].map(|n| format!("{p}{n}"));
        let mut ns = Namespaces::new();
        for n in [&c, &a, &b, &o] {
            ns.add(n).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("torwart-pair-{p}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = Pair { ns, c, a, b, o, dir, running: Vec::new() };
        for (host, ip) in [(&t.c, "10.0.1.2/24"), (&t.o, "192.0.2.2/24")] {
            t.sh(host, &format!("ip link add lan type bridge && ip addr add {ip} dev lan && ip link set lan up && ip link set lo up"));
        }
        for (bx, n, inside, outside) in
            [(&t.a, "a", "10.0.1.11/24", "192.0.2.11/24"), (&t.b, "b", "10.0.1.12/24", "192.0.2.12/24")]
        {
            netns::ip(&[
                "-n",
                bx,
                "link",
                "add",
                "p0",
                "type",
                "veth",
                "peer",
                "name",
                &format!("i{n}"),
                "netns",
                &t.c,
            ])
            .unwrap();
            netns::ip(&[
                "-n",
                bx,
                "link",
                "add",
                "p1",
                "type",
                "veth",
                "peer",
                "name",
                &format!("o{n}"),
                "netns",
                &t.o,
            ])
            .unwrap();
            t.sh(bx, &format!(
                "ip addr add {inside} dev p0 && ip addr add {outside} dev p1 && ip link set p0 up && ip link set p1 up && \
                 ip link set lo up && sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0"
            ));
            for host in [&t.c, &t.o] {
                let end = if host == &t.c { format!("i{n}") } else { format!("o{n}") };
                t.sh(
                    host,
                    &format!(
                        "ip link set {end} master lan && ip link set {end} up && ethtool -K {end} tx off >/dev/null"
                    ),
                );
            }
        }
        netns::ip(&["-n", &t.a, "link", "add", "s0", "type", "veth", "peer", "name", "s0", "netns", &t.b]).unwrap();
        t.sh(&t.a, "ip addr add 10.99.0.1/30 dev s0 && ip link set s0 up");
        t.sh(&t.b, "ip addr add 10.99.0.2/30 dev s0 && ip link set s0 up");
        for host in [&t.c, &t.o] {
            t.sh(host, "ethtool -K lan tx off >/dev/null");
        }
        t.sh(&t.c, "ip route add default via 10.0.1.1");
        t.sh(&t.o, "ip route add 198.18.0.0/15 via 192.0.2.1");
        for bx in [&t.a, &t.b] {
            t.sh(bx, "ip route add default via 192.0.2.2");
        }
        if !keepalived {
            t.gateway_on(&t.a.clone());
        }
        t
    }

    /// keepalived on box `n` (`a`: priority 150, `b`: 100): both gateway
    /// addresses in one instance, adverts on the inside link (not the sync
    /// link: with the other box dead its carrier is gone, and keepalived
    /// would put the instance in FAULT instead of taking over).
    fn start_keepalived(&mut self, n: u8) {
        let dir = self.dir.join(format!("box{n}"));
        let (me, peer, priority) =
            if n == 1 { ("10.0.1.11", "10.0.1.12", 150) } else { ("10.0.1.12", "10.0.1.11", 100) };
        let conf = dir.join("keepalived.conf");
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id torwart_{n}\n  vrrp_version 3\n  enable_script_security\n}}\n\
                 vrrp_track_file torwart_ready {{\n  file {}\n}}\n\
                 vrrp_instance gateway {{\n  state BACKUP\n  interface p0\n  virtual_router_id 51\n  priority {priority}\n\
                 advert_int 0.05\n  unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n\
                 virtual_ipaddress {{\n    10.0.1.1/24 dev p0\n    192.0.2.1/24 dev p1\n  }}\n\
                 track_file {{\n    torwart_ready weight 0\n  }}\n  track_interface {{\n    p0\n    p1\n  }}\n}}\n",
                dir.join("ready").display()
            ),
        )
        .unwrap();
        let (what, bx) = if n == 1 { ("ka", self.a.clone()) } else { ("kb", self.b.clone()) };
        let pid = |f: &str| dir.join(f).to_str().unwrap().to_owned();
        let log = std::fs::File::create(dir.join("keepalived.log")).unwrap();
        let args = [
            "-n",
            "-l",
            "-D",
            "-P",
            "-f",
            conf.to_str().unwrap(),
            "-p",
            &pid("k.pid"),
            "-r",
            &pid("v.pid"),
            "-c",
            &pid("c.pid"),
        ];
        self.ns.spawn(what, &bx, "keepalived", &args, Some(log)).unwrap();
    }

    /// Does box `bx` hold the inside gateway address?
    fn holds_gateway(&self, bx: &str) -> bool {
        self.ns
            .output(bx, "ip", &["-4", "addr", "show", "dev", "p0"], Duration::from_secs(5))
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.0.1.1/24"))
    }

    fn sh(&self, ns: &str, script: &str) {
        self.ns.exec(ns, "sh", &["-c", script]).unwrap_or_else(|e| panic!("{script}: {e}"));
    }

    /// The gateway addresses on box `bx` (what keepalived moves).
    fn gateway_on(&self, bx: &str) {
        self.sh(bx, "ip addr add 10.0.1.1/24 dev p0 && ip addr add 192.0.2.1/24 dev p1");
    }

    /// The member database both boxes read and write usage to.
    fn db(&self) -> PathBuf {
        self.dir.join("t.db")
    }

    /// The configuration for box `n` (`a`: 1, `b`: 2); the database, if it is not there yet.
    fn configure(&self, n: u8) -> PathBuf {
        let dir = self.dir.join(format!("box{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let db = self.db();
        if !db.exists() {
            let json = self.dir.join("members.json");
            std::fs::write(&json, MEMBERS).unwrap();
            for args in [
                vec!["db", "init", "--db", db.to_str().unwrap()],
                vec!["db", "import", json.to_str().unwrap(), "--db", db.to_str().unwrap()],
            ] {
                let out = Command::new(env!("CARGO_BIN_EXE_torwart")).args(&args).output().unwrap();
                assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let key = dir.join("sync.key");
        std::fs::write(&key, KEY).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let (me, peer) = if n == 1 { ("10.99.0.1", "10.99.0.2") } else { ("10.99.0.2", "10.99.0.1") };
        let config = dir.join("torwart.toml");
        std::fs::write(
            &config,
            format!(
                "database = \"{}\"\n[[ports]]\ninterface = \"p0\"\nside = \"inside\"\n[[ports]]\ninterface = \"p1\"\n\
                 side = \"outside\"\n[workers]\ncount = 1\nidle = \"sleep\"\n[stats]\nfile = \"{}\"\ninterval = \"100ms\"\n\
                 [api]\nsocket = \"{}\"\n[sync]\nlocal = \"{me}:7400\"\npeer = \"{peer}:7400\"\nkey_file = \"{}\"\nready_file = \"{}\"\n",
                db.display(),
                dir.join("stats.json").display(),
                dir.join("api.sock").display(),
                key.display(),
                dir.join("ready").display(),
            ),
        )
        .unwrap();
        config
    }

    fn start(&mut self, n: u8) {
        let config = self.configure(n);
        let (what, bx) = if n == 1 { ("a", self.a.clone()) } else { ("b", self.b.clone()) };
        self.running.push(what);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(n)).unwrap();
        self.ns
            .spawn(what, &bx, env!("CARGO_BIN_EXE_torwart"), &["run", "--config", config.to_str().unwrap()], Some(log))
            .unwrap();
    }

    fn log_path(&self, n: u8) -> PathBuf {
        self.dir.join(format!("box{n}/torwart.log"))
    }

    fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        [1, 2]
            .map(|n| {
                let keepalived = read(self.dir.join(format!("box{n}/keepalived.log")));
                format!("--- box {n}:\n{}--- its keepalived:\n{keepalived}", read(self.log_path(n)))
            })
            .join("\n")
    }

    fn stats(&self, n: u8) -> Option<Stats> {
        Stats::read(&self.dir.join(format!("box{n}/stats.json"))).ok()
    }

    fn wait_for(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Pair) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            for w in self.running.clone() {
                assert!(self.ns.alive(w), "box {w} exited while waiting for {what}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}:\n{}", self.logs());
    }

    /// One of `scripts/pair/`'s Python programs in namespace `ns`.
    fn python(&self, ns: &str, script: &str, args: &[&str]) -> Child {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pair").join(script);
        let mut a = vec!["netns", "exec", ns, "python3", path.to_str().unwrap()];
        a.extend(args);
        Command::new("ip").args(&a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for w in ["a", "b", "ka", "kb"] {
            self.ns.stop(w, Duration::from_secs(10));
        }
        // TORWART_KEEP=1 keeps the logs and files of a run.
        if !std::thread::panicking() && std::env::var_os("TORWART_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn json(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn pair_of(s: &Stats) -> control::stats::PairStats {
    s.pair.clone().unwrap_or_default()
}

#[test]
fn connections_survive_a_kill_of_the_active_box_with_their_public_ports() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    const CONNECTIONS: usize = 50;
    let keepalived = torwart::lab::on_path("keepalived");
    let mut t = Pair::new(keepalived);
    t.start(1);
    t.start(2);
    t.wait_for("both boxes in sync", Duration::from_secs(20), |t| {
        let (a, b) = (t.stats(1), t.stats(2));
        a.zip(b).is_some_and(|(a, b)| pair_of(&a).complete && pair_of(&b).complete)
    });
    assert_eq!(std::fs::read_to_string(t.dir.join("box2/ready")).unwrap(), "0\n");
    assert!(t.stats(1).zip(t.stats(2)).is_some_and(|(a, b)| pair_of(&a).running && pair_of(&b).running));
    if keepalived {
        t.start_keepalived(1);
        t.start_keepalived(2);
        let (a, b) = (t.a.clone(), t.b.clone());
        t.wait_for("a to hold the gateway addresses", Duration::from_secs(10), |t| t.holds_gateway(&a));
        std::thread::sleep(Duration::from_millis(500));
        assert!(!t.holds_gateway(&b), "both boxes hold the gateway addresses");
    } else {
        eprintln!("keepalived is not installed: the test moves the gateway addresses itself");
    }

    let server = t.python(&t.o.clone(), "echo_server.py", &["20"]);
    std::thread::sleep(Duration::from_millis(500));
    let clients = t.python(&t.c.clone(), "clients.py", &[&CONNECTIONS.to_string(), "15"]);
    let traffic_started = Instant::now();
    t.wait_for("the connections on b", Duration::from_secs(8), |t| {
        t.stats(2)
            .is_some_and(|s| pair_of(&s).counters.get("worker_installed").copied().unwrap_or(0) >= CONNECTIONS as u64)
    });
    std::thread::sleep(Duration::from_secs(1));

    // Box a dies: torwart, keepalived, its links. b takes the gateway addresses.
    let a_counted = t.stats(1).and_then(|s| s.member(1).copied()).expect("a counts the member's traffic").up_packets;
    let traffic_for = traffic_started.elapsed().as_secs_f64();
    let pid = t.ns.pid("a").expect("box a runs");
    let started = Instant::now();
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    t.running.retain(|w| *w != "a");
    let b = t.b.clone();
    if keepalived {
        // Every keepalived process of a's (its VRRP child would otherwise
        // say goodbye, priority 0, which a dead box cannot).
        let conf = t.dir.join("box1/keepalived.conf");
        let _ = Command::new("pkill").args(["-9", "-f", conf.to_str().unwrap()]).status();
        t.sh(&t.a.clone(), "ip link set p0 down && ip link set p1 down && ip link set s0 down");
        t.wait_for("b to take the gateway addresses", Duration::from_secs(10), |t| t.holds_gateway(&b));
    } else {
        t.sh(&t.a.clone(), "ip addr del 10.0.1.1/24 dev p0 && ip addr del 192.0.2.1/24 dev p1");
        t.gateway_on(&b);
        t.sh(&t.c.clone(), "ip neigh flush dev lan");
        t.sh(&t.o.clone(), "ip neigh flush dev lan");
    }
    eprintln!("gateway addresses on b {:?} after the kill", started.elapsed());
    let b_took_over = Instant::now();

    // Box a returns: it takes b's state first (a full resync), and only
    // then, its readiness file saying so, keepalived gives it its addresses back.
    let mut returned = None;
    if keepalived {
        std::thread::sleep(Duration::from_secs(2));
        t.sh(&t.a.clone(), "ip link set p0 up && ip link set p1 up && ip link set s0 up");
        let _ = std::fs::remove_file(t.dir.join("box1/stats.json"));
        let back = Instant::now();
        t.start(1);
        t.wait_for("a to hold b's state", Duration::from_secs(15), |t| {
            t.stats(1).is_some_and(|s| pair_of(&s).complete)
        });
        let resync = back.elapsed();
        t.start_keepalived(1);
        let a_ns = t.a.clone();
        t.wait_for("a to take its addresses back", Duration::from_secs(10), |t| t.holds_gateway(&a_ns));
        eprintln!("a back: b's state on a {resync:?} after its start, its addresses {:?}", back.elapsed());
        returned = Some(Instant::now());
    }

    let clients = json(clients);
    let b_forwarded_for = returned.unwrap_or_else(Instant::now).duration_since(b_took_over).as_secs_f64();
    let server = json(server);
    let mut longest: Vec<f64> = Vec::new();
    let mut problems = Vec::new();
    for i in 0..CONNECTIONS {
        let name = format!("c{i}");
        let c = &clients[&name];
        if !c["error"].is_null() {
            problems.push(format!("{name}: {}", c["error"]));
        }
        longest.push(c["longest"].as_f64().unwrap_or(f64::MAX));
        let sources = server[&name].as_array().map_or(0, Vec::len);
        if sources != 1 {
            problems.push(format!("{name}: the server saw it from {}", server[&name]));
        }
    }
    longest.sort_by(f64::total_cmp);
    eprintln!("outages: {:?}", longest.iter().map(|x| (x * 1000.0) as u32).collect::<Vec<_>>());
    let b = t.stats(2).unwrap();
    let drops: Vec<_> = b
        .counters
        .iter()
        .filter(|(k, v)| **v > 0 && !k.starts_with("rx") && !k.starts_with("tx") && !k.contains("path"))
        .collect();
    eprintln!(
        "{CONNECTIONS} connections; outage per connection p50 {:.3}s p99 {:.3}s max {:.3}s; b's sync: {:?}; b's counters: {drops:?}",
        longest[CONNECTIONS / 2],
        longest[CONNECTIONS * 99 / 100],
        longest[CONNECTIONS - 1],
        pair_of(&b).counters,
    );
    assert!(problems.is_empty(), "{problems:?}\n{}", t.logs());
    assert!(longest[CONNECTIONS * 99 / 100] < 1.0, "outage p99 {:.2}s", longest[CONNECTIONS * 99 / 100]);
    assert!(b.counter("tcp_out_of_window") == 0, "{:?}", b.counters);

    // Usage: b wrote what a counted and had not written (a's flush
    // interval is a minute: all of it), then both their own at their stop.
    // Lost: at most what a counted in its last half second or so before it
    // died; nothing twice.
    t.running.clear();
    let mut a_again = 0;
    if returned.is_some() {
        assert_eq!(t.ns.stop("a", Duration::from_secs(20)).and_then(|s| s.code()), Some(0), "{}", t.logs());
        a_again = t.stats(1).and_then(|s| s.member(1).copied()).map_or(0, |m| m.up_packets);
    }
    assert_eq!(t.ns.stop("b", Duration::from_secs(20)).and_then(|s| s.code()), Some(0), "{}", t.logs());
    let b_counted = t.stats(2).and_then(|s| s.member(1).copied()).unwrap().up_packets;
    let ready = std::fs::read_to_string(t.dir.join("box2/ready")).unwrap();
    assert_eq!(ready, "1\n", "a stopped box says it is not ready");
    let written = written_up_packets(&t.db());
    // The member's packet rate (a's start included connecting, so b's is the better figure).
    let rate = (a_counted as f64 / traffic_for).max(b_counted as f64 / b_forwarded_for);
    let counted = a_counted + b_counted + a_again;
    let lost = counted as f64 - written as f64;
    eprintln!(
        "usage: a counted {a_counted} packets up, b {b_counted}, a again {a_again}, written {written}: {lost} lost ({:.2}s of a's traffic)",
        lost / rate
    );
    assert!(lost <= rate * 1.0, "more than a second of usage lost: {lost} packets at {rate:.0}/s\n{}", t.logs());
    assert!(lost >= -rate * 0.2, "usage written twice: {written} > {counted}\n{}", t.logs());
}

/// The member's packets up in the accounting table.
fn written_up_packets(db: &std::path::Path) -> u64 {
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
                  print(c.execute(\"SELECT coalesce(sum(packets), 0) FROM accounting WHERE member_id = 1 AND direction = 'outbound'\").fetchone()[0])";
    let out = Command::new("python3").args(["-c", script, db.to_str().unwrap()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}
