//! Flow listings for the API (`GET /api/flows`, what `conntrack -L` gives),
//! answered by the workers between batches without slowing them.
//!
//! A worker's flow table is its own and nobody else reads it, so a listing
//! is a question every worker answers itself, as it answers the pair's
//! resync ([`crate::synclink`]). The control side ([`FlowQueries`]) sends
//! each worker a request through a wait-free SPSC ring: a filter, a limit,
//! and a buffer for `limit` flows that it allocated and touched (so that
//! the worker meets no page fault in it). After a step's frames are sent,
//! the worker walks [`QUERY_SLICE`] entries of its table
//! ([`engine::conntrack::Conntrack::slice`]), or fewer once it has written
//! [`QUERY_FLOWS_PER_STEP`] flows into the buffer (never past its
//! capacity: the worker allocates nothing), and gives the buffer back
//! through a second ring when the walk ends, or as soon as the buffer is
//! full and one more flow matches (the listing is then truncated).
//!
//! Measured (release build, a table of 262,144 entries holding 200,000
//! flows, on a loaded 2-core machine): looking at an entry costs 10-20 ns
//! (the walk streams the table from memory), writing a listed flow some
//! 30 ns more. So a step of a walk costs 5-10 µs, at most some 15 µs when
//! every entry matches; the whole table takes 512 steps, a few
//! milliseconds on a busy worker. While a walk is under way it counts as
//! the step's work, so an idle worker does not sleep in the middle of one.
//!
//! The control side serialises queries with a mutex of its own (the
//! workers never touch it), asks every worker at once and waits until a
//! deadline, which also bounds the wait for earlier queries. A worker that
//! has not answered by then makes the query fail, naming it
//! ([`QueryError::NoAnswer`]): a listing silently missing one worker's
//! flows would mislead whoever reads it. Its request is then marked
//! abandoned: one atomic that the worker loads once per step while it has
//! a request, after which it gives the buffer back unfinished; a late
//! answer is thrown away (on the control side) by the next query.
//!
//! Counted on the worker ([`crate::DataplaneCounters`]): queries answered,
//! table entries visited for them, queries abandoned.

use crate::counters::DataplaneCounters;
use crate::Shared;
use core::net::{IpAddr, SocketAddr};
use engine::conntrack::NO_ACCOUNT;
use engine::members::Accounts;
use engine::{Engine, Flow, Side, Time};
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// Flow table entries (live or not) a worker looks at per step for a query.
pub const QUERY_SLICE: usize = 512;
/// Flows a worker writes into a listing per step, at most.
pub const QUERY_FLOWS_PER_STEP: usize = 128;
/// Requests (and answers) in flight per worker: one walked, the others
/// waiting; a worker this far behind is stuck ([`QueryError::Busy`]).
const RING_DEPTH: usize = 4;
/// The control side's sleeps between two looks at the answers (or at the
/// lock other queries hold), doubling from the first to the last.
const NAP_MIN: Duration = Duration::from_micros(20);
const NAP_MAX: Duration = Duration::from_millis(1);
/// The most flows a query lists (a larger limit is taken as this one):
/// each worker is sent a buffer of `limit` flows of some 150 bytes, 10 MB
/// at this limit (the API's is 10,000).
pub const MAX_LIMIT: usize = 65_536;

/// Which flows to list; every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// The member the flow is accounted to.
    pub member: Option<u32>,
    /// Any of the flow's addresses: inside, outside or public.
    pub address: Option<IpAddr>,
    /// Any of the flow's ports (ICMP: the echo identifier).
    pub port: Option<u16>,
    /// The IP protocol number (ICMPv6 is 58, not ICMP's 1).
    pub protocol: Option<u8>,
    /// A name [`Flow::state_name`] gives, in any case ("ESTABLISHED").
    pub state: Option<String>,
}

