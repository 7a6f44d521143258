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

#[async_trait]
impl crate::domain::ports::SigningKeyStore for SqlStore {
    async fn signing_keys(
        &self,
    ) -> Result<Vec<crate::domain::ports::StoredSigningKey>, StoreError> {
        use base64::Engine;
        let rows = sqlx::query(
            "SELECT kid, org_id, sealed_der, public_jwk, retired_ms, created_ms FROM signing_keys ORDER BY created_ms, kid",
        )
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let sealed: String = r.try_get("sealed_der").map_err(map_err)?;
                let jwk: String = r.try_get("public_jwk").map_err(map_err)?;
                Ok(crate::domain::ports::StoredSigningKey {
                    kid: r.try_get("kid").map_err(map_err)?,
                    org: r
                        .try_get::<Option<String>, _>("org_id")
                        .map_err(map_err)?
                        .map(OrgId::new),
                    sealed_der: base64::engine::general_purpose::STANDARD
                        .decode(sealed)
                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                    public_jwk: serde_json::from_str(&jwk)
                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                    retired_ms: r.try_get("retired_ms").map_err(map_err)?,
                    created_ms: r.try_get("created_ms").map_err(map_err)?,
                })
            })
            .collect()
    }

    async fn insert_signing_key(
        &self,
        org: &OrgId,
        kid: &str,
        sealed_der: &[u8],
        public_jwk: &serde_json::Value,
    ) -> Result<(), StoreError> {
        use base64::Engine;
        sqlx::query("INSERT INTO signing_keys (kid, sealed_der, public_jwk, created_ms, org_id) VALUES ($1, $2, $3, $4, $5)")
            .bind(kid)
            .bind(base64::engine::general_purpose::STANDARD.encode(sealed_der))
            .bind(public_jwk.to_string())
            .bind(crate::domain::clock::Clock::now_ms(&crate::domain::clock::SystemClock))
            .bind(org.as_str())
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn retire_signing_key(
        &self,
        kid: &str,
        at_ms: crate::domain::clock::Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE signing_keys SET retired_ms = $2 WHERE kid = $1 AND retired_ms IS NULL",
        )
        .bind(kid)
        .bind(at_ms)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn reseal_signing_key(&self, kid: &str, sealed_der: &[u8]) -> Result<(), StoreError> {
        use base64::Engine;
        sqlx::query("UPDATE signing_keys SET sealed_der = $2 WHERE kid = $1")
            .bind(kid)
            .bind(base64::engine::general_purpose::STANDARD.encode(sealed_der))
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
