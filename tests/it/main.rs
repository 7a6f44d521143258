//! The integration suite: the real application in-process on port 0, against real PostgreSQL
//! and real SQLite, driven over HTTP exactly as Okta and Entra drive it.

mod support;

mod cli;
mod concurrency;
mod entra;
mod errors;
mod faults;
mod gateway;
mod idp;
mod interleavings;
mod issuer;
mod lifecycle;
mod log_capture;
mod no_secrets;
mod offboarding;
mod oidc;
mod okta;
mod ops;
mod outage;
mod processes;
mod purity;
mod redis_fixture;
mod saml;
mod scim_groups;
mod scim_users;
mod store_conformance;
mod surface;
mod tenancy;
mod vault_conformance;
