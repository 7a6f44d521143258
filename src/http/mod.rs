//! The HTTP surface (axum). `app(state)` merges one router per surface; handlers are thin:
//! extract, authorise, one service call, map the result.

pub mod admin;
pub mod auth;
pub mod connect;
pub mod error;
pub mod extract;
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
use axum::http::{HeaderName, HeaderValue, Request};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::domain::clock::Clock;
use crate::domain::ports::Directory;
use crate::service::access::Access;
use crate::service::admin::Admin;
use crate::service::audit_sink::AuditSink;
use crate::service::bootstrap::CredentialIndex;
use crate::service::provisioning::Provisioning;
use crate::service::vend::Vend;

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
    /// Sign-in and sessions.
    pub sign_in: crate::identity::SignIn,
    /// SCIM use cases.
    pub provisioning: Provisioning,
    /// The directory store (readiness).
    pub directory: Arc<dyn Directory>,
    /// Accepted credentials by org, kept current from the system of record on every replica
    /// (`service::credentials`).
    pub credentials: Arc<std::sync::RwLock<CredentialIndex>>,
    /// Public base URL without trailing slash.
    pub public_url: String,
    /// Token vend.
    pub vend: Vend,
    /// Entitlements and revocation.
    pub access: Access,
    /// RFC 7662 introspection and RFC 7009 revocation, scoped to the caller.
    pub introspection: crate::service::introspection::Introspection,
    /// Admin use cases.
    pub admin: Admin,
    /// Hot-path audit records.
    pub audit: AuditSink,
    /// Counters for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Upstream connectors: consent.
    pub upstreams: crate::service::upstream::Upstreams,
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
///
/// `POST /internal/v1/token` is the hot path and gets a lean stack: a body limit, the request
/// timeout and request ids. Its latency and outcomes are measured by the vend histogram and
/// counters rather than the per-route middleware, and it logs its own line at DEBUG (errors
/// at WARN). Everything else shares the full stack: access log, per-route metrics, request
/// timeout. Every route is under the timeout.
pub fn app(state: AppState, limits: HttpLimits) -> Router {
    let timeout = || {
        TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        )
    };
    let hot = Router::new()
        .merge(gateway::token_router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gateway::measure_vend,
        ))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(timeout());
    // The rest of the gateway surface logs per request at DEBUG too (errors still WARN), so a
    // burst of gateway calls does not turn into a burst of log writes.
    let gateway = gateway::router().layer(trace(Level::DEBUG, Level::DEBUG, hot_span));
    let rest = Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(connect::router())
        .merge(scim::router())
        .merge(admin::router())
        .merge(oauth::router())
        .merge(metrics::router())
        .layer(trace(Level::INFO, Level::WARN, request_span));
    let rest = Router::new()
        .merge(gateway)
        .merge(rest)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(timeout());
    Router::new()
        .merge(hot)
        .merge(rest)
        .fallback(not_found)
        .with_state(state)
        // The body extractor (`extract`) names the configured limit in its 413.
        .layer(axum::Extension(limits))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, FastRequestId))
}

/// Request ids as random UUIDs from the thread-local generator (reseeded from the OS by
/// `rand`), rather than one `getrandom` system call per request as `MakeRequestUuid` makes.
#[derive(Clone, Copy, Default)]
struct FastRequestId;

impl MakeRequestId for FastRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut buf = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
            .ok()
            .map(RequestId::new)
    }
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
        error::ApiError::NotFound("no such endpoint".into()).into_response()
    }
}
