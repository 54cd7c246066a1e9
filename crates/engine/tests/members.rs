//! The member gateway through the engine: NAT, forwards, hairpinning,
//! anti-spoofing, blocks, ICMP error translation, accounting and reload,
//! on the example member database of docs/members.md.

use core::net::{IpAddr, Ipv6Addr};
use core::time::Duration;
use engine::{Config, DropReason, Engine, Reason, Side, Time, Verdict};
use policy::{sample, Status};
use std::sync::Arc;
use wire::build::{self, Eth};
use wire::classify::classify;
use wire::ethernet::MacAddr;
use wire::tcp::TcpFlags;
use wire::{tcp, FlowKey};

const IN: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 0x11]), vlan: None };
const OUT: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 2]), dst: MacAddr([2, 0, 0, 0, 0, 0x12]), vlan: None };

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

const LAPTOP: &str = "10.0.1.1"; // member 101
const NAS: &str = "10.0.1.2"; // member 101, behind the forward 198.51.100.10:8080 -> :80
const PUBLIC_101: &str = "198.51.100.10";
const WEB: &str = "192.0.2.80";

struct Gw {
    e: Engine,
    now: Time,
}

impl Gw {
    fn new() -> Gw {
        Gw::with(Config::default())
    }

    fn with(config: Config) -> Gw {
        let now = Time::from_secs(1000);
        let mut e = Engine::new(config, now);
        e.set_policy(Arc::new(policy::compile(&sample::example(), 1).unwrap()), &[]);
        Gw { e, now }
    }

    fn send(&mut self, from: Side, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
        let mut f = [frame];
        let mut v = [Verdict::Held];
        self.e.process(self.now, from, &mut f, &mut v);
        self.e.poll_timers(self.now);
        let [f] = f;
        (v[0], f)
    }

    fn tcp(
        &mut self,
        from: Side,
        s: &str,
        d: &str,
        sp: u16,
        dp: u16,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        len: usize,
    ) -> (Verdict, Vec<u8>) {
        let eth = if from == Side::Inside { IN } else { OUT };
        let mut b = vec![0u8; 2048];
        let n = build::tcp(&mut b, &eth, v4(s), v4(d), sp, dp, seq, ack, flags, 502, len).unwrap();
        b.truncate(n);
        self.send(from, b)
    }
}

fn key(f: &[u8]) -> FlowKey {
    classify(f).unwrap().key
}

fn tcp_ok(f: &[u8]) -> bool {
    let m = classify(f).unwrap();
    tcp::Packet::new_checked(&f[m.l4_offset as usize..m.l3_end as usize])
        .unwrap()
        .verify_checksum(m.key.src_ip(), m.key.dst_ip())
}

const S: TcpFlags = TcpFlags::SYN;
const A: TcpFlags = TcpFlags::ACK;
const FWD_OUT: Verdict = Verdict::Forward(Side::Outside);
const FWD_IN: Verdict = Verdict::Forward(Side::Inside);

fn dropped(r: Reason) -> Verdict {
    Verdict::Drop(DropReason::Refused(r))
}

#[test]
fn outbound_flows_leave_with_the_members_public_address_and_come_back() {
    let mut g = Gw::new();
    let (v, f) = g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1, 0, 0);
    assert_eq!(v, FWD_OUT);
    let k = key(&f);
    assert_eq!(k.src_ip(), v4(PUBLIC_101));
    assert_eq!(k.src_port, 40_000, "port preserved");
    assert!(tcp_ok(&f), "checksum rewritten");
    let (v, f) = g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 9, 2, 0);
    assert_eq!(v, FWD_IN);
    assert_eq!(key(&f), FlowKey::v4(LAPTOP.parse().unwrap(), WEB.parse().unwrap(), 6, 40_000, 443).reversed());
    assert!(tcp_ok(&f));
    let (v, f) = g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 2, 10, 100);
    assert_eq!((v, key(&f).src_ip()), (FWD_OUT, v4(PUBLIC_101)));
    // The fast path's rewrite, in both directions, keeps the IPv4
    // header's checksum (classify checks it) and TCP's valid.
    assert!(tcp_ok(&f), "checksum rewritten on the fast path, outbound");
    let (v, f) = g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, A, 10, 102, 50);
    assert_eq!(v, FWD_IN);
    assert!(tcp_ok(&f), "checksum rewritten on the fast path, inbound");
    assert_eq!(g.e.nat().len(), 1);
}

#[test]
fn members_sharing_an_address_stay_in_their_port_ranges() {
    let mut g = Gw::new();
    let (v, f) = g.tcp(Side::Inside, "10.0.3.1", WEB, 5000, 443, S, 1, 0, 0);
    assert_eq!(v, FWD_OUT);
    assert_eq!((key(&f).src_ip(), key(&f).src_port), (v4("198.51.100.20"), 5000));
    let (v, f) = g.tcp(Side::Inside, "10.0.3.9", WEB, 5000, 443, S, 1, 0, 0);
    assert_eq!(v, FWD_OUT);
    let p = key(&f).src_port;
    assert!((32_768..=65_535).contains(&p), "member 105's range, got {p}");
}

