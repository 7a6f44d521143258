//! The upstream's faults, injected by the AS peer: slow answers and 500s (a still-valid token
//! keeps being served, else 502 with the upstream's code), permanent 4xx (no retry storm),
//! the circuit breaker (one dead provider slows no other), a missing `expires_in`, a missing
//! refresh token (the stored one is never replaced by nothing), a refresh token rotated by
//! another replica (re-read before the grant is declared dead), and the rate budget (one
//! wave, one broker or two sharing it).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use super::{UpstreamAs, declare, setup, vend, vend_ok};
use crate::support::{Backend, TestServer, engineer_in_group};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_failing_upstream_keeps_a_still_valid_token_served_and_502s_otherwise() {
    let t = setup("id_jag", json!({"timeout_ms": 500}), 6, 3).await;
    let token = vend_ok(&t.s, &t.user, "linear").await;
    tokio::time::sleep(Duration::from_millis(3200)).await;

    // Inside the refresh margin, unexpired: the AS times out, the token is still served.
    t.up.fault(json!({"mode": "slow", "ms": 3000})).await;
    let started = Instant::now();
    assert_eq!(vend_ok(&t.s, &t.user, "linear").await, token);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    t.up.fault(json!({"mode": "error500"})).await;
    assert_eq!(vend_ok(&t.s, &t.user, "linear").await, token);

    // Someone without a token gets 502 with the upstream's own code.
    let (bob, _) = engineer_in_group(&t.s, "bob@acme.example").await;
    let r = vend(&t.s, &bob, "linear").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert_eq!(r.body["code"], "upstream_error");
    assert_eq!(r.body["upstream_error"], "server_error", "{:?}", r.body);

    // A permanent refusal is not retried: one request per vend.
    t.up.fault(json!({"mode": "invalid_grant"})).await;
    t.up.reset_stats().await;
    let r = vend(&t.s, &bob, "linear").await;
    assert_eq!(r.body["upstream_error"], "invalid_grant", "{:?}", r.body);
    let stats = t.up.stats().await;
    assert_eq!(stats["faults_applied"], 1, "no retry storm: {stats}");
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_provider_opens_its_circuit_and_slows_no_other_connector() {
    let t = setup("id_jag", json!({"timeout_ms": 300}), 120, 60).await;
    let other = UpstreamAs::start(&t.s.base(), 120).await;
    declare(&t.s, &other, "wiki", "id_jag", json!({"timeout_ms": 300})).await;

    t.up.fault(json!({"mode": "error500"})).await;
    for _ in 0..5 {
        let r = vend(&t.s, &t.user, "linear").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    }
    // Open: answered at once, without a request to the dead provider.
    t.up.reset_stats().await;
    let started = Instant::now();
    let r = vend(&t.s, &t.user, "linear").await;
    assert_eq!(r.body["upstream_error"], "circuit_open", "{:?}", r.body);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(t.up.stats().await["faults_applied"], 0);
    // The other provider is unaffected.
    let started = Instant::now();
    vend_ok(&t.s, &t.user, "wiki").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    other.stop().await;
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_expires_in_gets_the_connectors_lifetime() {
    let t = setup("id_jag", json!({"default_token_ttl_secs": 900}), 120, 60).await;
    t.up.fault(json!({"mode": "drop_expires_in", "count": 1}))
        .await;
    let r = vend(&t.s, &t.user, "linear").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let expires = time::OffsetDateTime::parse(
        r.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = (expires - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (880..=900).contains(&left),
        "{left} s left, not the AS's 120"
    );
    t.up.stop().await;
    t.s.stop().await;
}

/// The user's stored grant version, read from the system of record.
async fn grant_version(database_url: &str) -> Option<i64> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(database_url).await.unwrap();
    sqlx::query_scalar("SELECT version FROM upstream_grants WHERE connector_id = 'linear'")
        .fetch_optional(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_refresh_token_never_replaces_the_stored_one() {
    let t = setup("token_exchange", json!({}), 6, 3).await;
    vend_ok(&t.s, &t.user, "linear").await;
    let v1 = grant_version(&t.s.database_url).await.expect("a grant");
    tokio::time::sleep(Duration::from_millis(3200)).await;

    // The AS rotates but its answer loses the new refresh token: the stored one stays.
    t.up.fault(json!({"mode": "drop_refresh_token", "count": 1}))
        .await;
    vend_ok(&t.s, &t.user, "linear").await;
    assert_eq!(
        grant_version(&t.s.database_url).await,
        Some(v1),
        "not overwritten"
    );

    // The kept token was consumed at the AS: using it is a reuse, the AS ends the family,
    // the broker finds the same grant refused on a fresh read and declares it dead. For
    // token exchange nobody's consent is needed: a new exchange replaces it. Never broken.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    vend_ok(&t.s, &t.user, "linear").await;
    let stats = t.up.stats().await;
    assert_eq!(stats["reuse_detected"], 1, "{stats}");
    assert_eq!(stats["token_exchange"], 2, "{stats}");
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_rotated_by_another_replica_is_re_read_not_declared_dead() {
    let t = setup("token_exchange", json!({}), 6, 3).await;
    vend_ok(&t.s, &t.user, "linear").await;
    tokio::time::sleep(Duration::from_millis(3200)).await;

    // The refresh is answered invalid_grant after 1.5 s; meanwhile another replica stores a
    // newer grant (simulated by moving the version in the system of record).
    t.up.fault(json!({"mode": "invalid_grant", "count": 1, "ms": 1500}))
        .await;
    let (s, user) = (&t.s, t.user.clone());
    let vending = async { vend(s, &user, "linear").await };
    let bump = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&t.s.database_url)
            .await
            .unwrap();
        sqlx::query("UPDATE upstream_grants SET version = version + 1")
            .execute(&mut c)
            .await
            .unwrap();
    };
    let (r, ()) = tokio::join!(vending, bump);
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Re-read and refreshed with the grant it found, not written off and re-exchanged.
    let stats = t.up.stats().await;
    assert_eq!(
        (stats["refreshes"].clone(), stats["token_exchange"].clone()),
        (json!(1), json!(1)),
        "{stats}"
    );
    t.up.stop().await;
    t.s.stop().await;
}

/// A broker config whose rate budget is 5 calls a second after a burst of 5.
async fn five_a_second() -> auth_broker::config::Config {
    let mut config = super::broker_config(60).await;
    config.upstream.rate_per_second = 5.0;
    config.upstream.rate_burst = 5;
    config
}

/// Twelve people's first vends at once, the `i`th through `brokers[i % n]`: all succeed,
/// each made one `jwt-bearer` call, and seven calls beyond the burst at 5 a second took at
/// least 1.4 s, not all at once.
async fn a_wave_is_spread(t: &super::Setup, brokers: &[&TestServer]) {
    let mut people = vec![t.user.clone()];
    for i in 0..11 {
        people.push(
            engineer_in_group(&t.s, &format!("wave-{i}@acme.example"))
                .await
                .0,
        );
    }
    let started = Instant::now();
    let vends = people
        .iter()
        .enumerate()
        .map(|(i, p)| vend(brokers[i % brokers.len()], p, "linear"));
    let answers = futures_util::future::join_all(vends).await;
    let took = started.elapsed();
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    assert_eq!(t.up.stats().await["jwt_bearer"], 12);
    assert!(took >= Duration::from_millis(1300), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_mints_stays_within_the_upstreams_rate_budget() {
    // The burst goes at once, the rest wait their turn (within the 2 s a caller may wait).
    let t = super::setup_with(five_a_second().await, "id_jag", json!({}), 120).await;
    a_wave_is_spread(&t, &[&t.s]).await;
    t.up.stop().await;
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_sharing_redis_draw_on_one_rate_budget() {
    // The provider limits the sum of every replica's calls: six vends on each of two brokers
    // share one budget. (A budget per broker lets 10 go at once: 0.4 s, measured.)
    let mut config = five_a_second().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // One issuer for both replicas: the AS trusts the first one's URL.
    config.broker.issuer = Some(format!("http://{}", listener.local_addr().unwrap()));
    let t = super::setup_on(listener, config.clone(), "id_jag", json!({}), 120).await;
    let second = TestServer::start_with(Backend::Postgres, config).await;
    a_wave_is_spread(&t, &[&t.s, &second]).await;
    second.stop().await;
    t.up.stop().await;
    t.s.stop().await;
}
