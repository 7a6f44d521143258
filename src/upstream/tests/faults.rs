//! Upstream faults: RFC 6749 refusals against transient failures, timeouts, the per-origin
//! circuit breaker (opening, isolation, half-open recovery) and the rate budget.

use std::time::Instant;

use super::*;
use crate::domain::consent::TokenKind;

async fn refresh(c: &UpstreamClient, a: &TestAs) -> Result<TokenSet, UpstreamError> {
    token_at(c, a, &upstream(a), REFRESH).await
}

#[tokio::test]
async fn invalid_grant_is_refused_with_the_upstream_code() {
    let a = TestAs::start().await;
    a.on(
        "/token",
        Reply::json(
            400,
            json!({"error":"invalid_grant","error_description":"expired"}),
        ),
    );
    let e = refresh(&client(), &a).await.unwrap_err();
    assert_eq!(
        e,
        UpstreamError::Refused {
            status: 400,
            error: "invalid_grant".into(),
            description: Some("expired".into())
        }
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn an_error_in_a_200_answer_is_refused() {
    let a = TestAs::start().await;
    a.on("/token", Reply::json(200, json!({"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."})));
    let e = refresh(&client(), &a).await.unwrap_err();
    assert!(
        matches!(&e, UpstreamError::Refused { status: 200, error, .. } if error == "bad_verification_code"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_500_is_transient() {
    let a = TestAs::start().await;
    a.on("/token", Reply::empty(500));
    let e = refresh(&client(), &a).await.unwrap_err();
    assert_eq!((e.is_transient(), e.code()), (true, "server_error"));
    a.on(
        "/token",
        Reply::json(503, json!({"error":"temporarily_unavailable"})),
    );
    let e = refresh(&client(), &a).await.unwrap_err();
    assert_eq!(
        (e.is_transient(), e.code()),
        (true, "temporarily_unavailable")
    );
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_is_transient() {
    let a = TestAs::start().await;
    a.on("/token", Reply::token().after(Duration::from_secs(3)));
    let u = Upstream {
        timeout_ms: Some(100),
        ..upstream(&a)
    };
    let started = Instant::now();
    let e = token_at(&client(), &a, &u, REFRESH).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e, UpstreamError::transient("temporarily_unavailable"));
}

#[tokio::test]
async fn a_connection_refused_is_transient() {
    // Bind and drop: nothing listens on this port any more.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut ep = endpoints(&TestAs::start().await, Revocation::Rfc7009);
    ep.token_endpoint = format!("http://127.0.0.1:{port}/token").parse().unwrap();
    let s = secret();
    let u = Upstream::default();
    let e = client()
        .token(&u, &ep, &with_secret(&s), REFRESH)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn the_breaker_opens_for_one_upstream_only() {
    let dead = TestAs::start().await;
    let alive = TestAs::start().await;
    dead.on("/token", Reply::empty(502));
    alive.on("/token", Reply::token());
    let c = client_with(3, 10_000, BudgetOptions::default());
    for _ in 0..3 {
        assert_eq!(refresh(&c, &dead).await.unwrap_err().code(), "server_error");
    }
    assert_eq!(
        refresh(&c, &dead).await.unwrap_err(),
        UpstreamError::CircuitOpen
    );
    assert!(UpstreamError::CircuitOpen.is_transient());
    assert_eq!(dead.hits("/token"), 3, "an open circuit sends nothing");
    // Another connector's upstream is served as before, by the same client.
    for _ in 0..3 {
        refresh(&c, &alive).await.unwrap();
    }
    // Revocation goes through the breaker of its own origin: the dead one here.
    let s = secret();
    let out = c
        .revoke(
            &upstream(&dead),
            &endpoints(&dead, Revocation::Rfc7009),
            &with_secret(&s),
            "RT",
            TokenKind::RefreshToken,
        )
        .await;
    assert_eq!(
        out,
        RevokeOutcome::Failed {
            transient: true,
            error: "circuit_open".into()
        }
    );
}

#[tokio::test]
async fn refusals_prove_the_upstream_alive_and_never_open_the_circuit() {
    let a = TestAs::start().await;
    a.on("/token", Reply::json(400, json!({"error":"invalid_grant"})));
    let c = client_with(2, 10_000, BudgetOptions::default());
    for _ in 0..5 {
        assert_eq!(refresh(&c, &a).await.unwrap_err().code(), "invalid_grant");
    }
    assert_eq!(a.hits("/token"), 5);
}

#[tokio::test]
async fn half_open_lets_a_probe_through_and_recovers_or_reopens() {
    let a = TestAs::start().await;
    a.on("/token", Reply::empty(500));
    let c = client_with(2, 100, BudgetOptions::default());
    for _ in 0..2 {
        refresh(&c, &a).await.unwrap_err();
    }
    assert_eq!(
        refresh(&c, &a).await.unwrap_err(),
        UpstreamError::CircuitOpen
    );
    // After the open period the probe still fails: open again at once.
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(refresh(&c, &a).await.unwrap_err().code(), "server_error");
    assert_eq!(
        refresh(&c, &a).await.unwrap_err(),
        UpstreamError::CircuitOpen
    );
    assert_eq!(a.hits("/token"), 3);
    // The upstream recovers: the next probe succeeds and closes the circuit.
    a.on("/token", Reply::token());
    tokio::time::sleep(Duration::from_millis(120)).await;
    refresh(&c, &a).await.unwrap();
    refresh(&c, &a).await.unwrap();
    assert_eq!(a.hits("/token"), 5);
}

#[tokio::test]
async fn a_burst_beyond_the_budget_is_rate_limited_without_a_request() {
    let a = TestAs::start().await;
    a.on("/token", Reply::token());
    let budget = BudgetOptions {
        per_second: 5.0,
        burst: 2,
        max_wait: Duration::from_millis(50),
    };
    let c = client_with(5, 10_000, budget);
    refresh(&c, &a).await.unwrap();
    refresh(&c, &a).await.unwrap();
    assert_eq!(
        refresh(&c, &a).await.unwrap_err(),
        UpstreamError::RateLimited
    );
    assert_eq!(a.hits("/token"), 2);
    // Another origin has its own budget.
    let b = TestAs::start().await;
    b.on("/token", Reply::token());
    refresh(&c, &b).await.unwrap();
}

#[tokio::test]
async fn within_max_wait_a_caller_waits_for_its_token() {
    let a = TestAs::start().await;
    a.on("/token", Reply::token());
    let budget = BudgetOptions {
        per_second: 10.0,
        burst: 1,
        max_wait: Duration::from_millis(500),
    };
    let c = client_with(5, 10_000, budget);
    let started = Instant::now();
    let (x, y) = tokio::join!(refresh(&c, &a), refresh(&c, &a));
    x.unwrap();
    y.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.hits("/token"), 2);
}

#[tokio::test]
async fn a_429_with_retry_after_stops_the_budget_not_the_breaker() {
    let a = TestAs::start().await;
    a.on(
        "/token",
        Reply::json(429, json!({"error":"slow_down"})).with_header("retry-after", "1"),
    );
    a.on("/token", Reply::token());
    let budget = BudgetOptions {
        max_wait: Duration::from_millis(100),
        ..BudgetOptions::default()
    };
    // One failure would open this breaker: the 429 is not counted as one, so the second
    // call meets the stopped budget (not an open circuit) and sends nothing.
    let c = client_with(1, 10_000, budget);
    let e = refresh(&c, &a).await.unwrap_err();
    assert_eq!((e.is_transient(), e.code()), (true, "slow_down"));
    assert_eq!(
        refresh(&c, &a).await.unwrap_err(),
        UpstreamError::RateLimited
    );
    assert_eq!(a.hits("/token"), 1);
}
