//! The traits storage adapters implement. Each write method is atomic: the resource change, its
//! audit record and its directory events land together or not at all.

use std::collections::HashMap;

use async_trait::async_trait;

use super::audit::{AuditEntry, AuditRecord};
use super::clock::Millis;
use super::directory::{Group, GroupRef, Member, User};
use super::error::StoreError;
use super::events::DirectoryEvent;
use super::ids::{GroupId, OrgId, UserId};

/// The audit record and events that accompany a write, stored in the same transaction.
#[derive(Debug, Clone)]
pub struct Change {
    /// The audit record of the write.
    pub audit: AuditEntry,
    /// The directory events the write implies.
    pub events: Vec<DirectoryEvent>,
}

/// A column the store can look resources up by, through an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexedAttr {
    /// The resource id.
    Id,
    /// `userName` (users), case-insensitive.
    UserName,
    /// `externalId`, case-sensitive.
    ExternalId,
    /// `displayName`, case-insensitive.
    DisplayName,
    /// The user's primary e-mail, case-insensitive.
    Email,
}

/// A column the store can sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortAttr {
    /// `userName` (users) or `displayName` (groups).
    Name,
    /// `meta.created`.
    Created,
    /// `meta.lastModified`.
    Modified,
    /// Creation order then id: stable paging.
    Natural,
}

/// Which rows of one org to read, in what order and how many.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Restrict to rows where the attribute equals this value.
    pub lookup: Option<(IndexedAttr, String)>,
    /// Order of the rows.
    pub sort: SortAttr,
    /// Descending instead of ascending.
    pub descending: bool,
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return at most.
    pub limit: u64,
}

/// A page of rows and the total number that matched.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// How many rows matched in all.
    pub total: u64,
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    /// The org id.
    pub id: OrgId,
    /// Human-readable name.
    pub display_name: String,
}

/// What a stored credential lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// Provision through SCIM.
    Scim,
    /// Use the admin API.
    Admin,
    /// Fetch tokens through the gateway API.
    Gateway,
}

impl CredentialKind {
    /// The stored name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Scim => "scim",
            CredentialKind::Admin => "admin",
            CredentialKind::Gateway => "gateway",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scim" => Some(CredentialKind::Scim),
            "admin" => Some(CredentialKind::Admin),
            "gateway" => Some(CredentialKind::Gateway),
            _ => None,
        }
    }
}

/// A credential as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    /// Credential id (used as the audit actor).
    pub id: String,
    /// The org it is bound to.
    pub org: OrgId,
    /// What it allows.
    pub kind: CredentialKind,
    /// A label for humans.
    pub name: String,
    /// `sha256:<hex>` of the secret.
    pub secret_hash: String,
    /// When it was created.
    pub created_ms: Millis,
}

