//! Embedded migrations per dialect (`migrations/postgres`, `migrations/sqlite`, read at compile
//! time by `sqlx::migrate!`), applied by `auth-broker migrate` and at start-up.
//!
//! Databases migrated before `sqlx::migrate!` was used upgrade in place: the earlier runner
//! was sqlx's `Migrator` over the same files listed by hand, so it kept the same bookkeeping
//! (`_sqlx_migrations`, one row per version with the SHA-384 of the file's text). sqlx compares
//! only version and checksum, both unchanged; the descriptions it recorded (`audit_query`
//! where the macro now says `audit query`) are not compared. tests/it/migrations.rs checks this
//! on both dialects.

use sqlx::AnyPool;
use sqlx::migrate::{MigrateError, Migrator};

use super::Dialect;
use crate::domain::StoreError;

/// PostgreSQL's migrations, embedded at compile time.
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");
/// SQLite's migrations, embedded at compile time.
static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");

/// Applies every migration of `dialect` not yet recorded in `_sqlx_migrations`.
pub async fn run(pool: &AnyPool, dialect: Dialect) -> Result<(), StoreError> {
    let migrator = match dialect {
        Dialect::Postgres => &POSTGRES,
        Dialect::Sqlite => &SQLITE,
    };
    migrator.run(pool).await.map_err(|e| match e {
        MigrateError::Execute(e) => super::map_err(e),
        other => StoreError::Internal(format!("migration failed: {other}")),
    })
}
