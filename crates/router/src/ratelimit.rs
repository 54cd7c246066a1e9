//! A token bucket for ICMP error generation, one per core.
//!
//! RFC 1812 §4.3.2.8 and RFC 4443 §2.4(f) require a router to limit the rate
//! of the ICMP errors it originates, so that a flood of expired or
//! unroutable packets does not turn the box into an amplifier or eat its
//! uplink. Each worker owns one bucket (cores share nothing), so the box's
//! limit is `rate × workers`.
//!
//! Time is an argument (`now`, nanoseconds since the caller's epoch, the
//! engine's `Time`): the bucket never reads a clock, and tests drive it with
//! virtual time. A `now` earlier than the last one is treated as the last
//! one. Arithmetic is in integer nanoseconds: the bucket holds "credit" in
//! nanoseconds, a token costs `1e9 / rate` of it, and the credit is capped at
//! `burst` tokens.

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A token bucket over virtual time.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Nanoseconds of credit one token costs; 0 when the rate is 0 (never send).
    cost: u64,
    /// Most credit the bucket holds.
    cap: u64,
    credit: u64,
    last: u64,
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` at once; starts full at `now`.
    /// A rate or burst of 0 yields a bucket that never gives a token.
    pub fn new(rate: u32, burst: u32, now: u64) -> TokenBucket {
        let cost = if rate == 0 { 0 } else { NANOS_PER_SEC / u64::from(rate) };
        let cap = cost.saturating_mul(u64::from(burst));
        TokenBucket { cost, cap, credit: cap, last: now }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: u64) -> bool {
        if self.cost == 0 || self.cap == 0 {
            return false;
        }
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        self.credit = self.credit.saturating_add(elapsed).min(self.cap);
        if self.credit >= self.cost {
            self.credit -= self.cost;
            true
        } else {
            false
        }
    }

    /// Give back a token taken for a message that could not be sent.
    pub fn refund(&mut self) {
        self.credit = self.credit.saturating_add(self.cost).min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(100, 5, 0);
        assert_eq!((0..10).filter(|_| b.try_take(0)).count(), 5);
        // 100/s: one token per 10 ms.
        assert!(!b.try_take(9 * MS));
        assert!(b.try_take(10 * MS));
        assert!(!b.try_take(10 * MS));
        // A long pause refills only up to the burst.
        assert_eq!((0..10).filter(|_| b.try_take(10_000 * MS)).count(), 5);
    }

    #[test]
    fn steady_rate_over_virtual_second() {
        let mut b = TokenBucket::new(1000, 1, 0);
        assert!(b.try_take(0));
        // Offered 10x the rate for one second: about 1000 pass.
        let sent = (1..=10_000u64).filter(|i| b.try_take(i * 100_000)).count();
        assert!((999..=1001).contains(&sent), "{sent}");
    }

    #[test]
    fn time_going_backwards_and_zero_rate() {
        let mut b = TokenBucket::new(10, 1, 1000 * MS);
        assert!(b.try_take(1000 * MS));
        assert!(!b.try_take(0));
        assert!(!b.try_take(1050 * MS));
        assert!(b.try_take(1100 * MS));
        let mut z = TokenBucket::new(0, 10, 0);
        assert!(!z.try_take(u64::MAX));
        b.refund();
        assert!(b.try_take(1100 * MS));
    }
}
