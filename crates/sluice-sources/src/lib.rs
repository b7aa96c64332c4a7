//! `sluice-sources` holds Sluice's plug-ins, one folder per kind and one file per plug-in: where a check's
//! number comes from ([`sources`], behind [`Source`]), what the controller does to the world ([`actions`],
//! behind [`ActionRunner`]) and where people hear about a rollout ([`notifiers`], behind [`Notifier`]).
//! A [`Registry`] builds them once from [`Config`] and says which kinds exist, so `plan check` and the
//! controller ask it rather than a list. Adding a plug-in is its file plus one line in its folder's
//! `register`. The engine stays pure: the controller measures and acts here, asynchronously, and hands
//! the numbers to the engine's tick.
//!
//! ```
//! use sluice_plan::{Capabilities, PluginKind};
//! let registry = sluice_sources::Registry::new(&sluice_sources::Config::default());
//! assert!(registry.can(&PluginKind::source("command")));
//! assert!(registry.can(&PluginKind::source("builtin")));
//! assert!(registry.can(&PluginKind::action("webhook")));
//! assert!(!registry.can(&PluginKind::notifier("carrier-pigeon")));
//! ```

#![warn(missing_docs)]

/// A folder's plug-ins, one line each: `FILE => |config| HOW IT IS BUILT`. Declares each file as a module
/// and adds each plug-in to the registry with `ADD` (`add_source`, `add_action`, `add_notifier`), so a new
/// plug-in is its file and its line here, nothing else.
macro_rules! plugins {
    ($add:ident: $($(#[$doc:meta])* $module:ident => $build:expr),* $(,)?) => {
        $($(#[$doc])* pub mod $module;)*

        /// Adds every plug-in of this folder to `registry`.
        pub(crate) fn register(registry: &mut crate::Registry, config: &crate::Config) {
            $(registry.$add(($build)(config));)*
        }
    };
}

pub mod actions;
pub mod export;
pub mod golden;
pub mod metrics;
pub mod notifiers;
pub mod outbound;
mod output;
mod secrets;
pub mod sources;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_engine::{CheckDecision, Event, Measurement, Millis};
use sluice_plan::model::{Action, Block, Check, Location, Node, Spanned};
use sluice_plan::{Capabilities, Family, KindInfo, Plan, PluginKind, Report, Supports};

pub use secrets::{Redactor, Secrets};

/// The default time a command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How the plug-ins are built: what the server was started with.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Longest run of a command check or an exec action without its own `timeout` (default 60 s).
    pub command_timeout: Option<Duration>,
    /// Where `secret_file:` secrets are read from; without it, plans may use `SLUICE_SECRET_*` variables only.
    pub secrets_dir: Option<std::path::PathBuf>,
    /// The first wait before retrying a webhook or a notification's HTTP call (default 1 s; doubled on
    /// each retry, with jitter).
    pub retry_backoff: Option<Duration>,
    /// The dashboard's address as people reach it (`https://sluice.example.com`), for links in messages.
    pub public_url: Option<String>,
    /// Largest Prometheus answer read (default 4 MiB); a larger one is a source error.
    pub prometheus_max_answer_bytes: Option<usize>,
    /// The built-in metrics the `builtin` source reads and `POST /api/v1/metrics` writes.
    pub metrics: Arc<metrics::Metrics>,
}

/// What a source may know about the measurement it takes, besides the check itself.
#[derive(Debug, Clone, Copy)]
pub struct MeasureContext<'a> {
    /// The rollout's id.
    pub rollout_id: &'a str,
    /// Its plan: name, `analysis` settings (the default source, a Prometheus endpoint), `vars`.
    pub plan: &'a Plan,
    /// When the rollout started (ms), e.g. for a baseline window before it.
    pub started_at: Millis,
    /// When the current phase (its percentage) took effect: a comparison's sample starts here.
    pub phase_started: Millis,
    /// The tick's time (ms): a query is evaluated at this instant.
    pub now: Millis,
    /// Template values: `flag`, `base`, `ramped`, `phase`, `percent`, `interval` and the plan's `vars`.
    pub values: &'a BTreeMap<String, String>,
    /// The rollout as it stands, when a live (or simulated) rollout measures: its phase, the history that
    /// says where the control was last measured, and each comparison's sequence so far.
    pub rollout: Option<&'a sluice_engine::Rollout>,
}

impl<'a> MeasureContext<'a> {
    /// A check measured at `now` outside any rollout (a dry run of a plan's checks, a test): no rollout
    /// state, and no start, so that a sample counts everything seen since the epoch.
    ///
    /// ```
    /// # let (plan, _) = sluice_plan::load("p.yaml", "name: p\nflag: f\nphases: [ { percent: 100 } ]\n", None).unwrap();
    /// let values = std::collections::BTreeMap::new();
    /// let cx = sluice_sources::MeasureContext::outside_a_rollout(&plan, &values, 1_000);
    /// assert_eq!((cx.started_at, cx.now, cx.rollout_id), (0, 1_000, "-"));
    /// ```
    pub fn outside_a_rollout(plan: &'a Plan, values: &'a BTreeMap<String, String>, now: Millis) -> Self {
        MeasureContext { rollout_id: "-", plan, started_at: 0, phase_started: 0, now, values, rollout: None }
    }
}

/// What an action may know about the run it is part of.
#[derive(Debug, Clone, Copy)]
pub struct ActionContext<'a> {
    /// The rollout's id.
    pub rollout_id: &'a str,
    /// Its plan.
    pub plan: &'a Plan,
    /// Template values, as for checks.
    pub values: &'a BTreeMap<String, String>,
    /// This effect's idempotency key: the same on every attempt.
    pub key: &'a str,
    /// The last tick's decisions (check, kind, value, threshold, outcome), a JSON array: a webhook's
    /// `{{checks}}`.
    pub checks: &'a serde_json::Value,
}

/// Whether a failure may pass if tried again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// It may pass later: the receiver could not be reached, timed out, or answered 408, 429 or 5xx.
    Transient,
    /// Trying again changes nothing: a bad URL, a missing secret, a template that does not render, a 4xx
    /// other than 408 and 429, a program that failed.
    Permanent,
}

