//! What lets the store's SQL be written once, as plain functions, for both databases: a statement with
//! its arguments bound for each ([`Query`]), run on a connection or transaction of either ([`Session`]),
//! and what a backend provides around them ([`Backend`]: how it begins a read and a write, its clock).
//!
//! Why not generic code over `sqlx::Database`: every function would carry the same dozen higher-ranked
//! bounds (an executor for `&mut Connection`, `Encode`/`Decode`/`Type` for each column type, `FromRow` for
//! each row type), which is why this was a 770-line macro before. Here the choice of database is a value
//! ([`Db`]), looked at in one place, when a statement runs.

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Encode, FromRow, PgConnection, Postgres, Sqlite, SqliteConnection, Type};

use crate::{Fence, StoreError};

/// A connection of one of the two databases, borrowed for a statement.
pub enum Db<'c> {
    /// SQLite.
    Sqlite(&'c mut SqliteConnection),
    /// PostgreSQL.
    Postgres(&'c mut PgConnection),
}

/// Anything a statement runs on: a transaction, or a connection from a pool.
pub trait Session: Send {
    /// The connection, for one statement.
    fn db(&mut self) -> Db<'_>;
}

impl Session for sqlx::Transaction<'_, Sqlite> {
    fn db(&mut self) -> Db<'_> {
        Db::Sqlite(self)
    }
}

impl Session for sqlx::Transaction<'_, Postgres> {
    fn db(&mut self) -> Db<'_> {
        Db::Postgres(self)
    }
}

impl Session for sqlx::pool::PoolConnection<Sqlite> {
    fn db(&mut self) -> Db<'_> {
        Db::Sqlite(self)
    }
}

impl Session for sqlx::pool::PoolConnection<Postgres> {
    fn db(&mut self) -> Db<'_> {
        Db::Postgres(self)
    }
}

/// A transaction of either database.
pub enum Tx {
    /// SQLite.
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    /// Commits it.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

impl Session for Tx {
    fn db(&mut self) -> Db<'_> {
        match self {
            Tx::Sqlite(tx) => Db::Sqlite(tx),
            Tx::Postgres(tx) => Db::Postgres(tx),
        }
    }
}

/// A connection from either database's pool.
pub enum Conn {
    /// SQLite.
    Sqlite(sqlx::pool::PoolConnection<Sqlite>),
    /// PostgreSQL.
    Postgres(sqlx::pool::PoolConnection<Postgres>),
}

impl Session for Conn {
    fn db(&mut self) -> Db<'_> {
        match self {
            Conn::Sqlite(c) => Db::Sqlite(c),
            Conn::Postgres(c) => Db::Postgres(c),
        }
    }
}

/// What makes writes one at a time in this process (SQLite's writer lock); nothing for PostgreSQL, whose
/// transaction takes an advisory lock. Held until the write commits.
pub type Writer<'a> = Option<tokio::sync::MutexGuard<'a, ()>>;

/// A value both databases can take as an argument.
pub trait Bind<'q>:
    Clone + Send + 'q + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}

impl<'q, T> Bind<'q> for T where
    T: Clone + Send + 'q + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}

/// A row both databases can be read into.
pub trait Row: Send + Unpin + for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> {}

impl<T> Row for T where T: Send + Unpin + for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> {}

/// A row to write: its values bound in column order (a tuple of [`Bind`] values, or a row struct).
pub trait Values {
    /// Binds every value of the row to `q`, in order.
    fn bind_to<'a>(&'a self, q: Query<'a>) -> Query<'a>;
}

macro_rules! values_for_tuples {
    ($(($($t:ident $i:tt),+))+) => {$(
        impl<$($t),+> Values for ($($t,)+)
        where
            $(for<'a> &'a $t: Bind<'a>),+
        {
            fn bind_to<'a>(&'a self, q: Query<'a>) -> Query<'a> {
                q$(.bind(&self.$i))+
            }
        }
    )+};
}

values_for_tuples! {
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9)
}

/// One statement (`$1`, `$2`, … for its arguments, which both databases read), with its arguments bound
/// for each database: which one runs it is known only when it runs. Its text is the store's own, never
/// built from input (every value is an argument).
pub struct Query<'q> {
    sql: &'q str,
    sqlite: SqliteArguments,
    postgres: PgArguments,
    /// The first argument neither database could take (reported when the statement runs).
    unbound: Option<String>,
}

