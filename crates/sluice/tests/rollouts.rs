//! Live rollouts on the wall clock, through the real binary: started from the CLI, measured by real
//! commands, decided by people and alerts, rolled back to where they started. Plans tick every second;
//! every wait is bounded.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{serve, serve_with, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Polls the rollout's status until `done` says so, for at most 20 seconds.
fn wait_for(s: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    common::wait_for(s, id, what, Duration::from_secs(20), done)
}

fn ofrep(s: &Server, token: &str, flag: &str, user: &str) -> Value {
    reqwest::blocking::Client::new()
        .post(format!("{}/ofrep/v1/evaluate/flags/{flag}", s.url))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": user}}))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn plan(dir: &Path, hold: &str, bake: &str) -> String {
    format!(
        r#"name: awf-live
flag: awf_bundle
analysis: {{ interval: 1s }}
gates:
  - {{ name: error-rate, command: [cat, "{d}/err"], value_from: last_number, below: 0.01 }}
phases:
  - {{ percent: 10, hold: {hold}, approvals: [qa-signoff] }}
  - {{ percent: 100 }}
{bake}
triggers:
  - {{ name: errors-hard, command: [cat, "{d}/bad"], value_from: last_number, above: 0.5, for: 2s, severity: hard }}
  - {{ name: latency-soft, source: signal, severity: soft, decide_within: 1h, default: rollback }}
rollback:
  flags_off: [kms_signer]
  clear_overrides: true
  actions:
    - {{ exec: [sh, -c, "echo undo $SLUICE_IDEMPOTENCY_KEY >> {d}/actions.log"] }}
"#,
        d = dir.display()
    )
}

fn setup(s: &Server) -> std::path::PathBuf {
    let dir = s.dir.path().to_path_buf();
    write(&dir.join("err"), "0.001\n");
    write(&dir.join("bad"), "0\n");
    s.cli(&["flag", "create", "awf_bundle", "--percent", "0"]);
    s.cli(&["flag", "create", "kms_signer", "--percent", "100"]);
    dir
}

#[test]
fn a_healthy_rollout_waits_for_its_approval_then_ramps_to_100() {
    let s = serve();
    let dir = setup(&s);
    let sdk = s.token("app", "sdk");
    let operator = s.token("deployer", "operator");
    let admin_item = "approvals: [qa-signoff, { item: security-review, role: admin }]";
    write(&dir.join("plan.yaml"), &plan(&dir, "1s", "").replace("approvals: [qa-signoff]", admin_item));
    let started: Value = s.start_rollout(&dir.join("plan.yaml"));
    let id = started["id"].as_str().unwrap().to_string();
    assert_eq!(started["percent"], 10);

    // Without the approvals the phase stays, however long the hold has passed: wait for a tick after the
    // hold whose gate passed, which would have promoted the rollout had the items been signed.
    let held = wait_for(&s, &id, "phase 1", |st| st["phase"] == 1);
    let hold_over = held["phase_started_ms"].as_u64().unwrap() + held["hold_ms"].as_u64().unwrap();
    common::wait_for_decisions(&s, &id, "passing gate after the hold", Duration::from_secs(20), |decided| {
        decided
            .iter()
            .any(|d| d["check"] == "error-rate" && d["outcome"] == "holds" && d["at"].as_u64() > Some(hold_over))
    });
    let status = wait_for(&s, &id, "phase 1", |st| st["phase"] == 1);
    assert_eq!(status["status"]["state"], "running");
    s.cli_with(Some(&operator), &["rollout", "approve", &id, "qa-signoff"]);
    // An item for admins only: an operator's signature is refused and audited.
    let refused = s.cli_with(Some(&operator), &["rollout", "approve", &id, "security-review"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("admin"));
    assert!(s.cli(&["audit", "list", "--action", "rollout.refused"]).contains("deployer"));
    let status = s.cli(&["rollout", "status", &id]);
    assert!(status.contains("[x] qa-signoff (deployer)") && status.contains("[ ] security-review (admin)"), "{status}");
    s.cli(&["rollout", "approve", &id, "security-review"]);
    let done = wait_for(&s, &id, "completion", |st| st["status"]["state"] == "completed");
    assert_eq!(done["percent"], 100);
    assert_eq!(ofrep(&s, &sdk, "awf_bundle", "anyone")["value"], true);

    let decisions: Value = serde_json::from_str(&s.cli(&["rollout", "decisions", &id, "-o", "json"])).unwrap();
    assert!(decisions
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["check"] == "error-rate" && d["outcome"] == "holds" && d["value"] == 0.001));
    let audit = s.cli(&["audit", "list", "--entity", &format!("rollout:{id}")]);
    for action in ["rollout.create", "rollout.started", "rollout.approved", "rollout.promoted", "rollout.completed"] {
        assert!(audit.contains(action), "{action} missing from:\n{audit}");
    }
}

