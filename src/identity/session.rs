//! A signed-in browser's session, as stored (sealed) in the ephemeral store.

use serde::{Deserialize, Serialize};

/// A session: who, through which identity, with what the sign-in asserted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The org signed in to.
    pub org: String,
    /// The broker user.
    pub user_id: String,
    /// The IdP issuer.
    pub issuer: String,
    /// The subject at that issuer.
    pub subject: String,
    /// `name` from the ID token.
    pub name: Option<String>,
    /// Groups the ID token carried.
    pub groups: Vec<String>,
    /// The IdP left groups out (too many).
    pub groups_overage: bool,
    /// When it started.
    pub created_ms: i64,
    /// When it ends.
    pub expires_ms: i64,
}
