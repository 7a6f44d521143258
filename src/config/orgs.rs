//! Orgs declared in config, resolved for start-up: each org's SCIM tokens, admin keys and
//! gateway keys given as hashes, environment variables or files, read and hashed once, with
//! every unusable one named by its key.

use std::path::PathBuf;

use secrecy::SecretString;

use super::{Config, ConfigError, ConfigProblem, problem};
use crate::crypto::secret::{SecretHash, hash_secret};

impl Config {
    /// Orgs with their credential hashes resolved (env/file secrets read and hashed).
    pub fn resolved_orgs(&self) -> Result<Vec<OrgSpec>, ConfigError> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (id, org) in &self.orgs {
            let base = format!("orgs.{id}");
            let scim = resolve_secret_hashes(
                &base,
                "scim_token",
                &org.scim_token_hashes,
                &org.scim_token_env,
                &org.scim_token_file,
            );
            let admin = resolve_secret_hashes(
                &base,
                "admin_key",
                &org.admin_key_hashes,
                &org.admin_key_env,
                &org.admin_key_file,
            );
            let gateway = resolve_secret_hashes(
                &base,
                "gateway_key",
                &org.gateway_key_hashes,
                &org.gateway_key_env,
                &org.gateway_key_file,
            );
            match (scim, admin, gateway) {
                (Ok(scim), Ok(admin), Ok(gateway)) => out.push(OrgSpec {
                    id: id.clone(),
                    display_name: org.display_name.clone().unwrap_or_else(|| id.clone()),
                    scim_tokens: scim,
                    admin_keys: admin,
                    gateway_keys: gateway,
                }),
                (a, b, c) => {
                    problems.extend(a.err().unwrap_or_default());
                    problems.extend(b.err().unwrap_or_default());
                    problems.extend(c.err().unwrap_or_default());
                }
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// An org from config with its credentials as hashes.
#[derive(Debug, Clone)]
pub struct OrgSpec {
    /// The org id used in URLs.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// Accepted SCIM token hashes.
    pub scim_tokens: Vec<SecretHash>,
    /// Accepted admin key hashes.
    pub admin_keys: Vec<SecretHash>,
    /// Accepted gateway key hashes.
    pub gateway_keys: Vec<SecretHash>,
}

pub(super) fn resolve_secret_hashes(
    base: &str,
    kind: &str,
    hashes: &[String],
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Vec<SecretHash>, Vec<ConfigProblem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        match SecretHash::parse(h) {
            Some(h) => out.push(h),
            None => problems.push(problem(
                format!("{base}.{kind}_hashes[{i}]"),
                "must be sha256:<64 hex digits> (see `auth-broker hash-secret`)",
            )),
        }
    }
    if let Some(var) = env {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => {
                out.push(hash_secret(&SecretString::from(v.trim().to_string())))
            }
            _ => problems.push(problem(
                format!("{base}.{kind}_env"),
                format!("environment variable {var} is unset or empty"),
            )),
        }
    }
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => {
                out.push(hash_secret(&SecretString::from(v.trim().to_string())))
            }
            _ => problems.push(problem(
                format!("{base}.{kind}_file"),
                format!("{} is unreadable or empty", path.display()),
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
