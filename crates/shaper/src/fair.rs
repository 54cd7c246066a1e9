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
//! - otherwise [`Level::Finite`].
//!
//! Two solvers:
//! - [`divide`] scans the claimants: Newton's method on the piecewise
//!   linear, non-decreasing sum, safeguarded by bisection, warm-started from
//!   the previous level. Each step is one pass over the claimants, so it costs
//!   O(claimants × steps). Used across cores, where the claimants are the few
//!   cores and their claims change every period.
//! - [`Breakpoints`] is for the members of a core, whose number is large
//!   (240,000 backlogged under overload) while their claims change only when
//!   a member starts or stops being backlogged or its plan changes. It keeps
//!   the sum `f(λ) = Σ clamp(wᵢλ, rᵢ, cᵢ)` in aggregate form: each claimant
//!   contributes `rᵢ + [aᵢ < λ](wᵢλ − rᵢ) − [bᵢ < λ](wᵢλ − cᵢ)` with the
//!   *breakpoints* `aᵢ = ⌊rᵢ/wᵢ⌋` (it grows above) and `bᵢ = ⌈cᵢ/wᵢ⌉ − 1`
//!   (it is at its ceiling above), so `f` at any level is a handful of sums
//!   over the claimants whose breakpoints lie below it. The breakpoints are
//!   binned on a log scale ([`BINS`] bins: unit bins below 64, then 64 bins
//!   per octave, so a bin spans less than 1/64 of its lower edge) in Fenwick
//!   trees of per-bin sums of weights, rates and ceilings. Entering or leaving
//!   costs O(log bins) (12 nodes per tree), and the solve is one Fenwick
//!   descent of O(log bins) — neither depends on the number of claimants.
//!
//! # The error bound of [`Breakpoints`]
//! The descent finds the bin `k` holding the exact level `λ*` (the largest
//! with `f(λ*) ≤ target`): `f` at bin edges is exact, so `E_k ≤ λ* < E_{k+1}`.
//! Inside the bin the breakpoints' positions are unknown, only their sums; the
//! solver takes the steepest slope `f` can have there (weights of claimants
//! growing anywhere in the bin) and returns `λ̂ = E_k + (target − f(E_k)) /
//! slope`. Hence:
//! - the allocations never exceed the target (`f(λ̂) ≤ f(E_k) + slope ×
//!   (λ̂ − E_k) ≤ target`), as with [`divide`];
//! - `λ̂ = λ*` exactly when no breakpoint lies in the bin (`f` is then linear
//!   there, which is the usual case: plans are few, so breakpoints are), and
//!   in the unit bins below 64;
//! - otherwise `λ* − λ̂ < E_{k+1} − E_k ≤ E_k/64`, so `λ̂ > (63/64) λ*` and
//!   every claimant gets more than 63/64 (98.4 %) of its exact allocation
//!   (a claimant's allocation is 1-Lipschitz in `wᵢλ` and at least `wᵢλ̂` or
//!   pinned). What is not given out stays in the core's bucket for the
//!   others' next period, as any rounding would.

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

/// Mantissa bits of the breakpoint bins: `2^6 = 64` bins per octave.
const BIN_BITS: u32 = 6;
/// Bins per octave (and the number of unit bins at the bottom).
const BIN_SUB: u64 = 1 << BIN_BITS;
/// Bins covering every `u64`: 64 unit bins, then 64 per octave up to 2⁶⁴.
pub const BINS: usize = (BIN_SUB + (64 - BIN_BITS as u64) * BIN_SUB) as usize;
/// Fenwick tree size: the power of two at or above [`BINS`].
const TREE: usize = BINS.next_power_of_two();

/// The bin holding `v`: `[bin_start(k), bin_start(k + 1))`.
pub fn bin_of(v: u64) -> usize {
    if v < BIN_SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - BIN_BITS;
    let mantissa = (v >> shift) - BIN_SUB;
    (BIN_SUB + u64::from(shift) * BIN_SUB + mantissa) as usize
}

