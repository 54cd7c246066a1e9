//! `torwart lab`: a whole member network in network namespaces on this
//! machine, with torwart as its gateway, driven by real clients.
//!
//! ```text
//!  alice-laptop ─┐                                                       ┌ web   203.0.113.10, 2001:db8:f00d::10
//!  alice-phone  ─┤ br1                                                   │ iperf 203.0.113.11
//!  bob-desktop  ─┤ br2 ─ core ── in0 [ box: torwart ] out0 ── internet ──┘
//!  bob-console  ─┤ br3    10.255.0.2  10.255.0.1   100.64.0.1   100.64.0.2
//!  carol-laptop ─┘                                 (MTU 1400 on this link)
//! ```
//!
//! Members (the embedded `members.json`): alice (two devices, an IPv6 /64,
//! a port forward 198.18.0.11:8080 → laptop:80, an IPv6 opening for the
//! laptop's port 80), bob (two devices), carol (a test account). Each has
//! one public IPv4 address. The box's kernel owns the addresses and routes
//! like any Linux router; torwart mirrors them and forwards.
//!
//! The lab builds this, writes an SQLite member database and a config,
//! starts `torwart run` in the box, starts web servers (which answer "you
//! are ADDRESS:PORT", so clients see their translation) and an iperf3
//! server, runs the checks below, stops torwart (SIGTERM: accounting is
//! flushed) and prints what happened. Everything is torn down at the end,
//! on error and on Ctrl-C (`Namespaces` deletes on drop).

pub mod attack;
mod forward;
mod http;
pub mod netns;
pub mod page;
pub mod pair;
mod traffic;

use netns::Namespaces;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lab's member database, imported into a fresh SQLite file.
pub const MEMBERS_JSON: &str = include_str!("members.json");

/// How to run the lab.
#[derive(Clone, Debug)]
pub struct Options {
    /// The torwart binary to start in the box.
    pub torwart: PathBuf,
    /// Prefix of every namespace name (keep it short: interface names are
    /// not derived from it).
    pub prefix: String,
    /// Where the database, config, logs and stats go.
    pub dir: PathBuf,
    /// "xdp" or "af_packet".
    pub backend: String,
    /// Seconds of iperf3.
    pub iperf_seconds: u32,
    /// The workers' idle mode: "sleep" (default: the lab shares the machine) or "busy".
    pub idle: String,
    /// Print progress.
    pub verbose: bool,
    /// After the checks, leave the lab up (torwart running, some traffic
    /// flowing) for a person to look at the web page, until interrupted.
    pub keep: bool,
    /// The host's port for the box's web page (0: any free one).
    pub page_port: u16,
}

/// One check: what was tried, whether it did what a member network expects, and what was seen.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Everything the lab saw.
#[derive(Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    /// torwart's final stats (its `stats.file` at stop).
    pub stats: control::stats::Stats,
    /// Usage rows the database holds after the stop, per member: (member, up bytes, down bytes).
    pub accounting: Vec<(u32, u64, u64)>,
    pub torwart_exit: Option<i32>,
    pub torwart_log: String,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// A counter from torwart's final stats (engine drops, dataplane counters), 0 if absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.stats.counter(name)
    }
}

struct Device {
    ns: String,
    member: &'static str,
    v4: &'static str,
    v6: &'static str,
    public: &'static str,
    bridge: u8,
}

const DEVICES: &[(&str, &str, &str, &str, &str, u8)] = &[
    ("alice-laptop", "alice", "10.0.1.10", "2001:db8:1:1::10", "198.18.0.11", 1),
    ("alice-phone", "alice", "10.0.1.11", "2001:db8:1:1::11", "198.18.0.11", 1),
    ("bob-desktop", "bob", "10.0.2.10", "2001:db8:1:2::10", "198.18.0.12", 2),
    ("bob-console", "bob", "10.0.2.11", "2001:db8:1:2::11", "198.18.0.12", 2),
    ("carol-laptop", "carol", "10.0.3.10", "2001:db8:1:3::10", "198.18.0.13", 3),
];

const WEB4: &str = "203.0.113.10";
const WEB6: &str = "2001:db8:f00d::10";
const IPERF4: &str = "203.0.113.11";
const LINK_MTU_OUTSIDE: u32 = 1400;
/// The lab's uplink capacity, each way, that torwart's shaper enforces.
const LAB_UPLINK_MBIT: u64 = 300;
/// carol's test-account plan (members.json): upload and download, Mbit/s.
const TEST_PLAN_MBIT: (f64, f64) = (2.0, 4.0);

/// What an iperf3 run reported.
struct Iperf {
    /// It ran and moved data.
    ok: bool,
    /// Mbit/s of payload received.
    mbit: f64,
    /// The client's TCP maximum segment size.
    mss: u64,
    /// Segments the sender sent again.
    retransmits: u64,
}

