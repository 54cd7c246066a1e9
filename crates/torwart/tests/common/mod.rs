//! What the end-to-end tests share: a box in namespaces with one member
//! behind it and one host outside, the daemon started and stopped in it,
//! and small traffic helpers.
//!
//! Topology: `o` (outside host 192.0.2.2) ─ x1/p1 (4 queues each way, or as many as `Lab::with_queues` says) ─
//! `b` (the box, torwart on p0 and p1) ─ p0/x0 ─ `i` (a member's device
//! 10.0.1.2). Needs root.
#![allow(dead_code)]

use control::stats::Stats;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use torwart::lab::netns::{self, Namespaces};

pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub const MEMBER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
pub const OUTSIDE_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

pub const MEMBERS: &str = r#"{
  "plans": [{"id": 1, "name": "standard", "down_rate_kbit": 50000, "down_ceil_kbit": 1000000,
             "up_rate_kbit": 20000, "up_ceil_kbit": 1000000, "burst_bytes": 64000, "weight": 1}],
  "networks": [{"id": 1, "prefix": "10.0.1.0/24", "kind": "internal"},
               {"id": 2, "prefix": "10.0.1.1/32", "kind": "box"}],
  "members": [{"id": 1, "name": "alice", "status": "active", "plan_id": 1}],
  "member_addresses": [{"id": 1, "member_id": 1, "network": "10.0.1.2", "device": "laptop"}],
  "public_addresses": [{"id": 1, "member_id": 1, "address": "198.18.0.11"}],
  "port_forwards": [], "ipv6_openings": [], "global_blocks": []
}"#;

pub struct Lab {
    pub ns: Namespaces,
    pub b: String,
    pub o: String,
    pub i: String,
    pub dir: PathBuf,
    /// Last: released once the namespaces are gone.
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        Lab::with_queues(tag, 4)
    }

    /// As [`Lab::new`], the outside link with `queues` receive and send queues each way.
    pub fn with_queues(tag: &str, queues: u32) -> Lab {
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
        let n = queues.to_string();
        let q = ["numtxqueues", &n, "numrxqueues", &n];
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
    pub fn add_inside_link(&self) {
        netns::ip(&["-n", &self.b, "link", "add", "p0", "type", "veth", "peer", "name", "x0", "netns", &self.i])
            .unwrap();
        self.sh(&self.b, "ip addr add 10.0.1.1/24 dev p0 && ip link set p0 up");
        self.sh(&self.i, "ip addr add 10.0.1.2/24 dev x0 && ip link set x0 up");
        let _ = self.ns.exec(&self.i, "ip", &["route", "replace", "default", "via", "10.0.1.1"]);
        let _ = self.ns.exec(&self.i, "ethtool", &["-K", "x0", "tx", "off"]);
    }

    pub fn sh(&self, ns: &str, script: &str) {
        self.ns.exec(ns, "sh", &["-c", script]).unwrap_or_else(|e| panic!("{script}: {e}"));
    }

    pub fn torwart(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_torwart")).args(args).output().unwrap()
    }

    /// An SQLite database with one member, and a configuration using it.
    pub fn configure(&self) -> PathBuf {
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
    pub fn configure_with(&self, db: &str) -> PathBuf {
        self.configure_more(db, "")
    }

    /// The API's socket.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// As [`Lab::configure_with`], with `more` settings of `[api]` after its socket.
    pub fn configure_more(&self, db: &str, more: &str) -> PathBuf {
        let config = self.dir.join("torwart.toml");
        std::fs::write(
            &config,
            format!(
                "database = \"{}\"\nlast_good = \"{}\"\n[[ports]]\ninterface = \"p0\"\nside = \"inside\"\n[[ports]]\ninterface = \"p1\"\n\
                 side = \"outside\"\n[workers]\ncount = 1\nidle = \"sleep\"\n[accounting]\nflush_interval = \"60s\"\n\
                 [stats]\nfile = \"{}\"\ninterval = \"100ms\"\n[api]\nsocket = \"{}\"\n{more}",
                db,
                self.last_good_path().display(),
                self.stats_path().display(),
                self.api_socket().display()
            ),
        )
        .unwrap();
        config
    }

    /// The last good member database (in the lab's directory, whatever the
    /// database: never the default under /var/lib).
    pub fn last_good_path(&self) -> PathBuf {
        self.dir.join("last-good.json")
    }

    pub fn stats_path(&self) -> PathBuf {
        self.dir.join("stats.json")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("torwart.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `torwart run` in the box; returns once it is running.
    pub fn start(&mut self, config: &Path) {
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

    pub fn wait_for(&mut self, what: &str, done: impl FnMut(&mut Lab) -> bool) {
        self.wait_for_within(what, Duration::from_secs(15), done);
    }

    pub fn wait_for_within(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&mut Lab) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            assert!(self.ns.alive("torwart"), "torwart exited while waiting for {what}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}:\n{}", self.log());
    }

    pub fn stats(&self) -> Option<Stats> {
        Stats::read(&self.stats_path()).ok()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.stats().map_or(0, |s| s.counter(name))
    }

    pub fn rx(&self) -> u64 {
        self.stats().map_or(0, |s| s.rx())
    }

    /// The member's usage as torwart counts it (member 1, alice).
    pub fn usage(&self) -> Option<control::db::MemberTraffic> {
        self.stats()?.member(1).copied()
    }

    /// The member sends `n` datagrams out; returns once its usage counts
    /// them (on top of what it counted before).
    pub fn member_traffic(&mut self, port: u16, n: u64) {
        let before = self.usage().map_or(0, |u| u.up_packets);
        send_udp(&self.i, OUTSIDE_HOST, port, n as usize);
        self.wait_for("the member's usage", |l| l.usage().is_some_and(|u| u.up_packets >= before + n));
    }

    /// Stops torwart with SIGTERM; its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.ns.stop("torwart", Duration::from_secs(30)).and_then(|s| s.code())
    }
}

/// The permission bits of the file at `path`.
pub fn mode(path: impl AsRef<Path>) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o7777
}

/// Runs `f` in a thread inside namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns).unwrap();
        f()
    })
}

/// Sends `n` datagrams from `from`'s namespace to `to`, each from a new
/// socket (so a new source port, spread over the link's queues).
pub fn send_udp(ns: &str, to: Ipv4Addr, port: u16, n: usize) {
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
pub fn count_udp(ns: &str, port: u16, window: Duration) -> std::thread::JoinHandle<usize> {
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
