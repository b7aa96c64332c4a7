//! The plan model, as written in YAML. Every value a check may need to point at is [`Spanned`], so that a
//! problem found after parsing still names its line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
pub use serde_saphyr::Spanned;

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
/// asked at every tick while the rollout would take one of its steps.
///
/// ```
/// let yaml = "name: p\nflag: f\nphases: [ { percent: 5 }, { percent: 100 } ]\nconfirm:\n  - { name: change-freeze, before: [start, increase], webhook: { url: 'http://127.0.0.1:1/ok' } }\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// use sluice_plan::model::ConfirmStep;
/// assert_eq!(plan.confirm[0].value.steps(), vec![ConfirmStep::Start, ConfirmStep::Increase]);
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// Shown on status and in decisions: `confirm:NAME`.
    pub name: Spanned<String>,
    /// Which steps it guards.
    pub before: Vec<Spanned<ConfirmStep>>,
    /// The call (its body, signature, headers and retries as a webhook action's).
    pub webhook: Spanned<Webhook>,
    /// Longest the call may take (default 10 s).
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
}

impl Confirm {
    /// The steps it guards.
    pub fn steps(&self) -> Vec<ConfirmStep> {
        self.before.iter().map(|s| s.value).collect()
    }

    /// The webhook action that asks it.
    pub fn action(&self) -> Action {
        Action {
            name: Some(format!("confirm {}", self.name.value)),
            exec: None,
            webhook: Some(self.webhook.clone()),
            flag: None,
            idempotent: false,
            env: BTreeMap::new(),
            dir: None,
            timeout: self.timeout.clone(),
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

/// Analysis settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Time between ticks.
    #[serde(default = "one_minute")]
    pub interval: Spanned<Dur>,
    /// Default source of gates and triggers.
    #[serde(default)]
    pub source: Option<Spanned<SourceKind>>,
    /// Consecutive source errors before the rollout pauses (or rolls back).
    #[serde(default = "three")]
    pub max_source_errors: Spanned<u32>,
    /// What to do when a source stays down.
    #[serde(default)]
    pub on_source_down: OnSourceDown,
    /// Consecutive inconclusive ticks of a trigger (no data, too few samples) before people are told it
    /// cannot fire (default 10).
    #[serde(default = "ten")]
    pub max_inconclusive: Spanned<u32>,
    /// The Prometheus server of `prometheus` checks.
    #[serde(default)]
    pub prometheus: Option<PrometheusEndpoint>,
    /// The error rate of `builtin` comparisons without their own `alpha` (default 0.05).
    #[serde(default)]
    pub alpha: Option<f64>,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: one_minute(),
            source: None,
            max_source_errors: three(),
            on_source_down: OnSourceDown::Pause,
            max_inconclusive: ten(),
            prometheus: None,
            alpha: None,
        }
    }
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

/// A URL, given directly or through an environment variable (for secrets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The URL.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// `webhook` notifiers: signs each request as a webhook action does (`Sluice-Signature`).
    #[serde(default)]
    pub secret: Option<Spanned<SecretRef>>,
}

/// The Prometheus a plan's `prometheus` checks ask, and how to authenticate to it. Credentials are
/// secrets (`SLUICE_SECRET_*` variables or files under `--secrets-dir`): never logged, never shown.
///
/// ```
/// let yaml = "name: p\nflag: f\nanalysis:\n  prometheus:\n    url: http://127.0.0.1:9090\n    bearer_env: SLUICE_SECRET_PROM\n    timeout: 5s\nphases: [ { percent: 5 } ]\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// let p = plan.analysis.prometheus.unwrap();
/// assert_eq!(p.bearer_env.unwrap().value, "SLUICE_SECRET_PROM");
/// assert_eq!(p.timeout.unwrap().value.0, std::time::Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusEndpoint {
    /// The URL (templates allowed).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL (when it holds credentials).
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// The environment variable holding a bearer token: `Authorization: Bearer TOKEN`.
    #[serde(default)]
    pub bearer_env: Option<Spanned<String>>,
    /// The environment variable holding `user:password` for HTTP basic authentication.
    #[serde(default)]
    pub basic_env: Option<Spanned<String>>,
    /// Headers sent with every query (e.g. `X-Scope-OrgID` of a Mimir or Cortex tenant): text, or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// Longest a query may take when the check sets no `timeout` (default 30 s).
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
}

/// A Prometheus check's reference: the query's average before the rollout started.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// How far back from the start (`1h`): the average of the query at every analysis interval of it.
    pub window: Spanned<Dur>,
}

