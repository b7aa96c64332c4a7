//! The plan model, as written in YAML. Every value a check may need to point at is [`Spanned`], so that a
//! problem found after parsing still names its line and column.
//!
//! The plan keeps the keys every check, action and notifier shares — a check's name, severity, thresholds,
//! margins, `for`, window and decision rule; an action's name and timeout; a notifier's `on` — and keeps
//! the rest of each, as written and with its places, as the [`Block`] of its plug-in: the plug-ins of
//! `sluice-sources` say which kinds exist, and each reads and checks its own keys.

use std::collections::BTreeMap;

use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer};
pub use serde_saphyr::{Location, Spanned};

pub use crate::block::{Block, Node};
use crate::Dur;

/// A rollout plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Plan name (e.g. `bounded-reasoning`).
    pub name: Spanned<String>,
    /// The flag the plan ramps.
    pub flag: Spanned<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The ramp's base and ramped variants; defaults to the flag's own.
    #[serde(default)]
    pub ramp: Option<Spanned<RampSpec>>,
    /// How and how often gates and triggers are measured.
    #[serde(default)]
    pub analysis: Analysis,
    /// Values for `{{NAME}}` templates (e.g. `LLM_COST_PER_TOKEN`).
    #[serde(default)]
    pub vars: BTreeMap<String, Scalar>,
    /// Gates of every phase.
    #[serde(default)]
    pub gates: Vec<Spanned<Check>>,
    /// The steps, in order.
    pub phases: Vec<Spanned<Phase>>,
    /// Watch after the last phase, triggers armed, before the rollout completes.
    #[serde(default)]
    pub bake: Option<Spanned<Dur>>,
    /// Conditions watched from start to completion.
    #[serde(default)]
    pub triggers: Vec<Spanned<Check>>,
    /// What rolling back does.
    #[serde(default)]
    pub rollback: Rollback,
    /// Where people hear about it.
    #[serde(default)]
    pub notify: Vec<Spanned<Notifier>>,
    /// Webhooks asked before the start, each percentage increase or the final promotion: a 2xx goes on,
    /// anything else waits (and status says so).
    #[serde(default)]
    pub confirm: Vec<Spanned<Confirm>>,
}

/// A confirm gate, as Flagger's confirm-rollout, confirm-traffic-increase and confirm-promotion webhooks:
/// asked at every tick while the rollout would take one of its steps. Its call is an action's keys
/// (`webhook: {url: …}`), run as that action: success says yes.
///
/// ```
/// let yaml = "name: p\nflag: f\nphases: [ { percent: 5 }, { percent: 100 } ]\nconfirm:\n  - { name: change-freeze, before: [start, increase], webhook: { url: 'http://127.0.0.1:1/ok' } }\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// use sluice_plan::model::ConfirmStep;
/// assert_eq!(plan.confirm[0].value.steps(), vec![ConfirmStep::Start, ConfirmStep::Increase]);
/// ```
#[derive(Debug, Clone)]
pub struct Confirm {
    /// Shown on status and in decisions: `confirm:NAME`.
    pub name: Spanned<String>,
    /// Which steps it guards.
    pub before: Vec<Spanned<ConfirmStep>>,
    /// Longest the call may take (default 10 s).
    pub timeout: Option<Spanned<Dur>>,
    /// The action that asks (`webhook: {url: …}`: a 2xx says yes), as an action's keys.
    pub block: Block,
}

