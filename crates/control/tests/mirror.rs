//! The mirror against a real kernel, in network namespaces of its own.
//!
//! Topology (names carry the pid, so parallel runs do not collide):
//!
//! ```text
//!  twrt-<pid>-a                               twrt-<pid>-b
//!  tw0 10.77.0.1/24, 2001:db8:77::1/64 ──veth── tw1 10.77.0.2/24, 2001:db8:77::2/64
//!  default via 10.77.0.2
//!  10.88.0.0/16 via 10.77.0.2 mtu 1400
//!  2001:db8:99::/48 via 2001:db8:77::2
//! ```
//!
//! The mirror runs in namespace a (its sockets are opened from a thread
//! that `setns`-ed into it) with `tw0` as its only port. Needs root; prints
//! "skipped: needs root" otherwise.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use control::mirror::{Mirror, MirrorConfig};
use router::RouteTables;

/// Deletes the namespaces when dropped, also when a test panics.
struct Namespaces {
    a: String,
    b: String,
}

impl Namespaces {
    fn create() -> Namespaces {
        let pid = std::process::id();
        let ns = Namespaces { a: format!("twrt-{pid}-a"), b: format!("twrt-{pid}-b") };
        ip(&["netns", "add", &ns.a]);
        ip(&["netns", "add", &ns.b]);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut v = vec!["-n", ns];
    v.extend_from_slice(args);
    ip(&v);
}

fn read_in_ns(ns: &str, path: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "cat", path]).output().expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Poll the mirror's current tables until `ok` holds or `limit` passes.
fn wait_for(m: &Mirror, limit: Duration, what: &str, ok: impl Fn(&RouteTables) -> bool) {
    let start = Instant::now();
    loop {
        if ok(&m.load()) {
            return;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}\n{:#?}", m.load());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Start a mirror whose sockets live in namespace `ns`.
fn mirror_in(ns: &str, config: MirrorConfig) -> Mirror {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = File::open(&path).expect("open netns");
        // SAFETY: setns on a namespace fd we hold open; it only changes this
        // thread's network namespace, and the thread ends right after.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        Mirror::start(config).expect("start mirror")
    })
    .join()
    .expect("mirror thread")
}

#[test]
fn mirror_follows_the_kernel_and_resolves_neighbours() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root");
        return;
    }
    let ns = Namespaces::create();
    let (a, b) = (ns.a.as_str(), ns.b.as_str());
    in_ns(a, &["link", "add", "tw0", "type", "veth", "peer", "name", "tw1", "netns", b]);
    for (n, dev) in [(a, "tw0"), (b, "tw1")] {
        in_ns(n, &["link", "set", "lo", "up"]);
        in_ns(n, &["link", "set", dev, "up"]);
    }
    in_ns(a, &["addr", "add", "10.77.0.1/24", "dev", "tw0"]);
    in_ns(b, &["addr", "add", "10.77.0.2/24", "dev", "tw1"]);
    in_ns(a, &["-6", "addr", "add", "2001:db8:77::1/64", "dev", "tw0", "nodad"]);
    in_ns(b, &["-6", "addr", "add", "2001:db8:77::2/64", "dev", "tw1", "nodad"]);
    in_ns(a, &["route", "add", "default", "via", "10.77.0.2"]);
    in_ns(a, &["route", "add", "10.88.0.0/16", "via", "10.77.0.2", "mtu", "1400"]);
    in_ns(a, &["-6", "route", "add", "2001:db8:99::/48", "via", "2001:db8:77::2"]);
    let tw0: u32 = read_in_ns(a, "/sys/class/net/tw0/ifindex").parse().unwrap();
    let mac_a = read_in_ns(a, "/sys/class/net/tw0/address");
    let mac_b = read_in_ns(b, "/sys/class/net/tw1/address");

    let m = mirror_in(a, MirrorConfig { ports: vec!["tw0".into()], ..MirrorConfig::default() });
    let limit = Duration::from_secs(1);

    // The first snapshot (and any link events since) mirror the setup.
    wait_for(&m, limit, "tw0 is up with its addresses", |t| {
        t.link(tw0).is_some_and(|l| {
            l.up && l.mtu == 1500
                && l.mac.to_string() == mac_a
                && l.addrs.iter().any(|x| x.addr == addr("10.77.0.1") && x.prefix_len == 24)
                && l.addrs.iter().any(|x| x.addr == addr("2001:db8:77::1") && x.prefix_len == 64)
        })
    });
    let t = m.load();
    assert_eq!(t.links().len(), 1, "only the port: {:?}", t.links());
    assert!(t.is_local(addr("10.77.0.1")) && t.is_local(addr("127.0.0.1")) && t.is_local(addr("::1")));
    let default = t.lookup(addr("8.8.8.8")).expect("default route");
    assert_eq!((default.prefix_len, default.ifindex, default.gateway), (0, tw0, Some(addr("10.77.0.2"))));
    let specific = t.lookup(addr("10.88.1.1")).expect("10.88/16");
    assert_eq!((specific.prefix_len, specific.mtu), (16, Some(1400)));
    let on_link = t.lookup(addr("10.77.0.9")).expect("connected route");
    assert_eq!((on_link.prefix_len, on_link.gateway, on_link.ifindex), (24, None, tw0));
    let r6 = t.lookup(addr("2001:db8:99::1")).expect("v6 route");
    assert_eq!((r6.prefix_len, r6.gateway), (48, Some(addr("2001:db8:77::2"))));
    assert!(t.lookup(addr("2001:db8:77::5")).is_some_and(|r| r.prefix_len == 64 && r.gateway.is_none()));

    // Changes show up within a second.
    in_ns(a, &["route", "add", "10.66.0.0/16", "via", "10.77.0.2"]);
    wait_for(&m, limit, "added route", |t| t.lookup(addr("10.66.1.1")).is_some_and(|r| r.prefix_len == 16));
    in_ns(a, &["route", "del", "10.66.0.0/16"]);
    wait_for(&m, limit, "deleted route", |t| t.lookup(addr("10.66.1.1")).is_some_and(|r| r.prefix_len == 0));
    in_ns(a, &["-6", "route", "add", "2001:db8:aa::/48", "via", "2001:db8:77::2"]);
    wait_for(&m, limit, "added v6 route", |t| t.lookup(addr("2001:db8:aa::1")).is_some_and(|r| r.prefix_len == 48));

    // Resolution: nothing has talked to the peer yet.
    for peer in ["10.77.0.2", "2001:db8:77::2"] {
        assert_eq!(m.load().neighbour(tw0, addr(peer)), None, "{peer} known before any traffic");
        assert!(m.resolve(tw0, addr(peer)));
    }
    assert!(m.resolve(tw0, addr("10.77.0.2")), "queued, deduplicated by the mirror");
    for peer in ["10.77.0.2", "2001:db8:77::2"] {
        wait_for(&m, Duration::from_secs(3), peer, |t| {
            t.neighbour(tw0, addr(peer)).is_some_and(|mac| mac.to_string() == mac_b)
        });
    }
    let s = m.stats();
    assert_eq!((s.resolve_requested, s.resolve_sent, s.resolve_failed), (3, 2, 0), "{s:?}");
    assert_eq!(s.resolve_deduplicated, 1, "{s:?}");

    // An address going away takes the routes using it as their source.
    in_ns(a, &["addr", "add", "10.55.0.1/24", "dev", "tw0"]);
    in_ns(a, &["route", "add", "10.44.0.0/16", "dev", "tw0", "src", "10.55.0.1"]);
    wait_for(&m, limit, "route with a source", |t| t.lookup(addr("10.44.1.1")).is_some_and(|r| r.prefix_len == 16));
    in_ns(a, &["addr", "del", "10.55.0.1/24", "dev", "tw0"]);
    wait_for(&m, limit, "its source gone, the route too", |t| {
        !t.is_local(addr("10.55.0.1")) && t.lookup(addr("10.44.1.1")).is_some_and(|r| r.prefix_len == 0)
    });

    // A burst of removals costs a dump or two, not one each.
    for i in 0..30 {
        in_ns(a, &["addr", "add", &format!("10.56.0.{}/32", i + 1), "dev", "tw0"]);
    }
    wait_for(&m, limit, "30 addresses", |t| t.is_local(addr("10.56.0.30")));
    let before = m.stats().resyncs;
    in_ns(a, &["addr", "flush", "dev", "tw0", "to", "10.56.0.0/24"]);
    wait_for(&m, limit, "30 addresses gone", |t| !t.is_local(addr("10.56.0.30")) && !t.is_local(addr("10.56.0.1")));
    std::thread::sleep(Duration::from_millis(300));
    let dumps = m.stats().resyncs - before;
    assert!((1..=4).contains(&dumps), "{dumps} dumps for 30 removals");

    // A port going down: the kernel drops its IPv4 routes without telling;
    // the mirror dumps again.
    in_ns(a, &["link", "set", "tw0", "down"]);
    wait_for(&m, limit, "tw0 down, its routes gone", |t| {
        t.link(tw0).is_some_and(|l| !l.up) && t.lookup(addr("8.8.8.8")).is_none()
    });
    assert!(m.stats().published >= 5);
    // The address's removal and the link's change each asked for a dump.
    assert!(m.stats().resyncs >= 2, "{:?}", m.stats());
    m.stop();
}
