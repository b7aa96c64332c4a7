//! `sluice-stats` holds the statistics Sluice decides with, as a pure library (no I/O, no clock): the
//! comparison of a canary with its reference (the control variant, or the flag's traffic before the
//! rollout) as an **anytime-valid confidence sequence**, and the **sample-ratio-mismatch** test of the
//! traffic split. Both may be looked at after every observation, at every tick, for as long as a phase
//! lasts, and keep their error rate: checking a fixed-horizon test at every tick would not (the
//! simulation tests beside this crate show both).
//!
//! # The comparison
//!
//! For a difference `d = canary − k × reference − m` (an error ratio is the mean of 0/1 outcomes; `k` is 1
//! and `m` the margin for `max_increase: m`, `k = 1 + p/100` and `m = 0` for `max_increase_pct: p`), with
//! `V` the variance of `d`'s estimate and `n` the canary's sample count, the bounds are
//! `d̂ ± sqrt(V × 2(nρ²+1)/(nρ²) × ln(sqrt(nρ²+1)/α₁))`: the asymptotic confidence sequence of Waudby-Smith,
//! Arbour, Sinha, Kennedy and Ramdas, *Time-uniform central limit theory and asymptotic confidence
//! sequences* (2023), eq. (2), written for the two-sample difference as GrowthBook's sequential testing
//! does, with `ρ` tuned so that the sequence is tightest at a chosen canary sample count
//! (`ρ² = (−2 ln α₁ + ln(1 − 2 ln α₁)) / n*`, Howard et al. 2021). A gate reads only the upper bound and a
//! trigger only the lower one, so each is a **one-sided** test at `α`: the normal-mixture boundary at
//! `α₁ = 2α·Φ(√(2 ln(1/2α)))` (0.0984 for α = 0.05) is one-sided at `α` ([`one_sided`]).
//!
//! What makes it hold **at the margin** is `V`. The plug-in variance of a proportion is small exactly when
//! the canary's count happens to be low, which is when a gate passes: the bound undercovers (a review
//! measured 5.3–5.9 % false passes at α = 5 %). So each arm's variance is the larger of its own estimate
//! and the one the margin implies: for an error ratio, the restricted maximum-likelihood proportions under
//! `canary = k × reference + m` (Farrington–Manning); for a mean, `max(s_c², k²s_r²)` on both arms; for a
//! latency quantile, a two-sample test on tail shares ([`sample_quantile`]) that counts the reference
//! quantile's own uncertainty and splits the histogram bucket straddling the limit. The seeded
//! simulations beside this crate (`tests/margins.rs`; `scripts/error-rates` runs them 10,000 times) show
//! each kind at exactly its margin, and `docs/metrics.md`'s table is generated from their output.
//!
//! Across a rollout a comparison keeps **one sequence** ([`Sequence`]), stratified by window (each stay at
//! a percentage, each retry of a phase): a retried or resumed phase adds a window, it never starts a new
//! sequence with a fresh chance at `α`. Windows that share a reference (a baseline; the control captured
//! before 100 %) have correlated errors, and the sequence's variance counts that.
//!
//! Assumptions: observations independent within each arm, the arms independent, variances finite, and
//! (for quantiles) densities smooth across one 4 % bucket near the quantile; the guarantee is asymptotic,
//! so a comparison waits for `min_samples` in each arm.
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
        // The last bucket holds everything past its lower edge (a latency of 1e308 ms is still counted as
        // the slowest, not wrapped around to the fastest).
        ((ms / SMALLEST_MS).ln() / GROWTH.ln()).floor().clamp(0.0, f64::from(u16::MAX - 1)) as u16 + 1
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

    /// The bucket's lower edge (ms).
    fn lower(b: u16) -> f64 {
        if b == 0 {
            SMALLEST_MS / GROWTH
        } else {
            Self::upper(b - 1)
        }
    }

    /// The latency below which a share `q` of them fall, interpolated log-linearly inside its bucket (a
    /// rank halfway through a bucket's count is halfway through its edges, on a log scale), or `None` when
    /// empty.
    ///
    /// ```
    /// let mut h = sluice_stats::Histogram::default();
    /// // 0.1 ms to 2 s, evenly: p99 is 1,980 ms (the last bucket, cut at 2 s, would not be even inside).
    /// for ms in 1..=20_000 { h.add(ms as f64 / 10.0); }
    /// let p99 = h.quantile_interpolated(0.99).unwrap();
    /// assert!((p99 - 1980.0).abs() / 1980.0 < 0.001, "{p99}");
    /// ```
    pub fn quantile_interpolated(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.n as f64;
        let mut before = 0.0;
        for (b, c) in &self.buckets {
            let c = *c as f64;
            if before + c >= rank && c > 0.0 {
                let (lo, hi) = (Self::lower(*b), Self::upper(*b));
                let f = ((rank - before) / c).clamp(0.0, 1.0);
                return Some(lo * (hi / lo).powf(f));
            }
            before += c;
        }
        self.buckets.keys().next_back().map(|b| Self::upper(*b))
    }

    /// How many latencies are above `ms`, the bucket that straddles it counted by the share of its edges
    /// above `ms` (log scale): neither all of it nor none.
    ///
    /// ```
    /// let mut h = sluice_stats::Histogram::default();
    /// for ms in 1..=1000 { h.add(ms as f64); }
    /// assert!((h.share_above(500.0) - 500.0).abs() < 3.0, "{}", h.share_above(500.0));
    /// ```
    pub fn share_above(&self, ms: f64) -> f64 {
        let b = Self::bucket(ms);
        let above: u64 = self.buckets.range(b.saturating_add(1)..).map(|(_, c)| c).sum();
        let straddling = self.buckets.get(&b).copied().unwrap_or(0) as f64;
        let (lo, hi) = (Self::lower(b), Self::upper(b));
        let part = if ms <= lo { 1.0 } else { ((hi / ms).ln() / (hi / lo).ln()).clamp(0.0, 1.0) };
        above as f64 + straddling * part
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
    /// The reference's factor and the margin the difference is held to: `(k, m)`.
    pub fn parts(self) -> (f64, f64) {
        match self {
            Margin::Absolute(m) => (1.0, m),
            Margin::Relative(p) => (1.0 + p / 100.0, 0.0),
        }
    }
}