/// One flow, as `conntrack -L` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub protocol: u8,
    /// [`Flow::state_name`].
    pub state: &'static str,
    /// Until the flow expires, unless a packet comes.
    pub remaining: Duration,
    /// The member's device (or the box's own address).
    pub inside: SocketAddr,
    /// The far end.
    pub outside: SocketAddr,
    /// The address and port the far end sees, if the flow is translated
    /// (IPv4 NAT, or a port forward); `None` for IPv6.
    pub public: Option<SocketAddr>,
    pub member_id: Option<u32>,
    /// The worker whose table holds the flow.
    pub worker: usize,
}

impl FlowInfo {
    /// Flow `f` of worker `worker`, as of `now`.
    pub fn of(f: &Flow, accounts: &Accounts, now: Time, worker: usize) -> FlowInfo {
        let (inside, outside, public) = ends(f);
        FlowInfo {
            protocol: f.keys[0].proto,
            state: f.state_name(),
            remaining: f.expires.since(now),
            inside,
            outside,
            public,
            member_id: (f.account != NO_ACCOUNT).then(|| accounts.member_id(f.account)),
            worker,
        }
    }
}

/// An empty buffer for `n` flows whose memory is touched: the page faults
/// of a fresh allocation are taken here, not on the worker that fills it.
fn touched(n: usize) -> Vec<FlowInfo> {
    let unspecified = SocketAddr::new(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED), 0);
    let blank = FlowInfo {
        protocol: 0,
        state: "",
        remaining: Duration::ZERO,
        inside: unspecified,
        outside: unspecified,
        public: None,
        member_id: None,
        worker: 0,
    };
    let mut v = vec![blank; n];
    v.clear();
    v
}

/// A flow's (inside, outside, public) ends, from its two keys. Opened from
/// the inside, the original key runs from the inside end to the outside
/// one and the reply comes back to the public end (the source the
/// original left with); opened from the outside (a port forward, an IPv6
/// opening), the original runs from the outside end to the public one and
/// the reply comes from the inside end (where the original was sent on
/// to). Untranslated flows have no public end.
fn ends(f: &Flow) -> (SocketAddr, SocketAddr, Option<SocketAddr>) {
    let [o, r] = &f.keys;
    let src = |k: &wire::FlowKey| SocketAddr::new(k.src_ip(), k.src_port);
    let dst = |k: &wire::FlowKey| SocketAddr::new(k.dst_ip(), k.dst_port);
    match f.orig_side {
        Side::Inside => (src(o), dst(o), f.translated.then(|| dst(r))),
        Side::Outside => (src(r), src(o), f.translated.then(|| dst(o))),
    }
}

/// Why a query gave no listing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("no flow state is called {0:?} (states: {states})", states = Flow::state_names().collect::<Vec<_>>().join(", "))]
    UnknownState(String),
    #[error("worker(s) {workers:?} did not answer within {deadline:?}")]
    NoAnswer { workers: Vec<usize>, deadline: Duration },
    #[error("worker {0} has not taken the earlier queries it was sent")]
    Busy(usize),
    #[error("earlier queries kept the workers busy for the whole deadline ({0:?})")]
    Crowded(Duration),
    #[error("the workers are stopping")]
    Stopped,
}

/// A filter as a worker applies it: no allocation, the state resolved to
/// the engine's own name.
#[derive(Clone, Copy, Debug)]
struct Match {
    member: Option<u32>,
    address: Option<IpAddr>,
    port: Option<u16>,
    protocol: Option<u8>,
    state: Option<&'static str>,
}

impl Match {
    fn new(f: &FlowFilter) -> Result<Match, QueryError> {
        let state = match &f.state {
            Some(s) => Some(
                Flow::state_names()
                    .find(|n| n.eq_ignore_ascii_case(s))
                    .ok_or_else(|| QueryError::UnknownState(s.clone()))?,
            ),
            None => None,
        };
        Ok(Match { member: f.member, address: f.address, port: f.port, protocol: f.protocol, state })
    }

