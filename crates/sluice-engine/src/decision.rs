//! What one check decided at one tick, typed: which check, its value, what the value was held against
//! ([`Threshold`]), the verdict and, for a comparison, its confidence interval. The same value goes from the
//! engine through the store to the API, `/metrics`, the dashboard and `sluice report`; nothing reads a
//! threshold back out of its text.
//!
//! ```
//! use sluice_engine::{CheckDecision, CheckKind, Outcome, Threshold, Verdict};
//! let d = CheckDecision {
//!     at: 60_000, check: "errors".into(), kind: CheckKind::Trigger, value: Some(0.07),
//!     threshold: Threshold::Above { limit: 0.05 }, outcome: Outcome::Holds, note: None,
//!     run: 1, needed: 1, dry_run: false, interval: None,
//! };
//! let json = serde_json::to_value(&d).unwrap();
//! assert_eq!(json["threshold"], "> 0.05");
//! assert_eq!(json["rule"]["above"]["limit"], 0.05);
//! assert_eq!(json["line"], 0.05);
//! let back: CheckDecision = serde_json::from_value(json).unwrap();
//! assert_eq!(back, d);
//! assert_eq!(back.verdict(), Verdict::Fired);
//! assert_eq!(back.threshold.line(), Some(0.05));
//! ```

use serde::{Deserialize, Serialize};
use sluice_plan::model::{Compare, Margin};

use crate::Millis;

/// Gate or trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Must hold to promote.
    Gate,
    /// Fires when it holds.
    Trigger,
}

impl CheckKind {
    /// `gate` or `trigger`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Gate => "gate",
            CheckKind::Trigger => "trigger",
        }
    }
}

/// Whether a check's condition held at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The condition holds (a gate passes; a trigger's condition is met).
    Holds,
    /// It does not.
    Clear,
    /// Not measured: never promotes, never fires, and breaks a `for` run.
    Inconclusive,
}

impl Outcome {
    /// `holds`, `clear`, `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Holds => "holds",
            Outcome::Clear => "clear",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// A decision's verdict in words: a gate that holds passes, a trigger that holds fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A gate whose condition holds.
    Pass,
    /// A gate whose condition does not.
    Fail,
    /// A trigger whose condition holds.
    Fired,
    /// A trigger whose condition does not.
    Quiet,
    /// No value: neither.
    Inconclusive,
}

impl Verdict {
    /// `pass`, `fail`, `fired`, `quiet`, `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Fired => "fired",
            Verdict::Quiet => "quiet",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Which bound of a comparison's confidence interval a check judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// A gate: the upper bound below 0 shows the canary within its margin.
    Upper,
    /// A trigger: the lower bound above 0 shows it past its margin.
    Lower,
}

/// What a check's value is held against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// The value below `limit`.
    Below {
        /// The limit.
        limit: f64,
    },
    /// The value above `limit`.
    Above {
        /// The limit.
        limit: f64,
    },
    /// The value within `[low, high]`.
    Between {
        /// The lower end.
        low: f64,
        /// The upper end.
        high: f64,
    },
    /// A statistical comparison: the value is a bound on `canary − k × reference − m` (see
    /// [`Measurement::Bounded`](crate::Measurement::Bounded)), judged against 0.
    Compared {
        /// What the canary is compared with.
        reference: Compare,
        /// How far past it the canary may be.
        margin: Margin,
        /// The bound judged.
        bound: Bound,
    },
    /// The value against its own average before the rollout started (captured then) plus the margin: at
    /// most that for a gate, above it for a trigger.
    Baseline {
        /// The captured average, once captured.
        baseline: Option<f64>,
        /// How far past it the value may be.
        margin: Margin,
        /// `Upper`: a gate (value ≤ limit holds); `Lower`: a trigger (value > limit holds).
        bound: Bound,
    },
    /// A confirm gate: its webhook answered 2xx (value 1).
    Confirmed,
    /// As a version before typed thresholds wrote it: text only.
    Written {
        /// The text.
        text: String,
    },
}

impl Threshold {
    /// Whether the condition holds for `v`.
    pub fn holds(&self, v: f64) -> bool {
        match *self {
            Threshold::Below { limit } => v < limit,
            Threshold::Above { limit } => v > limit,
            Threshold::Between { low, high } => low <= v && v <= high,
            Threshold::Compared { bound: Bound::Upper, .. } => v < 0.0,
            Threshold::Compared { bound: Bound::Lower, .. } => v > 0.0,
            Threshold::Baseline { baseline: Some(b), margin, bound: Bound::Upper } => v <= margin.limit(b),
            Threshold::Baseline { baseline: Some(b), margin, bound: Bound::Lower } => v > margin.limit(b),
            Threshold::Baseline { baseline: None, .. } | Threshold::Written { .. } => false,
            Threshold::Confirmed => v >= 1.0,
        }
    }

    /// The one number a chart draws the threshold at, if there is one: a plain limit, 0 for a comparison's
    /// bound, a baseline's limit.
    pub fn line(&self) -> Option<f64> {
        match *self {
            Threshold::Below { limit } | Threshold::Above { limit } => Some(limit),
            Threshold::Compared { .. } => Some(0.0),
            Threshold::Baseline { baseline: Some(b), margin, .. } => Some(margin.limit(b)),
            _ => None,
        }
    }

