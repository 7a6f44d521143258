//! Key material at start-up: the vault key ring (from config, or the embedded default's
//! generated key file) and each org's ES256 signing keys (stored sealed in the database).
//!
//! Every org is its own issuer with its own keys: a key row names its org, and its private
//! part is sealed with the org and kid as AAD, so a sealed key moved to another org's row does
//! not open. Rows without an org are the former single issuer's keys and sign nothing.

use std::path::Path;

use secrecy::ExposeSecret;

use crate::config::Config;
use crate::crypto::seal::{Aad, KeyRing, VaultKey};
use crate::crypto::signing::{SigningKey, VerifyingKey};
use crate::domain::OrgId;
use crate::domain::ports::SigningKeyStore;

/// The file holding the embedded default's generated vault key.
pub const EMBEDDED_KEY_FILE: &str = "vault.key";

/// Builds the key ring from `[vault]`, or from `data_dir/vault.key` (generated on first start).
pub fn key_ring(config: &Config) -> anyhow::Result<KeyRing> {
    if !config.vault.keys.is_empty() {
        let mut keys = Vec::new();
        for (id, r) in &config.vault.keys {
            let secret = r
                .read(&format!("vault.keys.{id}"))
                .map_err(|p| anyhow::anyhow!("{p}"))?;
            keys.push(
                VaultKey::from_base64(id, secret.expose_secret())
                    .map_err(|e| anyhow::anyhow!("vault.keys.{id}: {e}"))?,
            );
        }
        let active = config.vault.active_key.clone().unwrap_or_default();
        return KeyRing::new(&active, keys).map_err(|e| anyhow::anyhow!("vault.active_key: {e}"));
    }
    let path = config.storage.data_dir.join(EMBEDDED_KEY_FILE);
    let key = embedded_key(&path)?;
    KeyRing::new("embedded", vec![key]).map_err(|e| anyhow::anyhow!("{e}"))
}

fn embedded_key(path: &Path) -> anyhow::Result<VaultKey> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return VaultKey::from_base64("embedded", text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = VaultKey::generate("embedded");
    write_private(path, key.export_base64().expose_secret())?;
    Ok(key)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    Ok(())
}

/// The AAD a signing key's private part is sealed under: its org (`_broker` for the former
/// single issuer's keys) and its kid.
pub fn signing_key_aad<'a>(org: Option<&'a str>, kid: &'a str) -> Aad<'a> {
    Aad {
        org: org.unwrap_or("_broker"),
        user: "signing-key",
        connector: kid,
        record_version: 0,
    }
}

/// One org's signing keys: the active one and the still-published older ones.
pub struct OrgKeys {
    /// The org (issuer).
    pub org: OrgId,
    /// Signs every new token of the org.
    pub active: SigningKey,
    /// Retired or concurrent keys still in the org's JWKS.
    pub previous: Vec<VerifyingKey>,
}

/// Every org's signing keys, each generated or rotated as [`signing_keys`] does.
pub async fn issuer_keys(
    store: &dyn SigningKeyStore,
    ring: &KeyRing,
    orgs: &[OrgId],
    policy: SigningPolicy,
) -> anyhow::Result<Vec<OrgKeys>> {
    let mut out = Vec::with_capacity(orgs.len());
    for org in orgs {
        let (active, previous) = signing_keys(store, ring, org, policy).await?;
        out.push(OrgKeys {
            org: org.clone(),
            active,
            previous,
        });
    }
    Ok(out)
}

/// When signing keys rotate and how long retired ones stay published.
#[derive(Debug, Clone, Copy)]
pub struct SigningPolicy {
    /// Replace the active key once it is older than this.
    pub max_age_ms: i64,
    /// Keep a retired key in the JWKS for this long (longer than any token's lifetime).
    pub publish_for_ms: i64,
    /// Now.
    pub now_ms: i64,
}

/// The active signing key of `org` and its still-published older ones. Generates the org's
/// first key, and rotates with overlap: an expired active key is retired (kept in the org's
/// JWKS while tokens it signed can still be alive) and a new one takes over.
pub async fn signing_keys(
    store: &dyn SigningKeyStore,
    ring: &KeyRing,
    org: &OrgId,
    policy: SigningPolicy,
) -> anyhow::Result<(SigningKey, Vec<VerifyingKey>)> {
    for _ in 0..3 {
        let stored = store.signing_keys().await?;
        let mut active: Option<(SigningKey, i64)> = None;
        let mut previous = Vec::new();
        for k in stored.into_iter().filter(|k| k.org.as_ref() == Some(org)) {
            if let Some(retired) = k.retired_ms {
                if retired > policy.now_ms - policy.publish_for_ms
                    && let Ok(v) = VerifyingKey::from_jwk(&k.public_jwk)
                {
                    previous.push(v);
                }
                continue;
            }
            let der = ring
                .open(&k.sealed_der, &signing_key_aad(Some(org.as_str()), &k.kid))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "signing key {} of org {org} cannot be opened with the vault key ring: {e}",
                        k.kid
                    )
                })?;
            let key =
                SigningKey::from_pkcs8_der(&k.kid, &der).map_err(|e| anyhow::anyhow!("{e}"))?;
            // Several unretired keys (two replicas rotated at once): the newest signs, the
            // others are still published.
            if let Some((old, _)) = active.replace((key, k.created_ms)) {
                previous.push(old.verifying_key());
            }
        }
        match active {
            Some((key, created)) if policy.now_ms - created < policy.max_age_ms => {
                return Ok((key, previous));
            }
            Some((old, _)) => {
                tracing::info!(kid = %old.kid(), org = %org, "signing key reached its maximum age; rotating");
                insert_new(store, ring, org).await?;
                store.retire_signing_key(old.kid(), policy.now_ms).await?;
            }
            None => insert_new(store, ring, org).await?,
        }
    }
    anyhow::bail!("signing keys kept changing during start-up; retry")
}

async fn insert_new(
    store: &dyn SigningKeyStore,
    ring: &KeyRing,
    org: &OrgId,
) -> anyhow::Result<()> {
    let kid = format!("ab-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let key = SigningKey::generate(&kid);
    let sealed = ring.seal(
        &key.to_pkcs8_der(),
        &signing_key_aad(Some(org.as_str()), &kid),
    );
    store
        .insert_signing_key(org, &kid, &sealed, &key.public_jwk())
        .await?;
    Ok(())
}
