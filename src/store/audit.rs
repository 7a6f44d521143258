//! The audit log and directory event outbox, read side.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, map_err};
use crate::domain::audit::{AuditEntry, AuditRecord};
use crate::domain::events::DirectoryEvent;
use crate::domain::ports::AuditLog;
use crate::domain::{OrgId, StoreError};

#[async_trait]
impl AuditLog for SqlStore {
    async fn audit_after(
        &self,
        org: &OrgId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, org_id, at_ms, actor, action, resource_type, resource_id, summary \
             FROM audit_log WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(org.as_str())
        .bind(after_seq)
        .bind(limit.min(10_000) as i64)
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_query(
        &self,
        org: &OrgId,
        user: Option<&str>,
        connector: Option<&str>,
        since_ms: Option<crate::domain::clock::Millis>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = String::from(
            "SELECT seq, org_id, at_ms, actor, action, resource_type, resource_id, summary \
             FROM audit_log WHERE org_id = $1",
        );
        let mut n = 1;
        if user.is_some() {
            n += 1;
            sql.push_str(&format!(" AND resource_id = ${n}"));
        }
        if connector.is_some() {
            n += 1;
            sql.push_str(&format!(" AND summary LIKE ${n} ESCAPE '\\'"));
        }
        if since_ms.is_some() {
            n += 1;
            sql.push_str(&format!(" AND at_ms >= ${n}"));
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", n + 1));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.as_str());
        if let Some(u) = user {
            q = q.bind(u.to_string());
        }
        if let Some(c) = connector {
            // Summaries are compact JSON; match the member, with LIKE wildcards escaped.
            let value = serde_json::to_string(c).unwrap_or_default();
            let mut escaped = String::with_capacity(value.len());
            for ch in value.chars() {
                if matches!(ch, '\\' | '%' | '_') {
                    escaped.push('\\');
                }
                escaped.push(ch);
            }
            q = q.bind(format!("%\"connector\":{escaped}%"));
        }
        if let Some(t) = since_ms {
            q = q.bind(t);
        }
        let rows = q
            .bind(limit.clamp(1, 10_000) as i64)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        let mut out = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        // LIKE matched loosely (wildcards dropped); keep only exact connector matches.
        if let Some(c) = connector {
            out.retain(|r| {
                r.entry
                    .summary
                    .get("connector")
                    .and_then(serde_json::Value::as_str)
                    == Some(c)
            });
        }
        Ok(out)
    }

    async fn events_after(
        &self,
        org: &OrgId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<(i64, DirectoryEvent)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body FROM directory_events WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(org.as_str())
        .bind(after_seq)
        .bind(limit.min(10_000) as i64)
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body").map_err(map_err)?;
                let ev =
                    serde_json::from_str(&body).map_err(|e| StoreError::Internal(e.to_string()))?;
                Ok((r.try_get("seq").map_err(map_err)?, ev))
            })
            .collect()
    }
}

/// Records per multi-row audit insert.
const AUDIT_ROWS: usize = 32;

#[async_trait]
impl crate::domain::ports::AuditWriter for SqlStore {
    async fn append(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        // Multi-row inserts of a fixed size (one cached prepared statement), the remainder row by
        // row: a few statements per batch instead of one per record.
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let mut chunks = entries.chunks_exact(AUDIT_ROWS);
        for chunk in chunks.by_ref() {
            let mut q = sqlx::query(multi_row_insert()).persistent(true);
            for e in chunk {
                q = q
                    .bind(e.org.as_str())
                    .bind(e.at_ms)
                    .bind(e.actor.as_str())
                    .bind(e.action.as_str())
                    .bind(e.resource_type.as_str())
                    .bind(e.resource_id.as_str())
                    .bind(e.summary.to_string());
            }
            q.execute(&mut *tx).await.map_err(map_err)?;
        }
        for e in chunks.remainder() {
            super::rows::write_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(map_err)
    }
}

/// `INSERT … VALUES` for `AUDIT_ROWS` audit records, built once per process.
fn multi_row_insert() -> &'static str {
    let rows = AUDIT_ROWS;
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let values: Vec<String> = (0..rows)
            .map(|i| {
                let b = i * 7;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7
                )
            })
            .collect();
        format!(
            "INSERT INTO audit_log (org_id, at_ms, actor, action, resource_type, resource_id, summary) VALUES {}",
            values.join(", ")
        )
    })
}

fn audit_from_row(r: &sqlx::any::AnyRow) -> Result<AuditRecord, StoreError> {
    let summary: String = r.try_get("summary").map_err(map_err)?;
    Ok(AuditRecord {
        seq: r.try_get("seq").map_err(map_err)?,
        entry: AuditEntry {
            org: OrgId::new(r.try_get::<String, _>("org_id").map_err(map_err)?),
            at_ms: r.try_get("at_ms").map_err(map_err)?,
            actor: r.try_get("actor").map_err(map_err)?,
            action: r.try_get("action").map_err(map_err)?,
            resource_type: r.try_get("resource_type").map_err(map_err)?,
            resource_id: r.try_get("resource_id").map_err(map_err)?,
            summary: serde_json::from_str(&summary)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        },
    })
}
