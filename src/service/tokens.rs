//! The broker's own tokens: the sealed token record kept in the vault, and RFC 9068 JWT
//! access tokens minted for `broker_jwt` connectors, each org signing as its own issuer with
//! its own ES256 keys.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::crypto::seal::{Aad, KeyRing, SealError};
use crate::crypto::signing::{SigningKey, VerifyingKey, verify_jwt};
use crate::domain::connector::Connector;
use crate::keys::OrgKeys;

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

/// Each org's issuer: its `iss`, its active key and the keys its JWKS publishes.
struct Issuer {
    iss: String,
    active: SigningKey,
    published: Vec<VerifyingKey>,
}

/// The broker's issuers, one per org (`iss` = `{base}/orgs/{org}`), each with its own keys:
/// one active, older ones still published for verification. A token of one org never
/// verifies with another org's keys, so `iss` and the key set pin the org.
pub struct Signer {
    issuers: HashMap<String, Issuer>,
    /// Signs for an org without keys, which start-up makes impossible (every stored org gets
    /// keys before serving); never published, so what it signs verifies nowhere.
    unpublished: SigningKey,
}

impl Signer {
    /// `iss` of an org's tokens, from the issuer base (`broker.issuer`, else the public URL).
    pub fn issuer_url(base: &str, org: &str) -> String {
        format!("{}/orgs/{org}", base.trim_end_matches('/'))
    }

    /// Builds a signer over every org's keys; retired keys stay published until their tokens
    /// have expired.
    pub fn new(base: &str, keys: Vec<OrgKeys>) -> Self {
        let issuers = keys
            .into_iter()
            .map(|k| {
                let mut published = vec![k.active.verifying_key()];
                published.extend(k.previous);
                let issuer = Issuer {
                    iss: Self::issuer_url(base, k.org.as_str()),
                    active: k.active,
                    published,
                };
                (k.org.to_string(), issuer)
            })
            .collect();
        Self {
            issuers,
            unpublished: SigningKey::generate("ab-unpublished"),
        }
    }

    /// `iss` of the org's tokens, if the org is known.
    pub fn issuer(&self, org: &str) -> Option<&str> {
        self.issuers.get(org).map(|i| i.iss.as_str())
    }

    /// The org's keys, for its JWKS and to verify its tokens with.
    pub fn verifying_keys(&self, org: &str) -> Option<&[VerifyingKey]> {
        self.issuers.get(org).map(|i| i.published.as_slice())
    }

    /// The claims of a token `org` issued: signed by one of the org's keys, in date (with
    /// `leeway_secs`), `iss` the org's issuer and `ab_org` the org. `None` for anything else,
    /// including a valid token of another org.
    pub fn verify(&self, org: &str, token: &str, now: i64, leeway_secs: i64) -> Option<Value> {
        let issuer = self.issuers.get(org)?;
        let (_, claims) = verify_jwt(token, &issuer.published, now, leeway_secs).ok()?;
        (claims.get("iss").and_then(Value::as_str) == Some(issuer.iss.as_str())
            && claims.get("ab_org").and_then(Value::as_str) == Some(org))
        .then_some(claims)
    }

    /// Mints an RFC 9068 JWT access token for a user and connector, as the user's org.
    pub fn mint(&self, grant: &MintInput<'_>, now: i64) -> TokenRecord {
        let (iss, key) = match self.issuers.get(grant.org) {
            Some(i) => (i.iss.as_str(), &i.active),
            None => {
                tracing::error!(org = %grant.org, "no signing key for this org; the token will not verify");
                ("", &self.unpublished)
            }
        };
        let jti = uuid::Uuid::new_v4().to_string();
        let exp = now + grant.ttl_secs as i64;
        let claims = json!({
            "iss": iss,
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
            access_token: key.sign_jwt("at+jwt", &claims),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrgId;
    use crate::domain::connector::{ActionSet, Strategy};

    fn signer() -> Signer {
        let keys = ["acme", "globex"]
            .into_iter()
            .map(|org| OrgKeys {
                org: OrgId::new(org),
                active: SigningKey::generate(&format!("k-{org}")),
                previous: Vec::new(),
            })
            .collect();
        Signer::new("https://broker.example/", keys)
    }

    fn mint(s: &Signer, org: &str) -> TokenRecord {
        let connector = Connector {
            org: OrgId::new(org),
            id: "github".into(),
            display_name: "GitHub".into(),
            strategy: Strategy::BrokerJwt,
            audience: "https://mcp.github.example".into(),
            scopes: vec!["repo:read".into()],
            tools: Default::default(),
            default_actions: ActionSet::ALLOW_ALL,
            enabled: true,
            token_ttl_secs: 0,
        };
        s.mint(
            &MintInput {
                org,
                user_id: "u1",
                connector: &connector,
                client_id: "gateway:test",
                scopes: &["repo:read".to_string()],
                epoch: 1,
                ttl_secs: 600,
            },
            1_000,
        )
    }

    #[test]
    fn each_org_signs_as_its_own_issuer() {
        let s = signer();
        assert_eq!(
            s.issuer("acme"),
            Some("https://broker.example/orgs/acme"),
            "the base's trailing slash is not doubled"
        );
        let t = mint(&s, "acme");
        let claims = s.verify("acme", &t.access_token, 1_000, 0).unwrap();
        assert_eq!(claims["iss"], "https://broker.example/orgs/acme");
        assert_eq!(claims["ab_org"], "acme");
        assert!(
            s.verify("globex", &t.access_token, 1_000, 0).is_none(),
            "another org's issuer never verifies it"
        );
        assert!(s.verify("initech", &t.access_token, 1_000, 0).is_none());
        let acme_kids: Vec<&str> = s
            .verifying_keys("acme")
            .unwrap()
            .iter()
            .map(|k| k.kid())
            .collect();
        assert_eq!(acme_kids, ["k-acme"]);
    }

    #[test]
    fn an_org_without_keys_gets_a_token_nobody_accepts() {
        let s = signer();
        let t = mint(&s, "initech");
        for org in ["acme", "globex", "initech"] {
            assert!(s.verify(org, &t.access_token, 1_000, 0).is_none(), "{org}");
        }
    }
}
