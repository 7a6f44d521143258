//! One conformance suite for the `Vault` port, run against the in-process vault, Redis
//! standalone, Redis Sentinel and a three-master Redis Cluster; the `EventBus` across two
//! Redis clients (two replicas) and in-process; and the Redis vault's behaviour through an
//! outage (fails fast, recovers on its own). The ephemeral store is in `ephemeral`, the bus in
//! `bus`, outages in `outage`, Sentinel failovers in `sentinel`.

mod bus;
mod cluster;
mod ephemeral;
mod outage;
mod races;
mod replica_wait;
mod sentinel;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use auth_broker::domain::vault::{
    CasOutcome, Projection, ProjectionWrite, Vault, VaultError, VaultRead, Written,
};
use auth_broker::domain::{OrgId, UserId};
use auth_broker::store::vault_memory::MemoryVault;
use auth_broker::store::vault_redis::RedisVault;

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
        locked: false,
        epoch,
        version: 0,
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

/// Writes `p` as the one projection writer does: reads the stored version, then writes with
/// a compare-and-set on it (`revoke` as given). Returns the epoch and purged fields.
pub(crate) async fn write<V: Vault + ?Sized>(
    v: &V,
    org: &OrgId,
    user: &UserId,
    p: &Projection,
    revoke: bool,
) -> Result<(u64, Vec<String>), VaultError> {
    let expected = v.read(org, user, "_").await?.projection.map(|p| p.version);
    match v
        .write_projection(
            org,
            user,
            ProjectionWrite {
                expected,
                projection: p,
                revoke,
            },
        )
        .await?
    {
        Written::Stored { epoch, purged, .. } => Ok((epoch, purged)),
        Written::Moved => panic!("the projection moved under a test's own write"),
    }
}

/// `write` without revoking: the epoch in force.
pub(crate) async fn put_projection<V: Vault + ?Sized>(
    v: &V,
    org: &OrgId,
    user: &UserId,
    p: &Projection,
) -> Result<u64, VaultError> {
    Ok(write(v, org, user, p, false).await?.0)
}

/// `write`, revoking.
pub(crate) async fn revoke<V: Vault + ?Sized>(
    v: &V,
    org: &OrgId,
    user: &UserId,
    p: &Projection,
) -> Result<(u64, Vec<String>), VaultError> {
    write(v, org, user, p, true).await
}

/// The stored projection's access and epoch, without its version.
fn stored(p: Option<Projection>) -> Option<Projection> {
    p.map(|p| Projection { version: 0, ..p })
}