impl<'de> Deserialize<'de> for Confirm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Confirm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a confirm gate: `name`, `before` and the call that asks (`webhook: {url: …}`)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Confirm, A::Error> {
                let (mut name, mut before, mut timeout) = (None, None, None);
                let block = read_map(map, |key, map| {
                    match key {
                        "name" => put(&mut name, map, key)?,
                        "before" => put(&mut before, map, key)?,
                        "timeout" => put(&mut timeout, map, key)?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                Ok(Confirm {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    before: before.ok_or_else(|| de::Error::missing_field("before"))?,
                    timeout,
                    block,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl Confirm {
    /// The steps it guards.
    pub fn steps(&self) -> Vec<ConfirmStep> {
        self.before.iter().map(|s| s.value).collect()
    }

    /// The action that asks it.
    pub fn action(&self) -> Action {
        Action {
            name: Some(format!("confirm {}", self.name.value)),
            flag: None,
            idempotent: false,
            timeout: self.timeout.clone(),
            block: self.block.clone(),
        }
    }
}

/// A step a confirm gate guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmStep {
    /// Before the first phase's percentage is set.
    Start,
    /// Before each promotion to the next phase.
    Increase,
    /// Before the last phase passes (the rollout then bakes or completes).
    Promotion,
}

/// Which variants a ramp moves between.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampSpec {
    /// Served outside the ramp (`off`, or a mode such as `warn`).
    pub base: Spanned<String>,
    /// Served inside the ramp (`on`, `enforce`).
    pub ramped: Spanned<String>,
}

/// Analysis settings. Keys other than these are plug-ins' plan-wide settings, one block per kind
/// (`prometheus: {url: …}` is the `prometheus` source's).
#[derive(Debug)]
pub struct Analysis {
    /// Time between ticks.
    pub interval: Spanned<Dur>,
    /// Default source of gates and triggers.
    pub source: Option<Spanned<String>>,
    /// Consecutive source errors before the rollout pauses (or rolls back).
    pub max_source_errors: Spanned<u32>,
    /// What to do when a source stays down.
    pub on_source_down: OnSourceDown,
    /// Consecutive inconclusive ticks of a trigger (no data, too few samples) before people are told it
    /// cannot fire (default 10).
    pub max_inconclusive: Spanned<u32>,
    /// The error rate of comparisons without their own `alpha` (default 0.05).
    pub alpha: Option<f64>,
    /// Each plug-in's plan-wide settings, by its kind's name (`prometheus`).
    pub settings: Block,
}

impl Analysis {
    /// The plan-wide settings of the plug-in `kind` (`analysis.prometheus`), if the plan gives them.
    pub fn settings_of(&self, kind: &str) -> Option<&Spanned<Node>> {
        self.settings.get(kind)
    }
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: one_minute(),
            source: None,
            max_source_errors: three(),
            on_source_down: OnSourceDown::Pause,
            max_inconclusive: ten(),
            alpha: None,
            settings: Block::default(),
        }
    }
}

/// The keys of `analysis` that are the plan's own.
pub const ANALYSIS_KEYS: &[&str] =
    &["interval", "source", "max_source_errors", "on_source_down", "max_inconclusive", "alpha"];

impl<'de> Deserialize<'de> for Analysis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Analysis;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("analysis settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Analysis, A::Error> {
                let mut a = Analysis::default();
                let (mut interval, mut max_source_errors, mut max_inconclusive, mut on_source_down) =
                    (None, None, None, None);
                a.settings = read_map(map, |key, map| {
                    match key {
                        "interval" => put(&mut interval, map, key)?,
                        "source" => put(&mut a.source, map, key)?,
                        "max_source_errors" => put(&mut max_source_errors, map, key)?,
                        "on_source_down" => put(&mut on_source_down, map, key)?,
                        "max_inconclusive" => put(&mut max_inconclusive, map, key)?,
                        "alpha" => put(&mut a.alpha, map, key)?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                a.interval = interval.unwrap_or_else(one_minute);
                a.max_source_errors = max_source_errors.unwrap_or_else(three);
                a.max_inconclusive = max_inconclusive.unwrap_or_else(ten);
                a.on_source_down = on_source_down.unwrap_or_default();
                Ok(a)
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a mapping: `known` takes the keys the plan keeps (returning `false` for any other), and every other
/// key goes, with its value as written, into the [`Block`] returned.
fn read_map<'de, A: MapAccess<'de>>(
    mut map: A,
    mut known: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<Block, A::Error> {
    let mut block = Block::default();
    while let Some(key) = map.next_key::<Spanned<String>>()? {
        if block.has(&key.value) {
            return Err(de::Error::custom(format_args!("the key `{}` is given twice", key.value)));
        }
        if !known(&key.value, &mut map)? {
            let value = map.next_value::<Spanned<Node>>()?;
            block.entries.push((key, value));
        }
    }
    Ok(block)
}

/// Reads a key's value into its slot; a key given twice is refused.
fn put<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
    key: &str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::custom(format_args!("the key `{key}` is given twice")));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

fn one_minute() -> Spanned<Dur> {
    Spanned::new(
        Dur(std::time::Duration::from_secs(60)),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn three() -> Spanned<u32> {
    Spanned::new(3, serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN)
}

fn ten() -> Spanned<u32> {
    Spanned::new(10, serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN)
}

/// What to do after `max_source_errors`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSourceDown {
    /// Pause and ask a person.
    #[default]
    Pause,
    /// Roll back.
    Rollback,
}

/// An environment variable's value for a program: text, or a secret resolved when the program runs and
/// never shown (not in decisions, audit, logs or answers).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// A secret.
    Secret(SecretRef),
    /// Plain text (templates allowed).
    Text(String),
}

/// Where a secret comes from: an environment variable of the server named `SLUICE_SECRET_*`, or a file
/// under the server's secrets directory (`--secrets-dir`). Nothing else: a plan cannot read the server's
/// other variables or files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// `SLUICE_SECRET_…`.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A path relative to the secrets directory.
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// A check's captured reference: its own value's average before the rollout started (for sources that
/// can measure the past, such as `prometheus`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// How far back from the start (`1h`): the average of the query at every analysis interval of it.
    pub window: Spanned<Dur>,
}

/// A gate (must hold to promote) or a trigger (fires when it holds). The plan keeps the keys every check
/// shares; the rest is its source's [`Block`] (`query:` for `prometheus`, `metric:` for `builtin`, …),
/// which that plug-in reads and checks.
#[derive(Debug, Clone)]
pub struct Check {
    /// Unique name.
    pub name: Spanned<String>,
    /// The source's kind, as written; else the kind its block's keys name, else `analysis.source`, else
    /// `signal` (a trigger only a person or an alert fires).
    pub source: Option<Spanned<String>>,
    /// The threshold: value below this.
    pub below: Option<f64>,
    /// The threshold: value above this.
    pub above: Option<f64>,
    /// The threshold: value within `[lo, hi]`.
    pub between: Option<Spanned<Vec<f64>>>,
    /// A statistical comparison of the canary with `control` or the pre-rollout `baseline` (sources that
    /// compare: `builtin`), held to `max_increase` or `max_increase_pct`.
    pub compare: Option<Spanned<Compare>>,
    /// Compare each tick's value with the check's own average over `window` before the rollout started
    /// (captured at the start, kept with the rollout), by `max_increase` or `max_increase_pct` (sources
    /// that can measure the past: `prometheus`).
    pub baseline: Option<Spanned<Baseline>>,
    /// Comparisons: the margin, absolute.
    pub max_increase: Option<f64>,
    /// Comparisons: the margin, in percent of the reference.
    pub max_increase_pct: Option<f64>,
    /// Comparisons: the error rate (default `analysis.alpha`, else 0.05).
    pub alpha: Option<f64>,
    /// The window measured, for sources that read one (`builtin`).
    pub window: Option<Spanned<Dur>>,
    /// The condition must have held at each tick of this long.
    pub for_: Option<Spanned<Dur>>,
    /// What a measurement with no data means.
    pub on_empty: Option<OnEmpty>,
    /// Longest a measurement may take (a command's run, a query, a probe); past it the tick's value is a
    /// source error.
    pub timeout: Option<Spanned<Dur>>,
    /// Evaluate and record, never act.
    pub dry_run: bool,
    /// Triggers: `hard` rolls back at once, `soft` pauses and asks.
    pub severity: Option<Spanned<Severity>>,
    /// Soft triggers: how long a person has to decide.
    pub decide_within: Option<Spanned<Dur>>,
    /// Soft triggers: what happens when nobody decided in time.
    pub default: Option<Spanned<Decision>>,
    /// Free text shown to the person deciding.
    pub description: Option<String>,
    /// The source's own keys, as written.
    pub block: Block,
}

/// The keys every check has, whatever its source: what a plug-in's block may not use.
pub const CHECK_KEYS: &[&str] = &[
    "name",
    "source",
    "below",
    "above",
    "between",
    "compare",
    "baseline",
    "max_increase",
    "max_increase_pct",
    "alpha",
    "window",
    "for",
    "on_empty",
    "timeout",
    "dry_run",
    "severity",
    "decide_within",
    "default",
    "description",
];

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Check;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a check: `name`, a threshold, and its source's keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Check, A::Error> {
                let mut name = None;
                let mut c = Check {
                    name: Spanned::new(String::new(), Location::UNKNOWN, Location::UNKNOWN),
                    source: None,
                    below: None,
                    above: None,
                    between: None,
                    compare: None,
                    baseline: None,
                    max_increase: None,
                    max_increase_pct: None,
                    alpha: None,
                    window: None,
                    for_: None,
                    on_empty: None,
                    timeout: None,
                    dry_run: false,
                    severity: None,
                    decide_within: None,
                    default: None,
                    description: None,
                    block: Block::default(),
                };
                let mut dry_run = None;
                c.block = read_map(map, |key, map| {
                    match key {
                        "name" => put(&mut name, map, key)?,
                        "source" => put(&mut c.source, map, key)?,
                        "below" => put(&mut c.below, map, key)?,
                        "above" => put(&mut c.above, map, key)?,
                        "between" => put(&mut c.between, map, key)?,
                        "compare" => put(&mut c.compare, map, key)?,
                        "baseline" => put(&mut c.baseline, map, key)?,
                        "max_increase" => put(&mut c.max_increase, map, key)?,
                        "max_increase_pct" => put(&mut c.max_increase_pct, map, key)?,
                        "alpha" => put(&mut c.alpha, map, key)?,
                        "window" => put(&mut c.window, map, key)?,
                        "for" => put(&mut c.for_, map, key)?,
                        "on_empty" => put(&mut c.on_empty, map, key)?,
                        "timeout" => put(&mut c.timeout, map, key)?,
                        "dry_run" => put(&mut dry_run, map, key)?,
                        "severity" => put(&mut c.severity, map, key)?,
                        "decide_within" => put(&mut c.decide_within, map, key)?,
                        "default" => put(&mut c.default, map, key)?,
                        "description" => put(&mut c.description, map, key)?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                c.name = name.ok_or_else(|| de::Error::missing_field("name"))?;
                c.dry_run = dry_run.unwrap_or(false);
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

impl Check {
    /// Whether only a person or an alert fires it: `source: signal`, or nothing names a source (no source,
    /// no key of one, no `analysis.source`). Such a check is never measured.
    ///
    /// ```
    /// let yaml = "name: p\nflag: f\nphases: [{percent: 5}]\ntriggers:\n  - {name: t, command: [x], above: 1, severity: hard}\n  - {name: s, severity: hard}\n";
    /// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
    /// assert!(!plan.triggers[0].value.is_signal(None));
    /// assert!(plan.triggers[1].value.is_signal(None));
    /// assert!(!plan.triggers[1].value.is_signal(Some("prometheus")));
    /// ```
    pub fn is_signal(&self, default: Option<&str>) -> bool {
        match &self.source {
            Some(s) => s.value == SIGNAL,
            None => self.block.is_empty() && default.is_none_or(|d| d == SIGNAL),
        }
    }

    /// The margin of a comparison or a baseline: `max_increase` or `max_increase_pct`.
    pub fn margin(&self) -> Option<Margin> {
        match (self.max_increase, self.max_increase_pct) {
            (Some(m), _) => Some(Margin::Absolute(m)),
            (None, Some(p)) => Some(Margin::Relative(p)),
            (None, None) => None,
        }
    }
}

/// The source of checks only a person or an alert fires (`sluice rollout signal`, Alertmanager).
pub const SIGNAL: &str = "signal";

/// How far a canary may be past its reference.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Margin {
    /// `max_increase: m`: at most `m` above the reference.
    Absolute(f64),
    /// `max_increase_pct: p`: at most `(1 + p/100)` times the reference.
    Relative(f64),
}

impl Margin {
    /// The most a value may be against `reference`: `reference + m`, or `reference × (1 + p/100)`.
    pub fn limit(self, reference: f64) -> f64 {
        match self {
            Margin::Absolute(m) => reference + m,
            Margin::Relative(p) => reference * (1.0 + p / 100.0),
        }
    }
}

impl std::fmt::Display for Margin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Margin::Absolute(m) => write!(f, "+ {m}"),
            Margin::Relative(p) => write!(f, "+ {p}%"),
        }
    }
}

/// What a comparison (`compare:`) compares the canary with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// The base variant's contexts over the same window.
    Control,
    /// The same metric before the rollout started.
    Baseline,
}

/// What a measurement with no data means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnEmpty {
    /// Not measured: never promotes, never fires.
    Inconclusive,
    /// Zero (e.g. `ALERTS{…}` empty means healthy).
    Zero,
}

/// A trigger's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Roll back at once.
    Hard,
    /// Pause, notify, wait for a person.
    Soft,
}

/// A person's (or the default's) decision on a paused rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Go on.
    Resume,
    /// Roll back.
    Rollback,
}

