//! `torwart lab --attack`: one box under attack, in namespaces, with real
//! clients whose connections must not notice (docs/reliability.md). Each
//! phase asserts its figure:
//!
//! 1. **SYN flood at a port forward**: spoofed SYNs from random outside
//!    addresses at the member's forward, whose server answers each (so the
//!    flood's half-open flows are answered). The flood holds at most the
//!    member's limit of half-open flows (its oldest make room), not the
//!    table, and legitimate new connections (to the forward, and out from
//!    a member) succeed.
//! 2. **A member scanning**: SYNs from one member to random destinations
//!    (each a new flow and a NAT port), and frames from the member's link
//!    with forged source addresses. The member is capped at its limit of
//!    half-open flows (below its NAT quota); another member's new
//!    connections all succeed.
//! 3. **Blind injection**: RSTs and SYNs with random sequence numbers on the
//!    tuples of established connections, and forged ICMP errors for flows
//!    that do not exist. No connection is torn down; no forged error
//!    reaches a member.
//! 4. **Reload storm**: 100 changes a second to the member database while a
//!    UDP stream crosses the box. No datagram lost; memory flat.
//! 5. **kill -9 and restart** of torwart under load: the long-lived
//!    connections are picked up mid-stream, with the same NAT ports; a
//!    member's usage loses at most what was counted since the last flush,
//!    and nothing is written twice.
//! 6. **Soak with churn**: new flows, members added and removed, reloads.
//!    Memory flat; every frame received accounted for; a member's usage
//!    equal to its client's own count.
//!
//! Throughout, long-lived TCP connections (out from a member, and in through
//! the port forward) exchange a line every 50 ms; none may be lost.
//!
//! ```text
//!   m (alice 10.0.1.2, mallory 10.0.1.3, storm 10.0.1.4, soak 10.0.1.5) dn ── p0 [x: torwart] p1 ── o0 o (server 192.0.2.2)
//! ```

use super::netns::{self, Namespaces};
use super::traffic::{self, Seen};
use super::Check;
use control::stats::Stats;
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wire::build::{self, Eth};
use wire::ethernet::MacAddr;
use wire::tcp::TcpFlags;

#[derive(Clone, Debug)]
pub struct AttackOptions {
    pub torwart: PathBuf,
    pub prefix: String,
    pub dir: PathBuf,
    /// The longer version with higher rates (docs/reliability.md); else
    /// the short one CI runs.
    pub full: bool,
    /// The soak's length instead of the version's (120 s short, 1800 s full).
    pub soak_seconds: Option<f64>,
    pub verbose: bool,
}

/// What the attack lab saw.
#[derive(Debug, Default, Serialize)]
pub struct AttackReport {
    pub checks: Vec<Check>,
    pub logs: String,
}

impl AttackReport {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    fn add(&mut self, name: &str, passed: bool, detail: String) {
        self.checks.push(Check { name: name.to_owned(), passed, detail });
    }
}

/// Rates and durations of one version of the lab.
#[derive(Clone, Copy)]
struct Scale {
    flood_pps: u64,
    flood_s: f64,
    scan_pps: u64,
    scan_s: f64,
    /// New legitimate connections per direction during a flood.
    legit: usize,
    /// Forged segments per established connection (RSTs, and as many SYNs).
    inject: usize,
    storm_s: f64,
    soak_s: f64,
    chatty: usize,
}

const SHORT: Scale = Scale {
    flood_pps: 50_000,
    flood_s: 3.0,
    scan_pps: 20_000,
    scan_s: 3.0,
    legit: 100,
    inject: 500,
    storm_s: 5.0,
    soak_s: 120.0,
    chatty: 20,
};
const FULL: Scale = Scale {
    flood_pps: 60_000,
    flood_s: 10.0,
    scan_pps: 100_000,
    scan_s: 10.0,
    legit: 500,
    inject: 5_000,
    storm_s: 30.0,
    soak_s: 1800.0,
    chatty: 50,
};

/// The flow table's size in the lab: small, so that a flood would fill it
/// without the per-member limit of half-open flows.
const MAX_FLOWS: usize = 32_768;
/// Each member's NAT quota in the lab.
const NAT_QUOTA: usize = 8_192;
/// `[engine] half_open_per_member` (the default, written out).
const HALF_OPEN: usize = 4_096;
/// `[accounting] flush_interval`, seconds: what a `kill -9` may lose.
const FLUSH_S: u64 = 5;
/// The storm member's device: in the restart, its usage is measured.
const STORM: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 4);
const SERVER: &str = "192.0.2.2:9000";
/// alice's port forward, and what it reaches.
const FORWARD: &str = "198.18.0.11:8080";
const FORWARD_TARGET: &str = "10.0.1.2:9000";
const ALICE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const ALICE_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const MALLORY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
/// The soak member's device.
const SOAK: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
/// The soak stream's datagrams: payload bytes, and the frame each is.
const SOAK_PAYLOAD: usize = 100;
const SOAK_FRAME: u64 = (14 + 20 + 8 + SOAK_PAYLOAD) as u64;
/// Database changes a second in the storm.
const STORM_RATE: u32 = 100;

