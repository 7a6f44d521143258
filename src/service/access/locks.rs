//! The admin's levers on one user: the kill switch (purge now; the user may vend again) and
//! locks (purge, and refuse every vend until lifted). A lock lives in the system of record,
//! so every later projection write derives `locked` from it: nothing but an unlock lifts it.

use super::{Access, AccessError, Mode, SyncOutcome};
use crate::domain::audit::AuditEntry;
use crate::domain::offboarding::Lock;
use crate::domain::{OrgId, StoreError, UserId};

impl Access {
    /// The admin kill switch (`…/revoke`): every token of the user is purged and the epoch
    /// moves now; the projection otherwise follows the system of record, so the user may vend
    /// again at once unless locked or no longer entitled.
    pub async fn kill(
        &self,
        org: &OrgId,
        user: &UserId,
        actor: &str,
    ) -> Result<SyncOutcome, AccessError> {
        if self.dir.get_user(org, user).await?.is_none() {
            return Err(AccessError::Store(StoreError::NotFound));
        }
        self.converge(org, user, Mode::Kill, "admin.kill_switch", actor)
            .await
    }

    /// Locks the user (kept in the system of record, audited) and revokes every token before
    /// returning; every vend is refused until [`Access::unlock`].
    pub async fn lock(
        &self,
        org: &OrgId,
        user: &UserId,
        reason: &str,
        actor: &str,
    ) -> Result<SyncOutcome, AccessError> {
        if self.dir.get_user(org, user).await?.is_none() {
            return Err(AccessError::Store(StoreError::NotFound));
        }
        let at_ms = self.clock.now_ms();
        let lock = Lock {
            reason: reason.to_string(),
            actor: actor.to_string(),
            at_ms,
        };
        let audit = self.user_audit(org, user, actor, "access.lock", at_ms, reason);
        self.locks.set_lock(org, user, &lock, &audit).await?;
        self.converge(org, user, Mode::Revoke, "admin.lock", actor)
            .await
    }

    /// Lifts the user's lock (audited); `None` when no lock held.
    pub async fn unlock(
        &self,
        org: &OrgId,
        user: &UserId,
        actor: &str,
    ) -> Result<Option<SyncOutcome>, AccessError> {
        let at_ms = self.clock.now_ms();
        let audit = self.user_audit(org, user, actor, "access.unlock", at_ms, "");
        if !self.locks.clear_lock(org, user, &audit).await? {
            // A retry after a failed sync lands here: converge anyway.
            self.converge(org, user, Mode::Follow, "admin.unlock", actor)
                .await?;
            return Ok(None);
        }
        Ok(Some(
            self.converge(org, user, Mode::Follow, "admin.unlock", actor)
                .await?,
        ))
    }

    fn user_audit(
        &self,
        org: &OrgId,
        user: &UserId,
        actor: &str,
        action: &str,
        at_ms: i64,
        reason: &str,
    ) -> AuditEntry {
        AuditEntry {
            org: org.clone(),
            at_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            resource_type: "User".into(),
            resource_id: user.to_string(),
            summary: serde_json::json!({ "reason": reason }),
        }
    }
}
