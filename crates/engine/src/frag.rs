//! IP fragments: every fragment of a datagram gets the verdict of the first.
//!
//! torwart does not reassemble: it forwards fragments as they are, and what
//! it must know about each is the verdict of the datagram's *first*
//! fragment, the only one that carries the transport header (ports, TCP
//! flags). A [`Datagram`] entry, keyed by (source, destination, protocol,
//! identification), remembers that verdict until the datagram is complete or
//! its time is up (virtual reassembly, as VPP and most firewalls do it).
//!
//! Rules, each with its own drop reason:
//! * A fragment that overlaps another of the same datagram is dropped and
//!   the datagram is poisoned: later fragments are dropped too (RFC 5722 for
//!   IPv6; for IPv4 overlaps are the classic evasion, RFC 1858). An exact
//!   duplicate is a retransmission and gets the datagram's verdict.
//! * A TCP fragment at offset 8 is an overlap attack on the TCP flags (RFC 1858).
//! * A non-last fragment whose length is not a multiple of 8, and a
//!   datagram that would end beyond 65,535 bytes, are malformed.
//! * At most [`MAX_PIECES`] fragments per datagram.
//! * Too-small first fragments and a first IPv6 fragment that does not
//!   hold the whole header chain (RFC 7112) are refused by the parser.
//!
//! Fragments that arrive before their first fragment are copied into a
//! small stash of fixed buffers and released (or dropped) when the first
//! arrives; stash and datagram table are bounded, and entries expire on a
//! timing wheel. Memory: `datagrams * ~100 B + stash * 2 KiB`, fixed at start.

use crate::counters::{DropReason, Reason};
use crate::time::Time;
use crate::wheel::{Due, Wheel};
use crate::Side;
use ahash::RandomState;
use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use wire::classify::Fragment;
use wire::FlowKey;

/// Fragments tracked per datagram.
pub const MAX_PIECES: usize = 16;
/// Fragments held per datagram while its first fragment is missing.
pub const MAX_HELD: usize = 8;
/// Largest fragment the stash holds.
pub const STASH_FRAME: usize = 2048;

/// What happens to a datagram's fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first fragment has not been seen yet.
    Pending,
    /// Forward towards `to`; `flow` is the flow the first fragment matched
    /// (index, direction), for accounting.
    Forward { to: Side, flow: Option<(u32, u8)> },
    /// Drop with the first fragment's reason.
    Drop(DropReason),
    /// An overlap was seen: drop everything.
    Poisoned,
}