/// GRE (or any protocol without ports) is translated by address alone:
/// two devices behind one public address to one remote would look alike
/// from outside, so the second waits until the first's flow ends.
#[test]
fn flows_without_ports_from_one_public_address_to_one_remote_go_one_at_a_time() {
    let mut g = Gw::new();
    let gre = |g: &mut Gw, from: Side, s: &str, d: &str| {
        let eth = if from == Side::Inside { IN } else { OUT };
        let mut b = vec![0u8; 256];
        let n = build::ip_fragment(&mut b, &eth, v4(s), v4(d), 47, 1, 0, false, &[0u8; 24]).unwrap();
        b.truncate(n);
        g.send(from, b)
    };
    // Members 104 and 105 share 198.51.100.20.
    let (v, f) = gre(&mut g, Side::Inside, "10.0.3.1", WEB);
    assert_eq!(v, FWD_OUT);
    assert_eq!(key(&f).src_ip(), v4("198.51.100.20"));
    assert_eq!(gre(&mut g, Side::Inside, "10.0.3.9", WEB).0, dropped(Reason::NatReplyInUse));
    let (v, f) = gre(&mut g, Side::Outside, WEB, "198.51.100.20");
    assert_eq!(v, FWD_IN);
    assert_eq!(key(&f).dst_ip(), v4("10.0.3.1"), "the answer reaches the device that opened the flow");
    // Two devices of one member.
    assert_eq!(gre(&mut g, Side::Inside, LAPTOP, WEB).0, FWD_OUT);
    assert_eq!(gre(&mut g, Side::Inside, NAS, WEB).0, dropped(Reason::NatReplyInUse));
    // The first flow expired (600 s without a packet): the other opens its own.
    g.now = g.now + Duration::from_secs(601);
    assert_eq!(gre(&mut g, Side::Inside, "10.0.3.9", WEB).0, FWD_OUT);
    let (v, f) = gre(&mut g, Side::Outside, WEB, "198.51.100.20");
    assert_eq!((v, key(&f).dst_ip()), (FWD_IN, v4("10.0.3.9")));
}

#[test]
fn port_forwards_reach_the_device_and_answers_leave_as_the_public_address() {
    let mut g = Gw::new();
    let (v, f) = g.tcp(Side::Outside, "192.0.2.7", PUBLIC_101, 5555, 8080, S, 1, 0, 0);
    assert_eq!(v, FWD_IN);
    assert_eq!((key(&f).dst_ip(), key(&f).dst_port), (v4(NAS), 80));
    assert!(tcp_ok(&f));
    let (v, f) = g.tcp(Side::Inside, NAS, "192.0.2.7", 80, 5555, S | A, 50, 2, 0);
    assert_eq!(v, FWD_OUT);
    assert_eq!((key(&f).src_ip(), key(&f).src_port), (v4(PUBLIC_101), 8080));
    // Anything else to the public address is unsolicited.
    let (v, _) = g.tcp(Side::Outside, "192.0.2.7", PUBLIC_101, 5555, 22, S, 1, 0, 0);
    assert_eq!(v, dropped(Reason::UnsolicitedInbound));
}

#[test]
fn after_a_restart_connections_through_a_forward_are_picked_up_and_nothing_else_from_outside() {
    let mut g = Gw::new();
    // Mid-stream from the outside, to the forward: picked up, translated,
    // and its answers leave as the public address.
    let (v, f) = g.tcp(Side::Outside, "192.0.2.7", PUBLIC_101, 5555, 8080, A, 100, 200, 10);
    assert_eq!(v, FWD_IN);
    assert_eq!((key(&f).dst_ip(), key(&f).dst_port), (v4(NAS), 80));
    let (v, f) = g.tcp(Side::Inside, NAS, "192.0.2.7", 80, 5555, A, 200, 110, 0);
    assert_eq!(v, FWD_OUT);
    assert_eq!((key(&f).src_ip(), key(&f).src_port), (v4(PUBLIC_101), 8080));
    assert_eq!(g.e.counters().flows_picked_up, 1);
    // Mid-stream from the outside anywhere else: unsolicited, as before.
    let (v, _) = g.tcp(Side::Outside, "192.0.2.7", PUBLIC_101, 5555, 22, A, 100, 200, 10);
    assert_eq!(v, dropped(Reason::UnsolicitedInbound));
    let (v, _) = g.tcp(Side::Outside, "203.0.113.5", PUBLIC_101, 5555, 8080, A, 100, 200, 10);
    assert_eq!(v, dropped(Reason::BlockedAddress));
    // Strict: nothing mid-stream.
    let mut g = Gw::new();
    let mut e = Engine::new(Config { tcp_loose: false, ..Config::default() }, g.now);
    e.set_policy(Arc::new(policy::compile(&sample::example(), 1).unwrap()), &[]);
    g.e = e;
    let (v, _) = g.tcp(Side::Outside, "192.0.2.7", PUBLIC_101, 5555, 8080, A, 100, 200, 10);
    assert_eq!(v, dropped(Reason::UnsolicitedInbound));
}

