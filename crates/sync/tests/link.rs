//! The protocol over a simulated link, in virtual time: loss, reordering,
//! duplication, partitions, restarts and a forger who has every datagram
//! but not the key. After the trouble stops, the standby must hold exactly
//! the active box's flows, must say so (complete), and must never have
//! installed a record the active box did not send.

use engine::tcp::{Segment, TcpTrack};
use engine::{Side, Time};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use sync::{Config, Event, FlowRecord, FlowState, Key, Keys, Peer, Record};
use wire::flow::Family;
use wire::FlowKey;

const TICK: u64 = 100_000; // 100 µs

/// A small deterministic generator (xorshift64*), so every run is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn key(id: u32) -> FlowKey {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[10, 0, 0, 1]);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[192, 0, 2, 1]);
    FlowKey { src, dst, src_port: (id & 0xffff) as u16, dst_port: (id >> 16) as u16, proto: 6, family: Family::V4 }
}

/// Flow `id` at `version` (kept in the time left).
fn flow(id: u32, version: u64) -> FlowRecord {
    let syn = Segment { syn: true, seq: id, window: 512, ..Segment::default() };
    FlowRecord {
        keys: [key(id), key(id).reversed()],
        orig_side: Side::Inside,
        reply_side: Side::Outside,
        answered: false,
        state: FlowState::Tcp(TcpTrack::open(&syn).snapshot()),
        remaining_ms: version as u32,
        member: Some(id % 100),
        nat: None,
        copy: false,
    }
}

/// One box: its protocol end, its own flows, and what it holds of its peer's.
struct Node {
    peer: Peer,
    own: BTreeMap<u32, u64>,
    held: BTreeMap<u32, u64>,
    /// During a resync from the peer: the flows it has named so far.
    named: Option<HashSet<u32>>,
    /// The resync being pushed: its id and the flows still to push.
    dump: Option<(u32, Vec<u32>, u64)>,
    /// Every record this box ever pushed (the forgery check).
    sent: HashSet<(u32, u64, bool)>,
}

impl Node {
    fn new(cfg: Config, seed: u8, now: Time) -> Node {
        Node {
            peer: Peer::new(cfg, keys(), [seed; 32], now),
            own: BTreeMap::new(),
            held: BTreeMap::new(),
            named: None,
            dump: None,
            sent: HashSet::new(),
        }
    }

    fn upsert(&mut self, id: u32, version: u64) {
        self.own.insert(id, version);
        self.sent.insert((id, version, true));
        self.peer.push(Record::Flow(flow(id, version)));
    }

    fn end(&mut self, id: u32) {
        if self.own.remove(&id).is_some() {
            self.sent.insert((id, 0, false));
            self.peer.push(Record::Ended { key: key(id), member: id % 100 });
        }
    }

    /// Acts on events and pushes the resync while the queue has room.
    fn work(&mut self) {
        while let Some(e) = self.peer.poll_event() {
            if let Event::Resync { id } = e {
                self.dump = Some((id, self.own.keys().rev().copied().collect(), 0));
            }
        }
        if let Some((id, mut left, mut pushed)) = self.dump.take() {
            while self.peer.room() > 0 {
                let Some(fid) = left.pop() else { break };
                if let Some(&v) = self.own.get(&fid) {
                    self.sent.insert((fid, v, true));
                    self.peer.push(Record::Flow(flow(fid, v)));
                    pushed += 1;
                }
            }
            if left.is_empty() {
                self.peer.resync_done(id, pushed);
            } else {
                self.dump = Some((id, left, pushed));
            }
        }
    }

