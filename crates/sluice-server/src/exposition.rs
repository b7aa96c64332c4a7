//! `GET /metrics`: Sluice itself in Prometheus' text format, for a viewer token (Prometheus'
//! `authorization: {credentials: TOKEN}`). Labels are bounded: one series per flag, per active rollout,
//! and per check of an active rollout. Read at scrape time from the live snapshot, the built-in metrics
//! and the store: nothing on the evaluation path.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sluice_engine::Outcome;
use sluice_flags::tally::Served;
use sluice_store::Role;

use crate::latency::{RouteTimes, BOUNDS, CLASS_NAMES};

use crate::AppState;

/// A label value, escaped as the text format wants it.
fn escaped(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
            return;
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escaped(v))).collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// Every rollout state, for the one-hot `sluice_rollout_status` family.
const STATES: &[&str] = &["pending", "running", "paused", "baking"];

/// `GET /metrics` (viewer): each family group from what it is read from — the live flags, the SDKs'
/// reports, the controller's activity, request times, the store's rollouts and decisions, the limits.
#[utoipa::path(get, path = "/metrics", tag = "server", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String), crate::openapi::ReadErrors))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = state.require(&headers, Role::Viewer) {
        return e.into_response();
    }
    let mut out = String::new();
    flags(&mut out, &state);
    // Kept in the store for good; only the flags that still exist are exported.
    let mut reported = Vec::new();
    for env in state.catalog.envs().iter() {
        let snapshot = env.live().load();
        for (flag, variant, n) in state.store.client_metrics(env.name()).await.unwrap_or_default() {
            if snapshot.contains(&flag) {
                reported.push((env.name().to_string(), flag, variant, n));
            }
        }
    }
    client_reports(&mut out, &reported);
    controller_activity(&mut out, state.controller.activity());
    request_times(&mut out, &state.request_times.read());
    let rollouts = match state.store.rollouts(true).await {
        Ok(r) => r,
        Err(e) => {
            let message = format!("# the store could not be read: {e}\n");
            return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
        }
    };
    let mut checks = Vec::new();
    for r in &rollouts {
        let recent = state.store.decisions(&r.id, 256).await.unwrap_or_default();
        let last = recent.iter().map(|d| d.decision.at).max();
        checks.extend(recent.into_iter().filter(|d| Some(d.decision.at) == last).map(|d| (r, d.decision)));
    }
    let dead = state.store.dead_notifications(None).await.unwrap_or_default();
    undelivered(&mut out, &dead);
    let all = state.store.rollouts(false).await.unwrap_or_default();
    failed_actions(&mut out, &all);
    rollout_states(&mut out, &rollouts);
    last_checks(&mut out, &checks);
    limits(&mut out, state.limit_counters, state.controller.refusal_counts());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