/// Why a delivery or an action failed, and whether trying again may help.
///
/// ```
/// use sluice_sources::{Failure, FailureKind};
/// assert_eq!(Failure::of_status(503, "busy").kind, FailureKind::Transient);
/// assert_eq!(Failure::of_status(404, "no such hook").kind, FailureKind::Permanent);
/// assert_eq!(Failure::of_status(429, "slow down").kind, FailureKind::Transient);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Transient or permanent.
    pub kind: FailureKind,
    /// What went wrong, for people (redacted).
    pub message: String,
}

impl Failure {
    /// A failure that may pass later.
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Transient, message: message.into() }
    }

    /// A failure that trying again would not change.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Permanent, message: message.into() }
    }

    /// The failure an HTTP answer `status` means: transient for 408, 429 and 5xx, permanent otherwise.
    pub fn of_status(status: u16, message: impl Into<String>) -> Failure {
        if status == 408 || status == 429 || status >= 500 {
            Failure::transient(message)
        } else {
            Failure::permanent(message)
        }
    }

    /// Trying again may help.
    pub fn is_transient(&self) -> bool {
        self.kind == FailureKind::Transient
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Failure {
    /// A message alone: permanent (configuration, rendering, a missing secret).
    fn from(message: String) -> Failure {
        Failure::permanent(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::permanent(message)
    }
}

/// What running an action gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOutcome {
    /// What it said: the end of its output, or the error.
    pub detail: String,
    /// Why it failed, when it did.
    pub failure: Option<FailureKind>,
    /// Each HTTP attempt of a webhook (time, target, status, duration, error); empty for others.
    pub attempts: Vec<outbound::Attempt>,
}

impl ActionOutcome {
    /// A success with what it said.
    pub fn done(detail: impl Into<String>) -> ActionOutcome {
        ActionOutcome { detail: detail.into(), failure: None, attempts: Vec::new() }
    }

    /// A failure that trying again would not change.
    pub fn failed(detail: impl Into<String>) -> ActionOutcome {
        ActionOutcome { detail: detail.into(), failure: Some(FailureKind::Permanent), attempts: Vec::new() }
    }

    /// A failure of `failure`'s kind.
    pub fn failure(failure: Failure) -> ActionOutcome {
        ActionOutcome { detail: failure.message, failure: Some(failure.kind), attempts: Vec::new() }
    }

    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// A rollout's transition as people hear about it: queued with the transition and delivered at least
/// once to each of its destinations, keyed by `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// This event's identity: `{rollout}:e{n}`, its place in the rollout's history.
    pub id: String,
    /// The rollout's id.
    pub rollout: String,
    /// Its plan's name.
    pub plan: String,
    /// Its flag.
    pub flag: String,
    /// What happened.
    pub event: Event,
    /// The rollout's state right after it: `running`, `paused`, `rolled_back`, …
    #[serde(default)]
    pub status: String,
    /// How many phases the plan has.
    #[serde(default)]
    pub phases: usize,
    /// Why it is paused, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_because: Option<String>,
    /// When a soft trigger's pause takes its default (ms), and which (`resume`, `rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_by: Option<Millis>,
    /// The default taken at `decide_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// An action's outcome is unknown: a person must `settle` it.
    #[serde(default)]
    pub uncertain: bool,
    /// The tick's decisions behind the event; empty for a person's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckDecision>,
}

impl Notification {
    /// One line for people: `bounded-reasoning (bounded_reasoning): rolled_back at 10% — errors-hard fired`.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}): {} at phase {}, {}% — {}",
            self.plan,
            self.flag,
            self.event.kind,
            self.event.phase + 1,
            self.event.percent,
            self.event.reason
        )
    }
}