/// What a comparison needs besides the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The one-sided error rate: of a gate passing a canary that is worse than the margin allows, or of a
    /// trigger firing on one that is not (default 0.05).
    pub alpha: f64,
    /// Fewer observations in either arm are inconclusive (default 100).
    pub min_samples: u64,
    /// The canary sample count at which the sequence is tightest (default 2,500: comparisons of error
    /// ratios and means decide between 2,000 and 8,000 canary samples).
    pub tightest_at: u64,
    /// The observations are 0/1 outcomes (an error ratio).
    pub proportion: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { alpha: 0.05, min_samples: 100, tightest_at: 2_500, proportion: true }
    }
}

/// Where a latency quantile's sequence is tightest: its decisions come later than a mean's.
pub const QUANTILE_TIGHTEST_AT: u64 = 5_000;

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
/// observations, at level `alpha` for one side of the two-sided boundary (give it [`one_sided`]'s α₁ for
/// a one-sided test at α).
///
/// ```
/// let narrow = sluice_stats::half_width(1e-4, 10_000, 0.05, 1000);
/// let wide = sluice_stats::half_width(1e-4, 100, 0.05, 1000);
/// assert!(narrow > 1.96 * 1e-2, "wider than a fixed-horizon interval: {narrow}");
/// assert!(wide > narrow);
/// ```
pub fn half_width(v: f64, n: u64, alpha: f64, tightest_at: u64) -> f64 {
    half_width_at(v, n as f64, alpha, tightest_at)
}

