//! The flow index: a keyed, bucketised hash table with bounded probing.
//!
//! Connection tracking needs one lookup per packet that costs the same with
//! 1,000 flows as with 2,000,000, and that nobody can slow down by choosing
//! flows. Three decisions give that:
//!
//! * **Keyed hash.** Keys are hashed with foldhash (a folded-multiply hash,
//!   the one hashbrown uses) under a secret 64-bit seed drawn at start
//!   ([`Hasher::new`]).
//!   Someone who knows the algorithm but not the key cannot predict which
//!   flows share a bucket; and the probe bound below holds whatever they do.
//! * **Cache-line buckets.** A bucket is 64 bytes: eight 16-bit signatures,
//!   eight 32-bit values, and an overflow count. A lookup reads one line and
//!   compares signatures; only a signature match costs a key comparison
//!   (done by the caller, who owns the keys, through a closure).
//! * **Bounded probing.** An entry lives in its home bucket or one of the
//!   next [`MAX_PROBE`]` - 1` buckets. A bucket's `overflow` counts entries
//!   that passed it on their way further, so a lookup stops at the first
//!   bucket whose overflow is zero: usually the home bucket. If an insert
//!   finds no slot within the bound it fails, and the caller treats that as
//!   "table full" for that flow. No chain can ever grow beyond
//!   `MAX_PROBE * 8` entries, whatever the input.
//!
//! The table is sized once ([`FlowIndex::with_capacity`]) for at most 50 %
//! load and never grows: memory is bounded, and the packet path never
//! allocates.

use foldhash::fast::FixedState;
use std::hash::BuildHasher;
use wire::FlowKey;

/// Buckets an entry may be placed in, counting its home bucket.
pub const MAX_PROBE: usize = 4;
const SLOTS: usize = 8;
const EMPTY: u32 = u32::MAX;
/// No value ([`FlowIndex::guess`] found none).
pub const EMPTY_VALUE: u32 = EMPTY;

/// The keyed hash for flow keys (one per engine).
#[derive(Clone, Debug)]
pub struct Hasher {
    state: FixedState,
}

impl Hasher {
    /// A hasher under a secret key; draw the key at random when the process starts.
    pub fn new(key: [u64; 4]) -> Hasher {
        // foldhash's per-hasher seed is the secret (64 bits, folded from the
        // key); its shared seed stays the library's fixed one, so no state
        // outlives the engine and equal keys hash alike in any process.
        let seed = key[0] ^ key[1].rotate_left(16) ^ key[2].rotate_left(32) ^ key[3].rotate_left(48);
        Hasher { state: FixedState::with_seed(seed) }
    }

    #[inline]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        let [a, b, c, d, e] = k.words();
        self.state.hash_one((a, b, c, d, e))
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    sig: [u16; SLOTS],
    val: [u32; SLOTS],
    /// Entries whose home bucket is at or before this one and that live after it.
    overflow: u32,
}

const EMPTY_BUCKET: Bucket = Bucket { sig: [0; SLOTS], val: [EMPTY; SLOTS], overflow: 0 };

/// Where an entry sits, so that it can be removed without another lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    bucket: u32,
    index: u8,
}

/// Maps 64-bit hashes to 32-bit values; key equality is the caller's closure.
#[derive(Debug)]
pub struct FlowIndex {
    buckets: Vec<Bucket>,
    mask: usize,
    len: usize,
}

impl FlowIndex {
    /// A slot that refers to no entry (for flows not yet stored).
    pub const NO_SLOT: Slot = Slot { bucket: u32::MAX, index: 0 };

