//! Carousel's timing wheel: members in order of their next departure.
//!
//! Carousel (Saeed et al., SIGCOMM 2017) replaces per-class queues searched
//! at dequeue with a time-indexed wheel: each backlogged member sits in the
//! slot of the tick at which its token bucket next lets a packet go. Here
//! the wheel holds *members*, not packets (their packets stay in their fair
//! queues, see [`crate::queue`]), so one entry per backlogged member.
//!
//! - [`SLOTS`] fine slots of `tick_ns` each (64 µs by default: a 1.07 s
//!   horizon, the gap of a 1500-byte packet at 11 kbit/s).
//!   Slots are intrusive doubly-linked lists over member indices: schedule,
//!   move and remove are O(1) and nothing allocates after construction
//!   (member links grow only when a member is added).
//! - [`Wheel::sweep`] moves the members of every tick up to `now` to the
//!   *due* list, a FIFO served round robin. A second due FIFO, the *sparse*
//!   list, is served before it: members that had nothing queued and arrive
//!   within their rate ([`Wheel::push_sparse`]), as fq_codel serves new flows
//!   before old ones and HTB serves classes under their rate before those
//!   that borrow. Its cost is the slots advanced
//!   (at most [`SLOTS`] per call) plus the members moved, counted in
//!   [`WheelWork`] so tests can check that it does not grow with members.
//! - Release is at tick granularity: a member due anywhere in the current
//!   tick is due now (the caller checks its bucket at the end of the tick),
//!   so a member may leave up to one tick early; over time its rate is
//!   unchanged, its burst grows by at most `rate × tick`.
//! - Two levels, as in hierarchical timing wheels (Varghese and Lauck,
//!   1987): a departure beyond the fine horizon goes to one of
//!   [`COARSE_SLOTS`] coarse slots of `SLOTS` ticks each (a horizon of 18
//!   minutes by default); when the cursor enters a coarse slot its members are
//!   *cascaded* into the fine slots. So a member is looked at most twice per
//!   wait however long, and once if it waits less than the fine horizon.
//!   Why it matters: under overload the wait of a backlogged member is its
//!   packet over its fair share, which shrinks with the number of members
//!   (240,000 members on a 10 Gbit/s core get 42 kbit/s each: 190 ms per
//!   1000-byte packet). The former single level of 1024 ticks (65 ms) parked
//!   such members at its horizon and looked at them again every 65 ms: work
//!   per packet that grew with the number of members. The fine level is
//!   large enough that realistic overloads wait within it (then the work per
//!   packet is the same as with few members); beyond, the cascade at most
//!   doubles it. A departure beyond the coarse horizon parks in the last
//!   coarse slot and is looked at once per 18 minutes.

use crate::queue::NIL;

/// Slots in the wheel.
pub const SLOTS: usize = 16_384;
/// Slots in the coarse level, `SLOTS` ticks each.
pub const COARSE_SLOTS: usize = 1_024;
/// The first list index of the coarse slots (after the fine ones).
const COARSE: u32 = SLOTS as u32;
/// The list index of the due FIFO (after the slots of both levels).
const DUE: u32 = (SLOTS + COARSE_SLOTS) as u32;
/// The list index of the sparse FIFO, served before the due FIFO.
const SPARSE: u32 = DUE + 1;
/// Number of lists: the fine slots, the coarse slots and the two due FIFOs.
const LISTS: usize = SLOTS + COARSE_SLOTS + 2;

/// Work done by the wheel, for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WheelWork {
    /// Slots swept.
    pub slots_swept: u64,
    /// Members looked at in swept slots (moved to due, cascaded or re-parked).
    pub members_swept: u64,
}

/// The wheel over member indices `0..capacity`.
#[derive(Debug)]
pub struct Wheel {
    heads: Vec<u32>,
    tails: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The list each member is on, `NIL` when on none.
    list: Vec<u32>,
    /// The tick each scheduled member is due at.
    due_tick: Vec<u64>,
    tick_ns: u64,
    /// The first tick not yet swept.
    cursor: u64,
    scheduled: usize,
    work: WheelWork,
}