    fn matches(&self, f: &Flow, accounts: &Accounts) -> bool {
        if self.protocol.is_some_and(|p| p != f.keys[0].proto) || self.state.is_some_and(|s| s != f.state_name()) {
            return false;
        }
        if let Some(m) = self.member {
            if f.account == NO_ACCOUNT || accounts.member_id(f.account) != m {
                return false;
            }
        }
        if self.address.is_none() && self.port.is_none() {
            return true;
        }
        let (inside, outside, public) = ends(f);
        let all = || [Some(inside), Some(outside), public].into_iter().flatten();
        self.address.is_none_or(|x| all().any(|a| a.ip() == x))
            && self.port.is_none_or(|p| all().any(|a| a.port() == p))
    }
}

/// A question for one worker, and the buffer for its answer.
#[derive(Debug)]
struct Request {
    id: u64,
    filter: Match,
    limit: usize,
    flows: Vec<FlowInfo>,
}

/// A worker's answer: the buffer it was given, filled.
#[derive(Debug)]
struct Reply {
    id: u64,
    flows: Vec<FlowInfo>,
    /// More flows matched than the buffer holds.
    truncated: bool,
}

/// A worker's end of its query rings.
#[derive(Debug)]
pub(crate) struct WorkerQueries {
    requests: Consumer<Request>,
    replies: Producer<Reply>,
    /// Requests up to this id are given up by the control side.
    abandoned: Arc<AtomicU64>,
    /// The request being walked, and where the walk is.
    walk: Option<(Request, u32)>,
    /// An answer the full ring did not take yet.
    held: Option<Reply>,
}

impl WorkerQueries {
    /// Between batches: goes on with the query under way (or takes the
    /// next one), looking at most at [`QUERY_SLICE`] entries of `engine`'s
    /// flow table and listing at most [`QUERY_FLOWS_PER_STEP`] flows.
    /// Returns the entries looked at.
    pub(crate) fn step(
        &mut self,
        engine: &Engine,
        now: Time,
        worker: usize,
        counters: &mut DataplaneCounters,
    ) -> usize {
        if let Some(r) = self.held.take() {
            if let Err(rtrb::PushError::Full(r)) = self.replies.push(r) {
                self.held = Some(r);
                return 0;
            }
        }
        // Requests given up are handed back at once (at most a ring's worth).
        let abandoned = self.abandoned.load(Ordering::Acquire);
        loop {
            if self.walk.is_none() {
                let Ok(req) = self.requests.pop() else { return 0 };
                self.walk = Some((req, 0));
            }
            match &self.walk {
                Some((req, _)) if req.id <= abandoned => {
                    counters.flow_queries_abandoned += 1;
                    if !self.answer(false) {
                        return 0;
                    }
                }
                _ => break,
            }
        }
        let Some((req, at)) = &mut self.walk else { return 0 };
        let (ct, accounts) = (engine.conntrack(), engine.accounts());
        let limit = req.limit.min(req.flows.capacity());
        let (live, next) = ct.slice(*at, QUERY_SLICE);
        let mut end = next.map_or(ct.capacity(), |n| n as usize);
        let (mut written, mut truncated) = (0, false);
        for (i, f) in live {
            if f.expires <= now || !req.filter.matches(f, accounts) {
                continue;
            }
            if req.flows.len() == limit {
                truncated = true;
                end = i as usize + 1;
                break;
            }
            // Within the capacity the control side allocated: no allocation.
            req.flows.push(FlowInfo::of(f, accounts, now, worker));
            written += 1;
            if written == QUERY_FLOWS_PER_STEP {
                end = i as usize + 1;
                break;
            }
        }
        let looked = end - *at as usize;
        counters.flow_query_visits += looked as u64;
        if truncated || end >= ct.capacity() {
            counters.flow_queries += 1;
            self.answer(truncated);
        } else {
            *at = end as u32;
        }
        looked
    }

    /// Gives the buffer of the walk back; false if the ring was full (it
    /// is held until there is room).
    fn answer(&mut self, truncated: bool) -> bool {
        let Some((req, _)) = self.walk.take() else { return true };
        let reply = Reply { id: req.id, flows: req.flows, truncated };
        match self.replies.push(reply) {
            Ok(()) => true,
            Err(rtrb::PushError::Full(r)) => {
                self.held = Some(r);
                false
            }
        }
    }
}

