//! The post-rollout review (`sluice report`): what a rollout did, phase by phase, with the evidence behind
//! each decision, as Markdown for a code review or as one self-contained HTML file (inline CSS and SVG
//! charts, no script, no external asset). Rendering is pure: [`Review`] holds what the server said, and
//! [`Facts`] is what both formats show.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;
use sluice_engine::{CheckDecision, Outcome, Verdict};
use sluice_store::{AuditEvent, Decided, Verification};

/// Everything a review is written from, as the server answered it.
pub struct Review {
    /// The rollout's summary (`GET /api/v1/rollouts/{id}`).
    pub rollout: Value,
    /// Its kept decisions, oldest first (`GET /api/v1/rollouts/{id}/decisions`).
    pub decisions: Vec<Decided>,
    /// Audit events about the rollout and about its flag while it ran, oldest first.
    pub audit: Vec<AuditEvent>,
    /// The audit chain, verified by this CLI; `None` when it was not checked.
    pub chain: Option<Verification>,
    /// What the reader must know about how complete the review is (events that could not be read, an
    /// excerpt that does not match the verified chain).
    pub notes: Vec<String>,
    /// When the review was written.
    pub written_at: DateTime<Utc>,
}

/// Events that interrupt a rollout: they are its incidents.
const INCIDENTS: &[&str] = &[
    "paused",
    "kill_switch",
    "source_down",
    "no_data",
    "hook_failed",
    "uncertain",
    "stepped_back",
    "rolled_back",
    "aborted",
];

/// Incidents that end a rollout.
const ENDINGS: &[&str] = &["rolled_back", "aborted"];
/// Events that move a rollout on from an incident.
const MOVES_ON: &[&str] = &["resumed", "promoted", "stepped_back", "rolled_back", "aborted", "completed", "baking"];

/// One stay in a phase.
struct Visit {
    phase: usize,
    percent: u64,
    from: u64,
    to: Option<u64>,
    /// The event that ended it (`promoted`, `rolled_back`, …) and why.
    ended_by: Option<(String, String)>,
}

/// One check's values over the rollout.
struct Series<'a> {
    name: String,
    kind: String,
    threshold: String,
    /// The number the threshold is at, for the chart's line.
    bound: Option<f64>,
    points: Vec<&'a CheckDecision>,
}

impl Series<'_> {
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().filter_map(|d| d.value)
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.points.iter().filter(|d| d.outcome == outcome).count()
    }
}

/// An interruption and how it ended.
struct Incident {
    at: u64,
    kind: String,
    phase: usize,
    percent: u64,
    reason: String,
    /// What came next (`resumed` after a pause, …), when anything did.
    then: Option<(u64, String)>,
}

/// What both formats show, worked out once.
struct Facts<'a> {
    id: String,
    plan: String,
    flag: String,
    state: String,
    reason: String,
    created_by: String,
    start: u64,
    end: Option<u64>,
    visits: Vec<Visit>,
    series: Vec<Series<'a>>,
    /// Decisions whose tick did something, or whose outcome changed.
    turning: Vec<&'a Decided>,
    incidents: Vec<Incident>,
    approvals: Vec<(u64, String, String)>,
    actions: Vec<&'a AuditEvent>,
    /// Per destination: (delivered, failed) attempts.
    notifications: BTreeMap<String, (u64, u64)>,
}

