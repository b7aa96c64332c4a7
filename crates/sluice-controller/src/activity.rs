//! What the controller has done since the process started, counted for `/metrics`: check decisions by kind
//! and outcome, transition events by kind, actions and notifications by kind and result. Labels are
//! bounded by the engine's and the plan model's vocabularies, never by rollout or plan names. Decisions and
//! events are counted after the store has taken the write (a refused commit is not counted); actions and
//! notifications when they have run, whatever happens to their record after.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Counters of the controller's work (none of it is on the evaluation path, so a mutex is cheap enough).
///
/// ```
/// use sluice_controller::Activity;
/// let activity = Activity::default();
/// activity.action("webhook", false);
/// activity.action("webhook", false);
/// assert_eq!(activity.actions(), vec![(("webhook".to_string(), false), 2)]);
/// ```
#[derive(Debug, Default)]
pub struct Activity {
    decisions: Mutex<BTreeMap<(String, String), u64>>,
    events: Mutex<BTreeMap<String, u64>>,
    actions: Mutex<BTreeMap<(String, bool), u64>>,
    notifications: Mutex<BTreeMap<(String, bool), u64>>,
    dead_letters: Mutex<BTreeMap<String, u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
}

fn read<K: Ord + Clone>(map: &Mutex<BTreeMap<K, u64>>) -> Vec<(K, u64)> {
    map.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
}

impl Activity {
    /// One check decision of a tick: `kind` is `gate`, `trigger`, …; `outcome` is `holds`, `clear` or
    /// `inconclusive`.
    pub fn decision(&self, kind: &str, outcome: &str) {
        bump(&self.decisions, (kind.to_string(), outcome.to_string()));
    }

    /// One transition event (`phase_advanced`, `rolled_back`, …).
    pub fn event(&self, kind: &str) {
        bump(&self.events, kind.to_string());
    }

    /// One action carried out: its kind (`exec`, `webhook`, `flag`) and whether it succeeded.
    pub fn action(&self, kind: &str, ok: bool) {
        bump(&self.actions, (kind.to_string(), ok));
    }

    /// One notification delivery tried: its notifier kind (`log`, `slack`, …) and whether it was delivered.
    pub fn notification(&self, kind: &str, ok: bool) {
        bump(&self.notifications, (kind.to_string(), ok));
    }

    /// One notification given up (dead), by notifier kind.
    pub fn dead_letter(&self, kind: &str) {
        bump(&self.dead_letters, kind.to_string());
    }

    /// Notifications given up so far, by notifier kind.
    pub fn dead_letters(&self) -> Vec<(String, u64)> {
        read(&self.dead_letters)
    }

    /// Decisions so far, by (kind, outcome).
    pub fn decisions(&self) -> Vec<((String, String), u64)> {
        read(&self.decisions)
    }

    /// Transition events so far, by kind.
    pub fn events(&self) -> Vec<(String, u64)> {
        read(&self.events)
    }

    /// Actions so far, by (kind, succeeded).
    pub fn actions(&self) -> Vec<((String, bool), u64)> {
        read(&self.actions)
    }

    /// Notification deliveries so far, by (notifier kind, delivered).
    pub fn notifications(&self) -> Vec<((String, bool), u64)> {
        read(&self.notifications)
    }
}
