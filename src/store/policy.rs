//! Connectors and grants in SQL. Lists and maps are stored as JSON text (portable across
//! PostgreSQL and SQLite); they are small and always read whole.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::write_audit;
use super::{SqlStore, map_err};
use crate::domain::audit::AuditEntry;
use crate::domain::clock::Millis;
use crate::domain::connector::{Connector, Grant, GroupSelector};
use crate::domain::ports::{PolicyStore, Source};
use crate::domain::upstream::Upstream;
use crate::domain::{GroupId, OrgId, StoreError};

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(col).map_err(map_err)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Internal(format!("corrupt {col}: {e}")))
}

fn connector_from_row(row: &AnyRow) -> Result<Connector, StoreError> {
    Ok(Connector {
        org: OrgId::new(row.try_get::<String, _>("org_id").map_err(map_err)?),
        id: row.try_get("id").map_err(map_err)?,
        display_name: row.try_get("display_name").map_err(map_err)?,
        strategy: parse(row, "strategy")?,
        audience: row.try_get("audience").map_err(map_err)?,
        scopes: parse(row, "scopes")?,
        tools: parse(row, "tools")?,
        default_actions: parse(row, "default_actions")?,
        enabled: row.try_get::<i64, _>("enabled").map_err(map_err)? != 0,
        token_ttl_secs: row
            .try_get::<i64, _>("token_ttl_secs")
            .map_err(map_err)?
            .max(0) as u64,
        upstream: upstream_from_row(row)?,
    })
}

/// The `upstream` JSON and its sealed secret (base64), when the connector has an upstream.
fn upstream_from_row(row: &AnyRow) -> Result<Option<Upstream>, StoreError> {
    let Some(text) = row
        .try_get::<Option<String>, _>("upstream")
        .map_err(map_err)?
    else {
        return Ok(None);
    };
    let mut u: Upstream = serde_json::from_str(&text)
        .map_err(|e| StoreError::Internal(format!("corrupt upstream: {e}")))?;
    u.client_secret = row
        .try_get::<Option<String>, _>("upstream_secret")
        .map_err(map_err)?
        .map(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| StoreError::Internal(format!("corrupt upstream_secret: {e}")))
        })
        .transpose()?;
    Ok(Some(u))
}

fn grant_from_row(row: &AnyRow) -> Result<Grant, StoreError> {
    let kind: String = row.try_get("group_kind").map_err(map_err)?;
    let group_ref: String = row.try_get("group_ref").map_err(map_err)?;
    Ok(Grant {
        id: row.try_get("id").map_err(map_err)?,
        org: OrgId::new(row.try_get::<String, _>("org_id").map_err(map_err)?),
        group: if kind == "id" {
            GroupSelector::Id(GroupId::new(group_ref))
        } else {
            GroupSelector::Name(group_ref)
        },
        connector: row.try_get("connector_id").map_err(map_err)?,
        scopes: parse(row, "scopes")?,
        actions: parse(row, "actions")?,
    })
}