/// A fresh SQLite member database at `db` holding `json` (written next to
/// it as `members.json`, and imported).
fn member_db(db: &Path, json: &str) -> Result<(), String> {
    let _ = std::fs::remove_file(db);
    let url = db.display().to_string();
    let file = db.with_file_name("members.json");
    std::fs::write(&file, json).map_err(|e| e.to_string())?;
    crate::block_on(async {
        let d = control::db::Database::open_or_create(&url).await?;
        d.init().await?;
        d.import(&file).await?;
        d.close().await;
        Ok::<(), control::db::DbError>(())
    })
    .map_err(|e| e.to_string())
}

/// Runs the lab: build, start, check, stop, report. The namespaces are gone when it returns.
pub fn run(opts: &Options, interrupted: &AtomicBool) -> Result<Report, String> {
    if !control::sys::is_root() {
        return Err("the lab needs root: it makes network namespaces and attaches XDP programs".into());
    }
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("cannot create {}: {e}", opts.dir.display()))?;
    let say = |s: &str| {
        if opts.verbose {
            println!("{s}");
        }
    };
    let p = &opts.prefix;
    let devices: Vec<Device> = DEVICES
        .iter()
        .map(|&(n, member, v4, v6, public, bridge)| Device { ns: format!("{p}{n}"), member, v4, v6, public, bridge })
        .collect();
    let (boxns, core, inet) = (format!("{p}box"), format!("{p}core"), format!("{p}internet"));

    let mut ns = Namespaces::new();
    say("building the network: box, core router, internet, 5 devices of 3 members");
    build(&mut ns, &boxns, &core, &inet, &devices)?;
    bail_if(interrupted)?;

    say("writing the member database and the configuration");
    let db = opts.dir.join("members.db");
    member_db(&db, MEMBERS_JSON)?;
    let db_url = db.display().to_string();
    let stats_file = opts.dir.join("stats.json");
    let _ = std::fs::remove_file(&stats_file);
    let config = opts.dir.join("torwart.toml");
    std::fs::write(&config, config_text(&db_url, &stats_file, &opts.backend, &opts.idle)).map_err(|e| e.to_string())?;

    say(&format!("starting torwart in the box ({} backend)", opts.backend));
    let log_path = opts.dir.join("torwart.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let exe = opts.torwart.display().to_string();
    let cfg = config.display().to_string();
    ns.spawn("torwart", &boxns, &exe, &["run", "--config", &cfg], Some(log))?;
    wait_ready(&mut ns, &stats_file, &log_path)?;
    bail_if(interrupted)?;
    // The box knows its neighbouring routers, as a box in service does.
    for n in ["10.255.0.2", "fd00:255::2", "100.64.0.2", "2001:db8:ffff::2"] {
        let _ = ns.output(&boxns, "ping", &["-c", "1", "-W", "1", n], Duration::from_secs(3));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sa = |s: &str| s.parse::<SocketAddr>().map_err(|e| e.to_string());
    http::serve(&inet, "the internet", &[sa(&format!("{WEB4}:80"))?, sa(&format!("[{WEB6}]:80"))?], Arc::clone(&stop))?;
    for d in &devices {
        let addrs = [sa(&format!("{}:80", d.v4))?, sa(&format!("[{}]:80", d.v6))?];
        http::serve(&d.ns, &d.ns[p.len()..], &addrs, Arc::clone(&stop))?;
    }
    ns.spawn("iperf3", &inet, "iperf3", &["-s", "-B", IPERF4], None)?;
    let page = forward::start(&stats_file.with_file_name("api.sock"), opts.page_port, Arc::clone(&stop))?;
    say(&format!("the box's web page, while the lab runs: http://{page}/"));

    let mut checks = Vec::new();
    let result = drive(opts, &mut ns, &devices, &inet, page, &mut checks, interrupted, &say);
    if result.is_ok() && opts.keep {
        keep(&mut ns, &devices, page, interrupted, &say);
    }
    stop.store(true, Ordering::Relaxed);

    say("stopping torwart (SIGTERM: it drains and writes the accounting)");
    let exit = ns.stop("torwart", Duration::from_secs(15)).map(|s| s.code().unwrap_or(-1));
    let torwart_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    result?;
    let stats = control::stats::Stats::read(&stats_file).unwrap_or_default();
    let accounting = crate::block_on(async {
        let d = control::db::Database::open(&db_url).await?;
        let mut out = Vec::new();
        for id in 1..=3u32 {
            let rows = d.read_accounting(id).await?;
            let up = rows.iter().map(|r| r.up_bytes).sum();
            let down = rows.iter().map(|r| r.down_bytes).sum();
            out.push((id, up, down));
        }
        d.close().await;
        Ok::<_, control::db::DbError>(out)
    })
    .map_err(|e| e.to_string())?;
    checks.push(Check {
        name: "torwart stops cleanly".into(),
        passed: exit == Some(0),
        detail: format!("exit status {exit:?}"),
    });
    let up: u64 = accounting.iter().map(|a| a.1).sum();
    checks.push(Check {
        name: "usage written to the database".into(),
        passed: accounting.iter().all(|a| a.1 > 0 && a.2 > 0),
        detail: format!("{up} bytes up in all; per member (id, up, down): {accounting:?}"),
    });
    Ok(Report { checks, stats, accounting, torwart_exit: exit, torwart_log })
}

/// Leaves the lab up with a member's download running until interrupted.
fn keep(ns: &mut Namespaces, devices: &[Device], page: SocketAddr, interrupted: &AtomicBool, say: &dyn Fn(&str)) {
    let bob = &devices[2].ns;
    let load = ns.spawn("keep-iperf", bob, "iperf3", &["-c", IPERF4, "-t", "0", "-b", "20M", "-R"], None);
    if let Err(e) = load {
        say(&format!("(no background traffic: {e})"));
    }
    say(&format!("the lab stays up: open http://{page}/ (bob downloads at 20 Mbit/s); Ctrl-C tears it down"));
    while !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if !ns.alive("torwart") {
            say("torwart exited; tearing the lab down");
            break;
        }
    }
    ns.stop("keep-iperf", Duration::from_secs(2));
}

