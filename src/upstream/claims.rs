//! What the broker signs for an upstream, and the protocol names it sends: the claim sets of
//! an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant), of an RFC 8693 subject token and
//! of an RFC 7523 §2.2 client assertion (`private_key_jwt`), plus PKCE and `state` values.
//!
//! Pure builders: the caller signs with the org's key (`SigningKey::sign_jwt(typ, &claims)`)
//! so this module never holds a private key. Invariants: every assertion has a fresh random
//! `jti` and `iat`/`exp` in Unix seconds from the caller's clock; PKCE is always S256 with a
//! 43-character verifier; randomness comes from `oauth2`'s generators (the same crate the
//! sign-in flow's `openidconnect` is built on), not from a second copy here.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::clock::Millis;

/// `grant_type` of RFC 7523 §2.1 (an ID-JAG in `assertion`).
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `grant_type` of RFC 8693 token exchange.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `client_assertion_type` of `private_key_jwt` (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 8693 token type of a JWT subject token (what [`SubjectTokenClaims`] signs into).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an OpenID Connect ID token.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// RFC 8693 token type of an access token (the usual `requested_token_type`).
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 token type of an ID-JAG (when an IdP issues one by token exchange).
pub const TOKEN_TYPE_ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// JWS `typ` of an ID-JAG; the upstream refuses any other.
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// JWS `typ` of subject tokens and client assertions.
pub const JWT_TYP: &str = "JWT";

/// The registered claims every assertion the broker signs carries (RFC 7519 §4.1); on its
/// own, the claim set of a `private_key_jwt` client assertion (RFC 7523 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtClaims {
    /// Who signs: the org's issuer, or the client id for a client assertion.
    pub iss: String,
    /// Who it is about: the user, or the client id again for a client assertion.
    pub sub: String,
    /// The upstream AS's issuer, or its token endpoint URL for a client assertion.
    pub aud: String,
    /// Unique per assertion (upstreams refuse replays).
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

impl JwtClaims {
    /// Claims issued now (`now_ms`, the caller's clock) and living `ttl`, with a fresh `jti`.
    pub fn new(iss: &str, sub: &str, aud: &str, now_ms: Millis, ttl: Duration) -> Self {
        let iat = now_ms.div_euclid(1000);
        Self {
            iss: iss.into(),
            sub: sub.into(),
            aud: aud.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat,
            exp: iat.saturating_add(ttl.as_secs() as i64),
        }
    }
}

/// The claim set of a `private_key_jwt` client assertion: `iss` = `sub` = client id.
pub type ClientAssertionClaims = JwtClaims;

/// The claims of an ID-JAG (Identity Assertion JWT Authorization Grant) that the broker, as
/// the org's issuer, signs with `typ` [`ID_JAG_TYP`] and redeems at the upstream with
/// [`super::TokenGrant::JwtBearer`]: `aud` is the upstream AS's issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdJagClaims {
    /// `iss`, `sub` (the user as the upstream knows them), `aud`, `jti`, `iat`, `exp`.
    #[serde(flatten)]
    pub jwt: JwtClaims,
    /// The broker's client id at the upstream (which must authenticate as it).
    pub client_id: String,
    /// Space-separated scopes granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8707 resource the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// The claims of an RFC 8693 subject token (type [`TOKEN_TYPE_JWT`], `typ` [`JWT_TYP`]) that
/// the broker signs for [`super::TokenGrant::TokenExchange`]: `aud` is the upstream AS's issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectTokenClaims {
    /// `iss`, `sub` (the user), `aud`, `jti`, `iat`, `exp`.
    #[serde(flatten)]
    pub jwt: JwtClaims,
    /// Space-separated scopes the subject may be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The user's email, for upstreams that map accounts by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The claims of a client assertion for `client_id` at `aud` (the token endpoint URL, which
/// [`super::ClientAuthn::assertion`] receives), to sign with `typ` [`JWT_TYP`].
pub fn client_assertion_claims(
    client_id: &str,
    aud: &str,
    now_ms: Millis,
    ttl: Duration,
) -> ClientAssertionClaims {
    JwtClaims::new(client_id, client_id, aud, now_ms, ttl)
}

/// A PKCE pair (RFC 7636): the verifier to keep with the pending consent, and its S256
/// challenge for the authorization URL.
pub fn pkce_pair() -> (SecretString, String) {
    let (challenge, verifier) = openidconnect::PkceCodeChallenge::new_random_sha256();
    (
        SecretString::from(verifier.into_secret()),
        challenge.as_str().to_string(),
    )
}

/// An unguessable `state` for an authorization request (128 bits, URL-safe).
pub fn random_state() -> String {
    openidconnect::CsrfToken::new_random().into_secret()
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use secrecy::ExposeSecret;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::*;

    const NOW_MS: Millis = 1_763_716_500_999;

    #[test]
    fn id_jag_claims() {
        let mut c = IdJagClaims {
            jwt: JwtClaims::new(
                "https://broker/orgs/acme",
                "alice",
                "https://as.example",
                NOW_MS,
                Duration::from_secs(300),
            ),
            client_id: "broker".into(),
            scope: None,
            resource: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["iat"], 1_763_716_500);
        assert_eq!(v["exp"], 1_763_716_800);
        assert!(!v["jti"].as_str().unwrap().is_empty());
        assert_eq!(
            v.as_object().unwrap().len(),
            7,
            "no scope/resource when unset: {v}"
        );
        c.scope = Some("read write".into());
        c.resource = Some("https://api.example".into());
        let v = serde_json::to_value(&c).unwrap();
        let expected = json!({
            "iss": "https://broker/orgs/acme", "sub": "alice", "aud": "https://as.example",
            "client_id": "broker", "jti": c.jwt.jti, "iat": 1_763_716_500_i64,
            "exp": 1_763_716_800_i64, "scope": "read write", "resource": "https://api.example",
        });
        assert_eq!(v, expected);
        assert_eq!(ID_JAG_TYP, "oauth-id-jag+jwt");
    }

    #[test]
    fn subject_token_claims_round_trip_flat() {
        let jwt = JwtClaims::new(
            "iss",
            "alice",
            "https://as",
            NOW_MS,
            Duration::from_secs(60),
        );
        let mut c = SubjectTokenClaims {
            jwt,
            scope: None,
            email: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["aud", "exp", "iat", "iss", "jti", "sub"]);
        assert_eq!(v["exp"].as_i64().unwrap() - v["iat"].as_i64().unwrap(), 60);
        c.email = Some("alice@example.com".into());
        let back: SubjectTokenClaims =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(TOKEN_TYPE_JWT, "urn:ietf:params:oauth:token-type:jwt");
    }

    #[test]
    fn client_assertion_claims_name_the_client_twice() {
        let a = client_assertion_claims(
            "broker",
            "https://as/token",
            NOW_MS,
            Duration::from_secs(60),
        );
        let b = client_assertion_claims(
            "broker",
            "https://as/token",
            NOW_MS,
            Duration::from_secs(60),
        );
        assert_eq!((a.iss.as_str(), a.sub.as_str()), ("broker", "broker"));
        assert_eq!(a.aud, "https://as/token");
        assert_eq!(a.exp - a.iat, 60);
        assert_ne!(a.jti, b.jti, "a fresh jti each time");
    }

    #[test]
    fn pkce_is_s256_of_a_long_verifier_and_state_is_unguessable() {
        let (verifier, challenge) = pkce_pair();
        let v = verifier.expose_secret();
        assert!(v.len() >= 43, "{}", v.len());
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(v));
        assert_eq!(challenge, expected);
        assert_ne!(pkce_pair().1, challenge);
        let s = random_state();
        assert!(
            s.len() >= 22
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(random_state(), s);
    }
}
