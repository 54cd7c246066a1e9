//! The flow table: every connection the engine tracks, with its state and deadline.
//!
//! A [`Flow`] lives in a fixed slab of `max_flows` entries and is found
//! through the [`FlowIndex`](crate::table::FlowIndex) under both of its
//! keys: the original direction's (as the opener sent it) and the reply
//! direction's (as the answers arrive). Today the reply key is the reverse
//! of the original; with NAT it is the reverse of the *translated* original,
//! which is why both are stored rather than derived.
//!
//! Bounds and their consequences:
//! * At most `max_flows` flows. When full, a new flow may evict a flow that
//!   is not [assured](Flow::assured) (never answered: a scan's probes; a
//!   TCP handshake not completed: a SYN flood's half-open entries, answered
//!   or not) from among its hash neighbours: a bounded, random sample, like
//!   Linux's early drop. Assured flows are never evicted for new ones;
//!   if no candidate exists, the new flow is refused and counted. Of a few
//!   candidates the oldest goes, so a young handshake outlives a flood.
//! * At most `half_open` unassured flows per member and per side that
//!   opened them (its devices' flows; flows to it from the outside: port
//!   forwards, IPv6 openings), on this core. They wait in a queue, oldest
//!   first; a new one past the limit pushes out the oldest. A SYN flood at
//!   one member's forward (or from one member) therefore holds a bounded
//!   part of the table however fast it comes, and a legitimate handshake
//!   survives it as long as it completes within `half_open / rate` (a
//!   syncache's bucket limit). Flows of no member are not queued.
//! * Expiry is the [`Wheel`](crate::wheel::Wheel)'s job, with a budget per
//!   call; a lookup that meets a flow past its deadline frees it on the spot.

use crate::rtt;
use crate::table::{FlowIndex, Hasher, Slot};
use crate::tcp::{TcpState, TcpTrack};
use crate::time::Time;
use crate::wheel::{Due, Wheel};
use crate::Side;
use core::time::Duration;
use wire::flow::proto;
use wire::FlowKey;

/// Per-state idle timeouts, as Linux conntrack's sysctls (`nf_conntrack_*_timeout_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    /// The one operators tune: 12 h in the network torwart replaces (Linux: 5 days).
    pub tcp_established: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_last_ack: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    /// UDP flow seen in one direction only.
    pub udp_unreplied: Duration,
    /// UDP flow with traffic both ways.
    pub udp_stream: Duration,
    pub icmp: Duration,
    /// Any other protocol (GRE, ESP, ...).
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(12 * 3600),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp_unreplied: s(30),
            udp_stream: s(120),
            icmp: s(30),
            other: s(600),
        }
    }
}

impl Timeouts {
    pub fn tcp(&self, s: TcpState) -> Duration {
        match s {
            TcpState::SynSent => self.tcp_syn_sent,
            TcpState::SynRecv => self.tcp_syn_recv,
            TcpState::Established => self.tcp_established,
            TcpState::FinWait => self.tcp_fin_wait,
            TcpState::CloseWait => self.tcp_close_wait,
            TcpState::LastAck => self.tcp_last_ack,
            TcpState::TimeWait => self.tcp_time_wait,
            TcpState::Close => self.tcp_close,
        }
    }

