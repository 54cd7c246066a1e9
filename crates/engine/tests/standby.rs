//! Two engines as the two boxes of a pair: what one reports, the other
//! installs, and a connection goes on through the other box with the same
//! public port; nothing echoes back; ends and resyncs clean up.

use core::net::IpAddr;
use core::time::Duration;
use engine::{Config, Engine, InstallRefusal, Installed, Side, SyncChange, Synced, Time, Verdict};
use policy::sample;
use std::sync::Arc;
use wire::build::{self, Eth};
use wire::classify::classify;
use wire::ethernet::MacAddr;
use wire::tcp::TcpFlags;
use wire::FlowKey;

const IN: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 0x11]), vlan: None };
const OUT: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 2]), dst: MacAddr([2, 0, 0, 0, 0, 0x12]), vlan: None };
const SHARED: &str = "198.51.100.20"; // members 104 and 105 share it
const PHONE: &str = "10.0.3.9"; // member 105: ports 32768-65535
const WEB: &str = "192.0.2.80";
const S: TcpFlags = TcpFlags::SYN;
const A: TcpFlags = TcpFlags::ACK;
const R: TcpFlags = TcpFlags::RST;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

struct Box_ {
    e: Engine,
}

impl Box_ {
    fn new(now: Time) -> Box_ {
        let mut e = Engine::new(Config::default(), now);
        e.set_policy(Arc::new(policy::compile(&sample::example(), 1).unwrap()), &[]);
        e.sync_with_peer(1024);
        Box_ { e }
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        now: Time,
        from: Side,
        s: &str,
        d: &str,
        sp: u16,
        dp: u16,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
    ) -> (Verdict, FlowKey) {
        let eth = if from == Side::Inside { IN } else { OUT };
        let mut b = vec![0u8; 2048];
        let n = build::tcp(&mut b, &eth, v4(s), v4(d), sp, dp, seq, ack, flags, 502, 100).unwrap();
        b.truncate(n);
        let mut f = [b];
        let mut v = [Verdict::Held];
        self.e.process(now, from, &mut f, &mut v);
        (v[0], classify(&f[0]).unwrap().key)
    }

    fn changes(&mut self, now: Time) -> Vec<SyncChange> {
        let mut out = Vec::new();
        assert_eq!(self.e.take_changes(now, |c| out.push(c)), 0);
        out
    }
}

fn flows(changes: &[SyncChange]) -> Vec<Synced> {
    changes.iter().filter_map(|c| if let SyncChange::Flow(s) = c { Some(*s) } else { None }).collect()
}

/// A phone's connection to the web, open and answered on box `a`.
fn open(a: &mut Box_, now: Time) -> u16 {
    let (v, out) = a.tcp(now, Side::Inside, PHONE, WEB, 5000, 443, S, 1, 0);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    let port = out.src_port;
    assert_ne!(port, 5000, "the member's range starts at 32768: the port is chosen");
    let (v, _) = a.tcp(now, Side::Outside, WEB, SHARED, 443, port, S | A, 900, 2);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    let (v, _) = a.tcp(now, Side::Inside, PHONE, WEB, 5000, 443, A, 2, 901);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    port
}

#[test]
fn a_connection_goes_on_through_the_other_box_with_the_same_public_port() {
    let now = Time::from_secs(1000);
    let (mut a, mut b) = (Box_::new(now), Box_::new(now));
    let port = open(&mut a, now);
    let reported = a.changes(now);
    // Answered, established: each a state the other box must hear of.
    assert_eq!(flows(&reported).len(), 2);
    for s in flows(&reported) {
        b.e.install(now, &s, 0).unwrap();
    }
    assert_eq!(b.e.conntrack().len(), 1);
    assert!(b.changes(now).is_empty(), "installed flows are not reported back");

    // Box a is gone; the connection's next segments reach box b, far ahead
    // of what was synced: the same public port, both ways.
    let later = now + Duration::from_secs(5);
    let (v, out) = b.tcp(later, Side::Inside, PHONE, WEB, 5000, 443, A, 5_000_000, 3_000_000);
    assert_eq!((v, out.src_ip(), out.src_port), (Verdict::Forward(Side::Outside), v4(SHARED), port));
    let (v, back) = b.tcp(later, Side::Outside, WEB, SHARED, 443, port, A, 3_000_000, 5_000_100);
    assert_eq!((v, back.dst_ip(), back.dst_port), (Verdict::Forward(Side::Inside), v4(PHONE), 5000));
    // Now the flow is b's: it reports it (to a, when a comes back).
    assert_eq!(flows(&b.changes(later)).len(), 1);
}

