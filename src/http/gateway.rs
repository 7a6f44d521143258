//! `/internal/v1`: the gateway API (CONTRACT.md). Bearer gateway keys are bound to orgs and
//! checked with one hash and one map look-up ([`GatewayKey`], before a byte of the body is
//! read); the use cases, their audit records and their types are `service::gateway`'s.

use std::convert::Infallible;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::JsonBody;
use super::openapi::{AuthErrors, Conflict, InputErrors, NotFound, Problem};
use crate::domain::OrgId;
use crate::service::bootstrap::GatewayGrant;
use crate::service::gateway::{
    AuthorizeRequest, AuthorizeResponse, EntitlementsResponse, GatewayApi, TokenRequest,
};
use crate::service::vend::TokenResponse;
use crate::service::vend::UserRef;

const TOKEN_PATH: &str = "/internal/v1/token";

/// The token route: the hot path, served with a lean middleware stack (see `http::app`) and
/// measured by [`measure_vend`].
pub fn token_router() -> Router<AppState> {
    Router::new().route("/internal/v1/token", post(token))
}

/// The other gateway routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/authorize", post(authorize))
        .route("/internal/v1/entitlements", get(entitlements))
        .route("/internal/v1/events", get(events))
}

/// The authenticated gateway: its credential and orgs (401 `unauthenticated` otherwise).
pub struct GatewayKey(pub std::sync::Arc<GatewayGrant>);

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for GatewayKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let key = bearer(&parts.headers)
            .ok_or(ApiError::Unauthenticated("missing bearer gateway key"))?;
        let index = s
            .credentials
            .read()
            .map_err(|_| ApiError::CredentialIndex)?;
        index
            .verify_gateway(key)
            .map(Self)
            .ok_or(ApiError::Unauthenticated("invalid gateway key"))
    }
}

impl GatewayKey {
    /// `org` if this key is bound to it (403 `org_forbidden` otherwise).
    fn org(&self, org: &str) -> Result<OrgId, ApiError> {
        if self.0.orgs.iter().any(|o| o == org) {
            Ok(OrgId::new(org))
        } else {
            Err(ApiError::OrgForbidden(
                "this gateway key is not bound to that org",
            ))
        }
    }
}

fn api(s: &AppState) -> GatewayApi<'_> {
    GatewayApi {
        vend: &s.vend,
        access: &s.access,
        audit: &s.audit,
        clock: &*s.clock,
    }
}

/// A JSON answer that no cache keeps (it carries a token).
fn no_store(body: impl serde::Serialize) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[utoipa::path(post, path = "/internal/v1/token", tag = "gateway", request_body = TokenRequest,
    responses((status = 200, description = "The token (`Cache-Control: no-store`)", body = TokenResponse), AuthErrors, InputErrors, NotFound, Conflict, (status = 502, description = "`upstream_error`: the upstream authorization server failed", body = Problem, content_type = "application/problem+json")),
    security(("gateway_key" = [])))]
pub(crate) async fn token(
    State(s): State<AppState>,
    gw: GatewayKey,
    JsonBody(body): JsonBody<TokenRequest>,
) -> Result<Response, ApiError> {
    let org = gw.org(&body.org)?;
    let v = api(&s).token(org, gw.0.actor.clone(), body).await?;
    let counter = if v.cached {
        &s.metrics.cache_hits
    } else {
        &s.metrics.mints
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(no_store(v.served.response()))
}

/// Times every vend and counts it by outcome `code` (the hot route skips the per-route
/// middleware), logging one line at DEBUG (free unless that level is on).
pub async fn measure_vend(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let span = tracing::debug_span!(
        "request",
        method = "POST",
        path = TOKEN_PATH,
        request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let started = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    let code = match resp.extensions().get::<ErrorCode>() {
        Some(ErrorCode(code)) => code,
        None if resp.status().is_success() => "ok",
        None => "error",
    };
    s.metrics.vend(code, took);
    s.metrics
        .routes
        .observe(&Method::POST, TOKEN_PATH, resp.status().as_u16(), took);
    span.in_scope(|| tracing::debug!(code, took_us = took.as_micros() as u64, "vend"));
    resp
}

#[utoipa::path(post, path = "/internal/v1/authorize", tag = "gateway", request_body = AuthorizeRequest,
    responses((status = 200, description = "The decision with its reasons", body = AuthorizeResponse), AuthErrors, InputErrors, NotFound),
    security(("gateway_key" = [])))]
