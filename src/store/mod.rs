//! Storage adapters. The system of record is one SQL adapter (`SqlStore`) over sqlx's `Any`
//! driver, serving PostgreSQL (production) and SQLite (the embedded default) with the same
//! portable SQL: `$n` placeholders, `ON CONFLICT`, integers for time and flags. Each dialect
//! has its own migrations (`migrations/postgres`, `migrations/sqlite`); nothing else branches
//! on the back end. One conformance suite (tests/it/store_conformance.rs) runs against both.

mod audit;
mod consent;
mod directory;
mod error;
mod groups;
mod identities;
mod locks;
mod migrate;
mod policy;
mod receipts;
mod rows;
mod signing_keys;
mod tenants;
mod users;
pub mod vault_memory;
pub mod vault_redis;

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::domain::StoreError;

pub use error::map_err;

/// The SQL dialect behind a URL; only migrations and pool sizing depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `postgres://…`
    Postgres,
    /// `sqlite://…`
    Sqlite,
}

impl Dialect {
    /// The dialect a database URL names.
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else {
            None
        }
    }
}

/// The SQL system of record: directory, tenants, credentials, audit log and event outbox.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

/// Connection settings for [`SqlStore::connect`].
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// Pool size for PostgreSQL (SQLite uses a single connection: one writer, no busy errors).
    pub max_connections: u32,
    /// PostgreSQL connections kept open while idle (opened in the background at start and
    /// replaced when retired); SQLite ignores it.
    pub min_connections: u32,
    /// How long to wait for a connection before failing with `Unavailable`.
    pub acquire_timeout: Duration,
}

impl SqlStore {
    /// Opens a pool for `url` (creating the SQLite file if needed). Does not migrate.
    pub async fn connect(url: &str, opts: &SqlOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of(url)
            .ok_or_else(|| StoreError::Internal("unsupported database URL scheme".into()))?;
        let (max, min) = match dialect {
            Dialect::Postgres => (
                opts.max_connections,
                opts.min_connections.min(opts.max_connections),
            ),
            Dialect::Sqlite => (1, 0),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .min_connections(min)
            .acquire_timeout(opts.acquire_timeout)
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(map_err)?;
        Ok(Self { pool, dialect })
    }

    /// Applies the dialect's migrations (idempotent; safe to run at every start).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(&self.pool, self.dialect).await
    }

    /// Which dialect this store speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

impl SqlStore {
    /// Runs one statement outside any port (operations tooling and tests of DB-level guards).
    pub async fn raw_execute(&self, sql: &'static str) -> Result<u64, StoreError> {
        let res = sqlx::query(sql)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(res.rows_affected())
    }
}
