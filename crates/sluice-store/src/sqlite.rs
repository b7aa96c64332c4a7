//! The SQLite store: one file in WAL mode, migrations embedded, one writer at a time. Only SQL lives here:
//! what a change does and what it audits is decided by the backend-neutral modules (`catalog`, `audit`,
//! `token`, `rollout`), so that every backend behaves alike.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use sluice_flags::Snapshot;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, MutexGuard};

use crate::audit::{AuditRow, NewEvent};
use crate::catalog::{Catalog, RowEdit};
use crate::rollout::{self, NotificationRow, RolloutRow};
use crate::stored::{self, count_from_column, count_to_column, rfc3339, to_json};
use crate::token::{self, NewToken, TokenRow};
use crate::{
    audit, AppliedBatch, AuditEvent, AuditFilter, AuditNote, Change, NewDecision, NewNotification, QueuedNotification,
    Role, RolloutRecord, RolloutSave, Store, StoreError, TokenInfo, TokenTable,
};

/// What a commit survives once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash of the process or of the machine (SQLite `synchronous=FULL`: the WAL is synced at every
    /// commit). The default: a rollout's transition is written before its effects run, and must still be
    /// there after a power cut.
    PowerLoss,
    /// A crash of the process only (`synchronous=NORMAL`): the last commits may be lost with the machine.
    ProcessCrash,
}

/// The SQLite implementation of [`Store`]: one file, WAL, migrations embedded.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One writer at a time: each change reads the catalog, validates and appends to the chain, which
    /// must not interleave with another change's.
    writer: Mutex<()>,
}

impl SqliteStore {
    /// Opens (creating it and its folder if needed) the SQLite file at `path` and migrates it. Every commit
    /// survives a power loss ([`Durability::PowerLoss`]): "written before acting" must hold then too.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Durability::PowerLoss).await
    }

    /// [`open`](Self::open) with a chosen durability (benchmarks compare the two).
    pub async fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<SqliteStore, StoreError> {
        let pool = connect(path.as_ref(), durability).await?;
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
}

