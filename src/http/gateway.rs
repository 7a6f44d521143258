//! `/internal/v1`: the gateway API (CONTRACT.md). Bearer gateway keys are bound to orgs and
//! checked with one hash and one map look-up; every vend and decision is audited and counted.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::AppState;
use super::error::Problem;
use crate::domain::OrgId;
use crate::domain::connector::Category;
use crate::domain::policy;
use crate::service::vend::{UserRef, VendError, VendRequest};

const TOKEN_PATH: &str = "/internal/v1/token";

/// The token route: the hot path, served with a lean middleware stack (see `http::app`).
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

/// The authenticated gateway: its credential and orgs.
pub type Gateway = std::sync::Arc<crate::service::bootstrap::GatewayGrant>;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Authenticates a gateway key (401 `unauthenticated` otherwise).
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Gateway, Problem> {
    let key = bearer(headers).ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing bearer gateway key",
        )
    })?;
    let index = state.credentials.read().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "credential index unavailable",
        )
    })?;
    match index.verify_gateway(key) {
        Some(grant) => Ok(grant),
        None => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid gateway key",
        )),
    }
}

fn org_allowed(gw: &Gateway, org: &str) -> Result<OrgId, Problem> {
    if gw.orgs.iter().any(|o| o == org) {
        Ok(OrgId::new(org))
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "org_forbidden",
            "this gateway key is not bound to that org",
        ))
    }
}

fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than 1 MiB",
            )
        } else {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                format!("unreadable body: {e}"),
            )
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

/// `user` as the gateway names it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    id: Option<String>,
    user_name: Option<String>,
    email: Option<String>,
    subject: Option<String>,
}

impl UserSpec {
    fn to_ref(&self) -> Result<UserRef, Problem> {
        let refs: Vec<UserRef> = [
            self.id.clone().map(UserRef::Id),
            self.user_name.clone().map(UserRef::UserName),
            self.email.clone().map(UserRef::Email),
            self.subject.clone().map(UserRef::Subject),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[UserRef; 1]>::try_from(refs) {
            Ok([r]) => Ok(r),
            Err(_) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "user must have exactly one of id, user_name, email, subject",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    org: String,
    user: UserSpec,
    connector: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

/// The answer when the audit record of a vend or a decision cannot be queued: nothing
/// unaudited is given out.
fn unaudited() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "audit backlog full; retry",
    )
}

fn vend_problem(e: &VendError) -> Problem {
    let status = match e {
        VendError::UserInactive
        | VendError::UserLocked
        | VendError::NotEntitled
        | VendError::ScopeNotEntitled(_) => StatusCode::FORBIDDEN,
        VendError::UnknownUser | VendError::UnknownConnector => StatusCode::NOT_FOUND,
        VendError::ConsentRequired(_) => StatusCode::CONFLICT,
        VendError::Upstream(_) => StatusCode::BAD_GATEWAY,
        VendError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "vend unavailable");
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry",
            );
        }
    };
    Problem::new(status, e.code(), e.to_string())
}

async fn token(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    let headers = req.headers().clone();
    // The request span the shared stack would open (DEBUG: free unless that level is on).
    let span = tracing::debug_span!(
        "request",
        method = "POST",
        path = TOKEN_PATH,
        request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let started = Instant::now();
    let result = vend(&s, req).instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => "ok",
        Err((_, code)) => code,
    };
    let took = started.elapsed();
    s.metrics.vend(code, took);
    let resp = match result {
        Ok(r) => r,
        Err((p, _)) => p.into_response(),
    };
    s.metrics
        .routes
        .observe(&Method::POST, TOKEN_PATH, resp.status().as_u16(), took);
    span.in_scope(|| tracing::debug!(code, took_us = took.as_micros() as u64, "vend"));
    resp
}