/// Each flag's state in each environment and what was served and observed for it, from the live snapshots.
fn flags(out: &mut String, state: &AppState) {
    let envs = state.catalog.envs();
    {
        let mut f =
            Family::new(out, "sluice_flag_enabled", "gauge", "Whether the flag is on (0: its kill switch is pulled).");
        for env in envs.iter() {
            for flag in env.live().load().flags() {
                let labels = [("env", env.name()), ("flag", flag.key.as_str())];
                f.sample("sluice_flag_enabled", &labels, f64::from(u8::from(flag.enabled)));
            }
        }
    }
    {
        let mut f = Family::new(out, "sluice_flag_percent", "gauge", "The percentage of the flag's ramp.");
        for env in envs.iter() {
            for flag in env.live().load().flags() {
                let labels = [("env", env.name()), ("flag", flag.key.as_str())];
                f.sample("sluice_flag_percent", &labels, f64::from(flag.ramp.percent));
            }
        }
    }
    {
        let mut f = Family::new(
            out,
            "sluice_builtin_observations_total",
            "counter",
            "Request outcomes applications reported for the flag (POST /api/v1/metrics) since the store began.",
        );
        for env in envs.iter() {
            for flag in env.live().load().flags() {
                let n = state.metrics.observed(&sluice_sources::metrics::key(env.name(), &flag.key)) as f64;
                f.sample("sluice_builtin_observations_total", &[("env", env.name()), ("flag", &flag.key)], n);
            }
        }
    }
    {
        let mut f = Family::new(
            out,
            "sluice_flag_evaluations_total",
            "counter",
            "OFREP answers served, by environment, flag and variant, since the process started.",
        );
        for env in envs.iter() {
            let snapshot = env.live().load();
            for (flag, served, n) in env.live().evaluations().counts().iter().filter(|(f, _, _)| snapshot.contains(f)) {
                if let Served::Variant(variant) = served {
                    let labels = [("env", env.name()), ("flag", flag), ("variant", variant)];
                    f.sample("sluice_flag_evaluations_total", &labels, *n as f64);
                }
            }
        }
        let mut f = Family::new(
            out,
            "sluice_flag_evaluation_errors_total",
            "counter",
            "OFREP evaluations answered with an error code, by environment and flag, since the process started.",
        );
        for env in envs.iter() {
            let snapshot = env.live().load();
            for (flag, served, n) in env.live().evaluations().counts().iter().filter(|(f, _, _)| snapshot.contains(f)) {
                if *served == Served::TargetingKeyMissing {
                    let labels = [("env", env.name()), ("flag", flag), ("code", "TARGETING_KEY_MISSING")];
                    f.sample("sluice_flag_evaluation_errors_total", &labels, *n as f64);
                }
            }
        }
    }
}

/// What Unleash SDKs reported (`POST /api/client/metrics`), kept in the store.
fn client_reports(out: &mut String, reported: &[(String, String, String, u64)]) {
    {
        let mut f = Family::new(
            out,
            "sluice_unleash_client_evaluations_total",
            "counter",
            "Evaluations Unleash SDKs reported (POST /api/client/metrics), by flag and whether it was on.",
        );
        for (env, flag, variant, n) in reported {
            let enabled = match variant.as_str() {
                "(enabled)" => "true",
                "(disabled)" => "false",
                _ => continue,
            };
            let labels = [("env", env.as_str()), ("flag", flag), ("enabled", enabled)];
            f.sample("sluice_unleash_client_evaluations_total", &labels, *n as f64);
        }
        let mut f = Family::new(
            out,
            "sluice_unleash_client_variants_total",
            "counter",
            "Variants Unleash SDKs reported serving, by flag and variant.",
        );
        for (env, flag, variant, n) in reported.iter().filter(|(_, _, v, _)| !v.starts_with('(')) {
            let labels = [("env", env.as_str()), ("flag", flag), ("variant", variant)];
            f.sample("sluice_unleash_client_variants_total", &labels, *n as f64);
        }
    }
}

/// Notifications given up and not sent again.
fn undelivered(out: &mut String, dead: &[sluice_store::QueuedNotification]) {
    {
        let mut f = Family::new(
            out,
            "sluice_notifications_undelivered",
            "gauge",
            "Notifications given up (a permanent failure, or too many attempts) and not sent again, by rollout and destination.",
        );
        let mut by: std::collections::BTreeMap<(&str, String), u64> = std::collections::BTreeMap::new();
        for n in dead {
            *by.entry((n.rollout_id.as_str(), n.destination.to_string())).or_default() += 1;
        }
        for ((rollout, destination), count) in by {
            f.sample(
                "sluice_notifications_undelivered",
                &[("rollout", rollout), ("destination", &destination)],
                count as f64,
            );
        }
    }
}

/// Actions that failed for good, waiting for a person, among every rollout.
fn failed_actions(out: &mut String, all: &[sluice_store::RolloutRecord]) {
    {
        let mut f = Family::new(
            out,
            "sluice_actions_failed_pending",
            "gauge",
            "Actions of a rollout that failed for good and wait for a person to settle them.",
        );
        for r in all.iter().filter(|r| r.outbox.iter().any(|i| i.failed.is_some() && !i.done)) {
            let n = r.outbox.iter().filter(|i| i.failed.is_some() && !i.done).count();
            f.sample(
                "sluice_actions_failed_pending",
                &[("rollout", &r.id), ("plan", &r.plan_name), ("flag", &r.flag)],
                n as f64,
            );
        }
    }
}