/// One step of a plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Optional name, shown in status.
    #[serde(default)]
    pub name: Option<String>,
    /// The ramp percentage as written; `plan check` refuses one outside 0..100 (read it with
    /// [`Phase::percent`]). Any integer is read so that the error can name the range, not the type.
    pub percent: Spanned<i64>,
    /// This phase moves between other variants (e.g. `warn` → `enforce`).
    #[serde(default)]
    pub ramp: Option<Spanned<RampSpec>>,
    /// Minimum time at this percentage before promotion.
    #[serde(default)]
    pub hold: Option<Spanned<Dur>>,
    /// Eligibility: the ramp applies within these segments.
    #[serde(default)]
    pub segments: Vec<Spanned<String>>,
    /// Go/no-go items that a person must sign before promotion.
    #[serde(default)]
    pub approvals: Vec<Spanned<Approval>>,
    /// Gates of this phase, on top of the plan's.
    #[serde(default)]
    pub gates: Vec<Spanned<Check>>,
    /// Actions around the phase.
    #[serde(default)]
    pub hooks: Hooks,
}

impl Phase {
    /// The ramp percentage, 0..=100 (a checked plan's; an unchecked one out of range is clamped).
    pub fn percent(&self) -> u8 {
        self.percent.value.clamp(0, 100) as u8
    }
}