    fn install(&mut self, r: &Record, from: &HashSet<(u32, u64, bool)>) {
        match r {
            Record::Flow(f) => {
                let id = u32::from(f.keys[0].src_port) | u32::from(f.keys[0].dst_port) << 16;
                let v = u64::from(f.remaining_ms);
                assert!(from.contains(&(id, v, true)), "installed a record never sent: {id} v{v}");
                self.held.insert(id, v);
                if let Some(named) = &mut self.named {
                    named.insert(id);
                }
            }
            Record::Ended { key: k, .. } => {
                let id = u32::from(k.src_port) | u32::from(k.dst_port) << 16;
                assert!(from.contains(&(id, 0, false)), "ended a flow never ended: {id}");
                self.held.remove(&id);
            }
            Record::ResyncBegin { .. } => self.named = Some(HashSet::new()),
            Record::ResyncEnd { .. } => {
                if let Some(named) = self.named.take() {
                    self.held.retain(|id, _| named.contains(id));
                }
            }
            _ => {}
        }
    }
}

fn keys() -> Keys {
    Keys::from_keys(Key::new(&[0x5a; 32]), [])
}

#[derive(Clone, Copy, Default)]
struct Trouble {
    loss: f64,
    duplicate: f64,
    /// Extra delay up to this many nanoseconds, so datagrams overtake each other.
    jitter: u64,
    forge: f64,
}

/// A datagram on the wire: `(arrival, order, to, bytes)`, earliest first.
type InFlight = Reverse<(u64, u64, usize, Vec<u8>)>;

struct Sim {
    now: Time,
    nodes: [Node; 2],
    wire: BinaryHeap<InFlight>,
    order: u64,
    rng: Rng,
    trouble: Trouble,
    cut: bool,
    captured: Vec<(usize, Vec<u8>)>,
    buf: Vec<u8>,
}

impl Sim {
    fn new(cfg: Config, seed: u64) -> Sim {
        let now = Time::from_secs(1000);
        Sim {
            now,
            nodes: [Node::new(cfg, 1, now), Node::new(cfg, 2, now)],
            wire: BinaryHeap::new(),
            order: 0,
            rng: Rng(seed | 1),
            trouble: Trouble::default(),
            cut: false,
            captured: Vec::new(),
            buf: vec![0; 9000],
        }
    }

    fn send(&mut self, to: usize, bytes: Vec<u8>) {
        if self.captured.len() < 20_000 {
            self.captured.push((to, bytes.clone()));
        }
        if self.cut || self.rng.chance(self.trouble.loss) {
            return;
        }
        let copies = if self.rng.chance(self.trouble.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now.as_nanos() + 50_000 + self.rng.below(self.trouble.jitter + 1);
            self.order += 1;
            self.wire.push(Reverse((at, self.order, to, bytes.clone())));
        }
    }

    fn forge(&mut self) {
        if self.captured.is_empty() || !self.rng.chance(self.trouble.forge) {
            return;
        }
        let (to, mut bytes) = self.captured[self.rng.below(self.captured.len() as u64) as usize].clone();
        match self.rng.below(4) {
            // A replay, verbatim.
            0 => {}
            // A flipped bit anywhere.
            1 => {
                let i = self.rng.below(bytes.len() as u64) as usize;
                bytes[i] ^= 1 << self.rng.below(8);
            }
            // Noise.
            2 => {
                let n = self.rng.below(1500) as usize;
                bytes = (0..n).map(|_| self.rng.next() as u8).collect();
            }
            // A well-made datagram under another key.
            _ => {
                let other = Keys::from_keys(Key::new(&[0x33; 32]), []);
                let len = bytes.len();
                sync::message::seal(
                    &other,
                    sync::message::Kind::Data,
                    &Default::default(),
                    &mut bytes,
                    len.saturating_sub(sync::message::MIN_LEN),
                );
            }
        }
        self.order += 1;
        self.wire.push(Reverse((self.now.as_nanos(), self.order, to, bytes)));
    }

    /// One tick: both boxes work and transmit, then what arrives is taken.
    fn tick(&mut self) {
        for i in 0..2 {
            self.nodes[i].work();
            let mut out = Vec::new();
            while let Some(n) = self.nodes[i].peer.poll_transmit(self.now, &mut self.buf) {
                out.push(self.buf[..n].to_vec());
            }
            for d in out {
                self.send(1 - i, d);
            }
        }
        self.forge();
        self.now = Time(self.now.as_nanos() + TICK);
        while let Some(Reverse((at, _, _, _))) = self.wire.peek() {
            if *at > self.now.as_nanos() {
                break;
            }
            let Reverse((_, _, to, bytes)) = self.wire.pop().unwrap();
            let [a, b] = &mut self.nodes;
            let (node, sender) = if to == 0 { (a, b) } else { (b, a) };
            let mut got = Vec::new();
            node.peer.handle_datagram(self.now, &bytes, |r| got.push(*r));
            for r in &got {
                node.install(r, &sender.sent);
            }
        }
    }

