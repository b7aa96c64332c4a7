//! The audit chain: each event's hash covers its fields and the previous event's hash, so that editing,
//! removing or reordering any record breaks every hash after it.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::stored::{self, Columns};
use crate::{AuditFilter, StoreError};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One append-only audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When it was committed.
    pub at: DateTime<Utc>,
    /// The authenticated principal (a token's name), never a free-text claim.
    pub actor: String,
    /// What happened, e.g. `flag.create`, `flag.update`, `segment.delete`.
    pub action: String,
    /// What it happened to, e.g. `flag:awf_bundle`.
    pub entity: String,
    /// The entity before (absent on creation).
    pub before: Option<Value>,
    /// The entity after (absent on deletion).
    pub after: Option<Value>,
    /// Why, as the actor said.
    pub reason: Option<String>,
    /// The previous event's hash, or [`GENESIS`].
    pub prev_hash: String,
    /// SHA-256 (hex) of this event's fields and `prev_hash`.
    pub hash: String,
    /// The environment it happened in; `None` for what belongs to none (tokens, leases) and for events
    /// written before environments existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl AuditEvent {
    /// The hash this event should carry, recomputed from its fields.
    ///
    /// ```
    /// use sluice_store::audit::{AuditEvent, GENESIS};
    /// let mut e = AuditEvent { seq: 1, at: chrono::Utc::now(), actor: "admin".into(), action: "flag.create".into(),
    ///     entity: "flag:x".into(), before: None, after: Some(serde_json::json!({"key": "x"})), reason: None,
    ///     prev_hash: GENESIS.into(), hash: String::new(), env: Some("staging".into()) };
    /// e.hash = e.computed_hash();
    /// assert_eq!(e.hash.len(), 64);
    /// ```
    pub fn computed_hash(&self) -> String {
        // A JSON array of the fields is an unambiguous encoding (no field can bleed into the next), and
        // serde_json writes object keys sorted, so the same event always gives the same bytes.
        let mut canonical = serde_json::json!([
            self.seq,
            self.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.actor,
            self.action,
            self.entity,
            self.before,
            self.after,
            self.reason,
            self.prev_hash,
        ]);
        // The environment is a tenth field only when there is one: an event written before environments
        // existed hashes as it did then, and one written since cannot have its environment changed.
        if let Some(env) = &self.env {
            canonical.as_array_mut().expect("an array").push(env.as_str().into());
        }
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        hex::encode(digest)
    }
}

/// The outcome of checking a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verification {
    /// Every record links to the one before and its hash matches its fields.
    Intact {
        /// Records checked.
        events: i64,
        /// The last record's hash ([`GENESIS`] when empty).
        head: String,
    },
    /// The first record that does not hold.
    Broken {
        /// Its sequence number.
        seq: i64,
        /// What is wrong with it.
        problem: String,
    },
    /// The chain holds, but the anchored head is not in it: the tail was rewritten consistently.
    HeadMissing {
        /// The anchored hash that was looked for.
        head: String,
        /// Records checked.
        events: i64,
    },
}

/// Checks a chain given in sequence order. With `anchored_head`, also requires that hash to be in the chain.
pub fn verify<'a>(events: impl IntoIterator<Item = &'a AuditEvent>, anchored_head: Option<&str>) -> Verification {
    let mut check = ChainCheck::new(anchored_head);
    for e in events {
        if let Err(broken) = check.push(e) {
            return broken;
        }
    }
    check.finish()
}

/// Checks a chain one record at a time, so that a long chain can be fetched and checked page by page
/// without holding all of it.
///
/// ```
/// use sluice_store::audit::{AuditEvent, ChainCheck, Verification, GENESIS};
/// let mut e = AuditEvent { seq: 1, at: chrono::Utc::now(), actor: "admin".into(), action: "flag.create".into(),
///     entity: "flag:x".into(), before: None, after: None, reason: None, prev_hash: GENESIS.into(),
///     hash: String::new(), env: None };
/// e.hash = e.computed_hash();
/// let mut check = ChainCheck::new(None);
/// check.push(&e).unwrap();
/// assert!(matches!(check.finish(), Verification::Intact { events: 1, .. }));
/// ```
#[derive(Debug, Clone)]
pub struct ChainCheck {
    prev: String,
    next_seq: i64,
    anchored_head: Option<String>,
    anchored_seen: bool,
}

impl ChainCheck {
    /// A check from the first record; with `anchored_head`, that hash must turn up in the chain.
    pub fn new(anchored_head: Option<&str>) -> Self {
        ChainCheck {
            prev: GENESIS.to_string(),
            next_seq: 1,
            anchored_seen: anchored_head.is_none() || anchored_head == Some(GENESIS),
            anchored_head: anchored_head.map(str::to_string),
        }
    }