const MEMBERS: &str = r#"{
  "plans": [{"id": 1, "name": "standard", "down_rate_kbit": 50000, "down_ceil_kbit": 1000000,
             "up_rate_kbit": 20000, "up_ceil_kbit": 1000000, "burst_bytes": 64000, "weight": 1},
            {"id": 2, "name": "other", "down_rate_kbit": 40000, "down_ceil_kbit": 900000,
             "up_rate_kbit": 10000, "up_ceil_kbit": 900000, "burst_bytes": 64000, "weight": 1}],
  "networks": [{"id": 1, "prefix": "10.0.1.0/24", "kind": "internal"},
               {"id": 2, "prefix": "10.0.1.1/32", "kind": "box"}],
  "members": [{"id": 1, "name": "alice", "status": "active", "plan_id": 1},
              {"id": 2, "name": "mallory", "status": "active", "plan_id": 1},
              {"id": 3, "name": "storm", "status": "active", "plan_id": 1},
              {"id": 4, "name": "soak", "status": "active", "plan_id": 1}],
  "member_addresses": [{"id": 1, "member_id": 1, "network": "10.0.1.2", "device": "laptop"},
                       {"id": 2, "member_id": 2, "network": "10.0.1.3", "device": "laptop"},
                       {"id": 3, "member_id": 3, "network": "10.0.1.4", "device": "laptop"},
                       {"id": 4, "member_id": 4, "network": "10.0.1.5", "device": "laptop"}],
  "public_addresses": [{"id": 1, "member_id": 1, "address": "198.18.0.11", "first_port": 1024, "last_port": 65535},
                       {"id": 2, "member_id": 2, "address": "198.18.0.12", "first_port": 1024, "last_port": 65535},
                       {"id": 3, "member_id": 3, "address": "198.18.0.13", "first_port": 1024, "last_port": 65535},
                       {"id": 4, "member_id": 4, "address": "198.18.0.14", "first_port": 1024, "last_port": 65535}],
  "port_forwards": [{"id": 1, "member_id": 1, "protocol": "tcp", "public_port": 8080,
                     "internal_address": "10.0.1.2", "internal_port": 9000}],
  "ipv6_openings": [], "global_blocks": []
}"#;

/// The lab's namespaces and processes; gone on drop.
struct Lab {
    ns: Namespaces,
    m: String,
    x: String,
    o: String,
    dir: PathBuf,
    /// Link-layer addresses: the member side's and the box's inside port;
    /// the outside host's and the box's outside port.
    inside: Eth,
    outside: Eth,
}

/// Runs the attack lab. Needs root.
pub fn run(opts: &AttackOptions, interrupted: &AtomicBool) -> Result<AttackReport, String> {
    if !control::sys::is_root() {
        return Err("the lab needs root: it makes network namespaces and attaches XDP programs".into());
    }
    if !super::on_path("sqlite3") {
        return Err("the attack lab needs sqlite3 for its reload storm (apt-get install sqlite3)".into());
    }
    let mut scale = if opts.full { FULL } else { SHORT };
    if cfg!(debug_assertions) {
        // An unoptimised build (the tests') forwards a fifth as much: the
        // floods are scaled down to what it takes without loss, so that
        // the checks are about state, not about a saturated box.
        scale.flood_pps /= 4;
        scale.scan_pps /= 4;
    }
    if let Some(s) = opts.soak_seconds {
        scale.soak_s = s;
    }
    let scale = &scale;
    let say = |s: &str| {
        if opts.verbose {
            println!("{s}");
        }
    };
    say("building a box between three members and a server");
    let mut lab = Lab::build(opts)?;
    let mut r = AttackReport::default();
    let result = lab.drive(opts, scale, &mut r, interrupted, &say);
    r.logs = std::fs::read_to_string(lab.dir.join("torwart.log")).unwrap_or_default();
    result.map(|()| r)
}

impl Lab {
    fn build(opts: &AttackOptions) -> Result<Lab, String> {
        let [m, x, o] = ["m", "x", "o"].map(|n| format!("{}{n}", opts.prefix));
        let mut ns = Namespaces::new();
        for n in [&m, &x, &o] {
            ns.add(n)?;
        }
        std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
        for f in ["t.db", "t.db-wal", "t.db-shm", "t.db.usage-spool", "members.json", "stats.json", "torwart.log"] {
            let _ = std::fs::remove_file(opts.dir.join(f));
        }
        let mut lab = Lab { ns, m, x, o, dir: opts.dir.clone(), inside: eth0(), outside: eth0() };
        netns::ip(&["-n", &lab.x, "link", "add", "p0", "type", "veth", "peer", "name", "dn", "netns", &lab.m])?;
        netns::ip(&["-n", &lab.x, "link", "add", "p1", "type", "veth", "peer", "name", "o0", "netns", &lab.o])?;
        lab.sh(
            &lab.m,
            "ip addr add 10.0.1.2/24 dev dn && ip addr add 10.0.1.3/24 dev dn && ip addr add 10.0.1.4/24 dev dn && ip addr add 10.0.1.5/24 dev dn && \
             ip link set dn up && ethtool -K dn tx off >/dev/null && ip route add default via 10.0.1.1 && \
             sysctl -qw net.ipv4.ip_forward=0",
        )?;
        lab.sh(
            &lab.o,
            "ip addr add 192.0.2.2/24 dev o0 && ip link set o0 up && ethtool -K o0 tx off >/dev/null && \
             ip route add 198.18.0.0/15 via 192.0.2.1 && sysctl -qw net.ipv4.ip_forward=0",
        )?;
        lab.sh(
            &lab.x,
            "ip addr add 10.0.1.1/24 dev p0 && ip addr add 192.0.2.1/24 dev p1 && ip link set p0 up && \
             ip link set p1 up && sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 && \
             ip route add default via 192.0.2.2",
        )?;
        lab.inside = Eth { src: lab.mac(&lab.m, "dn")?, dst: lab.mac(&lab.x, "p0")?, vlan: None };
        lab.outside = Eth { src: lab.mac(&lab.o, "o0")?, dst: lab.mac(&lab.x, "p1")?, vlan: None };
        lab.init_db()?;
        Ok(lab)
    }

