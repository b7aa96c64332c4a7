//! What people may do to a flag while a rollout drives it, and what the Alertmanager receiver answers, over
//! real HTTP on loopback.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_store::Store;
use support::server::Server;

const PLAN: &str =
    "name: ramp\nflag: f\nanalysis: { interval: 1m }\nphases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n";

async fn start() -> Server {
    Server::start(0, Default::default()).await
}

impl Server {
    /// Flag `f` and a running rollout of it (at 10%).
    async fn rollout(&self) -> String {
        let (s, v) = self.call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 0}}))).await;
        assert!(s.is_success(), "{v}");
        let (s, v) = self.call(Method::POST, "/api/v1/rollouts", Some(json!({"plan": PLAN}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["data"]["id"].as_str().unwrap().to_string()
    }
}

/// A manual ramp or variant edit of a flag a rollout drives is refused with 409 naming the rollout (and
/// audited), unless forced with a reason; overrides and the kill switch stay allowed, and the kill switch
/// pauses the rollout at once and keeps `resume` refused while pulled.
#[tokio::test]
async fn a_driven_flag_refuses_ramp_edits_but_not_the_kill_switch_or_overrides() {
    let s = start().await;
    let id = s.rollout().await;

    let (status, v) = s.call(Method::POST, "/api/v1/flags/f/ramp", Some(json!({"percent": 80}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "driven");
    assert!(v["message"].as_str().unwrap().contains(&id), "{v}");
    let refusals = sluice_store::AuditFilter { action_prefix: Some("flag.refused".into()), ..Default::default() };
    assert_eq!(s.store.audit(&refusals).await.unwrap().len(), 1, "the refusal is audited");
    let (status, v) = s.call(Method::PUT, "/api/v1/flags/f", Some(json!({"ramp": {"percent": 90}}))).await;
    assert_eq!((status, v["error"].as_str()), (StatusCode::CONFLICT, Some("driven")), "{v}");
    let (status, v) = s
        .call(Method::POST, "/api/v1/import/flags", Some(json!({"flags": [{"key": "f", "ramp": {"percent": 5}}]})))
        .await;
    assert_eq!((status, v["error"].as_str()), (StatusCode::CONFLICT, Some("driven")), "{v}");
    assert_eq!(
        s.store.audit(&refusals).await.unwrap().len(),
        3,
        "the ramp edit, the PUT and the import refused, each audited"
    );

    // Forcing needs a reason, and the audit log says it was forced.
    let (status, v) = s.call(Method::POST, "/api/v1/flags/f/ramp?force=true", Some(json!({"percent": 20}))).await;
    assert_eq!((status, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("reason")), "{v}");
    let (status, v) =
        s.call(Method::POST, "/api/v1/flags/f/ramp?force=true&reason=hotfix", Some(json!({"percent": 20}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["audit"][0]["reason"].as_str().unwrap().contains("forced"), "{v}");

    // Overrides stay allowed.
    let pin = json!({"field": "userId", "value": "u-1", "action": "enable"});
    assert_eq!(s.call(Method::POST, "/api/v1/flags/f/overrides", Some(pin)).await.0, StatusCode::OK);

    // The kill switch: allowed, pauses the rollout, resume refused while pulled.
    let (status, v) = s.call(Method::POST, "/api/v1/flags/f/disable?reason=incident", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, r) = s.call(Method::GET, &format!("/api/v1/rollouts/{id}"), None).await;
    assert_eq!(r["data"]["status"]["state"], "paused", "{r}");
    assert!(r["data"]["status"]["reason"].as_str().unwrap().contains("kill switch"), "{r}");
    let (status, v) =
        s.call(Method::POST, &format!("/api/v1/rollouts/{id}/resume"), Some(json!({"reason": "go"}))).await;
    assert_eq!((status, v["error"].as_str()), (StatusCode::CONFLICT, Some("kill_switch")), "{v}");
    // A rollback restores the ramp and leaves the flag disabled.
    let (status, _) =
        s.call(Method::POST, &format!("/api/v1/rollouts/{id}/rollback"), Some(json!({"reason": "abandon"}))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, f) = s.call(Method::GET, "/api/v1/flags/f", None).await;
    assert_eq!((f["data"]["enabled"].as_bool(), f["data"]["ramp"]["percent"].as_u64()), (Some(false), Some(0)), "{f}");
    assert_eq!(f["data"]["overrides"].as_array().unwrap().len(), 1);
}

/// A signal that fails is answered with 503 so that Alertmanager sends it again, and audited; alerts for
/// no rollout are ignored with a reason, not an error.
#[tokio::test]
async fn alertmanager_is_told_to_retry_a_signal_that_failed() {
    let s = start().await;
    let id = s.rollout().await;
    // The rollout waits for a person to settle an interrupted action: every command but settle is refused.
    let mut record = s.store.rollout(&id).await.unwrap().unwrap();
    let mut item = sluice_engine::OutboxItem::new(
        format!("{id}:9:0"),
        sluice_engine::Effect::Run { action: "rollback.actions[0]".parse().unwrap(), idempotent: false },
    );
    item.uncertain = true;
    record.outbox = vec![item];
    s.store
        .save_rollout(&sluice_store::RolloutSave {
            actor: "test",
            id: &id,
            state: &record.state,
            outbox: &record.outbox,
            events: &[],
            notifications: &[],
            decisions: None,
        })
        .await
        .unwrap();
    let alert = |labels: Value| json!({"alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": "5xx up"}}]});
    let (status, v) = s
        .call(Method::POST, "/api/v1/alertmanager", Some(alert(json!({"alertname": "HighErrors", "sluice_flag": "f"}))))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["failed"][0]["error"], "unsettled", "{v}");
    let failed =
        sluice_store::AuditFilter { action_prefix: Some("rollout.signal_failed".into()), ..Default::default() };
    assert_eq!(s.store.audit(&failed).await.unwrap().len(), 1);

    let (status, v) = s
        .call(
            Method::POST,
            "/api/v1/alertmanager",
            Some(alert(json!({"alertname": "Other", "sluice_rollout": "nope"}))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["ignored"][0]["why"].as_str().unwrap().contains("no rollout"), "{v}");
}