/// Actions before a phase starts and after it is promoted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before the percentage is set (e.g. a migration).
    #[serde(default)]
    pub before: Vec<Spanned<Action>>,
    /// After the phase passed (e.g. a golden suite).
    #[serde(default)]
    pub after: Vec<Spanned<Action>>,
}

/// Something the controller does to the world: a plug-in's action (`exec: […]`, `webhook: {…}`; its keys
/// are its [`Block`]), or a `flag` action, which the controller carries out itself.
#[derive(Debug, Clone)]
pub struct Action {
    /// Shown in decisions and audit.
    pub name: Option<String>,
    /// Set another flag: its kill switch, percentage or ramped variant, audited like a person's edit.
    pub flag: Option<Spanned<FlagAction>>,
    /// Safe to run twice (retried after a crash instead of asking a person); a plug-in may say its kind
    /// always is (webhooks send an `Idempotency-Key`).
    pub idempotent: bool,
    /// Longest run.
    pub timeout: Option<Spanned<Dur>>,
    /// The plug-in's keys, as written: the one that names its kind (`exec`, `webhook`) and its others
    /// (`env`, `dir`).
    pub block: Block,
}

/// The keys every action has, whatever its kind.
pub const ACTION_KEYS: &[&str] = &["name", "flag", "idempotent", "timeout"];

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Action;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an action: `exec: [program, args…]`, `webhook: {url: …}` or `flag: {key: …}`")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Action, A::Error> {
                let (mut name, mut flag, mut idempotent, mut timeout) = (None, None, None, None);
                let block = read_map(map, |key, map| {
                    match key {
                        "name" => put(&mut name, map, key)?,
                        "flag" => put(&mut flag, map, key)?,
                        "idempotent" => put(&mut idempotent, map, key)?,
                        "timeout" => put(&mut timeout, map, key)?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                Ok(Action { name, flag, idempotent: idempotent.unwrap_or(false), timeout, block })
            }
        }
        d.deserialize_map(V)
    }
}

