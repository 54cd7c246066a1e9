//! The sync thread: this box's end of the pair's state sync (DESIGN.md, "Standby").
//!
//! One thread moves records between the workers' rings
//! ([`dataplane::synclink`]) and a [`sync::Peer`], and the peer's datagrams
//! over a UDP socket on the sync link, connected to the other box's
//! address (the kernel drops datagrams from anywhere else; the peer drops
//! anything not signed with the key). It wakes every millisecond at most,
//! or when a datagram arrives.
//!
//! * What arrives goes to the worker that owns the flow's member (as
//!   steering would send its packets); the markers of a full resync go to
//!   every worker. The socket is read only while every worker's ring has
//!   room, so a burst waits in the socket buffer, and what the kernel drops
//!   there the peer sends again: nothing is lost between peer and workers.
//! * When the peer asks for a full resync (a new session of the other
//!   box, or records lost on the way), every worker walks its flow table
//!   into its ring; when all are through, the resync is closed.
//! * Usage: twice a second the daemon hands over what this box counted and
//!   has not written yet ([`Pair::share_usage`]), and says when it wrote a
//!   flush ([`Pair::flushed`]); the other box does the same, and if it is
//!   lost (or comes back as a new session) before it said it wrote what it
//!   sent, its usage is handed to the daemon to write under its name
//!   ([`Pair::take_orphaned`], [`crate::ledger`]). A peer that went
//!   silent may be alive behind a broken sync link and write the same
//!   flush itself, with more in it: the daemon gives it time to
//!   ([`Orphaned::silent`]).
//! * Readiness for a failover script: [`sync::Peer::ready`], written as
//!   `0` (ready) or `1` to the readiness file whenever it changes, the
//!   form keepalived's `track_file` reads.

use crate::db::MemberTraffic;
use crate::files;
use crate::ledger::Ledger;
use crate::stats::PairStats;
use arc_swap::ArcSwap;
use dataplane::steer;
use dataplane::synclink::{HubEnd, WorkerSync};
use dataplane::worker::monotonic_now;
use engine::Time;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use sync::{Event, Keys, Peer, Record};

/// The sync link as configured (`[sync]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairConfig {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub key_file: PathBuf,
    pub ready_file: Option<PathBuf>,
    /// The largest datagram (`sync.datagram`), the same on both boxes.
    pub max_datagram: usize,
}

/// Reads the key file: the owner's alone (no group or other access), at
/// most a few lines of hex (see [`sync::key`]).
pub fn load_keys(path: &Path) -> Result<Keys, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("sync key file {shown}: {e}"))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "sync key file {shown}: mode {:o} lets others read the key; make it the owner's alone (chmod 600)",
            meta.mode() & 0o777
        ));
    }
    if meta.len() > sync::key::MAX_FILE_LEN as u64 {
        return Err(format!("sync key file {shown}: {} bytes, not a key file", meta.len()));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("sync key file {shown}: {}", files::unreadable(path, &e)))?;
    Keys::parse(&text).map_err(|e| format!("sync key file {shown}: {e}"))
}

/// Writes "1" (not ready) to the readiness file, if there is one: at start,
/// before anything else, so that a file left by an earlier run cannot tell
/// keepalived that this box, still starting, may take the traffic.
pub fn mark_not_ready(cfg: &PairConfig) {
    if let Some(path) = &cfg.ready_file {
        if let Err(e) = files::write_private(path, b"1\n", 0o644, false) {
            tracing::error!(file = %path.display(), error = %e, "sync: cannot write the readiness file");
        }
    }
}

/// A new key file's text: one key from the kernel's random source.
pub fn new_key_file() -> std::io::Result<String> {
    let key = random::<32>()?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("# torwart sync key: the same file on both boxes, mode 600\n{hex}\n"))
}

fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    let mut got = 0;
    while got < N {
        // SAFETY: getrandom writes at most N - got bytes into the valid buffer at b[got..].
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), N - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        got += n as usize;
    }
    Ok(b)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets `socket`'s receive buffer to `bytes`: beyond the system's limit
/// (`net.core.rmem_max`) when the process may (root), else up to it.
pub fn receive_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: both options take an int; the pointer and length describe one.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&bytes as *const libc::c_int).cast(),
                core::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// Datagrams gathered to go out in one `sendmmsg` on a connected socket.
