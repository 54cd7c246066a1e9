//! `torwart lab --pair`: two boxes as a pair (docs/pair.md), keepalived on
//! both, long-lived traffic through the active one, then `kill -9` of that
//! box whole, and later its return. Reports what the clients saw: outage
//! per connection (p50, p99, max), connections that survived, resets, NAT
//! source ports before and after, the member's usage against the clients'
//! own byte counts, and the returning box's bulk resync time.
//!
//! ```text
//!   c (member 10.0.1.2, bridge "lan") ── p0 a p1 ── o (server 192.0.2.2, bridge "lan")
//!                              └── p0 b p1 ──┘
//!                  a s0 ── sync link 10.99.0.0/30 ── s0 b
//! ```
//!
//! The gateway addresses (10.0.1.1 inside, 192.0.2.1 outside) are moved
//! by keepalived: VRRPv3 on the inside link, 50 ms adverts, a box taking
//! them only while its readiness file says it is in sync. The traffic: 50
//! chatty TCP connections (a line every 50 ms), 200 idle ones (like SSH
//! sessions), a UDP stream (a datagram every 10 ms) and an iperf3 download
//! at 50 Mbit/s, all from the member, all across both events.

use super::netns::{self, Namespaces};
use super::traffic::{self, Seen};
use super::Check;
use control::stats::{PairStats, Stats};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct PairOptions {
    /// The torwart binary the boxes run.
    pub torwart: PathBuf,
    /// Prefix of the namespaces' names.
    pub prefix: String,
    pub dir: PathBuf,
    pub chatty: usize,
    pub idle: usize,
    /// Flows made through b while a is gone (answered UDP, from four more
    /// members), for the bulk resync when a returns; 0: none.
    pub bulk: usize,
    pub verbose: bool,
}

/// What the pair's lab saw.
#[derive(Debug, Default, Serialize)]
pub struct PairReport {
    pub checks: Vec<Check>,
    /// Outage per chatty connection, seconds, sorted.
    pub outages: Vec<f64>,
    pub udp_outage_s: f64,
    /// Seconds from the kill to the gateway addresses on the other box.
    pub takeover_s: f64,
    /// Seconds from the return of the killed box to its holding the other's state.
    pub resync_s: f64,
    /// Flows b held when a returned.
    pub resync_flows: usize,
    /// What b forwarded and dropped (by reason) while a took its state.
    pub forwarded_during_resync: u64,
    pub dropped_during_resync: Vec<(String, u64)>,
    /// Bytes the clients sent and received (all of the member's traffic).
    pub client_bytes: u64,
    /// Bytes of the member's usage written to the database (up and down).
    pub written_bytes: u64,
    pub logs: String,
}

impl PairReport {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    fn add(&mut self, name: &str, passed: bool, detail: String) {
        self.checks.push(Check { name: name.to_owned(), passed, detail });
    }
}

const MEMBERS: &str = r#"{
  "plans": [{"id": 1, "name": "standard", "down_rate_kbit": 50000, "down_ceil_kbit": 1000000,
             "up_rate_kbit": 20000, "up_ceil_kbit": 1000000, "burst_bytes": 64000, "weight": 1}],
  "networks": [{"id": 1, "prefix": "10.0.1.0/24", "kind": "internal"},
               {"id": 2, "prefix": "10.0.1.1/32", "kind": "box"},
               {"id": 3, "prefix": "10.0.1.11/32", "kind": "box"},
               {"id": 4, "prefix": "10.0.1.12/32", "kind": "box"}],
  "members": [{"id": 1, "name": "alice", "status": "active", "plan_id": 1},
              {"id": 21, "name": "bulk-1", "status": "active", "plan_id": 1},
              {"id": 22, "name": "bulk-2", "status": "active", "plan_id": 1},
              {"id": 23, "name": "bulk-3", "status": "active", "plan_id": 1},
              {"id": 24, "name": "bulk-4", "status": "active", "plan_id": 1}],
  "member_addresses": [{"id": 1, "member_id": 1, "network": "10.0.1.2", "device": "laptop"},
                       {"id": 21, "member_id": 21, "network": "10.0.1.21", "device": "bulk"},
                       {"id": 22, "member_id": 22, "network": "10.0.1.22", "device": "bulk"},
                       {"id": 23, "member_id": 23, "network": "10.0.1.23", "device": "bulk"},
                       {"id": 24, "member_id": 24, "network": "10.0.1.24", "device": "bulk"}],
  "public_addresses": [{"id": 1, "member_id": 1, "address": "198.18.0.11", "first_port": 20000, "last_port": 40000},
                       {"id": 21, "member_id": 21, "address": "198.18.0.21", "first_port": 1024, "last_port": 65535},
                       {"id": 22, "member_id": 22, "address": "198.18.0.22", "first_port": 1024, "last_port": 65535},
                       {"id": 23, "member_id": 23, "address": "198.18.0.23", "first_port": 1024, "last_port": 65535},
                       {"id": 24, "member_id": 24, "address": "198.18.0.24", "first_port": 1024, "last_port": 65535}],
  "port_forwards": [], "ipv6_openings": [], "global_blocks": []
}"#;

