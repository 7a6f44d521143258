//! Use cases that orchestrate the domain and its ports. Handlers call exactly one of these.

pub mod access;
pub mod admin;
pub mod audit_sink;
pub mod bootstrap;
pub mod credentials;
pub mod gateway;
pub mod introspection;
pub(crate) mod lock;
pub mod provisioning;
pub mod rotation;
pub mod tokens;
pub mod upstream;
pub mod vend;
