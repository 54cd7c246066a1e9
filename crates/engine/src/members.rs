//! Per-member accounting on the core that owns the member.
//!
//! Every flow that belongs to a member carries an account *slot*: a dense
//! index into this core's [`Accounts`], stable for as long as the engine
//! lives (member ids are stable across policy generations, slots follow
//! them). The fast path adds to the slot of the packet's flow: one array
//! write, no lookup. The control side reads every core's accounts, sums
//! them, and persists the totals; nothing here is shared or atomic.
//!
//! Directions are the member's: *up* is what the member's devices send
//! (towards the internet, or towards another member), *down* what they
//! receive.
//!
//! Each account also keeps the member's round-trip times on either side of
//! the box, measured from the TCP handshakes of its flows ([`crate::rtt`]).

use crate::rtt::Rtt;
use ahash::RandomState;
use std::collections::HashMap;

/// Bytes and packets of one member, as this core counted them.
///
/// One cache line each: the packet path reads and adds to the account of
/// every packet's member, and with many members that is a cache miss that
/// pass 2 prefetches; an account straddling two lines would be two misses,
/// one of them not prefetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(align(64))]
pub struct Account {
    /// The member's stable id (from the database).
    pub member_id: u32,
    /// `[up, down]`.
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
    /// The policy epoch of the reload that last ended this member's flows
    /// (blocked, deleted, renumbered), 0 if none: flows made before it end
    /// when met, flows made after it live.
    pub(crate) ended_epoch: u32,
    /// How the member is shaped on this core ([`crate::shaping`]'s flags):
    /// here, not in the shaper, because the packet path has this line in
    /// cache already and asks this of every packet.
    pub(crate) shaping: u8,
    /// [`Account::rtt`] by side, without its samples: kept as two
    /// arrays, not as two [`Rtt`]s (24 bytes), so that the account stays
    /// one cache line.
    rtt_ns: [RttNs; 2],
    /// [`Rtt::samples`] by side, saturating at 65,535.
    rtt_samples: [u16; 2],
}

/// [`Rtt::srtt_ns`] and [`Rtt::min_ns`] of one side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RttNs {
    srtt: u32,
    min: u32,
}

impl Account {
    /// The member's round-trip time on `side` as this core measured it:
    /// [`INSIDE`], between the box and the member's devices; [`OUTSIDE`],
    /// between the box and the hosts on the internet the member's flows
    /// reach ([`crate::rtt`]). Merge cores' with [`Rtt::merge`].
    pub fn rtt(&self, side: usize) -> Rtt {
        let RttNs { srtt, min } = self.rtt_ns[side];
        Rtt { srtt_ns: srtt, min_ns: min, samples: u32::from(self.rtt_samples[side]) }
    }

    /// Sets the round-trip time on `side` (its samples saturating at
    /// 65,535): for tests and tools that make accounts up.
    pub fn set_rtt(&mut self, side: usize, r: Rtt) {
        self.rtt_ns[side] = RttNs { srtt: r.srtt_ns, min: r.min_ns };
        self.rtt_samples[side] = u16::try_from(r.samples).unwrap_or(u16::MAX);
    }

    /// Takes a round-trip sample of `ns` nanoseconds on `side`.
    #[inline]
    fn add_rtt(&mut self, side: usize, ns: u32) {
        let mut r = self.rtt(side);
        r.add(ns);
        self.set_rtt(side, r);
    }
}

pub const UP: usize = 0;
pub const DOWN: usize = 1;

/// [`Account::rtt`] between the box and the member's devices.
pub const INSIDE: usize = crate::Side::Inside.index();
/// [`Account::rtt`] between the box and the internet.
pub const OUTSIDE: usize = crate::Side::Outside.index();

#[derive(Debug)]
pub struct Accounts {
    slots: Vec<Account>,
    by_id: HashMap<u32, u32, RandomState>,
}

