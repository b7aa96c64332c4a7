//! The PostgreSQL store, for several replicas on one database. The SQL is the SQLite store's (`sql.rs`);
//! what differs is how writes are made one at a time — a transaction-scoped advisory lock, so that replicas
//! append to one audit chain in turn — and that every committed write tells the other replicas
//! (`NOTIFY sluice_changes`), who then load what changed.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::session::{Backend, Conn, Query, Tx, Writer};
use crate::{Fence, StoreError};

/// The channel every committed write notifies; its payload is empty (a listener reads what changed).
pub const CHANGES_CHANNEL: &str = "sluice_changes";

/// The advisory lock every write takes for its transaction: writes from all replicas commit one at a
/// time, as in SQLite, so that each audit event links to the one committed before it.
const WRITE_LOCK: i64 = 0x0051_1CE0;

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    url: String,
    /// Set on the controller's copy ([`Store::fenced`]).
    fence: Option<Fence>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and migrates it.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options.application_name("sluice"))
            .await?;
        // sqlx's migrator holds an advisory lock while it runs: replicas starting together migrate once.
        migrator().run(&pool).await?;
        Ok(PgStore { pool, url: url.to_string(), fence: None })
    }

    /// The database's URL, for a listener of [`CHANGES_CHANNEL`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Backend for PgStore {
    // The database's clock in ms: every replica's lease is judged by the same clock.
    const NOW_MS: &'static str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

    /// REPEATABLE READ: READ COMMITTED, PostgreSQL's default, would let each statement see another state.
    async fn begin_read(&self) -> Result<Tx, StoreError> {
        Ok(Tx::Postgres(self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?))
    }

    /// One write at a time across replicas (a transaction-scoped advisory lock), and a notification to
    /// every other replica when it commits (PostgreSQL sends it at commit, and drops it with a rollback).
    async fn begin_unfenced_write(&self) -> Result<(Writer<'_>, Tx), StoreError> {
        let mut tx = Tx::Postgres(self.pool.begin().await?);
        Query::new("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut tx).await?;
        Query::new("SELECT pg_notify($1, '')").bind(CHANGES_CHANNEL).execute(&mut tx).await?;
        Ok((None, tx))
    }

    async fn acquire(&self) -> Result<Conn, StoreError> {
        Ok(Conn::Postgres(self.pool.acquire().await?))
    }

    fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    fn with_fence(&self, fence: Fence) -> Self {
        PgStore { fence: Some(fence), ..self.clone() }
    }

    fn feed(&self) -> Option<crate::ChangeFeed> {
        Some(crate::ChangeFeed { url: self.url.clone() })
    }
}

/// The schema migrations, embedded in the binary.
fn migrator() -> sqlx::migrate::Migrator {
    const MIGRATIONS: &[(i64, &str, &str)] = &[
        (1, "schema", include_str!("../migrations/postgres/0001_schema.sql")),
        (2, "dead letters", include_str!("../migrations/postgres/0002_dead_letters.sql")),
        (3, "retired secrets", include_str!("../migrations/postgres/0003_retired_secrets.sql")),
        (4, "environments", include_str!("../migrations/postgres/0004_environments.sql")),
    ];
    sqlx::migrate::Migrator::with_migrations(crate::sql::migrations_of(MIGRATIONS))
}
