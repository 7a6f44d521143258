//! SCIM errors (RFC 7644 §3.12): what kind of failure, an optional `scimType` and a human
//! detail. The HTTP layer (`http::error`, the one error table) decides the status of each kind
//! and renders it with the `urn:ietf:params:scim:api:messages:2.0:Error` schema.

use std::fmt;

/// The `scimType` keywords of RFC 7644 §3.12 that the broker emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    /// The filter syntax was invalid or the attribute is unsupported.
    InvalidFilter,
    /// The filter yields more results than the server is willing to process.
    TooMany,
    /// A value violates a uniqueness constraint (e.g. `userName`).
    Uniqueness,
    /// The attempted modification is not compatible with the attribute's mutability.
    Mutability,
    /// The request body was not parsable or violated the schema structurally.
    InvalidSyntax,
    /// The PATCH `path` attribute was invalid or malformed.
    InvalidPath,
    /// The PATCH `path` did not yield an attribute or value to operate on.
    NoTarget,
    /// A required value was missing or a value was not compatible with the schema.
    InvalidValue,
    /// The requested SCIM protocol version is not supported.
    InvalidVers,
    /// The request cannot be completed because of sensitive information in the URI.
    Sensitive,
}

impl ScimType {
    /// The keyword as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

/// What kind of failure a SCIM error is; `http::error` maps each to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimErrorKind {
    /// The request is wrong (a `scimType` says how).
    BadRequest,
    /// No or a wrong bearer token.
    Unauthenticated,
    /// No such resource in this org.
    NotFound,
    /// A uniqueness clash, or a resource changing too fast to apply the request.
    Conflict,
    /// `If-Match` does not match the current version.
    PreconditionFailed,
    /// The body is larger than the server accepts.
    PayloadTooLarge,
    /// An optional SCIM feature the broker does not offer.
    NotImplemented,
    /// A store did not answer: fail closed, the client retries.
    Unavailable,
    /// A bug or broken invariant (the detail is logged, not shown).
    Internal,
}

/// One SCIM error response: kind, optional `scimType`, and a detail safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// What kind of failure (the HTTP status follows from it).
    pub kind: ScimErrorKind,
    /// RFC 7644 `scimType`, present on most 400/409 errors.
    pub scim_type: Option<ScimType>,
    /// Human-readable detail; never contains secrets.
    pub detail: String,
}

impl ScimError {
    /// A 400 with the given `scimType`.
    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self {
            kind: ScimErrorKind::BadRequest,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }
    /// 400 `invalidValue`.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidValue, detail)
    }
    /// 400 `invalidSyntax`.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidSyntax, detail)
    }
    /// 400 `invalidFilter`.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidFilter, detail)
    }
    /// 400 `invalidPath`.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidPath, detail)
    }
    /// 400 `noTarget`.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::NoTarget, detail)
    }
    /// 400 `mutability`.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::Mutability, detail)
    }
    /// 409 `uniqueness`.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self {
            kind: ScimErrorKind::Conflict,
            scim_type: Some(ScimType::Uniqueness),
            detail: detail.into(),
        }
    }
    /// 404 for a resource that does not exist in this org.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::of(ScimErrorKind::NotFound, detail)
    }
    /// 412 when `If-Match` does not match the current version.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::of(ScimErrorKind::PreconditionFailed, detail)
    }
    /// Any other kind, without a `scimType`.
    pub fn of(kind: ScimErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            scim_type: None,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for ScimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scim_type {
            Some(t) => write!(f, "{:?} {}: {}", self.kind, t.as_str(), self.detail),
            None => write!(f, "{:?}: {}", self.kind, self.detail),
        }
    }
}

impl std::error::Error for ScimError {}