/// Where each active rollout is: percent, phase, state.
fn rollout_states(out: &mut String, rollouts: &[sluice_store::RolloutRecord]) {
    {
        let mut f = Family::new(
            out,
            "sluice_rollout_percent",
            "gauge",
            "The percentage an active rollout serves the ramped variant.",
        );
        for r in rollouts {
            let percent = sluice_controller::plan_of(r).map_or(0, |p| r.state.percent(&p));
            f.sample(
                "sluice_rollout_percent",
                &[("rollout", &r.id), ("plan", &r.plan_name), ("flag", &r.flag)],
                f64::from(percent),
            );
        }
    }
    {
        let mut f =
            Family::new(out, "sluice_rollout_phase", "gauge", "The current phase of an active rollout, from 1.");
        for r in rollouts {
            let phase = (r.state.phase + 1) as f64;
            f.sample("sluice_rollout_phase", &[("rollout", &r.id), ("plan", &r.plan_name), ("flag", &r.flag)], phase);
        }
    }
    {
        let mut f = Family::new(
            out,
            "sluice_rollout_status",
            "gauge",
            "1 for the state an active rollout is in, 0 for the others.",
        );
        for r in rollouts {
            for s in STATES {
                let on = r.state.status.name() == *s;
                f.sample(
                    "sluice_rollout_status",
                    &[("rollout", &r.id), ("plan", &r.plan_name), ("flag", &r.flag), ("status", s)],
                    f64::from(u8::from(on)),
                );
            }
        }
    }
}

/// Each check of an active rollout at its last tick: its value and whether it held.
fn last_checks(out: &mut String, checks: &[(&sluice_store::RolloutRecord, sluice_engine::CheckDecision)]) {
    {
        let mut f = Family::new(
            out,
            "sluice_check_value",
            "gauge",
            "The value each gate and trigger of an active rollout had at its last tick.",
        );
        for (r, d) in checks {
            if let Some(v) = d.value {
                let (check, kind) = (d.check.as_str(), d.kind.as_str());
                f.sample(
                    "sluice_check_value",
                    &[("rollout", &r.id), ("plan", &r.plan_name), ("flag", &r.flag), ("check", check), ("kind", kind)],
                    v,
                );
            }
        }
    }
    {
        let mut f = Family::new(
            out,
            "sluice_check_holds",
            "gauge",
            "Whether each gate and trigger of an active rollout held at its last tick (1), did not (0), or was inconclusive (-1).",
        );
        for (r, d) in checks {
            let (check, kind) = (d.check.as_str(), d.kind.as_str());
            let v = match d.outcome {
                Outcome::Holds => 1.0,
                Outcome::Clear => 0.0,
                Outcome::Inconclusive => -1.0,
            };
            f.sample(
                "sluice_check_holds",
                &[("rollout", &r.id), ("plan", &r.plan_name), ("flag", &r.flag), ("check", check), ("kind", kind)],
                v,
            );
        }
    }
}

/// What is open, and how often each limit was reached, since the process started.
fn limits(out: &mut String, c: &crate::limits::LimitCounters, (recorded, coalesced): (u64, u64)) {
    use std::sync::atomic::Ordering::Relaxed;
    let gauges: [(&str, &str, u64); 2] = [
        ("sluice_connections_open", "Connections open now.", c.connections_open.load(Relaxed)),
        ("sluice_streams_open", "Change streams (admin and OFREP events) open now.", c.streams_open.load(Relaxed)),
    ];
    for (name, help, v) in gauges {
        Family::new(out, name, "gauge", help).sample(name, &[], v as f64);
    }
    let mut f = Family::new(
        out,
        "sluice_limited_total",
        "counter",
        "Requests and connections refused by a limit (sluice serve --max-connections, --header-read-timeout, --idle-timeout, --max-streams-per-token, --max-anonymous-streams, --failed-logins-per-minute, --changes-per-minute), by limit.",
    );
    for (limit, v) in [
        ("connections", c.connections_refused.load(Relaxed)),
        ("timeouts", c.connections_timed_out.load(Relaxed)),
        ("streams", c.streams_refused.load(Relaxed)),
        ("logins", c.logins_limited.load(Relaxed)),
        ("changes", c.changes_limited.load(Relaxed)),
    ] {
        f.sample("sluice_limited_total", &[("limit", limit)], v as f64);
    }
    let mut f = Family::new(
        out,
        "sluice_refusals_total",
        "counter",
        "Refused attempts (a role or a rule said no), by whether the audit log has an event for each (recorded) or counted them into the next one (coalesced: one event a minute per caller and kind).",
    );
    f.sample("sluice_refusals_total", &[("audit", "recorded")], recorded as f64);
    f.sample("sluice_refusals_total", &[("audit", "coalesced")], coalesced as f64);
}

