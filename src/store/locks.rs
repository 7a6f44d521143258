//! Admin locks and the reconciler's cursor in SQL.

use async_trait::async_trait;
use sqlx::Row;

use super::rows::write_audit;
use super::{SqlStore, map_err};
use crate::domain::audit::AuditEntry;
use crate::domain::offboarding::{Lock, UserLocks};
use crate::domain::{OrgId, StoreError, UserId};

#[async_trait]
impl UserLocks for SqlStore {
    async fn lock_of(&self, org: &OrgId, user: &UserId) -> Result<Option<Lock>, StoreError> {
        let row = sqlx::query(
            "SELECT reason, actor, at_ms FROM user_locks WHERE org_id = $1 AND user_id = $2",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(map_err)?;
        row.map(|r| {
            Ok(Lock {
                reason: r.try_get("reason").map_err(map_err)?,
                actor: r.try_get("actor").map_err(map_err)?,
                at_ms: r.try_get("at_ms").map_err(map_err)?,
            })
        })
        .transpose()
    }

    async fn set_lock(
        &self,
        org: &OrgId,
        user: &UserId,
        lock: &Lock,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO user_locks (org_id, user_id, reason, actor, at_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org_id, user_id) DO UPDATE SET reason = excluded.reason, \
             actor = excluded.actor, at_ms = excluded.at_ms",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(lock.reason.as_str())
        .bind(lock.actor.as_str())
        .bind(lock.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn clear_lock(
        &self,
        org: &OrgId,
        user: &UserId,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let gone = sqlx::query("DELETE FROM user_locks WHERE org_id = $1 AND user_id = $2")
            .bind(org.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        if gone == 0 {
            return Ok(false);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn reconcile_cursor(&self, org: &OrgId) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT seq FROM reconcile_cursors WHERE org_id = $1")
            .bind(org.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?;
        match row {
            Some(r) => r.try_get("seq").map_err(map_err),
            None => Ok(0),
        }
    }

    async fn advance_reconcile_cursor(&self, org: &OrgId, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reconcile_cursors (org_id, seq) VALUES ($1, $2) \
             ON CONFLICT (org_id) DO UPDATE SET seq = excluded.seq \
             WHERE reconcile_cursors.seq < excluded.seq",
        )
        .bind(org.as_str())
        .bind(seq)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }
}