/// Where a gate's or trigger's number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A PromQL query.
    Prometheus,
    /// Sluice's own metrics of the flag's variants.
    Builtin,
    /// Golden HTTP probes.
    Http,
    /// A command's exit status or last printed number.
    Command,
    /// Only a person or an alert fires it (`sluice rollout signal`, Alertmanager).
    Signal,
}

impl SourceKind {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Prometheus => "prometheus",
            SourceKind::Builtin => "builtin",
            SourceKind::Http => "http",
            SourceKind::Command => "command",
            SourceKind::Signal => "signal",
        }
    }
}

/// A gate (must hold to promote) or a trigger (fires when it holds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Unique name.
    pub name: Spanned<String>,
    /// The source; `analysis.source` when absent.
    #[serde(default)]
    pub source: Option<Spanned<SourceKind>>,
    /// `prometheus`: the query (templates allowed).
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    /// `prometheus`: how several series become one number.
    #[serde(default)]
    pub reduce: Option<Reduce>,
    /// `prometheus`: multi-window burn rate of an SLO; the value is the burn rate.
    #[serde(default)]
    pub slo: Option<Spanned<Slo>>,
    /// `builtin`: `error_rate`, `latency_p50|p95|p99`, `mean(NAME)`, `count`.
    #[serde(default)]
    pub metric: Option<Spanned<String>>,
    /// `builtin`: the window measured.
    #[serde(default)]
    pub window: Option<Spanned<Dur>>,
    /// `prometheus`: compare each tick's value with the query's average over `window` before the rollout
    /// started (captured at the start, kept with the rollout), by `max_increase` or `max_increase_pct`.
    #[serde(default)]
    pub baseline: Option<Spanned<Baseline>>,
    /// `builtin`: fewer samples are inconclusive.
    #[serde(default)]
    pub min_samples: Option<u64>,
    /// `builtin`: compare the ramped variant with `control` or with the pre-rollout `baseline`.
    #[serde(default)]
    pub compare: Option<Spanned<Compare>>,
    /// `builtin` comparisons: the error rate (default `analysis.alpha`, else 0.05).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// `builtin` comparisons: the margin, absolute.
    #[serde(default)]
    pub max_increase: Option<f64>,
    /// `builtin` comparisons: the margin, in percent of the reference.
    #[serde(default)]
    pub max_increase_pct: Option<f64>,
    /// `http`: the golden probe.
    #[serde(default)]
    pub http: Option<Spanned<Probe>>,
    /// `command`: argv (templates allowed).
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
    /// `command`: `exit_status` (0 passes as value 0) or `last_number` printed.
    #[serde(default)]
    pub value_from: Option<ValueFrom>,
    /// Longest a measurement may take (a command's run, a query, a probe); past it the tick's value is a
    /// source error. Default 60 s for commands.
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
    /// `command`: environment variables for the program: text (templates allowed) or a secret.
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<EnvValue>>,
    /// The threshold: value below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// The threshold: value above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// The threshold: value within `[lo, hi]`.
    #[serde(default)]
    pub between: Option<Spanned<Vec<f64>>>,
    /// The condition must have held at each tick of this long.
    #[serde(default, rename = "for")]
    pub for_: Option<Spanned<Dur>>,
    /// What an empty query result means.
    #[serde(default)]
    pub on_empty: Option<OnEmpty>,
    /// Evaluate and record, never act.
    #[serde(default)]
    pub dry_run: bool,
    /// Triggers: `hard` rolls back at once, `soft` pauses and asks.
    #[serde(default)]
    pub severity: Option<Spanned<Severity>>,
    /// Soft triggers: how long a person has to decide.
    #[serde(default)]
    pub decide_within: Option<Spanned<Dur>>,
    /// Soft triggers: what happens when nobody decided in time.
    #[serde(default)]
    pub default: Option<Spanned<Decision>>,
    /// Free text shown to the person deciding.
    #[serde(default)]
    pub description: Option<String>,
}

impl Check {
    /// The sources this check's fields name: `query` or `slo` → prometheus, `metric` → builtin, `http`,
    /// `command`. `plan check` refuses more than one without an explicit `source`.
    pub fn sources_given(&self) -> Vec<SourceKind> {
        [
            (self.query.is_some() || self.slo.is_some(), SourceKind::Prometheus),
            (self.metric.is_some(), SourceKind::Builtin),
            (self.http.is_some(), SourceKind::Http),
            (self.command.is_some(), SourceKind::Command),
        ]
        .into_iter()
        .filter_map(|(given, kind)| given.then_some(kind))
        .collect()
    }

