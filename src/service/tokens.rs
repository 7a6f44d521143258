//! The broker's own tokens: the sealed token record kept in the vault, and RFC 9068 JWT
//! access tokens minted for `broker_jwt` connectors with the broker's ES256 keys.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crypto::seal::{Aad, KeyRing, SealError};
use crate::crypto::signing::{SigningKey, VerifyingKey};
use crate::domain::connector::Connector;

/// What the vault holds (sealed) for one user, connector and scope set.
#[derive(Serialize, Deserialize)]
pub struct TokenRecord {
    /// The access token itself.
    pub access_token: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Scopes the token carries.
    pub scopes: Vec<String>,
    /// Token id (`jti`).
    pub jti: String,
    /// When it was minted, Unix seconds.
    pub minted_at: i64,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Drop for TokenRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
    }
}

/// Seals a record under the active key, bound to its owner and epoch.
pub fn seal(ring: &KeyRing, rec: &TokenRecord, aad: &Aad<'_>) -> Vec<u8> {
    let mut plain = zeroize::Zeroizing::new(serde_json::to_vec(rec).unwrap_or_default());
    let out = ring.seal(&plain, aad);
    use zeroize::Zeroize;
    plain.zeroize();
    out
}

/// Opens a sealed record; any mismatch of owner, epoch or key is an error, never a token.
pub fn open(ring: &KeyRing, sealed: &[u8], aad: &Aad<'_>) -> Result<TokenRecord, SealError> {
    let plain = ring.open(sealed, aad)?;
    serde_json::from_slice(&plain).map_err(|_| SealError::Malformed)
}

/// The broker's signing keys: one active, older ones still published for verification.
pub struct Signer {
    active: SigningKey,
    published: Vec<VerifyingKey>,
    issuer: String,
}

impl Signer {
    /// Builds a signer; `previous` keys stay in the JWKS until their tokens have expired.
    pub fn new(active: SigningKey, previous: Vec<VerifyingKey>, issuer: String) -> Self {
        let mut published = vec![active.verifying_key()];
        published.extend(previous);
        Self {
            active,
            published,
            issuer,
        }
    }

    /// `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Keys to publish at `/.well-known/jwks.json` and to verify with.
    pub fn verifying_keys(&self) -> &[VerifyingKey] {
        &self.published
    }

    /// Mints an RFC 9068 JWT access token for a user and connector.
    pub fn mint(&self, grant: &MintInput<'_>, now: i64) -> TokenRecord {
        let jti = uuid::Uuid::new_v4().to_string();
        let exp = now + grant.ttl_secs as i64;
        let claims = json!({
            "iss": self.issuer,
            "sub": grant.user_id,
            "aud": grant.connector.audience,
            "client_id": grant.client_id,
            "scope": grant.scopes.join(" "),
            "jti": jti,
            "iat": now,
            "exp": exp,
            "ab_org": grant.org,
            "ab_con": grant.connector.id,
            "ab_ep": grant.epoch,
        });
        TokenRecord {
            access_token: self.active.sign_jwt("at+jwt", &claims),
            expires_at: exp,
            scopes: grant.scopes.to_vec(),
            jti,
            minted_at: now,
        }
    }
}

/// What a minted token is about.
pub struct MintInput<'a> {
    /// The tenant.
    pub org: &'a str,
    /// The user (`sub`).
    pub user_id: &'a str,
    /// The connector (its audience becomes `aud`).
    pub connector: &'a Connector,
    /// The OAuth client the token is issued to (the gateway credential).
    pub client_id: &'a str,
    /// Scopes, sorted.
    pub scopes: &'a [String],
    /// The user's epoch when minted; introspection compares it.
    pub epoch: u64,
    /// Lifetime.
    pub ttl_secs: u64,
}
