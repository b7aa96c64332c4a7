//! The `slack` notifier: one message per event to a Slack-compatible incoming webhook (Slack, Mattermost,
//! Rocket.Chat): what happened in a headline that says it in words (never only a colour), the measured
//! values against their thresholds, and links to the rollout's page and to resume or roll back when the
//! server knows its public address (`--public-url`), with the CLI commands beside them.
//!
//! ```yaml
//! notify:
//!   - slack: { url_env: SLUICE_SECRET_SLACK_WEBHOOK_URL }
//!     on: [paused, rolled_back, completed]
//! ```

use sluice_plan::model::Location;
use sluice_plan::Report;

use crate::{Notification, Notifier, Secrets};

/// The Slack-compatible notifier.
pub struct Slack {
    http: reqwest::Client,
    secrets: Secrets,
    public_url: Option<String>,
}

impl Slack {
    /// Built from the server's configuration.
    pub fn new(config: &crate::Config) -> Slack {
        Slack {
            http: super::client(),
            secrets: Secrets::new(config.secrets_dir.clone()),
            public_url: config.public_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
        }
    }
}

/// The message's text (Slack `mrkdwn`).
///
/// ```
/// let e = sluice_engine::Event { at: 0, kind: "rolled_back".into(), phase: 1, percent: 10, reason: "trigger `errors` fired".into() };
/// let n = sluice_sources::Notification { id: "r1:e3".into(), rollout: "r1".into(), plan: "p".into(), flag: "f".into(), event: e,
///     status: "rolled_back".into(), phases: 3, paused_because: None, decide_by: None, default: None, uncertain: false,
///     checks: vec![sluice_engine::CheckDecision { at: 0, check: "errors".into(), kind: sluice_engine::CheckKind::Trigger, value: Some(0.042),
///         threshold: sluice_engine::Threshold::Above { limit: 0.02 }, outcome: sluice_engine::Outcome::Holds, note: None, run: 1, needed: 1,
///         dry_run: false, interval: None }] };
/// let text = sluice_sources::notifiers::slack::text(&n, Some("https://sluice.example.com"));
/// assert!(text.starts_with("*ROLLED BACK*"));
/// assert!(text.contains("errors (trigger): 0.042 against &gt; 0.02"), "{text}");
/// assert!(text.contains("<https://sluice.example.com/rollouts/r1|"));
/// ```
pub fn text(n: &Notification, public_url: Option<&str>) -> String {
    // Slack reads `<…>` as a link and `&` as an entity: what Sluice did not write is escaped.
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let e = &n.event;
    let headline = e.kind.replace('_', " ").to_uppercase();
    let mut out =
        format!("*{headline}* {} (flag `{}`) at phase {}, {}%: {}", n.plan, n.flag, e.phase + 1, e.percent, e.reason);
    if let (Some(by), Some(default)) = (n.decide_by, &n.default) {
        out.push_str(&format!("\nIf nobody decides by {}, it will {default}.", super::rfc3339(by)));
    }
    if n.uncertain {
        out.push_str("\nAn action's outcome is unknown: check whether it ran, then `settle` it.");
    }
    for c in &n.checks {
        let value = c.value.map_or_else(|| "no value".to_string(), |v| v.to_string());
        let note = c.note.as_deref().map(|n| format!(" ({})", esc(n))).unwrap_or_default();
        out.push_str(&format!(
            "\n• {} ({}): {value} against {} — {}{note}",
            esc(&c.check),
            c.kind.as_str(),
            esc(&c.threshold.to_string()),
            c.outcome.as_str(),
        ));
    }
    let live = !matches!(n.status.as_str(), "completed" | "rolled_back" | "aborted");
    if let Some(base) = public_url {
        out.push_str(&format!("\n<{base}/rollouts/{}|Open the rollout>", n.rollout));
        if live {
            out.push_str(&format!(
                " · <{base}/rollouts/{id}#resume|Resume> · <{base}/rollouts/{id}#rollback|Roll back>",
                id = n.rollout
            ));
        }
    }
    if live {
        out.push_str(&format!(
            "\n`sluice rollout resume {id} --reason …` · `sluice rollout rollback {id} --reason …`",
            id = n.rollout
        ));
    }
    out
}

#[async_trait::async_trait]
impl Notifier for Slack {
    fn kind(&self) -> Option<&'static str> {
        Some("slack")
    }

    fn hint(&self) -> &'static str {
        "slack: {url_env: …}"
    }

    fn check_config(&self, notifier: &sluice_plan::model::Notifier, at: Location, report: &mut Report<'_>) {
        super::Endpoint::check(notifier, "slack", at, report)
    }

    async fn notify(&self, target: Option<&sluice_plan::model::Notifier>, n: &Notification) -> Result<(), crate::Failure> {
        let target = target.ok_or("not a slack notifier")?;
        let endpoint = &super::Endpoint::of(target, "slack")?;
        let text = text(n, self.public_url.as_deref());
        let body = serde_json::to_vec(&serde_json::json!({ "text": text })).map_err(|e| crate::Failure::permanent(e.to_string()))?;
        super::deliver(&self.http, super::call(&self.secrets, endpoint, "", body, &n.id)).await
    }
}