    fn drive(
        &mut self,
        opts: &AttackOptions,
        scale: &Scale,
        r: &mut AttackReport,
        interrupted: &AtomicBool,
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        let bail = || if interrupted.load(Ordering::Relaxed) { Err("interrupted".to_owned()) } else { Ok(()) };
        self.start(opts)?;
        self.wait_for("torwart to forward", secs(20), |l| l.stats().is_some_and(|s| s.generation > 0))?;
        let stop = Arc::new(AtomicBool::new(false));
        let server: SocketAddr = SERVER.parse().map_err(|e| format!("{e}"))?;
        let forward: SocketAddr = FORWARD.parse().map_err(|e| format!("{e}"))?;
        let target: SocketAddr = FORWARD_TARGET.parse().map_err(|e| format!("{e}"))?;
        let out_sources = traffic::echo_server(&self.o, server, Arc::clone(&stop))?;
        let _in_sources = traffic::echo_server(&self.m, target, Arc::clone(&stop))?;
        // Long enough for every phase; the clients stop on their own.
        let phases_s = scale.flood_s + scale.scan_s + scale.storm_s + scale.soak_s + 40.0;
        let run = Duration::from_secs_f64(phases_s);
        say(&format!(
            "long-lived traffic: {} connections out from alice, {} in through her port forward, a line every 50 ms each",
            scale.chatty,
            scale.chatty / 2
        ));
        let chatty_out = traffic::chatty(&self.m, server, scale.chatty, run);
        let chatty_in = traffic::chatty(&self.o, forward, scale.chatty / 2, run);
        std::thread::sleep(secs(2));
        let started = Instant::now();
        bail()?;

        self.syn_flood(scale, r, forward, server, say)?;
        bail()?;
        self.scan(scale, r, server, say)?;
        bail()?;
        self.inject(scale, r, &out_sources, say)?;
        bail()?;
        self.storm(scale, r, server, say)?;
        bail()?;
        self.restart(opts, scale, r, &out_sources, server, say)?;
        bail()?;
        let soak = self.soak(scale, r, server, interrupted, say)?;

        say("waiting for the long-lived connections to finish");
        let out = chatty_out.join().map_err(|_| "the chatty clients died".to_owned())?;
        let inb = chatty_in.join().map_err(|_| "the chatty clients died".to_owned())?;
        stop.store(true, Ordering::Relaxed);
        let all: Vec<&Seen> = out.iter().chain(&inb).collect();
        // Which connection, and when, as the phases above say when they ran.
        let mut lost = Vec::new();
        for (dir, seen) in [("out", &out), ("in", &inb)] {
            for (i, s) in seen.iter().enumerate() {
                if let Some(e) = &s.error {
                    lost.push(format!("{dir} c{i} after {:.1} s: {e}", s.ended_after));
                }
            }
        }
        let longest = all.iter().map(|s| s.longest).fold(0.0, f64::max);
        r.add(
            "established connections through every phase: 0 lost",
            lost.is_empty() && !all.is_empty(),
            format!(
                "{} of {} kept for {:.0} s (out and in through the forward), longest wait for an echo {:.3} s{}",
                all.len() - lost.len(),
                all.len(),
                started.elapsed().as_secs_f64(),
                longest,
                if lost.is_empty() { String::new() } else { format!(", lost: {:?}", &lost[..lost.len().min(3)]) }
            ),
        );
        let code = self.ns.stop("x", secs(20)).and_then(|s| s.code());
        r.add("torwart stops cleanly after it all (SIGTERM, exit 0)", code == Some(0), format!("exit {code:?}"));
        // The soak member's usage as written, against what its client
        // sent and got back (each datagram one frame of SOAK_FRAME bytes).
        let (up, down) = self.written(4)?;
        let expected = (soak.0 * SOAK_FRAME, soak.1 * SOAK_FRAME);
        let off = |a: u64, b: u64| (a as f64 - b as f64).abs() / b.max(1) as f64;
        r.add(
            "accounting through the soak equals the client's own count within 0.01 %",
            off(up, expected.0) <= 1e-4 && off(down, expected.1) <= 1e-4 && soak.0 > 0,
            format!(
                "written up {up} B, down {down} B; the client sent {} and got back {} datagrams of {SOAK_FRAME} B: \
                 {} and {} B ({:+.4} %, {:+.4} %)",
                soak.0,
                soak.1,
                expected.0,
                expected.1,
                (up as f64 / expected.0.max(1) as f64 - 1.0) * 100.0,
                (down as f64 / expected.1.max(1) as f64 - 1.0) * 100.0
            ),
        );
        Ok(())
    }

    /// Phase 1: spoofed SYNs at the port forward; legitimate new connections meanwhile.
    fn syn_flood(
        &mut self,
        scale: &Scale,
        r: &mut AttackReport,
        forward: SocketAddr,
        server: SocketAddr,
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        say(&format!(
            "SYN flood at the port forward {FORWARD}: {} spoofed SYNs a second for {} s, table of {MAX_FLOWS} flows",
            scale.flood_pps, scale.flood_s
        ));
        let before = self.stats().unwrap_or_default();
        let eth = self.outside;
        let flood = flood(&self.o, "o0", scale.flood_pps, Duration::from_secs_f64(scale.flood_s), move |_, rng, b| {
            // Sources in 100.64.0.0/10, random ports and sequence numbers.
            let src = Ipv4Addr::from(0x6440_0000 | (rng.word() as u32 & 0x003f_ffff));
            let sport = 1024 + (rng.word() % 60_000) as u16;
            build::tcp(
                b,
                &eth,
                src.into(),
                ALICE_PUBLIC.into(),
                sport,
                8080,
                rng.word() as u32,
                0,
                TcpFlags::SYN,
                64240,
                0,
            )
            .unwrap_or(0)
        });
        std::thread::sleep(Duration::from_millis(500));
        let pause = Duration::from_secs_f64((scale.flood_s - 1.0).max(0.5) / scale.legit as f64);
        let legit_in = connects(&self.o, forward, scale.legit, pause);
        let legit_out = connects(&self.m, server, scale.legit, pause);
        let (sent, peak) = self.watch(flood, |s| s.flows)?;
        let (li, lo) = (join(legit_in)?, join(legit_out)?);
        std::thread::sleep(Duration::from_millis(300));
        let after = self.stats().unwrap_or_default();
        let d = |n: &str| after.counter(n).saturating_sub(before.counter(n));
        // Besides the flood's: what was there before, and the legitimate
        // connections (established, then closing).
        let others = before.flows + 2 * scale.legit;
        r.add(
            "SYN flood at a port forward: the flood holds at most the member's half-open limit, its oldest make room",
            peak <= HALF_OPEN + others && d("flows_evicted_half_open") > 0 && d("flow_table_full") == 0,
            format!(
                "{sent} SYNs in {} s; flows at most {peak} ({} before; half-open limit {HALF_OPEN} a member and \
                 side, table {MAX_FLOWS}); {} oldest half-open evicted, {} evicted as the table was full, {} refused \
                 (table full); every drop meanwhile: {}",
                scale.flood_s,
                before.flows,
                d("flows_evicted_half_open"),
                d("flows_evicted"),
                d("flow_table_full"),
                self.drops_since(&before, &after)
            ),
        );
        for (what, res, target) in [("to the forward", &li, FORWARD), ("out from alice", &lo, SERVER)] {
            let ok = res.iter().filter(|t| t.is_some()).count();
            r.add(
                &format!("legitimate new connections during the flood, {what}: ≥ 99 % succeed"),
                ok * 100 >= res.len() * 99,
                format!("{ok} of {} to {target} answered; {}", res.len(), times(res)),
            );
        }
        Ok(())
    }

