//! `sluice demo`: the main job on the embedded defaults, in about a minute. A server on a temporary
//! SQLite store, a synthetic service in the same process whose simulated users get their variants through
//! OFREP (the real evaluation path, sticky buckets) and report every request's outcome through
//! `POST /api/v1/metrics` (the real ingestion path), and two rollouts side by side judged by the built-in
//! metrics: a good canary promoted 1 → 10 → 50 → 100% and completed after a bake its triggers watch (at
//! 100% against the control of the 50% phase), and a bad one whose errors rise once it serves 10% of
//! users, caught by its canary-vs-control trigger and rolled back.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_engine::{CheckDecision, CheckKind, Verdict};
use sluice_store::{Decided, Role, Store};

use crate::cli::DemoArgs;
use crate::client::CliError;

const USERS: usize = 3000;
/// Requests the synthetic service serves a second.
const REQUESTS_PER_SECOND: usize = 4000;
const GOOD: &str = "new-checkout";
const BAD: &str = "new-search";
/// Slower than its control but not failing: a soft trigger pauses it and asks a person.
const SLOW: &str = "new-pricing";
/// The soft trigger of the slow canary: it pauses, and a person has this long to resume or roll back in
/// the dashboard before the plan's default (roll back) applies.
const SOFT_TRIGGER: &str = "  - { name: p95-latency-soft, metric: latency_p95, window: 10s, above: 120, for: 2s, severity: soft, decide_within: 20s, default: rollback, min_samples: 50 }\n";

fn plan(name: &str, flag: &str, more_triggers: &str) -> String {
    format!(
        r#"name: {name}
flag: {flag}
analysis: {{ interval: 1s, alpha: 0.05 }}
phases:
  - {{ percent: 1, hold: 4s }}
  - {{ percent: 10, hold: 6s }}
  - {{ percent: 50, hold: 6s }}
  - {{ percent: 100 }}
bake: 6s
gates:
  - {{ name: errors-vs-control, metric: error_rate, compare: control, max_increase: 0.02, min_samples: 50 }}
  - {{ name: p95-latency-ms, metric: latency_p95, window: 10s, below: 250, min_samples: 50 }}
triggers:
  - {{ name: errors-worse-than-control, metric: error_rate, compare: control, max_increase: 0, severity: hard, min_samples: 50 }}
{more_triggers}"#
    )
}

/// The synthetic service: each user's variant of each flag as OFREP last served it.
#[derive(Default)]
struct Service {
    /// (flag, user) → (variant, reason).
    served: Mutex<BTreeMap<(String, usize), (String, String)>>,
}

impl Service {
    /// Asks OFREP (bulk) for every user's variants, 16 requests at a time: what an SDK's OFREP provider
    /// does when told the flags changed.
    async fn evaluate(&self, http: &reqwest::Client, url: &str, sdk: &str) {
        use futures_util::StreamExt;
        let answers = futures_util::stream::iter(0..USERS)
            .map(|user| async move {
                let answer = http
                    .post(format!("{url}/ofrep/v1/evaluate/flags"))
                    .bearer_auth(sdk)
                    .json(&json!({"context": {"targetingKey": format!("user-{user}")}}))
                    .send()
                    .await
                    .ok()?;
                Some((user, answer.json::<Value>().await.ok()?))
            })
            .buffer_unordered(16);
        let answers: Vec<Option<(usize, Value)>> = answers.collect().await;
        let mut served = self.served.lock();
        for (user, body) in answers.into_iter().flatten() {
            for f in body["flags"].as_array().into_iter().flatten() {
                if let (Some(key), Some(variant), Some(reason)) =
                    (f["key"].as_str(), f["variant"].as_str(), f["reason"].as_str())
                {
                    served.insert((key.to_string(), user), (variant.to_string(), reason.to_string()));
                }
            }
        }
    }

