//! Offboarding receipts in SQL.

use async_trait::async_trait;
use sqlx::Row;

use super::rows::write_audit;
use super::{SqlStore, map_err};
use crate::domain::audit::AuditEntry;
use crate::domain::offboarding::{OffboardingLog, Receipt};
use crate::domain::{OrgId, StoreError, UserId};

#[async_trait]
impl OffboardingLog for SqlStore {
    async fn record(&self, r: &Receipt, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO offboarding_receipts (org_id, user_id, reason, epoch, connectors, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(r.org.as_str())
        .bind(r.user.as_str())
        .bind(r.reason.as_str())
        .bind(r.epoch.min(i64::MAX as u64) as i64)
        .bind(
            serde_json::to_string(&r.connectors)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        )
        .bind(r.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn receipts(&self, org: &OrgId, user: &UserId) -> Result<Vec<Receipt>, StoreError> {
        let rows = sqlx::query(
            "SELECT reason, epoch, connectors, at_ms FROM offboarding_receipts \
             WHERE org_id = $1 AND user_id = $2 ORDER BY seq",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let connectors: String = row.try_get("connectors").map_err(map_err)?;
                Ok(Receipt {
                    org: org.clone(),
                    user: user.clone(),
                    reason: row.try_get("reason").map_err(map_err)?,
                    epoch: row.try_get::<i64, _>("epoch").map_err(map_err)?.max(0) as u64,
                    connectors: serde_json::from_str(&connectors)
                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                    at_ms: row.try_get("at_ms").map_err(map_err)?,
                })
            })
            .collect()
    }
}