    /// Phase 2: mallory scans (a new flow and NAT port per SYN) and forges
    /// source addresses; alice connects meanwhile.
    fn scan(
        &mut self,
        scale: &Scale,
        r: &mut AttackReport,
        server: SocketAddr,
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        say(&format!(
            "mallory scans: {} SYNs a second for {} s to random addresses and ports, every fourth from a forged source",
            scale.scan_pps, scale.scan_s
        ));
        let before = self.stats().unwrap_or_default();
        let eth = self.inside;
        let scan = flood(&self.m, "dn", scale.scan_pps, Duration::from_secs_f64(scale.scan_s), move |i, rng, b| {
            let dst = Ipv4Addr::from(0xcb00_7100 | (rng.word() as u32 & 0xff)); // 203.0.113.0/24
            let src = if i % 4 == 3 {
                // Forged: an address of the member network no member has, or one of the internet's.
                if i % 8 == 3 {
                    Ipv4Addr::new(10, 0, 1, 100 + (rng.word() % 100) as u8)
                } else {
                    Ipv4Addr::from(rng.word() as u32 | 0x0100_0000)
                }
            } else {
                MALLORY
            };
            let (sport, dport) = (1024 + (rng.word() % 60_000) as u16, 1 + (rng.word() % 65_000) as u16);
            build::tcp(b, &eth, src.into(), dst.into(), sport, dport, rng.word() as u32, 0, TcpFlags::SYN, 64240, 0)
                .unwrap_or(0)
        });
        std::thread::sleep(Duration::from_millis(500));
        let pause = Duration::from_secs_f64((scale.scan_s - 1.0).max(0.5) / scale.legit as f64);
        let legit = connects(&self.m, server, scale.legit, pause);
        let (sent, peak_bindings) = self.watch(scan, |s| s.nat_bindings)?;
        let res = join(legit)?;
        std::thread::sleep(Duration::from_millis(300));
        let after = self.stats().unwrap_or_default();
        let d = |n: &str| after.counter(n).saturating_sub(before.counter(n));
        let forged = d("spoofed_source") + d("unregistered_source");
        // Besides mallory's: what the others held before, and alice's new connections.
        let others = before.nat_bindings + scale.legit;
        r.add(
            "a member scanning is capped at its half-open limit (below its NAT quota); forged sources are dropped and counted",
            peak_bindings <= HALF_OPEN.min(NAT_QUOTA) + others && d("flows_evicted_half_open") > 0 && forged > 0,
            format!(
                "{sent} SYNs; NAT bindings at most {peak_bindings}, {} before (half-open limit {HALF_OPEN}, \
                 NAT quota {NAT_QUOTA} a member); {} oldest half-open evicted, {} refused over quota; \
                 forged sources dropped: {forged}; every drop meanwhile: {}",
                before.nat_bindings,
                d("flows_evicted_half_open"),
                d("nat_quota"),
                self.drops_since(&before, &after)
            ),
        );
        let ok = res.iter().filter(|t| t.is_some()).count();
        r.add(
            "another member's new connections during the scan: 100 % succeed",
            ok == res.len(),
            format!("{ok} of {} answered; {}", res.len(), times(&res)),
        );
        Ok(())
    }