impl Action {
    /// Safe to carry out again after a crash with the same idempotency key, as far as the plan says: a
    /// flag action sets a state, and an action marked `idempotent: true`. (The controller also asks the
    /// plug-in: webhooks always are.)
    pub fn is_idempotent(&self) -> bool {
        self.idempotent || self.flag.is_some()
    }
}

/// A `flag` action: another flag set through the same audited write path as a person's edit (refused
/// while another active rollout drives that flag).
///
/// ```
/// let yaml = "name: p\nflag: f\nphases:\n  - percent: 100\n    hooks: { after: [ { flag: { key: kms_signer, enabled: true, percent: 100, variant: on } } ] }\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// let a = &plan.phases[0].value.hooks.after[0].value;
/// assert!(a.block.is_empty() && a.is_idempotent());
/// assert_eq!(a.flag.as_ref().unwrap().value.percent(), Some(100));
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagAction {
    /// The flag's key.
    pub key: Spanned<String>,
    /// Its kill switch: `false` serves the off variant to everyone.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Its ramp's percentage as written; `plan check` refuses one outside 0..100 (read it with
    /// [`FlagAction::percent`]).
    #[serde(default)]
    pub percent: Option<Spanned<i64>>,
    /// The variant its ramp serves (`ramp.ramped`).
    #[serde(default)]
    pub variant: Option<Spanned<String>>,
}

