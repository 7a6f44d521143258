//! `[orgs.<org>.sign_in]`: how people of an org sign in to the broker (OIDC today), what a
//! sign-in may create, and where entitlement groups come from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, problem};

/// `[orgs.<org>.sign_in]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInConfig {
    /// Create a user on first sign-in when the IdP has not provisioned one (off by default:
    /// SCIM is the way users arrive).
    #[serde(default)]
    pub jit: bool,
    /// Where the groups that grant entitlements come from.
    #[serde(default)]
    pub groups_source: GroupsSource,
    /// Members of this group (display name, or the value the IdP asserts) may use the admin
    /// API through their session.
    #[serde(default)]
    pub admin_group: Option<String>,
    /// Session lifetime in seconds.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// The OpenID provider (exactly one of `oidc` and `saml`).
    pub oidc: Option<OidcConfig>,
    /// The SAML 2.0 identity provider.
    pub saml: Option<SamlConfig>,
}

/// `[orgs.<org>.sign_in.saml]`: a SAML 2.0 IdP, trusted only through pinned certificates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// The IdP's entity id (the `Issuer` of its assertions).
    pub idp_entity_id: String,
    /// The IdP's single sign-on URL (HTTP-Redirect binding).
    pub idp_sso_url: String,
    /// The IdP's signing certificates, PEM (several during a rollover).
    #[serde(default)]
    pub idp_certificates: Vec<String>,
    /// Files holding them.
    #[serde(default)]
    pub idp_certificate_files: Vec<PathBuf>,
    /// Our entity id (default `<public_url>/auth/<org>/saml/metadata`).
    #[serde(default)]
    pub sp_entity_id: Option<String>,
    /// The attribute identifying the person; the NameID when unset.
    #[serde(default)]
    pub subject_attribute: Option<String>,
    /// The attribute with the groups.
    #[serde(default = "default_groups_claim")]
    pub groups_attribute: String,
    /// The attribute with the e-mail address (else a NameID in e-mail form).
    #[serde(default = "default_email_attribute")]
    pub email_attribute: String,
    /// Accepted signature algorithms.
    #[serde(default = "default_saml_algorithms")]
    pub signature_algorithms: Vec<String>,
    /// Largest accepted `SAMLResponse` form value, in bytes, checked before decoding.
    #[serde(default = "default_saml_max")]
    pub max_response_bytes: usize,
}

fn default_email_attribute() -> String {
    "email".into()
}
fn default_saml_algorithms() -> Vec<String> {
    SAML_ALGORITHMS.iter().map(|a| a.to_string()).collect()
}
fn default_saml_max() -> usize {
    256 * 1024
}

/// Signature algorithms a SAML assertion may use: RSA and ECDSA with SHA-256 or stronger.
/// SHA-1 (and DSA) are never accepted.
pub const SAML_ALGORITHMS: &[&str] = &[
    "rsa-sha256",
    "rsa-sha384",
    "rsa-sha512",
    "ecdsa-sha256",
    "ecdsa-sha384",
    "ecdsa-sha512",
];

impl SamlConfig {
    /// The pinned certificates as PEM texts (inline and from files).
    pub fn certificates(&self) -> Result<Vec<String>, String> {
        let mut out = self.idp_certificates.clone();
        for f in &self.idp_certificate_files {
            out.push(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?,
            );
        }
        Ok(out)
    }