/// Where a check's number comes from: one kind of source. Adding one is its file in `sources/` and one
/// line in that folder's `register`: it names itself, says which keys of a check name it, checks its own
/// keys, and measures.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// Its name, as `source:` writes it (`prometheus`).
    fn kind(&self) -> &'static str;
    /// The keys of a check that name this source when no `source:` says (`query`, `slo`); unique among
    /// sources.
    fn keys(&self) -> &'static [&'static str];
    /// How a check names it, for messages (`query: PROMQL`).
    fn hint(&self) -> &'static str;
    /// Which keys every check may have it understands: `compare`, `baseline`, `window`. None by default.
    fn supports(&self) -> Supports {
        Supports::default()
    }
    /// Checks a check's own keys (its [`Block`]; `at` is where the check is), reporting each problem at its
    /// key, line and column.
    fn check_config(&self, check: &Check, trigger: bool, at: Location, report: &mut Report<'_>);
    /// Checks its plan-wide settings (`analysis.KIND`). The default: it takes none.
    fn check_settings(&self, settings: &Spanned<Node>, report: &mut Report<'_>) {
        report.error(settings.referenced, "", format!("the `{}` source has no plan-wide settings", self.kind()));
    }
    /// The programs a check of this source runs, by the name it gives them (a `command` check's).
    fn programs(&self, block: &Block) -> Vec<String> {
        let _ = block;
        Vec::new()
    }
    /// Measures `check` now. No data, too few samples or an error is never a pass: say so with
    /// [`Measurement::Empty`] or [`Measurement::Error`].
    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement;
    /// The reference of a check with `baseline:`, measured over the window before `cx.started_at`. The
    /// default: this source keeps no baselines (and does not say it [`supports`](Self::supports) them).
    async fn baseline(&self, check: &Check, cx: &MeasureContext<'_>) -> Result<f64, String> {
        let _ = (check, cx);
        Err(format!("the `{}` source has no baselines", self.kind()))
    }
}

