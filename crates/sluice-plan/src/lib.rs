//! `sluice-plan` is Sluice's rollout plan format: the YAML a platform engineer keeps in git to say which
//! flag to ramp, through which phases, judged by which gates, watched by which triggers, and what rolling
//! back does. It parses plans with line and column on every error, and checks them ([`check`]) against the
//! rules a rollout relies on, so that a plan that fails `sluice plan check` can never start. Pure: no I/O.
//!
//! ```
//! let yaml = "name: demo\nflag: checkout\nphases:\n  - percent: 10\n  - percent: 5\n";
//! let problems = sluice_plan::load("demo.yaml", yaml, None).unwrap_err();
//! assert_eq!(problems[0].to_string(), "demo.yaml:5:14: error: `phases[1].percent`: percentages must increase from phase to phase: 5 after 10");
//! ```

#![warn(missing_docs)]

pub mod block;
mod check;
mod duration;
pub mod model;
mod report;

pub use check::{check, check_with, programs};
pub use duration::Dur;
pub use model::Plan;
pub use report::{Report, BUILTIN_TEMPLATES, SECRET_ENV_PREFIX};

use model::{Action, Block, Check, Location, Node, Notifier, Spanned};

/// The families of plug-ins: where a check's number comes from, what the controller does to the world,
/// where people hear about a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Metric sources (`prometheus`, `builtin`, `http`, `command`, …).
    Source,
    /// Actions (`exec`, `webhook`, …).
    Action,
    /// Notifiers (`slack`, `webhook`, `alertmanager`, …).
    Notifier,
}

impl Family {
    /// `source`, `action`, `notifier`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Source => "source",
            Family::Action => "action",
            Family::Notifier => "notifier",
        }
    }
}

/// A kind of plug-in a plan may use: its family and its name.
///
/// ```
/// let k = sluice_plan::PluginKind::source("prometheus");
/// assert_eq!(k.to_string(), "the `prometheus` source");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginKind {
    /// Which family.
    pub family: Family,
    /// Its name, as plans write it.
    pub name: String,
}

impl PluginKind {
    /// A metric source.
    pub fn source(name: &str) -> PluginKind {
        PluginKind { family: Family::Source, name: name.to_string() }
    }

    /// An action.
    pub fn action(name: &str) -> PluginKind {
        PluginKind { family: Family::Action, name: name.to_string() }
    }

    /// A notifier.
    pub fn notifier(name: &str) -> PluginKind {
        PluginKind { family: Family::Notifier, name: name.to_string() }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the `{}` {}", self.name, self.family.as_str())
    }
}

/// Which of the keys every check shares a source understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Supports {
    /// `compare: control | baseline`: it measures a canary against a reference statistically.
    pub compare: bool,
    /// `baseline: {window}`: it can measure its value before the rollout started.
    pub baseline: bool,
    /// `window`: it reads its value over a window.
    pub window: bool,
}

/// A kind of plug-in as a plan checker knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindInfo {
    /// Its name (`prometheus`).
    pub name: String,
    /// The keys of a block that name it when no `source:` says (`query`, `slo`); an action's or notifier's
    /// is the key named as the kind.
    pub keys: Vec<&'static str>,
    /// How to write one, for messages (`query: PROMQL`).
    pub hint: &'static str,
    /// Sources: which shared keys it understands.
    pub supports: Supports,
}

/// What a server's plug-ins are, as `plan check` and starting a rollout ask: which kinds exist and the keys
/// that name them, whether this server can run each, and whether a block is right for its plug-in. The
/// plug-in registry (`sluice-sources`) answers it; the plan format keeps no list of kinds.
pub trait Capabilities {
    /// The kinds of `family` plans may name; `None` takes any kind and checks no block ([`AllPlugins`]).
    fn kinds(&self, family: Family) -> Option<Vec<KindInfo>>;

    /// Whether this server can run the kind (a kind it knows but lacks: the plan is valid but cannot start
    /// here). The default: every kind it knows.
    fn can(&self, kind: &PluginKind) -> bool {
        let _ = kind;
        true
    }

    /// Checks a check's block for its source `kind`; `at` is where the check is.
    fn check_source(&self, kind: &str, check: &Check, trigger: bool, at: Location, report: &mut Report<'_>) {
        let _ = (kind, check, trigger, at, report);
    }

    /// Checks an action's block for its `kind`.
    fn check_action(&self, kind: &str, action: &Action, at: Location, report: &mut Report<'_>) {
        let _ = (kind, action, at, report);
    }

    /// Checks a notifier's block for its `kind`.
    fn check_notifier(&self, kind: &str, notifier: &Notifier, at: Location, report: &mut Report<'_>) {
        let _ = (kind, notifier, at, report);
    }

    /// Checks a source's plan-wide settings (`analysis.KIND`).
    fn check_settings(&self, kind: &str, settings: &Spanned<Node>, report: &mut Report<'_>) {
        let _ = (kind, settings, report);
    }

    /// The programs a block of `kind` runs (an `exec` action's, a `command` check's), by the name it gives
    /// them.
    fn programs(&self, family: Family, kind: &str, block: &Block) -> Vec<String> {
        let _ = (family, kind, block);
        Vec::new()
    }
}

