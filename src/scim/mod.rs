//! SCIM 2.0 wire format (RFC 7643/7644): resources, the filter grammar, the PATCH engine
//! (RFC 7644 plus the Okta and Entra dialects), attribute projection and SCIM errors.
//!
//! Everything here is pure: JSON in, JSON out. Persistence and transactions live in
//! `service` and `store`; HTTP lives in `http::scim`.

pub mod error;
pub mod filter;
pub mod normalize;
pub mod patch;
pub mod path;
pub mod project;
pub mod schema;

pub use error::{ScimError, ScimErrorKind, ScimType};

/// The two SCIM resource types the broker serves; many rules (schemas, mutability) differ by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `urn:ietf:params:scim:schemas:core:2.0:User` (with the enterprise extension).
    User,
    /// `urn:ietf:params:scim:schemas:core:2.0:Group`.
    Group,
}

impl ResourceKind {
    /// The SCIM `resourceType` name, also the path segment (`/Users`, `/Groups` minus the `s`).
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }

    /// The core schema URN of this resource type.
    pub fn core_schema(self) -> &'static str {
        match self {
            ResourceKind::User => schema::USER_SCHEMA,
            ResourceKind::Group => schema::GROUP_SCHEMA,
        }
    }

    /// The collection path segment (`Users` / `Groups`).
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "Users",
            ResourceKind::Group => "Groups",
        }
    }
}
