//! The `builtin` source: Sluice's own metrics of the flag's variants, as applications report them
//! (`POST /api/v1/metrics`, kept in [`Metrics`]). Metrics: `error_rate`, `latency_p50|p95|p99`,
//! `mean(NAME)` and `count` of the ramped variant's requests served by the ramp.
//!
//! A plain threshold reads the last `window` (default: since the current percentage took effect). A
//! comparison (`compare: control | baseline` with `max_increase` or `max_increase_pct`) is an
//! anytime-valid confidence sequence ([`sluice_stats`]) over every request since the percentage took
//! effect, against the base variant's requests over the same time (`control`) or the flag's whole traffic
//! over `window` (default 1 h) before the rollout started (`baseline`); its value is the bound on how far
//! the canary is past its margin — the upper bound for a gate, the lower for a trigger. A latency quantile
//! is compared by the share of canary requests slower than the reference's quantile raised by the margin,
//! against the quantile's tail share (1% for p99). Before a comparison decides, the traffic split is
//! checked: canary users (distinct stickiness keys) against the percentage in force; a mismatch makes the
//! comparison inconclusive, so a broken assignment cannot pass as healthy.

use std::sync::Arc;

use serde::Deserialize;
use sluice_engine::Measurement;
use sluice_plan::model::{Check, Compare, Location, Spanned};
use sluice_plan::{Report, Supports};
use sluice_stats::{sample_means, sample_quantile, sample_ratio_mismatch, Margin, Sequence, Settings, QUANTILE_TIGHTEST_AT};

use crate::metrics::{Aggregate, Metrics, Served};
use crate::MeasureContext;

/// Fewer observations than this in either arm leave a comparison inconclusive unless the check says.
pub const DEFAULT_MIN_SAMPLES: u64 = 100;
/// The error rate of a comparison without `alpha` (check or plan).
pub const DEFAULT_ALPHA: f64 = 0.05;
const HOUR: u64 = 3_600_000;

/// The `builtin` source, reading the server's [`Metrics`].
pub struct Builtin {
    metrics: Arc<Metrics>,
}

impl Builtin {
    /// Reads `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Builtin {
        Builtin { metrics }
    }
}

/// A `builtin` check's own keys.
///
/// ```yaml
/// gates:
///   - { name: errors-vs-control, metric: error_rate, compare: control, max_increase: 0.005 }
///   - { name: p95-latency-ms, metric: latency_p95, window: 15m, below: 250, min_samples: 500 }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinCheck {
    /// `error_rate`, `latency_p50|p95|p99`, `mean(NAME)`, `count`.
    pub metric: Spanned<String>,
    /// Fewer samples are inconclusive (default 100).
    #[serde(default)]
    pub min_samples: Option<u64>,
}

/// The metrics a check may name.
pub const METRICS: &str = "error_rate, latency_p50, latency_p95, latency_p99, mean(NAME) or count";

/// What a metric is computed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// The share of requests that failed.
    ErrorRate,
    /// A latency quantile (0.99 for p99).
    Latency(f64),
    /// The mean of a named value.
    Mean(String),
    /// How many requests.
    Count,
}

impl Metric {
    /// The metric a check names: `error_rate`, `latency_p50|p95|p99`, `mean(NAME)`, `count`.
    pub fn parse(name: &str) -> Result<Metric, String> {
        metric(name)
    }
}

fn metric(name: &str) -> Result<Metric, String> {
    Ok(match name {
        "error_rate" => Metric::ErrorRate,
        "latency_p50" => Metric::Latency(0.50),
        "latency_p95" => Metric::Latency(0.95),
        "latency_p99" => Metric::Latency(0.99),
        "count" => Metric::Count,
        m if m.starts_with("mean(") && m.ends_with(')') && m.len() > 6 => Metric::Mean(m[5..m.len() - 1].to_string()),
        other => return Err(format!("unknown metric `{other}`: use {METRICS}")),
    })
}

