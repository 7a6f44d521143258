//! Orgs and stored credentials (gateway, SCIM and admin keys, resource-server credentials) in
//! SQL. Every credential write raises `credential_changes.counter` in its own transaction, so
//! a replica that reads the counter and then the credentials never misses a change.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, map_err};
use crate::domain::audit::AuditEntry;
use crate::domain::ports::{
    CredentialKind, CredentialRecord, OrgRecord, ResourceCredentialRecord, Tenants,
};
use crate::domain::{OrgId, StoreError};

#[async_trait]
impl Tenants for SqlStore {
    async fn upsert_org(&self, org: &OrgRecord) -> Result<(), StoreError> {
        let now = crate::domain::clock::Clock::now_ms(&crate::domain::clock::SystemClock);
        sqlx::query(
            "INSERT INTO orgs (id, display_name, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name",
        )
        .bind(org.id.as_str())
        .bind(org.display_name.as_str())
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, display_name FROM orgs ORDER BY id")
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(OrgRecord {
                    id: OrgId::new(r.try_get::<String, _>("id").map_err(map_err)?),
                    display_name: r.try_get("display_name").map_err(map_err)?,
                })
            })
            .collect()
    }

    async fn list_credentials(&self) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_id, kind, name, secret_hash, created_ms FROM credentials ORDER BY created_ms, id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind").map_err(map_err)?;
                Ok(CredentialRecord {
                    id: r.try_get("id").map_err(map_err)?,
                    org: OrgId::new(r.try_get::<String, _>("org_id").map_err(map_err)?),
                    kind: CredentialKind::parse(&kind).ok_or_else(|| {
                        StoreError::Internal(format!("unknown credential kind {kind}"))
                    })?,
                    name: r.try_get("name").map_err(map_err)?,
                    secret_hash: r.try_get("secret_hash").map_err(map_err)?,
                    created_ms: r.try_get("created_ms").map_err(map_err)?,
                })
            })
            .collect()
    }

    async fn insert_credentials(
        &self,
        creds: &[CredentialRecord],
        audit: &crate::domain::audit::AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        for c in creds {
            sqlx::query(
                "INSERT INTO credentials (id, org_id, kind, name, secret_hash, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(c.id.as_str())
            .bind(c.org.as_str())
            .bind(c.kind.as_str())
            .bind(c.name.as_str())
            .bind(c.secret_hash.as_str())
            .bind(c.created_ms)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        bump(&mut tx).await?;
        super::rows::write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_credential(
        &self,
        org: &OrgId,
        kind: CredentialKind,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let gone =
            sqlx::query("DELETE FROM credentials WHERE org_id = $1 AND kind = $2 AND id = $3")
                .bind(org.as_str())
                .bind(kind.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        bump(&mut tx).await?;
        super::rows::write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_resource_credentials(&self) -> Result<Vec<ResourceCredentialRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_id, connector_id, name, secret_hash, created_ms \
             FROM resource_credentials ORDER BY created_ms, id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(ResourceCredentialRecord {
                    id: r.try_get("id").map_err(map_err)?,
                    org: OrgId::new(r.try_get::<String, _>("org_id").map_err(map_err)?),
                    connector: r.try_get("connector_id").map_err(map_err)?,
                    name: r.try_get("name").map_err(map_err)?,
                    secret_hash: r.try_get("secret_hash").map_err(map_err)?,
                    created_ms: r.try_get("created_ms").map_err(map_err)?,
                })
            })
            .collect()
    }

    async fn insert_resource_credential(
        &self,
        c: &ResourceCredentialRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO resource_credentials (id, org_id, connector_id, name, secret_hash, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(c.id.as_str())
        .bind(c.org.as_str())
        .bind(c.connector.as_str())
        .bind(c.name.as_str())
        .bind(c.secret_hash.as_str())
        .bind(c.created_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        bump(&mut tx).await?;
        super::rows::write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_resource_credential(
        &self,
        org: &OrgId,
        connector: &str,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let gone = sqlx::query(
            "DELETE FROM resource_credentials WHERE org_id = $1 AND connector_id = $2 AND id = $3",
        )
        .bind(org.as_str())
        .bind(connector)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        bump(&mut tx).await?;
        super::rows::write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn credentials_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT counter FROM credential_changes WHERE id = 1")
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)
            .map(Option::unwrap_or_default)
    }
}

/// Raises the credential change counter inside the writing transaction (the row lock also
/// orders concurrent credential writes, so the counter never goes back).
pub(super) async fn bump(conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE credential_changes SET counter = counter + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(())
}
