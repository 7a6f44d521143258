//! The one error table: every failure a handler can answer gets its HTTP status and stable
//! `code` here, and nowhere else. Three renderings share it: RFC 9457 problem+json on the
//! broker's own APIs ([`ApiError`]), the RFC 7644 §3.12 error schema on `/scim`
//! ([`ScimResponseError`]) and RFC 6749 §5.2 bodies on the OAuth endpoints ([`OAuthError`]).
//!
//! Invariant: a 5xx body is generic; what went wrong (with the error's sources) goes to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::identity::SignInError;
use crate::scim::schema::ERROR_SCHEMA;
use crate::scim::{ScimError, ScimErrorKind};
use crate::service::access::AccessError;
use crate::service::admin::AdminError;
use crate::service::upstream::ConsentError;
use crate::service::vend::VendError;

/// The SCIM media type.
pub const SCIM_JSON: &str = "application/scim+json";
/// The RFC 9457 media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The stable code a response failed with, left in its extensions for the vend metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Why a request body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over `server.max_body_bytes`.
    #[error("request body is larger than {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read.
    #[error("unreadable body: {0}")]
    Unreadable(String),
    /// Not JSON, or not the JSON the operation takes (serde's message names what and where).
    #[error("malformed JSON: {0}")]
    Malformed(String),
}

