//! The HTTP client side of upstream connectors: how the broker mints, refreshes and revokes
//! per-user tokens at a connector's own authorization server (AS).
//!
//! [`UpstreamClient`] is one `reqwest` client (rustls, redirects off) shared by every
//! connector, with, per upstream origin, a circuit breaker and a rate budget (`wire.rs`,
//! `breaker.rs`, `budget.rs`), RFC 8414 discovery (`discovery.rs`), the four token grants with
//! the three client authentication methods (`token.rs`) and the four revocation methods
//! (`revoke.rs`). What it signs (ID-JAGs, subject tokens, client assertions) is built in
//! `claims.rs` and signed by the caller with the org's key.
//!
//! Invariants: no storage, vault or HTTP-server type is known here; every call has a time
//! limit (`Upstream::timeout_ms`, else [`ClientOptions::default_timeout`]) and goes through
//! its origin's breaker and budget, so a call takes at most the budget's `max_wait` plus that
//! limit; one reader judges every answer (`error.rs`); token values and secrets are never
//! logged (logs carry the origin, statuses and error codes).

mod breaker;
mod budget;
mod claims;
mod discovery;
mod error;
mod revoke;
mod token;
mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

pub use breaker::BreakerOptions;
pub use budget::BudgetOptions;
pub use claims::{
    CLIENT_ASSERTION_TYPE, ClientAssertionClaims, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE,
    ID_JAG_TYP, IdJagClaims, JWT_TYP, JwtClaims, SubjectTokenClaims, TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_ID_JAG, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, client_assertion_claims, pkce_pair,
    random_state,
};
pub use error::UpstreamError;
pub use revoke::RevokeOutcome;
pub use token::{AssertionSigner, ClientAuthn, TokenGrant, TokenSet};

use crate::domain::upstream::{Revocation, Upstream};

/// How the client behaves toward every upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientOptions {
    /// Time limit of a call (connect, send, whole answer) when the upstream declares no
    /// `timeout_ms`; a wait for the rate budget comes before it.
    pub default_timeout: Duration,
    /// When an upstream's circuit opens.
    pub breaker: BreakerOptions,
    /// How fast one upstream may be called.
    pub budget: BudgetOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(5),
            breaker: BreakerOptions::default(),
            budget: BudgetOptions::default(),
        }
    }
}

/// An upstream's endpoints as the client uses them: explicit values and the preset's,
/// completed by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The AS's issuer, if known.
    pub issuer: Option<String>,
    /// Where people consent (`authorization_code` only).
    pub authorization_endpoint: Option<Url>,
    /// The token endpoint.
    pub token_endpoint: Url,
    /// The RFC 7009 endpoint, if any.
    pub revocation_endpoint: Option<Url>,
    /// The RFC 7662 endpoint, if any.
    pub introspection_endpoint: Option<Url>,
    /// How tokens are revoked.
    pub revocation: Revocation,
    /// The AS's metadata says its authorization responses carry `iss` (RFC 9207
    /// `authorization_response_iss_parameter_supported`): one without it is refused.
    pub sends_iss: bool,
}

/// The per-consent values of an authorization request.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationRequest<'a> {
    /// Where the upstream sends the browser back.
    pub redirect_uri: &'a str,
    /// Scopes asked for.
    pub scopes: &'a [String],
    /// The pending consent's `state` (see [`random_state`]).
    pub state: &'a str,
    /// The S256 PKCE challenge (see [`pkce_pair`]).
    pub code_challenge: &'a str,
}

/// The shared parts of a client.
struct Inner {
    wire: wire::Wire,
    discovery: discovery::Cache,
    default_timeout: Duration,
}

/// The client of every upstream AS. Cheap to clone (one `Arc`); clones share the connection
/// pool, the breakers, the budgets and the discovery cache.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

/// Sent with every request: GitHub's API refuses requests without a `User-Agent`.
const USER_AGENT: &str = concat!("auth-broker/", env!("CARGO_PKG_VERSION"));

impl UpstreamClient {
    /// A client with its own connection pool, breakers, budgets and discovery cache.
    pub fn new(opts: ClientOptions) -> Self {
        Self::build(opts, None)
    }

    /// As [`Self::new`], with every origin's rate budget kept in `store` and so shared by
    /// every replica using it.
    pub fn with_shared_budget(
        opts: ClientOptions,
        store: Arc<dyn crate::domain::vault::Ephemeral>,
    ) -> Self {
        Self::build(opts, Some(store))
    }

    fn build(opts: ClientOptions, store: Option<Arc<dyn crate::domain::vault::Ephemeral>>) -> Self {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            // Building fails only when the TLS backend cannot be initialised; with rustls and
            // its bundled roots that has no run-time cause (it is also what makes
            // `reqwest::Client::new()` panic).
            .expect("the rustls HTTP client builds");
        Self {
            inner: Arc::new(Inner {
                wire: match store {
                    Some(s) => {
                        wire::Wire::new(http, opts.breaker, opts.budget).with_shared_budget(s)
                    }
                    None => wire::Wire::new(http, opts.breaker, opts.budget),
                },
                discovery: discovery::Cache::default(),
                default_timeout: opts.default_timeout,
            }),
        }
    }

    /// The time limit of each call to `u`.
    fn timeout(&self, u: &Upstream) -> Duration {
        u.timeout_ms
            .map_or(self.inner.default_timeout, Duration::from_millis)
    }

    /// The authorization request URL: `response_type=code`, `client_id`, `redirect_uri`,
    /// `scope` (joined with the preset's separator), `state`, `code_challenge` +
    /// `code_challenge_method=S256`, the preset's extra parameters, and `resource` when set.
    ///
    /// Built here rather than with `oauth2`'s `authorize_url`, which joins scopes with spaces
    /// only and takes the challenge as its own type, not the string kept with the consent.
    pub fn authorization_url(
        &self,
        ep: &Endpoints,
        u: &Upstream,
        req: &AuthorizationRequest<'_>,
    ) -> Result<Url, UpstreamError> {
        let mut url = ep.authorization_endpoint.clone().ok_or_else(|| {
            UpstreamError::Config("the upstream has no authorization endpoint".into())
        })?;
        let preset = u.provider.preset();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &u.client_id)
                .append_pair("redirect_uri", req.redirect_uri);
            if !req.scopes.is_empty() {
                q.append_pair(preset.scope_param, &req.scopes.join(preset.scope_separator));
            }
            q.append_pair("state", req.state)
                .append_pair("code_challenge", req.code_challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in preset.auth_params {
                q.append_pair(k, v);
            }
            if let Some(r) = &u.resource {
                q.append_pair("resource", r);
            }
        }
        Ok(url)
    }
}
