//! The Redis vault and bus through outages: calls fail fast while Redis is gone and service
//! comes back by itself when it returns (standalone, one cluster master, the subscription).

use std::time::{Duration, Instant};

use auth_broker::domain::vault::{CasOutcome, EventBus, Vault, VaultError};
use auth_broker::domain::{OrgId, UserId};
use auth_broker::store::vault_redis::{RedisBus, RedisVault};

use super::bus::{event, two_replicas};
use super::{fresh_org, projection, put_projection};
use crate::redis_fixture::{
    RedisServer, free_port, private_cluster, require_reachable, wait_cluster_ok,
};

/// Fails within `limit` with `Unavailable`; returns how long it took.
pub(super) async fn assert_unavailable_fast(
    v: &RedisVault,
    org: &OrgId,
    limit: Duration,
) -> Duration {
    let user = UserId::generate();
    let started = Instant::now();
    let r = v.read(org, &user, "github").await;
    let took = started.elapsed();
    assert!(matches!(r, Err(VaultError::Unavailable(_))), "{r:?}");
    assert!(took < limit, "took {took:?}");
    let started = Instant::now();
    let r = v.store_token(org, &user, "github", 1, b"x").await;
    assert!(matches!(r, Err(VaultError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    took
}

/// Polls `ping` until it answers; returns how long that took.
async fn recovery_time(v: &RedisVault, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if v.ping().await.is_ok() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "no recovery within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_outage_fails_fast_and_recovers() {
    let op = Duration::from_millis(100);
    let limit = Duration::from_millis(500);
    let port = crate::redis_fixture::fixture_port();
    let org = fresh_org();
    let user = UserId::generate();

    // Nothing listens yet: the vault is built anyway and fails fast.
    let v = RedisVault::connect(&format!("redis://127.0.0.1:{port}"), op)
        .await
        .unwrap();
    let cold = assert_unavailable_fast(&v, &org, limit).await;

    // Redis appears: the vault connects by itself.
    let mut server = RedisServer::start(port).unwrap();
    let first_up = recovery_time(&v, Duration::from_secs(5)).await;
    put_projection(&v, &org, &user, &projection(true, 1, &[]))
        .await
        .unwrap();

    // Redis crashes: every call fails fast, repeatedly.
    server.kill();
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        worst = worst.max(assert_unavailable_fast(&v, &org, limit).await);
    }

    // Redis returns (empty: no persistence): the vault recovers by itself, and the scripts
    // are reloaded after NOSCRIPT.
    let _server = RedisServer::start(port).unwrap();
    let recovered = recovery_time(&v, Duration::from_secs(5)).await;
    assert_eq!(
        put_projection(&v, &org, &user, &projection(true, 4, &[]))
            .await
            .unwrap(),
        4,
        "the restarted server kept nothing: a new projection"
    );
    assert_eq!(
        v.store_token(&org, &user, "github", 4, b"t").await.unwrap(),
        CasOutcome::Stored
    );

    // A long outage outlasts a reconnection round (about 4 s): probes keep failing fast,
    // and the vault still recovers by itself once Redis is back.
    drop(_server);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(6) {
        worst = worst.max(assert_unavailable_fast(&v, &org, limit).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _server = RedisServer::start(port).unwrap();
    let recovered_long = recovery_time(&v, Duration::from_secs(5)).await;
    assert_eq!(
        put_projection(&v, &org, &user, &projection(true, 1, &[]))
            .await
            .unwrap(),
        1
    );
    eprintln!(
        "redis outage: cold failure {cold:?}, first connect {first_up:?} after start, \
         worst failure while down {worst:?}, recovery {recovered:?} after restart, \
         {recovered_long:?} after a 6 s outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_cluster_unreachable_fails_fast() {
    let url = format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
        free_port(),
        free_port()
    );
    let v = RedisVault::connect(&url, Duration::from_millis(100))
        .await
        .unwrap();
    assert_unavailable_fast(&v, &fresh_org(), Duration::from_millis(500)).await;
    let started = Instant::now();
    assert!(matches!(v.ping().await, Err(VaultError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// One master of a cluster crashes: its users fail fast, the others keep being served, and
/// when it returns the vault uses it again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_cluster_node_outage() {
    let (c, mut nodes) = private_cluster().await;
    let v = RedisVault::connect(&c.url(), Duration::from_millis(100))
        .await
        .unwrap();
    require_reachable(&v).await;
    let org = fresh_org();
    let users: Vec<UserId> = (0..30).map(|_| UserId::generate()).collect();
    for u in &users {
        put_projection(&v, &org, u, &projection(true, 1, &[]))
            .await
            .unwrap();
    }
    nodes[2].kill();
    let killed = Instant::now();
    let (mut served, mut refused, mut worst) = (0, 0, Duration::ZERO);
    for u in &users {
        let started = Instant::now();
        match v.read(&org, u, "github").await {
            Ok(r) => {
                assert_eq!(r.projection.map(|p| p.epoch), Some(1));
                served += 1;
            }
            Err(VaultError::Unavailable(_)) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
        worst = worst.max(started.elapsed());
    }
    eprintln!(
        "cluster node down: {served} users served, {refused} refused, worst {worst:?}, {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
    assert!(worst < Duration::from_millis(500), "worst {worst:?}");

    nodes[2].restart().unwrap();
    let restarted = Instant::now();
    // The node answers CLUSTERDOWN until it has rejoined (Redis needs a moment); what is
    // measured here is how fast the vault follows once the node serves again.
    let port = c.ports[2];
    tokio::task::spawn_blocking(move || wait_cluster_ok(port, Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    let rejoined = restarted.elapsed();
    let node_ok = Instant::now();
    loop {
        let mut ok = 0;
        for u in &users {
            if v.read(&org, u, "github").await.is_ok() {
                ok += 1;
            }
        }
        if ok == users.len() {
            break;
        }
        assert!(
            node_ok.elapsed() < Duration::from_secs(3),
            "only {ok} users served 3 s after the node rejoined"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "cluster node back: rejoined {rejoined:?} after restart, every user served {:?} later",
        node_ok.elapsed()
    );
    require_reachable(&v).await;
}

/// The subscription comes back by itself after Redis restarts, and events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_bus_redis_resubscribes_after_outage() {
    let port = crate::redis_fixture::fixture_port();
    let mut server = RedisServer::start(port).unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let op = Duration::from_millis(100);
    let (a, b) = (
        RedisBus::connect(&url, op).await.unwrap(),
        RedisBus::connect(&url, op).await.unwrap(),
    );
    two_replicas(&a, &b).await;

    server.kill();
    let org = fresh_org();
    let started = Instant::now();
    assert!(matches!(
        a.publish(&event(&org, 0)).await,
        Err(VaultError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(500));
    let lost = Instant::now();
    while b.is_subscribed() {
        assert!(lost.elapsed() < Duration::from_secs(5), "loss not noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    server.restart().unwrap();
    let back = Instant::now();
    assert!(b.wait_subscribed(Duration::from_secs(5)).await);
    let resubscribed = back.elapsed();
    // Publishing recovers through the command connection's own reconnection.
    let publish_deadline = Instant::now() + Duration::from_secs(5);
    while a.publish(&event(&org, 0)).await.is_err() {
        assert!(Instant::now() < publish_deadline, "publish did not recover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    two_replicas(&a, &b).await;
    eprintln!("bus outage: resubscribed {resubscribed:?} after restart");
}
