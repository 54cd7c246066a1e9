//! The per-core pipeline: a batch of frames in, one verdict per frame out.
//!
//! The batch is processed in three passes so that memory latency overlaps
//! (VPP's dual-loop idea, by pass rather than by pair):
//! 1. parse every frame ([`wire::classify::classify`]), hash its flow key and
//!    prefetch the hash bucket;
//! 2. look every key up in the flow index and prefetch the flow;
//! 3. decide: a known flow takes the fast path (state update, deadline,
//!    counters); the rest take the slow path (policy, new state).
//!
//! Policy today is the classic stateful one: a connection opened from the
//! inside is allowed with its replies, nothing unsolicited from the outside
//! is. ICMP errors pass as related to the flow they quote and never create
//! state. Fragments get their first fragment's verdict ([`crate::frag`]).

use crate::conntrack::{Conntrack, Hit, NewFlow, ProtoState, Timeouts, EXPIRE_BUDGET, NO_BINDING, NO_MEMBER};
use crate::counters::{Counters, DropReason, Reason};
use crate::frag::{datagram_key, FlowRef, Fragments, Outcome, Piece};
use crate::tcp::{Refusal, Segment, TcpState, TcpTrack};
use crate::time::Time;
use crate::{Side, Verdict};
use core::time::Duration;
use wire::classify::{classify, classify_into, Meta, L4};
use wire::flow::proto;
use wire::tcp::TcpFlags;
use wire::FrameBuf;

/// Frames processed per pass; longer batches are taken in chunks of this.
pub const MAX_BATCH: usize = 256;

/// What an engine is built with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most flows tracked at once (the slab is allocated for this many).
    pub max_flows: u32,
    /// Secret key of the flow hash; draw it at random per process start.
    pub hash_key: [u64; 4],
    pub timeouts: Timeouts,
    /// Take over TCP connections mid-stream when their packets come from
    /// the inside (after a restart), as Linux's `nf_conntrack_tcp_loose`.
    pub tcp_loose: bool,
    /// Fragmented datagrams tracked at once.
    pub max_datagrams: u32,
    /// Fragments that can be held while their first fragment is missing.
    pub frag_stash: u16,
    pub frag_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_flows: 262_144,
            hash_key: [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89],
            timeouts: Timeouts::default(),
            tcp_loose: true,
            max_datagrams: 4096,
            frag_stash: 256,
            frag_timeout: Duration::from_secs(30),
        }
    }
}

/// One core's engine. See the crate docs for the calling order.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    ct: Conntrack,
    frags: Fragments,
    counters: Counters,
    last_now: Time,
    metas: Box<[Meta]>,
    /// Whether `metas[i]` parsed (else frame `i` is already dropped).
    parsed: Box<[bool]>,
    hashes: Box<[u64]>,
    hits: Box<[Option<Hit>]>,
    /// The flow table's generation when `hits` were looked up.
    hits_generation: u64,
}