#[test]
fn after_a_restart_a_forwarded_device_speaking_first_leaves_from_the_forwarded_port() {
    // The device behind the forward sends first after a restart (its
    // retransmission beat the remote's): the connection is the forward's,
    // so it leaves from the forward's public port, not a NAT port, and the
    // remote's next segment finds the same flow.
    let mut g = Gw::new();
    let (v, f) = g.tcp(Side::Inside, NAS, "192.0.2.7", 80, 5555, A, 200, 110, 10);
    assert_eq!(v, FWD_OUT);
    assert_eq!((key(&f).src_ip(), key(&f).src_port), (v4(PUBLIC_101), 8080));
    assert!(tcp_ok(&f));
    let (v, f) = g.tcp(Side::Outside, "192.0.2.7", PUBLIC_101, 5555, 8080, A, 110, 210, 10);
    assert_eq!(v, FWD_IN);
    assert_eq!((key(&f).dst_ip(), key(&f).dst_port), (v4(NAS), 80));
    assert_eq!(g.e.counters().flows_picked_up, 1);
    assert_eq!(g.e.counters().flows_created, 1);
    // The same device from another port is translated as any flow is.
    let (v, f) = g.tcp(Side::Inside, NAS, "192.0.2.7", 81, 5555, A, 200, 110, 10);
    assert_eq!(v, FWD_OUT);
    assert_eq!(key(&f).src_ip(), v4(PUBLIC_101));
    assert_ne!(key(&f).src_port, 8080);

    // UDP alike (a reply after its flow expired), and of two forwards to
    // one device's port, the lower public port answers.
    let mut db = sample::example();
    let fw = db.port_forwards[0].clone();
    db.port_forwards.push(policy::PortForward { id: 2, public_port: 8081, ..fw.clone() });
    db.port_forwards.push(policy::PortForward { id: 9, public_port: 8079, ..fw.clone() });
    db.port_forwards.push(policy::PortForward {
        id: 3,
        protocol: policy::Protocol::Udp,
        public_port: 5353,
        internal_port: 53,
        ..fw
    });
    let mut g = Gw::new();
    g.e.set_policy(Arc::new(policy::compile(&db, 2).unwrap()), &[]);
    let (v, f) = g.tcp(Side::Inside, NAS, "192.0.2.7", 80, 5555, A, 200, 110, 10);
    assert_eq!(v, FWD_OUT);
    assert_eq!(key(&f).src_port, 8079);
    // The device reaching its own forward (hairpinned) is translated as
    // any flow: from the forwarded port, it would meet itself.
    let (v, f) = g.tcp(Side::Inside, NAS, PUBLIC_101, 80, 8080, S, 1, 0, 0);
    assert_eq!(v, FWD_IN);
    assert_eq!(key(&f).dst_port, 80);
    assert_ne!(key(&f).src_port, 8079);
    let mut b = vec![0u8; 2048];
    let n = build::udp(&mut b, &IN, v4(NAS), v4("192.0.2.7"), 53, 4000, 20).unwrap();
    b.truncate(n);
    let (v, f) = g.send(Side::Inside, b);
    assert_eq!(v, FWD_OUT);
    assert_eq!((key(&f).src_ip(), key(&f).src_port), (v4(PUBLIC_101), 5353));
}

#[test]
fn hairpinning_between_members() {
    let mut g = Gw::new();
    // Member 104 reaches member 101's forwarded web server by its public address.
    let (v, f) = g.tcp(Side::Inside, "10.0.3.1", PUBLIC_101, 6000, 8080, S, 1, 0, 0);
    assert_eq!(v, FWD_IN, "hairpinned back to the inside");
    let k = key(&f);
    assert_eq!((k.src_ip(), k.dst_ip(), k.dst_port), (v4("198.51.100.20"), v4(NAS), 80));
    let (v, f) = g.tcp(Side::Inside, NAS, "198.51.100.20", 80, k.src_port, S | A, 50, 2, 0);
    assert_eq!(v, FWD_IN);
    let k = key(&f);
    assert_eq!((k.src_ip(), k.src_port, k.dst_ip(), k.dst_port), (v4(PUBLIC_101), 8080, v4("10.0.3.1"), 6000));
    assert!(tcp_ok(&f));
}

#[test]
fn spoofed_unregistered_blocked_and_blocklisted_sources() {
    let mut g = Gw::new();
    assert_eq!(g.tcp(Side::Inside, "172.16.0.5", WEB, 1, 80, S, 1, 0, 0).0, dropped(Reason::SpoofedSource));
    assert_eq!(g.tcp(Side::Inside, "10.0.200.1", WEB, 1, 80, S, 1, 0, 0).0, dropped(Reason::UnregisteredSource));
    assert_eq!(g.tcp(Side::Inside, "10.0.2.1", WEB, 1, 80, S, 1, 0, 0).0, dropped(Reason::MemberBlocked));
    assert_eq!(g.tcp(Side::Inside, LAPTOP, "203.0.113.5", 1, 80, S, 1, 0, 0).0, dropped(Reason::BlockedAddress));
    assert_eq!(g.tcp(Side::Outside, "203.0.113.5", PUBLIC_101, 1, 8080, S, 1, 0, 0).0, dropped(Reason::BlockedAddress));
    // The gateway's own inside address is not a member's but not spoofed either.
    assert_eq!(g.tcp(Side::Inside, "10.255.0.1", WEB, 1, 80, S, 1, 0, 0).0, FWD_OUT);
}