impl<'q> Query<'q> {
    /// The statement `sql`, without arguments yet.
    pub fn new(sql: &'q str) -> Query<'q> {
        Query { sql, sqlite: SqliteArguments::default(), postgres: PgArguments::default(), unbound: None }
    }

    /// Binds the next argument.
    pub fn bind<T: Bind<'q>>(mut self, value: T) -> Query<'q> {
        let sqlite = self.sqlite.add(value.clone());
        let postgres = self.postgres.add(value);
        if let Err(e) = sqlite.and(postgres) {
            self.unbound.get_or_insert_with(|| e.to_string());
        }
        self
    }

    fn checked(self) -> Result<Query<'q>, StoreError> {
        match &self.unbound {
            Some(e) => Err(StoreError::Database(sqlx::Error::Encode(e.clone().into()))),
            None => Ok(self),
        }
    }

    /// Runs it; how many rows it changed.
    pub async fn execute(self, s: &mut impl Session) -> Result<u64, StoreError> {
        let q = self.checked()?;
        Ok(match s.db() {
            Db::Sqlite(c) => sqlx::query_with(sqlx::AssertSqlSafe(q.sql), q.sqlite).execute(c).await?.rows_affected(),
            Db::Postgres(c) => {
                sqlx::query_with(sqlx::AssertSqlSafe(q.sql), q.postgres).execute(c).await?.rows_affected()
            }
        })
    }

    /// Every row it returns.
    pub async fn fetch_all<T: Row>(self, s: &mut impl Session) -> Result<Vec<T>, StoreError> {
        let q = self.checked()?;
        Ok(match s.db() {
            Db::Sqlite(c) => sqlx::query_as_with(sqlx::AssertSqlSafe(q.sql), q.sqlite).fetch_all(c).await?,
            Db::Postgres(c) => sqlx::query_as_with(sqlx::AssertSqlSafe(q.sql), q.postgres).fetch_all(c).await?,
        })
    }

    /// Its one row (an error without one).
    pub async fn fetch_one<T: Row>(self, s: &mut impl Session) -> Result<T, StoreError> {
        let q = self.checked()?;
        Ok(match s.db() {
            Db::Sqlite(c) => sqlx::query_as_with(sqlx::AssertSqlSafe(q.sql), q.sqlite).fetch_one(c).await?,
            Db::Postgres(c) => sqlx::query_as_with(sqlx::AssertSqlSafe(q.sql), q.postgres).fetch_one(c).await?,
        })
    }

    /// Its row, if it returns one.
    pub async fn fetch_optional<T: Row>(self, s: &mut impl Session) -> Result<Option<T>, StoreError> {
        let q = self.checked()?;
        Ok(match s.db() {
            Db::Sqlite(c) => sqlx::query_as_with(sqlx::AssertSqlSafe(q.sql), q.sqlite).fetch_optional(c).await?,
            Db::Postgres(c) => sqlx::query_as_with(sqlx::AssertSqlSafe(q.sql), q.postgres).fetch_optional(c).await?,
        })
    }

    /// The one column of its one row.
    pub async fn scalar<T>(self, s: &mut impl Session) -> Result<T, StoreError>
    where
        (T,): Row,
    {
        Ok(self.fetch_one::<(T,)>(s).await?.0)
    }

    /// The one column of its row, if it returns one.
    pub async fn scalar_optional<T>(self, s: &mut impl Session) -> Result<Option<T>, StoreError>
    where
        (T,): Row,
    {
        Ok(self.fetch_optional::<(T,)>(s).await?.map(|(v,)| v))
    }
}

/// A database Sluice keeps its store in: what differs between SQLite and PostgreSQL. Everything else —
/// every statement, what a change does and audits — is written once, for both ([`Store`](crate::Store) is
/// implemented for every backend in `sql.rs`).
#[async_trait]
pub trait Backend: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// An SQL expression for the database's clock in milliseconds since the Unix epoch: every replica's
    /// lease is judged by one clock.
    const NOW_MS: &'static str;

    /// A read of several statements that sees one state.
    async fn begin_read(&self) -> Result<Tx, StoreError>;

    /// A write, one at a time, that no fence stops: taking a lease, copying a store in.
    async fn begin_unfenced_write(&self) -> Result<(Writer<'_>, Tx), StoreError>;

    /// A connection from the pool, for a single statement.
    async fn acquire(&self) -> Result<Conn, StoreError>;

    /// The controller's fence, on the controller's copy ([`Store::fenced`](crate::Store::fenced)).
    fn fence(&self) -> Option<&Fence>;

    /// This store with `fence` checked at every write.
    fn with_fence(&self, fence: Fence) -> Self;

    /// Where other replicas' commits are announced, if anyone else can commit.
    fn feed(&self) -> Option<crate::ChangeFeed>;
}
