//! `/admin/v1`: connectors, grants, gateway keys and resource-server credentials
//! (`credentials`), users (view, kill switch, locks, offboarding receipts) and the audit log.
//! Bearer admin key of the org.

pub(crate) mod credentials;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use super::openapi::{AuthErrors, Conflict, InputErrors, NotFound};
use crate::domain::connector::{Connector, Grant};
use crate::domain::ports::CredentialKind;
use crate::domain::{OrgId, UserId};
use crate::service::admin::{
    Admin, AuditList, ConnectorInput, ConnectorList, GrantInput, GrantList, Killed, LockInput,
    Locked, NewConnector, Offboarding, Unlocked, UserView,
};

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

/// The authenticated admin of the path's `{org}`: an admin key, or a session of a member of
/// the org's admin group (checked live). As an extractor it runs before the body is read.
pub struct AdminCaller {
    /// The org of the path.
    pub org: OrgId,
    /// Who acts, for the audit log.
    pub actor: String,
}

impl axum::extract::FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self, ApiError> {
        let org = super::extract::path_org(parts, s)
            .await
            .map_err(ApiError::Malformed)?;
        let (org, actor) = authenticate(s, &org, &parts.headers).await?;
        Ok(Self { org, actor })
    }
}

async fn authenticate(
    s: &AppState,
    org: &str,
    headers: &HeaderMap,
) -> Result<(OrgId, String), ApiError> {
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
) -> Result<(OrgId, String), ApiError> {
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
        return Err(ApiError::CrossSite);
    }
    let Some(session) = s.sign_in.session(org, cookie).await? else {
        return Err(ApiError::Unauthenticated("no valid session for this org"));
    };
    if !s.sign_in.is_admin(org, &session).await? {
        return Err(ApiError::NotAdmin);
    }
    Ok((OrgId::new(org), format!("session:{}", session.user_id)))
}

fn authenticate_key(
    s: &AppState,
    org: &str,
    headers: &HeaderMap,
) -> Result<(OrgId, String), ApiError> {
    let key = super::gateway::bearer(headers)
        .ok_or(ApiError::Unauthenticated("missing bearer admin key"))?;
    let idx = s
        .credentials
        .read()
        .map_err(|_| ApiError::CredentialIndex)?;
    if let Some(actor) = idx.verify(org, CredentialKind::Admin, key) {
        return Ok((OrgId::new(org), actor));
    }
    let other_org = idx
        .orgs()
        .any(|o| o != org && idx.verify(o, CredentialKind::Admin, key).is_some());
    Err(if other_org {
        ApiError::OrgForbidden("this admin key is not bound to that org")
    } else {
        ApiError::Unauthenticated("invalid admin key")
    })
}

type R = Result<Response, ApiError>;

fn admin(s: &AppState) -> &Admin {
    &s.admin
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org}/connectors", tag = "admin",
    params(("org" = String, Path, description = "The org")),
    responses((status = 200, description = "The org's connectors", body = ConnectorList), AuthErrors),
    security(("admin_key" = [])))]
pub(crate) async fn list_connectors(
    State(s): State<AppState>,
    AdminCaller { org, .. }: AdminCaller,
) -> R {
    let connectors = admin(&s).connectors(&org).await?;
    Ok(Json(ConnectorList { connectors }).into_response())
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org}/connectors/{id}", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")),
    responses((status = 200, description = "The connector", body = Connector), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn get_connector(
    State(s): State<AppState>,
    AdminCaller { org, .. }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
) -> R {
    Ok(Json(admin(&s).connector(&org, &id).await?).into_response())
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org}/connectors", tag = "admin",
    params(("org" = String, Path, description = "The org")), request_body = NewConnector,
    responses((status = 201, description = "Created", body = Connector), AuthErrors, InputErrors, Conflict),
    security(("admin_key" = [])))]
pub(crate) async fn create_connector(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    JsonBody(input): JsonBody<ConnectorInput>,
) -> R {
    let c = admin(&s).create_connector(&org, &actor, input).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

#[utoipa::path(put, path = "/admin/v1/orgs/{org}/connectors/{id}", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")), request_body = ConnectorInput,
    responses((status = 200, description = "Replaced; users who lost access are revoked", body = Connector), AuthErrors, InputErrors, NotFound, Conflict),
    security(("admin_key" = [])))]
