//! The post-rollout review (`sluice report`): what a rollout did, phase by phase, with the evidence behind
//! each decision, as Markdown for a code review or as one self-contained HTML file (inline CSS and SVG
//! charts, no script, no external asset). Rendering is pure: [`Review`] holds what the server said, and
//! [`Facts`] is what both formats show.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, TimeZone, Utc};
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

/// The review as Markdown: tables and text sparklines that read well in a code review.
pub fn markdown(r: &Review) -> String {
    let f = Facts::of(r);
    let mut o = String::new();
    let _ = writeln!(o, "# Rollout review: {} (`{}`)\n", md(&f.plan), code(&f.id));
    let _ = writeln!(o, "| Rollout | `{}` |\n|---|---|", code(&f.id));
    let _ = writeln!(o, "| Flag | `{}` |", code(&f.flag));
    let _ = writeln!(o, "| Outcome | **{}** |", md(&f.outcome()));
    let _ = writeln!(o, "| Started | {} by {} |", when(f.start), md(&f.created_by));
    match f.end {
        Some(end) => {
            let _ = writeln!(o, "| Ended | {} ({} in all) |", when(end), span(end.saturating_sub(f.start)));
        }
        None => {
            let _ = writeln!(o, "| Ended | not yet: this review is of a rollout still under way |");
        }
    }
    let _ = writeln!(
        o,
        "| Incidents | {} ({} paused, {} rolled back) |",
        f.incidents.len(),
        f.incidents.iter().filter(|i| i.kind == "paused").count(),
        f.incidents.iter().filter(|i| i.kind == "rolled_back").count()
    );
    let failed = f.actions.iter().filter(|a| a.after.as_ref().is_none_or(|v| v["ok"] != true)).count();
    let _ = writeln!(o, "| Actions | {} run, {failed} failed |", f.actions.len());
    let _ = writeln!(o, "| Written | {} |\n", r.written_at.format("%Y-%m-%d %H:%M:%S UTC"));

    let _ = writeln!(o, "## Phases\n");
    let _ = writeln!(o, "| Phase | Percent | Entered | Left | Duration | Ended by |\n|---|---|---|---|---|---|");
    for v in &f.visits {
        let left = v.to.map_or_else(|| "—".to_string(), when);
        let duration = v.to.map_or_else(|| "under way".to_string(), |to| span(to.saturating_sub(v.from)));
        let ended = v.ended_by.as_ref().map_or_else(String::new, |(k, why)| format!("{}: {}", md(k), md(why)));
        let _ = writeln!(o, "| {} | {}% | {} | {left} | {duration} | {ended} |", v.phase, v.percent, when(v.from));
    }

    let _ = writeln!(o, "\n## Gates and triggers\n");
    if f.series.is_empty() {
        let _ = writeln!(o, "No decisions were kept for this rollout.");
    } else {
        let _ = writeln!(
            o,
            "| Check | Kind | Threshold | Values over time | Min | Max | Last | Pass/fired | Fail/quiet | No value |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for x in &f.series {
            let values: Vec<f64> = x.values().collect();
            let (min, max) = (
                values.iter().copied().fold(f64::INFINITY, f64::min),
                values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
            let last = x.points.last().map(|d| value_of(d)).unwrap_or_default();
            let shown = |v: f64| if v.is_finite() { number(v) } else { "—".into() };
            let _ = writeln!(
                o,
                "| {} | {} | `{}` | `{}` | {} | {} | {last} | {} | {} | {} |",
                md(&x.name),
                md(&x.kind),
                code(&x.threshold),
                sparkline(&values, 32),
                shown(min),
                shown(max),
                x.count(Outcome::Holds),
                x.count(Outcome::Clear),
                x.count(Outcome::Inconclusive)
            );
        }
    }

    let _ = writeln!(o, "\n## Decisions\n");
    let _ =
        writeln!(o, "The ticks that changed a check's verdict or made the rollout do something, with the evidence.\n");
    if f.turning.is_empty() {
        let _ = writeln!(o, "None kept.");
    } else {
        let _ = writeln!(
            o,
            "| Time | Check | Value | Threshold | Verdict | What the tick did |\n|---|---|---|---|---|---|"
        );
        for t in &f.turning {
            let d = &t.decision;
            let note = d.note.as_deref().map(|n| format!(" ({})", md(n))).unwrap_or_default();
            let _ = writeln!(
                o,
                "| {} | {} {} | {}{note} | `{}` | {} | {} |",
                when(d.at),
                md(d.kind.as_str()),
                md(&d.check),
                value_of(d),
                code(&d.threshold.to_string()),
                verdict_run(d),
                md(&t.action.replace(',', ", "))
            );
        }
    }

    let _ = writeln!(o, "\n## Incidents\n");
    if f.incidents.is_empty() {
        let _ = writeln!(o, "None: the rollout was never paused or rolled back.");
    }
    for i in &f.incidents {
        let then = i.then.as_ref().map_or_else(
            || ended_or_not(&i.kind),
            |(at, k)| format!("{} after {}", md(&k.replace('_', " ")), span(at.saturating_sub(i.at))),
        );
        let _ = writeln!(
            o,
            "- **{}** at {} in phase {} ({}%): {}. Then: {then}.",
            md(&i.kind.replace('_', " ")),
            when(i.at),
            i.phase,
            i.percent,
            md(&i.reason)
        );
    }

    let _ = writeln!(o, "\n## Approvals\n");
    if f.approvals.is_empty() {
        let _ = writeln!(o, "None signed.");
    }
    for (at, item, by) in &f.approvals {
        let _ = writeln!(o, "- `{}` signed by {} at {}", code(item), md(by), when(*at));
    }

    let _ = writeln!(o, "\n## Actions\n");
    if f.actions.is_empty() {
        let _ = writeln!(o, "None run.");
    } else {
        let _ = writeln!(o, "| Time | Purpose | Name | Result | Attempts | Detail |\n|---|---|---|---|---|---|");
        for a in &f.actions {
            let v = a.after.clone().unwrap_or_default();
            let result = if v["ok"] == true { "ok" } else { "FAILED" };
            let attempts = v["attempts"].as_array().map_or(1, Vec::len);
            let detail = cut(&s(&v["detail"]), 120);
            let _ = writeln!(
                o,
                "| {} | {} | {} | {result} | {attempts} | {} |",
                a.at.format("%Y-%m-%d %H:%M:%S UTC"),
                md(&s(&v["purpose"])),
                md(&s(&v["name"])),
                md(&detail)
            );
        }
    }
    if !f.notifications.is_empty() {
        let _ = writeln!(o, "\nNotifications: {}.", md(&notifications_line(&f)));
    }

    let _ = writeln!(o, "\n## Audit excerpt\n");
    let _ = writeln!(o, "{}\n", md(&chain_line(r)));
    for note in &r.notes {
        let _ = writeln!(o, "**Note:** {}\n", md(note));
    }
    let _ = writeln!(o, "| # | Time | Actor | Action | Entity | Reason or detail |\n|---|---|---|---|---|---|");
    for a in &r.audit {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            a.seq,
            a.at.format("%Y-%m-%d %H:%M:%S UTC"),
            md(&a.actor),
            md(&a.action),
            md(&a.entity),
            md(&gist(a))
        );
    }
    o
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

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#1b1f24;max-width:1100px;margin:24px auto;padding:0 16px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccd;padding-bottom:4px}\
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border:1px solid #d5d8de;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f2f4f7}code{font-family:ui-monospace,monospace;font-size:13px}\
.ok{color:#116329}.bad{color:#a40e26;font-weight:600}.muted{color:#57606a}\
.chart{margin:10px 0 18px}.chart svg{border:1px solid #d5d8de;background:#fff}\
.timeline{display:flex;gap:2px;margin:8px 0}.timeline div{padding:6px 8px;border:1px solid #8c959f;background:#eef2f7;font-size:12px;min-width:60px}";

/// The review as one self-contained HTML file.
pub fn html(r: &Review) -> String {
    let f = Facts::of(r);
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Rollout review: {} ({})</title><style>{STYLE}</style></head><body>",
        esc(&f.plan),
        esc(&f.id)
    );
    let _ = write!(o, "<h1>Rollout review: {} <code>{}</code></h1>", esc(&f.plan), esc(&f.id));
    let ended = match f.end {
        Some(end) => format!("{} ({} in all)", when(end), span(end.saturating_sub(f.start))),
        None => "not yet: this review is of a rollout still under way".into(),
    };
    let (class, mark) = match f.state.as_str() {
        "completed" | "baking" => ("ok", "✔"),
        "rolled_back" | "aborted" => ("bad", "✖"),
        "paused" => ("", "‖"),
        _ => ("", "▶"),
    };
    let _ = write!(
        o,
        "<table><tr><th>Flag</th><td><code>{}</code></td></tr><tr><th>Outcome</th><td class=\"{}\">{} {}</td></tr>\
         <tr><th>Started</th><td>{} by {}</td></tr><tr><th>Ended</th><td>{}</td></tr><tr><th>Written</th><td>{}</td></tr></table>",
        esc(&f.flag),
        class,
        mark,
        esc(&f.outcome()),
        when(f.start),
        esc(&f.created_by),
        ended,
        r.written_at.format("%Y-%m-%d %H:%M:%S UTC")
    );

    let _ = write!(o, "<h2>Phases</h2><div class=\"timeline\" aria-label=\"phase timeline\">");
    let total = f.end.unwrap_or_else(|| f.visits.last().map_or(f.start, |v| v.from)).saturating_sub(f.start).max(1);
    for v in &f.visits {
        let width = v.to.map_or(8.0, |to| (to.saturating_sub(v.from) as f64 / total as f64 * 100.0).max(4.0));
        let _ = write!(o, "<div style=\"flex:{width:.1}\">phase {} · {}%</div>", v.phase, v.percent);
    }
    let _ = write!(o, "</div><table><tr><th>Phase</th><th>Percent</th><th>Entered</th><th>Left</th><th>Duration</th><th>Ended by</th></tr>");
    for v in &f.visits {
        let left = v.to.map_or_else(|| "—".to_string(), when);
        let duration = v.to.map_or_else(|| "under way".to_string(), |to| span(to.saturating_sub(v.from)));
        let ended = v.ended_by.as_ref().map_or_else(String::new, |(k, why)| format!("<b>{}</b>: {}", esc(k), esc(why)));
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}%</td><td>{}</td><td>{left}</td><td>{duration}</td><td>{ended}</td></tr>",
            v.phase,
            v.percent,
            when(v.from)
        );
    }
    let _ = write!(o, "</table>");

    let _ = write!(o, "<h2>Gates and triggers</h2>");
    if f.series.is_empty() {
        let _ = write!(o, "<p>No decisions were kept for this rollout.</p>");
    }
    for x in &f.series {
        let _ = write!(
            o,
            "<div class=\"chart\"><b>{} {}</b> <code>{}</code> <span class=\"muted\">— {} pass/fired, {} fail/quiet, {} without a value</span>{}</div>",
            esc(&x.kind),
            esc(&x.name),
            esc(&x.threshold),
            x.count(Outcome::Holds),
            x.count(Outcome::Clear),
            x.count(Outcome::Inconclusive),
            chart(x, f.start, f.end)
        );
    }
    if !f.series.is_empty() {
        let _ = write!(
            o,
            "<p class=\"muted\">Marks: ● pass (gate) or quiet (trigger) · ✖ fail (gate) or fired (trigger) · ○ on the axis: no value. The dashed line is the threshold.</p>"
        );
    }

    let _ = write!(o, "<h2>Decisions</h2><p>The ticks that changed a check's verdict or made the rollout do something, with the evidence.</p>");
    if f.turning.is_empty() {
        let _ = write!(o, "<p>None kept.</p>");
    } else {
        let _ = write!(o, "<table><tr><th>Time</th><th>Check</th><th>Value</th><th>Threshold</th><th>Verdict</th><th>What the tick did</th></tr>");
        for t in &f.turning {
            let d = &t.decision;
            let note =
                d.note.as_deref().map(|n| format!(" <span class=\"muted\">({})</span>", esc(n))).unwrap_or_default();
            let class = if matches!(d.verdict(), Verdict::Fail | Verdict::Fired) { "bad" } else { "" };
            let v = esc(&verdict_run(d));
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{} {}</td><td>{}{note}</td><td><code>{}</code></td><td class=\"{class}\">{v}</td><td>{}</td></tr>",
                when(d.at),
                esc(d.kind.as_str()),
                esc(&d.check),
                value_of(d),
                esc(&d.threshold.to_string()),
                esc(&t.action.replace(',', ", "))
            );
        }
        let _ = write!(o, "</table>");
    }

    let _ = write!(o, "<h2>Incidents</h2>");
    if f.incidents.is_empty() {
        let _ = write!(o, "<p>None: the rollout was never paused or rolled back.</p>");
    } else {
        let _ = write!(o, "<ul>");
        for i in &f.incidents {
            let then = i.then.as_ref().map_or_else(
                || ended_or_not(&i.kind),
                |(at, k)| format!("{} after {}", k.replace('_', " "), span(at.saturating_sub(i.at))),
            );
            let then = esc(&then);
            let _ = write!(
                o,
                "<li><b class=\"bad\">✖ {}</b> at {} in phase {} ({}%): {}. Then: {then}.</li>",
                esc(&i.kind.replace('_', " ")),
                when(i.at),
                i.phase,
                i.percent,
                esc(&i.reason)
            );
        }
        let _ = write!(o, "</ul>");
    }

    let _ = write!(o, "<h2>Approvals</h2>");
    if f.approvals.is_empty() {
        let _ = write!(o, "<p>None signed.</p>");
    } else {
        let _ = write!(o, "<ul>");
        for (at, item, by) in &f.approvals {
            let _ = write!(o, "<li>✔ <code>{}</code> signed by {} at {}</li>", esc(item), esc(by), when(*at));
        }
        let _ = write!(o, "</ul>");
    }

    let _ = write!(o, "<h2>Actions</h2>");
    if f.actions.is_empty() {
        let _ = write!(o, "<p>None run.</p>");
    } else {
        let _ = write!(
            o,
            "<table><tr><th>Time</th><th>Purpose</th><th>Name</th><th>Result</th><th>Attempts</th><th>Detail</th></tr>"
        );
        for a in &f.actions {
            let v = a.after.clone().unwrap_or_default();
            let ok = v["ok"] == true;
            let attempts = v["attempts"].as_array().map_or(1, Vec::len);
            let detail = cut(&s(&v["detail"]), 200);
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{attempts}</td><td><code>{}</code></td></tr>",
                a.at.format("%Y-%m-%d %H:%M:%S UTC"),
                esc(&s(&v["purpose"])),
                esc(&s(&v["name"])),
                if ok { "ok" } else { "bad" },
                if ok { "✔ ok" } else { "✖ failed" },
                esc(&detail)
            );
        }
        let _ = write!(o, "</table>");
    }
    if !f.notifications.is_empty() {
        let _ = write!(o, "<p>Notifications: {}.</p>", esc(&notifications_line(&f)));
    }

    let _ = write!(o, "<h2>Audit excerpt</h2><p>{}</p>", esc(&chain_line(r)));
    for note in &r.notes {
        let _ = write!(o, "<p class=\"bad\">Note: {}</p>", esc(note));
    }
    let _ = write!(
        o,
        "<table><tr><th>#</th><th>Time</th><th>Actor</th><th>Action</th><th>Entity</th><th>Reason or detail</th></tr>"
    );
    for a in &r.audit {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.seq,
            a.at.format("%Y-%m-%d %H:%M:%S UTC"),
            esc(&a.actor),
            esc(&a.action),
            esc(&a.entity),
            esc(&gist(a))
        );
    }
    let _ = writeln!(o, "</table></body></html>");
    o
}

