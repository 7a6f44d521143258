//! SCIM provisioning benchmark: 10,000 users and 200 groups pushed through the HTTP API of an
//! in-process broker, then `filter=userName eq` lookups at that size.
//!
//! Run: `cargo bench --bench scim_provision` (both back ends) or
//! `cargo bench --bench scim_provision -- postgres` / `-- sqlite`.
//! PostgreSQL comes from `AUTH_BROKER_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); a fresh database is created and dropped.
//!
//! Baselines measured in the same run, on the same database, so the figures can be read as
//! ratios on any machine: a raw single-row INSERT transaction at the same concurrency, and a
//! raw indexed SELECT by `user_name_lower`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use auth_broker::config::{Config, OrgConfig};
use auth_broker::crypto::secret::hash_str;
use auth_broker::service::bootstrap::BootstrapSecrets;
use serde_json::json;
use sqlx::{Connection, Executor};

const CONCURRENCY: usize = 32;

/// Sizes: the full benchmark under `cargo bench` (which passes `--bench`), a small smoke run
/// under `cargo test --all-targets` so the code path stays tested without the cost.
struct Sizes {
    users: usize,
    groups: usize,
    lookups: usize,
}

const TOKEN: &str = "ab_scim_bench_token_0123456789abcdef";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes = if args.iter().any(|a| a == "--bench") {
        Sizes {
            users: 10_000,
            groups: 200,
            lookups: 2_000,
        }
    } else {
        Sizes {
            users: 400,
            groups: 8,
            lookups: 100,
        }
    };
    let which: Vec<String> = args.into_iter().filter(|a| !a.starts_with('-')).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for backend in ["postgres", "sqlite"] {
        if which.is_empty() || which.iter().any(|w| w == backend) {
            rt.block_on(run(backend, &sizes));
        }
    }
}

