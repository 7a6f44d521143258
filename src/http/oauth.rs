//! The broker as authorization server for `broker_jwt` connectors: JWKS, RFC 8414 metadata,
//! RFC 7662 introspection (reflecting revocation immediately) and RFC 7009 revocation.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::crypto::signing::{jwks, verify_jwt};
use crate::domain::{OrgId, UserId};

/// The authorization-server routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks_doc))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/revoke", post(revoke))
}

async fn jwks_doc(State(s): State<AppState>) -> Response {
    let mut resp = Json(jwks(s.vend.signer().verifying_keys())).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

async fn metadata(State(s): State<AppState>) -> Json<Value> {
    let iss = s.vend.signer().issuer().to_string();
    Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{}/.well-known/jwks.json", s.public_url),
        "introspection_endpoint": format!("{}/oauth/introspect", s.public_url),
        "revocation_endpoint": format!("{}/oauth/revoke", s.public_url),
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "revocation_endpoint_auth_methods_supported": ["bearer"],
        "grant_types_supported": [],
        "response_types_supported": [],
        "scopes_supported": [],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
    }))
}

/// RFC 6749 §5.2 error body.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    token: String,
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// Whether a broker-issued token is active now: signature and expiry, then the user's live
/// projection (active, same epoch, connector and scopes still entitled).
async fn check(s: &AppState, token: &str) -> Option<Value> {
    let now = s.clock_now_secs();
    let (_, claims) = verify_jwt(token, s.vend.signer().verifying_keys(), now, 30).ok()?;
    if claims.get("iss").and_then(Value::as_str) != Some(s.vend.signer().issuer()) {
        return None;
    }
    let org = OrgId::new(claims.get("ab_org")?.as_str()?);
    let user = UserId::new(claims.get("sub")?.as_str()?);
    let connector = claims.get("ab_con")?.as_str()?;
    let epoch = claims.get("ab_ep")?.as_u64()?;
    let p = s
        .access
        .vault()
        .read(&org, &user, "_")
        .await
        .ok()?
        .projection?;
    let entitled = p.connectors.get(connector)?;
    let scopes: Vec<&str> = claims.get("scope")?.as_str()?.split_whitespace().collect();
    (p.active && p.epoch == epoch && scopes.iter().all(|sc| entitled.iter().any(|e| e == sc)))
        .then_some(claims)
}

async fn introspect(
    State(s): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if super::gateway::authenticate(&s, &headers).is_err() {
        let mut r = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "a gateway key is required",
        );
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required (form-encoded)",
        );
    };
    match check(&s, &form.token).await {
        Some(claims) => {
            let mut out = json!({"active": true, "token_type": "Bearer"});
            for k in [
                "iss",
                "sub",
                "aud",
                "client_id",
                "scope",
                "jti",
                "iat",
                "exp",
            ] {
                if let Some(v) = claims.get(k) {
                    out[k] = v.clone();
                }
            }
            Json(out).into_response()
        }
        None => Json(json!({"active": false})).into_response(),
    }
}

async fn revoke(
    State(s): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let gw = match super::gateway::authenticate(&s, &headers) {
        Ok(g) => g,
        Err(_) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "a gateway key is required",
            );
        }
    };
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required (form-encoded)",
        );
    };
    // RFC 7009: an invalid or unknown token is not an error.
    if let Some(claims) = check(&s, &form.token).await {
        let org = claims
            .get("ab_org")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if gw.orgs.iter().any(|o| o == org)
            && let Err(e) = s
                .access
                .kill(&OrgId::new(org), &UserId::new(sub), &gw.actor)
                .await
        {
            tracing::warn!(error = %e, "token revocation failed");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "retry",
            );
        }
    }
    StatusCode::OK.into_response()
}
