//! The SQLite store: one file in WAL mode, migrations embedded, one writer at a time. Only SQL lives here:
//! what a change does and what it audits is decided by the backend-neutral modules (`catalog`, `audit`,
//! `token`, `rollout`), so that every backend behaves alike.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use tokio::sync::Mutex;

use crate::session::{Backend, Conn, Tx, Writer};
use crate::{Fence, StoreError};

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
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One writer at a time: each change reads the catalog, validates and appends to the chain, which
    /// must not interleave with another change's.
    writer: std::sync::Arc<Mutex<()>>,
    /// Set on the controller's copy ([`Store::fenced`]).
    fence: Option<Fence>,
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
        Ok(SqliteStore { pool, writer: Default::default(), fence: None })
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
impl Backend for SqliteStore {
    // The database's clock in ms: SQLite's `julianday('now')` is the clock of the process that runs the query.
    const NOW_MS: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

    /// A SQLite read transaction (in WAL mode, the snapshot is taken at its first read).
    async fn begin_read(&self) -> Result<Tx, StoreError> {
        Ok(Tx::Sqlite(self.pool.begin().await?))
    }

    /// One at a time in this process (the writer lock), and `BEGIN IMMEDIATE` so that the file's write
    /// lock is taken up front. A deferred transaction that reads and then writes fails with
    /// `SQLITE_BUSY_SNAPSHOT` when another write commits in between, and no busy timeout waits that out.
    async fn begin_unfenced_write(&self) -> Result<(Writer<'_>, Tx), StoreError> {
        let writer = self.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((Some(writer), Tx::Sqlite(tx)))
    }

    async fn acquire(&self) -> Result<Conn, StoreError> {
        Ok(Conn::Sqlite(self.pool.acquire().await?))
    }

    fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    fn with_fence(&self, fence: Fence) -> Self {
        SqliteStore { fence: Some(fence), ..self.clone() }
    }

    /// A single file has no other replicas to hear from.
    fn feed(&self) -> Option<crate::ChangeFeed> {
        None
    }
}

/// The schema migrations, embedded in the binary (no `sqlx` macros: nothing needs a database at build time).
fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator::with_migrations(migrations())
}

fn migrations() -> Vec<sqlx::migrate::Migration> {
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
        (10, "leases and replica metrics", include_str!("../migrations/0010_leases_and_replica_metrics.sql")),
        (11, "dead letters", include_str!("../migrations/0011_dead_letters.sql")),
        (12, "retired secrets", include_str!("../migrations/0012_retired_secrets.sql")),
        (13, "environments", include_str!("../migrations/0013_environments.sql")),
    ];
    crate::sql::migrations_of(MIGRATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use serde_json::json;

    /// A file written before decisions had `seq` (ordered by SQLite's rowid then) still opens, and its
    /// decisions keep their order, also among decisions of the same tick; decisions written before
    /// thresholds were typed read back with their threshold's text.
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
                    // As the version before typed thresholds wrote a decision: the threshold as text only.
                    .bind(
                        json!({"at": at_ms, "check": check, "kind": "gate", "value": 0.5, "threshold": "< 0.01",
                        "outcome": "clear", "note": null, "run": 0, "needed": 1, "dry_run": false, "action": "none"})
                        .to_string(),
                    )
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let checks = |d: Vec<crate::Decided>| d.iter().map(|d| d.decision.check.clone()).collect::<Vec<_>>();
        let old = store.decisions("r1", 10).await.unwrap();
        assert_eq!(
            old[0].decision.threshold,
            sluice_engine::Threshold::Written { text: "< 0.01".into() },
            "an old decision keeps its threshold's text"
        );
        assert_eq!(checks(old.clone()), ["b", "a", "c", "d"]);
        let mut e = old[0].clone();
        e.decision.check = "e".into();
        e.decision.threshold = sluice_engine::Threshold::Below { limit: 0.01 };
        store.record_decisions("r1", 2000, &[e]).await.unwrap();
        assert_eq!(checks(store.decisions("r1", 2).await.unwrap()), ["d", "e"]);
    }
}