#[derive(Debug)]
pub struct SendBatch {
    bytes: Vec<u8>,
    lens: Vec<usize>,
    size: usize,
}

impl SendBatch {
    /// Room for `n` datagrams of at most `size` bytes.
    pub fn new(size: usize, n: usize) -> SendBatch {
        SendBatch { bytes: vec![0; size * n.max(1)], lens: Vec::with_capacity(n.max(1)), size }
    }

    /// The buffer for the next datagram, if the batch has room.
    pub fn buffer(&mut self) -> Option<&mut [u8]> {
        let i = self.lens.len();
        (i < self.lens.capacity()).then(|| &mut self.bytes[i * self.size..(i + 1) * self.size])
    }

    /// The datagram written into [`buffer`](Self::buffer)'s is `len` bytes.
    pub fn push(&mut self, len: usize) {
        self.lens.push(len.min(self.size));
    }

    pub fn is_full(&self) -> bool {
        self.lens.len() == self.lens.capacity()
    }

    /// Datagrams gathered.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Sends what is gathered; returns how many the kernel took (the rest
    /// are dropped: the protocol sends them again). The batch is empty after.
    pub fn send(&mut self, socket: &UdpSocket) -> usize {
        let n = self.lens.len();
        if n == 0 {
            return 0;
        }
        let mut iov: Vec<libc::iovec> = self
            .lens
            .iter()
            .enumerate()
            .map(|(i, &len)| libc::iovec { iov_base: self.bytes[i * self.size..].as_mut_ptr().cast(), iov_len: len })
            .collect();
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { core::mem::zeroed() }).collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds n headers, each pointing at one iovec of `iov`
        // that describes a live range of `self.bytes`; all outlive the call.
        let sent =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        self.lens.clear();
        usize::try_from(sent).unwrap_or(0)
    }
}

/// The running sync thread.
#[derive(Debug)]
pub struct Pair {
    stop: Arc<AtomicBool>,
    /// The box is stopping: the readiness file says "1" from now on.
    leaving: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<ArcSwap<PairStats>>,
    /// The rings of workers started anew, for the thread to take.
    next_hubs: Arc<Mutex<Option<Vec<HubEnd>>>>,
    usage: Arc<Mutex<UsageExchange>>,
}

/// Usage between the daemon and the sync thread.
#[derive(Debug, Default)]
struct UsageExchange {
    /// This box's records for the peer.
    outgoing: Vec<Record>,
    /// The peer's usage not yet written, by flush number and member: its
    /// latest report.
    peer: BTreeMap<(u64, u32), sync::Usage>,
    /// The peer's usage to write for it (it is gone).
    orphaned: Vec<Orphaned>,
    /// The peer came back as a new session since the daemon last took the
    /// orphaned usage: its old process is gone, and writes nothing more.
    restarted: bool,
    /// What this box last told the peer, by flush number and member.
    shared: BTreeMap<(i64, u32), MemberTraffic>,
}

/// Usage the other box counted and did not write: to be written under its
/// name and flush number ([`crate::db::Database::write_accounting_once`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphaned {
    pub writer: String,
    pub flush: i64,
    pub traffic: Vec<MemberTraffic>,
    /// The peer went silent (nothing heard for a while) rather than coming
    /// back as a new session: it may be alive behind a broken sync link,
    /// and write this flush itself, counted to a later moment than what it
    /// shared. Written first by this box, that flush would be refused to
    /// it, and what it counted since it last shared would be lost.
    pub silent: bool,
}