/// Every failure the broker's own APIs (admin, gateway, sign-in) answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or an unknown credential.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A credential of another org.
    #[error("{0}")]
    OrgForbidden(&'static str),
    /// A cookie-authenticated admin request from another site.
    #[error("session-authenticated admin requests must come from this broker's own pages")]
    CrossSite,
    /// A signed-in user outside the org's admin group.
    #[error("the signed-in user is not in the org's admin group")]
    NotAdmin,
    /// A request whose parameters are wrong.
    #[error("{0}")]
    Malformed(String),
    /// A body that cannot be used.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// No such endpoint or org.
    #[error("{0}")]
    NotFound(String),
    /// `/readyz`: a dependency does not answer (which one is logged).
    #[error("{0}")]
    NotReady(String),
    /// The credential index lock is poisoned.
    #[error("credential index unavailable")]
    CredentialIndex,
    /// A vend or a gateway query failed.
    #[error(transparent)]
    Vend(#[from] VendError),
    /// An admin use case failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// Access state could not be read.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// A sign-in failed.
    #[error(transparent)]
    SignIn(#[from] SignInError),
    /// A consent to an upstream connector failed.
    #[error(transparent)]
    Consent(#[from] ConsentError),
}

impl ApiError {
    /// The table: status and stable `code` of every failure (CONTRACT.md).
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Unauthenticated(_) => (S::UNAUTHORIZED, "unauthenticated"),
            ApiError::OrgForbidden(_) => (S::FORBIDDEN, "org_forbidden"),
            ApiError::CrossSite => (S::FORBIDDEN, "cross_site_request"),
            ApiError::NotAdmin => (S::FORBIDDEN, "not_admin"),
            ApiError::Malformed(_)
            | ApiError::Body(BodyError::Unreadable(_) | BodyError::Malformed(_)) => {
                (S::BAD_REQUEST, "malformed_request")
            }
            ApiError::Body(BodyError::TooLarge { .. }) => {
                (S::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            ApiError::NotReady(_) | ApiError::CredentialIndex | ApiError::Access(_) => {
                (S::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Vend(e) => match e {
                VendError::UserInactive => (S::FORBIDDEN, "user_inactive"),
                VendError::UserLocked => (S::FORBIDDEN, "user_locked"),
                VendError::NotEntitled => (S::FORBIDDEN, "not_entitled"),
                VendError::ScopeNotEntitled(_) => (S::FORBIDDEN, "scope_not_entitled"),
                VendError::UnknownUser => (S::NOT_FOUND, "unknown_user"),
                VendError::UnknownConnector => (S::NOT_FOUND, "unknown_connector"),
                VendError::ConsentRequired(_) => (S::CONFLICT, "consent_required"),
                VendError::Upstream(_) => (S::BAD_GATEWAY, "upstream_error"),
                VendError::Unavailable(_) | VendError::Unaudited => {
                    (S::SERVICE_UNAVAILABLE, "unavailable")
                }
            },
            ApiError::Admin(e) => match e {
                AdminError::Invalid(_) => (S::BAD_REQUEST, "invalid_request"),
                AdminError::NotFound(_) => (S::NOT_FOUND, "not_found"),
                AdminError::Conflict(_) => (S::CONFLICT, "conflict"),
                AdminError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            },
            ApiError::SignIn(e) => match e {
                SignInError::UnknownOrg => (S::NOT_FOUND, "unknown_org"),
                SignInError::Config(_) => (S::INTERNAL_SERVER_ERROR, "misconfigured"),
                SignInError::Provider(_) => (S::BAD_GATEWAY, "idp_unavailable"),
                SignInError::IdpError(_) => (S::BAD_REQUEST, "idp_error"),
                SignInError::TokenExchange(_) => (S::UNAUTHORIZED, "token_exchange_failed"),
                SignInError::InvalidIdToken(_) | SignInError::UnknownKey => {
                    (S::UNAUTHORIZED, "invalid_id_token")
                }
                SignInError::InvalidState(_) => (S::BAD_REQUEST, "invalid_state"),
                SignInError::InvalidAssertion(_) => (S::UNAUTHORIZED, "invalid_assertion"),
                SignInError::Replayed => (S::UNAUTHORIZED, "assertion_replayed"),
                SignInError::IssuerMismatch => (S::BAD_REQUEST, "issuer_mismatch"),
                SignInError::NotProvisioned(_) => (S::FORBIDDEN, "not_provisioned"),
                SignInError::UserInactive => (S::FORBIDDEN, "user_inactive"),
                SignInError::GroupsOverage => (S::BAD_REQUEST, "groups_overage"),
                SignInError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
                SignInError::TooManyLogins => (S::TOO_MANY_REQUESTS, "too_many_logins"),
            },
            ApiError::Consent(e) => match e {
                ConsentError::NotConsentable => (S::NOT_FOUND, "unknown_connector"),
                ConsentError::NotEntitled => (S::FORBIDDEN, "not_entitled"),
                ConsentError::UnknownState => (S::BAD_REQUEST, "invalid_state"),
                ConsentError::OtherSession => (S::FORBIDDEN, "consent_session_mismatch"),
                ConsentError::IssuerMismatch => (S::BAD_REQUEST, "issuer_mismatch"),
                ConsentError::Denied(_) => (S::BAD_REQUEST, "consent_denied"),
                ConsentError::Upstream(_) => (S::BAD_GATEWAY, "upstream_error"),
                ConsentError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            },
        }
    }

    /// Status, code and the detail the client may see. A 5xx is logged here with its sources
    /// and answers a generic detail.
    pub fn public(&self) -> (StatusCode, &'static str, String) {
        let (status, code) = self.status_code();
        if !status.is_server_error() {
            return (status, code, self.to_string());
        }
        tracing::warn!(code, error = %chain(self), "request failed");
        let detail = match status {
            StatusCode::BAD_GATEWAY => "an upstream service failed; retry later",
            StatusCode::SERVICE_UNAVAILABLE => "temporarily unavailable; retry",
            _ => "internal error",
        };
        (status, code, detail.to_string())
    }
}

/// An error with its sources, `a: b: c`, for the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail) = self.public();
        let mut body = problem_body(status, code, &detail);
        match &self {
            ApiError::Vend(VendError::ConsentRequired(url)) => body["consent_url"] = json!(url),
            // The upstream's own RFC 6749 `error` code (or why no call was made): no secret,
            // and what a gateway needs to tell a dead grant from a busy provider.
            ApiError::Vend(VendError::Upstream(code)) => body["upstream_error"] = json!(code),
            ApiError::Consent(ConsentError::Upstream(e)) => {
                body["upstream_error"] = json!(e.code())
            }
            _ => {}
        }
        let mut resp = (status, Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp.extensions_mut().insert(ErrorCode(code));
        resp
    }
}

/// The RFC 9457 body with the broker's `code` member.
fn problem_body(status: StatusCode, code: &str, detail: &str) -> Value {
    json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    })
}

/// The SCIM table: the status of each kind of SCIM error.
pub fn scim_status(kind: ScimErrorKind) -> StatusCode {
    match kind {
        ScimErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ScimErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ScimErrorKind::NotFound => StatusCode::NOT_FOUND,
        ScimErrorKind::Conflict => StatusCode::CONFLICT,
        ScimErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ScimErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ScimErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ScimErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ScimErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A SCIM error rendered as an HTTP response.
#[derive(Debug)]
pub struct ScimResponseError(pub ScimError);

impl From<ScimError> for ScimResponseError {
    fn from(e: ScimError) -> Self {
        Self(e)
    }
}

impl From<BodyError> for ScimResponseError {
    fn from(e: BodyError) -> Self {
        Self(match e {
            BodyError::TooLarge { .. } => {
                ScimError::of(ScimErrorKind::PayloadTooLarge, e.to_string())
            }
            BodyError::Unreadable(_) | BodyError::Malformed(_) => {
                ScimError::invalid_syntax(e.to_string())
            }
        })
    }
}

impl IntoResponse for ScimResponseError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = scim_status(e.kind);
        let detail = if status.is_server_error() {
            tracing::warn!(error = %e, "SCIM request failed");
            "temporarily unavailable; retry".to_string()
        } else {
            e.detail
        };
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": status.as_u16().to_string(),
            "detail": detail,
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

/// The failures of the OAuth endpoints, each one RFC 6749 §5.2 body and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    /// No or an unknown credential.
    InvalidClient,
    /// No form-encoded `token`.
    InvalidRequest,
    /// The vault or the credential index did not answer.
    Unavailable,
}

impl OAuthError {
    /// The OAuth table: status, `error` and `error_description`.
    pub fn status_code(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            OAuthError::InvalidClient => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "a gateway key or resource-server credential is required",
            ),
            OAuthError::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "token is required (form-encoded)",
            ),
            OAuthError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "retry",
            ),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (status, error, description) = self.status_code();
        let mut r = (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response();
        if self == OAuthError::InvalidClient {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vend and sign-in codes are also the outcomes their audit records name: the table
    /// and the services agree on every variant.
    #[test]
    fn table_codes_are_the_audited_outcomes() {
        let vend = [
            VendError::UserInactive,
            VendError::UserLocked,
            VendError::NotEntitled,
            VendError::ScopeNotEntitled("s".into()),
            VendError::UnknownUser,
            VendError::UnknownConnector,
            VendError::ConsentRequired("u".into()),
            VendError::Upstream("x".into()),
            VendError::Unavailable("x".into()),
            VendError::Unaudited,
        ];
        for e in vend {
            let outcome = e.code();
            assert_eq!(ApiError::Vend(e).status_code().1, outcome);
        }
        let sign_in = [
            SignInError::TooManyLogins,
            SignInError::UnknownOrg,
            SignInError::Config("x".into()),
            SignInError::Provider("x".into()),
            SignInError::IdpError("x".into()),
            SignInError::TokenExchange("x".into()),
            SignInError::InvalidIdToken("x".into()),
            SignInError::UnknownKey,
            SignInError::InvalidState("x".into()),
            SignInError::InvalidAssertion("x".into()),
            SignInError::Replayed,
            SignInError::IssuerMismatch,
            SignInError::NotProvisioned("x".into()),
            SignInError::UserInactive,
            SignInError::GroupsOverage,
            SignInError::Unavailable("x".into()),
        ];
        for e in sign_in {
            let outcome = e.code();
            assert_eq!(ApiError::SignIn(e).status_code().1, outcome);
        }
    }

    #[test]
    fn server_errors_answer_a_generic_detail() {
        let (status, code, detail) =
            ApiError::Vend(VendError::Unavailable("redis at 10.0.0.7 refused".into())).public();
        assert_eq!((status.as_u16(), code), (503, "unavailable"));
        assert!(!detail.contains("10.0.0.7"), "{detail}");
        let (status, _, detail) = ApiError::Body(BodyError::TooLarge { limit: 2048 }).public();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(detail.contains("2048"), "{detail}");
    }
}
