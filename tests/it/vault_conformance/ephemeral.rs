//! The ephemeral store (sign-in state, sessions, replay caches) against the in-process store,
//! Redis standalone, Redis Cluster and Redis Sentinel.

use std::sync::Arc;
use std::time::Duration;

use auth_broker::domain::rate::RateLimit;
use auth_broker::store::vault_memory::MemoryVault;
use auth_broker::store::vault_redis::RedisVault;

use super::OP_TIMEOUT;
use crate::redis_fixture::sentinel as sentinel_fixture;
use crate::redis_fixture::{cluster, require_reachable, standalone_vault};

/// The ephemeral store contract: values expire, `take` hands a value out once, `claim`
/// succeeds once per key while it lives (sign-in state, sessions, replay caches rely on it).
async fn ephemeral_conformance(e: Arc<dyn auth_broker::domain::vault::Ephemeral>) {
    let ns = format!("ab:test-eph:{}", rand::random::<u64>());
    let k = |n: &str| format!("{ns}:{n}");
    let ttl = Duration::from_secs(30);

    e.put(&k("a"), b"one", ttl).await.unwrap();
    assert_eq!(e.get(&k("a")).await.unwrap().as_deref(), Some(&b"one"[..]));
    e.put(&k("a"), b"two", ttl).await.unwrap();
    assert_eq!(e.get(&k("a")).await.unwrap().as_deref(), Some(&b"two"[..]));
    e.remove(&k("a")).await.unwrap();
    assert_eq!(e.get(&k("a")).await.unwrap(), None);

    // Twenty concurrent takers: exactly one gets the value.
    e.put(&k("state"), b"s", ttl).await.unwrap();
    let takers: Vec<_> = (0..20)
        .map(|_| {
            let (e, key) = (e.clone(), k("state"));
            tokio::spawn(async move { e.take(&key).await.unwrap() })
        })
        .collect();
    let mut got = 0;
    for t in takers {
        got += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(got, 1, "a taken value is handed out once");

    // Twenty concurrent claims: exactly one wins.
    let claims: Vec<_> = (0..20)
        .map(|_| {
            let (e, key) = (e.clone(), k("assertion"));
            tokio::spawn(async move { e.claim(&key, ttl).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for c in claims {
        won += usize::from(c.await.unwrap());
    }
    assert_eq!(won, 1, "a key is claimed once");

    // Expiry.
    e.put(&k("short"), b"x", Duration::from_millis(50))
        .await
        .unwrap();
    assert!(
        e.claim(&k("short-claim"), Duration::from_millis(50))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(e.get(&k("short")).await.unwrap(), None);
    assert_eq!(e.take(&k("short")).await.unwrap(), None);
    assert!(
        e.claim(&k("short-claim"), ttl).await.unwrap(),
        "an expired claim can be made again"
    );

    // Locks with an owner token: one holder among twenty, only the holder renews or releases,
    // and a lapsed lock is free for the next owner while the old one can no longer renew.
    let lockers: Vec<_> = (0..20)
        .map(|i| {
            let (e, key) = (e.clone(), k("lock"));
            tokio::spawn(async move { (i, e.lock(&key, &format!("o{i}"), ttl).await.unwrap()) })
        })
        .collect();
    let mut holders = Vec::new();
    for l in lockers {
        let (i, got) = l.await.unwrap();
        if got {
            holders.push(format!("o{i}"));
        }
    }
    assert_eq!(holders.len(), 1, "one holder: {holders:?}");
    let holder = &holders[0];
    assert!(!e.renew(&k("lock"), "intruder", ttl).await.unwrap());
    e.unlock(&k("lock"), "intruder").await.unwrap();
    assert!(
        !e.lock(&k("lock"), "intruder", ttl).await.unwrap(),
        "not released by another"
    );
    assert!(e.renew(&k("lock"), holder, ttl).await.unwrap());
    e.unlock(&k("lock"), holder).await.unwrap();
    assert!(
        e.lock(&k("lock"), "next", Duration::from_millis(60))
            .await
            .unwrap()
    );
    assert!(
        e.renew(&k("lock"), "next", Duration::from_millis(60))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !e.renew(&k("lock"), "next", ttl).await.unwrap(),
        "a lapsed lock is not renewed"
    );
    assert!(
        e.lock(&k("lock"), "after", ttl).await.unwrap(),
        "a lapsed lock is free"
    );

    rate_budget_conformance(&e, &ns).await;
}

/// The rate budget replicas share: six callers at once against two at once and one a second,
/// waiting at most 2.5 s: two go now, two are told to wait their turn, two are refused and
/// reserve nothing; a stop (a 429's `Retry-After`) holds every caller; budgets of other keys
/// are untouched. (Seconds, so that a caller scheduled late on a busy machine changes no
/// count.)
async fn rate_budget_conformance(e: &Arc<dyn auth_broker::domain::vault::Ephemeral>, ns: &str) {
    let limit = RateLimit {
        interval: Duration::from_secs(1),
        burst: 2,
        max_wait: Duration::from_millis(2500),
    };
    let key = format!("{ns}:budget");
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let (e, key) = (e.clone(), key.clone());
            tokio::spawn(async move { e.reserve_rate(&key, &limit).await.unwrap() })
        })
        .collect();
    let mut granted = Vec::new();
    for c in callers {
        if let Some(wait) = c.await.unwrap() {
            granted.push(wait.as_millis());
        }
    }
    granted.sort_unstable();
    assert_eq!(granted.len(), 4, "{granted:?}");
    // Each caller's wait is counted from its own moment, a few milliseconds apart.
    for (got, want) in granted.iter().zip([0, 0, 1000, 2000]) {
        assert!(*got <= want && got + 500 >= want, "{granted:?}");
    }
    e.throttle_rate(&format!("{ns}:other"), None, &limit)
        .await
        .unwrap();
    let other = e
        .reserve_rate(&format!("{ns}:other"), &limit)
        .await
        .unwrap();
    assert!(other.is_some_and(|w| w <= limit.interval), "{other:?}");
    let fresh = e
        .reserve_rate(&format!("{ns}:fresh"), &limit)
        .await
        .unwrap();
    assert_eq!(fresh, Some(Duration::ZERO));
    e.throttle_rate(&key, Some(Duration::from_secs(5)), &limit)
        .await
        .unwrap();
    assert_eq!(e.reserve_rate(&key, &limit).await.unwrap(), None, "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemeral_memory() {
    ephemeral_conformance(Arc::new(MemoryVault::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemeral_redis_standalone() {
    ephemeral_conformance(Arc::new(standalone_vault(OP_TIMEOUT).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemeral_redis_cluster() {
    let c = cluster().await;
    let v = RedisVault::connect(&c.url(), OP_TIMEOUT).await.unwrap();
    require_reachable(&v).await;
    ephemeral_conformance(Arc::new(v)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemeral_redis_sentinel() {
    let s = sentinel_fixture().await;
    let v = RedisVault::connect(&s.url(), OP_TIMEOUT).await.unwrap();
    require_reachable(&v).await;
    ephemeral_conformance(Arc::new(v)).await;
}
