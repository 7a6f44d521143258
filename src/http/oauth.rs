//! The broker as authorization server for `broker_jwt` connectors, one issuer per org:
//! RFC 8414 metadata at `/.well-known/oauth-authorization-server/orgs/{org}`, the org's JWKS at
//! `/orgs/{org}/jwks.json`, RFC 7662 introspection and RFC 7009 revocation.
//!
//! Introspection and revocation take a gateway key (tokens of its orgs) or a resource-server
//! credential (tokens of its connector), as a Bearer token or with HTTP Basic (client id = the
//! credential's id); a bad or missing one is RFC 6749 `invalid_client` (401). What the caller
//! may not see is inactive, and revoking it does nothing (200), so the answers never tell
//! another org's tokens from garbage.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, OAuthError};
use crate::domain::audit::AuditEntry;
use crate::service::bootstrap::{GatewayGrant, ResourceGrant};
use crate::service::introspection::Caller;

/// The authorization-server routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server/orgs/{org}",
            get(metadata),
        )
        .route("/orgs/{org}/jwks.json", get(jwks_doc))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/revoke", post(revoke))
}

fn unknown_org() -> ApiError {
    ApiError::NotFound("no such org".into())
}

async fn jwks_doc(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> Result<Response, ApiError> {
    let doc = s.vend.signer().jwks(&org).ok_or_else(unknown_org)?;
    let mut resp = Json(doc).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(resp)
}

async fn metadata(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let iss = s.vend.signer().issuer(&org).ok_or_else(unknown_org)?;
    Ok(Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{}/orgs/{org}/jwks.json", s.public_url),
        "introspection_endpoint": format!("{}/oauth/introspect", s.public_url),
        "revocation_endpoint": format!("{}/oauth/revoke", s.public_url),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "bearer"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "bearer"],
        "grant_types_supported": [],
        "response_types_supported": [],
        "scopes_supported": [],
    })))
}

#[derive(Deserialize)]
struct TokenForm {
    token: String,
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// Who presented the credential.
enum Client {
    Gateway(std::sync::Arc<GatewayGrant>),
    Resource(std::sync::Arc<ResourceGrant>),
}

impl Client {
    fn actor(&self) -> &str {
        match self {
            Client::Gateway(g) => &g.actor,
            Client::Resource(r) => &r.actor,
        }
    }

    fn caller(&self) -> Caller<'_> {
        match self {
            Client::Gateway(g) => Caller::Gateway { orgs: &g.orgs },
            Client::Resource(r) => Caller::Resource {
                org: &r.org,
                connector: &r.connector,
            },
        }
    }
}

/// A gateway key or a resource-server credential: one hash and one map look-up each. Either
/// as a Bearer token, or as RFC 6749 §2.3.1 `client_secret_basic` whose client id is the
/// credential's id (`rc-…`, `gw-…`) and whose password is the secret.
fn client(s: &AppState, headers: &HeaderMap) -> Result<Client, OAuthError> {
    let (scheme, value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .map(|(scheme, v)| (scheme, v.trim()))
        .filter(|(_, v)| !v.is_empty())
        .ok_or(OAuthError::InvalidClient)?;
    let basic;
    let (client_id, presented) = if scheme.eq_ignore_ascii_case("bearer") {
        (None, value)
    } else if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        basic = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(zeroize::Zeroizing::new)
            .ok_or(OAuthError::InvalidClient)?;
        let (id, secret) = basic.split_once(':').ok_or(OAuthError::InvalidClient)?;
        (Some(id), secret)
    } else {
        return Err(OAuthError::InvalidClient);
    };
    let index = s.credentials.read().map_err(|_| OAuthError::Unavailable)?;
    let found = match index.verify_gateway(presented) {
        Some(g) => Client::Gateway(g),
        None => index
            .verify_resource(presented)
            .map(Client::Resource)
            .ok_or(OAuthError::InvalidClient)?,
    };
    // The client id names the credential: `<kind>:<id>` is its actor.
    match client_id {
        Some(id) if found.actor().split_once(':').map(|(_, i)| i) != Some(id) => {
            Err(OAuthError::InvalidClient)
        }
        _ => Ok(found),
    }
}

type TokenFormResult = Result<Form<TokenForm>, axum::extract::rejection::FormRejection>;

fn token_of(form: TokenFormResult) -> Result<String, OAuthError> {
    form.map(|Form(f)| f.token)
        .map_err(|_| OAuthError::InvalidRequest)
}

fn unavailable(e: crate::domain::vault::VaultError) -> OAuthError {
    tracing::warn!(error = %e, "introspection or revocation unavailable");
    OAuthError::Unavailable
}

async fn introspect(
    State(s): State<AppState>,
    headers: HeaderMap,
    form: TokenFormResult,
) -> Result<Response, OAuthError> {
    let client = client(&s, &headers)?;
    let token = token_of(form)?;
    match s
        .introspection
        .introspect(client.caller(), &token)
        .await
        .map_err(unavailable)?
    {
        Some(c) => Ok(Json(json!({
            "active": true,
            "token_type": "Bearer",
            "iss": c.iss,
            "sub": c.sub,
            "aud": c.aud,
            "client_id": c.client_id,
            "scope": c.scope,
            "jti": c.jti,
            "iat": c.iat,
            "exp": c.exp,
        }))
        .into_response()),
        None => Ok(Json(json!({"active": false})).into_response()),
    }
}

async fn revoke(
    State(s): State<AppState>,
    headers: HeaderMap,
    form: TokenFormResult,
) -> Result<Response, OAuthError> {
    let client = client(&s, &headers)?;
    let token = token_of(form)?;
    // RFC 7009 §2.2: an invalid, unknown or foreign token is not an error.
    let revoked = s
        .introspection
        .revoke(client.caller(), &token)
        .await
        .map_err(unavailable)?;
    if let Some(revoked) = revoked {
        let entry = AuditEntry {
            org: revoked.org.clone(),
            at_ms: s.clock.now_ms(),
            actor: client.actor().to_string(),
            action: "token.revoke".into(),
            resource_type: "User".into(),
            resource_id: revoked.user.to_string(),
            summary: json!({"connector": revoked.connector, "jti": revoked.jti}),
        };
        // The token is already revoked: a full audit queue cannot undo that.
        if s.audit.record(entry).is_err() {
            tracing::warn!(org = %revoked.org, jti = %revoked.jti, "audit queue full; token revocation not audited");
        }
    }
    Ok(StatusCode::OK.into_response())
}