#[async_trait::async_trait]
impl crate::Source for Builtin {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["metric"]
    }

    fn hint(&self) -> &'static str {
        "metric: error_rate"
    }

    fn supports(&self) -> Supports {
        Supports { compare: true, window: true, ..Supports::default() }
    }

    fn check_config(&self, check: &Check, _trigger: bool, at: Location, report: &mut Report<'_>) {
        if !check.block.has("metric") {
            report.error(at, "", format!("a builtin check needs a `metric`: {METRICS}"));
            return;
        }
        let Some(c) = report.parse_block::<BuiltinCheck>(&check.block, at) else { return };
        match metric(&c.metric.value) {
            Err(e) => report.error(c.metric.referenced, "metric", e),
            Ok(Metric::Count) if check.compare.is_some() => {
                report.error(c.metric.referenced, "metric", "`count` cannot be compared: give it a threshold")
            }
            Ok(_) => {}
        }
    }

    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        let config: BuiltinCheck = match check.block.parse(Location::UNKNOWN) {
            Ok(c) => c,
            Err(e) => return Measurement::Error(e.to_string()),
        };
        let metric = match Metric::parse(&config.metric.value) {
            Ok(m) => m,
            Err(e) => return Measurement::Error(e),
        };
        // The rollout's environment's aggregates (the controller gives every check `{{env}}`).
        let flag = &match cx.values.get("env") {
            Some(env) => crate::metrics::key(env, &cx.plan.flag.value),
            None => cx.plan.flag.value.clone(),
        };
        let ramped = cx.values.get("ramped").map(String::as_str).unwrap_or("on");
        let base = cx.values.get("base").map(String::as_str).unwrap_or("off");
        let min = config.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES);
        let split = [Served::Split];
        let Some(cmp) = &check.compare else {
            let from =
                check.window.as_ref().map_or(cx.phase_started, |w| cx.now.saturating_sub(w.value.0.as_millis() as u64));
            let canary = self.metrics.window(flag, Some(ramped), &split, from, None);
            return plain(&metric, &canary, min);
        };
        let trigger = check.severity.is_some();
        let alpha = alpha_of(check, cx.plan);
        // The traffic split first: a comparison of wrongly assigned cohorts proves nothing.
        let percent: f64 = cx.values.get("percent").and_then(|p| p.parse().ok()).unwrap_or(0.0);
        if 0.0 < percent && percent < 100.0 {
            let keys = self.metrics.split_keys(flag, cx.phase_started);
            if let Some(mismatch) = split_mismatch(&keys, ramped, percent, check.alpha.or(cx.plan.analysis.alpha).unwrap_or(DEFAULT_ALPHA)) {
                return mismatch;
            }
        }
        let canary = self.metrics.window(flag, Some(ramped), &split, cx.phase_started, None);
        let (reference, reference_window) = match cmp.value {
            // The base variant as the ramp leaves it, over the same time: OFREP says `DEFAULT` for users
            // outside the bucket.
            Compare::Control if percent < 100.0 => (
                self.metrics.window(flag, Some(base), &[Served::Split, Served::Plain], cx.phase_started, None),
                cx.phase_started,
            ),
            // At 100% no control is left: the control as it was measured in the last phase that had one.
            Compare::Control => match cx.rollout.and_then(|r| r.control_window(cx.plan, cx.now)) {
                Some((from, to)) => {
                    (self.metrics.window(flag, Some(base), &[Served::Split, Served::Plain], from, Some(to)), from)
                }
                None => {
                    return Measurement::Inconclusive(format!(
                        "no control at 100%: the rollout served no control before, or its last one is more than {} h old",
                        sluice_engine::CONTROL_AT_100_VALID_FOR / 3_600_000
                    ))
                }
            },
            Compare::Baseline => {
                let window = check.window.as_ref().map_or(HOUR, |w| w.value.0.as_millis() as u64);
                let before = cx.started_at.saturating_sub(window);
                (self.metrics.window(flag, None, &[Served::Split, Served::Plain], before, Some(cx.started_at)), 0)
            }
        };
        let Some(margin) = check.margin().map(margin_of) else {
            return Measurement::Error("a comparison needs `max_increase` or `max_increase_pct`".into());
        };
        let kind = if trigger { sluice_engine::CheckKind::Trigger } else { sluice_engine::CheckKind::Gate };
        let sequence = cx.rollout.and_then(|r| r.sequence(kind, &check.name.value));
        judge(&metric, &canary, &reference, Judging { margin, min_samples: min, reference_window, sequence, alpha, trigger })
    }
}

/// A plan's margin as the statistics take it.
pub fn margin_of(m: sluice_plan::model::Margin) -> Margin {
    match m {
        sluice_plan::model::Margin::Absolute(m) => Margin::Absolute(m),
        sluice_plan::model::Margin::Relative(p) => Margin::Relative(p),
    }
}

/// The error rate a comparison spends: its `alpha` (else the plan's, else 0.05) for a gate, which a
/// promotion needs alongside every other gate; a trigger's share of it when the plan has several
/// comparison triggers (`α/K`: each could roll back a healthy rollout, and together they may not do so more
/// often than α).
pub fn alpha_of(check: &Check, plan: &sluice_plan::Plan) -> f64 {
    let alpha = check.alpha.or(plan.analysis.alpha).unwrap_or(DEFAULT_ALPHA);
    if check.severity.is_none() {
        return alpha;
    }
    let triggers = plan.triggers.iter().filter(|t| t.value.compare.is_some()).count().max(1);
    alpha / triggers as f64
}

