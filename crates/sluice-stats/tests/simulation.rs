//! Seeded simulations of rollouts, checked at every tick, that show the comparison keeps its promises away
//! from the margin: false alarms at most alpha (A/A), the naive alternative failing in the same harness,
//! power against a doubled error ratio, gates that a worse canary cannot pass, and the
//! sample-ratio-mismatch test. Every kind at exactly its margin is `tests/margins.rs`.
//!
//! Each simulated rollout sends 1,000 requests per tick, 10% to the canary; 1,000 rollouts per scenario.
//! Run with `--nocapture` to see the figures (BENCHMARKS.md records them).

mod support;
use sluice_stats::{compare, sample_ratio_mismatch, Margin, Moments, Settings};
use support::sim::{add_outcomes, binomial};

const RUNS: usize = 1000;
const PER_TICK: u64 = 1000;
const CANARY_SHARE: f64 = 0.10;
const ALPHA: f64 = 0.05;

/// One rollout's arms after each tick.
struct Rollout {
    rng: fastrand::Rng,
    canary: Moments,
    reference: Moments,
    p_canary: f64,
    p_reference: f64,
}

impl Rollout {
    fn new(seed: u64, p_canary: f64, p_reference: f64) -> Rollout {
        Rollout {
            rng: fastrand::Rng::with_seed(seed),
            canary: Moments::default(),
            reference: Moments::default(),
            p_canary,
            p_reference,
        }
    }

    fn tick(&mut self) {
        let n_canary = binomial(&mut self.rng, PER_TICK, CANARY_SHARE);
        let n_reference = PER_TICK - n_canary;
        let e = binomial(&mut self.rng, n_canary, self.p_canary);
        add_outcomes(&mut self.canary, n_canary, e);
        let e = binomial(&mut self.rng, n_reference, self.p_reference);
        add_outcomes(&mut self.reference, n_reference, e);
    }
}