#[test]
fn a_hard_trigger_restores_the_flag_then_runs_the_rollback_once() {
    let s = serve();
    let dir = setup(&s);
    let sdk = s.token("app", "sdk");
    s.cli(&["flag", "override", "awf_bundle", "--user", "vip", "--enable"]);
    write(&dir.join("plan.yaml"), &plan(&dir, "1h", "bake: 1h"));
    let started: Value = s.start_rollout(&dir.join("plan.yaml"));
    let id = started["id"].as_str().unwrap().to_string();

    // A second rollout of the same flag is refused, naming the first.
    let second = s.cli_with(Some(ADMIN_TOKEN), &["rollout", "start", dir.join("plan.yaml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && err.contains(&format!("`awf-live` ({id})")), "{err}");
    // Nor can its flag be deleted under it.
    let delete = s.cli_with(Some(ADMIN_TOKEN), &["flag", "delete", "awf_bundle"]);
    let err = String::from_utf8_lossy(&delete.stderr);
    assert!(!delete.status.success() && err.contains("active rollout") && err.contains(&id), "{err}");

    write(&dir.join("bad"), "1\n");
    // Rolled back, and its effects carried out: the state is committed before them.
    let rolled = wait_for(&s, &id, "rollback", |st| {
        st["status"]["state"] == "rolled_back" && st["pending"].as_array().is_none_or(|p| p.is_empty())
    });
    assert!(rolled["status"]["reason"].as_str().unwrap().contains("errors-hard"));
    // The flag is back exactly as it was, the other flag is off, the action ran once.
    assert_eq!(ofrep(&s, &sdk, "awf_bundle", "anyone")["value"], false);
    let flag: Value = serde_json::from_str(&s.cli(&["flag", "get", "awf_bundle", "-o", "json"])).unwrap();
    assert_eq!(flag["ramp"]["percent"], 0);
    assert!(flag.get("overrides").is_none_or(|o| o.as_array().unwrap().is_empty()), "overrides cleared: {flag}");
    let kms: Value = serde_json::from_str(&s.cli(&["flag", "get", "kms_signer", "-o", "json"])).unwrap();
    assert_eq!(kms["enabled"], false);
    let log = std::fs::read_to_string(dir.join("actions.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(log.starts_with(&format!("undo {id}:")), "the action got its idempotency key: {log}");
    assert!(s.cli(&["audit", "verify"]).starts_with("intact:"));
    let decisions: Value = serde_json::from_str(&s.cli(&["rollout", "decisions", &id, "-o", "json"])).unwrap();
    let firing =
        decisions.as_array().unwrap().iter().find(|d| d["action"] == "rolled_back").expect("the tick that rolled back");
    assert_eq!(
        (&firing["check"], &firing["outcome"], &firing["run"]),
        (&json!("errors-hard"), &json!("holds"), &json!(2))
    );
}

/// One rollout's slow hook (a migration that takes half a minute) holds up neither another rollout's
/// rollback nor people's commands on it.
#[test]
fn a_slow_hook_of_one_rollout_does_not_delay_another_rollback() {
    let s = serve();
    let dir = setup(&s);
    s.cli(&["flag", "create", "slow_flag", "--percent", "0"]);
    let slow = format!(
        r#"name: slow-migration
flag: slow_flag
analysis: {{ interval: 1s }}
phases:
  - {{ percent: 10, hold: 1s }}
  - {{ percent: 50, hooks: {{ before: [ {{ name: migrate, exec: [sh, -c, "touch {d}/migrating; exec sleep 30"] }} ] }} }}
"#,
        d = dir.display()
    );
    write(&dir.join("slow.yaml"), &slow);
    write(&dir.join("plan.yaml"), &plan(&dir, "1h", ""));
    let slow_id: Value = s.start_rollout(&dir.join("slow.yaml"));
    let started: Value = s.start_rollout(&dir.join("plan.yaml"));
    let id = started["id"].as_str().unwrap().to_string();

    common::wait_for_file(&dir.join("migrating"), "the slow hook never started");
    // While the migration runs: a command on the other rollout answers, and its hard trigger rolls it back
    // after its `for: 2s`, not after the migration.
    let fired = Instant::now();
    s.cli(&["rollout", "pause", &id, "--reason", "checking"]);
    s.cli(&["rollout", "resume", &id, "--reason", "checked"]);
    write(&dir.join("bad"), "1\n");
    wait_for(&s, &id, "rollback", |st| st["status"]["state"] == "rolled_back");
    let took = fired.elapsed();
    assert!(took < Duration::from_secs(15), "the rollback waited for the other rollout's hook: {took:?}");
    let slow: Value =
        serde_json::from_str(&s.cli(&["rollout", "status", slow_id["id"].as_str().unwrap(), "-o", "json"])).unwrap();
    // The slow rollout shows its hook under way, before the raise it guards; the flag is still at 10%.
    assert_eq!(slow["pending"][0]["what"], "phases[1].hooks.before[0] (migrate)", "{slow:#}");
    assert_eq!(slow["pending"][0]["state"], "under_way");
    assert_eq!(slow["pending"][1]["what"], "set the flag to 50%");
    let flag: Value = serde_json::from_str(&s.cli(&["flag", "get", "slow_flag", "-o", "json"])).unwrap();
    assert_eq!(flag["ramp"]["percent"], 10);
    let table = s.cli(&["rollout", "status", "slow-migration"]);
    assert!(table.contains("under way: phases[1].hooks.before[0] (migrate)"), "{table}");
}

#[test]
fn people_and_alerts_decide_and_roles_are_enforced() {
    let s = serve();
    let dir = setup(&s);
    let viewer = s.token("auditor", "viewer");
    write(&dir.join("plan.yaml"), &plan(&dir, "1h", ""));
    let started: Value = s.start_rollout(&dir.join("plan.yaml"));
    let id = started["id"].as_str().unwrap().to_string();

    // A viewer may look but not decide; the refusal is audited.
    let refused = s.cli_with(Some(&viewer), &["rollout", "pause", &id]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("operator"));
    assert!(s.cli(&["audit", "list", "--action", "rollout.refused"]).contains("auditor"));

    // An Alertmanager alert labelled for the rollout pauses it (soft) with the plan's rule for that trigger.
    let alert = json!({"alerts": [{"status": "firing", "labels": {"alertname": "latency-soft", "sluice_rollout": "awf-live", "severity": "warning"}, "annotations": {"summary": "p95 over 2s"}}]});
    let resp: Value = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/alertmanager", s.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&alert)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["signalled"][0]["hard"], false, "{resp}");
    // A viewer's token at the receiver is refused, and the refusal audited like any other decision.
    let refused = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/alertmanager", s.url))
        .bearer_auth(&viewer)
        .json(&alert)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(s.cli(&["audit", "list", "--entity", "rollout:alertmanager"]).contains("rollout.refused"));
    let paused = wait_for(&s, &id, "pause", |st| st["status"]["state"] == "paused");
    assert!(paused["status"]["decide_by"].is_u64(), "the plan's decide_within applies: {paused:#}");

    s.cli(&["rollout", "resume", &id, "--reason", "looked fine"]);
    wait_for(&s, &id, "resume", |st| st["status"]["state"] == "running");
    s.cli(&["rollout", "signal", &id, "pii-exposure", "--hard", "--reason", "scanner found PII"]);
    let done = wait_for(&s, &id, "rollback", |st| st["status"]["state"] == "rolled_back");
    assert!(done["status"]["reason"].as_str().unwrap().contains("pii-exposure"));
}

#[test]
fn a_plan_that_fails_its_check_or_needs_what_is_missing_cannot_start() {
    let s = serve();
    let dir = setup(&s);
    write(&dir.join("bad.yaml"), "name: x\nflag: awf_bundle\nphases:\n  - percent: 50\n  - percent: 10\n");
    let out = s.cli_with(Some(ADMIN_TOKEN), &["rollout", "start", dir.join("bad.yaml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.yaml:5:14") && err.contains("phases[1].percent"), "{err}");

    write(
        &dir.join("hook.yaml"),
        "name: x\nflag: awf_bundle\nphases: [{percent: 5}]\nrollback: { actions: [ { webhook: { url: 'http://127.0.0.1:9/undo', body: '{\"why\": {{reason}}}' } } ] }\n",
    );
    let out = s.cli_with(Some(ADMIN_TOKEN), &["rollout", "start", dir.join("hook.yaml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("rollback.actions[0].webhook.body") && err.contains("not JSON"),
        "a text value outside quotes is found before the start: {err}"
    );
    let list: Value = serde_json::from_str(&s.cli(&["rollout", "list", "-o", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0, "nothing half-started");
}

#[test]
fn a_failing_hook_keeps_the_percentage_and_resume_retries_it() {
    let s = serve();
    let dir = setup(&s);
    let d = dir.display();
    let plan = format!(
        r#"name: hooked
flag: awf_bundle
analysis: {{ interval: 1s }}
phases:
  - {{ percent: 10, hold: 1s }}
  - {{ percent: 50, hooks: {{ before: [ {{ name: migrate, exec: [sh, -c, "test -f {d}/ready && echo ran >> {d}/hook.log"] }} ] }} }}
"#
    );
    write(&dir.join("hooked.yaml"), &plan);
    let started: Value = s.start_rollout(&dir.join("hooked.yaml"));
    let id = started["id"].as_str().unwrap().to_string();
    let paused = wait_for(&s, &id, "the hook to fail", |st| st["status"]["state"] == "paused");
    assert!(paused["status"]["reason"].as_str().unwrap().contains("phases[1].hooks.before[0] failed"), "{paused:#}");
    assert_eq!((paused["phase"].as_u64(), paused["percent"].as_u64()), (Some(1), Some(10)), "stepped back to phase 1");
    let flag: Value = serde_json::from_str(&s.cli(&["flag", "get", "awf_bundle", "-o", "json"])).unwrap();
    assert_eq!(flag["ramp"]["percent"], 10, "the percentage was not raised past a failed hook");

    write(&dir.join("ready"), "");
    s.cli(&["rollout", "resume", &id, "--reason", "migration fixed"]);
    let done = wait_for(&s, &id, "completion", |st| st["status"]["state"] == "completed");
    assert_eq!(done["percent"], 50);
    assert_eq!(std::fs::read_to_string(dir.join("hook.log")).unwrap(), "ran\n", "the hook ran once, when it could");
}

/// A client that gives up halfway (here after 300 ms, during a one-second phase-0 hook) does not cancel
/// the start: the hook runs once, to its end, and the first percentage is set.
#[test]
fn a_client_that_goes_away_does_not_cut_a_start_short() {
    let s = serve();
    let dir = setup(&s);
    let plan = format!(
        r#"name: patient
flag: awf_bundle
analysis: {{ interval: 1h }}
phases:
  - {{ percent: 10, hooks: {{ before: [ {{ name: warm, exec: [sh, -c, "sleep 1; echo warmed >> {d}/hook.log"] }} ] }} }}
  - {{ percent: 100 }}
"#,
        d = dir.display()
    );
    let gave_up = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(format!("{}/api/v1/rollouts", s.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"plan": plan, "file": "patient.yaml"}))
        .send();
    assert!(gave_up.is_err_and(|e| e.is_timeout()), "the client was meant to give up first");
    let status = wait_for(&s, "patient", "the start to finish", |st| {
        st["pending"].as_array().is_some_and(|p| p.is_empty()) && st["status"]["state"] == "running"
    });
    assert_eq!(status["percent"], 10);
    let flag: Value = serde_json::from_str(&s.cli(&["flag", "get", "awf_bundle", "-o", "json"])).unwrap();
    assert_eq!(flag["ramp"]["percent"], 10);
    assert_eq!(std::fs::read_to_string(dir.join("hook.log")).unwrap(), "warmed\n");
}

/// A rollout's own triggers stay armed while its phase hook runs (a migration of half a minute here): a
/// hard trigger rolls it back without waiting for the hook, and commands that would not end the phase are
/// refused meanwhile rather than left waiting.
#[test]
fn a_hard_trigger_rolls_back_while_the_rollouts_own_hook_runs() {
    let s = serve();
    let dir = setup(&s);
    let sdk = s.token("app", "sdk");
    let plan = format!(
        r#"name: migrating
flag: awf_bundle
analysis: {{ interval: 1s }}
phases:
  - {{ percent: 10, hold: 1s }}
  - {{ percent: 50, hooks: {{ before: [ {{ name: migrate, exec: [sh, -c, "touch {d}/migrating; exec sleep 30"] }} ] }} }}
triggers:
  - {{ name: errors-hard, command: [cat, "{d}/bad"], value_from: last_number, above: 0.5, for: 2s, severity: hard }}
rollback:
  actions:
    - {{ exec: [sh, -c, "echo undo >> {d}/actions.log"] }}
"#,
        d = dir.display()
    );
    write(&dir.join("plan.yaml"), &plan);
    let started: Value = s.start_rollout(&dir.join("plan.yaml"));
    let id = started["id"].as_str().unwrap().to_string();
    common::wait_for_file(&dir.join("migrating"), "the hook never started");
    let paused = s.cli_with(Some(ADMIN_TOKEN), &["rollout", "pause", &id, "--reason", "look"]);
    let err = String::from_utf8_lossy(&paused.stderr);
    assert!(!paused.status.success() && err.contains("phase hook"), "{err}");

    let fired = Instant::now();
    write(&dir.join("bad"), "1\n");
    let rolled = wait_for(&s, &id, "rollback", |st| st["status"]["state"] == "rolled_back");
    assert!(fired.elapsed() < Duration::from_secs(15), "waited for the hook: {:?}", fired.elapsed());
    assert!(rolled["status"]["reason"].as_str().unwrap().contains("errors-hard"), "{rolled:#}");
    // The state is committed before its effects: wait (bounded) for the rollback action's mark.
    let done = Instant::now();
    while !std::fs::read_to_string(dir.join("actions.log")).is_ok_and(|l| !l.is_empty())
        && done.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let flag: Value = serde_json::from_str(&s.cli(&["flag", "get", "awf_bundle", "-o", "json"])).unwrap();
    assert_eq!(flag["ramp"]["percent"], 0, "restored as before the rollout, not raised after the hook");
    assert_eq!(ofrep(&s, &sdk, "awf_bundle", "anyone")["value"], false);
    assert_eq!(std::fs::read_to_string(dir.join("actions.log")).unwrap(), "undo\n");
}

/// `rollout watch` follows the rollout on the change stream: with a countdown refresh of an hour, it still
/// shows every tick and ends as soon as the rollout completes.
#[test]
fn watch_follows_the_change_stream_not_a_timer() {
    let s = serve();
    setup(&s);
    let file = s.dir.path().join("watched.yaml");
    write(&file, "name: watched\nflag: awf_bundle\nanalysis: { interval: 1s }\nphases: [ { percent: 10, hold: 2s }, { percent: 100 } ]\n");
    s.cli(&["rollout", "start", file.to_str().unwrap()]);
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["rollout", "watch", "watched", "--every", "3600"])
        .env("SLUICE_SERVER", &s.url)
        .env("SLUICE_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if began.elapsed() > Duration::from_secs(20) {
            let _ = watch.kill();
            panic!("watch did not end with the rollout: it waited for its timer");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let mut shown = String::new();
    std::io::Read::read_to_string(&mut watch.stdout.take().unwrap(), &mut shown).unwrap();
    assert!(shown.contains("completed"), "{shown}");
}

/// `kubectl rollout undo` as seeds 001 and 004 run it, against a fake `kubectl` first on the server's PATH
/// that records how it was called: the plan's arguments, working directory and environment, and the
/// effect's idempotency key; what it printed is kept in the action's record, which `rollout decisions`
/// lists.
#[test]
fn a_rollback_runs_kubectl_undo_with_the_plans_env_and_directory_and_decisions_show_it() {
    let fake = tempfile::tempdir().unwrap();
    let (bin, work, log) = (fake.path().join("bin"), fake.path().join("deploy"), fake.path().join("kubectl.log"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let kubectl = bin.join("kubectl");
    write(
        &kubectl,
        &format!(
            "#!/bin/sh\necho \"$(pwd) $KUBE_CONTEXT $SLUICE_IDEMPOTENCY_KEY $*\" >> {}\necho 'deployment.apps/recoveryos rolled back'\n",
            log.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let s = serve_with(&[("PATH", path)]);
    let dir = setup(&s);
    let work = work.canonicalize().unwrap();
    write(
        &dir.join("plan.yaml"),
        &format!(
            r#"name: elite
flag: awf_bundle
analysis: {{ interval: 1s }}
phases: [ {{ percent: 10, hold: 1h }}, {{ percent: 100 }} ]
triggers:
  - {{ name: pii-exposure, source: signal, severity: hard }}
rollback:
  actions:
    - name: undo the deployment
      exec: [kubectl, rollout, undo, deployment/recoveryos]
      dir: "{}"
      env: {{ KUBE_CONTEXT: "prod-{{{{flag}}}}" }}
"#,
            work.display()
        ),
    );
    let started: Value = s.start_rollout(&dir.join("plan.yaml"));
    let id = started["id"].as_str().unwrap().to_string();
    s.cli(&["rollout", "signal", &id, "pii-exposure", "--hard", "--reason", "the PII scanner fired"]);
    wait_for(&s, &id, "rollback", |st| {
        st["status"]["state"] == "rolled_back" && st["pending"].as_array().is_none_or(|p| p.is_empty())
    });
    let called = std::fs::read_to_string(&log).unwrap();
    let line = called.lines().next().unwrap();
    assert_eq!(called.lines().count(), 1, "{called}");
    assert!(line.starts_with(&format!("{} prod-awf_bundle {id}:", work.display())), "{line}");
    assert!(line.ends_with("rollout undo deployment/recoveryos"), "{line}");
    let decisions = s.cli(&["rollout", "decisions", &id]);
    assert!(decisions.contains("rollback.actions[0] (undo the deployment)"), "{decisions}");
    assert!(decisions.contains("deployment.apps/recoveryos rolled back"), "{decisions}");
}