/// One check as an SVG line chart over the rollout's time: its values, the threshold as a dashed line,
/// and each tick's verdict as a mark whose shape says it (circle: pass or quiet, cross: fail or fired,
/// ring on the axis: no value), so that colour is never the only cue.
fn chart(x: &Series, start: u64, end: Option<u64>) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 180.0, 64.0, 12.0, 10.0, 26.0);
    let t0 = start as f64;
    let t1 = end.or_else(|| x.points.last().map(|d| d.at)).unwrap_or(start) as f64;
    let t1 = if t1 > t0 { t1 } else { t0 + 1.0 };
    let values: Vec<f64> = x.values().chain(x.bound).collect();
    let (mut lo, mut hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
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
    let mut o = format!(
        "<svg role=\"img\" aria-label=\"{} {} over time against {}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(&x.kind),
        esc(&x.name),
        esc(&x.threshold)
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            o,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eaeef2\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
            w - right,
            left - 6.0,
            py(v) + 4.0,
            number(v),
            y = py(v)
        );
    }
    for (t, anchor) in [(t0, "start"), (t1, "end")] {
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#57606a\">{}</text>",
            px(t),
            h - 8.0,
            when(t as u64)
        );
    }
    if let Some(b) = x.bound {
        let _ = write!(
            o,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#a40e26\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#a40e26\">threshold {}</text>",
            w - right,
            w - right - 4.0,
            py(b) - 4.0,
            esc(&x.threshold),
            y = py(b)
        );
    }
    let path: Vec<String> =
        x.points.iter().filter_map(|d| d.value.map(|v| format!("{:.1},{:.1}", px(d.at as f64), py(v)))).collect();
    if path.len() > 1 {
        let _ = write!(
            o,
            "<polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    // At most ~300 marks: a long rollout's ticks would otherwise be an ink blot.
    let step = (x.points.len() / 300).max(1);
    for d in x.points.iter().step_by(step) {
        let cx = px(d.at as f64);
        match (d.value, d.verdict()) {
            (None, _) | (_, Verdict::Inconclusive) => {
                let _ = write!(
                    o,
                    "<circle cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"none\" stroke=\"#57606a\"/>",
                    h - bottom
                );
            }
            (Some(v), Verdict::Fail | Verdict::Fired) => {
                let cy = py(v);
                let _ = write!(
                    o,
                    "<path d=\"M{:.1} {:.1}l7 7m0 -7l-7 7\" stroke=\"#a40e26\" stroke-width=\"2\"/>",
                    cx - 3.5,
                    cy - 3.5
                );
            }
            (Some(v), _) => {
                let _ = write!(o, "<circle cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#116329\"/>", py(v));
            }
        }
    }
    o + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_and_squeeze() {
        assert_eq!(sparkline(&[0.0, 1.0], 8), "▁█");
        assert_eq!(sparkline(&[1.0; 100], 10).chars().count(), 10);
        assert_eq!(sparkline(&[], 10), "no values");
    }
}
