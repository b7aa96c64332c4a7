//! Refused attempts in the audit log, coalesced: a caller refused again and again (a viewer's script
//! retrying a rollback, an Alertmanager posting with a viewer token) writes one event per minute per kind
//! of refusal of one target, not one per attempt. The next event recorded says how many were left out before it, so
//! the log still counts every refusal; `/metrics` counts them too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_store::{Store, StoreError};

/// How long one recorded refusal stands for the same caller's same refusal after it.
const WINDOW: Duration = Duration::from_secs(60);

/// Who was refused what, on which target: (actor, action, entity).
type Refused = (String, String, String);

/// The refusals recorded and left out, per (actor, action, entity): a refusal of another target is
/// recorded (what was tried on which rollout matters), and only existing targets get this far.
#[derive(Debug, Default)]
pub struct Refusals {
    /// (actor, action, entity) → when the last one was recorded, and how many were left out since.
    last: Mutex<HashMap<Refused, (Option<Instant>, u64)>>,
    recorded: AtomicU64,
    coalesced: AtomicU64,
}

impl Refusals {
    /// Records a refusal of `action` on `entity` to `actor` — or, within a minute of the last one recorded
    /// for the same actor, action and entity, counts it for the next.
    pub async fn record(
        &self,
        store: &dyn Store,
        actor: &str,
        action: &str,
        entity: &str,
        mut detail: Value,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let left_out = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.len() > 10_000 {
                last.retain(|_, (at, n)| at.is_some_and(|at| now.duration_since(at) < WINDOW) || *n > 0);
            }
            // `None` rather than `now - WINDOW`: an Instant may not go back a minute on a fresh boot.
            let entry = last.entry((actor.to_string(), action.to_string(), entity.to_string())).or_insert((None, 0));
            if entry.0.is_some_and(|at| now.duration_since(at) < WINDOW) {
                entry.1 += 1;
                self.coalesced.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let left_out = entry.1;
            *entry = (Some(now), 0);
            left_out
        };
        if left_out > 0 {
            if let Value::Object(map) = &mut detail {
                map.insert("refused_before_unrecorded".into(), Value::from(left_out));
            }
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
        store.record_event(actor, action, entity, detail, reason).await.map(|_| ())
    }

    /// Refusals written to the audit log, and those counted into a later event instead.
    pub fn counts(&self) -> (u64, u64) {
        (self.recorded.load(Ordering::Relaxed), self.coalesced.load(Ordering::Relaxed))
    }
}