/// The fewest bytes a record a worker's ring takes has on the wire
/// (`ResyncBegin`: type, length and a 4-byte id); a worker's ring must
/// have room for a datagram's worth of them before one is delivered.
const SMALLEST_RING_RECORD: usize = 7;
/// How often the sync thread wakes: it reads what arrived, takes the
/// workers' changes and sends them, all in one pass, and sleeps again (a
/// protocol deadline, such as a resend or a hello, may wake it earlier;
/// a datagram does not). A new flow reaches the other box at most two
/// ticks later, far less than a takeover takes (keepalived's adverts),
/// and a box's sync costs a few wake-ups a tick whatever the flow rate: a
/// datagram's arrival waking the thread, and acknowledgements sent 2 ms
/// later, cost more than the records did (docs/pair.md).
const TICK: Duration = Duration::from_millis(10);
/// Sleeps until `t` on the monotonic clock (a signal may end it early).
fn sleep_until(t: Time) {
    let ts = libc::timespec {
        tv_sec: (t.0 / 1_000_000_000) as libc::time_t,
        tv_nsec: (t.0 % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec for the duration of the call; no remainder is asked for.
    unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
}

/// The socket's receive buffer: a burst of a resync waits here.
const RECEIVE_BUFFER: libc::c_int = 8 << 20;

impl Pair {
    /// Binds the sync link and starts the thread; the workers' rings come
    /// with [`Pair::attach`].
    pub fn start(cfg: &PairConfig, keys: Keys, has_policy: bool) -> std::io::Result<Pair> {
        let socket = UdpSocket::bind(cfg.local)?;
        socket.connect(cfg.peer)?;
        socket.set_nonblocking(true)?;
        receive_buffer(&socket, RECEIVE_BUFFER);
        let now = monotonic_now();
        let peer = Peer::new(
            sync::Config {
                max_datagram: cfg.max_datagram,
                // Acknowledged in the pass that read the data, with this
                // box's own data if it has any: no wake-up of its own.
                ack_delay: Duration::ZERO,
                // An acknowledgement takes up to a tick on each box.
                resend_after: 5 * TICK,
                ..sync::Config::default()
            },
            keys,
            random::<32>()?,
            now,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ArcSwap::from_pointee(PairStats::default()));
        let mut t = Thread {
            socket,
            peer,
            hubs: Vec::new(),
            next_hubs: Arc::new(Mutex::new(None)),
            usage: Arc::new(Mutex::new(UsageExchange::default())),
            leaving: Arc::new(AtomicBool::new(false)),
            peer_name: cfg.peer.to_string(),
            usage_session: None,
            adoptions: 0,
            has_policy,
            resync: None,
            lost_told: 0,
            batch: SendBatch::new(cfg.max_datagram, 32),
            ready_file: cfg.ready_file.clone(),
            written_ready: None,
            stats: Arc::clone(&stats),
            last_stats: Time::ZERO,
            send_errors: 0,
            receive_errors: 0,
            room_per_datagram: cfg.max_datagram / SMALLEST_RING_RECORD + 1,
            ring_full: 0,
        };
        let stop2 = Arc::clone(&stop);
        let next_hubs = Arc::clone(&t.next_hubs);
        let usage = Arc::clone(&t.usage);
        let leaving = Arc::clone(&t.leaving);
        let thread = std::thread::Builder::new().name("torwart-sync".into()).spawn(move || t.run(&stop2))?;
        tracing::info!(local = %cfg.local, peer = %cfg.peer, "sync link open");
        Ok(Pair { stop, leaving, thread: Some(thread), stats, next_hubs, usage })
    }

    /// Hands the other box what this one counted and has not written:
    /// `ledger`'s unwritten usage for `totals`, each part under its flush
    /// number (a flush in doubt under its own, what came after under the
    /// next), of each member what changed since the last time.
    pub fn share_usage(&self, ledger: &Ledger, totals: &[MemberTraffic]) {
        if ledger.next_flush().is_none() {
            return;
        }
        let parts = ledger.unwritten(totals);
        let mut u = lock(&self.usage);
        u.shared.retain(|(flush, _), _| parts.iter().any(|p| p.flush == *flush));
        for p in &parts {
            for t in &p.traffic {
                if u.shared.get(&(p.flush, t.member_id)) == Some(t) {
                    continue;
                }
                u.shared.insert((p.flush, t.member_id), *t);
                u.outgoing.push(Record::Usage(sync::Usage {
                    flush: p.flush as u64,
                    member: t.member_id,
                    bytes: [t.up_bytes, t.down_bytes],
                    packets: [t.up_packets, t.down_packets],
                }));
            }
        }
    }

    /// This box wrote its flush `flush`.
    pub fn flushed(&self, flush: i64) {
        lock(&self.usage).outgoing.push(Record::Flushed { flush: flush as u64 });
    }

    /// The other box's usage to write for it, if it is gone; and whether
    /// it came back as a new session since the last call (so nothing it
    /// left is still its own to write).
    pub fn take_orphaned(&self) -> (Vec<Orphaned>, bool) {
        let mut u = lock(&self.usage);
        (std::mem::take(&mut u.orphaned), std::mem::take(&mut u.restarted))
    }

    /// Rings to workers (started, or started anew): `workers` pairs, of
    /// which the workers get the first. What the old rings held is lost,
    /// so the peer gets a full resync.
    pub fn attach(&self, workers: usize) -> Vec<WorkerSync> {
        let (ends, hubs) = dataplane::synclink::links(workers);
        *self.next_hubs.lock().unwrap_or_else(|e| e.into_inner()) = Some(hubs);
        ends
    }

    /// The latest figures (at most 100 ms old).
    pub fn stats(&self) -> PairStats {
        PairStats { running: self.running(), ..(**self.stats.load()).clone() }
    }

    /// This box stops forwarding: the readiness file says so at once (keepalived
    /// moves the addresses to the other box while this one drains).
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
    }

    /// The sync thread runs (it ends only when stopped, or on a bug).
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the records the peer delivers go: flows to their owners' rings,
/// usage to the daemon's exchange.
struct Delivery<'a> {
    hubs: &'a mut [HubEnd],
    usage: &'a mut UsageExchange,
    has_policy: bool,
    ring_full: &'a mut u64,
}

impl Delivery<'_> {
    /// Every worker's ring has `room` free slots.
    fn has_room(&self, room: usize) -> bool {
        self.hubs.iter().all(|h| h.incoming.slots() >= room)
    }

    fn record(&mut self, r: &Record) {
        let workers = self.hubs.len();
        let to = match r {
            Record::Flow(f) => steer::owner_of_flow(self.has_policy, workers, f.member, &f.keys[0]),
            Record::Ended { key, member } => {
                let member = Some(*member).filter(|m| *m != u32::MAX);
                steer::owner_of_flow(self.has_policy, workers, member, key)
            }
            Record::ResyncBegin { .. } | Record::ResyncEnd { .. } => {
                for h in self.hubs.iter_mut() {
                    if h.incoming.push(*r).is_err() {
                        *self.ring_full += 1;
                    }
                }
                return;
            }
            Record::Usage(u) => {
                self.usage.peer.insert((u.flush, u.member), *u);
                return;
            }
            Record::Flushed { flush } => {
                self.usage.peer.retain(|_, u| u.flush > *flush);
                return;
            }
            Record::Gap => return,
        };
        // Room for the whole datagram was checked before it was delivered.
        if self.hubs[to].incoming.push(*r).is_err() {
            *self.ring_full += 1;
        }
    }
}

