//! Per-user upstream grants and the upstream revocation outbox in SQL (`upstream_grants`,
//! `upstream_revocations`, migration 0007).
//!
//! Invariants kept here, in the data rather than in timing:
//! - Every grant write is a compare-and-set on `version` (an insert only where no row exists,
//!   an update only where the version read still holds), and every successful write moves the
//!   version by one, so a writer that read an older grant can never land over a newer one.
//!   The one exception is a re-seal (vault key rotation): the same token sealed again, written
//!   only where version and sealed bytes are still those read, leaves the version as it is.
//! - Offboarding deletes the grants and enqueues their revocations in one transaction; the
//!   grants are removed with `DELETE … RETURNING`, so the token enqueued is exactly the one
//!   removed even when a refresh rewrites the grant meanwhile.
//! - A revocation row is claimed by moving its `next_at_ms` with a compare-and-set on the value
//!   read, so two replicas never both get the same row while its lease runs.
//! - A final row (`revoked`, `unsupported`, `failed`) keeps no secret (`sealed` is emptied) and
//!   is never reopened by a late worker whose lease lapsed.
//!
//! Sealed bytes are stored as standard base64 text and scopes as JSON text, like the other
//! adapters; a corrupt stored value is `StoreError::Internal` naming the column.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, map_err};
use crate::domain::clock::Millis;
use crate::domain::consent::{
    Consents, GrantKey, GrantStatus, GrantWrite, RevocationItem, RevocationRow, RevocationStatus,
    StoredGrant, TokenKind,
};
use crate::domain::{OrgId, StoreError, UserId};

/// The columns of a revocation row, in the order [`revocation_from_row`] reads them (a macro so
/// that the queries stay static strings).
macro_rules! revocation_columns {
    () => {
        "id, org_id, user_id, connector_id, token_kind, sealed, epoch, status, attempts, \
         last_error, next_at_ms, created_ms, updated_ms"
    };
}

fn corrupt(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("corrupt {col}: {e}"))
}

fn sealed_col(row: &AnyRow, col: &str) -> Result<Vec<u8>, StoreError> {
    let text: String = row.try_get(col).map_err(map_err)?;
    STANDARD.decode(text).map_err(|e| corrupt(col, e))
}

fn grant_from_row(row: &AnyRow) -> Result<StoredGrant, StoreError> {
    let status: String = row.try_get("status").map_err(map_err)?;
    let scopes: String = row.try_get("scopes").map_err(map_err)?;
    Ok(StoredGrant {
        sealed: sealed_col(row, "sealed")?,
        version: row.try_get("version").map_err(map_err)?,
        status: GrantStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        scopes: serde_json::from_str(&scopes).map_err(|e| corrupt("scopes", e))?,
        updated_ms: row.try_get("updated_ms").map_err(map_err)?,
    })
}

fn revocation_from_row(row: &AnyRow) -> Result<RevocationRow, StoreError> {
    let kind: String = row.try_get("token_kind").map_err(map_err)?;
    let status: String = row.try_get("status").map_err(map_err)?;
    let epoch: i64 = row.try_get("epoch").map_err(map_err)?;
    let attempts: i64 = row.try_get("attempts").map_err(map_err)?;
    Ok(RevocationRow {
        id: row.try_get("id").map_err(map_err)?,
        org: OrgId::new(row.try_get::<String, _>("org_id").map_err(map_err)?),
        user: UserId::new(row.try_get::<String, _>("user_id").map_err(map_err)?),
        connector: row.try_get("connector_id").map_err(map_err)?,
        kind: TokenKind::parse(&kind).ok_or_else(|| corrupt("token_kind", &kind))?,
        sealed: sealed_col(row, "sealed")?,
        epoch: u64::try_from(epoch).map_err(|e| corrupt("epoch", e))?,
        status: RevocationStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt("attempts", e))?,
        last_error: row.try_get("last_error").map_err(map_err)?,
        next_at_ms: row.try_get("next_at_ms").map_err(map_err)?,
        created_ms: row.try_get("created_ms").map_err(map_err)?,
        updated_ms: row.try_get("updated_ms").map_err(map_err)?,
    })
}

fn scopes_json(scopes: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(scopes).map_err(|e| StoreError::Internal(e.to_string()))
}

