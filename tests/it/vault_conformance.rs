//! One conformance suite for the `Vault` port, run against the in-process vault, Redis
//! standalone, Redis Sentinel and a three-master Redis Cluster; the `EventBus` across two
//! Redis clients (two replicas) and in-process; and the Redis vault's behaviour through an
//! outage (fails fast, recovers on its own). The ephemeral store is in `ephemeral`, the bus in
//! `bus`, outages in `outage`, Sentinel failovers in `sentinel`.

mod bus;
mod cluster;
mod ephemeral;
mod outage;
mod replica_wait;
mod sentinel;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use auth_broker::domain::vault::{CasOutcome, Projection, Vault, VaultError, VaultRead};
use auth_broker::domain::{OrgId, UserId};
use auth_broker::store::vault_memory::MemoryVault;
use auth_broker::store::vault_redis::RedisVault;
use tokio::sync::Barrier;

use crate::redis_fixture::sentinel as sentinel_fixture;
use crate::redis_fixture::{cluster, require_reachable, standalone_vault};

/// Generous for the conformance runs: they test semantics, not latency.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

fn fresh_org() -> OrgId {
    OrgId::new(format!("org-{}", uuid::Uuid::new_v4().simple()))
}

fn projection(active: bool, epoch: u64, connectors: &[(&str, &[&str])]) -> Projection {
    Projection {
        active,
        epoch,
        connectors: connectors
            .iter()
            .map(|(c, scopes)| {
                (
                    c.to_string(),
                    scopes.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Every check of the port's contract, each on its own fresh org.
async fn conformance(v: Arc<dyn Vault>) {
    v.ping().await.unwrap();
    unknown_user_reads_empty(&*v).await;
    projection_round_trips(&*v).await;
    store_token_is_compare_and_set(&*v).await;
    store_token_needs_a_projection(&*v).await;
    revoke_all_purges_and_bumps(&*v).await;
    revoke_listed_connectors_only(&*v).await;
    revoke_takes_the_higher_epoch(&*v).await;
    put_projection_never_lowers_the_epoch(&*v).await;
    orgs_are_independent(&*v).await;
    token_connectors_lists_stored_tokens(&*v).await;
    reserved_ids_are_rejected(&*v).await;
    epoch_range_is_enforced(&*v).await;
    for round in 0..5 {
        no_resurrection_race(v.clone(), round).await;
    }
}

async fn unknown_user_reads_empty(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    assert_eq!(
        v.read(&org, &user, "github").await.unwrap(),
        VaultRead::default()
    );
    assert!(v.token_connectors(&org, &user).await.unwrap().is_empty());
}

async fn projection_round_trips(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    let p = projection(
        true,
        3,
        &[("github", &["repo", "read:org"]), ("jira:cloud", &[])],
    );
    assert_eq!(v.put_projection(&org, &user, &p).await.unwrap(), 3);
    let r = v.read(&org, &user, "github").await.unwrap();
    assert_eq!(r.projection.as_ref(), Some(&p));
    assert_eq!(r.sealed, None);
}

async fn store_token_is_compare_and_set(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    v.put_projection(&org, &user, &projection(true, 7, &[("github", &["repo"])]))
        .await
        .unwrap();
    // Sealed tokens are binary: NUL bytes and invalid UTF-8 must survive.
    let sealed = vec![0u8, 159, 146, 150, 255, b'{', b'}', 0];
    assert_eq!(
        v.store_token(&org, &user, "github", 7, &sealed)
            .await
            .unwrap(),
        CasOutcome::Stored
    );
    assert_eq!(
        v.read(&org, &user, "github").await.unwrap().sealed,
        Some(sealed.clone())
    );
    for stale in [6, 8, 0] {
        assert_eq!(
            v.store_token(&org, &user, "github", stale, b"other")
                .await
                .unwrap(),
            CasOutcome::EpochMoved,
            "epoch {stale}"
        );
        assert_eq!(
            v.store_token(&org, &user, "slack", stale, b"other")
                .await
                .unwrap(),
            CasOutcome::EpochMoved
        );
    }
    assert_eq!(
        v.read(&org, &user, "github").await.unwrap().sealed,
        Some(sealed)
    );
    assert_eq!(v.read(&org, &user, "slack").await.unwrap().sealed, None);
    // Overwriting at the current epoch is a refresh.
    assert_eq!(
        v.store_token(&org, &user, "github", 7, b"refreshed")
            .await
            .unwrap(),
        CasOutcome::Stored
    );
    assert_eq!(
        v.read(&org, &user, "github")
            .await
            .unwrap()
            .sealed
            .as_deref(),
        Some(&b"refreshed"[..])
    );
}

async fn store_token_needs_a_projection(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    for epoch in [0, 1] {
        assert_eq!(
            v.store_token(&org, &user, "github", epoch, b"tok")
                .await
                .unwrap(),
            CasOutcome::EpochMoved
        );
    }
    let r = v.read(&org, &user, "github").await.unwrap();
    assert_eq!(r, VaultRead::default());
    assert!(v.token_connectors(&org, &user).await.unwrap().is_empty());
}

async fn revoke_all_purges_and_bumps(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    let p = projection(true, 4, &[("github", &["repo"]), ("slack", &["chat"])]);
    v.put_projection(&org, &user, &p).await.unwrap();
    for c in ["slack", "github", "jira:cloud"] {
        assert_eq!(
            v.store_token(&org, &user, c, 4, c.as_bytes())
                .await
                .unwrap(),
            CasOutcome::Stored
        );
    }
    let deactivated = projection(false, 4, &[]);
    let (epoch, mut deleted) = v.revoke(&org, &user, &deactivated, None).await.unwrap();
    deleted.sort();
    assert_eq!(epoch, 5);
    assert_eq!(deleted, ["github", "jira:cloud", "slack"]);
    for c in ["slack", "github", "jira:cloud"] {
        let r = v.read(&org, &user, c).await.unwrap();
        assert_eq!(r.sealed, None, "{c}");
        assert_eq!(r.projection, Some(projection(false, 5, &[])));
    }
    assert!(v.token_connectors(&org, &user).await.unwrap().is_empty());
    // The pre-revocation epoch is refused from now on; the new one works.
    assert_eq!(
        v.store_token(&org, &user, "github", 4, b"late")
            .await
            .unwrap(),
        CasOutcome::EpochMoved
    );
    assert_eq!(v.read(&org, &user, "github").await.unwrap().sealed, None);
    assert_eq!(
        v.store_token(&org, &user, "github", 5, b"new")
            .await
            .unwrap(),
        CasOutcome::Stored
    );
    // Revoking again bumps again and reports only what was there.
    let (epoch, deleted) = v.revoke(&org, &user, &deactivated, None).await.unwrap();
    assert_eq!((epoch, deleted), (6, vec!["github".to_string()]));
    let (epoch, deleted) = v.revoke(&org, &user, &deactivated, None).await.unwrap();
    assert_eq!((epoch, deleted), (7, vec![]));
}

async fn revoke_listed_connectors_only(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    v.put_projection(&org, &user, &projection(true, 1, &[("a", &[]), ("b", &[])]))
        .await
        .unwrap();
    for c in ["a", "b"] {
        v.store_token(&org, &user, c, 1, b"t").await.unwrap();
    }
    let narrowed = projection(true, 1, &[("b", &[])]);
    let list = ["a".to_string(), "missing".to_string(), "a".to_string()];
    let (epoch, deleted) = v.revoke(&org, &user, &narrowed, Some(&list)).await.unwrap();
    assert_eq!(epoch, 2);
    assert_eq!(deleted, ["a"]);
    assert_eq!(v.read(&org, &user, "a").await.unwrap().sealed, None);
    let r = v.read(&org, &user, "b").await.unwrap();
    assert_eq!(r.sealed.as_deref(), Some(&b"t"[..]));
    assert_eq!(r.projection, Some(projection(true, 2, &[("b", &[])])));
    assert_eq!(v.token_connectors(&org, &user).await.unwrap(), ["b"]);
    // An empty list bumps the epoch and deletes nothing.
    let (epoch, deleted) = v.revoke(&org, &user, &narrowed, Some(&[])).await.unwrap();
    assert_eq!((epoch, deleted.len()), (3, 0));
    assert_eq!(v.token_connectors(&org, &user).await.unwrap(), ["b"]);
}

async fn revoke_takes_the_higher_epoch(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    // No projection yet: the given epoch + 1, and the projection now exists.
    let (epoch, deleted) = v
        .revoke(&org, &user, &projection(false, 10, &[]), None)
        .await
        .unwrap();
    assert_eq!((epoch, deleted.len()), (11, 0));
    assert_eq!(
        v.read(&org, &user, "x").await.unwrap().projection,
        Some(projection(false, 11, &[]))
    );
    // A given epoch above the stored one wins; below it, the stored one does.
    assert_eq!(
        v.revoke(&org, &user, &projection(false, 20, &[]), None)
            .await
            .unwrap()
            .0,
        21
    );
    assert_eq!(
        v.revoke(&org, &user, &projection(false, 3, &[]), None)
            .await
            .unwrap()
            .0,
        22
    );
}

async fn put_projection_never_lowers_the_epoch(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    let five = projection(false, 5, &[("github", &["repo"])]);
    assert_eq!(v.put_projection(&org, &user, &five).await.unwrap(), 5);
    // A stale writer loses entirely: neither its epoch nor its content lands.
    let stale = projection(true, 3, &[("slack", &[])]);
    assert_eq!(v.put_projection(&org, &user, &stale).await.unwrap(), 5);
    assert_eq!(
        v.read(&org, &user, "github").await.unwrap().projection,
        Some(five)
    );
    // Same epoch: the newer content replaces the stored one.
    let five_b = projection(true, 5, &[("github", &["repo", "admin"])]);
    assert_eq!(v.put_projection(&org, &user, &five_b).await.unwrap(), 5);
    assert_eq!(
        v.read(&org, &user, "github").await.unwrap().projection,
        Some(five_b)
    );
    let seven = projection(true, 7, &[]);
    assert_eq!(v.put_projection(&org, &user, &seven).await.unwrap(), 7);
    assert_eq!(
        v.read(&org, &user, "github").await.unwrap().projection,
        Some(seven)
    );
    // After a revocation, a projection built from the pre-revocation epoch is ignored.
    let (bumped, _) = v
        .revoke(&org, &user, &projection(false, 7, &[]), None)
        .await
        .unwrap();
    assert_eq!(bumped, 8);
    assert_eq!(
        v.put_projection(&org, &user, &projection(true, 7, &[]))
            .await
            .unwrap(),
        8
    );
    assert_eq!(
        v.read(&org, &user, "github").await.unwrap().projection,
        Some(projection(false, 8, &[]))
    );
}

async fn orgs_are_independent(v: &dyn Vault) {
    let (a, b) = (fresh_org(), fresh_org());
    let user = UserId::generate();
    v.put_projection(&a, &user, &projection(true, 1, &[("github", &[])]))
        .await
        .unwrap();
    v.put_projection(&b, &user, &projection(true, 9, &[("slack", &[])]))
        .await
        .unwrap();
    assert_eq!(
        v.store_token(&a, &user, "github", 1, b"a-token")
            .await
            .unwrap(),
        CasOutcome::Stored
    );
    // B's epoch is not A's.
    assert_eq!(
        v.store_token(&b, &user, "github", 1, b"b-token")
            .await
            .unwrap(),
        CasOutcome::EpochMoved
    );
    assert_eq!(
        v.store_token(&b, &user, "github", 9, b"b-token")
            .await
            .unwrap(),
        CasOutcome::Stored
    );
    v.revoke(&a, &user, &projection(false, 1, &[]), None)
        .await
        .unwrap();
    let rb = v.read(&b, &user, "github").await.unwrap();
    assert_eq!(rb.sealed.as_deref(), Some(&b"b-token"[..]));
    assert_eq!(rb.projection, Some(projection(true, 9, &[("slack", &[])])));
    assert_eq!(v.read(&a, &user, "github").await.unwrap().sealed, None);
    // The same user id in a third org knows nothing.
    assert_eq!(
        v.read(&fresh_org(), &user, "github").await.unwrap(),
        VaultRead::default()
    );
}

async fn token_connectors_lists_stored_tokens(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    v.put_projection(&org, &user, &projection(true, 2, &[]))
        .await
        .unwrap();
    for c in ["zendesk", "github", "jira:cloud", "t:odd"] {
        v.store_token(&org, &user, c, 2, b"x").await.unwrap();
    }
    assert_eq!(
        v.token_connectors(&org, &user).await.unwrap(),
        ["github", "jira:cloud", "t:odd", "zendesk"]
    );
}

async fn reserved_ids_are_rejected(v: &dyn Vault) {
    let p = projection(true, 1, &[]);
    let good_org = fresh_org();
    let good_user = UserId::generate();
    let bad_orgs = ["", "acme/eu", "ac{me", "ac}me"];
    let bad_users = ["", "u{1", "u}1"];
    for org in bad_orgs {
        let org = OrgId::new(org);
        assert!(
            matches!(
                v.read(&org, &good_user, "c").await,
                Err(VaultError::Internal(_))
            ),
            "org {org:?}"
        );
        assert!(matches!(
            v.put_projection(&org, &good_user, &p).await,
            Err(VaultError::Internal(_))
        ));
    }
    for user in bad_users {
        let user = UserId::new(user);
        assert!(
            matches!(
                v.store_token(&good_org, &user, "c", 1, b"x").await,
                Err(VaultError::Internal(_))
            ),
            "user {user:?}"
        );
        assert!(matches!(
            v.revoke(&good_org, &user, &p, None).await,
            Err(VaultError::Internal(_))
        ));
        assert!(matches!(
            v.token_connectors(&good_org, &user).await,
            Err(VaultError::Internal(_))
        ));
    }
    // A user id may contain '/': the org part ends at the first one.
    let user = UserId::new("dept/alice");
    assert_eq!(v.put_projection(&good_org, &user, &p).await.unwrap(), 1);
}

async fn epoch_range_is_enforced(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    let max = i64::MAX as u64;
    assert!(matches!(
        v.put_projection(&org, &user, &projection(true, max + 1, &[]))
            .await,
        Err(VaultError::Internal(_))
    ));
    assert!(matches!(
        v.revoke(&org, &user, &projection(true, u64::MAX, &[]), None)
            .await,
        Err(VaultError::Internal(_))
    ));
    // Large epochs are exact (no float rounding anywhere).
    let big = (1u64 << 53) + 1;
    assert_eq!(
        v.put_projection(&org, &user, &projection(true, big, &[]))
            .await
            .unwrap(),
        big
    );
    assert_eq!(
        v.store_token(&org, &user, "c", big - 1, b"x")
            .await
            .unwrap(),
        CasOutcome::EpochMoved
    );
    assert_eq!(
        v.store_token(&org, &user, "c", big, b"x").await.unwrap(),
        CasOutcome::Stored
    );
    assert_eq!(
        v.revoke(&org, &user, &projection(true, 0, &[]), None)
            .await
            .unwrap(),
        (big + 1, vec!["c".to_string()])
    );
    assert_eq!(
        v.store_token(&org, &user, "c", big + 1, b"x")
            .await
            .unwrap(),
        CasOutcome::Stored
    );
    assert_eq!(
        v.put_projection(&org, &user, &projection(true, max, &[]))
            .await
            .unwrap(),
        max
    );
    // The epoch cannot be bumped past the maximum, and a refused revoke changes nothing.
    assert!(matches!(
        v.revoke(&org, &user, &projection(false, 0, &[]), None)
            .await,
        Err(VaultError::Internal(_))
    ));
    let r = v.read(&org, &user, "c").await.unwrap();
    assert_eq!(r.projection, Some(projection(true, max, &[])));
    assert_eq!(r.sealed.as_deref(), Some(&b"x"[..]));
}

/// 50 writers holding the pre-revocation epoch race one revocation. Every write that was
/// acknowledged must have landed before the revocation (so the revocation deleted it), and
/// nothing may be left afterwards.
async fn no_resurrection_race(v: Arc<dyn Vault>, round: usize) {
    let (org, user) = (fresh_org(), UserId::generate());
    let p = projection(true, 1, &[]);
    v.put_projection(&org, &user, &p).await.unwrap();
    let barrier = Arc::new(Barrier::new(51));
    let mut writers = Vec::new();
    for i in 0..50 {
        let (v, org, user, barrier) = (v.clone(), org.clone(), user.clone(), barrier.clone());
        writers.push(tokio::spawn(async move {
            let connector = format!("c{i:02}");
            barrier.wait().await;
            // Spread the writers around the revocation.
            if i % 2 == 0 {
                tokio::task::yield_now().await;
            }
            let outcome = v
                .store_token(&org, &user, &connector, 1, b"old")
                .await
                .unwrap();
            (connector, outcome)
        }));
    }
    let revoker = {
        let (v, org, user, barrier) = (v.clone(), org.clone(), user.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..round {
                tokio::task::yield_now().await;
            }
            v.revoke(&org, &user, &projection(false, 1, &[]), None)
                .await
                .unwrap()
        })
    };
    let mut stored = Vec::new();
    for w in writers {
        let (connector, outcome) = w.await.unwrap();
        if outcome == CasOutcome::Stored {
            stored.push(connector);
        }
    }
    let (epoch, deleted) = revoker.await.unwrap();
    assert_eq!(epoch, 2);
    stored.sort();
    let mut deleted = deleted;
    deleted.sort();
    assert_eq!(
        stored, deleted,
        "acknowledged writes and purged tokens differ"
    );
    assert!(v.token_connectors(&org, &user).await.unwrap().is_empty());
    for i in 0..50 {
        let r = v.read(&org, &user, &format!("c{i:02}")).await.unwrap();
        assert_eq!(r.sealed, None);
        assert_eq!(r.projection.map(|p| p.epoch), Some(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_memory() {
    conformance(Arc::new(MemoryVault::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_redis_standalone() {
    conformance(Arc::new(standalone_vault(OP_TIMEOUT).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_redis_cluster() {
    let c = cluster().await;
    let v = RedisVault::connect(&c.url(), OP_TIMEOUT).await.unwrap();
    require_reachable(&v).await;
    conformance(Arc::new(v)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_redis_sentinel() {
    let s = sentinel_fixture().await;
    let v = RedisVault::connect(&s.url(), OP_TIMEOUT).await.unwrap();
    require_reachable(&v).await;
    conformance(Arc::new(v)).await;
}