/// The traffic split's verdict: a mismatch between the canary's share of distinct users and the
/// percentage in force makes a comparison inconclusive, and says so.
pub fn split_mismatch(keys: &std::collections::BTreeMap<String, u64>, ramped: &str, percent: f64, alpha: f64) -> Option<Measurement> {
    let total: u64 = keys.values().sum();
    let canary_keys = keys.get(ramped).copied().unwrap_or(0);
    sample_ratio_mismatch(canary_keys, total, percent / 100.0, alpha).1.then(|| {
        Measurement::Inconclusive(format!(
            "sample ratio mismatch: {canary_keys} of {total} users got `{ramped}`, {percent}% should have — check how the flag is evaluated"
        ))
    })
}

/// How a comparison is judged, besides its data.
#[derive(Debug, Clone, Copy)]
pub struct Judging<'a> {
    /// How far past the reference the canary may be.
    pub margin: Margin,
    /// Fewer observations in either arm are inconclusive.
    pub min_samples: u64,
    /// Which reference window (its start, ms; 0 for the baseline before the rollout).
    pub reference_window: u64,
    /// The check's sequence so far: its closed windows.
    pub sequence: Option<&'a Sequence>,
    /// The one-sided error rate it spends ([`alpha_of`]).
    pub alpha: f64,
    /// A trigger judges the lower bound, a gate the upper.
    pub trigger: bool,
}

/// A comparison of the canary's aggregate with the reference's, on the check's sequence: pure, so that
/// the seeded simulations of whole rollouts (`tests/rollout_error_rates.rs`) run the same code as a live
/// rollout. A window with too few samples leaves the sequence as it was: the closed windows decide alone,
/// or nothing does.
pub fn judge(metric: &Metric, canary: &Aggregate, reference: &Aggregate, j: Judging<'_>) -> Measurement {
    let sample = match metric {
        Metric::ErrorRate => {
            sample_means(&canary.errors, &reference.errors, j.margin, true, j.min_samples, j.reference_window)
        }
        Metric::Mean(name) => {
            let (Some(c), Some(r)) = (canary.values.get(name), reference.values.get(name)) else {
                return Measurement::Inconclusive(format!("no `{name}` values yet"));
            };
            sample_means(c, r, j.margin, false, j.min_samples, j.reference_window)
        }
        Metric::Latency(q) => {
            sample_quantile(&canary.latency, &reference.latency, *q, j.margin, j.min_samples, j.reference_window)
        }
        Metric::Count => return Measurement::Error("`count` cannot be compared: give it a threshold".into()),
    };
    let tightest = if matches!(metric, Metric::Latency(_)) { QUANTILE_TIGHTEST_AT } else { Settings::default().tightest_at };
    let closed = j.sequence.filter(|s| s.n > 0.0);
    let bounds = match (&sample, closed) {
        (Some(open), seq) => seq.cloned().unwrap_or_default().bounds(Some(open), j.alpha, tightest),
        (None, Some(seq)) => seq.bounds(None, j.alpha, tightest),
        (None, None) => None,
    };
    match bounds {
        None => Measurement::Inconclusive(format!(
            "too few samples: {} canary, {} reference (min_samples {})",
            sample_count(metric, canary),
            sample_count(metric, reference),
            j.min_samples
        )),
        Some(b) => Measurement::Bounded {
            value: if j.trigger { b.lower } else { b.upper },
            lower: b.lower,
            upper: b.upper,
            sample,
        },
    }
}

fn sample_count(metric: &Metric, a: &Aggregate) -> u64 {
    match metric {
        Metric::Latency(_) => a.latency.n,
        Metric::Mean(name) => a.values.get(name).map_or(0, |m| m.n),
        _ => a.errors.n,
    }
}

/// A plain threshold's value: the metric over the window, inconclusive below `min` samples.
fn plain(metric: &Metric, a: &Aggregate, min: u64) -> Measurement {
    let n = sample_count(metric, a);
    if let Metric::Count = metric {
        return Measurement::Value(a.errors.n as f64);
    }
    if n < min.max(1) {
        return Measurement::Inconclusive(format!("too few samples: {n} (min_samples {min})"));
    }
    let v = match metric {
        Metric::ErrorRate => a.errors.mean(),
        Metric::Latency(q) => a.latency.quantile(*q),
        Metric::Mean(name) => a.values.get(name).and_then(|m| m.mean()),
        Metric::Count => None,
    };
    v.map_or(Measurement::Empty, Measurement::Value)
}
