//! Offboarding receipts: what was revoked for a user, when and why (`GET …/offboarding`).

use async_trait::async_trait;
use serde::Serialize;

use super::audit::AuditEntry;
use super::clock::Millis;
use super::{OrgId, StoreError, UserId};

/// One revocation of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    /// The tenant.
    pub org: OrgId,
    /// The user.
    pub user: UserId,
    /// Why (e.g. `scim.user.patch`, `admin.kill_switch`).
    pub reason: String,
    /// The epoch in force after the revocation.
    pub epoch: u64,
    /// Connectors whose tokens were purged or that were lost.
    pub connectors: Vec<String>,
    /// When.
    pub at_ms: Millis,
}

/// Durable receipts, written with their audit record.
#[async_trait]
pub trait OffboardingLog: Send + Sync {
    /// Stores a receipt and its audit record atomically.
    async fn record(&self, receipt: &Receipt, audit: &AuditEntry) -> Result<(), StoreError>;
    /// Receipts of one user, oldest first.
    async fn receipts(&self, org: &OrgId, user: &UserId) -> Result<Vec<Receipt>, StoreError>;
}

/// An admin lock on a user: every vend is refused until an admin lifts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    /// Why the user was locked (shown on the admin view).
    pub reason: String,
    /// Who locked the user.
    pub actor: String,
    /// When.
    pub at_ms: Millis,
}

/// Locks in the system of record; each change lands with its audit record.
#[async_trait]
pub trait UserLocks: Send + Sync {
    /// The user's lock, if one holds.
    async fn lock_of(&self, org: &OrgId, user: &UserId) -> Result<Option<Lock>, StoreError>;
    /// Sets (or replaces) the user's lock.
    async fn set_lock(
        &self,
        org: &OrgId,
        user: &UserId,
        lock: &Lock,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Lifts the user's lock; `false` when none held (nothing is written then).
    async fn clear_lock(
        &self,
        org: &OrgId,
        user: &UserId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    /// How far the reconciler has followed the org's directory events (0: from the start).
    async fn reconcile_cursor(&self, org: &OrgId) -> Result<i64, StoreError>;
    /// Moves the reconciler's cursor forward (never back).
    async fn advance_reconcile_cursor(&self, org: &OrgId, seq: i64) -> Result<(), StoreError>;
}
