//! Admin use cases: connectors, grants, gateway keys and resource-server credentials
//! (`credentials`), the user view and the kill switch. Changes that can take access away
//! re-derive the affected users' access (and revoke) before they answer.

mod credentials;
mod views;

pub use credentials::ClientCredential;
pub use views::*;

use std::sync::Arc;

use serde_json::{Value, json};

use super::access::{Access, AccessError};
use super::credentials::CredentialSync;
use super::vend::Vend;
use crate::domain::audit::{AuditEntry, AuditRecord};
use crate::domain::clock::Clock;
use crate::domain::connector::{ActionSet, Connector, Grant, GroupSelector};
use crate::domain::ports::{AuditLog, Directory, PolicyStore, Source, Tenants};
use crate::domain::{GroupId, OrgId, StoreError, UserId, text};

/// Admin failures; `http::error` gives each its status and `code`.
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
    /// 503 `unavailable`: the store or the vault failed (the source says which).
    #[error("unavailable")]
    Unavailable(#[source] AccessError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AdminError::NotFound("not found".into()),
            StoreError::Conflict(a) => AdminError::Conflict(format!("{a} already exists")),
            other => AdminError::Unavailable(AccessError::Store(other)),
        }
    }
}

impl From<AccessError> for AdminError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(s) => s.into(),
            other => AdminError::Unavailable(other),
        }
    }
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

    /// Builds and validates a connector from admin input; a client secret is sealed on the way
    /// in, and on replace an omitted one keeps `existing`'s.
    pub fn connector_from(
        org: &OrgId,
        id: &str,
        input: ConnectorInput,
        ring: &crate::crypto::seal::KeyRing,
        existing: Option<&Connector>,
    ) -> Result<Connector, AdminError> {
        if !crate::domain::valid_org_id(id) {
            return Err(AdminError::Invalid(
                "connector id must be 1-63 of a-z 0-9 - _".into(),
            ));
        }
        if text::is_blank(&input.audience) {
            return Err(AdminError::Invalid("audience must not be empty".into()));
        }
        let kept = existing
            .and_then(|c| c.upstream.as_ref())
            .and_then(|u| u.client_secret.clone());
        let upstream = input
            .upstream
            .map(|u| super::upstream::upstream_from_input(org, id, u, ring, kept));
        if let Some(u) = &upstream {
            if input.strategy == crate::domain::connector::Strategy::BrokerJwt {
                return Err(AdminError::Invalid(
                    "upstream: only id_jag, token_exchange and authorization_code connectors \
                     have an upstream; broker_jwt tokens are the broker's own"
                        .into(),
                ));
            }
            if let Some((key, why)) = u.problems(input.strategy).into_iter().next() {
                return Err(AdminError::Invalid(format!("upstream.{key}: {why}")));
            }
        } else if input.strategy != crate::domain::connector::Strategy::BrokerJwt {
            return Err(AdminError::Invalid(
                "upstream: required for this strategy (the connector's own authorization server)"
                    .into(),
            ));
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
            upstream,
        })
    }

    /// One connector.
    pub async fn connector(&self, org: &OrgId, id: &str) -> Result<Connector, AdminError> {
        self.connectors(org)
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| AdminError::NotFound(format!("no connector {id}")))
    }

    /// Creates a connector (409 if it exists).
    pub async fn create_connector(
        &self,
        org: &OrgId,
        actor: &str,
        input: ConnectorInput,
    ) -> Result<Connector, AdminError> {
        let id = input
            .id
            .clone()
            .ok_or_else(|| AdminError::Invalid("id is required".into()))?;
        let c = Self::connector_from(org, &id, input, self.vend.ring(), None)?;
        self.put_connector(org, actor, c, true).await
    }

    /// Replaces connector `id` (404 if it does not exist); an `id` in the body must match.
    pub async fn replace_connector(
        &self,
        org: &OrgId,
        actor: &str,
        id: &str,
        input: ConnectorInput,
    ) -> Result<Connector, AdminError> {
        if input.id.as_deref().is_some_and(|i| i != id) {
            return Err(AdminError::Invalid(
                "id in the body differs from the path".into(),
            ));
        }
        let existing = self.connectors(org).await?.into_iter().find(|c| c.id == id);
        let c = Self::connector_from(org, id, input, self.vend.ring(), existing.as_ref())?;
        self.put_connector(org, actor, c, false).await
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
        let from_idp = c
            .upstream
            .as_ref()
            .is_some_and(|u| u.id_jag_source == crate::domain::upstream::IdJagSource::IdpExchange);
        if from_idp && !self.vend.upstreams().is_some_and(|up| up.has_idp(org)) {
            // Valid input that this org's configuration cannot serve (yet): a conflict.
            return Err(AdminError::Conflict(
                "upstream.id_jag_source: idp_exchange needs the org to sign in with OIDC \
                 (orgs.<id>.sign_in.oidc): the ID-JAG comes from that IdP"
                    .into(),
            ));
        }
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
            (Some(n), None) if !text::is_blank(&n) => GroupSelector::Name(n),
            (None, Some(id)) if !text::is_blank(&id) => GroupSelector::Id(GroupId::new(id)),
            _ => {
                return Err(AdminError::Invalid(
                    "give exactly one of group or group_id".into(),
                ));
            }
        };
        let connectors = self.policy.connectors(org).await?;
        let Some(c) = connectors.iter().find(|c| c.id == input.connector) else {
            return Err(AdminError::NotFound(format!(
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
    pub async fn user_view(&self, org: &OrgId, user: &UserId) -> Result<UserView, AdminError> {
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
        Ok(UserView {
            id: u.id.as_str().to_string(),
            user_name: u.user_name,
            active: u.active,
            locked: lock.is_some(),
            lock: lock.map(|l| LockView {
                reason: l.reason,
                actor: l.actor,
                at: crate::domain::clock::rfc3339(l.at_ms),
            }),
            epoch: projection.as_ref().map(|p| p.epoch),
            projection: projection.map(|p| ProjectionView {
                active: p.active,
                locked: p.locked,
                epoch: p.epoch,
                connectors: p.connectors,
            }),
            entitlements: ent,
            live_tokens: held,
        })
    }

    /// The kill switch (`…/revoke`): purge now; the user may vend again unless locked.
    pub async fn kill(
        &self,
        org: &OrgId,
        actor: &str,
        user: &UserId,
    ) -> Result<Killed, AdminError> {
        let out = self.access.kill(org, user, actor).await?;
        Ok(Killed {
            user_id: user.as_str().to_string(),
            epoch: out.epoch,
            revoked: out.revoked,
        })
    }

    /// Locks a user: purge now and refuse every vend until the lock is lifted.
    pub async fn lock(
        &self,
        org: &OrgId,
        actor: &str,
        user: &UserId,
        reason: &str,
    ) -> Result<Locked, AdminError> {
        if !text::is_label(reason, 500) {
            return Err(AdminError::Invalid(
                "reason must be 1-500 characters, not all white space".into(),
            ));
        }
        let reason = reason.trim();
        let out = self.access.lock(org, user, reason, actor).await?;
        Ok(Locked {
            user_id: user.as_str().to_string(),
            locked: true,
            reason: reason.to_string(),
            epoch: out.epoch,
            revoked: out.revoked,
        })
    }

    /// Lifts a user's lock; 404 when the user is unknown or not locked.
    pub async fn unlock(
        &self,
        org: &OrgId,
        actor: &str,
        user: &UserId,
    ) -> Result<Unlocked, AdminError> {
        if self.dir.get_user(org, user).await?.is_none() {
            return Err(AdminError::NotFound(format!("no user {user}")));
        }
        match self.access.unlock(org, user, actor).await? {
            Some(out) => Ok(Unlocked {
                user_id: user.as_str().to_string(),
                locked: false,
                epoch: out.epoch,
            }),
            None => Err(AdminError::NotFound(format!("user {user} is not locked"))),
        }
    }

    /// Revocation receipts of a user.
    pub async fn offboarding(&self, org: &OrgId, user: &UserId) -> Result<Offboarding, AdminError> {
        if self.dir.get_user(org, user).await?.is_none()
            && self.access.receipts(org, user).await?.is_empty()
        {
            return Err(AdminError::NotFound(format!("no user {user}")));
        }
        let receipts = self.access.receipts(org, user).await?;
        let upstream = match self.access.upstreams() {
            Some(u) => u
                .consents()
                .revocations_of(org, user)
                .await?
                .into_iter()
                .map(|r| UpstreamReceipt {
                    connector: r.connector,
                    token_kind: r.kind.as_str().to_string(),
                    status: r.status,
                    attempts: r.attempts,
                    last_error: r.last_error,
                    epoch: r.epoch,
                    queued_at: crate::domain::clock::rfc3339(r.created_ms),
                    at: crate::domain::clock::rfc3339(r.updated_ms),
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Offboarding {
            user_id: user.as_str().to_string(),
            receipts,
            upstream,
        })
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
