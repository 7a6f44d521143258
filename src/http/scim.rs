//! `/scim/v2/{org}`: the SCIM 2.0 service provider surface (RFC 7644).

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::error::{SCIM_JSON, ScimResponseError};
use super::extract::ScimBody;
use crate::domain::OrgId;
use crate::domain::ports::CredentialKind;
use crate::scim::patch::PatchRequest;
use crate::scim::schema::{self, LIST_RESPONSE};
use crate::scim::{ResourceKind, ScimError, ScimErrorKind, project};
use crate::service::provisioning::{ListQuery, ScimCtx, ScimResource, etag};

type Result<T> = std::result::Result<T, ScimResponseError>;

/// The SCIM routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/scim/v2/{org}/Users", get(list_users).post(create_user))
        .route(
            "/scim/v2/{org}/Users/.search",
            axum::routing::post(search_users),
        )
        .route(
            "/scim/v2/{org}/Users/{id}",
            get(get_user)
                .put(put_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/scim/v2/{org}/Groups", get(list_groups).post(create_group))
        .route(
            "/scim/v2/{org}/Groups/.search",
            axum::routing::post(search_groups),
        )
        .route(
            "/scim/v2/{org}/Groups/{id}",
            get(get_group)
                .put(put_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route("/scim/v2/{org}/.search", axum::routing::post(search_root))
        .route(
            "/scim/v2/{org}/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/scim/v2/{org}/ResourceTypes", get(resource_types))
        .route("/scim/v2/{org}/ResourceTypes/{name}", get(resource_type))
        .route("/scim/v2/{org}/Schemas", get(schemas))
        .route("/scim/v2/{org}/Schemas/{urn}", get(one_schema))
}

/// The SCIM client of the path's `{org}`, authenticated by the org's bearer token before a
/// byte of the body is read.
pub struct Scim(ScimCtx);

impl axum::extract::FromRequestParts<AppState> for Scim {
    type Rejection = ScimResponseError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self> {
        let org = super::extract::path_org(parts, s)
            .await
            .map_err(ScimError::invalid_value)?;
        authenticate(s, &org, &parts.headers).map(Self)
    }
}

/// Authenticates the org's SCIM bearer token; a token of another org is as good as none.
fn authenticate(state: &AppState, org: &str, headers: &HeaderMap) -> Result<ScimCtx> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(ScimError::of(ScimErrorKind::Unauthenticated, "missing bearer token").into());
    };
    let verified = state
        .credentials
        .read()
        .map_err(|_| ScimError::of(ScimErrorKind::Unavailable, "credential index unavailable"))?
        .verify(org, CredentialKind::Scim, token);
    match verified {
        Some(actor) => Ok(ScimCtx {
            org: OrgId::new(org),
            actor,
            base_url: format!("{}/scim/v2/{org}", state.public_url),
        }),
        None => Err(ScimError::of(
            ScimErrorKind::Unauthenticated,
            "invalid bearer token for this org",
        )
        .into()),
    }
}

fn parse_patch(value: Value) -> Result<PatchRequest> {
    // Accept `Operations` in any casing, as some clients send `operations`.
    let value = match value {
        Value::Object(mut obj) => {
            if let Some(k) = obj
                .keys()
                .find(|k| k.eq_ignore_ascii_case("operations"))
                .cloned()
                && k != "Operations"
                && let Some(v) = obj.remove(&k)
            {
                obj.insert("Operations".into(), v);
            }
            Value::Object(obj)
        }
        other => other,
    };
    serde_json::from_value(value)
        .map_err(|e| ScimError::invalid_syntax(format!("malformed PATCH request: {e}")).into())
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn scim_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    resp
}

fn resource_response(
    status: StatusCode,
    r: ScimResource,
    q: &ListQuery,
    kind: ResourceKind,
) -> Response {
    let mut body = r.body;
    project::project(&mut body, kind, &q.attributes, &q.excluded);
    let mut resp = scim_response(status, body);
    if let Ok(v) = HeaderValue::from_str(&etag(r.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&r.location)
    {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Parses list parameters; names compare case-insensitively and unknown ones (such as
/// Entra's `aadOptscim062020`) are ignored.
fn list_query(raw: Option<String>) -> Result<ListQuery> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ScimError::invalid_value(format!("malformed query string: {e}")))?;
    let mut q = ListQuery::default();
    for (k, v) in pairs {
        match k.to_ascii_lowercase().as_str() {
            "filter" => q.filter = Some(v),
            "startindex" => q.start_index = Some(int_param("startIndex", &v)?),
            "count" => q.count = Some(int_param("count", &v)?),
            "sortby" => q.sort_by = Some(v),
            "sortorder" => q.sort_order = Some(v),
            "attributes" => q.attributes = project::parse_attr_list(&v),
            "excludedattributes" => q.excluded = project::parse_attr_list(&v),
            _ => {}
        }
    }
    Ok(q)
}

fn int_param(name: &str, v: &str) -> Result<i64> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")).into())
}

/// The body of a `POST …/.search` request (RFC 7644 §3.4.3).
fn search_query(body: Value) -> Result<ListQuery> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("body must be an object"))?;
    let get = |k: &str| {
        obj.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    };
    let string = |k: &str| get(k).and_then(Value::as_str).map(str::to_string);
    let list = |k: &str| match get(k) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => project::parse_attr_list(s),
        _ => Vec::new(),
    };
    Ok(ListQuery {
        filter: string("filter"),
        start_index: get("startIndex").and_then(Value::as_i64),
        count: get("count").and_then(Value::as_i64),
        sort_by: string("sortBy"),
        sort_order: string("sortOrder"),
        attributes: list("attributes"),
        excluded: list("excludedAttributes"),
    })
}

