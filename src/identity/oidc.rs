//! The OpenID Connect relying party for one org: discovery, the authorization request (code
//! flow, PKCE S256, `state`, `nonce`), the code exchange and strict ID token validation.
//!
//! What `openidconnect` checks: signature against the provider's JWKS with our algorithm
//! allow-list, `iss`, `aud` (no untrusted extra audiences), `exp`, `nonce`, and `iat` through
//! the bounded window we give it. What it leaves to us and this module does: `azp`, JWKS
//! re-fetch on an unknown `kid` (rate-limited, so a flood of unknown kids cannot hammer the
//! IdP), reading the groups claim (and Entra's overage marker) from the verified payload.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{
    CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeVerifier, RedirectUrl, SignatureVerificationError, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::SignInError;
use crate::config::OidcConfig;

/// How long discovery results are trusted before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Time limit on every request to the provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who signed in, as the ID token says.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The issuer, exactly as configured and discovered.
    pub issuer: String,
    /// The person at that issuer (the configured subject claim).
    pub subject: String,
    /// `email`, if given.
    pub email: Option<String>,
    /// `preferred_username`, if given.
    pub preferred_username: Option<String>,
    /// `name`, if given.
    pub name: Option<String>,
    /// The groups claim's values.
    pub groups: Vec<String>,
    /// The provider left the groups out because there were too many (Entra overage).
    pub groups_overage: bool,
}

struct Discovered {
    metadata: CoreProviderMetadata,
    fetched: Instant,
}

/// One org's OpenID provider.
pub struct OidcProvider {
    cfg: OidcConfig,
    secret: SecretString,
    redirect_uri: String,
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    http: reqwest::Client,
    discovered: tokio::sync::RwLock<Option<Discovered>>,
    last_jwks_refresh: Mutex<Option<Instant>>,
}

