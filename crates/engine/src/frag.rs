//! IP fragments: every fragment of a datagram gets the verdict of the first.
//!
//! torwart does not reassemble: it forwards fragments as they are, and what
//! it must know about each is the verdict of the datagram's *first*
//! fragment, the only one that carries the transport header (ports, TCP
//! flags). A datagram entry, keyed by (arrival side, source, destination,
//! protocol, identification), remembers that verdict until the datagram is
//! complete or its time is up (virtual reassembly, as VPP and most
//! firewalls do it). IPv6 datagrams are keyed without the protocol (RFC 8200
//! keys them by addresses and identification; the protocol a first fragment
//! shows may lie behind more extension headers than a later one's).
//!
//! Rules, each with its own drop reason:
//! * A fragment that overlaps another of the same datagram is dropped and
//!   the datagram is poisoned: later fragments are dropped too, and so are
//!   any held (RFC 5722 for IPv6; for IPv4 overlaps are the classic evasion,
//!   RFC 1858). An exact duplicate of a later fragment is a retransmission
//!   and gets the datagram's verdict; a second first fragment is judged
//!   again, and poisons the datagram if its transport key differs.
//! * A TCP fragment at offset 8 is an overlap attack on the TCP flags (RFC 1858).
//! * A non-last fragment whose length is not a multiple of 8, and a
//!   datagram that would end beyond 65,535 bytes, are malformed.
//! * At most [`MAX_PIECES`] fragments per datagram.
//! * Too-small first fragments and a first IPv6 fragment that does not
//!   hold the whole header chain (RFC 7112) are refused by the parser.
//!
//! Fragments that arrive before their first fragment are copied into a
//! small stash of fixed buffers and released (or dropped) when the first
//! arrives. Stash and datagram table are bounded; when the table is full, a
//! first fragment may evict a datagram whose first fragment never came,
//! was refused or was poisoned (a flood of stray later fragments, of
//! overlapping ones, or of first fragments nobody answers, must not block
//! real traffic; the evicted datagram's later fragments find no verdict,
//! are held and time out, so none passes), and failing that the oldest
//! datagram of a sample of the table, even one being forwarded.
//! Entries expire on a timing wheel. Memory is fixed at start.

use crate::counters::{DropReason, Reason};
use crate::table::{FlowIndex, Hasher, Slot};
use crate::time::Time;
use crate::wheel::{Due, Wheel};
use crate::Side;
use core::time::Duration;
use std::collections::VecDeque;
use wire::classify::Fragment;
use wire::flow::Family;
use wire::FlowKey;

/// Fragments tracked per datagram.
pub const MAX_PIECES: usize = 16;
/// Fragments held per datagram while its first fragment is missing.
pub const MAX_HELD: usize = 8;
/// Largest fragment the stash holds.
pub const STASH_FRAME: usize = 2048;

/// A flow a datagram's fragments are accounted to: slab index, direction,
/// and the key it had, to tell it from a later flow in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRef {
    pub flow: u32,
    pub dir: u8,
    pub key: FlowKey,
}

/// What happens to a datagram's fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first fragment has not been seen yet.
    Pending,
    /// Forward towards `to`, translated as `flow` says (if any).
    Forward { to: Side, flow: Option<FlowRef> },
    /// Drop with the first fragment's reason.
    Drop(DropReason),
    /// An overlap was seen: drop everything.
    Poisoned,
}

#[derive(Clone, Copy, Debug)]
struct Datagram {
    key: FlowKey,
    side: Side,
    live: bool,
    /// The first fragment's transport key, once seen.
    first: Option<FlowKey>,
    expires: Time,
    outcome: Outcome,
    pieces: [(u16, u16); MAX_PIECES],
    n_pieces: u8,
    /// End of the datagram, once the last fragment has been seen.
    end: Option<u16>,
    bytes: u32,
    held: [u16; MAX_HELD],
    n_held: u8,
    hash: u64,
    slot: Slot,
}

#[derive(Debug)]
struct Held {
    data: Box<[u8]>,
    len: usize,
}

