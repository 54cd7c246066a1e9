//! Golden replay tests: input captures → expected output captures + counters.
//!
//! Each case is a folder under `tests/golden/` holding `inside.pcap` and
//! `outside.pcap` (the input), `to-inside.pcap` and `to-outside.pcap` (what
//! torwart must forward) and `counters.json` (every non-zero counter). The
//! test replays the inputs and compares bytes and counters exactly. A case
//! that routes also holds `routes.toml`, the box's links, routes and
//! neighbours (`control::routes`), written by hand.
//!
//! The inputs are written by the scripts below, which spell out each
//! conversation and what must become of it. After a deliberate change, run
//! `TORWART_REGENERATE=1 cargo test -p torwart --test golden` and review the
//! diff of the expected files like any other change.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use torwart::replay;
use wire::build::{self, Eth};
use wire::ethernet::MacAddr;
use wire::flow::proto;
use wire::tcp::TcpFlags;

const T0: u64 = 1_700_000_000_000_000_000;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

fn regenerate() -> bool {
    std::env::var_os("TORWART_REGENERATE").is_some_and(|v| v == "1")
}

/// A capture being scripted: frames from each side with timestamps.
#[derive(Default)]
struct Script {
    inside: Vec<(u64, Vec<u8>)>,
    outside: Vec<(u64, Vec<u8>)>,
}

const IN: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 0x11]), vlan: None };
const OUT: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 2]), dst: MacAddr([2, 0, 0, 0, 0, 0x12]), vlan: None };

impl Script {
    /// Adds a frame at `ms` milliseconds from the inside (`true`) or outside.
    fn at(&mut self, ms: u64, from_inside: bool, frame: Vec<u8>) -> Vec<u8> {
        let side = if from_inside { &mut self.inside } else { &mut self.outside };
        side.push((T0 + ms * 1_000_000, frame.clone()));
        frame
    }

    fn write(&self, case: &Path) {
        std::fs::create_dir_all(case).unwrap();
        for (name, frames) in [("inside.pcap", &self.inside), ("outside.pcap", &self.outside)] {
            // A capture is in time order, whatever order the script wrote it in.
            let mut frames = frames.clone();
            frames.sort_by_key(|f| f.0);
            let mut w = io::PcapWriter::create(case.join(name)).unwrap();
            for (ts, f) in &frames {
                w.write_frame(f, *ts).unwrap();
            }
            w.finish().unwrap();
        }
    }
}

fn frame(f: impl FnOnce(&mut [u8]) -> Result<usize, wire::BuildError>) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = f(&mut buf).expect("frame fits");
    buf.truncate(n);
    buf
}

fn tcp(
    from_inside: bool,
    src: IpAddr,
    dst: IpAddr,
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    len: usize,
) -> Vec<u8> {
    let eth = if from_inside { IN } else { OUT };
    frame(|b| build::tcp(b, &eth, src, dst, sp, dp, seq, ack, flags, 502, len))
}

