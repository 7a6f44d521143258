//! What a vend hands out: the token with the epoch it was issued under and the facts the
//! audit record names, shared by every warm vend that serves it; [`TokenResponse`] is the
//! 200 body (CONTRACT.md) built from borrows of it. The token is wiped when the last copy is
//! dropped.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::super::tokens::TokenRecord;

/// A token as served: its response body and what the audit records about it.
pub struct Served {
    /// The token.
    access_token: Zeroizing<String>,
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

/// The 200 body of `POST /internal/v1/token` (CONTRACT.md), serialised from borrows.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenResponse<'a> {
    /// The token.
    pub access_token: &'a str,
    /// Always `Bearer`.
    #[schema(value_type = String, pattern = "^Bearer$")]
    pub token_type: &'static str,
    /// Expiry, RFC 3339.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Scopes the token carries.
    pub scopes: &'a [String],
    /// The connector it is for.
    pub connector: &'a str,
    /// The user it was minted for.
    pub user_id: &'a str,
    /// The user's revocation epoch the token was issued under (only grows).
    pub epoch: u64,
}

impl Served {
    /// The served form of `rec`, minted for `user_id` on `connector` under `epoch`.
    pub fn new(rec: &TokenRecord, connector: &str, user_id: &str, epoch: u64) -> Self {
        Self {
            access_token: Zeroizing::new(rec.access_token.clone()),
            expires_at: rec.expires_at,
            scopes: rec.scopes.clone(),
            connector: connector.to_string(),
            user_id: user_id.to_string(),
            jti: rec.jti.clone(),
            epoch,
        }
    }

    /// The 200 body.
    pub fn response(&self) -> TokenResponse<'_> {
        TokenResponse {
            access_token: &self.access_token,
            token_type: "Bearer",
            expires_at: crate::domain::clock::rfc3339(self.expires_at * 1000),
            scopes: &self.scopes,
            connector: &self.connector,
            user_id: &self.user_id,
            epoch: self.epoch,
        }
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
            asked: None,
        };
        let s = Served::new(&rec, "github", "u-1", 1_796_658_584_712_817);
        let v = serde_json::to_value(s.response()).unwrap();
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
