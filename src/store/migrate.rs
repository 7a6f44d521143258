//! Embedded migrations per dialect, applied by `auth-broker migrate` and at start-up.

use std::borrow::Cow;

use sqlx::AnyPool;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Dialect;
use crate::domain::StoreError;

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "directory",
        include_str!("../../migrations/postgres/0001_directory.sql"),
    ),
    (
        2,
        "entitlements",
        include_str!("../../migrations/postgres/0002_entitlements.sql"),
    ),
    (
        3,
        "audit_query",
        include_str!("../../migrations/postgres/0003_audit_query.sql"),
    ),
    (
        4,
        "sign_in",
        include_str!("../../migrations/postgres/0004_sign_in.sql"),
    ),
    (
        5,
        "issuers",
        include_str!("../../migrations/postgres/0005_issuers.sql"),
    ),
    (
        6,
        "locks",
        include_str!("../../migrations/postgres/0006_locks.sql"),
    ),
];
const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "directory",
        include_str!("../../migrations/sqlite/0001_directory.sql"),
    ),
    (
        2,
        "entitlements",
        include_str!("../../migrations/sqlite/0002_entitlements.sql"),
    ),
    (
        3,
        "audit_query",
        include_str!("../../migrations/sqlite/0003_audit_query.sql"),
    ),
    (
        4,
        "sign_in",
        include_str!("../../migrations/sqlite/0004_sign_in.sql"),
    ),
    (
        5,
        "issuers",
        include_str!("../../migrations/sqlite/0005_issuers.sql"),
    ),
    (
        6,
        "locks",
        include_str!("../../migrations/sqlite/0006_locks.sql"),
    ),
];

/// Applies every migration of `dialect` not yet recorded in `_sqlx_migrations`.
pub async fn run(pool: &AnyPool, dialect: Dialect) -> Result<(), StoreError> {
    let set = match dialect {
        Dialect::Postgres => POSTGRES,
        Dialect::Sqlite => SQLITE,
    };
    let migrations: Vec<Migration> = set
        .iter()
        .map(|(v, d, sql)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let migrator = Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    };
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => super::map_err(e),
        other => StoreError::Internal(format!("migration failed: {other}")),
    })
}
