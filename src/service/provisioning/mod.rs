//! SCIM provisioning use cases: create, replace, patch, delete and list users and groups.
//!
//! Every write is read → compute → compare-and-set on the record's version, with the audit
//! record and directory events in the same transaction. A lost race is retried from a fresh
//! read (so concurrent membership PATCHes both land), unless the client pinned a version with
//! `If-Match`, in which case it gets 412.

mod groups;
mod list;
mod render;
mod users;

use std::sync::Arc;

use serde_json::Value;

use crate::domain::OrgId;
use crate::domain::StoreError;
use crate::domain::audit::AuditEntry;
use crate::domain::clock::Clock;
use crate::domain::ports::Directory;
use crate::scim::ScimError;

pub use list::ListQuery;

/// Limits that bound the cost of SCIM requests.
#[derive(Debug, Clone, Copy)]
pub struct ScimLimits {
    /// Largest page (`count` is capped to it).
    pub max_results: u32,
    /// Page size when `count` is absent.
    pub default_count: u32,
    /// Most rows a non-indexed filter may examine before answering `tooMany`.
    pub max_filter_scan: u32,
}

/// Who is calling and where: the org, the credential (audit actor) and the public base URL.
#[derive(Debug, Clone)]
pub struct ScimCtx {
    /// The org from the URL, already authenticated.
    pub org: OrgId,
    /// The credential that authenticated the call.
    pub actor: String,
    /// `https://broker.example/scim/v2/{org}`, for `meta.location`.
    pub base_url: String,
}

/// A rendered resource and its version (for the `ETag` header).
#[derive(Debug, Clone)]
pub struct ScimResource {
    /// The SCIM JSON.
    pub body: Value,
    /// The record version.
    pub version: i64,
    /// Where the resource lives (`Location` header).
    pub location: String,
}

/// The SCIM provisioning service.
#[derive(Clone)]
pub struct Provisioning {
    dir: Arc<dyn Directory>,
    clock: Arc<dyn Clock>,
    limits: ScimLimits,
    access: Option<crate::service::access::Access>,
}

/// How many times a write is retried after losing a version race.
const MAX_ATTEMPTS: usize = 32;

impl Provisioning {
    /// Builds the service over a directory store.
    pub fn new(dir: Arc<dyn Directory>, clock: Arc<dyn Clock>, limits: ScimLimits) -> Self {
        Self {
            dir,
            clock,
            limits,
            access: None,
        }
    }

    /// Makes every write bring the vault in line (revoking what was lost) before it answers.
    pub fn with_access(mut self, access: crate::service::access::Access) -> Self {
        self.access = Some(access);
        self
    }

    /// Re-derives access for users whose directory state changed (revoking every earlier
    /// token when `revoke`: the write took access away); revocations complete before this
    /// returns. A failure is a 503: the change is saved, and the IdP's retry (or any later
    /// write touching the user, or the reconciler) converges the vault.
    async fn sync_users(
        &self,
        ctx: &ScimCtx,
        users: &[crate::domain::UserId],
        reason: &str,
        revoke: bool,
    ) -> Result<(), ScimError> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        for u in users {
            let synced = if revoke {
                access.revoke_user(&ctx.org, u, reason, &ctx.actor).await
            } else {
                access.sync_user(&ctx.org, u, reason, &ctx.actor).await
            };
            if let Err(e) = synced {
                tracing::error!(error = %e, user = %u, "access not brought in line after a directory change");
                return Err(ScimError::of(
                    crate::scim::ScimErrorKind::Unavailable,
                    "the change was saved but access could not be updated yet; retry the request",
                ));
            }
        }
        Ok(())
    }

    /// Brings in line the users named by `group`'s directory changes that the reconciler has
    /// not followed yet (a retried group write that changes nothing completes an interrupted
    /// one).
    async fn sync_pending_members(
        &self,
        ctx: &ScimCtx,
        group: &crate::domain::GroupId,
    ) -> Result<(), ScimError> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        let users = access.pending_members(&ctx.org, group).await.map_err(|e| {
            tracing::error!(error = %e, "pending directory changes not readable");
            ScimError::of(
                crate::scim::ScimErrorKind::Unavailable,
                "access could not be confirmed yet; retry the request",
            )
        })?;
        self.sync_users(ctx, &users, "scim.group.retry", false)
            .await
    }

    /// The limits in force (advertised in ServiceProviderConfig).
    pub fn limits(&self) -> ScimLimits {
        self.limits
    }

    fn audit(
        &self,
        ctx: &ScimCtx,
        action: &str,
        kind: &str,
        id: &str,
        summary: Value,
    ) -> AuditEntry {
        AuditEntry {
            org: ctx.org.clone(),
            at_ms: self.clock.now_ms(),
            actor: ctx.actor.clone(),
            action: action.to_string(),
            resource_type: kind.to_string(),
            resource_id: id.to_string(),
            summary,
        }
    }
}

/// The weak ETag of a record version.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// Checks an `If-Match` header value against the current version (412 on mismatch).
pub fn check_if_match(if_match: Option<&str>, version: i64) -> Result<(), ScimError> {
    let Some(raw) = if_match else { return Ok(()) };
    let current = version.to_string();
    let ok = raw
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == current);
    if ok {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!(
            "If-Match {raw} does not match the current version {}",
            etag(version)
        )))
    }
}

/// Maps a store error to the SCIM error the client sees (details of 5xx go to the log only).
pub fn store_error(e: StoreError) -> ScimError {
    match e {
        StoreError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "directory store unavailable");
            ScimError::of(
                crate::scim::ScimErrorKind::Unavailable,
                "the directory store is unavailable; retry later",
            )
        }
        StoreError::Conflict(attr) => {
            ScimError::uniqueness(format!("{attr} is already in use in this org"))
        }
        StoreError::VersionMismatch => {
            ScimError::precondition_failed("the resource changed concurrently; re-read and retry")
        }
        StoreError::NotFound => ScimError::not_found("resource not found"),
        StoreError::Internal(detail) => {
            tracing::error!(error = %detail, "directory store error");
            ScimError::of(crate::scim::ScimErrorKind::Internal, "internal error")
        }
    }
}

/// Short, jittered pause between optimistic-concurrency retries.
async fn backoff(attempt: usize) {
    let jitter: u64 = rand::random::<u64>() % 3;
    let ms = (attempt as u64).min(8) + jitter;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// Names of top-level attributes that differ between two SCIM documents (for audit summaries).
fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = o
        .keys()
        .chain(n.keys())
        .filter(|k| o.get(*k) != n.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_weak_strong_and_star() {
        assert!(check_if_match(None, 3).is_ok());
        assert!(check_if_match(Some("W/\"3\""), 3).is_ok());
        assert!(check_if_match(Some("\"3\""), 3).is_ok());
        assert!(check_if_match(Some("*"), 3).is_ok());
        assert!(check_if_match(Some("W/\"1\", W/\"3\""), 3).is_ok());
        assert_eq!(
            check_if_match(Some("W/\"2\""), 3).unwrap_err().kind,
            crate::scim::ScimErrorKind::PreconditionFailed
        );
    }
}