/// The lower edge of bin `k` (`k = BINS` gives 2⁶⁴).
pub fn bin_start(k: usize) -> u128 {
    let k = k as u64;
    if k < BIN_SUB {
        return u128::from(k);
    }
    let shift = (k - BIN_SUB) / BIN_SUB;
    let mantissa = BIN_SUB + (k - BIN_SUB) % BIN_SUB;
    u128::from(mantissa) << shift
}

/// Per-bin sums (one Fenwick node: 64 bytes, one cache line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(align(64))]
struct Sums {
    /// Weights and rates of claimants whose rising breakpoint `a` is in the bin(s).
    rise_weight: u128,
    rise_rate: u128,
    /// Weights and ceilings of claimants whose ceiling breakpoint `b` is in the bin(s).
    cap_weight: u128,
    cap_ceil: u128,
}

impl Sums {
    fn plus(self, o: Sums) -> Sums {
        Sums {
            rise_weight: self.rise_weight.wrapping_add(o.rise_weight),
            rise_rate: self.rise_rate.wrapping_add(o.rise_rate),
            cap_weight: self.cap_weight.wrapping_add(o.cap_weight),
            cap_ceil: self.cap_ceil.wrapping_add(o.cap_ceil),
        }
    }

    fn negated(self) -> Sums {
        Sums {
            rise_weight: self.rise_weight.wrapping_neg(),
            rise_rate: self.rise_rate.wrapping_neg(),
            cap_weight: self.cap_weight.wrapping_neg(),
            cap_ceil: self.cap_ceil.wrapping_neg(),
        }
    }
}

/// The result of [`Breakpoints::solve`]: the level and the sum's linearisation
/// around it, `offset + slope × λ` (for the cross-core figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solution {
    pub level: Level,
    /// Sum of allocations of claimants not growing with the level (at the level).
    pub offset: u128,
    /// Sum of the weights of claimants growing with the level.
    pub slope: u128,
}

/// Aggregated claims `clamp(weight × λ, rate, ceil)` (offset 0, weight ≥ 1),
/// solved in O(log bins) whatever their number. See the module documentation.
#[derive(Clone, Debug)]
pub struct Breakpoints {
    /// Fenwick tree over bins, 1-based (`tree[0]` unused).
    tree: Vec<Sums>,
    /// Per-bin sum of rising weights (the steepest slope inside a bin).
    rise_in_bin: Vec<u128>,
    rate_sum: u128,
    ceil_sum: u128,
    weight_sum: u128,
    claims: u64,
    /// Fenwick nodes visited (cost accounting).
    work: u64,
}

impl Default for Breakpoints {
    fn default() -> Breakpoints {
        Breakpoints::new()
    }
}

impl Breakpoints {
    /// No claims (allocates the bins: about 250 KiB).
    pub fn new() -> Breakpoints {
        Breakpoints {
            tree: vec![Sums::default(); TREE + 1],
            rise_in_bin: vec![0; BINS],
            rate_sum: 0,
            ceil_sum: 0,
            weight_sum: 0,
            claims: 0,
            work: 0,
        }
    }

    /// Adds a claim (`weight` 0 counts as 1, `ceil` below `rate` as `rate`).
    pub fn add(&mut self, rate: u64, ceil: u64, weight: u64) {
        self.update(rate, ceil, weight, false);
    }

    /// Removes a claim added before with the same figures.
    pub fn remove(&mut self, rate: u64, ceil: u64, weight: u64) {
        self.update(rate, ceil, weight, true);
    }

    /// Claims held.
    pub fn claims(&self) -> u64 {
        self.claims
    }

    /// Sum of the claims' rates (their allocations at level 0).
    pub fn rate_sum(&self) -> u128 {
        self.rate_sum
    }

    /// Sum of the claims' ceilings.
    pub fn ceil_sum(&self) -> u128 {
        self.ceil_sum
    }

    /// Sum of the claims' weights.
    pub fn weight_sum(&self) -> u128 {
        self.weight_sum
    }

    /// Fenwick nodes visited so far, by updates and solves.
    pub fn work(&self) -> u64 {
        self.work
    }