const SERVER: &str = "192.0.2.2:9000";
/// Seconds of traffic: before the kill, b alone, a back (more with bulk flows).
const TRAFFIC_S: u64 = 16;
/// New bulk flows a second: over three times the peak the network we build
/// for sees (7,000), on one worker.
const BULK_RATE: u32 = 25_000;
/// The bulk members' device addresses (on the member's host).
const BULK_SOURCES: [[u8; 4]; 4] = [[10, 0, 1, 21], [10, 0, 1, 22], [10, 0, 1, 23], [10, 0, 1, 24]];

/// The pair's namespaces and processes; gone on drop.
struct Pair {
    ns: Namespaces,
    c: String,
    a: String,
    b: String,
    o: String,
    dir: PathBuf,
    torwart: PathBuf,
}

/// Runs the pair's lab. Needs root and keepalived.
pub fn run(opts: &PairOptions, interrupted: &AtomicBool) -> Result<PairReport, String> {
    if !control::sys::is_root() {
        return Err("the lab needs root: it makes network namespaces and attaches XDP programs".into());
    }
    if !super::on_path("keepalived") {
        return Err("the pair's lab needs keepalived (apt-get install keepalived)".into());
    }
    let say = |s: &str| {
        if opts.verbose {
            println!("{s}");
        }
    };
    say("building two boxes a and b between a member and a server, a sync link between them");
    let mut t = Pair::build(opts)?;
    let mut r = PairReport::default();
    let result = t.drive(opts, &mut r, interrupted, &say);
    r.logs = t.logs();
    result.map(|()| r)
}