    /// Phase 3: blind RSTs and SYNs on established connections' tuples, and
    /// forged ICMP errors for flows that do not exist.
    fn inject(
        &mut self,
        scale: &Scale,
        r: &mut AttackReport,
        sources: &traffic::Sources,
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        let ports: Vec<u16> = sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(name, _)| name.starts_with('c'))
            .flat_map(|(_, s)| s.iter().map(|a| a.port()))
            .collect();
        if ports.is_empty() {
            return Err("the server saw no long-lived connection to attack".into());
        }
        let n = ports.len() as u64 * scale.inject as u64 * 2;
        let icmp = scale.inject as u64 * 4;
        say(&format!(
            "blind injection: {} RSTs and as many SYNs with random sequence numbers on each of {} established \
             connections, {icmp} forged ICMP errors",
            scale.inject,
            ports.len()
        ));
        let before = self.stats().unwrap_or_default();
        let eth = self.outside;
        let server = Ipv4Addr::new(192, 0, 2, 2);
        let total = n + icmp;
        let injector = flood(&self.o, "o0", 50_000, Duration::from_secs(600), move |i, rng, b| {
            if i >= total {
                return 0;
            }
            if i >= n {
                // An ICMP port unreachable about a datagram alice's public
                // address never sent (a port no flow uses: below the NAT range).
                let mut inner = [0u8; 128];
                let mut ip = [0u8; 64];
                let port = 1 + (rng.word() % 1000) as u16;
                let Ok(len) = build::udp(&mut inner, &eth, ALICE_PUBLIC.into(), server.into(), port, 53, 8) else {
                    return 0;
                };
                let l = len - 14;
                ip[..l].copy_from_slice(&inner[14..len]);
                return build::icmp_error(b, &eth, server.into(), ALICE_PUBLIC.into(), 3, 3, &ip[..l]).unwrap_or(0);
            }
            let port = ports[(i as usize / 2) % ports.len()];
            let flags = if i % 2 == 0 { TcpFlags::RST } else { TcpFlags::SYN };
            build::tcp(b, &eth, server.into(), ALICE_PUBLIC.into(), 9000, port, rng.word() as u32, 0, flags, 64240, 0)
                .unwrap_or(0)
        });
        let sent = injector.join().map_err(|_| "the injector died".to_owned())??;
        std::thread::sleep(secs(1));
        let after = self.stats().unwrap_or_default();
        let d = |n: &str| after.counter(n).saturating_sub(before.counter(n));
        let rsts = n / 2;
        let refused = d("tcp_rst_out_of_window");
        r.add(
            "blind RSTs and SYNs are refused (the connections they aim at are checked at the end)",
            sent >= total && refused * 100 >= rsts * 99,
            format!(
                "{n} forged segments; RSTs refused out of window: {refused} of {rsts}; other segments refused: \
                 out of window {}, SYN in a connection {}; every drop meanwhile: {}",
                d("tcp_out_of_window"),
                d("tcp_syn_in_connection"),
                self.drops_since(&before, &after)
            ),
        );
        let no_flow = d("icmp_error_no_flow");
        r.add(
            "forged ICMP errors for flows that do not exist reach no member",
            no_flow == icmp,
            format!("{icmp} sent, {no_flow} dropped as icmp_error_no_flow"),
        );
        Ok(())
    }

    /// Phase 4: 100 database changes a second while a UDP stream crosses the box.
    fn storm(
        &mut self,
        scale: &Scale,
        r: &mut AttackReport,
        server: SocketAddr,
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        say(&format!(
            "reload storm: {STORM_RATE} changes a second to the member database, each with a SIGHUP, for {} s; \
             a UDP stream of 1,000 datagrams a second",
            scale.storm_s
        ));
        let before = self.stats().unwrap_or_default();
        let rss0 = self.rss();
        let run = Duration::from_secs_f64(scale.storm_s);
        let stream = udp_stream_from(&self.m, ALICE, server, 1000, run + secs(1));
        let (mut sqlite, mut input) = self.sqlite()?;
        let pid = self.ns.pid("x");
        let t0 = Instant::now();
        let mut changes = 0u32;
        let mut rss_peak = rss0;
        while t0.elapsed() < run {
            // The storm member's plan and status flip: each a policy change.
            let stmt = match changes % 4 {
                0 => "UPDATE members SET plan_id = 2 WHERE id = 3;\n",
                1 => "UPDATE members SET status = 'blocked' WHERE id = 3;\n",
                2 => "UPDATE members SET plan_id = 1 WHERE id = 3;\n",
                _ => "UPDATE members SET status = 'active' WHERE id = 3;\n",
            };
            input.write_all(stmt.as_bytes()).map_err(|e| format!("sqlite3: {e}"))?;
            changes += 1;
            // And a reload asked for each time (the database's own change
            // notices are coalesced): 100 policy swaps a second.
            if let Some(pid) = pid {
                // SAFETY: kill has no memory preconditions; the pid is our child's.
                unsafe { libc::kill(pid as i32, libc::SIGHUP) };
            }
            if changes % 20 == 0 {
                rss_peak = rss_peak.max(self.rss());
            }
            let due = Duration::from_secs_f64(f64::from(changes) / f64::from(STORM_RATE));
            std::thread::sleep(due.saturating_sub(t0.elapsed()));
        }
        let took = t0.elapsed().as_secs_f64();
        drop(input);
        let _ = sqlite.wait();
        let (sent, received) = join(stream)?;
        std::thread::sleep(secs(1));
        let after = self.stats().unwrap_or_default();
        let rss1 = self.rss();
        let reloads = after.published_generation.saturating_sub(before.published_generation);
        let growth = rss1 as f64 / rss0.max(1) as f64 - 1.0;
        r.add(
            "reload storm (100 database changes and reloads a second): the policy follows, no datagram of a stream lost",
            received == sent && sent > 0 && reloads > 0,
            format!(
                "{changes} changes in {took:.1} s, {reloads} new policy generations; {received} of {sent} datagrams \
                 echoed; drops meanwhile: {}",
                self.drops_since(&before, &after)
            ),
        );
        r.add(
            "memory stays flat through the storm (resident size within 5 %)",
            growth <= 0.05,
            format!(
                "{} KiB before, {} KiB at most during, {} KiB after ({:+.1} %)",
                rss0,
                rss_peak,
                rss1,
                growth * 100.0
            ),
        );
        Ok(())
    }

    /// Phase 5: `kill -9` of torwart under load and a restart at once (as
    /// systemd's `Restart=` does): the long-lived connections are picked up
    /// mid-stream, with the same NAT ports.
    fn restart(
        &mut self,
        opts: &AttackOptions,
        scale: &Scale,
        r: &mut AttackReport,
        sources: &traffic::Sources,
        server: SocketAddr,
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        say("kill -9 of torwart under load, and a restart at once");
        let seen = |s: &traffic::Sources| s.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // The storm member active again (the storm flipped it), and a
        // counted stream of its own through the kill.
        let (mut sqlite, mut input) = self.sqlite()?;
        input
            .write_all(b"UPDATE members SET status = 'active', plan_id = 1 WHERE id = 3;\n")
            .map_err(|e| format!("sqlite3: {e}"))?;
        drop(input);
        let _ = sqlite.wait();
        if let Some(pid) = self.ns.pid("x") {
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        }
        std::thread::sleep(secs(1));
        let (up0, _) = self.written(3)?;
        const RATE: u64 = 500;
        let stream = udp_stream_from(&self.m, STORM, server, RATE, secs(8 + FLUSH_S));
        std::thread::sleep(secs(4));
        let before = seen(sources);
        if let Some(pid) = self.ns.pid("x") {
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        self.ns.stop("x", secs(5));
        let killed = Instant::now();
        let _ = std::fs::remove_file(self.dir.join("stats.json"));
        self.start(opts)?;
        self.wait_for("torwart to forward again", secs(20), |l| l.stats().is_some_and(|s| s.generation > 0))?;
        let back = killed.elapsed().as_secs_f64();
        // The connections' retransmissions find the new process (a
        // connection in backoff may take a few seconds).
        std::thread::sleep(secs(3));
        let long_lived = (scale.chatty + scale.chatty / 2) as u64;
        let _ = self.wait_for("every long-lived connection picked up", secs(10), |l| {
            l.stats().is_some_and(|s| s.counter("flows_picked_up") >= long_lived)
        });
        let after = self.stats().unwrap_or_default();
        let picked = after.counter("flows_picked_up");
        let now = seen(sources);
        let changed: Vec<String> = now
            .iter()
            .filter(|(name, s)| name.starts_with('c') && s.len() > 1)
            .map(|(name, s)| format!("{name}: {s:?}"))
            .collect();
        let kept = before.keys().filter(|k| k.starts_with('c')).count();
        // Each long-lived connection once, whichever end spoke first: one
        // more is a connection made twice, from each end (its two flows
        // disagree on its ports).
        r.add(
            "kill -9 and restart under load: connections picked up mid-stream, each once, with the same NAT ports",
            changed.is_empty() && kept > 0 && picked == long_lived,
            format!(
                "forwarding again {back:.2} s after the kill; {picked} connections picked up of {long_lived} \
                 long-lived; {kept} seen by the server, {} from a new NAT source {:?} (each connection's survival \
                 is checked at the end)",
                changed.len(),
                &changed[..changed.len().min(3)]
            ),
        );
        // What the kill cost the accounting: the usage counted since the
        // last flush (at most one interval of it); nothing written twice.
        let (sent, echoed) = join(stream)?;
        std::thread::sleep(secs(FLUSH_S + 2));
        let (up1, _) = self.written(3)?;
        let written = (up1 - up0) / SOAK_FRAME;
        let bound = RATE * FLUSH_S;
        let lost = echoed.saturating_sub(written);
        r.add(
            "kill -9: the usage lost is at most one flush interval's, and none is written twice",
            written <= sent && lost <= bound && echoed > 0,
            format!(
                "the member's stream through the kill: {sent} datagrams sent, {echoed} echoed, {written} written to \
                 the database; {lost} lost at the kill ({:.2} s of the stream; flush interval {FLUSH_S} s)",
                lost as f64 / RATE as f64
            ),
        );
        Ok(())
    }

    /// Phase 6: a soak with churn. For `soak_s`: the soak member's UDP
    /// stream (counted exactly), new TCP connections and new UDP flows from
    /// alice, a member added and one removed every second (each with a
    /// reload). Resident memory must stay flat, and every frame received
    /// must be accounted for: sent, dropped with a reason, or held. Returns
    /// the soak member's datagrams (sent, echoed) for the accounting check.
    fn soak(
        &mut self,
        scale: &Scale,
        r: &mut AttackReport,
        server: SocketAddr,
        interrupted: &AtomicBool,
        say: &dyn Fn(&str),
    ) -> Result<(u64, u64), String> {
        say(&format!(
            "soak for {} s: a counted UDP stream, 20 new TCP connections and 20 new UDP flows a second, \
             a member added and one removed every second",
            scale.soak_s
        ));
        let run = Duration::from_secs_f64(scale.soak_s);
        let stream = udp_stream_from(&self.m, SOAK, server, 500, run);
        let tcp = connects(&self.m, server, (scale.soak_s * 20.0) as usize, Duration::from_millis(50));
        let flows = new_flows(&self.m, server, 20, run);
        let (mut sqlite, mut input) = self.sqlite()?;
        let before = self.stats().unwrap_or_default();
        let t0 = Instant::now();
        let (mut rss_first, mut rss_last, mut rss_peak) = (0, 0, 0);
        let mut k = 0u32;
        while t0.elapsed() < run && !interrupted.load(Ordering::Relaxed) {
            let id = 100 + k;
            let mut stmt = format!(
                "BEGIN; INSERT INTO members VALUES ({id}, 'churn-{k}', 'active', 1); \
                 INSERT INTO member_addresses VALUES ({id}, {id}, '10.0.1.{}', 'phone'); \
                 INSERT INTO public_addresses VALUES ({id}, {id}, '198.18.1.{}', 1024, 65535);",
                100 + k % 100,
                1 + k % 200
            );
            if k >= 3 {
                let old = id - 3;
                stmt += &format!(
                    " DELETE FROM public_addresses WHERE member_id = {old}; \
                     DELETE FROM member_addresses WHERE member_id = {old}; DELETE FROM members WHERE id = {old};"
                );
            }
            stmt += " COMMIT;\n";
            input.write_all(stmt.as_bytes()).map_err(|e| format!("sqlite3: {e}"))?;
            k += 1;
            // Memory once warm (after 10 s), then at the end.
            let rss = self.rss();
            if t0.elapsed() >= secs(10) {
                if rss_first == 0 {
                    rss_first = rss;
                }
                rss_last = rss;
                rss_peak = rss_peak.max(rss);
            }
            std::thread::sleep(Duration::from_secs(u64::from(k)).saturating_sub(t0.elapsed()));
        }
        drop(input);
        let _ = sqlite.wait();
        let (sent, echoed) = join(stream)?;
        let opened = join(flows)?;
        let conns = join(tcp)?;
        std::thread::sleep(secs(1));
        let after = self.stats().unwrap_or_default();
        let reloads = after.published_generation.saturating_sub(before.published_generation);
        let growth = rss_last as f64 / rss_first.max(1) as f64 - 1.0;
        r.add(
            &format!("soak ({} s of churn): resident memory flat within 5 %", scale.soak_s),
            growth.abs() <= 0.05 && rss_first > 0,
            format!(
                "{rss_first} KiB after 10 s, {rss_peak} KiB at most, {rss_last} KiB at the end ({:+.1} %); \
                 {k} members added and removed, {reloads} policy generations; {opened} new UDP flows; \
                 flows in the table at the end {}",
                growth * 100.0,
                after.flows
            ),
        );
        let ok = conns.iter().filter(|c| c.is_some()).count();
        r.add(
            "soak: new TCP connections all succeed",
            ok == conns.len() && !conns.is_empty(),
            format!("{ok} of {} answered; {}", conns.len(), times(&conns)),
        );
        // Every frame a worker received went out, was dropped with a reason,
        // or is held (the router's own ICMP errors go out without coming in).
        let c = |n: &str| after.counter(n);
        let drops: u64 = control::api::live::drop_names()
            .filter(|n| !["rx_lost", "xdp_unserved", "af_packet_not_admitted"].contains(n))
            .map(c)
            .sum();
        let held: u64 = after.shaper_load.iter().map(|s| s.held_frames as u64).sum::<u64>()
            + after.workers.iter().map(|w| w.waiting as u64).sum::<u64>();
        let (rx, tx, icmp) = (c("rx_frames"), c("tx_frames"), c("router_icmp_sent"));
        r.add(
            "every frame received is accounted for: rx + own ICMP = tx + drops + held, exactly",
            rx + icmp == tx + drops + held,
            format!(
                "rx {rx} + ICMP {icmp}, tx {tx} + drops {drops} + held {held} (since the restart); drops in the soak: {}",
                self.drops_since(&before, &after)
            ),
        );
        Ok((sent, echoed))
    }

    /// `sqlite3` on the member database, taking statements on its input:
    /// WAL and no sync per statement (this connection only), so that it
    /// keeps up with a storm's rate.
    fn sqlite(&self) -> Result<(std::process::Child, std::process::ChildStdin), String> {
        let mut sqlite = std::process::Command::new("sqlite3")
            .arg(self.dir.join("t.db"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sqlite3: {e}"))?;
        let mut input = sqlite.stdin.take().ok_or("sqlite3 has no input")?;
        input
            .write_all(b".timeout 2000\nPRAGMA journal_mode = WAL;\nPRAGMA synchronous = NORMAL;\n")
            .map_err(|e| format!("sqlite3: {e}"))?;
        Ok((sqlite, input))
    }

    /// A member's usage in the accounting table: (up, down) bytes.
    fn written(&self, member: u32) -> Result<(u64, u64), String> {
        let db = self.dir.join("t.db").display().to_string();
        crate::block_on(async {
            let d = control::db::Database::open(&db).await?;
            let rows = d.read_accounting(member).await?;
            d.close().await;
            Ok::<_, control::db::DbError>(rows.iter().fold((0, 0), |(u, d), r| (u + r.up_bytes, d + r.down_bytes)))
        })
        .map_err(|e| e.to_string())
    }

    /// Waits for a flood to end, watching a figure of the box's stats:
    /// (frames sent, the figure's peak).
    fn watch(
        &self,
        flood: JoinHandle<Result<u64, String>>,
        figure: impl Fn(&Stats) -> usize,
    ) -> Result<(u64, usize), String> {
        let mut peak = 0;
        while !flood.is_finished() {
            peak = peak.max(self.stats().map_or(0, |s| figure(&s)));
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok((join(flood)?, peak))
    }

    fn drops_since(&self, before: &Stats, after: &Stats) -> String {
        let v: Vec<String> = control::api::live::drop_names()
            .filter_map(|n| {
                let d = after.counter(n).saturating_sub(before.counter(n));
                (d > 0).then(|| format!("{n} {d}"))
            })
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    fn start(&mut self, opts: &AttackOptions) -> Result<(), String> {
        let config = self.dir.join("torwart.toml");
        let text = format!(
            "database = \"{}\"\n[[ports]]\ninterface = \"p0\"\nside = \"inside\"\n[[ports]]\ninterface = \"p1\"\n\
             side = \"outside\"\n[workers]\ncount = 1\nidle = \"sleep\"\n[engine]\nmax_flows = {MAX_FLOWS}\n\
             nat_quota = {NAT_QUOTA}\nhalf_open_per_member = {HALF_OPEN}\n[accounting]\n\
             flush_interval = \"{FLUSH_S}s\"\n[stats]\nfile = \"{}\"\ninterval = \"100ms\"\n[api]\nsocket = \"{}\"\n",
            self.dir.join("t.db").display(),
            self.dir.join("stats.json").display(),
            self.dir.join("api.sock").display(),
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("torwart.log"))
            .map_err(|e| e.to_string())?;
        let exe = opts.torwart.display().to_string();
        let x = self.x.clone();
        self.ns.spawn("x", &x, &exe, &["run", "--config", &config.display().to_string()], Some(log))
    }

    fn init_db(&self) -> Result<(), String> {
        super::member_db(&self.dir.join("t.db"), MEMBERS)
    }

    fn mac(&self, ns: &str, dev: &str) -> Result<MacAddr, String> {
        let o = self.ns.output(ns, "ip", &["-j", "link", "show", "dev", dev], secs(5))?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| format!("ip -j link: {e}"))?;
        let text = v.pointer("/0/address").and_then(|a| a.as_str()).ok_or(format!("no address for {dev}"))?;
        let b: Vec<u8> = text.split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
        MacAddr::from_bytes(&b).ok_or(format!("bad address {text} of {dev}"))
    }

    /// torwart's resident memory, KiB.
    fn rss(&self) -> u64 {
        let Some(pid) = self.ns.pid("x") else { return 0 };
        // `ip netns exec` runs torwart as its child (exec: the same pid).
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }

    fn sh(&self, ns: &str, script: &str) -> Result<(), String> {
        self.ns.exec(ns, "sh", &["-c", script]).map_err(|e| format!("{script}: {e}"))
    }

    fn stats(&self) -> Option<Stats> {
        Stats::read(&self.dir.join("stats.json")).ok()
    }

    fn wait_for(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Lab) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(self) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("torwart.log")).unwrap_or_default();
        Err(format!("timed out waiting for {what}:\n{log}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.ns.stop("x", secs(10));
    }
}

fn eth0() -> Eth {
    Eth { src: MacAddr::ZERO, dst: MacAddr::ZERO, vlan: None }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn join<T>(h: JoinHandle<Result<T, String>>) -> Result<T, String> {
    h.join().map_err(|_| "a client thread died".to_owned())?
}

/// A small generator for forged fields (not for anything secret).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn word(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Sends frames from namespace `ns` out of `dev` (AF_PACKET, in batches of
/// `sendmmsg`), `rate` a second for at most `run`: frame `i` is what
/// `make(i, rng, buf)` writes (its length; 0 ends the flood). Returns the
/// frames sent.
fn flood(
    ns: &str,
    dev: &str,
    rate: u64,
    run: Duration,
    mut make: impl FnMut(u64, &mut Rng, &mut [u8]) -> usize + Send + 'static,
) -> JoinHandle<Result<u64, String>> {
    let (ns, dev) = (ns.to_owned(), dev.to_owned());
    std::thread::spawn(move || {
        netns::enter(&ns)?;
        let name = std::ffi::CString::new(dev.clone()).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(format!("no interface {dev} in {ns}"));
        }
        // SAFETY: plain socket call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(format!("AF_PACKET socket: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a socket we just opened and nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        use std::os::fd::AsRawFd;
        // SAFETY: a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(format!("bind to {dev}: {}", std::io::Error::last_os_error()));
        }
        const BATCH: usize = 64;
        const LEN: usize = 256;
        let mut bufs = vec![[0u8; LEN]; BATCH];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
        let (t0, mut sent, mut i) = (Instant::now(), 0u64, 0u64);
        'outer: while t0.elapsed() < run {
            let mut lens = [0usize; BATCH];
            let mut n = 0;
            while n < BATCH {
                let len = make(i, &mut rng, &mut bufs[n]);
                if len == 0 {
                    break;
                }
                lens[n] = len.max(60);
                i += 1;
                n += 1;
            }
            if n == 0 {
                break 'outer;
            }
            let mut iov: Vec<libc::iovec> =
                (0..n).map(|k| libc::iovec { iov_base: bufs[k].as_mut_ptr().cast(), iov_len: lens[k] }).collect();
            // SAFETY: zeroed mmsghdr is valid; each points at one iovec above.
            let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
            }
            let mut done = 0;
            while done < n {
                // SAFETY: msgs[done..n] are valid headers over live buffers.
                let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs[done..].as_mut_ptr(), (n - done) as u32, 0) };
                if rc <= 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == std::io::ErrorKind::WouldBlock {
                        std::thread::sleep(Duration::from_micros(100));
                        continue;
                    }
                    return Err(format!("sendmmsg on {dev}: {e}"));
                }
                done += rc as usize;
            }
            sent += n as u64;
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            std::thread::sleep(due.saturating_sub(t0.elapsed()));
        }
        Ok(sent)
    })
}