#[test]
fn icmp_errors_are_translated_back_to_the_device() {
    let mut g = Gw::new();
    let (_, sent) = g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1, 0, 0);
    let mut b = vec![0u8; 2048];
    let n = build::icmp_error(&mut b, &OUT, v4("192.0.2.1"), v4(PUBLIC_101), 3, 1, &sent[14..]).unwrap();
    b.truncate(n);
    let (v, f) = g.send(Side::Outside, b);
    assert_eq!(v, FWD_IN);
    let m = classify(&f).unwrap();
    assert_eq!(m.key.dst_ip(), v4(LAPTOP));
    let wire::classify::L4::IcmpError { inner, .. } = m.l4 else { panic!("not an ICMP error") };
    assert_eq!(inner, FlowKey::v4(LAPTOP.parse().unwrap(), WEB.parse().unwrap(), 6, 40_000, 443));
    let icmp = wire::icmpv4::Packet::new_checked(&f[m.l4_offset as usize..m.l3_end as usize]).unwrap();
    assert!(icmp.verify_checksum());
}

/// An error from the inside about a packet that came in through the NAT
/// leaves as from the public address, whoever sent it: a router on the
/// way to the device (its inside address must not leave), or a device
/// naming any source it likes (BCP 38).
#[test]
fn icmp_errors_from_the_inside_leave_as_the_public_address() {
    let mut g = Gw::new();
    let client = "192.0.2.7";
    let (_, inbound) = g.tcp(Side::Outside, client, PUBLIC_101, 5555, 8080, S, 1, 0, 0);
    for from in ["10.255.0.2", NAS, "203.0.113.99"] {
        let mut b = vec![0u8; 2048];
        // Fragmentation needed, about the SYN as it reached the NAS.
        let n = build::icmp_error(&mut b, &IN, v4(from), v4(client), 3, 4, &inbound[14..]).unwrap();
        b.truncate(n);
        let (v, f) = g.send(Side::Inside, b);
        assert_eq!(v, FWD_OUT, "an error from {from}");
        let m = classify(&f).unwrap();
        assert_eq!((m.key.src_ip(), m.key.dst_ip()), (v4(PUBLIC_101), v4(client)), "an error from {from}");
        let wire::classify::L4::IcmpError { inner, .. } = m.l4 else { panic!("not an ICMP error") };
        assert_eq!(inner, FlowKey::v4(client.parse().unwrap(), PUBLIC_101.parse().unwrap(), 6, 5555, 8080));
        let icmp = wire::icmpv4::Packet::new_checked(&f[m.l4_offset as usize..m.l3_end as usize]).unwrap();
        assert!(icmp.verify_checksum());
        let ip = wire::ipv4::Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
    }
}

#[test]
fn ipv6_is_firewalled_not_translated_with_openings() {
    let mut g = Gw::new();
    let dev = IpAddr::V6("2001:db8:0:101::10".parse::<Ipv6Addr>().unwrap());
    let far = IpAddr::V6("2001:db8:aaaa::1".parse::<Ipv6Addr>().unwrap());
    let mut b = vec![0u8; 256];
    let n = build::tcp(&mut b, &OUT, far, dev, 7000, 443, 1, 0, S, 502, 0).unwrap();
    let (v, f) = g.send(Side::Outside, b[..n].to_vec());
    assert_eq!(v, FWD_IN);
    assert_eq!(key(&f).dst_ip(), dev, "not translated");
    let n = build::tcp(&mut b, &OUT, far, dev, 7000, 22, 1, 0, S, 502, 0).unwrap();
    assert_eq!(g.send(Side::Outside, b[..n].to_vec()).0, dropped(Reason::UnsolicitedInbound));
}

/// An IPv6 error leaves with its own source (nothing is translated): from
/// the inside it must be an address that may be there (the member's, an
/// internal network's such as a router's), as any packet's (BCP 38).
#[test]
fn icmpv6_errors_from_the_inside_need_an_inside_source() {
    let mut g = Gw::new();
    let ip6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
    let (dev, far) = (ip6("2001:db8:0:101::10"), ip6("2001:db8:aaaa::1"));
    let mut b = vec![0u8; 256];
    let n = build::tcp(&mut b, &OUT, far, dev, 7000, 443, 1, 0, S, 502, 0).unwrap();
    let (v, syn) = g.send(Side::Outside, b[..n].to_vec());
    assert_eq!(v, FWD_IN);
    for (from, passes) in [(dev, true), (ip6("2001:db8:ffff::2"), true), (ip6("2a00:1450::99"), false)] {
        let mut b = vec![0u8; 2048];
        let n = build::icmp_error(&mut b, &IN, from, far, 1, 4, &syn[14..]).unwrap();
        let (v, f) = g.send(Side::Inside, b[..n].to_vec());
        if passes {
            assert_eq!((v, key(&f).src_ip()), (FWD_OUT, from), "an error from {from}");
        } else {
            assert_eq!(v, dropped(Reason::SpoofedSource), "an error from {from}");
        }
    }
}

