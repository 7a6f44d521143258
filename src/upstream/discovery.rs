//! An upstream's endpoints: the admin's explicit values over the preset's, completed by RFC
//! 8414 discovery of the issuer for `generic` upstreams.
//!
//! Discovery reads `/.well-known/oauth-authorization-server` (RFC 8414 §3.1, inserted before
//! the issuer's path) and then `/.well-known/openid-configuration` (OpenID Connect Discovery
//! §4, appended to it). It is done here rather than with `openidconnect`'s discovery, which
//! reads only the second document and requires OpenID fields (`jwks_uri`, subject types, ID
//! token algorithms) that a plain OAuth AS does not publish.
//!
//! Invariants: a document whose `issuer` is not exactly the configured issuer is refused
//! (RFC 8414 §3.3: a mix-up defence), never skipped for another; results are cached per issuer
//! ([`FRESH_FOR`]); a failure is cached for [`RETRY_FAILED_AFTER`] so that a dead or metadata-less
//! issuer costs one attempt per period, not one per call; when a refresh of known metadata
//! fails transiently, the known metadata keeps serving.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::ACCEPT;
use reqwest::{Method, Url};
use serde::Deserialize;

use super::error::{SERVER_ERROR, UpstreamError, answer_error};
use super::wire::origin_of;
use super::{Endpoints, UpstreamClient};
use crate::domain::upstream::{Provider, Upstream};

/// How long discovered metadata is used before it is fetched again.
const FRESH_FOR: Duration = Duration::from_secs(3600);
/// How long a failed discovery is remembered before it is tried again.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(30);

/// The fields of RFC 8414 metadata the client uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(super) struct Metadata {
    issuer: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

struct Entry {
    until: Instant,
    value: Result<Metadata, UpstreamError>,
}

/// Discovery results per issuer.
#[derive(Default)]
pub(super) struct Cache {
    // A std mutex: held only to read or replace an entry, never across a fetch.
    entries: Mutex<HashMap<String, Entry>>,
    /// Held across a fetch, so that concurrent first callers (a wave of vends) ask the issuer
    /// once and share the answer, instead of each spending the upstream's rate budget.
    fetching: tokio::sync::Mutex<()>,
}