    fn run(&mut self, ms: u64, mut churn: impl FnMut(&mut Sim)) {
        for _ in 0..ms * 1_000_000 / TICK {
            churn(self);
            self.tick();
        }
    }

    /// Creates, updates and ends flows on box `on` at random.
    fn churn(&mut self, on: usize, per_tick: u32) {
        for _ in 0..per_tick {
            let id = self.rng.below(5_000) as u32 + on as u32 * 1_000_000;
            match self.rng.below(10) {
                0..=1 => self.nodes[on].end(id),
                _ => {
                    let v = self.rng.next() >> 40;
                    self.nodes[on].upsert(id, v)
                }
            }
        }
    }

    /// Quiet time: no trouble, no churn, until both agree.
    fn settle(&mut self) {
        self.trouble = Trouble::default();
        self.cut = false;
        self.run(3_000, |_| {});
    }

    fn assert_converged(&self) {
        for i in 0..2 {
            let (me, other) = (&self.nodes[i], &self.nodes[1 - i]);
            if me.held != other.own {
                let extra: Vec<_> = me.held.iter().filter(|(k, v)| other.own.get(k) != Some(v)).take(5).collect();
                let missing: Vec<_> = other.own.iter().filter(|(k, v)| me.held.get(k) != Some(v)).take(5).collect();
                panic!(
                    "box {i}: {} held, {} at the peer; wrong {extra:?}, missing {missing:?}; {:?} / peer {:?}",
                    me.held.len(),
                    other.own.len(),
                    me.peer.counters(),
                    other.peer.counters()
                );
            }
            assert_eq!(me.held, other.own, "box {i} holds what its peer has");
            assert!(me.peer.status(self.now).complete, "box {i} complete: {:?}", me.peer.counters());
            assert!(me.peer.ready(self.now));
        }
    }
}

#[test]
fn a_clean_link_syncs_both_ways() {
    let mut sim = Sim::new(Config::default(), 1);
    sim.run(2_000, |s| {
        s.churn(0, 3);
        s.churn(1, 1);
    });
    sim.settle();
    sim.assert_converged();
    assert!(sim.nodes[0].own.len() > 3_000);
    let c = sim.nodes[1].peer.counters();
    assert_eq!((c.refused_tag, c.duplicates, c.records_lost), (0, 0, 0));
}

#[test]
fn loss_reordering_and_duplication_converge() {
    for seed in 1..=4 {
        let mut sim = Sim::new(Config::default(), seed);
        sim.trouble = Trouble { loss: 0.2, duplicate: 0.1, jitter: 3_000_000, forge: 0.0 };
        sim.run(3_000, |s| {
            s.churn(0, 2);
            s.churn(1, 2);
        });
        sim.settle();
        sim.assert_converged();
        let c = sim.nodes[1].peer.counters();
        assert!(c.duplicates > 0 && sim.nodes[0].peer.counters().resent > 0, "seed {seed}: {c:?}");
    }
}

#[test]
fn a_partition_with_a_full_queue_ends_in_a_resync() {
    let cfg = Config { queue: 2_000, ..Config::default() };
    let mut sim = Sim::new(cfg, 9);
    sim.run(500, |s| s.churn(0, 2));
    sim.cut = true;
    sim.run(3_000, |s| s.churn(0, 4));
    assert!(!sim.nodes[0].peer.status(sim.now).peer_alive, "the partition is noticed");
    // Not complete while the peer is gone, but ready: nothing more will come.
    assert!(sim.nodes[1].peer.ready(sim.now));
    assert!(sim.nodes[0].peer.counters().records_lost > 0);
    sim.cut = false;
    sim.run(200, |s| s.churn(0, 2));
    sim.settle();
    sim.assert_converged();
    assert!(sim.nodes[0].peer.counters().resyncs_started >= 2);
}