impl Accounts {
    pub fn new(key: [u64; 4]) -> Accounts {
        Accounts {
            slots: Vec::new(),
            by_id: HashMap::with_hasher(RandomState::with_seeds(key[3], key[2], key[1], key[0] ^ 0x6163_6374)),
        }
    }

    /// Makes room for `more` accounts beyond those made, so that making one
    /// on a member's first packet does not reallocate (call on the control
    /// path with the number of members of the policy: at most that many can
    /// still be new).
    pub fn reserve(&mut self, more: usize) {
        self.slots.reserve(more);
        self.by_id.reserve(more);
    }

    /// The slot of `member_id`, made on first sight (slow path only).
    pub fn slot(&mut self, member_id: u32) -> u32 {
        if let Some(&s) = self.by_id.get(&member_id) {
            return s;
        }
        let s = self.slots.len() as u32;
        self.slots.push(Account { member_id, ..Account::default() });
        self.by_id.insert(member_id, s);
        s
    }

    pub fn slot_of(&self, member_id: u32) -> Option<u32> {
        self.by_id.get(&member_id).copied()
    }

    /// Adds a packet of `len` bytes to `slot` in direction `dir` ([`UP`] or [`DOWN`]).
    #[inline]
    pub fn add(&mut self, slot: u32, dir: usize, len: usize) {
        let a = &mut self.slots[slot as usize];
        a.bytes[dir] += len as u64;
        a.packets[dir] += 1;
    }

    /// Takes a round-trip sample of `ns` nanoseconds for `slot` on `side`
    /// ([`INSIDE`] or [`OUTSIDE`]).
    #[inline]
    pub(crate) fn add_rtt(&mut self, slot: u32, side: usize, ns: u32) {
        self.slots[slot as usize].add_rtt(side, ns);
    }

    /// Brings the account of `slot` into cache (pass 3 asks a few packets
    /// ahead: every packet of a member reads and adds to it).
    #[inline]
    pub(crate) fn prefetch(&self, slot: u32) {
        if let Some(a) = self.slots.get(slot as usize) {
            crate::prefetch(a);
        }
    }

    #[inline]
    pub(crate) fn ended_epoch(&self, slot: u32) -> u32 {
        self.slots[slot as usize].ended_epoch
    }

    pub fn member_id(&self, slot: u32) -> u32 {
        self.slots[slot as usize].member_id
    }

    /// The shaping flags of `slot` (0 for a slot not made yet).
    #[inline]
    pub(crate) fn shaping(&self, slot: u32) -> u8 {
        self.slots.get(slot as usize).map_or(0, |a| a.shaping)
    }

    pub(crate) fn set_shaping(&mut self, slot: u32, flags: u8) {
        if let Some(a) = self.slots.get_mut(slot as usize) {
            a.shaping = flags;
        }
    }

    pub(crate) fn set_ended(&mut self, slot: u32, epoch: u32) {
        self.slots[slot as usize].ended_epoch = epoch;
    }

    /// Every member this core has counted, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.slots.iter()
    }

    pub fn get(&self, member_id: u32) -> Option<&Account> {
        self.slot_of(member_id).map(|s| &self.slots[s as usize])
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<Account>(), 64);
    }

    #[test]
    fn an_accounts_round_trip_samples_saturate_at_the_stored_width() {
        let mut a = Account::default();
        assert_eq!(a.rtt(INSIDE), Rtt::default());
        a.set_rtt(OUTSIDE, Rtt { srtt_ns: 7, min_ns: 3, samples: 70_000 });
        assert_eq!(a.rtt(OUTSIDE), Rtt { srtt_ns: 7, min_ns: 3, samples: 65_535 });
        a.add_rtt(OUTSIDE, 15);
        assert_eq!(a.rtt(OUTSIDE), Rtt { srtt_ns: 8, min_ns: 3, samples: 65_535 });
        a.add_rtt(INSIDE, 1_000);
        assert_eq!(a.rtt(INSIDE), Rtt { srtt_ns: 1_000, min_ns: 1_000, samples: 1 });
    }
}
