//! `/admin/v1/openapi.json`: the OpenAPI 3.1 description of the admin and gateway APIs,
//! generated (`utoipa`) from the handlers' `#[utoipa::path]` attributes and the very types they
//! (de)serialise, so required fields, enums and `deny_unknown_fields` (as
//! `additionalProperties: false`) are what serde accepts. A test checks that every route the
//! admin and gateway routers declare is documented, and nothing else.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, OpenApi, ToSchema};

use super::{admin, gateway};

mod upstream;

/// An RFC 9457 problem with the broker's stable `code` (what `http::error` renders).
#[derive(serde::Serialize, ToSchema)]
pub struct Problem<'a> {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The stable machine-readable code (CONTRACT.md).
    pub code: &'a str,
    /// What went wrong (generic on 5xx).
    pub detail: &'a str,
    /// Where the user consents (`consent_required` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_url: Option<&'a str>,
}

/// What every authenticated operation may answer besides its own outcomes.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum AuthErrors<'a> {
    /// `unauthenticated`: no or an unknown key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(Problem<'a>),
    /// `org_forbidden` (a key of another org); admin sessions: `cross_site_request`,
    /// `not_admin`; vends: `user_inactive`, `user_locked`, `not_entitled`,
    /// `scope_not_entitled`.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem<'a>),
    /// `unavailable`: a store or the vault did not answer (fail closed; retry).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem<'a>),
}

/// What an operation with a JSON body or query parameters may answer about them.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum InputErrors<'a> {
    /// `malformed_request` (not the JSON or parameters the operation takes; serde's message
    /// says why) or `invalid_request` (a value the service refuses).
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem<'a>),
    /// `payload_too_large`: over `server.max_body_bytes` (the message names the limit).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem<'a>),
}

/// `not_found` (admin), `unknown_user` or `unknown_connector` (gateway).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum NotFound<'a> {
    /// No such resource.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem<'a>),
}

/// `conflict` (admin: it exists already; a config-declared key) or `consent_required` with
/// `consent_url` (vend).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Conflict<'a> {
    /// The request clashes with the current state.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem<'a>),
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "auth-broker admin and gateway API"),
    paths(
        gateway::token,
        gateway::authorize,
        gateway::entitlements,
        gateway::events,
        admin::list_connectors,
        admin::create_connector,
        admin::get_connector,
        admin::put_connector,
        admin::delete_connector,
        admin::list_grants,
        admin::create_grant,
        admin::delete_grant,
        admin::credentials::create_gateway,
        admin::credentials::list_gateways,
        admin::credentials::revoke_gateway,
        admin::credentials::create_resource_credential,
        admin::credentials::list_resource_credentials,
        admin::credentials::revoke_resource_credential,
        admin::get_user,
        admin::revoke_user,
        admin::lock_user,
        admin::unlock_user,
        admin::offboarding,
        admin::audit,
    ),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// The two bearer credentials: the org's admin key (or an admin session) for `/admin/v1`,
/// a gateway key for `/internal/v1`.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("admin_key", "An admin key of the path's org"),
            (
                "gateway_key",
                "A gateway key bound to the org named in the request",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// The document as served (built once).
static DOCUMENT: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    upstream::add_rules(&mut doc);
    doc
});

/// The document as JSON.
pub fn document_json() -> &'static serde_json::Value {
    &DOCUMENT
}

/// `GET /admin/v1/openapi.json`.
pub async fn document() -> Json<&'static serde_json::Value> {
    Json(&DOCUMENT)
}