#[test]
fn a_restarted_box_gets_everything_and_old_datagrams_stay_out() {
    let mut sim = Sim::new(Config::default(), 5);
    sim.run(1_000, |s| s.churn(0, 3));
    let old = sim.nodes[1].peer.status(sim.now).session;
    // Box 1 restarts: a new session, nothing held.
    sim.nodes[1] = Node::new(Config::default(), 7, sim.now);
    // The forger replays everything it captured before the restart.
    sim.trouble.forge = 1.0;
    sim.run(2_000, |s| s.churn(0, 1));
    sim.settle();
    sim.assert_converged();
    assert_ne!(sim.nodes[1].peer.status(sim.now).session, old);
    assert_eq!(sim.nodes[0].peer.status(sim.now).peer_session, Some(sim.nodes[1].peer.status(sim.now).session));
}

#[test]
fn a_forger_without_the_key_installs_nothing() {
    let mut sim = Sim::new(Config::default(), 11);
    sim.trouble = Trouble { loss: 0.05, duplicate: 0.05, jitter: 1_000_000, forge: 0.5 };
    sim.run(3_000, |s| {
        s.churn(0, 2);
        s.churn(1, 1);
    });
    sim.settle();
    // `install` asserts every record was sent; here: refused and counted.
    sim.assert_converged();
    let c = sim.nodes[1].peer.counters();
    let refused = c.refused_tag + c.refused_unknown_key + c.refused_too_short + c.refused_magic;
    assert!(refused > 100, "{c:?}");
    assert!(c.duplicates > 0, "replays are dropped as duplicates: {c:?}");
}

#[test]
fn a_bulk_resync_of_200000_flows_with_bounded_queues() {
    let mut sim = Sim::new(Config::default(), 3);
    for id in 0..200_000 {
        sim.nodes[0].own.insert(id, 1);
    }
    // Box 1 (re)joins: box 0 sends all of it, never holding more than its queue.
    let mut most = 0;
    sim.run(4_000, |s| {
        let st = s.nodes[0].peer.status(s.now);
        most = most.max(st.queued);
        assert!(st.unacked <= Config::default().send_window);
    });
    assert!(most <= Config::default().queue);
    sim.settle();
    sim.assert_converged();
    assert_eq!(sim.nodes[1].held.len(), 200_000);
}

#[test]
fn a_datagram_larger_than_this_boxs_is_refused_not_stored() {
    // The peer (with the key) sends jumbo datagrams; this box takes 1452 bytes.
    let now = Time::from_secs(1000);
    let big = Config { max_datagram: sync::message::MAX_LEN, ..Config::default() };
    let mut a = Peer::new(big, keys(), [1; 32], now);
    let mut b = Peer::new(Config::default(), keys(), [2; 32], now);
    let mut buf = vec![0u8; sync::message::MAX_LEN];
    let mut t = now;
    for _ in 0..50 {
        exchange(&mut a, &mut b, t, &mut buf);
        exchange(&mut b, &mut a, t, &mut buf);
        while a.poll_event().is_some() {}
        for i in 0..200 {
            a.push(Record::Flow(flow(i, 1)));
        }
        t = Time(t.as_nanos() + 10_000_000);
    }
    assert!(b.counters().refused_too_long > 0, "{:?}", b.counters());
}

/// Everything `src` has to send now, handed to `dst`.
fn exchange(src: &mut Peer, dst: &mut Peer, t: Time, buf: &mut [u8]) {
    while let Some(n) = src.poll_transmit(t, buf) {
        dst.handle_datagram(t, &buf[..n], |_| {});
    }
}