/// A pool on the file at `path` (created with its folder if needed), not yet migrated.
async fn connect(path: &Path, durability: Durability) -> Result<SqlitePool, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    }
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::PowerLoss => SqliteSynchronous::Full,
            Durability::ProcessCrash => SqliteSynchronous::Normal,
        })
        .foreign_keys(true)
        .busy_timeout(std::time::Duration::from_secs(5));
    Ok(SqlitePoolOptions::new().max_connections(4).connect_with(options).await?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn snapshot(&self) -> Result<(Snapshot, i64), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let catalog = load_catalog(&mut conn).await?;
        let revision: i64 =
            sqlx::query_scalar("SELECT revision FROM revision WHERE id = 1").fetch_one(&mut *conn).await?;
        Ok((catalog.into_snapshot()?, revision))
    }

    async fn apply_all(
        &self,
        actor: &str,
        changes: Vec<Change>,
        reason: Option<String>,
    ) -> Result<AppliedBatch, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let now = Utc::now();
        // Checked in the write's own transaction: a rollout starting meanwhile cannot slip past it.
        if changes.iter().any(|c| matches!(c, Change::DeleteFlag(_) | Change::DeleteSegment(_))) {
            let rows: Vec<RolloutRow> =
                sqlx::query_as("SELECT * FROM rollouts WHERE active = 1 OR outbox <> '[]'").fetch_all(&mut *tx).await?;
            let busy = rows.into_iter().map(RolloutRow::into_record).collect::<Result<Vec<_>, _>>()?;
            rollout::refuse_deleting_what_rollouts_need(&changes, &busy)?;
        }
        let batch = load_catalog(&mut tx).await?.apply(changes, actor, reason, now)?;
        let updated_at = rfc3339(now);
        for edit in &batch.edits {
            write_edit(&mut tx, edit, &updated_at).await?;
        }
        let events = append_all(&mut tx, batch.events).await?;
        let revision: i64 =
            sqlx::query_scalar("UPDATE revision SET revision = revision + 1 WHERE id = 1 RETURNING revision")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(AppliedBatch { events, snapshot: batch.snapshot, revision })
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        // One static statement: an absent filter is a NULL parameter that matches everything.
        let rows: Vec<AuditRow> = sqlx::query_as(
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
        .bind(filter.page_size())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    async fn head(&self) -> Result<String, StoreError> {
        let head: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&self.pool).await?;
        Ok(head.unwrap_or_else(|| audit::GENESIS.into()))
    }

    async fn create_token(&self, actor: &str, name: &str, role: Role) -> Result<(TokenInfo, String), StoreError> {
        token::check_name(name)?;
        let (_writer, mut tx) = self.begin_write().await?;
        if token_name_taken(&mut tx, name).await? {
            return Err(token::name_taken(name));
        }
        let new = NewToken::generated(actor, name, role, Utc::now());
        insert_token(&mut tx, &new).await?;
        tx.commit().await?;
        Ok((new.info, new.text))
    }

    async fn ensure_token(&self, actor: &str, name: &str, role: Role, text: &str) -> Result<bool, StoreError> {
        token::check_text(text)?;
        let (_writer, mut tx) = self.begin_write().await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM tokens WHERE secret_sha256 = $1 AND revoked_at IS NULL")
                .bind(token::sha256_hex(text))
                .fetch_optional(&mut *tx)
                .await?;
        if existing.is_some() {
            return Ok(false);
        }
        let taken = token_name_taken(&mut tx, name).await?;
        insert_token(&mut tx, &NewToken::chosen(actor, name, taken, role, text, Utc::now())).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_token(&self, actor: &str, name: &str) -> Result<AuditEvent, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT id, role FROM tokens WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((id, role)) = row else {
            return Err(StoreError::NotFound { entity: format!("token:{name}") });
        };
        let now = Utc::now();
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
            .bind(rfc3339(now))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let event = append_audit(&mut tx, token::revoked_event(actor, now, &id, name, &role)).await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at, created_by, revoked_at FROM tokens ORDER BY created_at, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TokenRow::into_info).collect()
    }

    async fn server_key(&self, name: &str) -> Result<String, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        // The first caller makes it; everyone after (any replica) reads the same one.
        sqlx::query(
            "INSERT INTO server_keys (name, key_hex, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(token::random_hex(32))
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&mut *tx)
        .await?;
        let key: String = sqlx::query_scalar("SELECT key_hex FROM server_keys WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn token_table(&self) -> Result<TokenTable, StoreError> {
        let rows = sqlx::query_as("SELECT name, role, secret_sha256 FROM tokens WHERE revoked_at IS NULL")
            .fetch_all(&self.pool)
            .await?;
        token::table_from_rows(rows)
    }

    async fn chain(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as("SELECT * FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(AuditRow::into_event).collect()
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
            .bind(count_to_column(*n))
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
        Ok(rows.into_iter().map(|(f, v, n)| (f, v, count_from_column(n))).collect())
    }

    async fn create_rollout(
        &self,
        r: &RolloutRecord,
        events: &[AuditNote],
        notifications: &[NewNotification],
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let active: Option<(String, String)> =
            sqlx::query_as("SELECT id, plan_name FROM rollouts WHERE flag = $1 AND active = 1")
                .bind(&r.flag)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((id, plan_name)) = active {
            return Err(rollout::already_active(&r.flag, &id, &plan_name));
        }
        // A delete of the flag that committed after the plan was checked: the rollout would ramp nothing.
        let flag: Option<(String,)> =
            sqlx::query_as("SELECT key FROM flags WHERE key = $1").bind(&r.flag).fetch_optional(&mut *tx).await?;
        if flag.is_none() {
            return Err(StoreError::NotFound { entity: format!("flag:{}", r.flag) });
        }
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO rollouts (id, flag, plan_name, plan_text, original_flag, state, status, active, outbox, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $10)",
        )
        .bind(&r.id)
        .bind(&r.flag)
        .bind(&r.plan_name)
        .bind(&r.plan_text)
        .bind(to_json(&r.original_flag).to_string())
        .bind(to_json(&r.state).to_string())
        .bind(r.state.status.name())
        .bind(to_json(&r.outbox).to_string())
        .bind(&r.created_by)
        .bind(rfc3339(now))
        .execute(&mut *tx)
        .await?;
        let written = append_all(&mut tx, rollout::created_events(r, events, now)).await?;
        queue_notifications(&mut tx, notifications, now).await?;
        tx.commit().await?;
        Ok(written)
    }

    async fn save_rollout(&self, save: &RolloutSave<'_>) -> Result<Vec<AuditEvent>, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let now = Utc::now();
        let updated = sqlx::query(
            "UPDATE rollouts SET state = $1, status = $2, active = $3, outbox = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(to_json(save.state).to_string())
        .bind(save.state.status.name())
        .bind(i64::from(!save.state.status.is_terminal()))
        .bind(to_json(&save.outbox).to_string())
        .bind(rfc3339(now))
        .bind(save.id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(rollout::not_found(save.id));
        }
        let events = append_all(&mut tx, rollout::saved_events(save, now)).await?;
        queue_notifications(&mut tx, save.notifications, now).await?;
        if let Some((at_ms, decisions)) = save.decisions {
            insert_decisions(&mut tx, save.id, at_ms, decisions).await?;
        }
        tx.commit().await?;
        Ok(events)
    }

    async fn due_notifications(&self, limit: u32) -> Result<Vec<QueuedNotification>, StoreError> {
        let rows: Vec<NotificationRow> = sqlx::query_as(
            "SELECT id, destination, rollout_id, body, attempts, last_error FROM notifications \
             WHERE delivered_ms IS NULL AND next_ms <= $1 ORDER BY next_ms, created_ms LIMIT $2",
        )
        .bind(Utc::now().timestamp_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(NotificationRow::into_queued).collect()
    }

    async fn notification_delivered(&self, id: &str, destination: &str) -> Result<(), StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        sqlx::query("UPDATE notifications SET delivered_ms = $1 WHERE id = $2 AND destination = $3")
            .bind(Utc::now().timestamp_millis())
            .bind(id)
            .bind(destination)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn notification_failed(
        &self,
        id: &str,
        destination: &str,
        error: &str,
        retry_in: std::time::Duration,
    ) -> Result<(), StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let next =
            Utc::now().timestamp_millis().saturating_add(i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX));
        sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, next_ms = $1, last_error = $2 WHERE id = $3 AND destination = $4",
        )
        .bind(next)
        .bind(stored::bounded_text(error, 4096))
        .bind(id)
        .bind(destination)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rollouts(&self, active_only: bool) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows: Vec<RolloutRow> =
            sqlx::query_as("SELECT * FROM rollouts WHERE active = 1 OR $1 = 0 ORDER BY created_at")
                .bind(i64::from(active_only))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(RolloutRow::into_record).collect()
    }

    async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        let row: Option<RolloutRow> =
            sqlx::query_as("SELECT * FROM rollouts WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.map(RolloutRow::into_record).transpose()
    }

    async fn record_decisions(&self, id: &str, at_ms: i64, decisions: &[Value]) -> Result<(), StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let decisions: Vec<NewDecision> =
            decisions.iter().map(|d| NewDecision { body: d.clone(), changed: true }).collect();
        insert_decisions(&mut tx, id, at_ms, &decisions).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune_decisions(&self, before_ms: i64) -> Result<u64, StoreError> {
        let (_writer, mut tx) = self.begin_write().await?;
        let gone = sqlx::query("DELETE FROM decisions WHERE changed = 0 AND at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone)
    }

    async fn save_metrics(&self, flags: &[(String, String)], at_ms: i64) -> Result<(), StoreError> {
        if flags.is_empty() {
            return Ok(());
        }
        let (_writer, mut tx) = self.begin_write().await?;
        for (flag, body) in flags {
            sqlx::query(
                "INSERT INTO metrics (flag, body, saved_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (flag) DO UPDATE SET body = excluded.body, saved_at_ms = excluded.saved_at_ms",
            )
            .bind(flag)
            .bind(body)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_metrics(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT flag, body FROM metrics ORDER BY flag").fetch_all(&self.pool).await?)
    }

    async fn decisions(&self, id: &str, limit: u32) -> Result<Vec<Value>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT body FROM (SELECT body, at_ms, seq FROM decisions WHERE rollout_id = $1 \
               ORDER BY at_ms DESC, seq DESC LIMIT $2) AS last ORDER BY at_ms, seq",
        )
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|(body,)| rollout::parse_decision(id, body)).collect()
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
        let event = append_audit(&mut tx, NewEvent::note(Utc::now(), actor, action, entity, after, reason)).await?;
        tx.commit().await?;
        Ok(event)
    }
}

