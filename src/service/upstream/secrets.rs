//! How upstream secrets are sealed under the vault key ring, each bound (AAD) to its owner so
//! that a ciphertext copied to another org, user or connector does not open:
//! - a connector's client secret: `org | - | client-secret/<connector>`;
//! - a user's grant (refresh token): `org | user | grant/<connector>`;
//! - a token queued for revocation: `org | user | revoke/<connector>`.
//!
//! Grants are also queued for revocation as they are (the outbox opens both forms).

use secrecy::SecretString;

use crate::crypto::seal::{Aad, KeyRing, SealError};
use crate::domain::upstream::Upstream;
use crate::domain::{OrgId, UserId};

fn seal_str(ring: &KeyRing, org: &str, user: &str, field: &str, value: &str) -> Vec<u8> {
    ring.seal(
        value.as_bytes(),
        &Aad {
            org,
            user,
            connector: field,
            record_version: 0,
        },
    )
}

fn open_str(
    ring: &KeyRing,
    org: &str,
    user: &str,
    field: &str,
    sealed: &[u8],
) -> Result<SecretString, SealError> {
    let plain = ring.open(
        sealed,
        &Aad {
            org,
            user,
            connector: field,
            record_version: 0,
        },
    )?;
    let s = std::str::from_utf8(&plain).map_err(|_| SealError::Malformed)?;
    Ok(SecretString::from(s.to_string()))
}

/// Seals a connector's client secret.
pub fn seal_client_secret(ring: &KeyRing, org: &OrgId, connector: &str, secret: &str) -> Vec<u8> {
    seal_str(
        ring,
        org.as_str(),
        "-",
        &format!("client-secret/{connector}"),
        secret,
    )
}

/// The connector's client secret, from its sealed copy or the broker's environment.
pub fn client_secret(
    ring: &KeyRing,
    org: &OrgId,
    connector: &str,
    u: &Upstream,
) -> Result<Option<SecretString>, String> {
    if let Some(var) = &u.client_secret_env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(SecretString::from(v.trim().to_string()))),
            _ => Err(format!("client_secret_env: {var} is unset or empty")),
        };
    }
    u.client_secret
        .as_deref()
        .map(|sealed| open_client_secret(ring, org, connector, sealed))
        .transpose()
}

/// Opens a connector's sealed client secret.
pub fn open_client_secret(
    ring: &KeyRing,
    org: &OrgId,
    connector: &str,
    sealed: &[u8],
) -> Result<SecretString, String> {
    open_str(
        ring,
        org.as_str(),
        "-",
        &format!("client-secret/{connector}"),
        sealed,
    )
    .map_err(|_| "the stored client secret does not open (vault key missing?)".to_string())
}

/// Seals a refresh token as a user's grant.
pub fn seal_grant(
    ring: &KeyRing,
    org: &OrgId,
    user: &UserId,
    connector: &str,
    token: &str,
) -> Vec<u8> {
    seal_str(
        ring,
        org.as_str(),
        user.as_str(),
        &format!("grant/{connector}"),
        token,
    )
}

/// Opens a user's grant.
pub fn open_grant(
    ring: &KeyRing,
    org: &OrgId,
    user: &UserId,
    connector: &str,
    sealed: &[u8],
) -> Result<SecretString, SealError> {
    open_str(
        ring,
        org.as_str(),
        user.as_str(),
        &format!("grant/{connector}"),
        sealed,
    )
}

/// Seals a token queued for revocation.
pub fn seal_revocation(
    ring: &KeyRing,
    org: &OrgId,
    user: &UserId,
    connector: &str,
    token: &str,
) -> Vec<u8> {
    seal_str(
        ring,
        org.as_str(),
        user.as_str(),
        &format!("revoke/{connector}"),
        token,
    )
}

/// Opens a queued token (sealed for revocation, or a grant queued as it was).
pub fn open_queued(
    ring: &KeyRing,
    org: &OrgId,
    user: &UserId,
    connector: &str,
    sealed: &[u8],
) -> Result<SecretString, SealError> {
    open_str(
        ring,
        org.as_str(),
        user.as_str(),
        &format!("revoke/{connector}"),
        sealed,
    )
    .or_else(|_| open_grant(ring, org, user, connector, sealed))
}