#[derive(Clone, Copy, Debug)]
struct Datagram {
    key: FlowKey,
    live: bool,
    expires: Time,
    outcome: Outcome,
    pieces: [(u16, u16); MAX_PIECES],
    n_pieces: u8,
    /// End of the datagram, once the last fragment has been seen.
    end: Option<u16>,
    bytes: u32,
    held: [u16; MAX_HELD],
    n_held: u8,
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

#[derive(Debug)]
pub struct Fragments {
    index: HashMap<FlowKey, u32, RandomState>,
    entries: Vec<Datagram>,
    free: Vec<u32>,
    wheel: Wheel,
    stash: Vec<Held>,
    stash_free: Vec<u16>,
    /// Held fragments ready to go: (stash slot, towards).
    released: VecDeque<(u16, Side)>,
    timeout: Duration,
}

impl Fragments {
    pub fn new(datagrams: u32, stash: u16, timeout: Duration, key: [u64; 4], now: Time) -> Fragments {
        let n = datagrams.max(1) as usize;
        let blank = Datagram {
            key: FlowKey::v4([0; 4].into(), [0; 4].into(), 0, 0, 0),
            live: false,
            expires: Time::ZERO,
            outcome: Outcome::Pending,
            pieces: [(0, 0); MAX_PIECES],
            n_pieces: 0,
            end: None,
            bytes: 0,
            held: [0; MAX_HELD],
            n_held: 0,
        };
        Fragments {
            index: HashMap::with_capacity_and_hasher(
                n,
                RandomState::with_seeds(key[1], key[2], key[3], key[0] ^ 0x6672_6167),
            ),
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

    /// Records a fragment of the datagram `key` (ports carry the identification,
    /// see [`datagram_key`]) with `len` bytes of IP payload.
    pub fn piece(&mut self, now: Time, key: FlowKey, frag: Fragment, len: u16, tcp: bool) -> Result<Piece, Reason> {
        let start = frag.offset;
        let end = u32::from(start) + u32::from(len);
        if end > 65_535 || (frag.more && len % 8 != 0) {
            return Err(Reason::FragmentBadLength);
        }
        if tcp && start == 8 {
            return Err(Reason::FragmentOverlap);
        }
        let end = end as u16;
        let e = match self.index.get(&key) {
            Some(&e) => e,
            None => {
                let e = self.free.pop().ok_or(Reason::FragmentTableFull)?;
                self.index.insert(key, e);
                let d = &mut self.entries[e as usize];
                *d = Datagram {
                    key,
                    live: true,
                    expires: now + self.timeout,
                    outcome: Outcome::Pending,
                    n_pieces: 0,
                    end: None,
                    bytes: 0,
                    n_held: 0,
                    ..*d
                };
                self.wheel.insert(e, d.expires);
                e
            }
        };
        let d = &mut self.entries[e as usize];
        if d.outcome == Outcome::Poisoned {
            return Ok(Piece::Decided(Outcome::Poisoned));
        }
        let pieces = &d.pieces[..d.n_pieces as usize];
        if pieces.contains(&(start, end)) {
            // A retransmitted fragment: same verdict, nothing new learnt.
            return Ok(match d.outcome {
                Outcome::Pending => Piece::Undecided(e),
                o => Piece::Decided(o),
            });
        }
        let overlaps = pieces.iter().any(|&(s, x)| start < x && end > s)
            || d.end.is_some_and(|t| end > t)
            || (!frag.more && d.end.is_some())
            || (!frag.more && pieces.iter().any(|&(_, x)| x > end));
        if overlaps {
            self.poison(e);
            return Err(Reason::FragmentOverlap);
        }
        if d.n_pieces as usize == MAX_PIECES {
            self.poison(e);
            return Err(Reason::FragmentTooMany);
        }
        d.pieces[d.n_pieces as usize] = (start, end);
        d.n_pieces += 1;
        d.bytes += u32::from(len);
        if !frag.more {
            d.end = Some(end);
        }
        Ok(if start == 0 {
            Piece::First(e)
        } else {
            match d.outcome {
                Outcome::Pending => Piece::Undecided(e),
                o => Piece::Decided(o),
            }
        })
    }

    /// Sets the outcome of datagram `e` from its first fragment's verdict and
    /// releases (or drops) the fragments held for it. Returns how many held
    /// fragments were dropped.
    pub fn decide(&mut self, e: u32, outcome: Outcome) -> u32 {
        let d = &mut self.entries[e as usize];
        d.outcome = outcome;
        let held = d.held;
        let n = d.n_held as usize;
        d.n_held = 0;
        let mut dropped = 0;
        for &slot in &held[..n] {
            match outcome {
                Outcome::Forward { to, .. } => self.released.push_back((slot, to)),
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
    pub fn finish_if_complete(&mut self, e: u32) {
        let d = &self.entries[e as usize];
        if d.live && d.n_held == 0 && d.outcome != Outcome::Pending && d.end.is_some_and(|t| u32::from(t) == d.bytes) {
            self.release_entry(e);
        }
    }

    fn poison(&mut self, e: u32) {
        let d = &mut self.entries[e as usize];
        d.outcome = Outcome::Poisoned;
        let n = d.n_held as usize;
        d.n_held = 0;
        let held = d.held;
        self.stash_free.extend_from_slice(&held[..n]);
    }

    fn release_entry(&mut self, e: u32) {
        let d = &mut self.entries[e as usize];
        d.live = false;
        let key = d.key;
        self.index.remove(&key);
        self.wheel.remove(e);
        self.free.push(e);
    }

    /// Ends datagrams whose time is up. Returns how many held fragments
    /// were dropped with them (counted as [`Reason::FragmentTimeout`]).
    pub fn expire(&mut self, now: Time, budget: usize) -> u64 {
        let mut timed_out = 0u64;
        let entries = &mut self.entries;
        let stash_free = &mut self.stash_free;
        let mut done: [u32; 64] = [0; 64];
        let mut n_done = 0;
        self.wheel.advance(now, budget.min(done.len()), |e| {
            let d = &mut entries[e as usize];
            if d.expires > now {
                return Due::Later(d.expires);
            }
            timed_out += u64::from(d.n_held);
            stash_free.extend_from_slice(&d.held[..d.n_held as usize]);
            d.n_held = 0;
            done[n_done] = e;
            n_done += 1;
            Due::Expired
        });
        for &e in &done[..n_done] {
            let d = &mut self.entries[e as usize];
            d.live = false;
            let key = d.key;
            self.index.remove(&key);
            self.free.push(e);
        }
        timed_out
    }

    /// Hands each released fragment to `out` with the side it goes towards.
    pub fn poll_released(&mut self, mut out: impl FnMut(Side, &[u8])) -> usize {
        let mut n = 0;
        while let Some((slot, to)) = self.released.pop_front() {
            let h = &self.stash[slot as usize];
            out(to, &h.data[..h.len]);
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

/// The key a datagram's fragments share: addresses, protocol, identification.
pub fn datagram_key(flow: &FlowKey, ident: u32) -> FlowKey {
    flow.with_ports((ident >> 16) as u16, ident as u16)
}