impl FlagAction {
    /// The ramp percentage to set, 0..=100 (a checked plan's; an unchecked one out of range is clamped).
    pub fn percent(&self) -> Option<u8> {
        self.percent.as_ref().map(|p| p.value.clamp(0, 100) as u8)
    }
}

/// What rolling back does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// `start` (restore the flag as before the rollout, end `rolled_back`) or `previous-phase` (step back, pause).
    #[serde(default)]
    pub to: RollbackTo,
    /// Other flags to switch off (seed 000: the safety prefilter, the KMS signer…).
    #[serde(default)]
    pub flags_off: Vec<Spanned<String>>,
    /// Remove the flag's overrides too (seed 003's emergency rollback).
    #[serde(default)]
    pub clear_overrides: bool,
    /// Actions after the flag is restored (e.g. `kubectl rollout undo`).
    #[serde(default)]
    pub actions: Vec<Spanned<Action>>,
}

/// Where a rollback goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackTo {
    /// The flag as before the rollout.
    #[default]
    Start,
    /// The previous phase's percentage, then pause.
    PreviousPhase,
}

/// Where people hear about a rollout: a notifier plug-in's block (`slack: {url_env: …}`) and the events it
/// listens for.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// Only these events (e.g. `rolled_back`, `paused`); all when empty.
    pub on: Vec<String>,
    /// The plug-in's keys, as written: the one that names its kind (`slack`, `webhook`, `alertmanager`).
    pub block: Block,
}

impl<'de> Deserialize<'de> for Notifier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Notifier;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a notifier: `slack: {url_env: …}`, `webhook: {url: …}` or `alertmanager: {url: …}`")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Notifier, A::Error> {
                let mut on = None;
                let block = read_map(map, |key, map| {
                    match key {
                        "on" => put(&mut on, map, key)?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                Ok(Notifier { on: on.unwrap_or_default(), block })
            }
        }
        d.deserialize_map(V)
    }
}

/// A `vars:` value: any scalar, kept as text for templates.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A go/no-go item of a phase: `qa-signoff` (any operator signs it) or `{ item: security-review, role: admin }`
/// (only that role or above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The item's name, as `sluice rollout approve ID ITEM` gives it.
    pub item: String,
    /// The least role that may sign it.
    pub role: ApprovalRole,
}

/// Who may sign an approval item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalRole {
    /// Operators and admins.
    #[default]
    Operator,
    /// Admins only.
    Admin,
}