fn ms(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl<'a> Facts<'a> {
    fn of(r: &'a Review) -> Facts<'a> {
        let ro = &r.rollout;
        let history: Vec<&Value> = ro["history"].as_array().into_iter().flatten().collect();
        let state = s(&ro["status"]["state"]);
        let terminal = matches!(state.as_str(), "completed" | "rolled_back" | "aborted");
        let start = history.first().map_or(0, |e| ms(&e["at"]));
        let end = if terminal { history.last().map(|e| ms(&e["at"])) } else { None };

        let mut visits: Vec<Visit> = Vec::new();
        for e in &history {
            let (phase, percent, at) = (e["phase"].as_u64().unwrap_or(0) as usize + 1, ms(&e["percent"]), ms(&e["at"]));
            let moved = visits.last().is_none_or(|v| v.phase != phase || v.percent != percent);
            if moved {
                if let Some(last) = visits.last_mut() {
                    last.to = Some(at);
                    last.ended_by = Some((s(&e["kind"]), s(&e["reason"])));
                }
                visits.push(Visit { phase, percent, from: at, to: None, ended_by: None });
            }
        }
        if let (Some(last), Some(end)) = (visits.last_mut(), end) {
            last.to = Some(end);
            let e = history.last().expect("an end has an event");
            last.ended_by = Some((s(&e["kind"]), s(&e["reason"])));
        }

        let mut series: Vec<Series> = Vec::new();
        for d in r.decisions.iter().map(|d| &d.decision) {
            let (name, kind) = (d.check.clone(), d.kind.as_str().to_string());
            match series.iter_mut().find(|x| x.name == name && x.kind == kind) {
                Some(x) => x.points.push(d),
                None => {
                    let (threshold, bound) = (d.threshold.to_string(), d.threshold.line());
                    series.push(Series { name, kind, threshold, bound, points: vec![d] });
                }
            }
        }
        let mut last_outcome: BTreeMap<String, Outcome> = BTreeMap::new();
        let turning = r
            .decisions
            .iter()
            .filter(|d| {
                let changed = last_outcome.insert(d.decision.key(), d.decision.outcome) != Some(d.decision.outcome);
                changed || (!d.action.is_empty() && d.action != "none")
            })
            .collect();

        let mut incidents = Vec::new();
        for (i, e) in history.iter().enumerate() {
            let kind = s(&e["kind"]);
            if !INCIDENTS.contains(&kind.as_str()) {
                continue;
            }
            // What ended it: the next event that moved the rollout on (an approval or a second alarm
            // does not), or nothing when the incident ended the rollout itself.
            let then = if ENDINGS.contains(&kind.as_str()) {
                None
            } else {
                history[i + 1..]
                    .iter()
                    .find(|n| MOVES_ON.contains(&n["kind"].as_str().unwrap_or("")))
                    .map(|n| (ms(&n["at"]), s(&n["kind"])))
            };
            incidents.push(Incident {
                at: ms(&e["at"]),
                kind,
                phase: e["phase"].as_u64().unwrap_or(0) as usize + 1,
                percent: ms(&e["percent"]),
                reason: s(&e["reason"]),
                then,
            });
        }
        let approvals = r
            .audit
            .iter()
            .filter(|a| a.action == "rollout.approved")
            .map(|a| {
                // The event's reason is "ITEM by WHO".
                let reason = a.reason.clone().unwrap_or_default();
                let item = reason.strip_suffix(&format!(" by {}", a.actor)).unwrap_or(&reason).to_string();
                (a.at.timestamp_millis() as u64, item, a.actor.clone())
            })
            .collect();
        let actions = r.audit.iter().filter(|a| a.action == "rollout.action").collect();
        let mut notifications: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for a in r.audit.iter().filter(|a| a.action == "rollout.notification") {
            let after = a.after.clone().unwrap_or_default();
            let entry = notifications.entry(s(&after["destination"])).or_default();
            if after["ok"].as_bool() == Some(true) {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        Facts {
            id: s(&ro["id"]),
            plan: s(&ro["plan"]),
            flag: s(&ro["flag"]),
            state,
            reason: s(&ro["status"]["reason"]),
            created_by: s(&ro["created_by"]),
            start,
            end,
            visits,
            series,
            turning,
            incidents,
            approvals,
            actions,
            notifications,
        }
    }

    fn outcome(&self) -> String {
        match self.reason.as_str() {
            "" => self.state.replace('_', " "),
            reason => format!("{}: {reason}", self.state.replace('_', " ")),
        }
    }
}

/// `2026-11-26 14:03:05 UTC`.
fn when(ms: u64) -> String {
    Utc.timestamp_millis_opt(ms as i64)
        .single()
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// `3d 4h`, `2h 05m`, `4m 10s`, `12s`.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn number(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.001 && v.abs() < 1e6) {
        let t = format!("{v:.4}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

fn value_of(d: &CheckDecision) -> String {
    d.value.map_or_else(|| "no value".to_string(), number)
}

/// The verdict with its `for` run when the condition must hold several ticks (`fired 1/2 ticks`).
fn verdict_run(d: &CheckDecision) -> String {
    let dry = if d.dry_run { " (dry run)" } else { "" };
    match d.outcome {
        Outcome::Holds if d.needed > 1 => format!("{} {}/{} ticks{dry}", d.verdict().as_str(), d.run, d.needed),
        _ => format!("{}{dry}", d.verdict().as_str()),
    }
}

/// What an audit event says, for the excerpt: its reason, or the gist of its detail.
fn gist(a: &AuditEvent) -> String {
    let v = a.after.clone().unwrap_or_default();
    let reason = a.reason.clone().unwrap_or_default();
    if a.action.starts_with("flag.") {
        let before = a.before.as_ref().and_then(|b| b["ramp"]["percent"].as_u64());
        if let (Some(from), Some(to)) = (before, v["ramp"]["percent"].as_u64()) {
            if from != to {
                return format!("ramp {from}% → {to}%: {reason}");
            }
        }
    }
    if !reason.is_empty() {
        return reason;
    }
    match a.action.as_str() {
        "rollout.decision" => match serde_json::from_value::<CheckDecision>(v.clone()) {
            Ok(d) => format!("{} {}: {} {} → {}", d.kind.as_str(), d.check, value_of(&d), d.threshold, verdict_run(&d)),
            Err(_) => format!("{} {}", s(&v["kind"]), s(&v["check"])),
        },
        "rollout.action" => {
            let name = v["name"].as_str().map(|n| format!(" {n}")).unwrap_or_default();
            format!("{}{name}: {}", s(&v["purpose"]), if v["ok"] == true { "ok" } else { "failed" })
        }
        "rollout.notification" => {
            format!("{}: {}", s(&v["destination"]), if v["ok"] == true { "delivered" } else { "not delivered" })
        }
        _ => String::new(),
    }
}

/// What follows an incident nothing moved on from.
fn ended_or_not(kind: &str) -> String {
    if ENDINGS.contains(&kind) {
        "the rollout ended here".into()
    } else {
        "nothing yet".into()
    }
}

fn notifications_line(f: &Facts) -> String {
    f.notifications
        .iter()
        .map(|(d, (ok, failed))| format!("{d} {ok} delivered, {failed} failed attempts"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn chain_line(r: &Review) -> String {
    match &r.chain {
        None => "The audit chain was not verified for this review.".into(),
        Some(Verification::Intact { events, head }) => {
            format!(
                "Audit chain verified by the CLI when this review was written: intact, {events} events, head `{head}`."
            )
        }
        Some(other) => format!("AUDIT CHAIN NOT INTACT: {}", serde_json::to_string(other).unwrap_or_default()),
    }
}

/// Text for a Markdown table cell: one line, with everything Markdown (or the HTML GitHub renders in
/// it) would act on escaped, so a reason or a hook's output can neither break the table nor become a link,
/// an image or markup.
fn md(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            '\\' | '|' | '<' | '>' | '[' | ']' | '*' | '_' | '`' | '!' | '#' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text for a code span inside a table cell: one line, no backtick, the table's `|` escaped.
fn code(t: &str) -> String {
    t.replace(['\r', '\n'], " ").replace('`', "'").replace('|', "\\|")
}

/// At most `n` characters, with an ellipsis when cut.
fn cut(t: &str, n: usize) -> String {
    if t.chars().count() <= n {
        t.to_string()
    } else {
        t.chars().take(n).collect::<String>() + "…"
    }
}

/// A text sparkline of `values`, at most `width` characters (values are averaged into columns).
fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() {
        return "no values".into();
    }
    let columns: Vec<f64> = if values.len() <= width {
        values.to_vec()
    } else {
        (0..width)
            .map(|c| {
                let (a, b) =
                    (c * values.len() / width, ((c + 1) * values.len() / width).max(c * values.len() / width + 1));
                values[a..b].iter().sum::<f64>() / (b - a) as f64
            })
            .collect()
    };
    let (min, max) = columns.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    columns
        .iter()
        .map(|v| if max > min { BARS[(((v - min) / (max - min)) * 7.0).round() as usize] } else { BARS[0] })
        .collect()
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The review as Markdown: tables and text sparklines that read well in a code review
/// (`templates/review.md`).
pub fn markdown(r: &Review) -> Result<String, minijinja::Error> {
    render("review.md", r)
}

/// The review as one self-contained HTML file (`templates/review.html`, its charts `templates/chart.svg`).
pub fn html(r: &Review) -> Result<String, minijinja::Error> {
    render("review.html", r)
}

/// Renders one of the templates with what both formats show. Every value a template prints is escaped
/// for the file it is written into — HTML for `.html` and `.svg`, Markdown for `.md` — unless the
/// template asks for a code span (`|code`), which escapes for inside backticks instead.
fn render(template: &str, r: &Review) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".md") {
            minijinja::AutoEscape::Custom("markdown")
        } else {
            minijinja::AutoEscape::Html
        }
    });
    // Before the templates are added: each takes its escaping from its name as it is compiled.
    env.add_template("review.md", include_str!("../templates/review.md"))?;
    env.add_template("review.html", include_str!("../templates/review.html"))?;
    env.add_template("chart.svg", include_str!("../templates/chart.svg"))?;
    env.set_formatter(|out, state, value| {
        let text = if value.is_none() || value.is_undefined() { String::new() } else { value.to_string() };
        let shown = match (value.is_safe(), state.auto_escape()) {
            (true, _) | (_, minijinja::AutoEscape::None) => text,
            (false, minijinja::AutoEscape::Custom("markdown")) => md(&text),
            (false, _) => esc(&text),
        };
        out.write_str(&shown)
            .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "writing the review"))
    });
    env.add_filter("code", |text: String| minijinja::Value::from_safe_string(code(&text)));
    env.get_template(template)?.render(View::of(&Facts::of(r), r))
}

/// What a template prints: [`Facts`] in words and numbers, never escaped here.
#[derive(Serialize)]
struct View {
    plan: String,
    id: String,
    flag: String,
    outcome: String,
    state_class: &'static str,
    state_mark: &'static str,
    started: String,
    created_by: String,
    ended: Option<String>,
    took: String,
    written: String,
    paused: usize,
    rolled_back: usize,
    actions_failed: usize,
    timeline: Vec<Stretch>,
    visits: Vec<VisitRow>,
    series: Vec<SeriesRow>,
    turning: Vec<TurnRow>,
    incidents: Vec<IncidentRow>,
    approvals: Vec<ApprovalRow>,
    actions: Vec<ActionRow>,
    notifications: String,
    chain: String,
    notes: Vec<String>,
    audit: Vec<AuditRow>,
}

#[derive(Serialize)]
struct Stretch {
    flex: String,
    phase: usize,
    percent: u64,
}

#[derive(Serialize)]
struct VisitRow {
    phase: usize,
    percent: u64,
    entered: String,
    left: String,
    duration: String,
    ended_kind: Option<String>,
    ended_why: Option<String>,
}

#[derive(Serialize)]
struct SeriesRow {
    name: String,
    kind: String,
    threshold: String,
    sparkline: String,
    min: String,
    max: String,
    last: String,
    holds: usize,
    clear: usize,
    inconclusive: usize,
    chart: Chart,
}

#[derive(Serialize)]
struct TurnRow {
    time: String,
    kind: String,
    check: String,
    value: String,
    note: Option<String>,
    threshold: String,
    verdict: String,
    bad: bool,
    action: String,
}

#[derive(Serialize)]
struct IncidentRow {
    kind: String,
    time: String,
    phase: usize,
    percent: u64,
    reason: String,
    then: String,
}

#[derive(Serialize)]
struct ApprovalRow {
    item: String,
    by: String,
    time: String,
}

#[derive(Serialize)]
struct ActionRow {
    time: String,
    purpose: String,
    name: String,
    ok: bool,
    attempts: usize,
    /// Cut for a Markdown table cell.
    detail_short: String,
    /// Cut for the HTML table.
    detail: String,
}

#[derive(Serialize)]
struct AuditRow {
    seq: i64,
    time: String,
    actor: String,
    action: String,
    entity: String,
    gist: String,
}

impl View {
    fn of(f: &Facts, r: &Review) -> View {
        let (state_class, state_mark) = match f.state.as_str() {
            "completed" | "baking" => ("ok", "✔"),
            "rolled_back" | "aborted" => ("bad", "✖"),
            "paused" => ("", "‖"),
            _ => ("", "▶"),
        };
        let total = f.end.unwrap_or_else(|| f.visits.last().map_or(f.start, |v| v.from)).saturating_sub(f.start).max(1);
        let stamp = |at: &DateTime<Utc>| at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        View {
            plan: f.plan.clone(),
            id: f.id.clone(),
            flag: f.flag.clone(),
            outcome: f.outcome(),
            state_class,
            state_mark,
            started: when(f.start),
            created_by: f.created_by.clone(),
            ended: f.end.map(when),
            took: f.end.map_or_else(String::new, |end| span(end.saturating_sub(f.start))),
            written: stamp(&r.written_at),
            paused: f.incidents.iter().filter(|i| i.kind == "paused").count(),
            rolled_back: f.incidents.iter().filter(|i| i.kind == "rolled_back").count(),
            actions_failed: f.actions.iter().filter(|a| a.after.as_ref().is_none_or(|v| v["ok"] != true)).count(),
            timeline: f
                .visits
                .iter()
                .map(|v| Stretch {
                    flex: format!(
                        "{:.1}",
                        v.to.map_or(8.0, |to| (to.saturating_sub(v.from) as f64 / total as f64 * 100.0).max(4.0))
                    ),
                    phase: v.phase,
                    percent: v.percent,
                })
                .collect(),
            visits: f
                .visits
                .iter()
                .map(|v| VisitRow {
                    phase: v.phase,
                    percent: v.percent,
                    entered: when(v.from),
                    left: v.to.map_or_else(|| "—".to_string(), when),
                    duration: v.to.map_or_else(|| "under way".to_string(), |to| span(to.saturating_sub(v.from))),
                    ended_kind: v.ended_by.as_ref().map(|(k, _)| k.clone()),
                    ended_why: v.ended_by.as_ref().map(|(_, why)| why.clone()),
                })
                .collect(),
            series: f.series.iter().map(|x| SeriesRow::of(x, f)).collect(),
            turning: f
                .turning
                .iter()
                .map(|t| {
                    let d = &t.decision;
                    TurnRow {
                        time: when(d.at),
                        kind: d.kind.as_str().to_string(),
                        check: d.check.clone(),
                        value: value_of(d),
                        note: d.note.clone(),
                        threshold: d.threshold.to_string(),
                        verdict: verdict_run(d),
                        bad: matches!(d.verdict(), Verdict::Fail | Verdict::Fired),
                        action: t.action.replace(',', ", "),
                    }
                })
                .collect(),
            incidents: f
                .incidents
                .iter()
                .map(|i| IncidentRow {
                    kind: i.kind.replace('_', " "),
                    time: when(i.at),
                    phase: i.phase,
                    percent: i.percent,
                    reason: i.reason.clone(),
                    then: i.then.as_ref().map_or_else(
                        || ended_or_not(&i.kind),
                        |(at, k)| format!("{} after {}", k.replace('_', " "), span(at.saturating_sub(i.at))),
                    ),
                })
                .collect(),
            approvals: f
                .approvals
                .iter()
                .map(|(at, item, by)| ApprovalRow { item: item.clone(), by: by.clone(), time: when(*at) })
                .collect(),
            actions: f
                .actions
                .iter()
                .map(|a| {
                    let v = a.after.clone().unwrap_or_default();
                    ActionRow {
                        time: stamp(&a.at),
                        purpose: s(&v["purpose"]),
                        name: s(&v["name"]),
                        ok: v["ok"] == true,
                        attempts: v["attempts"].as_array().map_or(1, Vec::len),
                        detail_short: cut(&s(&v["detail"]), 120),
                        detail: cut(&s(&v["detail"]), 200),
                    }
                })
                .collect(),
            notifications: notifications_line(f),
            chain: chain_line(r),
            notes: r.notes.clone(),
            audit: r
                .audit
                .iter()
                .map(|a| AuditRow {
                    seq: a.seq,
                    time: stamp(&a.at),
                    actor: a.actor.clone(),
                    action: a.action.clone(),
                    entity: a.entity.clone(),
                    gist: gist(a),
                })
                .collect(),
        }
    }
}

impl SeriesRow {
    fn of(x: &Series, f: &Facts) -> SeriesRow {
        let values: Vec<f64> = x.values().collect();
        let (min, max) = (
            values.iter().copied().fold(f64::INFINITY, f64::min),
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        let shown = |v: f64| if v.is_finite() { number(v) } else { "—".into() };
        SeriesRow {
            name: x.name.clone(),
            kind: x.kind.clone(),
            threshold: x.threshold.clone(),
            sparkline: sparkline(&values, 32),
            min: shown(min),
            max: shown(max),
            last: x.points.last().map(|d| value_of(d)).unwrap_or_default(),
            holds: x.count(Outcome::Holds),
            clear: x.count(Outcome::Clear),
            inconclusive: x.count(Outcome::Inconclusive),
            chart: Chart::of(x, f.start, f.end),
        }
    }
}

/// One check as an SVG line chart over the rollout's time (`templates/chart.svg`): every coordinate,
/// worked out here.
#[derive(Serialize)]
struct Chart {
    label: String,
    threshold: String,
    w: String,
    h: String,
    left: String,
    /// Grid lines with their value.
    grid: Vec<GridLine>,
    /// The start and end times under the axis.
    axis: Vec<AxisLabel>,
    /// The threshold's dashed line.
    bound: Option<GridLine>,
    /// The values' polyline (`x,y x,y …`), when there are two or more.
    line: Option<String>,
    /// Each tick's verdict.
    marks: Vec<Mark>,
}

#[derive(Serialize)]
struct GridLine {
    x2: String,
    y: String,
    tx: String,
    ty: String,
    label: String,
}

#[derive(Serialize)]
struct AxisLabel {
    x: String,
    y: String,
    anchor: &'static str,
    label: String,
}

/// A tick's mark: `ring` (no value, on the axis), `cross` (fail or fired), `dot` (pass or quiet).
#[derive(Serialize)]
struct Mark {
    shape: &'static str,
    x: String,
    y: String,
}

impl Chart {
    fn of(x: &Series, start: u64, end: Option<u64>) -> Chart {
        let (w, h, left, right, top, bottom) = (900.0, 180.0, 64.0, 12.0, 10.0, 26.0);
        let t0 = start as f64;
        let t1 = end.or_else(|| x.points.last().map(|d| d.at)).unwrap_or(start) as f64;
        let t1 = if t1 > t0 { t1 } else { t0 + 1.0 };
        let values: Vec<f64> = x.values().chain(x.bound).collect();
        let (mut lo, mut hi) =
            values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if (hi - lo).abs() < f64::EPSILON {
            (lo, hi) = (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0));
        }
        // Rates and counts start at zero, so the axis does too; a check with negative values gets a margin.
        let pad = (hi - lo) * 0.08;
        let (lo, hi) = (if lo >= 0.0 { 0.0 } else { lo - pad }, hi + pad);
        let px = |t: f64| left + (t - t0) / (t1 - t0) * (w - left - right);
        let py = |v: f64| top + (hi - v) / (hi - lo) * (h - top - bottom);
        let grid = [lo, (lo + hi) / 2.0, hi]
            .into_iter()
            .map(|v| GridLine {
                x2: format!("{}", w - right),
                y: format!("{:.1}", py(v)),
                tx: format!("{}", left - 6.0),
                ty: format!("{:.1}", py(v) + 4.0),
                label: number(v),
            })
            .collect();
        let axis = [(t0, "start"), (t1, "end")]
            .into_iter()
            .map(|(t, anchor)| AxisLabel {
                x: format!("{:.1}", px(t)),
                y: format!("{}", h - 8.0),
                anchor,
                label: when(t as u64),
            })
            .collect();
        let bound = x.bound.map(|b| GridLine {
            x2: format!("{}", w - right),
            y: format!("{:.1}", py(b)),
            tx: format!("{}", w - right - 4.0),
            ty: format!("{:.1}", py(b) - 4.0),
            label: x.threshold.clone(),
        });
        let path: Vec<String> =
            x.points.iter().filter_map(|d| d.value.map(|v| format!("{:.1},{:.1}", px(d.at as f64), py(v)))).collect();
        // At most ~300 marks: a long rollout's ticks would otherwise be an ink blot.
        let step = (x.points.len() / 300).max(1);
        let marks = x
            .points
            .iter()
            .step_by(step)
            .map(|d| {
                let cx = px(d.at as f64);
                match (d.value, d.verdict()) {
                    (None, _) | (_, Verdict::Inconclusive) => {
                        Mark { shape: "ring", x: format!("{cx:.1}"), y: format!("{:.1}", h - bottom) }
                    }
                    (Some(v), Verdict::Fail | Verdict::Fired) => {
                        Mark { shape: "cross", x: format!("{:.1}", cx - 3.5), y: format!("{:.1}", py(v) - 3.5) }
                    }
                    (Some(v), _) => Mark { shape: "dot", x: format!("{cx:.1}"), y: format!("{:.1}", py(v)) },
                }
            })
            .collect();
        Chart {
            label: format!("{} {} over time against {}", x.kind, x.name, x.threshold),
            threshold: x.threshold.clone(),
            w: format!("{w}"),
            h: format!("{h}"),
            left: format!("{left}"),
            grid,
            axis,
            bound,
            line: (path.len() > 1).then(|| path.join(" ")),
            marks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_engine::{CheckKind, Threshold};

    const T0: u64 = 1_795_000_000_000;

    fn decision(
        at: u64,
        check: &str,
        kind: CheckKind,
        value: Option<f64>,
        threshold: Threshold,
        outcome: Outcome,
    ) -> Decided {
        let action = if at == T0 + 9_000 { "rolled_back" } else { "none" };
        Decided {
            decision: CheckDecision {
                at,
                check: check.into(),
                kind,
                value,
                threshold,
                outcome,
                note: value.is_none().then(|| "too few samples: 3 (min_samples 10) | <i>".to_string()),
                run: 1,
                needed: if kind == CheckKind::Trigger { 2 } else { 1 },
                dry_run: false,
                interval: None,
            },
            action: action.into(),
        }
    }

    fn event(seq: i64, at: u64, actor: &str, action: &str, after: Option<Value>, reason: Option<&str>) -> AuditEvent {
        AuditEvent {
            seq,
            at: Utc.timestamp_millis_opt(at as i64).unwrap(),
            actor: actor.into(),
            action: action.into(),
            entity: "rollout:r-1".into(),
            before: None,
            after,
            reason: reason.map(String::from),
            prev_hash: String::new(),
            hash: String::new(),
            env: None,
        }
    }

    /// A rollout with every part a review shows, and text that would break Markdown or HTML everywhere a
    /// person or a program can put text.
    fn fixture() -> Review {
        let hostile = "not <b>us</b> [see](http://127.0.0.1/x) | `tick` *now*\nsecond line & more";
        let history = json!([
            {"at": T0, "kind": "started", "phase": 0, "percent": 10, "reason": "started"},
            {"at": T0 + 3_000, "kind": "paused", "phase": 0, "percent": 10, "reason": hostile},
            {"at": T0 + 5_000, "kind": "resumed", "phase": 0, "percent": 10, "reason": "looked fine"},
            {"at": T0 + 6_000, "kind": "promoted", "phase": 1, "percent": 50, "reason": "gates passed"},
            {"at": T0 + 9_000, "kind": "rolled_back", "phase": 1, "percent": 0, "reason": "trigger `errors` fired"},
        ]);
        let rollout = json!({
            "id": "r-1", "plan": "checkout <ramp>", "flag": "checkout_v2", "created_by": "dana|ops",
            "status": {"state": "rolled_back", "reason": "trigger `errors` fired"}, "history": history,
        });
        let below = || Threshold::Below { limit: 0.01 };
        let above = || Threshold::Above { limit: 0.5 };
        let mut decisions = Vec::new();
        for (i, at) in (0..10).map(|i| (i, T0 + i * 1_000)) {
            let v = 0.002 * i as f64;
            let gate = if i == 4 { None } else { Some(v) };
            let outcome = match gate {
                None => Outcome::Inconclusive,
                Some(v) if v < 0.01 => Outcome::Holds,
                Some(_) => Outcome::Clear,
            };
            decisions.push(decision(at, "error-rate", CheckKind::Gate, gate, below(), outcome));
            let fired = if i >= 8 { Outcome::Holds } else { Outcome::Clear };
            decisions.push(decision(at, "errors", CheckKind::Trigger, Some(0.1 * i as f64), above(), fired));
        }
        let audit = vec![
            event(1, T0, "dana|ops", "rollout.start", None, Some("ship it")),
            event(2, T0 + 1_000, "olivia", "rollout.approved", None, Some("qa-signoff by olivia")),
            event(
                3,
                T0 + 2_000,
                "controller",
                "rollout.action",
                Some(json!({"purpose": "hook", "name": "warm", "ok": true, "detail": "warmed <ok>"})),
                None,
            ),
            event(
                4,
                T0 + 9_000,
                "controller",
                "rollout.action",
                Some(
                    json!({"purpose": "rollback", "name": "undo", "ok": false, "attempts": [1, 2], "detail": hostile}),
                ),
                None,
            ),
            event(
                5,
                T0 + 9_000,
                "controller",
                "rollout.notification",
                Some(json!({"destination": "notify[0]", "ok": true})),
                None,
            ),
            event(
                6,
                T0 + 9_100,
                "controller",
                "rollout.notification",
                Some(json!({"destination": "notify[0]", "ok": false})),
                None,
            ),
            AuditEvent {
                entity: "flag:checkout_v2".into(),
                before: Some(json!({"ramp": {"percent": 50}})),
                ..event(
                    7,
                    T0 + 9_000,
                    "controller",
                    "flag.update",
                    Some(json!({"ramp": {"percent": 0}})),
                    Some(hostile),
                )
            },
        ];
        Review {
            rollout,
            decisions,
            audit,
            chain: Some(Verification::Intact { events: 7, head: "abc123".into() }),
            notes: vec!["one event could not be read: <gone>".into()],
            written_at: Utc.timestamp_millis_opt(T0 as i64 + 60_000).unwrap(),
        }
    }

    /// The review as users have read it: a change to how it is rendered must not change what it says.
    /// `SLUICE_BLESS=1` writes the files anew (then read the diff).
    #[test]
    fn both_formats_render_the_fixture_as_kept() {
        let review = fixture();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for (file, text) in [("review.md", markdown(&review).unwrap()), ("review.html", html(&review).unwrap())] {
            let path = dir.join(file);
            if std::env::var_os("SLUICE_BLESS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let kept = std::fs::read_to_string(&path).unwrap();
            assert!(text == kept, "{file} differs from what was kept:\n{text}");
        }
    }

    #[test]
    fn sparklines_scale_and_squeeze() {
        assert_eq!(sparkline(&[0.0, 1.0], 8), "▁█");
        assert_eq!(sparkline(&[1.0; 100], 10).chars().count(), 10);
        assert_eq!(sparkline(&[], 10), "no values");
    }
}
