//! Key material: the vault key ring (from config, or the embedded default's generated key
//! file) and each org's ES256 signing keys (stored sealed in the database; their life over
//! time, rotation and the reload every replica runs are in [`signing`]).
//!
//! Every org is its own issuer with its own keys: a key row names its org, and its private
//! part is sealed with the org and kid as AAD, so a sealed key moved to another org's row does
//! not open. Rows without an org are the former single issuer's keys and sign nothing.

mod signing;

pub use signing::{
    OrgKeys, RotationOutcome, ScheduledKey, SigningKeySync, SigningPolicy, load_org_keys,
    rotate_signing,
};

use std::path::Path;

use secrecy::ExposeSecret;

use crate::config::Config;
use crate::crypto::seal::{Aad, KeyRing, VaultKey};

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
