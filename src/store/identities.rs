//! Identity links and asserted groups in SQL.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, map_err};
use crate::domain::ports::Identities;
use crate::domain::{OrgId, StoreError, UserId};

#[async_trait]
impl Identities for SqlStore {
    async fn find_identity(
        &self,
        org: &OrgId,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id FROM identity_links WHERE org_id = $1 AND issuer = $2 AND subject = $3",
        )
        .bind(org.as_str())
        .bind(issuer)
        .bind(subject)
        .fetch_optional(self.pool())
        .await
        .map_err(map_err)?;
        row.map(|r| r.try_get::<String, _>("user_id").map(UserId::new))
            .transpose()
            .map_err(map_err)
    }

    async fn link_identity(
        &self,
        org: &OrgId,
        issuer: &str,
        subject: &str,
        user: &UserId,
        now_ms: i64,
    ) -> Result<UserId, StoreError> {
        sqlx::query(
            "INSERT INTO identity_links (org_id, issuer, subject, user_id, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, issuer, subject) DO NOTHING",
        )
        .bind(org.as_str())
        .bind(issuer)
        .bind(subject)
        .bind(user.as_str())
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        self.find_identity(org, issuer, subject)
            .await?
            .ok_or_else(|| StoreError::Internal("identity link vanished".into()))
    }

    async fn asserted_groups(&self, org: &OrgId, user: &UserId) -> Result<Vec<String>, StoreError> {
        let row =
            sqlx::query("SELECT groups FROM asserted_groups WHERE org_id = $1 AND user_id = $2")
                .bind(org.as_str())
                .bind(user.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(map_err)?;
        match row {
            None => Ok(Vec::new()),
            Some(r) => {
                let text: String = r.try_get("groups").map_err(map_err)?;
                serde_json::from_str(&text).map_err(|e| StoreError::Internal(e.to_string()))
            }
        }
    }

    async fn set_asserted_groups(
        &self,
        org: &OrgId,
        user: &UserId,
        groups: &[String],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut sorted = groups.to_vec();
        sorted.sort();
        sorted.dedup();
        if self.asserted_groups(org, user).await? == sorted {
            return Ok(false);
        }
        let text =
            serde_json::to_string(&sorted).map_err(|e| StoreError::Internal(e.to_string()))?;
        sqlx::query(
            "INSERT INTO asserted_groups (org_id, user_id, groups, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, user_id) DO UPDATE SET groups = excluded.groups, updated_ms = excluded.updated_ms",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(text)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(true)
    }

    async fn users_asserting(
        &self,
        org: &OrgId,
        names: &[String],
    ) -> Result<Vec<UserId>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: std::collections::HashSet<String> =
            names.iter().map(|n| n.to_lowercase()).collect();
        // Groups are kept as one JSON list per user (portable across both dialects), so the
        // match is made here; this runs on admin changes, not on the vend path.
        let rows = sqlx::query("SELECT user_id, groups FROM asserted_groups WHERE org_id = $1")
            .bind(org.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        let mut users = Vec::new();
        for r in rows {
            let text: String = r.try_get("groups").map_err(map_err)?;
            let groups: Vec<String> =
                serde_json::from_str(&text).map_err(|e| StoreError::Internal(e.to_string()))?;
            if groups.iter().any(|g| wanted.contains(&g.to_lowercase())) {
                users.push(UserId::new(
                    r.try_get::<String, _>("user_id").map_err(map_err)?,
                ));
            }
        }
        Ok(users)
    }
}