#[test]
fn an_end_reported_ends_the_copy_and_a_resync_sweeps_what_it_did_not_name() {
    let now = Time::from_secs(1000);
    let (mut a, mut b) = (Box_::new(now), Box_::new(now));
    let port = open(&mut a, now);
    let (v, out) = a.tcp(now, Side::Inside, PHONE, "192.0.2.81", 6000, 80, S, 7, 0);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    let (v, _) = a.tcp(now, Side::Outside, "192.0.2.81", SHARED, 80, out.src_port, S | A, 50, 8);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    // A flow nobody answers is not reported.
    let (v, _) = a.tcp(now, Side::Inside, PHONE, "192.0.2.82", 6001, 80, S, 9, 0);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    for s in flows(&a.changes(now)) {
        b.e.install(now, &s, 0).unwrap();
    }
    assert_eq!(b.e.conntrack().len(), 2);

    // An in-window RST ends the first on a; b hears of it.
    let (v, _) = a.tcp(now, Side::Outside, WEB, SHARED, 443, port, R | A, 1001, 102);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    a.e.poll_timers(now + Duration::from_secs(11));
    let ended: Vec<_> = a
        .changes(now + Duration::from_secs(11))
        .into_iter()
        .filter(|c| matches!(c, SyncChange::Ended { .. }))
        .collect();
    let [SyncChange::Ended { key, member_id }] = ended[..] else { panic!("{ended:?}") };
    assert_eq!(member_id, Some(105));
    assert!(b.e.end_synced(&key));
    b.e.poll_timers(now);
    assert_eq!(b.e.conntrack().len(), 1);
    assert_eq!(b.e.nat().len(), 1, "the ended flow's binding is released");

    // A resync (id 7) that names nothing: the other copy is swept.
    let mut swept = 0;
    let mut at = Some(0);
    while let Some(from) = at {
        at = b.e.sweep_unnamed(7, from, 100_000, &mut swept);
    }
    assert_eq!((swept, b.e.conntrack().len()), (1, 0));
}

#[test]
fn a_flow_that_passed_here_is_this_boxs_and_no_report_ends_it() {
    let now = Time::from_secs(1000);
    let (mut a, mut b) = (Box_::new(now), Box_::new(now));
    let port = open(&mut a, now);
    let reported = a.changes(now);
    for s in flows(&reported) {
        b.e.install(now, &s, 0).unwrap();
    }
    let (v, _) = b.tcp(now, Side::Outside, WEB, SHARED, 443, port, A, 901, 2);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    let key = flows(&reported)[0].keys[0];
    assert!(!b.e.end_synced(&key));
    let mut swept = 0;
    assert_eq!(b.e.sweep_unnamed(9, 0, usize::MAX, &mut swept), None);
    assert_eq!((swept, b.e.conntrack().len()), (0, 1));
}