/// The control side's end of one worker's query rings.
#[derive(Debug)]
struct ControlEnd {
    requests: Producer<Request>,
    replies: Consumer<Reply>,
}

#[derive(Debug)]
struct Ends {
    next_id: u64,
    workers: Vec<ControlEnd>,
}

#[derive(Debug)]
struct Hub {
    ends: Mutex<Ends>,
    abandoned: Vec<Arc<AtomicU64>>,
    shared: Arc<Shared>,
}

/// The control side's handle on the workers' flow tables: cheap to clone,
/// shared by API requests (which it serialises). Made by
/// [`crate::Dataplane::flow_queries`] (or [`crate::Lockstep::flow_queries`]);
/// it answers for those workers only, and says [`QueryError::Stopped`]
/// once they stop.
#[derive(Clone, Debug)]
pub struct FlowQueries {
    hub: Arc<Hub>,
}

/// The rings for the workers that share `shared`: element `i` goes to
/// worker `i`.
pub(crate) fn links(shared: Arc<Shared>, workers: usize) -> (Vec<WorkerQueries>, FlowQueries) {
    let mut ends = Vec::with_capacity(workers);
    let mut abandoned = Vec::with_capacity(workers);
    let worker_ends = (0..workers)
        .map(|_| {
            let (req_p, req_c) = RingBuffer::new(RING_DEPTH);
            let (rep_p, rep_c) = RingBuffer::new(RING_DEPTH);
            let gave_up = Arc::new(AtomicU64::new(0));
            ends.push(ControlEnd { requests: req_p, replies: rep_c });
            abandoned.push(Arc::clone(&gave_up));
            WorkerQueries { requests: req_c, replies: rep_p, abandoned: gave_up, walk: None, held: None }
        })
        .collect();
    let hub = Hub { ends: Mutex::new(Ends { next_id: 1, workers: ends }), abandoned, shared };
    (worker_ends, FlowQueries { hub: Arc::new(hub) })
}

impl FlowQueries {
    /// Lists at most `limit` flows of all workers that match `filter`, and
    /// whether more matched (truncated). Blocks until every worker has
    /// answered (call it from a thread that may block, never from a
    /// worker), or fails naming those that did not within `deadline`. The
    /// deadline counts from the call: the wait for earlier queries is in it.
    pub fn query(
        &self,
        filter: &FlowFilter,
        limit: usize,
        deadline: Duration,
    ) -> Result<(Vec<FlowInfo>, bool), QueryError> {
        let start = Instant::now();
        let mut pending = self.send(filter, limit, Some((start, deadline)))?;
        let mut nap = NAP_MIN;
        loop {
            if let Some(answer) = pending.poll() {
                return Ok(answer);
            }
            if self.hub.shared.stop.load(Ordering::Relaxed) {
                return Err(QueryError::Stopped);
            }
            let waited = start.elapsed();
            if waited >= deadline {
                return Err(pending.give_up(deadline));
            }
            std::thread::sleep(nap.min(deadline - waited));
            nap = (nap * 2).min(NAP_MAX);
        }
    }

