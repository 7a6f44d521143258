//! Access: turning the directory and the policy into what the vault enforces.
//!
//! `sync_user` recomputes one user's entitlements from the system of record and brings the
//! vault in line: when anything was lost (deactivation, deletion, a group removal that drops
//! a connector or a scope, a disabled connector, the kill switch) it **revokes** — bumps the
//! user's epoch and purges the affected tokens in one atomic vault operation — publishes an
//! event to every replica, keeps an offboarding receipt and writes an audit record, all
//! before the caller answers. When nothing was lost it only refreshes the projection.

mod fence;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use crate::domain::audit::AuditEntry;
use crate::domain::clock::Clock;
use crate::domain::connector::{ActionSet, Connector, Grant};
use crate::domain::directory::User;
use crate::domain::policy::{self, Entitlements, Membership, OrgPolicy};
use crate::domain::ports::{Directory, PolicyStore};
use crate::domain::vault::{BusEvent, EventBus, Projection, Vault, VaultError};
use crate::domain::{OrgId, StoreError, UserId};

pub use crate::domain::offboarding::{OffboardingLog, Receipt};
pub use fence::{RECHECK_BUDGET, VendFence};

/// Why access work failed; both map to 503 at the edge (fail closed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    /// The system of record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// What `sync_user` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The epoch in force afterwards.
    pub epoch: u64,
    /// Token fields purged (empty when nothing was revoked).
    pub revoked: Vec<String>,
    /// Whether a revocation happened (epoch bumped).
    pub bumped: bool,
}

/// The access service.
#[derive(Clone)]
pub struct Access {
    dir: Arc<dyn Directory>,
    policy: Arc<dyn PolicyStore>,
    vault: Arc<dyn Vault>,
    bus: Arc<dyn EventBus>,
    receipts: Arc<dyn OffboardingLog>,
    clock: Arc<dyn Clock>,
    fence: VendFence,
    revocations: Arc<std::sync::atomic::AtomicU64>,
    asserted: Option<AssertedGroups>,
}

/// Groups asserted at sign-in, and which orgs count them (`groups_source`).
#[derive(Clone)]
struct AssertedGroups {
    store: Arc<dyn crate::domain::ports::Identities>,
    sources: Arc<std::collections::HashMap<String, crate::config::GroupsSource>>,
}

/// The vault field a token lives in: the connector, plus a digest of the scope set when the
/// token carries fewer scopes than the whole entitlement.
pub fn token_field(connector: &str, scopes: &[String], entitled: &[String]) -> String {
    if scopes == entitled {
        connector.to_string()
    } else {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(scopes.join(" ").as_bytes());
        format!("{connector}#{}", hex::encode(&digest[..6]))
    }
}

/// The connector a token field belongs to.
pub fn field_connector(field: &str) -> &str {
    field.split_once('#').map(|(c, _)| c).unwrap_or(field)
}

impl Access {
    /// Builds the service over its ports.
    pub fn new(
        dir: Arc<dyn Directory>,
        policy: Arc<dyn PolicyStore>,
        vault: Arc<dyn Vault>,
        bus: Arc<dyn EventBus>,
        receipts: Arc<dyn OffboardingLog>,
        clock: Arc<dyn Clock>,
        fence: VendFence,
    ) -> Self {
        Self {
            dir,
            policy,
            vault,
            bus,
            receipts,
            clock,
            fence,
            revocations: Arc::default(),
            asserted: None,
        }
    }

    /// Counts the groups asserted at sign-in, per org as `sources` says (`scim` when absent).
    pub fn with_asserted_groups(
        mut self,
        store: Arc<dyn crate::domain::ports::Identities>,
        sources: std::collections::HashMap<String, crate::config::GroupsSource>,
    ) -> Self {
        self.asserted = Some(AssertedGroups {
            store,
            sources: Arc::new(sources),
        });
        self
    }