/// The other box came back as a new session: the copies held here are
/// the only ones now. Adopted, they are this box's (its changes are
/// reported), and the new session's first resync, which names none of
/// them, does not sweep them; a copy of the new session's is swept as
/// before.
#[test]
fn copies_adopted_when_the_peer_restarts_survive_its_first_resync() {
    let now = Time::from_secs(1000);
    let (mut a, mut b) = (Box_::new(now), Box_::new(now));
    let port = open(&mut a, now);
    for s in flows(&a.changes(now)) {
        b.e.install(now, &s, 0).unwrap();
    }
    // Idle since: the copy stays synced.
    let mut adopted = 0;
    let mut at = Some(0);
    while let Some(from) = at {
        at = b.e.adopt_synced(now, from, 1000, &mut adopted);
    }
    assert_eq!(adopted, 1);
    // Due one timeout after the adoption at the latest (the copy's grace
    // had added a whole one on top of what a said was left).
    let expires = b.e.conntrack().iter().next().unwrap().1.expires;
    assert!(expires <= now + engine::Timeouts::default().tcp_established, "{expires:?}");
    // The new session's resync (id 1) names nothing: nothing is swept.
    let mut swept = 0;
    assert_eq!(b.e.sweep_unnamed(1, 0, usize::MAX, &mut swept), None);
    assert_eq!((swept, b.e.conntrack().len(), b.e.nat().len()), (0, 1, 1));
    // The idle connection's next segment goes through b with its port.
    let later = now + Duration::from_secs(600);
    let (v, out) = b.tcp(later, Side::Inside, PHONE, WEB, 5000, 443, A, 2, 901);
    assert_eq!((v, out.src_port), (Verdict::Forward(Side::Outside), port));
    // A copy the new session sends is its own, and swept when its next
    // resync does not name it.
    let (mut c, mut d) = (Box_::new(now), Box_::new(now));
    open(&mut c, now);
    for s in flows(&c.changes(now)) {
        d.e.install(now, &s, 2).unwrap();
    }
    assert_eq!(d.e.sweep_unnamed(3, 0, usize::MAX, &mut swept), None);
    assert_eq!(d.e.conntrack().len(), 0);
}

/// Ownership follows the packets: a flow this box adopted (its peer
/// restarted) that the other box carries again is reported by it as its
/// own; it is a copy here again, and ends here when the other box ends it
/// (else it would stay, with its NAT port, until its 12 hours ran out).
#[test]
fn a_flow_the_other_box_carries_again_is_a_copy_here_again() {
    let now = Time::from_secs(1000);
    let (mut a, mut b) = (Box_::new(now), Box_::new(now));
    let port = open(&mut a, now);
    for s in flows(&a.changes(now)) {
        b.e.install(now, &s, 0).unwrap();
    }
    let f = b.e.conntrack().iter().next().unwrap().0;
    assert!(b.e.export(now, f).unwrap().copy, "a copy is exported as one");
    // a restarts; b adopts its copy and sends it to the new a in its resync.
    let mut a = Box_::new(now);
    let mut adopted = 0;
    while b.e.adopt_synced(now, 0, usize::MAX, &mut adopted).is_some() {}
    assert_eq!(adopted, 1);
    let dumped = b.e.export(now, f).unwrap();
    assert!(!dumped.copy, "adopted: b's own");
    assert_eq!(a.e.install(now, &dumped, 1), Ok(Installed::New));
    // The connection's packets pass on a again: a reports it, as its own.
    let (v, _) = a.tcp(now, Side::Inside, PHONE, WEB, 5000, 443, A, 2, 901);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    let own = flows(&a.changes(now));
    assert!(!own.is_empty() && own.iter().all(|s| !s.copy), "{own:?}");
    for s in &own {
        assert_eq!(b.e.install(now, s, 0), Ok(Installed::Updated));
    }
    // a ends it (a reset, then its close timeout): b's copy goes too.
    let (v, _) = a.tcp(now, Side::Outside, WEB, SHARED, 443, port, R | A, 901, 2);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    a.e.poll_timers(now + Duration::from_secs(11));
    let ended = a.changes(now + Duration::from_secs(11));
    let Some(SyncChange::Ended { key, .. }) = ended.iter().find(|c| matches!(c, SyncChange::Ended { .. })) else {
        panic!("{ended:?}")
    };
    assert!(b.e.end_synced(key), "b still held the flow as its own");
    assert_eq!(b.e.conntrack().len(), 0);
}

