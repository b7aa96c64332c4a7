//! `sluice-stats` holds the statistics Sluice decides with, as a pure library (no I/O, no clock): the
//! comparison of a canary with its reference (the control variant, or the flag's traffic before the
//! rollout) as an **anytime-valid confidence sequence**, and the **sample-ratio-mismatch** test of the
//! traffic split. Both may be looked at after every observation, at every tick, for as long as a phase
//! lasts, and keep their error rate: checking a fixed-horizon test at every tick would not (the
//! simulation tests beside this crate show both).
//!
//! # The comparison
//!
//! For a difference `d = canary − k × reference` of two means (an error ratio is the mean of 0/1
//! outcomes; `k` is 1 for an absolute margin, `1 + p/100` for a relative one), with `V` the estimated
//! variance of `d`'s estimate and `n` the canary's sample count, the bounds are
//! `d̂ ± sqrt(V × 2(nρ²+1)/(nρ²) × ln(sqrt(nρ²+1)/α))`: the asymptotic confidence sequence of
//! Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas, *Time-uniform central limit theory and asymptotic
//! confidence sequences* (2023), eq. (2), written for the two-sample difference as GrowthBook's sequential
//! testing does, with `ρ` tuned so that the sequence is tightest at a chosen canary sample count
//! (`ρ² = (−2 ln α + ln(1 − 2 ln α)) / n*`, Howard et al. 2021). It is two-sided at level `α`; Sluice uses
//! one side of it (the upper bound for gates, the lower for triggers), which keeps the one-sided error at
//! most `α` — conservatively. Assumptions: observations independent within each arm, the arms
//! independent, variances finite; the guarantee is asymptotic, so a comparison waits for `min_samples` in
//! each arm and a proportion's variance is taken from the add-one estimate `(x+1)/(n+2)`, never from a
//! zero count.
//!
//! ```
//! use sluice_stats::{compare, Margin, Moments, Settings};
//! let mut control = Moments::default();
//! let mut canary = Moments::default();
//! for i in 0..20_000u32 { control.add(if i % 100 == 0 { 1.0 } else { 0.0 }); }  // 1% errors
//! for i in 0..4_000u32 { canary.add(if i % 25 == 0 { 1.0 } else { 0.0 }); }    // 4% errors
//! let b = compare(&canary, &control, Margin::Absolute(0.0), &Settings::default()).unwrap();
//! assert!(b.lower > 0.0, "shown worse: {b:?}");
//! ```

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// Count, sum and sum of squares of a stream of numbers: merged by adding, and a window (the observations
/// since a percentage took effect) is the difference of two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Observations.
    pub n: u64,
    /// Their sum.
    pub sum: f64,
    /// The sum of their squares.
    pub sum_sq: f64,
}

impl Moments {
    /// One observation.
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    /// Another stream's observations too.
    pub fn merge(&mut self, other: &Moments) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// The observations since `earlier` (a snapshot of the same stream).
    pub fn since(&self, earlier: &Moments) -> Moments {
        Moments {
            n: self.n.saturating_sub(earlier.n),
            sum: self.sum - earlier.sum,
            sum_sq: (self.sum_sq - earlier.sum_sq).max(0.0),
        }
    }

    /// The mean, or `None` without observations.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The sample variance (n − 1), 0 for fewer than two observations.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0)).max(0.0)
    }

    /// The variance of a 0/1 stream from the add-one estimate of its proportion: never 0, so that a run
    /// without a single error is not taken as certainty.
    pub fn proportion_variance(&self) -> f64 {
        let p = (self.sum + 1.0) / (self.n as f64 + 2.0);
        p * (1.0 - p)
    }
}

/// Latencies in milliseconds, in buckets 4% wide from 0.01 ms up (a quantile is known to ±2%): sparse,
/// mergeable by adding counts, and a window is the difference of two snapshots.
///
/// ```
/// let mut h = sluice_stats::Histogram::default();
/// for ms in 1..=1000 { h.add(ms as f64); }
/// let p99 = h.quantile(0.99).unwrap();
/// assert!((p99 - 990.0).abs() / 990.0 < 0.03, "{p99}");
/// assert_eq!(h.count_above(2000.0), 0);
/// assert!((h.count_above(500.0) as i64 - 500).abs() < 25);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bucket index → count.
    pub buckets: std::collections::BTreeMap<u16, u64>,
    /// Observations.
    pub n: u64,
}

