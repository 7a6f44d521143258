//! Use cases that orchestrate the domain and its ports. Handlers call exactly one of these.

pub mod bootstrap;
pub mod provisioning;