/// `n` new connections from `ns` to `server`, one every `pause`: each opens,
/// sends a line and waits for its echo (3 s at most). Per attempt, the
/// seconds it took, or None.
fn connects(ns: &str, server: SocketAddr, n: usize, pause: Duration) -> JoinHandle<Result<Vec<Option<f64>>, String>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns)?;
        let mut results = Vec::with_capacity(n);
        // Attempts in flight, oldest first; the finished ones are joined as
        // the next start (a soak makes tens of thousands).
        let mut pending = std::collections::VecDeque::new();
        for i in 0..n {
            std::thread::sleep(pause);
            pending.push_back(std::thread::spawn(move || {
                let t = Instant::now();
                let limit = Duration::from_secs(3);
                let s = TcpStream::connect_timeout(&server, limit).ok()?;
                s.set_read_timeout(Some(limit)).ok()?;
                (&s).write_all(format!("n{i} 0\n").as_bytes()).ok()?;
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).ok()?;
                (!line.is_empty()).then(|| t.elapsed().as_secs_f64())
            }));
            while pending.front().is_some_and(|t: &JoinHandle<Option<f64>>| t.is_finished()) {
                results.push(pending.pop_front().and_then(|t| t.join().ok()).flatten());
            }
        }
        results.extend(pending.into_iter().map(|t| t.join().unwrap_or(None)));
        Ok(results)
    })
}

