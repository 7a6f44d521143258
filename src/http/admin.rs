//! `/admin/v1`: connectors, grants, gateway keys and resource-server credentials
//! (`credentials`), users (view, kill switch, locks, offboarding receipts) and the audit log.
//! Bearer admin key of the org.

mod credentials;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::Problem;
use crate::domain::ports::CredentialKind;
use crate::domain::{OrgId, UserId};
use crate::service::admin::{Admin, AdminError, ConnectorInput, GrantInput};

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/openapi.json", get(super::openapi::document))
        .route(
            "/admin/v1/orgs/{org}/connectors",
            get(list_connectors).post(create_connector),
        )
        .route(
            "/admin/v1/orgs/{org}/connectors/{id}",
            get(get_connector)
                .put(put_connector)
                .delete(delete_connector),
        )
        .route(
            "/admin/v1/orgs/{org}/grants",
            get(list_grants).post(create_grant),
        )
        .route(
            "/admin/v1/orgs/{org}/grants/{id}",
            axum::routing::delete(delete_grant),
        )
        .merge(credentials::router())
        .route("/admin/v1/orgs/{org}/users/{id}", get(get_user))
        .route("/admin/v1/orgs/{org}/users/{id}/revoke", post(revoke_user))
        .route(
            "/admin/v1/orgs/{org}/users/{id}/lock",
            post(lock_user).delete(unlock_user),
        )
        .route(
            "/admin/v1/orgs/{org}/users/{id}/offboarding",
            get(offboarding),
        )
        .route("/admin/v1/orgs/{org}/audit", get(audit))
}

/// An admin key, or a session of a member of the org's admin group (checked live).
async fn authenticate(
    s: &AppState,
    org: &str,
    headers: &HeaderMap,
) -> Result<(OrgId, String), Problem> {
    if headers.get(header::AUTHORIZATION).is_none()
        && let Some(cookie) = super::auth::cookie(headers, crate::identity::SESSION_COOKIE)
    {
        return session_admin(s, org, headers, cookie).await;
    }
    authenticate_key(s, org, headers)
}

async fn session_admin(
    s: &AppState,
    org: &str,
    headers: &HeaderMap,
    cookie: &str,
) -> Result<(OrgId, String), Problem> {
    // A browser sends Origin (and Sec-Fetch-Site) with cross-site requests: refuse those, so a
    // page elsewhere cannot act with the admin's cookie.
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|o| o == s.sign_in.public_url());
    let site_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == "same-origin" || v == "none");
    if !origin_ok || !site_ok {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "session-authenticated admin requests must come from this broker's own pages",
        ));
    }
    let unavailable = |e: crate::identity::SignInError| {
        tracing::warn!(error = %e, "admin session check unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "temporarily unavailable; retry",
        )
    };
    let Some(session) = s.sign_in.session(org, cookie).await.map_err(unavailable)? else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no valid session for this org",
        ));
    };
    if !s
        .sign_in
        .is_admin(org, &session)
        .await
        .map_err(unavailable)?
    {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "not_admin",
            "the signed-in user is not in the org's admin group",
        ));
    }
    Ok((OrgId::new(org), format!("session:{}", session.user_id)))
}

fn authenticate_key(
    s: &AppState,
    org: &str,
    headers: &HeaderMap,
) -> Result<(OrgId, String), Problem> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, k)| k.trim())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing bearer admin key",
            )
        })?;
    let idx = s.credentials.read().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "credential index unavailable",
        )
    })?;
    if let Some(actor) = idx.verify(org, CredentialKind::Admin, key) {
        return Ok((OrgId::new(org), actor));
    }
    let other_org = idx
        .orgs()
        .any(|o| o != org && idx.verify(o, CredentialKind::Admin, key).is_some());
    if other_org {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "org_forbidden",
            "this admin key is not bound to that org",
        ))
    } else {
        Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid admin key",
        ))
    }
}

fn problem(e: AdminError) -> Problem {
    match e {
        AdminError::Invalid(m) => Problem::new(StatusCode::BAD_REQUEST, "invalid_request", m),
        AdminError::NotFound(m) => Problem::new(StatusCode::NOT_FOUND, "not_found", m),
        AdminError::Conflict(m) => Problem::new(StatusCode::CONFLICT, "conflict", m),
        AdminError::Unavailable(m) => {
            tracing::warn!(error = %m, "admin request unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry",
            )
        }
    }
}