fn half_width_at(v: f64, n: f64, alpha: f64, tightest_at: u64) -> f64 {
    let n = n.max(1.0);
    let l = -2.0 * alpha.ln();
    let rho2 = (l + (1.0 + l).ln()) / tightest_at.max(1) as f64;
    let nr = n * rho2;
    (v.max(0.0) * 2.0 * (nr + 1.0) / nr * ((nr + 1.0).sqrt() / alpha).ln()).sqrt()
}

/// The standard normal distribution function Φ (W. J. Cody's rational approximation of erfc as in
/// *Numerical Recipes*, relative error under 1.2 × 10⁻⁷).
///
/// ```
/// assert!((sluice_stats::normal_cdf(1.959964) - 0.975).abs() < 1e-6);
/// assert!((sluice_stats::normal_cdf(0.0) - 0.5).abs() < 1e-7);
/// ```
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// The level α₁ at which one side of the two-sided normal-mixture boundary is a one-sided test at
/// `alpha`: `2α·Φ(√(2 ln(1/2α)))`. With a half-normal mixing prior the one-sided mixture martingale is
/// `2·M₂·Φ(z)`, at least `1/α` once `M₂` reaches `1/(2αΦ(·))`; so the boundary holds, and a gate or a
/// trigger no longer spends half its error rate on the side it never reads.
///
/// ```
/// let a1 = sluice_stats::one_sided(0.05);
/// assert!((a1 - 0.0984).abs() < 5e-4, "{a1}");
/// assert!(sluice_stats::one_sided(0.01) < 0.02);
/// ```
pub fn one_sided(alpha: f64) -> f64 {
    let alpha = alpha.clamp(1e-12, 0.499);
    let z = (2.0 * (1.0 / (2.0 * alpha)).ln()).sqrt();
    2.0 * alpha * normal_cdf(z)
}

/// What one window of a comparison contributed — a phase at one percentage, or one attempt at it: the
/// canary's count, the estimate of `canary − k × reference − m`, and the two parts of that estimate's
/// variance. `reference` names the reference's window (its start, ms): windows that share one (a
/// baseline, or the control captured before 100 %) have correlated errors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Canary observations.
    pub n: f64,
    /// The estimate of `canary − k × reference − m`.
    pub d: f64,
    /// The variance the canary arm contributes to the estimate.
    pub v_canary: f64,
    /// The variance the reference arm contributes.
    pub v_reference: f64,
    /// Which reference window: its start (ms).
    pub reference: u64,
}

impl Sample {
    /// This window alone, at `alpha` (one-sided), tightest at `tightest_at`.
    pub fn bounds(&self, alpha: f64, tightest_at: u64) -> Bounds {
        Sequence::default().bounds(Some(self), alpha, tightest_at).expect("a sample has observations")
    }
}

/// A comparison's one sequence across a rollout: the windows closed so far, stratified (each window's
/// estimate weighted by its canary count, never pooled counts: the split changes between phases while
/// the reference drifts, and pooling would confound the two). Kept with the rollout, so a restart, a
/// retried phase or a resume continues it.
///
/// ```
/// use sluice_stats::{Sample, Sequence};
/// let first = Sample { n: 1_000.0, d: -0.002, v_canary: 1e-5, v_reference: 1e-6, reference: 1 };
/// let later = Sample { n: 3_000.0, d: -0.003, v_canary: 3e-6, v_reference: 3e-7, reference: 2 };
/// let mut seq = Sequence::default();
/// seq.close(&first);
/// let both = seq.bounds(Some(&later), 0.05, 2_500).unwrap();
/// assert!((both.estimate - (-0.00275)).abs() < 1e-12, "weighted by count: {both:?}");
/// assert_eq!(both.canary, 4_000);
/// let alone = later.bounds(0.05, 2_500);
/// assert!(both.upper - both.estimate < alone.upper - alone.estimate, "narrower than the window alone");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    /// Canary observations of the closed windows.
    pub n: f64,
    /// Σ n·d over them.
    pub nd: f64,
    /// Σ n²·v_canary over them.
    pub nnv: f64,
    /// Each reference window the closed windows used: (its start, Σ n of the windows using it, its
    /// variance part `v_reference`).
    pub references: Vec<(u64, f64, f64)>,
}

