//! Access: turning the system of record (directory, grants, connectors, locks) into the
//! projection the vault enforces.
//!
//! Every projection write follows one rule (DESIGN.md, "Revocation, stated as state"): read
//! the stored projection first, then the system of record, then write with a compare-and-set
//! on the version read. A write whose read is no longer current changes nothing and starts
//! over from a fresh read (at most [`MAX_WRITE_ATTEMPTS`], then 503). So whatever order
//! concurrent SCIM, admin and sign-in changes arrive in, the last write to land was derived
//! from a read of the system of record made after every change that had committed before it
//! began, and a deactivated user can never be written back as active. A sync that finds the
//! projection already right still ends in a compare-and-set of its own (the version moves,
//! the access does not), so no writer that read the system of record before it can land
//! afterwards: every completed sync is fenced, not only those that changed something.
//!
//! When anything was lost (deactivation, deletion, a lock, a group removal or grant deletion
//! that drops a connector or a scope, a disabled connector) the write also **revokes**: it
//! moves the user's epoch and purges every token in the same atomic vault step. Then the
//! event (with the new epoch) goes to every replica and the receipt and audit record are
//! kept, all before the caller answers.

mod converge;
mod locks;
mod reconcile;
mod record;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::clock::Clock;
use crate::domain::connector::{ActionSet, Connector, Grant, GroupSelector};
use crate::domain::directory::User;
use crate::domain::offboarding::{Lock, UserLocks};
use crate::domain::policy::{self, Entitlements, Membership, OrgPolicy};
use crate::domain::ports::{Directory, PolicyStore};
use crate::domain::vault::{EventBus, Projection, ProjectionWrite, Vault, VaultError, Written};
use crate::domain::{OrgId, StoreError, UserId};

pub use crate::domain::offboarding::{OffboardingLog, Receipt};
pub use reconcile::Reconciler;
use record::Revocation;

/// How many times a projection write starts over from a fresh read before giving up (503).
pub const MAX_WRITE_ATTEMPTS: usize = 16;

/// Why access work failed; each maps to 503 at the edge (fail closed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    /// The system of record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The user's projection kept moving under every attempt.
    #[error("the user's access kept changing; retry")]
    Contended,
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The epoch in force afterwards (0 when the user has no projection).
    pub epoch: u64,
    /// Token fields purged (empty when nothing was revoked).
    pub revoked: Vec<String>,
    /// Whether a revocation happened (epoch moved).
    pub bumped: bool,
    /// Whether the projection's access changed (or a revocation happened).
    pub changed: bool,
}

/// What a sync must do beyond following the system of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Follow the system of record; revoke what was lost.
    Follow,
    /// As `Follow`, and revoke even if the system of record, read now, shows nothing lost:
    /// the caller's own write took access away, and a change that landed after it (a
    /// reactivation, a re-added member) must not let tokens issued before it live on.
    Revoke,
    /// As `Revoke`, for the kill switch (audited as such).
    Kill,
    /// As `Follow`, but only where a projection exists (the reconciler's repairs).
    Repair,
}

/// The access service.
#[derive(Clone)]
pub struct Access {
    dir: Arc<dyn Directory>,
    policy: Arc<dyn PolicyStore>,
    vault: Arc<dyn Vault>,
    bus: Arc<dyn EventBus>,
    receipts: Arc<dyn OffboardingLog>,
    locks: Arc<dyn UserLocks>,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
    asserted: Option<AssertedGroups>,
    outbox: Option<Arc<dyn crate::domain::ports::AuditLog>>,
    upstreams: Option<super::upstream::Upstreams>,
}

/// What `/metrics` shows of this service.
#[derive(Debug, Default)]
struct Counters {
    revocations: AtomicU64,
    repairs: AtomicU64,
    retries: AtomicU64,
}

/// Groups asserted at sign-in, and which orgs count them (`groups_source`).
#[derive(Clone)]
struct AssertedGroups {
    store: Arc<dyn crate::domain::ports::Identities>,
    sources: Arc<std::collections::HashMap<String, crate::domain::connector::GroupsSource>>,
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

/// The system of record's view of one user: what the projection must say.
struct Derived {
    exists: bool,
    active: bool,
    locked: bool,
    connectors: BTreeMap<String, Vec<String>>,
}

impl Access {
    /// Builds the service over its ports.
    pub fn new(
        dir: Arc<dyn Directory>,
        policy: Arc<dyn PolicyStore>,
        vault: Arc<dyn Vault>,
        bus: Arc<dyn EventBus>,
        receipts: Arc<dyn OffboardingLog>,
        locks: Arc<dyn UserLocks>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            dir,
            policy,
            vault,
            bus,
            receipts,
            locks,
            clock,
            counters: Arc::default(),
            asserted: None,
            outbox: None,
            upstreams: None,
        }
    }

    /// The upstream service, when configured.
    pub fn upstreams(&self) -> Option<&super::upstream::Upstreams> {
        self.upstreams.as_ref()
    }

