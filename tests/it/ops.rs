//! Operations: health, readiness, and the database going away and coming back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{
    Backend, CutProxy, TestServer, admin_database_url, fresh_database, test_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = s
        .http
        .get(format!("{}/healthz", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .http
        .get(format!("{}/readyz", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().get("x-request-id").is_some(),
        "every response carries a request id"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_503_and_recovers() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    // Route the broker's connections through a proxy the test can cut.
    let upstream: std::net::SocketAddr = {
        let admin = admin_database_url();
        let hostport = admin
            .split('@')
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        tokio::net::lookup_host(hostport)
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = CutProxy::start(upstream).await;
    let proxied = url.replacen(&upstream.to_string(), &proxy.addr.to_string(), 1);
    assert_ne!(proxied, url, "database URL must name {upstream}");
    let s = TestServer::start_with(Backend::Postgres, test_config(&proxied, &dir)).await;
    let acme = s.acme();
    let id = acme.create_user("outage@acme.example").await;

    proxy.cut().await;
    let started = Instant::now();
    let r = acme.get(&format!("/Users/{id}")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["status"], "503");
    let r = acme
        .post(
            "/Users",
            serde_json::json!({"userName": "during@acme.example"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    let r = s
        .http
        .get(format!("{}/readyz", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "errors come fast, not after a hang"
    );
    // Liveness is unaffected.
    let r = s
        .http
        .get(format!("{}/healthz", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s
            .http
            .get(format!("{}/readyz", s.base()))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        acme.get(&format!("/Users/{id}")).await.status,
        StatusCode::OK
    );
    // Nothing was half-written during the outage.
    let r = acme
        .get("/Users?filter=userName+eq+%22during%40acme.example%22")
        .await;
    assert_eq!(r.body["totalResults"], 0);
    s.stop().await;
}

/// Connections to `database` the server holds open, as PostgreSQL counts them.
async fn open_connections(admin: &mut sqlx::PgConnection, database: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .fetch_one(admin)
        .await
        .unwrap()
}

/// An offboarding must not wait for a new database connection (a TLS handshake and a server
/// process start): the pool opens `storage.min_connections` at start, while idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_keeps_idle_connections_open() {
    use sqlx::Connection;
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let database = url.rsplit('/').next().unwrap().to_string();
    let mut config = test_config(&url, &dir);
    config.storage.min_connections = Some(3);
    let s = TestServer::start_with(Backend::Postgres, config).await;
    let mut admin = sqlx::PgConnection::connect(&admin_database_url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open = open_connections(&mut admin, &database).await;
    while open < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = open_connections(&mut admin, &database).await;
    }
    assert!(open >= 3, "{open} connections open while idle, expected 3");
    s.stop().await;
}
