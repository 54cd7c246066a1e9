//! One box's end of the sync link, as a state machine on the caller's clock.
//!
//! The caller feeds it what arrives ([`Peer::handle_datagram`]) and the
//! records its workers produce ([`Peer::push`]), and asks it what to send
//! ([`Peer::poll_transmit`]), when to wake ([`Peer::poll_timeout`]) and what
//! happened ([`Peer::poll_event`]). It never reads a clock or touches a
//! socket, so the tests run it over a simulated link with loss, reordering,
//! duplication, partitions and a forger, in virtual time.
//!
//! **Sessions.** Each start of a box is a session with an unpredictable
//! 64-bit id. A box accepts a new session of its peer only from a hello
//! that echoes the challenge it issued last, and issues a new challenge on
//! every acceptance; so a message recorded earlier, even a whole old
//! session's, can never be replayed into the current one. Data is accepted
//! only from the accepted session and only when addressed to this box's
//! current session. Every datagram is numbered; only a number higher than
//! any seen before counts as a sign of life, so replayed hellos cannot keep
//! a dead peer looking alive.
//!
//! **Delivery.** Data datagrams carry consecutive sequence numbers. The
//! receiver delivers their records in order, exactly once: duplicates are
//! dropped, datagrams that arrive early wait in a bounded reorder window.
//! Every datagram carries a cumulative and a 64-bit selective
//! acknowledgement; the sender keeps what is unacknowledged in a bounded
//! window and sends it again after a timeout that doubles per try (up to
//! a second). All memory is allocated at construction: a window of
//! datagrams each way and a queue of records.
//!
//! **Completeness.** A receiver is *complete* once a full resync from the
//! peer's current session has ended and no record was lost after it. The
//! sender asks its caller for a resync ([`Event::Resync`]) when a new peer
//! session is accepted and when it had to drop records because its queue
//! was full (then it sends [`Record::Gap`] first). [`Peer::ready`] is what
//! a failover script asks: false only while a live peer is still sending
//! state this box does not have yet.

use crate::key::{Key, Keys};
use crate::message::{self, Header, Kind, Refused, HEADER_LEN};
use crate::record::{self, FlowRecord, Record, MAX_RECORD_LEN};
use core::time::Duration;
use engine::Time;
use std::collections::VecDeque;

/// Sessions of the peer remembered with the newest datagram number heard
/// from each (see [`Peer`]'s `candidates`).
const CANDIDATES: usize = 16;
/// Data datagrams a receiver takes before it acknowledges at once.
const ACK_EVERY: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest datagram sent (the sync link's MTU less IP and UDP headers).
    pub max_datagram: usize,
    /// Data datagrams sent and not yet acknowledged, at most.
    pub send_window: usize,
    /// Data datagrams received ahead of a missing one, at most.
    pub reorder_window: usize,
    /// Records waiting to be sent, at most; beyond it they are lost and a
    /// resync follows.
    pub queue: usize,
    /// First resend of an unacknowledged datagram; doubles per try.
    pub resend_after: Duration,
    /// Acknowledgements wait at most this long for data to ride on.
    pub ack_delay: Duration,
    /// A hello is sent this often (liveness, and the handshake).
    pub hello_every: Duration,
    /// The peer is considered gone after this long without a word.
    pub dead_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_datagram: 1452,
            send_window: 512,
            reorder_window: 1024,
            queue: 32768,
            resend_after: Duration::from_millis(30),
            ack_delay: Duration::from_millis(2),
            hello_every: Duration::from_millis(200),
            dead_after: Duration::from_secs(1),
        }
    }
}

/// What the caller must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session of the peer was accepted (it started, or this box did).
    PeerUp { session: u64 },
    /// Nothing heard from the peer for [`Config::dead_after`].
    PeerLost,
    /// Push every flow and the usage not yet written, then call
    /// [`Peer::resync_done`] with this id. A newer id replaces an older one.
    Resync { id: u32 },
    /// The peer's full resync ended: this box holds all of its state.
    Complete,
}

