//! The command source and the exec action with real processes.

use std::collections::BTreeMap;

use sluice_engine::Measurement;
use sluice_sources::{MeasureContext, Plugins, Registry};

fn plan(yaml: &str) -> sluice_plan::Plan {
    let plan = format!("name: t\nflag: f\nphases: [{{percent: 5}}]\ngates:\n  - {yaml}\n");
    sluice_plan::load("t.yaml", &plan, None).unwrap().0
}

/// Measures the plan's one gate through the registry, as the controller does.
async fn measure(plan: &sluice_plan::Plan, values: &BTreeMap<String, String>) -> Measurement {
    let registry = Registry::new(&sluice_sources::Config::default());
    let cx = MeasureContext::outside_a_rollout(plan, values, 0);
    registry.measure(&plan.gates[0].value, &cx).await
}

#[tokio::test]
async fn the_last_number_printed_or_the_exit_status_is_the_value() {
    let values = BTreeMap::from([("flag".to_string(), "awf".to_string())]);
    let c = plan(
        r#"{name: n, command: [sh, -c, "echo measuring {{flag}}; echo 0.25"], value_from: last_number, below: 1}"#,
    );
    assert_eq!(measure(&c, &values).await, Measurement::Value(0.25));
    let c = plan(r#"{name: n, command: [sh, -c, "exit 3"], value_from: exit_status, below: 1}"#);
    assert_eq!(measure(&c, &values).await, Measurement::Value(3.0));
    let c = plan(r#"{name: n, command: [sh, -c, "echo no number"], value_from: last_number, below: 1}"#);
    assert!(matches!(measure(&c, &values).await, Measurement::Error(e) if e.contains("printed no number")));
    let c = plan(r#"{name: n, command: [/no/such/program], below: 1}"#);
    assert!(matches!(measure(&c, &values).await, Measurement::Error(e) if e.contains("cannot run")));
}

#[tokio::test]
async fn exec_actions_report_success_failure_and_their_key() {
    let values = BTreeMap::new();
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let ok = sluice_sources::actions::exec::run(
        &sh("echo key=$SLUICE_IDEMPOTENCY_KEY"),
        &values,
        std::time::Duration::from_secs(5),
        "r1:7:0",
    )
    .await;
    assert!(ok.ok() && ok.detail == "key=r1:7:0", "{ok:?}");
    let bad = sluice_sources::actions::exec::run(
        &sh("echo oops >&2; exit 2"),
        &values,
        std::time::Duration::from_secs(5),
        "k",
    )
    .await;
    assert!(!bad.ok() && bad.detail.contains("oops"), "{bad:?}");
    let slow = sluice_sources::actions::exec::run(
        &["sleep".into(), "5".into()],
        &values,
        std::time::Duration::from_millis(200),
        "k",
    )
    .await;
    assert!(!slow.ok() && slow.detail.contains("longer than"), "{slow:?}");
}

/// A shell command printing 1 MiB of `fill` to stream `to` (1 stdout, 2 stderr), then a newline.
fn flood(fill: char, to: u8) -> String {
    format!("head -c 1048576 /dev/zero | tr '\\0' {fill} >&{to}; echo >&{to}")
}

#[tokio::test]
async fn the_last_number_comes_from_the_real_end_of_a_megabyte() {
    // The whole output must be read, or the child blocks on a full pipe and the check times out; and the
    // value is the number at its end, not one in the first few KiB.
    let c = plan(
        r#"{name: n, command: [sh, -c, "echo 7; head -c 1048576 /dev/zero | tr '\\0' x; echo; echo 0.42"], value_from: last_number, below: 1}"#,
    );
    let started = std::time::Instant::now();
    assert_eq!(measure(&c, &BTreeMap::new()).await, Measurement::Value(0.42));
    // A blocked pipe would end in the check's timeout (an error, not 0.42); the bound is only a backstop,
    // wide enough for a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_number_cut_by_the_kept_window_is_not_the_value() {
    // Only the last 64 KiB are kept: a number whose start fell out of them is no number at all.
    // Here the window starts inside `123456789`: `56789` is what is left of it, and not the value.
    let c = plan(
        r#"{name: n, command: [sh, -c, "head -c 10000 /dev/zero | tr '\\0' x; echo; printf 123456789; head -c 65531 /dev/zero | tr '\\0' ' '"], value_from: last_number, below: 1}"#,
    );
    let m = measure(&c, &BTreeMap::new()).await;
    assert!(matches!(&m, Measurement::Error(e) if e.contains("printed no number")), "{m:?}");
}

/// Runs `sh -c script` as an exec action with a generous timeout: how long it took, and its outcome.
async fn exec(script: String) -> (std::time::Duration, sluice_sources::ActionOutcome) {
    let argv = vec!["sh".to_string(), "-c".to_string(), script];
    let started = std::time::Instant::now();
    let done =
        sluice_sources::actions::exec::run(&argv, &BTreeMap::new(), std::time::Duration::from_secs(30), "k").await;
    (started.elapsed(), done)
}

/// The last 200 bytes of `text`, to show what a long detail ends with.
fn end_of(text: &str) -> &str {
    &text[text.len().saturating_sub(200)..]
}

#[tokio::test]
async fn an_exec_printing_megabytes_to_both_streams_finishes_with_the_end_of_its_output() {
    let (took, done) = exec(format!("{}; {}; echo out-end", flood('e', 2), flood('o', 1))).await;
    // A blocked pipe would hold it to the 30 s timeout.
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    assert!(done.ok(), "{:.200}", done.detail);
    assert!(done.detail.ends_with("\nout-end"), "{:?}", end_of(&done.detail));
    assert!(done.detail.contains("bytes omitted"), "the cut is said");
    // The first 4 KiB and the last 64 KiB, and a line between them.
    assert!(done.detail.len() <= 4096 + 65536 + 100, "{} bytes", done.detail.len());
}

#[tokio::test]
async fn a_failed_exec_says_its_status_and_the_end_of_its_errors() {
    let (took, done) = exec(format!("{}; {}; echo the-real-reason >&2; exit 3", flood('o', 1), flood('e', 2))).await;
    // A blocked pipe would hold it to the 30 s timeout.
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    assert!(!done.ok());
    assert!(done.detail.starts_with("exit status: 3: eee"), "{:.200}", done.detail);
    assert!(done.detail.ends_with("\nthe-real-reason"), "{:?}", end_of(&done.detail));
    assert!(done.detail.len() <= 4096 + 65536 + 100, "{} bytes", done.detail.len());
}

#[tokio::test]
async fn a_check_obeys_its_timeout_key() {
    let c = plan(r#"{name: n, command: [sleep, "5"], timeout: 1s, below: 1}"#);
    let started = std::time::Instant::now();
    let m = measure(&c, &BTreeMap::new()).await;
    assert!(matches!(&m, Measurement::Error(e) if e.contains("timeout of 1s")), "{m:?}");
    // `sleep 5` would have ended on its own by then.
    assert!(started.elapsed() < std::time::Duration::from_millis(4500), "took {:?}", started.elapsed());
}

/// Whether process `pid` still runs: it exists and is not a zombie waiting for its parent (in a container
/// the reaper of orphans may never come).
#[cfg(target_os = "linux")]
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_timed_out_command_leaves_no_process_behind() {
    // The shell, and what it started, are killed: a check that timed out must not keep working.
    let pids = std::env::temp_dir().join(format!("sluice-linger-{}", std::process::id()));
    let script = format!("echo $$ > {0}; sleep 30 & echo $! >> {0}; sleep 30 | cat; wait", pids.display());
    // 3 s: time enough, on a loaded machine, for the shell to write both pids before it is killed.
    let c = plan(&format!(r#"{{name: n, command: [sh, -c, "{script}"], timeout: 3s, below: 1}}"#));
    let m = measure(&c, &BTreeMap::new()).await;
    assert!(matches!(&m, Measurement::Error(e) if e.contains("timeout")), "{m:?}");
    let written = std::fs::read_to_string(&pids).unwrap();
    let _ = std::fs::remove_file(&pids);
    let pids: Vec<&str> = written.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // A killed orphan goes once its reaper collects it: allow a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(|p| running(p)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let left: Vec<&&str> = pids.iter().filter(|p| running(p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
}