impl Pair {
    fn build(opts: &PairOptions) -> Result<Pair, String> {
        let [c, a, b, o] = ["c", "a", "b", "o"].map(|n| format!("{}{n}", opts.prefix));
        let mut ns = Namespaces::new();
        for n in [&c, &a, &b, &o] {
            ns.add(n)?;
        }
        // What an earlier run left, and nothing else of the directory's.
        std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
        for d in ["box1", "box2"] {
            let _ = std::fs::remove_dir_all(opts.dir.join(d));
        }
        for f in ["t.db", "t.db-wal", "t.db-shm", "t.db.usage-spool", "members.json", "sync.key", "iperf.json"] {
            let _ = std::fs::remove_file(opts.dir.join(f));
        }
        let t = Pair { ns, c, a, b, o, dir: opts.dir.clone(), torwart: opts.torwart.clone() };
        for (host, ip) in [(&t.c, "10.0.1.2/24"), (&t.o, "192.0.2.2/24")] {
            t.sh(host, &format!("ip link add lan type bridge && ip addr add {ip} dev lan && ip link set lan up && ip link set lo up"))?;
        }
        for (bx, n, inside, outside) in
            [(&t.a, "a", "10.0.1.11/24", "192.0.2.11/24"), (&t.b, "b", "10.0.1.12/24", "192.0.2.12/24")]
        {
            for (port, end, host) in [("p0", format!("i{n}"), &t.c), ("p1", format!("o{n}"), &t.o)] {
                netns::ip(&["-n", bx, "link", "add", port, "type", "veth", "peer", "name", &end, "netns", host])?;
                t.sh(
                    host,
                    &format!(
                        "ip link set {end} master lan && ip link set {end} up && ethtool -K {end} tx off >/dev/null"
                    ),
                )?;
            }
            t.sh(bx, &format!(
                "ip addr add {inside} dev p0 && ip addr add {outside} dev p1 && ip link set p0 up && ip link set p1 up && \
                 ip link set lo up && sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 && \
                 ip route add default via 192.0.2.2"
            ))?;
        }
        netns::ip(&["-n", &t.a, "link", "add", "s0", "type", "veth", "peer", "name", "s0", "netns", &t.b])?;
        t.sh(&t.a, "ip addr add 10.99.0.1/30 dev s0 && ip link set s0 up")?;
        t.sh(&t.b, "ip addr add 10.99.0.2/30 dev s0 && ip link set s0 up")?;
        for host in [&t.c, &t.o] {
            t.sh(host, "ethtool -K lan tx off >/dev/null")?;
        }
        t.sh(&t.c, "ip route add default via 10.0.1.1")?;
        for a in BULK_SOURCES {
            t.sh(&t.c, &format!("ip addr add {}.{}.{}.{}/24 dev lan", a[0], a[1], a[2], a[3]))?;
        }
        t.sh(&t.o, "ip route add 198.18.0.0/15 via 192.0.2.1")?;
        t.init_db()?;
        Ok(t)
    }

