//! Weighted max-min fair division by water-filling.
//!
//! Each claimant `i` receives `clamp(offset_i + weight_i × level, lo_i, hi_i)`
//! of a divisible `target`; the *fair level* is the largest level whose
//! allocations sum to at most the target. With `offset = 0`, `lo = rate` and
//! `hi = ceil` this is HTB's promise made exact: everyone gets their
//! guaranteed rate, the excess is shared in proportion to weight, nobody
//! exceeds their ceiling, and a claimant that needs less than its fair share
//! (`hi` reached) leaves the rest to the others — max-min fairness.
//!
//! Three regimes:
//! - the target covers every `hi`: [`Level::Unlimited`], everyone gets `hi`
//!   and the spare is reported;
//! - the target does not even cover the allocations at level 0 (guarantees
//!   oversubscribed): [`Level::Scaled`], everyone gets their level-0
//!   allocation scaled down by the same factor;
//! - otherwise [`Level::Finite`], found by Newton's method on the piecewise
//!   linear, non-decreasing sum, safeguarded by bisection, warm-started from
//!   the previous period's level. Each step is one pass over the claimants, so
//!   a period costs O(claimants × steps); from a warm start the sum is usually
//!   in the right linear piece and one or two steps land exactly. When the
//!   step budget runs out the lower end of the bracket is returned, so the
//!   allocations never exceed the target.

/// One claimant: its allocation at level `l` is `clamp(offset + weight × l, lo, hi)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub offset: i128,
    pub weight: u64,
    pub lo: u128,
    pub hi: u128,
}

impl Claim {
    /// The allocation at a finite level.
    pub fn at(&self, level: u64) -> u128 {
        let raw = self.offset.saturating_add(i128::from(self.weight) * i128::from(level));
        let raw = u128::try_from(raw).unwrap_or(0);
        raw.clamp(self.lo, self.hi.max(self.lo))
    }

    /// Whether the allocation grows with the level just above `level`.
    pub fn unclamped_at(&self, level: u64) -> bool {
        if self.weight == 0 {
            return false;
        }
        let raw = self.offset.saturating_add(i128::from(self.weight) * i128::from(level));
        raw >= self.lo as i128 && (raw as u128) < self.hi
    }
}

/// The outcome of a division.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Everyone gets `hi`; `spare` of the target is left over.
    Unlimited { spare: u128 },
    /// Everyone gets their level-0 allocation × `num / den`.
    Scaled { num: u128, den: u128 },
    /// Everyone gets their allocation at this level.
    Finite(u64),
}

impl Level {
    /// A claimant's allocation under this level (without any share of the spare).
    pub fn allocation(&self, claim: &Claim) -> u128 {
        match *self {
            Level::Unlimited { .. } => claim.hi.max(claim.lo),
            Level::Scaled { num, den } => scale(claim.at(0), num, den),
            Level::Finite(level) => claim.at(level),
        }
    }
}

/// `value × num / den` without overflow for the magnitudes used here (rates in bit/s).
pub fn scale(value: u128, num: u128, den: u128) -> u128 {
    if den == 0 {
        return 0;
    }
    match value.checked_mul(num) {
        Some(product) => product / den,
        // Rates are below 2⁶⁴, so only absurd inputs get here; stay below the target.
        None => (value / den).saturating_mul(num),
    }
}

/// Divides `target` among `count` claimants read through `claim(i)`.
///
/// `start` is the previous level (a warm start), `max_steps` bounds the
/// passes in the finite regime.
pub fn divide(count: usize, claim: impl Fn(usize) -> Claim, target: u128, start: u64, max_steps: u32) -> Level {
    let mut sum_hi: u128 = 0;
    let mut sum_zero: u128 = 0;
    let mut top: u64 = 0;
    for i in 0..count {
        let c = claim(i);
        sum_hi = sum_hi.saturating_add(c.hi.max(c.lo));
        sum_zero = sum_zero.saturating_add(c.at(0));
        if c.weight > 0 {
            // Beyond this level the claimant is at hi.
            let need = (c.hi as i128).saturating_sub(c.offset).max(0) as u128;
            let level = need.div_ceil(u128::from(c.weight));
            top = top.max(u64::try_from(level).unwrap_or(u64::MAX));
        }
    }
    if sum_hi <= target {
        return Level::Unlimited { spare: target - sum_hi };
    }
    if sum_zero >= target {
        return Level::Scaled { num: target, den: sum_zero };
    }
    // f(low) ≤ target < f(high): f(0) < target and f(top) = sum_hi > target.
    let (mut low, mut high) = (0u64, top);
    let mut guess = start.clamp(low, high);
    for _ in 0..max_steps {
        if high - low <= 1 {
            break;
        }
        if guess <= low || guess >= high {
            guess = low + (high - low) / 2;
        }
        let (sum, slope) = sum_and_slope(count, &claim, guess);
        if sum <= target {
            low = guess;
            if sum == target {
                break;
            }
            // Newton to the right; bisection if the slope gives no step.
            let step = (target - sum).checked_div(slope).unwrap_or(0);
            guess = guess.saturating_add(u64::try_from(step).unwrap_or(u64::MAX));
            if guess == low {
                guess = guess.saturating_add(1);
            }
        } else {
            high = guess;
            let step = if slope == 0 { 0 } else { (sum - target).div_ceil(slope) };
            guess = guess.saturating_sub(u64::try_from(step).unwrap_or(u64::MAX));
        }
    }
    Level::Finite(low)
}

/// The sum of allocations at `level` and the sum of weights still growing there.
fn sum_and_slope(count: usize, claim: &impl Fn(usize) -> Claim, level: u64) -> (u128, u128) {
    let mut sum: u128 = 0;
    let mut slope: u128 = 0;
    for i in 0..count {
        let c = claim(i);
        sum = sum.saturating_add(c.at(level));
        if c.unclamped_at(level) {
            slope += u128::from(c.weight);
        }
    }
    (sum, slope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(rate: u128, ceil: u128, weight: u64) -> Claim {
        Claim { offset: 0, weight, lo: rate, hi: ceil }
    }

    #[test]
    fn weighted_excess_and_ceilings() {
        // 100 to share; one member capped at 10, the others weights 1 and 2.
        let claims = [member(1, 10, 1), member(1, 1000, 1), member(1, 1000, 2)];
        let level = divide(3, |i| claims[i], 100, 0, 64);
        let alloc: Vec<u128> = claims.iter().map(|c| level.allocation(c)).collect();
        assert_eq!(alloc, vec![10, 30, 60]);
    }

    #[test]
    fn regimes() {
        let claims = [member(50, 60, 1), member(50, 60, 1)];
        assert_eq!(divide(2, |i| claims[i], 200, 0, 64), Level::Unlimited { spare: 80 });
        assert_eq!(divide(2, |i| claims[i], 80, 0, 64), Level::Scaled { num: 80, den: 100 });
        assert_eq!(divide(2, |i| claims[i], 110, 0, 64), Level::Finite(55));
    }

    #[test]
    fn never_above_target_even_when_cut_short() {
        let claims: Vec<Claim> = (1..50).map(|i| member(i, i * 97, (i % 7) as u64 + 1)).collect();
        for steps in 0..8 {
            let level = divide(claims.len(), |i| claims[i], 40_000, 3, steps);
            let total: u128 = claims.iter().map(|c| level.allocation(c)).sum();
            assert!(total <= 40_000, "{steps}: {total}");
        }
    }
}