fn udp(from_inside: bool, src: IpAddr, dst: IpAddr, sp: u16, dp: u16, len: usize) -> Vec<u8> {
    let eth = if from_inside { IN } else { OUT };
    frame(|b| build::udp(b, &eth, src, dst, sp, dp, len))
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// `frame` (IPv4 over Ethernet) with its TTL and Don't Fragment flag set.
fn ipv4_with(mut frame: Vec<u8>, ttl: u8, dont_frag: bool) -> Vec<u8> {
    let mut ip = wire::ipv4::Packet::new_checked(&mut frame[14..]).expect("an IPv4 frame");
    ip.set_ttl(ttl);
    ip.set_dont_frag(dont_frag);
    ip.fill_checksum();
    frame
}

const S: TcpFlags = TcpFlags::SYN;
const A: TcpFlags = TcpFlags::ACK;
const F: TcpFlags = TcpFlags::FIN;
const R: TcpFlags = TcpFlags::RST;

/// The demonstration: members' everyday traffic and the usual trouble.
fn demo() -> Script {
    let mut s = Script::default();
    let alice = v4(10, 0, 0, 9);
    let bob = v4(10, 0, 0, 17);
    let web = v4(198, 19, 0, 80);
    let dns = v4(198, 19, 0, 53);
    let carol6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
    let web6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 1, 0, 0, 0, 1));

    // Alice opens HTTPS: handshake and data both ways. All forwarded.
    s.at(0, true, tcp(true, alice, web, 40_000, 443, 1000, 0, S, 0));
    s.at(10, false, tcp(false, web, alice, 443, 40_000, 5000, 1001, S | A, 0));
    s.at(20, true, tcp(true, alice, web, 40_000, 443, 1001, 5001, A, 0));
    s.at(21, true, tcp(true, alice, web, 40_000, 443, 1001, 5001, A | TcpFlags::PSH, 100));
    s.at(40, false, tcp(false, web, alice, 443, 40_000, 5001, 1101, A | TcpFlags::PSH, 1400));
    s.at(41, true, tcp(true, alice, web, 40_000, 443, 1101, 6401, A, 0));
    // A blind reset from the outside, far outside the window: dropped, the connection lives.
    s.at(50, false, tcp(false, web, alice, 443, 40_000, 5001 + 900_000_000, 0, R, 0));

    // Bob asks DNS; the answer comes back.
    let query = s.at(60, true, udp(true, bob, dns, 53_001, 53, 40));
    s.at(70, false, udp(false, dns, bob, 53, 53_001, 120));
    // Bob pings the web server.
    s.at(80, true, frame(|b| build::icmp_echo(b, &IN, bob, web, true, 77, 1, 56)));
    s.at(90, false, frame(|b| build::icmp_echo(b, &OUT, web, bob, false, 77, 1, 56)));

    // Unsolicited from the outside: a SYN to Alice's SSH, a UDP probe to Bob. Dropped.
    s.at(100, false, tcp(false, v4(203, 0, 113, 7), alice, 51_515, 22, 777, 0, S, 0));
    s.at(110, false, udp(false, v4(203, 0, 113, 7), bob, 1900, 5000, 20));

    // An ICMP port unreachable about Bob's query: related, forwarded to Bob.
    s.at(120, false, frame(|b| build::icmp_error(b, &OUT, dns, bob, 3, 3, &query[14..])));
    // An ICMP error about a packet nobody sent: dropped.
    let fake = udp(true, bob, v4(198, 19, 7, 7), 9999, 53, 10);
    s.at(130, false, frame(|b| build::icmp_error(b, &OUT, v4(198, 19, 7, 7), bob, 3, 1, &fake[14..])));

    // Carol over IPv6: handshake, forwarded both ways.
    s.at(140, true, tcp(true, carol6, web6, 50_000, 443, 7, 0, S, 0));
    s.at(150, false, tcp(false, web6, carol6, 443, 50_000, 9, 8, S | A, 0));
    s.at(160, true, tcp(true, carol6, web6, 50_000, 443, 8, 10, A, 0));

    // Alice sends a fragmented UDP datagram; the second fragment overtakes
    // the first: held, then released when the first is forwarded.
    let mut dgram = vec![0u8; 8 + 2000];
    let n = build::udp_datagram(&mut dgram, alice, dns, 40_001, 4500, 2000).unwrap();
    dgram.truncate(n);
    let piece = |off: usize, end: usize, more: bool| {
        frame(|b| build::ip_fragment(b, &IN, alice, dns, proto::UDP, 0x1234, off as u16, more, &dgram[off..end]))
    };
    s.at(200, true, piece(800, 1600, true));
    s.at(201, true, piece(0, 800, true));
    s.at(202, true, piece(1600, dgram.len(), false));
    // An overlapping fragment attack: the overlap is dropped, so is the rest.
    let mut d2 = vec![0u8; 8 + 100];
    let n = build::udp_datagram(&mut d2, alice, dns, 40_002, 4500, 100).unwrap();
    d2.truncate(n);
    let p2 = |off: usize, end: usize, more: bool| {
        frame(|b| build::ip_fragment(b, &IN, alice, dns, proto::UDP, 0x4321, off as u16, more, &d2[off..end]))
    };
    s.at(220, true, p2(0, 48, true));
    s.at(221, true, p2(40, 88, true));
    s.at(222, true, p2(88, d2.len(), false));

    // Not IP: an ARP request (the kernel's business). Dropped by replay as not_ip.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[
        2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 10, 0,
        0, 1,
    ]);
    s.at(240, true, arp);
    // A frame cut inside its IPv4 header.
    let cut = tcp(true, alice, web, 40_000, 443, 1101, 6401, A, 0);
    s.at(250, true, cut[..30].to_vec());

    // Alice closes her connection in order.
    s.at(260, true, tcp(true, alice, web, 40_000, 443, 1101, 6401, F | A, 0));
    s.at(270, false, tcp(false, web, alice, 443, 40_000, 6401, 1102, F | A, 0));
    s.at(280, true, tcp(true, alice, web, 40_000, 443, 1102, 6402, A, 0));
    // A null scan (no flags) from the inside: dropped.
    s.at(300, true, tcp(true, bob, web, 1234, 80, 1, 0, TcpFlags::default(), 0));

    // Bob's unanswered UDP flow times out after 30 s; a late answer is unsolicited.
    s.at(310, true, udp(true, bob, v4(198, 19, 0, 99), 9999, 9999, 10));
    s.at(40_000, false, udp(false, v4(198, 19, 0, 99), bob, 9999, 9999, 10));
    s
}