/// Carries out one kind of action: its file in `actions/` and one line in that folder's `register`.
#[async_trait::async_trait]
pub trait ActionRunner: Send + Sync {
    /// Its name: the key that names it in an action (`exec`).
    fn kind(&self) -> &'static str;
    /// How an action names it, for messages (`exec: [program, args…]`).
    fn hint(&self) -> &'static str;
    /// Checks an action's own keys (its [`Block`]).
    fn check_config(&self, action: &Action, at: Location, report: &mut Report<'_>);
    /// Whether `action` is safe to carry out again after a crash with the same idempotency key. The default:
    /// what the plan says (`idempotent: true`).
    fn idempotent(&self, action: &Action) -> bool {
        action.is_idempotent()
    }
    /// The programs an action of this kind runs, by the name it gives them (an `exec` action's).
    fn programs(&self, block: &Block) -> Vec<String> {
        let _ = block;
        Vec::new()
    }
    /// Runs `action`; `cx.key` identifies this effect across retries.
    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome;
}

/// Tells people: one kind of notifier, its file in `notifiers/` and one line in that folder's `register`.
/// Delivery is retried while it fails transiently, so a notifier must tolerate a repeat of the same
/// [`Notification::id`].
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// Its name: the key that names it in a plan's `notify` (`slack`); `None` for the log, which every
    /// rollout has.
    fn kind(&self) -> Option<&'static str>;
    /// How a plan names it, for messages (`slack: {url_env: …}`).
    fn hint(&self) -> &'static str {
        ""
    }
    /// Checks a notifier's own keys (its [`Block`]).
    fn check_config(&self, notifier: &sluice_plan::model::Notifier, at: Location, report: &mut Report<'_>) {
        let _ = (notifier, at, report);
    }
    /// Whether what it tells expires unless told again (Alertmanager's alerts): the controller then posts
    /// every rollout's current state to it every minute. The default: no.
    fn refreshed(&self) -> bool {
        false
    }
    /// Delivers `n` to `target` (the plan's `notify[i]` entry; `None` for the log), once.
    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), Failure>;
}

/// Where a running controller measures, acts and notifies: the [`Registry`] of real plug-ins, or, in
/// tests, a recorded timeline and a counting receiver in its place.
#[async_trait::async_trait]
pub trait Plugins: Send + Sync {
    /// Measures one check.
    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement;
    /// A check's baseline before the start (see [`Source::baseline`]). The default: none.
    async fn baseline(&self, check: &Check, cx: &MeasureContext<'_>) -> Result<f64, String> {
        let _ = (check, cx);
        Err("these plug-ins keep no baselines".into())
    }
    /// Runs one action.
    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome;
    /// Delivers one notification to `target` (`None`: the log). The default writes it to the log.
    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), Failure> {
        notifiers::log::Log.notify(target, n).await
    }
    /// Whether this kind of plug-in exists here. The default: every kind the registry describes (a test
    /// double stands in for any).
    fn can(&self, kind: &PluginKind) -> bool {
        let _ = kind;
        true
    }
    /// The plug-ins that describe each kind — their names, keys and checks — for checking plans and for
    /// telling which kind a block is. The default: this build's registry.
    fn described(&self) -> &Registry {
        described()
    }
    /// The built-in metrics the plug-ins read, which the server's ingestion writes to. The default: none
    /// (the server keeps its own).
    fn metrics(&self) -> Option<Arc<metrics::Metrics>> {
        None
    }
}

/// This build's registry with the default configuration: what describes the kinds for plug-ins that stand
/// in for the real ones.
pub fn described() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Registry::new(&Config::default()))
}

