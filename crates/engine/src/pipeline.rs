//! The per-core pipeline: a batch of frames in, one verdict per frame out.
//!
//! The batch is processed in three passes so that memory latency overlaps
//! (VPP's dual-loop idea, by pass rather than by pair):
//! 1. parse every frame ([`wire::classify::classify`]), hash its flow key and
//!    prefetch the hash bucket;
//! 2. look every key up in the flow index, in two stages a few packets
//!    apart: guess the entry from the bucket's signatures and prefetch its
//!    flow, then confirm the guess against the key and prefetch the state
//!    pass 3 will read about the flow's member (account, shaper state), so
//!    that the dependent misses of a packet (bucket, flow, member) overlap
//!    with other packets' instead of following each other;
//! 3. decide: a known flow takes the fast path (state update, deadline,
//!    counters); the rest take the slow path (policy, new state).
//!
//! Policy today is the classic stateful one: a connection opened from the
//! inside is allowed with its replies, nothing unsolicited from the outside
//! is. ICMP errors pass as related to the flow they quote and never create
//! state. Fragments get their first fragment's verdict ([`crate::frag`]).

use crate::conntrack::{Conntrack, Hit, NewFlow, ProtoState, Timeouts, EXPIRE_BUDGET, NO_BINDING, NO_GUESS, NO_MEMBER};
use crate::counters::{Counters, DropReason, Reason};
use crate::frag::{datagram_key, FlowRef, Fragments, Outcome, Piece};
use crate::members::{Accounts, DOWN, UP};
use crate::nat::{Nat, NatRefusal, Public};
use crate::shaping::{Shaping, ShapingConfig};
use crate::tcp::{Refusal, Segment, TcpState, TcpTrack};
use crate::time::Time;
use crate::{Side, Verdict};
use core::net::IpAddr;
use core::time::Duration;
use policy::{Direction, Policy, Status};
use std::sync::Arc;
use wire::classify::{classify, classify_into, Meta, L4};
use wire::flow::proto;
use wire::tcp::TcpFlags;
use wire::FlowKey;
use wire::FrameBuf;

/// Frames processed per pass; longer batches are taken in chunks of this.
pub const MAX_BATCH: usize = 256;

/// How many packets apart pass 2 guesses a lookup's entry (and fetches its
/// flow) and confirms it (and fetches the member's state).
const LOOKUP_AHEAD: usize = 8;

/// How many frames ahead pass 1 prefetches the headers it parses next: a
/// frame handed over by another core, or written by a NIC, is not in this
/// core's cache, and its first read would stall the parse.
const FRAME_PREFETCH_AHEAD: usize = 4;

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
    /// NAT bindings one member may hold at once (RFC 6888 REQ-4).
    pub nat_quota: u32,
    /// Shape members with a plan (None: nobody is shaped).
    pub shaping: Option<ShapingConfig>,
}

/// The most flows one engine may be configured for: 16 Mi flows, some
/// 4 GiB per worker, far above a campus's peak (~200,000 connections). A
/// larger figure is a typo, and would fail as an allocation after start-up.
pub const MAX_FLOWS: u32 = 1 << 24;

impl Config {
    /// Bytes an engine with `max_flows` allocates up front for its flow
    /// table and NAT (slab, index, timer wheel, bindings and their maps):
    /// what `max_flows` costs, for configuration checks and messages.
    pub fn flow_memory(max_flows: u32) -> u64 {
        let n = u64::from(max_flows.max(1));
        let flows = crate::conntrack::Conntrack::memory_per_flow() as u64;
        // A binding, its free-list slot and its entries in two hash maps
        // (key, value and control byte, at hashbrown's 7/8 load).
        let nat = core::mem::size_of::<crate::nat::Binding>() as u64 + 4 + 2 * (16 + 4 + 1) * 8 / 7;
        n.saturating_mul(flows + nat)
    }
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
            nat_quota: 8192,
            shaping: None,
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
    /// Pass 2's guesses of `hits` ([`Conntrack::guess`]).
    guesses: Box<[u32]>,
    /// The flow table's generation when `hits` were looked up.
    hits_generation: u64,
    /// The member policy; without one, the classic stateful policy applies
    /// (inside may open, outside may answer) and nothing is translated.
    policy: Option<Arc<Policy>>,
    nat: Nat,
    accounts: Accounts,
    /// Next slab index of the sweep that ends flows of ended members, if one runs.
    sweep: Option<u32>,
    /// Counts policy installations: flows remember the epoch they were made
    /// in, members the epoch that ended their flows.
    epoch: u32,
    shaping: Option<Shaping>,
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
            guesses: vec![NO_GUESS; MAX_BATCH].into(),
            hits_generation: 0,
            policy: None,
            nat: Nat::new(cfg.max_flows, cfg.nat_quota, cfg.hash_key),
            accounts: Accounts::new(cfg.hash_key),
            sweep: None,
            epoch: 0,
            shaping: cfg.shaping.as_ref().map(|c| Shaping::new(c, now.0).expect("a valid shaping configuration")),
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