    /// Revokes upstream grants and tokens on offboarding (the durable outbox).
    pub fn with_upstreams(mut self, upstreams: super::upstream::Upstreams) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// Reads the directory's event outbox: a retried no-op write then completes what an
    /// interrupted one left, and the reconciler follows it.
    pub fn with_outbox(mut self, outbox: Arc<dyn crate::domain::ports::AuditLog>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Counts the groups asserted at sign-in, per org as `sources` says (`scim` when absent).
    pub fn with_asserted_groups(
        mut self,
        store: Arc<dyn crate::domain::ports::Identities>,
        sources: std::collections::HashMap<String, crate::domain::connector::GroupsSource>,
    ) -> Self {
        self.asserted = Some(AssertedGroups {
            store,
            sources: Arc::new(sources),
        });
        self
    }

    /// Where the org's entitlement groups come from.
    pub fn groups_source(&self, org: &OrgId) -> crate::domain::connector::GroupsSource {
        self.asserted
            .as_ref()
            .and_then(|a| a.sources.get(org.as_str()).copied())
            .unwrap_or_default()
    }

    /// Revocations (epoch moves) performed by this replica since start.
    pub fn revocations(&self) -> u64 {
        self.counters.revocations.load(Ordering::Relaxed)
    }

    /// Projections the reconciler found out of line with the system of record and repaired.
    pub fn repairs(&self) -> u64 {
        self.counters.repairs.load(Ordering::Relaxed)
    }

    /// Projection writes that found the projection moved and started over.
    pub fn write_retries(&self) -> u64 {
        self.counters.retries.load(Ordering::Relaxed)
    }

    /// The vault, for the vend path.
    pub fn vault(&self) -> &Arc<dyn Vault> {
        &self.vault
    }

    /// The event bus, for gateway event streams.
    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    /// The org's connectors (for tool maps and token minting).
    pub async fn connectors(&self, org: &OrgId) -> Result<Vec<Connector>, AccessError> {
        Ok(self.policy.connectors(org).await?)
    }

    /// A user's entitlements computed from the system of record (`None`: no such user). A
    /// locked user is entitled to nothing.
    pub async fn entitlements(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Option<(User, Entitlements, Vec<Connector>)>, AccessError> {
        Ok(self
            .record_of(org, user)
            .await?
            .map(|(u, _, ent, connectors)| (u, ent, connectors)))
    }

    /// The user, whether a lock holds, and the entitlements the system of record gives now.
    async fn record_of(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Option<(User, bool, Entitlements, Vec<Connector>)>, AccessError> {
        let Some(u) = self.dir.get_user(org, user).await? else {
            return Ok(None);
        };
        let (connectors, grants) = self.policy_of(org).await?;
        let locked = self.locks.lock_of(org, user).await?.is_some();
        let ent = self.compute(org, &u, !locked, &connectors, &grants).await?;
        Ok(Some((u, locked, ent, connectors)))
    }

    /// The user's lock, if one holds.
    pub async fn lock_of(&self, org: &OrgId, user: &UserId) -> Result<Option<Lock>, AccessError> {
        Ok(self.locks.lock_of(org, user).await?)
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
        unlocked: bool,
        connectors: &[Connector],
        grants: &[Grant],
    ) -> Result<Entitlements, AccessError> {
        use crate::domain::connector::GroupsSource;
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
            u.active && unlocked,
            &members,
            connectors,
            grants,
            &org_policy,
        ))
    }

    /// What the system of record says the user's projection must be, read now.
    async fn derive(&self, org: &OrgId, user: &UserId) -> Result<Derived, AccessError> {
        Ok(match self.record_of(org, user).await? {
            None => Derived {
                exists: false,
                active: false,
                locked: false,
                connectors: BTreeMap::new(),
            },
            Some((u, locked, ent, _)) => Derived {
                exists: true,
                active: u.active,
                locked,
                connectors: ent
                    .connectors
                    .into_iter()
                    .map(|(k, v)| (k, v.scopes))
                    .collect(),
            },
        })
    }

    /// Brings the user's projection in line with the system of record; revokes whatever the
    /// user lost before returning.
    pub async fn sync_user(
        &self,
        org: &OrgId,
        user: &UserId,
        reason: &str,
        actor: &str,
    ) -> Result<SyncOutcome, AccessError> {
        self.converge(org, user, Mode::Follow, reason, actor).await
    }

    /// As [`Access::sync_user`], after a write that took access away (a deactivation, a
    /// deletion, a membership removal): every token of the user issued before it is revoked,
    /// even if a later change already gave the access back.
    pub async fn revoke_user(
        &self,
        org: &OrgId,
        user: &UserId,
        reason: &str,
        actor: &str,
    ) -> Result<SyncOutcome, AccessError> {
        self.converge(org, user, Mode::Revoke, reason, actor).await
    }

    /// The users whose access depends on a connector: members of the groups its grants name,
    /// whether membership comes from SCIM or from sign-in assertions.
    pub async fn users_of_connector(
        &self,
        org: &OrgId,
        connector: &str,
    ) -> Result<Vec<UserId>, AccessError> {
        let grants = self.policy.grants(org).await?;
        let of: Vec<Grant> = grants
            .into_iter()
            .filter(|g| g.connector == connector)
            .collect();
        self.users_of_grants(org, &of).await
    }

    /// The users a set of grants applies to, whatever the source of their groups.
    pub async fn users_of_grants(
        &self,
        org: &OrgId,
        grants: &[Grant],
    ) -> Result<Vec<UserId>, AccessError> {
        use crate::domain::ports::{IndexedAttr, Scan, SortAttr};
        let mut group_ids = Vec::new();
        let mut names = Vec::new();
        for g in grants {
            match &g.group {
                GroupSelector::Id(id) => group_ids.push(id.clone()),
                GroupSelector::Name(name) => {
                    names.push(name.clone());
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
        if let Some(a) = &self.asserted {
            users.extend(a.store.users_asserting(org, &names).await?);
        }
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