impl<'de> Deserialize<'de> for Approval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = Approval;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an item name, or `{ item: NAME, role: operator | admin }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Approval, E> {
                Ok(Approval { item: v.to_string(), role: ApprovalRole::Operator })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Approval, A::Error> {
                let (mut item, mut role) = (None, ApprovalRole::Operator);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "item" => item = Some(map.next_value::<String>()?),
                        "role" => role = map.next_value()?,
                        other => return Err(serde::de::Error::unknown_field(other, &["item", "role"])),
                    }
                }
                let item = item.ok_or_else(|| serde::de::Error::missing_field("item"))?;
                Ok(Approval { item, role })
            }
        }
        d.deserialize_any(Form)
    }
}

/// Which hooks of a phase: run before its percentage is set, or after its gates passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookWhen {
    /// `hooks.before`.
    Before,
    /// `hooks.after`.
    After,
}

/// The address of an action in a plan: a rollback action or a phase hook. Stored as its path
/// (`rollback.actions[0]`, `phases[1].hooks.before[0]`), which is also how people read it in the audit log,
/// status and decisions; in memory it is typed, so nothing parses the path twice.
///
/// ```
/// use sluice_plan::model::{ActionRef, HookWhen};
/// let hook: ActionRef = "phases[1].hooks.before[0]".parse().unwrap();
/// assert_eq!(hook, ActionRef::Hook { phase: 1, when: HookWhen::Before, index: 0 });
/// assert_eq!(hook.to_string(), "phases[1].hooks.before[0]");
/// assert!("phases[1].hooks.during[0]".parse::<ActionRef>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ActionRef {
    /// `rollback.actions[index]`.
    Rollback {
        /// Its position in `rollback.actions`.
        index: usize,
    },
    /// `phases[phase].hooks.{before,after}[index]`.
    Hook {
        /// The phase's position.
        phase: usize,
        /// Before or after.
        when: HookWhen,
        /// Its position in that list.
        index: usize,
    },
}

impl ActionRef {
    /// The action this address names in `plan`, if the plan has it.
    pub fn resolve<'p>(&self, plan: &'p Plan) -> Option<&'p Action> {
        match *self {
            ActionRef::Rollback { index } => plan.rollback.actions.get(index).map(|a| &a.value),
            ActionRef::Hook { phase, when, index } => {
                let hooks = &plan.phases.get(phase)?.value.hooks;
                let list = match when {
                    HookWhen::Before => &hooks.before,
                    HookWhen::After => &hooks.after,
                };
                list.get(index).map(|a| &a.value)
            }
        }
    }

    /// A phase hook (it guards a percentage), not a rollback action.
    pub fn is_hook(&self) -> bool {
        matches!(self, ActionRef::Hook { .. })
    }
}

impl std::fmt::Display for ActionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ActionRef::Rollback { index } => write!(f, "rollback.actions[{index}]"),
            ActionRef::Hook { phase, when: HookWhen::Before, index } => {
                write!(f, "phases[{phase}].hooks.before[{index}]")
            }
            ActionRef::Hook { phase, when: HookWhen::After, index } => {
                write!(f, "phases[{phase}].hooks.after[{index}]")
            }
        }
    }
}

impl std::str::FromStr for ActionRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        fn bracketed(s: &str) -> Option<(usize, &str)> {
            let (n, rest) = s.strip_prefix('[')?.split_once(']')?;
            Some((n.parse().ok()?, rest))
        }
        let parsed = if let Some(rest) = s.strip_prefix("rollback.actions") {
            bracketed(rest).filter(|(_, r)| r.is_empty()).map(|(index, _)| ActionRef::Rollback { index })
        } else {
            s.strip_prefix("phases").and_then(bracketed).and_then(|(phase, rest)| {
                let (when, rest) = if let Some(r) = rest.strip_prefix(".hooks.before") {
                    (HookWhen::Before, r)
                } else {
                    (HookWhen::After, rest.strip_prefix(".hooks.after")?)
                };
                bracketed(rest).filter(|(_, r)| r.is_empty()).map(|(index, _)| ActionRef::Hook { phase, when, index })
            })
        };
        parsed.ok_or_else(|| {
            format!("`{s}` is not an action's place in a plan (`rollback.actions[0]`, `phases[1].hooks.before[0]`)")
        })
    }
}

impl From<ActionRef> for String {
    fn from(a: ActionRef) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for ActionRef {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}
