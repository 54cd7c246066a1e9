//! The flow index: a keyed, bucketised hash table with bounded probing.
//!
//! Connection tracking needs one lookup per packet that costs the same with
//! 1,000 flows as with 2,000,000, and that nobody can slow down by choosing
//! flows. Three decisions give that:
//!
//! * **Keyed hash.** Keys are hashed with foldhash (a folded-multiply hash,
//!   the one hashbrown uses) under secret seeds drawn at start
//!   ([`Hasher::new`]): the per-hasher seed *and* the shared seeds every
//!   multiplication takes, which foldhash's `FixedState` leaves at public
//!   constants. Someone who knows the algorithm but not the key cannot
//!   predict which flows share a bucket; and the probe bound below holds
//!   whatever they do.
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

use foldhash::fast::FoldHasher;
use foldhash::SharedSeed;
use std::hash::Hash;
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
    seed: u64,
    shared: SharedSeed,
}

impl Hasher {
    /// A hasher under a secret key; draw the key at random when the process starts.
    pub fn new(key: [u64; 4]) -> Hasher {
        // Both of foldhash's seeds come from the key, so equal keys hash
        // alike in any process and no state outlives the engine. The shared
        // seed must be secret too: foldhash takes two input words at a time
        // as `(a ^ acc) * (b ^ shared[0])`, and with the library's fixed
        // shared seed a word equal to that public constant zeroes the
        // product and with it everything the key had put in (an IPv6 peer
        // whose interface identifier is that constant gave its flows the
        // same hash under every key).
        let seed = key[0] ^ key[1].rotate_left(16) ^ key[2].rotate_left(32) ^ key[3].rotate_left(48);
        let shared = SharedSeed::from_u64(key[1] ^ key[2].rotate_left(24) ^ key[3].rotate_left(40));
        Hasher { seed, shared }
    }

    #[inline]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        let [a, b, c, d, e] = k.words();
        let mut h = FoldHasher::with_seed(self.seed, &self.shared);
        (a, b, c, d, e).hash(&mut h);
        std::hash::Hasher::finish(&h)
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

    /// foldhash's fixed shared seed is public: a flow to or from an IPv6
    /// address whose interface identifier is its first word hashed alike
    /// under every per-hasher seed. Under our keys it hashes apart.
    #[test]
    fn a_peer_address_cannot_cancel_the_key() {
        use core::net::Ipv6Addr;
        use foldhash::fast::FixedState;
        use std::hash::BuildHasher;
        // foldhash 0.2's first fixed shared seed (`ARBITRARY6` in its source).
        const PUBLIC_SEED: u64 = 0xc0ac_29b7_c97c_50dd;
        let mut peer = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        peer[8..].copy_from_slice(&PUBLIC_SEED.to_ne_bytes());
        let k = FlowKey::v6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 9), Ipv6Addr::from(peer), 6, 1234, 443);
        for k in [k, k.reversed()] {
            let fixed = |seed: u64| {
                let [a, b, c, d, e] = k.words();
                FixedState::with_seed(seed).hash_one((a, b, c, d, e))
            };
            assert_eq!(fixed(1), fixed(0x5eed_feed), "the weakness this guards against");
            let mut hashes: Vec<u64> = (0..64u64).map(|i| Hasher::new([i, i * 3, i * 5, i * 7]).hash(&k)).collect();
            hashes.sort_unstable();
            hashes.dedup();
            assert_eq!(hashes.len(), 64, "one hash per key");
        }
    }
}