impl Sequence {
    /// The window `s` is over: it joins the closed ones.
    pub fn close(&mut self, s: &Sample) {
        self.n += s.n;
        self.nd += s.n * s.d;
        self.nnv += s.n * s.n * s.v_canary;
        match self.references.iter_mut().find(|(r, _, _)| *r == s.reference) {
            Some(r) => {
                r.1 += s.n;
                r.2 = s.v_reference;
            }
            None => self.references.push((s.reference, s.n, s.v_reference)),
        }
    }

    /// The sequence's bounds with the open window `open`, at `alpha` (one-sided), tightest at
    /// `tightest_at`; `None` without a single observation.
    pub fn bounds(&self, open: Option<&Sample>, alpha: f64, tightest_at: u64) -> Option<Bounds> {
        let (on, od) = open.map_or((0.0, 0.0), |s| (s.n, s.d));
        let n = self.n + on;
        if n <= 0.0 {
            return None;
        }
        let estimate = (self.nd + on * od) / n;
        let mut q = self.nnv + open.map_or(0.0, |s| s.n * s.n * s.v_canary);
        let mut open_counted = false;
        for (r, nr, vr) in &self.references {
            let (weight, v) = match open {
                Some(s) if s.reference == *r => {
                    open_counted = true;
                    (nr + s.n, s.v_reference)
                }
                _ => (*nr, *vr),
            };
            q += weight * weight * v;
        }
        if let (Some(s), false) = (open, open_counted) {
            q += s.n * s.n * s.v_reference;
        }
        let v = q / (n * n);
        let h = half_width_at(v, n, one_sided(alpha), tightest_at);
        let reference = self.references.iter().map(|r| r.1).sum::<f64>() + on;
        Some(Bounds {
            estimate,
            lower: estimate - h,
            upper: estimate + h,
            canary: n.round() as u64,
            reference: reference.round() as u64,
        })
    }
}

