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
//!    counters); the rest take the slow path (policy, new state); a
//!    forwarded packet of a shaped member then goes through its shaper.
//!
//! Without a member policy the classic stateful policy applies: a
//! connection opened from the inside is allowed with its replies, nothing
//! unsolicited from the outside is. With one, the policy admits each new
//! flow and says how it is translated and whose it is. ICMP errors pass as
//! related to the flow they quote and never create state. Fragments get
//! their first fragment's verdict ([`crate::frag`]).
//!
//! One file a stage, each an `impl Engine` block; what one stage tells the
//! next is passed as a value (a [`Hit`], a `Charge`, an `Admit`):
//! - `batch`: the three passes over a chunk of a batch, and shaping;
//! - `fast`: tracking a packet with a transport key, and the fast path for
//!   known flows;
//! - `admit`: the slow path, where policy admits a new flow (or not);
//! - `related`: ICMP errors, passed as related to the flow they quote;
//! - `fragments`: fragments, which follow their first fragment;
//! - `release`: what the engine hands out or ends between batches
//!   ([`Engine::poll_released`], [`Engine::poll_timers`]).

mod admit;
mod batch;
mod fast;
mod fragments;
mod related;
mod release;
mod standby;

pub use batch::Parsed;
pub use standby::{InstallRefusal, Installed, SyncChange, Synced};

use crate::conntrack::{Conntrack, Hit, Timeouts, NO_GUESS};
use crate::counters::{Counters, DropReason};
use crate::frag::Fragments;
use crate::members::Accounts;
use crate::nat::Nat;
use crate::shaping::{Shaping, ShapingConfig};
use crate::time::Time;
use crate::{Side, Verdict};
use core::time::Duration;
use policy::Policy;
use std::sync::Arc;
use wire::classify::Meta;
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
    /// Take over TCP connections mid-stream (after a restart), as Linux's
    /// `nf_conntrack_tcp_loose`: from the inside, and from the outside where
    /// the policy lets connections in (port forwards, IPv6 openings).
    pub tcp_loose: bool,
    /// Fragmented datagrams tracked at once.
    pub max_datagrams: u32,
    /// Fragments that can be held while their first fragment is missing.
    pub frag_stash: u16,
    pub frag_timeout: Duration,
    /// NAT bindings one member may hold at once (RFC 6888 REQ-4).
    pub nat_quota: u32,
    /// Unassured flows (unanswered, or a TCP handshake not completed) one
    /// member may have open on one side: opened by its devices, or from the
    /// outside to it (port forwards, IPv6 openings). Past it, the oldest
    /// goes ([`crate::conntrack`]).
    pub half_open_per_member: u32,
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
            half_open_per_member: crate::conntrack::HALF_OPEN_PER_MEMBER,
            shaping: None,
        }
    }
}

/// A frame's lane in a chunk of at most [`MAX_BATCH`] frames: below
/// `MAX_BATCH` by its type, so that indexing the per-lane arrays
/// ([`Lanes`], `MAX_BATCH` long) needs no bounds check per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Lane(u8);

const _: () = assert!(MAX_BATCH == u8::MAX as usize + 1, "a Lane (u8) must cover every lane");

impl Lane {
    /// The lanes of a chunk of `n` frames (at most `MAX_BATCH` of them).
    #[inline]
    pub(super) fn first(n: usize) -> impl Iterator<Item = Lane> {
        // `i < MAX_BATCH`, so the cast keeps it.
        (0..n.min(MAX_BATCH)).map(|i| Lane(i as u8))
    }
}

/// One value per lane of a chunk, indexed by [`Lane`] without bounds checks.
#[derive(Debug)]
pub(super) struct Lanes<T>(Box<[T; MAX_BATCH]>);

impl<T: Clone> Lanes<T> {
    fn new(value: T) -> Lanes<T> {
        let all: Box<[T]> = vec![value; MAX_BATCH].into();
        match all.try_into() {
            Ok(lanes) => Lanes(lanes),
            Err(_) => unreachable!("vec! of MAX_BATCH elements"),
        }
    }
}

impl<T> core::ops::Index<Lane> for Lanes<T> {
    type Output = T;
    #[inline]
    fn index(&self, l: Lane) -> &T {
        &self.0[usize::from(l.0)]
    }
}

impl<T> core::ops::IndexMut<Lane> for Lanes<T> {
    #[inline]
    fn index_mut(&mut self, l: Lane) -> &mut T {
        &mut self.0[usize::from(l.0)]
    }
}

impl<T> core::ops::Deref for Lanes<T> {
    type Target = [T; MAX_BATCH];
    fn deref(&self) -> &[T; MAX_BATCH] {
        &self.0
    }
}

