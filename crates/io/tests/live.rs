//! Live tests of the AF_XDP and AF_PACKET backends over a veth pair between
//! two private network namespaces. They need root (they create namespaces
//! and load BPF); as another user they print "skipped: needs root" and pass.
//!
//! Topology, per test (names unique per process and test, removed on drop
//! even when the test panics):
//! ```text
//!   netns <p>-a                         netns <p>-b
//!   a0 10.77.0.1/24  <── veth ──>  b0 10.77.0.2/24   (XDP program + port here)
//!   route 198.51.100.0/24 via 10.77.0.2
//! ```
//! A sends UDP to the transit address 198.51.100.9, which must reach the
//! port on b0; A pings 10.77.0.2, which must reach B's kernel (ARP and the
//! local-address map); frames the port sends must reach a UDP socket in A.

use std::fs::File;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use io::xdp::{XdpVerdict, XskCopyMode};
use io::{
    Batch, BusyPoll, GuardVerdict, PacketAdmission, PacketBuf, PacketConfig, PacketGuard, PacketIo, PacketPort, PortId,
    XdpConfig, XdpMode, XdpPort, XdpProgram,
};

const MAC_A: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x02];
const IP_A: [u8; 4] = [10, 77, 0, 1];
const IP_B: [u8; 4] = [10, 77, 0, 2];
const TRANSIT: [u8; 4] = [198, 51, 100, 9];
const TRANSIT_PORT: u16 = 9999;
const A_RX_PORT: u16 = 7777;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Lab {
    a: String,
    b: String,
}

