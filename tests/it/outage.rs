//! Redis going away under a serving broker, killed (a fresh empty server comes back) or hung
//! (`SIGSTOP`: connections stay open, nothing answers): every vend is refused with 503 within
//! the 200 ms, `/readyz` says 503, and service is back within a second of Redis
//! returning, with no wrong decision and no token served from a stale copy.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{
    Backend, TestServer, engineer_in_group as engineer, fresh_database, test_config, with_github,
    with_redis,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers() {
    redis_outage(Outage::Killed).await
}

/// A Redis that hangs (stopped with SIGSTOP: connections stay open, nothing answers) is met by
/// the operation timeout, not by a connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hang_fails_closed_and_recovers() {
    redis_outage(Outage::Frozen).await
}

/// How Redis goes away.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    /// SIGKILL, then a fresh empty server on the same port.
    Killed,
    /// SIGSTOP, then SIGCONT: the same server, data intact, after a silence.
    Frozen,
}

/// The bounds: each vend answers 503 within 200 ms while Redis is away, and service
/// is back within a second of Redis returning.
const OUTAGE_ANSWER: Duration = Duration::from_millis(200);
const OUTAGE_RECOVERY: Duration = Duration::from_secs(1);

async fn redis_outage(how: Outage) {
    let port = crate::redis_fixture::fixture_port();
    let mut redis = crate::redis_fixture::RedisServer::start(port).expect("redis starts");
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(
        with_github(test_config(&url, &dir)),
        &format!("redis://127.0.0.1:{port}"),
    );
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let (ann, _) = engineer(&s, "outage@acme.example").await;
    let r = s.vend(&ann).await;
    assert_eq!(r.status, StatusCode::OK);
    let before = r.body["access_token"].as_str().unwrap().to_string();

    match how {
        Outage::Killed => redis.kill(),
        Outage::Frozen => redis.pause(),
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let r = s.vend(&ann).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert_eq!(r.body["code"], "unavailable");
        assert!(r.body.get("access_token").is_none());
    }
    assert!(
        slowest < OUTAGE_ANSWER,
        "{how:?}: slowest 503 took {slowest:?}"
    );
    assert_eq!(s.readyz().await, StatusCode::SERVICE_UNAVAILABLE);

    let back = match how {
        // Redis comes back empty (nothing persisted): no wrong decision, tokens are re-minted.
        Outage::Killed => {
            redis.restart().expect("redis restarts");
            Instant::now()
        }
        Outage::Frozen => {
            redis.resume();
            Instant::now()
        }
    };
    let deadline = back + Duration::from_secs(3);
    let after = loop {
        let r = s.vend(&ann).await;
        if r.status == StatusCode::OK {
            break r.body["access_token"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "did not recover: {:?}", r.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let recovered = back.elapsed();
    assert!(
        recovered < OUTAGE_RECOVERY,
        "{how:?}: recovered in {recovered:?}"
    );
    match how {
        Outage::Killed => assert_ne!(after, before, "the empty vault re-minted"),
        Outage::Frozen => assert_eq!(after, before, "the vault kept its token"),
    }
    assert_eq!(s.readyz().await, StatusCode::OK);
    s.stop().await;
}
