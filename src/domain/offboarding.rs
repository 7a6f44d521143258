//! Offboarding receipts: what was revoked for a user, when and why (`GET …/offboarding`).

use async_trait::async_trait;
use serde::Serialize;

use super::audit::AuditEntry;
use super::clock::Millis;
use super::{OrgId, StoreError, UserId};

/// One revocation of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