/// The controller's decisions, events, actions and notifications since the process started.
fn controller_activity(out: &mut String, activity: &sluice_controller::Activity) {
    let result = |ok: bool| if ok { "ok" } else { "failed" };
    let mut f = Family::new(
        out,
        "sluice_decisions_total",
        "counter",
        "Check decisions made at ticks, by kind (gate, trigger) and outcome (holds, clear, inconclusive).",
    );
    for ((kind, outcome), n) in activity.decisions() {
        f.sample("sluice_decisions_total", &[("kind", &kind), ("outcome", &outcome)], n as f64);
    }
    let mut f = Family::new(
        out,
        "sluice_rollout_events_total",
        "counter",
        "Rollout transitions (started, phase_advanced, paused, rolled_back, promoted, ...), by event.",
    );
    for (event, n) in activity.events() {
        f.sample("sluice_rollout_events_total", &[("event", &event)], n as f64);
    }
    let mut f = Family::new(
        out,
        "sluice_actions_total",
        "counter",
        "Actions carried out, by kind (exec, webhook, flag) and result (ok, failed).",
    );
    for ((kind, ok), n) in activity.actions() {
        f.sample("sluice_actions_total", &[("kind", &kind), ("result", result(ok))], n as f64);
    }
    let mut f = Family::new(
        out,
        "sluice_notifications_given_up_total",
        "counter",
        "Notifications given up since the process started (a permanent failure, or too many attempts), by notifier kind.",
    );
    for (kind, n) in activity.dead_letters() {
        f.sample("sluice_notifications_given_up_total", &[("kind", &kind)], n as f64);
    }
    let mut f = Family::new(
        out,
        "sluice_notifications_total",
        "counter",
        "Notification deliveries tried, by notifier (log, slack, webhook, alertmanager) and result (ok, failed).",
    );
    for ((notifier, ok), n) in activity.notifications() {
        f.sample("sluice_notifications_total", &[("notifier", &notifier), ("result", result(ok))], n as f64);
    }
}

/// The HTTP latency histogram and answer counts, by route.
fn request_times(out: &mut String, routes: &[RouteTimes]) {
    let name = "sluice_http_request_duration_seconds";
    let mut f = Family::new(out, name, "histogram", "Time to answer (to the response head), by method and route.");
    for r in routes {
        let labels = [("method", r.method.as_str()), ("route", &*r.route)];
        for (bound, n) in BOUNDS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).zip(&r.buckets) {
            let mut with_le = labels.to_vec();
            with_le.push(("le", &bound));
            f.sample(&format!("{name}_bucket"), &with_le, *n as f64);
        }
        f.sample(&format!("{name}_sum"), &labels, r.sum_seconds);
        f.sample(&format!("{name}_count"), &labels, r.buckets.last().copied().unwrap_or(0) as f64);
    }
    let mut f =
        Family::new(out, "sluice_http_requests_total", "counter", "Answers, by method, route and status class.");
    for r in routes {
        for (class, n) in CLASS_NAMES.iter().zip(r.classes) {
            if n > 0 {
                f.sample(
                    "sluice_http_requests_total",
                    &[("method", &r.method), ("route", &r.route), ("code", class)],
                    n as f64,
                );
            }
        }
    }
}