const GROWTH: f64 = 1.04;
const SMALLEST_MS: f64 = 0.01;

impl Histogram {
    fn bucket(ms: f64) -> u16 {
        if ms <= SMALLEST_MS {
            return 0;
        }
        ((ms / SMALLEST_MS).ln() / GROWTH.ln()).floor().clamp(0.0, u16::MAX as f64) as u16 + 1
    }

    /// The bucket's upper edge (ms).
    fn upper(b: u16) -> f64 {
        SMALLEST_MS * GROWTH.powi(b as i32)
    }

    /// One latency (ms).
    pub fn add(&mut self, ms: f64) {
        *self.buckets.entry(Self::bucket(ms.max(0.0))).or_default() += 1;
        self.n += 1;
    }

    /// Another histogram's latencies too.
    pub fn merge(&mut self, other: &Histogram) {
        for (b, c) in &other.buckets {
            *self.buckets.entry(*b).or_default() += c;
        }
        self.n += other.n;
    }

    /// The latencies since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut out = Histogram { buckets: Default::default(), n: self.n.saturating_sub(earlier.n) };
        for (b, c) in &self.buckets {
            let left = c.saturating_sub(earlier.buckets.get(b).copied().unwrap_or(0));
            if left > 0 {
                out.buckets.insert(*b, left);
            }
        }
        out
    }

    /// The latency below which a share `q` of them fall (the bucket's middle), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                let hi = Self::upper(*b);
                return Some(if *b == 0 { hi } else { (hi + hi / GROWTH) / 2.0 });
            }
        }
        self.buckets.keys().next_back().map(|b| Self::upper(*b))
    }

    /// How many latencies are above `ms` (those in buckets wholly above it).
    pub fn count_above(&self, ms: f64) -> u64 {
        let b = Self::bucket(ms);
        self.buckets.range(b.saturating_add(1)..).map(|(_, c)| c).sum()
    }
}

/// How a canary may differ from its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Margin {
    /// `canary − reference ≤ m` (`max_increase: m`).
    Absolute(f64),
    /// `canary − (1 + p/100) × reference ≤ 0` (`max_increase_pct: p`).
    Relative(f64),
}

impl Margin {
    /// The reference's factor and the margin the difference is held to.
    fn parts(self) -> (f64, f64) {
        match self {
            Margin::Absolute(m) => (1.0, m),
            Margin::Relative(p) => (1.0 + p / 100.0, 0.0),
        }
    }
}

/// What a comparison needs besides the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The error rate: of a gate passing a canary that is worse by more than the margin, or of a trigger
    /// firing on one that is not (default 0.05).
    pub alpha: f64,
    /// Fewer observations in either arm are inconclusive (default 100).
    pub min_samples: u64,
    /// The canary sample count at which the sequence is tightest (default 1,000).
    pub tightest_at: u64,
    /// The observations are 0/1 outcomes (an error ratio): their variance comes from the add-one estimate.
    pub proportion: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { alpha: 0.05, min_samples: 100, tightest_at: 1000, proportion: true }
    }
}

/// A comparison's result: the difference, as held against the margin, and its anytime-valid bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// The estimate of `canary − k × reference − margin`: ≤ 0 is "within the margin".
    pub estimate: f64,
    /// Its lower bound: above 0, the canary is shown worse than the margin allows (a trigger fires).
    pub lower: f64,
    /// Its upper bound: below 0, the canary is shown within the margin (a gate passes).
    pub upper: f64,
    /// Canary observations.
    pub canary: u64,
    /// Reference observations.
    pub reference: u64,
}

/// The half-width of the confidence sequence for an estimate of variance `v` after `n` canary
/// observations (see the crate documentation).
///
/// ```
/// let narrow = sluice_stats::half_width(1e-4, 10_000, 0.05, 1000);
/// let wide = sluice_stats::half_width(1e-4, 100, 0.05, 1000);
/// assert!(narrow > 1.96 * 1e-2, "wider than a fixed-horizon interval: {narrow}");
/// assert!(wide > narrow);
/// ```
pub fn half_width(v: f64, n: u64, alpha: f64, tightest_at: u64) -> f64 {
    let n = n.max(1) as f64;
    let l = -2.0 * alpha.ln();
    let rho2 = (l + (1.0 + l).ln()) / tightest_at.max(1) as f64;
    let nr = n * rho2;
    (v * 2.0 * (nr + 1.0) / nr * ((nr + 1.0).sqrt() / alpha).ln()).sqrt()
}