fn body<T: serde::de::DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let bytes = b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than 1 MiB",
            )
        } else {
            Problem::new(StatusCode::BAD_REQUEST, "malformed_request", e.to_string())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            format!("malformed JSON: {e}"),
        )
    })
}

type R = Result<Response, Problem>;

fn admin(s: &AppState) -> &Admin {
    &s.admin
}

async fn list_connectors(State(s): State<AppState>, Path(org): Path<String>, h: HeaderMap) -> R {
    let (org, _) = authenticate(&s, &org, &h).await?;
    Ok(
        Json(json!({"connectors": admin(&s).connectors(&org).await.map_err(problem)?}))
            .into_response(),
    )
}

async fn get_connector(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, _) = authenticate(&s, &org, &h).await?;
    let all = admin(&s).connectors(&org).await.map_err(problem)?;
    let c = all
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| problem(AdminError::NotFound(format!("no connector {id}"))))?;
    Ok(Json(c).into_response())
}

async fn create_connector(
    State(s): State<AppState>,
    Path(org): Path<String>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    let input: ConnectorInput = body(b)?;
    let id = input
        .id
        .clone()
        .ok_or_else(|| problem(AdminError::Invalid("id is required".into())))?;
    let c = Admin::connector_from(&org, &id, input).map_err(problem)?;
    let c = admin(&s)
        .put_connector(&org, &actor, c, true)
        .await
        .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn put_connector(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    let input: ConnectorInput = body(b)?;
    if input.id.as_deref().is_some_and(|i| i != id) {
        return Err(problem(AdminError::Invalid(
            "id in the body differs from the path".into(),
        )));
    }
    let c = Admin::connector_from(&org, &id, input).map_err(problem)?;
    let c = admin(&s)
        .put_connector(&org, &actor, c, false)
        .await
        .map_err(problem)?;
    Ok(Json(c).into_response())
}

async fn delete_connector(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    admin(&s)
        .delete_connector(&org, &actor, &id)
        .await
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_grants(State(s): State<AppState>, Path(org): Path<String>, h: HeaderMap) -> R {
    let (org, _) = authenticate(&s, &org, &h).await?;
    Ok(Json(json!({"grants": admin(&s).grants(&org).await.map_err(problem)?})).into_response())
}

async fn create_grant(
    State(s): State<AppState>,
    Path(org): Path<String>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    let input: GrantInput = body(b)?;
    let g = admin(&s)
        .create_grant(&org, &actor, input)
        .await
        .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(g)).into_response())
}

async fn delete_grant(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    admin(&s)
        .delete_grant(&org, &actor, &id)
        .await
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_user(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, _) = authenticate(&s, &org, &h).await?;
    Ok(Json(
        admin(&s)
            .user_view(&org, &UserId::new(id))
            .await
            .map_err(problem)?,
    )
    .into_response())
}

async fn revoke_user(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    Ok(Json(
        admin(&s)
            .kill(&org, &actor, &UserId::new(id))
            .await
            .map_err(problem)?,
    )
    .into_response())
}

/// `POST …/users/{id}/lock` `{"reason":"…"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockBody {
    reason: String,
}

async fn lock_user(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    let input: LockBody = body(b)?;
    Ok(Json(
        admin(&s)
            .lock(&org, &actor, &UserId::new(id), &input.reason)
            .await
            .map_err(problem)?,
    )
    .into_response())
}

async fn unlock_user(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    Ok(Json(
        admin(&s)
            .unlock(&org, &actor, &UserId::new(id))
            .await
            .map_err(problem)?,
    )
    .into_response())
}

async fn offboarding(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, _) = authenticate(&s, &org, &h).await?;
    Ok(Json(
        admin(&s)
            .offboarding(&org, &UserId::new(id))
            .await
            .map_err(problem)?,
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    user: Option<String>,
    connector: Option<String>,
    since: Option<String>,
    limit: Option<u64>,
}

async fn audit(
    State(s): State<AppState>,
    Path(org): Path<String>,
    h: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> R {
    let (org, _) = authenticate(&s, &org, &h).await?;
    let Query(q) =
        q.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "malformed_request", e.to_string()))?;
    let since = match q.since.as_deref() {
        None => None,
        Some(t) => Some(crate::domain::clock::parse_rfc3339(t).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "since must be an RFC 3339 time",
            )
        })?),
    };
    let records = admin(&s)
        .audit(
            &org,
            q.user.as_deref(),
            q.connector.as_deref(),
            since,
            q.limit.unwrap_or(100),
        )
        .await
        .map_err(problem)?;
    Ok(Json(json!({"records": records})).into_response())
}