    /// The longest timeout: what the wheel may have to hold.
    pub fn longest(&self) -> Duration {
        [
            self.tcp_syn_sent,
            self.tcp_syn_recv,
            self.tcp_established,
            self.tcp_fin_wait,
            self.tcp_close_wait,
            self.tcp_last_ack,
            self.tcp_time_wait,
            self.tcp_close,
            self.udp_unreplied,
            self.udp_stream,
            self.icmp,
            self.other,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

/// Protocol-specific tracking state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoState {
    Tcp(TcpTrack),
    Udp,
    Icmp,
    Other,
}

/// One tracked connection: exactly three cache lines, the first two read
/// by every packet (keys, deadline, state), the third by accounting.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub struct Flow {
    /// `[original, reply]`: the key of each direction as it arrives.
    pub keys: [FlowKey; 2],
    pub expires: Time,
    pub state: ProtoState,
    /// Packets have been seen in both directions.
    pub answered: bool,
    /// The side the original direction came from.
    pub orig_side: Side,
    /// The side the reply direction comes from (the inside too, for a
    /// member reaching another member's public address: hairpinning).
    pub reply_side: Side,
    /// The reply key is not the reverse of the original: packets are
    /// translated (NAT) on the way through.
    pub translated: bool,
    live: bool,
    /// Installed from the other box of a pair and not touched here since:
    /// its changes and its end are the other box's to report, not ours.
    pub synced: bool,
    /// In its owner's queue of unassured flows ([`Conntrack::settle`]).
    queued: bool,
    /// The account slot ([`crate::members::Accounts`]) of the member the
    /// flow is accounted to ([`NO_ACCOUNT`] if none).
    pub account: u32,
    /// The NAT binding the flow holds ([`NO_BINDING`] if none).
    pub binding: u32,
    /// Packets per direction (wrapping: a statistic, not an account).
    pub packets: [u32; 2],
    pub bytes: [u64; 2],
    /// When the handshake segment the next round-trip sample is measured
    /// from passed (the SYN, then the SYN-ACK), or [`rtt::UNTIMED`]. In
    /// what was the third line's padding: it costs a flow no memory, and
    /// the packet path has that line in cache ([`crate::rtt`]).
    pub handshake_at: Time,
    /// A translated flow's checksum changes per direction: from the key a
    /// packet arrives with (`keys[d]`) to the one it leaves with (the
    /// reverse of `keys[1 - d]`), worked out when the flow is made instead
    /// of per packet; zero for a flow that is not translated.
    pub nat_sums: [wire::nat::Sums; 2],
}

impl Flow {
    /// Worth keeping when the table is full: answered, and for TCP past the
    /// handshake (Linux's `IPS_ASSURED`). A SYN flood at a server that
    /// answers (a port forward) makes half-open flows that are answered;
    /// they stay evictable, so the flood cannot hold the table.
    #[inline]
    pub fn assured(&self) -> bool {
        assured(self.answered, &self.state)
    }

    /// Its place in its owner's queue of unassured flows is out of date:
    /// [`Conntrack::settle`] it.
    #[inline]
    pub fn needs_settle(&self) -> bool {
        self.account != NO_ACCOUNT && self.queued == self.assured()
    }
}

/// [`Flow::nat_sums`] of a flow with `keys`, [`Flow::translated`] or not.
fn nat_sums(keys: &[FlowKey; 2], translated: bool) -> [wire::nat::Sums; 2] {
    if !translated || keys[0].family != wire::flow::Family::V4 {
        return [wire::nat::Sums::default(); 2];
    }
    [wire::nat::Sums::between(&keys[0], &keys[1].reversed()), wire::nat::Sums::between(&keys[1], &keys[0].reversed())]
}

/// [`Flow::assured`] of a flow `answered` in `state`: for TCP, once its
/// handshake completed. A handshake refused with a RST (a server behind a
/// forward answering a spoofed SYN flood that way) is answered and closed,
/// never established: evictable, and in its owner's queue until it ends.
#[inline]
fn assured(answered: bool, state: &ProtoState) -> bool {
    answered && !matches!(state, ProtoState::Tcp(t) if !t.established())
}

/// Eviction candidates a new flow compares when the table is full
/// (`Conntrack::evict_near`).
pub const EVICTION_SAMPLE: usize = 4;

/// Unassured flows one member may have open on one side, on one core, by
/// default (`Conntrack::new`'s `half_open`).
pub const HALF_OPEN_PER_MEMBER: u32 = 4096;

/// Not in any queue of unassured flows (and the end of one).
const NIL: u32 = u32::MAX;

/// One owner's unassured flows, oldest first: a list threaded through
/// [`Cold::queue`].
#[derive(Clone, Copy, Debug)]
struct Queue {
    head: u32,
    tail: u32,
    len: u32,
}

impl Queue {
    const EMPTY: Queue = Queue { head: NIL, tail: NIL, len: 0 };
}

/// The queue of an account's flows opened from `side`.
#[inline]
fn queue_of(account: u32, side: Side) -> usize {
    account as usize * 2 + side.index()
}

/// [`Conntrack::guess`] found no entry.
pub const NO_GUESS: u32 = crate::table::EMPTY_VALUE;

/// [`Flow::account`] of a flow that belongs to no member (infrastructure).
pub const NO_ACCOUNT: u32 = u32::MAX;
/// [`Flow::binding`] of a flow without NAT.
pub const NO_BINDING: u32 = u32::MAX;

/// What the packet path never reads about a flow, kept apart so that
/// [`Flow`] stays three cache lines.
#[derive(Clone, Copy, Debug)]
struct Cold {
    created: Time,
    /// The engine's policy epoch when the flow was made ([`NewFlow::epoch`]).
    epoch: u32,
    /// Where the two keys sit in the index, for removal.
    slots: [Slot; 2],
    /// The other box's resync a synced flow was last named in.
    resync: u32,
    /// `[previous, next]` in its owner's queue of unassured flows, when
    /// [`Flow::queued`].
    queue: [u32; 2],
}

/// A change to report to the other box of a pair ([`Conntrack::log_changes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Flow `i` was first answered, established (TCP), passed here first
    /// after the other box made it, or outlived a timeout (its copy on the
    /// other box must not expire first).
    Flow(u32),
    /// An answered flow ended; its original key and account slot.
    Ended { key: FlowKey, account: u32 },
}