/// p50 and max of the successful attempts.
fn times(res: &[Option<f64>]) -> String {
    let mut t: Vec<f64> = res.iter().flatten().copied().collect();
    if t.is_empty() {
        return "none answered".into();
    }
    t.sort_by(f64::total_cmp);
    format!("time to the echo: p50 {:.1} ms, max {:.1} ms", t[t.len() / 2] * 1e3, t[t.len() - 1] * 1e3)
}

/// A UDP stream of `pps` datagrams a second (`SOAK_PAYLOAD` bytes each)
/// from `src` in `ns` to `server` for `run`: (sent, echoes received).
fn udp_stream_from(
    ns: &str,
    src: Ipv4Addr,
    server: SocketAddr,
    pps: u64,
    run: Duration,
) -> JoinHandle<Result<(u64, u64), String>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns)?;
        let s = UdpSocket::bind((IpAddr::from(src), 0)).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let (t0, mut sent, mut received) = (Instant::now(), 0u64, 0u64);
        let mut buf = [0u8; 2048];
        let payload = [b's'; SOAK_PAYLOAD];
        let mut drain = |received: &mut u64| {
            while s.recv(&mut buf).is_ok() {
                *received += 1;
            }
        };
        while t0.elapsed() < run {
            if s.send_to(&payload, server).is_ok() {
                sent += 1;
            }
            drain(&mut received);
            let due = Duration::from_secs_f64(sent as f64 / pps as f64);
            std::thread::sleep(due.saturating_sub(t0.elapsed()));
        }
        let end = Instant::now() + secs(1);
        while Instant::now() < end && received < sent {
            drain(&mut received);
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((sent, received))
    })
}

/// New UDP flows from alice (a new socket, so a new source port, each), `rate` a
/// second for `run`; how many were sent.
fn new_flows(ns: &str, server: SocketAddr, rate: u64, run: Duration) -> JoinHandle<Result<u64, String>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns)?;
        let (t0, mut sent) = (Instant::now(), 0u64);
        while t0.elapsed() < run {
            let s = UdpSocket::bind((IpAddr::from(ALICE), 0)).map_err(|e| e.to_string())?;
            if s.send_to(b"flow", server).is_ok() {
                sent += 1;
            }
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            std::thread::sleep(due.saturating_sub(t0.elapsed()));
        }
        Ok(sent)
    })
}

/// Prints the report.
pub fn print(r: &AttackReport) {
    println!();
    for c in &r.checks {
        println!("  [{}] {}: {}", if c.passed { "ok" } else { "FAILED" }, c.name, c.detail);
    }
    println!();
    let failed = r.checks.iter().filter(|c| !c.passed).count();
    if failed == 0 {
        println!("lab --attack: all {} checks passed", r.checks.len());
    } else {
        println!("lab --attack: {failed} of {} checks FAILED; the box's log:\n{}", r.checks.len(), r.logs);
    }
}