/// What the engine should do with a fragment it has just shown us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Apply the datagram's outcome (already decided) to this fragment.
    Decided(Outcome),
    /// The first fragment: decide, then call [`Fragments::decide`].
    First(u32),
    /// Not decided yet: hold it ([`Fragments::hold`]).
    Undecided(u32),
}

/// A refusal, and how many held fragments it took down with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub also_dropped: u32,
}

impl From<Reason> for Refused {
    fn from(reason: Reason) -> Self {
        Refused { reason, also_dropped: 0 }
    }
}

#[derive(Debug)]
pub struct Fragments {
    index: FlowIndex,
    hasher: Hasher,
    entries: Vec<Datagram>,
    free: Vec<u32>,
    wheel: Wheel,
    stash: Vec<Held>,
    stash_free: Vec<u16>,
    /// Held fragments ready to go: (stash slot, came from, towards, accounted flow).
    released: VecDeque<(u16, Side, Side, Option<FlowRef>)>,
    timeout: Duration,
}

/// The key a datagram's fragments share (the side is compared apart).
pub fn datagram_key(flow: &FlowKey, ident: u32) -> FlowKey {
    let k = flow.with_ports((ident >> 16) as u16, ident as u16);
    match k.family {
        Family::V4 => k,
        Family::V6 => FlowKey { proto: 0, ..k },
    }
}

impl Fragments {
    pub fn new(datagrams: u32, stash: u16, timeout: Duration, key: [u64; 4], now: Time) -> Fragments {
        let n = datagrams.max(1) as usize;
        let blank = Datagram {
            key: FlowKey::v4([0; 4].into(), [0; 4].into(), 0, 0, 0),
            side: Side::Inside,
            live: false,
            first: None,
            expires: Time::ZERO,
            outcome: Outcome::Pending,
            pieces: [(0, 0); MAX_PIECES],
            n_pieces: 0,
            end: None,
            bytes: 0,
            held: [0; MAX_HELD],
            n_held: 0,
            hash: 0,
            slot: FlowIndex::NO_SLOT,
        };
        Fragments {
            index: FlowIndex::with_capacity(n),
            hasher: Hasher::new([key[1], key[2], key[3], key[0] ^ 0x6672_6167]),
            entries: vec![blank; n],
            free: (0..n as u32).rev().collect(),
            wheel: Wheel::new(n, Duration::from_millis(100), now),
            stash: (0..stash).map(|_| Held { data: vec![0; STASH_FRAME].into(), len: 0 }).collect(),
            stash_free: (0..stash).rev().collect(),
            released: VecDeque::with_capacity(stash as usize),
            timeout,
        }
    }