/// Every kind of plug-in, none checked: a plan against its own rules only (its shared keys, its phases,
/// its catalog), as a pure library can check it. The registry of `sluice-sources` checks blocks too.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllPlugins;

impl Capabilities for AllPlugins {
    fn kinds(&self, _: Family) -> Option<Vec<KindInfo>> {
        None
    }
}

/// The kinds of `family` the keys of `block` name, in the order written, each once.
pub fn kinds_named(block: &Block, family: Family, plugins: &dyn Capabilities) -> Vec<String> {
    let Some(kinds) = plugins.kinds(family) else { return Vec::new() };
    let mut named: Vec<String> = Vec::new();
    for key in block.keys() {
        if let Some(k) = kinds.iter().find(|k| k.keys.contains(&key.value.as_str())) {
            if !named.contains(&k.name) {
                named.push(k.name.clone());
            }
        }
    }
    named
}

impl Check {
    /// The source this check's value comes from, in `plan`: `source` as written; else the one kind its
    /// block's keys name; else `analysis.source`; else `signal` when the block is empty. `None` when its
    /// keys name no kind `plugins` knows (or several).
    ///
    /// ```
    /// let yaml = "name: p\nflag: f\nphases: [{percent: 5}]\ntriggers:\n  - {name: t, source: command, command: [x], above: 1, severity: hard}\n  - {name: s, severity: hard}\n";
    /// let (plan, _) = sluice_plan::load("p.yaml", yaml, None).unwrap();
    /// let all = sluice_plan::AllPlugins;
    /// assert_eq!(plan.triggers[0].value.source_kind(&plan, &all).as_deref(), Some("command"));
    /// assert_eq!(plan.triggers[1].value.source_kind(&plan, &all).as_deref(), Some("signal"));
    /// ```
    pub fn source_kind(&self, plan: &Plan, plugins: &dyn Capabilities) -> Option<String> {
        if let Some(s) = &self.source {
            return Some(s.value.clone());
        }
        let named = kinds_named(&self.block, Family::Source, plugins);
        match named.len() {
            1 => return named.into_iter().next(),
            0 => {}
            _ => return None,
        }
        if let Some(d) = &plan.analysis.source {
            return Some(d.value.clone());
        }
        self.block.is_empty().then(|| model::SIGNAL.to_string())
    }
}

impl Action {
    /// The kind of plug-in that runs this action: `flag` for a flag action, else the one kind its keys
    /// name (`exec`, `webhook`); `None` when they name none (or several).
    pub fn kind(&self, plugins: &dyn Capabilities) -> Option<String> {
        if self.flag.is_some() {
            return self.block.is_empty().then(|| FLAG_ACTION.to_string());
        }
        let named = kinds_named(&self.block, Family::Action, plugins);
        (named.len() == 1).then(|| named.into_iter().next()).flatten()
    }
}

/// The action kind the controller carries out itself: another flag, through the audited write path.
pub const FLAG_ACTION: &str = "flag";

impl Notifier {
    /// The kind of plug-in that delivers to it: the one kind its keys name (`slack`, `webhook`,
    /// `alertmanager`); `None` when they name none (or several).
    pub fn kind(&self, plugins: &dyn Capabilities) -> Option<String> {
        let named = kinds_named(&self.block, Family::Notifier, plugins);
        (named.len() == 1).then(|| named.into_iter().next()).flatten()
    }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The plan cannot start.
    Error,
    /// Worth knowing; the plan is valid.
    Note,
    /// The plan is valid, but uses a plug-in this server lacks: it cannot start here. Shown as a note.
    Unavailable,
}

/// One problem of a plan, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or note.
    pub level: Level,
    /// The plan file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// The offending key, e.g. `phases[2].gates[0].for`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Note | Level::Unavailable => "note",
        };
        if self.key.is_empty() {
            write!(f, "{}:{}:{}: {level}: {}", self.file, self.line, self.column, self.message)
        } else {
            write!(f, "{}:{}:{}: {level}: `{}`: {}", self.file, self.line, self.column, self.key, self.message)
        }
    }
}

/// What a plan is checked against: the flags and segments that exist.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Known flags.
    pub flags: Vec<CatalogFlag>,
    /// Known segment names.
    pub segments: Vec<String>,
}

/// A known flag and its variant names.
#[derive(Debug, Clone)]
pub struct CatalogFlag {
    /// The flag key.
    pub key: String,
    /// Its variants.
    pub variants: Vec<String>,
}

/// Most bytes of a plan file.
pub const MAX_PLAN_BYTES: usize = 1 << 20;

/// Parses a plan; the first syntax or shape error is returned with its position.
pub fn parse(file: &str, text: &str) -> Result<Plan, Problem> {
    let problem = |line, column, message: String| Problem {
        level: Level::Error,
        file: file.into(),
        line,
        column,
        key: String::new(),
        message,
    };
    if text.len() > MAX_PLAN_BYTES {
        return Err(problem(0, 0, format!("the plan is larger than {MAX_PLAN_BYTES} bytes")));
    }
    ERROR_PATH.with(|p| p.borrow_mut().clear());
    serde_saphyr::from_str::<Tracked>(text).map(|t| t.0).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The library's message repeats the position; keep only what is wrong.
        let message = e.without_snippet().to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).trim().to_string();
        let mut p = problem(line, column, message);
        p.key = ERROR_PATH.with(|path| path.borrow().clone());
        p
    })
}

