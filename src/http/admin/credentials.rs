//! `/admin/v1/orgs/{org}/gateways` and `…/connectors/{id}/resource-credentials`: create (the
//! secret is in the 201 body only, never cached), list (no secrets) and revoke the credentials
//! clients present.

use crate::service::admin::{
    CreatedGateway, CreatedResourceCredential, GatewayInput, GatewayList, ResourceCredentialInput,
    ResourceCredentialList,
};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};

use super::super::AppState;
use super::super::extract::{JsonBody, OptionalJsonBody};
use super::super::openapi::{AuthErrors, Conflict, InputErrors, NotFound};
use super::{AdminCaller, R, admin};

/// The credential routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/orgs/{org}/gateways",
            get(list_gateways).post(create_gateway),
        )
        .route("/admin/v1/orgs/{org}/gateways/{id}", delete(revoke_gateway))
        .route(
            "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials",
            get(list_resource_credentials).post(create_resource_credential),
        )
        .route(
            "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials/{cid}",
            delete(revoke_resource_credential),
        )
}

/// A 201 carrying a secret shown once: never stored by caches.
fn created_secret(body: impl serde::Serialize) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org}/gateways", tag = "admin",
    params(("org" = String, Path, description = "The org")), request_body = GatewayInput,
    responses((status = 201, description = "The key, shown only here (`Cache-Control: no-store`)", body = CreatedGateway), AuthErrors, InputErrors),
    security(("admin_key" = [])))]
pub(crate) async fn create_gateway(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    JsonBody(input): JsonBody<GatewayInput>,
) -> R {
    let (id, key) = admin(&s).create_gateway(&org, &actor, &input.name).await?;
    Ok(created_secret(CreatedGateway { id, key }))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org}/gateways", tag = "admin",
    params(("org" = String, Path, description = "The org")),
    responses((status = 200, description = "The org's gateway keys (no keys)", body = GatewayList), AuthErrors),
    security(("admin_key" = [])))]
pub(crate) async fn list_gateways(
    State(s): State<AppState>,
    AdminCaller { org, .. }: AdminCaller,
) -> R {
    let list = admin(&s).gateways(&org).await?;
    Ok(Json(GatewayList { gateways: list }).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org}/gateways/{id}", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The gateway key id")),
    responses((status = 204, description = "Revoked on every replica"), AuthErrors, NotFound, Conflict),
    security(("admin_key" = [])))]
pub(crate) async fn revoke_gateway(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, id)): Path<(String, String)>,
) -> R {
    admin(&s).revoke_gateway(&org, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector id")), request_body = Option<ResourceCredentialInput>,
    responses((status = 201, description = "The secret, shown only here (`Cache-Control: no-store`)", body = CreatedResourceCredential), AuthErrors, InputErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn create_resource_credential(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, connector)): Path<(String, String)>,
    // The body is optional: `{}`, `{"name": …}` or nothing at all.
    OptionalJsonBody(input): OptionalJsonBody<ResourceCredentialInput>,
) -> R {
    let input = input.unwrap_or_default();
    let (id, secret) = admin(&s)
        .create_resource_credential(&org, &actor, &connector, input.name.as_deref())
        .await?;
    Ok(created_secret(CreatedResourceCredential {
        id,
        secret,
        connector,
    }))
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector id")),
    responses((status = 200, description = "The connector's credentials (no secrets)", body = ResourceCredentialList), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn list_resource_credentials(
    State(s): State<AppState>,
    AdminCaller { org, .. }: AdminCaller,
    Path((_, connector)): Path<(String, String)>,
) -> R {
    let list = admin(&s).resource_credentials(&org, &connector).await?;
    Ok(Json(ResourceCredentialList {
        resource_credentials: list,
    })
    .into_response())
}

#[utoipa::path(delete, path = "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials/{cid}", tag = "admin",
    params(("org" = String, Path, description = "The org"), ("id" = String, Path, description = "The connector id"), ("cid" = String, Path, description = "The credential id")),
    responses((status = 204, description = "Revoked"), AuthErrors, NotFound),
    security(("admin_key" = [])))]
pub(crate) async fn revoke_resource_credential(
    State(s): State<AppState>,
    AdminCaller { org, actor }: AdminCaller,
    Path((_, connector, id)): Path<(String, String, String)>,
) -> R {
    admin(&s)
        .revoke_resource_credential(&org, &actor, &connector, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
