//! The gateway API's use cases (`/internal/v1`), one call per request: a vend whose audit
//! record is queued before the token is served, a tool decision audited the same way, and the
//! entitlements a gateway filters `tools/list` with. Their request and response types are the
//! ones the HTTP layer (de)serialises and the OpenAPI document describes.
//!
//! Invariant: nothing unaudited is given out. When the audit backlog is full a vend or a
//! decision fails with [`VendError::Unaudited`] instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::access::Access;
use super::audit_sink::{AuditSink, VendAudit, VendSubject};
use super::vend::{UserRef, Vend, VendError, VendRequest, Vended};
use crate::domain::audit::AuditEntry;
use crate::domain::clock::Clock;
use crate::domain::connector::{Action, Category};
use crate::domain::policy::{self, Reason};
use crate::domain::{OrgId, UserId};

/// `POST /internal/v1/token`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The org (one the gateway key is bound to).
    pub org: String,
    /// The user, named one way.
    pub user: UserRef,
    /// The connector id.
    pub connector: String,
    /// A subset of the entitled scopes; all of them when absent.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// `POST /internal/v1/authorize`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// The org (one the gateway key is bound to).
    pub org: String,
    /// The user, named one way.
    pub user: UserRef,
    /// The connector id.
    pub connector: String,
    /// The tool about to be called.
    pub tool: String,
    /// The gateway's category hint; the connector's tool map overrides it.
    #[serde(default)]
    pub category: Option<Category>,
}

/// The decision on a tool call, with its reasons.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthorizeResponse {
    /// What the gateway must do.
    pub decision: Action,
    /// Why, in a stable order.
    pub reasons: Vec<Reason>,
}

/// What a user may use, for a gateway to filter `tools/list`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntitlementsResponse {
    /// The user's SCIM id.
    pub user_id: String,
    /// Whether the user is active.
    pub active: bool,
    /// The entitled connectors.
    pub connectors: Vec<ConnectorAccess>,
}

/// One entitled connector.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorAccess {
    /// The connector id.
    pub connector: String,
    /// Scopes a token may carry.
    pub scopes: Vec<String>,
    /// The action per tool category.
    pub actions: BTreeMap<Category, Action>,
    /// The action per tool of the connector's tool map.
    pub tools: BTreeMap<String, Action>,
}

/// The gateway API over the services it composes (borrowed from the application state).
pub struct GatewayApi<'a> {
    /// Vends and user resolution.
    pub vend: &'a Vend,
    /// Entitlements.
    pub access: &'a Access,
    /// Hot-path audit records.
    pub audit: &'a AuditSink,
    /// Time.
    pub clock: &'a dyn Clock,
}

impl GatewayApi<'_> {
    /// Vends a token for an org the gateway is bound to; every outcome is audited, and a
    /// token whose record cannot be queued is not served.
    pub async fn token(
        &self,
        org: OrgId,
        gateway: Arc<str>,
        body: TokenRequest,
    ) -> Result<Vended, VendError> {
        let req = VendRequest {
            org,
            user: body.user,
            connector: body.connector,
            scopes: body.scopes,
            gateway,
        };
        match self.vend.vend(&req).await {
            Ok(v) => {
                let served = VendAudit {
                    org: req.org,
                    at_ms: self.clock.now_ms(),
                    gateway: req.gateway,
                    outcome: "ok",
                    subject: VendSubject::Served {
                        token: v.served.clone(),
                        cached: v.cached,
                    },
                };
                self.audit
                    .record(served)
                    .map_err(|_| VendError::Unaudited)?;
                Ok(v)
            }
            Err(e) => {
                let refused = VendAudit {
                    org: req.org.clone(),
                    at_ms: self.clock.now_ms(),
                    gateway: req.gateway.clone(),
                    outcome: e.code(),
                    subject: VendSubject::Refused {
                        user: match &req.user {
                            UserRef::Id(id) => id.clone(),
                            _ => String::new(),
                        },
                        connector: req.connector.clone(),
                    },
                };
                // A refusal gives nothing out: a full backlog loses only its record.
                let _ = self.audit.record(refused);
                Err(e)
            }
        }
    }

    /// Decides a tool call and audits the decision.
    pub async fn authorize(
        &self,
        org: OrgId,
        gateway: &str,
        body: AuthorizeRequest,
    ) -> Result<AuthorizeResponse, VendError> {
        let user = self.vend.resolve_user(&org, &body.user).await?;
        let Some((_, ent, connectors)) = self.access.entitlements(&org, &user).await? else {
            return Err(VendError::UnknownUser);
        };
        if !connectors.iter().any(|c| c.id == body.connector) {
            return Err(VendError::UnknownConnector);
        }
        let d = policy::decide_tool(
            &ent,
            &connectors,
            &body.connector,
            &body.tool,
            body.category,
        );
        self.audit
            .record(AuditEntry {
                org: org.clone(),
                at_ms: self.clock.now_ms(),
                actor: gateway.to_string(),
                action: "tool.authorize".into(),
                resource_type: "Tool".into(),
                resource_id: user.to_string(),
                summary: serde_json::json!({"user_id": user.as_str(), "connector": body.connector,
                    "tool": body.tool, "decision": d.action.as_str()}),
            })
            .map_err(|_| VendError::Unaudited)?;
        Ok(AuthorizeResponse {
            decision: d.action,
            reasons: d.reasons,
        })
    }

    /// What `user` may use in `org`.
    pub async fn entitlements(
        &self,
        org: OrgId,
        user: &UserRef,
    ) -> Result<EntitlementsResponse, VendError> {
        let user: UserId = self.vend.resolve_user(&org, user).await?;
        let Some((_, ent, _)) = self.access.entitlements(&org, &user).await? else {
            return Err(VendError::UnknownUser);
        };
        let connectors = ent
            .connectors
            .into_values()
            .map(|c| ConnectorAccess {
                connector: c.connector,
                scopes: c.scopes,
                actions: c.actions.into_iter().map(|(k, d)| (k, d.action)).collect(),
                tools: c.tools,
            })
            .collect();
        Ok(EntitlementsResponse {
            user_id: user.as_str().to_string(),
            active: ent.active,
            connectors,
        })
    }
}