/// Counts of everything the peer did and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub data_sent: u64,
    pub resent: u64,
    pub acks_sent: u64,
    pub hellos_sent: u64,
    pub records_sent: u64,
    pub records_received: u64,
    /// Records dropped because the queue was full (a resync follows).
    pub records_lost: u64,
    pub refused_too_short: u64,
    pub refused_too_long: u64,
    pub refused_magic: u64,
    pub refused_unknown_key: u64,
    /// Forged or corrupted: the tag did not match.
    pub refused_tag: u64,
    pub refused_malformed: u64,
    /// Authenticated, but from a session not (or no longer) accepted.
    pub refused_session: u64,
    /// An authenticated hello no newer than one already heard from its
    /// session: a replay (or a duplicate); its challenge is not taken.
    pub refused_replay: u64,
    /// Data already delivered (a resend, or a replay).
    pub duplicates: u64,
    /// Data too far ahead of what is missing.
    pub beyond_window: u64,
    pub sessions_accepted: u64,
    pub resyncs_started: u64,
    pub resyncs_completed: u64,
}

impl Counters {
    /// Every counter with its name.
    pub fn named(&self) -> [(&'static str, u64); 22] {
        [
            ("datagrams_sent", self.datagrams_sent),
            ("datagrams_received", self.datagrams_received),
            ("data_sent", self.data_sent),
            ("resent", self.resent),
            ("acks_sent", self.acks_sent),
            ("hellos_sent", self.hellos_sent),
            ("records_sent", self.records_sent),
            ("records_received", self.records_received),
            ("records_lost", self.records_lost),
            ("refused_too_short", self.refused_too_short),
            ("refused_too_long", self.refused_too_long),
            ("refused_magic", self.refused_magic),
            ("refused_unknown_key", self.refused_unknown_key),
            ("refused_tag", self.refused_tag),
            ("refused_malformed", self.refused_malformed),
            ("refused_session", self.refused_session),
            ("refused_replay", self.refused_replay),
            ("duplicates", self.duplicates),
            ("beyond_window", self.beyond_window),
            ("sessions_accepted", self.sessions_accepted),
            ("resyncs_started", self.resyncs_started),
            ("resyncs_completed", self.resyncs_completed),
        ]
    }
}

/// A snapshot for status pages and the readiness check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub session: u64,
    pub peer_session: Option<u64>,
    pub peer_alive: bool,
    /// This box holds all of the peer's state (see the module doc).
    pub complete: bool,
    /// Records waiting, and datagrams sent and not yet acknowledged.
    pub queued: usize,
    pub unacked: usize,
    /// The resync this box is sending, if one is under way.
    pub resync: Option<u32>,
    /// The protocol version the peer's hellos give ([`PROTOCOL`]; 0 from
    /// the first release), once one was heard.
    pub peer_protocol: Option<u64>,
}

/// Unpredictable 64-bit values from a caller-provided seed.
#[derive(Debug)]
struct Nonces {
    key: Key,
    counter: u64,
}

impl Nonces {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        let tag = self.key.tag(&self.counter.to_be_bytes());
        // Never 0: 0 means "none" in the header.
        u64::from_be_bytes([tag[0], tag[1], tag[2], tag[3], tag[4], tag[5], tag[6], tag[7]]).max(1)
    }
}

/// This release's protocol version, given in every hello's `seq` (which
/// hellos did not use, and the first release ignores): 2 adds the flag
/// that says a flow record is the sender's copy of the receiver's flow,
/// which release 1 refuses, so it is left out for a peer below 2.
pub const PROTOCOL: u64 = 2;
/// The version from which a peer reads the copy flag.
const COPIES_SINCE: u64 = 2;

