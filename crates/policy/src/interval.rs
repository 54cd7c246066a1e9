//! Sorted, non-overlapping integer intervals with a value each: the one
//! lookup structure behind prefixes, networks and blocks.
//!
//! Addresses are integers (`u32` for IPv4, `u128` for IPv6) and a prefix is
//! a closed interval of them. Once the compiler has made sure intervals do
//! not overlap (or merged those that may), "which interval holds `x`" is a
//! binary search over the starts: O(log n), no allocation, and its cost
//! does not depend on prefix lengths the way a trie walk does. The three
//! arrays are kept apart so that the search touches only the starts.

/// An address as an integer.
pub(crate) trait Bits: Copy + Ord {
    /// `self + 1`, or `None` at the top of the space.
    fn succ(self) -> Option<Self>;
}

impl Bits for u32 {
    fn succ(self) -> Option<u32> {
        self.checked_add(1)
    }
}

impl Bits for u128 {
    fn succ(self) -> Option<u128> {
        self.checked_add(1)
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Intervals<T, V> {
    starts: Vec<T>,
    ends: Vec<T>,
    values: Vec<V>,
}

impl<T: Bits, V: Copy> Intervals<T, V> {
    /// Intervals `(start, end, value)`, sorted by start; two neighbours are
    /// merged if they overlap or touch and `merge(left, right)` agrees (the
    /// left value is kept). The caller guarantees that those it does not
    /// let merge do not overlap.
    pub(crate) fn from_sorted(items: impl IntoIterator<Item = (T, T, V)>, merge: impl Fn(&V, &V) -> bool) -> Self {
        let mut out: Self = Intervals { starts: Vec::new(), ends: Vec::new(), values: Vec::new() };
        for (s, e, v) in items {
            if let (Some(last_end), Some(last_v)) = (out.ends.last_mut(), out.values.last()) {
                let touches = last_end.succ().is_none_or(|next| s <= next);
                if touches && merge(last_v, &v) {
                    if e > *last_end {
                        *last_end = e;
                    }
                    continue;
                }
                debug_assert!(s > *last_end, "unmerged intervals overlap");
            }
            out.starts.push(s);
            out.ends.push(e);
            out.values.push(v);
        }
        out
    }

    /// The union of possibly overlapping intervals in any order; each
    /// merged interval keeps the value of its lowest member.
    pub(crate) fn union(mut items: Vec<(T, T, V)>) -> Self {
        items.sort_by_key(|a| (a.0, a.1));
        Self::from_sorted(items, |_, _| true)
    }

    /// The interval holding `x`.
    #[inline]
    pub(crate) fn find(&self, x: T) -> Option<(T, T, V)> {
        let i = self.starts.partition_point(|&s| s <= x).checked_sub(1)?;
        (x <= self.ends[i]).then(|| (self.starts[i], self.ends[i], self.values[i]))
    }

    #[inline]
    pub(crate) fn contains(&self, x: T) -> bool {
        self.find(x).is_some()
    }

    /// True if one interval holds all of `start..=end`.
    pub(crate) fn covers(&self, start: T, end: T) -> bool {
        self.find(start).is_some_and(|(_, e, _)| end <= e)
    }

    /// Some interval that shares an address with `start..=end`.
    pub(crate) fn overlapping(&self, start: T, end: T) -> Option<V> {
        let i = self.starts.partition_point(|&s| s <= end).checked_sub(1)?;
        (self.ends[i] >= start).then(|| self.values[i])
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_overlapping_and_touching() {
        let s = Intervals::union(vec![(10u32, 20, 1), (0, 5, 2), (21, 30, 3), (15, 18, 4), (40, 50, 5)]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.find(0), Some((0, 5, 2)));
        assert_eq!(s.find(25), Some((10, 30, 1)));
        assert_eq!(s.find(35), None);
        assert!(s.covers(11, 29));
        assert!(!s.covers(29, 41));
        assert_eq!(s.overlapping(31, 41), Some(5));
        assert_eq!(s.overlapping(31, 39), None);
        assert_eq!(s.overlapping(3, 7), Some(2));
    }

    #[test]
    fn top_of_the_space() {
        let s = Intervals::union(vec![(u32::MAX - 1, u32::MAX, ()), (u32::MAX, u32::MAX, ())]);
        assert_eq!(s.len(), 1);
        assert!(s.contains(u32::MAX));
    }
}