#[test]
fn a_box_that_starts_is_not_ready_before_it_holds_its_peers_state() {
    let cfg = Config::default();
    let mut sim = Sim::new(cfg, 21);
    for id in 0..20_000 {
        sim.nodes[0].own.insert(id, 1);
    }
    let t0 = sim.now;
    assert!(!sim.nodes[1].peer.ready(t0), "just started: not ready");
    // Alone for the grace period: ready (there is nobody to wait for).
    let alone = Peer::new(cfg, keys(), [9; 32], t0);
    assert!(alone.ready(t0 + cfg.dead_after));
    // With a peer sending its state: not ready until all of it is here.
    let mut seen_unready_with_peer = false;
    for _ in 0..20_000 {
        sim.tick();
        let st = sim.nodes[1].peer.status(sim.now);
        if st.peer_alive && !st.complete {
            assert!(!sim.nodes[1].peer.ready(sim.now));
            seen_unready_with_peer = true;
        }
        if st.complete {
            break;
        }
    }
    assert!(seen_unready_with_peer);
    assert!(sim.nodes[1].peer.ready(sim.now));
    assert_eq!(sim.nodes[1].held.len(), 20_000);
}

/// A receiver with bounded queues (a worker's ring) takes one datagram at
/// a time: when a resent datagram fills a hole, the datagrams that waited
/// behind it stay in the reorder window until it asks for them, and every
/// record arrives once, in order. (Delivering them all at once overflowed
/// the workers' rings, and the records were lost after they were acked.)
#[test]
fn a_filled_hole_is_delivered_as_the_receiver_has_room() {
    let now = Time::from_secs(1000);
    let mut a = Peer::new(Config::default(), keys(), [1; 32], now);
    let mut b = Peer::new(Config::default(), keys(), [2; 32], now);
    let mut buf = vec![0u8; sync::message::MAX_LEN];
    let mut t = now;
    // Meet, and let the opening resyncs through.
    for _ in 0..20 {
        exchange(&mut a, &mut b, t, &mut buf);
        exchange(&mut b, &mut a, t, &mut buf);
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        t = Time(t.as_nanos() + 10_000_000);
    }
    let (mut got, mut most_at_once) = (Vec::new(), 0);
    for id in 0..3_000 {
        a.push(Record::Flow(flow(id, 1)));
    }
    // The first datagram is lost; the rest arrive early and wait.
    let mut first = true;
    while let Some(n) = a.poll_transmit(t, &mut buf) {
        if std::mem::take(&mut first) {
            continue;
        }
        let mut one = 0;
        b.handle_datagram_one(t, &buf[..n], |r| {
            one += 1;
            got.push(*r)
        });
        assert_eq!(one, 0, "nothing is delivered past the hole");
    }
    assert!(got.is_empty());
    // b's acknowledgement names the hole; a sends the datagram again.
    for _ in 0..40 {
        t = Time(t.as_nanos() + 100_000_000);
        while let Some(n) = b.poll_transmit(t, &mut buf) {
            a.handle_datagram(t, &buf[..n], |_| {});
        }
        while let Some(n) = a.poll_transmit(t, &mut buf) {
            let mut one = 0;
            b.handle_datagram_one(t, &buf[..n], |r| {
                one += 1;
                got.push(*r)
            });
            most_at_once = most_at_once.max(one);
            loop {
                let mut next = 0;
                if !b.deliver_next(t, |r| {
                    next += 1;
                    got.push(*r)
                }) {
                    break;
                }
                most_at_once = most_at_once.max(next);
            }
        }
        if got.len() >= 3_000 {
            break;
        }
    }
    let keys: Vec<FlowKey> =
        got.iter().filter_map(|r| if let Record::Flow(f) = r { Some(f.keys[0]) } else { None }).collect();
    assert_eq!(keys, (0..3_000).map(key).collect::<Vec<_>>(), "every record once, in order: {:?}", b.counters());
    // At most one datagram's records at a time (1452 bytes: a few dozen).
    assert!(most_at_once <= 1452 / 7, "{most_at_once} records in one call");
}