    /// A batch of request outcomes: 1% errors, except the bad canary's once it serves 10% of users.
    fn requests(&self, n: usize, rng: &mut fastrand::Rng) -> Value {
        let served = self.served.lock();
        let on_bad = (0..USERS).filter(|u| served.get(&(BAD.to_string(), *u)).is_some_and(|s| s.0 == "on")).count();
        // The bad canary's bug shows under load: once it serves about a tenth of the users.
        let overloaded = on_bad * 20 >= USERS;
        let mut observations = Vec::with_capacity(n);
        for _ in 0..n {
            let user = rng.usize(..USERS);
            for flag in [GOOD, BAD, SLOW] {
                let Some((variant, reason)) = served.get(&(flag.to_string(), user)) else { continue };
                let error_rate = if flag == BAD && variant == "on" && overloaded { 0.08 } else { 0.01 };
                let slower = match (flag, variant.as_str()) {
                    (SLOW, "on") => 60.0,
                    (_, "on") => 5.0,
                    _ => 0.0,
                };
                let latency = 40.0 + rng.f64() * 60.0 + slower;
                observations
                    .push(json!({"flag": flag, "variant": variant, "reason": reason, "key": format!("user-{user}"),
                    "ok": rng.f64() >= error_rate, "latency_ms": latency}));
            }
        }
        json!({ "observations": observations })
    }
}

pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
    let io = |e: sluice_store::StoreError| CliError(e.to_string());
    let store = Arc::new(
        sluice_store::SqliteStore::open(dir.join("sluice.db"))
            .await
            .map_err(|e| CliError(format!("cannot open a store in {}: {e}", dir.display())))?,
    );
    let (_, admin) = store.create_token("demo-admin", "admin", Role::Admin).await.map_err(io)?;
    let (_, sdk) = store.create_token("demo-service", "sdk", Role::Sdk).await.map_err(io)?;
    // Two environments, as every team has: the service's token (made first) belongs to production; staging
    // is where the flags were validated before.
    store.change_env("demo-admin", sluice_store::EnvChange::Create("staging".into()), None).await.map_err(io)?;
    let state = sluice_server::AppState::load(store.clone() as Arc<dyn Store>, sluice_server::Options::default())
        .await
        .map_err(io)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", args.listen)))?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| CliError(e.to_string()))?);
    // The production serving path: limits, JSON errors and the drain at the end, as `sluice serve` has.
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sluice_server::serving::serve(listener, state.clone(), async {
        let _ = serving_stopped.await;
    }));
    tokio::spawn(state.controller().clone().run());
    println!("Sluice demo: a server on {url} (a temporary store in {})", dir.display());
    println!("  watch it in the dashboard:  {url}/  (log in with the token {admin})");
    println!("  or from a shell:            export SLUICE_SERVER={url} SLUICE_TOKEN={admin}");
    println!("                              sluice rollout list; sluice rollout decisions bad-canary");
    println!("  the whole API, as OpenAPI 3.1: {url}/api/v1/openapi.json  (docs/api.md)");
    println!("  two environments: staging already serves every flag at 100% (validated there); the canaries");
    println!("  ramp production. The dashboard's Flags page shows both side by side; its switcher narrows.");
    println!("  slow-canary will pause on a soft trigger and wait 20 s for you to resume or roll it back");
    println!("  in the dashboard; if nobody decides, its plan's default (roll back) applies.");
    println!();

    let http = reqwest::Client::builder().no_proxy().build().map_err(|e| CliError(e.to_string()))?;
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{url}{path}")).bearer_auth(&admin).json(&body).send()
    };
    for (flag, env, percent) in [GOOD, BAD, SLOW].into_iter().flat_map(|f| [(f, "production", 0), (f, "staging", 100)])
    {
        let path = format!("/api/v1/flags/{flag}?env={env}");
        let r = call(reqwest::Method::PUT, &path, json!({"ramp": {"percent": percent}}))
            .await
            .map_err(|e| CliError(e.to_string()))?;
        if !r.status().is_success() {
            return Err(CliError(format!("setting flag {flag} in {env}: {}", r.text().await.unwrap_or_default())));
        }
    }
    let service = Arc::new(Service::default());
    service.evaluate(&http, &url, &sdk).await;
    let mut ids = Vec::new();
    for (name, flag, more) in [("good-canary", GOOD, ""), ("bad-canary", BAD, ""), ("slow-canary", SLOW, SOFT_TRIGGER)]
    {
        let r = call(reqwest::Method::POST, "/api/v1/rollouts?env=production", json!({"plan": plan(name, flag, more)}))
            .await
            .map_err(|e| CliError(e.to_string()))?;
        let v: Value = r.json().await.map_err(|e| CliError(e.to_string()))?;
        let id = v["data"]["id"].as_str().ok_or_else(|| CliError(format!("starting {name}: {v}")))?.to_string();
        ids.push((name, id));
    }

    // The service: re-evaluates its users all the time (as SDKs refetch on a change), and meanwhile
    // serves requests with the variants it has and reports them five times a second.
    let stop = Arc::new(AtomicBool::new(false));
    let refresh = {
        let (service, http, url, sdk, stop) = (service.clone(), http.clone(), url.clone(), sdk.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                service.evaluate(&http, &url, &sdk).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let traffic = {
        let (service, http, url, sdk, stop) = (service.clone(), http.clone(), url.clone(), sdk.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(42);
            while !stop.load(Ordering::SeqCst) {
                let tick = Instant::now();
                let batch = service.requests(REQUESTS_PER_SECOND / 5, &mut rng);
                // A refused or lost batch is lost, as an app's telemetry would be; the rollouts wait for data.
                let _ = http.post(format!("{url}/api/v1/metrics")).bearer_auth(&sdk).json(&batch).send().await;
                tokio::time::sleep(Duration::from_millis(200).saturating_sub(tick.elapsed())).await;
            }
        })
    };

    let began = Instant::now();
    let terminal = std::io::stdout().is_terminal();
    let mut last_lines: Vec<String> = Vec::new();
    let finals = loop {
        let mut lines = Vec::new();
        let mut done = true;
        let mut finals = Vec::new();
        for (name, id) in &ids {
            let summary = state.controller().summary(id).await.map_err(|e| CliError(e.to_string()))?;
            let decisions = store.decisions(id, 20).await.map_err(io)?;
            done &= summary.status.is_terminal();
            lines.push(progress(name, &summary, &decisions));
            finals.push((name.to_string(), summary, decisions));
        }
        if terminal {
            if !last_lines.is_empty() {
                print!("\x1b[{}A", last_lines.len());
            }
            for l in &lines {
                println!("\x1b[2K{l}");
            }
        } else {
            for (l, old) in lines.iter().zip(last_lines.iter().map(Some).chain(std::iter::repeat(None))) {
                if old != Some(l) {
                    println!("{l}");
                }
            }
        }
        let _ = std::io::stdout().flush();
        last_lines = lines;
        if done || began.elapsed() > Duration::from_secs(110) {
            break finals;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    println!();
    println!("Verdict:");
    let mut as_expected = true;
    for (name, summary, _) in &finals {
        let id = &ids.iter().find(|(n, _)| n == name).expect("a demo rollout").1;
        let decisions = store.decisions(id, 1000).await.map_err(io)?;
        println!("  {}", verdict(name, summary, &decisions));
        as_expected &= match (name.as_str(), &summary.status) {
            ("good-canary", sluice_engine::Status::Completed) => true,
            ("bad-canary", sluice_engine::Status::RolledBack { .. }) => true,
            // A person may have resumed it, or rolled it back, or left it to the default: it paused first.
            ("slow-canary", s) => s.is_terminal() && summary.history.iter().any(|e| e.kind == "paused"),
            _ => false,
        };
    }
    for env in ["production", "staging"] {
        let live = state.live_in(Some(env)).map_err(io)?;
        let snapshot = live.live().load();
        let percents: Vec<String> = [GOOD, BAD, SLOW]
            .iter()
            .filter_map(|key| snapshot.flags().iter().find(|f| f.key == *key))
            .map(|f| format!("{} {}%", f.key, f.ramp.percent))
            .collect();
        println!("  {env:<10} {}", percents.join(", "));
    }
    println!("  (a rollback in production leaves staging as it was: each environment has its own state)");
    println!("  every decision and change is in the audit log: sluice audit list; sluice audit verify");
    if args.keep_running {
        println!();
        println!("Still serving on {url} (Ctrl-C to stop).");
        let _ = tokio::signal::ctrl_c().await;
    }
    stop.store(true, Ordering::SeqCst);
    let _ = traffic.await;
    let _ = refresh.await;
    // Stopped as `sluice serve` stops on SIGTERM: no new connections, streams ended, requests finished,
    // the built-in metrics saved.
    let open = state.connections_open();
    let _ = stop_serving.send(());
    let drained = Instant::now();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(CliError(format!("serving: {e}"))),
        Err(e) => return Err(CliError(format!("serving: {e}"))),
    }
    state.save_metrics().await.map_err(io)?;
    println!(
        "Stopped as `sluice serve` stops on SIGTERM: {open} connection(s) drained in {} ms, the built-in metrics saved.",
        drained.elapsed().as_millis()
    );
    let _ = std::fs::remove_dir_all(&dir);
    if as_expected {
        Ok(())
    } else {
        Err(CliError("the demo did not end as it should: the good canary completed and the bad one rolled back".into()))
    }
}

/// The latest decision of each check.
fn latest(decisions: &[Decided]) -> BTreeMap<String, &CheckDecision> {
    decisions.iter().map(|d| (d.decision.check.clone(), &d.decision)).collect()
}

fn mark(d: &CheckDecision) -> &'static str {
    match d.verdict() {
        Verdict::Pass => "pass",
        Verdict::Fired => "FIRED",
        Verdict::Fail => "not yet",
        Verdict::Quiet => "quiet",
        Verdict::Inconclusive => "no data",
    }
}

