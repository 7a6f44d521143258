//! `/metrics`: Prometheus text. Counters are plain atomics so the vend path pays a few
//! nanoseconds; the latency histogram has fixed buckets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// Vend outcome codes, in export order.
const CODES: [&str; 12] = [
    "ok",
    "unauthenticated",
    "malformed_request",
    "org_forbidden",
    "user_inactive",
    "not_entitled",
    "scope_not_entitled",
    "unknown_user",
    "unknown_connector",
    "consent_required",
    "upstream_error",
    "unavailable",
];
/// Histogram bucket upper bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The broker's counters.
#[derive(Default)]
pub struct Metrics {
    outcomes: [AtomicU64; CODES.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// Tokens served from the vault.
    pub cache_hits: AtomicU64,
    /// Tokens minted.
    pub mints: AtomicU64,
}

impl Metrics {
    /// Records one vend.
    pub fn vend(&self, code: &str, took: Duration) {
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            self.outcomes[i].fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Renders the Prometheus exposition text.
    pub fn render(&self, audit_backlog: i64, revocations: u64) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str("# HELP auth_broker_vend_total Token vends by outcome code.\n# TYPE auth_broker_vend_total counter\n");
        for (i, c) in CODES.iter().enumerate() {
            out.push_str(&format!(
                "auth_broker_vend_total{{code=\"{c}\"}} {}\n",
                self.outcomes[i].load(Ordering::Relaxed)
            ));
        }
        out.push_str("# HELP auth_broker_vend_seconds Vend latency inside the broker.\n# TYPE auth_broker_vend_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            out.push_str(&format!(
                "auth_broker_vend_seconds_bucket{{le=\"{b}\"}} {cumulative}\n"
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!(
            "auth_broker_vend_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!(
            "auth_broker_vend_seconds_sum {}\nauth_broker_vend_seconds_count {count}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
        for (name, help, v) in [
            (
                "auth_broker_vault_cache_hits_total",
                "Tokens served from the vault.",
                &self.cache_hits,
            ),
            ("auth_broker_mints_total", "Tokens minted.", &self.mints),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP auth_broker_revocations_total Revocations (epoch bumps) by this replica.\n\
             # TYPE auth_broker_revocations_total counter\nauth_broker_revocations_total {revocations}\n"
        ));
        out.push_str(&format!(
            "# HELP auth_broker_audit_backlog Audit records queued, not yet written.\n# TYPE auth_broker_audit_backlog gauge\nauth_broker_audit_backlog {audit_backlog}\n"
        ));
        out
    }
}

/// `/metrics`
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let m: &Arc<Metrics> = &s.metrics;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(s.audit.depth(), s.access.revocations()),
    )
}