struct Thread {
    socket: UdpSocket,
    peer: Peer,
    hubs: Vec<HubEnd>,
    next_hubs: Arc<Mutex<Option<Vec<HubEnd>>>>,
    usage: Arc<Mutex<UsageExchange>>,
    /// The other box's name in the accounting ledger.
    peer_name: String,
    /// The other box's session the usage held is from.
    usage_session: Option<u64>,
    /// The other box's restarts: each makes the copies here this box's
    /// ([`dataplane::synclink::SyncShared::adopt`]).
    adoptions: u32,
    leaving: Arc<AtomicBool>,
    /// The box has a member policy (else flows of no member are steered by address).
    has_policy: bool,
    /// The resync the workers are walking their tables for.
    resync: Option<u32>,
    /// Records the workers lost that the peer has been told of.
    lost_told: u64,
    batch: SendBatch,
    ready_file: Option<PathBuf>,
    written_ready: Option<bool>,
    stats: Arc<ArcSwap<PairStats>>,
    last_stats: Time,
    send_errors: u64,
    receive_errors: u64,
    /// Slots a worker's ring must have free before a datagram's records
    /// are delivered to it: the most one datagram can carry.
    room_per_datagram: usize,
    /// Records that found a worker's ring full (none should: room is
    /// checked per datagram).
    ring_full: u64,
}