    /// Datagrams being tracked now.
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn hash(&self, key: &FlowKey, side: Side) -> u64 {
        self.hasher.hash(key) ^ (side as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn find(&self, key: &FlowKey, side: Side) -> Option<u32> {
        let h = self.hash(key, side);
        let entries = &self.entries;
        self.index.find(h, |e| entries[e as usize].key == *key && entries[e as usize].side == side).map(|(e, _)| e)
    }

    /// A new entry; a first fragment may evict a datagram whose first never
    /// came or was refused.
    fn create(&mut self, now: Time, key: FlowKey, side: Side, first: bool) -> Result<(u32, u32), Reason> {
        let h = self.hash(&key, side);
        let mut dropped = 0;
        if self.free.is_empty() || first && self.index.neighbours(h).count() >= crate::table::MAX_PROBE * 8 {
            if !first {
                return Err(Reason::FragmentTableFull);
            }
            let entries = &self.entries;
            // Nothing of these passes: undecided, refused, or poisoned (all
            // of its fragments are dropped; a datagram evicted poisoned has
            // nothing to forget, since none of its fragments went out).
            let evictable = |e: &u32| {
                matches!(entries[*e as usize].outcome, Outcome::Pending | Outcome::Drop(_) | Outcome::Poisoned)
            };
            let victim = self.index.neighbours(h).find(evictable);
            let victim = match victim {
                Some(v) => Some(v),
                None if self.free.is_empty() => {
                    // Any undecided, refused or poisoned datagram will do: a
                    // sample of the table. Else the oldest of the sample,
                    // even one being forwarded: first fragments that are
                    // let through and never completed (through a port
                    // forward, or an open flow) must not fill the table for
                    // the timeout. Its later fragments then find no verdict:
                    // held, they time out (as Linux drops the oldest
                    // reassembly queues when fragments fill their memory).
                    let sample = || {
                        (0..entries.len().min(64) as u32)
                            .map(|i| (h as u32).wrapping_add(i) % entries.len() as u32)
                            .filter(|e| entries[*e as usize].live)
                    };
                    sample().find(evictable).or_else(|| sample().min_by_key(|e| entries[*e as usize].expires))
                }
                None => None,
            };
            match victim {
                Some(v) => dropped = self.release_entry(v),
                None => return Err(Reason::FragmentTableFull),
            }
        }
        let e = self.free.pop().ok_or(Reason::FragmentTableFull)?;
        let Some(slot) = self.index.insert(h, e) else {
            self.free.push(e);
            return Err(Reason::FragmentTableFull);
        };
        let expires = now + self.timeout;
        self.entries[e as usize] = Datagram {
            key,
            side,
            live: true,
            first: None,
            expires,
            outcome: Outcome::Pending,
            n_pieces: 0,
            end: None,
            bytes: 0,
            n_held: 0,
            hash: h,
            slot,
            ..self.entries[e as usize]
        };
        self.wheel.insert(e, expires);
        Ok((e, dropped))
    }

    /// Records a fragment (`len` bytes of the datagram at `frag.offset`) of
    /// the datagram `key` arriving from `side`; `first_key` is the transport
    /// key of a first fragment.
    pub fn piece(
        &mut self,
        now: Time,
        key: FlowKey,
        side: Side,
        frag: Fragment,
        len: u16,
        tcp: bool,
        first_key: &FlowKey,
    ) -> Result<(Piece, u32), Refused> {
        let start = frag.offset;
        let end = u32::from(start) + u32::from(len);
        if end > 65_535 || (frag.more && len % 8 != 0) {
            return Err(Reason::FragmentBadLength.into());
        }
        if tcp && start == 8 {
            return Err(Reason::FragmentOverlap.into());
        }
        let end = end as u16;
        let (e, evicted) = match self.find(&key, side) {
            Some(e) => (e, 0),
            None => self.create(now, key, side, start == 0)?,
        };
        let d = &mut self.entries[e as usize];
        if d.outcome == Outcome::Poisoned {
            return Ok((Piece::Decided(Outcome::Poisoned), evicted));
        }
        let pieces = &d.pieces[..d.n_pieces as usize];
        if pieces.contains(&(start, end)) {
            if start == 0 {
                // A second first fragment: judged again, and if it names
                // another connection than the first one did, an attack.
                if d.first != Some(*first_key) {
                    let also = self.poison(e);
                    return Err(Refused { reason: Reason::FragmentOverlap, also_dropped: also + evicted });
                }
                return Ok((Piece::First(e), evicted));
            }
            // A retransmitted later fragment: same verdict, nothing new learnt.
            return Ok((
                match d.outcome {
                    Outcome::Pending => Piece::Undecided(e),
                    o => Piece::Decided(o),
                },
                evicted,
            ));
        }
        let overlaps = pieces.iter().any(|&(s, x)| start < x && end > s)
            || d.end.is_some_and(|t| end > t)
            || (!frag.more && d.end.is_some())
            || (!frag.more && pieces.iter().any(|&(_, x)| x > end));
        if overlaps {
            let also = self.poison(e);
            return Err(Refused { reason: Reason::FragmentOverlap, also_dropped: also + evicted });
        }
        if d.n_pieces as usize == MAX_PIECES {
            let also = self.poison(e);
            return Err(Refused { reason: Reason::FragmentTooMany, also_dropped: also + evicted });
        }
        d.pieces[d.n_pieces as usize] = (start, end);
        d.n_pieces += 1;
        d.bytes += u32::from(len);
        if !frag.more {
            d.end = Some(end);
        }
        if start == 0 {
            d.first = Some(*first_key);
            return Ok((Piece::First(e), evicted));
        }
        let piece = match d.outcome {
            Outcome::Pending => Piece::Undecided(e),
            o => Piece::Decided(o),
        };
        if let Piece::Decided(_) = piece {
            self.finish_if_complete(e);
        }
        Ok((piece, evicted))
    }

    /// Sets the outcome of datagram `e` from its first fragment's verdict and
    /// releases (or drops) the fragments held for it. Returns how many held
    /// fragments were dropped.
    pub fn decide(&mut self, e: u32, outcome: Outcome) -> u32 {
        let d = &mut self.entries[e as usize];
        d.outcome = outcome;
        let from = d.side;
        let held = d.held;
        let n = d.n_held as usize;
        d.n_held = 0;
        let mut dropped = 0;
        for &slot in &held[..n] {
            match outcome {
                Outcome::Forward { to, flow } => self.released.push_back((slot, from, to, flow)),
                _ => {
                    self.stash_free.push(slot);
                    dropped += 1;
                }
            }
        }
        self.finish_if_complete(e);
        dropped
    }

    /// Copies a fragment whose datagram is undecided into the stash.
    pub fn hold(&mut self, e: u32, bytes: &[u8]) -> Result<(), Reason> {
        let d = &mut self.entries[e as usize];
        if d.n_held as usize == MAX_HELD || bytes.len() > STASH_FRAME {
            return Err(Reason::FragmentTableFull);
        }
        let slot = self.stash_free.pop().ok_or(Reason::FragmentTableFull)?;
        let h = &mut self.stash[slot as usize];
        h.data[..bytes.len()].copy_from_slice(bytes);
        h.len = bytes.len();
        d.held[d.n_held as usize] = slot;
        d.n_held += 1;
        Ok(())
    }

    /// Frees the entry once every byte has been seen and nothing is held.
    fn finish_if_complete(&mut self, e: u32) {
        let d = &self.entries[e as usize];
        if d.live && d.n_held == 0 && d.outcome != Outcome::Pending && d.end.is_some_and(|t| u32::from(t) == d.bytes) {
            self.release_entry(e);
        }
    }

    /// Marks datagram `e` poisoned; returns how many held fragments it dropped.
    fn poison(&mut self, e: u32) -> u32 {
        let d = &mut self.entries[e as usize];
        d.outcome = Outcome::Poisoned;
        let n = d.n_held as usize;
        d.n_held = 0;
        let held = d.held;
        self.stash_free.extend_from_slice(&held[..n]);
        n as u32
    }

    /// Frees entry `e`; returns how many held fragments went with it.
    fn release_entry(&mut self, e: u32) -> u32 {
        let d = &mut self.entries[e as usize];
        if !d.live {
            return 0;
        }
        d.live = false;
        let n = d.n_held as usize;
        d.n_held = 0;
        let (held, hash, slot) = (d.held, d.hash, d.slot);
        self.stash_free.extend_from_slice(&held[..n]);
        self.index.remove(hash, slot);
        self.wheel.remove(e);
        self.free.push(e);
        n as u32
    }

    /// Ends datagrams whose time is up. Returns how many held fragments
    /// were dropped with them (counted as [`Reason::FragmentTimeout`]).
    pub fn expire(&mut self, now: Time, budget: usize) -> u64 {
        let entries = &self.entries;
        let mut done: [u32; 64] = [0; 64];
        let mut n_done = 0;
        self.wheel.advance(now, budget.min(done.len()), |e| {
            let d = &entries[e as usize];
            if d.expires > now {
                return Due::Later(d.expires);
            }
            done[n_done] = e;
            n_done += 1;
            Due::Expired
        });
        let mut timed_out = 0u64;
        for &e in &done[..n_done] {
            timed_out += u64::from(self.release_entry(e));
        }
        timed_out
    }

    /// Hands each released fragment to `out` with the side it came from, the
    /// side it goes towards and the flow it belongs to.
    pub fn poll_released(&mut self, mut out: impl FnMut(Side, Side, Option<FlowRef>, &mut [u8])) -> usize {
        let mut n = 0;
        while let Some((slot, from, to, flow)) = self.released.pop_front() {
            let h = &mut self.stash[slot as usize];
            out(from, to, flow, &mut h.data[..h.len]);
            self.stash_free.push(slot);
            n += 1;
        }
        n
    }

    /// Fragments released and not yet polled.
    pub fn pending_release(&self) -> usize {
        self.released.len()
    }
}
