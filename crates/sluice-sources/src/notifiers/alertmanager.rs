//! The `alertmanager` notifier: posts a rollout's conditions to Alertmanager's `/api/v2/alerts` —
//! `SluiceRolloutPaused` (warning) while it waits for a person, `SluiceActionUncertain` (critical) while
//! an action's outcome is unknown, `SluiceRolloutRolledBack` (critical) for an hour after a rollback —
//! labelled `alertname`, `rollout`, `flag`, `plan`, `phase`, `severity`. Each post is the whole picture:
//! the conditions that hold fire (ending 3 minutes on, so the controller re-posts them every minute while
//! they last and Alertmanager resolves them by itself if Sluice stops), and every other alert this
//! rollout could have raised is resolved (`endsAt` now). So a delivery is idempotent and order does not
//! matter. Labels never include `sluice_rollout` or `sluice_flag`, the labels Sluice's own alert receiver
//! reads, so an alert Sluice raises cannot come back to it as a signal.
//!
//! ```yaml
//! notify:
//!   - alertmanager: { url: http://alertmanager.monitoring:9093 }
//!     on: [paused, kill_switch, source_down, hook_failed, uncertain, resumed, rolled_back, completed, aborted]
//! ```

use sluice_plan::model::Location;
use sluice_plan::Report;

use crate::{Notification, Notifier, Secrets};

/// How long a firing alert lasts unless posted again: three missed minutes.
pub const FIRING_FOR_MS: u64 = 3 * 60_000;
/// How long the rollback alert fires after the rollback.
pub const ROLLED_BACK_FOR_MS: u64 = 60 * 60_000;
/// The alerts a rollout can raise, with their severity.
pub const ALERTS: &[(&str, &str)] = &[
    ("SluiceRolloutPaused", "warning"),
    ("SluiceActionUncertain", "critical"),
    ("SluiceRolloutRolledBack", "critical"),
];

/// The Alertmanager notifier.
pub struct Alertmanager {
    http: reqwest::Client,
    secrets: Secrets,
    public_url: Option<String>,
}

impl Alertmanager {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Alertmanager {
        Alertmanager {
            http: super::client(),
            secrets: Secrets::new(config.secrets_dir.clone()),
            public_url: config.public_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
        }
    }
}

/// The alerts to post for `n` at `now` (ms): the conditions that hold, firing; every other alert of the
/// rollout, at every phase, resolved. `phases` is how many phases the plan has.
///
/// ```
/// let e = sluice_engine::Event { at: 1_000, kind: "paused".into(), phase: 1, percent: 10, reason: "trigger `latency` fired".into() };
/// let n = sluice_sources::Notification { id: "r1:e3".into(), rollout: "r1".into(), plan: "p".into(), flag: "f".into(), event: e,
///     status: "paused".into(), phases: 3, paused_because: Some("trigger `latency` fired".into()), decide_by: None, default: None, uncertain: false, checks: vec![] };
/// let alerts = sluice_sources::notifiers::alertmanager::alerts(&n, 3, 2_000, None);
/// let firing: Vec<_> = alerts.iter().filter(|a| a["endsAt"] != "1970-01-01T00:00:02Z").collect();
/// assert_eq!(firing.len(), 1);
/// assert_eq!(firing[0]["labels"]["alertname"], "SluiceRolloutPaused");
/// assert_eq!(firing[0]["labels"]["phase"], "2");
/// assert!(alerts.iter().all(|a| a["labels"].get("sluice_rollout").is_none()));
/// ```
pub fn alerts(n: &Notification, phases: usize, now: u64, public_url: Option<&str>) -> Vec<serde_json::Value> {
    let e = &n.event;
    let mut firing: Vec<(&str, String, u64)> = Vec::new();
    if n.status == "paused" {
        let why = n.paused_because.clone().unwrap_or_else(|| e.reason.clone());
        firing.push(("SluiceRolloutPaused", why, now + FIRING_FOR_MS));
    }
    if n.uncertain {
        firing.push((
            "SluiceActionUncertain",
            "an action's outcome is unknown: `settle` it".into(),
            now + FIRING_FOR_MS,
        ));
    }
    if n.status == "rolled_back" && e.kind == "rolled_back" && now < e.at + ROLLED_BACK_FOR_MS {
        firing.push((
            "SluiceRolloutRolledBack",
            e.reason.clone(),
            (now + FIRING_FOR_MS).min(e.at + ROLLED_BACK_FOR_MS),
        ));
    }
    let mut out = Vec::new();
    for (name, severity) in ALERTS {
        let lit = firing.iter().find(|(f, _, _)| f == name);
        for phase in 0..phases.max(e.phase + 1) {
            let labels = serde_json::json!({
                "alertname": name,
                "rollout": n.rollout,
                "flag": n.flag,
                "plan": n.plan,
                "phase": (phase + 1).to_string(),
                "severity": severity,
            });
            let (summary, ends) = match lit {
                Some((_, why, until)) if phase == e.phase => (why.clone(), *until),
                _ => (e.reason.clone(), now),
            };
            let mut alert = serde_json::json!({
                "labels": labels,
                "annotations": {
                    "summary": format!("{} ({}): {}", n.plan, n.flag, summary),
                    "description": format!("{} at phase {}, {}%: {}", e.kind, e.phase + 1, e.percent, e.reason),
                },
                "startsAt": super::rfc3339(e.at.min(now)),
                "endsAt": super::rfc3339(ends),
            });
            if let Some(base) = public_url {
                alert["generatorURL"] = serde_json::json!(format!("{base}/rollouts/{}", n.rollout));
            }
            out.push(alert);
        }
    }
    out
}

#[async_trait::async_trait]
impl Notifier for Alertmanager {
    fn kind(&self) -> Option<&'static str> {
        Some("alertmanager")
    }

    fn hint(&self) -> &'static str {
        "alertmanager: {url_env: …}"
    }

    /// Its alerts end three minutes after their last post: the controller posts them again every minute.
    fn refreshed(&self) -> bool {
        true
    }

    fn check_config(&self, notifier: &sluice_plan::model::Notifier, at: Location, report: &mut Report<'_>) {
        super::Endpoint::check(notifier, "alertmanager", at, report)
    }

    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), crate::Failure> {
        let target = target.ok_or("not an alertmanager notifier")?;
        let endpoint = &super::Endpoint::of(target, "alertmanager")?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let body = alerts(n, n.phases, now, self.public_url.as_deref());
        let body = serde_json::to_vec(&body).map_err(|e| crate::Failure::permanent(e.to_string()))?;
        super::deliver(&self.http, super::call(&self.secrets, endpoint, "/api/v2/alerts", body, &n.id)).await
    }
}