    fn validate(&self, key: &str, out: &mut Vec<ConfigProblem>) {
        if self.idp_entity_id.trim().is_empty() {
            out.push(problem(format!("{key}.idp_entity_id"), "must not be empty"));
        }
        if !url_like(&self.idp_sso_url) {
            out.push(problem(
                format!("{key}.idp_sso_url"),
                "must be an https:// URL (http:// only for localhost)",
            ));
        }
        match self.certificates() {
            Err(e) => out.push(problem(format!("{key}.idp_certificate_files"), e)),
            Ok(certs) if certs.is_empty() => out.push(problem(
                format!("{key}.idp_certificates"),
                "pin the IdP's signing certificate (idp_certificates or idp_certificate_files): \
                 assertions are verified only against pinned certificates",
            )),
            Ok(certs) => {
                for (i, pem) in certs.iter().enumerate() {
                    if openssl::x509::X509::from_pem(pem.as_bytes()).is_err() {
                        out.push(problem(
                            format!("{key}.idp_certificates[{i}]"),
                            "is not a PEM X.509 certificate",
                        ));
                    }
                }
            }
        }
        if self.signature_algorithms.is_empty() {
            out.push(problem(
                format!("{key}.signature_algorithms"),
                "must not be empty",
            ));
        }
        for alg in &self.signature_algorithms {
            if !SAML_ALGORITHMS.contains(&alg.as_str()) {
                out.push(problem(
                    format!("{key}.signature_algorithms"),
                    format!(
                        "{alg} is not accepted (one of {}; never SHA-1)",
                        SAML_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if self.max_response_bytes < 4096 || self.max_response_bytes > 1024 * 1024 {
            out.push(problem(
                format!("{key}.max_response_bytes"),
                "must be between 4096 and 1048576",
            ));
        }
    }
}

fn default_session_ttl() -> u64 {
    8 * 3600
}

pub use crate::domain::connector::GroupsSource;

/// `[orgs.<org>.sign_in.oidc]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// The broker's client id at the provider.
    pub client_id: String,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// File holding the client secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes requested (`openid` is always added).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// ID token claim holding the groups (Okta `groups`; Entra `groups`, as object ids).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// ID token claim that identifies the person at this issuer (`sub`; Entra: `oid`).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Signature algorithms accepted on ID tokens.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Largest accepted distance between an ID token's `iat` and now, in seconds.
    #[serde(default = "default_max_iat_skew")]
    pub max_iat_skew_secs: u64,
    /// Least time between two JWKS fetches caused by unknown key ids, in seconds.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_min_refresh_secs: u64,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256"].map(String::from).to_vec()
}
fn default_max_iat_skew() -> u64 {
    300
}
fn default_jwks_refresh() -> u64 {
    30
}

/// Asymmetric JWS algorithms an ID token may use. `none` and the HMAC family are never
/// accepted: the broker is a confidential client and must not verify with its own secret.
pub const OIDC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

impl SignInConfig {
    /// Problems with this section, keyed under `base`.
    pub fn validate(&self, base: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let base = format!("{base}.sign_in");
        if self.session_ttl_secs < 60 {
            out.push(problem(
                format!("{base}.session_ttl_secs"),
                "must be at least 60",
            ));
        }
        if let Some(saml) = &self.saml {
            if self.oidc.is_some() {
                out.push(problem(&base, "give exactly one of oidc or saml"));
            }
            saml.validate(&format!("{base}.saml"), &mut out);
            return out;
        }
        let Some(oidc) = &self.oidc else {
            out.push(problem(
                &base,
                "needs an identity provider: [sign_in.oidc] or [sign_in.saml]",
            ));
            return out;
        };
        let key = format!("{base}.oidc");
        let issuer_ok = url_like(&oidc.issuer);
        if !issuer_ok {
            out.push(problem(
                format!("{key}.issuer"),
                "must be an https:// URL (http:// only for localhost)",
            ));
        }
        if oidc.client_id.trim().is_empty() {
            out.push(problem(format!("{key}.client_id"), "must not be empty"));
        }
        if oidc.client_secret_env.is_some() == oidc.client_secret_file.is_some() {
            out.push(problem(
                &key,
                "give exactly one of client_secret_env or client_secret_file",
            ));
        }
        if oidc.algorithms.is_empty() {
            out.push(problem(format!("{key}.algorithms"), "must not be empty"));
        }
        for alg in &oidc.algorithms {
            if !OIDC_ALGORITHMS.contains(&alg.as_str()) {
                out.push(problem(
                    format!("{key}.algorithms"),
                    format!(
                        "{alg} is not accepted (one of {}; never none or HS*)",
                        OIDC_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if oidc.max_iat_skew_secs == 0 || oidc.max_iat_skew_secs > 3600 {
            out.push(problem(
                format!("{key}.max_iat_skew_secs"),
                "must be between 1 and 3600",
            ));
        }
        out
    }
}

/// `https://…`, or `http://` to a loopback host (development and tests).
fn url_like(u: &str) -> bool {
    if u.starts_with("https://") {
        return u.len() > "https://".len();
    }
    ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| u.starts_with(p))
}

/// Reads a secret named by an env var or a file.
pub fn read_secret(env: &Option<String>, file: &Option<PathBuf>) -> Result<String, String> {
    match (env, file) {
        (Some(var), None) => std::env::var(var)
            .map(|v| v.trim().to_string())
            .map_err(|_| format!("environment variable {var} is not set")),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| v.trim().to_string())
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        _ => Err("give exactly one of an env var or a file".into()),
    }
    .and_then(|v| {
        if v.is_empty() {
            Err("the secret is empty".into())
        } else {
            Ok(v)
        }
    })
}
