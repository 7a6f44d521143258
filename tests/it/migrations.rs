//! Schema migrations (`sqlx::migrate!` over `migrations/{postgres,sqlite}`): a fresh database
//! gets every migration, and a database migrated by the earlier hand-listed runner upgrades in
//! place, on both dialects.

use std::borrow::Cow;
use std::time::Duration;

use auth_broker::store::{SqlOptions, SqlStore};
use sqlx::AnyPool;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use crate::both_backends;
use crate::support::{Backend, fresh_database};

/// The migrations as the earlier runner listed them: version, the description it recorded
/// (file name with underscores kept) and the file.
const EARLIER_RUNNER: [(i64, &str, &str); 6] = [
    (1, "directory", "0001_directory.sql"),
    (2, "entitlements", "0002_entitlements.sql"),
    (3, "audit_query", "0003_audit_query.sql"),
    (4, "sign_in", "0004_sign_in.sql"),
    (5, "issuers", "0005_issuers.sql"),
    (6, "locks", "0006_locks.sql"),
];

/// How many migrations the dialect has (files in `migrations/<dialect>`).
fn migration_files(backend: Backend) -> i64 {
    let dir = format!(
        "{}/migrations/{}",
        env!("CARGO_MANIFEST_DIR"),
        dialect_dir(backend)
    );
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count() as i64
}

fn dialect_dir(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    }
}

/// Migrates `pool` the way the broker did before `sqlx::migrate!`: sqlx's `Migrator` over
/// hand-listed migrations up to `through`, so `_sqlx_migrations` holds what it wrote.
async fn migrate_as_the_earlier_runner(pool: &AnyPool, backend: Backend, through: i64) {
    let dir = format!(
        "{}/migrations/{}",
        env!("CARGO_MANIFEST_DIR"),
        dialect_dir(backend)
    );
    let migrations: Vec<Migration> = EARLIER_RUNNER
        .iter()
        .filter(|(v, _, _)| *v <= through)
        .map(|(v, description, file)| {
            let sql = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            Migration::new(
                *v,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                AssertSqlSafe(sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let migrator = Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    };
    migrator.run(pool).await.unwrap();
}

/// One bookkeeping row: version, description, when installed (as text) and how long it took.
type Row = (i64, String, String, i64);

async fn bookkeeping(pool: &AnyPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT version, description, CAST(installed_on AS TEXT), execution_time \
         FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn open(url: &str) -> (AnyPool, SqlStore) {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(url).await.unwrap();
    let store = SqlStore::connect(
        url,
        &SqlOptions {
            max_connections: 2,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
        },
    )
    .await
    .unwrap();
    (pool, store)
}

async fn close(pool: AnyPool, store: SqlStore) {
    store.close().await;
    pool.close().await;
}

async fn a_fresh_database_gets_every_migration(backend: Backend) {
    let (url, _dir) = fresh_database(backend).await;
    let (pool, store) = open(&url).await;
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrating again is a no-op");
    let rows = bookkeeping(&pool).await;
    let versions: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let expected: Vec<i64> = (1..=migration_files(backend)).collect();
    assert_eq!(versions, expected);
    assert_eq!(
        rows[2].1, "audit query",
        "descriptions come from the file names"
    );
    store
        .raw_execute("INSERT INTO orgs (id, display_name, created_ms) VALUES ('o', 'O', 0)")
        .await
        .expect("the schema is there");
    close(pool, store).await;
}
both_backends!(a_fresh_database_gets_every_migration);

async fn a_database_of_the_earlier_runner_upgrades_in_place(backend: Backend) {
    // A database fully migrated by the earlier runner: nothing is applied again.
    let (url, _dir) = fresh_database(backend).await;
    let (pool, store) = open(&url).await;
    migrate_as_the_earlier_runner(&pool, backend, 6).await;
    store
        .raw_execute("INSERT INTO orgs (id, display_name, created_ms) VALUES ('o', 'O', 0)")
        .await
        .unwrap();
    let before = bookkeeping(&pool).await;
    assert_eq!(before.len(), 6);
    store.migrate().await.expect("upgrades without error");
    let after = bookkeeping(&pool).await;
    assert_eq!(
        after[..before.len()],
        before[..],
        "no migration re-ran or was re-recorded"
    );
    let added: Vec<i64> = after[before.len()..].iter().map(|r| r.0).collect();
    let later: Vec<i64> = (before.len() as i64 + 1..=migration_files(backend)).collect();
    assert_eq!(
        added, later,
        "the migrations after the earlier runner's are applied"
    );
    let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orgs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orgs, 1, "data survives");
    close(pool, store).await;

    // A database the earlier runner left at an older release: only the newer ones are applied.
    let (url, _dir) = fresh_database(backend).await;
    let (pool, store) = open(&url).await;
    migrate_as_the_earlier_runner(&pool, backend, 4).await;
    let before = bookkeeping(&pool).await;
    store.migrate().await.expect("upgrades without error");
    let after = bookkeeping(&pool).await;
    assert_eq!(after[..4], before[..], "1-4 untouched");
    let newer: Vec<(i64, &str)> = after[4..6].iter().map(|r| (r.0, r.1.as_str())).collect();
    assert_eq!(newer, [(5, "issuers"), (6, "locks")]);
    let rest: Vec<i64> = after[4..].iter().map(|r| r.0).collect();
    assert_eq!(rest, (5..=migration_files(backend)).collect::<Vec<_>>());
    close(pool, store).await;
}
both_backends!(a_database_of_the_earlier_runner_upgrades_in_place);

async fn a_changed_migration_is_refused(backend: Backend) {
    // The checksum is what ties a database to the files: an edited migration that a database
    // already applied stops start-up instead of silently diverging.
    let (url, _dir) = fresh_database(backend).await;
    let (pool, store) = open(&url).await;
    store.migrate().await.unwrap();
    let flip = match backend {
        Backend::Postgres => {
            "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea WHERE version = 3"
        }
        Backend::Sqlite => "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 3",
    };
    store.raw_execute(flip).await.unwrap();
    let err = store.migrate().await.expect_err("checksum mismatch");
    assert!(err.to_string().contains('3'), "{err}");
    close(pool, store).await;
}
both_backends!(a_changed_migration_is_refused);