async fn fresh_url(backend: &str) -> (String, Option<String>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ab-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    if backend == "sqlite" {
        return (
            format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
            None,
            dir,
        );
    }
    let admin = std::env::var("AUTH_BROKER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("ab_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL reachable");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create db");
    conn.close().await.ok();
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin.clone());
    (format!("{base}/{name}"), Some(name), dir)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(backend: &str, sizes: &Sizes) {
    let (users, groups, lookups) = (sizes.users, sizes.groups, sizes.lookups);
    let (url, pg_db, dir) = fresh_url(backend).await;
    let mut config = Config::default();
    config.storage.database_url = Some(url.clone());
    config.storage.data_dir = dir.clone();
    config.storage.max_connections = CONCURRENCY as u32;
    config.log.level = "error".into();
    config.orgs.insert(
        "bench".into(),
        OrgConfig {
            scim_token_hashes: vec![hash_str(TOKEN).to_string()],
            ..OrgConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let prepared = auth_broker::prepare(&config, BootstrapSecrets::default(), Some(addr))
        .await
        .expect("broker starts");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(auth_broker::serve(
        prepared,
        listener,
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(5),
    ));
    let base = format!("http://{addr}/scim/v2/bench");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");

    println!("== {backend} ==");
    // Users.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, base, next) = (http.clone(), base.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    break;
                }
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": format!("user{i:05}@bench.example"),
                    "externalId": format!("ext-{i}"),
                    "name": {"givenName": "User", "familyName": format!("N{i}")},
                    "emails": [{"value": format!("user{i:05}@bench.example"), "type": "work", "primary": true}],
                    "active": true
                });
                let r = http.post(format!("{base}/Users")).bearer_auth(TOKEN).json(&body).send().await.expect("send");
                assert_eq!(r.status(), 201, "create user {i}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let user_secs = started.elapsed().as_secs_f64();
    let creates_per_sec = users as f64 / user_secs;
    println!(
        "users: {users} created in {user_secs:.2}s = {creates_per_sec:.0} creates/s (concurrency {CONCURRENCY})"
    );

    // Groups: create, then push 50 members each by PATCH (as Okta Group Push does).
    let ids: Vec<String> = {
        let mut out = Vec::with_capacity(users);
        let mut start = 1;
        loop {
            let r: serde_json::Value = http
                .get(format!(
                    "{base}/Users?startIndex={start}&count=1000&attributes=id"
                ))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            let page = r["Resources"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                break;
            }
            out.extend(
                page.iter()
                    .filter_map(|u| u["id"].as_str().map(str::to_string)),
            );
            start += page.len();
        }
        out
    };
    assert_eq!(ids.len(), users, "paged listing returns every user");
    let ids = Arc::new(ids);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY.min(16) {
        let (http, base, next, ids) = (http.clone(), base.clone(), next.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                if g >= groups {
                    break;
                }
                let r: serde_json::Value = http
                    .post(format!("{base}/Groups"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"displayName": format!("group-{g:03}"), "members": []}))
                    .send()
                    .await
                    .expect("send")
                    .json()
                    .await
                    .expect("json");
                let gid = r["id"].as_str().expect("group id").to_string();
                let per = users / groups;
                let members: Vec<_> =
                    ids[g * per..(g + 1) * per].iter().map(|id| json!({"value": id})).collect();
                let r = http
                    .patch(format!("{base}/Groups/{gid}"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                  "Operations": [{"op": "add", "path": "members", "value": members}]}))
                    .send()
                    .await
                    .expect("patch");
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    println!(
        "groups: {groups} created with {} members each in {:.2}s",
        users / groups,
        started.elapsed().as_secs_f64()
    );

    // Filter lookups at this size, one client, sequential: latency per request.
    let mut lat = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let n = (i * 7919) % users;
        let t = Instant::now();
        let r = http
            .get(format!("{base}/Users?filter=userName%20eq%20%22user{n:05}%40bench.example%22&startIndex=1&count=100"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("lookup");
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.expect("json");
        lat.push(t.elapsed());
        assert_eq!(body["totalResults"], 1);
    }
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "filter userName eq: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms",
        ms(p50),
        ms(percentile(&lat, 0.95)),
        ms(p99)
    );

    // Baselines on the same database.
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(if backend == "sqlite" {
            1
        } else {
            CONCURRENCY as u32
        })
        .connect(&url)
        .await
        .expect("baseline pool");
    let mut base_lat = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let n = (i * 7919) % users;
        let t = Instant::now();
        let row = sqlx::query(
            "SELECT attributes FROM scim_users WHERE org_id = $1 AND user_name_lower = $2",
        )
        .bind("bench")
        .bind(format!("user{n:05}@bench.example"))
        .fetch_optional(&pool)
        .await
        .expect("select");
        base_lat.push(t.elapsed());
        assert!(row.is_some());
    }
    base_lat.sort();
    let base_p50 = percentile(&base_lat, 0.5);
    pool.execute("CREATE TABLE bench_baseline (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        .await
        .expect("baseline table");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (pool, next) = (pool.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    break;
                }
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO bench_baseline (id, body) VALUES ($1, $2)")
                    .bind(format!("row-{i}"))
                    .bind("{\"userName\":\"x\"}")
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let raw_inserts = users as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    println!(
        "baseline raw indexed SELECT: p50 {:.3} ms -> lookup/raw = {:.1}x",
        ms(base_p50),
        ms(p50) / ms(base_p50)
    );
    println!(
        "baseline raw INSERT txn: {raw_inserts:.0}/s -> SCIM create/raw insert = {:.2}",
        creates_per_sec / raw_inserts
    );
    println!(
        "targets: creates/s >= 1000 (postgres): {}; lookup p50 < 2 ms: {}",
        if backend == "postgres" {
            if creates_per_sec >= 1000.0 {
                "met"
            } else {
                "MISSED"
            }
        } else {
            "n/a"
        },
        if ms(p50) < 2.0 { "met" } else { "MISSED" }
    );

    let _ = stop_tx.send(());
    server.await.expect("server task").expect("server stops");
    if let Some(db) = pg_db {
        let admin = std::env::var("AUTH_BROKER_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE {db} WITH (FORCE)"
                )))
                .await;
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
