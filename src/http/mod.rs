//! The HTTP surface (axum). `app(state)` merges one router per surface; handlers are thin:
//! extract, authorise, one service call, map the result.

pub mod admin;
pub mod error;
pub mod gateway;
pub mod health;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod scim;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::domain::audit::AuditEntry;
use crate::domain::clock::Clock;
use crate::domain::ports::Directory;
use crate::domain::{OrgId, UserId};
use crate::service::access::Access;
use crate::service::admin::Admin;
use crate::service::audit_sink::AuditSink;
use crate::service::bootstrap::CredentialIndex;
use crate::service::provisioning::Provisioning;
use crate::service::vend::{UserRef, Vend, VendRequest};

/// Everything handlers need. Cloned per request by axum, so it is one `Arc`: a clone is a
/// single atomic increment instead of one per service handle.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl AppState {
    /// Wraps the shared state.
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// The services and handles behind [`AppState`].
pub struct AppInner {
    /// SCIM use cases.
    pub provisioning: Provisioning,
    /// The directory store (readiness).
    pub directory: Arc<dyn Directory>,
    /// Accepted credentials by org (gateway keys can be added at run time).
    pub credentials: Arc<std::sync::RwLock<CredentialIndex>>,
    /// Public base URL without trailing slash.
    pub public_url: String,
    /// Token vend.
    pub vend: Vend,
    /// Entitlements and revocation.
    pub access: Access,
    /// Admin use cases.
    pub admin: Admin,
    /// Hot-path audit records.
    pub audit: AuditSink,
    /// Counters for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl AppInner {
    /// Now, Unix seconds.
    pub fn clock_now_secs(&self) -> i64 {
        self.clock.now_ms() / 1000
    }

    /// Queues the audit record of a vend (never the token). `false` when the backlog is full.
    pub fn audit_vend(
        &self,
        req: &VendRequest,
        gateway: &str,
        user_id: Option<&str>,
        outcome: &'static str,
        scopes: &[String],
        cached: bool,
    ) -> bool {
        let user = match (user_id, &req.user) {
            (Some(id), _) => id.to_string(),
            (None, UserRef::Id(id)) => id.clone(),
            (None, _) => String::new(),
        };
        self.audit
            .record(crate::service::audit_sink::VendAudit {
                org: req.org.clone(),
                at_ms: self.clock.now_ms(),
                gateway: gateway.to_string(),
                user,
                connector: req.connector.clone(),
                scopes: scopes.to_vec(),
                outcome,
                cached,
            })
            .is_ok()
    }

    /// Queues the audit record of a tool decision.
    pub fn audit_decision(
        &self,
        org: &OrgId,
        gateway: &str,
        user: &UserId,
        connector: &str,
        tool: &str,
        decision: &str,
    ) {
        let _ = self.audit.record(AuditEntry {
            org: org.clone(),
            at_ms: self.clock.now_ms(),
            actor: gateway.to_string(),
            action: "tool.authorize".into(),
            resource_type: "Tool".into(),
            resource_id: user.to_string(),
            summary: serde_json::json!({"user_id": user.as_str(), "connector": connector, "tool": tool, "decision": decision}),
        });
    }
}

/// HTTP limits from config.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Per-request time limit.
    pub request_timeout: Duration,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application router with its middleware.
pub fn app(state: AppState, limits: HttpLimits) -> Router {
    // The gateway surface is the hot path: its per-request line is DEBUG (errors still WARN),
    // so a burst of vends does not turn into a burst of log writes.
    let hot = gateway::router().layer(trace(Level::DEBUG, Level::DEBUG, hot_span));
    let rest = Router::new()
        .merge(health::router())
        .merge(scim::router())
        .merge(admin::router())
        .merge(oauth::router())
        .merge(metrics::router())
        .layer(trace(Level::INFO, Level::WARN, request_span));
    Router::new()
        .merge(hot)
        .merge(rest)
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The request span: method, path (never the query, which may hold personal data) and id.
fn request_span(req: &Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

type Trace = TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&Request<axum::body::Body>) -> tracing::Span,
    tower_http::trace::DefaultOnRequest,
    DefaultOnResponse,
    tower_http::trace::DefaultOnBodyChunk,
    tower_http::trace::DefaultOnEos,
    DefaultOnFailure,
>;

/// The gateway path's span: DEBUG, so at the default level it costs nothing per vend.
fn hot_span(req: &Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

/// Access logging at the given levels for responses and for 5xx failures.
fn trace(
    response: Level,
    failure: Level,
    span: fn(&Request<axum::body::Body>) -> tracing::Span,
) -> Trace {
    TraceLayer::new_for_http()
        .make_span_with(span)
        .on_response(DefaultOnResponse::new().level(response))
        .on_failure(DefaultOnFailure::new().level(failure))
}

/// Unknown paths: a SCIM error under `/scim`, problem+json elsewhere.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/scim/") {
        error::ScimResponseError(crate::scim::ScimError::not_found("no such SCIM endpoint"))
            .into_response()
    } else {
        error::Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
        )
        .into_response()
    }
}
