//! Cryptography: bearer credential hashing, AES-256-GCM sealing of stored tokens, and the
//! broker's ES256 signing keys.

pub mod seal;
pub mod secret;
pub mod signing;
