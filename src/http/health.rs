//! Liveness and readiness probes.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// `/healthz` and `/readyz`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the database and the vault answer within two seconds, else 503 naming which.
async fn readyz(State(state): State<AppState>) -> Response {
    let limit = Duration::from_secs(2);
    let (db, vault) = tokio::join!(
        tokio::time::timeout(limit, state.directory.ping()),
        tokio::time::timeout(limit, state.access.vault().ping()),
    );
    let db_ok = matches!(db, Ok(Ok(())));
    let vault_ok = matches!(vault, Ok(Ok(())));
    if db_ok && vault_ok {
        return (
            StatusCode::OK,
            Json(json!({"status": "ready", "database": "ok", "vault": "ok"})),
        )
            .into_response();
    }
    let mut down = Vec::new();
    if !db_ok {
        tracing::warn!("readiness: database check failed");
        down.push("database");
    }
    if !vault_ok {
        tracing::warn!("readiness: vault check failed");
        down.push("vault");
    }
    ApiError::NotReady(format!("{} unreachable", down.join(" and "))).into_response()
}