#[test]
fn accounting_counts_every_byte_per_member_and_direction() {
    let mut g = Gw::new();
    let mut up = 0u64;
    let mut down = 0u64;
    let (_, f) = g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1, 0, 0);
    up += f.len() as u64;
    let (_, f) = g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 9, 2, 0);
    down += f.len() as u64;
    let (_, f) = g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 2, 10, 0);
    up += f.len() as u64;
    for k in 0..10u32 {
        let (_, f) = g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, A, 10 + k * 1000, 2, 1000);
        down += f.len() as u64;
    }
    let (_, syn) = g.tcp(Side::Outside, "192.0.2.7", PUBLIC_101, 5555, 8080, S, 1, 0, 0);
    down += syn.len() as u64;
    // ICMP errors about the member's flows count as its traffic too (else
    // errors of any size would carry data uncounted): one from outside
    // about its connection, one from the NAS about the forwarded SYN.
    let (_, sent) = g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 2, 10, 0);
    up += sent.len() as u64;
    for (side, eth, from, to, quoted) in
        [(Side::Outside, &OUT, "192.0.2.1", PUBLIC_101, &sent), (Side::Inside, &IN, NAS, "192.0.2.7", &syn)]
    {
        let mut b = vec![0u8; 2048];
        let n = build::icmp_error(&mut b, eth, v4(from), v4(to), 3, 4, &quoted[14..]).unwrap();
        b.truncate(n);
        let (v, f) = g.send(side, b);
        assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
        if side == Side::Outside {
            down += f.len() as u64;
        } else {
            up += f.len() as u64;
        }
    }
    let a = g.e.accounts().get(101).expect("member 101 counted");
    assert_eq!(a.bytes, [up, down]);
    assert_eq!(a.packets, [4, 13]);
}

#[test]
fn a_reload_that_blocks_a_member_ends_their_flows_and_keeps_the_rest() {
    let mut g = Gw::new();
    g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1, 0, 0);
    g.tcp(Side::Inside, "10.0.3.1", WEB, 5000, 443, S, 1, 0, 0);
    assert_eq!(g.e.conntrack().len(), 2);
    let mut db = sample::example();
    db.members.iter_mut().find(|m| m.id == 101).unwrap().status = Status::Blocked;
    let new = policy::compile(&db, 2).unwrap();
    let ended: Vec<u32> = policy::diff(g.e.policy().unwrap(), &new).flows_to_end().collect();
    assert_eq!(ended, vec![101]);
    g.e.set_policy(Arc::new(new), &ended);
    // The member's reply is refused at once; the other member's flow lives.
    let (v, _) = g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 9, 2, 0);
    assert!(v == dropped(Reason::MemberBlocked) || v == dropped(Reason::UnsolicitedInbound), "{v:?}");
    assert_eq!(g.tcp(Side::Outside, WEB, "198.51.100.20", 443, 5000, S | A, 9, 2, 0).0, FWD_IN);
    g.now = g.now + Duration::from_millis(1);
    g.e.poll_timers(g.now);
    assert_eq!(g.e.conntrack().len(), 1);
    assert_eq!(g.e.nat().len(), 1, "the blocked member's binding is released");
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_001, 443, S, 1, 0, 0).0, dropped(Reason::MemberBlocked));
}

/// A datagram's later fragments after its flow ended (here: its member
/// blocked by a reload, the flow swept) are dropped: they must not leave
/// untranslated, uncharged and unchecked on the first fragment's verdict.
#[test]
fn later_fragments_of_an_ended_flow_are_dropped() {
    let mut g = Gw::new();
    let mut d = vec![0u8; 1500];
    let n = build::udp_datagram(&mut d, v4(LAPTOP), v4(WEB), 5000, 53, 1400).unwrap();
    d.truncate(n);
    let piece = |g: &mut Gw, off: usize, end: usize, more: bool| {
        let mut b = vec![0u8; 2048];
        let n = build::ip_fragment(&mut b, &IN, v4(LAPTOP), v4(WEB), 17, 77, off as u16, more, &d[off..end]).unwrap();
        b.truncate(n);
        g.send(Side::Inside, b)
    };
    let (v, f) = piece(&mut g, 0, 400, true);
    assert_eq!((v, key(&f).src_ip()), (FWD_OUT, v4(PUBLIC_101)));
    let (v, f) = piece(&mut g, 400, 800, true);
    assert_eq!((v, key(&f).src_ip()), (FWD_OUT, v4(PUBLIC_101)), "a later fragment is translated as its flow");
    let mut db = sample::example();
    db.members.iter_mut().find(|m| m.id == 101).unwrap().status = Status::Blocked;
    let new = policy::compile(&db, 2).unwrap();
    let ended: Vec<u32> = policy::diff(g.e.policy().unwrap(), &new).flows_to_end().collect();
    g.e.set_policy(Arc::new(new), &ended);
    g.now = g.now + Duration::from_millis(1);
    g.e.poll_timers(g.now);
    assert_eq!(g.e.conntrack().len(), 0);
    assert_eq!(piece(&mut g, 800, d.len(), false).0, dropped(Reason::FragmentFlowEnded));
}