impl Thread {
    fn run(&mut self, stop: &AtomicBool) {
        // The thread's timers may be late by this much, so that the kernel
        // can serve them with other wake-ups.
        // SAFETY: prctl with an integer argument; it only changes this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 500_000 as libc::c_ulong) };
        let mut buf = vec![0u8; sync::message::MAX_LEN];
        while !stop.load(Ordering::Relaxed) {
            let now = monotonic_now();
            self.take_new_hubs();
            let more = self.receive(now, &mut buf);
            self.events();
            self.collect();
            self.transmit(now);
            if now.since(self.last_stats) >= Duration::from_millis(100) {
                self.publish(now);
            }
            if more {
                // A burst (a resync) waits in the socket: read on at once.
                continue;
            }
            let wake = self.peer.poll_timeout().min(now + TICK);
            sleep_until(wake);
        }
        self.publish(monotonic_now());
    }

    fn take_new_hubs(&mut self) {
        let new = match self.next_hubs.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        if let Some(hubs) = new {
            let first = self.hubs.is_empty();
            // An adoption the old rings' workers did not finish (they
            // stopped: a port came back) is asked of the new ones, before
            // anything of the peer reaches them: the workers kept their
            // flow tables.
            let unfinished = self.hubs.iter().any(|h| h.shared.adopt_done.load(Ordering::Acquire) != self.adoptions);
            if self.adoptions != 0 && unfinished {
                for h in &hubs {
                    h.shared.adopt.store(self.adoptions, Ordering::Release);
                }
            }
            self.hubs = hubs;
            self.resync = None;
            self.lost_told = 0;
            if !first {
                self.peer.lost(1);
            }
        }
    }

