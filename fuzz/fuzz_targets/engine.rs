//! The whole pipeline: arbitrary frames into one small `engine::Engine`
//! (64 flows, 8 fragmented datagrams, 4 stash slots, NAT quota 16), from
//! both sides, with virtual time moving, `poll_released` and `poll_timers`
//! after every batch. Reaches classify, the flow table and its eviction, the
//! timing wheel, TCP tracking, the fragment table and, with the member
//! policy, member lookup, NAT, port forwards, accounting and reloads.
//!
//! Input: one config byte, then records of
//! `[ctl][len: u16 big-endian][len bytes of frame]` (a short last record
//! takes what is left). Config byte:
//! - bit 0: `tcp_loose` off;
//! - bit 1: the member policy of `policy::sample::example()` (the example
//!   database of docs/members.md, as the `members` golden case): NAT and
//!   member rules instead of the classic inside/outside policy. Then an
//!   empty frame is not a frame but a reload of the same policy that ends
//!   the flows of the members chosen by bits 2..=6 of its `ctl`;
//! - bit 2 (with bit 1): every member shaped by plan, on a 1 Mbit/s uplink
//!   each way, so that frames are queued, released and dropped by the shaper;
//! - bit 3: frames reach the engine parsed by the caller
//!   (`Engine::process_parsed`, as the dataplane's steering hands them over),
//!   not parsed by the engine itself.
//!
//! `ctl`:
//! - bit 0: the side the frame comes from (0 inside, 1 outside);
//! - bit 1: join the previous frame's batch (if it came from the same side);
//! - bits 2..=7: `v`, time to advance before a new batch: none for 0, else
//!   `(1 + (v & 1)) << (v >> 1)` milliseconds (1 ms up to ~50 days).
//!
//! Besides "no panic", it checks what the engine promises: a forwarded frame
//! goes to the other side (with the policy: members may reach each other,
//! inside to inside, but nothing goes from the outside back out); a held
//! frame comes back out of `poll_released` the same way (byte for byte
//! without the policy, as long as it was with NAT); the tables stay within their bounds and are
//! empty (flows, datagrams, NAT bindings) once every timeout has passed; and
//! at the end every frame received was forwarded or counted under exactly
//! one drop reason (counters add up).
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run engine` (see fuzz/README.md).
#![no_main]

use core::time::Duration;
use std::sync::{Arc, OnceLock};

use engine::{Config, Engine, Parsed, ShapingConfig, Side, Time, Verdict};
use libfuzzer_sys::fuzz_target;
use policy::Policy;

const MAX_FLOWS: u32 = 64;
const MAX_DATAGRAMS: u32 = 8;
const FRAG_STASH: u16 = 4;
const NAT_QUOTA: u32 = 16;
/// Unassured flows a member may have open on one side: below MAX_FLOWS, so
/// that a flood of one member reaches it.
const HALF_OPEN: u32 = 8;

/// The example member database, compiled once per process.
fn example_policy() -> Arc<Policy> {
    static POLICY: OnceLock<Arc<Policy>> = OnceLock::new();
    Arc::clone(POLICY.get_or_init(|| {
        Arc::new(policy::compile(&policy::sample::example(), 1).expect("the example database compiles"))
    }))
}

struct Harness {
    eng: Engine,
    now: Time,
    /// Frames the engine said it held, with the side they came from (those
    /// it later dropped stay here: drops of held frames are not observable
    /// one by one).
    held: Vec<(Vec<u8>, Side)>,
    forwarded: [u64; 2],
    released: u64,
    held_total: u64,
    received: u64,
    /// Frames may be rewritten (NAT).
    translating: bool,
    /// Frames are parsed before the engine sees them (config bit 3).
    parsed_by_caller: bool,
}

impl Harness {
    fn batch(&mut self, from: Side, frames: &mut [Vec<u8>]) {
        if frames.is_empty() {
            return;
        }
        let rx_before = self.eng.counters().rx_packets[from.index()];
        let mut verdicts = vec![Verdict::Held; frames.len()];
        if self.parsed_by_caller {
            let mut parsed = Parsed::new(frames.len());
            for (i, f) in frames.iter().enumerate() {
                let _ = parsed.parse(i, f);
            }
            self.eng.process_parsed(self.now, from, frames, &mut verdicts, &parsed);
        } else {
            self.eng.process(self.now, from, frames, &mut verdicts);
        }
        self.received += frames.len() as u64;
        assert_eq!(self.eng.counters().rx_packets[from.index()] - rx_before, frames.len() as u64);
        for (f, v) in frames.iter().zip(&verdicts) {
            match *v {
                Verdict::Forward(to) => {
                    check_direction(from, to, self.translating, "forwarded");
                    self.forwarded[to.index()] += 1;
                }
                Verdict::Drop(_) => {}
                Verdict::Held => {
                    self.held.push((f.clone(), from));
                    self.held_total += 1;
                }
            }
        }
        self.poll();
    }

    fn poll(&mut self) {
        let held = &mut self.held;
        let forwarded = &mut self.forwarded;
        let translating = self.translating;
        let mut n = 0;
        self.eng.poll_released(|to, bytes| {
            // Without NAT the bytes are those held, or those with the
            // congestion mark the shaper may set on release (ECN CE: the
            // TOS/traffic class and the IPv4 checksum change); with NAT,
            // only addresses and checksums change, never the length.
            let same = |b: &Vec<u8>| {
                if translating {
                    return b.len() == bytes.len();
                }
                b == bytes || {
                    let mut marked = b.clone();
                    wire::nat::mark_ce(&mut marked) && marked == bytes
                }
            };
            let i = held
                .iter()
                .position(|(b, s)| same(b) && *s != to)
                .or_else(|| held.iter().position(|(b, s)| same(b) && *s == Side::Inside))
                .or_else(|| held.iter().position(|(b, _)| same(b)))
                .expect("released a frame that was never held");
            let (_, from) = held.swap_remove(i);
            check_direction(from, to, translating, "a held fragment released");
            forwarded[to.index()] += 1;
            n += 1;
        });
        self.released += n;
        self.eng.poll_timers(self.now);
        assert!(self.eng.conntrack().len() <= MAX_FLOWS as usize);
        assert!(self.eng.datagrams() <= MAX_DATAGRAMS as usize);
        assert!(self.eng.nat().len() <= self.eng.conntrack().len(), "more NAT bindings than flows");
        // Each member's queues of unassured flows are exactly its unassured
        // flows, within the limit.
        let ct = self.eng.conntrack();
        for slot in 0..self.eng.accounts().len() as u32 {
            for side in [Side::Inside, Side::Outside] {
                let queued = ct.half_open_of(slot, side);
                let n = ct.iter().filter(|(_, f)| f.account == slot && f.orig_side == side && !f.assured()).count();
                assert_eq!(queued as usize, n, "member slot {slot}'s queue from {side:?}");
                assert!(queued <= HALF_OPEN);
            }
        }
        let c = self.eng.counters();
        assert_eq!(c.fragments_held + c.shaper_queued, self.held_total);
        assert_eq!(c.fragments_released + c.shaper_released, self.released);
        assert_eq!(c.tx_packets, self.forwarded);
    }
}

/// Frames go to the other side; with the member policy, members also reach
/// each other through their public addresses (hairpinning, inside to
/// inside), but nothing from the outside goes back out.
fn check_direction(from: Side, to: Side, members: bool, what: &str) {
    if members {
        assert!(!(from == Side::Outside && to == Side::Outside), "{what} from the outside back to the outside");
    } else {
        assert_eq!(to, from.other(), "{what} back to the side it came from");
    }
}

fn advance(v: u8) -> Duration {
    if v == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis((1 + u64::from(v & 1)) << (v >> 1))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&conf, mut rest)) = data.split_first() else { return };
    let cfg = Config {
        max_flows: MAX_FLOWS,
        max_datagrams: MAX_DATAGRAMS,
        frag_stash: FRAG_STASH,
        tcp_loose: conf & 1 == 0,
        nat_quota: NAT_QUOTA,
        half_open_per_member: HALF_OPEN,
        // With the member policy, bit 2 shapes every member, on a small
        // uplink (1 Mbit/s each way) so that frames are queued and dropped.
        shaping: (conf & 6 == 6).then(|| ShapingConfig::new([1_000_000, 1_000_000], 1, 0, 0)),
        ..Config::default()
    };
    let members = conf & 2 != 0;
    let mut eng = Engine::new(cfg, Time::ZERO);
    if members {
        eng.set_policy(example_policy(), &[]);
    }
    let mut h = Harness {
        eng,
        now: Time::ZERO,
        held: Vec::new(),
        forwarded: [0; 2],
        released: 0,
        held_total: 0,
        received: 0,
        translating: members,
        parsed_by_caller: conf & 8 != 0,
    };
    let mut side = Side::Inside;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    while let Some((&ctl, r)) = rest.split_first() {
        let len = match r {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => 0,
        };
        let r = r.get(2..).unwrap_or(&[]);
        let (frame, r) = r.split_at(len.min(r.len()));
        rest = r;
        if members && frame.is_empty() {
            // A reload between batches, ending the chosen members' flows.
            h.batch(side, &mut batch);
            batch.clear();
            let ended: Vec<u32> = (0..5).filter(|i| ctl >> (2 + i) & 1 != 0).map(|i| 101 + i).collect();
            h.eng.set_policy(example_policy(), &ended);
            continue;
        }
        let from = if ctl & 1 == 0 { Side::Inside } else { Side::Outside };
        if ctl & 2 == 0 || from != side {
            h.batch(side, &mut batch);
            batch.clear();
            h.now = h.now + advance(ctl >> 2);
            side = from;
        }
        batch.push(frame.to_vec());
    }
    h.batch(side, &mut batch);

    // Past every timeout: everything expires, every held frame is dropped
    // (and counted), and the counters add up.
    h.now = h.now + Duration::from_secs(2 * 86_400);
    h.poll();
    // The shapers release (or drop, past their sojourn limit) what they
    // hold as time passes: a bounded number of milliseconds.
    for _ in 0..4096 {
        if h.eng.shaper_held() == 0 {
            break;
        }
        h.now = h.now + Duration::from_millis(1);
        h.poll();
    }
    h.poll();
    assert_eq!(h.eng.shaper_held(), 0, "frames still held by the shapers");
    assert_eq!(h.eng.conntrack().len(), 0, "flows left after every timeout passed");
    assert_eq!(h.eng.datagrams(), 0, "datagrams left after every timeout passed");
    assert_eq!(h.eng.nat().len(), 0, "NAT bindings left after every flow expired");
    let c = h.eng.counters();
    let rx: u64 = c.rx_packets.iter().sum();
    let tx: u64 = c.tx_packets.iter().sum();
    assert_eq!(rx, h.received);
    assert_eq!(
        rx,
        tx + c.total_drops(),
        "frames received != forwarded + dropped: some frame was lost without a drop reason or counted twice ({c:?})"
    );
});