/// A small table under a SYN flood from the inside: established flows survive.
fn table_full() -> Script {
    let mut s = Script::default();
    let web = v4(198, 19, 0, 80);
    // Four established connections.
    for i in 0..4u8 {
        let c = v4(10, 0, 1, i + 1);
        s.at(u64::from(i), true, tcp(true, c, web, 1000, 443, 100, 0, S, 0));
        s.at(10 + u64::from(i), false, tcp(false, web, c, 443, 1000, 900, 101, S | A, 0));
        s.at(20 + u64::from(i), true, tcp(true, c, web, 1000, 443, 101, 901, A, 0));
    }
    // A flood of spoofed SYNs that nobody answers.
    for i in 0..60u16 {
        let c = v4(10, 0, 2, (i % 250) as u8 + 1);
        s.at(100 + u64::from(i), true, tcp(true, c, web, 2000 + i, 443, 1, 0, S, 0));
    }
    // The established connections still pass, both ways.
    for i in 0..4u8 {
        let c = v4(10, 0, 1, i + 1);
        s.at(200 + u64::from(i), true, tcp(true, c, web, 1000, 443, 101, 901, A, 10));
        s.at(210 + u64::from(i), false, tcp(false, web, c, 443, 1000, 901, 111, A, 10));
    }
    s
}

/// The member gateway on the example database of docs/members.md: NAT,
/// shared addresses, a port forward, hairpinning, spoofing, a blocked
/// member, a blocklisted address, ICMP error translation, IPv6 openings.
fn members() -> Script {
    let mut s = Script::default();
    let laptop = v4(10, 0, 1, 1); // member 101, public 198.51.100.10
    let nas = v4(10, 0, 1, 2); // member 101, forward 198.51.100.10:8080 -> :80
    let c301 = v4(10, 0, 3, 1); // member 104, public 198.51.100.20 ports 1024-32767
    let pub101 = v4(198, 51, 100, 10);
    let pub104 = v4(198, 51, 100, 20);
    let web = v4(198, 19, 0, 80);
    let dns = v4(198, 19, 0, 53);
    let client = v4(198, 19, 7, 7);

    // The laptop opens HTTPS: it leaves as 198.51.100.10 (port kept), answers come back.
    s.at(0, true, tcp(true, laptop, web, 40_000, 443, 1000, 0, S, 0));
    s.at(10, false, tcp(false, web, pub101, 443, 40_000, 5000, 1001, S | A, 0));
    s.at(20, true, tcp(true, laptop, web, 40_000, 443, 1001, 5001, A, 0));
    s.at(21, true, tcp(true, laptop, web, 40_000, 443, 1001, 5001, A | TcpFlags::PSH, 300));
    s.at(40, false, tcp(false, web, pub101, 443, 40_000, 5001, 1301, A | TcpFlags::PSH, 1400));
    // Member 104 asks DNS from its shared address; a port unreachable about it comes back, translated.
    s.at(50, true, udp(true, c301, dns, 5000, 53, 40));
    s.at(60, false, udp(false, dns, pub104, 53, 5000, 90));
    let sent = udp(false, pub104, dns, 5000, 53, 40);
    s.at(70, false, frame(|b| build::icmp_error(b, &OUT, dns, pub104, 3, 3, &sent[14..])));
    // A ping from the laptop and its reply.
    s.at(80, true, frame(|b| build::icmp_echo(b, &IN, laptop, web, true, 99, 1, 56)));
    s.at(90, false, frame(|b| build::icmp_echo(b, &OUT, web, pub101, false, 99, 1, 56)));
    // From the internet to the NAS through the port forward, and its answer.
    s.at(100, false, tcp(false, client, pub101, 50_505, 8080, 70, 0, S, 0));
    s.at(110, true, tcp(true, nas, client, 80, 50_505, 300, 71, S | A, 0));
    // Unsolicited: another port of the public address.
    s.at(120, false, tcp(false, client, pub101, 50_506, 22, 70, 0, S, 0));
    // Member 104 reaches the NAS by the public address (hairpinning) and gets its answer.
    s.at(130, true, tcp(true, c301, pub101, 6000, 8080, 1, 0, S, 0));
    s.at(140, true, tcp(true, nas, pub104, 80, 6000, 900, 2, S | A, 0));
    // Spoofed, unregistered, blocked member, blocklisted destination: all dropped.
    s.at(150, true, tcp(true, v4(172, 16, 0, 5), web, 1, 80, 1, 0, S, 0));
    s.at(151, true, tcp(true, v4(10, 0, 200, 1), web, 1, 80, 1, 0, S, 0));
    s.at(152, true, tcp(true, v4(10, 0, 2, 1), web, 1, 80, 1, 0, S, 0));
    s.at(153, true, tcp(true, laptop, v4(203, 0, 113, 9), 1, 80, 1, 0, S, 0));
    // IPv6 is not translated: an opening lets one port in, not others.
    let dev6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0x101, 0, 0, 0, 0x10));
    let far6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xaaaa, 0, 0, 0, 0, 1));
    s.at(160, false, tcp(false, far6, dev6, 7000, 443, 1, 0, S, 0));
    s.at(161, false, tcp(false, far6, dev6, 7000, 22, 1, 0, S, 0));
    s
}