fn bail_if(interrupted: &AtomicBool) -> Result<(), String> {
    if interrupted.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn config_text(db: &str, stats: &Path, backend: &str, idle: &str) -> String {
    format!(
        r#"# written by torwart lab
database = "{db}"

[[ports]]
interface = "in0"
side = "inside"

[[ports]]
interface = "out0"
side = "outside"

[workers]
count = 1
idle = "{idle}"

[io]
backend = "{backend}"

[engine]
max_flows = 65536

[accounting]
flush_interval = "5s"

[shaping]
uplink_up_mbit = {uplink}
uplink_down_mbit = {uplink}

[stats]
file = "{}"
interval = "500ms"
log_interval = "5s"

[api]
socket = "{}"
"#,
        stats.display(),
        stats.with_file_name("api.sock").display(),
        uplink = LAB_UPLINK_MBIT,
    )
}

/// Builds the namespaces, links, addresses and routes.
fn build(ns: &mut Namespaces, boxns: &str, core: &str, inet: &str, devices: &[Device]) -> Result<(), String> {
    for n in [boxns, core, inet] {
        ns.add(n)?;
    }
    for d in devices {
        ns.add(&d.ns)?;
    }
    let veth = |a: &str, a_ns: &str, b: &str, b_ns: &str| {
        ip(&["link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns])
    };
    use netns::ip;
    // box <-> core, box <-> internet
    veth("in0", boxns, "up0", core)?;
    veth("out0", boxns, "dn0", inet)?;
    let x = |n: &str, args: &[&str]| ns.exec(n, "ip", args);
    x(boxns, &["addr", "add", "10.255.0.1/30", "dev", "in0"])?;
    x(boxns, &["addr", "add", "fd00:255::1/64", "dev", "in0", "nodad"])?;
    x(boxns, &["addr", "add", "100.64.0.1/30", "dev", "out0"])?;
    x(boxns, &["addr", "add", "2001:db8:ffff::1/64", "dev", "out0", "nodad"])?;
    let mtu = LINK_MTU_OUTSIDE.to_string();
    x(boxns, &["link", "set", "out0", "mtu", &mtu])?;
    x(inet, &["link", "set", "dn0", "mtu", &mtu])?;
    // Addresses stay on a link that goes down (the lab pulls a cable).
    ns.exec(inet, "sysctl", &["-qw", "net.ipv6.conf.all.keep_addr_on_down=1"])?;
    for (n, i) in [(boxns, "in0"), (boxns, "out0"), (core, "up0"), (inet, "dn0")] {
        x(n, &["link", "set", i, "up"])?;
    }
    // The box is a router whose forwarding torwart does: the kernel's own
    // forwarding stays off, so that nothing crosses if torwart is not running.
    ns.exec(boxns, "sysctl", &["-qw", "net.ipv4.ip_forward=0"])?;
    ns.exec(boxns, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=0"])?;
    x(boxns, &["route", "add", "default", "via", "100.64.0.2"])?;
    x(boxns, &["route", "add", "10.0.0.0/16", "via", "10.255.0.2"])?;
    x(boxns, &["-6", "route", "add", "default", "via", "2001:db8:ffff::2"])?;
    x(boxns, &["-6", "route", "add", "2001:db8:1::/48", "via", "fd00:255::2"])?;
    // core router
    x(core, &["addr", "add", "10.255.0.2/30", "dev", "up0"])?;
    x(core, &["addr", "add", "fd00:255::2/64", "dev", "up0", "nodad"])?;
    x(core, &["route", "add", "default", "via", "10.255.0.1"])?;
    x(core, &["-6", "route", "add", "default", "via", "fd00:255::1"])?;
    for b in 1..=3u8 {
        let br = format!("br{b}");
        x(core, &["link", "add", &br, "type", "bridge"])?;
        x(core, &["addr", "add", &format!("10.0.{b}.1/24"), "dev", &br])?;
        x(core, &["addr", "add", &format!("2001:db8:1:{b}::1/64"), "dev", &br, "nodad"])?;
        x(core, &["link", "set", &br, "up"])?;
    }
    for (i, d) in devices.iter().enumerate() {
        let port = format!("d{i}");
        veth("eth0", &d.ns, &port, core)?;
        x(core, &["link", "set", &port, "master", &format!("br{}", d.bridge)])?;
        x(core, &["link", "set", &port, "up"])?;
        x(&d.ns, &["addr", "add", &format!("{}/24", d.v4), "dev", "eth0"])?;
        x(&d.ns, &["addr", "add", &format!("{}/64", d.v6), "dev", "eth0", "nodad"])?;
        x(&d.ns, &["link", "set", "eth0", "up"])?;
        x(&d.ns, &["route", "add", "default", "via", &format!("10.0.{}.1", d.bridge)])?;
        x(&d.ns, &["-6", "route", "add", "default", "via", &format!("2001:db8:1:{}::1", d.bridge)])?;
    }
    // internet: servers on loopback, routes back to the members' public addresses
    x(inet, &["addr", "add", "100.64.0.2/30", "dev", "dn0"])?;
    x(inet, &["addr", "add", "2001:db8:ffff::2/64", "dev", "dn0", "nodad"])?;
    for a in [WEB4, IPERF4] {
        x(inet, &["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
    }
    x(inet, &["addr", "add", &format!("{WEB6}/128"), "dev", "lo"])?;
    // The servers advertise the MSS of a 1500-byte network (as a server
    // behind a larger-MTU network would): the members' devices then send
    // 1500-byte packets, and only path MTU discovery across the box's
    // 1400-byte link makes uploads work.
    x(inet, &["route", "add", "198.18.0.0/24", "via", "100.64.0.1", "advmss", "1460"])?;
    x(inet, &["-6", "route", "add", "2001:db8:1::/48", "via", "2001:db8:ffff::1", "advmss", "1440"])?;
    // veth hands frames on with the transport checksum left to "hardware"
    // (CHECKSUM_PARTIAL); a real NIC fills it in on the wire. The box's
    // neighbours send to torwart as a NIC would: with complete checksums.
    ns.exec(core, "ethtool", &["-K", "up0", "tx", "off"])?;
    ns.exec(inet, "ethtool", &["-K", "dn0", "tx", "off"])?;
    Ok(())
}

/// Waits until torwart has published stats with a policy loaded, or fails with its log.
fn wait_ready(ns: &mut Namespaces, stats: &Path, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !ns.alive("torwart") {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("torwart exited at start:\n{}", text.trim_end()));
        }
        let ready = control::stats::Stats::read(stats).is_ok_and(|s| s.generation >= 1);
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Err(format!("torwart did not become ready within 20 s; its log:\n{}", text.trim_end()))
}

/// The traffic and what each client saw.
/// The traffic and what each client saw: each stage a [`Drive`] method.
fn drive(
    opts: &Options,
    ns: &mut Namespaces,
    devices: &[Device],
    inet: &str,
    page: SocketAddr,
    checks: &mut Vec<Check>,
    interrupted: &AtomicBool,
    say: &dyn Fn(&str),
) -> Result<(), String> {
    let mut d = Drive { opts, ns, devices, inet, page, checks, say };
    d.ping_out()?;
    bail_if(interrupted)?;
    d.curl_out()?;
    bail_if(interrupted)?;
    d.inbound()?;
    bail_if(interrupted)?;
    d.traceroute_and_path_mtu()?;
    bail_if(interrupted)?;
    d.throughput()?;
    bail_if(interrupted)?;
    d.pull_the_cable()?;
    d.latency_under_load()?;
    bail_if(interrupted)?;
    d.web_page()
}

/// What the lab's stages share.
struct Drive<'a> {
    opts: &'a Options,
    ns: &'a mut Namespaces,
    devices: &'a [Device],
    /// The internet's namespace.
    inet: &'a str,
    /// Where the box's web page is forwarded on the host.
    page: SocketAddr,
    checks: &'a mut Vec<Check>,
    say: &'a dyn Fn(&str),
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A command's standard output, trimmed.
fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

impl Drive<'_> {
    fn add(&mut self, name: String, passed: bool, detail: String) {
        (self.say)(&format!("  {} {name}: {detail}", if passed { "ok  " } else { "FAIL" }));
        self.checks.push(Check { name, passed, detail });
    }

    /// Every device pings the internet, IPv4 and IPv6.
    fn ping_out(&mut self) -> Result<(), String> {
        (self.say)("pinging the internet from every device (IPv4 and IPv6)");
        for d in self.devices {
            for (fam, dst) in [("4", WEB4), ("6", WEB6)] {
                let o = self.ns.output(
                    &d.ns,
                    "ping",
                    &[&format!("-{fam}"), "-c", "3", "-i", "0.2", "-W", "2", dst],
                    secs(10),
                )?;
                let line = text(&o).lines().find(|l| l.contains("packets transmitted")).unwrap_or("").to_owned();
                self.add(format!("ping -{fam} from {}", &d.ns[self.opts.prefix.len()..]), o.status.success(), line);
            }
        }
        Ok(())
    }

    /// Every device fetches a page; the server says which address it sees.
    fn curl_out(&mut self) -> Result<(), String> {
        (self.say)("fetching a page from the internet with curl (the server says which address it sees)");
        for d in self.devices {
            let o = self.ns.output(&d.ns, "curl", &["-s", "--max-time", "5", &format!("http://{WEB4}/")], secs(8))?;
            let body = text(&o);
            let seen = body.rsplit("you are ").next().unwrap_or("").to_owned();
            let ok = o.status.success() && seen.starts_with(&format!("{}:", d.public));
            self.add(
                format!("curl from {} leaves as {} ({})", &d.ns[self.opts.prefix.len()..], d.public, d.member),
                ok,
                format!("{} -> server saw {seen}", d.v4),
            );
            let o = self.ns.output(&d.ns, "curl", &["-s", "--max-time", "5", &format!("http://[{WEB6}]/")], secs(8))?;
            let seen = text(&o).rsplit("you are ").next().unwrap_or("").to_owned();
            let ok = o.status.success() && seen.starts_with(&format!("[{}]:", d.v6));
            self.add(
                format!("curl -6 from {} keeps its address", &d.ns[self.opts.prefix.len()..]),
                ok,
                format!("server saw {seen}"),
            );
        }
        Ok(())
    }

    /// From the internet: the port forward, the IPv6 opening, unsolicited attempts.
    fn inbound(&mut self) -> Result<(), String> {
        (self.say)("from the internet: the port forward, the IPv6 opening, and unsolicited attempts");
        let o = self.ns.output(self.inet, "curl", &["-s", "--max-time", "5", "http://198.18.0.11:8080/"], secs(8))?;
        self.add(
            "port forward 198.18.0.11:8080 reaches alice's laptop".into(),
            o.status.success() && text(&o).contains("alice-laptop"),
            text(&o),
        );
        let o = self.ns.output(self.inet, "curl", &["-s", "--max-time", "5", "http://[2001:db8:1:1::10]/"], secs(8))?;
        self.add(
            "IPv6 opening reaches alice's laptop".into(),
            o.status.success() && text(&o).contains("alice-laptop"),
            text(&o),
        );
        let o = self.ns.output(self.inet, "curl", &["-s", "--max-time", "2", "http://198.18.0.12:80/"], secs(5))?;
        self.add(
            "unsolicited inbound to bob's public address is dropped".into(),
            !o.status.success(),
            format!("curl exit {:?} (bob's desktop does serve port 80)", o.status.code()),
        );
        let o = self.ns.output(self.inet, "curl", &["-s", "--max-time", "2", "http://[2001:db8:1:2::10]/"], secs(5))?;
        self.add(
            "unsolicited IPv6 inbound to bob's desktop is dropped".into(),
            !o.status.success(),
            format!("curl exit {:?} (bob's desktop does serve port 80)", o.status.code()),
        );
        Ok(())
    }

    /// traceroute through the box, and path MTU discovery across the 1400-byte link.
    fn traceroute_and_path_mtu(&mut self) -> Result<(), String> {
        (self.say)("traceroute through the box, and path MTU discovery across the 1400-byte link");
        let laptop = &self.devices[0];
        let o = self.ns.output(&laptop.ns, "traceroute", &["-n", "-q", "1", "-w", "1", "-m", "5", WEB4], secs(15))?;
        let hops = text(&o);
        let box_hop = hops.lines().any(|l| l.split_whitespace().nth(1) == Some("10.255.0.1"));
        let reached = hops.lines().any(|l| l.split_whitespace().nth(1) == Some(WEB4));
        self.add("traceroute shows the box as a hop".into(), box_hop && reached, hops.replace('\n', " | "));
        let o =
            self.ns.output(&laptop.ns, "traceroute", &["-6", "-n", "-q", "1", "-w", "1", "-m", "5", WEB6], secs(15))?;
        let hops6 = text(&o);
        let box_hop6 = hops6.lines().any(|l| l.split_whitespace().nth(1) == Some("fd00:255::1"));
        self.add("traceroute -6 shows the box as a hop".into(), box_hop6, hops6.replace('\n', " | "));
        let upload_path = self.opts.dir.join("upload.bin");
        let upload = upload_path.to_str().ok_or("the lab directory is not UTF-8")?;
        std::fs::write(upload, vec![b'x'; 300_000]).map_err(|e| e.to_string())?;
        for (fam, url, dst) in
            [("4", format!("http://{WEB4}/upload"), WEB4), ("6", format!("http://[{WEB6}]/upload"), WEB6)]
        {
            let _ = self.ns.exec(&laptop.ns, "ip", &[&format!("-{fam}"), "route", "flush", "cache"]);
            let o = self.ns.output(
                &laptop.ns,
                "curl",
                &["-s", "--max-time", "10", "-H", "Expect:", "--data-binary", &format!("@{upload}"), &url],
                secs(12),
            )?;
            let route = self.ns.output(&laptop.ns, "ip", &[&format!("-{fam}"), "route", "get", dst], secs(3))?;
            let learned = text(&route).contains(&format!("mtu {LINK_MTU_OUTSIDE}"));
            let ok = o.status.success() && text(&o).contains("received 300000 bytes") && learned;
            self.add(
                format!(
                    "path MTU discovery (IPv{fam}): a 300 kB upload crosses, the laptop learns MTU {LINK_MTU_OUTSIDE}"
                ),
                ok,
                format!("{} | {}", text(&o), text(&route).replace('\n', " ")),
            );
        }
        let _ = std::fs::remove_file(upload);
        Ok(())
    }

    /// The web page in headless Chromium while bob downloads (not checked
    /// without Chromium; the tests need it in CI).
    fn web_page(&mut self) -> Result<(), String> {
        let Some(browser) = page::chromium() else {
            (self.say)("chromium is not installed: the web page is not checked (apt-get install chromium)");
            return Ok(());
        };
        (self.say)(&format!("the web page at http://{}/ in headless Chromium while bob downloads", self.page));
        let bob = self.devices[2].ns.clone();
        self.ns.spawn("page-iperf", &bob, "iperf3", &["-c", IPERF4, "-t", "30", "-b", "20M", "-R"], None)?;
        std::thread::sleep(secs(2));
        let seen = page::look(browser, self.page, secs(3), &self.opts.dir);
        self.ns.stop("page-iperf", secs(2));
        let (ok, detail) = match seen {
            Ok(s) => (
                s.missing.is_empty() && s.updated.iter().all(|u| *u >= 1) && s.down[0] != s.down[1],
                format!(
                    "polls answered {:?}, download shown {:?}, fields missing {:?}; screenshots in {}",
                    s.updated,
                    s.down,
                    s.missing,
                    self.opts.dir.display()
                ),
            ),
            Err(e) => (false, e),
        };
        self.add("the web page shows the live numbers, and they move (headless Chromium)".into(), ok, detail);
        Ok(())
    }

    /// An iperf3 run of `seconds` from `dev` (with `extra` arguments).
    fn iperf(&mut self, dev: &str, seconds: u32, extra: &[&str]) -> Result<Iperf, String> {
        let t = seconds.to_string();
        let mut args = vec!["-c", IPERF4, "-t", &t, "-J"];
        args.extend_from_slice(extra);
        let o = self.ns.output(dev, "iperf3", &args, secs(u64::from(seconds) + 15))?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
        let bps = v.pointer("/end/sum_received/bits_per_second").and_then(|b| b.as_f64()).unwrap_or(0.0);
        Ok(Iperf {
            ok: o.status.success() && bps > 0.0,
            mbit: bps / 1e6,
            mss: v.pointer("/start/tcp_mss_default").and_then(|m| m.as_u64()).filter(|&m| m > 0).unwrap_or(1448),
            retransmits: v.pointer("/end/sum_sent/retransmits").and_then(|r| r.as_u64()).unwrap_or(0),
        })
    }

    /// iperf3: bob up to the uplink, carol's test account held to its plan.
    fn throughput(&mut self) -> Result<(), String> {
        let t = self.opts.iperf_seconds;
        (self.say)(&format!(
            "iperf3 for {t} s: bob (standard plan, up to the {LAB_UPLINK_MBIT} Mbit/s uplink), carol (test account)"
        ));
        let r = self.iperf(&self.devices[2].ns, t, &[])?;
        self.add(
            format!("iperf3 upload from bob-desktop stays within the {LAB_UPLINK_MBIT} Mbit/s uplink"),
            // The floor is a third of the uplink, not more: the end-to-end
            // tests run a debug build, which on a shared 2-core machine moved
            // 128-218 Mbit/s on one day (a release build about 280).
            r.ok && r.mbit <= LAB_UPLINK_MBIT as f64 * 1.03 && r.mbit >= LAB_UPLINK_MBIT as f64 / 3.0,
            format!("{:.1} Mbit/s received", r.mbit),
        );
        // Held to the plan is a steady rate: the first second (slow start,
        // whose burst into the plan's queue can cost a retransmission
        // timeout) is left out, and at least 4 s are measured, so that one
        // timeout later on (0.2-0.3 s without delivery) cannot take a tenth
        // of the figure. The plan counts whole frames; iperf3 counts the
        // payload, so the plan's rate is compared as payload: an MSS of
        // 1448 rides in a 1514-byte frame (Ethernet 14, IPv4 20, TCP 20,
        // timestamps 12), which makes 4 Mbit/s of frames 3.83 of payload.
        let plan_s = t.max(4);
        let plan_runs =
            [(&["-O", "1"][..], TEST_PLAN_MBIT.0, "upload"), (&["-O", "1", "-R"][..], TEST_PLAN_MBIT.1, "download")];
        for (extra, want, what) in plan_runs {
            let r = self.iperf(&self.devices[4].ns, plan_s, extra)?;
            let payload = want * r.mss as f64 / (r.mss + 66) as f64;
            self.add(
                format!("carol's test account is held to {want} Mbit/s {what} (within 10 %)"),
                r.ok && (r.mbit - payload).abs() <= payload * 0.10,
                format!(
                    "{:.2} Mbit/s of payload received in {plan_s} s, {payload:.2} expected (MSS {}); {} retransmitted",
                    r.mbit, r.mss, r.retransmits
                ),
            );
        }
        Ok(())
    }

    /// The outside cable pulled for a moment, then plugged back.
    fn pull_the_cable(&mut self) -> Result<(), String> {
        (self.say)(
            "pulling the outside cable for a moment (the internet side's link goes down), then plugging it back",
        );
        self.ns.exec(self.inet, "ip", &["link", "set", "dn0", "down"])?;
        std::thread::sleep(Duration::from_millis(300));
        let during =
            self.ns.output(&self.devices[0].ns, "ping", &["-c", "3", "-i", "0.2", "-W", "1", WEB4], secs(6))?;
        self.ns.exec(self.inet, "ip", &["link", "set", "dn0", "up"])?;
        // The border router's routes went with its link; its routing daemon
        // would put them back once the link is usable again.
        for _ in 0..40 {
            let v4 = self.ns.exec(
                self.inet,
                "ip",
                &["route", "replace", "198.18.0.0/24", "via", "100.64.0.1", "advmss", "1460"],
            );
            let v6 = self.ns.exec(
                self.inet,
                "ip",
                &["-6", "route", "replace", "2001:db8:1::/48", "via", "2001:db8:ffff::1", "advmss", "1440"],
            );
            if v4.is_ok() && v6.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut after_ok = false;
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(250));
            let o = self.ns.output(&self.devices[0].ns, "ping", &["-c", "1", "-W", "1", WEB4], secs(3))?;
            if o.status.success() {
                after_ok = true;
                break;
            }
        }
        let alive = self.ns.alive("torwart");
        self.add(
            "pulling the outside cable: traffic stops, torwart keeps running, traffic resumes when it is back".into(),
            !during.status.success() && after_ok && alive,
            format!(
                "while pulled: ping {}; torwart {}; after: ping {}",
                if during.status.success() { "got through (unexpected)" } else { "failed" },
                if alive { "running" } else { "DIED" },
                if after_ok { "works" } else { "still fails" }
            ),
        );
        Ok(())
    }

    /// A light member's latency while a heavy one fills the uplink. A
    /// failed measurement is taken once more, and both are reported: on a
    /// shared VM a stall of the whole machine (tens of ms, seen in CI with
    /// the idle p99 at 10.8 ms) can hit two of the 100 pings; a latency
    /// that torwart adds shows in both.
    fn latency_under_load(&mut self) -> Result<(), String> {
        (self.say)("latency of a light member (alice pings) while a heavy one (bob) fills the uplink");
        let (mut ok, mut detail) = self.measure_latency()?;
        if !ok {
            (self.say)("  once more: the first measurement failed");
            let (again, second) = self.measure_latency()?;
            ok = again;
            detail = format!("{second}; the first measurement: {detail}");
        }
        self.add(
            "a light member's ping stays fast while a heavy member fills the uplink (p99 added <= 10 ms)".into(),
            ok,
            detail,
        );
        Ok(())
    }

    /// One measurement for [`latency_under_load`](Self::latency_under_load):
    /// whether it passed, and its figures.
    fn measure_latency(&mut self) -> Result<(bool, String), String> {
        let rtts = |o: &std::process::Output| -> Vec<f64> {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok())
                .collect()
        };
        let ping_args = ["-c", "100", "-i", "0.02", "-W", "1", WEB4];
        let idle = rtts(&self.ns.output(&self.devices[0].ns, "ping", &ping_args, secs(10))?);
        let log = self.opts.dir.join("iperf-bob.json");
        // iperf3 appends to its --logfile: a previous run's report would make
        // this one's unparseable.
        match std::fs::remove_file(&log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove the previous {}: {e}", log.display()))
            }
            _ => {}
        }
        let long = (self.opts.iperf_seconds + 4).to_string();
        self.ns.spawn(
            "iperf-bob",
            &self.devices[2].ns,
            "iperf3",
            &["-c", IPERF4, "-t", &long, "-P", "4", "-J", "--logfile", &log.display().to_string()],
            None,
        )?;
        std::thread::sleep(secs(2));
        let loaded = rtts(&self.ns.output(&self.devices[0].ns, "ping", &ping_args, secs(10))?);
        let deadline = Instant::now() + secs(u64::from(self.opts.iperf_seconds) + 15);
        while self.ns.alive("iperf-bob") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let bob: serde_json::Value =
            std::fs::read(&log).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null);
        let bob_mbit = bob.pointer("/end/sum_received/bits_per_second").and_then(|b| b.as_f64()).unwrap_or(0.0) / 1e6;
        let (p50, p99) = (percentile(&loaded, 0.5), percentile(&loaded, 0.99));
        let (i50, i99) = (percentile(&idle, 0.5), percentile(&idle, 0.99));
        let ok = loaded.len() >= 95 && p99 - i99 <= 10.0 && bob_mbit > LAB_UPLINK_MBIT as f64 / 3.0;
        let detail = format!(
            "idle p50 {i50:.2} ms p99 {i99:.2} ms; loaded p50 {p50:.2} ms p99 {p99:.2} ms ({} of 100 replies); bob \
             meanwhile {bob_mbit:.0} Mbit/s",
            loaded.len()
        );
        Ok((ok, detail))
    }
}

