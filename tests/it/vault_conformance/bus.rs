//! The event bus: what one replica publishes, every replica receives, on Redis standalone,
//! Redis Cluster, Redis Sentinel and in-process.

use std::time::Duration;

use auth_broker::domain::OrgId;
use auth_broker::domain::vault::{BusEvent, EventBus};
use auth_broker::store::vault_memory::MemoryBus;
use auth_broker::store::vault_redis::{RedisBus, RedisVault};

use super::{OP_TIMEOUT, fresh_org};
use crate::redis_fixture::sentinel as sentinel_fixture;
use crate::redis_fixture::{cluster, redis_url, require_reachable, standalone_vault};

pub(super) fn event(org: &OrgId, n: usize) -> BusEvent {
    BusEvent {
        kind: "token.revoked".into(),
        org: org.as_str().into(),
        user_id: Some(format!("user-{n}")),
        connectors: vec!["github".into()],
        // Past 2^53: the epoch crosses the bus exactly.
        epoch: (1u64 << 53) + n as u64,
        at_ms: 1_700_000_000_000 + n as i64,
        jti: n.is_multiple_of(2).then(|| format!("jti-{n}")),
    }
}

/// Receives the next event of `org` (the channel is shared with concurrent tests).
pub(super) async fn next_of(
    rx: &mut tokio::sync::broadcast::Receiver<BusEvent>,
    org: &OrgId,
) -> BusEvent {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if e.org == org.as_str() => return e,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("bus closed: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("event delivered within 5 s")
}

/// Two bus clients stand for two replicas: what one publishes, both receive.
pub(super) async fn two_replicas(publisher: &RedisBus, other: &RedisBus) {
    for bus in [publisher, other] {
        assert!(bus.wait_subscribed(Duration::from_secs(5)).await, "{bus:?}");
    }
    let org = fresh_org();
    let (mut rx_other, mut rx_self) = (other.subscribe(), publisher.subscribe());
    for n in 0..3 {
        publisher.publish(&event(&org, n)).await.unwrap();
    }
    for n in 0..3 {
        assert_eq!(next_of(&mut rx_other, &org).await, event(&org, n));
        assert_eq!(next_of(&mut rx_self, &org).await, event(&org, n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_bus_redis_standalone() {
    let vault = standalone_vault(OP_TIMEOUT).await;
    let a = RedisBus::connect(&redis_url(), OP_TIMEOUT).await.unwrap();
    let b = RedisBus::attach(&vault).await;
    two_replicas(&a, &b).await;
    two_replicas(&b, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_bus_redis_cluster() {
    let c = cluster().await;
    // Different first seeds: the two subscriptions sit on different nodes.
    let a = RedisBus::connect(&c.url_from(0), OP_TIMEOUT).await.unwrap();
    let b = RedisBus::connect(&c.url_from(1), OP_TIMEOUT).await.unwrap();
    two_replicas(&a, &b).await;
    two_replicas(&b, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_bus_redis_sentinel() {
    let s = sentinel_fixture().await;
    let vault = RedisVault::connect(&s.url(), OP_TIMEOUT).await.unwrap();
    require_reachable(&vault).await;
    let a = RedisBus::connect(&s.url(), OP_TIMEOUT).await.unwrap();
    let b = RedisBus::attach(&vault).await;
    two_replicas(&a, &b).await;
    two_replicas(&b, &a).await;
}

#[tokio::test]
async fn vault_bus_memory() {
    let bus = MemoryBus::new();
    let org = fresh_org();
    // Publishing with nobody listening is fine.
    bus.publish(&event(&org, 0)).await.unwrap();
    let (mut r1, mut r2) = (bus.subscribe(), bus.subscribe());
    bus.publish(&event(&org, 1)).await.unwrap();
    assert_eq!(next_of(&mut r1, &org).await, event(&org, 1));
    assert_eq!(next_of(&mut r2, &org).await, event(&org, 1));
}