    /// The sequence number of the last record checked (0 before the first): fetch the next page after it.
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// Checks the next record; `Err` names the first record that does not hold.
    pub fn push(&mut self, e: &AuditEvent) -> Result<(), Verification> {
        if e.seq != self.next_seq {
            return Err(Verification::Broken {
                seq: e.seq,
                problem: format!("expected sequence number {}", self.next_seq),
            });
        }
        if e.prev_hash != self.prev {
            return Err(Verification::Broken {
                seq: e.seq,
                problem: "prev_hash does not match the previous record's hash".into(),
            });
        }
        if e.computed_hash() != e.hash {
            return Err(Verification::Broken { seq: e.seq, problem: "hash does not match the record's fields".into() });
        }
        self.anchored_seen |= self.anchored_head.as_deref() == Some(e.hash.as_str());
        self.prev = e.hash.clone();
        self.next_seq += 1;
        Ok(())
    }

    /// The verdict once every record has been pushed.
    pub fn finish(self) -> Verification {
        let events = self.last_seq();
        if !self.anchored_seen {
            return Verification::HeadMissing { head: self.anchored_head.unwrap_or_default(), events };
        }
        Verification::Intact { events, head: self.prev }
    }
}

/// An event about to be appended: what happened, before its place in the chain is known. Every backend
/// links it the same way, so that a chain written by one verifies on any.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub(crate) at: DateTime<Utc>,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) entity: String,
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<Value>,
    pub(crate) reason: Option<String>,
    pub(crate) env: Option<String>,
}

impl NewEvent {
    /// The same event, with why.
    pub(crate) fn because(self, reason: impl Into<String>) -> Self {
        NewEvent { reason: Some(reason.into()), ..self }
    }

    /// The same event, in the environment `env`.
    pub(crate) fn in_env(self, env: &str) -> Self {
        NewEvent { env: Some(env.to_string()), ..self }
    }

    /// An event that records `after` with no `before`: a note about an entity rather than an edit of it.
    pub(crate) fn note(
        at: DateTime<Utc>,
        actor: &str,
        action: &str,
        entity: &str,
        after: Value,
        reason: Option<String>,
    ) -> Self {
        NewEvent {
            at,
            actor: actor.into(),
            action: action.into(),
            entity: entity.into(),
            before: None,
            after: Some(after),
            reason,
            env: None,
        }
    }

    /// The event as the record after `head`, the last record's (seq, hash); `None` when the chain is empty.
    pub(crate) fn link(self, head: Option<(i64, String)>) -> AuditEvent {
        let (seq, prev_hash) = match head {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS.to_string()),
        };
        let mut event = AuditEvent {
            seq,
            // Stored times keep microseconds, so the hash recomputed from the row equals the one computed here.
            at: self.at.trunc_subsecs(6),
            actor: self.actor,
            action: self.action,
            entity: self.entity,
            before: self.before,
            after: self.after,
            reason: self.reason,
            prev_hash,
            hash: String::new(),
            env: self.env,
        };
        event.hash = event.computed_hash();
        event
    }
}

/// An audit record as stored: times and JSON as text.
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    pub(crate) seq: i64,
    pub(crate) at: String,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) entity: String,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    pub(crate) env: Option<String>,
}

impl<'r, R: sqlx::Row + Columns<'r>> sqlx::FromRow<'r, R> for AuditRow {
    fn from_row(r: &'r R) -> Result<Self, sqlx::Error> {
        Ok(AuditRow {
            seq: r.int("seq")?,
            at: r.text("at")?,
            actor: r.text("actor")?,
            action: r.text("action")?,
            entity: r.text("entity")?,
            before: r.text_or_null("before")?,
            after: r.text_or_null("after")?,
            reason: r.text_or_null("reason")?,
            prev_hash: r.text("prev_hash")?,
            hash: r.text("hash")?,
            env: r.text_or_null("env")?,
        })
    }
}

impl AuditRow {
    /// The row that stores `e`.
    pub(crate) fn of(e: &AuditEvent) -> Self {
        AuditRow {
            seq: e.seq,
            at: stored::rfc3339(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            entity: e.entity.clone(),
            before: e.before.as_ref().map(Value::to_string),
            after: e.after.as_ref().map(Value::to_string),
            reason: e.reason.clone(),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
            env: e.env.clone(),
        }
    }

    /// The event it stores; `Corrupt` when a time or a JSON column does not parse.
    pub(crate) fn into_event(self) -> Result<AuditEvent, StoreError> {
        let seq = self.seq;
        let corrupt = |what: &str| StoreError::Corrupt { message: format!("audit record {seq}: {what}") };
        let json = |col: &str, text: Option<String>| -> Result<Option<Value>, StoreError> {
            text.map(|t| serde_json::from_str(&t).map_err(|_| corrupt(&format!("`{col}` is not JSON")))).transpose()
        };
        Ok(AuditEvent {
            seq,
            at: DateTime::parse_from_rfc3339(&self.at).map_err(|_| corrupt("`at` is not a time"))?.with_timezone(&Utc),
            actor: self.actor,
            action: self.action,
            entity: self.entity,
            before: json("before", self.before)?,
            after: json("after", self.after)?,
            reason: self.reason,
            prev_hash: self.prev_hash,
            hash: self.hash,
            env: self.env,
        })
    }
}

impl AuditFilter {
    /// How many events to return at the most.
    pub(crate) fn page_size(&self) -> i64 {
        if self.limit == 0 {
            100
        } else {
            i64::from(self.limit)
        }
    }
}