    /// A table for up to `entries` entries at no more than 50 % load.
    pub fn with_capacity(entries: usize) -> FlowIndex {
        let want = (entries.max(1) * 2).div_ceil(SLOTS).next_power_of_two().max(MAX_PROBE);
        FlowIndex { buckets: vec![EMPTY_BUCKET; want], mask: want - 1, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory the index holds.
    pub fn memory(&self) -> usize {
        self.buckets.len() * core::mem::size_of::<Bucket>()
    }

    /// Bytes per entry of [`with_capacity`](Self::with_capacity)'s sizing
    /// at its worst (the bucket count rounded up to a power of two doubles it).
    pub fn memory_per_entry() -> usize {
        (2 * 2 * core::mem::size_of::<Bucket>()).div_ceil(SLOTS)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask
    }

    #[inline]
    fn sig(hash: u64) -> u16 {
        (hash >> 48) as u16
    }

    /// Hints the CPU to fetch the home bucket of `hash` (call a batch ahead).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        crate::prefetch(&self.buckets[self.home(hash)]);
    }

    /// The first value in the home bucket of `hash` whose signature
    /// matches: what [`FlowIndex::find`] checks first, read from the bucket
    /// alone, so that a caller can fetch that entry's key before it checks
    /// it (a batch's lookups then wait for their keys together, not one
    /// after the other). [`EMPTY_VALUE`] if no signature matches there.
    #[inline]
    pub fn guess(&self, hash: u64) -> u32 {
        let sig = Self::sig(hash);
        let bucket = &self.buckets[self.home(hash)];
        for i in 0..SLOTS {
            if bucket.sig[i] == sig && bucket.val[i] != EMPTY {
                return bucket.val[i];
            }
        }
        EMPTY
    }

    /// Finds the value whose key `eq` accepts among the entries with this hash.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<(u32, Slot)> {
        let sig = Self::sig(hash);
        let mut b = self.home(hash);
        for _ in 0..MAX_PROBE {
            let bucket = &self.buckets[b];
            for i in 0..SLOTS {
                if bucket.sig[i] == sig && bucket.val[i] != EMPTY && eq(bucket.val[i]) {
                    return Some((bucket.val[i], Slot { bucket: b as u32, index: i as u8 }));
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Adds `val` under `hash`. `None` when the probe bound is exhausted:
    /// the caller counts that as a full table for this flow.
    pub fn insert(&mut self, hash: u64, val: u32) -> Option<Slot> {
        debug_assert_ne!(val, EMPTY);
        let home = self.home(hash);
        let mut b = home;
        for step in 0..MAX_PROBE {
            if let Some(i) = self.buckets[b].val.iter().position(|v| *v == EMPTY) {
                let bucket = &mut self.buckets[b];
                bucket.val[i] = val;
                bucket.sig[i] = Self::sig(hash);
                // Every bucket passed over must tell lookups to go on.
                for s in 0..step {
                    self.buckets[(home + s) & self.mask].overflow += 1;
                }
                self.len += 1;
                return Some(Slot { bucket: b as u32, index: i as u8 });
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Removes the entry at `slot`, which was inserted under `hash`.
    pub fn remove(&mut self, hash: u64, slot: Slot) {
        let b = slot.bucket as usize;
        debug_assert_ne!(self.buckets[b].val[slot.index as usize], EMPTY);
        self.buckets[b].val[slot.index as usize] = EMPTY;
        let home = self.home(hash);
        let steps = b.wrapping_sub(home) & self.mask;
        for s in 0..steps {
            self.buckets[(home + s) & self.mask].overflow -= 1;
        }
        self.len -= 1;
    }

    /// Replaces the value at `slot` (used when a flow moves in the slab).
    pub fn value(&self, slot: Slot) -> u32 {
        self.buckets[slot.bucket as usize].val[slot.index as usize]
    }

    /// Every value stored under the probe sequence of `hash`: what an
    /// eviction may choose from when an insert under `hash` fails.
    pub fn neighbours(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let home = self.home(hash);
        (0..MAX_PROBE)
            .flat_map(move |s| self.buckets[(home + s) & self.mask].val.iter().copied())
            .filter(|v| *v != EMPTY)
    }

    /// How many buckets a lookup of `hash` reads (for tests and statistics).
    pub fn probe_len(&self, hash: u64) -> usize {
        let mut b = self.home(hash);
        for n in 1..=MAX_PROBE {
            if self.buckets[b].overflow == 0 {
                return n;
            }
            b = (b + 1) & self.mask;
        }
        MAX_PROBE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use std::collections::HashMap;

    fn key(i: u32) -> FlowKey {
        FlowKey::v4(Ipv4Addr::from(0x0a00_0000 | i), Ipv4Addr::new(192, 0, 2, 1), 6, (i >> 8) as u16, 443)
    }

    #[test]
    fn insert_find_remove_round_trip() {
        let h = Hasher::new([1, 2, 3, 4]);
        let mut t = FlowIndex::with_capacity(10_000);
        let mut slots = HashMap::new();
        for i in 0..10_000u32 {
            let k = key(i);
            let s = t.insert(h.hash(&k), i).expect("room at 50 % load");
            slots.insert(i, s);
        }
        assert_eq!(t.len(), 10_000);
        for i in 0..10_000u32 {
            let k = key(i);
            let found = t.find(h.hash(&k), |v| key(v) == k);
            assert_eq!(found.map(|f| f.0), Some(i));
        }
        for i in (0..10_000u32).step_by(2) {
            t.remove(h.hash(&key(i)), slots[&i]);
        }
        for i in 0..10_000u32 {
            let k = key(i);
            let found = t.find(h.hash(&k), |v| key(v) == k).map(|f| f.0);
            assert_eq!(found, if i % 2 == 0 { None } else { Some(i) });
        }
        assert!(t.buckets.iter().all(|b| b.overflow < 10_000));
    }

    #[test]
    fn overflow_counts_return_to_zero() {
        let h = Hasher::new([9, 9, 9, 9]);
        let mut t = FlowIndex::with_capacity(64);
        let mut live = Vec::new();
        // Fill far past 50 % so that entries overflow their home buckets.
        for i in 0..120u32 {
            if let Some(s) = t.insert(h.hash(&key(i)), i) {
                live.push((i, s));
            }
        }
        for (i, s) in live {
            t.remove(h.hash(&key(i)), s);
        }
        assert!(t.is_empty());
        assert!(t.buckets.iter().all(|b| b.overflow == 0 && b.val.iter().all(|v| *v == EMPTY)));
    }

    /// An attacker who knows the algorithm but not the key picks 1,000 flows
    /// that all share one bucket under the key they guessed. Under the real
    /// key they spread like any other flows: no long probe, no failed insert.
    #[test]
    fn flows_chosen_against_a_guessed_key_do_not_collide() {
        let guessed = Hasher::new([0, 0, 0, 0]);
        let real = Hasher::new([0x5eed, 0xfeed, 0xbeef, 0xcafe]);
        let size = FlowIndex::with_capacity(4_096);
        let target = size.home(guessed.hash(&key(0)));
        let chosen: Vec<FlowKey> =
            (0..20_000_000u32).map(key).filter(|k| size.home(guessed.hash(k)) == target).take(1_000).collect();
        assert_eq!(chosen.len(), 1_000);

        // Under the guessed key they all aim at one bucket: the bound holds,
        // the overflow is refused instead of becoming a chain.
        let mut attacked = FlowIndex::with_capacity(4_096);
        let placed = chosen.iter().filter(|k| attacked.insert(guessed.hash(k), 1).is_some()).count();
        assert_eq!(placed, MAX_PROBE * SLOTS);

        // Under the real key: every one placed, probes stay short.
        let mut t = FlowIndex::with_capacity(4_096);
        for (i, k) in chosen.iter().enumerate() {
            assert!(t.insert(real.hash(k), i as u32).is_some());
        }
        let longest = chosen.iter().map(|k| t.probe_len(real.hash(k))).max().unwrap();
        assert!(longest <= 2, "probe length {longest}");
    }
}