    /// Where the value comes from: `source` as written; else the source its fields name; else the plan's
    /// default (`analysis.source`); else `signal`, a trigger only a person or an alert fires.
    ///
    /// ```
    /// let yaml = "name: p\nflag: f\nphases: [{percent: 5}]\ntriggers:\n  - {name: t, command: [x], above: 1, severity: hard}\n  - {name: s, severity: hard}\n";
    /// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
    /// use sluice_plan::model::SourceKind;
    /// assert_eq!(plan.triggers[0].value.source_kind(None), SourceKind::Command);
    /// assert_eq!(plan.triggers[1].value.source_kind(None), SourceKind::Signal);
    /// ```
    pub fn source_kind(&self, default: Option<SourceKind>) -> SourceKind {
        match &self.source {
            Some(s) => s.value,
            None => self.sources_given().first().copied().or(default).unwrap_or(SourceKind::Signal),
        }
    }
}

/// How several series become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// The largest (e.g. "any endpoint").
    Max,
    /// The smallest.
    Min,
    /// The sum.
    Sum,
    /// The mean.
    Avg,
}

/// An SLO burn-rate check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Objective in percent, e.g. 99.9.
    pub objective: f64,
    /// PromQL of good events' rate.
    pub good: Spanned<String>,
    /// PromQL of all events' rate.
    pub total: Spanned<String>,
    /// The windows that must all burn faster than the threshold (e.g. `[5m, 1h]`).
    pub windows: Vec<Spanned<Dur>>,
}

/// What a builtin comparison compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// The base variant's contexts over the same window.
    Control,
    /// The same metric before the rollout started.
    Baseline,
}

/// A golden HTTP probe: one request (`url`, …) or a list of them (`requests`), each with expectations;
/// every request runs once a tick.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The URL of a one-request probe (templates allowed).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// `GET` by default.
    #[serde(default)]
    pub method: Option<String>,
    /// Request headers: text (templates allowed) or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// Request body (templates allowed).
    #[serde(default)]
    pub body: Option<String>,
    /// What a good answer looks like (for `url`, and the default of every item of `requests`).
    #[serde(default)]
    pub expect: Expect,
    /// Several requests (e.g. every endpoint of a service), each as a one-request probe.
    #[serde(default)]
    pub requests: Vec<Spanned<ProbeRequest>>,
    /// `success_ratio` or `consecutive_failures`.
    pub value: ProbeValue,
}

/// One request of a probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// The URL (templates allowed).
    pub url: Spanned<String>,
    /// `GET` by default.
    #[serde(default)]
    pub method: Option<String>,
    /// Request headers: text or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
    /// Its expectations; the probe's `expect` when absent.
    #[serde(default)]
    pub expect: Option<Expect>,
}

impl Probe {
    /// Every request of the probe, each with its expectations.
    pub fn all_requests(&self) -> Vec<ProbeRequest> {
        let one = self.url.as_ref().map(|url| ProbeRequest {
            url: url.clone(),
            method: self.method.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            expect: Some(self.expect.clone()),
        });
        one.into_iter()
            .chain(self.requests.iter().map(|r| {
                let mut r = r.value.clone();
                r.expect.get_or_insert_with(|| self.expect.clone());
                r
            }))
            .collect()
    }
}

/// Expectations of a probe's answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status code (any 2xx when absent).
    #[serde(default)]
    pub status: Option<u16>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// JSON pointers (`/endpoints/0/status`) that must be present, null or not.
    #[serde(default)]
    pub json_present: Vec<String>,
    /// JSON pointers that must be present and not null.
    #[serde(default)]
    pub json_not_null: Vec<String>,
    /// JSON pointers and the value each must equal (numbers by value: 1 equals 1.0).
    #[serde(default)]
    pub json_equals: BTreeMap<String, serde_json::Value>,
}

/// What a probe's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeValue {
    /// Good answers over all, 0..1, over the window.
    SuccessRatio,
    /// Bad answers in a row.
    ConsecutiveFailures,
}

/// Where a command check's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFrom {
    /// The exit status.
    ExitStatus,
    /// The last number the command printed.
    LastNumber,
}

/// What an empty query result means.
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
    /// The ramp percentage, 0..100.
    pub percent: Spanned<u8>,
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

/// Something the controller does to the world.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Shown in decisions and audit.
    #[serde(default)]
    pub name: Option<String>,
    /// Run a command (argv, templates allowed).
    #[serde(default)]
    pub exec: Option<Spanned<Vec<String>>>,
    /// Call a URL (with an `Idempotency-Key`).
    #[serde(default)]
    pub webhook: Option<Spanned<Webhook>>,
    /// Set another flag: its kill switch, percentage or ramped variant, audited like a person's edit.
    #[serde(default)]
    pub flag: Option<Spanned<FlagAction>>,
    /// An exec action safe to run twice (retried after a crash instead of asking a person).
    #[serde(default)]
    pub idempotent: bool,
    /// `exec`: environment variables for the program: text (templates allowed) or a secret.
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<EnvValue>>,
    /// `exec`: the working directory (templates allowed); the server's own by default.
    #[serde(default)]
    pub dir: Option<Spanned<String>>,
    /// Longest run.
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
}

