//! The write-ahead outbox: a committed transition's effects, each with the idempotency key it is carried
//! out under and the marks that say, after a crash, whether it may have run.

use serde::{Deserialize, Serialize};

use crate::Effect;

/// One effect of a committed transition, as stored with the rollout before anything runs.
///
/// ```
/// use sluice_engine::{Effect, OutboxItem};
/// let item = OutboxItem::new("r1:3:0", Effect::RestoreFlag);
/// assert!(!item.may_have_run_unfinished());
/// let json = serde_json::to_string(&item).unwrap();
/// assert_eq!(serde_json::from_str::<OutboxItem>(&json).unwrap(), item);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// `{rollout}:{transition}:{index}`: the same on every attempt, so a receiver can drop a repeat.
    pub key: String,
    /// What to do.
    pub effect: Effect,
    /// A non-idempotent action was about to run.
    #[serde(default)]
    pub started: bool,
    /// It finished.
    #[serde(default)]
    pub done: bool,
    /// It started and did not finish before a restart: a person must settle it.
    #[serde(default)]
    pub uncertain: bool,
    /// It ran and failed for good (a permanent error, or its retries used up), and why: its effect is not
    /// what the plan meant, so a person must settle it (retry it, or accept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl OutboxItem {
    /// An effect not yet carried out.
    pub fn new(key: impl Into<String>, effect: Effect) -> OutboxItem {
        OutboxItem { key: key.into(), effect, started: false, done: false, uncertain: false, failed: None }
    }

    /// It waits for a person: interrupted while running (`uncertain`) or failed for good (`failed`).
    pub fn waits_for_settling(&self) -> bool {
        self.uncertain || (self.failed.is_some() && !self.done)
    }

    /// A non-idempotent action that started and never finished: running it again could do it twice.
    pub fn may_have_run_unfinished(&self) -> bool {
        self.started && !self.done && !self.effect.is_idempotent()
    }
}

/// Splits a transition's effects into the outbox (keyed `{id}:{transition}:{i}`) and what it tells people.
///
/// ```
/// use sluice_engine::{outbox, Effect, Event};
/// let event = Event { at: 0, kind: "rolled_back".into(), phase: 0, percent: 0, reason: "errors".into() };
/// let (items, events) = outbox("r1", 4, vec![Effect::RestoreFlag, Effect::Notify(event.clone())]);
/// assert_eq!(items[0].key, "r1:4:0");
/// assert_eq!(events, vec![event]);
/// ```
pub fn outbox(id: &str, transition: usize, effects: Vec<Effect>) -> (Vec<OutboxItem>, Vec<crate::Event>) {
    let mut items = Vec::new();
    let mut events = Vec::new();
    for (i, effect) in effects.into_iter().enumerate() {
        match effect {
            Effect::Notify(event) => events.push(event),
            effect => items.push(OutboxItem::new(format!("{id}:{transition}:{i}"), effect)),
        }
    }
    (items, events)
}