/// The restricted maximum-likelihood proportions `(canary, reference)` under `canary = k × reference + m`,
/// from add-one counts (the log-likelihood is concave in the reference's proportion: bisection on its
/// derivative).
fn restricted(x_c: f64, n_c: f64, x_r: f64, n_r: f64, k: f64, m: f64) -> (f64, f64) {
    const EPS: f64 = 1e-12;
    let (a, b, c, e) = (x_c + 1.0, n_c - x_c + 1.0, x_r + 1.0, n_r - x_r + 1.0);
    let mut lo = (-m / k).max(0.0) + EPS;
    let mut hi = ((1.0 - m) / k).min(1.0) - EPS;
    if lo >= hi {
        let p = ((lo + hi) / 2.0).clamp(EPS, 1.0 - EPS);
        return ((k * p + m).clamp(EPS, 1.0 - EPS), p);
    }
    let slope = |p: f64| a * k / (k * p + m) - b * k / (1.0 - k * p - m) + c / p - e / (1.0 - p);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if slope(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let p = 0.5 * (lo + hi);
    ((k * p + m).clamp(0.0, 1.0), p)
}

/// Both arms' sizes once each has `min_samples`, and at least two (one observation has no spread).
fn enough(canary: u64, reference: u64, min_samples: u64) -> Option<(f64, f64)> {
    let min = min_samples.max(2);
    (canary >= min && reference >= min).then_some((canary as f64, reference as f64))
}

/// One window of a comparison of two means (an error ratio when `proportion`): `None` (inconclusive)
/// until each arm has `min_samples`. The variance is held at what the margin implies (see the crate
/// documentation); `reference` names the reference's window.
pub fn sample_means(
    canary: &Moments,
    reference: &Moments,
    margin: Margin,
    proportion: bool,
    min_samples: u64,
    reference_window: u64,
) -> Option<Sample> {
    let (nc, nr) = enough(canary.n, reference.n, min_samples)?;
    let (k, m) = margin.parts();
    let d = canary.mean()? - k * reference.mean()? - m;
    let (v_canary, v_reference) = if proportion {
        let (pc, pr) = restricted(canary.sum, nc, reference.sum, nr, k, m);
        let vc = (pc * (1.0 - pc)).max(canary.proportion_variance());
        let vr = (pr * (1.0 - pr)).max(reference.proportion_variance());
        (vc / nc, k * k * vr / nr)
    } else {
        // The margin's null: the canary is the reference scaled by k (or shifted by m), so its variance is
        // k² times the reference's; each arm takes the larger of its own and the implied one.
        let s2 = canary.variance().max(k * k * reference.variance());
        (s2 / nc, s2 / nr)
    };
    Some(Sample { n: nc, d, v_canary, v_reference, reference: reference_window })
}

/// One window of a comparison of a latency quantile `q` (0.99 for p99): the canary's share above the
/// reference's quantile raised by the margin (`k × x̂ + m`), against the quantile's tail share
/// `1 − q`. The reference quantile is interpolated inside its bucket and its own uncertainty counted
/// (`p₀(1−p₀)/n_r`, by the Bahadur representation); the canary's bucket that straddles the limit is split,
/// not dropped. `None` until each arm has `min_samples`.
///
/// ```
/// use sluice_stats::{sample_quantile, Histogram, Margin, QUANTILE_TIGHTEST_AT};
/// let (mut control, mut canary) = (Histogram::default(), Histogram::default());
/// for i in 0..50_000u32 { control.add(10.0 + (i % 1000) as f64 / 10.0); }
/// for i in 0..5_000u32 { canary.add(3.0 * (10.0 + (i % 1000) as f64 / 10.0)); }
/// let s = sample_quantile(&canary, &control, 0.99, Margin::Relative(10.0), 100, 0).unwrap();
/// assert!(s.bounds(0.05, QUANTILE_TIGHTEST_AT).lower > 0.0, "three times slower is shown worse");
/// ```
pub fn sample_quantile(
    canary: &Histogram,
    reference: &Histogram,
    q: f64,
    margin: Margin,
    min_samples: u64,
    reference_window: u64,
) -> Option<Sample> {
    let (nc, nr) = enough(canary.n, reference.n, min_samples)?;
    let (k, m) = margin.parts();
    let limit = k * reference.quantile_interpolated(q)? + m;
    let above = canary.share_above(limit);
    let p0 = 1.0 - q;
    let p_hat = (above + 1.0) / (nc + 2.0);
    let v_canary = (p0 * (1.0 - p0)).max(p_hat * (1.0 - p_hat)) / nc;
    let v_reference = p0 * (1.0 - p0) / nr;
    Some(Sample { n: nc, d: above / nc - p0, v_canary, v_reference, reference: reference_window })
}

/// Compares a canary with its reference in one window: `None` (inconclusive) until each has
/// `min_samples`.
pub fn compare(canary: &Moments, reference: &Moments, margin: Margin, s: &Settings) -> Option<Bounds> {
    sample_means(canary, reference, margin, s.proportion, s.min_samples, 0).map(|x| x.bounds(s.alpha, s.tightest_at))
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

    /// Found by the generated ingestion batches (`sluice-server/tests/generated.rs`): a latency past the
    /// last bucket's edge overflowed the bucket index (a panic in a debug build, the fastest bucket in a
    /// release build).
    #[test]
    fn a_latency_past_the_last_bucket_counts_as_the_slowest() {
        let mut h = Histogram::default();
        for ms in [f64::MAX, 1e308, 1e30, f64::NAN, -5.0, 3.0] {
            h.add(ms);
        }
        assert_eq!(h.n, 6);
        assert_eq!(h.count_above(1e9), 3, "{:?}", h.buckets);
        assert_eq!(h.count_above(1.0), 4);
    }

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