impl Lab {
    fn new() -> Lab {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = format!("twio-{}-{n}", std::process::id());
        let lab = Lab { a: format!("{base}-a"), b: format!("{base}-b") };
        // The guard exists before the first namespace, so a failure half-way
        // still cleans up (deleting a missing namespace is harmless).
        ip(&["netns", "add", &lab.a]);
        ip(&["netns", "add", &lab.b]);
        let (a, b) = (lab.a.as_str(), lab.b.as_str());
        ip(&[
            "-n",
            a,
            "link",
            "add",
            "a0",
            "address",
            "02:77:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "b0",
            "address",
            "02:77:00:00:00:02",
            "netns",
            b,
        ]);
        ip(&["-n", a, "addr", "add", "10.77.0.1/24", "dev", "a0"]);
        ip(&["-n", b, "addr", "add", "10.77.0.2/24", "dev", "b0"]);
        for (ns, dev) in [(a, "a0"), (b, "b0"), (a, "lo"), (b, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", a, "route", "add", "198.51.100.0/24", "via", "10.77.0.2"]);
        // New namespaces inherit IPv4 forwarding from the host; B must not
        // forward (AF_PACKET lets the kernel see every frame).
        sysctl(b, "net.ipv4.conf.all.forwarding=0");
        sysctl(b, "net.ipv6.conf.all.forwarding=0");
        lab
    }

    fn ping_b(&self) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.a, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", "10.77.0.2"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn sysctl(ns: &str, kv: &str) {
    let out = Command::new("ip").args(["netns", "exec", ns, "sysctl", "-q", "-w", kv]).output().expect("sysctl");
    assert!(out.status.success(), "sysctl {kv}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `f` on a new thread that has joined network namespace `ns`.
fn in_ns<T: Send, F: FnOnce() -> T + Send>(ns: &str, f: F) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/var/run/netns/{ns}")).expect("open netns");
            // SAFETY: `file` is an open namespace file; setns affects only
            // this (fresh) thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Ethernet (B → A) + IPv4 + UDP (checksum 0, allowed for IPv4).
fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(MAC_A, MAC_B, 0x0800);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Ethernet + IPv6 header with no payload.
fn ipv6(dst: &str) -> Vec<u8> {
    let mut f = eth([0x33, 0x33, 0, 0, 0, 1], MAC_A, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 59, 64]);
    f.extend_from_slice(&"2001:db8::a".parse::<std::net::Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
    f
}

/// True if `frame` is IPv4/UDP to `dst`:`dport`.
fn is_udp_to(frame: &[u8], dst: [u8; 4], dport: u16) -> bool {
    frame.len() >= 42
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 17
        && frame[30..34] == dst
        && frame[36..38] == dport.to_be_bytes()
}

/// Sends `n` datagrams from A to the transit address.
fn send_transit_from_a(lab: &Lab, n: usize) {
    in_ns(&lab.a, || {
        let s = UdpSocket::bind("10.77.0.1:0").expect("bind in A");
        for i in 0..n {
            s.send_to(format!("twio-rx-{i}").as_bytes(), ("198.51.100.9", TRANSIT_PORT)).expect("send in A");
        }
    });
}

/// Receives from `port` until `want` frames match `pred` or `wait` passes;
/// returns how many matched and how many did not.
fn collect(port: &mut impl PacketIo, want: usize, wait: Duration, pred: impl Fn(&[u8]) -> bool) -> (usize, usize) {
    let mut batch = Batch::new(64, 2048);
    let (mut hit, mut other) = (0, 0);
    let deadline = Instant::now() + wait;
    while hit < want && Instant::now() < deadline {
        batch.clear();
        let n = port.recv(&mut batch).expect("recv");
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        for f in batch.frames() {
            assert_eq!(f.port, PortId(3));
            assert!(f.ts_ns > 0);
            if pred(f.as_slice()) {
                hit += 1;
            } else {
                other += 1;
            }
        }
    }
    (hit, other)
}

/// Sends 100 frames from `port` to A's UDP socket on 10.77.0.1:7777 and
/// returns how many A received.
fn send_to_a(lab: &Lab, port: &mut impl PacketIo) -> usize {
    send_to_a_among_long(lab, port, false)
}

/// As `send_to_a`, with, if `long`, a frame too long for the link (4,442
/// bytes: more than MTU 1500 and than an AF_XDP chunk) first and after every tenth: the port must skip it and send the
/// frames behind it.
fn send_to_a_among_long(lab: &Lab, port: &mut impl PacketIo, long: bool) -> usize {
    const N: usize = 100;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let a = lab.a.clone();
    let receiver = std::thread::spawn(move || {
        in_ns(&a, || {
            let s = UdpSocket::bind("10.77.0.1:7777").expect("bind receiver in A");
            s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            let mut got = 0;
            while got < N {
                match s.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        assert_eq!(from.ip(), IpAddr::from(TRANSIT));
                        assert!(buf[..len].starts_with(b"twio-tx-"));
                        got += 1;
                    }
                    Err(_) => break,
                }
            }
            got
        })
    });
    ready_rx.recv().unwrap();
    let frame = |payload: &[u8]| {
        let bytes = udp4(TRANSIT, IP_A, TRANSIT_PORT, A_RX_PORT, payload);
        let mut b = PacketBuf::with_capacity(8192);
        assert!(b.copy_from(&bytes));
        b.port = PortId(3);
        b
    };
    // One first too: the kernel refuses it before any is sent.
    let mut frames = if long { vec![frame(&[b'L'; 4400])] } else { Vec::new() };
    for i in 0..N {
        frames.push(frame(format!("twio-tx-{i}").as_bytes()));
        if long && i % 10 == 3 {
            frames.push(frame(&[b'L'; 4400]));
        }
    }
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while sent < frames.len() && Instant::now() < deadline {
        sent += port.send(&frames[sent..]).expect("send");
        port.flush().expect("flush");
    }
    assert_eq!(sent, frames.len(), "port took all frames");
    assert_eq!(port.tx_refused(), if long { N as u64 / 10 + 1 } else { 0 }, "frames refused as too long");
    receiver.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn xdp_roundtrip(mode: XdpMode, socket: XdpConfig) {
    let lab = Lab::new();
    in_ns(&lab.b.clone(), || {
        let prog = XdpProgram::attach("b0", mode).expect("attach");
        eprintln!("requested {mode}, attached in {} mode", prog.mode());
        if mode != XdpMode::Auto {
            assert_eq!(prog.mode(), mode);
        }
        prog.set_local_addresses(&[IpAddr::from(IP_B), "2001:db8::2".parse().unwrap()]).expect("local addresses");
        assert!(prog.is_local(IpAddr::from(IP_B)).unwrap());
        // Replacing the set drops what is not in it.
        prog.set_local_addresses(&[IpAddr::from(IP_B), "2001:db8::2".parse().unwrap()]).unwrap();
        assert!(!prog.is_local("2001:db8::3".parse().unwrap()).unwrap());

        let config = XdpConfig { port: PortId(3), ..socket };
        let mut port = XdpPort::open("b0", &config).expect("open AF_XDP socket");
        assert!(!port.is_zero_copy(), "veth has no zero-copy");
        // veth is copy mode, which cannot busy-poll: asked for, it stays off.
        assert!(!port.is_busy_polling());
        assert_eq!(socket_option(&port, libc::SO_BUSY_POLL), 0);
        assert_eq!(socket_option(&port, libc::SO_PREFER_BUSY_POLL), 0);
        prog.register_socket(0, &port).expect("register");

        // Verdicts, by dry run.
        let transit = udp4(IP_A, TRANSIT, 1, 2, b"x");
        let v = |f: &[u8]| prog.dry_run(f, 0).expect("dry run");
        assert_eq!(v(&transit), XdpVerdict::Redirect, "transit IPv4");
        assert_eq!(v(&udp4(IP_A, IP_B, 1, 2, b"x")), XdpVerdict::Pass, "local IPv4");
        assert_eq!(v(&udp4(IP_A, [224, 0, 0, 5], 1, 2, b"x")), XdpVerdict::Pass, "multicast");
        assert_eq!(v(&udp4(IP_A, [239, 1, 2, 3], 1, 2, b"x")), XdpVerdict::Pass, "multicast");
        assert_eq!(v(&udp4(IP_A, [255, 255, 255, 255], 1, 2, b"x")), XdpVerdict::Pass, "broadcast");
        assert_eq!(v(&udp4(IP_A, [240, 0, 0, 1], 1, 2, b"x")), XdpVerdict::Redirect, "240/4 is not multicast");
        let mut arp = eth([0xff; 6], MAC_A, 0x0806);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(v(&arp), XdpVerdict::Pass, "ARP");
        let mut vlan = transit.clone();
        vlan[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(v(&vlan), XdpVerdict::Pass, "VLAN-tagged");
        assert_eq!(v(&transit[..20]), XdpVerdict::Pass, "truncated IPv4");
        assert_eq!(v(&ipv6("2001:db8::1")), XdpVerdict::Redirect, "transit IPv6");
        assert_eq!(v(&ipv6("2001:db8::2")), XdpVerdict::Pass, "local IPv6");
        assert_eq!(v(&ipv6("ff02::1")), XdpVerdict::Pass, "IPv6 multicast");
        assert_eq!(v(&ipv6("fe80::1")), XdpVerdict::Pass, "link-local");
        assert_eq!(v(&ipv6("febf::1")), XdpVerdict::Pass, "fe80::/10 upper end");
        assert_eq!(v(&ipv6("fec0::1")), XdpVerdict::Redirect, "fec0:: is outside fe80::/10");
        assert_eq!(v(&ipv6("2001:db8::1")[..50]), XdpVerdict::Pass, "truncated IPv6");
        // A queue without a socket: transit is dropped and counted, never
        // passed to the kernel (which could forward it past the policy).
        // (The test run refuses a queue index the device does not have, so
        // queue 0 is left without its socket for this.)
        prog.unregister_socket(0).expect("unregister");
        let before = prog.unserved().expect("unserved counter");
        assert_eq!(v(&transit), XdpVerdict::Drop, "transit, unserved queue");
        assert_eq!(v(&ipv6("2001:db8::1")), XdpVerdict::Drop, "IPv6, unserved queue");
        assert_eq!(v(&udp4(IP_A, IP_B, 1, 2, b"x")), XdpVerdict::Pass, "local, unserved queue");
        assert_eq!(prog.unserved().expect("unserved counter"), before + 2);
        prog.register_socket(0, &port).expect("register again");
        // The local map is what keeps B's own traffic in the kernel.
        prog.set_local_addresses(&[]).unwrap();
        assert_eq!(v(&udp4(IP_A, IP_B, 1, 2, b"x")), XdpVerdict::Redirect, "no longer local");
        prog.set_local_addresses(&[IpAddr::from(IP_B), "2001:db8::2".parse().unwrap()]).unwrap();

        // Transit traffic from A reaches the socket.
        send_transit_from_a(&lab, 20);
        let (hit, _) = collect(&mut port, 20, Duration::from_secs(3), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
        assert_eq!(hit, 20, "transit frames received by the AF_XDP socket");

        // ARP and traffic to B's own address reach B's kernel.
        assert!(lab.ping_b(), "ping 10.77.0.2 from A (local address → kernel)");
        let (hit, _) = collect(&mut port, 1, Duration::from_millis(300), |f| f.len() > 34 && f[30..34] == IP_B);
        assert_eq!(hit, 0, "frames to the local address must not reach the socket");

        // Frames sent by the socket reach A.
        let got = send_to_a(&lab, &mut port);
        assert_eq!(got, 100, "frames sent through the AF_XDP socket received in A");

        let stats = port.stats();
        eprintln!("{stats:?}");
        assert!(stats.rx_frames >= 20);
        assert_eq!(stats.tx_frames, 100);
        assert_eq!(stats.kernel.rx_invalid_descs, 0);
        assert_eq!(stats.kernel.tx_invalid_descs, 0);
        assert!(stats.tx_kicks >= 1);
        assert_eq!(stats.busy_polls, 0, "no recvfrom for a socket that cannot busy-poll");

        // A frame longer than a chunk is refused alone: the frames behind
        // it in the batch still go (the rest of the batch stayed unsent before).
        let got = send_to_a_among_long(&lab, &mut port, true);
        assert_eq!(got, 100, "frames behind a refused one received in A");
        let stats = port.stats();
        assert_eq!((stats.tx_frames, stats.tx_oversize), (200, 11));

        // A pulled cable: the peer goes down and comes back; the socket
        // keeps receiving and sending afterwards.
        ip(&["-n", &lab.a, "link", "set", "a0", "down"]);
        std::thread::sleep(Duration::from_millis(200));
        ip(&["-n", &lab.a, "link", "set", "a0", "up"]);
        // (A's route went with its link.)
        ip(&["-n", &lab.a, "route", "replace", "198.51.100.0/24", "via", "10.77.0.2"]);
        std::thread::sleep(Duration::from_millis(300));
        let _ = lab.ping_b();
        send_transit_from_a(&lab, 20);
        let (hit, _) = collect(&mut port, 20, Duration::from_secs(3), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
        assert_eq!(hit, 20, "transit frames received after the link came back");
        let got = send_to_a(&lab, &mut port);
        assert_eq!(got, 100, "frames sent after the link came back received in A");
    });
}

#[test]
fn xdp_native() {
    require_root!();
    xdp_roundtrip(XdpMode::Native, XdpConfig::default());
}

#[test]
fn xdp_generic() {
    require_root!();
    xdp_roundtrip(XdpMode::Generic, XdpConfig::default());
}

/// The options for real NICs: busy polling (the worker runs the driver's
/// receive; asked for on veth's copy-mode socket it stays off) and no
/// need-wakeup flag (a kick per send).
#[test]
fn xdp_busy_polling_without_need_wakeup() {
    require_root!();
    let socket =
        XdpConfig { need_wakeup: false, busy_poll: Some(BusyPoll { usecs: 50, budget: 64 }), ..Default::default() };
    xdp_roundtrip(XdpMode::Native, socket);
    let e =
        XdpPort::open("lo", &XdpConfig { busy_poll: Some(BusyPoll { usecs: 0, budget: 64 }), ..Default::default() })
            .expect_err("busy polling for 0 us");
    assert!(e.to_string().contains("busy polling"), "{e}");
}

/// `getsockopt(SOL_SOCKET, opt)` of a socket, as an int.
fn socket_option(port: &XdpPort, opt: libc::c_int) -> i32 {
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals of the sizes we declare.
    let r =
        unsafe { libc::getsockopt(port.as_raw_fd(), libc::SOL_SOCKET, opt, (&mut value as *mut i32).cast(), &mut len) };
    assert_eq!(r, 0, "getsockopt {opt}: {}", std::io::Error::last_os_error());
    value
}

/// Drops every capability of the calling thread (capset(2), version 3).
fn drop_all_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header { version: 0x2008_0522, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads one header and two data structs, both live locals
    // of the layout the kernel expects for _LINUX_CAPABILITY_VERSION_3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn xdp_errors_name_the_interface() {
    require_root!();
    let e = XdpProgram::attach("twio-nonexistent", XdpMode::Auto).unwrap_err();
    eprintln!("{e}");
    assert!(e.to_string().contains("twio-nonexistent"), "{e}");
    let e = XdpPort::open("twio-nonexistent", &XdpConfig::default()).unwrap_err();
    assert!(e.to_string().contains("twio-nonexistent"), "{e}");
    let e = PacketPort::open("twio-nonexistent", &PacketConfig::default()).unwrap_err();
    assert!(e.to_string().contains("twio-nonexistent"), "{e}");

    // Without privileges (capabilities are per thread: drop them all in a
    // fresh one), the error says what is missing.
    std::thread::spawn(|| {
        drop_all_capabilities();
        let e = XdpProgram::attach("lo", XdpMode::Generic).unwrap_err();
        eprintln!("{e}");
        assert!(e.to_string().contains("needs root or CAP_BPF/CAP_NET_ADMIN"), "{e}");
        let e = PacketPort::open("lo", &PacketConfig::default()).unwrap_err();
        eprintln!("{e}");
        assert!(e.to_string().contains("\"lo\"") && e.to_string().contains("CAP_NET_RAW"), "{e}");
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));

    let lab = Lab::new();
    in_ns(&lab.b.clone(), || {
        let e = XdpPort::open("b0", &XdpConfig { copy_mode: XskCopyMode::ZeroCopy, ..Default::default() })
            .expect_err("veth cannot do zero-copy");
        eprintln!("{e}");
        assert!(e.to_string().contains("\"b0\""), "{e}");
        // Auto picks native on veth.
        let first = XdpProgram::attach("b0", XdpMode::Auto).expect("attach");
        assert_eq!(first.mode(), XdpMode::Native);
        // A second program on the same interface is refused, by name.
        for mode in [XdpMode::Native, XdpMode::Generic] {
            let e = XdpProgram::attach("b0", mode).unwrap_err();
            eprintln!("{e}");
            assert!(e.to_string().contains("\"b0\""), "{e}");
        }
        // Detached on drop: attaching again works.
        drop(first);
        XdpProgram::attach("b0", XdpMode::Generic).expect("attach after drop");
    });
}

/// IP datagrams the calling thread's namespace has forwarded.
fn forwarded_datagrams() -> u64 {
    // /proc/thread-self: this thread's namespace (it joined one with setns).
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().expect("Ip: names"), ip.next().expect("Ip: values"));
    let at = names.split_whitespace().position(|n| n == "ForwDatagrams").expect("ForwDatagrams");
    values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).expect("a count")
}

/// The guard keeps transit frames away from the kernel's stack once the
/// AF_PACKET socket has its copy: a kernel switched to forwarding after
/// torwart started forwards nothing, and the box's own traffic still works.
#[test]
fn af_packet_guard_keeps_transit_from_the_kernel() {
    require_root!();
    let lab = Lab::new();
    // B forwards (the mistake the guard is for), back out of b0 to A.
    sysctl(&lab.b, "net.ipv4.conf.all.forwarding=1");
    sysctl(&lab.b, "net.ipv4.conf.all.send_redirects=0");
    sysctl(&lab.b, "net.ipv4.conf.b0.send_redirects=0");
    ip(&["-n", &lab.b, "route", "add", "198.51.100.0/24", "via", "10.77.0.1"]);
    in_ns(&lab.b.clone(), || {
        let mut port = PacketPort::open("b0", &PacketConfig { port: PortId(3), ..Default::default() }).expect("open");
        let before = forwarded_datagrams();
        send_transit_from_a(&lab, 20);
        let (hit, _) = collect(&mut port, 20, Duration::from_secs(3), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
        assert_eq!(hit, 20, "transit frames received by the AF_PACKET socket");
        assert!(forwarded_datagrams() >= before + 20, "without the guard the kernel forwards them too");

        let guard = PacketGuard::attach("b0").expect("attach the guard");
        guard.set_local_addresses(&[IpAddr::from(IP_B)]).expect("local addresses");
        assert!(guard.is_local(IpAddr::from(IP_B)).unwrap());
        let v = |f: &[u8]| guard.dry_run(f).expect("dry run");
        assert_eq!(v(&udp4(IP_A, TRANSIT, 1, 2, b"x")), GuardVerdict::Drop, "transit IPv4");
        assert_eq!(v(&ipv6("2001:db8::1")), GuardVerdict::Drop, "transit IPv6");
        assert_eq!(v(&udp4(IP_A, IP_B, 1, 2, b"x")), GuardVerdict::Pass, "local IPv4");
        assert_eq!(v(&udp4(IP_A, [224, 0, 0, 5], 1, 2, b"x")), GuardVerdict::Pass, "multicast");
        assert_eq!(v(&ipv6("fe80::1")), GuardVerdict::Pass, "link-local (NDP)");
        // (A truncated IPv4/IPv6 header, which the guard drops, cannot be
        // dry-run: the kernel's test run refuses it with EINVAL.)
        let mut arp = eth([0xff; 6], MAC_A, 0x0806);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(v(&arp), GuardVerdict::Pass, "ARP");

        let before = forwarded_datagrams();
        send_transit_from_a(&lab, 20);
        let (hit, _) = collect(&mut port, 20, Duration::from_secs(3), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
        assert_eq!(hit, 20, "the socket still gets every transit frame");
        assert_eq!(forwarded_datagrams(), before, "the kernel forwarded a transit frame past the guard");
        // ARP and the box's own address still reach the kernel.
        ip(&["neigh", "flush", "dev", "b0"]);
        assert!(lab.ping_b(), "ping 10.77.0.2 from A through the guard");

        // Detached on drop: the kernel forwards again.
        drop(guard);
        let before = forwarded_datagrams();
        send_transit_from_a(&lab, 20);
        let _ = collect(&mut port, 20, Duration::from_secs(3), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
        assert!(forwarded_datagrams() >= before + 20, "the guard is gone with its link");
    });
    let e = PacketGuard::attach("twio-nonexistent").unwrap_err();
    assert!(e.to_string().contains("twio-nonexistent"), "{e}");
}

/// Admission control: while the worker does not read, at most the window's
/// worth of transit frames gets past the XDP program to the AF_PACKET
/// socket; the rest is dropped there and counted. The box's own traffic
/// passes without credit, and a drained socket has the whole window again.
#[test]
fn af_packet_admission_holds_the_kernel_to_the_workers_pace() {
    require_root!();
    let lab = Lab::new();
    in_ns(&lab.b.clone(), || {
        const WINDOW: u32 = 16;
        let adm = PacketAdmission::attach("b0", XdpMode::Native, WINDOW).expect("attach the admission program");
        assert_eq!(adm.mode(), XdpMode::Native, "veth runs XDP natively");
        adm.set_local_addresses(&[IpAddr::from(IP_B)]).expect("local addresses");
        assert!(adm.is_local(IpAddr::from(IP_B)).unwrap());
        let mut port = PacketPort::open("b0", &PacketConfig { port: PortId(3), ..Default::default() }).expect("open");
        port.admit_with(adm.credits().expect("map the credit"));
        // A second view of the same credit, to watch it.
        let credit = adm.credits().expect("map the credit again");
        assert_eq!(credit.available(), i64::from(WINDOW));

        // The program decides on the real maps: transit takes credit, the
        // rest does not.
        let v = |f: &[u8]| adm.dry_run(f).expect("dry run");
        let mut arp = eth([0xff; 6], MAC_A, 0x0806);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(v(&arp), XdpVerdict::Pass, "ARP");
        assert_eq!(v(&udp4(IP_A, IP_B, 1, 2, b"x")), XdpVerdict::Pass, "local IPv4");
        assert_eq!(v(&udp4(IP_A, [224, 0, 0, 5], 1, 2, b"x")), XdpVerdict::Pass, "multicast");
        assert_eq!(v(&ipv6("fe80::1")), XdpVerdict::Pass, "link-local (NDP)");
        assert_eq!(credit.available(), i64::from(WINDOW), "the kernel's own frames take no credit");
        assert_eq!(v(&udp4(IP_A, TRANSIT, 1, 2, b"x")), XdpVerdict::Pass, "transit with credit");
        assert_eq!(v(&ipv6("2001:db8::1")), XdpVerdict::Pass, "transit IPv6 with credit");
        assert_eq!(credit.available(), i64::from(WINDOW) - 2);
        let _ = collect(&mut port, 1, Duration::from_millis(20), |_| false);
        assert_eq!(credit.available(), i64::from(WINDOW), "an empty socket restores the window");

        // 40 transit datagrams while the worker sleeps: 16 admitted, 24 dropped.
        send_transit_from_a(&lab, 40);
        let deadline = Instant::now() + Duration::from_secs(3);
        while adm.refused().unwrap() < 24 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(credit.available(), 0, "the window is spent");
        assert_eq!(adm.refused().unwrap(), 24, "refused beyond the window");
        // The box's own traffic still passes with no credit left.
        assert!(lab.ping_b(), "ping 10.77.0.2 from A with the credit spent");
        assert_eq!(adm.refused().unwrap(), 24, "ARP and ICMP to the box were not refused");
        let (hit, _) = collect(&mut port, 40, Duration::from_millis(500), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
        assert_eq!(hit, WINDOW as usize, "the socket holds exactly the window");
        assert_eq!(credit.available(), i64::from(WINDOW), "received and drained: the window again");

        // A worker that keeps up loses nothing.
        for _ in 0..5 {
            send_transit_from_a(&lab, 10);
            let (hit, _) = collect(&mut port, 10, Duration::from_secs(3), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
            assert_eq!(hit, 10);
        }
        assert_eq!(adm.refused().unwrap(), 24);

        // Detached on drop: everything reaches the socket again.
        drop(adm);
        send_transit_from_a(&lab, 40);
        let (hit, _) = collect(&mut port, 40, Duration::from_secs(3), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
        assert_eq!(hit, 40, "without the program nothing is refused");
    });
    let e = PacketAdmission::attach("twio-nonexistent", XdpMode::Auto, 16).unwrap_err();
    assert!(e.to_string().contains("twio-nonexistent"), "{e}");
}

#[test]
fn af_packet_roundtrip() {
    require_root!();
    let lab = Lab::new();
    in_ns(&lab.b.clone(), || {
        assert!(!io::afpacket::kernel_forwarding_enabled().unwrap(), "B must not forward");
        let mut port = PacketPort::open("b0", &PacketConfig { port: PortId(3), ..Default::default() }).expect("open");

        send_transit_from_a(&lab, 20);
        let (hit, _) = collect(&mut port, 20, Duration::from_secs(3), |f| is_udp_to(f, TRANSIT, TRANSIT_PORT));
        assert_eq!(hit, 20, "transit frames received by the AF_PACKET socket");

        // The kernel still answers for its own address.
        assert!(lab.ping_b(), "ping 10.77.0.2 from A");

        let got = send_to_a(&lab, &mut port);
        assert_eq!(got, 100, "frames sent through the AF_PACKET socket received in A");
        let stats = port.stats();
        eprintln!("{stats:?}");
        assert!(stats.rx_frames >= 20);
        assert_eq!(stats.tx_frames, 100);
        assert_eq!(stats.kernel_drops, 0);

        // A frame too long for the link is refused alone: the frames
        // behind it in the batch still go (the whole rest was lost before).
        let got = send_to_a_among_long(&lab, &mut port, true);
        assert_eq!(got, 100, "frames behind a refused one received in A");
        let stats = port.stats();
        assert_eq!(stats.tx_frames, 200);
        assert_eq!(stats.tx_oversize, 11);
    });
}

fn link_stat(ns: &str, dev: &str, stat: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", &format!("/sys/class/net/{dev}/statistics/{stat}")])
        .output()
        .expect("read a link statistic");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("{dev} {stat}: {out:?}"))
}

/// The testbed's generator: frames transmitted by an XDP program in A reach
/// B's XDP program as XDP frames, round robin over the table, each with its
/// own varying bytes; A's interface counts them as sent.
#[test]
fn live_frames_reach_the_peer_as_xdp_frames() {
    require_root!();
    let lab = Lab::new();
    let frames: Vec<Vec<u8>> =
        (0..300u16).map(|i| udp4(IP_A, TRANSIT, 20_000 + i, TRANSIT_PORT, b"twio-live-frame-padding")).collect();
    // Swap the MACs: these go from A to B.
    let frames: Vec<Vec<u8>> = frames
        .into_iter()
        .map(|mut f| {
            f[..6].copy_from_slice(&MAC_B);
            f[6..12].copy_from_slice(&MAC_A);
            f
        })
        .collect();
    let b = lab.b.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let receiver = std::thread::spawn(move || {
        in_ns(&b, move || {
            let prog = XdpProgram::attach("b0", XdpMode::Native).expect("attach");
            prog.set_local_addresses(&[IpAddr::from(IP_B)]).unwrap();
            let mut port = XdpPort::open("b0", &XdpConfig { port: PortId(3), ..Default::default() }).expect("open");
            prog.register_socket(0, &port).expect("register");
            ready_tx.send(()).unwrap();
            let mut ports = vec![0u32; 300];
            let mut batch = Batch::new(64, 2048);
            let deadline = Instant::now() + Duration::from_secs(5);
            while ports.iter().sum::<u32>() < 600 && Instant::now() < deadline {
                batch.clear();
                if port.recv(&mut batch).expect("recv") == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                for f in batch.frames() {
                    let f = f.as_slice();
                    assert!(is_udp_to(f, TRANSIT, TRANSIT_PORT), "{f:02x?}");
                    assert_eq!(&f[42..], b"twio-live-frame-padding");
                    ports[usize::from(u16::from_be_bytes([f[34], f[35]]) - 20_000)] += 1;
                }
            }
            let _ = done_rx.recv_timeout(Duration::from_secs(1));
            ports
        })
    });
    ready_rx.recv().expect("receiver ready");
    // A's own IPv6 (router solicitations, MLD reports) would add to what a0 sends.
    sysctl(&lab.a, "net.ipv6.conf.a0.disable_ipv6=1");
    let sent_before = link_stat(&lab.a, "a0", "tx_packets");
    in_ns(&lab.a, || {
        let live = io::LiveFrames::new("a0", &frames).expect("load the generator");
        live.send(450, 64).expect("send");
        live.send(150, 7).expect("send");
        assert_eq!(live.sent().expect("the generator's counter"), 600);
        let mut bad = frames[..2].to_vec();
        bad[1][12] = 0x86;
        let e = io::LiveFrames::new("a0", &bad).unwrap_err().to_string();
        assert!(e.contains("a0") && e.contains("frame 1 differs from frame 0 outside bytes 24..48"), "{e}");
        let e = io::LiveFrames::new("a0", &[vec![0u8; 4_000]]).unwrap_err().to_string();
        assert!(e.contains("frames of 4000 bytes, 48 to 3500 possible"), "{e}");
    });
    let _ = done_tx.send(());
    let ports = receiver.join().unwrap();
    assert!(ports.iter().all(|&n| n == 2), "every frame of the table twice, in turn: {ports:?}");
    assert_eq!(link_stat(&lab.a, "a0", "tx_packets") - sent_before, 600, "the sender counts what it sent");
}