#[derive(Clone, Copy, Debug)]
struct Them {
    session: u64,
    heard: Time,
    /// The highest datagram number seen from them.
    number: u64,
    /// They have addressed us by our session: they accepted it.
    know_us: bool,
    lost: bool,
    /// The protocol version their hellos give ([`PROTOCOL`]; 0 from the
    /// first release, which did not say).
    version: u64,
}

impl Them {
    /// A datagram numbered `number` came from them.
    fn heard_from(&mut self, now: Time, number: u64) {
        if number > self.number {
            self.number = number;
            self.heard = now;
            self.lost = false;
        }
    }
}

/// A sent data datagram waiting for its acknowledgement.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    len: usize,
    tries: u32,
    acked: bool,
}

#[derive(Debug)]
pub struct Peer {
    cfg: Config,
    keys: Keys,
    nonces: Nonces,
    session: u64,
    challenge: u64,
    /// The newest challenge the peer issued, echoed in our hellos.
    their_challenge: u64,
    /// Sessions of the peer heard but not accepted (and those replaced),
    /// with the highest datagram number seen from each: an older hello of
    /// one is a replay, and its challenge is not echoed.
    candidates: [(u64, u64); CANDIDATES],
    next_candidate: usize,
    them: Option<Them>,
    started: Time,
    /// Datagrams sent in this session.
    number: u64,
    next_hello: Time,
    /// Answer a hello at once (rate-limited by `hello_floor`).
    hello_now: bool,
    hello_floor: Time,

    // Sending.
    queue: VecDeque<Record>,
    gap: bool,
    next_seq: u64,
    /// Lowest sequence number not yet acknowledged.
    base: u64,
    window: Vec<Sent>,
    window_bytes: Vec<u8>,
    /// `(due, seq, tries)` resend timers in the order they were set.
    timers: VecDeque<(Time, u64, u32)>,
    resync: Option<u32>,
    resync_id: u32,

    // Receiving.
    /// Next data sequence number to deliver.
    expect: u64,
    early: Vec<Option<usize>>,
    early_bytes: Vec<u8>,
    ack_due: Option<Time>,
    /// Data datagrams taken since the last acknowledgement was sent.
    unacked_in: u32,
    complete: bool,
    /// This box held the peer's whole state once in this run (see
    /// [`Peer::ready`]).
    been_complete: bool,

    events: VecDeque<Event>,
    counters: Counters,
}

