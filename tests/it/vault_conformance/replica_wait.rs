//! The replica wait on any deployment with a replica behind the user's master (Sentinel, or
//! Cluster with replicas): a revocation answers only once that replica holds it; with the
//! replica stalled it is refused (in force on the master, unconfirmed) after the wait; the
//! retry after the replica resumes is confirmed.

use std::time::{Duration, Instant};

use auth_broker::domain::vault::{CasOutcome, Vault, VaultError};
use auth_broker::domain::{OrgId, UserId};
use auth_broker::store::vault_redis::RedisVault;

use super::sentinel::{OP, RECOVERY_BOUND, SLACK, put_confirmed};
use super::{projection, revoke};
use crate::redis_fixture::RedisServer;

/// The vault's replica wait (`REPLICA_WAIT`).
const REPLICA_WAIT: Duration = Duration::from_millis(500);

/// A field of `key` as the replica on `port` holds it. `READONLY` first, so that a cluster
/// replica answers itself (elsewhere it is refused and changes nothing).
pub(super) async fn on_replica(port: u16, key: &str, field: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: Result<(), _> = redis::cmd("READONLY").query_async(&mut conn).await;
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The user's vault key.
pub(super) fn user_key(org: &OrgId, user: &UserId) -> String {
    format!("ab:{{{org}/{user}}}")
}

/// Runs the scenario for `user` of `org`, whose projection (epoch 1, entitled to `github`
/// and `slack`) is already written and whose master's replica is `replica`. Leaves the user
/// inactive at epoch 3 with no token, confirmed on the replica; returns how long the refused
/// revocation took.
pub(super) async fn revocations_wait_for(
    v: &RedisVault,
    org: &OrgId,
    user: &UserId,
    replica: &RedisServer,
) -> Duration {
    let key = user_key(org, user);
    for c in ["github", "slack"] {
        let stored = v.store_token(org, user, c, 1, b"sealed").await.unwrap();
        assert_eq!(stored, CasOutcome::Stored);
    }

    // Acknowledged: already on the replica when the call returns.
    let (epoch, _) = revoke(v, org, user, &projection(true, 1, &[("slack", &[])]))
        .await
        .unwrap();
    assert_eq!(epoch, 2);
    assert_eq!(
        on_replica(replica.port, &key, "_e").await.as_deref(),
        Some("2")
    );
    assert_eq!(on_replica(replica.port, &key, "t:github").await, None);
    let stored = v
        .store_token(org, user, "slack", 2, b"sealed")
        .await
        .unwrap();
    assert_eq!(stored, CasOutcome::Stored);

    // The replica stalls: the next revocation is in force on the master but not confirmed.
    replica.pause();
    let started = Instant::now();
    let refused = revoke(v, org, user, &projection(false, 2, &[])).await;
    let took = started.elapsed();
    replica.resume();
    match &refused {
        Err(VaultError::Unavailable(m)) => {
            assert!(m.contains("acknowledged by 0 of 1 replicas"), "{m}")
        }
        other => panic!("a revocation the replica did not take was answered: {other:?}"),
    }
    // Held for the replica wait, then refused within the call limit.
    assert!(took >= REPLICA_WAIT, "refused after only {took:?}");
    assert!(
        took < REPLICA_WAIT + OP + SLACK,
        "the refusal took {took:?}"
    );
    let read = v.read(org, user, "slack").await.unwrap();
    assert_eq!(read.projection.as_ref().map(|p| p.active), Some(false));
    assert_eq!(read.sealed, None, "in force on the master all the same");

    // The retry (the IdP's, after the 503) is confirmed once the replica runs again.
    let epoch = put_confirmed(v, org, user, &projection(false, 3, &[])).await;
    assert_eq!(epoch, 3);
    assert_eq!(
        on_replica(replica.port, &key, "_e").await.as_deref(),
        Some("3")
    );
    assert_eq!(on_replica(replica.port, &key, "t:slack").await, None);
    took
}

/// After the master's crash: once the vault reads again (within the recovery bound), the user
/// is still revoked there: inactive at epoch 3, with no token back.
pub(super) async fn revocation_survives_the_crash(v: &RedisVault, org: &OrgId, user: &UserId) {
    let after = async {
        loop {
            if let Ok(r) = v.read(org, user, "slack").await {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let r = tokio::time::timeout(RECOVERY_BOUND, after)
        .await
        .expect("the vault reads from the promoted replica");
    assert_eq!(r.sealed, None, "no token came back");
    assert_eq!(r.projection.map(|p| (p.active, p.epoch)), Some((false, 3)));
}
