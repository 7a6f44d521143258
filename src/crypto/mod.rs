//! Cryptographic helpers: hashing and constant-time checking of bearer credentials.

pub mod secret;