    fn update(&mut self, rate: u64, ceil: u64, weight: u64, remove: bool) {
        let w = weight.max(1);
        let ceil = ceil.max(rate);
        let (r, c, w128) = (u128::from(rate), u128::from(ceil), u128::from(w));
        let rise = bin_of(rate / w);
        let cap = bin_of(ceil.div_ceil(w).max(1) - 1);
        let mut a = Sums { rise_weight: w128, rise_rate: r, ..Sums::default() };
        let mut b = Sums { cap_weight: w128, cap_ceil: c, ..Sums::default() };
        if remove {
            a = a.negated();
            b = b.negated();
            self.rate_sum = self.rate_sum.wrapping_sub(r);
            self.ceil_sum = self.ceil_sum.wrapping_sub(c);
            self.weight_sum = self.weight_sum.wrapping_sub(w128);
            self.rise_in_bin[rise] = self.rise_in_bin[rise].wrapping_sub(w128);
            self.claims = self.claims.wrapping_sub(1);
        } else {
            self.rate_sum = self.rate_sum.wrapping_add(r);
            self.ceil_sum = self.ceil_sum.wrapping_add(c);
            self.weight_sum = self.weight_sum.wrapping_add(w128);
            self.rise_in_bin[rise] = self.rise_in_bin[rise].wrapping_add(w128);
            self.claims = self.claims.wrapping_add(1);
        }
        self.add_at(rise, a);
        self.add_at(cap, b);
    }