/// A fragmented ICMP error about a translated flow is dropped whole: its
/// later fragments could not be translated (an ICMPv4 error is at most 576
/// bytes, so none is fragmented but a forgery's).
#[test]
fn fragmented_icmp_errors_about_translated_flows_are_dropped() {
    let mut g = Gw::new();
    let (_, sent) = g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1, 0, 1000);
    let mut b = vec![0u8; 2048];
    let n = build::icmp_error(&mut b, &OUT, v4("192.0.2.1"), v4(PUBLIC_101), 3, 1, &sent[14..]).unwrap();
    let icmp = b[14 + 20..n].to_vec();
    let mut f = vec![0u8; 2048];
    let n = build::ip_fragment(&mut f, &OUT, v4("192.0.2.1"), v4(PUBLIC_101), 1, 9, 0, true, &icmp[..256]).unwrap();
    f.truncate(n);
    assert_eq!(g.send(Side::Outside, f).0, dropped(Reason::NatUntranslatable));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever members' devices open, nothing leaves to the outside with
        /// an inside address, no public port serves two flows, and answers
        /// come back to exactly the device and port that opened the flow.
        #[test]
        fn nat_never_leaks_and_inverts(flows in proptest::collection::vec((0usize..4, 1024u16..1100, 0u8..3), 1..60)) {
            let devices = ["10.0.1.1", "10.0.1.2", "10.0.3.1", "10.0.3.10"];
            let mut g = Gw::new();
            let mut seen = std::collections::HashMap::new();
            for (d, sp, server) in flows {
                let dst = format!("192.0.2.{}", 10 + server);
                let (v, f) = g.tcp(Side::Inside, devices[d], &dst, sp, 443, S, 1, 0, 0);
                prop_assert_eq!(v, FWD_OUT);
                let k = key(&f);
                prop_assert!(!g.e.policy().unwrap().is_internal(k.src_ip()), "leaked {}", k.src_ip());
                let owner = (devices[d], sp);
                if let Some(prev) = seen.insert((k.src_ip(), k.src_port, server), owner) {
                    prop_assert_eq!(prev, owner, "one public port for two devices");
                }
                let (v, back) = g.tcp(Side::Outside, &dst, &k.src_ip().to_string(), 443, k.src_port, S | A, 9, 2, 0);
                prop_assert_eq!(v, FWD_IN);
                let b = key(&back);
                prop_assert_eq!((b.dst_ip(), b.dst_port), (v4(devices[d]), sp));
            }
        }
    }
}

/// Reloading (a new generation of the same database) between every few
/// batches changes nothing: the same frames come out, rewritten the same
/// way, with the same counters. A reload loses no packet.
#[test]
fn reloads_under_load_lose_nothing() {
    let devices = ["10.0.1.1", "10.0.1.2", "10.0.3.1", "10.0.3.10", "10.0.9.1"];
    let mut frames = Vec::new();
    for i in 0..2000u32 {
        let d = devices[i as usize % devices.len()];
        let mut b = vec![0u8; 256];
        let dst = IpAddr::V4(core::net::Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250) as u8));
        let n = if i % 3 == 0 {
            build::udp(&mut b, &IN, v4(d), dst, 2000 + (i % 700) as u16, 53, 20).unwrap()
        } else {
            build::tcp(&mut b, &IN, v4(d), dst, 3000 + (i % 900) as u16, 443, i, 0, S, 502, 0).unwrap()
        };
        b.truncate(n);
        frames.push(b);
    }
    let db = sample::example();
    let run = |reload_every: Option<usize>| {
        let mut g = Gw::new();
        let mut out = Vec::new();
        for (k, chunk) in frames.chunks(16).enumerate() {
            if let Some(e) = reload_every {
                if k % e == 0 {
                    let p = policy::compile(&db, 2 + k as u64).unwrap();
                    let ended: Vec<u32> = policy::diff(g.e.policy().unwrap(), &p).flows_to_end().collect();
                    g.e.set_policy(Arc::new(p), &ended);
                }
            }
            let mut batch: Vec<Vec<u8>> = chunk.to_vec();
            let mut v = vec![Verdict::Held; batch.len()];
            g.e.process(g.now, Side::Inside, &mut batch, &mut v);
            g.e.poll_timers(g.now);
            out.extend(batch.into_iter().zip(v));
        }
        (out, g.e.counters().clone())
    };
    let (plain, plain_counters) = run(None);
    let (reloaded, reloaded_counters) = run(Some(3));
    assert_eq!(plain.len(), reloaded.len());
    assert!(plain == reloaded, "a reload changed a verdict or a rewrite");
    assert_eq!(plain_counters, reloaded_counters);
    assert!(plain.iter().filter(|(_, v)| *v == FWD_OUT).count() > 1500);
}

