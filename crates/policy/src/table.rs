//! [`AddrTable`]: the per-packet map from an address (IPv4 bits, or the
//! upper 64 bits of an IPv6 prefix) to a small value (a member index, a
//! public address's port ranges), built once per policy generation and
//! never changed.
//!
//! Why not a `HashMap`: steering asks it once per received frame, before
//! anything else, so its cost is the first cache miss of every packet. This
//! table is one flat array of small slots (key, value), open addressing
//! with linear probing at a load of at most one half, so a lookup touches
//! one cache line almost always, and the caller can [`prefetch`] that line
//! for the next frames of a batch while it works on this one (a `HashMap`
//! offers no way to do that).
//!
//! The hash is keyed (the policy's `ahash` seeds, random per process), so
//! nobody outside can choose addresses that collide; and the table is
//! built from the operator's database, not from traffic. Probes are
//! bounded by the table's size; a lookup of an absent key stops at the
//! first empty slot, which the load of one half guarantees to exist.
//!
//! [`prefetch`]: AddrTable::prefetch

use ahash::RandomState;
use core::hash::Hash;

/// A value an [`AddrTable`] holds: one value marks a free slot.
pub(crate) trait Value: Copy + Eq {
    /// The value of a free slot, never stored.
    const EMPTY: Self;
}

impl Value for u32 {
    /// Values are indexes, far below it.
    const EMPTY: u32 = u32::MAX;
}

/// An immutable open-addressing map from address bits to a small value.
#[derive(Clone, Debug)]
pub(crate) struct AddrTable<K = u32, V = u32> {
    /// `(key, value)`, `value == V::EMPTY` when free; the length is a power of two.
    slots: Box<[(K, V)]>,
    mask: usize,
    hasher: RandomState,
}

impl<K: Copy + Eq + Hash + Default, V: Value> AddrTable<K, V> {
    /// A table of `entries`; for a key given twice the last value wins (as
    /// `HashMap::insert` would). No value may be `V::EMPTY`.
    pub(crate) fn build(entries: impl ExactSizeIterator<Item = (K, V)>, hasher: RandomState) -> AddrTable<K, V> {
        let cap = (entries.len() * 2).next_power_of_two().max(16);
        let mut t = AddrTable { slots: vec![(K::default(), V::EMPTY); cap].into_boxed_slice(), mask: cap - 1, hasher };
        for (key, value) in entries {
            debug_assert!(value != V::EMPTY);
            let mut i = t.home(key);
            loop {
                let slot = &mut t.slots[i];
                if slot.1 == V::EMPTY || slot.0 == key {
                    *slot = (key, value);
                    break;
                }
                i = (i + 1) & t.mask;
            }
        }
        t
    }

    #[inline]
    fn home(&self, key: K) -> usize {
        self.hasher.hash_one(key) as usize & self.mask
    }

    /// The value of `key`.
    #[inline]
    pub(crate) fn get(&self, key: K) -> Option<V> {
        let mut i = self.home(key);
        // At most every slot once; the load of one half ends it far sooner.
        for _ in 0..self.slots.len() {
            let (k, v) = self.slots[i];
            if v == V::EMPTY {
                return None;
            }
            if k == key {
                return Some(v);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Hints the CPU to load the slot `key` would start probing at.
    #[inline]
    pub(crate) fn prefetch(&self, key: K) {
        let p = self.slots.as_ptr().wrapping_add(self.home(key));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: PREFETCHT0 is a hint: it does not dereference in the
        // language sense and cannot fault; `p` is inside `slots` anyway.
        unsafe {
            core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.1 != V::EMPTY).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn agrees_with_a_hashmap_on_present_and_absent_keys() {
        let hasher = RandomState::with_seeds(1, 2, 3, 4);
        let mut reference = HashMap::new();
        let mut entries = Vec::new();
        let mut x = 0x1234_5678u32;
        for i in 0..5000u32 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            // Clustered keys (consecutive device addresses) and random ones.
            let key = if i % 2 == 0 { 0x0a80_0000 + i } else { x };
            entries.push((key, i));
            reference.insert(key, i);
        }
        // A repeated key: the last value wins.
        entries.push((0x0a80_0000, 77));
        reference.insert(0x0a80_0000, 77);
        let t = AddrTable::build(entries.iter().copied(), hasher);
        assert_eq!(t.len(), reference.len());
        for (&k, &v) in &reference {
            assert_eq!(t.get(k), Some(v), "key {k:#x}");
        }
        for k in (0..20_000u32).map(|i| 0xc000_0000 + i * 7) {
            assert_eq!(t.get(k), reference.get(&k).copied());
        }
    }

    #[test]
    fn wide_keys() {
        let keys: Vec<u64> = (0..1000u64).map(|i| 0x2001_0db8_0000_0000 | i << 16).collect();
        let t = AddrTable::build(keys.iter().map(|&k| (k, (k >> 16) as u32)), RandomState::with_seeds(5, 6, 7, 8));
        for &k in &keys {
            assert_eq!(t.get(k), Some((k >> 16) as u32));
            assert_eq!(t.get(k + 1), None);
        }
    }

    #[test]
    fn empty_table_answers_none() {
        let t = AddrTable::<u32>::build(std::iter::empty(), RandomState::with_seeds(9, 9, 9, 9));
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(u32::MAX), None);
        t.prefetch(5);
    }
}