fn progress(name: &str, s: &sluice_server::RolloutSummary, decisions: &[Decided]) -> String {
    let filled = (s.percent as usize * 20).div_ceil(100);
    let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled));
    let state = match &s.status {
        sluice_engine::Status::Running => format!("phase {}/{}", s.phase, s.phases),
        other => other.name().replace('_', " "),
    };
    let checks: Vec<String> = latest(decisions)
        .values()
        .map(|d| {
            let v = d.value.map_or_else(
                || d.note.as_deref().map_or("-".to_string(), |n| n.chars().take(40).collect()),
                |v| format!("{v:.4}"),
            );
            format!("{} {v} ({})", d.check, mark(d))
        })
        .collect();
    format!("{name:<12} {bar} {:>3}%  {state:<11} {}", s.percent, checks.join("  "))
}

fn verdict(name: &str, s: &sluice_server::RolloutSummary, decisions: &[Decided]) -> String {
    let line = match &s.status {
        sluice_engine::Status::Completed => {
            let gates: Vec<String> = latest(decisions)
                .values()
                .filter(|d| d.kind == CheckKind::Gate)
                .map(|d| format!("{} {:.4} ({})", d.check, d.value.unwrap_or(f64::NAN), d.threshold))
                .collect();
            // At 100% no control is served: the triggers compare with the last partial phase's control
            // and keep watching through the bake.
            let bake_from = s.history.iter().find(|e| e.kind == "baking").map_or(u64::MAX, |e| e.at);
            let watched: Vec<&CheckDecision> = decisions
                .iter()
                .map(|d| &d.decision)
                .filter(|d| d.kind == CheckKind::Trigger && d.at >= bake_from && d.value.is_some())
                .collect();
            let bake = match watched.last() {
                Some(last) => format!(
                    "; its triggers watched the bake at 100% ({} decisions, against the 50% phase's control: {} {:.4}, {})",
                    watched.len(),
                    last.check,
                    last.value.unwrap_or(f64::NAN),
                    last.verdict().as_str()
                ),
                None => "; no trigger had data during the bake".into(),
            };
            format!(
                "{name}: completed at 100% — promoted at each phase because its gates held: {}{bake}",
                gates.join("; ")
            )
        }
        sluice_engine::Status::RolledBack { reason } => {
            let fired = decisions.iter().map(|d| &d.decision).rev().find(|d| d.verdict() == Verdict::Fired);
            let why = fired.map_or(String::new(), |d| {
                format!(": {} = {:.4}, {}", d.check, d.value.unwrap_or(f64::NAN), d.threshold)
            });
            format!(
                "{name}: rolled back at {}% — {reason}{why}; the flag is back where it started",
                s.history.last().map_or(0, |e| e.percent)
            )
        }
        other => format!("{name}: {} (did not finish in time)", other.name()),
    };
    match s.history.iter().find(|e| e.kind == "paused") {
        Some(paused) => format!("{line}; it had paused first ({}) and waited for a person", paused.reason),
        None => line,
    }
}
