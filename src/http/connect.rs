//! Consent to `authorization_code` connectors, in the signed-in person's browser:
//! `GET /auth/{org}/connect/{connector}` sends them to the upstream (302), and
//! `GET /auth/{org}/connect/{connector}/callback` finishes there (303 to `/auth/{org}/me`).
//! Both need the broker session; the service binds the pending consent to that session, so
//! the person who finishes it is the person who started it. Every outcome is audited.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use sha2::Digest;

use super::AppState;
use super::auth::{cookie, failure, session_of};
use super::error::ApiError;
use crate::domain::audit::AuditEntry;
use crate::domain::{OrgId, UserId};
use crate::identity::SESSION_COOKIE;
use crate::service::upstream::ConsentError;

/// The consent routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/{org}/connect/{connector}", get(connect))
        .route("/auth/{org}/connect/{connector}/callback", get(callback))
}

/// The callback's query (RFC 6749 §4.1.2, RFC 9207 `iss`).
#[derive(Debug, Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// What binds a consent to the browser session: a digest of the session cookie.
fn session_digest(headers: &HeaderMap) -> String {
    let c = cookie(headers, SESSION_COOKIE).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(c.as_bytes()))
}

fn redirect(status: StatusCode, to: &str) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn audit(s: &AppState, org: &OrgId, user: &UserId, action: &str, connector: &str, outcome: &str) {
    let entry = AuditEntry {
        org: org.clone(),
        at_ms: crate::domain::clock::Clock::now_ms(s.clock.as_ref()),
        actor: format!("user:{user}"),
        action: action.into(),
        resource_type: "User".into(),
        resource_id: user.to_string(),
        summary: json!({"connector": connector, "outcome": outcome}),
    };
    if s.audit.record(entry).is_err() {
        tracing::warn!("consent audit record dropped: backlog full");
    }
}

async fn connect(
    State(s): State<AppState>,
    Path((org, connector)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let session = match session_of(&s, &org, &headers).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            return redirect(
                StatusCode::FOUND,
                &format!("/auth/{org}/login?return_to=/auth/{org}/connect/{connector}"),
            );
        }
        Err(e) => return failure(&headers, e),
    };
    let org_id = OrgId::new(org.as_str());
    let user = UserId::new(session.user_id.clone());
    let record = match s.access.entitlements(&org_id, &user).await {
        Ok(Some(r)) => r,
        Ok(None) => return failure(&headers, ConsentError::NotEntitled),
        Err(e) => return failure(&headers, ApiError::Access(e)),
    };
    let (_, ent, connectors) = record;
    let Some(c) = connectors.iter().find(|c| c.id == connector) else {
        return failure(&headers, ConsentError::NotConsentable);
    };
    let Some(entitled) = ent.connectors.get(&connector) else {
        audit(
            &s,
            &org_id,
            &user,
            "upstream.consent.refused",
            &connector,
            "not_entitled",
        );
        return failure(&headers, ConsentError::NotEntitled);
    };
    match s
        .upstreams
        .start_consent(
            &org_id,
            c,
            &user,
            &session_digest(&headers),
            &entitled.scopes,
        )
        .await
    {
        Ok(url) => {
            audit(
                &s,
                &org_id,
                &user,
                "upstream.consent.started",
                &connector,
                "redirected",
            );
            redirect(StatusCode::FOUND, &url)
        }
        Err(e) => failure(&headers, e),
    }
}

async fn callback(
    State(s): State<AppState>,
    Path((org, connector)): Path<(String, String)>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let session = match session_of(&s, &org, &headers).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            return failure(
                &headers,
                ApiError::Unauthenticated("sign in, then start the consent again"),
            );
        }
        Err(e) => return failure(&headers, e),
    };
    let org_id = OrgId::new(org.as_str());
    let user = UserId::new(session.user_id.clone());
    let connectors = match s.vend.connectors(&org_id).await {
        Ok(c) => c,
        Err(e) => return failure(&headers, ApiError::Vend(e)),
    };
    let Some(c) = connectors.iter().find(|c| c.id == connector) else {
        return failure(&headers, ConsentError::NotConsentable);
    };
    let result = s
        .upstreams
        .finish_consent(
            &org_id,
            c,
            &user,
            &session_digest(&headers),
            q.state.as_deref().unwrap_or_default(),
            q.code.as_deref(),
            q.iss.as_deref(),
            q.error.as_deref(),
        )
        .await;
    match result {
        Ok(()) => {
            audit(
                &s,
                &org_id,
                &user,
                "upstream.consent.granted",
                &connector,
                "connected",
            );
            redirect(StatusCode::SEE_OTHER, &format!("/auth/{org}/me"))
        }
        Err(e) => {
            let outcome = ApiError::from(e);
            audit(
                &s,
                &org_id,
                &user,
                "upstream.consent.refused",
                &connector,
                outcome.status_code().1,
            );
            failure(&headers, outcome)
        }
    }
}
