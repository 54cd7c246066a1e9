//! A timing wheel for flow expiry, lazy and bounded.
//!
//! Flows expire by timer, never by scanning the table on the packet path.
//! Each live flow sits in exactly one slot of a wheel of [`SLOTS`] slots of
//! `tick` each; a slot is an intrusive doubly-linked list over flow indices,
//! so insert and remove are O(1) and the wheel allocates only when built.
//!
//! The wheel is *lazy*: a packet that refreshes a flow only moves the
//! flow's deadline (a store), not its wheel entry. When the wheel reaches
//! the slot, the owner's callback looks at the real deadline and either
//! expires the flow or has it put back where its deadline falls. A flow
//! whose deadline lies beyond the wheel's horizon (12 h established TCP
//! against a horizon of ~17 min) is parked at the horizon and looked at
//! again then: a few visits in half a day.
//!
//! [`Wheel::advance`] takes a budget: at most that many entries are looked
//! at per call, so a mass expiry spreads over several batches instead of
//! stalling one. An entry found expired late is still expired; a lookup that
//! meets a flow past its deadline treats it as gone before the wheel does.

use crate::time::Time;

/// Slots in the wheel (a power of two).
pub const SLOTS: usize = 4096;
const NIL: u32 = u32::MAX;

/// What the owner decides for a due entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// The entry is gone: the owner has freed it.
    Expired,
    /// Not yet: look again at this time.
    Later(Time),
}

#[derive(Debug)]
pub struct Wheel {
    heads: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Slot of each entry, NIL when not in the wheel.
    slot: Vec<u32>,
    tick_ns: u64,
    /// The tick being processed: every earlier tick is done.
    cursor: u64,
}

impl Wheel {
    /// A wheel for entries `0..capacity`, starting at `now`.
    pub fn new(capacity: usize, tick: core::time::Duration, now: Time) -> Wheel {
        let tick_ns = (tick.as_nanos() as u64).max(1);
        Wheel {
            heads: vec![NIL; SLOTS],
            next: vec![NIL; capacity],
            prev: vec![NIL; capacity],
            slot: vec![NIL; capacity],
            tick_ns,
            cursor: now.0 / tick_ns,
        }
    }

    /// How far ahead an entry can be placed.
    pub fn horizon(&self) -> core::time::Duration {
        core::time::Duration::from_nanos(self.tick_ns * (SLOTS as u64 - 1))
    }

    pub fn contains(&self, idx: u32) -> bool {
        self.slot[idx as usize] != NIL
    }

    /// Puts entry `idx` (not in the wheel) at `deadline`.
    pub fn insert(&mut self, idx: u32, deadline: Time) {
        debug_assert!(!self.contains(idx));
        let t = (deadline.0 / self.tick_ns).clamp(self.cursor + 1, self.cursor + SLOTS as u64 - 1);
        let s = (t as usize) & (SLOTS - 1);
        let head = self.heads[s];
        self.next[idx as usize] = head;
        self.prev[idx as usize] = NIL;
        if head != NIL {
            self.prev[head as usize] = idx;
        }
        self.heads[s] = idx;
        self.slot[idx as usize] = s as u32;
    }

    /// Takes entry `idx` out of the wheel (a flow freed before its time).
    pub fn remove(&mut self, idx: u32) {
        let s = self.slot[idx as usize];
        if s == NIL {
            return;
        }
        let (p, n) = (self.prev[idx as usize], self.next[idx as usize]);
        if p == NIL {
            self.heads[s as usize] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        }
        self.slot[idx as usize] = NIL;
    }

    /// Visits the entries due by `now`, at most `budget` of them; `due` says
    /// whether each expired or when to look again. Returns how many it visited.
    pub fn advance(&mut self, now: Time, budget: usize, mut due: impl FnMut(u32) -> Due) -> usize {
        let now_tick = now.0 / self.tick_ns;
        // After a long pause every slot is due once: skip the empty laps.
        if now_tick > self.cursor + SLOTS as u64 {
            self.cursor = now_tick - SLOTS as u64;
        }
        let mut visited = 0;
        while self.cursor <= now_tick {
            let s = (self.cursor as usize) & (SLOTS - 1);
            while self.heads[s] != NIL {
                if visited == budget {
                    return visited;
                }
                let idx = self.heads[s];
                self.remove(idx);
                visited += 1;
                if let Due::Later(t) = due(idx) {
                    self.insert(idx, t);
                }
            }
            if self.cursor == now_tick {
                break;
            }
            self.cursor += 1;
        }
        visited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn entries_expire_at_their_deadline_not_before() {
        let mut w = Wheel::new(16, Duration::from_millis(250), Time::ZERO);
        let deadlines = [Time::from_secs(1), Time::from_secs(30), Time::from_secs(5000)];
        for (i, d) in deadlines.iter().enumerate() {
            w.insert(i as u32, *d);
        }
        let mut gone = Vec::new();
        let mut t = Time::ZERO;
        while t <= Time::from_secs(6000) {
            w.advance(t, usize::MAX, |i| {
                let d = deadlines[i as usize];
                if d <= t {
                    gone.push((i, t));
                    Due::Expired
                } else {
                    Due::Later(d)
                }
            });
            t = t + Duration::from_millis(100);
        }
        assert_eq!(gone.len(), 3);
        for (i, at) in gone {
            let d = deadlines[i as usize];
            assert!(at >= d && at.since(d) <= Duration::from_millis(500), "{i} at {at:?}");
        }
    }

    #[test]
    fn budget_bounds_work_per_call() {
        let mut w = Wheel::new(1000, Duration::from_secs(1), Time::ZERO);
        for i in 0..1000 {
            w.insert(i, Time::from_secs(2));
        }
        let mut expired = 0;
        let mut calls = 0;
        while expired < 1000 {
            let n = w.advance(Time::from_secs(3), 64, |_| Due::Expired);
            assert!(n <= 64);
            expired += n;
            calls += 1;
        }
        assert_eq!(calls, 1000usize.div_ceil(64));
        assert!((0..1000).all(|i| !w.contains(i)));
    }

    #[test]
    fn removal_unlinks_anywhere_in_a_slot() {
        let mut w = Wheel::new(8, Duration::from_secs(1), Time::ZERO);
        for i in 0..5 {
            w.insert(i, Time::from_secs(3));
        }
        w.remove(2);
        w.remove(4);
        w.remove(0);
        let mut seen = Vec::new();
        w.advance(Time::from_secs(10), usize::MAX, |i| {
            seen.push(i);
            Due::Expired
        });
        seen.sort();
        assert_eq!(seen, vec![1, 3]);
    }

    #[test]
    fn a_long_pause_expires_everything_once() {
        let mut w = Wheel::new(100, Duration::from_millis(10), Time::ZERO);
        for i in 0..100 {
            w.insert(i, Time::from_millis(u64::from(i) * 7));
        }
        let mut n = 0;
        w.advance(Time::from_secs(86_400), usize::MAX, |_| {
            n += 1;
            Due::Expired
        });
        assert_eq!(n, 100);
    }
}