/// The test account (member 102, plan "test": 2 Mbit/s up, a 16,000-byte
/// burst) uploads 1042-byte frames every 2 ms (4.2 Mbit/s) for 100 ms while
/// the laptop of member 101 (20 Mbit/s) sends a few: the burst passes, then
/// the test account's frames leave at its rate, later than they came, and
/// what waits too long is dropped by name; the laptop's frames pass at once.
fn shaping() -> Script {
    let mut s = Script::default();
    let test_box = v4(10, 0, 9, 1);
    let laptop = v4(10, 0, 1, 1);
    let sink = v4(198, 19, 0, 9);
    for i in 0..50u64 {
        s.at(2 * i, true, udp(true, test_box, sink, 9000, 9, 1000));
        if i % 10 == 0 {
            s.at(2 * i + 1, true, udp(true, laptop, sink, 9001, 9, 100));
        }
    }
    s
}

/// The member gateway routing (`tests/golden/routing/routes.toml`): the
/// members' networks lie behind a distribution router on the inside port
/// (10.255.0.2, 2001:db8:ffff::2, MAC ..:01); upstream is 192.0.2.2 (..:02),
/// with a peer 192.0.2.3 (..:03) for 198.19.7.0/24. What must become of
/// each frame is said beside it.
fn routing() -> Script {
    let mut s = Script::default();
    let laptop = v4(10, 0, 1, 1); // member 101, public 198.51.100.10
    let nas = v4(10, 0, 1, 2); // member 101, forward 198.51.100.10:8080 -> :80
    let pub101 = v4(198, 51, 100, 10);
    let web = v4(198, 19, 0, 80);
    let peer = v4(198, 19, 7, 7);
    let peer_eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 3]), ..OUT };

    // The laptop opens HTTPS by the default route: it leaves translated,
    // from wan0's MAC (..:12) to the upstream's (..:02), TTL 63; the answer
    // reaches the laptop from lan0's MAC (..:11) to the distribution
    // router's (..:01), TTL 63.
    s.at(0, true, tcp(true, laptop, web, 40_000, 443, 1000, 0, S, 0));
    s.at(10, false, tcp(false, web, pub101, 443, 40_000, 5000, 1001, S | A, 0));
    s.at(20, true, tcp(true, laptop, web, 40_000, 443, 1001, 5001, A, 0));
    // To the peer's network: the more specific route, the peer's MAC (..:03);
    // its answer comes from the peer.
    s.at(30, true, tcp(true, laptop, peer, 40_001, 443, 7000, 0, S, 0));
    s.at(40, false, frame(|b| build::tcp(b, &peer_eth, peer, pub101, 443, 40_001, 9000, 7001, S | A, 502, 0)));
    // Into the port forward from the peer, and the NAS's answer: back by the peer.
    s.at(50, false, frame(|b| build::tcp(b, &peer_eth, peer, pub101, 50_505, 8080, 70, 0, S, 502, 0)));
    s.at(60, true, tcp(true, nas, peer, 80, 50_505, 300, 71, S | A, 0));

    // To an unreachable route: dropped, and an ICMP host unreachable from
    // lan0's 10.255.0.1 to the translated source goes back through the
    // engine, which translates it back to the laptop.
    s.at(100, true, udp(true, laptop, v4(100, 64, 0, 9), 5353, 53, 30));
    // A next hop without a neighbour entry: dropped, its resolution asked for.
    s.at(110, true, udp(true, laptop, v4(198, 19, 99, 9), 5354, 53, 30));
    // A route with MTU 1280: 1400 bytes of UDP leave in two fragments; with
    // Don't Fragment set they are refused with "fragmentation needed"
    // (MTU 1280), translated back to the laptop.
    s.at(120, true, udp(true, laptop, v4(198, 19, 6, 6), 5355, 9, 1400));
    s.at(130, true, ipv4_with(udp(true, laptop, v4(198, 19, 6, 6), 5356, 9, 1400), 64, true));

    // Traceroute: TTL 1 is answered with time exceeded from lan0's address
    // before the engine (no flow, no binding); TTL 2 leaves with TTL 1.
    s.at(200, true, ipv4_with(udp(true, laptop, web, 33_000, 33_434, 12), 1, false));
    s.at(210, true, ipv4_with(udp(true, laptop, web, 33_000, 33_435, 12), 2, false));
    // From the outside with TTL 1: time exceeded from wan0's 192.0.2.1.
    s.at(220, false, ipv4_with(tcp(false, peer, pub101, 50_506, 8080, 70, 0, S, 0), 1, false));

    // IPv6 has no route upstream: a device's SYN is refused with ICMPv6
    // "no route" from lan0's 2001:db8:ffff::1, routed back to the device
    // by the members' IPv6 route.
    let dev6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0x101, 0, 0, 0, 0x10));
    let far6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xaaaa, 0, 0, 0, 0, 1));
    s.at(300, true, tcp(true, dev6, far6, 50_000, 443, 1, 0, S, 0));
    // To the box itself: not forwarded.
    s.at(310, true, frame(|b| build::icmp_echo(b, &IN, laptop, v4(10, 255, 0, 1), true, 5, 1, 56)));
    s
}