/// Every plug-in this build has, configured once.
#[derive(Clone, Default)]
pub struct Registry {
    metrics: Option<Arc<metrics::Metrics>>,
    sources: BTreeMap<&'static str, Arc<dyn Source>>,
    actions: BTreeMap<&'static str, Arc<dyn ActionRunner>>,
    notifiers: BTreeMap<Option<&'static str>, Arc<dyn Notifier>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field("actions", &self.actions.keys().collect::<Vec<_>>())
            .field("notifiers", &self.notifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// Builds every plug-in of this crate from `config`.
    pub fn new(config: &Config) -> Registry {
        let mut registry = Registry { metrics: Some(config.metrics.clone()), ..Registry::default() };
        sources::register(&mut registry, config);
        actions::register(&mut registry, config);
        notifiers::register(&mut registry, config);
        registry
    }

    /// Adds (or replaces) the source of its kind.
    pub fn add_source(&mut self, source: impl Source + 'static) {
        self.sources.insert(source.kind(), Arc::new(source));
    }

    /// Adds (or replaces) the runner of its kind of action.
    pub fn add_action(&mut self, runner: impl ActionRunner + 'static) {
        self.actions.insert(runner.kind(), Arc::new(runner));
    }

    /// Adds (or replaces) the notifier of its kind.
    pub fn add_notifier(&mut self, notifier: impl Notifier + 'static) {
        self.notifiers.insert(notifier.kind(), Arc::new(notifier));
    }

    /// The source of `check` in `plan`, or why there is none.
    fn source_of(&self, check: &Check, plan: &Plan) -> Result<&Arc<dyn Source>, String> {
        let kind = check.source_kind(plan, self).ok_or("its keys name no source this server has")?;
        self.sources.get(kind.as_str()).ok_or_else(|| format!("this server has no `{kind}` source"))
    }

    /// Whether an action is safe to carry out again after a crash: the plan says so, or its kind always is
    /// (a webhook sends an `Idempotency-Key`).
    pub fn idempotent(&self, action: &Action) -> bool {
        match action.kind(self).and_then(|k| self.actions.get(k.as_str()).cloned()) {
            Some(runner) => runner.idempotent(action),
            None => action.is_idempotent(),
        }
    }

    /// The name of an action's kind (`exec`, `webhook`, `flag`), for records; `unknown` when its keys name
    /// none.
    pub fn action_kind(&self, action: &Action) -> String {
        action.kind(self).unwrap_or_else(|| "unknown".into())
    }

    /// Whether a notifier's deliveries expire unless repeated ([`Notifier::refreshed`]).
    pub fn refreshed(&self, target: &sluice_plan::model::Notifier) -> bool {
        let kind = target.kind(self);
        kind.and_then(|k| self.notifiers.get(&Some(k.as_str())).map(|n| n.refreshed())).unwrap_or(false)
    }

    /// The name of a notifier's kind (`slack`, …; `log` for none), for records.
    pub fn notifier_kind(&self, target: Option<&sluice_plan::model::Notifier>) -> String {
        match target {
            None => "log".into(),
            Some(t) => t.kind(self).unwrap_or_else(|| "unknown".into()),
        }
    }
}

impl Capabilities for Registry {
    fn kinds(&self, family: Family) -> Option<Vec<KindInfo>> {
        Some(match family {
            Family::Source => self
                .sources
                .values()
                .map(|s| KindInfo {
                    name: s.kind().into(),
                    keys: s.keys().to_vec(),
                    hint: s.hint(),
                    supports: s.supports(),
                })
                .collect(),
            Family::Action => self
                .actions
                .values()
                .map(|a| KindInfo {
                    name: a.kind().into(),
                    keys: vec![a.kind()],
                    hint: a.hint(),
                    supports: Supports::default(),
                })
                .collect(),
            Family::Notifier => self
                .notifiers
                .values()
                .filter_map(|n| {
                    Some(KindInfo {
                        name: n.kind()?.into(),
                        keys: vec![n.kind()?],
                        hint: n.hint(),
                        supports: Supports::default(),
                    })
                })
                .collect(),
        })
    }

    fn can(&self, kind: &PluginKind) -> bool {
        match kind.family {
            Family::Source => kind.name == sluice_plan::model::SIGNAL || self.sources.contains_key(kind.name.as_str()),
            Family::Action => kind.name == sluice_plan::FLAG_ACTION || self.actions.contains_key(kind.name.as_str()),
            Family::Notifier => self.notifiers.contains_key(&Some(kind.name.as_str())),
        }
    }

    fn check_source(&self, kind: &str, check: &Check, trigger: bool, at: Location, report: &mut Report<'_>) {
        if let Some(s) = self.sources.get(kind) {
            s.check_config(check, trigger, at, report);
        }
    }