fn is_final(status: RevocationStatus) -> bool {
    !matches!(status, RevocationStatus::Pending)
}

/// Deletes the matching grants and returns `(connector, sealed)` of each row deleted.
async fn take_grants(
    conn: &mut sqlx::AnyConnection,
    org: &OrgId,
    user: &UserId,
    connector: Option<&str>,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let rows = match connector {
        None => {
            sqlx::query(
                "DELETE FROM upstream_grants WHERE org_id = $1 AND user_id = $2 \
                 RETURNING connector_id, sealed",
            )
            .bind(org.as_str())
            .bind(user.as_str())
            .fetch_all(&mut *conn)
            .await
        }
        Some(c) => {
            sqlx::query(
                "DELETE FROM upstream_grants \
                 WHERE org_id = $1 AND user_id = $2 AND connector_id = $3 \
                 RETURNING connector_id, sealed",
            )
            .bind(org.as_str())
            .bind(user.as_str())
            .bind(c)
            .fetch_all(&mut *conn)
            .await
        }
    }
    .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("connector_id").map_err(map_err)?,
                sealed_col(r, "sealed")?,
            ))
        })
        .collect()
}

async fn insert_revocation(
    conn: &mut sqlx::AnyConnection,
    r: &RevocationRow,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO upstream_revocations (",
        revocation_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(r.id.as_str())
    .bind(r.org.as_str())
    .bind(r.user.as_str())
    .bind(r.connector.as_str())
    .bind(r.kind.as_str())
    .bind(STANDARD.encode(&r.sealed))
    .bind(r.epoch.min(i64::MAX as u64) as i64)
    .bind(r.status.as_str())
    .bind(i64::from(r.attempts))
    .bind(r.last_error.clone())
    .bind(r.next_at_ms)
    .bind(r.created_ms)
    .bind(r.updated_ms)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl Consents for SqlStore {
    async fn grant(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
    ) -> Result<Option<StoredGrant>, StoreError> {
        let row = sqlx::query(
            "SELECT sealed, version, status, scopes, updated_ms FROM upstream_grants \
             WHERE org_id = $1 AND user_id = $2 AND connector_id = $3",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(connector)
        .fetch_optional(self.pool())
        .await
        .map_err(map_err)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn grants_of(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Vec<(String, StoredGrant)>, StoreError> {
        let rows = sqlx::query(
            "SELECT connector_id, sealed, version, status, scopes, updated_ms \
             FROM upstream_grants WHERE org_id = $1 AND user_id = $2 ORDER BY connector_id",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("connector_id").map_err(map_err)?,
                    grant_from_row(r)?,
                ))
            })
            .collect()
    }

    async fn pending_revocations(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM upstream_revocations WHERE status = 'pending'")
            .fetch_one(self.pool())
            .await
            .map_err(map_err)
    }

    async fn set_grant_due(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        due_ms: Option<Millis>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE upstream_grants SET due_ms = $4 \
             WHERE org_id = $1 AND user_id = $2 AND connector_id = $3",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(connector)
        .bind(due_ms)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn due_grants(
        &self,
        now_ms: Millis,
        limit: u32,
    ) -> Result<Vec<(OrgId, UserId, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT org_id, user_id, connector_id FROM upstream_grants \
             WHERE due_ms <= $1 AND status = 'active' ORDER BY due_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    OrgId::new(r.try_get::<String, _>("org_id").map_err(map_err)?),
                    UserId::new(r.try_get::<String, _>("user_id").map_err(map_err)?),
                    r.try_get("connector_id").map_err(map_err)?,
                ))
            })
            .collect()
    }

    async fn put_grant(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        w: GrantWrite<'_>,
    ) -> Result<Option<i64>, StoreError> {
        let sealed = STANDARD.encode(w.sealed);
        let scopes = scopes_json(w.scopes)?;
        let (res, version) = match w.expected {
            None => {
                let res = sqlx::query(
                    "INSERT INTO upstream_grants \
                     (org_id, user_id, connector_id, sealed, version, status, scopes, updated_ms) \
                     VALUES ($1, $2, $3, $4, 1, 'active', $5, $6) \
                     ON CONFLICT (org_id, user_id, connector_id) DO NOTHING",
                )
                .bind(org.as_str())
                .bind(user.as_str())
                .bind(connector)
                .bind(sealed)
                .bind(scopes)
                .bind(w.now_ms)
                .execute(self.pool())
                .await;
                (res, 1)
            }
            Some(v) => {
                let next = v
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Internal("grant version overflow".into()))?;
                let res = sqlx::query(
                    "UPDATE upstream_grants SET sealed = $4, scopes = $5, status = 'active', \
                     version = $6, updated_ms = $7 \
                     WHERE org_id = $1 AND user_id = $2 AND connector_id = $3 AND version = $8",
                )
                .bind(org.as_str())
                .bind(user.as_str())
                .bind(connector)
                .bind(sealed)
                .bind(scopes)
                .bind(next)
                .bind(w.now_ms)
                .bind(v)
                .execute(self.pool())
                .await;
                (res, next)
            }
        };
        let written = res.map_err(map_err)?.rows_affected();
        Ok((written == 1).then_some(version))
    }

    async fn mark_needs_reconsent(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        expected: i64,
        now_ms: Millis,
    ) -> Result<bool, StoreError> {
        let next = expected
            .checked_add(1)
            .ok_or_else(|| StoreError::Internal("grant version overflow".into()))?;
        let res = sqlx::query(
            "UPDATE upstream_grants SET status = 'needs_reconsent', version = $4, \
             updated_ms = $5 \
             WHERE org_id = $1 AND user_id = $2 AND connector_id = $3 AND version = $6",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(connector)
        .bind(next)
        .bind(now_ms)
        .bind(expected)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(res.rows_affected() == 1)
    }

    async fn revoke_upstream(
        &self,
        org: &OrgId,
        user: &UserId,
        connectors: Option<&[String]>,
        extra: &[RevocationItem],
        epoch: u64,
        now_ms: Millis,
    ) -> Result<Vec<RevocationRow>, StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let mut taken = match connectors {
            None => take_grants(&mut tx, org, user, None).await?,
            Some(list) => {
                let mut all = Vec::new();
                for c in list {
                    all.extend(take_grants(&mut tx, org, user, Some(c)).await?);
                }
                all
            }
        };
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        let items = taken
            .into_iter()
            .map(|(connector, sealed)| RevocationItem {
                connector,
                kind: TokenKind::RefreshToken,
                sealed,
            })
            .chain(extra.iter().cloned());
        let mut rows = Vec::new();
        for item in items {
            let row = RevocationRow {
                id: uuid::Uuid::new_v4().to_string(),
                org: org.clone(),
                user: user.clone(),
                connector: item.connector,
                kind: item.kind,
                sealed: item.sealed,
                epoch,
                status: RevocationStatus::Pending,
                attempts: 0,
                last_error: None,
                next_at_ms: now_ms,
                created_ms: now_ms,
                updated_ms: now_ms,
            };
            insert_revocation(&mut tx, &row).await?;
            rows.push(row);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(rows)
    }

    async fn claim_revocations(
        &self,
        now_ms: Millis,
        lease_ms: Millis,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError> {
        // A lease of at least 1 ms makes every claim move `next_at_ms` past the value read
        // (due rows have `next_at_ms <= now`), so the compare-and-set below is never a no-op
        // that a second claimer could also win.
        let until = now_ms.saturating_add(lease_ms.max(1));
        let due = sqlx::query(concat!(
            "SELECT ",
            revocation_columns!(),
            " FROM upstream_revocations WHERE status = 'pending' AND next_at_ms <= $1 \
             ORDER BY next_at_ms, id LIMIT $2"
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in &due {
            let mut r = revocation_from_row(row)?;
            let won = sqlx::query(
                "UPDATE upstream_revocations SET next_at_ms = $1 \
                 WHERE id = $2 AND status = 'pending' AND next_at_ms = $3",
            )
            .bind(until)
            .bind(r.id.as_str())
            .bind(r.next_at_ms)
            .execute(self.pool())
            .await
            .map_err(map_err)?
            .rows_affected();
            if won == 1 {
                r.next_at_ms = until;
                claimed.push(r);
            }
        }
        Ok(claimed)
    }

    async fn record_revocation(
        &self,
        id: &str,
        status: RevocationStatus,
        attempts: u32,
        last_error: Option<&str>,
        next_at_ms: Millis,
        now_ms: Millis,
    ) -> Result<(), StoreError> {
        // Only a pending row is written: a final outcome stands, and a worker whose lease lapsed
        // while another replica finished the row cannot reopen it (its secret is gone).
        let sql = if is_final(status) {
            "UPDATE upstream_revocations SET status = $2, attempts = $3, last_error = $4, \
             next_at_ms = $5, updated_ms = $6, sealed = '' WHERE id = $1 AND status = 'pending'"
        } else {
            "UPDATE upstream_revocations SET status = $2, attempts = $3, last_error = $4, \
             next_at_ms = $5, updated_ms = $6 WHERE id = $1 AND status = 'pending'"
        };
        let written = sqlx::query(sql)
            .bind(id)
            .bind(status.as_str())
            .bind(i64::from(attempts))
            .bind(last_error.map(str::to_string))
            .bind(next_at_ms)
            .bind(now_ms)
            .execute(self.pool())
            .await
            .map_err(map_err)?
            .rows_affected();
        if written == 1 {
            return Ok(());
        }
        let exists = sqlx::query("SELECT 1 FROM upstream_revocations WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?;
        match exists {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound),
        }
    }

    async fn revocations_of(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Vec<RevocationRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            revocation_columns!(),
            " FROM upstream_revocations WHERE org_id = $1 AND user_id = $2 \
             ORDER BY created_ms, id"
        ))
        .bind(org.as_str())
        .bind(user.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter().map(revocation_from_row).collect()
    }

    async fn grants_after(
        &self,
        after: Option<&GrantKey>,
        limit: u32,
    ) -> Result<Vec<(GrantKey, StoredGrant)>, StoreError> {
        // Keyset paging on the primary key (a row-value comparison, portable to SQLite).
        let (org, user, connector) = after.map_or(("", "", ""), |k| {
            (k.org.as_str(), k.user.as_str(), k.connector.as_str())
        });
        let rows = sqlx::query(
            "SELECT org_id, user_id, connector_id, sealed, version, status, scopes, updated_ms \
             FROM upstream_grants WHERE (org_id, user_id, connector_id) > ($1, $2, $3) \
             ORDER BY org_id, user_id, connector_id LIMIT $4",
        )
        .bind(org)
        .bind(user)
        .bind(connector)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let key = GrantKey {
                    org: OrgId::new(r.try_get::<String, _>("org_id").map_err(map_err)?),
                    user: UserId::new(r.try_get::<String, _>("user_id").map_err(map_err)?),
                    connector: r.try_get("connector_id").map_err(map_err)?,
                };
                Ok((key, grant_from_row(r)?))
            })
            .collect()
    }

    async fn reseal_grant(
        &self,
        key: &GrantKey,
        version: i64,
        read: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        // The version stays (see the trait): `updated_ms`, `status`, `scopes` and `due_ms`
        // too.
        let res = sqlx::query(
            "UPDATE upstream_grants SET sealed = $4 \
             WHERE org_id = $1 AND user_id = $2 AND connector_id = $3 \
             AND version = $5 AND sealed = $6",
        )
        .bind(key.org.as_str())
        .bind(key.user.as_str())
        .bind(key.connector.as_str())
        .bind(STANDARD.encode(sealed))
        .bind(version)
        .bind(STANDARD.encode(read))
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(res.rows_affected() == 1)
    }

    async fn pending_revocations_after(
        &self,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            revocation_columns!(),
            " FROM upstream_revocations WHERE status = 'pending' AND id > $1 \
             ORDER BY id LIMIT $2"
        ))
        .bind(after_id.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter().map(revocation_from_row).collect()
    }

    async fn reseal_revocation(
        &self,
        id: &str,
        read: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        // `next_at_ms` (a claim's lease), attempts and the rest stay as they are.
        let res = sqlx::query(
            "UPDATE upstream_revocations SET sealed = $2 \
             WHERE id = $1 AND status = 'pending' AND sealed = $3",
        )
        .bind(id)
        .bind(STANDARD.encode(sealed))
        .bind(STANDARD.encode(read))
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(res.rows_affected() == 1)
    }
}