/// Every check of the port's contract, each on its own fresh org.
async fn conformance(v: Arc<dyn Vault>) {
    v.ping().await.unwrap();
    unknown_user_reads_empty(&*v).await;
    projection_round_trips(&*v).await;
    store_token_is_compare_and_set(&*v).await;
    store_token_needs_a_projection(&*v).await;
    revoke_purges_and_bumps(&*v).await;
    projection_writes_are_compare_and_set_on_the_version(&*v).await;
    a_new_projection_starts_at_the_given_epoch(&*v).await;
    only_a_revocation_moves_the_epoch(&*v).await;
    discard_token_removes_only_that_token(&*v).await;
    orgs_are_independent(&*v).await;
    token_connectors_lists_stored_tokens(&*v).await;
    reserved_ids_are_rejected(&*v).await;
    epoch_range_is_enforced(&*v).await;
    for round in 0..5 {
        races::no_resurrection_race(v.clone(), round).await;
        races::one_of_many_racing_writers_lands(v.clone(), round).await;
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
    let mut p = projection(
        true,
        3,
        &[("github", &["repo", "read:org"]), ("jira:cloud", &[])],
    );
    p.locked = true;
    assert_eq!(put_projection(v, &org, &user, &p).await.unwrap(), 3);
    let r = v.read(&org, &user, "github").await.unwrap();
    assert_eq!(r.projection.as_ref(), Some(&Projection { version: 1, ..p }));
    assert_eq!(r.sealed, None);
}

async fn store_token_is_compare_and_set(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    put_projection(
        v,
        &org,
        &user,
        &projection(true, 7, &[("github", &["repo"])]),
    )
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

async fn revoke_purges_and_bumps(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    let p = projection(true, 4, &[("github", &["repo"]), ("slack", &["chat"])]);
    put_projection(v, &org, &user, &p).await.unwrap();
    for c in ["slack", "github", "jira:cloud"] {
        assert_eq!(
            v.store_token(&org, &user, c, 4, c.as_bytes())
                .await
                .unwrap(),
            CasOutcome::Stored
        );
    }
    let deactivated = projection(false, 4, &[]);
    let (epoch, mut deleted) = revoke(v, &org, &user, &deactivated).await.unwrap();
    deleted.sort();
    assert_eq!(epoch, 5);
    assert_eq!(deleted, ["github", "jira:cloud", "slack"]);
    for c in ["slack", "github", "jira:cloud"] {
        let r = v.read(&org, &user, c).await.unwrap();
        assert_eq!(r.sealed, None, "{c}");
        assert_eq!(stored(r.projection), Some(projection(false, 5, &[])));
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
    let (epoch, deleted) = revoke(v, &org, &user, &deactivated).await.unwrap();
    assert_eq!((epoch, deleted), (6, vec!["github".to_string()]));
    let (epoch, deleted) = revoke(v, &org, &user, &deactivated).await.unwrap();
    assert_eq!((epoch, deleted), (7, vec![]));
}

/// A write lands only on the version its writer read; a tie never replaces, and a write
/// that lost changes nothing at all (neither state, epoch, version nor tokens).
async fn projection_writes_are_compare_and_set_on_the_version(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    put_projection(
        v,
        &org,
        &user,
        &projection(true, 9, &[("github", &["repo"])]),
    )
    .await
    .unwrap();
    v.store_token(&org, &user, "github", 9, b"t").await.unwrap();
    let read = v.read(&org, &user, "_").await.unwrap().projection.unwrap();
    assert_eq!(read.version, 1);
    // Writer A lands on version 1.
    let a = projection(false, 9, &[]);
    let w = |p, expected, revoke| ProjectionWrite {
        expected,
        projection: p,
        revoke,
    };
    assert_eq!(
        v.write_projection(&org, &user, w(&a, Some(1), true))
            .await
            .unwrap(),
        Written::Stored {
            epoch: 10,
            version: 2,
            purged: vec!["github".into()],
        }
    );
    // Writer B read the same version before A landed: it is refused, revoking or not.
    let b = projection(true, 9, &[("github", &["repo"])]);
    for revoke in [false, true] {
        assert_eq!(
            v.write_projection(&org, &user, w(&b, Some(1), revoke))
                .await
                .unwrap(),
            Written::Moved
        );
    }
    // So is one that read no projection at all, and one from the future.
    for expected in [None, Some(3)] {
        assert_eq!(
            v.write_projection(&org, &user, w(&b, expected, false))
                .await
                .unwrap(),
            Written::Moved
        );
    }
    let after = v.read(&org, &user, "_").await.unwrap().projection.unwrap();
    assert_eq!(
        after,
        Projection {
            version: 2,
            ..projection(false, 10, &[])
        }
    );
    // A writer that read version 2 lands.
    assert_eq!(
        v.write_projection(&org, &user, w(&b, Some(2), false))
            .await
            .unwrap(),
        Written::Stored {
            epoch: 10,
            version: 3,
            purged: vec![],
        }
    );
}

async fn a_new_projection_starts_at_the_given_epoch(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    // No projection yet, revoking: the given epoch + 1, and the projection now exists.
    let (epoch, deleted) = revoke(v, &org, &user, &projection(false, 10, &[]))
        .await
        .unwrap();
    assert_eq!((epoch, deleted.len()), (11, 0));
    assert_eq!(
        stored(v.read(&org, &user, "x").await.unwrap().projection),
        Some(projection(false, 11, &[]))
    );
    // Not revoking: the given epoch.
    let other = UserId::generate();
    assert_eq!(
        put_projection(v, &org, &other, &projection(true, 20, &[]))
            .await
            .unwrap(),
        20
    );
}

/// The epoch a writer passes matters only for a new projection: a stored epoch moves only
/// by a revocation, by exactly one, whatever the writer passes.
async fn only_a_revocation_moves_the_epoch(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    assert_eq!(
        put_projection(
            v,
            &org,
            &user,
            &projection(false, 5, &[("github", &["repo"])])
        )
        .await
        .unwrap(),
        5
    );
    for given in [3, 5, 7, 1_000] {
        assert_eq!(
            put_projection(v, &org, &user, &projection(true, given, &[]))
                .await
                .unwrap(),
            5,
            "given {given}"
        );
    }
    assert_eq!(
        revoke(v, &org, &user, &projection(false, 1_000, &[]))
            .await
            .unwrap()
            .0,
        6
    );
    assert_eq!(
        revoke(v, &org, &user, &projection(false, 0, &[]))
            .await
            .unwrap()
            .0,
        7
    );
    let r = v.read(&org, &user, "_").await.unwrap().projection.unwrap();
    assert_eq!((r.epoch, r.version, r.active), (7, 7, false));
}

async fn discard_token_removes_only_that_token(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    put_projection(
        v,
        &org,
        &user,
        &projection(true, 2, &[("a", &[]), ("b", &[])]),
    )
    .await
    .unwrap();
    for c in ["a", "b"] {
        v.store_token(&org, &user, c, 2, c.as_bytes())
            .await
            .unwrap();
    }
    // Another token's bytes, or a field that holds none: nothing happens.
    assert!(!v.discard_token(&org, &user, "a", b"b").await.unwrap());
    assert!(!v.discard_token(&org, &user, "c", b"a").await.unwrap());
    assert!(v.discard_token(&org, &user, "a", b"a").await.unwrap());
    assert!(!v.discard_token(&org, &user, "a", b"a").await.unwrap());
    assert_eq!(v.token_connectors(&org, &user).await.unwrap(), ["b"]);
    let r = v.read(&org, &user, "_").await.unwrap().projection.unwrap();
    assert_eq!((r.epoch, r.version), (2, 1), "the projection is untouched");
}

async fn orgs_are_independent(v: &dyn Vault) {
    let (a, b) = (fresh_org(), fresh_org());
    let user = UserId::generate();
    put_projection(v, &a, &user, &projection(true, 1, &[("github", &[])]))
        .await
        .unwrap();
    put_projection(v, &b, &user, &projection(true, 9, &[("slack", &[])]))
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
    revoke(v, &a, &user, &projection(false, 1, &[]))
        .await
        .unwrap();
    let rb = v.read(&b, &user, "github").await.unwrap();
    assert_eq!(rb.sealed.as_deref(), Some(&b"b-token"[..]));
    assert_eq!(
        stored(rb.projection),
        Some(projection(true, 9, &[("slack", &[])]))
    );
    assert_eq!(v.read(&a, &user, "github").await.unwrap().sealed, None);
    // The same user id in a third org knows nothing.
    assert_eq!(
        v.read(&fresh_org(), &user, "github").await.unwrap(),
        VaultRead::default()
    );
}

async fn token_connectors_lists_stored_tokens(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    put_projection(v, &org, &user, &projection(true, 2, &[]))
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
    let w = ProjectionWrite {
        expected: None,
        projection: &p,
        revoke: false,
    };
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
            v.write_projection(&org, &good_user, w).await,
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
            v.write_projection(&good_org, &user, ProjectionWrite { revoke: true, ..w })
                .await,
            Err(VaultError::Internal(_))
        ));
        assert!(matches!(
            v.token_connectors(&good_org, &user).await,
            Err(VaultError::Internal(_))
        ));
        assert!(matches!(
            v.discard_token(&good_org, &user, "c", b"x").await,
            Err(VaultError::Internal(_))
        ));
    }
    // A user id may contain '/': the org part ends at the first one.
    let user = UserId::new("dept/alice");
    assert_eq!(put_projection(v, &good_org, &user, &p).await.unwrap(), 1);
}