impl Engine {
    pub fn new(cfg: Config, now: Time) -> Engine {
        Engine {
            ct: Conntrack::new(cfg.max_flows, cfg.hash_key, cfg.timeouts, now),
            frags: Fragments::new(cfg.max_datagrams, cfg.frag_stash, cfg.frag_timeout, cfg.hash_key, now),
            counters: Counters::default(),
            last_now: now,
            metas: vec![Meta::EMPTY; MAX_BATCH].into(),
            parsed: vec![false; MAX_BATCH].into(),
            hashes: vec![0; MAX_BATCH].into(),
            hits: vec![None; MAX_BATCH].into(),
            hits_generation: 0,
            cfg,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// Fragmented datagrams being tracked.
    pub fn datagrams(&self) -> usize {
        self.frags.len()
    }

    /// Decides about `frames`, all received from side `from`, writing one
    /// verdict per frame into `verdicts` (which must be at least as long).
    pub fn process<F: FrameBuf>(&mut self, now: Time, from: Side, frames: &mut [F], verdicts: &mut [Verdict]) {
        assert!(verdicts.len() >= frames.len(), "one verdict slot per frame");
        let now = now.max(self.last_now);
        self.last_now = now;
        for (f, v) in frames.chunks_mut(MAX_BATCH).zip(verdicts.chunks_mut(MAX_BATCH)) {
            self.process_chunk(now, from, f, v);
        }
    }

    fn process_chunk<F: FrameBuf>(&mut self, now: Time, from: Side, frames: &mut [F], verdicts: &mut [Verdict]) {
        let n = frames.len();
        let side = from.index();
        // Pass 1: parse, hash, prefetch the bucket.
        for i in 0..n {
            let bytes = frames[i].bytes();
            self.counters.rx_packets[side] += 1;
            self.counters.rx_bytes[side] += bytes.len() as u64;
            match classify_into(bytes, &mut self.metas[i]) {
                Ok(()) => {
                    let m = &self.metas[i];
                    if lookup_first(m) {
                        let h = self.ct.hash(&m.key);
                        self.hashes[i] = h;
                        self.ct.prefetch_bucket(h);
                    }
                    self.parsed[i] = true;
                }
                Err(e) => {
                    self.parsed[i] = false;
                    verdicts[i] = self.drop(DropReason::Malformed(e));
                }
            }
        }
        // Pass 2: look up, prefetch the flow.
        for i in 0..n {
            self.hits[i] = None;
            let m = &self.metas[i];
            if self.parsed[i] && lookup_first(m) {
                let hit = self.ct.lookup(self.hashes[i], &m.key);
                if let Some(h) = hit {
                    self.ct.prefetch_flow(h.flow);
                }
                self.hits[i] = hit;
            }
        }
        self.hits_generation = self.ct.generation();
        // Pass 3: decide. The parsed headers are read in place: moved out
        // of `self` for the pass (a pointer swap), not copied per packet.
        let metas = core::mem::take(&mut self.metas);
        for i in 0..n {
            if !self.parsed[i] {
                continue;
            }
            let m = &metas[i];
            let len = frames[i].bytes().len();
            let v = if let Some(frag) = m.frag {
                self.fragment(now, from, m, frag, i, frames[i].bytes_mut())
            } else if let L4::IcmpError { inner, .. } = &m.l4 {
                self.related(now, from, m, inner)
            } else {
                self.track(now, from, m, i, frames[i].bytes_mut()).0
            };
            if let Verdict::Forward(to) = v {
                self.counters.tx_packets[to.index()] += 1;
                self.counters.tx_bytes[to.index()] += len as u64;
            }
            verdicts[i] = v;
        }
        self.metas = metas;
    }

    #[inline]
    fn drop(&mut self, r: impl Into<DropReason>) -> Verdict {
        let r = r.into();
        self.counters.drop(r);
        Verdict::Drop(r)
    }

    /// Connection tracking and policy for one packet with a transport key.
    /// Returns the verdict and the flow it belongs to.
    fn track(&mut self, now: Time, from: Side, m: &Meta, i: usize, frame: &mut [u8]) -> (Verdict, Option<Hit>) {
        let len = frame.len();
        let seg = match m.l4 {
            L4::Tcp { flags, seq, ack, window, payload_len, wscale } => {
                let s = Segment {
                    syn: flags.contains(TcpFlags::SYN),
                    ack: flags.contains(TcpFlags::ACK),
                    fin: flags.contains(TcpFlags::FIN),
                    rst: flags.contains(TcpFlags::RST),
                    seq,
                    ack_no: ack,
                    window,
                    // A first fragment holds only part of the segment; the
                    // rest may be up to what an IP datagram can carry. Assume
                    // the most, so the receiver's ACK of all of it passes.
                    payload_len: if m.frag.is_some() { u16::MAX - 60 } else { payload_len },
                    wscale,
                };
                if s.bad_flags() {
                    return (self.drop(Reason::TcpBadFlags), None);
                }
                Some(s)
            }
            _ => None,
        };

        // The pass-2 hit is stale if an earlier packet of this batch added
        // or removed a flow since: then look again.
        let hit = if self.ct.generation() == self.hits_generation {
            self.hits[i]
        } else {
            match self.hits[i] {
                // The flow was prefetched: checking it is cheaper than looking again.
                Some(h) if self.ct.flow(h.flow).is_live() && self.ct.flow(h.flow).keys[h.dir as usize] == m.key => {
                    Some(h)
                }
                _ => self.ct.lookup(self.hashes[i], &m.key),
            }
        };
        let hit = match hit {
            Some(h) if self.ct.flow(h.flow).expires <= now => {
                self.ct.remove(h.flow);
                self.counters.flows_expired += 1;
                None
            }
            h => h,
        };

        if let Some(h) = hit {
            return (self.fast_path(now, from, m, h, seg.as_ref(), frame), Some(h));
        }
        self.slow_path(now, from, m, seg.as_ref(), len)
    }

    #[inline]
    fn fast_path(
        &mut self,
        now: Time,
        from: Side,
        m: &Meta,
        h: Hit,
        seg: Option<&Segment>,
        frame: &mut [u8],
    ) -> Verdict {
        let dir = h.dir as usize;
        let (f, timeouts) = self.ct.flow_and_timeouts(h.flow);
        let (came_from, goes_to) = if dir == 0 { (f.orig_side, f.reply_side) } else { (f.reply_side, f.orig_side) };
        if from != came_from {
            return self.drop(Reason::WrongSide);
        }
        let timeout_before = f.timeout(timeouts);
        if let (ProtoState::Tcp(t), Some(seg)) = (&mut f.state, seg) {
            let was_closed = matches!(t.state, TcpState::Close | TcpState::TimeWait);
            if let Err(r) = t.handle(dir, seg) {
                let reason = match r {
                    Refusal::OutOfWindow => Reason::TcpOutOfWindow,
                    Refusal::RstOutOfWindow => Reason::TcpRstOutOfWindow,
                    Refusal::SynInConnection => Reason::TcpSynInConnection,
                };
                return self.drop(reason);
            }
            if was_closed && t.state == TcpState::SynSent {
                // Reopened: a new connection, unanswered until it is.
                f.answered = false;
            }
        }
        if dir == 1 {
            f.answered = true;
        }
        f.packets[dir] = f.packets[dir].wrapping_add(1);
        f.bytes[dir] += frame.len() as u64;
        let timeout = f.timeout(timeouts);
        f.expires = now + timeout;
        // A packet leaves as the other direction expects to see it: the
        // reverse of the other direction's key.
        let translate = f.translated.then(|| f.keys[1 - dir].reversed());
        if timeout < timeout_before {
            // The wheel is lazy about later deadlines, not earlier ones.
            self.ct.reschedule(h.flow);
        }
        if let Some(out) = translate {
            if wire::nat::translate_v4(frame, m, &out).is_err() {
                return self.drop(Reason::NatUntranslatable);
            }
        }
        self.counters.fast_path += 1;
        Verdict::Forward(goes_to)
    }

    fn slow_path(
        &mut self,
        now: Time,
        from: Side,
        m: &Meta,
        seg: Option<&Segment>,
        len: usize,
    ) -> (Verdict, Option<Hit>) {
        self.counters.slow_path += 1;
        if from == Side::Outside {
            return (self.drop(Reason::UnsolicitedInbound), None);
        }
        let mut picked_up = false;
        let state = match (m.l4, seg) {
            (_, Some(s)) if s.syn && !s.ack => ProtoState::Tcp(TcpTrack::open(s)),
            (_, Some(s)) if self.cfg.tcp_loose && s.ack && !s.rst && !s.syn => {
                picked_up = true;
                ProtoState::Tcp(TcpTrack::pick_up(s))
            }
            (_, Some(_)) => return (self.drop(Reason::TcpNoFlow), None),
            (L4::IcmpEcho { request: false }, _) => return (self.drop(Reason::NewFlowDenied), None),
            // Only echo is tracked: other informational ICMP has no reply to pair.
            (L4::IcmpOther { .. }, _) => return (self.drop(Reason::IcmpNotTracked), None),
            (_, None) => Conntrack::state_for_new(m.key.proto),
        };
        let new = NewFlow {
            keys: [m.key, m.key.reversed()],
            state,
            orig_side: from,
            reply_side: from.other(),
            member: NO_MEMBER,
            binding: NO_BINDING,
        };
        match self.ct.insert(&new, now) {
            Ok((idx, evicted)) => {
                self.counters.flows_created += 1;
                self.counters.flows_evicted += u64::from(evicted);
                self.counters.flows_picked_up += u64::from(picked_up);
                let f = self.ct.flow_mut(idx);
                f.packets[0] = 1;
                f.bytes[0] = len as u64;
                (Verdict::Forward(from.other()), Some(Hit { flow: idx, dir: 0 }))
            }
            Err(_) => (self.drop(Reason::FlowTableFull), None),
        }
    }

    /// An ICMP error passes if it quotes a packet of a tracked flow and
    /// travels back towards that packet's sender.
    fn related(&mut self, now: Time, from: Side, m: &Meta, inner: &wire::FlowKey) -> Verdict {
        let hash = self.ct.hash(inner);
        let Some(h) = self.ct.lookup(hash, inner) else {
            return self.drop(Reason::IcmpErrorNoFlow);
        };
        let f = self.ct.flow(h.flow);
        if f.expires <= now {
            return self.drop(Reason::IcmpErrorNoFlow);
        }
        let sender_side = if h.dir == 0 { f.orig_side } else { f.orig_side.other() };
        if from == sender_side || m.key.dst != inner.src || m.key.family != inner.family {
            return self.drop(Reason::IcmpErrorWrongDirection);
        }
        self.counters.icmp_related += 1;
        Verdict::Forward(sender_side)
    }

    fn fragment(
        &mut self,
        now: Time,
        from: Side,
        m: &Meta,
        frag: wire::classify::Fragment,
        i: usize,
        bytes: &mut [u8],
    ) -> Verdict {
        let key = datagram_key(&m.key, frag.ident);
        let len = m.l3_end.saturating_sub(frag.data_offset);
        let (piece, evicted) = match self.frags.piece(now, key, from, frag, len, m.key.proto == proto::TCP, &m.key) {
            Ok(p) => p,
            Err(r) => {
                self.counters.drops[DropReason::from(r.reason).index()] += u64::from(r.also_dropped);
                return self.drop(r.reason);
            }
        };
        self.counters.drops[DropReason::from(Reason::FragmentTableFull).index()] += u64::from(evicted);
        match piece {
            Piece::Decided(o) => self.apply(o, from, m, bytes),
            Piece::First(e) => {
                let (v, hit) = match m.l4 {
                    L4::IcmpError { inner, .. } => (self.related(now, from, m, &inner), None),
                    _ => self.track(now, from, m, i, bytes),
                };
                let outcome = match v {
                    Verdict::Forward(to) => {
                        Outcome::Forward { to, flow: hit.map(|h| FlowRef { flow: h.flow, dir: h.dir, key: m.key }) }
                    }
                    Verdict::Drop(r) => Outcome::Drop(r),
                    Verdict::Held => Outcome::Pending,
                };
                let dropped = self.frags.decide(e, outcome);
                self.counters.drops[DropReason::from(Reason::FragmentOfDropped).index()] += u64::from(dropped);
                v
            }
            Piece::Undecided(e) => match self.frags.hold(e, bytes) {
                Ok(()) => {
                    self.counters.fragments_held += 1;
                    Verdict::Held
                }
                Err(r) => self.drop(r),
            },
        }
    }

    /// A later fragment of a datagram whose first fragment was decided.
    fn apply(&mut self, o: Outcome, from: Side, m: &Meta, bytes: &mut [u8]) -> Verdict {
        match o {
            Outcome::Forward { to, flow } => match follow(&mut self.ct, flow, from, m, bytes) {
                Ok(()) => Verdict::Forward(to),
                Err(r) => self.drop(r),
            },
            Outcome::Drop(_) => self.drop(Reason::FragmentOfDropped),
            Outcome::Poisoned => self.drop(Reason::FragmentOverlap),
            Outcome::Pending => self.drop(Reason::FragmentTableFull),
        }
    }

    /// Hands out frames the engine held and has now decided to forward.
    pub fn poll_released(&mut self, mut out: impl FnMut(Side, &[u8])) -> usize {
        let Engine { frags, ct, counters, .. } = self;
        frags.poll_released(|from, to, flow, bytes| {
            let verdict = match classify(bytes) {
                Ok(m) => follow(ct, flow, from, &m, bytes),
                Err(_) => Err(Reason::NatUntranslatable),
            };
            match verdict {
                Ok(()) => {
                    counters.fragments_released += 1;
                    counters.tx_packets[to.index()] += 1;
                    counters.tx_bytes[to.index()] += bytes.len() as u64;
                    out(to, bytes)
                }
                Err(r) => counters.drop(r.into()),
            }
        })
    }

    /// Expires flows and fragments due by `now`; bounded work per call.
    /// Returns how many flows expired.
    pub fn poll_timers(&mut self, now: Time) -> usize {
        let now = now.max(self.last_now);
        self.last_now = now;
        let n = self.ct.expire(now, EXPIRE_BUDGET);
        self.counters.flows_expired += n as u64;
        let timed_out = self.frags.expire(now, 64);
        self.counters.drops[DropReason::from(Reason::FragmentTimeout).index()] += timed_out;
        n
    }
}

/// Packets whose own key is looked up in pass 2: everything with a
/// transport key (non-first fragments and ICMP errors are handled apart).
#[inline]
fn lookup_first(m: &Meta) -> bool {
    !matches!(m.l4, L4::IcmpError { .. } | L4::Fragment)
}

/// Accounts a later fragment to the flow its first fragment matched and
/// translates it as that flow is translated.
fn follow(ct: &mut Conntrack, flow: Option<FlowRef>, from: Side, m: &Meta, bytes: &mut [u8]) -> Result<(), Reason> {
    let Some(r) = flow else { return Ok(()) };
    let f = ct.flow_mut(r.flow);
    let dir = r.dir as usize;
    if !f.is_live() || f.keys[dir] != r.key {
        // The flow is gone since the first fragment: the datagram's verdict
        // stands, but there is nothing left to account or translate by.
        return Ok(());
    }
    let came_from = if dir == 0 { f.orig_side } else { f.reply_side };
    if from != came_from {
        return Err(Reason::WrongSide);
    }
    f.packets[dir] = f.packets[dir].wrapping_add(1);
    f.bytes[dir] += bytes.len() as u64;
    if f.translated {
        let out = f.keys[1 - dir].reversed();
        // A later fragment has no transport header: only addresses change.
        let fake = Meta { key: r.key, ..*m };
        wire::nat::translate_v4(bytes, &fake, &out).map_err(|_| Reason::NatUntranslatable)?;
    }
    Ok(())
}