/// Changes held between two [`Conntrack::take_changes`]; fixed capacity.
#[derive(Debug)]
struct ChangeLog {
    changes: Vec<Change>,
    /// Changes that did not fit since the last take.
    lost: u64,
}

impl ChangeLog {
    #[inline]
    fn push(&mut self, c: Change) {
        if self.changes.len() < self.changes.capacity() {
            self.changes.push(c);
        } else {
            self.lost += 1;
        }
    }
}

impl Flow {
    /// The idle timeout this flow's state calls for.
    pub fn timeout(&self, t: &Timeouts) -> Duration {
        match &self.state {
            ProtoState::Tcp(tcp) => t.tcp(tcp.state),
            ProtoState::Udp if self.answered => t.udp_stream,
            ProtoState::Udp => t.udp_unreplied,
            ProtoState::Icmp => t.icmp,
            ProtoState::Other => t.other,
        }
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    /// A short state name for listings.
    pub fn state_name(&self) -> &'static str {
        match &self.state {
            ProtoState::Tcp(t) => t.state.name(),
            ProtoState::Udp | ProtoState::Icmp | ProtoState::Other if self.answered => ANSWERED,
            _ => UNANSWERED,
        }
    }

    /// Every name [`Flow::state_name`] gives: TCP's in [`TcpState::ALL`]'s
    /// order, then [`ANSWERED`] and [`UNANSWERED`].
    pub fn state_names() -> impl Iterator<Item = &'static str> {
        TcpState::ALL.iter().map(|s| s.name()).chain([ANSWERED, UNANSWERED])
    }
}

/// [`Flow::state_name`] of a flow without a state machine of its own (UDP,
/// ICMP, other) that has seen packets both ways.
pub const ANSWERED: &str = "answered";
/// [`Flow::state_name`] of such a flow that has not.
pub const UNANSWERED: &str = "unanswered";

/// What a new flow is made of.
#[derive(Clone, Copy, Debug)]
pub struct NewFlow {
    /// `[original, reply]` keys as each direction arrives.
    pub keys: [FlowKey; 2],
    pub state: ProtoState,
    pub orig_side: Side,
    pub reply_side: Side,
    /// The account slot of the flow's member ([`Flow::account`]).
    pub account: u32,
    pub binding: u32,
    /// The owner's policy epoch now: a reload that ends the member's flows
    /// ends those made before it, not after.
    pub epoch: u32,
    /// Installed from the other box of a pair (not reported back to it).
    pub synced: bool,
    /// Answered already (a flow installed from the other box of a pair).
    pub answered: bool,
}

/// A new flow could not be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

/// Result of a lookup: the flow and the direction the key matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub flow: u32,
    /// 0: original direction, 1: reply direction.
    pub dir: u8,
}

#[derive(Debug)]
pub struct Conntrack {
    flows: Vec<Flow>,
    cold: Vec<Cold>,
    free: Vec<u32>,
    index: FlowIndex,
    wheel: Wheel,
    hasher: Hasher,
    pub timeouts: Timeouts,
    /// Reused by [`Conntrack::expire`]: no allocation per timer pass.
    expired: Vec<u32>,
    /// Bumped by every insert and removal: a lookup result taken at an
    /// unchanged generation is still valid without comparing keys again.
    generation: u64,
    /// NAT bindings of flows removed since the owner last looked
    /// ([`Conntrack::take_released`]): the NAT is the engine's, not ours.
    released: Vec<(u32, u32)>,
    /// What to tell the other box of a pair, if there is one.
    log: Option<ChangeLog>,
    /// Unassured flows by owner ([`queue_of`]); grows with the accounts.
    queues: Vec<Queue>,
    /// Most flows in one queue ([`HALF_OPEN_PER_MEMBER`]).
    half_open: u32,
}

/// How many flows one timer pass may look at.
pub const EXPIRE_BUDGET: usize = 4096;

/// What [`Conntrack::insert`] pushed out to make room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Unassured flows evicted because the table (or the new flow's
    /// buckets) was full.
    pub table: u32,
    /// The owner's oldest unassured flow, because the owner had `half_open`.
    pub half_open: u32,
}