impl Wheel {
    /// An empty wheel with ticks of `tick_ns`, starting at `now`.
    pub fn new(tick_ns: u64, now: u64) -> Wheel {
        let tick_ns = tick_ns.max(1);
        Wheel {
            heads: vec![NIL; LISTS],
            tails: vec![NIL; LISTS],
            next: Vec::new(),
            prev: Vec::new(),
            list: Vec::new(),
            due_tick: Vec::new(),
            tick_ns,
            cursor: now / tick_ns,
            scheduled: 0,
            work: WheelWork::default(),
        }
    }

    /// Makes room for `members` member slots without growing yet (so that
    /// [`Wheel::grow`] up to there does not reallocate).
    pub fn reserve(&mut self, members: usize) {
        let more = members.saturating_sub(self.list.len());
        self.next.reserve(more);
        self.prev.reserve(more);
        self.list.reserve(more);
        self.due_tick.reserve(more);
    }

    /// Makes room for members `0..members` (control path).
    pub fn grow(&mut self, members: usize) {
        if members > self.list.len() {
            self.next.resize(members, NIL);
            self.prev.resize(members, NIL);
            self.list.resize(members, NIL);
            self.due_tick.resize(members, 0);
        }
    }

    /// The tick `now` falls in.
    pub fn tick_of(&self, now: u64) -> u64 {
        now / self.tick_ns
    }

    /// The end of the tick `now` falls in: a member conforming then is due now.
    pub fn tick_end(&self, now: u64) -> u64 {
        self.tick_of(now).saturating_add(1).saturating_mul(self.tick_ns)
    }

    /// Puts `member` where a departure at `due_ns` belongs (the due list if already due).
    pub fn schedule(&mut self, member: u32, due_ns: u64) {
        self.remove(member);
        let tick = self.tick_of(due_ns);
        self.place(member, tick);
    }

    /// Appends `member` to the due FIFO.
    pub fn push_due(&mut self, member: u32) {
        self.remove(member);
        self.link(member, DUE);
    }

    /// Appends `member` to the sparse FIFO: due now, and served before every
    /// member of the due FIFO. For a member that had nothing queued and is
    /// within its rate; once served it goes to the due FIFO like the others
    /// (so only a member that keeps within its rate keeps its precedence).
    pub fn push_sparse(&mut self, member: u32) {
        self.remove(member);
        self.link(member, SPARSE);
    }

    /// Puts `member` back at the head of the due FIFO (it could not be served yet).
    pub fn unpop_due(&mut self, member: u32) {
        self.remove(member);
        self.link_front(member, DUE);
    }

    /// Takes the member at the head of the sparse FIFO, else of the due FIFO.
    pub fn pop_due(&mut self) -> Option<u32> {
        let mut member = self.heads[SPARSE as usize];
        if member == NIL {
            member = self.heads[DUE as usize];
        }
        if member == NIL {
            return None;
        }
        self.remove(member);
        Some(member)
    }

    /// Whether anyone is due.
    pub fn has_due(&self) -> bool {
        self.heads[DUE as usize] != NIL || self.heads[SPARSE as usize] != NIL
    }

    /// Whether `member` is on the wheel or the due list.
    pub fn contains(&self, member: u32) -> bool {
        self.list.get(member as usize).is_some_and(|&l| l != NIL)
    }

    /// Whether `member` waits in a slot (not in a due list).
    pub fn is_waiting(&self, member: u32) -> bool {
        self.list.get(member as usize).is_some_and(|&l| l != NIL && l < DUE)
    }

    /// Members on the wheel and the due list.
    pub fn scheduled(&self) -> usize {
        self.scheduled
    }

    /// Work counters.
    pub fn work(&self) -> WheelWork {
        self.work
    }

    /// Moves the members of every tick up to and including `now`'s to the due FIFO.
    pub fn sweep(&mut self, now: u64) {
        let now_tick = self.tick_of(now);
        if now_tick < self.cursor {
            return;
        }
        let slots = SLOTS as u64;
        // Every fine slot is visited at most once per sweep: after a long
        // pause, the last SLOTS ticks cover all slots, and every fine entry
        // was placed less than a horizon after a cursor ≤ ours, so it is due.
        let first = self.cursor.max(now_tick.saturating_sub(slots - 1));
        if first > self.cursor {
            // The skipped ticks' cascades (coarse slots starting before `first`).
            let (from, to) = (self.cursor.div_ceil(slots), first.div_ceil(slots));
            self.cursor = first;
            for coarse in from..to.min(from + COARSE_SLOTS as u64) {
                self.cascade(coarse);
            }
        }
        for tick in first..=now_tick {
            self.cursor = tick;
            if tick % slots == 0 {
                self.cascade(tick / slots);
            }
            self.work.slots_swept += 1;
            let mut member = self.take_list((tick % slots) as usize);
            while member != NIL {
                let m = member as usize;
                member = self.next[m];
                self.unlinked(m);
                let due = self.due_tick[m];
                if due <= tick {
                    self.link(m as u32, DUE);
                } else {
                    // Parked beyond the horizon: put it where it now belongs.
                    self.place(m as u32, due);
                }
            }
        }
        self.cursor = now_tick + 1;
    }