/// A batch the caller has parsed already (the dataplane's steering) gets
/// the verdicts, rewrites and counters the engine's own parse gives, in
/// chunks larger than the engine's lanes and with frames that do not parse.
#[test]
fn a_parse_given_by_the_caller_decides_as_the_engine_own() {
    let devices = ["10.0.1.1", "10.0.1.2", "10.0.3.1", "10.0.3.10", "10.0.9.1", "10.9.9.9"];
    let mut frames = Vec::new();
    for i in 0..1200u32 {
        let d = devices[i as usize % devices.len()];
        let mut b = vec![0u8; 256];
        let dst = IpAddr::V4(core::net::Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250) as u8));
        let n = match i % 4 {
            0 => build::udp(&mut b, &IN, v4(d), dst, 2000 + (i % 700) as u16, 53, 20).unwrap(),
            // Cut inside its IP header: does not parse.
            1 if i % 7 == 0 => 20,
            _ => build::tcp(&mut b, &IN, v4(d), dst, 3000 + (i % 900) as u16, 443, i, 0, S, 502, 0).unwrap(),
        };
        b.truncate(n);
        frames.push(b);
    }
    const CHUNK: usize = 300; // more than the engine's lanes (engine::MAX_BATCH)
    const { assert!(CHUNK > engine::MAX_BATCH) };
    let run = |given: bool| {
        let mut g = Gw::new();
        let mut parsed = engine::Parsed::new(CHUNK);
        let mut out = Vec::new();
        for chunk in frames.chunks(CHUNK) {
            let mut batch: Vec<Vec<u8>> = chunk.to_vec();
            let mut v = vec![Verdict::Held; batch.len()];
            if given {
                for (i, f) in batch.iter().enumerate() {
                    let _ = parsed.parse(i, f);
                }
                g.e.process_parsed(g.now, Side::Inside, &mut batch, &mut v, &parsed);
            } else {
                g.e.process(g.now, Side::Inside, &mut batch, &mut v);
            }
            out.extend(batch.into_iter().zip(v));
        }
        (out, g.e.counters().clone())
    };
    let (own, own_counters) = run(false);
    let (given, given_counters) = run(true);
    assert!(own == given, "a verdict or a rewrite differs");
    assert_eq!(own_counters, given_counters);
    assert!(own.iter().any(|(_, v)| *v == FWD_OUT));
    assert!(own.iter().any(|(_, v)| matches!(v, Verdict::Drop(DropReason::Malformed(_)))));
}

/// A member blocked by one reload and unblocked by the next, before the
/// sweep of the first has finished, keeps the flows they open meanwhile.
#[test]
fn unblocking_during_a_sweep_keeps_new_flows() {
    let mut g = Gw::new();
    g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1, 0, 0);
    let mut db = sample::example();
    db.members.iter_mut().find(|m| m.id == 101).unwrap().status = Status::Blocked;
    let blocked = policy::compile(&db, 2).unwrap();
    let ended: Vec<u32> = policy::diff(g.e.policy().unwrap(), &blocked).flows_to_end().collect();
    g.e.set_policy(Arc::new(blocked), &ended);
    // Unblocked again before any timer poll (the sweep has not run).
    let open = policy::compile(&sample::example(), 3).unwrap();
    let ended: Vec<u32> = policy::diff(g.e.policy().unwrap(), &open).flows_to_end().collect();
    assert!(ended.is_empty());
    g.e.set_policy(Arc::new(open), &ended);
    let mut f = [{
        let mut b = vec![0u8; 256];
        let n = build::tcp(&mut b, &IN, v4(LAPTOP), v4(WEB), 40_001, 443, 1, 0, S, 502, 0).unwrap();
        b.truncate(n);
        b
    }];
    let mut v = [Verdict::Held];
    g.e.process(g.now, Side::Inside, &mut f, &mut v);
    assert_eq!(v[0], FWD_OUT);
    let (v, _) = g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_001, S | A, 9, 2, 0);
    assert_eq!(v, FWD_IN, "the new flow survives the old sweep");
}

/// Unassured flows of `account` opened from `side`, counted in the table.
fn unassured(e: &Engine, account: u32, side: Side) -> u32 {
    let n = e.conntrack().iter().filter(|(_, f)| f.account == account && f.orig_side == side && !f.assured()).count();
    n as u32
}

#[test]
fn a_syn_flood_at_a_forward_holds_at_most_half_open_per_member_and_handshakes_survive_it() {
    let mut g = Gw::with(Config { half_open_per_member: 64, ..Config::default() });
    // The member's own connection, established before the flood.
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1, 0, 0).0, FWD_OUT);
    assert_eq!(g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 9, 2, 0).0, FWD_IN);
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 2, 10, 0).0, FWD_OUT);
    let slot = g.e.accounts().slot_of(101).unwrap();
    let (mut handshakes, mut flood) = (0, 0u32);
    for i in 0..20_000u32 {
        // Spoofed SYNs at the forward: each is let in (the server behind it
        // answers or not), and each is one half-open flow of member 101.
        let src = format!("192.0.2.{}", 1 + i % 200);
        let v = g.tcp(Side::Outside, &src, PUBLIC_101, 1024 + (i / 200) as u16, 8080, S, i, 0, 0).0;
        assert_eq!(v, FWD_IN);
        flood += 1;
        if i % 1000 == 500 {
            // A legitimate client: its SYN, then 20 flood SYNs, then the
            // server's SYN-ACK, which needs the flow (a SYN-ACK without one
            // is dropped: no loose pick-up of handshakes), then its ACK.
            let port = 50_000 + handshakes;
            assert_eq!(g.tcp(Side::Outside, "192.0.2.250", PUBLIC_101, port, 8080, S, 7, 0, 0).0, FWD_IN);
            for j in 0..20 {
                let v = g
                    .tcp(Side::Outside, "192.0.2.251", PUBLIC_101, 1024 + j + handshakes * 20, 8080, S, j.into(), 0, 0)
                    .0;
                assert_eq!(v, FWD_IN);
                flood += 1;
            }
            assert_eq!(
                g.tcp(Side::Inside, NAS, "192.0.2.250", 80, port, S | A, 70, 8, 0).0,
                FWD_OUT,
                "handshake {handshakes}"
            );
            assert_eq!(g.tcp(Side::Outside, "192.0.2.250", PUBLIC_101, port, 8080, A, 8, 71, 0).0, FWD_IN);
            handshakes += 1;
        }
        let held = g.e.conntrack().half_open_of(slot, Side::Outside);
        assert!(held <= 64, "{held} half-open after {i}");
        if i % 997 == 0 {
            assert_eq!(held, unassured(&g.e, slot, Side::Outside), "the queue is the table's unassured flows");
        }
    }
    assert_eq!(handshakes, 20);
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Outside), 64);
    assert_eq!(g.e.counters().flows_evicted_half_open, u64::from(flood) - 64, "completed handshakes left the queue");
    assert_eq!(g.e.counters().flows_evicted, 0, "the table never filled");
    // Live: the member's own connection, the 20 handshakes, and 64 of the flood.
    assert_eq!(g.e.conntrack().len(), 1 + 20 + 64);
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 2, 10, 10).0, FWD_OUT);
    // The member's own side has its own queue: its new connections are not
    // pushed out by the flood at its forward, and an answer settles them.
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_001, 443, S, 1, 0, 0).0, FWD_OUT);
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Inside), 1);
    assert_eq!(g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_001, S | A, 9, 2, 0).0, FWD_IN);
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Inside), 1, "answered, the handshake not done");
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_001, 443, A, 2, 10, 0).0, FWD_OUT);
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Inside), 0);
    // Expiry empties the queues.
    g.now = g.now + Duration::from_secs(200);
    for _ in 0..64 {
        g.e.poll_timers(g.now);
    }
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Outside), 0);
    assert_eq!(unassured(&g.e, slot, Side::Outside), 0);
}

