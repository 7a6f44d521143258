//! The one place errors become HTTP responses: SCIM errors in the RFC 7644 §3.12 schema on
//! `/scim`, RFC 9457 problem+json elsewhere. 5xx bodies are generic; details go to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::scim::ScimError;
use crate::scim::schema::ERROR_SCHEMA;

/// The SCIM media type.
pub const SCIM_JSON: &str = "application/scim+json";
/// The RFC 9457 media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A SCIM error rendered as an HTTP response.
pub struct ScimResponseError(pub ScimError);

impl From<ScimError> for ScimResponseError {
    fn from(e: ScimError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ScimResponseError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": e.status.to_string(),
            "detail": e.detail,
        });
        if let Some(t) = e.scim_type {
            body["scimType"] = json!(t.as_str());
        }
        let mut resp = (status, Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        resp
    }
}

/// An RFC 9457 problem with a stable `code` member, for the broker's own APIs.
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub detail: String,
    /// Extension members (e.g. `consent_url`).
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

impl Problem {
    /// Builds a problem.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extra: Vec::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.extra.push((key, value));
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        for (k, v) in self.extra {
            body[k] = v;
        }
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp
    }
}