    /// Moves the members of coarse slot `coarse` to where they now belong.
    fn cascade(&mut self, coarse: u64) {
        let mut member = self.take_list(COARSE as usize + (coarse % COARSE_SLOTS as u64) as usize);
        while member != NIL {
            let m = member as usize;
            member = self.next[m];
            self.unlinked(m);
            self.place(m as u32, self.due_tick[m]);
        }
    }

    /// Empties list `list`, returning its first member (the rest still linked by `next`).
    fn take_list(&mut self, list: usize) -> u32 {
        let head = self.heads[list];
        self.heads[list] = NIL;
        self.tails[list] = NIL;
        head
    }

    /// Clears the links of a member taken off a list by [`Wheel::take_list`].
    fn unlinked(&mut self, m: usize) {
        self.next[m] = NIL;
        self.prev[m] = NIL;
        self.list[m] = NIL;
        self.scheduled -= 1;
        self.work.members_swept += 1;
    }

    /// The start of the next tick with work, if any member is scheduled; a
    /// hint for the caller's timer (the wheel is not searched for the exact slot).
    pub fn next_tick_ns(&self) -> Option<u64> {
        (self.scheduled > 0).then(|| self.cursor.saturating_mul(self.tick_ns))
    }

    /// Removes `member` from whatever list holds it.
    pub fn remove(&mut self, member: u32) {
        let m = member as usize;
        let Some(&list) = self.list.get(m) else { return };
        if list == NIL {
            return;
        }
        let (prev, next) = (self.prev[m], self.next[m]);
        if prev == NIL {
            self.heads[list as usize] = next;
        } else {
            self.next[prev as usize] = next;
        }
        if next == NIL {
            self.tails[list as usize] = prev;
        } else {
            self.prev[next as usize] = prev;
        }
        self.next[m] = NIL;
        self.prev[m] = NIL;
        self.list[m] = NIL;
        self.scheduled -= 1;
    }

    /// Puts `member`, due at `tick`, in the due FIFO, a fine slot or a coarse slot.
    ///
    /// Fine: within `SLOTS` ticks of the cursor. Coarse: a coarse slot after
    /// the cursor's (its cascade is still ahead, whether or not the sweep is
    /// inside the cursor's tick), at most `COARSE_SLOTS − 1` after it (so no
    /// two pending coarse ticks share a slot); later ones park in the last.
    fn place(&mut self, member: u32, tick: u64) {
        if let Some(d) = self.due_tick.get_mut(member as usize) {
            *d = tick;
        }
        let slots = SLOTS as u64;
        if tick < self.cursor {
            self.link(member, DUE);
        } else if tick - self.cursor < slots {
            self.link(member, (tick % slots) as u32);
        } else {
            let coarse = (tick / slots).min(self.cursor / slots + COARSE_SLOTS as u64 - 1);
            self.link(member, COARSE + (coarse % COARSE_SLOTS as u64) as u32);
        }
    }

    fn link(&mut self, member: u32, list: u32) {
        let m = member as usize;
        if m >= self.list.len() {
            return;
        }
        let tail = self.tails[list as usize];
        self.prev[m] = tail;
        self.next[m] = NIL;
        if tail == NIL {
            self.heads[list as usize] = member;
        } else {
            self.next[tail as usize] = member;
        }
        self.tails[list as usize] = member;
        self.list[m] = list;
        self.scheduled += 1;
    }