/// The schema migrations, embedded in the binary (no `sqlx` macros: nothing needs a database at build time).
fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator::with_migrations(migrations())
}

fn migrations() -> Vec<sqlx::migrate::Migration> {
    use sqlx::migrate::{Migration, MigrationType};
    use sqlx::SqlSafeStr;
    const MIGRATIONS: &[(i64, &str, &str)] = &[
        (1, "flags and audit", include_str!("../migrations/0001_flags_and_audit.sql")),
        (2, "tokens", include_str!("../migrations/0002_tokens.sql")),
        (3, "client metrics", include_str!("../migrations/0003_client_metrics.sql")),
        (4, "rollouts", include_str!("../migrations/0004_rollouts.sql")),
        (5, "decisions seq", include_str!("../migrations/0005_decisions_seq.sql")),
        (6, "notifications", include_str!("../migrations/0006_notifications.sql")),
        (7, "decisions changed", include_str!("../migrations/0007_decisions_changed.sql")),
        (8, "built-in metrics", include_str!("../migrations/0008_metrics.sql")),
        (9, "server keys", include_str!("../migrations/0009_server_keys.sql")),
    ];
    MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(*version, (*description).into(), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect()
}

async fn load_catalog(conn: &mut SqliteConnection) -> Result<Catalog, StoreError> {
    let flags = sqlx::query_as("SELECT key, body FROM flags ORDER BY key").fetch_all(&mut *conn).await?;
    let segments = sqlx::query_as("SELECT name, body FROM segments ORDER BY id").fetch_all(&mut *conn).await?;
    Catalog::from_rows(flags, segments)
}

/// Writes one change's row; `now` is the flag's `updated_at`.
async fn write_edit(tx: &mut SqliteConnection, edit: &RowEdit, now: &str) -> Result<(), StoreError> {
    let query = match edit {
        RowEdit::PutFlag { key, body } => sqlx::query(
            "INSERT INTO flags (key, body, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(body)
        .bind(now),
        RowEdit::DeleteFlag { key } => sqlx::query("DELETE FROM flags WHERE key = $1").bind(key),
        RowEdit::PutSegment { id, name, body } => sqlx::query(
            "INSERT INTO segments (id, name, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )
        .bind(id)
        .bind(name)
        .bind(body),
        RowEdit::DeleteSegment { name } => sqlx::query("DELETE FROM segments WHERE name = $1").bind(name),
    };
    query.execute(&mut *tx).await?;
    Ok(())
}

async fn token_name_taken(tx: &mut SqliteConnection, name: &str) -> Result<bool, StoreError> {
    let taken: Option<String> =
        sqlx::query_scalar("SELECT id FROM tokens WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
    Ok(taken.is_some())
}

async fn insert_token(tx: &mut SqliteConnection, new: &NewToken) -> Result<(), StoreError> {
    let info = &new.info;
    sqlx::query(
        "INSERT INTO tokens (id, name, role, secret_sha256, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&info.id)
    .bind(&info.name)
    .bind(info.role.as_str())
    .bind(&new.secret_sha256)
    .bind(&info.created_at)
    .bind(&info.created_by)
    .execute(&mut *tx)
    .await?;
    append_audit(tx, new.created_event()).await?;
    Ok(())
}

/// Appends `event` to the chain after the current head, inside the caller's write transaction.
async fn append_audit(tx: &mut SqliteConnection, event: NewEvent) -> Result<AuditEvent, StoreError> {
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let event = event.link(head);
    let row = AuditRow::of(&event);
    sqlx::query(
        "INSERT INTO audit (seq, at, actor, action, entity, before, after, reason, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(row.seq)
    .bind(row.at)
    .bind(row.actor)
    .bind(row.action)
    .bind(row.entity)
    .bind(row.before)
    .bind(row.after)
    .bind(row.reason)
    .bind(row.prev_hash)
    .bind(row.hash)
    .execute(&mut *tx)
    .await?;
    Ok(event)
}

/// Appends a tick's decisions in the transaction that decided them.
async fn insert_decisions(
    tx: &mut SqliteConnection,
    id: &str,
    at_ms: i64,
    decisions: &[NewDecision],
) -> Result<(), StoreError> {
    for d in decisions {
        sqlx::query("INSERT INTO decisions (rollout_id, at_ms, body, changed) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(at_ms)
            .bind(d.body.to_string())
            .bind(i64::from(d.changed))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Queues notifications in the transaction that raised them; a repeat of one already queued is ignored.
async fn queue_notifications(
    tx: &mut SqliteConnection,
    notifications: &[NewNotification],
    now: chrono::DateTime<Utc>,
) -> Result<(), StoreError> {
    let ms = now.timestamp_millis();
    for n in notifications {
        sqlx::query(
            "INSERT INTO notifications (id, destination, rollout_id, body, created_ms, next_ms) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (id, destination) DO NOTHING",
        )
        .bind(&n.id)
        .bind(&n.destination)
        .bind(&n.rollout_id)
        .bind(n.body.to_string())
        .bind(ms)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn append_all(tx: &mut SqliteConnection, events: Vec<NewEvent>) -> Result<Vec<AuditEvent>, StoreError> {
    let mut written = Vec::with_capacity(events.len());
    for event in events {
        written.push(append_audit(tx, event).await?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A file written before decisions had `seq` (ordered by SQLite's rowid then) still opens, and its
    /// decisions keep their order, also among decisions of the same tick.
    #[tokio::test]
    async fn a_file_from_before_decisions_seq_opens_with_its_decisions_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        {
            let pool = connect(&path, Durability::PowerLoss).await.unwrap();
            let before_seq = migrations().into_iter().filter(|m| m.version < 5).collect();
            sqlx::migrate::Migrator::with_migrations(before_seq).run(&pool).await.unwrap();
            for (at_ms, check) in [(1000, "b"), (1000, "a"), (2000, "d"), (1000, "c")] {
                sqlx::query("INSERT INTO decisions (rollout_id, at_ms, body) VALUES ('r1', $1, $2)")
                    .bind(at_ms)
                    .bind(json!({"check": check}).to_string())
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let checks = |d: Vec<Value>| d.iter().map(|d| d["check"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(checks(store.decisions("r1", 10).await.unwrap()), ["b", "a", "c", "d"]);
        store.record_decisions("r1", 2000, &[json!({"check": "e"})]).await.unwrap();
        assert_eq!(checks(store.decisions("r1", 2).await.unwrap()), ["d", "e"]);
    }
}