/// A `flag` action: another flag set through the same audited write path as a person's edit (refused
/// while another active rollout drives that flag).
///
/// ```
/// let yaml = "name: p\nflag: f\nphases:\n  - percent: 100\n    hooks: { after: [ { flag: { key: kms_signer, enabled: true, percent: 100, variant: on } } ] }\n";
/// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
/// let a = &plan.phases[0].value.hooks.after[0].value;
/// assert_eq!(a.kind(), Some(sluice_plan::model::ActionKind::Flag));
/// assert_eq!(a.flag.as_ref().unwrap().value.percent.as_ref().unwrap().value, 100);
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagAction {
    /// The flag's key.
    pub key: Spanned<String>,
    /// Its kill switch: `false` serves the off variant to everyone.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Its ramp's percentage.
    #[serde(default)]
    pub percent: Option<Spanned<u8>>,
    /// The variant its ramp serves (`ramp.ramped`).
    #[serde(default)]
    pub variant: Option<Spanned<String>>,
}

/// A webhook call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The URL.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// `POST` by default.
    #[serde(default)]
    pub method: Option<String>,
    /// JSON body (templates allowed, each value JSON-escaped); without it, the rollout as JSON.
    #[serde(default)]
    pub body: Option<Spanned<String>>,
    /// Signs each request: `Sluice-Signature: t=UNIX_SECONDS,v1=HEX`, HEX the HMAC-SHA256 of `"{t}.{body}"`
    /// with this secret.
    #[serde(default)]
    pub secret: Option<Spanned<SecretRef>>,
    /// Headers sent with each request: text (templates allowed), or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<EnvValue>>,
    /// Attempts after the first when the receiver fails or does not answer (default 3, at most 10), with
    /// exponential backoff and jitter.
    #[serde(default)]
    pub retries: Option<Spanned<u32>>,
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

/// Where people hear about a rollout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifier {
    /// A Slack-compatible incoming webhook.
    #[serde(default)]
    pub slack: Option<Endpoint>,
    /// A generic JSON webhook.
    #[serde(default)]
    pub webhook: Option<Endpoint>,
    /// Alertmanager's API.
    #[serde(default)]
    pub alertmanager: Option<Endpoint>,
    /// Only these events (e.g. `rolled_back`, `paused`); all when empty.
    #[serde(default)]
    pub on: Vec<String>,
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

/// What an action does: the kind of plug-in that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    /// Runs a program.
    Exec,
    /// Calls a URL.
    Webhook,
    /// Sets another flag (built into the controller).
    Flag,
}

impl ActionKind {
    /// The key that names it in a plan.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Exec => "exec",
            ActionKind::Webhook => "webhook",
            ActionKind::Flag => "flag",
        }
    }
}

impl Action {
    /// What runs this action; `None` unless it names exactly one of `exec`, `webhook` or `flag` (`plan check`
    /// refuses it).
    pub fn kind(&self) -> Option<ActionKind> {
        match (&self.exec, &self.webhook, &self.flag) {
            (Some(_), None, None) => Some(ActionKind::Exec),
            (None, Some(_), None) => Some(ActionKind::Webhook),
            (None, None, Some(_)) => Some(ActionKind::Flag),
            _ => None,
        }
    }

    /// Safe to carry out again after a crash with the same idempotency key: webhooks always are (they send
    /// an `Idempotency-Key`), flag actions too (they set a state), exec actions when the plan says so.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent || self.webhook.is_some() || self.flag.is_some()
    }
}

/// Where a notifier sends: the kind of plug-in that delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifierKind {
    /// A Slack-compatible incoming webhook.
    Slack,
    /// A generic JSON webhook.
    Webhook,
    /// Alertmanager's API.
    Alertmanager,
}

impl NotifierKind {
    /// The key that names it in a plan.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Slack => "slack",
            NotifierKind::Webhook => "webhook",
            NotifierKind::Alertmanager => "alertmanager",
        }
    }
}

impl Notifier {
    /// The kind and endpoint of this notifier; `None` unless exactly one kind is given (`plan check`
    /// refuses that).
    pub fn endpoint(&self) -> Option<(NotifierKind, &Endpoint)> {
        let all = [
            (NotifierKind::Slack, &self.slack),
            (NotifierKind::Webhook, &self.webhook),
            (NotifierKind::Alertmanager, &self.alertmanager),
        ];
        let mut given = all.into_iter().filter_map(|(k, e)| e.as_ref().map(|e| (k, e)));
        let first = given.next()?;
        given.next().is_none().then_some(first)
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
