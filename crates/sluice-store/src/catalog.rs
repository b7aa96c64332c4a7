//! The catalog's edit rules, the same for every backend: how a [`Change`] alters the flags and segments, which
//! changes are refused (a missing entity, a segment still in use, an invalid segment or catalog), and what each
//! change records in the audit log. A backend loads the catalog, asks for a [`Batch`], and writes its rows.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_flags::{Flag, SegmentDef, Snapshot};

use crate::audit::NewEvent;
use crate::stored::{parse_json, to_json};
use crate::{Change, StoreError};

/// The flags and segments, as stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    flags: Vec<Flag>,
    segments: Vec<SegmentDef>,
}

/// A row to write for one change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RowEdit {
    /// Insert or replace the flag row `key`.
    PutFlag { key: String, body: String },
    /// Delete the flag row `key`.
    DeleteFlag { key: String },
    /// Insert or replace the segment row `id`.
    PutSegment { id: i64, name: String, body: String },
    /// Delete the segment row `name`.
    DeleteSegment { name: String },
}

/// What a batch of changes writes: its rows in order, one audit event per change, and the catalog after it.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) edits: Vec<RowEdit>,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) snapshot: Snapshot,
}

/// What one change does: its row, and the audit event's (action, entity, before, after).
type Staged = (RowEdit, &'static str, String, Option<Value>, Option<Value>);

impl Catalog {
    /// The catalog from its rows: flags as (key, body), segments as (name, body) in id order.
    pub(crate) fn from_rows(flags: Vec<(String, String)>, segments: Vec<(String, String)>) -> Result<Self, StoreError> {
        Ok(Catalog {
            flags: flags
                .iter()
                .map(|(key, body)| parse_json(body, || format!("flag `{key}`")))
                .collect::<Result<_, _>>()?,
            segments: segments
                .iter()
                .map(|(name, body)| parse_json(body, || format!("segment `{name}`")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The stored catalog compiled; it was valid when written, so an error means the rows were edited.
    pub(crate) fn into_snapshot(self) -> Result<Snapshot, StoreError> {
        Snapshot::from_flags(self.flags, self.segments).map_err(|e| StoreError::Corrupt { message: e.to_string() })
    }

    /// Applies `changes` in order, as `actor` at `at`. The catalog is validated once, after the last change, so
    /// that a batch may, say, create a segment and the flags using it; any refusal refuses the whole batch.
    pub(crate) fn apply(
        mut self,
        changes: Vec<Change>,
        actor: &str,
        reason: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<Batch, StoreError> {
        let mut edits = Vec::with_capacity(changes.len());
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            let (edit, action, entity, before, after) = self.stage(change)?;
            edits.push(edit);
            events.push(NewEvent {
                at,
                actor: actor.into(),
                action: action.into(),
                entity,
                before,
                after,
                reason: reason.clone(),
            });
        }
        // The whole catalog must still compile: this is what readers will be served.
        let snapshot = Snapshot::from_flags(self.flags, self.segments).map_err(StoreError::Invalid)?;
        Ok(Batch { edits, events, snapshot })
    }

    /// Applies one change to the catalog in memory.
    fn stage(&mut self, change: Change) -> Result<Staged, StoreError> {
        let staged = match change {
            Change::PutFlag(flag) => {
                let entity = format!("flag:{}", flag.key);
                let after = to_json(&flag);
                let edit = RowEdit::PutFlag { key: flag.key.clone(), body: after.to_string() };
                match self.flags.iter_mut().find(|f| f.key == flag.key) {
                    Some(slot) => {
                        let before = to_json(slot);
                        *slot = flag;
                        (edit, "flag.update", entity, Some(before), Some(after))
                    }
                    None => {
                        sluice_flags::check_key(&flag.key).map_err(|message| StoreError::InvalidField {
                            entity: format!("flag `{}`", flag.key),
                            field: "key".into(),
                            message,
                        })?;
                        self.flags.push(flag);
                        (edit, "flag.create", entity, None, Some(after))
                    }
                }
            }
            Change::DeleteFlag(key) => {
                let entity = format!("flag:{key}");
                let Some(pos) = self.flags.iter().position(|f| f.key == key) else {
                    return Err(StoreError::NotFound { entity });
                };
                let before = to_json(&self.flags.remove(pos));
                (RowEdit::DeleteFlag { key }, "flag.delete", entity, Some(before), None)
            }
            Change::PutSegment(mut segment) => {
                let entity = format!("segment:{}", segment.name);
                let existing = self.segments.iter().position(|s| s.name == segment.name);
                if existing.is_none() {
                    sluice_flags::check_key(&segment.name).map_err(|message| StoreError::InvalidField {
                        entity: format!("segment `{}`", segment.name),
                        field: "name".into(),
                        message,
                    })?;
                }
                let before = existing.map(|i| to_json(&self.segments[i]));
                // A segment keeps its id for life: Unleash strategies refer to segments by id.
                segment.id = match existing {
                    Some(i) => self.segments[i].id,
                    None => self.segments.iter().map(|s| s.id).max().unwrap_or(0) + 1,
                };
                for (i, c) in segment.constraints.iter().enumerate() {
                    sluice_flags::validate_constraint(c).map_err(|(field, message)| StoreError::InvalidField {
                        entity: format!("segment `{}`", segment.name),
                        field: format!("constraints[{i}].{field}"),
                        message,
                    })?;
                }
                let after = to_json(&segment);
                let edit = RowEdit::PutSegment { id: segment.id, name: segment.name.clone(), body: after.to_string() };
                match existing {
                    Some(i) => self.segments[i] = segment,
                    None => self.segments.push(segment),
                }
                let action = if before.is_some() { "segment.update" } else { "segment.create" };
                (edit, action, entity, before, Some(after))
            }
            Change::DeleteSegment(name) => {
                let entity = format!("segment:{name}");
                let Some(pos) = self.segments.iter().position(|s| s.name == name) else {
                    return Err(StoreError::NotFound { entity });
                };
                let users: Vec<&str> =
                    self.flags.iter().filter(|f| f.ramp.segments.contains(&name)).map(|f| f.key.as_str()).collect();
                if !users.is_empty() {
                    return Err(StoreError::Conflict {
                        message: format!(
                            "segment `{name}` is used by flag(s) {}; remove it from them first",
                            users.join(", ")
                        ),
                    });
                }
                let before = to_json(&self.segments.remove(pos));
                (RowEdit::DeleteSegment { name }, "segment.delete", entity, Some(before), None)
            }
        };
        Ok(staged)
    }
}
