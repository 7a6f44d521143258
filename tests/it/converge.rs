//! The projection writer under a fault injected between its two steps: a whole competing sync
//! runs after one writer read the system of record and before its compare-and-set lands. The
//! last word must be the system of record's, whatever the order (DESIGN.md, "Revocation,
//! stated as state").

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use auth_broker::domain::audit::AuditEntry;
use auth_broker::domain::clock::SystemClock;
use auth_broker::domain::directory::User;
use auth_broker::domain::ports::{Change, Directory};
use auth_broker::domain::vault::{
    CasOutcome, ProjectionWrite, Vault, VaultError, VaultRead, Written,
};
use auth_broker::domain::{OrgId, UserId};
use auth_broker::service::access::Access;
use auth_broker::store::SqlStore;
use auth_broker::store::vault_memory::{MemoryBus, MemoryVault};
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::support::Backend;

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// The in-process vault, with a one-shot hook run at the start of the next projection write.
struct Interposed {
    inner: MemoryVault,
    hook: Mutex<Option<Hook>>,
}

#[async_trait]
impl Vault for Interposed {
    async fn ping(&self) -> Result<(), VaultError> {
        self.inner.ping().await
    }
    async fn read(&self, o: &OrgId, u: &UserId, c: &str) -> Result<VaultRead, VaultError> {
        self.inner.read(o, u, c).await
    }
    async fn write_projection(
        &self,
        o: &OrgId,
        u: &UserId,
        w: ProjectionWrite<'_>,
    ) -> Result<Written, VaultError> {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook().await;
        }
        self.inner.write_projection(o, u, w).await
    }
    async fn store_token(
        &self,
        o: &OrgId,
        u: &UserId,
        c: &str,
        epoch: u64,
        sealed: &[u8],
    ) -> Result<CasOutcome, VaultError> {
        self.inner.store_token(o, u, c, epoch, sealed).await
    }
    async fn discard_token(
        &self,
        o: &OrgId,
        u: &UserId,
        f: &str,
        sealed: &[u8],
    ) -> Result<bool, VaultError> {
        self.inner.discard_token(o, u, f, sealed).await
    }
    async fn token_connectors(&self, o: &OrgId, u: &UserId) -> Result<Vec<String>, VaultError> {
        self.inner.token_connectors(o, u).await
    }
}

fn change(org: &OrgId, user: &UserId) -> Change {
    Change {
        audit: AuditEntry {
            org: org.clone(),
            at_ms: 1,
            actor: "test".into(),
            action: "test.write".into(),
            resource_type: "User".into(),
            resource_id: user.to_string(),
            summary: json!({}),
        },
        events: Vec::new(),
    }
}

/// Sets the user's `active` flag in the system of record.
async fn set_active(store: &SqlStore, org: &OrgId, user: &UserId, active: bool) {
    let mut u = store.get_user(org, user).await.unwrap().expect("the user");
    let expected = u.version;
    u.active = active;
    u.version += 1;
    store
        .update_user(&u, expected, &change(org, user))
        .await
        .unwrap();
}

/// A deactivation's sync reads the system of record (inactive), then, before its write lands,
/// the IdP reactivates the user and that reactivation's sync runs to the end. The reactivation
/// found the projection already saying "active" and used to stop there; the deactivation's
/// write then landed, derived from a read older than the reactivation, and the projection said
/// "inactive" for an active user until the reconciler came by. Now every sync ends in a
/// compare-and-set of its own, so the older writer's write fails and it re-reads.
#[tokio::test]
async fn a_sync_that_read_before_another_completed_cannot_have_the_last_word() {
    let store = crate::store_conformance::store(Backend::Sqlite).await;
    let org = OrgId::new("acme");
    let user = UserId::new("u-1");
    store
        .create_user(
            &User {
                id: user.clone(),
                org: org.clone(),
                user_name: "ada@acme.example".into(),
                external_id: None,
                active: true,
                display_name: None,
                email: None,
                attributes: json!({"userName": "ada@acme.example", "active": true}),
                version: 1,
                created_ms: 1,
                modified_ms: 1,
            },
            &change(&org, &user),
        )
        .await
        .unwrap();
    let vault = Arc::new(Interposed {
        inner: MemoryVault::new(),
        hook: Mutex::new(None),
    });
    let access = Access::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        vault.clone(),
        Arc::new(MemoryBus::new()),
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Arc::new(SystemClock),
    );
    let first = access.sync_user(&org, &user, "test", "test").await.unwrap();
    let active_at = |v: &Arc<Interposed>| {
        let (v, org, user) = (v.clone(), org.clone(), user.clone());
        async move {
            v.inner
                .read(&org, &user, "_")
                .await
                .unwrap()
                .projection
                .expect("a projection")
        }
    };
    assert!(active_at(&vault).await.active);

    // The deactivation commits; its sync will be interrupted between read and write.
    set_active(&store, &org, &user, false).await;
    let (s2, a2, o2, u2) = (store.clone(), access.clone(), org.clone(), user.clone());
    *vault.hook.lock().unwrap() = Some(Box::new(move || {
        Box::pin(async move {
            set_active(&s2, &o2, &u2, true).await;
            a2.sync_user(&o2, &u2, "reactivated", "test").await.unwrap();
        })
    }));
    let deactivation = access
        .revoke_user(&org, &user, "deactivated", "test")
        .await
        .unwrap();
    assert!(
        vault.hook.lock().unwrap().is_none(),
        "the fault was injected"
    );

    let stored = store.get_user(&org, &user).await.unwrap().unwrap();
    let projection = active_at(&vault).await;
    assert!(stored.active, "the reactivation is the last change");
    assert_eq!(
        projection.active, stored.active,
        "the projection follows the system of record: {projection:?}"
    );
    // The deactivation still revoked: tokens issued before it are dead (a higher epoch).
    assert!(
        deactivation.bumped && projection.epoch > first.epoch,
        "{deactivation:?}"
    );
}
