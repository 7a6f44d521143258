//! The integration suite: the real application in-process on port 0, against real PostgreSQL
//! and real SQLite, driven over HTTP exactly as Okta and Entra drive it.

mod support;

mod cli;
mod concurrency;
mod consent_store;
mod converge;
mod entra;
mod errors;
mod faults;
mod gateway;
mod idp;
mod interleavings;
mod issuer;
mod lifecycle;
mod log_capture;
mod migrations;
mod no_secrets;
mod offboarding;
mod oidc;
mod okta;
mod ops;
mod outage;
mod processes;
mod purity;
mod quickstart;
mod redis_fixture;
mod rotation_store;
mod saml;
mod scim_groups;
mod scim_users;
mod store_conformance;
mod surface;
mod tenancy;
mod upstream;
mod vault_conformance;