/// A server behind a forward that refuses the flood's SYNs with a RST
/// answers each of them: the flows are answered and closed, but never
/// established, so they stay in the member's queue (at most the limit)
/// instead of filling the table for the 10 s a closed flow lives.
#[test]
fn handshakes_refused_with_a_rst_stay_half_open() {
    let mut g = Gw::with(Config { half_open_per_member: 64, ..Config::default() });
    let rst = TcpFlags::RST | A;
    for i in 0..5_000u32 {
        let src = format!("192.0.2.{}", 1 + i % 200);
        let port = 1024 + (i / 200) as u16;
        assert_eq!(g.tcp(Side::Outside, &src, PUBLIC_101, port, 8080, S, i, 0, 0).0, FWD_IN);
        let slot = g.e.accounts().slot_of(101).unwrap();
        assert_eq!(g.tcp(Side::Inside, NAS, &src, 80, port, rst, 0, i.wrapping_add(1), 0).0, FWD_OUT, "RST {i}");
        assert!(g.e.conntrack().half_open_of(slot, Side::Outside) <= 64);
    }
    let slot = g.e.accounts().slot_of(101).unwrap();
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Outside), 64);
    assert_eq!(unassured(&g.e, slot, Side::Outside), 64, "the refused handshakes are not assured");
    assert_eq!(g.e.conntrack().len(), 64);
    assert_eq!(g.e.counters().flows_evicted_half_open, 5_000 - 64);
}

/// A connection opened again on its 4-tuple after it closed is a new
/// handshake: it joins the member's queue again, and a full queue makes
/// room for it by pushing out the oldest, so the limit holds.
#[test]
fn a_connection_opened_again_rejoins_a_full_queue_within_the_limit() {
    let mut g = Gw::with(Config { half_open_per_member: 16, ..Config::default() });
    let (f, r) = (TcpFlags::FIN | A, TcpFlags::RST | A);
    // An established connection, closed by a RST at the right sequence number.
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 1, 0, 0).0, FWD_OUT);
    let slot = g.e.accounts().slot_of(101).unwrap();
    assert_eq!(g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 9, 2, 0).0, FWD_IN);
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 2, 10, 0).0, FWD_OUT);
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, r, 2, 10, 0).0, FWD_OUT);
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Inside), 0, "closed after its handshake: assured");
    // The member fills its queue with 16 handshakes to elsewhere.
    for p in 0..16u16 {
        assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 41_000 + p, 80, S, 1, 0, 0).0, FWD_OUT);
    }
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Inside), 16);
    // The closed 4-tuple opened again: a handshake again, in the queue,
    // and the oldest of the 16 goes.
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, S, 100, 0, 0).0, FWD_OUT);
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Inside), 16);
    assert_eq!(unassured(&g.e, slot, Side::Inside), 16);
    assert_eq!(g.e.counters().flows_evicted_half_open, 1);
    // Its handshake completes: out of the queue; then closed by FINs, it
    // stays assured.
    assert_eq!(g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, S | A, 900, 101, 0).0, FWD_IN);
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 101, 901, 0).0, FWD_OUT);
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Inside), 15);
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, f, 101, 901, 0).0, FWD_OUT);
    assert_eq!(g.tcp(Side::Outside, WEB, PUBLIC_101, 443, 40_000, f, 901, 102, 0).0, FWD_IN);
    assert_eq!(g.tcp(Side::Inside, LAPTOP, WEB, 40_000, 443, A, 102, 902, 0).0, FWD_OUT);
    assert_eq!(g.e.conntrack().half_open_of(slot, Side::Inside), 15);
    assert_eq!(unassured(&g.e, slot, Side::Inside), 15);
}