impl Peer {
    /// A new session. `seed` must be unpredictable (32 random bytes); it
    /// makes the session id and every challenge.
    pub fn new(cfg: Config, keys: Keys, seed: [u8; 32], now: Time) -> Peer {
        let max = cfg.max_datagram.clamp(message::MIN_LEN + MAX_RECORD_LEN, message::MAX_LEN);
        let cfg = Config {
            max_datagram: max,
            send_window: cfg.send_window.clamp(1, 1 << 16),
            reorder_window: cfg.reorder_window.clamp(1, 1 << 16),
            queue: cfg.queue.max(16),
            ..cfg
        };
        let mut nonces = Nonces { key: Key::new(&seed), counter: 0 };
        let session = nonces.next();
        let challenge = nonces.next();
        let payload = max - message::MIN_LEN;
        Peer {
            keys,
            session,
            challenge,
            their_challenge: 0,
            candidates: [(0, 0); CANDIDATES],
            next_candidate: 0,
            them: None,
            started: now,
            number: 0,
            next_hello: now,
            hello_now: false,
            hello_floor: now,
            queue: VecDeque::with_capacity(cfg.queue),
            gap: false,
            next_seq: 1,
            base: 1,
            window: vec![Sent::default(); cfg.send_window],
            window_bytes: vec![0; cfg.send_window * payload],
            timers: VecDeque::with_capacity(cfg.send_window),
            resync: None,
            resync_id: 0,
            expect: 1,
            early: vec![None; cfg.reorder_window],
            early_bytes: vec![0; cfg.reorder_window * payload],
            ack_due: None,
            unacked_in: 0,
            complete: false,
            been_complete: false,
            events: VecDeque::with_capacity(8),
            counters: Counters::default(),
            nonces,
            cfg,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn status(&self, now: Time) -> Status {
        Status {
            session: self.session,
            peer_session: self.them.map(|t| t.session),
            peer_alive: self.alive(now),
            complete: self.complete,
            queued: self.queue.len(),
            unacked: (self.next_seq - self.base) as usize,
            resync: self.resync,
            peer_protocol: self.them.map(|t| t.version),
        }
    }

    /// May this box take over its peer's traffic (or keep it)? Not while
    /// a live peer is still sending the state of a box that has not held
    /// it yet in this run; yes when the peer is gone (there is nothing more
    /// to wait for). A box just started waits [`Config::dead_after`] to
    /// hear from a peer first: a box returning after a failure must not
    /// take the traffic back before it holds the state of the connections
    /// its peer carried meanwhile.
    ///
    /// Once this box held the peer's whole state, it stays ready: a later
    /// resync (the peer restarted and sends its own, nearly empty, state;
    /// a gap) must not make the box that carries the traffic give it up,
    /// to a peer that holds even less.
    pub fn ready(&self, now: Time) -> bool {
        match self.them {
            Some(_) => self.been_complete || self.complete || !self.alive(now),
            None => now.since(self.started) >= self.cfg.dead_after,
        }
    }

    fn alive(&self, now: Time) -> bool {
        self.them.is_some_and(|t| now.since(t.heard) < self.cfg.dead_after)
    }

    /// Room left in the queue. A resync pushes only while there is room,
    /// so that it never crowds out the changes of live flows.
    pub fn room(&self) -> usize {
        self.cfg.queue.saturating_sub(self.queue.len() + 1)
    }

    /// Queues a record for the peer. With the queue full it is lost and
    /// counted, and a resync follows once there is room again.
    pub fn push(&mut self, r: Record) -> bool {
        if self.them.is_none() {
            // Nobody to send to: the resync on acceptance will carry it.
            return false;
        }
        if self.gap && self.queue.len() + 3 <= self.cfg.queue {
            self.gap = false;
            self.queue.push_back(Record::Gap);
            self.start_resync();
        }
        if self.gap || self.queue.len() >= self.cfg.queue {
            self.gap = true;
            self.counters.records_lost += 1;
            return false;
        }
        self.queue.push_back(r);
        true
    }

    /// `n` records were lost before they reached [`push`](Self::push) (a
    /// worker's ring was full): the peer is told, and a resync follows.
    pub fn lost(&mut self, n: u64) {
        if n > 0 && self.them.is_some() {
            self.counters.records_lost += n;
            self.gap = true;
        }
    }

    /// The caller pushed the whole resync `id`: `flows` flows.
    pub fn resync_done(&mut self, id: u32, flows: u64) {
        if self.resync == Some(id) {
            self.resync = None;
            self.push(Record::ResyncEnd { id, flows });
        }
    }

    /// Starts a full resync; the queue has room for its first record.
    fn start_resync(&mut self) {
        self.resync_id = self.resync_id.wrapping_add(1);
        self.resync = Some(self.resync_id);
        self.queue.push_back(Record::ResyncBegin { id: self.resync_id });
        self.counters.resyncs_started += 1;
        self.event(Event::Resync { id: self.resync_id });
    }

    fn event(&mut self, e: Event) {
        // Bounded: a newer resync replaces an older one still waiting.
        if let Event::Resync { .. } = e {
            self.events.retain(|x| !matches!(x, Event::Resync { .. }));
        }
        if self.events.len() < 8 {
            self.events.push_back(e);
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether an event waits for [`poll_event`](Self::poll_event): a
    /// caller that delivers records acts on it before the next datagram's.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Takes one datagram from the link; the records it completes are
    /// given to `deliver` in the order they were sent: its own, and those of
    /// the datagrams that waited in the reorder window behind it (up to the
    /// whole window's).
    pub fn handle_datagram(&mut self, now: Time, datagram: &[u8], deliver: impl FnMut(&Record)) {
        self.take_datagram(now, datagram, deliver, true);
    }

    /// As [`handle_datagram`](Self::handle_datagram), but gives `deliver`
    /// at most the records of the datagram that arrived: those that waited
    /// behind it stay in the reorder window until
    /// [`deliver_next`](Self::deliver_next) takes them, so that a caller
    /// whose own queues are bounded takes them as it has room (filling a
    /// hole may complete a whole window's datagrams at once).
    pub fn handle_datagram_one(&mut self, now: Time, datagram: &[u8], deliver: impl FnMut(&Record)) {
        self.take_datagram(now, datagram, deliver, false);
    }

    /// Gives `deliver` the records of the next datagram in order, if it
    /// waits in the reorder window; false if none does.
    pub fn deliver_next(&mut self, now: Time, mut deliver: impl FnMut(&Record)) -> bool {
        if self.them.is_none() {
            return false;
        }
        let slot = (self.expect % self.cfg.reorder_window as u64) as usize;
        let Some(len) = self.early[slot].take() else { return false };
        let size = self.payload_size();
        let bytes = core::mem::take(&mut self.early_bytes);
        self.deliver(&bytes[slot * size..slot * size + len], &mut deliver);
        self.early_bytes = bytes;
        self.expect += 1;
        // The cumulative acknowledgement moved.
        self.ack_due.get_or_insert(now + self.cfg.ack_delay);
        true
    }

    fn take_datagram(&mut self, now: Time, datagram: &[u8], mut deliver: impl FnMut(&Record), drain: bool) {
        // Both boxes must agree on the largest datagram: one larger than
        // this box's would not fit its reorder window's slots.
        if datagram.len() > self.cfg.max_datagram {
            return self.refused(Refused::TooLong);
        }
        let (kind, h, payload) = match message::open(&self.keys, datagram) {
            Ok(m) => m,
            Err(e) => return self.refused(e),
        };
        self.counters.datagrams_received += 1;
        if h.sender == self.session {
            // This box's own datagram sent back to it (the key is the same
            // both ways): a reflection, which would make it accept itself
            // as a new peer session. Counted as the replay it is.
            self.counters.refused_replay += 1;
            return;
        }
        if kind == Kind::Hello {
            self.hello(now, &h);
            return;
        }
        let Some(them) = self.them.as_mut().filter(|t| t.session == h.sender && h.receiver == self.session) else {
            self.counters.refused_session += 1;
            // Perhaps the peer restarted: offer a handshake.
            self.hello_now = true;
            return;
        };
        them.heard_from(now, h.number);
        them.know_us = true;
        self.acked(h.ack, h.sack);
        if kind == Kind::Data {
            self.data(now, h.seq, payload, &mut deliver, drain);
        }
    }

    fn refused(&mut self, e: Refused) {
        let c = &mut self.counters;
        *match e {
            Refused::TooShort => &mut c.refused_too_short,
            Refused::TooLong => &mut c.refused_too_long,
            Refused::Magic => &mut c.refused_magic,
            Refused::UnknownKey => &mut c.refused_unknown_key,
            Refused::Tag => &mut c.refused_tag,
            Refused::Malformed(_) => &mut c.refused_malformed,
        } += 1;
    }

    fn hello(&mut self, now: Time, h: &Header) {
        // Only a hello newer than any heard from its session gives the
        // challenge to echo: a recorded one, replayed (its session's, or a
        // session's before it), would otherwise make this box echo a stale
        // challenge, and a peer that restarted could never accept it while
        // the replays last.
        if let Some(t) = self.them.as_mut().filter(|t| t.session == h.sender) {
            if h.number > t.number {
                self.their_challenge = h.nonce;
            } else {
                self.counters.refused_replay += 1;
            }
            t.heard_from(now, h.number);
            if h.receiver == self.session {
                t.know_us = true;
            } else {
                // They do not know this session yet: tell them.
                self.hello_now = true;
            }
            return;
        }
        if !self.fresh_candidate(h.sender, h.number) {
            self.counters.refused_replay += 1;
            return;
        }
        self.their_challenge = h.nonce;
        if h.echo == self.challenge {
            self.accept(now, h);
        } else {
            // A session not accepted: a restart of the peer, or a replay.
            // Either way, answer with our challenge; only a live peer
            // holding the key can echo it.
            self.counters.refused_session += 1;
            self.hello_now = true;
        }
    }

    /// Whether datagram `number` is the newest heard from session
    /// `session`, not accepted; remembers it if so.
    fn fresh_candidate(&mut self, session: u64, number: u64) -> bool {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.0 == session && session != 0) {
            if number <= c.1 {
                return false;
            }
            c.1 = number;
            return true;
        }
        self.remember_candidate(session, number);
        true
    }

    fn remember_candidate(&mut self, session: u64, number: u64) {
        self.candidates[self.next_candidate] = (session, number);
        self.next_candidate = (self.next_candidate + 1) % CANDIDATES;
    }

    fn accept(&mut self, now: Time, h: &Header) {
        self.counters.sessions_accepted += 1;
        // The session it replaces: its hellos, replayed, are old.
        if let Some(old) = self.them {
            self.remember_candidate(old.session, old.number);
        }
        self.challenge = self.nonces.next();
        self.them = Some(Them {
            session: h.sender,
            heard: now,
            number: h.number,
            know_us: h.receiver == self.session,
            lost: false,
            version: h.seq,
        });
        // A new peer session: what either side had in flight is moot, the
        // resync that follows carries everything.
        self.queue.clear();
        self.gap = false;
        self.timers.clear();
        self.window.fill(Sent::default());
        self.next_seq = 1;
        self.base = 1;
        self.expect = 1;
        self.early.fill(None);
        self.ack_due = None;
        self.complete = false;
        self.hello_now = true;
        self.event(Event::PeerUp { session: h.sender });
        self.start_resync();
    }

    /// The peer acknowledged every datagram up to `ack`, and those in `sack`.
    fn acked(&mut self, ack: u64, sack: u64) {
        let top = ack.min(self.next_seq.saturating_sub(1));
        while self.base <= top {
            let slot = self.slot(self.base);
            self.window[slot].acked = true;
            self.base += 1;
        }
        for i in 0..64 {
            if sack >> i & 1 == 1 {
                let seq = ack.saturating_add(2 + i);
                if seq >= self.base && seq < self.next_seq {
                    let slot = self.slot(seq);
                    self.window[slot].acked = true;
                }
            }
        }
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.cfg.send_window as u64) as usize
    }

    fn data(&mut self, now: Time, seq: u64, payload: &[u8], deliver: &mut impl FnMut(&Record), drain: bool) {
        if seq < self.expect {
            self.counters.duplicates += 1;
            // Our acknowledgement may have been lost: send it again.
            self.ack_due = Some(now);
            return;
        }
        let ahead = (seq - self.expect) as usize;
        if ahead >= self.cfg.reorder_window {
            self.counters.beyond_window += 1;
            return;
        }
        // Check every record before any is believed.
        if let Err(_e) = record::decode(payload, |_| {}) {
            self.counters.refused_malformed += 1;
            return;
        }
        self.ack_due.get_or_insert(now + self.cfg.ack_delay);
        self.unacked_in += 1;
        if self.unacked_in >= ACK_EVERY {
            // A stream of data: acknowledge at once every so many, so that
            // the sender's window moves without waiting for the delay.
            self.ack_due = Some(now);
        }
        if ahead > 0 {
            let slot = (seq % self.cfg.reorder_window as u64) as usize;
            if self.early[slot].is_some() {
                self.counters.duplicates += 1;
            } else {
                let size = self.payload_size();
                self.early_bytes[slot * size..slot * size + payload.len()].copy_from_slice(payload);
                self.early[slot] = Some(payload.len());
            }
            // Tell the sender about the hole at once.
            self.ack_due = Some(now);
            return;
        }
        // A copy of it may wait in the window (it came early, and again
        // in order): this one is delivered, that one must not be later.
        self.early[(seq % self.cfg.reorder_window as u64) as usize] = None;
        self.deliver(payload, deliver);
        self.expect += 1;
        if drain {
            while self.deliver_next(now, &mut *deliver) {}
        }
    }

    fn deliver(&mut self, payload: &[u8], deliver: &mut impl FnMut(&Record)) {
        let mut complete = self.complete;
        let mut done = false;
        let n = record::decode(payload, |r| {
            match r {
                Record::ResyncEnd { .. } => {
                    complete = true;
                    done = true;
                }
                Record::Gap | Record::ResyncBegin { .. } => complete = false,
                _ => {}
            }
            deliver(&r);
        });
        self.counters.records_received += n.unwrap_or(0) as u64;
        if done {
            self.counters.resyncs_completed += 1;
        }
        if complete && !self.complete {
            self.event(Event::Complete);
        }
        self.complete = complete;
        self.been_complete |= complete;
    }

    fn payload_size(&self) -> usize {
        self.cfg.max_datagram - message::MIN_LEN
    }

    /// When [`poll_transmit`](Self::poll_transmit) will have something to
    /// send (or a peer must be declared lost), if nothing arrives before.
    pub fn poll_timeout(&self) -> Time {
        let mut t = self.next_hello;
        if self.hello_now {
            t = t.min(self.hello_floor);
        }
        if let Some(a) = self.ack_due {
            t = t.min(a);
        }
        if let Some(them) = self.them.filter(|t| !t.lost) {
            t = t.min(them.heard + self.cfg.dead_after);
            if let Some(&(due, _, _)) = self.timers.front() {
                t = t.min(due);
            }
        }
        t
    }

    /// The next datagram to send, written to `buf` (at least
    /// [`Config::max_datagram`] bytes); its length, or `None` for now.
    /// Call until `None` each time the link is writable or a timeout passed.
    pub fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<usize> {
        self.check_lost(now);
        if now >= self.next_hello || (self.hello_now && now >= self.hello_floor) {
            return Some(self.send_hello(now, buf));
        }
        if let Some(n) = self.resend(now, buf) {
            return Some(n);
        }
        if let Some(n) = self.send_data(now, buf) {
            return Some(n);
        }
        if self.ack_due.is_some_and(|a| a <= now) && self.them.is_some() {
            self.counters.acks_sent += 1;
            return Some(self.seal(Kind::Ack, 0, 0, 0, buf));
        }
        None
    }

    fn check_lost(&mut self, now: Time) {
        let dead = self.cfg.dead_after;
        if let Some(t) = self.them.as_mut().filter(|t| !t.lost && now.since(t.heard) >= dead) {
            t.lost = true;
            self.event(Event::PeerLost);
        }
    }

    fn send_hello(&mut self, now: Time, buf: &mut [u8]) -> usize {
        self.hello_now = false;
        self.hello_floor = now + self.cfg.hello_every / 8;
        self.next_hello = now + self.cfg.hello_every;
        self.counters.hellos_sent += 1;
        let (nonce, echo) = (self.challenge, self.their_challenge);
        self.seal(Kind::Hello, PROTOCOL, nonce, echo, buf)
    }

    fn resend(&mut self, now: Time, buf: &mut [u8]) -> Option<usize> {
        if self.them.is_none_or(|t| t.lost) {
            // Hellos find out when the peer is back; then the resends go.
            return None;
        }
        while let Some(&(due, seq, tries)) = self.timers.front() {
            let slot = self.slot(seq);
            let s = self.window[slot];
            if seq < self.base || s.acked || s.tries != tries {
                self.timers.pop_front();
                continue;
            }
            if due > now {
                return None;
            }
            self.timers.pop_front();
            self.counters.resent += 1;
            return Some(self.send_slot(now, seq, buf));
        }
        None
    }

    fn send_data(&mut self, now: Time, buf: &mut [u8]) -> Option<usize> {
        let ready = self.them.is_some_and(|t| t.know_us && !t.lost);
        if !ready || (self.next_seq - self.base) as usize >= self.cfg.send_window {
            return None;
        }
        if self.queue.is_empty() && !self.gap {
            return None;
        }
        if self.queue.is_empty() {
            // Records were lost and nothing is queued behind them.
            self.gap = false;
            self.queue.push_back(Record::Gap);
            self.start_resync();
        }
        let size = self.payload_size();
        let seq = self.next_seq;
        let slot = self.slot(seq);
        let mut len = 0;
        let out = &mut self.window_bytes[slot * size..(slot + 1) * size];
        let mut records = 0;
        let copies_understood = self.them.is_some_and(|t| t.version >= COPIES_SINCE);
        while let Some(r) = self.queue.front() {
            let r = match r {
                Record::Flow(f) if f.copy && !copies_understood => &Record::Flow(FlowRecord { copy: false, ..*f }),
                r => r,
            };
            match record::encode(r, &mut out[len..]) {
                Some(n) => len += n,
                None => break,
            }
            self.queue.pop_front();
            records += 1;
        }
        self.counters.records_sent += records;
        self.counters.data_sent += 1;
        self.window[slot] = Sent { len, tries: 0, acked: false };
        self.next_seq += 1;
        Some(self.send_slot(now, seq, buf))
    }

    /// Sends (again) the data datagram `seq` and sets its resend timer.
    fn send_slot(&mut self, now: Time, seq: u64, buf: &mut [u8]) -> usize {
        let slot = self.slot(seq);
        let size = self.payload_size();
        let Sent { len, tries, .. } = self.window[slot];
        buf[HEADER_LEN..HEADER_LEN + len].copy_from_slice(&self.window_bytes[slot * size..slot * size + len]);
        let wait = self.cfg.resend_after.saturating_mul(1 << tries.min(5)).min(Duration::from_secs(1));
        self.window[slot].tries = tries + 1;
        self.timers.push_back((now + wait, seq, tries + 1));
        self.seal(Kind::Data, seq, 0, 0, buf)
    }

    fn seal(&mut self, kind: Kind, seq: u64, nonce: u64, echo: u64, buf: &mut [u8]) -> usize {
        let (ack, sack) = self.ack_fields();
        self.ack_due = None;
        self.unacked_in = 0;
        self.number += 1;
        let h = Header {
            sender: self.session,
            receiver: self.them.map_or(0, |t| t.session),
            number: self.number,
            seq,
            ack,
            sack,
            nonce,
            echo,
        };
        let payload = if kind == Kind::Data {
            let slot = self.slot(seq);
            self.window[slot].len
        } else {
            0
        };
        self.counters.datagrams_sent += 1;
        message::seal(&self.keys, kind, &h, buf, payload)
    }

    fn ack_fields(&self) -> (u64, u64) {
        let ack = self.expect - 1;
        let mut sack = 0u64;
        for i in 0..64u64 {
            let seq = ack + 2 + i;
            if seq - self.expect >= self.cfg.reorder_window as u64 {
                break;
            }
            if self.early[(seq % self.cfg.reorder_window as u64) as usize].is_some() {
                sack |= 1 << i;
            }
        }
        (ack, sack)
    }
}