async fn upsert_connector_in(
    conn: &mut sqlx::AnyConnection,
    c: &Connector,
    source: Source,
    at_ms: Millis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO connectors (org_id, id, display_name, strategy, audience, scopes, tools, \
         default_actions, enabled, token_ttl_secs, source, updated_ms, upstream, upstream_secret) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (org_id, id) DO UPDATE SET display_name = excluded.display_name, \
         strategy = excluded.strategy, audience = excluded.audience, scopes = excluded.scopes, \
         tools = excluded.tools, default_actions = excluded.default_actions, \
         enabled = excluded.enabled, token_ttl_secs = excluded.token_ttl_secs, \
         source = excluded.source, updated_ms = excluded.updated_ms, \
         upstream = excluded.upstream, upstream_secret = excluded.upstream_secret",
    )
    .bind(c.org.as_str())
    .bind(c.id.as_str())
    .bind(c.display_name.as_str())
    .bind(json(&c.strategy)?)
    .bind(c.audience.as_str())
    .bind(json(&c.scopes)?)
    .bind(json(&c.tools)?)
    .bind(json(&c.default_actions)?)
    .bind(c.enabled as i64)
    .bind(c.token_ttl_secs.min(i64::MAX as u64) as i64)
    .bind(source.as_str())
    .bind(at_ms)
    .bind(c.upstream.as_ref().map(json).transpose()?)
    .bind(
        c.upstream
            .as_ref()
            .and_then(|u| u.client_secret.as_ref())
            .map(|s| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(s)
            }),
    )
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_grant_in(
    conn: &mut sqlx::AnyConnection,
    g: &Grant,
    source: Source,
    at_ms: Millis,
) -> Result<(), StoreError> {
    let (kind, group_ref) = match &g.group {
        GroupSelector::Name(n) => ("name", n.clone()),
        GroupSelector::Id(id) => ("id", id.to_string()),
    };
    sqlx::query(
        "INSERT INTO grants (org_id, id, group_kind, group_ref, connector_id, scopes, actions, \
         source, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(g.org.as_str())
    .bind(g.id.as_str())
    .bind(kind)
    .bind(group_ref)
    .bind(g.connector.as_str())
    .bind(json(&g.scopes)?)
    .bind(json(&g.actions)?)
    .bind(source.as_str())
    .bind(at_ms)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl PolicyStore for SqlStore {
    async fn connectors(&self, org: &OrgId) -> Result<Vec<Connector>, StoreError> {
        let rows = sqlx::query("SELECT * FROM connectors WHERE org_id = $1 ORDER BY id")
            .bind(org.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        rows.iter().map(connector_from_row).collect()
    }

    async fn upsert_connector(
        &self,
        c: &Connector,
        source: Source,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        upsert_connector_in(&mut tx, c, source, audit.at_ms).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_connector(
        &self,
        org: &OrgId,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM grants WHERE org_id = $1 AND connector_id = $2")
            .bind(org.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let res = sqlx::query("DELETE FROM connectors WHERE org_id = $1 AND id = $2")
            .bind(org.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if res.rows_affected() == 0 {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        // Its resource-server credentials go with it (a connector re-created later under the
        // same id does not inherit them).
        let creds =
            sqlx::query("DELETE FROM resource_credentials WHERE org_id = $1 AND connector_id = $2")
                .bind(org.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        if creds.rows_affected() > 0 {
            super::tenants::bump(&mut tx).await?;
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn grants(&self, org: &OrgId) -> Result<Vec<Grant>, StoreError> {
        let rows = sqlx::query("SELECT * FROM grants WHERE org_id = $1 ORDER BY created_ms, id")
            .bind(org.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn insert_grant(
        &self,
        g: &Grant,
        source: Source,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        insert_grant_in(&mut tx, g, source, audit.at_ms).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_grant(
        &self,
        org: &OrgId,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let res = sqlx::query("DELETE FROM grants WHERE org_id = $1 AND id = $2")
            .bind(org.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if res.rows_affected() == 0 {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn reseal_client_secret(
        &self,
        org: &OrgId,
        id: &str,
        read: &[u8],
        sealed: &[u8],
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        use base64::Engine;
        let b64 = &base64::engine::general_purpose::STANDARD;
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        // Compare-and-set on the sealed text read: a secret replaced meanwhile (admin API,
        // config sync) is left as its writer sealed it. `updated_ms` stays: nothing the
        // connector means changed.
        let res = sqlx::query(
            "UPDATE connectors SET upstream_secret = $3 \
             WHERE org_id = $1 AND id = $2 AND upstream_secret = $4",
        )
        .bind(org.as_str())
        .bind(id)
        .bind(b64.encode(sealed))
        .bind(b64.encode(read))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if res.rows_affected() == 0 {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn sync_config(
        &self,
        org: &OrgId,
        connectors: &[Connector],
        grants: &[Grant],
        at_ms: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM grants WHERE org_id = $1 AND source = 'config'")
            .bind(org.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("DELETE FROM connectors WHERE org_id = $1 AND source = 'config'")
            .bind(org.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        for c in connectors {
            upsert_connector_in(&mut tx, c, Source::Config, at_ms).await?;
        }
        for g in grants {
            insert_grant_in(&mut tx, g, Source::Config, at_ms).await?;
        }
        tx.commit().await.map_err(map_err)
    }
}
