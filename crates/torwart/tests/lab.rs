//! End to end: the lab's network in namespaces, torwart running as its
//! gateway (AF_XDP, then AF_PACKET), real clients (ping, curl, traceroute,
//! iperf3) asserting on what they saw and on torwart's counters. Also the
//! daemon's refusals: a bad configuration, a missing port, an unreachable
//! database each exit with their code and a message naming the problem.
//!
//! Needs root (CI runs as root); elsewhere each test says "skipped".

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use torwart::lab::{self, netns::Namespaces};

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("torwart-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn lab_run(backend: &str, prefix: &str) -> lab::Report {
    lab::preflight(false).expect("the lab's tools");
    let opts = lab::Options {
        torwart: PathBuf::from(env!("CARGO_BIN_EXE_torwart")),
        prefix: prefix.into(),
        dir: dir(backend),
        backend: backend.into(),
        iperf_seconds: 2,
        idle: "sleep".into(),
        verbose: true,
        keep: false,
        page_port: 0,
    };
    let report = lab::run(&opts, &AtomicBool::new(false)).expect("the lab runs");
    let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}\ntorwart's log:\n{}", report.torwart_log);
    report
}

fn assert_counters(r: &lab::Report) {
    // The unsolicited attempts were dropped by the firewall, by name.
    assert!(r.counter("unsolicited_inbound") >= 2, "{:?}", r.stats.counters);
    // traceroute's probes expired at the box (IPv4 and IPv6), answered by it.
    assert!(r.counter("router_ttl_exceeded") >= 2, "{:?}", r.stats.counters);
    // Path MTU discovery: the box said "too big" for the uploads.
    assert!(r.counter("router_too_big") >= 2, "{:?}", r.stats.counters);
    // The shaper held carol's test account to her plan, dropping by name.
    assert!(r.counter("shaper_queued") > 0, "{:?}", r.stats.counters);
    // Pulling the cable: packets for the downed port were dropped and counted.
    let pulled = r.counter("router_egress_down") + r.counter("router_no_route") + r.counter("router_neighbour_missing");
    assert!(pulled > 0, "{:?}", r.stats.counters);
    // The member usage reached the database.
    assert!(r.accounting.iter().all(|&(_, up, down)| up > 0 && down > 0), "{:?}", r.accounting);
}

#[test]
fn the_lab_works_end_to_end() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    let prefix = format!("twe{}-", std::process::id() % 10000);
    let r = lab_run("xdp", &prefix);
    assert_counters(&r);
    // CI installs Chromium: there the lab must have looked at the web page.
    if std::env::var_os("CI").is_some() {
        assert!(r.checks.iter().any(|c| c.name.contains("web page")), "the web page was not checked");
    }
    let r = lab_run("af_packet", &prefix);
    assert_counters(&r);
}

/// Runs `torwart run --config FILE` in namespace `ns`; returns (exit code, stderr).
fn daemon(ns: &str, config: &str) -> (i32, String) {
    let d = dir(&format!("cfg-{}", config.len()));
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("torwart.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_torwart"), "run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_daemon_refuses_what_is_wrong_with_a_clear_message() {
    if !root() {
        println!("skipped: needs root");
        return;
    }
    let ns_name = format!("twd{}", std::process::id() % 10000);
    let mut ns = Namespaces::new();
    ns.add(&ns_name).unwrap();
    ns.exec(&ns_name, "ip", &["link", "add", "p0", "type", "veth", "peer", "name", "p1"]).unwrap();
    for i in ["p0", "p1"] {
        ns.exec(&ns_name, "ip", &["link", "set", i, "up"]).unwrap();
    }
    // (A new namespace may inherit forwarding from the host; the daemon refuses that first.)
    ns.exec(&ns_name, "sysctl", &["-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"]).unwrap();
    let ports = "[[ports]]\ninterface = \"p0\"\nside = \"inside\"\n[[ports]]\ninterface = \"p1\"\nside = \"outside\"\n";

    let (code, err) = daemon(&ns_name, &format!("database = \"x.db\"\n{ports}[engine]\nmax_flow = 5\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `max_flow`"), "{err}");

    let (code, err) = daemon(&ns_name, &format!("database = \"x.db\"\n{}", ports.replace("p1", "nosuch9")));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("port nosuch9: no such network interface"), "{err}");

    // Jumbo frames on a port: longer than torwart takes, so refused at
    // start instead of dropped unseen (AF_XDP: 1792-byte frames, MTU 1774).
    ns.exec(&ns_name, "ip", &["link", "set", "p1", "mtu", "9000"]).unwrap();
    let (code, err) = daemon(&ns_name, &format!("database = \"x.db\"\n{ports}"));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("port p1: MTU 9000") && err.contains("at most 1774"), "{err}");
    let af_packet = format!("database = \"x.db\"\n{ports}[io]\nbackend = \"af_packet\"\n");
    let (code, err) = daemon(&ns_name, &af_packet);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("port p1: MTU 9000") && err.contains("at most 2030"), "{err}");
    ns.exec(&ns_name, "ip", &["link", "set", "p1", "mtu", "1500"]).unwrap();

    // Without a last good member database to fall back on (the default's
    // is under /var/lib, which this test leaves alone).
    let (code, err) =
        daemon(&ns_name, &format!("database = \"postgres://torwart@127.0.0.1:1/nothing\"\nlast_good = \"\"\n{ports}"));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("member database"), "{err}");

    let missing = dir("missing").join("no-such.db");
    let (code, err) = daemon(&ns_name, &format!("database = \"{}\"\n{ports}", missing.display()));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("no-such.db"), "{err}");
}
