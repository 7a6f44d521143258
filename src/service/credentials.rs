//! Keeps every replica's in-memory credential index equal to the system of record.
//!
//! Gateway keys and resource-server credentials are created and revoked through the admin API
//! on any replica; each write raises one counter in the same transaction
//! (`Tenants::credentials_version`). Every replica polls that counter (one indexed single-row
//! read, every [`POLL_EVERY`]) and, when it moved, reloads the stored credentials and swaps in
//! a new index built over the config-declared ones. The replica that made the change reloads
//! at once, before its admin call answers. So a created key works everywhere, and a revoked
//! one stops working everywhere, within one poll interval plus one reload; the hot path stays
//! one SHA-256 and one map look-up under a read lock.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use crate::crypto::secret::SecretHash;
use crate::domain::StoreError;
use crate::domain::ports::Tenants;

use super::bootstrap::{CredentialEntry, CredentialIndex, ResourceGrant};

/// How often each replica checks for credential changes (a revoked key stops working on every
/// replica within this plus one reload).
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// The live index and what it is rebuilt from.
pub struct CredentialSync {
    base: CredentialIndex,
    tenants: Arc<dyn Tenants>,
    index: Arc<RwLock<CredentialIndex>>,
    /// The counter the index reflects; loads are serialised by this lock.
    seen: tokio::sync::Mutex<Option<i64>>,
}

impl CredentialSync {
    /// Loads the stored credentials over the config-declared `base`.
    pub async fn load(
        base: CredentialIndex,
        tenants: Arc<dyn Tenants>,
    ) -> Result<Arc<Self>, StoreError> {
        let sync = Arc::new(Self {
            index: Arc::new(RwLock::new(base.clone())),
            base,
            tenants,
            seen: tokio::sync::Mutex::new(None),
        });
        sync.refresh(true).await?;
        Ok(sync)
    }

    /// The index request handlers authenticate against.
    pub fn index(&self) -> Arc<RwLock<CredentialIndex>> {
        self.index.clone()
    }

    /// Rebuilds the index if the stored credentials changed since the last load (or always,
    /// with `force`). Returns whether it rebuilt.
    pub async fn refresh(&self, force: bool) -> Result<bool, StoreError> {
        let mut seen = self.seen.lock().await;
        // The counter is read before the credentials: a change committed in between is
        // loaded now and seen again (harmlessly) on the next poll, never missed.
        let version = self.tenants.credentials_version().await?;
        if !force && *seen == Some(version) {
            return Ok(false);
        }
        let mut index = self.base.clone();
        for c in self.tenants.list_credentials().await? {
            let Some(hash) = SecretHash::parse(&c.secret_hash) else {
                tracing::error!(credential = %c.id, "stored credential hash is malformed; ignoring it");
                continue;
            };
            index.add(
                c.org.as_str(),
                CredentialEntry {
                    actor: format!("{}:{}", c.kind.as_str(), c.id),
                    kind: c.kind,
                    hash,
                },
            );
        }
        for c in self.tenants.list_resource_credentials().await? {
            let Some(hash) = SecretHash::parse(&c.secret_hash) else {
                tracing::error!(credential = %c.id, "stored credential hash is malformed; ignoring it");
                continue;
            };
            index.add_resource(
                hash,
                ResourceGrant {
                    actor: format!("resource:{}", c.id).into(),
                    org: c.org.to_string(),
                    connector: c.connector,
                },
            );
        }
        match self.index.write() {
            Ok(mut live) => *live = index,
            // A whole new index replaces whatever a panicking writer left behind.
            Err(poisoned) => {
                *poisoned.into_inner() = index;
                self.index.clear_poison();
            }
        }
        *seen = Some(version);
        Ok(true)
    }

    /// Polls for changes until the service is dropped (the server stopped).
    pub fn spawn_poller(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                let Some(sync) = weak.upgrade() else { return };
                match sync.refresh(false).await {
                    Ok(_) => failing = false,
                    // Logged once per outage; the index in force stays until the store answers.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "credential refresh failed; keeping the current index");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}