impl Cache {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        f(&mut self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// The two metadata URLs of an issuer, in the order they are tried.
pub(super) fn well_known(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    [rfc8414, oidc]
}

/// An endpoint URL from configuration or metadata; `key` names it in the error.
fn parse_url(key: &str, s: &str) -> Result<Url, UpstreamError> {
    let url =
        Url::parse(s).map_err(|e| UpstreamError::Config(format!("{key}: not a URL ({e})")))?;
    origin_of(&url).map_err(|e| UpstreamError::Config(format!("{key}: {e}")))?;
    Ok(url)
}

fn parse_opt(key: &str, s: Option<String>) -> Result<Option<Url>, UpstreamError> {
    s.map(|s| parse_url(key, &s)).transpose()
}

impl UpstreamClient {
    /// Endpoints for an upstream: the preset/explicit ones, completed by RFC 8414 discovery
    /// of `issuer` when the provider is `generic` and an endpoint is missing. A discovery
    /// failure is an error when the token endpoint is still unknown, or when the metadata
    /// names another issuer; otherwise the explicit endpoints serve alone.
    pub async fn endpoints(&self, u: &Upstream) -> Result<Endpoints, UpstreamError> {
        let r = u.resolved();
        let mut authorization = r.authorization_endpoint;
        let mut token = r.token_endpoint;
        let mut revocation = r.revocation_endpoint;
        let mut introspection = u.introspection_endpoint.clone();
        let mut sends_iss = false;
        let missing = authorization.is_none()
            || token.is_none()
            || revocation.is_none()
            || introspection.is_none();
        if u.provider == Provider::Generic
            && missing
            && let Some(issuer) = &r.issuer
        {
            match self.metadata(issuer, self.timeout(u)).await {
                Ok(m) => {
                    authorization = authorization.or(m.authorization_endpoint);
                    token = token.or(m.token_endpoint);
                    revocation = revocation.or(m.revocation_endpoint);
                    introspection = introspection.or(m.introspection_endpoint);
                    sends_iss = m.authorization_response_iss_parameter_supported;
                }
                Err(e) if token.is_none() || matches!(e, UpstreamError::Config(_)) => {
                    return Err(e);
                }
                Err(e) => tracing::debug!(
                    error = e.code(),
                    "discovery failed; using the explicit endpoints"
                ),
            }
        }
        let token = token.ok_or_else(|| {
            UpstreamError::Config(
                "no token endpoint: set token_endpoint, or issuer to discover it".into(),
            )
        })?;
        Ok(Endpoints {
            issuer: r.issuer,
            authorization_endpoint: parse_opt("authorization_endpoint", authorization)?,
            token_endpoint: parse_url("token_endpoint", &token)?,
            revocation_endpoint: parse_opt("revocation_endpoint", revocation)?,
            introspection_endpoint: parse_opt("introspection_endpoint", introspection)?,
            revocation: r.revocation,
            sends_iss,
        })
    }

    /// The issuer's metadata, from the cache or fetched.
    async fn metadata(&self, issuer: &str, timeout: Duration) -> Result<Metadata, UpstreamError> {
        let cache = &self.inner.discovery;
        let known = || {
            let now = Instant::now();
            cache.with(|m| match m.get(issuer) {
                Some(e) if now < e.until => Some(Ok(e.value.clone())),
                Some(Entry { value: Ok(m), .. }) => Some(Err(m.clone())),
                _ => None,
            })
        };
        if let Some(Ok(fresh)) = known() {
            return fresh;
        }
        let _one_fetch = cache.fetching.lock().await;
        let stale = match known() {
            Some(Ok(fresh)) => return fresh,
            Some(Err(stale)) => Some(stale),
            None => None,
        };
        let fetched = self.discover(issuer, timeout).await;
        let (value, ttl) = match (fetched, stale) {
            (Ok(m), _) => (Ok(m), FRESH_FOR),
            (Err(e), Some(stale)) if e.is_transient() => {
                tracing::warn!(
                    error = e.code(),
                    "discovery refresh failed; using the metadata known"
                );
                (Ok(stale), RETRY_FAILED_AFTER)
            }
            (Err(e), _) => (Err(e), RETRY_FAILED_AFTER),
        };
        // Nothing was asked of the issuer: the next call may ask.
        if !matches!(
            value,
            Err(UpstreamError::CircuitOpen | UpstreamError::RateLimited)
        ) {
            let until = Instant::now() + ttl;
            cache.with(|m| {
                m.insert(
                    issuer.to_string(),
                    Entry {
                        until,
                        value: value.clone(),
                    },
                )
            });
        }
        value
    }

    /// Fetches the metadata documents in order; the first readable one decides.
    async fn discover(&self, issuer: &str, timeout: Duration) -> Result<Metadata, UpstreamError> {
        let url = parse_url("issuer", issuer)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UpstreamError::Config(
                "issuer: must have no query or fragment (RFC 8414 §2)".into(),
            ));
        }
        let mut last = UpstreamError::transient(SERVER_ERROR);
        for doc in well_known(&url) {
            match self.fetch_metadata(&doc, timeout).await {
                Ok(m) if m.issuer == issuer => return Ok(m),
                Ok(m) => {
                    tracing::warn!(origin = %origin_of(&doc).unwrap_or_default(), "discovery: the metadata names another issuer");
                    return Err(UpstreamError::Config(format!(
                        "discovery: the metadata at {doc} names issuer {:?}, not the configured \
                         {issuer:?} (RFC 8414 §3.3)",
                        m.issuer
                    )));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn fetch_metadata(
        &self,
        url: &Url,
        timeout: Duration,
    ) -> Result<Metadata, UpstreamError> {
        let raw = self
            .inner
            .wire
            .send(Method::GET, url, timeout, |rb| {
                rb.header(ACCEPT, "application/json")
            })
            .await?;
        if let Some(e) = answer_error(raw.status, &raw.body) {
            return Err(e);
        }
        serde_json::from_slice(&raw.body).map_err(|_| UpstreamError::transient(SERVER_ERROR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_follow_rfc8414_and_oidc() {
        let urls = |s: &str| well_known(&Url::parse(s).unwrap()).map(|u| u.to_string());
        assert_eq!(
            urls("https://as.example"),
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://as.example/tenant/v2/"),
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant/v2",
                "https://as.example/tenant/v2/.well-known/openid-configuration",
            ]
        );
    }
}