    /// Reads what arrived, as far as the workers' rings have room for it;
    /// true if it stopped at its limit with more waiting.
    fn receive(&mut self, now: Time, buf: &mut [u8]) -> bool {
        let Thread { socket, peer, hubs, has_policy, receive_errors, usage, room_per_datagram, ring_full, .. } = self;
        if hubs.is_empty() {
            // The workers are not attached yet: what arrives waits in the
            // socket (or is sent again), as when their rings are full.
            return false;
        }
        let mut usage = lock(usage);
        let mut d = Delivery { hubs, usage: &mut usage, has_policy: *has_policy, ring_full };
        for _ in 0..256 {
            // Datagrams are delivered one at a time, each when every
            // worker's ring has room for all it can carry: filling a hole
            // completes the datagrams that waited behind it, up to a whole
            // reorder window's, and those wait in the window until there is
            // room for them.
            loop {
                if !d.has_room(*room_per_datagram) {
                    // The workers install what they have first (the next tick).
                    return false;
                }
                if !peer.deliver_next(now, |r| d.record(r)) {
                    break;
                }
            }
            let n = match socket.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                // The peer's port unreachable (it is down), and the like.
                Err(_) => {
                    *receive_errors += 1;
                    continue;
                }
            };
            peer.handle_datagram_one(now, &buf[..n], |r| d.record(r));
            if peer.has_events() {
                // A new peer session (or a resync asked for): acted on
                // before any record of it reaches the workers (an
                // adoption must come first: see `events`).
                return true;
            }
        }
        true
    }

    fn events(&mut self) {
        while let Some(e) = self.peer.poll_event() {
            match e {
                Event::PeerUp { session } => {
                    tracing::info!(session = %format!("{session:016x}"), "sync peer up");
                    // A new session: what the old one counted and did not write is orphaned.
                    if self.usage_session.is_some_and(|s| s != session) {
                        self.orphan_usage(false);
                        lock(&self.usage).restarted = true;
                        // What the old session held is gone with it: the
                        // copies here are the only ones, and this box's
                        // from now on (before any record of the new
                        // session reaches a worker: its first resync
                        // would sweep them).
                        self.adoptions = self.adoptions.wrapping_add(1).max(1);
                        for h in &self.hubs {
                            h.shared.adopt.store(self.adoptions, Ordering::Release);
                        }
                    }
                    self.usage_session = Some(session);
                    // The new session has heard none of this box's usage.
                    lock(&self.usage).shared.clear();
                }
                Event::PeerLost => {
                    tracing::warn!("sync peer lost: nothing heard from it");
                    self.orphan_usage(true);
                }
                Event::Complete => tracing::info!("sync complete: this box holds the peer's state"),
                Event::Resync { id } => {
                    // A resync carries everything: the usage too.
                    lock(&self.usage).shared.clear();
                    self.resync = Some(id);
                    for h in &self.hubs {
                        h.shared.requested.store(id, Ordering::Release);
                    }
                }
            }
        }
        if let Some(id) = self.resync {
            if self.hubs.iter().all(|h| h.shared.done.load(Ordering::Acquire) == id) {
                let flows = self.hubs.iter().map(|h| h.shared.done_flows.load(Ordering::Relaxed)).sum();
                self.peer.resync_done(id, flows);
                self.resync = None;
                tracing::info!(flows, "sync: full resync sent");
            }
        }
    }

    /// The peer's unwritten usage, for the daemon to write under its name;
    /// `silent`: the peer went silent (see [`Orphaned::silent`]).
    fn orphan_usage(&mut self, silent: bool) {
        let mut u = lock(&self.usage);
        let peer = std::mem::take(&mut u.peer);
        let mut by_flush: BTreeMap<u64, Vec<MemberTraffic>> = BTreeMap::new();
        for ((_, member), x) in peer {
            by_flush.entry(x.flush).or_default().push(MemberTraffic {
                member_id: member,
                up_bytes: x.bytes[0],
                down_bytes: x.bytes[1],
                up_packets: x.packets[0],
                down_packets: x.packets[1],
            });
        }
        for (flush, traffic) in by_flush {
            tracing::warn!(
                flush,
                members = traffic.len(),
                silent,
                "sync: the other box's unwritten usage is ours to write"
            );
            u.orphaned.push(Orphaned { writer: self.peer_name.clone(), flush: flush as i64, traffic, silent });
        }
    }

    /// Takes the workers' records while the peer's queue has room.
    fn collect(&mut self) {
        let outgoing = std::mem::take(&mut lock(&self.usage).outgoing);
        for r in outgoing {
            self.peer.push(r);
        }
        for h in &mut self.hubs {
            let n = h.out.slots().min(self.peer.room());
            for _ in 0..n {
                let Ok(r) = h.out.pop() else { break };
                // Refused only without a peer (the resync on its arrival
                // carries it) or with the queue full (counted, resync follows).
                self.peer.push(r);
            }
        }
        let lost: u64 = self.hubs.iter().map(|h| h.shared.counts.lost.load(Ordering::Relaxed)).sum();
        if lost > self.lost_told {
            self.peer.lost(lost - self.lost_told);
            self.lost_told = lost;
        }
    }

    /// Sends what the peer has to send, in batches of one `sendmmsg`. What
    /// the socket does not take (its buffer is full, the peer is
    /// unreachable) is counted; the protocol sends it again.
    fn transmit(&mut self, now: Time) {
        while let Some(slot) = self.batch.buffer() {
            let Some(n) = self.peer.poll_transmit(now, slot) else { break };
            self.batch.push(n);
            if self.batch.is_full() {
                self.send_batch();
            }
        }
        self.send_batch();
    }

    fn send_batch(&mut self) {
        let (waiting, sent) = (self.batch.len(), self.batch.send(&self.socket));
        self.send_errors += (waiting - sent) as u64;
    }

    fn publish(&mut self, now: Time) {
        self.last_stats = now;
        let st = self.peer.status(now);
        let ready = self.peer.ready(now) && !self.leaving.load(Ordering::Relaxed);
        let mut counters: std::collections::BTreeMap<String, u64> =
            self.peer.counters().named().iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        for h in &self.hubs {
            for (k, v) in h.shared.counts.named() {
                *counters.entry(format!("worker_{k}")).or_default() += v;
            }
        }
        counters.insert("send_errors".into(), self.send_errors);
        counters.insert("receive_errors".into(), self.receive_errors);
        counters.insert("records_ring_full".into(), self.ring_full);
        let workers_lost = counters.get("worker_lost").copied().unwrap_or(0);
        self.stats.store(Arc::new(PairStats {
            running: true,
            ready,
            complete: st.complete,
            peer_alive: st.peer_alive,
            session: format!("{:016x}", st.session),
            peer_session: st.peer_session.map(|s| format!("{s:016x}")),
            queued: st.queued,
            unacked: st.unacked,
            resync: st.resync,
            workers_lost,
            protocol: sync::peer::PROTOCOL,
            peer_protocol: st.peer_protocol,
            counters,
        }));
        if self.written_ready != Some(ready) {
            if let Some(path) = &self.ready_file {
                let text = if ready { "0\n" } else { "1\n" };
                match files::write_private(path, text.as_bytes(), 0o644, false) {
                    Ok(()) => self.written_ready = Some(ready),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "sync: cannot write the readiness file")
                    }
                }
            } else {
                self.written_ready = Some(ready);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn free_port() -> SocketAddr {
        UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free port")
    }

    /// Two boxes' addresses on the loopback and their shared key.
    struct Two {
        a: SocketAddr,
        b: SocketAddr,
        key: String,
    }

    impl Two {
        fn new() -> Two {
            Two { a: free_port(), b: free_port(), key: new_key_file().expect("a key") }
        }

        /// The box at `local` (again), its peer at `peer`.
        fn start(&self, local: SocketAddr, peer: SocketAddr) -> Pair {
            let cfg = PairConfig { local, peer, key_file: PathBuf::new(), ready_file: None, max_datagram: 1452 };
            Pair::start(&cfg, Keys::parse(&self.key).expect("the key parses"), true).expect("a box starts")
        }

        /// Both boxes started (one worker's rings each, which nothing reads:
        /// no flows here) and met, and a's count of member 7 told to b.
        #[allow(clippy::type_complexity)]
        fn met_and_shared(&self) -> (Pair, Pair, Ledger, [MemberTraffic; 1], [Vec<WorkerSync>; 2]) {
            let b = self.start(self.b, self.a);
            let a = self.start(self.a, self.b);
            let workers = [a.attach(1), b.attach(1)];
            until("meeting", || a.stats().peer_alive && b.stats().peer_alive);
            let ledger = Ledger::for_pair(self.a.to_string());
            let counted = [MemberTraffic { member_id: 7, up_bytes: 1000, up_packets: 2, ..MemberTraffic::default() }];
            a.share_usage(&ledger, &counted);
            std::thread::sleep(Duration::from_millis(300));
            (a, b, ledger, counted, workers)
        }
    }

    fn until(what: &str, mut done: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < end, "no {what} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Box a shares what it counted, then goes silent (as behind a broken
    /// sync link): b hands a's usage over marked silent, so the daemon
    /// gives a time to write it itself. When a comes back as a new
    /// session, b says so: nothing a left is still a's to write.
    #[test]
    fn a_silent_peers_usage_is_marked_so_and_a_restart_is_told() {
        let two = Two::new();
        let (at_a, at_b) = (two.a, two.b);
        let (a, b, ledger, counted, _workers) = two.met_and_shared();
        assert_eq!(b.take_orphaned(), (vec![], false), "a speaks: its usage is its own");
        a.stop();
        let mut orphaned = Vec::new();
        until("orphaned usage", || {
            orphaned.extend(b.take_orphaned().0);
            !orphaned.is_empty()
        });
        let flush = ledger.next_flush().expect("a pair's ledger numbers its flushes");
        let expected = Orphaned { writer: at_a.to_string(), flush, traffic: counted.to_vec(), silent: true };
        assert_eq!(orphaned, vec![expected]);
        let a = two.start(at_a, at_b);
        let _a_worker = a.attach(1);
        until("a restart told", || b.take_orphaned().1);
        a.stop();
        b.stop();
    }

    /// Usage told to a session of the other box that then restarted is
    /// told again to the new one, unchanged as it is: if this box then
    /// dies, the new session writes it (it was sent once only, and the
    /// restarted box had lost it).
    #[test]
    fn usage_is_told_again_to_a_restarted_peer() {
        let two = Two::new();
        let (at_a, at_b) = (two.a, two.b);
        let (a, b, ledger, counted, _workers) = two.met_and_shared();
        // b restarts: the new b has heard nothing.
        b.stop();
        let b = two.start(at_b, at_a);
        let _b_worker = b.attach(1);
        until("meeting the new b", || {
            let (sa, sb) = (a.stats(), b.stats());
            sa.peer_session.as_ref() == Some(&sb.session) && sb.peer_session.as_ref() == Some(&sa.session)
        });
        // The daemon shares every so often, with the same totals.
        a.share_usage(&ledger, &counted);
        std::thread::sleep(Duration::from_millis(300));
        a.stop();
        let mut orphaned = Vec::new();
        until("orphaned usage", || {
            orphaned.extend(b.take_orphaned().0);
            !orphaned.is_empty()
        });
        assert_eq!(orphaned.iter().flat_map(|o| o.traffic.clone()).collect::<Vec<_>>(), counted.to_vec());
        b.stop();
    }

    /// One box's worker: an engine and its rings, stepped by a thread of
    /// its own until `stop`.
    fn worker(mut sync: WorkerSync, mut engine: engine::Engine, stop: Arc<AtomicBool>) -> JoinHandle<engine::Engine> {
        std::thread::spawn(move || {
            sync.attach(&mut engine);
            while !stop.load(Ordering::Relaxed) {
                sync.step(&mut engine, monotonic_now(), |_| {});
                std::thread::sleep(Duration::from_micros(200));
            }
            engine
        })
    }

    /// Box a carries 50 answered UDP flows (no member policy): its engine
    /// makes them from frames.
    fn carrying(now: Time) -> engine::Engine {
        use engine::Side;
        use wire::build::{udp, Eth};
        let eth =
            Eth { src: wire::ethernet::MacAddr([2, 0, 0, 0, 0, 1]), dst: wire::ethernet::MacAddr([2; 6]), vlan: None };
        let mut e = engine::Engine::new(engine::Config::default(), now);
        e.sync_with_peer(1024);
        let (inside, far) = ("10.0.0.1".parse().unwrap(), "192.0.2.1".parse().unwrap());
        for port in 1000..1050u16 {
            for (from, src, dst, sp, dp) in
                [(Side::Inside, inside, far, port, 53), (Side::Outside, far, inside, 53, port)]
            {
                let mut b = vec![0u8; 256];
                let n = udp(&mut b, &eth, src, dst, sp, dp, 8).unwrap();
                b.truncate(n);
                let mut v = [engine::Verdict::Held];
                e.process(now, from, &mut [b], &mut v);
                assert!(matches!(v[0], engine::Verdict::Forward(_)), "{v:?}");
            }
        }
        e
    }

    /// The whole path of a restart: b holds copies of a's 50 flows; a
    /// restarts (a new session, an empty table); b's sync thread asks its
    /// worker to adopt the copies before any record of the new session
    /// reaches it, so the new session's first resync sweeps none of them,
    /// and b sends them to the new a.
    #[test]
    fn copies_survive_the_first_resync_of_a_restarted_peer() {
        let two = Two::new();
        let (at_a, at_b) = (two.a, two.b);
        let now = monotonic_now();
        let (b, a) = (two.start(at_b, at_a), two.start(at_a, at_b));
        let stop = Arc::new(AtomicBool::new(false));
        let b_worker =
            worker(b.attach(1).pop().unwrap(), engine::Engine::new(engine::Config::default(), now), Arc::clone(&stop));
        let a_stop = Arc::new(AtomicBool::new(false));
        let a_worker = worker(a.attach(1).pop().unwrap(), carrying(now), Arc::clone(&a_stop));
        let counter = |p: &Pair, name: &str| p.stats().counters.get(name).copied().unwrap_or(0);
        until("b installing a's 50 flows", || counter(&b, "worker_installed") >= 50);
        // a restarts with nothing.
        a_stop.store(true, Ordering::Relaxed);
        drop(a_worker.join());
        a.stop();
        let a = two.start(at_a, at_b);
        let a_stop = Arc::new(AtomicBool::new(false));
        let a_worker = worker(
            a.attach(1).pop().unwrap(),
            engine::Engine::new(engine::Config::default(), monotonic_now()),
            Arc::clone(&a_stop),
        );
        until("both complete", || a.stats().complete && b.stats().complete && counter(&a, "worker_installed") >= 50);
        assert_eq!(counter(&b, "worker_adopted"), 50, "{:?}", b.stats().counters);
        assert_eq!(counter(&b, "worker_swept"), 0, "{:?}", b.stats().counters);
        stop.store(true, Ordering::Relaxed);
        a_stop.store(true, Ordering::Relaxed);
        let (b_engine, a_engine) = (b_worker.join().unwrap(), a_worker.join().unwrap());
        assert_eq!((b_engine.conntrack().len(), a_engine.conntrack().len()), (50, 50));
        a.stop();
        b.stop();
    }
}