    fn link_front(&mut self, member: u32, list: u32) {
        let m = member as usize;
        if m >= self.list.len() {
            return;
        }
        let head = self.heads[list as usize];
        self.next[m] = head;
        self.prev[m] = NIL;
        if head == NIL {
            self.tails[list as usize] = member;
        } else {
            self.prev[head as usize] = member;
        }
        self.heads[list as usize] = member;
        self.list[m] = list;
        self.scheduled += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_time_order_and_parks_far_ones() {
        let tick = 64_000;
        let mut w = Wheel::new(tick, 0);
        w.grow(3);
        w.schedule(0, 10 * tick);
        w.schedule(1, 5 * tick + 1);
        w.schedule(2, 5_000 * tick); // beyond the horizon
        w.sweep(4 * tick);
        assert_eq!(w.pop_due(), None);
        w.sweep(5 * tick);
        assert_eq!(w.pop_due(), Some(1));
        w.sweep(10 * tick);
        assert_eq!(w.pop_due(), Some(0));
        w.sweep(4_999 * tick);
        assert_eq!(w.pop_due(), None);
        w.sweep(5_000 * tick);
        assert_eq!(w.pop_due(), Some(2));
        assert_eq!(w.scheduled(), 0);
    }

    #[test]
    fn sparse_members_go_first_then_take_their_turn() {
        let mut w = Wheel::new(64_000, 0);
        w.grow(4);
        w.push_due(0);
        w.push_due(1);
        w.push_sparse(3);
        w.push_sparse(2);
        assert!(w.has_due());
        assert!(!w.is_waiting(3));
        assert_eq!(w.pop_due(), Some(3));
        assert_eq!(w.pop_due(), Some(2));
        // Served once, a sparse member queues behind the others.
        w.push_due(3);
        assert_eq!(w.pop_due(), Some(0));
        assert_eq!(w.pop_due(), Some(1));
        assert_eq!(w.pop_due(), Some(3));
        assert_eq!(w.pop_due(), None);
        assert!(!w.has_due());
        assert_eq!(w.scheduled(), 0);
    }

    #[test]
    fn far_departures_cascade_once() {
        let tick = 64_000;
        let mut w = Wheel::new(tick, 0);
        w.grow(64);
        // Waits of 2 to 60 horizons: each member is looked at twice (cascade, due).
        for m in 0..30u32 {
            w.schedule(m, (2 + 2 * u64::from(m)) * SLOTS as u64 * tick + 77 * tick + u64::from(m));
        }
        let mut released = Vec::new();
        let mut t = 0;
        while released.len() < 30 {
            t += tick / 3;
            w.sweep(t);
            while let Some(m) = w.pop_due() {
                let due = (2 + 2 * u64::from(m)) * SLOTS as u64 * tick + 77 * tick + u64::from(m);
                assert_eq!(w.tick_of(t), w.tick_of(due), "member {m} released at {t}, due {due}");
                released.push(m);
            }
        }
        assert_eq!(released, (0..30).collect::<Vec<_>>());
        assert_eq!(w.work().members_swept, 60);
        // Beyond the coarse horizon: parked, looked at once per coarse revolution.
        w.schedule(40, t + 3 * (SLOTS * COARSE_SLOTS) as u64 * tick);
        let due = w.due_tick[40];
        while w.pop_due().is_none() {
            t += 1_000 * tick;
            w.sweep(t);
        }
        assert!(w.tick_of(t) >= due && w.tick_of(t) < due + 1_000);
        assert!(w.work().members_swept <= 60 + 6, "{:?}", w.work());
    }

    #[test]
    fn a_long_pause_cascades_what_it_skipped() {
        let tick = 64_000;
        let mut w = Wheel::new(tick, 0);
        w.grow(3);
        w.schedule(0, 3 * SLOTS as u64 * tick);
        w.schedule(1, 10 * SLOTS as u64 * tick);
        w.schedule(2, 50 * tick);
        w.sweep(5 * SLOTS as u64 * tick);
        let mut due = Vec::new();
        while let Some(m) = w.pop_due() {
            due.push(m);
        }
        due.sort_unstable();
        assert_eq!(due, vec![0, 2]);
        w.sweep(10 * SLOTS as u64 * tick);
        assert_eq!(w.pop_due(), Some(1));
        assert_eq!(w.scheduled(), 0);
    }

    #[test]
    fn a_long_pause_costs_one_revolution() {
        let tick = 64_000;
        let mut w = Wheel::new(tick, 0);
        w.grow(1);
        w.schedule(0, 3 * tick);
        w.sweep(1_000_000 * tick);
        assert_eq!(w.pop_due(), Some(0));
        assert!(w.work().slots_swept <= SLOTS as u64);
    }
}
