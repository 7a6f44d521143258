//! Audit records: who changed what, when, through which credential. Append-only; summaries
//! carry attribute names and decisive values (such as `active`), never secrets.

use serde::Serialize;
use serde_json::Value;

use super::clock::Millis;
use super::ids::OrgId;

/// One audit record to append.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The tenant.
    pub org: OrgId,
    /// When it happened.
    pub at_ms: Millis,
    /// Who did it: a credential reference such as `scim:config#0` or `scim:cred:<id>`.
    pub actor: String,
    /// What was done, e.g. `scim.user.create`.
    pub action: String,
    /// `User`, `Group`, …
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: String,
    /// A short description without secrets.
    #[schema(value_type = Object)]
    pub summary: Value,
}

/// An audit record as read back, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Monotonic sequence number.
    pub seq: i64,
    /// The record.
    #[serde(flatten)]
    pub entry: AuditEntry,
}