    /// Where the org's entitlement groups come from.
    pub fn groups_source(&self, org: &OrgId) -> crate::config::GroupsSource {
        self.asserted
            .as_ref()
            .and_then(|a| a.sources.get(org.as_str()).copied())
            .unwrap_or_default()
    }

    /// Revocations (epoch bumps) performed by this replica since start.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The vault, for the vend path.
    pub fn vault(&self) -> &Arc<dyn Vault> {
        &self.vault
    }

    /// The in-flight vend fence, for the vend path.
    pub fn fence(&self) -> &VendFence {
        &self.fence
    }

    /// The event bus, for gateway event streams.
    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    /// The org's connectors (for tool maps and token minting).
    pub async fn connectors(&self, org: &OrgId) -> Result<Vec<Connector>, AccessError> {
        Ok(self.policy.connectors(org).await?)
    }

    /// A user's entitlements computed from the system of record (`None`: no such user).
    pub async fn entitlements(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Option<(User, Entitlements, Vec<Connector>)>, AccessError> {
        let Some(u) = self.dir.get_user(org, user).await? else {
            return Ok(None);
        };
        let (connectors, grants) = self.policy_of(org).await?;
        let ent = self.compute(org, &u, &connectors, &grants).await?;
        Ok(Some((u, ent, connectors)))
    }

    async fn policy_of(&self, org: &OrgId) -> Result<(Vec<Connector>, Vec<Grant>), AccessError> {
        Ok((
            self.policy.connectors(org).await?,
            self.policy.grants(org).await?,
        ))
    }

    async fn compute(
        &self,
        org: &OrgId,
        u: &User,
        connectors: &[Connector],
        grants: &[Grant],
    ) -> Result<Entitlements, AccessError> {
        use crate::config::GroupsSource;
        let source = self.groups_source(org);
        let groups = if source == GroupsSource::Assertion {
            Vec::new()
        } else {
            let mut groups = self.dir.groups_of(org, std::slice::from_ref(&u.id)).await?;
            groups.remove(&u.id).unwrap_or_default()
        };
        // Asserted groups are matched by name (a grant's `group`), as the IdP names them.
        let asserted: Vec<(crate::domain::GroupId, String)> = match (&self.asserted, source) {
            (Some(a), GroupsSource::Assertion | GroupsSource::Both) => a
                .store
                .asserted_groups(org, &u.id)
                .await?
                .into_iter()
                .map(|g| (crate::domain::GroupId::new(format!("assertion:{g}")), g))
                .collect(),
            _ => Vec::new(),
        };
        let members: Vec<Membership<'_>> = groups
            .iter()
            .map(|g| Membership {
                id: &g.group_id,
                display_name: &g.display,
            })
            .chain(asserted.iter().map(|(id, name)| Membership {
                id,
                display_name: name,
            }))
            .collect();
        let org_policy = OrgPolicy {
            max_actions: ActionSet::ALLOW_ALL,
        };
        Ok(policy::entitlements(
            u.active,
            &members,
            connectors,
            grants,
            &org_policy,
        ))
    }

    /// Recomputes a user's projection and revokes whatever the user lost.
    pub async fn sync_user(
        &self,
        org: &OrgId,
        user: &UserId,
        reason: &str,
        actor: &str,
    ) -> Result<SyncOutcome, AccessError> {
        // Taken before reading the system of record: a projection rebuilt from an older read
        // then always carries a lower epoch than one written after a later change.
        let started_us = now_micros();
        let (connectors, grants) = self.policy_of(org).await?;
        let (active, entitled) = match self.dir.get_user(org, user).await? {
            Some(u) => {
                let ent = self.compute(org, &u, &connectors, &grants).await?;
                let map: BTreeMap<String, Vec<String>> = ent
                    .connectors
                    .into_iter()
                    .map(|(k, v)| (k, v.scopes))
                    .collect();
                (ent.active, map)
            }
            None => (false, BTreeMap::new()),
        };
        let current = self.vault.read(org, user, "_").await?.projection;
        let held = self.vault.token_connectors(org, user).await?;
        // Something was lost when the user is no longer active, or a connector (or one of
        // its scopes) the vault knew about is no longer entitled, or a token is held for a
        // connector that is no longer entitled. Then every token of the user is purged and
        // the epoch moves, so tokens already handed out stop introspecting as active too.
        let was_active = current.as_ref().is_some_and(|p| p.active);
        let shrank = current.as_ref().is_some_and(|p| {
            p.connectors
                .iter()
                .any(|(c, scopes)| match entitled.get(c) {
                    None => true,
                    Some(now) => !scopes.iter().all(|s| now.contains(s)),
                })
        });
        let orphaned = held
            .iter()
            .any(|f| !entitled.contains_key(field_connector(f)));
        let lost_all = !active;
        let must_revoke = (lost_all && (was_active || !held.is_empty())) || shrank || orphaned;
        // Epochs never go backwards, even across a vault flush: a rebuilt projection starts at
        // the current time, which invalidates every token minted before the flush.
        let base_epoch = match &current {
            Some(p) => p.epoch,
            None => started_us,
        };
        let projection = Projection {
            active,
            epoch: base_epoch,
            connectors: entitled.clone(),
        };
        if !must_revoke {
            let epoch = self.vault.put_projection(org, user, &projection).await?;
            let changed = current.as_ref().is_some_and(|p| {
                p.connectors != projection.connectors || p.active != projection.active
            });
            if changed {
                let event = BusEvent {
                    kind: "entitlements.changed".into(),
                    org: org.to_string(),
                    user_id: Some(user.to_string()),
                    connectors: projection.connectors.keys().cloned().collect(),
                    at_ms: self.clock.now_ms(),
                };
                if let Err(e) = self.bus.publish(&event).await {
                    tracing::warn!(error = %e, "entitlements event not published");
                }
            }
            return Ok(SyncOutcome {
                epoch,
                revoked: Vec::new(),
                bumped: false,
            });
        }
        let lost: Vec<String> = current
            .as_ref()
            .map(|p| {
                p.connectors
                    .keys()
                    .filter(|c| !entitled.contains_key(*c))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        self.revoke_and_record(
            org,
            user,
            &projection,
            Revocation {
                kind: if lost_all {
                    "user.deactivated"
                } else {
                    "token.revoked"
                },
                reason,
                action: "access.revoke",
                actor,
                lost,
                all: Some(lost_all),
            },
        )
        .await
    }

    /// Purges every token of the user and moves the epoch (one atomic vault call), then tells
    /// every replica and keeps the receipt and audit record while the vend fence is waited out
    /// (the answer leaves only when both are done: the fence bounds when, not what, a
    /// revocation announces).
    async fn revoke_and_record(
        &self,
        org: &OrgId,
        user: &UserId,
        projection: &Projection,
        r: Revocation<'_>,
    ) -> Result<SyncOutcome, AccessError> {
        let (epoch, revoked) = self.vault.revoke(org, user, projection, None).await?;
        self.revocations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Vends that read the old epoch either answer within the fence or re-check; the
        // announcement and the receipt are made meanwhile.
        let (_, recorded) = tokio::join!(
            self.fence.wait_out(),
            self.announce_and_record(org, user, epoch, &revoked, r)
        );
        recorded?;
        Ok(SyncOutcome {
            epoch,
            revoked,
            bumped: true,
        })
    }

    /// Publishes a revocation's event and keeps its receipt and audit record.
    async fn announce_and_record(
        &self,
        org: &OrgId,
        user: &UserId,
        epoch: u64,
        revoked: &[String],
        r: Revocation<'_>,
    ) -> Result<(), AccessError> {
        let now = self.clock.now_ms();
        let mut connectors: Vec<String> = revoked
            .iter()
            .map(|f| field_connector(f).to_string())
            .chain(r.lost)
            .collect();
        connectors.sort();
        connectors.dedup();
        let event = BusEvent {
            kind: r.kind.into(),
            org: org.to_string(),
            user_id: Some(user.to_string()),
            connectors: connectors.clone(),
            at_ms: now,
        };
        if let Err(e) = self.bus.publish(&event).await {
            tracing::warn!(error = %e, "revocation event not published; gateways will learn on next vend");
        }
        let receipt = Receipt {
            org: org.clone(),
            user: user.clone(),
            reason: r.reason.to_string(),
            epoch,
            connectors: connectors.clone(),
            at_ms: now,
        };
        let summary = match r.all {
            Some(all) => {
                json!({"reason": r.reason, "epoch": epoch, "connectors": connectors, "all": all})
            }
            None => json!({"epoch": epoch, "connectors": connectors}),
        };
        let audit = AuditEntry {
            org: org.clone(),
            at_ms: now,
            actor: r.actor.to_string(),
            action: r.action.into(),
            resource_type: "User".into(),
            resource_id: user.to_string(),
            summary,
        };
        self.receipts.record(&receipt, &audit).await?;
        Ok(())
    }
}

/// What a revocation is, for its event, receipt and audit record.
struct Revocation<'a> {
    kind: &'static str,
    reason: &'a str,
    action: &'static str,
    actor: &'a str,
    /// Connectors lost without a stored token (still announced and receipted).
    lost: Vec<String>,
    /// Whether every entitlement was lost (directory-driven revocations say so).
    all: Option<bool>,
}

/// Now in microseconds: the epoch a projection starts at when none exists.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Access {
    /// The admin kill switch: every token of the user is purged and the epoch moves now,
    /// whatever the directory says; tokens already handed out stop introspecting as active.
    pub async fn kill(
        &self,
        org: &OrgId,
        user: &UserId,
        actor: &str,
    ) -> Result<SyncOutcome, AccessError> {
        if self.dir.get_user(org, user).await?.is_none() {
            return Err(AccessError::Store(StoreError::NotFound));
        }
        let current = self.vault.read(org, user, "_").await?.projection;
        let projection = current.unwrap_or(Projection {
            active: false,
            epoch: now_micros(),
            connectors: BTreeMap::new(),
        });
        self.revoke_and_record(
            org,
            user,
            &projection,
            Revocation {
                kind: "token.revoked",
                reason: "admin.kill_switch",
                action: "access.kill_switch",
                actor,
                lost: Vec::new(),
                all: None,
            },
        )
        .await
    }

    /// The users whose access depends on a connector: members of the groups its grants name.
    pub async fn users_of_connector(
        &self,
        org: &OrgId,
        connector: &str,
    ) -> Result<Vec<UserId>, AccessError> {
        use crate::domain::connector::GroupSelector;
        use crate::domain::ports::{IndexedAttr, Scan, SortAttr};
        let grants = self.policy.grants(org).await?;
        let mut group_ids = Vec::new();
        for g in grants.iter().filter(|g| g.connector == connector) {
            match &g.group {
                GroupSelector::Id(id) => group_ids.push(id.clone()),
                GroupSelector::Name(name) => {
                    let scan = Scan {
                        lookup: Some((IndexedAttr::DisplayName, name.clone())),
                        sort: SortAttr::Natural,
                        descending: false,
                        offset: 0,
                        limit: 1000,
                    };
                    group_ids.extend(
                        self.dir
                            .scan_groups(org, &scan)
                            .await?
                            .items
                            .into_iter()
                            .map(|g| g.id),
                    );
                }
            }
        }
        let members = self.dir.members_of(org, &group_ids).await?;
        let mut users: Vec<UserId> = members.into_values().flatten().map(|m| m.user_id).collect();
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Receipts of a user's revocations.
    pub async fn receipts(&self, org: &OrgId, user: &UserId) -> Result<Vec<Receipt>, AccessError> {
        Ok(self.receipts.receipts(org, user).await?)
    }

    /// Connectors the user currently holds tokens for.
    pub async fn held(&self, org: &OrgId, user: &UserId) -> Result<Vec<String>, AccessError> {
        Ok(self.vault.token_connectors(org, user).await?)
    }
}
