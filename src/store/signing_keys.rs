//! Each org's signing keys in SQL (`signing_keys`): the private part sealed (base64), the
//! public JWK as text, and the key's life: `created_ms` (published from then on),
//! `activates_ms` (signs from then on) and `retired_ms` (signs no more from then on, possibly
//! a future time; published a while longer).
//!
//! Invariant kept here: adding a key and retiring the org's other keys at its activation is
//! one transaction that first touches the org's row, so additions for one org are serialised
//! (a row lock on PostgreSQL, the database write lock on SQLite) and the "no rotation under
//! way" condition is checked under that lock: replicas that all find a key too old, or an
//! operator rotating while a replica starts, store one new key, not one each.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sqlx::Row;

use super::{SqlStore, map_err};
use crate::domain::ports::{NewSigningKey, SigningKeyStore, StoredSigningKey};
use crate::domain::{OrgId, StoreError};

#[async_trait]
impl SigningKeyStore for SqlStore {
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, org_id, sealed_der, public_jwk, retired_ms, created_ms, activates_ms \
             FROM signing_keys ORDER BY created_ms, kid",
        )
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let sealed: String = r.try_get("sealed_der").map_err(map_err)?;
                let jwk: String = r.try_get("public_jwk").map_err(map_err)?;
                let created_ms = r.try_get("created_ms").map_err(map_err)?;
                Ok(StoredSigningKey {
                    kid: r.try_get("kid").map_err(map_err)?,
                    org: r
                        .try_get::<Option<String>, _>("org_id")
                        .map_err(map_err)?
                        .map(OrgId::new),
                    sealed_der: STANDARD
                        .decode(sealed)
                        .map_err(|e| StoreError::Internal(format!("corrupt sealed_der: {e}")))?,
                    public_jwk: serde_json::from_str(&jwk)
                        .map_err(|e| StoreError::Internal(format!("corrupt public_jwk: {e}")))?,
                    retired_ms: r.try_get("retired_ms").map_err(map_err)?,
                    created_ms,
                    activates_ms: r
                        .try_get::<Option<i64>, _>("activates_ms")
                        .map_err(map_err)?
                        .unwrap_or(created_ms),
                })
            })
            .collect()
    }

    async fn add_signing_key(&self, key: &NewSigningKey<'_>) -> Result<bool, StoreError> {
        let org = key.org.as_str();
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        // Serialises additions for this org (see the module header).
        let org_rows = sqlx::query("UPDATE orgs SET display_name = display_name WHERE id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        if org_rows == 0 {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        let blocking = if key.first {
            // Any key that signs or will sign: the org has its keys already.
            sqlx::query("SELECT kid FROM signing_keys WHERE org_id = $1 AND retired_ms IS NULL")
                .bind(org)
                .fetch_optional(&mut *tx)
                .await
        } else {
            // A key still waiting to activate: a rotation is under way.
            sqlx::query(
                "SELECT kid FROM signing_keys \
                 WHERE org_id = $1 AND retired_ms IS NULL AND activates_ms > $2",
            )
            .bind(org)
            .bind(key.created_ms)
            .fetch_optional(&mut *tx)
            .await
        }
        .map_err(map_err)?;
        if blocking.is_some() {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO signing_keys \
             (kid, sealed_der, public_jwk, created_ms, org_id, activates_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.kid)
        .bind(STANDARD.encode(key.sealed_der))
        .bind(key.public_jwk.to_string())
        .bind(key.created_ms)
        .bind(org)
        .bind(key.activates_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "UPDATE signing_keys SET retired_ms = $2 \
             WHERE org_id = $1 AND kid <> $3 AND retired_ms IS NULL",
        )
        .bind(org)
        .bind(key.activates_ms)
        .bind(key.kid)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn reseal_signing_key(&self, kid: &str, sealed_der: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE signing_keys SET sealed_der = $2 WHERE kid = $1")
            .bind(kid)
            .bind(STANDARD.encode(sealed_der))
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