    fn check_action(&self, kind: &str, action: &Action, at: Location, report: &mut Report<'_>) {
        if let Some(a) = self.actions.get(kind) {
            a.check_config(action, at, report);
        }
    }

    fn check_notifier(
        &self,
        kind: &str,
        notifier: &sluice_plan::model::Notifier,
        at: Location,
        report: &mut Report<'_>,
    ) {
        if let Some(n) = self.notifiers.get(&Some(kind)) {
            n.check_config(notifier, at, report);
        }
    }

    fn check_settings(&self, kind: &str, settings: &Spanned<Node>, report: &mut Report<'_>) {
        if let Some(s) = self.sources.get(kind) {
            s.check_settings(settings, report);
        }
    }

    fn programs(&self, family: Family, kind: &str, block: &Block) -> Vec<String> {
        match family {
            Family::Source => self.sources.get(kind).map(|s| s.programs(block)).unwrap_or_default(),
            Family::Action => self.actions.get(kind).map(|a| a.programs(block)).unwrap_or_default(),
            Family::Notifier => Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl Plugins for Registry {
    async fn measure(&self, check: &Check, cx: &MeasureContext<'_>) -> Measurement {
        match self.source_of(check, cx.plan) {
            Ok(source) => source.measure(check, cx).await,
            Err(e) => Measurement::Error(e),
        }
    }

    async fn baseline(&self, check: &Check, cx: &MeasureContext<'_>) -> Result<f64, String> {
        self.source_of(check, cx.plan)?.baseline(check, cx).await
    }

    async fn run(&self, action: &Action, cx: &ActionContext<'_>) -> ActionOutcome {
        let Some(kind) = action.kind(self) else {
            return ActionOutcome::failed("the action's keys name no kind of action this server has");
        };
        match self.actions.get(kind.as_str()) {
            Some(runner) => runner.run(action, cx).await,
            None => ActionOutcome::failed(format!("this server has no `{kind}` actions")),
        }
    }

    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), Failure> {
        let kind = match target {
            None => None,
            Some(t) => Some(t.kind(self).ok_or("the notifier's keys name no kind of notifier this server has")?),
        };
        match self.notifiers.get(&kind.as_deref()) {
            Some(notifier) => notifier.notify(target, n).await,
            None => {
                Err(Failure::permanent(format!("this server has no `{}` notifier", kind.as_deref().unwrap_or("log"))))
            }
        }
    }

    fn can(&self, kind: &PluginKind) -> bool {
        Capabilities::can(self, kind)
    }

    fn described(&self) -> &Registry {
        self
    }

    fn metrics(&self) -> Option<Arc<metrics::Metrics>> {
        self.metrics.clone()
    }
}

/// A [`Plugins`] as the plan checker's [`Capabilities`]: the kinds its registry describes, each available
/// when the plug-ins can run it.
pub struct CapabilitiesOf<'a>(pub &'a dyn Plugins);

impl Capabilities for CapabilitiesOf<'_> {
    fn kinds(&self, family: Family) -> Option<Vec<KindInfo>> {
        self.0.described().kinds(family)
    }

    fn can(&self, kind: &PluginKind) -> bool {
        Capabilities::can(self.0.described(), kind) && self.0.can(kind)
    }

    fn check_source(&self, kind: &str, check: &Check, trigger: bool, at: Location, report: &mut Report<'_>) {
        self.0.described().check_source(kind, check, trigger, at, report)
    }

    fn check_action(&self, kind: &str, action: &Action, at: Location, report: &mut Report<'_>) {
        self.0.described().check_action(kind, action, at, report)
    }

    fn check_notifier(
        &self,
        kind: &str,
        notifier: &sluice_plan::model::Notifier,
        at: Location,
        report: &mut Report<'_>,
    ) {
        self.0.described().check_notifier(kind, notifier, at, report)
    }

    fn check_settings(&self, kind: &str, settings: &Spanned<Node>, report: &mut Report<'_>) {
        self.0.described().check_settings(kind, settings, report)
    }

    fn programs(&self, family: Family, kind: &str, block: &Block) -> Vec<String> {
        self.0.described().programs(family, kind, block)
    }
}
