//! Start-up provisioning of tenants and credentials.
//!
//! Orgs declared in config are upserted on every start, with their credential hashes taken
//! from config. When config declares no org at all (the embedded default), one org `default`
//! is created and, on its first start only, a SCIM token, a gateway key and an admin key are
//! generated (or taken from `AUTH_BROKER_BOOTSTRAP_*`), stored hashed, and returned once so
//! the CLI can print them. Later starts find them stored and print nothing.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{BOOTSTRAP_ORG, Config};
use crate::crypto::secret::{SecretHash, generate_credential, hash_secret, hash_str};
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::ports::{CredentialKind, CredentialRecord, OrgRecord, Tenants};
use crate::domain::{OrgId, StoreError};

/// First credentials supplied by automation instead of being generated.
#[derive(Default)]
pub struct BootstrapSecrets {
    /// `AUTH_BROKER_BOOTSTRAP_SCIM_TOKEN`
    pub scim_token: Option<SecretString>,
    /// `AUTH_BROKER_BOOTSTRAP_GATEWAY_KEY`
    pub gateway_key: Option<SecretString>,
    /// `AUTH_BROKER_BOOTSTRAP_ADMIN_KEY`
    pub admin_key: Option<SecretString>,
}

impl BootstrapSecrets {
    /// Reads the `AUTH_BROKER_BOOTSTRAP_*` variables (empty values count as unset).
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(SecretString::from)
        };
        Self {
            scim_token: var("AUTH_BROKER_BOOTSTRAP_SCIM_TOKEN"),
            gateway_key: var("AUTH_BROKER_BOOTSTRAP_GATEWAY_KEY"),
            admin_key: var("AUTH_BROKER_BOOTSTRAP_ADMIN_KEY"),
        }
    }
}

/// Credentials generated on this start, to be shown once and never again.
pub struct GeneratedCredentials {
    /// The org they belong to.
    pub org: String,
    /// Kind and plain value of each generated credential.
    pub values: Vec<(CredentialKind, SecretString)>,
}

/// One accepted credential: who it is (audit actor) and its hash.
#[derive(Debug, Clone)]
pub struct CredentialEntry {
    /// Audit actor, e.g. `scim:config:acme#0` or `scim:bootstrap-scim`.
    pub actor: String,
    /// What it allows.
    pub kind: CredentialKind,
    /// SHA-256 of the secret.
    pub hash: SecretHash,
}

/// In-memory index of every accepted credential, by org, so authentication costs one hash
/// and a few constant-time comparisons and never a database query. Gateway keys and
/// resource-server credentials sit in separate maps: neither is ever accepted as the other.
#[derive(Debug, Clone, Default)]
pub struct CredentialIndex {
    by_org: HashMap<String, Vec<CredentialEntry>>,
    gateways: HashMap<SecretHash, Arc<GatewayGrant>>,
    resources: HashMap<SecretHash, Arc<ResourceGrant>>,
}

/// What a resource-server credential is: the one connector of one org whose tokens its
/// holder (an MCP server) may introspect and revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGrant {
    /// Credential reference (`resource:<id>`, the audit actor).
    pub actor: Arc<str>,
    /// The org it is bound to.
    pub org: String,
    /// The connector it is bound to.
    pub connector: String,
}

/// What a gateway key is: its credential reference and the orgs it is bound to, shared by
/// every request that presents it.
#[derive(Debug, Clone)]
pub struct GatewayGrant {
    /// Credential reference (audit actor, token `client_id`).
    pub actor: Arc<str>,
    /// Orgs the key is bound to.
    pub orgs: Vec<String>,
}

impl CredentialIndex {
    /// Adds a credential for an org.
    pub fn add(&mut self, org: &str, entry: CredentialEntry) {
        if entry.kind == CredentialKind::Gateway {
            let slot = self.gateways.entry(entry.hash.clone()).or_insert_with(|| {
                Arc::new(GatewayGrant {
                    actor: entry.actor.as_str().into(),
                    orgs: Vec::new(),
                })
            });
            if !slot.orgs.iter().any(|o| o == org) {
                Arc::make_mut(slot).orgs.push(org.to_string());
            }
        }
        self.by_org.entry(org.to_string()).or_default().push(entry);
    }

    /// Adds a resource-server credential.
    pub fn add_resource(&mut self, hash: SecretHash, grant: ResourceGrant) {
        self.resources.insert(hash, Arc::new(grant));
    }

    /// A resource-server credential's grant: one SHA-256, one map look-up and a constant-time
    /// comparison of the stored hash, as for gateway keys.
    pub fn verify_resource(&self, presented: &str) -> Option<Arc<ResourceGrant>> {
        let h = hash_str(presented);
        let (stored, entry) = self.resources.get_key_value(&h)?;
        stored.ct_eq(&h).then(|| entry.clone())
    }

    /// The credentials of an org (kind and actor; for listings of config-declared keys).
    pub fn entries(&self, org: &str) -> impl Iterator<Item = &CredentialEntry> {
        self.by_org.get(org).into_iter().flatten()
    }

