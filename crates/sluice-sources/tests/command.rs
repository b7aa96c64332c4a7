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
    let cx = MeasureContext { rollout_id: "r", plan, started_at: 0, now: 0, values };
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
    assert!(ok.ok && ok.detail == "key=r1:7:0", "{ok:?}");
    let bad = sluice_sources::actions::exec::run(
        &sh("echo oops >&2; exit 2"),
        &values,
        std::time::Duration::from_secs(5),
        "k",
    )
    .await;
    assert!(!bad.ok && bad.detail.contains("oops"), "{bad:?}");
    let slow = sluice_sources::actions::exec::run(
        &["sleep".into(), "5".into()],
        &values,
        std::time::Duration::from_millis(200),
        "k",
    )
    .await;
    assert!(!slow.ok && slow.detail.contains("longer than"), "{slow:?}");
}
