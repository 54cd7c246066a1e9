//! Token buckets counted in nanobits.
//!
//! Tokens are counted in bits × 10⁹ ("nanobits"), so refilling
//! at `rate` bit/s for `elapsed` ns adds exactly `rate × elapsed` tokens and
//! a packet of `len` bytes costs `len × 8 × 10⁹`: no division on the refill
//! path, no rounding, no drift over a long run. Tokens are `i128`, which
//! holds a 2⁶⁴ bit/s rate for 2⁶⁴ ns without overflow.
//!
//! Semantics are HTB's: a packet may leave while the bucket holds *any*
//! tokens, and its cost may take the bucket below zero (by at most one
//! packet). So a bucket of depth `D` at rate `R` passes at most
//! `R·T + D + one packet` bytes in any interval `T`; that is the whole
//! basis of the overshoot bound in [`crate::uplink`].

use crate::{BITS_PER_BYTE, NS_PER_SEC};

/// Tokens per byte.
pub const NANOBITS_PER_BYTE: i128 = (BITS_PER_BYTE as i128) * (NS_PER_SEC as i128);

/// A token bucket refilled lazily at a rate that may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    tokens: i128,
    depth: i128,
    rate_bps: u64,
    last_ns: u64,
}

impl Bucket {
    /// A bucket at `rate_bps` holding at most `depth_bytes`, full at `now`.
    pub fn full(rate_bps: u64, depth_bytes: u64, now: u64) -> Bucket {
        let depth = i128::from(depth_bytes) * NANOBITS_PER_BYTE;
        Bucket { tokens: depth, depth, rate_bps, last_ns: now }
    }

    /// An empty bucket.
    pub fn empty(rate_bps: u64, depth_bytes: u64, now: u64) -> Bucket {
        Bucket { tokens: 0, ..Bucket::full(rate_bps, depth_bytes, now) }
    }

    /// Adds the tokens earned at the current rate up to `now` (no-op if `now` is not later).
    pub fn refill(&mut self, now: u64) {
        if now <= self.last_ns {
            return;
        }
        let earned = i128::from(self.rate_bps) * i128::from(now - self.last_ns);
        self.tokens = self.tokens.saturating_add(earned).min(self.depth);
        self.last_ns = now;
    }

    /// Refills up to `now` at the old rate, then continues at `rate_bps`.
    pub fn set_rate(&mut self, now: u64, rate_bps: u64) {
        self.refill(now);
        self.rate_bps = rate_bps;
    }

    /// Changes the depth; tokens above it are lost.
    pub fn set_depth(&mut self, depth_bytes: u64) {
        self.depth = i128::from(depth_bytes) * NANOBITS_PER_BYTE;
        self.tokens = self.tokens.min(self.depth);
    }

    /// Whether a packet may leave now (after [`Bucket::refill`]).
    pub fn conforms(&self) -> bool {
        self.tokens > 0
    }

    /// Whether a packet may leave at `at` ≥ the last refill, if nothing else is charged before.
    pub fn conforms_at(&self, at: u64) -> bool {
        let ahead = i128::from(self.rate_bps) * i128::from(at.saturating_sub(self.last_ns));
        self.tokens.saturating_add(ahead).min(self.depth) > 0
    }

    /// Takes `len` bytes' worth of tokens (may go below zero).
    pub fn charge(&mut self, len: u32) {
        self.tokens = self.tokens.saturating_sub(i128::from(len) * NANOBITS_PER_BYTE);
    }

    /// The earliest time (≥ last refill) at which the bucket conforms again; `u64::MAX` at rate 0.
    pub fn conforming_at(&self) -> u64 {
        if self.tokens > 0 {
            return self.last_ns;
        }
        if self.rate_bps == 0 {
            return u64::MAX;
        }
        // The first instant with tokens > 0: (-tokens) / rate + 1, rounded up.
        let missing = (-self.tokens) as u128 + 1;
        let rate = u128::from(self.rate_bps);
        let wait = missing.div_ceil(rate);
        u64::try_from(wait).map_or(u64::MAX, |w| self.last_ns.saturating_add(w))
    }

    /// As [`Bucket::conforming_at`], were the rate `rate_bps` from the last refill on.
    pub fn conforming_at_rate(&self, rate_bps: u64) -> u64 {
        Bucket { rate_bps, ..*self }.conforming_at()
    }

    /// The current rate.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Tokens in bytes (negative when in debt), for statistics and tests.
    pub fn tokens_bytes(&self) -> i64 {
        i64::try_from(self.tokens / NANOBITS_PER_BYTE).unwrap_or(if self.tokens < 0 { i64::MIN } else { i64::MAX })
    }
}

impl Default for Bucket {
    /// An empty bucket at rate 0.
    fn default() -> Bucket {
        Bucket::empty(0, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_is_exact_and_capped() {
        let mut b = Bucket::empty(8_000, 10, 0); // 1000 bytes/s, depth 10 bytes
        b.refill(5_000_000); // 5 ms → 5 bytes
        assert_eq!(b.tokens_bytes(), 5);
        b.refill(1_000_000_000);
        assert_eq!(b.tokens_bytes(), 10);
    }

    #[test]
    fn debt_is_repaid_on_time() {
        let mut b = Bucket::empty(8_000, 10, 0);
        b.charge(100); // 100 bytes in debt at 1000 bytes/s: conforms after just over 100 ms
        let at = b.conforming_at();
        assert_eq!(at, 100_000_001);
        assert!(!b.conforms_at(at - 1));
        assert!(b.conforms_at(at));
    }
}