thread_local! {
    /// The key path of the last parse error: `Deserialize` cannot return it beside the library's error
    /// (which carries the position), so it is left here for [`parse`] on the same thread.
    static ERROR_PATH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// `phases[0].value.hold.value` → `phases[0].hold`: a [`model::Spanned`] value adds one `value` hop after
/// its key. (The one real `value` key, a probe's, sits under a spanned `http`, so it stays.)
pub(crate) fn without_span_hops(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut hop_taken = true;
    for part in path.split('.') {
        let (name, _) = part.split_once('[').unwrap_or((part, ""));
        if name == "value" && !hop_taken && part == "value" {
            hop_taken = true;
            continue;
        }
        out.push(part);
        hop_taken = false;
    }
    out.join(".")
}

/// A plan whose deserialization records the key path of an error.
struct Tracked(Plan);

impl<'de> serde::Deserialize<'de> for Tracked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_path_to_error::deserialize(d).map(Tracked).map_err(|e| {
            let path = e.path().to_string();
            ERROR_PATH.with(|p| *p.borrow_mut() = if path == "." { String::new() } else { without_span_hops(&path) });
            e.into_inner()
        })
    }
}

/// Parses and checks a plan against its own rules ([`check`]): `Ok` (with any notes) when it is valid,
/// every problem otherwise.
pub fn load(file: &str, text: &str, catalog: Option<&Catalog>) -> Result<(Plan, Vec<Problem>), Vec<Problem>> {
    load_with(file, text, catalog, &AllPlugins)
}

/// [`load`] against a server's plug-ins ([`check_with`]): a note names each one the plan uses that
/// `plugins` lacks.
pub fn load_with(
    file: &str,
    text: &str,
    catalog: Option<&Catalog>,
    plugins: &dyn Capabilities,
) -> Result<(Plan, Vec<Problem>), Vec<Problem>> {
    let plan = parse(file, text).map_err(|p| vec![p])?;
    let problems = check_with(file, &plan, catalog, plugins);
    if problems.iter().any(|p| p.level == Level::Error) {
        Err(problems)
    } else {
        Ok((plan, problems))
    }
}

/// Fills `{{name}}` templates from `values`; an unknown name is left as written (`plan check` refuses
/// plans with unknown names, so this only happens for text that was never checked).
///
/// ```
/// let mut values = std::collections::BTreeMap::new();
/// values.insert("ramped".to_string(), "on".to_string());
/// assert_eq!(sluice_plan::render("variant=\"{{ramped}}\" {{ x }}", &values), "variant=\"on\" {{ x }}");
/// ```
pub fn render(text: &str, values: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match values.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every kind of event a rollout emits, with what it means: the names a plan's `notify[].on` may list.
///
/// ```
/// assert!(sluice_plan::EVENTS.iter().any(|(kind, _)| *kind == "rolled_back"));
/// ```
pub const EVENTS: &[(&str, &str)] = &[
    ("started", "the rollout started: the first phase's percentage is set"),
    ("promoted", "a phase passed: the next phase's percentage is set"),
    ("approval_waiting", "a phase's hold is over and its gates pass: it waits for approvals to be signed"),
    ("approved", "a person signed an approval item"),
    ("hold_skipped", "a person skipped the current phase's hold"),
    ("paused", "a soft trigger fired, a signal came in or a person paused: it waits for resume or rollback"),
    ("resumed", "a person (or a soft trigger's default) resumed the rollout"),
    ("kill_switch", "the flag's kill switch was pulled: the rollout paused"),
    ("source_down", "a source failed on consecutive ticks: the rollout paused (or rolled back)"),
    ("no_data", "a trigger has had no value for `analysis.max_inconclusive` ticks: it cannot fire"),
    ("hook_failed", "a phase hook failed: the rollout stepped back and paused"),
    ("uncertain", "an action that is not idempotent was cut off: a person must `settle` it"),
    (
        "action_failed",
        "an action failed for good (a permanent error, or its retries used up): a person must `settle` it",
    ),
    ("stepped_back", "a hard trigger stepped the rollout back a phase (`rollback.to: previous-phase`)"),
    ("rolled_back", "the rollout rolled back: the flag is restored, the rollback actions run"),
    ("baking", "the last phase passed: triggers stay armed for the bake"),
    ("completed", "the rollout finished"),
    ("aborted", "a person aborted the rollout: the flag stays where it is"),
];

/// Template names a webhook action's `body` may use besides the checks' (`flag`, `phase`, `percent`, …):
/// the rollout's `id`, its `plan`, the last `event` and its `reason`, and `checks` (the last tick's
/// decisions, a JSON array: written without quotes).
pub const WEBHOOK_TEMPLATES: &[&str] = &["id", "plan", "event", "reason", "checks"];