impl Conntrack {
    pub fn new(max_flows: u32, hash_key: [u64; 4], timeouts: Timeouts, now: Time) -> Conntrack {
        let n = max_flows.max(1) as usize;
        let blank = Flow {
            keys: [FlowKey::v4([0; 4].into(), [0; 4].into(), 0, 0, 0); 2],
            expires: Time::ZERO,
            state: ProtoState::Other,
            answered: false,
            orig_side: Side::Inside,
            reply_side: Side::Outside,
            translated: false,
            live: false,
            synced: false,
            queued: false,
            account: NO_ACCOUNT,
            binding: NO_BINDING,
            packets: [0; 2],
            bytes: [0; 2],
            handshake_at: rtt::UNTIMED,
            nat_sums: [wire::nat::Sums::default(); 2],
        };
        Conntrack {
            flows: vec![blank; n],
            cold: vec![
                Cold {
                    created: Time::ZERO,
                    epoch: 0,
                    slots: [FlowIndex::NO_SLOT; 2],
                    resync: 0,
                    queue: [NIL; 2]
                };
                n
            ],
            free: (0..n as u32).rev().collect(),
            index: FlowIndex::with_capacity(2 * n),
            wheel: Wheel::new(n, Duration::from_millis(250), now),
            hasher: Hasher::new(hash_key),
            timeouts,
            expired: Vec::with_capacity(EXPIRE_BUDGET),
            generation: 0,
            released: Vec::with_capacity(EXPIRE_BUDGET + 4 * crate::MAX_BATCH),
            log: None,
            queues: Vec::new(),
            half_open: HALF_OPEN_PER_MEMBER,
        }
    }

    /// Sets the most unassured flows one member may have open on one side
    /// (at least 1).
    pub fn set_half_open(&mut self, n: u32) {
        self.half_open = n.max(1);
    }

    /// Makes room for the queues of `accounts` account slots, so that a
    /// member's first flow does not allocate (the control path calls this
    /// with the accounts' reserve).
    pub fn reserve_queues(&mut self, accounts: usize) {
        let want = accounts.saturating_mul(2);
        self.queues.reserve(want.saturating_sub(self.queues.len()));
    }

    /// Unassured flows account `account` has open from `side`.
    pub fn half_open_of(&self, account: u32, side: Side) -> u32 {
        self.queues.get(queue_of(account, side)).map_or(0, |q| q.len)
    }

    /// Starts keeping a log of changes for the other box of a pair, at most
    /// `capacity` between two [`take_changes`](Self::take_changes).
    pub fn log_changes(&mut self, capacity: usize) {
        self.log = Some(ChangeLog { changes: Vec::with_capacity(capacity.max(1)), lost: 0 });
    }

    #[inline]
    pub fn logs_changes(&self) -> bool {
        self.log.is_some()
    }

    /// Flow `i` changed in a way the other box must hear of (state,
    /// answered, or the first packet here of a flow installed from it).
    #[inline]
    pub fn touched(&mut self, i: u32) {
        self.flows[i as usize].synced = false;
        if let Some(log) = &mut self.log {
            log.push(Change::Flow(i));
        }
    }

    /// Swaps the changes since the last call (in order) into `into`, which
    /// must be empty, and gives the log `into`'s buffer: no allocation if
    /// both have the log's capacity. Returns how many changes did not fit.
    pub fn swap_changes(&mut self, into: &mut Vec<Change>) -> u64 {
        debug_assert!(into.is_empty());
        match &mut self.log {
            Some(log) => {
                core::mem::swap(&mut log.changes, into);
                core::mem::take(&mut log.lost)
            }
            None => 0,
        }
    }

    /// The resync flow `i` was last named in ([`Conntrack::name_in_resync`]).
    pub fn resync_of(&self, i: u32) -> u32 {
        self.cold[i as usize].resync
    }

    pub fn name_in_resync(&mut self, i: u32, resync: u32) {
        self.cold[i as usize].resync = resync;
    }

    pub fn len(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    /// Changes whenever a flow is added or removed.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.flows.len()
    }

    /// Bytes a table allocates per flow of its capacity (slab, free list,
    /// wheel, and the index at its load of two slots per flow), rounded up.
    pub fn memory_per_flow() -> usize {
        core::mem::size_of::<Flow>() + core::mem::size_of::<Cold>() + 4 + 16 + FlowIndex::memory_per_entry() * 2
    }

    /// Bytes of memory the table holds (slab, index, wheel).
    pub fn memory(&self) -> usize {
        self.flows.len() * (core::mem::size_of::<Flow>() + core::mem::size_of::<Cold>() + 16) + self.index.memory()
    }