/// Someone who recorded the boxes' hellos replays them, in a flood, while
/// box b restarts: each genuine datagram is followed by old hellos of a's
/// session (to the new b) and of b's old session (to a). The boxes still
/// accept each other's new sessions: a replayed hello's challenge is never
/// echoed (before, the last replay's was, and the restarted box never
/// accepted the other while the flood lasted).
#[test]
fn replayed_hellos_do_not_keep_a_restarted_box_out() {
    let mut t = Time::from_secs(1000);
    let mut a = Peer::new(Config::default(), keys(), [1; 32], t);
    let mut b = Peer::new(Config::default(), keys(), [2; 32], t);
    let mut buf = vec![0u8; sync::message::MAX_LEN];
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        while let Some(n) = a.poll_transmit(t, &mut buf) {
            from_a.push(buf[..n].to_vec());
            b.handle_datagram(t, &buf[..n], |_| {});
        }
        while let Some(n) = b.poll_transmit(t, &mut buf) {
            from_b.push(buf[..n].to_vec());
            a.handle_datagram(t, &buf[..n], |_| {});
        }
        t = Time(t.as_nanos() + 100_000_000);
    }
    let old_b = b.status(t).session;
    assert_eq!(a.status(t).peer_session, Some(old_b));
    // b restarts.
    let mut b = Peer::new(Config::default(), keys(), [3; 32], t);
    let new_b = b.status(t).session;
    for _ in 0..100 {
        while let Some(n) = a.poll_transmit(t, &mut buf) {
            b.handle_datagram(t, &buf[..n], |_| {});
            for old in from_a.iter().rev().take(8) {
                b.handle_datagram(t, old, |_| {});
            }
        }
        while let Some(n) = b.poll_transmit(t, &mut buf) {
            a.handle_datagram(t, &buf[..n], |_| {});
            for old in from_b.iter().rev().take(8) {
                a.handle_datagram(t, old, |_| {});
            }
        }
        for p in [&mut a, &mut b] {
            while let Some(e) = p.poll_event() {
                if let Event::Resync { id } = e {
                    p.resync_done(id, 0);
                }
            }
        }
        t = Time(t.as_nanos() + 100_000_000);
        if a.status(t).peer_session == Some(new_b) && b.status(t).complete && a.status(t).complete {
            break;
        }
    }
    assert_eq!(a.status(t).peer_session, Some(new_b), "a accepted the restarted b: {:?}", a.counters());
    assert_eq!(b.status(t).peer_session, Some(a.status(t).session), "b accepted a: {:?}", b.counters());
    assert!(b.status(t).complete && a.status(t).complete);
    assert!(a.counters().refused_replay > 0 && b.counters().refused_replay > 0);
}

/// A box that held its peer's state stays ready while the peer restarts
/// and sends its own (here, a box that carries the traffic must not give
/// it up, to a peer that holds even less); the restarted peer is not
/// ready until it holds this box's state.
#[test]
fn a_box_that_held_its_peers_state_stays_ready_when_the_peer_restarts() {
    let cfg = Config::default();
    let mut sim = Sim::new(cfg, 23);
    for id in 0..20_000 {
        sim.nodes[0].own.insert(id, 1);
    }
    for _ in 0..20_000 {
        sim.tick();
        if sim.nodes[0].peer.status(sim.now).complete && sim.nodes[1].peer.status(sim.now).complete {
            break;
        }
    }
    assert!(sim.nodes[0].peer.ready(sim.now) && sim.nodes[1].peer.ready(sim.now));
    // Box 1 restarts (an upgrade): a new session, nothing held.
    sim.nodes[1] = Node::new(cfg, 8, sim.now);
    let (mut restarted_unready, mut box0_incomplete) = (false, false);
    for _ in 0..20_000 {
        sim.tick();
        assert!(sim.nodes[0].peer.ready(sim.now), "the box with the state gave it up");
        let (s0, s1) = (sim.nodes[0].peer.status(sim.now), sim.nodes[1].peer.status(sim.now));
        box0_incomplete |= s0.peer_session.is_some() && !s0.complete;
        if s1.peer_alive && !s1.complete {
            assert!(!sim.nodes[1].peer.ready(sim.now));
            restarted_unready = true;
        }
        if s1.complete && s0.complete {
            break;
        }
    }
    assert!(box0_incomplete, "box 0 took box 1's new resync (and stayed ready through it)");
    assert!(restarted_unready && sim.nodes[1].peer.ready(sim.now));
    assert_eq!(sim.nodes[1].held.len(), 20_000);
}

