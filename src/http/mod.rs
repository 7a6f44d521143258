//! The HTTP surface (axum). `app(state)` merges one router per surface; handlers are thin:
//! extract, authorise, one service call, map the result.

pub mod error;
pub mod health;
pub mod scim;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::domain::ports::Directory;
use crate::service::bootstrap::CredentialIndex;
use crate::service::provisioning::Provisioning;

/// Everything handlers need, shared by reference.
#[derive(Clone)]
pub struct AppState {
    /// SCIM use cases.
    pub provisioning: Provisioning,
    /// The directory store (readiness).
    pub directory: Arc<dyn Directory>,
    /// Accepted credentials by org.
    pub credentials: Arc<CredentialIndex>,
    /// Public base URL without trailing slash.
    pub public_url: String,
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
    Router::new()
        .merge(health::router())
        .merge(scim::router())
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            // The path only: query strings may carry filters with personal data.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