impl<T> core::ops::DerefMut for Lanes<T> {
    fn deref_mut(&mut self) -> &mut [T; MAX_BATCH] {
        &mut self.0
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
    parsed: Lanes<bool>,
    hashes: Lanes<u64>,
    hits: Lanes<Option<Hit>>,
    /// Pass 2's guesses of `hits` ([`Conntrack::guess`]).
    guesses: Lanes<u32>,
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
    /// The change log's second buffer ([`Engine::take_changes`]).
    changes: Vec<crate::conntrack::Change>,
}

impl Engine {
    pub fn new(cfg: Config, now: Time) -> Engine {
        let mut ct = Conntrack::new(cfg.max_flows, cfg.hash_key, cfg.timeouts, now);
        ct.set_half_open(cfg.half_open_per_member);
        Engine {
            ct,
            frags: Fragments::new(cfg.max_datagrams, cfg.frag_stash, cfg.frag_timeout, cfg.hash_key, now),
            counters: Counters::default(),
            last_now: now,
            metas: vec![Meta::EMPTY; MAX_BATCH].into(),
            parsed: Lanes::new(false),
            hashes: Lanes::new(0),
            hits: Lanes::new(None),
            guesses: Lanes::new(NO_GUESS),
            hits_generation: 0,
            policy: None,
            nat: Nat::new(cfg.max_flows, cfg.nat_quota, cfg.hash_key),
            accounts: Accounts::new(cfg.hash_key),
            sweep: None,
            epoch: 0,
            shaping: cfg.shaping.as_ref().map(|c| Shaping::new(c, now.0).expect("a valid shaping configuration")),
            changes: Vec::new(),
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
        self.ct.reserve_queues(self.accounts.len() + new.len());
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
        let sh = self.shaping.as_ref()?;
        let slot = self.accounts.slot_of(member_id)?;
        Some(sh.member_stats(slot, self.last_now.0))
    }

    /// `(member id, shaping)` of every member shaped on this core in
    /// either direction: a walk of the accounts by slot (no lookup by id
    /// per member), and none at all when shaping is off.
    pub fn shaped_members(&self) -> impl Iterator<Item = (u32, [Option<shaper::MemberStats>; 2])> + '_ {
        let now = self.last_now.0;
        let sh = self.shaping.as_ref();
        let accounts = if sh.is_some() { self.accounts.len() } else { 0 };
        (0..accounts as u32).filter_map(move |slot| {
            let s = sh?.member_stats(slot, now);
            (s[0].is_some() || s[1].is_some()).then(|| (self.accounts.member_id(slot), s))
        })
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

    /// [`process`](Self::process) for frames the caller has parsed
    /// already, into `parsed` (lane `i` is frame `i`'s; see [`Parsed`]).
    /// The outcome is the same as `process`'s on the same frames.
    pub fn process_parsed<F: FrameBuf>(
        &mut self,
        now: Time,
        from: Side,
        frames: &mut [F],
        verdicts: &mut [Verdict],
        parsed: &Parsed,
    ) {
        assert!(verdicts.len() >= frames.len(), "one verdict slot per frame");
        assert!(frames.len() <= parsed.capacity(), "one parse per frame");
        let now = now.max(self.last_now);
        self.last_now = now;
        let lanes = parsed.chunks(frames.len(), MAX_BATCH);
        let chunks = frames.chunks_mut(MAX_BATCH).zip(verdicts.chunks_mut(MAX_BATCH));
        for ((f, v), (metas, results)) in chunks.zip(lanes) {
            self.process_parsed_chunk(now, from, f, v, metas, results);
        }
    }

    #[inline]
    fn drop(&mut self, r: impl Into<DropReason>) -> Verdict {
        let r = r.into();
        self.counters.drop(r);
        Verdict::Drop(r)
    }
}

/// The account a packet was charged to, and in which of the member's
/// directions ([`crate::members::UP`] or `DOWN`): what tracking tells
/// shaping about a packet it forwards on a member's flow.
#[derive(Clone, Copy, Debug)]
struct Charge {
    account: u32,
    dir: usize,
}

/// Charges `bytes` to account slot `account` in the member's direction
/// `up` (from the member) or down: the one place a forwarded packet is
/// counted to a member. `None` for a flow of no member.
#[inline]
fn charge(accounts: &mut Accounts, account: u32, up: bool, bytes: usize) -> Option<Charge> {
    if account == crate::conntrack::NO_ACCOUNT {
        return None;
    }
    let dir = if up { crate::members::UP } else { crate::members::DOWN };
    accounts.add(account, dir, bytes);
    Some(Charge { account, dir })
}

/// Whether a reload ended flow `flow` of account slot `account`: the
/// member's flows made before the reload that ended them.
#[inline]
fn ended(ct: &Conntrack, accounts: &Accounts, flow: u32, account: u32) -> bool {
    let e = accounts.ended_epoch(account);
    e != 0 && ct.epoch_of(flow) < e
}