/// The `q` quantile of `v` (nearest rank); NaN when empty.
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1]
}

/// Prints the report for a person.
pub fn print(r: &Report) {
    println!();
    println!("what the clients saw:");
    for c in &r.checks {
        println!("  [{}] {}: {}", if c.passed { "ok" } else { "FAILED" }, c.name, c.detail);
    }
    if !r.stats.members.is_empty() {
        println!();
        println!("usage per member (torwart's counters):");
        println!("  {:>6} {:>14} {:>10} {:>14} {:>10}", "member", "bytes up", "pkts up", "bytes down", "pkts down");
        for m in &r.stats.members {
            println!(
                "  {:>6} {:>14} {:>10} {:>14} {:>10}",
                m.member_id, m.up_bytes, m.up_packets, m.down_bytes, m.down_packets
            );
        }
    }
    println!();
    println!("counters (non-zero):");
    for (k, v) in r.stats.counters.iter().filter(|(_, v)| **v > 0) {
        println!("  {k:<32} {v}");
    }
    println!();
    let failed = r.checks.iter().filter(|c| !c.passed).count();
    if failed == 0 {
        println!("lab: all {} checks passed", r.checks.len());
    } else {
        println!("lab: {failed} of {} checks FAILED; torwart's log:\n{}", r.checks.len(), r.torwart_log);
    }
}

/// Tools the lab drives, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("curl", "curl"),
    ("iperf3", "iperf3"),
    ("traceroute", "traceroute"),
    ("ethtool", "ethtool"),
];

/// Checks that the lab's tools are there; installs the missing ones with
/// apt-get when running as root on a Debian-like system.
pub fn preflight(verbose: bool) -> Result<(), String> {
    let missing: Vec<&(&str, &str)> = TOOLS.iter().filter(|(t, _)| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    let root = control::sys::is_root();
    if !root || !on_path("apt-get") {
        return Err(format!(
            "the lab needs {} (Debian packages: {})",
            missing.iter().map(|m| m.0).collect::<Vec<_>>().join(", "),
            pkgs.join(" ")
        ));
    }
    if verbose {
        println!("installing what the lab needs: apt-get install {}", pkgs.join(" "));
    }
    let mut args = vec!["install", "-y", "-q"];
    args.extend(&pkgs);
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    // On a fresh machine the package lists may be stale: update once and retry.
    if !apt(&args)?.success() && (!apt(&["update", "-q"])?.success() || !apt(&args)?.success()) {
        return Err(format!("apt-get install {} failed", pkgs.join(" ")));
    }
    Ok(())
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}
