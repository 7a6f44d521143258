//! SCIM users in SQL: reads, scans and compare-and-set writes.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use super::rows::{Table, placeholders, scan_sql, user_from_row, write_change};
use super::{SqlStore, map_err};
use crate::domain::directory::{GroupRef, User};
use crate::domain::ports::{Change, Page, Scan};
use crate::domain::{GroupId, OrgId, StoreError, UserId};

impl SqlStore {
    pub(super) async fn user_get(
        &self,
        org: &OrgId,
        id: &UserId,
    ) -> Result<Option<User>, StoreError> {
        let sql = format!(
            "SELECT {} FROM scim_users WHERE org_id = $1 AND id = $2",
            super::rows::USER_COLUMNS
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org.as_str())
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub(super) async fn user_scan(
        &self,
        org: &OrgId,
        scan: &Scan,
    ) -> Result<Page<User>, StoreError> {
        let (cond, order, value) = scan_sql(Table::Users, scan)?;
        let next = if value.is_some() { 3 } else { 2 };
        let sql = format!(
            "SELECT {} FROM scim_users WHERE org_id = $1{cond} ORDER BY {order} LIMIT ${} OFFSET ${}",
            super::rows::USER_COLUMNS,
            next,
            next + 1
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org.as_str());
        if let Some(v) = &value {
            q = q.bind(v.clone());
        }
        let rows = q
            .bind(scan.limit.min(i64::MAX as u64) as i64)
            .bind(scan.offset.min(i64::MAX as u64) as i64)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        let items = rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let total = if value.is_some() && scan.offset == 0 && (items.len() as u64) < scan.limit {
            items.len() as u64
        } else {
            let sql = format!("SELECT COUNT(*) AS n FROM scim_users WHERE org_id = $1{cond}");
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org.as_str());
            if let Some(v) = &value {
                q = q.bind(v.clone());
            }
            let row = q.fetch_one(self.pool()).await.map_err(map_err)?;
            row.try_get::<i64, _>("n").map_err(map_err)? as u64
        };
        Ok(Page { items, total })
    }

    pub(super) async fn user_groups(
        &self,
        org: &OrgId,
        users: &[UserId],
    ) -> Result<HashMap<UserId, Vec<GroupRef>>, StoreError> {
        let mut out: HashMap<UserId, Vec<GroupRef>> = HashMap::new();
        for chunk in users.chunks(500) {
            let sql = format!(
                "SELECT m.user_id, g.id, g.display_name FROM scim_members m \
                 JOIN scim_groups g ON g.org_id = m.org_id AND g.id = m.group_id \
                 WHERE m.org_id = $1 AND m.user_id IN {} ORDER BY g.display_name_lower, g.id",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org.as_str());
            for u in chunk {
                q = q.bind(u.as_str());
            }
            for row in q.fetch_all(self.pool()).await.map_err(map_err)? {
                let user: String = row.try_get("user_id").map_err(map_err)?;
                let gid: String = row.try_get("id").map_err(map_err)?;
                let display: String = row.try_get("display_name").map_err(map_err)?;
                out.entry(UserId::new(user)).or_default().push(GroupRef {
                    group_id: GroupId::new(gid),
                    display,
                });
            }
        }
        Ok(out)
    }

    pub(super) async fn user_create(&self, u: &User, change: &Change) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO scim_users (org_id, id, user_name, user_name_lower, external_id, active, \
             display_name, email_lower, attributes, version, created_ms, modified_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(u.org.as_str())
        .bind(u.id.as_str())
        .bind(u.user_name.as_str())
        .bind(u.user_name.to_lowercase())
        .bind(u.external_id.clone())
        .bind(u.active as i64)
        .bind(u.display_name.clone())
        .bind(u.email.clone())
        .bind(u.attributes.to_string())
        .bind(u.version)
        .bind(u.created_ms)
        .bind(u.modified_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        write_change(&mut tx, change).await?;
        tx.commit().await.map_err(map_err)
    }

    pub(super) async fn user_update(
        &self,
        u: &User,
        expected: i64,
        change: &Change,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let res = sqlx::query(
            "UPDATE scim_users SET user_name = $3, user_name_lower = $4, external_id = $5, \
             active = $6, display_name = $7, email_lower = $8, attributes = $9, version = $10, \
             modified_ms = $11 WHERE org_id = $1 AND id = $2 AND version = $12",
        )
        .bind(u.org.as_str())
        .bind(u.id.as_str())
        .bind(u.user_name.as_str())
        .bind(u.user_name.to_lowercase())
        .bind(u.external_id.clone())
        .bind(u.active as i64)
        .bind(u.display_name.clone())
        .bind(u.email.clone())
        .bind(u.attributes.to_string())
        .bind(u.version)
        .bind(u.modified_ms)
        .bind(expected)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if res.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(self.missing_or_moved_user(&u.org, &u.id).await);
        }
        write_change(&mut tx, change).await?;
        tx.commit().await.map_err(map_err)
    }

    pub(super) async fn user_delete(
        &self,
        org: &OrgId,
        id: &UserId,
        expected: i64,
        change: &Change,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        // Groups that lose this member change too: bump their version so ETags move.
        sqlx::query(
            "UPDATE scim_groups SET version = version + 1, modified_ms = $3 \
             WHERE org_id = $1 AND id IN \
             (SELECT group_id FROM scim_members WHERE org_id = $1 AND user_id = $2)",
        )
        .bind(org.as_str())
        .bind(id.as_str())
        .bind(change.audit.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("DELETE FROM scim_members WHERE org_id = $1 AND user_id = $2")
            .bind(org.as_str())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let res =
            sqlx::query("DELETE FROM scim_users WHERE org_id = $1 AND id = $2 AND version = $3")
                .bind(org.as_str())
                .bind(id.as_str())
                .bind(expected)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        if res.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(self.missing_or_moved_user(org, id).await);
        }
        write_change(&mut tx, change).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn missing_or_moved_user(&self, org: &OrgId, id: &UserId) -> StoreError {
        match self.user_get(org, id).await {
            Ok(Some(_)) => StoreError::VersionMismatch,
            Ok(None) => StoreError::NotFound,
            Err(e) => e,
        }
    }
}
