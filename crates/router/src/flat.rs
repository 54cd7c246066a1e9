//! A small open-addressing hash map for the lookup tables of a
//! [`RouteTables`](crate::RouteTables) snapshot.
//!
//! The snapshot is built once off the packet path and then only read, so the
//! map needs no deletion and no growth after [`FlatMap::build`]: keys are
//! inserted while building, then lookups probe linearly from the key's hash.
//! The capacity is a power of two at least twice the number of entries, so a
//! probe sequence always meets an empty slot, and its length is bounded by
//! the capacity in any case: a lookup never allocates, never loops without
//! bound and never panics.
//!
//! The hash is a multiply-xorshift over the key's words, keyed by a per-table
//! random seed. Table contents come from the kernel (the operator), not from
//! packets, and lookups never insert, so the seed only spreads adversarially
//! chosen prefixes; it is not a defence the data path relies on.

/// A key of a [`FlatMap`]: small, copyable, hashed by its bits.
pub(crate) trait FlatKey: Copy + Eq {
    fn hash(&self, seed: u64) -> u64;
}

/// Multiply by the 64-bit golden ratio and fold the high half down, so that
/// the top bits (which index the table) depend on every input bit.
#[inline]
fn mix(x: u64, seed: u64) -> u64 {
    let m = (x ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    m ^ (m >> 29)
}

impl FlatKey for u32 {
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        mix(u64::from(*self), seed)
    }
}

impl FlatKey for u64 {
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        mix(*self, seed)
    }
}

impl FlatKey for u128 {
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        mix((*self as u64) ^ mix((*self >> 64) as u64, seed), seed)
    }
}

impl FlatKey for (u32, u128) {
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        mix(u64::from(self.0) ^ self.1.hash(seed), seed)
    }
}

/// A read-mostly hash map with open addressing and linear probing.
#[derive(Clone, Debug)]
pub(crate) struct FlatMap<K, V> {
    slots: Vec<Option<(K, V)>>,
    /// `64 - log2(capacity)`: the hash's top bits pick the first slot.
    shift: u32,
    seed: u64,
    len: usize,
}

impl<K: FlatKey, V: Copy> FlatMap<K, V> {
    /// Build from `(key, value)` pairs; a later pair with an equal key
    /// replaces the earlier one.
    pub(crate) fn build(entries: impl IntoIterator<Item = (K, V)>, seed: u64) -> FlatMap<K, V> {
        let entries: Vec<(K, V)> = entries.into_iter().collect();
        let cap = (entries.len() * 2).next_power_of_two().max(2);
        let mut m = FlatMap { slots: vec![None; cap], shift: 64 - cap.trailing_zeros(), seed, len: 0 };
        for (k, v) in entries {
            m.insert(k, v);
        }
        m
    }

    #[inline]
    fn start(&self, k: &K) -> usize {
        (k.hash(self.seed) >> self.shift) as usize
    }

    fn insert(&mut self, k: K, v: V) {
        let mask = self.slots.len() - 1;
        let mut i = self.start(&k);
        loop {
            match &mut self.slots[i] {
                Some((sk, sv)) if *sk == k => {
                    *sv = v;
                    return;
                }
                Some(_) => i = (i + 1) & mask,
                slot @ None => {
                    *slot = Some((k, v));
                    self.len += 1;
                    return;
                }
            }
        }
    }

    /// The value stored under `k`. At most `capacity` probes.
    #[inline]
    pub(crate) fn get(&self, k: &K) -> Option<V> {
        let mask = self.slots.len() - 1;
        let mut i = self.start(k);
        for _ in 0..self.slots.len() {
            match &self.slots[i] {
                Some((sk, v)) if sk == k => return Some(*v),
                Some(_) => i = (i + 1) & mask,
                None => return None,
            }
        }
        None
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        self.slots.iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let m = FlatMap::build((0u32..1000).map(|i| (i * 7, i)), 42);
        assert_eq!(m.len(), 1000);
        for i in 0u32..1000 {
            assert_eq!(m.get(&(i * 7)), Some(i));
            assert_eq!(m.get(&(i * 7 + 1)), None);
        }
    }

    #[test]
    fn empty_and_duplicates() {
        let m: FlatMap<u64, u8> = FlatMap::build([], 1);
        assert_eq!(m.get(&0), None);
        let m = FlatMap::build([(1u128 << 100, 1u8), (1u128 << 100, 2)], 1);
        assert_eq!((m.len(), m.get(&(1u128 << 100))), (1, Some(2)));
    }
}