/// Runs `RUNS` rollouts of at most `ticks` ticks; `decided` says whether a tick's arms decide. Returns
/// the share of runs that decided, and each deciding run's canary sample count at the decision.
fn scenario(
    seed: u64,
    p_canary: f64,
    p_reference: f64,
    ticks: usize,
    decided: impl Fn(&Moments, &Moments) -> bool,
) -> (f64, Vec<u64>) {
    let mut at = Vec::new();
    for run in 0..RUNS {
        let mut r = Rollout::new(seed * 1_000_003 + run as u64, p_canary, p_reference);
        for _ in 0..ticks {
            r.tick();
            if decided(&r.canary, &r.reference) {
                at.push(r.canary.n);
                break;
            }
        }
    }
    (at.len() as f64 / RUNS as f64, at)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn standard_error(p: f64) -> f64 {
    (p * (1.0 - p) / RUNS as f64).sqrt()
}

fn fires(c: &Moments, r: &Moments) -> bool {
    compare(c, r, Margin::Absolute(0.0), &Settings::default()).is_some_and(|b| b.lower > 0.0)
}

#[test]
fn a_trigger_checked_at_every_tick_keeps_its_false_alarms_under_alpha_and_a_naive_z_test_does_not() {
    // A/A: canary and control both at 1% errors, 100 ticks (about 10,000 canary requests).
    let (rate, _) = scenario(1, 0.01, 0.01, 100, fires);
    let ceiling = ALPHA + 3.0 * standard_error(ALPHA);
    println!("A/A false alarms: {:.1}% of {RUNS} rollouts (ceiling {:.1}%)", rate * 100.0, ceiling * 100.0);
    assert!(rate <= ceiling, "A/A false-alarm rate {rate} over {ceiling}");

    // The same harness catches a test that is not anytime-valid: a one-sided z-test at 5%, checked at
    // every tick once each arm has 100 requests.
    let naive = |c: &Moments, r: &Moments| {
        if c.n < 100 || r.n < 100 {
            return false;
        }
        let v = c.proportion_variance() / c.n as f64 + r.proportion_variance() / r.n as f64;
        (c.mean().unwrap() - r.mean().unwrap()) / v.sqrt() > 1.645
    };
    let (naive_rate, _) = scenario(1, 0.01, 0.01, 100, naive);
    println!("naive z-test at every tick: {:.1}% false alarms", naive_rate * 100.0);
    assert!(naive_rate > 2.0 * ALPHA, "the harness would not notice peeking: {naive_rate}");
}

#[test]
fn a_doubled_error_ratio_is_caught_within_three_fixed_horizon_sample_sizes() {
    // The fixed-horizon canary sample size for 1% → 2%, one-sided α = 0.05, 80% power, canary at 10%.
    let (p0, p1, z) = (0.01f64, 0.02f64, 1.644_853_6 + 0.841_621_2);
    let per_canary = p1 * (1.0 - p1) + p0 * (1.0 - p0) * CANARY_SHARE / (1.0 - CANARY_SHARE);
    let fixed = (z * z * per_canary / ((p1 - p0) * (p1 - p0))).ceil() as u64;
    let limit = 3 * fixed;
    let ticks = (limit as f64 / (PER_TICK as f64 * CANARY_SHARE)).ceil() as usize + 20;
    let (_, mut at) = scenario(2, p1, p0, ticks, fires);
    let within = at.iter().filter(|n| **n <= limit).count() as f64 / RUNS as f64;
    let m = median(&mut at);
    println!(
        "power 1% → 2%: caught in {:.1}% of rollouts within {limit} canary requests (3 × the fixed-horizon {fixed}); median {m} canary requests to detection",
        within * 100.0
    );
    assert!(within >= 0.80, "power {within} under 80%");
}

#[test]
fn a_gate_does_not_pass_a_canary_twice_the_margin_worse_and_passes_an_equal_one() {
    let margin = 0.005;
    let passes = |c: &Moments, r: &Moments| {
        compare(c, r, Margin::Absolute(margin), &Settings::default()).is_some_and(|b| b.upper < 0.0)
    };
    // Worse by twice the margin: 1% → 2%.
    let (rate, _) = scenario(3, 0.01 + 2.0 * margin, 0.01, 100, passes);
    let ceiling = ALPHA + 3.0 * standard_error(ALPHA);
    println!("gate passes a canary 2× the margin worse: {:.1}% of rollouts", rate * 100.0);
    assert!(rate <= ceiling, "a worse canary passed in {rate} of runs");
    // Equal: it passes, and the median sample count says when.
    let (rate, mut at) = scenario(4, 0.01, 0.01, 150, passes);
    let m = median(&mut at);
    println!("gate passes an equal canary in {:.1}% of rollouts; median {m} canary requests", rate * 100.0);
    assert!(rate >= 0.9, "an equal canary passed in only {rate} of runs");
}

#[test]
fn the_traffic_split_check_raises_a_broken_split_and_rarely_a_correct_one() {
    // Distinct users: 1,000 new per tick, each to the canary with the split's probability.
    let run = |seed: u64, share: f64| {
        let mut hits = 0;
        for r in 0..RUNS {
            let mut rng = fastrand::Rng::with_seed(seed * 1_000_003 + r as u64);
            let (mut canary, mut total) = (0u64, 0u64);
            for _ in 0..100 {
                canary += binomial(&mut rng, PER_TICK, share);
                total += PER_TICK;
                if sample_ratio_mismatch(canary, total, CANARY_SHARE, ALPHA).1 {
                    hits += 1;
                    break;
                }
            }
        }
        hits as f64 / RUNS as f64
    };
    let correct = run(5, CANARY_SHARE);
    let broken = run(6, 0.11);
    println!(
        "sample ratio mismatch raised: {:.1}% with a correct 10% split, {:.1}% with 11%",
        correct * 100.0,
        broken * 100.0
    );
    assert!(correct <= ALPHA + 3.0 * standard_error(ALPHA), "{correct}");
    assert!(broken >= 0.9, "{broken}");
}