/// A resync of the other box carries its copies of this box's flows too,
/// older than what this box holds: they name the flow, and change nothing
/// of it (a closing connection does not go back to established).
#[test]
fn a_resync_does_not_overwrite_a_flow_that_passed_here() {
    let now = Time::from_secs(1000);
    let (mut a, mut b) = (Box_::new(now), Box_::new(now));
    open(&mut a, now);
    let stale = flows(&a.changes(now));
    for s in &stale {
        b.e.install(now, s, 0).unwrap();
    }
    // The member closes the connection on a.
    let (v, _) = a.tcp(now, Side::Inside, PHONE, WEB, 5000, 443, TcpFlags::FIN | A, 2, 901);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    let state = |e: &Engine| e.conntrack().iter().map(|(_, f)| f.state_name()).collect::<Vec<_>>();
    let before = state(&a.e);
    assert_ne!(before, ["established"], "{before:?}");
    // b's resync sends its (older) copy back to a.
    let copy = b.e.export(now, b.e.conntrack().iter().next().unwrap().0).unwrap();
    assert_eq!(a.e.install(now, &copy, 5), Ok(Installed::Updated));
    assert_eq!(state(&a.e), before);
    // Named by that resync: not swept (and a flow of a's is never swept).
    let mut swept = 0;
    assert_eq!(a.e.sweep_unnamed(5, 0, usize::MAX, &mut swept), None);
    assert_eq!((swept, a.e.conntrack().len()), (0, 1));
}

#[test]
fn refused_installs_name_why_and_change_nothing() {
    let now = Time::from_secs(1000);
    let (mut a, mut b) = (Box_::new(now), Box_::new(now));
    let port = open(&mut a, now);
    let s = flows(&a.changes(now))[0];
    assert_eq!(b.e.install(now, &Synced { member_id: Some(999), ..s }, 0), Err(InstallRefusal::UnknownMember));
    // b gave the phone's port to another connection of its own: the boxes disagree.
    let (v, _) = b.tcp(now, Side::Inside, PHONE, WEB, 5000, 443, S, 1, 0);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    let other = Synced { nat: Some((SHARED.parse().unwrap(), port.wrapping_add(1).max(32768))), ..s };
    assert_eq!(b.e.install(now, &other, 0), Err(InstallRefusal::Inconsistent), "same key, another binding");
    let mut moved = s;
    moved.keys[0].src_port = 5001;
    moved.keys[1] = FlowKey { dst_port: 5001, ..moved.keys[1] };
    assert_eq!(b.e.install(now, &moved, 0), Err(InstallRefusal::NatConflict));
    assert_eq!((b.e.conntrack().len(), b.e.nat().len()), (1, 1));
    // The same flow again is an update.
    assert_eq!(b.e.install(now, &s, 0), Ok(Installed::Updated));
}

#[test]
fn a_flow_alive_past_its_timeout_is_reported_again_before_the_copy_expires() {
    let now = Time::from_secs(1000);
    let mut a = Box_::new(now);
    let (v, out) = a.tcp(now, Side::Inside, PHONE, WEB, 5000, 443, S, 1, 0);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    let (v, _) = a.tcp(now, Side::Outside, WEB, SHARED, 443, out.src_port, S | A, 900, 2);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    assert_eq!(flows(&a.changes(now)).len(), 1, "answered");
    // A retransmitted SYN-ACK 50 s later keeps it alive (SYN_RECV: 60 s) past its first deadline.
    let t1 = now + Duration::from_secs(50);
    a.tcp(t1, Side::Outside, WEB, SHARED, 443, out.src_port, S | A, 900, 2);
    assert!(a.changes(t1).is_empty(), "a retransmitted SYN-ACK changes nothing");
    let t2 = now + Duration::from_secs(61);
    a.e.poll_timers(t2);
    let again = flows(&a.changes(t2));
    assert_eq!(again.len(), 1);
    assert!(again[0].remaining > Duration::from_secs(45), "{:?}", again[0].remaining);
}
