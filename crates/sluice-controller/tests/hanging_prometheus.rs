//! A hanging Prometheus delays only the rollouts that ask it: one rollout's checks go to an endpoint that
//! accepts connections and never answers (a stub: a real Prometheus will not hang on demand), another's
//! to a real Prometheus. Over a dozen one-second ticks, the second rollout's ticks start on time: all but
//! one under 100 ms late (one outlier is the machine, not Sluice: a loaded CI box stalls a process now and
//! then), and none by a second (a tick waiting on the stuck endpoint would be 2–3 s late).

use std::time::Duration;

mod common;
#[path = "../../sluice-sources/tests/support/prometheus.rs"]
mod support;

fn plan(flag: &str, prometheus: &str, checks: usize) -> String {
    let gates: String =
        (0..checks).map(|i| format!("  - {{ name: g{i}, query: 'vector({i})', below: 100, timeout: 3s }}\n")).collect();
    format!(
        "name: {flag}\nflag: {flag}\nanalysis: {{ interval: 1s, prometheus: {{ url: '{prometheus}' }} }}\n\
         phases: [ {{ percent: 10, hold: 1h }}, {{ percent: 100 }} ]\ngates:\n{gates}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_prometheus_does_not_delay_another_rollouts_ticks() {
    let Some(prometheus) = tokio::task::block_in_place(support::idle) else { return };
    let stuck = support::hanging().await;
    let (_dir, store, controller) = common::running_with_flags(&["stuck", "fine"]).await;
    let admin = common::admin();
    // Six checks on four slots: the stuck endpoint's slots stay full the whole time.
    let stuck_id = controller.start(&admin, None, "stuck.yaml", &plan("stuck", &stuck, 6)).await.unwrap().id;
    let fine_id = controller.start(&admin, None, "fine.yaml", &plan("fine", &prometheus.url, 5)).await.unwrap().id;
    tokio::time::sleep(Duration::from_secs(14)).await;

    let decisions = store.decisions(&fine_id, 10_000).await.unwrap();
    let mut ticks: Vec<u64> = decisions.iter().map(|d| d.decision.at).collect();
    ticks.sort_unstable();
    ticks.dedup();
    assert!(ticks.len() >= 11, "the healthy rollout ticked {} times in 14 s", ticks.len());
    let mut late: Vec<u64> = ticks.windows(2).map(|w| (w[1] - w[0]).saturating_sub(1000)).collect();
    late.sort_unstable();
    assert!(late.iter().filter(|&&l| l >= 100).count() <= 1, "more than one tick 100 ms late or more: {late:?}");
    assert!(late.iter().all(|&l| l < 1000), "a tick a second late or more: {late:?}");
    let values: Vec<&sluice_engine::CheckDecision> =
        decisions.iter().map(|d| &d.decision).filter(|d| d.check == "g3").collect();
    assert!(
        !values.is_empty() && values.iter().all(|d| d.value == Some(3.0)),
        "the healthy rollout measured real values"
    );

    // The stuck one's checks ended in source errors at their timeout, and paused it after three.
    let stuck_decisions = store.decisions(&stuck_id, 10_000).await.unwrap();
    let text = serde_json::to_string(&stuck_decisions).unwrap();
    assert!(text.contains("within the timeout of 3s"), "{text}");
    let state = store.rollout(&stuck_id).await.unwrap().unwrap().state;
    assert!(matches!(state.status, sluice_engine::Status::Paused { .. }), "{:?}", state.status);
}