    fn add_at(&mut self, bin: usize, delta: Sums) {
        let mut i = bin + 1;
        while i <= TREE {
            self.tree[i] = self.tree[i].plus(delta);
            self.work += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// `f(E)` at a bin edge `E`, from the sums over the bins below it.
    fn sum_at(&self, below: &Sums, edge: u128) -> i128 {
        let growing = below.rise_weight as i128 - below.cap_weight as i128;
        (self.rate_sum as i128)
            .saturating_add(growing.saturating_mul(edge as i128))
            .saturating_sub(below.rise_rate as i128)
            .saturating_add(below.cap_ceil as i128)
    }

    /// The fair level for `target`, within the bound of the module documentation.
    pub fn solve(&mut self, target: u128) -> Solution {
        if self.ceil_sum <= target {
            return Solution {
                level: Level::Unlimited { spare: target - self.ceil_sum },
                offset: 0,
                slope: self.weight_sum,
            };
        }
        if self.rate_sum >= target {
            return Solution {
                level: Level::Scaled { num: target, den: self.rate_sum },
                offset: self.rate_sum,
                slope: self.weight_sum,
            };
        }
        // rate_sum = f(0) < target < ceil_sum: descend to the last bin k with f(E_k) ≤ target.
        let t = target as i128;
        let (mut pos, mut below) = (0usize, Sums::default());
        let mut step = TREE;
        while step > 0 {
            let next = pos + step;
            if next < BINS {
                self.work += 1;
                let candidate = below.plus(self.tree[next]);
                if self.sum_at(&candidate, bin_start(next)) <= t {
                    pos = next;
                    below = candidate;
                }
            }
            step >>= 1;
        }
        let edge = bin_start(pos);
        let end = bin_start(pos + 1).min(u128::from(u64::MAX) + 1);
        let at_edge = self.sum_at(&below, edge);
        // The steepest slope inside the bin: claimants rising at or before its end, not yet capped at its start.
        let slope = (below.rise_weight.wrapping_add(self.rise_in_bin[pos]) as i128 - below.cap_weight as i128).max(0);
        let level = if slope > 0 { edge + ((t - at_edge).max(0) / slope) as u128 } else { end - 1 };
        let level = level.min(end - 1);
        let offset = (at_edge - slope.saturating_mul(edge as i128)).max(0) as u128;
        Solution { level: Level::Finite(level as u64), offset, slope: slope as u128 }
    }
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

    #[test]
    fn bins_are_contiguous_and_fine() {
        for v in (0..10_000u64).chain([u64::MAX, u64::MAX - 1, 1 << 40, (1 << 40) - 1, 12_345_678_901]) {
            let k = bin_of(v);
            assert!(bin_start(k) <= u128::from(v) && u128::from(v) < bin_start(k + 1), "{v} in {k}");
            let width = bin_start(k + 1) - bin_start(k);
            assert!(width == 1 || width * 64 <= bin_start(k), "{v}: bin {k} too wide");
        }
        assert_eq!(bin_of(u64::MAX), BINS - 1);
        assert_eq!(bin_start(BINS), 1u128 << 64);
    }

    /// The exact level by bisection on the sum (the reference).
    fn exact_level(claims: &[Claim], target: u128) -> Level {
        let sum = |l: u64| claims.iter().map(|c| c.at(l)).sum::<u128>();
        if claims.iter().map(|c| c.hi).sum::<u128>() <= target || sum(0) >= target {
            return divide(claims.len(), |i| claims[i], target, 0, 8);
        }
        let (mut low, mut high) = (0u64, u64::MAX);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if sum(mid) <= target {
                low = mid;
            } else {
                high = mid;
            }
        }
        Level::Finite(low)
    }

    /// The histogram's level against the exact scan, on random claims.
    #[test]
    fn breakpoints_match_the_scan_within_the_bound() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        for round in 0..300 {
            let n = 1 + rnd(60) as usize;
            let plans = 1 + rnd(6);
            let kinds: Vec<(u128, u128, u64)> = (0..plans)
                .map(|_| {
                    let bits = 10 + rnd(30);
                    let rate = u128::from(rnd(1 << bits));
                    let bits = 10 + rnd(34);
                    let extra = u128::from(rnd(1 << bits));
                    (rate, rate + extra, 1 + rnd(if round % 2 == 0 { 4 } else { 1 << 20 }))
                })
                .collect();
            let claims: Vec<Claim> = (0..n)
                .map(|_| {
                    let (lo, hi, weight) = kinds[rnd(plans) as usize];
                    member(lo, hi, weight)
                })
                .collect();
            let mut h = Breakpoints::new();
            // Add and remove noise, to check removal restores the sums.
            h.add(5, 7, 3);
            for c in &claims {
                h.add(c.lo as u64, c.hi as u64, c.weight);
            }
            h.remove(5, 7, 3);
            let lo: u128 = claims.iter().map(|c| c.lo).sum();
            let hi: u128 = claims.iter().map(|c| c.hi).sum();
            let target = lo + u128::from(rnd(1 << 50)) % (hi - lo + 2);
            let exact = exact_level(&claims, target);
            let got = h.solve(target);
            let total: u128 = claims.iter().map(|c| got.level.allocation(c)).sum();
            assert!(total <= target || matches!(got.level, Level::Scaled { .. }), "{round}: {total} > {target}");
            match (exact, got.level) {
                (Level::Finite(e), Level::Finite(g)) => {
                    assert!(g <= e && (e - g) * 64 <= e.max(64), "{round}: exact {e}, histogram {g}");
                    // The linearisation is exact at the level when f is linear around it.
                    let lin = got.offset + got.slope * u128::from(g);
                    assert!(lin >= total && lin <= target, "{round}: {lin} vs {total}, {target}");
                }
                (e, g) => assert_eq!(e, g, "{round}"),
            }
        }
    }

    #[test]
    fn breakpoints_are_exact_when_no_breakpoint_is_near() {
        // The fairness test's plans (rate, ceil, weight) on 100 Mbit/s less 10 Mbit/s light.
        let plans = [
            (2_000_000u64, 100_000_000u64, 1u64),
            (2_000_000, 100_000_000, 2),
            (2_000_000, 15_000_000, 4),
            (20_000_000, 100_000_000, 1),
        ];
        let claims: Vec<Claim> = plans.iter().map(|&(r, c, w)| member(u128::from(r), u128::from(c), w)).collect();
        let mut h = Breakpoints::new();
        for &(r, c, w) in &plans {
            h.add(r, c, w);
        }
        let exact = divide(claims.len(), |i| claims[i], 90_000_000, 0, 200);
        assert_eq!(h.solve(90_000_000).level, exact);
    }
}
