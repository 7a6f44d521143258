//! `/admin/v1/orgs/{org}/gateways` and `…/connectors/{id}/resource-credentials`: create (the
//! secret is in the 201 body only, never cached), list (no secrets) and revoke the credentials
//! clients present.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::super::AppState;
use super::{R, admin, authenticate, body, problem};

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
fn created_secret(body: serde_json::Value) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayInput {
    name: String,
}

async fn create_gateway(
    State(s): State<AppState>,
    Path(org): Path<String>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    let input: GatewayInput = body(b)?;
    let (id, key) = admin(&s)
        .create_gateway(&org, &actor, &input.name)
        .await
        .map_err(problem)?;
    Ok(created_secret(json!({"id": id, "key": key})))
}

async fn list_gateways(State(s): State<AppState>, Path(org): Path<String>, h: HeaderMap) -> R {
    let (org, _) = authenticate(&s, &org, &h).await?;
    let list = admin(&s).gateways(&org).await.map_err(problem)?;
    Ok(Json(json!({"gateways": list})).into_response())
}

async fn revoke_gateway(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    admin(&s)
        .revoke_gateway(&org, &actor, &id)
        .await
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResourceCredentialInput {
    #[serde(default)]
    name: Option<String>,
}

async fn create_resource_credential(
    State(s): State<AppState>,
    Path((org, connector)): Path<(String, String)>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    // The body is optional: `{}`, `{"name": …}` or nothing at all.
    let input: ResourceCredentialInput = match &b {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Default::default(),
        _ => body(b)?,
    };
    let (id, secret) = admin(&s)
        .create_resource_credential(&org, &actor, &connector, input.name.as_deref())
        .await
        .map_err(problem)?;
    Ok(created_secret(
        json!({"id": id, "secret": secret, "connector": connector}),
    ))
}

async fn list_resource_credentials(
    State(s): State<AppState>,
    Path((org, connector)): Path<(String, String)>,
    h: HeaderMap,
) -> R {
    let (org, _) = authenticate(&s, &org, &h).await?;
    let list = admin(&s)
        .resource_credentials(&org, &connector)
        .await
        .map_err(problem)?;
    Ok(Json(json!({"resource_credentials": list})).into_response())
}

async fn revoke_resource_credential(
    State(s): State<AppState>,
    Path((org, connector, id)): Path<(String, String, String)>,
    h: HeaderMap,
) -> R {
    let (org, actor) = authenticate(&s, &org, &h).await?;
    admin(&s)
        .revoke_resource_credential(&org, &actor, &connector, &id)
        .await
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