impl OidcProvider {
    /// Builds the relying party; nothing is fetched until the first sign-in.
    pub fn new(
        cfg: OidcConfig,
        secret: SecretString,
        redirect_uri: String,
    ) -> Result<Self, String> {
        let algorithms = cfg
            .algorithms
            .iter()
            .map(|a| {
                serde_json::from_value::<CoreJwsSigningAlgorithm>(Value::String(a.clone()))
                    .map_err(|_| format!("unknown algorithm {a}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            // Redirects are never followed: discovery and token responses come from where
            // they were asked (SSRF and mix-up defence).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            cfg,
            secret,
            redirect_uri,
            algorithms,
            http,
            discovered: tokio::sync::RwLock::new(None),
            last_jwks_refresh: Mutex::new(None),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// The provider's metadata, discovered on first use and again after an hour.
    async fn metadata(&self) -> Result<CoreProviderMetadata, SignInError> {
        if let Some(d) = self.discovered.read().await.as_ref()
            && d.fetched.elapsed() < METADATA_TTL
        {
            return Ok(d.metadata.clone());
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone())
            .map_err(|e| SignInError::Config(format!("issuer: {e}")))?;
        // Checks that the document's issuer is the configured one.
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| SignInError::Provider(format!("discovery failed: {e}")))?;
        *self.discovered.write().await = Some(Discovered {
            metadata: metadata.clone(),
            fetched: Instant::now(),
        });
        Ok(metadata)
    }

    /// Where to send the browser.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        pkce_challenge: &str,
    ) -> Result<String, SignInError> {
        let metadata = self.metadata().await?;
        let mut url = metadata.authorization_endpoint().url().clone();
        let mut scopes: Vec<&str> = vec!["openid"];
        scopes.extend(
            self.cfg
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        );
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", pkce_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.to_string())
    }

    /// The scopes sign-in asks for (as configured).
    pub fn scopes(&self) -> Vec<String> {
        self.cfg.scopes.clone()
    }

    /// Whether the provider says it sends `iss` in authorization responses (RFC 9207).
    pub async fn sends_iss(&self) -> Result<bool, SignInError> {
        let metadata = self.metadata().await?;
        let v = serde_json::to_value(&metadata).unwrap_or_default();
        Ok(v["authorization_response_iss_parameter_supported"] == Value::Bool(true))
    }

    /// Exchanges the code and validates the ID token; also the refresh token the provider
    /// returned, if any (it does when the scopes ask for `offline_access`).
    pub async fn complete(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<(Identity, Option<SecretString>), SignInError> {
        let metadata = self.metadata().await?;
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.cfg.client_id.clone()),
            Some(ClientSecret::new(self.secret.expose_secret().to_string())),
        )
        .set_redirect_uri(
            RedirectUrl::new(self.redirect_uri.clone())
                .map_err(|e| SignInError::Config(format!("redirect URI: {e}")))?,
        );
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| SignInError::Provider(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| SignInError::TokenExchange(describe_token_error(&e)))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| {
                SignInError::InvalidIdToken("the token response has no id_token".into())
            })?
            .clone();
        let jwks = metadata.jwks().clone();
        let identity = match self.verify(&id_token, jwks, nonce) {
            Err(SignInError::UnknownKey) => {
                let jwks = self.refresh_jwks(&metadata).await?;
                self.verify(&id_token, jwks, nonce)
            }
            other => other,
        }?;
        let refresh_token = response
            .refresh_token()
            .map(|t| SecretString::from(t.secret().to_string()));
        Ok((identity, refresh_token))
    }

    /// Fetches the JWKS again, at most once per `jwks_min_refresh_secs`.
    async fn refresh_jwks(
        &self,
        metadata: &CoreProviderMetadata,
    ) -> Result<CoreJsonWebKeySet, SignInError> {
        let min = Duration::from_secs(self.cfg.jwks_min_refresh_secs);
        {
            let mut last = self
                .last_jwks_refresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < min) {
                return Err(SignInError::InvalidIdToken(
                    "signed with an unknown key (key set refreshed recently; not fetched again)"
                        .into(),
                ));
            }
            *last = Some(Instant::now());
        }
        tracing::info!(issuer = %self.cfg.issuer, "unknown signing key id: fetching the provider's key set again");
        let jwks = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| SignInError::Provider(format!("key set fetch failed: {e}")))?;
        let mut guard = self.discovered.write().await;
        if let Some(d) = guard.as_mut() {
            d.metadata = d.metadata.clone().set_jwks(jwks.clone());
        }
        Ok(jwks)
    }

    fn verify(
        &self,
        id_token: &CoreIdToken,
        jwks: CoreJsonWebKeySet,
        nonce: &str,
    ) -> Result<Identity, SignInError> {
        let issuer = IssuerUrl::new(self.cfg.issuer.clone())
            .map_err(|e| SignInError::Config(format!("issuer: {e}")))?;
        let skew = self.cfg.max_iat_skew_secs as i64;
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.cfg.client_id.clone()),
            issuer,
            jwks,
        )
        .set_allowed_algs(self.algorithms.clone())
        .set_issue_time_verifier_fn(move |iat| {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let d = iat.timestamp() - now;
            if d.abs() > skew {
                Err(format!("iat is {d} s from now (at most {skew} s allowed)"))
            } else {
                Ok(())
            }
        });
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_string()))
            .map_err(|e| match e {
                ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                ) => SignInError::UnknownKey,
                other => SignInError::InvalidIdToken(describe_claims_error(&other)),
            })?;
        // The signature is verified: the payload's other claims can be read as sent.
        let payload = payload(&id_token.to_string())?;
        if let Some(azp) = payload.get("azp") {
            if azp.as_str() != Some(self.cfg.client_id.as_str()) {
                return Err(SignInError::InvalidIdToken("azp is not this client".into()));
            }
        } else if payload["aud"].as_array().is_some_and(|a| a.len() > 1) {
            return Err(SignInError::InvalidIdToken(
                "several audiences and no azp".into(),
            ));
        }
        let subject = if self.cfg.subject_claim == "sub" {
            claims.subject().as_str().to_string()
        } else {
            payload[&self.cfg.subject_claim]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    SignInError::InvalidIdToken(format!(
                        "the ID token has no {} claim",
                        self.cfg.subject_claim
                    ))
                })?
                .to_string()
        };
        let text = |k: &str| payload[k].as_str().map(str::to_string);
        let groups = match &payload[&self.cfg.groups_claim] {
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        // Entra replaces a long group list by a pointer (`_claim_names`) or `hasgroups`.
        let overage = payload["_claim_names"]
            .get(&self.cfg.groups_claim)
            .is_some()
            || payload["hasgroups"] == Value::Bool(true);
        Ok(Identity {
            issuer: claims.issuer().as_str().to_string(),
            subject,
            email: text("email"),
            preferred_username: text("preferred_username"),
            name: text("name"),
            groups,
            groups_overage: overage,
        })
    }
}

fn payload(jwt: &str) -> Result<Value, SignInError> {
    let part = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| SignInError::InvalidIdToken("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| SignInError::InvalidIdToken("payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| SignInError::InvalidIdToken("payload is not JSON".into()))
}

/// A description of a failed validation without token material.
fn describe_claims_error(e: &ClaimsVerificationError) -> String {
    match e {
        ClaimsVerificationError::SignatureVerification(s) => match s {
            SignatureVerificationError::DisallowedAlg(a)
            | SignatureVerificationError::UnsupportedAlg(a) => {
                format!("signature algorithm {a} is not accepted")
            }
            SignatureVerificationError::NoSignature => "the ID token is not signed".into(),
            SignatureVerificationError::CryptoError(_) => "bad signature".into(),
            SignatureVerificationError::InvalidKey(_) => "the signing key does not fit".into(),
            SignatureVerificationError::AmbiguousKeyId(_) => "ambiguous signing key".into(),
            other => format!("signature: {other}"),
        },
        ClaimsVerificationError::InvalidAudience(_) => "wrong audience".into(),
        ClaimsVerificationError::InvalidIssuer(_) => "wrong issuer".into(),
        ClaimsVerificationError::Expired(m) => format!("expired or not yet valid: {m}"),
        ClaimsVerificationError::InvalidNonce(_) => "nonce mismatch".into(),
        other => other.to_string(),
    }
}

fn describe_token_error<E: std::error::Error>(e: &E) -> String {
    // The provider's error code and description, never request material.
    let mut s = e.to_string();
    s.truncate(300);
    s
}
