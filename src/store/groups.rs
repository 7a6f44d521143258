//! SCIM groups and memberships in SQL. Membership changes are applied as a delta inside the
//! same compare-and-set transaction as the group row, so two concurrent PATCHes of one group
//! serialise on its version and neither is lost (the loser re-reads and re-applies).

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use super::rows::{Table, group_from_row, placeholders, scan_sql, write_change};
use super::{SqlStore, map_err};
use crate::domain::directory::{Group, Member};
use crate::domain::ports::{Change, Page, Scan};
use crate::domain::{GroupId, OrgId, StoreError, UserId};

impl SqlStore {
    pub(super) async fn group_get(
        &self,
        org: &OrgId,
        id: &GroupId,
    ) -> Result<Option<Group>, StoreError> {
        let sql = format!(
            "SELECT {} FROM scim_groups WHERE org_id = $1 AND id = $2",
            super::rows::GROUP_COLUMNS
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org.as_str())
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?;
        row.as_ref().map(group_from_row).transpose()
    }

    pub(super) async fn group_scan(
        &self,
        org: &OrgId,
        scan: &Scan,
    ) -> Result<Page<Group>, StoreError> {
        let (cond, order, value) = scan_sql(Table::Groups, scan)?;
        let next = if value.is_some() { 3 } else { 2 };
        let sql = format!(
            "SELECT {} FROM scim_groups WHERE org_id = $1{cond} ORDER BY {order} LIMIT ${} OFFSET ${}",
            super::rows::GROUP_COLUMNS,
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
            .map(group_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let total = if scan.offset == 0 && (items.len() as u64) < scan.limit {
            items.len() as u64
        } else {
            let sql = format!("SELECT COUNT(*) AS n FROM scim_groups WHERE org_id = $1{cond}");
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org.as_str());
            if let Some(v) = &value {
                q = q.bind(v.clone());
            }
            let row = q.fetch_one(self.pool()).await.map_err(map_err)?;
            row.try_get::<i64, _>("n").map_err(map_err)? as u64
        };
        Ok(Page { items, total })
    }

    pub(super) async fn group_members(
        &self,
        org: &OrgId,
        groups: &[GroupId],
    ) -> Result<HashMap<GroupId, Vec<Member>>, StoreError> {
        let mut out: HashMap<GroupId, Vec<Member>> = HashMap::new();
        for chunk in groups.chunks(500) {
            let sql = format!(
                "SELECT m.group_id, u.id, u.user_name FROM scim_members m \
                 JOIN scim_users u ON u.org_id = m.org_id AND u.id = m.user_id \
                 WHERE m.org_id = $1 AND m.group_id IN {} ORDER BY u.user_name_lower, u.id",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org.as_str());
            for g in chunk {
                q = q.bind(g.as_str());
            }
            for row in q.fetch_all(self.pool()).await.map_err(map_err)? {
                let gid: String = row.try_get("group_id").map_err(map_err)?;
                let uid: String = row.try_get("id").map_err(map_err)?;
                let display: String = row.try_get("user_name").map_err(map_err)?;
                out.entry(GroupId::new(gid)).or_default().push(Member {
                    user_id: UserId::new(uid),
                    display,
                });
            }
        }
        Ok(out)
    }

    pub(super) async fn users_existing(
        &self,
        org: &OrgId,
        ids: &[UserId],
    ) -> Result<Vec<UserId>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT id FROM scim_users WHERE org_id = $1 AND id IN {}",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org.as_str());
            for u in chunk {
                q = q.bind(u.as_str());
            }
            for row in q.fetch_all(self.pool()).await.map_err(map_err)? {
                out.push(UserId::new(
                    row.try_get::<String, _>("id").map_err(map_err)?,
                ));
            }
        }
        Ok(out)
    }

    pub(super) async fn group_create(
        &self,
        g: &Group,
        members: &[UserId],
        change: &Change,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO scim_groups (org_id, id, display_name, display_name_lower, external_id, \
             attributes, version, created_ms, modified_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(g.org.as_str())
        .bind(g.id.as_str())
        .bind(g.display_name.as_str())
        .bind(g.display_name.to_lowercase())
        .bind(g.external_id.clone())
        .bind(g.attributes.to_string())
        .bind(g.version)
        .bind(g.created_ms)
        .bind(g.modified_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_members(&mut tx, &g.org, &g.id, members).await?;
        write_change(&mut tx, change).await?;
        tx.commit().await.map_err(map_err)
    }

    pub(super) async fn group_update(
        &self,
        g: &Group,
        expected: i64,
        added: &[UserId],
        removed: &[UserId],
        change: &Change,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let res = sqlx::query(
            "UPDATE scim_groups SET display_name = $3, display_name_lower = $4, external_id = $5, \
             attributes = $6, version = $7, modified_ms = $8 \
             WHERE org_id = $1 AND id = $2 AND version = $9",
        )
        .bind(g.org.as_str())
        .bind(g.id.as_str())
        .bind(g.display_name.as_str())
        .bind(g.display_name.to_lowercase())
        .bind(g.external_id.clone())
        .bind(g.attributes.to_string())
        .bind(g.version)
        .bind(g.modified_ms)
        .bind(expected)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if res.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(match self.group_get(&g.org, &g.id).await {
                Ok(Some(_)) => StoreError::VersionMismatch,
                Ok(None) => StoreError::NotFound,
                Err(e) => e,
            });
        }
        for chunk in removed.chunks(500) {
            let sql = format!(
                "DELETE FROM scim_members WHERE org_id = $1 AND group_id = $2 AND user_id IN {}",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(g.org.as_str())
                .bind(g.id.as_str());
            for u in chunk {
                q = q.bind(u.as_str());
            }
            q.execute(&mut *tx).await.map_err(map_err)?;
        }
        insert_members(&mut tx, &g.org, &g.id, added).await?;
        write_change(&mut tx, change).await?;
        tx.commit().await.map_err(map_err)
    }

    pub(super) async fn group_delete(
        &self,
        org: &OrgId,
        id: &GroupId,
        expected: i64,
        change: &Change,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM scim_members WHERE org_id = $1 AND group_id = $2")
            .bind(org.as_str())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let res =
            sqlx::query("DELETE FROM scim_groups WHERE org_id = $1 AND id = $2 AND version = $3")
                .bind(org.as_str())
                .bind(id.as_str())
                .bind(expected)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        if res.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(match self.group_get(org, id).await {
                Ok(Some(_)) => StoreError::VersionMismatch,
                Ok(None) => StoreError::NotFound,
                Err(e) => e,
            });
        }
        write_change(&mut tx, change).await?;
        tx.commit().await.map_err(map_err)
    }
}

async fn insert_members(
    conn: &mut sqlx::AnyConnection,
    org: &OrgId,
    group: &GroupId,
    members: &[UserId],
) -> Result<(), StoreError> {
    for chunk in members.chunks(300) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("($1, $2, ${})", i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO scim_members (org_id, group_id, user_id) VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(org.as_str())
            .bind(group.as_str());
        for u in chunk {
            q = q.bind(u.as_str());
        }
        q.execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}
