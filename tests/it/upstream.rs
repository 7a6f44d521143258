//! Upstream connectors end to end against a real authorization server (`oidc-provider`,
//! `upstream/peer.rs`): the broker mints each person's token there by ID-JAG + `jwt-bearer`,
//! by RFC 8693 token exchange, or from a one-time consent, keeps it fresh, survives the
//! AS's faults, and revokes upstream on offboarding through its durable outbox.

use std::time::Duration;

use auth_broker::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, Resp, TestServer, engineer_in_group, fresh_database, test_config,
    with_github, with_redis,
};

mod consent;
mod faults;
mod idp_exchange;
mod offboarding;
pub mod peer;
mod strategies;

use peer::{CLIENT_ID, CLIENT_SECRET, UpstreamAs};

/// A broker (PostgreSQL + Redis), the upstream AS, and one entitled engineer.
pub struct Setup {
    pub s: TestServer,
    pub up: UpstreamAs,
    pub user: String,
    pub config: Config,
}

/// The broker's config: the test defaults plus `margin` seconds of early refresh.
pub async fn broker_config(margin: u64) -> Config {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    cfg.broker.refresh_margin_secs = margin;
    // Timing-sensitive tests decide when tokens are renewed; the refresher's own test turns
    // it on.
    cfg.upstream.refresher_interval_ms = 0;
    cfg.upstream.revocation_interval_ms = 200;
    cfg
}

/// Starts the broker and the AS, declares connector `linear` with `strategy` and `upstream`
/// (merged over the AS's issuer and the broker's client), grants it to Engineering.
pub async fn setup(strategy: &str, upstream: Value, access_ttl: u64, margin: u64) -> Setup {
    setup_with(broker_config(margin).await, strategy, upstream, access_ttl).await
}

/// As [`setup`], with a prepared broker config.
pub async fn setup_with(config: Config, strategy: &str, upstream: Value, access_ttl: u64) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    setup_on(listener, config, strategy, upstream, access_ttl).await
}

/// As [`setup_with`], the broker on a listener bound beforehand.
pub async fn setup_on(
    listener: tokio::net::TcpListener,
    config: Config,
    strategy: &str,
    upstream: Value,
    access_ttl: u64,
) -> Setup {
    let broker = format!("http://{}", listener.local_addr().unwrap());
    let up = UpstreamAs::start(&broker, access_ttl).await;
    let s = TestServer::start_on(listener, Backend::Postgres, config.clone()).await;
    declare(&s, &up, "linear", strategy, upstream).await;
    let (user, _) = engineer_in_group(&s, "ann@acme.example").await;
    Setup {
        s,
        up,
        user,
        config,
    }
}

/// Declares an upstream connector through the admin API and grants it to Engineering.
pub async fn declare(s: &TestServer, up: &UpstreamAs, id: &str, strategy: &str, extra: Value) {
    let mut upstream = json!({"issuer": up.issuer, "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET});
    if let (Some(u), Some(e)) = (upstream.as_object_mut(), extra.as_object()) {
        u.extend(e.clone());
    }
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/connectors",
            Some(
                json!({"id": id, "strategy": strategy, "audience": "https://api.linear.example",
                "scopes": ["read", "write"], "upstream": upstream}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/grants",
            Some(
                json!({"group": "Engineering", "connector": id, "scopes": ["read", "write"],
                "actions": {"read": "allow", "write": "allow", "delete": "blocked"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

/// A gateway's vend of `connector` for `user`.
pub async fn vend(s: &TestServer, user: &str, connector: &str) -> Resp {
    s.gateway(
        ACME_GATEWAY,
        Method::POST,
        "/internal/v1/token",
        Some(json!({"org": "acme", "user": {"id": user}, "connector": connector})),
    )
    .await
}

/// Vends and asserts 200; the access token.
pub async fn vend_ok(s: &TestServer, user: &str, connector: &str) -> String {
    let r = vend(s, user, connector).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let token = r.body["access_token"].as_str().unwrap().to_string();
    // An upstream token is opaque: the log tripwire knows it by value from now on.
    crate::log_capture::register(&token);
    token
}

/// Waits until `check` holds (the outbox works in the background), up to `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