async fn vend(
    s: &AppState,
    req: axum::extract::Request,
) -> Result<Response, (Problem, &'static str)> {
    // The key is checked before a byte of the body is read: an unauthenticated caller cannot
    // make the broker buffer anything.
    let gw = authenticate(s, req.headers()).map_err(|p| (p, "unauthenticated"))?;
    let body = <Bytes as axum::extract::FromRequest<AppState>>::from_request(req, s).await;
    let body: TokenBody = json_body(body).map_err(|p| {
        let code = p.code;
        (p, code)
    })?;
    let org = org_allowed(&gw, &body.org).map_err(|p| (p, "org_forbidden"))?;
    let user = body.user.to_ref().map_err(|p| (p, "malformed_request"))?;
    let req = VendRequest {
        org,
        user,
        connector: body.connector,
        scopes: body.scopes,
        gateway: gw.actor.clone(),
    };
    match s.vend.vend(&req).await {
        Ok(v) => {
            let counter = if v.cached {
                &s.metrics.cache_hits
            } else {
                &s.metrics.mints
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // An unaudited token is never served.
            if !s.audit_served(req, &v) {
                return Err((unaudited(), "unavailable"));
            }
            let body = v.served.body();
            let mut resp = axum::body::Body::from(body).into_response();
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            Ok(resp)
        }
        Err(e) => {
            s.audit_vend(&req, e.code());
            let mut p = vend_problem(&e);
            if let VendError::ConsentRequired(url) = &e {
                p = p.with("consent_url", json!(url));
            }
            Err((p, e.code()))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeBody {
    org: String,
    user: UserSpec,
    connector: String,
    tool: String,
    #[serde(default)]
    category: Option<Category>,
}

async fn authorize(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = async {
        let gw = authenticate(&s, &headers)?;
        let body: AuthorizeBody = json_body(body)?;
        let org = org_allowed(&gw, &body.org)?;
        let user = s
            .vend
            .resolve_user(&org, &body.user.to_ref()?)
            .await
            .map_err(|e| vend_problem(&e))?;
        let Some((_, ent, connectors)) = s.access.entitlements(&org, &user).await.map_err(|e| {
            tracing::warn!(error = %e, "authorize unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry",
            )
        })?
        else {
            return Err(vend_problem(&VendError::UnknownUser));
        };
        if !connectors.iter().any(|c| c.id == body.connector) {
            return Err(vend_problem(&VendError::UnknownConnector));
        }
        let d = policy::decide_tool(
            &ent,
            &connectors,
            &body.connector,
            &body.tool,
            body.category,
        );
        if !s.audit_decision(
            &org,
            &gw.actor,
            &user,
            &body.connector,
            &body.tool,
            d.action.as_str(),
        ) {
            return Err(unaudited());
        }
        Ok::<_, Problem>(Json(json!({"decision": d.action, "reasons": d.reasons})).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct EntitlementsQuery {
    org: String,
    user_id: Option<String>,
    user_name: Option<String>,
    email: Option<String>,
    subject: Option<String>,
}

async fn entitlements(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<EntitlementsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let run = async {
        let gw = authenticate(&s, &headers)?;
        let Query(q) = q.map_err(|e| {
            Problem::new(StatusCode::BAD_REQUEST, "malformed_request", e.to_string())
        })?;
        let org = org_allowed(&gw, &q.org)?;
        let spec = UserSpec {
            id: q.user_id,
            user_name: q.user_name,
            email: q.email,
            subject: q.subject,
        };
        let user = s
            .vend
            .resolve_user(&org, &spec.to_ref()?)
            .await
            .map_err(|e| vend_problem(&e))?;
        let Some((_, ent, _)) = s.access.entitlements(&org, &user).await.map_err(|e| {
            tracing::warn!(error = %e, "entitlements unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry",
            )
        })?
        else {
            return Err(vend_problem(&VendError::UnknownUser));
        };
        let connectors: Vec<Value> = ent
            .connectors
            .values()
            .map(|c| {
                let actions: serde_json::Map<String, Value> =
                    c.actions.iter().map(|(k, d)| (k.as_str().to_string(), json!(d.action))).collect();
                json!({"connector": c.connector, "scopes": c.scopes, "actions": actions, "tools": c.tools})
            })
            .collect();
        Ok::<_, Problem>(
            Json(json!({"user_id": user.as_str(), "active": ent.active, "connectors": connectors}))
                .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn events(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let gw = match authenticate(&s, &headers) {
        Ok(g) => g,
        Err(p) => return p.into_response(),
    };
    let rx = s.access.bus().subscribe();
    Sse::new(event_stream(rx, gw.orgs.clone()))
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