struct Case {
    name: &'static str,
    script: fn() -> Script,
    max_flows: u32,
    /// Replay with the example member database.
    members: bool,
    workers: usize,
    /// Shape members by plan.
    shaping: bool,
    /// Route with the case's `routes.toml`.
    routes: bool,
}

/// A case's settings where it says nothing else.
const PLAIN: Case =
    Case { name: "", script: demo, max_flows: 262_144, members: false, workers: 1, shaping: false, routes: false };

const CASES: &[Case] = &[
    Case { name: "demo", script: demo, ..PLAIN },
    Case { name: "table-full", script: table_full, max_flows: 16, ..PLAIN },
    Case { name: "members", script: members, members: true, ..PLAIN },
    Case { name: "members-2-workers", script: members, members: true, workers: 2, ..PLAIN },
    Case { name: "shaping", script: shaping, members: true, shaping: true, ..PLAIN },
    Case { name: "routing", script: routing, members: true, routes: true, ..PLAIN },
];

fn run_case(case: &Case) {
    let dir = dir().join(case.name);
    if regenerate() {
        (case.script)().write(&dir);
    }
    let out = std::env::temp_dir().join(format!("torwart-golden-{}-{}", case.name, std::process::id()));
    let mut opts = replay::options(Some(&dir.join("inside.pcap")), Some(&dir.join("outside.pcap")), &out, 0);
    opts.engine.max_flows = case.max_flows;
    if case.members {
        opts.policy = Some(std::sync::Arc::new(policy::compile(&policy::sample::example(), 1).unwrap()));
    }
    opts.workers = case.workers;
    if case.shaping {
        opts.shaping = Some(replay::shaping(case.workers));
    }
    if case.routes {
        let routes = control::routes::StaticRoutes::load(&dir.join("routes.toml"));
        opts.routes = Some(routes.unwrap_or_else(|e| panic!("{}: {e}", case.name)));
    }
    let report = replay::run(&opts).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let counters = serde_json::to_string_pretty(&serde_json::json!({
        "counters": report.counters,
        "members": report.members,
    }))
    .unwrap()
        + "\n";
    let outputs = ["to-inside.pcap", "to-outside.pcap"];
    if regenerate() {
        std::fs::write(dir.join("counters.json"), &counters).unwrap();
        for o in outputs {
            std::fs::copy(out.join(o), dir.join(o)).unwrap();
        }
    }
    let expected = std::fs::read_to_string(dir.join("counters.json")).unwrap();
    assert_eq!(counters, expected, "{}: counters differ from counters.json", case.name);
    for o in outputs {
        let got = std::fs::read(out.join(o)).unwrap();
        let want = std::fs::read(dir.join(o)).unwrap();
        assert!(
            got == want,
            "{}: {o} differs from the expected capture ({} vs {} bytes)",
            case.name,
            got.len(),
            want.len()
        );
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn golden_demo() {
    run_case(&CASES[0]);
}

#[test]
fn golden_table_full() {
    run_case(&CASES[1]);
}

#[test]
fn golden_members() {
    run_case(&CASES[2]);
}

/// Two workers, frames spread over their queues by hash: what is forwarded
/// (and counted) is what one worker forwards, frames handed to their
/// member's worker where they arrive on the other.
#[test]
fn golden_members_on_two_workers() {
    run_case(&CASES[3]);
    let frames = |case: &str, file: &str| {
        let mut r = io::PcapReader::open(dir().join(case).join(file)).unwrap();
        let mut all = Vec::new();
        let mut slot = io::PacketBuf::default();
        while r.read_next(&mut slot).unwrap() {
            all.push((slot.ts_ns, slot.as_slice().to_vec()));
        }
        all.sort();
        all
    };
    for file in ["to-inside.pcap", "to-outside.pcap"] {
        assert_eq!(frames("members", file), frames("members-2-workers", file), "{file}");
    }
    let counters = std::fs::read_to_string(dir().join("members-2-workers/counters.json")).unwrap();
    assert!(counters.contains("handoff_handed_off"), "{counters}");
}

/// Shaping in replay time: see [`shaping`].
#[test]
fn golden_shaping() {
    run_case(&CASES[4]);
    let mut r = io::PcapReader::open(dir().join("shaping/to-outside.pcap")).unwrap();
    let mut slot = io::PacketBuf::default();
    let mut late = 0;
    while r.read_next(&mut slot).unwrap() {
        // Frames leave at whole milliseconds when released; they came at even ones.
        late += usize::from(slot.ts_ns % 2_000_000 != 0);
    }
    assert!(late > 0, "some frames left later than they came");
}

/// Routing: see [`routing`]. Every outcome the script stages is counted.
#[test]
fn golden_routing() {
    run_case(&CASES[5]);
    let counters = std::fs::read_to_string(dir().join("routing/counters.json")).unwrap();
    for name in [
        "router_forwarded",
        "router_fragmented",
        "router_ttl_exceeded",
        "router_unreachable_route",
        "router_neighbour_missing",
        "router_too_big",
        "router_no_route",
        "router_local",
        "icmp_related",
    ] {
        assert!(counters.contains(&format!("\"{name}\"")), "{name} not counted: {counters}");
    }
}

/// The scripted inputs are what is committed (or the script changed
/// without regenerating).
#[test]
fn committed_inputs_match_their_scripts() {
    for case in CASES {
        let tmp = std::env::temp_dir().join(format!("torwart-golden-in-{}-{}", case.name, std::process::id()));
        (case.script)().write(&tmp);
        for f in ["inside.pcap", "outside.pcap"] {
            let a = std::fs::read(tmp.join(f)).unwrap();
            let b = std::fs::read(dir().join(case.name).join(f)).unwrap();
            assert!(a == b, "{}/{f} is not what its script writes: regenerate", case.name);
        }
        std::fs::remove_dir_all(&tmp).ok();
    }
}