    #[inline]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        self.hasher.hash(k)
    }

    #[inline]
    pub fn prefetch_bucket(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// The index entry [`Conntrack::lookup`] would check first for `hash`
    /// (flow and direction, as the index stores them), read from the bucket
    /// alone; [`NO_GUESS`] if there is none. Prefetch it with
    /// [`Conntrack::prefetch_guess`], confirm it with [`Conntrack::lookup_guessed`].
    #[inline]
    pub fn guess(&self, hash: u64) -> u32 {
        self.index.guess(hash)
    }

    /// Fetches the flow of a guess (all three lines: the key that confirms
    /// it, then what the packet path reads).
    #[inline]
    pub fn prefetch_guess(&self, guess: u32) {
        if let Some(f) = self.flows.get((guess >> 1) as usize) {
            let p = (f as *const Flow).cast::<u8>();
            crate::prefetch(f);
            crate::prefetch(p.wrapping_add(64));
            crate::prefetch(p.wrapping_add(128));
        }
    }

    /// Fetches the flow that the `nth` next insert will take (0: the next),
    /// so that a batch's new flows are on their way before it makes them.
    #[inline]
    pub fn prefetch_free(&self, nth: usize) {
        let Some(&i) = self.free.len().checked_sub(nth + 1).and_then(|at| self.free.get(at)) else { return };
        if let Some(f) = self.flows.get(i as usize) {
            let p = (f as *const Flow).cast::<u8>();
            crate::prefetch(f);
            crate::prefetch(p.wrapping_add(64));
            crate::prefetch(p.wrapping_add(128));
            crate::prefetch(&self.cold[i as usize]);
        }
    }

    /// [`Conntrack::lookup`], given the [`Conntrack::guess`] taken for the same
    /// hash with the table unchanged since: the guess is the entry the lookup
    /// checks first, so when its key matches it is the answer.
    #[inline]
    pub fn lookup_guessed(&self, hash: u64, key: &FlowKey, guess: u32) -> Option<Hit> {
        if guess != NO_GUESS {
            if let Some(f) = self.flows.get((guess >> 1) as usize) {
                if f.keys[(guess & 1) as usize] == *key {
                    return Some(Hit { flow: guess >> 1, dir: (guess & 1) as u8 });
                }
            }
        }
        self.lookup(hash, key)
    }

    /// Finds the flow one of whose keys is `key` (hashed as `hash`).
    #[inline]
    pub fn lookup(&self, hash: u64, key: &FlowKey) -> Option<Hit> {
        let flows = &self.flows;
        self.index
            .find(hash, |v| flows[(v >> 1) as usize].keys[(v & 1) as usize] == *key)
            .map(|(v, _)| Hit { flow: v >> 1, dir: (v & 1) as u8 })
    }

    #[inline]
    pub fn flow(&self, i: u32) -> &Flow {
        &self.flows[i as usize]
    }

    #[inline]
    pub fn flow_mut(&mut self, i: u32) -> &mut Flow {
        &mut self.flows[i as usize]
    }

    /// Stores a new flow under both keys, pushing out its owner's oldest
    /// unassured flow if the owner has `half_open` already, and an
    /// unassured neighbour if that is the only way to make room. What was
    /// evicted is reported whether or not the flow could be stored.
    pub fn insert(&mut self, new: &NewFlow, now: Time) -> (Result<u32, TableFull>, Evicted) {
        let mut evicted = Evicted::default();
        let stored = self.insert_counted(new, now, &mut evicted);
        (stored, evicted)
    }

    fn insert_counted(&mut self, new: &NewFlow, now: Time, evicted: &mut Evicted) -> Result<u32, TableFull> {
        let keys = new.keys;
        let hashes = [self.hasher.hash(&keys[0]), self.hasher.hash(&keys[1])];
        if new.account != NO_ACCOUNT && !assured(new.answered, &new.state) {
            evicted.half_open += self.make_half_open_room(queue_of(new.account, new.orig_side));
        }
        if self.free.is_empty() {
            self.evict_near(&hashes, u32::MAX, now)?;
            evicted.table += 1;
        }
        let i = self.free.pop().ok_or(TableFull)?;
        let mut slots = [FlowIndex::NO_SLOT; 2];
        for d in 0..2 {
            let val = i << 1 | d as u32;
            let mut slot = self.index.insert(hashes[d], val);
            if slot.is_none() && self.evict_near(&[hashes[d]], i, now).is_ok() {
                // Room was made in exactly the buckets this key probes.
                evicted.table += 1;
                slot = self.index.insert(hashes[d], val);
            }
            match slot {
                Some(s) => slots[d] = s,
                None => {
                    if d == 1 {
                        self.index.remove(hashes[0], slots[0]);
                    }
                    self.free.push(i);
                    return Err(TableFull);
                }
            }
        }
        let [slot0, slot1] = slots;
        let translated = keys[1] != keys[0].reversed();
        let f = &mut self.flows[i as usize];
        *f = Flow {
            keys,
            expires: now,
            state: new.state,
            answered: new.answered,
            orig_side: new.orig_side,
            reply_side: new.reply_side,
            translated,
            live: true,
            synced: new.synced,
            queued: false,
            account: new.account,
            binding: new.binding,
            packets: [0; 2],
            bytes: [0; 2],
            // The slow path times the handshakes it sees open.
            handshake_at: rtt::UNTIMED,
            nat_sums: nat_sums(&keys, translated),
        };
        self.cold[i as usize] =
            Cold { created: now, epoch: new.epoch, slots: [slot0, slot1], resync: 0, queue: [NIL; 2] };
        f.expires = now + f.timeout(&self.timeouts);
        self.wheel.insert(i, f.expires);
        self.generation += 1;
        // Room was made above: nothing more to evict.
        evicted.half_open += self.settle(i);
        Ok(i)
    }

    /// Evicts the oldest flow of queue `q` if it holds `half_open` (so a
    /// flow may join it); returns how many were evicted.
    fn make_half_open_room(&mut self, q: usize) -> u32 {
        if q >= self.queues.len() {
            // A member's first flow on this core (reserved: no allocation).
            self.queues.resize(q + 2, Queue::EMPTY);
        }
        if self.queues[q].len < self.half_open {
            return 0;
        }
        self.remove(self.queues[q].head);
        1
    }

    /// Puts flow `i` in its owner's queue of unassured flows, or takes it
    /// out, as [`Flow::assured`] now says. Call after every change to a
    /// flow's state or [`Flow::answered`] (the packet path does when
    /// [`Flow::needs_settle`]). A flow that joins a full queue (a TCP
    /// connection opened again on its 4-tuple) pushes out the oldest:
    /// returns how many flows that evicted (their NAT bindings wait in
    /// [`Self::take_released`]).
    #[must_use]
    pub fn settle(&mut self, i: u32) -> u32 {
        let f = &self.flows[i as usize];
        if f.account == NO_ACCOUNT || !f.live || f.queued != f.assured() {
            return 0;
        }
        let q = queue_of(f.account, f.orig_side);
        if f.queued {
            self.unqueue(i);
            return 0;
        }
        let evicted = self.make_half_open_room(q);
        let queue = &mut self.queues[q];
        self.cold[i as usize].queue = [queue.tail, NIL];
        match queue.tail {
            NIL => queue.head = i,
            t => self.cold[t as usize].queue[1] = i,
        }
        queue.tail = i;
        queue.len += 1;
        self.flows[i as usize].queued = true;
        evicted
    }

    /// Takes queued flow `i` out of its owner's queue.
    fn unqueue(&mut self, i: u32) {
        let f = &mut self.flows[i as usize];
        f.queued = false;
        let queue = &mut self.queues[queue_of(f.account, f.orig_side)];
        let [prev, next] = core::mem::replace(&mut self.cold[i as usize].queue, [NIL; 2]);
        match prev {
            NIL => queue.head = next,
            p => self.cold[p as usize].queue[1] = next,
        }
        match next {
            NIL => queue.tail = prev,
            n => self.cold[n as usize].queue[0] = prev,
        }
        queue.len -= 1;
    }

    /// Moves flow `i`'s timer to its (earlier) deadline. Needed only when
    /// a deadline moves *earlier* (a state with a shorter timeout): later
    /// deadlines are found lazily when the old timer fires.
    pub fn reschedule(&mut self, i: u32) {
        self.wheel.remove(i);
        self.wheel.insert(i, self.flows[i as usize].expires);
    }

    /// Evicts an unassured (or expired) flow among the entries the given
    /// hashes probe (never `except`), or fails if none is. Of the first
    /// [`EVICTION_SAMPLE`] candidates the one closest to its deadline goes
    /// (an expired one at once): under a flood nearly every entry is a
    /// candidate, and taking the first, as Linux's early drop does, would
    /// evict a legitimate handshake as readily as the flood's oldest entry
    /// (docs/reliability.md). A few candidates, not all: each costs a cache
    /// miss, paid only while the table is full.
    fn evict_near(&mut self, hashes: &[u64], except: u32, now: Time) -> Result<(), TableFull> {
        let flows = &self.flows;
        let mut victim: Option<(Time, u32)> = None;
        let mut sampled = 0;
        for i in hashes.iter().flat_map(|h| self.index.neighbours(*h)).map(|v| v >> 1) {
            let f = &flows[i as usize];
            if i == except || (f.assured() && f.expires > now) {
                continue;
            }
            if f.expires <= now {
                victim = Some((f.expires, i));
                break;
            }
            if victim.is_none_or(|(e, _)| f.expires < e) {
                victim = Some((f.expires, i));
            }
            sampled += 1;
            if sampled == EVICTION_SAMPLE {
                break;
            }
        }
        match victim {
            Some((_, i)) => {
                self.remove(i);
                Ok(())
            }
            None => Err(TableFull),
        }
    }

    /// Frees flow `i` now (expired, closed, evicted).
    pub fn remove(&mut self, i: u32) {
        if self.flows[i as usize].queued {
            self.unqueue(i);
        }
        let f = &mut self.flows[i as usize];
        if !f.live {
            return;
        }
        f.live = false;
        self.generation += 1;
        // Only what the other box was told of: answered flows.
        if let (Some(log), false, true) = (&mut self.log, f.synced, f.answered) {
            log.push(Change::Ended { key: f.keys[0], account: f.account });
        }
        if f.binding != NO_BINDING {
            self.released.push((f.account, f.binding));
        }
        let keys = f.keys;
        let slots = self.cold[i as usize].slots;
        for d in 0..2 {
            self.index.remove(self.hasher.hash(&keys[d]), slots[d]);
        }
        self.wheel.remove(i);
        self.free.push(i);
    }

    /// Expires flows whose deadline has passed, at most `budget` looked at.
    /// Returns how many expired.
    pub fn expire(&mut self, now: Time, budget: usize) -> usize {
        let mut gone = core::mem::take(&mut self.expired);
        gone.clear();
        let flows = &self.flows;
        let log = &mut self.log;
        // The wheel decides; removal from the index happens after, so the
        // closure does not need the whole table mutably.
        self.wheel.advance(now, budget, |i| {
            let f = &flows[i as usize];
            if f.expires <= now {
                gone.push(i);
                Due::Expired
            } else {
                // Alive past a timeout: so must the other box's copy be.
                if let (Some(log), false, true) = (log.as_mut(), f.synced, f.answered) {
                    log.push(Change::Flow(i));
                }
                Due::Later(f.expires)
            }
        });
        let n = gone.len();
        for &i in &gone {
            // Already out of the wheel; remove() skips the wheel for it.
            self.remove(i);
        }
        self.expired = gone;
        n
    }

    /// (account slot, NAT binding) of every translated flow removed since the last call.
    pub fn take_released(&mut self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.released.drain(..)
    }

    /// The flow and the timeouts, borrowed together (the fast path needs both).
    #[inline]
    pub fn flow_and_timeouts(&mut self, i: u32) -> (&mut Flow, &Timeouts) {
        (&mut self.flows[i as usize], &self.timeouts)
    }

    /// The policy epoch flow `i` was made in.
    #[inline]
    pub fn epoch_of(&self, i: u32) -> u32 {
        self.cold[i as usize].epoch
    }

    /// When flow `i` was created.
    pub fn created(&self, i: u32) -> Time {
        self.cold[i as usize].created
    }

    /// Every live flow, for listings and tests (not for the packet path).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Flow)> {
        self.flows.iter().enumerate().filter(|(_, f)| f.live).map(|(i, f)| (i as u32, f))
    }

    /// One slice of a walk over the table spread across many steps, so that
    /// the packet path never waits for the whole of it (listings,
    /// statistics): the live flows among the `budget` slab entries (live or
    /// not, at least one) from index `from`, and where the walk goes on,
    /// `None` once this slice reaches the end. A walk meets every flow that
    /// lives throughout it exactly once; flows made or ended meanwhile may
    /// be met or not.
    pub fn slice(&self, from: u32, budget: usize) -> (impl Iterator<Item = (u32, &Flow)>, Option<u32>) {
        let start = (from as usize).min(self.flows.len());
        let end = start.saturating_add(budget.max(1)).min(self.flows.len());
        let live = self.flows[start..end].iter().zip(start as u32..).filter(|(f, _)| f.live).map(|(f, i)| (i, f));
        (live, (end < self.flows.len()).then_some(end as u32))
    }

    /// True if `proto` is tracked with its own state machine.
    pub fn state_for_new(proto_no: u8) -> ProtoState {
        match proto_no {
            proto::UDP => ProtoState::Udp,
            proto::ICMP | proto::ICMPV6 => ProtoState::Icmp,
            _ => ProtoState::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guessed_lookup_answers_as_the_lookup() {
        use core::net::Ipv4Addr;
        let now = Time(0);
        let mut ct = Conntrack::new(4096, [1, 2, 3, 4], Timeouts::default(), now);
        let key = |i: u16| FlowKey::v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1), proto::UDP, i, 53);
        for i in 0..2000u16 {
            ct.insert(&udp_flow(i), now).0.unwrap();
        }
        // Stored keys (both directions), keys never stored, and guesses that
        // are wrong: the answer is always the plain lookup's.
        let (mut right, mut stored) = (0, 0);
        let probes = (0..2000u16).flat_map(|i| [key(i), key(i).reversed()]).chain((2000..3000).map(key));
        for (n, k) in probes.enumerate() {
            let h = ct.hash(&k);
            let want = ct.lookup(h, &k);
            let g = ct.guess(h);
            assert_eq!(ct.lookup_guessed(h, &k, g), want, "{k:?}");
            assert_eq!(ct.lookup_guessed(h, &k, NO_GUESS), want);
            let wrong = (n as u32 * 7) % 4000;
            assert_eq!(ct.lookup_guessed(h, &k, wrong), want);
            if let Some(hit) = want {
                right += usize::from(g == hit.flow << 1 | u32::from(hit.dir));
                stored += 1;
            }
        }
        // The guess is what makes the lookup cheap: nearly always the entry.
        assert_eq!(stored, 4000);
        assert!(right * 100 >= stored * 99, "{right} of {stored} guesses right");
    }

    fn udp_flow(port: u16) -> NewFlow {
        use core::net::Ipv4Addr;
        let k = FlowKey::v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1), proto::UDP, port, 53);
        NewFlow {
            keys: [k, k.reversed()],
            state: ProtoState::Udp,
            orig_side: Side::Inside,
            reply_side: Side::Outside,
            account: NO_ACCOUNT,
            binding: NO_BINDING,
            epoch: 0,
            synced: false,
            answered: false,
        }
    }

    /// A walk in slices meets each live flow once, in slab order, however
    /// the slices fall on the gaps the removed flows left, and each slice
    /// looks at no more entries than its budget.
    #[test]
    fn a_walk_in_slices_meets_every_live_flow_once() {
        let now = Time(0);
        let mut ct = Conntrack::new(100, [1, 2, 3, 4], Timeouts::default(), now);
        let made: Vec<u32> = (0..90u16).map(|p| ct.insert(&udp_flow(p), now).0.unwrap()).collect();
        for &i in made.iter().filter(|&&i| i % 3 == 0 || (40..60).contains(&i)) {
            ct.remove(i);
        }
        let want: Vec<u32> = ct.iter().map(|(i, _)| i).collect();
        assert_eq!(want.len(), 90 - 30 - 14, "a third, and the rest of 40..60, removed");
        for budget in [1, 7, 20, 99, 100, 1000] {
            let (mut met, mut from, mut slices) = (Vec::new(), Some(0), 0);
            while let Some(at) = from {
                let (live, next) = ct.slice(at, budget);
                let live: Vec<u32> = live
                    .map(|(i, f)| {
                        assert!(f.is_live());
                        i
                    })
                    .collect();
                assert!(live.iter().all(|&i| i >= at && (i as usize) < at as usize + budget));
                met.extend(live);
                assert!(next.is_none_or(|n| n as usize == at as usize + budget), "{budget}: {at} → {next:?}");
                from = next;
                slices += 1;
            }
            assert_eq!(met, want, "budget {budget}");
            assert_eq!(slices, 100usize.div_ceil(budget), "budget {budget}");
        }
        // Past the end, and a budget of zero, still end or move on.
        assert_eq!(ct.slice(100, 10).1, None);
        assert_eq!(ct.slice(5000, 10).0.count(), 0);
        assert_eq!(ct.slice(0, 0).1, Some(1));
    }

    #[test]
    fn state_names_are_those_flows_give() {
        let names: Vec<_> = Flow::state_names().collect();
        assert_eq!(names.len(), TcpState::ALL.len() + 2);
        let now = Time(0);
        let mut ct = Conntrack::new(8, [1, 2, 3, 4], Timeouts::default(), now);
        let i = ct.insert(&udp_flow(1), now).0.unwrap();
        assert_eq!(ct.flow(i).state_name(), UNANSWERED);
        ct.flow_mut(i).answered = true;
        assert_eq!(ct.flow(i).state_name(), ANSWERED);
        for s in TcpState::ALL {
            assert!(names.contains(&s.name()));
        }
    }

    #[test]
    fn a_flow_is_three_cache_lines() {
        assert_eq!(core::mem::size_of::<Flow>(), 192);
        assert_eq!(core::mem::align_of::<Flow>(), 64);
    }
}
