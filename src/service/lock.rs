//! A lock in the shared ephemeral store (Redis, or the embedded store), held with an owner
//! token and renewed while its holder works: one replica at a time calls an authorization
//! server for the same thing.
//!
//! Invariants: the lock only saves calls. What keeps data right is the compare-and-set of
//! whatever the holder writes (a grant's version, a vault epoch), so a holder whose lock lapsed
//! (renewal failed, the store restarted) can never overwrite newer data; renewal stops at the
//! first failure, and release removes the lock only if this holder still owns it.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::vault::{Ephemeral, VaultError};

/// A lock this process holds; renewed every third of its lifetime until released or dropped.
pub(crate) struct HeldLock {
    eph: Arc<dyn Ephemeral>,
    key: String,
    owner: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl HeldLock {
    /// Takes `key` for `ttl` if nobody holds it (`None`: somebody does).
    pub(crate) async fn try_take(
        eph: &Arc<dyn Ephemeral>,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Self>, VaultError> {
        let owner = uuid::Uuid::new_v4().to_string();
        if !eph.lock(key, &owner, ttl).await? {
            return Ok(None);
        }
        let renewing = {
            let (eph, key, owner) = (eph.clone(), key.to_string(), owner.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    if !eph.renew(&key, &owner, ttl).await.unwrap_or(false) {
                        break;
                    }
                }
            })
        };
        Ok(Some(Self {
            eph: eph.clone(),
            key: key.to_string(),
            owner,
            renewing,
        }))
    }

    /// Stops renewing and releases the lock (if it lapsed meanwhile, it is left alone).
    pub(crate) async fn release(self) {
        self.renewing.abort();
        if let Err(e) = self.eph.unlock(&self.key, &self.owner).await {
            tracing::debug!(error = %e, "lock not released; it lapses");
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // A holder that never released (its future was dropped) stops renewing: the lock lapses.
        self.renewing.abort();
    }
}