/// A box's own datagrams sent back to it (an attacker on the sync link
/// reflecting them: the key is the same both ways) are refused: the box
/// does not take itself for a restarted peer.
#[test]
fn a_box_refuses_its_own_datagrams_sent_back() {
    let mut t = Time::from_secs(1000);
    let mut a = Peer::new(Config::default(), keys(), [1; 32], t);
    let mut b = Peer::new(Config::default(), keys(), [2; 32], t);
    let mut buf = vec![0u8; sync::message::MAX_LEN];
    let mut from_a = Vec::new();
    for _ in 0..30 {
        while let Some(n) = a.poll_transmit(t, &mut buf) {
            from_a.push(buf[..n].to_vec());
            b.handle_datagram(t, &buf[..n], |_| {});
        }
        exchange(&mut b, &mut a, t, &mut buf);
        t = Time(t.as_nanos() + 100_000_000);
    }
    while a.poll_event().is_some() {}
    let peer = a.status(t).peer_session;
    assert_eq!(peer, Some(b.status(t).session));
    let replays = a.counters().refused_replay;
    // a's hellos and data, each sent back to it twice, and a's fresh ones too.
    for _ in 0..3 {
        while let Some(n) = a.poll_transmit(t, &mut buf) {
            from_a.push(buf[..n].to_vec());
        }
        for d in &from_a {
            for _ in 0..2 {
                a.handle_datagram(t, d, |r| panic!("a took its own record {r:?}"));
            }
        }
        t = Time(t.as_nanos() + 100_000_000);
    }
    assert_eq!(a.status(t).peer_session, peer, "a accepted itself: {:?}", a.counters());
    assert!(a.poll_event().is_none(), "no new peer, no resync");
    assert!(a.counters().refused_replay > replays);
}

/// A box of the previous release (its hellos give no protocol version,
/// and it refuses a flow record's copy flag) is sent copies as plain flow
/// records, so that the two sync while an upgrade is half done; a box of
/// this release gets the flag.
#[test]
fn a_peer_of_the_previous_release_is_sent_no_copy_flag() {
    use sync::message::{self, Kind};
    for previous in [true, false] {
        let mut t = Time::from_secs(1000);
        let mut a = Peer::new(Config::default(), keys(), [1; 32], t);
        let mut b = Peer::new(Config::default(), keys(), [2; 32], t);
        let mut buf = vec![0u8; message::MAX_LEN];
        let mut got = Vec::new();
        for round in 0..30 {
            if round == 20 {
                a.push(Record::Flow(FlowRecord { copy: true, ..flow(1, 1) }));
            }
            while let Some(n) = a.poll_transmit(t, &mut buf) {
                b.handle_datagram(t, &buf[..n], |r| got.push(*r));
            }
            while let Some(n) = b.poll_transmit(t, &mut buf) {
                let k = keys();
                let (kind, mut h, _) = message::open(&k, &buf[..n]).unwrap();
                let mut d = buf[..n].to_vec();
                if previous && kind == Kind::Hello {
                    // As the previous release seals its hellos: seq 0.
                    h.seq = 0;
                    let len = message::seal(&k, Kind::Hello, &h, &mut d, 0);
                    d.truncate(len);
                }
                a.handle_datagram(t, &d, |_| {});
            }
            for p in [&mut a, &mut b] {
                while let Some(e) = p.poll_event() {
                    if let Event::Resync { id } = e {
                        p.resync_done(id, 0);
                    }
                }
            }
            t = Time(t.as_nanos() + 100_000_000);
        }
        let flows: Vec<_> = got.iter().filter_map(|r| if let Record::Flow(f) = r { Some(*f) } else { None }).collect();
        assert_eq!(flows, [FlowRecord { copy: !previous, ..flow(1, 1) }], "previous release: {previous}");
    }
}