/// Compares a canary with its reference: `None` (inconclusive) until each has `min_samples`.
pub fn compare(canary: &Moments, reference: &Moments, margin: Margin, s: &Settings) -> Option<Bounds> {
    if canary.n < s.min_samples.max(2) || reference.n < s.min_samples.max(2) {
        return None;
    }
    let (k, m) = margin.parts();
    let (vc, vr) = if s.proportion {
        (canary.proportion_variance(), reference.proportion_variance())
    } else {
        (canary.variance(), reference.variance())
    };
    let v = vc / canary.n as f64 + k * k * vr / reference.n as f64;
    let estimate = canary.mean()? - k * reference.mean()? - m;
    let h = half_width(v, canary.n, s.alpha, s.tightest_at);
    Some(Bounds { estimate, lower: estimate - h, upper: estimate + h, canary: canary.n, reference: reference.n })
}

/// Tests an observed share against a known one: `x` of `n` were in the tail, and at most `share` should
/// be (a latency quantile's tail: 1% for p99). The bounds are of `x/n − share`, as [`compare`]'s.
pub fn share_above(x: u64, n: u64, share: f64, s: &Settings) -> Option<Bounds> {
    if n < s.min_samples.max(2) {
        return None;
    }
    let p = (x as f64 + 1.0) / (n as f64 + 2.0);
    let v = p * (1.0 - p) / n as f64;
    let estimate = x as f64 / n as f64 - share;
    let h = half_width(v, n, s.alpha, s.tightest_at);
    Some(Bounds { estimate, lower: estimate - h, upper: estimate + h, canary: n, reference: 0 })
}

/// The sample-ratio-mismatch test of a traffic split: `canary` of `total` distinct users (stickiness
/// keys) got the canary, and `expected` (the percentage in force, 0..1) should have. Sequential: the
/// beta-binomial mixture likelihood ratio (prior `Beta(c·p, c·(1−p))`, `c` = 100) against the expected
/// share, rejected when it reaches `1/α` — Ville's inequality bounds the false alarms by `α` however often
/// it is checked (the two-category case of Lindon & Malek, *Anytime-valid inference for multinomial count
/// data*, 2022). Returns the log of the ratio and whether it rejects.
///
/// ```
/// let (_, mismatch) = sluice_stats::sample_ratio_mismatch(1_000, 10_000, 0.10, 0.05);
/// assert!(!mismatch);
/// let (_, mismatch) = sluice_stats::sample_ratio_mismatch(1_500, 10_000, 0.10, 0.05);
/// assert!(mismatch);
/// ```
pub fn sample_ratio_mismatch(canary: u64, total: u64, expected: f64, alpha: f64) -> (f64, bool) {
    if total == 0 || !(0.0 < expected && expected < 1.0) {
        return (0.0, false);
    }
    let (x, n) = (canary.min(total) as f64, total as f64);
    let c = 100.0;
    let (a, b) = (c * expected, c * (1.0 - expected));
    let log_ratio = ln_beta(a + x, b + n - x) - ln_beta(a, b) - x * expected.ln() - (n - x) * (1.0 - expected).ln();
    (log_ratio, log_ratio >= (1.0 / alpha).ln())
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut f = 1.0f64;
        for n in 1..30u32 {
            f *= n as f64;
            assert!((ln_gamma(n as f64 + 1.0) - f.ln()).abs() < 1e-9, "{n}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn moments_window_is_a_difference_of_snapshots() {
        let mut m = Moments::default();
        [1.0, 2.0, 3.0].into_iter().for_each(|x| m.add(x));
        let before = m;
        [10.0, 20.0].into_iter().for_each(|x| m.add(x));
        let w = m.since(&before);
        assert_eq!((w.n, w.mean()), (2, Some(15.0)));
        assert!((w.variance() - 50.0).abs() < 1e-9);
    }
}