    /// Per-member accounting of this core.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// NAT bindings of this core.
    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// Installs a new policy generation (call between batches). Flows,
    /// bindings and counters stay; the flows of the members in `ended`
    /// (gone, blocked, renumbered: [`policy::Diff::flows_to_end`], computed
    /// by the caller off the packet path) end: at once on their next
    /// packet, and by a bounded sweep of the table in [`Engine::poll_timers`].
    pub fn set_policy(&mut self, new: Arc<Policy>, ended: &[u32]) {
        self.epoch += 1;
        for id in ended {
            if let Some(slot) = self.accounts.slot_of(*id) {
                self.accounts.set_ended(slot, self.epoch);
                self.sweep = Some(0);
            }
        }
        // Forwarded ports are never handed out to members' outbound flows.
        self.nat.clear_reservations();
        for (public, proto, port) in new.forwarded_ports() {
            self.nat.reserve(public, proto, port);
        }
        // A member's first packet makes its account and shaper state: room
        // for every member of the policy is made here, off the packet path,
        // so that never reallocates (capacity only: the memory is touched as
        // members come).
        self.accounts.reserve(new.len());
        if let Some(sh) = &mut self.shaping {
            sh.reserve(new.len());
            // Plans may have changed: queues stay, rates follow.
            for slot in 0..self.accounts.len() as u32 {
                let flags = sh.refresh(self.last_now.0, slot, self.accounts.member_id(slot), &new, &mut self.counters);
                self.accounts.set_shaping(slot, flags);
            }
        }
        self.policy = Some(new);
    }

    /// This core's shapers (upload, download), if shaping is on.
    pub fn shaper_stats(&self) -> Option<[shaper::CoreStats; 2]> {
        self.shaping.as_ref().map(|s| s.stats())
    }

    /// A member's shaping (upload, download) on this core, if it is shaped here.
    pub fn member_shaping(&self, member_id: u32) -> Option<[Option<shaper::MemberStats>; 2]> {
        let slot = self.accounts.slot_of(member_id)?;
        Some(self.shaping.as_ref()?.member_stats(slot, self.last_now.0))
    }