/// Orgs and their stored credentials.
#[async_trait]
pub trait Tenants: Send + Sync {
    /// Creates the org or updates its display name.
    async fn upsert_org(&self, org: &OrgRecord) -> Result<(), StoreError>;
    /// All orgs.
    async fn list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError>;
    /// All stored credentials of every org.
    async fn list_credentials(&self) -> Result<Vec<CredentialRecord>, StoreError>;
    /// Stores credentials atomically, all or none, with their audit record.
    async fn insert_credentials(
        &self,
        creds: &[CredentialRecord],
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Deletes one credential of `kind` of the org, with its audit record; `NotFound` if absent.
    async fn delete_credential(
        &self,
        org: &OrgId,
        kind: CredentialKind,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Every resource-server credential of every org.
    async fn list_resource_credentials(&self) -> Result<Vec<ResourceCredentialRecord>, StoreError>;
    /// Stores a resource-server credential with its audit record.
    async fn insert_resource_credential(
        &self,
        cred: &ResourceCredentialRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Deletes one resource-server credential of a connector; `NotFound` if absent.
    async fn delete_resource_credential(
        &self,
        org: &OrgId,
        connector: &str,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// A counter that every credential write above raises in its own transaction: replicas
    /// read this one value to learn whether their in-memory index is stale.
    async fn credentials_version(&self) -> Result<i64, StoreError>;
}

/// A resource-server credential as stored: bound to one connector of one org, never the
/// secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceCredentialRecord {
    /// Credential id (`rc-…`, the audit actor).
    pub id: String,
    /// The org it is bound to.
    pub org: OrgId,
    /// The connector whose tokens it may introspect.
    pub connector: String,
    /// A label for humans.
    pub name: String,
    /// `sha256:<hex>` of the secret.
    pub secret_hash: String,
    /// When it was created.
    pub created_ms: Millis,
}

/// SCIM users, groups and memberships: the directory's system of record.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Answers when the store is reachable (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// One user by id, within its org.
    async fn get_user(&self, org: &OrgId, id: &UserId) -> Result<Option<User>, StoreError>;
    /// Users of an org selected by `scan`.
    async fn scan_users(&self, org: &OrgId, scan: &Scan) -> Result<Page<User>, StoreError>;
    /// The groups each of the given users belongs to.
    async fn groups_of(
        &self,
        org: &OrgId,
        users: &[UserId],
    ) -> Result<HashMap<UserId, Vec<GroupRef>>, StoreError>;
    /// Inserts a new user; `Conflict("userName")` when the name is taken in the org.
    async fn create_user(&self, user: &User, change: &Change) -> Result<(), StoreError>;
    /// Replaces a user if its stored version is still `expected_version`.
    async fn update_user(
        &self,
        user: &User,
        expected_version: i64,
        change: &Change,
    ) -> Result<(), StoreError>;
    /// Deletes a user (and its memberships) if its version is still `expected_version`.
    async fn delete_user(
        &self,
        org: &OrgId,
        id: &UserId,
        expected_version: i64,
        change: &Change,
    ) -> Result<(), StoreError>;

    /// One group by id, within its org.
    async fn get_group(&self, org: &OrgId, id: &GroupId) -> Result<Option<Group>, StoreError>;
    /// Groups of an org selected by `scan`.
    async fn scan_groups(&self, org: &OrgId, scan: &Scan) -> Result<Page<Group>, StoreError>;
    /// The members of each of the given groups.
    async fn members_of(
        &self,
        org: &OrgId,
        groups: &[GroupId],
    ) -> Result<HashMap<GroupId, Vec<Member>>, StoreError>;
    /// Which of the given ids are users of this org (membership validation).
    async fn existing_users(&self, org: &OrgId, ids: &[UserId]) -> Result<Vec<UserId>, StoreError>;
    /// Inserts a new group with its members.
    async fn create_group(
        &self,
        group: &Group,
        members: &[UserId],
        change: &Change,
    ) -> Result<(), StoreError>;
    /// Replaces a group and applies a membership delta, if its version is still `expected_version`.
    async fn update_group(
        &self,
        group: &Group,
        expected_version: i64,
        added: &[UserId],
        removed: &[UserId],
        change: &Change,
    ) -> Result<(), StoreError>;
    /// Deletes a group and its memberships if its version is still `expected_version`.
    async fn delete_group(
        &self,
        org: &OrgId,
        id: &GroupId,
        expected_version: i64,
        change: &Change,
    ) -> Result<(), StoreError>;
}

/// The append-only audit log and the directory event outbox, read side.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Records after `after_seq`, oldest first, at most `limit`.
    async fn audit_after(
        &self,
        org: &OrgId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// The newest `limit` records matching the filters, oldest first: `user` matches the
    /// resource id, `connector` the summary's `connector`, `since_ms` the time.
    async fn audit_query(
        &self,
        org: &OrgId,
        user: Option<&str>,
        connector: Option<&str>,
        since_ms: Option<Millis>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Directory events after `after_seq`, oldest first, at most `limit`.
    async fn events_after(
        &self,
        org: &OrgId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<(i64, DirectoryEvent)>, StoreError>;
}

/// Where connectors and grants come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Declared in the config file (GitOps); re-synced at every start.
    Config,
    /// Created through the admin API.
    Api,
}

impl Source {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

/// Connectors and grants: the policy's system of record.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Every connector of an org.
    async fn connectors(&self, org: &OrgId)
    -> Result<Vec<super::connector::Connector>, StoreError>;
    /// Creates or replaces a connector.
    async fn upsert_connector(
        &self,
        c: &super::connector::Connector,
        source: Source,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Deletes a connector and its grants; `NotFound` if absent.
    async fn delete_connector(
        &self,
        org: &OrgId,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Every grant of an org.
    async fn grants(&self, org: &OrgId) -> Result<Vec<super::connector::Grant>, StoreError>;
    /// Creates a grant.
    async fn insert_grant(
        &self,
        g: &super::connector::Grant,
        source: Source,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Deletes a grant; `NotFound` if absent.
    async fn delete_grant(
        &self,
        org: &OrgId,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Replaces a connector's sealed client secret (vault key rotation) iff it is still the
    /// `read` one, with its audit record; nothing else of the connector changes. `false` when
    /// the secret changed meanwhile or the connector is gone (nothing written).
    async fn reseal_client_secret(
        &self,
        org: &OrgId,
        id: &str,
        read: &[u8],
        sealed: &[u8],
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    /// Replaces every config-sourced connector and grant of an org with the given sets.
    async fn sync_config(
        &self,
        org: &OrgId,
        connectors: &[super::connector::Connector],
        grants: &[super::connector::Grant],
        at_ms: Millis,
    ) -> Result<(), StoreError>;
}

/// Batched appends to the audit log (the hot path's audit records).
#[async_trait]
pub trait AuditWriter: Send + Sync {
    /// Appends the records in one transaction.
    async fn append(&self, entries: &[AuditEntry]) -> Result<(), StoreError>;
}

/// A stored signing key: private part sealed, public part as a JWK.
#[derive(Debug, Clone)]
pub struct StoredSigningKey {
    /// Key id.
    pub kid: String,
    /// The org (issuer) the key signs for; `None` for keys of the former single issuer.
    pub org: Option<OrgId>,
    /// PKCS#8 DER sealed under the vault key ring.
    pub sealed_der: Vec<u8>,
    /// Public JWK.
    pub public_jwk: serde_json::Value,
    /// When it stops signing (possibly in the future: the activation of the key that replaces
    /// it); it stays published for a while after.
    pub retired_ms: Option<Millis>,
    /// When created (and published).
    pub created_ms: Millis,
    /// When it starts signing: a publication lead after `created_ms`, so that every replica
    /// publishes it first (keys stored before activation times existed: `created_ms`).
    pub activates_ms: Millis,
}

/// A signing key to add to an org's keys.
#[derive(Debug, Clone, Copy)]
pub struct NewSigningKey<'a> {
    /// The org (issuer).
    pub org: &'a OrgId,
    /// Key id.
    pub kid: &'a str,
    /// PKCS#8 DER sealed under the vault key ring.
    pub sealed_der: &'a [u8],
    /// Public JWK.
    pub public_jwk: &'a serde_json::Value,
    /// Now.
    pub created_ms: Millis,
    /// When it starts signing; the org's other keys stop signing then.
    pub activates_ms: Millis,
    /// `true`: the org's first key (stored only if the org has no unretired key). `false`: a
    /// rotation (stored only if no key of the org is still waiting to activate).
    pub first: bool,
}

/// The broker's signing keys in the system of record.
#[async_trait]
pub trait SigningKeyStore: Send + Sync {
    /// Every key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
    /// Stores a new key of an org and, in the same transaction, retires every other unretired
    /// key of the org at the new key's activation time. Additions for one org are serialised,
    /// and the condition of `key.first` is checked under that serialisation: `false` (nothing
    /// stored) when it does not hold, so replicas and operators racing to rotate one org
    /// store one key.
    async fn add_signing_key(&self, key: &NewSigningKey<'_>) -> Result<bool, StoreError>;
    /// Replaces the sealed private part of a key (vault key rotation).
    async fn reseal_signing_key(&self, kid: &str, sealed_der: &[u8]) -> Result<(), StoreError>;
}

/// Sign-in's view of the system of record: who an IdP identity is, and which groups the
/// user's last sign-in asserted.
#[async_trait]
pub trait Identities: Send + Sync {
    /// The user an identity (issuer + subject) is linked to.
    async fn find_identity(
        &self,
        org: &OrgId,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<UserId>, StoreError>;
    /// Links an identity to a user unless it is already linked; returns the user it is
    /// linked to afterwards (the first link wins a race).
    async fn link_identity(
        &self,
        org: &OrgId,
        issuer: &str,
        subject: &str,
        user: &UserId,
        now_ms: i64,
    ) -> Result<UserId, StoreError>;
    /// The groups the user's last sign-in asserted.
    async fn asserted_groups(&self, org: &OrgId, user: &UserId) -> Result<Vec<String>, StoreError>;
    /// The users whose last sign-in asserted any of `names` (compared case-insensitively,
    /// as grants name groups).
    async fn users_asserting(
        &self,
        org: &OrgId,
        names: &[String],
    ) -> Result<Vec<UserId>, StoreError>;
    /// Replaces them; `true` when they changed.
    async fn set_asserted_groups(
        &self,
        org: &OrgId,
        user: &UserId,
        groups: &[String],
        now_ms: i64,
    ) -> Result<bool, StoreError>;
}
