//! Login state between the redirect to the IdP and its answer, what the callbacks receive,
//! and the small helpers that name and seal it.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::seal::Aad;

/// What the OIDC callback received.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    /// The authorization code.
    pub code: Option<String>,
    /// Our `state`.
    pub state: Option<String>,
    /// RFC 9207 issuer.
    pub iss: Option<String>,
    /// An error from the provider.
    pub error: Option<String>,
    /// Its description.
    pub error_description: Option<String>,
}

/// A started login: where to send the browser and the binding cookie's value.
pub struct Begun {
    /// The provider's authorization URL.
    pub redirect: String,
    /// The login cookie value.
    pub binding: String,
    /// A SAML login (its binding cookie must survive the IdP's cross-site POST).
    pub saml: bool,
}

/// A finished login.
pub struct Finished {
    /// The new session cookie value.
    pub session: String,
    /// Where to go now (a path on this broker).
    pub return_to: String,
    /// The session's lifetime.
    pub ttl: Duration,
}

/// What an OIDC login remembers until the callback.
#[derive(Serialize, Deserialize)]
pub(super) struct LoginState {
    pub(super) org: String,
    pub(super) nonce: String,
    pub(super) pkce_verifier: String,
    pub(super) return_to: String,
    pub(super) binding_hash: String,
}

/// What a SAML login remembers until the ACS.
#[derive(Serialize, Deserialize)]
pub(super) struct PendingSaml {
    pub(super) org: String,
    pub(super) request_id: String,
    pub(super) return_to: String,
    pub(super) binding_hash: String,
}

/// Login state bound to an org and a browser.
pub(super) trait Bound {
    fn org(&self) -> &str;
    fn binding_hash(&self) -> &str;
}

impl Bound for LoginState {
    fn org(&self) -> &str {
        &self.org
    }
    fn binding_hash(&self) -> &str {
        &self.binding_hash
    }
}

impl Bound for PendingSaml {
    fn org(&self) -> &str {
        &self.org
    }
    fn binding_hash(&self) -> &str {
        &self.binding_hash
    }
}

/// What the ACS receives (HTTP-POST binding).
#[derive(Debug, Default, Deserialize)]
pub struct AcsForm {
    /// The base64 response.
    #[serde(rename = "SAMLResponse")]
    pub saml_response: Option<String>,
    /// Our RelayState.
    #[serde(rename = "RelayState")]
    pub relay_state: Option<String>,
}

/// `return_to` if it is a path on this broker, else the user page.
pub fn safe_return_to(org: &str, return_to: Option<&str>) -> String {
    match return_to {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.chars().any(|c| c.is_control())
                && p.len() <= 512 =>
        {
            p.to_string()
        }
        _ => format!("/auth/{org}/me"),
    }
}

pub(super) fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

pub(super) fn hex_hash(v: &str) -> String {
    hex::encode(Sha256::digest(v.as_bytes()))
}

pub(super) fn session_key(cookie: &str) -> String {
    format!("ab:sess:{}", hex_hash(cookie))
}

pub(super) fn aad<'a>(org: &'a str, purpose: &'a str, key: &'a str) -> Aad<'a> {
    Aad {
        org,
        user: purpose,
        connector: key,
        record_version: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::safe_return_to;

    #[test]
    fn return_to_stays_on_this_broker() {
        assert_eq!(
            safe_return_to("acme", Some("/auth/acme/me?x=1")),
            "/auth/acme/me?x=1"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "javascript:alert(1)",
            "",
            "relative/path",
            "/ok\r\nSet-Cookie: x=y",
        ] {
            assert_eq!(
                safe_return_to("acme", Some(bad)),
                "/auth/acme/me",
                "{bad:?}"
            );
        }
        assert_eq!(safe_return_to("acme", None), "/auth/acme/me");
    }
}
