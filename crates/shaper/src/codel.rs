//! CoDel, "Controlled Delay" active queue management (RFC 8289).
//!
//! CoDel looks at the *sojourn time* of each packet as it leaves a queue.
//! When the sojourn has stayed above `target` (5 ms) for a whole `interval`
//! (100 ms, about a worst-case RTT), the queue is a standing queue, not a
//! burst: CoDel drops (or, for ECN-capable packets, marks) one packet and
//! then further ones at `interval / √count` spacing until the sojourn falls
//! below target. Re-entering the dropping state soon after leaving it
//! resumes the previous drop rate (the `count - lastcount` rule).
//!
//! This module holds the per-queue state machine only; the queue itself
//! lives in [`crate::queue`], which calls [`Codel::on_dequeue`] for each
//! packet it pops and acts on the answer.

/// CoDel's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodelParams {
    /// Acceptable standing queue delay (RFC 8289: 5 ms).
    pub target_ns: u64,
    /// Window for deciding that a queue is standing (RFC 8289: 100 ms).
    pub interval_ns: u64,
    /// Queues holding at most this many bytes are never dropped from (one MTU).
    pub max_packet_bytes: u32,
}

/// How many `interval`s after leaving the dropping state it may resume at the old rate.
const RESUME_WINDOW_INTERVALS: u64 = 16;
/// Fixed-point scale for `1/√count`.
const INV_SQRT_SCALE: u64 = 1 << 16;

/// Per-queue CoDel state (RFC 8289 section 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Codel {
    /// When the sojourn first went above target, plus an interval; 0 when below target.
    first_above_ns: u64,
    /// When the next drop is due while dropping.
    drop_next_ns: u64,
    /// Drops since entering the dropping state.
    count: u32,
    last_count: u32,
    dropping: bool,
}

/// What to do with the packet just popped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Send it.
    Send,
    /// Congestion: drop it, or mark it if it is ECN-capable.
    Congested,
}

impl Codel {
    /// Judges a packet popped at `now` after `sojourn_ns` in the queue, with
    /// `remaining_bytes` still queued behind it. Call once per popped packet.
    ///
    /// This is RFC 8289's `dequeue()` unrolled into one decision per packet:
    /// the RFC's inner "drop, then pop the next" loop becomes successive calls.
    pub fn on_dequeue(&mut self, now: u64, sojourn_ns: u64, remaining_bytes: u64, p: &CodelParams) -> Signal {
        let ok_to_drop = self.ok_to_drop(now, sojourn_ns, remaining_bytes, p);
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
                return Signal::Send;
            }
            if now >= self.drop_next_ns {
                self.count = self.count.saturating_add(1);
                self.drop_next_ns = control_law(self.drop_next_ns, self.count, p.interval_ns);
                return Signal::Congested;
            }
            return Signal::Send;
        }
        if ok_to_drop {
            self.dropping = true;
            let delta = self.count.saturating_sub(self.last_count);
            let recent = now.saturating_sub(self.drop_next_ns) < RESUME_WINDOW_INTERVALS.saturating_mul(p.interval_ns);
            self.count = if delta > 1 && recent { delta } else { 1 };
            self.drop_next_ns = control_law(now, self.count, p.interval_ns);
            self.last_count = self.count;
            return Signal::Congested;
        }
        Signal::Send
    }

    /// The queue ran empty: it is not standing.
    pub fn on_empty(&mut self) {
        self.first_above_ns = 0;
        self.dropping = false;
    }

    fn ok_to_drop(&mut self, now: u64, sojourn_ns: u64, remaining_bytes: u64, p: &CodelParams) -> bool {
        if sojourn_ns < p.target_ns || remaining_bytes <= u64::from(p.max_packet_bytes) {
            self.first_above_ns = 0;
            return false;
        }
        if self.first_above_ns == 0 {
            // `max(1)`: 0 means "below target".
            self.first_above_ns = now.saturating_add(p.interval_ns).max(1);
            return false;
        }
        now >= self.first_above_ns
    }
}

/// `t + interval / √count`.
fn control_law(t: u64, count: u32, interval_ns: u64) -> u64 {
    let root_scaled = (u64::from(count.max(1)) * INV_SQRT_SCALE * INV_SQRT_SCALE).isqrt();
    let step = u128::from(interval_ns) * u128::from(INV_SQRT_SCALE) / u128::from(root_scaled.max(1));
    t.saturating_add(u64::try_from(step).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const P: CodelParams = CodelParams { target_ns: 5 * MS, interval_ns: 100 * MS, max_packet_bytes: 1514 };

    #[test]
    fn control_law_spacing() {
        assert_eq!(control_law(0, 1, 100 * MS), 100 * MS);
        assert_eq!(control_law(0, 4, 100 * MS), 50 * MS);
    }

    #[test]
    fn drops_only_after_an_interval_above_target() {
        let mut c = Codel::default();
        let backlog = 100_000;
        assert_eq!(c.on_dequeue(0, 6 * MS, backlog, &P), Signal::Send);
        assert_eq!(c.on_dequeue(99 * MS, 6 * MS, backlog, &P), Signal::Send);
        assert_eq!(c.on_dequeue(100 * MS, 6 * MS, backlog, &P), Signal::Congested);
        // Next drop an interval later, then faster.
        assert_eq!(c.on_dequeue(150 * MS, 6 * MS, backlog, &P), Signal::Send);
        assert_eq!(c.on_dequeue(200 * MS, 6 * MS, backlog, &P), Signal::Congested);
        // Below target: leave the dropping state.
        assert_eq!(c.on_dequeue(201 * MS, MS, backlog, &P), Signal::Send);
        assert_eq!(c.on_dequeue(400 * MS, 6 * MS, backlog, &P), Signal::Send);
    }
}
