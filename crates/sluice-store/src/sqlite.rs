//! The SQLite store: one file in WAL mode, migrations embedded, one writer at a time.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sluice_flags::{Flag, SegmentDef, Snapshot};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool};
use tokio::sync::{Mutex, MutexGuard};

use crate::token;
use crate::{
    audit, AppliedBatch, AuditEvent, AuditFilter, AuditNote, Change, Principal, Role, RolloutRecord, RolloutSave,
    Store, StoreError, TokenInfo, TokenTable,
};

/// The SQLite implementation of [`Store`]: one file, WAL, migrations embedded.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One writer at a time: each change reads the catalog, validates and appends to the chain, which
    /// must not interleave with another change's.
    writer: Mutex<()>,
}

impl SqliteStore {
    /// Opens (creating it and its folder if needed) the SQLite file at `path` and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        migrator().run(&pool).await?;
        Ok(SqliteStore { pool, writer: Mutex::new(()) })
    }

    /// Starts a write: one at a time in this process (the writer lock), and `BEGIN IMMEDIATE` so that the
    /// file's write lock is taken up front. A deferred transaction that reads and then writes fails with
    /// `SQLITE_BUSY_SNAPSHOT` when another write commits in between, and no busy timeout waits that out.
    async fn begin_write(&self) -> Result<(MutexGuard<'_, ()>, sqlx::Transaction<'static, Sqlite>), StoreError> {
        let writer = self.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((writer, tx))
    }

    /// The underlying pool, for tests and tools that inspect the file.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn insert_token(
        &self,
        tx: &mut sqlx::SqliteConnection,
        actor: &str,
        id: &str,
        name: &str,
        role: Role,
        text: &str,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO tokens (id, name, role, secret_sha256, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(name)
        .bind(role.as_str())
        .bind(token::sha256_hex(text))
        .bind(rfc3339(now))
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        let after = serde_json::json!({"id": id, "name": name, "role": role.as_str()});
        append_audit(tx, now, actor, "token.create", &format!("token:{name}"), None, Some(after), None).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// The current catalog compiled into a snapshot, and its revision (the ETag of the flag state).
    async fn snapshot(&self) -> Result<(Snapshot, i64), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let (flags, segments) = load_catalog(&mut conn).await?;
        let revision: i64 =
            sqlx::query_scalar("SELECT revision FROM revision WHERE id = 1").fetch_one(&mut *conn).await?;
        let snapshot =
            Snapshot::from_flags(flags, segments).map_err(|e| StoreError::Corrupt { message: e.to_string() })?;
        Ok((snapshot, revision))
    }

    /// Applies several changes all or nothing (imports): one transaction, one audit event per change, and the
    /// catalog validated once at the end, so that a batch may, say, create a segment and the flags using it.
    async fn apply_all(
        &self,
        actor: &str,
        changes: Vec<Change>,
        reason: Option<String>,
    ) -> Result<AppliedBatch, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let (mut flags, mut segments) = load_catalog(&mut tx).await?;
        let now = Utc::now();
        let mut staged = Vec::with_capacity(changes.len());
        for change in changes {
            staged.push(stage(&mut tx, &mut flags, &mut segments, change, now).await?);
        }
        // The whole catalog must still compile: this is what readers will be served.
        let snapshot = Snapshot::from_flags(flags, segments).map_err(StoreError::Invalid)?;
        let mut events = Vec::with_capacity(staged.len());
        for (action, entity, before, after) in staged {
            events.push(append_audit(&mut tx, now, actor, action, &entity, before, after, reason.clone()).await?);
        }
        let revision: i64 =
            sqlx::query_scalar("UPDATE revision SET revision = revision + 1 WHERE id = 1 RETURNING revision")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(AppliedBatch { events, snapshot, revision })
    }

    /// Audit events matching `filter`, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        // One static statement: an absent filter is a NULL parameter that matches everything.
        let rows = sqlx::query(
            "SELECT * FROM audit \
             WHERE (CAST($1 AS TEXT) IS NULL OR actor = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR entity = $2) \
               AND (CAST($3 AS TEXT) IS NULL OR substr(action, 1, length($3)) = $3) \
               AND (CAST($4 AS TEXT) IS NULL OR at >= $4) \
             ORDER BY seq DESC LIMIT $5",
        )
        .bind(&filter.actor)
        .bind(&filter.entity)
        .bind(&filter.action_prefix)
        .bind(filter.since.map(rfc3339))
        .bind(if filter.limit == 0 { 100 } else { i64::from(filter.limit) })
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The last event's hash ([`audit::GENESIS`] when there is none), to anchor elsewhere.
    async fn head(&self) -> Result<String, StoreError> {
        let head: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&self.pool).await?;
        Ok(head.unwrap_or_else(|| audit::GENESIS.into()))
    }

    /// Creates a token named `name` with `role`, audited as `actor`. Returns the token text, shown only now:
    /// the store keeps its SHA-256.
    async fn create_token(&self, actor: &str, name: &str, role: Role) -> Result<(TokenInfo, String), StoreError> {
        if name.is_empty() || name.len() > 100 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(StoreError::InvalidField {
                entity: format!("token `{name}`"),
                field: "name".into(),
                message: "a token name is 1 to 100 letters, digits, `-`, `_`, `.` or `@`".into(),
            });
        }
        let (_writer, mut tx) = self.begin_write().await?;
        let taken: Option<String> =
            sqlx::query_scalar("SELECT id FROM tokens WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                message: format!("a token named `{name}` exists; revoke it or pick another name"),
            });
        }
        let id = token::random_hex(8);
        let text = format!("slc_{id}_{}", token::random_hex(32));
        self.insert_token(&mut tx, actor, &id, name, role, &text).await?;
        tx.commit().await?;
        let info = self.tokens().await?.into_iter().find(|t| t.id == id).expect("just inserted");
        Ok((info, text))
    }

    /// Makes `text` (e.g. from `SLUICE_ADMIN_TOKEN`) an active token named `name` with `role`, unless an
    /// active token with that text exists. Returns whether it was added.
    async fn ensure_token(&self, actor: &str, name: &str, role: Role, text: &str) -> Result<bool, StoreError> {
        if text.len() < 32 {
            return Err(StoreError::Conflict { message: "a token must be at least 32 characters".into() });
        }
        let (_writer, mut tx) = self.begin_write().await?;
        let hash = token::sha256_hex(text);
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM tokens WHERE secret_sha256 = $1 AND revoked_at IS NULL")
                .bind(&hash)
                .fetch_optional(&mut *tx)
                .await?;
        if existing.is_some() {
            return Ok(false);
        }
        let taken: Option<String> =
            sqlx::query_scalar("SELECT id FROM tokens WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
        let name = if taken.is_some() { format!("{name}-{}", &hash[..8]) } else { name.to_string() };
        self.insert_token(&mut tx, actor, &hash[..16], &name, role, text).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes the token named `name`, audited as `actor`.
    async fn revoke_token(&self, actor: &str, name: &str) -> Result<AuditEvent, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let entity = format!("token:{name}");
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT id, role FROM tokens WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((id, role)) = row else {
            return Err(StoreError::NotFound { entity });
        };
        let now = Utc::now();
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
            .bind(rfc3339(now))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let before = serde_json::json!({"id": id, "name": name, "role": role});
        let event = append_audit(&mut tx, now, actor, "token.revoke", &entity, Some(before), None, None).await?;
        tx.commit().await?;
        Ok(event)
    }

    /// Every token, revoked ones included, oldest first; never a secret.
    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, created_by, revoked_at FROM tokens ORDER BY created_at, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.get("role");
                Ok(TokenInfo {
                    id: r.get("id"),
                    name: r.get("name"),
                    role: role.parse().map_err(|message| StoreError::Corrupt { message })?,
                    created_at: r.get("created_at"),
                    created_by: r.get("created_by"),
                    revoked_at: r.get("revoked_at"),
                })
            })
            .collect()
    }

    /// Every active token, for authenticating requests from memory.
    async fn token_table(&self) -> Result<TokenTable, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT name, role, secret_sha256 FROM tokens WHERE revoked_at IS NULL")
                .fetch_all(&self.pool)
                .await?;
        let mut table = TokenTable::default();
        for (name, role, hash) in rows {
            let role = role.parse().map_err(|message| StoreError::Corrupt { message })?;
            table.insert(hash, Principal { name, role });
        }
        Ok(table)
    }

    async fn chain(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn record_client_metrics(&self, counts: &[(String, String, u64)]) -> Result<(), StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        for (flag, variant, n) in counts {
            sqlx::query(
                "INSERT INTO client_metrics (flag, variant, count) VALUES ($1, $2, $3) \
                 ON CONFLICT (flag, variant) DO UPDATE SET count = \
                   CASE WHEN client_metrics.count > 9223372036854775807 - excluded.count \
                        THEN 9223372036854775807 ELSE client_metrics.count + excluded.count END",
            )
            .bind(flag)
            .bind(variant)
            .bind(i64::try_from(*n).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn client_metrics(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT flag, variant, count FROM client_metrics ORDER BY flag, variant")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(f, v, n)| (f, v, n.max(0) as u64)).collect())
    }

    async fn create_rollout(&self, r: &RolloutRecord, events: &[AuditNote]) -> Result<AuditEvent, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let active: Option<(String, String)> =
            sqlx::query_as("SELECT id, plan_name FROM rollouts WHERE flag = $1 AND active = 1")
                .bind(&r.flag)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((id, name)) = active {
            return Err(StoreError::Conflict {
                message: format!(
                    "flag `{}` already has an active rollout: `{name}` ({id}); finish, roll back or abort it first",
                    r.flag
                ),
            });
        }
        let now = rfc3339(Utc::now());
        sqlx::query(
            "INSERT INTO rollouts (id, flag, plan_name, plan_text, original_flag, state, status, active, outbox, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $10)",
        )
        .bind(&r.id)
        .bind(&r.flag)
        .bind(&r.plan_name)
        .bind(&r.plan_text)
        .bind(r.original_flag.to_string())
        .bind(r.state.to_string())
        .bind(&r.status)
        .bind(r.outbox.to_string())
        .bind(&r.created_by)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let after = serde_json::json!({"id": r.id, "plan": r.plan_name, "flag": r.flag});
        let event = append_audit(
            &mut tx,
            Utc::now(),
            &r.created_by,
            "rollout.create",
            &format!("rollout:{}", r.id),
            None,
            Some(after),
            None,
        )
        .await?;
        for (action, after, reason) in events {
            let entity = format!("rollout:{}", r.id);
            append_audit(
                &mut tx,
                Utc::now(),
                &r.created_by,
                action,
                &entity,
                None,
                Some(after.clone()),
                reason.clone(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(event)
    }

    async fn save_rollout(&self, save: &RolloutSave<'_>) -> Result<Vec<AuditEvent>, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE rollouts SET state = $1, status = $2, active = $3, outbox = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(save.state.to_string())
        .bind(save.status)
        .bind(i64::from(save.active))
        .bind(save.outbox.to_string())
        .bind(rfc3339(Utc::now()))
        .bind(save.id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: format!("rollout:{}", save.id) });
        }
        let mut events = Vec::new();
        for (action, after, reason) in save.events {
            let entity = format!("rollout:{}", save.id);
            events.push(
                append_audit(
                    &mut tx,
                    Utc::now(),
                    save.actor,
                    action,
                    &entity,
                    None,
                    Some(after.clone()),
                    reason.clone(),
                )
                .await?,
            );
        }
        tx.commit().await?;
        Ok(events)
    }

    async fn rollouts(&self, active_only: bool) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM rollouts WHERE active = 1 OR $1 = 0 ORDER BY created_at")
            .bind(i64::from(active_only))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rollout_from_row).collect()
    }

    async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM rollouts WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(rollout_from_row).transpose()
    }

    async fn record_decisions(&self, id: &str, at_ms: i64, decisions: &[Value]) -> Result<(), StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        for d in decisions {
            sqlx::query("INSERT INTO decisions (rollout_id, at_ms, body) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(at_ms)
                .bind(d.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn decisions(&self, id: &str, limit: u32) -> Result<Vec<Value>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT body FROM (SELECT body, at_ms, rowid AS r FROM decisions WHERE rollout_id = $1 ORDER BY at_ms DESC, r DESC LIMIT $2) ORDER BY at_ms, r",
        )
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(b,)| {
                serde_json::from_str(&b)
                    .map_err(|e| StoreError::Corrupt { message: format!("a decision of {id}: {e}") })
            })
            .collect()
    }

    async fn record_event(
        &self,
        actor: &str,
        action: &str,
        entity: &str,
        after: Value,
        reason: Option<String>,
    ) -> Result<AuditEvent, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let event = append_audit(&mut tx, Utc::now(), actor, action, entity, None, Some(after), reason).await?;
        tx.commit().await?;
        Ok(event)
    }
}