pub(crate) async fn authorize(
    State(s): State<AppState>,
    gw: GatewayKey,
    JsonBody(body): JsonBody<AuthorizeRequest>,
) -> Result<Response, ApiError> {
    let org = gw.org(&body.org)?;
    let decision = api(&s).authorize(org, &gw.0.actor, body).await?;
    Ok(axum::Json(decision).into_response())
}

/// `GET /internal/v1/entitlements?org=…&user_id=…` (or `user_name`, `email`, `subject`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitlementsQuery {
    org: String,
    user_id: Option<String>,
    user_name: Option<String>,
    email: Option<String>,
    subject: Option<String>,
}

/// `org`, and the user named exactly one way: form-style members of one `user` object whose
/// schema is the choice serde makes (written by hand, as a derive cannot say "exactly one").
impl utoipa::IntoParams for EntitlementsQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::Required;
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn, ParameterStyle};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let user =
            crate::service::vend::exactly_one_of(&["user_id", "user_name", "email", "subject"]);
        let org = ParameterBuilder::new()
            .name("org")
            .parameter_in(ParameterIn::Query)
            .required(Required::True)
            .description(Some("The org (one the gateway key is bound to)"))
            .schema(Some(string()));
        let user = ParameterBuilder::new()
            .name("user")
            .parameter_in(ParameterIn::Query)
            .required(Required::True)
            .style(Some(ParameterStyle::Form))
            .explode(Some(true))
            .description(Some(
                "The user: exactly one of `user_id`, `user_name`, `email`, `subject`",
            ))
            .schema(Some(user));
        vec![org.build(), user.build()]
    }
}

impl EntitlementsQuery {
    /// The user, named exactly one way.
    fn user(self) -> Result<UserRef, ApiError> {
        let refs = [
            self.user_id.map(UserRef::Id),
            self.user_name.map(UserRef::UserName),
            self.email.map(UserRef::Email),
            self.subject.map(UserRef::Subject),
        ];
        match <[UserRef; 1]>::try_from(refs.into_iter().flatten().collect::<Vec<_>>()) {
            Ok([r]) => Ok(r),
            Err(_) => Err(ApiError::Malformed(
                "give exactly one of user_id, user_name, email, subject".into(),
            )),
        }
    }
}

#[utoipa::path(get, path = "/internal/v1/entitlements", tag = "gateway", params(EntitlementsQuery),
    responses((status = 200, description = "What the user may use", body = EntitlementsResponse), AuthErrors, InputErrors, NotFound),
    security(("gateway_key" = [])))]
pub(crate) async fn entitlements(
    State(s): State<AppState>,
    gw: GatewayKey,
    q: Result<Query<EntitlementsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let org = gw.org(&q.org)?;
    let ent = api(&s).entitlements(org, &q.user()?).await?;
    Ok(axum::Json(ent).into_response())
}

#[utoipa::path(get, path = "/internal/v1/events", tag = "gateway",
    responses((status = 200, description = "Server-sent events: `token.revoked`, `user.deactivated`, `user.locked`, `entitlements.changed`, `consent.required` of the key's orgs", content_type = "text/event-stream", body = String), AuthErrors),
    security(("gateway_key" = [])))]
pub(crate) async fn events(State(s): State<AppState>, gw: GatewayKey) -> Response {
    let rx = s.access.bus().subscribe();
    Sse::new(event_stream(rx, gw.0.orgs.clone()))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn event_stream(
    rx: tokio::sync::broadcast::Receiver<crate::domain::vault::BusEvent>,
    orgs: Vec<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((rx, orgs), |(mut rx, orgs)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) if orgs.contains(&ev.org) => {
                    let mut data = serde_json::to_value(&ev).unwrap_or_default();
                    data["at"] = json!(crate::domain::clock::rfc3339(ev.at_ms));
                    let data = data.to_string();
                    let event = Event::default().event(ev.kind.clone()).data(data);
                    return Some((Ok(event), (rx, orgs)));
                }
                Ok(_) => continue,
                // A slow consumer missed events: tell it so it can resynchronise.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let event = Event::default()
                        .event("stream.lagged")
                        .data(json!({"missed": n}).to_string());
                    return Some((Ok(event), (rx, orgs)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