    fn drive(
        &mut self,
        opts: &PairOptions,
        r: &mut PairReport,
        interrupted: &AtomicBool,
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        let bail = || if interrupted.load(Ordering::Relaxed) { Err("interrupted".to_owned()) } else { Ok(()) };
        let traffic_s = TRAFFIC_S + (opts.bulk / BULK_RATE as usize) as u64 + 2;
        self.start(1)?;
        self.start(2)?;
        self.wait_for("both boxes in sync", secs(20), |t| {
            t.stats(1).zip(t.stats(2)).is_some_and(|(a, b)| pair_of(&a).complete && pair_of(&b).complete)
        })?;
        self.keepalived(1)?;
        self.keepalived(2)?;
        let (a, b) = (self.a.clone(), self.b.clone());
        self.wait_for("a to hold the gateway addresses", secs(10), |t| t.holds_gateway(&a))?;
        bail()?;

        say(&format!(
            "traffic for {traffic_s} s through a: {} chatty and {} idle TCP connections, a UDP stream, an iperf3 download",
            opts.chatty, opts.idle
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let server: SocketAddr = SERVER.parse().map_err(|e| format!("{e}"))?;
        let sources = traffic::echo_server(&self.o, server, Arc::clone(&stop))?;
        let o = self.o.clone();
        self.ns.spawn("iperf3-server", &o, "iperf3", &["-s", "-B", "192.0.2.2", "-p", "5201"], None)?;
        std::thread::sleep(Duration::from_millis(300));
        let idle = traffic::Idle::open(&self.c, server, opts.idle)?;
        let chatty = traffic::chatty(&self.c, server, opts.chatty, secs(traffic_s));
        let udp = traffic::udp_stream(&self.c, server, secs(traffic_s));
        let iperf = self.iperf(traffic_s)?;
        let before = sources.lock().unwrap_or_else(|e| e.into_inner()).clone();
        std::thread::sleep(secs(4));
        bail()?;

        say("kill -9 of box a: torwart, its keepalived, its links");
        let a_counted = self.stats(1).and_then(|s| s.member(1).copied()).unwrap_or_default();
        let killed = Instant::now();
        self.kill_a()?;
        self.wait_for("b to take the gateway addresses", secs(10), |t| t.holds_gateway(&b))?;
        r.takeover_s = killed.elapsed().as_secs_f64();
        say(&format!("the gateway addresses on b {:.3} s after the kill", r.takeover_s));
        std::thread::sleep(secs(3));
        if opts.bulk > 0 {
            let per = u16::try_from(opts.bulk / BULK_SOURCES.len()).unwrap_or(u16::MAX).min(64_000);
            let sources = BULK_SOURCES.iter().map(|a| std::net::Ipv4Addr::from(*a)).collect();
            let (sent, took) = traffic::bulk(&self.c, sources, per, server, BULK_RATE)?;
            say(&format!("{sent} new flows through b in {took:.1} s (answered UDP from four more members)"));
            std::thread::sleep(secs(1));
        }
        let b_before = self.stats(2).unwrap_or_default();
        r.resync_flows = b_before.flows;

        say("box a returns: it takes b's state (a full resync), then its addresses back");
        self.sh(&a, "ip link set p0 up && ip link set p1 up && ip link set s0 up")?;
        let _ = std::fs::remove_file(self.dir.join("box1/stats.json"));
        let back = Instant::now();
        self.start(1)?;
        self.wait_for("a to hold b's state", secs(15), |t| t.stats(1).is_some_and(|s| pair_of(&s).complete))?;
        r.resync_s = back.elapsed().as_secs_f64();
        let b_after = self.stats(2).unwrap_or_default();
        r.forwarded_during_resync = b_after.counter("tx_frames").saturating_sub(b_before.counter("tx_frames"));
        r.dropped_during_resync = control::api::live::drop_names()
            .map(|n| (n.to_owned(), b_after.counter(n).saturating_sub(b_before.counter(n))))
            .filter(|(_, v)| *v > 0)
            .collect();
        self.keepalived(1)?;
        self.wait_for("a to take its addresses back", secs(10), |t| t.holds_gateway(&a))?;
        say(&format!(
            "a back: b's state ({} flows) on a {:.3} s after its start, its addresses {:.3} s",
            r.resync_flows,
            r.resync_s,
            back.elapsed().as_secs_f64()
        ));
        r.add(
            "the returning box takes the other's whole state within 5 s while it forwards, dropping nothing",
            r.resync_s <= 5.0 && r.dropped_during_resync.is_empty(),
            format!(
                "{} flows in {:.3} s; b forwarded {} frames meanwhile, dropped {:?}",
                r.resync_flows, r.resync_s, r.forwarded_during_resync, r.dropped_during_resync
            ),
        );

        let chatty = chatty.join().map_err(|_| "the chatty clients died".to_owned())?;
        let udp = udp.join().map_err(|_| "the UDP client died".to_owned())?;
        let idle = idle.check();
        let iperf = self.iperf_result(iperf)?;
        stop.store(true, Ordering::Relaxed);
        self.ns.stop("iperf3-server", secs(5));
        let after = sources.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.judge(r, &chatty, &idle, &udp, &iperf, &before, &after);

        let a_again = self.stop_box(1)?;
        let b_counted = self.stop_box(2)?;
        let written = self.written()?;
        let counted = [a_counted, b_counted, a_again];
        let up_counted: u64 = counted.iter().map(|m| m.up_bytes).sum();
        let down_counted: u64 = counted.iter().map(|m| m.down_bytes).sum();
        r.written_bytes = written.0 + written.1;
        r.client_bytes = chatty.iter().chain(&idle).chain([&udp]).map(|s| s.sent + s.received).sum::<u64>() + iperf.1;
        // The download's rate, for what "a second of traffic" is.
        let per_second = iperf.1 as f64 / traffic_s as f64;
        let lost = (up_counted + down_counted) as f64 - r.written_bytes as f64;
        r.add(
            "usage: at most a second of the member's traffic lost, nothing counted twice",
            lost <= per_second && lost >= -per_second * 0.05,
            format!(
                "the boxes counted {} bytes, {} written: {:.0} bytes lost ({:.2} s of traffic)",
                up_counted + down_counted,
                r.written_bytes,
                lost,
                lost / per_second
            ),
        );
        let ratio = r.written_bytes as f64 / r.client_bytes.max(1) as f64;
        r.add(
            "usage against the clients' own byte counts (IP headers and ACKs on top of their bytes)",
            (0.95..=1.15).contains(&ratio),
            format!("clients {} bytes, written {} bytes: {ratio:.3}", r.client_bytes, r.written_bytes),
        );
        Ok(())
    }

    /// The clients' checks.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        r: &mut PairReport,
        chatty: &[Seen],
        idle: &[Seen],
        udp: &Seen,
        iperf: &(Option<String>, u64),
        before: &traffic::SourceMap,
        after: &traffic::SourceMap,
    ) {
        let failed = |s: &[Seen]| s.iter().filter(|c| c.error.is_some()).count();
        let resets = chatty.iter().chain(idle).filter(|c| c.error.as_deref() == Some("reset")).count();
        let total = chatty.len() + idle.len();
        r.outages = chatty.iter().map(|c| if c.error.is_some() { f64::INFINITY } else { c.longest }).collect();
        r.outages.sort_by(f64::total_cmp);
        let q = |p: f64| r.outages.get(((r.outages.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
        let (p50, p99, max) = (q(0.5), q(0.99), q(1.0));
        let survived = total - failed(chatty) - failed(idle);
        r.add(
            "TCP connections survive the kill and the return (≥ 99.9 %), 0 resets",
            survived * 1000 >= total * 999 && resets == 0,
            format!("{survived} of {total} survived ({} chatty, {} idle), {resets} resets", chatty.len(), idle.len()),
        );
        r.add(
            "outage per chatty connection: p99 ≤ 1 s",
            p99 <= 1.0,
            format!("p50 {p50:.3} s, p99 {p99:.3} s, max {max:.3} s"),
        );
        r.udp_outage_s = udp.longest;
        r.add(
            "the UDP stream goes on (its longest gap ≤ 1 s)",
            udp.error.is_none() && udp.longest <= 1.0 && udp.received > 0,
            format!("longest gap {:.3} s, {} bytes back{}", udp.longest, udp.received, err(&udp.error)),
        );
        r.add(
            "the iperf3 download completes across both events",
            iperf.0.is_none() && iperf.1 > 0,
            format!("{} bytes received{}", iperf.1, err(&iperf.0)),
        );
        let changed: Vec<_> = after.iter().filter(|(_, v)| v.len() > 1).map(|(k, v)| format!("{k}: {v:?}")).collect();
        let seen_before = before.len();
        r.add(
            "the server sees every connection and the UDP stream from the same NAT source port throughout",
            changed.is_empty() && seen_before > 0,
            format!(
                "{} sources, {} changed {:?}",
                after.len(),
                changed.len(),
                changed.iter().take(3).collect::<Vec<_>>()
            ),
        );
    }

    fn iperf(&mut self, seconds: u64) -> Result<PathBuf, String> {
        let out = self.dir.join("iperf.json");
        let _ = std::fs::remove_file(&out);
        let file = std::fs::File::create(&out).map_err(|e| e.to_string())?;
        let c = self.c.clone();
        let t = (seconds - 1).to_string();
        self.ns.spawn(
            "iperf3-client",
            &c,
            "iperf3",
            &["-c", "192.0.2.2", "-p", "5201", "-R", "-t", &t, "-b", "50M", "-J"],
            Some(file),
        )?;
        Ok(out)
    }

    /// (error, bytes received) of the iperf3 download.
    fn iperf_result(&mut self, out: PathBuf) -> Result<(Option<String>, u64), String> {
        let deadline = Instant::now() + secs(20);
        while self.ns.alive("iperf3-client") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ns.stop("iperf3-client", secs(2));
        let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        let error = v.get("error").and_then(|e| e.as_str()).map(str::to_owned);
        let bytes = v.pointer("/end/sum_received/bytes").and_then(|b| b.as_u64()).unwrap_or(0);
        Ok((error.or_else(|| (bytes == 0).then(|| "no result".to_owned())), bytes))
    }

    fn kill_a(&mut self) -> Result<(), String> {
        for what in ["a", "ka"] {
            if let Some(pid) = self.ns.pid(what) {
                // SAFETY: kill has no memory preconditions; the pid is our child's.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        // Every keepalived process of a's (its VRRP child would otherwise say
        // goodbye, priority 0, which a dead box cannot).
        let conf = self.dir.join("box1/keepalived.conf");
        let _ = std::process::Command::new("pkill").args(["-9", "-f", &conf.display().to_string()]).status();
        self.ns.stop("a", secs(1));
        self.ns.stop("ka", secs(1));
        let a = self.a.clone();
        self.sh(&a, "ip link set p0 down && ip link set p1 down && ip link set s0 down")
    }

    /// Stops box `n` (SIGTERM); its count of the member's usage since its start.
    fn stop_box(&mut self, n: u8) -> Result<control::db::MemberTraffic, String> {
        let what = if n == 1 { "a" } else { "b" };
        self.ns.stop(if n == 1 { "ka" } else { "kb" }, secs(5));
        let code = self.ns.stop(what, secs(20)).and_then(|s| s.code());
        if code != Some(0) {
            return Err(format!("box {what} did not stop cleanly ({code:?}):\n{}", self.logs()));
        }
        Ok(self.stats(n).and_then(|s| s.member(1).copied()).unwrap_or_default())
    }

    /// The member's usage in the accounting table: (up, down) bytes.
    fn written(&self) -> Result<(u64, u64), String> {
        let db = self.dir.join("t.db").display().to_string();
        crate::block_on(async {
            let d = control::db::Database::open(&db).await?;
            let rows = d.read_accounting(1).await?;
            d.close().await;
            Ok::<_, control::db::DbError>(rows.iter().fold((0, 0), |(u, d), r| (u + r.up_bytes, d + r.down_bytes)))
        })
        .map_err(|e| e.to_string())
    }

    fn init_db(&self) -> Result<(), String> {
        super::member_db(&self.dir.join("t.db"), MEMBERS)
    }

    /// Box `n`'s configuration (1: a, 2: b) and its key file.
    fn configure(&self, n: u8) -> Result<PathBuf, String> {
        let dir = self.dir.join(format!("box{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let key = self.dir.join("sync.key");
        if !key.exists() {
            let text = control::pair::new_key_file().map_err(|e| e.to_string())?;
            control::files::write_private(&key, text.as_bytes(), 0o600, false).map_err(|e| e.to_string())?;
        }
        let (me, peer) = if n == 1 { ("10.99.0.1", "10.99.0.2") } else { ("10.99.0.2", "10.99.0.1") };
        let config = dir.join("torwart.toml");
        // Two boxes, their clients, servers and keepalived share this
        // machine's cores, so a worker may wait for one longer than the
        // shaper's default sojourn limit (10 ms), and the frames its
        // shaper holds meanwhile would be dropped for the host's
        // scheduling, not for anything the pair does. Where a box has its
        // cores to itself, the default stands.
        let text = format!(
            "database = \"{}\"\nlast_good = \"{}\"\n[[ports]]\ninterface = \"p0\"\nside = \"inside\"\n[[ports]]\ninterface = \"p1\"\n\
             side = \"outside\"\n[workers]\ncount = 1\nidle = \"sleep\"\n[engine]\nmax_flows = 524288\nnat_quota = 65536\n\
             [shaping]\nsojourn_limit = \"100ms\"\n[stats]\nfile = \"{}\"\ninterval = \"100ms\"\n\
             [api]\nsocket = \"{}\"\n[sync]\nlocal = \"{me}:7400\"\npeer = \"{peer}:7400\"\nkey_file = \"{}\"\n\
             ready_file = \"{}\"\n",
            self.dir.join("t.db").display(),
            dir.join("last-good.json").display(),
            dir.join("stats.json").display(),
            dir.join("api.sock").display(),
            key.display(),
            dir.join("ready").display(),
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn start(&mut self, n: u8) -> Result<(), String> {
        let config = self.configure(n)?;
        let (what, bx) = if n == 1 { ("a", self.a.clone()) } else { ("b", self.b.clone()) };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("box{n}/torwart.log")))
            .map_err(|e| e.to_string())?;
        let exe = self.torwart.display().to_string();
        self.ns.spawn(what, &bx, &exe, &["run", "--config", &config.display().to_string()], Some(log))
    }

    /// keepalived on box `n` (a: priority 150, b: 100): both gateway
    /// addresses in one instance, adverts on the inside link (not the sync
    /// link: with the other box dead its carrier is gone, and keepalived
    /// would put the instance in FAULT instead of taking over).
    fn keepalived(&mut self, n: u8) -> Result<(), String> {
        let dir = self.dir.join(format!("box{n}"));
        let (me, peer, priority) =
            if n == 1 { ("10.0.1.11", "10.0.1.12", 150) } else { ("10.0.1.12", "10.0.1.11", 100) };
        let conf = dir.join("keepalived.conf");
        let text = format!(
            "global_defs {{\n  router_id torwart_{n}\n  vrrp_version 3\n  enable_script_security\n}}\n\
             vrrp_track_file torwart_ready {{\n  file {}\n  init_file 1\n}}\n\
             vrrp_instance gateway {{\n  state BACKUP\n  interface p0\n  virtual_router_id 51\n  priority {priority}\n\
             advert_int 0.05\n  unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n\
             virtual_ipaddress {{\n    10.0.1.1/24 dev p0\n    192.0.2.1/24 dev p1\n  }}\n\
             track_file {{\n    torwart_ready weight 0\n  }}\n  track_interface {{\n    p0\n    p1\n  }}\n}}\n",
            dir.join("ready").display()
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let (what, bx) = if n == 1 { ("ka", self.a.clone()) } else { ("kb", self.b.clone()) };
        let pid = |f: &str| dir.join(f).display().to_string();
        let log = std::fs::File::create(dir.join("keepalived.log")).map_err(|e| e.to_string())?;
        let conf = conf.display().to_string();
        let (p1, p2, p3) = (pid("k.pid"), pid("v.pid"), pid("c.pid"));
        let args = ["-n", "-l", "-D", "-P", "-f", &conf, "-p", &p1, "-r", &p2, "-c", &p3];
        self.ns.spawn(what, &bx, "keepalived", &args, Some(log))
    }

    fn holds_gateway(&self, bx: &str) -> bool {
        self.ns
            .output(bx, "ip", &["-4", "addr", "show", "dev", "p0"], secs(5))
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.0.1.1/24"))
    }

    fn sh(&self, ns: &str, script: &str) -> Result<(), String> {
        self.ns.exec(ns, "sh", &["-c", script]).map_err(|e| format!("{script}: {e}"))
    }

    fn stats(&self, n: u8) -> Option<Stats> {
        Stats::read(&self.dir.join(format!("box{n}/stats.json"))).ok()
    }

    fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        [1, 2]
            .map(|n| {
                let keepalived = read(self.dir.join(format!("box{n}/keepalived.log")));
                let log = read(self.dir.join(format!("box{n}/torwart.log")));
                format!("--- box {n}:\n{log}--- its keepalived:\n{keepalived}")
            })
            .join("\n")
    }

    fn wait_for(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(self) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("timed out waiting for {what}:\n{}", self.logs()))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for w in ["iperf3-client", "iperf3-server", "a", "b", "ka", "kb"] {
            self.ns.stop(w, secs(10));
        }
    }
}

fn pair_of(s: &Stats) -> PairStats {
    s.pair.clone().unwrap_or_default()
}

fn err(e: &Option<String>) -> String {
    e.as_ref().map(|e| format!(", error: {e}")).unwrap_or_default()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Prints the report.
pub fn print(r: &PairReport) {
    println!();
    for c in &r.checks {
        println!("  [{}] {}: {}", if c.passed { "ok" } else { "FAILED" }, c.name, c.detail);
    }
    println!();
    println!(
        "takeover {:.3} s after the kill; the returning box held the other's state {:.3} s after its start",
        r.takeover_s, r.resync_s
    );
    let failed = r.checks.iter().filter(|c| !c.passed).count();
    if failed == 0 {
        println!("lab --pair: all {} checks passed", r.checks.len());
    } else {
        println!("lab --pair: {failed} of {} checks FAILED; the boxes' logs:\n{}", r.checks.len(), r.logs);
    }
}
