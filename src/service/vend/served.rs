//! What a vend hands out: the JSON body of the 200 response (CONTRACT.md), with the epoch
//! the token was issued under, and the facts the audit record names. The body's bytes are
//! shared with the response and wiped when the last copy is dropped.

use std::sync::Arc;

use axum::body::Bytes;
use zeroize::Zeroize;

use super::super::tokens::TokenRecord;

/// A token as served: its response body and what the audit records about it.
pub struct Served {
    /// The JSON body of the 200 response; it carries the token.
    body: Bytes,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Scopes the token carries.
    pub scopes: Vec<String>,
    /// The connector it is for.
    pub connector: String,
    /// The user it was minted for.
    pub user_id: String,
    /// The token's id (`jti`): what the audit log names instead of the token.
    pub jti: String,
    /// The user's epoch the token was issued under.
    pub epoch: u64,
}

/// The 200 body of `POST /internal/v1/token`, serialised straight from borrows.
#[derive(serde::Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_at: String,
    scopes: &'a [String],
    connector: &'a str,
    user_id: &'a str,
    epoch: u64,
}

/// Bytes that are zeroed when the last `Bytes` sharing them is dropped.
struct Wiped(Vec<u8>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Served {
    /// The served form of `rec`, minted for `user_id` on `connector` under `epoch`.
    pub fn new(rec: &TokenRecord, connector: &str, user_id: &str, epoch: u64) -> Self {
        let body = serde_json::to_vec(&TokenResponse {
            access_token: &rec.access_token,
            token_type: "Bearer",
            expires_at: crate::domain::clock::rfc3339(rec.expires_at * 1000),
            scopes: &rec.scopes,
            connector,
            user_id,
            epoch,
        })
        // Serialising strings and numbers into a Vec cannot fail.
        .unwrap_or_default();
        Self {
            body: Bytes::from_owner(Wiped(body)),
            expires_at: rec.expires_at,
            scopes: rec.scopes.clone(),
            connector: connector.to_string(),
            user_id: user_id.to_string(),
            jti: rec.jti.clone(),
            epoch,
        }
    }

    /// The response body (shared, not copied).
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }
}

/// A token handed to a gateway, with how it was obtained.
#[derive(Clone, Debug)]
pub struct Vended {
    /// The token as served (response body and audit facts).
    pub served: Arc<Served>,
    /// Whether it came from the vault (true) or was minted for this request.
    pub cached: bool,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("connector", &self.connector)
            .field("user_id", &self.user_id)
            .field("jti", &self.jti)
            .field("epoch", &self.epoch)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_contract_response_and_debug_hides_the_token() {
        let rec = TokenRecord {
            access_token: "eyJ.secret\"quoted".into(),
            expires_at: 2_000_000_000,
            scopes: vec!["repo:read".into(), "repo:write".into()],
            jti: "j1".into(),
            minted_at: 1_999_999_000,
        };
        let s = Served::new(&rec, "github", "u-1", 1_796_658_584_712_817);
        let v: serde_json::Value = serde_json::from_slice(&s.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "access_token": "eyJ.secret\"quoted",
                "token_type": "Bearer",
                "expires_at": "2033-05-18T03:33:20.000Z",
                "scopes": ["repo:read", "repo:write"],
                "connector": "github",
                "user_id": "u-1",
                "epoch": 1_796_658_584_712_817u64,
            })
        );
        assert!(!format!("{s:?}").contains("secret"));
    }
}
