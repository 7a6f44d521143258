//! Admin use cases for the credentials clients present: gateway keys (bound to the org; they
//! vend) and resource-server credentials (bound to one connector; they only introspect and
//! revoke that connector's tokens). Secrets are generated here, returned once, and stored only
//! as SHA-256 hashes; every create and revoke is audited in the same transaction and reaches
//! every replica's credential index through `CredentialSync` (this replica's before the call
//! answers).

use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;

use super::{Admin, AdminError};
use crate::crypto::secret::{generate_credential, hash_secret};
use crate::domain::OrgId;
use crate::domain::clock::rfc3339;
use crate::domain::ports::{CredentialKind, CredentialRecord, ResourceCredentialRecord};

/// A credential as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClientCredential {
    /// Id (path segment of its DELETE).
    pub id: String,
    /// A label for humans.
    pub name: String,
    /// When it was created (RFC 3339); absent for keys declared in config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// `api` (created through this API), `bootstrap` (the embedded default's first key) or
    /// `config` (declared in the config file: read-only here).
    pub source: &'static str,
    /// The connector a resource-server credential is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
}

/// Prefix of config-declared gateway keys' listed ids.
const CONFIG_PREFIX: &str = "config-";

fn check_name(name: &str) -> Result<(), AdminError> {
    if !crate::domain::text::is_label(name, 200) {
        return Err(AdminError::Invalid(
            "name must be 1-200 characters, not all white space".into(),
        ));
    }
    Ok(())
}

impl Admin {
    /// Creates a gateway key bound to the org; the plain key is returned only here.
    pub async fn create_gateway(
        &self,
        org: &OrgId,
        actor: &str,
        name: &str,
    ) -> Result<(String, String), AdminError> {
        check_name(name)?;
        let key = generate_credential("ab_gw");
        let id = format!("gw-{}", uuid::Uuid::new_v4().simple());
        let rec = CredentialRecord {
            id: id.clone(),
            org: org.clone(),
            kind: CredentialKind::Gateway,
            name: name.to_string(),
            secret_hash: hash_secret(&key).to_string(),
            created_ms: self.clock.now_ms(),
        };
        let audit = self.entry(
            org,
            actor,
            "admin.gateway.create",
            "Gateway",
            &id,
            json!({"name": name}),
        );
        self.tenants
            .insert_credentials(std::slice::from_ref(&rec), &audit)
            .await?;
        self.reindex().await;
        Ok((id, key.expose_secret().to_string()))
    }

    /// The org's gateway keys: stored ones, then those config declares (read-only).
    pub async fn gateways(&self, org: &OrgId) -> Result<Vec<ClientCredential>, AdminError> {
        let mut out: Vec<ClientCredential> = self
            .tenants
            .list_credentials()
            .await?
            .into_iter()
            .filter(|c| &c.org == org && c.kind == CredentialKind::Gateway)
            .map(|c| ClientCredential {
                source: if c.id.starts_with("bootstrap-") {
                    "bootstrap"
                } else {
                    "api"
                },
                id: c.id,
                name: c.name,
                created_at: Some(rfc3339(c.created_ms)),
                connector: None,
            })
            .collect();
        let index = self.credentials.index();
        if let Ok(idx) = index.read() {
            let declared = format!("gateway:config:{org}#");
            for e in idx.entries(org.as_str()) {
                if let Some(n) = e.actor.strip_prefix(&declared) {
                    out.push(ClientCredential {
                        id: format!("{CONFIG_PREFIX}{org}-{n}"),
                        name: format!("orgs.{org}.gateway_key_hashes[{n}]"),
                        created_at: None,
                        source: "config",
                        connector: None,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Revokes a stored gateway key on every replica (this one before answering).
    pub async fn revoke_gateway(
        &self,
        org: &OrgId,
        actor: &str,
        id: &str,
    ) -> Result<(), AdminError> {
        if id.starts_with(CONFIG_PREFIX) {
            return Err(AdminError::Conflict(
                "this key is declared in the config file; remove it there".into(),
            ));
        }
        let audit = self.entry(org, actor, "admin.gateway.revoke", "Gateway", id, json!({}));
        match self
            .tenants
            .delete_credential(org, CredentialKind::Gateway, id, &audit)
            .await
        {
            Err(crate::domain::StoreError::NotFound) => {
                Err(AdminError::NotFound(format!("no gateway key {id}")))
            }
            other => other.map_err(AdminError::from),
        }?;
        self.reindex().await;
        Ok(())
    }

    /// Creates a resource-server credential for a connector; the secret is returned only here.
    pub async fn create_resource_credential(
        &self,
        org: &OrgId,
        actor: &str,
        connector: &str,
        name: Option<&str>,
    ) -> Result<(String, String), AdminError> {
        self.known_connector(org, connector).await?;
        let name = name.unwrap_or(connector);
        check_name(name)?;
        let secret = generate_credential("ab_rs");
        let id = format!("rc-{}", uuid::Uuid::new_v4().simple());
        let rec = ResourceCredentialRecord {
            id: id.clone(),
            org: org.clone(),
            connector: connector.to_string(),
            name: name.to_string(),
            secret_hash: hash_secret(&secret).to_string(),
            created_ms: self.clock.now_ms(),
        };
        let audit = self.entry(
            org,
            actor,
            "admin.resource_credential.create",
            "ResourceCredential",
            &id,
            json!({"connector": connector, "name": name}),
        );
        self.tenants
            .insert_resource_credential(&rec, &audit)
            .await?;
        self.reindex().await;
        Ok((id, secret.expose_secret().to_string()))
    }

    /// A connector's resource-server credentials.
    pub async fn resource_credentials(
        &self,
        org: &OrgId,
        connector: &str,
    ) -> Result<Vec<ClientCredential>, AdminError> {
        self.known_connector(org, connector).await?;
        Ok(self
            .tenants
            .list_resource_credentials()
            .await?
            .into_iter()
            .filter(|c| &c.org == org && c.connector == connector)
            .map(|c| ClientCredential {
                id: c.id,
                name: c.name,
                created_at: Some(rfc3339(c.created_ms)),
                source: "api",
                connector: Some(c.connector),
            })
            .collect())
    }

    /// Revokes a resource-server credential on every replica (this one before answering).
    pub async fn revoke_resource_credential(
        &self,
        org: &OrgId,
        actor: &str,
        connector: &str,
        id: &str,
    ) -> Result<(), AdminError> {
        self.known_connector(org, connector).await?;
        let audit = self.entry(
            org,
            actor,
            "admin.resource_credential.revoke",
            "ResourceCredential",
            id,
            json!({"connector": connector}),
        );
        match self
            .tenants
            .delete_resource_credential(org, connector, id, &audit)
            .await
        {
            Err(crate::domain::StoreError::NotFound) => {
                Err(AdminError::NotFound(format!("no resource credential {id}")))
            }
            other => other.map_err(AdminError::from),
        }?;
        self.reindex().await;
        Ok(())
    }

    async fn known_connector(&self, org: &OrgId, connector: &str) -> Result<(), AdminError> {
        if self
            .policy
            .connectors(org)
            .await?
            .iter()
            .any(|c| c.id == connector)
        {
            Ok(())
        } else {
            Err(AdminError::NotFound(format!("no connector {connector}")))
        }
    }

    /// Brings this replica's index up to date after a credential write. The write is already
    /// committed: if the reload fails, the poller applies it once the store answers.
    pub(super) async fn reindex(&self) {
        if let Err(e) = self.credentials.refresh(true).await {
            tracing::warn!(error = %e, "credential index reload failed; the poller will retry");
        }
    }
}