    /// Frames the shapers hold now.
    pub fn shaper_held(&self) -> usize {
        self.shaping.as_ref().map_or(0, |s| s.held())
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
        // Pass 1: parse, hash, prefetch the bucket. The batch arrays are
        // walked with iterators (no bounds check per packet).
        let Engine { metas, parsed, hashes, ct, counters, .. } = self;
        for f in frames.iter().take(FRAME_PREFETCH_AHEAD) {
            prefetch_headers(f.bytes());
        }
        let lanes = metas.iter_mut().zip(parsed.iter_mut()).zip(hashes.iter_mut());
        let ahead = frames.iter().skip(FRAME_PREFETCH_AHEAD).map(Some).chain(core::iter::repeat(None));
        for (((frame, v), ((meta, ok), hash)), next) in frames.iter().zip(verdicts.iter_mut()).zip(lanes).zip(ahead) {
            if let Some(next) = next {
                prefetch_headers(next.bytes());
            }
            let bytes = frame.bytes();
            counters.rx_packets[side] += 1;
            counters.rx_bytes[side] += bytes.len() as u64;
            match classify_into(bytes, meta) {
                Ok(()) => {
                    if lookup_first(meta) {
                        let h = ct.hash(&meta.key);
                        *hash = h;
                        ct.prefetch_bucket(h);
                    }
                    *ok = true;
                }
                Err(e) => {
                    *ok = false;
                    let r = DropReason::Malformed(e);
                    counters.drop(r);
                    *v = Verdict::Drop(r);
                }
            }
        }
        // Pass 2: look up, in two stages LOOKUP_AHEAD packets apart, so that
        // the lookups of a batch wait for memory together: (a) guess the
        // entry from its bucket (prefetched in pass 1) and fetch its flow;
        // (b) confirm the guess against the key (or look up in full), then
        // fetch what pass 3 reads about the flow's member (its account and,
        // when shaping, its shaper state in this direction). With many
        // flows and members none of it is in cache, and each of these was a
        // miss that the packet waited for.
        // Frames from the inside are their members' uploads (a hairpinned
        // frame is both, and its upload is shaped first).
        let dir = if from == Side::Inside { UP } else { DOWN };
        let Engine { metas, parsed, hashes, hits, guesses, ct, accounts, shaping, .. } = self;
        let wanted = |j: usize| parsed[j] && lookup_first(&metas[j]);
        for i in 0..n + LOOKUP_AHEAD {
            if i < n {
                guesses[i] = if wanted(i) { ct.guess(hashes[i]) } else { NO_GUESS };
                if guesses[i] != NO_GUESS {
                    ct.prefetch_guess(guesses[i]);
                }
            }
            let Some(j) = i.checked_sub(LOOKUP_AHEAD) else { continue };
            hits[j] = None;
            if wanted(j) {
                let found = ct.lookup_guessed(hashes[j], &metas[j].key, guesses[j]);
                if let Some(h) = found {
                    let member = ct.flow(h.flow).member;
                    if member != NO_MEMBER {
                        accounts.prefetch(member);
                        if let Some(sh) = shaping {
                            sh.prefetch(member, dir);
                        }
                    }
                }
                hits[j] = found;
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
            self.accounts.last = None;
            let mut v = if let Some(frag) = m.frag {
                self.fragment(now, from, m, frag, i, frames[i].bytes_mut())
            } else if let L4::IcmpError { inner, .. } = &m.l4 {
                self.related(now, from, m, frames[i].bytes_mut(), inner)
            } else {
                self.track(now, from, m, i, frames[i].bytes_mut()).0
            };
            if let (Verdict::Forward(to), Some(sh), Some((slot, dir))) = (v, &mut self.shaping, self.accounts.last) {
                let mut flags = self.accounts.shaping(slot);
                if !Shaping::known(flags) {
                    if let Some(p) = &self.policy {
                        flags = sh.refresh(now.0, slot, self.accounts.member_id(slot), p, &mut self.counters);
                        self.accounts.set_shaping(slot, flags);
                    }
                }
                let dir = usize::from(dir);
                if Shaping::shaped(flags, dir) {
                    let c = &mut self.counters;
                    match sh.offer(now.0, slot, dir, to, frames[i].bytes(), self.hashes[i], m.ecn, c) {
                        None => {}
                        Some(Ok(())) => v = Verdict::Held,
                        Some(Err(r)) => v = self.drop(r),
                    }
                }
            }
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
        self.slow_path(now, from, m, seg.as_ref(), frame)
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
        let f = self.ct.flow(h.flow);
        let (came_from, goes_to) = if dir == 0 { (f.orig_side, f.reply_side) } else { (f.reply_side, f.orig_side) };
        if from != came_from {
            return self.drop(Reason::WrongSide);
        }
        let member = f.member;
        let up = (dir == 0) == (f.orig_side == Side::Inside);
        if member != NO_MEMBER && ended(&self.ct, &self.accounts, h.flow, member) {
            // A reload ended this member's flows (blocked, removed, renumbered).
            self.ct.remove(h.flow);
            return self.drop(Reason::MemberBlocked);
        }
        let (f, timeouts) = self.ct.flow_and_timeouts(h.flow);
        // Only TCP can move to a state with a shorter timeout.
        let mut timeout_before = Duration::ZERO;
        if let (ProtoState::Tcp(t), Some(seg)) = (&mut f.state, seg) {
            timeout_before = timeouts.tcp(t.state);
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
        if member != NO_MEMBER {
            self.accounts.add(member, if up { UP } else { DOWN }, frame.len());
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
        frame: &mut [u8],
    ) -> (Verdict, Option<Hit>) {
        self.counters.slow_path += 1;
        let mut picked_up = false;
        let state = match (m.l4, seg) {
            (_, Some(s)) if s.syn && !s.ack => ProtoState::Tcp(TcpTrack::open(s)),
            // Mid-stream pick-up only for what the inside sends.
            (_, Some(s)) if from == Side::Inside && self.cfg.tcp_loose && s.ack && !s.rst && !s.syn => {
                picked_up = true;
                ProtoState::Tcp(TcpTrack::pick_up(s))
            }
            (_, Some(_)) if from == Side::Outside => return (self.drop(Reason::UnsolicitedInbound), None),
            (_, Some(_)) => return (self.drop(Reason::TcpNoFlow), None),
            (L4::IcmpEcho { request: false }, _) if from == Side::Outside => {
                return (self.drop(Reason::UnsolicitedInbound), None)
            }
            (L4::IcmpEcho { request: false }, _) => return (self.drop(Reason::NewFlowDenied), None),
            // Only echo is tracked: other informational ICMP has no reply to pair.
            (L4::IcmpOther { .. }, _) if from == Side::Outside => return (self.drop(Reason::UnsolicitedInbound), None),
            (L4::IcmpOther { .. }, _) => return (self.drop(Reason::IcmpNotTracked), None),
            (_, None) => Conntrack::state_for_new(m.key.proto),
        };
        let admit = match self.policy.take() {
            Some(p) => {
                let a = self.admit(&p, from, m);
                self.policy = Some(p);
                a
            }
            None if from == Side::Outside => Err(Reason::UnsolicitedInbound),
            None => Ok(Admit { out: m.key, reply_side: Side::Outside, member: None, binding: NO_BINDING }),
        };
        let admit = match admit {
            Ok(a) => a,
            Err(r) => return (self.drop(r), None),
        };
        if admit.out != m.key && wire::nat::translate_v4(frame, m, &admit.out).is_err() {
            self.release_binding(admit.binding);
            return (self.drop(Reason::NatUntranslatable), None);
        }
        let slot = admit.member.map_or(NO_MEMBER, |id| self.accounts.slot(id));
        let new = NewFlow {
            keys: [m.key, admit.out.reversed()],
            state,
            orig_side: from,
            reply_side: admit.reply_side,
            member: slot,
            binding: admit.binding,
            epoch: self.epoch,
        };
        match self.ct.insert(&new, now) {
            Ok((idx, evicted)) => {
                self.counters.flows_created += 1;
                self.counters.flows_evicted += u64::from(evicted);
                self.counters.flows_picked_up += u64::from(picked_up);
                let f = self.ct.flow_mut(idx);
                f.packets[0] = 1;
                f.bytes[0] = frame.len() as u64;
                if slot != NO_MEMBER {
                    self.accounts.add(slot, if from == Side::Inside { UP } else { DOWN }, frame.len());
                }
                (Verdict::Forward(admit.reply_side), Some(Hit { flow: idx, dir: 0 }))
            }
            Err(_) => {
                self.release_binding(admit.binding);
                (self.drop(Reason::FlowTableFull), None)
            }
        }
    }

    fn release_binding(&mut self, b: u32) {
        if b != NO_BINDING {
            self.nat.release(b);
        }
    }

    /// The member policy's answer for a packet that opens a flow: how it
    /// leaves (translated or not), where its replies come from, whose it is.
    fn admit(&mut self, p: &Policy, from: Side, m: &Meta) -> Result<Admit, Reason> {
        let k = &m.key;
        let (src, dst) = (k.src_ip(), k.dst_ip());
        let v4 = k.family == wire::Family::V4;
        if from == Side::Outside {
            if p.blocked(src, dst, Direction::Inbound) {
                return Err(Reason::BlockedAddress);
            }
            let (member, out) = if v4 {
                let fw = p.port_forward(k.dst_v4(), k.proto, k.dst_port).ok_or(Reason::UnsolicitedInbound)?;
                let mut out = *k;
                out.set_dst_v4(fw.internal);
                out.dst_port = fw.port;
                (fw.member, out)
            } else {
                let IpAddr::V6(d6) = dst else { return Err(Reason::UnsolicitedInbound) };
                (p.ipv6_opening(d6, k.proto, k.dst_port).ok_or(Reason::UnsolicitedInbound)?, *k)
            };
            let info = p.member(member);
            if info.status == Status::Blocked {
                return Err(Reason::MemberBlocked);
            }
            return Ok(Admit { out, reply_side: Side::Inside, member: Some(info.id), binding: NO_BINDING });
        }

        // From the inside: whose is it?
        let Some(r) = p.member_of_inside(src) else {
            if p.is_box(src) {
                return Ok(Admit { out: *k, reply_side: Side::Outside, member: None, binding: NO_BINDING });
            }
            return Err(if p.is_internal(src) { Reason::UnregisteredSource } else { Reason::SpoofedSource });
        };
        let info = p.member(r);
        if info.status == Status::Blocked {
            return Err(Reason::MemberBlocked);
        }
        if p.blocked(src, dst, Direction::Outbound) {
            return Err(Reason::BlockedAddress);
        }
        let id = info.id;
        if !v4 {
            return Ok(Admit { out: *k, reply_side: Side::Outside, member: Some(id), binding: NO_BINDING });
        }
        let public = info.public.ok_or(Reason::NoPublicAddress)?;
        let mut out = *k;
        let mut reply_side = Side::Outside;
        // Hairpinning: a member reaching a public address behind this box.
        if let Some(fw) = p.port_forward(k.dst_v4(), k.proto, k.dst_port) {
            if p.member(fw.member).status == Status::Blocked {
                return Err(Reason::MemberBlocked);
            }
            out.set_dst_v4(fw.internal);
            out.dst_port = fw.port;
            reply_side = Side::Inside;
        } else if p.member_of_public(k.dst_v4(), k.dst_port).is_some() {
            return Err(Reason::UnsolicitedInbound);
        }
        out.set_src_v4(public.address);
        let range = Public { addr: public.address, first: public.first_port, last: public.last_port };
        let binding = match m.l4 {
            L4::Tcp { .. } | L4::Udp | L4::IcmpEcho { .. } => {
                let b = self.nat.acquire(id, range, k.proto, k.src_v4(), k.src_port).map_err(|e| match e {
                    NatRefusal::Quota => Reason::NatQuota,
                    NatRefusal::Exhausted => Reason::NatPortsExhausted,
                    NatRefusal::TableFull => Reason::FlowTableFull,
                })?;
                out.src_port = self.nat.binding(b).public_port;
                b
            }
            // No ports to translate: the address alone.
            _ => NO_BINDING,
        };
        Ok(Admit { out, reply_side, member: Some(id), binding })
    }

    /// An ICMP error passes if it quotes a packet of a tracked flow and
    /// travels back towards that packet's sender.
    /// An ICMP error passes if it quotes a packet of a tracked flow, comes
    /// from the side that packet went to, and is addressed to the packet's
    /// source; it goes back to the sender, translated into what the sender
    /// sent if the flow is translated (RFC 5508). It never creates state.
    fn related(&mut self, now: Time, from: Side, m: &Meta, frame: &mut [u8], inner: &FlowKey) -> Verdict {
        // The quoted packet left the box as the reverse of the other
        // direction's key: look that key up.
        let probe = inner.reversed();
        let Some(h) = self.ct.lookup(self.ct.hash(&probe), &probe) else {
            return self.drop(Reason::IcmpErrorNoFlow);
        };
        let f = self.ct.flow(h.flow);
        if f.expires <= now {
            return self.drop(Reason::IcmpErrorNoFlow);
        }
        if f.member != NO_MEMBER && ended(&self.ct, &self.accounts, h.flow, f.member) {
            return self.drop(Reason::MemberBlocked);
        }
        // The direction of the quoted packet.
        let d = 1 - h.dir as usize;
        let (sender_side, went_to) = if d == 0 { (f.orig_side, f.reply_side) } else { (f.reply_side, f.orig_side) };
        if from != went_to || m.key.dst != inner.src || m.key.family != inner.family {
            return self.drop(Reason::IcmpErrorWrongDirection);
        }
        if f.translated {
            let sent = f.keys[d];
            // An error from the far end itself names it as the sender knows it.
            let far_seen = f.keys[1 - d].src;
            let outer_src = if m.key.src == far_seen { sent.dst_v4() } else { m.key.src_v4() };
            if wire::nat::translate_icmp_error_v4(frame, m, (outer_src, sent.src_v4()), &sent).is_err() {
                return self.drop(Reason::NatUntranslatable);
            }
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
                    L4::IcmpError { inner, .. } => (self.related(now, from, m, bytes, &inner), None),
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
            Outcome::Forward { to, flow } => match follow(&mut self.ct, &mut self.accounts, flow, from, m, bytes) {
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
        let Engine { frags, ct, counters, accounts, shaping, .. } = self;
        let mut n = 0;
        if let Some(sh) = shaping {
            let (mut released, mut marked) = (0, 0);
            n += sh.release(&mut released, &mut marked, |to, bytes| {
                counters.tx_packets[to.index()] += 1;
                counters.tx_bytes[to.index()] += bytes.len() as u64;
                out(to, bytes)
            });
            counters.shaper_released += released;
            counters.shaper_ecn_marked += marked;
        }
        n + frags.poll_released(|from, to, flow, bytes| {
            let verdict = match classify(bytes) {
                Ok(m) => follow(ct, accounts, flow, from, &m, bytes),
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

    /// Ends, a bounded slice at a time, the flows of members a reload ended.
    fn sweep_ended(&mut self) {
        let Some(start) = self.sweep else { return };
        let end = (start as usize + EXPIRE_BUDGET).min(self.ct.capacity());
        for i in start..end as u32 {
            let f = self.ct.flow(i);
            if f.is_live() && f.member != NO_MEMBER && ended(&self.ct, &self.accounts, i, f.member) {
                self.ct.remove(i);
                self.counters.flows_ended += 1;
            }
        }
        self.sweep = (end < self.ct.capacity()).then_some(end as u32);
    }

    /// Expires flows and fragments due by `now`; bounded work per call.
    /// Returns how many flows expired.
    pub fn poll_timers(&mut self, now: Time) -> usize {
        let now = now.max(self.last_now);
        self.last_now = now;
        let n = self.ct.expire(now, EXPIRE_BUDGET);
        self.counters.flows_expired += n as u64;
        self.sweep_ended();
        let Engine { ct, nat, .. } = self;
        for (_, b) in ct.take_released() {
            nat.release(b);
        }
        if let Some(sh) = &mut self.shaping {
            sh.poll(now.0, &mut self.counters);
        }
        let timed_out = self.frags.expire(now, 64);
        self.counters.drops[DropReason::from(Reason::FragmentTimeout).index()] += timed_out;
        n
    }
}

/// Brings the first two cache lines of a frame in (Ethernet, IP and
/// transport headers of every frame the classifier reads in full).
#[inline(always)]
fn prefetch_headers(bytes: &[u8]) {
    let p = bytes.as_ptr();
    crate::prefetch(p);
    crate::prefetch(p.wrapping_add(64));
}

/// Packets whose own key is looked up in pass 2: everything with a
/// transport key (non-first fragments and ICMP errors are handled apart).
#[inline]
fn lookup_first(m: &Meta) -> bool {
    !matches!(m.l4, L4::IcmpError { .. } | L4::Fragment)
}

/// Accounts a later fragment to the flow its first fragment matched and
/// translates it as that flow is translated.
fn follow(
    ct: &mut Conntrack,
    accounts: &mut Accounts,
    flow: Option<FlowRef>,
    from: Side,
    m: &Meta,
    bytes: &mut [u8],
) -> Result<(), Reason> {
    let Some(r) = flow else { return Ok(()) };
    let f = ct.flow(r.flow);
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
    let member = f.member;
    if member != NO_MEMBER {
        if ended(ct, accounts, r.flow, member) {
            return Err(Reason::MemberBlocked);
        }
        let up = (dir == 0) == (f.orig_side == Side::Inside);
        accounts.add(member, if up { UP } else { DOWN }, bytes.len());
    }
    let f = ct.flow_mut(r.flow);
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

/// Whether a reload ended flow `flow` of account slot `member`: the member's
/// flows made before the reload that ended them.
#[inline]
fn ended(ct: &Conntrack, accounts: &Accounts, flow: u32, member: u32) -> bool {
    let e = accounts.ended_epoch(member);
    e != 0 && ct.epoch_of(flow) < e
}

/// What policy decided for a flow's first packet.
struct Admit {
    /// The key the packet leaves with (translated or not).
    out: FlowKey,
    reply_side: Side,
    /// The member the flow is accounted to (stable id).
    member: Option<u32>,
    binding: u32,
}