    /// The captured baseline, for a baseline check that has one.
    pub fn baseline(&self) -> Option<f64> {
        match self {
            Threshold::Baseline { baseline, .. } => *baseline,
            _ => None,
        }
    }
}

/// Nine significant digits: an average of 0.2s is 0.2, not 0.19999999999999984.
fn short(x: f64) -> String {
    format!("{}", format!("{x:.9e}").parse::<f64>().unwrap_or(x))
}

impl std::fmt::Display for Threshold {
    /// As people read it: `< 0.01`, `upper bound of canary − control − 0.005 < 0`, `<= 0.22 (baseline 0.2 + 10%)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Below { limit } => write!(f, "< {limit}"),
            Threshold::Above { limit } => write!(f, "> {limit}"),
            Threshold::Between { low, high } => write!(f, "in [{low:?}, {high:?}]"),
            Threshold::Compared { reference, margin, bound } => {
                let reference = match reference {
                    Compare::Control => "control",
                    Compare::Baseline => "baseline",
                };
                let past = match margin {
                    Margin::Absolute(m) => format!("canary − {reference} − {m}"),
                    Margin::Relative(p) => format!("canary − {} × {reference}", 1.0 + p / 100.0),
                };
                match bound {
                    Bound::Upper => write!(f, "upper bound of {past} < 0"),
                    Bound::Lower => write!(f, "lower bound of {past} > 0"),
                }
            }
            Threshold::Baseline { baseline, margin, bound } => {
                let sym = if *bound == Bound::Upper { "<=" } else { ">" };
                match baseline {
                    Some(b) => write!(f, "{sym} {} (baseline {} {margin})", short(margin.limit(*b)), short(*b)),
                    None => write!(f, "{sym} baseline {margin}"),
                }
            }
            Threshold::Confirmed => f.write_str("2xx"),
            Threshold::Written { text } => f.write_str(text),
        }
    }
}

/// The recorded verdict of one check at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Wire", from = "Wire")]
pub struct CheckDecision {
    /// When.
    pub at: Millis,
    /// Which check.
    pub check: String,
    /// Gate or trigger.
    pub kind: CheckKind,
    /// The measured value.
    pub value: Option<f64>,
    /// What the value was held against.
    pub threshold: Threshold,
    /// The verdict.
    pub outcome: Outcome,
    /// Why inconclusive, when it is.
    pub note: Option<String>,
    /// Consecutive ticks the condition has held.
    pub run: u32,
    /// Ticks it must hold (`for` / interval).
    pub needed: u32,
    /// Recorded, never acted on.
    pub dry_run: bool,
    /// A comparison's confidence interval of `canary − k × reference − margin` (see
    /// [`Measurement::Bounded`](crate::Measurement::Bounded)).
    pub interval: Option<[f64; 2]>,
}

impl CheckDecision {
    /// The verdict in words.
    pub fn verdict(&self) -> Verdict {
        match (self.kind, self.outcome) {
            (_, Outcome::Inconclusive) => Verdict::Inconclusive,
            (CheckKind::Gate, Outcome::Holds) => Verdict::Pass,
            (CheckKind::Gate, Outcome::Clear) => Verdict::Fail,
            (CheckKind::Trigger, Outcome::Holds) => Verdict::Fired,
            (CheckKind::Trigger, Outcome::Clear) => Verdict::Quiet,
        }
    }

    /// The key of this check in a rollout's runs: `gate:NAME`, `trigger:NAME`.
    pub fn key(&self) -> String {
        crate::check_key(self.kind, &self.check)
    }
}

/// A decision as JSON: the threshold as text (`threshold`, what people and earlier clients read) and typed
/// (`rule`); a decision stored before `rule` existed reads back with its text only.
#[derive(Serialize, Deserialize)]
struct Wire {
    at: Millis,
    check: String,
    kind: CheckKind,
    value: Option<f64>,
    threshold: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rule: Option<Threshold>,
    /// Where a chart draws the threshold ([`Threshold::line`]): for readers, never read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<f64>,
    outcome: Outcome,
    note: Option<String>,
    run: u32,
    needed: u32,
    dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<[f64; 2]>,
}

impl From<CheckDecision> for Wire {
    fn from(d: CheckDecision) -> Wire {
        Wire {
            at: d.at,
            check: d.check,
            kind: d.kind,
            value: d.value,
            threshold: d.threshold.to_string(),
            line: d.threshold.line(),
            rule: match d.threshold {
                Threshold::Written { .. } => None,
                t => Some(t),
            },
            outcome: d.outcome,
            note: d.note,
            run: d.run,
            needed: d.needed,
            dry_run: d.dry_run,
            interval: d.interval,
        }
    }
}

impl From<Wire> for CheckDecision {
    fn from(w: Wire) -> Self {
        CheckDecision {
            at: w.at,
            check: w.check,
            kind: w.kind,
            value: w.value,
            threshold: w.rule.unwrap_or(Threshold::Written { text: w.threshold }),
            outcome: w.outcome,
            note: w.note,
            run: w.run,
            needed: w.needed,
            dry_run: w.dry_run,
            interval: w.interval,
        }
    }
}