/// The schema migrations, embedded in the binary (no `sqlx` macros: nothing needs a database at build time).
fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use sqlx::SqlSafeStr;
    const MIGRATIONS: &[(i64, &str, &str)] = &[
        (1, "flags and audit", include_str!("../migrations/0001_flags_and_audit.sql")),
        (2, "tokens", include_str!("../migrations/0002_tokens.sql")),
        (3, "client metrics", include_str!("../migrations/0003_client_metrics.sql")),
        (4, "rollouts", include_str!("../migrations/0004_rollouts.sql")),
    ];
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(*version, (*description).into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

/// What one change wrote: (action, entity, before, after), for its audit event.
type Staged = (&'static str, String, Option<Value>, Option<Value>);

/// Writes one change inside the caller's transaction and applies it to the in-memory catalog.
async fn stage(
    tx: &mut sqlx::SqliteConnection,
    flags: &mut Vec<Flag>,
    segments: &mut Vec<SegmentDef>,
    change: Change,
    now: DateTime<Utc>,
) -> Result<Staged, StoreError> {
    let staged = match change {
        Change::PutFlag(flag) => {
            let entity = format!("flag:{}", flag.key);
            let after = to_json(&flag);
            let (action, before) = match flags.iter_mut().find(|f| f.key == flag.key) {
                Some(slot) => {
                    let before = to_json(slot);
                    *slot = flag.clone();
                    ("flag.update", Some(before))
                }
                None => {
                    flags.push(flag.clone());
                    ("flag.create", None)
                }
            };
            sqlx::query(
                "INSERT INTO flags (key, body, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            )
            .bind(&flag.key)
            .bind(after.to_string())
            .bind(rfc3339(now))
            .execute(&mut *tx)
            .await?;
            (action, entity, before, Some(after))
        }
        Change::DeleteFlag(key) => {
            let entity = format!("flag:{key}");
            let Some(pos) = flags.iter().position(|f| f.key == key) else {
                return Err(StoreError::NotFound { entity });
            };
            let before = to_json(&flags.remove(pos));
            sqlx::query("DELETE FROM flags WHERE key = $1").bind(&key).execute(&mut *tx).await?;
            ("flag.delete", entity, Some(before), None)
        }
        Change::PutSegment(mut segment) => {
            let entity = format!("segment:{}", segment.name);
            let existing = segments.iter().position(|s| s.name == segment.name);
            let before = existing.map(|i| to_json(&segments[i]));
            segment.id = match existing {
                Some(i) => segments[i].id,
                None => segments.iter().map(|s| s.id).max().unwrap_or(0) + 1,
            };
            for (i, c) in segment.constraints.iter().enumerate() {
                sluice_flags::validate_constraint(c).map_err(|(field, message)| StoreError::InvalidField {
                    entity: format!("segment `{}`", segment.name),
                    field: format!("constraints[{i}].{field}"),
                    message,
                })?;
            }
            let after = to_json(&segment);
            match existing {
                Some(i) => segments[i] = segment.clone(),
                None => segments.push(segment.clone()),
            }
            sqlx::query(
                "INSERT INTO segments (id, name, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            )
            .bind(segment.id)
            .bind(&segment.name)
            .bind(after.to_string())
            .execute(&mut *tx)
            .await?;
            let action = if before.is_some() { "segment.update" } else { "segment.create" };
            (action, entity, before, Some(after))
        }
        Change::DeleteSegment(name) => {
            let entity = format!("segment:{name}");
            let Some(pos) = segments.iter().position(|s| s.name == name) else {
                return Err(StoreError::NotFound { entity });
            };
            let users: Vec<&str> =
                flags.iter().filter(|f| f.ramp.segments.contains(&name)).map(|f| f.key.as_str()).collect();
            if !users.is_empty() {
                return Err(StoreError::Conflict {
                    message: format!(
                        "segment `{name}` is used by flag(s) {}; remove it from them first",
                        users.join(", ")
                    ),
                });
            }
            let before = to_json(&segments.remove(pos));
            sqlx::query("DELETE FROM segments WHERE name = $1").bind(&name).execute(&mut *tx).await?;
            ("segment.delete", entity, Some(before), None)
        }
    };
    Ok(staged)
}

async fn load_catalog(conn: &mut sqlx::SqliteConnection) -> Result<(Vec<Flag>, Vec<SegmentDef>), StoreError> {
    let flags = sqlx::query("SELECT key, body FROM flags ORDER BY key")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| parse_body::<Flag>(r, "flag", r.get("key")))
        .collect::<Result<Vec<_>, _>>()?;
    let segments = sqlx::query("SELECT name, body FROM segments ORDER BY id")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| parse_body::<SegmentDef>(r, "segment", r.get("name")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((flags, segments))
}

fn parse_body<T: serde::de::DeserializeOwned>(
    row: &sqlx::sqlite::SqliteRow,
    kind: &str,
    name: String,
) -> Result<T, StoreError> {
    let body: String = row.get("body");
    serde_json::from_str(&body).map_err(|e| StoreError::Corrupt { message: format!("{kind} `{name}`: {e}") })
}

#[allow(clippy::too_many_arguments)]
async fn append_audit(
    tx: &mut sqlx::SqliteConnection,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    entity: &str,
    before: Option<Value>,
    after: Option<Value>,
    reason: Option<String>,
) -> Result<AuditEvent, StoreError> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let (seq, prev_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, audit::GENESIS.to_string()),
    };
    // Stored times keep microseconds, so the hash recomputed from the row equals the one computed here.
    let at = DateTime::parse_from_rfc3339(&rfc3339(at)).expect("own format").with_timezone(&Utc);
    let mut event = AuditEvent {
        seq,
        at,
        actor: actor.into(),
        action: action.into(),
        entity: entity.into(),
        before,
        after,
        reason,
        prev_hash,
        hash: String::new(),
    };
    event.hash = event.computed_hash();
    sqlx::query(
        "INSERT INTO audit (seq, at, actor, action, entity, before, after, reason, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(event.seq)
    .bind(rfc3339(event.at))
    .bind(&event.actor)
    .bind(&event.action)
    .bind(&event.entity)
    .bind(event.before.as_ref().map(Value::to_string))
    .bind(event.after.as_ref().map(Value::to_string))
    .bind(&event.reason)
    .bind(&event.prev_hash)
    .bind(&event.hash)
    .execute(&mut *tx)
    .await?;
    Ok(event)
}

fn event_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<AuditEvent, StoreError> {
    let seq: i64 = r.get("seq");
    let corrupt = |what: &str| StoreError::Corrupt { message: format!("audit record {seq}: {what}") };
    let json = |col: &str| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = r.get(col);
        text.map(|t| serde_json::from_str(&t).map_err(|_| corrupt(&format!("`{col}` is not JSON")))).transpose()
    };
    let at: String = r.get("at");
    Ok(AuditEvent {
        seq,
        at: DateTime::parse_from_rfc3339(&at).map_err(|_| corrupt("`at` is not a time"))?.with_timezone(&Utc),
        actor: r.get("actor"),
        action: r.get("action"),
        entity: r.get("entity"),
        before: json("before")?,
        after: json("after")?,
        reason: r.get("reason"),
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    })
}

fn rollout_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<RolloutRecord, StoreError> {
    let id: String = r.get("id");
    let json = |col: &str| -> Result<Value, StoreError> {
        let text: String = r.get(col);
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt { message: format!("rollout {id}, `{col}`: {e}") })
    };
    Ok(RolloutRecord {
        flag: r.get("flag"),
        plan_name: r.get("plan_name"),
        plan_text: r.get("plan_text"),
        original_flag: json("original_flag")?,
        state: json("state")?,
        status: r.get("status"),
        active: r.get::<i64, _>("active") == 1,
        outbox: json("outbox")?,
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        id,
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("flag model serializes")
}
