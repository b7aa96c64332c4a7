//! The catalog's edit rules, the same for every backend: how a [`Change`] alters the flags and segments, which
//! changes are refused (a missing entity, a segment still in use, an invalid segment or catalog), and what each
//! change records in the audit log. A backend loads the catalog, asks for a [`Batch`], and writes its rows.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_flags::{Flag, SegmentDef, Snapshot};

use crate::audit::NewEvent;
use crate::stored::{parse_json, to_json};
use crate::{Change, StoreError};

/// The flags of every environment and the shared segments, as stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    /// Each environment's flags, environments in name order. A flag exists in every environment: its
    /// definition (key, description, variants) is the same in each, its state (enabled, ramp, overrides)
    /// its own.
    envs: Vec<(String, Vec<Flag>)>,
    segments: Vec<SegmentDef>,
}

/// A row to write for one change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RowEdit {
    /// Insert or replace the flag row `key` of `env`.
    PutFlag { env: String, key: String, body: String },
    /// Delete the flag `key` from every environment.
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
    /// The environment the batch was applied in, compiled.
    pub(crate) snapshot: Snapshot,
    /// Other environments whose state changed too (a new flag, a definition, a segment), compiled.
    pub(crate) others: Vec<(String, Snapshot)>,
}

/// What one change does: its rows, and the audit event's (action, entity, before, after, in an environment).
type Staged = (Vec<RowEdit>, &'static str, String, Option<Value>, Option<Value>, bool);

impl Catalog {
    /// The catalog from its rows: environment names, flags as (env, key, body), segments as (name, body) in
    /// id order.
    pub(crate) fn from_rows(
        envs: Vec<String>,
        flags: Vec<(String, String, String)>,
        segments: Vec<(String, String)>,
    ) -> Result<Self, StoreError> {
        let mut by_env: Vec<(String, Vec<Flag>)> = envs.into_iter().map(|e| (e, Vec::new())).collect();
        for (env, key, body) in &flags {
            let flag = parse_json(body, || format!("flag `{key}` in environment `{env}`"))?;
            match by_env.iter_mut().find(|(name, _)| name == env) {
                Some((_, list)) => list.push(flag),
                None => {
                    return Err(StoreError::Corrupt {
                        message: format!("flag `{key}` is stored in environment `{env}`, which does not exist"),
                    })
                }
            }
        }
        Ok(Catalog {
            envs: by_env,
            segments: segments
                .iter()
                .map(|(name, body)| parse_json(body, || format!("segment `{name}`")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The environments' names, in order.
    pub(crate) fn env_names(&self) -> impl Iterator<Item = &str> {
        self.envs.iter().map(|(name, _)| name.as_str())
    }

    /// The flags of `env`.
    pub(crate) fn flags_of(&self, env: &str) -> Option<&[Flag]> {
        self.envs.iter().find(|(name, _)| name == env).map(|(_, flags)| flags.as_slice())
    }

    /// Every flag's definition once (from the first environment), for a new environment to start from.
    pub(crate) fn definitions(&self) -> Vec<Flag> {
        self.envs.first().map(|(_, flags)| flags.iter().map(disabled_copy).collect()).unwrap_or_default()
    }

    /// Every environment compiled; the rows were valid when written, so an error means they were edited.
    pub(crate) fn into_snapshots(self) -> Result<Vec<(String, Snapshot)>, StoreError> {
        let segments = self.segments;
        self.envs
            .into_iter()
            .map(|(env, flags)| {
                let snapshot = Snapshot::from_flags(flags, segments.clone())
                    .map_err(|e| StoreError::Corrupt { message: format!("environment `{env}`: {e}") })?;
                Ok((env, snapshot))
            })
            .collect()
    }

    /// Applies `changes` in order in `env`, as `actor` at `at`. The catalog is validated once, after the last
    /// change, so that a batch may, say, create a segment and the flags using it; any refusal refuses the
    /// whole batch. A change to a flag's definition reaches every environment, and so does a new flag
    /// (disabled, at 0 %, elsewhere): the definition is shared, the state is not.
    pub(crate) fn apply(
        mut self,
        env: &str,
        changes: Vec<Change>,
        actor: &str,
        reason: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<Batch, StoreError> {
        let Some(here) = self.envs.iter().position(|(name, _)| name == env) else {
            return Err(StoreError::NotFound { entity: format!("environment `{env}`") });
        };
        let mut edits = Vec::with_capacity(changes.len());
        let mut events = Vec::with_capacity(changes.len());
        let mut touched = vec![false; self.envs.len()];
        for change in changes {
            let (rows, action, entity, before, after, in_env) = self.stage(here, change, &mut touched)?;
            edits.extend(rows);
            let event = NewEvent {
                at,
                actor: actor.into(),
                action: action.into(),
                entity,
                before,
                after,
                reason: reason.clone(),
                env: None,
            };
            events.push(if in_env { event.in_env(env) } else { event });
        }
        // Every environment changed must still compile: this is what readers will be served.
        let segments = self.segments;
        let mut snapshot = None;
        let mut others = Vec::new();
        for (i, (name, flags)) in self.envs.into_iter().enumerate() {
            if i == here {
                snapshot = Some(Snapshot::from_flags(flags, segments.clone()).map_err(StoreError::Invalid)?);
            } else if touched[i] {
                let compiled = Snapshot::from_flags(flags, segments.clone()).map_err(|e| StoreError::Conflict {
                    message: format!("in environment `{name}`, which shares the flag's definition: {e}"),
                })?;
                others.push((name, compiled));
            }
        }
        Ok(Batch { edits, events, snapshot: snapshot.expect("the environment exists"), others })
    }

    /// Applies one change to the catalog in memory, in the environment at `here`; marks in `touched` the
    /// other environments it changed.
    fn stage(&mut self, here: usize, change: Change, touched: &mut [bool]) -> Result<Staged, StoreError> {
        let env_count = self.envs.len();
        let staged = match change {
            Change::PutFlag(flag) => {
                let entity = format!("flag:{}", flag.key);
                let after = to_json(&flag);
                let env = self.envs[here].0.clone();
                let mut rows = vec![RowEdit::PutFlag { env, key: flag.key.clone(), body: after.to_string() }];
                let existing = self.envs[here].1.iter().position(|f| f.key == flag.key);
                let (action, before) = match existing {
                    Some(i) => {
                        let slot = &mut self.envs[here].1[i];
                        let before = to_json(slot);
                        let redefined = slot.description != flag.description || slot.variants != flag.variants;
                        *slot = flag.clone();
                        if redefined {
                            for (j, (name, flags)) in self.envs.iter_mut().enumerate() {
                                let Some(other) = flags.iter_mut().find(|f| f.key == flag.key).filter(|_| j != here)
                                else {
                                    continue;
                                };
                                other.description.clone_from(&flag.description);
                                other.variants.clone_from(&flag.variants);
                                rows.push(RowEdit::PutFlag {
                                    env: name.clone(),
                                    key: flag.key.clone(),
                                    body: to_json(&*other).to_string(),
                                });
                                touched[j] = true;
                            }
                        }
                        ("flag.update", Some(before))
                    }
                    None => {
                        sluice_flags::check_key(&flag.key).map_err(|message| StoreError::InvalidField {
                            entity: format!("flag `{}`", flag.key),
                            field: "key".into(),
                            message,
                        })?;
                        let copy = disabled_copy(&flag);
                        self.envs[here].1.push(flag);
                        for (j, (name, flags)) in self.envs.iter_mut().enumerate() {
                            if j == here || flags.iter().any(|f| f.key == copy.key) {
                                continue;
                            }
                            rows.push(RowEdit::PutFlag {
                                env: name.clone(),
                                key: copy.key.clone(),
                                body: to_json(&copy).to_string(),
                            });
                            flags.push(copy.clone());
                            touched[j] = true;
                        }
                        ("flag.create", None)
                    }
                };
                (rows, action, entity, before, Some(after), true)
            }
            Change::DeleteFlag(key) => {
                let entity = format!("flag:{key}");
                let Some(pos) = self.envs[here].1.iter().position(|f| f.key == key) else {
                    return Err(StoreError::NotFound { entity });
                };
                // The definition is shared: deleting removes the flag everywhere, so it must serve no one
                // anywhere else first.
                if let Some((name, _)) = self
                    .envs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != here)
                    .map(|(_, e)| e)
                    .find(|(_, flags)| flags.iter().any(|f| f.key == key && f.enabled))
                {
                    return Err(StoreError::Conflict {
                        message: format!(
                            "flag `{key}` is enabled in environment `{name}`; a flag's definition is shared, so \
                             deleting it removes it from every environment: disable it in `{name}` first"
                        ),
                    });
                }
                let before = to_json(&self.envs[here].1.remove(pos));
                for (j, (_, flags)) in self.envs.iter_mut().enumerate() {
                    if let Some(p) = flags.iter().position(|f| f.key == key) {
                        flags.remove(p);
                        touched[j] = true;
                    }
                }
                (vec![RowEdit::DeleteFlag { key }], "flag.delete", entity, Some(before), None, true)
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
                // Segments are shared: every environment's flags may use it.
                touched.iter_mut().for_each(|t| *t = true);
                let action = if before.is_some() { "segment.update" } else { "segment.create" };
                (vec![edit], action, entity, before, Some(after), false)
            }
            Change::DeleteSegment(name) => {
                let entity = format!("segment:{name}");
                let Some(pos) = self.segments.iter().position(|s| s.name == name) else {
                    return Err(StoreError::NotFound { entity });
                };
                let mut users: Vec<String> = Vec::new();
                for (env, flags) in &self.envs {
                    for f in flags.iter().filter(|f| f.ramp.segments.contains(&name)) {
                        users.push(if env_count > 1 { format!("{} (in {env})", f.key) } else { f.key.clone() });
                    }
                }
                if !users.is_empty() {
                    return Err(StoreError::Conflict {
                        message: format!(
                            "segment `{name}` is used by flag(s) {}; remove it from them first",
                            users.join(", ")
                        ),
                    });
                }
                let before = to_json(&self.segments.remove(pos));
                touched.iter_mut().for_each(|t| *t = true);
                (vec![RowEdit::DeleteSegment { name }], "segment.delete", entity, Some(before), None, false)
            }
        };
        Ok(staged)
    }
}

/// A flag as a new environment first has it: the same definition and targeting, disabled, at 0 %, with no
/// overrides, so that nothing changes for anyone until someone turns it on there.
pub(crate) fn disabled_copy(flag: &Flag) -> Flag {
    let mut copy = flag.clone();
    copy.enabled = false;
    copy.ramp.percent = 0;
    copy.overrides.clear();
    copy
}