pub(crate) async fn put_connector(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
    JsonBody(input): JsonBody<ConnectorInput>,
) -> R {
    let c = admin(&s)
        .replace_connector(&org, &actor, &id, input)
        .await?;
    Ok(Json(c).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org}/connectors/{id}", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")),
    responses((status = 204, description = "Deleted with its grants; its users' tokens are revoked"), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn delete_connector(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
) -> R {
    admin(&s).delete_connector(&org, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org}/grants", tag = "admin",
    params(("org" = String, Path, description = "The org")),
    responses((status = 200, description = "The org's grants", body = GrantList), AuthErrors),
    security(("admin_key" = [])))]
pub(crate) async fn list_grants(
    State(s): State<AppState>,
    AdminCaller { org, .. }: AdminCaller,
) -> R {
    let grants = admin(&s).grants(&org).await?;
    Ok(Json(GrantList { grants }).into_response())
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org}/grants", tag = "admin",
    params(("org" = String, Path, description = "The org")), request_body = GrantInput,
    responses((status = 201, description = "Created", body = Grant), AuthErrors, InputErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn create_grant(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    JsonBody(input): JsonBody<GrantInput>,
) -> R {
    let g = admin(&s).create_grant(&org, &actor, input).await?;
    Ok((StatusCode::CREATED, Json(g)).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org}/grants/{id}", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")),
    responses((status = 204, description = "Deleted; members who lost access are revoked"), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn delete_grant(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
) -> R {
    admin(&s).delete_grant(&org, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org}/users/{id}", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")),
    responses((status = 200, description = "Entitlements with reasons, live tokens, the lock and the epoch", body = UserView), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn get_user(
    State(s): State<AppState>,
    AdminCaller { org, .. }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
) -> R {
    Ok(Json(admin(&s).user_view(&org, &UserId::new(id)).await?).into_response())
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org}/users/{id}/revoke", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")),
    responses((status = 200, description = "Every token purged (the user may vend again unless locked)", body = Killed), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn revoke_user(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
) -> R {
    Ok(Json(admin(&s).kill(&org, &actor, &UserId::new(id)).await?).into_response())
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org}/users/{id}/lock", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")), request_body = LockInput,
    responses((status = 200, description = "Locked: every token purged, every vend refused (403 `user_locked`) until unlocked", body = Locked), AuthErrors, InputErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn lock_user(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
    JsonBody(input): JsonBody<LockInput>,
) -> R {
    let user = UserId::new(id);
    Ok(Json(admin(&s).lock(&org, &actor, &user, &input.reason).await?).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org}/users/{id}/lock", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")),
    responses((status = 200, description = "Unlocked", body = Unlocked), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn unlock_user(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
) -> R {
    Ok(Json(admin(&s).unlock(&org, &actor, &UserId::new(id)).await?).into_response())
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org}/users/{id}/offboarding", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector, grant, gateway key or user id")),
    responses((status = 200, description = "Revocation receipts", body = Offboarding), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn offboarding(
    State(s): State<AppState>,
    AdminCaller { org, .. }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
) -> R {
    Ok(Json(admin(&s).offboarding(&org, &UserId::new(id)).await?).into_response())
}

/// `GET …/audit` filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only records about this user id.
    user: Option<String>,
    /// Only records about this connector.
    connector: Option<String>,
    /// Only records at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// At most this many records (100 when absent).
    #[serde(default, deserialize_with = "limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// `limit`: 1–1000.
fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(n) if !(1..=1000).contains(&n) => {
            Err(serde::de::Error::custom("limit must be from 1 to 1000"))
        }
        n => Ok(n),
    }
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org}/audit", tag = "admin",
    params(("org" = String, Path, description = "The org"), AuditQuery),
    responses((status = 200, description = "Audit records, oldest first", body = AuditList), AuthErrors, InputErrors),
    security(("admin_key" = [])))]
pub(crate) async fn audit(
    State(s): State<AppState>,
    AdminCaller { org, .. }: AdminCaller,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> R {
    let Query(q) = q.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let since = match q.since.as_deref() {
        None => None,
        Some(t) => Some(
            crate::domain::clock::parse_rfc3339(t)
                .ok_or_else(|| ApiError::Malformed("since must be an RFC 3339 time".into()))?,
        ),
    };
    let records = admin(&s)
        .audit(
            &org,
            q.user.as_deref(),
            q.connector.as_deref(),
            since,
            q.limit.unwrap_or(100),
        )
        .await?;
    Ok(Json(AuditList { records }).into_response())
}