async fn epoch_range_is_enforced(v: &dyn Vault) {
    let (org, user) = (fresh_org(), UserId::generate());
    let max = i64::MAX as u64;
    assert!(matches!(
        put_projection(v, &org, &user, &projection(true, max + 1, &[])).await,
        Err(VaultError::Internal(_))
    ));
    assert!(matches!(
        revoke(v, &org, &user, &projection(true, u64::MAX, &[])).await,
        Err(VaultError::Internal(_))
    ));
    // Large epochs are exact (no float rounding anywhere).
    let big = (1u64 << 53) + 1;
    assert_eq!(
        put_projection(v, &org, &user, &projection(true, big, &[]))
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
        revoke(v, &org, &user, &projection(true, 0, &[]))
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
    // A projection at the maximum cannot be revoked further, and the refusal changes nothing.
    let top = UserId::generate();
    assert_eq!(
        put_projection(v, &org, &top, &projection(true, max, &[]))
            .await
            .unwrap(),
        max
    );
    v.store_token(&org, &top, "c", max, b"x").await.unwrap();
    assert!(matches!(
        revoke(v, &org, &top, &projection(false, 0, &[])).await,
        Err(VaultError::Internal(_))
    ));
    let r = v.read(&org, &top, "c").await.unwrap();
    assert_eq!(stored(r.projection), Some(projection(true, max, &[])));
    assert_eq!(r.sealed.as_deref(), Some(&b"x"[..]));
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