    /// Sends the query to every worker without waiting for their answers,
    /// which [`PendingQuery::poll`] then gathers (waits, though, for an
    /// earlier query to be answered or dropped). Other queries wait until
    /// this one is answered or dropped.
    pub fn start(&self, filter: &FlowFilter, limit: usize) -> Result<PendingQuery<'_>, QueryError> {
        self.send(filter, limit, None)
    }

    /// [`start`](Self::start), giving up if the earlier queries are not
    /// done by `deadline` from the given instant.
    fn send(
        &self,
        filter: &FlowFilter,
        limit: usize,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<PendingQuery<'_>, QueryError> {
        let filter = Match::new(filter)?;
        let limit = limit.min(MAX_LIMIT);
        let mut ends = self.lock(deadline)?;
        if self.hub.shared.stop.load(Ordering::Relaxed) {
            return Err(QueryError::Stopped);
        }
        let id = ends.next_id;
        ends.next_id += 1;
        let n = ends.workers.len();
        for end in &mut ends.workers {
            // Late answers to queries given up.
            while end.replies.pop().is_ok() {}
        }
        let answers = (0..n).map(|_| None).collect();
        let mut pending = PendingQuery { hub: &self.hub, ends, id, limit, answers, done: false };
        for w in 0..n {
            let req = Request { id, filter, limit, flows: touched(limit) };
            if pending.ends.workers[w].requests.push(req).is_err() {
                // Dropping `pending` abandons what the others were sent.
                return Err(QueryError::Busy(w));
            }
        }
        Ok(pending)
    }

    /// The control ends, once no other query holds them (or `deadline`
    /// from the given instant has passed). A query that panicked left
    /// nothing inconsistent: the ends are rings, the rest a counter.
    fn lock(&self, deadline: Option<(Instant, Duration)>) -> Result<MutexGuard<'_, Ends>, QueryError> {
        let Some((start, deadline)) = deadline else {
            return Ok(self.hub.ends.lock().unwrap_or_else(|e| e.into_inner()));
        };
        let mut nap = NAP_MIN;
        loop {
            match self.hub.ends.try_lock() {
                Ok(ends) => return Ok(ends),
                Err(TryLockError::Poisoned(e)) => return Ok(e.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
            let waited = start.elapsed();
            if waited >= deadline {
                return Err(QueryError::Crowded(deadline));
            }
            std::thread::sleep(nap.min(deadline - waited));
            nap = (nap * 2).min(NAP_MAX);
        }
    }
}

/// A query sent to the workers ([`FlowQueries::start`]). Dropped before
/// it is answered, it is given up: the workers stop walking for it.
#[derive(Debug)]
pub struct PendingQuery<'a> {
    hub: &'a Hub,
    ends: MutexGuard<'a, Ends>,
    id: u64,
    limit: usize,
    answers: Vec<Option<Reply>>,
    /// The answer was taken.
    done: bool,
}

impl PendingQuery<'_> {
    /// The listing once every worker has answered: at most `limit` flows
    /// (worker by worker, each in its table's order) and whether more
    /// matched. Never blocks; `None` until then (and after it was taken).
    pub fn poll(&mut self) -> Option<(Vec<FlowInfo>, bool)> {
        if self.done {
            return None;
        }
        for (end, answer) in self.ends.workers.iter_mut().zip(self.answers.iter_mut()) {
            while answer.is_none() {
                match end.replies.pop() {
                    Ok(r) if r.id == self.id => *answer = Some(r),
                    Ok(_) => {} // late, to a query given up
                    Err(_) => break,
                }
            }
        }
        if self.answers.iter().any(Option::is_none) {
            return None;
        }
        self.done = true;
        let (mut flows, mut truncated) = (Vec::new(), false);
        for a in self.answers.iter_mut().filter_map(Option::take) {
            if flows.is_empty() {
                flows = a.flows;
            } else {
                flows.extend(a.flows);
            }
            truncated |= a.truncated;
        }
        if flows.len() > self.limit {
            flows.truncate(self.limit);
            truncated = true;
        }
        Some((flows, truncated))
    }

    /// The workers that have not answered yet.
    pub fn waiting_for(&self) -> Vec<usize> {
        if self.done {
            return Vec::new();
        }
        self.answers.iter().enumerate().filter(|(_, a)| a.is_none()).map(|(w, _)| w).collect()
    }

    /// Gives the query up: the error names the workers that did not answer.
    pub fn give_up(self, deadline: Duration) -> QueryError {
        QueryError::NoAnswer { workers: self.waiting_for(), deadline }
    }
}

impl std::ops::Drop for PendingQuery<'_> {
    fn drop(&mut self) {
        for w in self.waiting_for() {
            self.hub.abandoned[w].fetch_max(self.id, Ordering::Release);
        }
    }
}