    /// A gateway key's actor and the orgs it is bound to: one SHA-256 and one map look-up,
    /// then a constant-time comparison of the stored hash.
    pub fn verify_gateway(&self, presented: &str) -> Option<Arc<GatewayGrant>> {
        let h = hash_str(presented);
        let (stored, entry) = self.gateways.get_key_value(&h)?;
        stored.ct_eq(&h).then(|| entry.clone())
    }

    /// The actor of the credential of `kind` for `org` that `presented` matches, if any.
    /// Every candidate of the org is compared, in constant time, whatever matches first.
    pub fn verify(&self, org: &str, kind: CredentialKind, presented: &str) -> Option<String> {
        let entries = self.by_org.get(org)?;
        let h = hash_str(presented);
        let mut found = None;
        for e in entries {
            if e.hash.ct_eq(&h) && e.kind == kind && found.is_none() {
                found = Some(e.actor.clone());
            }
        }
        found
    }

    /// The orgs that have at least one credential.
    pub fn orgs(&self) -> impl Iterator<Item = &str> {
        self.by_org.keys().map(String::as_str)
    }
}

/// Upserts orgs, creates first credentials if needed, and builds the index of the
/// credentials config declares (stored ones are added by `credentials::CredentialSync`, which
/// keeps them current on every replica).
pub async fn bootstrap(
    config: &Config,
    store: &dyn Tenants,
    secrets: BootstrapSecrets,
) -> Result<(CredentialIndex, Option<GeneratedCredentials>), BootstrapError> {
    let orgs = config
        .resolved_orgs()
        .map_err(|e| BootstrapError::Config(e.to_string()))?;
    let mut index = CredentialIndex::default();
    for org in &orgs {
        store
            .upsert_org(&OrgRecord {
                id: OrgId::new(&org.id),
                display_name: org.display_name.clone(),
            })
            .await?;
        for (i, h) in org.scim_tokens.iter().enumerate() {
            index.add(
                &org.id,
                CredentialEntry {
                    actor: format!("scim:config:{}#{i}", org.id),
                    kind: CredentialKind::Scim,
                    hash: h.clone(),
                },
            );
        }
        for (i, h) in org.gateway_keys.iter().enumerate() {
            index.add(
                &org.id,
                CredentialEntry {
                    actor: format!("gateway:config:{}#{i}", org.id),
                    kind: CredentialKind::Gateway,
                    hash: h.clone(),
                },
            );
        }
        for (i, h) in org.admin_keys.iter().enumerate() {
            index.add(
                &org.id,
                CredentialEntry {
                    actor: format!("admin:config:{}#{i}", org.id),
                    kind: CredentialKind::Admin,
                    hash: h.clone(),
                },
            );
        }
    }
    let mut generated = None;
    if orgs.is_empty() {
        store
            .upsert_org(&OrgRecord {
                id: OrgId::new(BOOTSTRAP_ORG),
                display_name: "Default".into(),
            })
            .await?;
        let existing = store.list_credentials().await?;
        if !existing.iter().any(|c| c.org.as_str() == BOOTSTRAP_ORG) {
            generated = first_credentials(store, secrets).await?;
        }
    }
    Ok((index, generated))
}

async fn first_credentials(
    store: &dyn Tenants,
    secrets: BootstrapSecrets,
) -> Result<Option<GeneratedCredentials>, BootstrapError> {
    let now = SystemClock.now_ms();
    let mut shown = Vec::new();
    let mut records = Vec::new();
    for (kind, given, prefix) in [
        (CredentialKind::Scim, secrets.scim_token, "ab_scim"),
        (CredentialKind::Gateway, secrets.gateway_key, "ab_gw"),
        (CredentialKind::Admin, secrets.admin_key, "ab_admin"),
    ] {
        let value = match given {
            Some(v) => v,
            None => {
                let v = generate_credential(prefix);
                shown.push((kind, SecretString::from(v.expose_secret().to_string())));
                v
            }
        };
        records.push(CredentialRecord {
            id: format!("bootstrap-{}", kind.as_str()),
            org: OrgId::new(BOOTSTRAP_ORG),
            kind,
            name: format!("bootstrap {}", kind.as_str()),
            secret_hash: hash_secret(&value).to_string(),
            created_ms: now,
        });
    }
    let audit = crate::domain::audit::AuditEntry {
        org: OrgId::new(BOOTSTRAP_ORG),
        at_ms: now,
        actor: "bootstrap".into(),
        action: "bootstrap.credentials".into(),
        resource_type: "Credential".into(),
        resource_id: BOOTSTRAP_ORG.into(),
        summary: serde_json::json!({"kinds": records.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>()}),
    };
    match store.insert_credentials(&records, &audit).await {
        Ok(()) => Ok((!shown.is_empty()).then(|| GeneratedCredentials {
            org: BOOTSTRAP_ORG.into(),
            values: shown,
        })),
        // Another replica bootstrapped first: its credentials stand, ours were never stored.
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Why start-up provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A credential reference in config could not be resolved.
    #[error("{0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
