//! The rules of the broker, free of frameworks and adapters: identifiers, time, the directory
//! (users, groups, memberships and what their changes mean), audit records and the ports that
//! storage adapters implement. No axum, sqlx, redis or HTTP client import belongs here; the
//! test `domain_is_pure` in the integration suite enforces it.

pub mod audit;
pub mod clock;
pub mod connector;
pub mod consent;
pub mod directory;
pub mod error;
pub mod events;
pub mod ids;
pub mod offboarding;
pub mod policy;
pub mod ports;
pub mod rate;
pub mod text;
pub mod upstream;
pub mod vault;

pub use error::StoreError;
pub use ids::{GroupId, OrgId, UserId, valid_org_id};
