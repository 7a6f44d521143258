//! Admin use cases: connectors, grants, gateway keys and resource-server credentials
//! (`credentials`), the user view and the kill switch. Changes that can take access away
//! re-derive the affected users' access (and revoke) before they answer.

mod credentials;

pub use credentials::ClientCredential;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::access::{Access, AccessError};
use super::credentials::CredentialSync;
use super::vend::Vend;
use crate::domain::audit::{AuditEntry, AuditRecord};
use crate::domain::clock::Clock;
use crate::domain::connector::{ActionSet, Category, Connector, Grant, GroupSelector, Strategy};
use crate::domain::ports::{AuditLog, Directory, PolicyStore, Source, Tenants};
use crate::domain::{GroupId, OrgId, StoreError, UserId};

/// Admin failures, each with one status at the edge.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 400 `invalid_request`
    #[error("{0}")]
    Invalid(String),
    /// 404 `not_found`
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`
    #[error("{0}")]
    Conflict(String),
    /// 503 `unavailable`
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AdminError::NotFound("not found".into()),
            StoreError::Conflict(a) => AdminError::Conflict(format!("{a} already exists")),
            other => AdminError::Unavailable(other.to_string()),
        }
    }
}

impl From<AccessError> for AdminError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(s) => s.into(),
            AccessError::Vault(v) => AdminError::Unavailable(v.to_string()),
            AccessError::Contended => AdminError::Unavailable(e.to_string()),
        }
    }
}

/// A connector as the admin API takes it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorInput {
    /// Id (path segment on PUT).
    #[serde(default)]
    pub id: Option<String>,
    /// Human-readable name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Minting strategy.
    pub strategy: Strategy,
    /// Token audience.
    pub audience: String,
    /// Most scopes grantable.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Tool → category.
    #[serde(default)]
    pub tools: BTreeMap<String, Category>,
    /// Ceiling per category.
    #[serde(default)]
    pub default_actions: Option<ActionSet>,
    /// Enabled flag.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Token lifetime override.
    #[serde(default)]
    pub token_ttl_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

/// A grant as the admin API takes it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// Group by display name.
    #[serde(default)]
    pub group: Option<String>,
    /// Group by SCIM id.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Connector id.
    pub connector: String,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Action per category.
    pub actions: ActionSet,
}

/// The admin service.
#[derive(Clone)]
pub struct Admin {
    access: Access,
    vend: Vend,
    policy: Arc<dyn PolicyStore>,
    dir: Arc<dyn Directory>,
    tenants: Arc<dyn Tenants>,
    audit: Arc<dyn AuditLog>,
    credentials: Arc<CredentialSync>,
    clock: Arc<dyn Clock>,
}

impl Admin {
    /// Builds the service.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        access: Access,
        vend: Vend,
        policy: Arc<dyn PolicyStore>,
        dir: Arc<dyn Directory>,
        tenants: Arc<dyn Tenants>,
        audit: Arc<dyn AuditLog>,
        credentials: Arc<CredentialSync>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            access,
            vend,
            policy,
            dir,
            tenants,
            audit,
            credentials,
            clock,
        }
    }

    fn entry(
        &self,
        org: &OrgId,
        actor: &str,
        action: &str,
        kind: &str,
        id: &str,
        summary: Value,
    ) -> AuditEntry {
        AuditEntry {
            org: org.clone(),
            at_ms: self.clock.now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            resource_type: kind.to_string(),
            resource_id: id.to_string(),
            summary,
        }
    }

    /// Builds and validates a connector from admin input.
    pub fn connector_from(
        org: &OrgId,
        id: &str,
        input: ConnectorInput,
    ) -> Result<Connector, AdminError> {
        if !crate::config::valid_org_id(id) {
            return Err(AdminError::Invalid(
                "connector id must be 1-63 of a-z 0-9 - _".into(),
            ));
        }
        if input.audience.trim().is_empty() {
            return Err(AdminError::Invalid("audience must not be empty".into()));
        }
        Ok(Connector {
            org: org.clone(),
            id: id.to_string(),
            display_name: input.display_name.unwrap_or_else(|| id.to_string()),
            strategy: input.strategy,
            audience: input.audience,
            scopes: input.scopes,
            tools: input.tools,
            default_actions: input.default_actions.unwrap_or(ActionSet::ALLOW_ALL),
            enabled: input.enabled,
            token_ttl_secs: input.token_ttl_secs.unwrap_or(0),
        })
    }

    /// Lists connectors.
    pub async fn connectors(&self, org: &OrgId) -> Result<Vec<Connector>, AdminError> {
        Ok(self.policy.connectors(org).await?)
    }

    /// Creates (`create = true`, 409 if it exists) or replaces a connector; users who lose
    /// access through the change are revoked before this returns.
    pub async fn put_connector(
        &self,
        org: &OrgId,
        actor: &str,
        c: Connector,
        create: bool,
    ) -> Result<Connector, AdminError> {
        let exists = self
            .policy
            .connectors(org)
            .await?
            .iter()
            .any(|x| x.id == c.id);
        if create && exists {
            return Err(AdminError::Conflict(format!(
                "connector {} already exists",
                c.id
            )));
        }
        if !create && !exists {
            return Err(AdminError::NotFound(format!("no connector {}", c.id)));
        }
        let audit = self.entry(
            org,
            actor,
            if create {
                "admin.connector.create"
            } else {
                "admin.connector.update"
            },
            "Connector",
            &c.id,
            json!({"enabled": c.enabled, "scopes": c.scopes, "strategy": c.strategy}),
        );
        self.policy
            .upsert_connector(&c, Source::Api, &audit)
            .await?;
        self.vend.invalidate(org);
        if !create {
            self.resync_connector(org, &c.id, actor, "admin.connector.update")
                .await?;
        }
        Ok(c)
    }

    /// Deletes a connector and its grants; its users' tokens are revoked first-class.
    pub async fn delete_connector(
        &self,
        org: &OrgId,
        actor: &str,
        id: &str,
    ) -> Result<(), AdminError> {
        let users = self.access.users_of_connector(org, id).await?;
        let audit = self.entry(
            org,
            actor,
            "admin.connector.delete",
            "Connector",
            id,
            json!({}),
        );
        self.policy.delete_connector(org, id, &audit).await?;
        self.vend.invalidate(org);
        // Its resource-server credentials went with it.
        self.reindex().await;
        for u in users {
            self.access
                .sync_user(org, &u, "admin.connector.delete", actor)
                .await?;
        }
        Ok(())
    }

    async fn resync_connector(
        &self,
        org: &OrgId,
        id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), AdminError> {
        for u in self.access.users_of_connector(org, id).await? {
            self.access.sync_user(org, &u, reason, actor).await?;
        }
        Ok(())
    }

    /// Lists grants.
    pub async fn grants(&self, org: &OrgId) -> Result<Vec<Grant>, AdminError> {
        Ok(self.policy.grants(org).await?)
    }

    /// Creates a grant (members gain access: their projections are refreshed).
    pub async fn create_grant(
        &self,
        org: &OrgId,
        actor: &str,
        input: GrantInput,
    ) -> Result<Grant, AdminError> {
        let group = match (input.group, input.group_id) {
            (Some(n), None) if !n.trim().is_empty() => GroupSelector::Name(n),
            (None, Some(id)) if !id.trim().is_empty() => GroupSelector::Id(GroupId::new(id)),
            _ => {
                return Err(AdminError::Invalid(
                    "give exactly one of group or group_id".into(),
                ));
            }
        };
        let connectors = self.policy.connectors(org).await?;
        let Some(c) = connectors.iter().find(|c| c.id == input.connector) else {
            return Err(AdminError::Invalid(format!(
                "no connector {}",
                input.connector
            )));
        };
        if let Some(s) = input.scopes.iter().find(|s| !c.scopes.contains(s)) {
            return Err(AdminError::Invalid(format!(
                "scope {s} is not among the connector's scopes"
            )));
        }
        let grant = Grant {
            id: uuid::Uuid::new_v4().to_string(),
            org: org.clone(),
            group,
            connector: input.connector,
            scopes: input.scopes,
            actions: input.actions,
        };
        let audit = self.entry(
            org,
            actor,
            "admin.grant.create",
            "Grant",
            &grant.id,
            json!({"connector": grant.connector, "group": grant.group, "scopes": grant.scopes}),
        );
        self.policy
            .insert_grant(&grant, Source::Api, &audit)
            .await?;
        self.resync_connector(org, &grant.connector, actor, "admin.grant.create")
            .await?;
        Ok(grant)
    }

    /// Deletes a grant; members who lose access are revoked before this returns.
    pub async fn delete_grant(&self, org: &OrgId, actor: &str, id: &str) -> Result<(), AdminError> {
        let Some(grant) = self
            .policy
            .grants(org)
            .await?
            .into_iter()
            .find(|g| g.id == id)
        else {
            return Err(AdminError::NotFound(format!("no grant {id}")));
        };
        let users = self
            .access
            .users_of_connector(org, &grant.connector)
            .await?;
        let audit = self.entry(
            org,
            actor,
            "admin.grant.delete",
            "Grant",
            id,
            json!({"connector": grant.connector}),
        );
        self.policy.delete_grant(org, id, &audit).await?;
        for u in users {
            self.access
                .sync_user(org, &u, "admin.grant.delete", actor)
                .await?;
        }
        Ok(())
    }

    /// A user with entitlements (and reasons), held tokens, the lock if one holds, and the
    /// epoch in force.
    pub async fn user_view(&self, org: &OrgId, user: &UserId) -> Result<Value, AdminError> {
        let Some((u, ent, _)) = self.access.entitlements(org, user).await? else {
            return Err(AdminError::NotFound(format!("no user {user}")));
        };
        let held = self.access.held(org, user).await?;
        let lock = self.access.lock_of(org, user).await?;
        // What the vault enforces now (absent until the user's first vend or change).
        let projection = self
            .access
            .vault()
            .read(org, user, "_")
            .await
            .map_err(AccessError::from)?
            .projection;
        let epoch = projection.as_ref().map(|p| p.epoch);
        let projection = projection.map(|p| {
            json!({
                "active": p.active,
                "locked": p.locked,
                "epoch": p.epoch,
                "connectors": p.connectors,
            })
        });
        Ok(json!({
            "id": u.id.as_str(),
            "user_name": u.user_name,
            "active": u.active,
            "locked": lock.is_some(),
            "lock": lock.map(|l| json!({
                "reason": l.reason,
                "actor": l.actor,
                "at": crate::domain::clock::rfc3339(l.at_ms),
            })),
            "epoch": epoch,
            "projection": projection,
            "entitlements": ent,
            "live_tokens": held,
        }))
    }

    /// The kill switch (`…/revoke`): purge now; the user may vend again unless locked.
    pub async fn kill(&self, org: &OrgId, actor: &str, user: &UserId) -> Result<Value, AdminError> {
        let out = self.access.kill(org, user, actor).await?;
        Ok(json!({"user_id": user.as_str(), "epoch": out.epoch, "revoked": out.revoked}))
    }

    /// Locks a user: purge now and refuse every vend until the lock is lifted.
    pub async fn lock(
        &self,
        org: &OrgId,
        actor: &str,
        user: &UserId,
        reason: &str,
    ) -> Result<Value, AdminError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 500 {
            return Err(AdminError::Invalid(
                "reason must be 1-500 characters".into(),
            ));
        }
        let out = self.access.lock(org, user, reason, actor).await?;
        Ok(json!({
            "user_id": user.as_str(),
            "locked": true,
            "reason": reason,
            "epoch": out.epoch,
            "revoked": out.revoked,
        }))
    }

    /// Lifts a user's lock; 404 when the user is unknown or not locked.
    pub async fn unlock(
        &self,
        org: &OrgId,
        actor: &str,
        user: &UserId,
    ) -> Result<Value, AdminError> {
        if self.dir.get_user(org, user).await?.is_none() {
            return Err(AdminError::NotFound(format!("no user {user}")));
        }
        match self.access.unlock(org, user, actor).await? {
            Some(out) => Ok(json!({"user_id": user.as_str(), "locked": false, "epoch": out.epoch})),
            None => Err(AdminError::NotFound(format!("user {user} is not locked"))),
        }
    }

    /// Revocation receipts of a user.
    pub async fn offboarding(&self, org: &OrgId, user: &UserId) -> Result<Value, AdminError> {
        if self.dir.get_user(org, user).await?.is_none()
            && self.access.receipts(org, user).await?.is_empty()
        {
            return Err(AdminError::NotFound(format!("no user {user}")));
        }
        let receipts = self.access.receipts(org, user).await?;
        Ok(json!({"user_id": user.as_str(), "receipts": receipts}))
    }

    /// Audit records, filtered.
    pub async fn audit(
        &self,
        org: &OrgId,
        user: Option<&str>,
        connector: Option<&str>,
        since_ms: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, AdminError> {
        let limit = limit.clamp(1, 1000);
        Ok(self
            .audit
            .audit_query(org, user, connector, since_ms, limit)
            .await?)
    }
}