async fn list_users(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = list_query(raw)?;
    let body = s.provisioning.list(&ctx, ResourceKind::User, &q).await?;
    Ok(scim_response(StatusCode::OK, body))
}

async fn search_users(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    ScimBody(body): ScimBody<Value>,
) -> Result<Response> {
    let q = search_query(body)?;
    let body = s.provisioning.list(&ctx, ResourceKind::User, &q).await?;
    Ok(scim_response(StatusCode::OK, body))
}

async fn get_user(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    Path((_, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = list_query(raw)?;
    let r = s.provisioning.get_user(&ctx, &id).await?;
    Ok(resource_response(StatusCode::OK, r, &q, ResourceKind::User))
}

async fn create_user(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    RawQuery(raw): RawQuery,
    ScimBody(body): ScimBody<Value>,
) -> Result<Response> {
    let q = list_query(raw)?;
    let r = s.provisioning.create_user(&ctx, body).await?;
    Ok(resource_response(
        StatusCode::CREATED,
        r,
        &q,
        ResourceKind::User,
    ))
}

async fn put_user(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ScimBody(body): ScimBody<Value>,
) -> Result<Response> {
    let q = list_query(raw)?;
    let r = s
        .provisioning
        .replace_user(&ctx, &id, body, if_match(&headers).as_deref())
        .await?;
    Ok(resource_response(StatusCode::OK, r, &q, ResourceKind::User))
}

async fn patch_user(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ScimBody(body): ScimBody<Value>,
) -> Result<Response> {
    let q = list_query(raw)?;
    let req = parse_patch(body)?;
    let r = s
        .provisioning
        .patch_user(&ctx, &id, req, if_match(&headers).as_deref())
        .await?;
    Ok(resource_response(StatusCode::OK, r, &q, ResourceKind::User))
}

async fn delete_user(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    s.provisioning
        .delete_user(&ctx, &id, if_match(&headers).as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_groups(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = list_query(raw)?;
    let body = s.provisioning.list(&ctx, ResourceKind::Group, &q).await?;
    Ok(scim_response(StatusCode::OK, body))
}

async fn search_groups(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    ScimBody(body): ScimBody<Value>,
) -> Result<Response> {
    let q = search_query(body)?;
    let body = s.provisioning.list(&ctx, ResourceKind::Group, &q).await?;
    Ok(scim_response(StatusCode::OK, body))
}

async fn get_group(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    Path((_, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = list_query(raw)?;
    let r = s.provisioning.get_group(&ctx, &id).await?;
    Ok(resource_response(
        StatusCode::OK,
        r,
        &q,
        ResourceKind::Group,
    ))
}

async fn create_group(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    RawQuery(raw): RawQuery,
    ScimBody(body): ScimBody<Value>,
) -> Result<Response> {
    let q = list_query(raw)?;
    let r = s.provisioning.create_group(&ctx, body).await?;
    Ok(resource_response(
        StatusCode::CREATED,
        r,
        &q,
        ResourceKind::Group,
    ))
}

async fn put_group(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ScimBody(body): ScimBody<Value>,
) -> Result<Response> {
    let q = list_query(raw)?;
    let r = s
        .provisioning
        .replace_group(&ctx, &id, body, if_match(&headers).as_deref())
        .await?;
    Ok(resource_response(
        StatusCode::OK,
        r,
        &q,
        ResourceKind::Group,
    ))
}

async fn patch_group(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ScimBody(body): ScimBody<Value>,
) -> Result<Response> {
    let q = list_query(raw)?;
    let req = parse_patch(body)?;
    let r = s
        .provisioning
        .patch_group(&ctx, &id, req, if_match(&headers).as_deref())
        .await?;
    Ok(resource_response(
        StatusCode::OK,
        r,
        &q,
        ResourceKind::Group,
    ))
}

async fn delete_group(
    State(s): State<AppState>,
    Scim(ctx): Scim,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    s.provisioning
        .delete_group(&ctx, &id, if_match(&headers).as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn service_provider_config(State(s): State<AppState>, Scim(ctx): Scim) -> Result<Response> {
    let max = s.provisioning.limits().max_results;
    Ok(scim_response(
        StatusCode::OK,
        schema::service_provider_config(&ctx.base_url, max),
    ))
}

fn list_of(items: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": items.len(),
        "startIndex": 1,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

async fn resource_types(Scim(ctx): Scim) -> Result<Response> {
    Ok(scim_response(
        StatusCode::OK,
        list_of(schema::resource_types(&ctx.base_url)),
    ))
}

async fn resource_type(
    Scim(ctx): Scim,
    Path((_, name)): Path<(String, String)>,
) -> Result<Response> {
    schema::resource_types(&ctx.base_url)
        .into_iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(name.as_str()))
        .map(|r| scim_response(StatusCode::OK, r))
        .ok_or_else(|| ScimError::not_found(format!("resource type {name} not found")).into())
}

async fn schemas(Scim(ctx): Scim) -> Result<Response> {
    Ok(scim_response(
        StatusCode::OK,
        list_of(schema::schemas(&ctx.base_url)),
    ))
}

async fn one_schema(Scim(ctx): Scim, Path((_, urn)): Path<(String, String)>) -> Result<Response> {
    schema::schemas(&ctx.base_url)
        .into_iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(urn.as_str()))
        .map(|r| scim_response(StatusCode::OK, r))
        .ok_or_else(|| ScimError::not_found(format!("schema {urn} not found")).into())
}

/// `POST /.search` across all resource types (RFC 7644 §3.4.3) is optional; the broker answers
/// 501 so clients fall back to `/Users/.search` and `/Groups/.search`.
async fn search_root(_: Scim) -> Result<Response> {
    Err(ScimError::of(
        ScimErrorKind::NotImplemented,
        "search across all resource types is not supported; use /Users/.search or /Groups/.search",
    )
    .into())
}
