//! The broker's ES256 signing keys, its JWKS and the compact JWTs it issues and verifies.
//!
//! The broker acts as an authorization server (RFC 9068 access tokens for `broker_jwt`
//! connectors), so it signs JWTs and publishes the public halves in each org's JWKS
//! (`/orgs/{org}/jwks.json`). Keys are parsed once and reused for every signature.
//!
//! Verification goes through `jsonwebtoken` into the caller's typed claims, with the algorithm
//! pinned to ES256, the key chosen by `kid` from a caller-supplied set (never from the token),
//! `iss` (and `aud` when the caller has one) checked by `jsonwebtoken::Validation`, and `typ`
//! compared with what the caller expects. JWKs are read and written with `p256`'s `jwk` types.
//! Two checks stay here, each for a stated reason: the time claims (against the caller's
//! clock, see [`verify_jwt`]) and the low-S signature form (see [`SigningKey::sign_jwt`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::JwkEcKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

/// The only JWS algorithm the broker signs with or accepts.
const ALG: &str = "ES256";
/// Longest compact token `verify_jwt` will look at; checked before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a key could not be loaded or a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not a well-formed compact JWS with a JWS header and the expected claims (the message
    /// says which part; it never echoes token content).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names a JWS algorithm other than ES256 (HMAC, RSA, EdDSA, ES384). Names
    /// that are no JWS algorithm at all (`none`) are [`JwtError::Malformed`].
    #[error("unsupported JWS algorithm `{0}`")]
    UnsupportedAlg(String),
    /// The header has no `kid`, or one that none of the trusted keys carries.
    #[error("unknown or missing key id")]
    UnknownKid,
    /// The signature is not a valid low-S ES256 signature by the key named in the header.
    #[error("bad signature")]
    BadSignature,
    /// The header's `typ` is not the one expected (e.g. not `at+jwt` for an access token).
    #[error("unexpected token type")]
    WrongType,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// Key material could not be parsed; the message never contains the key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// An ES256 (P-256) signing key with a key id; parsed once, reused for every signature.
pub struct SigningKey {
    kid: String,
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Creates a fresh key (first start, `keys rotate`), from the process CSPRNG.
    pub fn generate(kid: &str) -> Self {
        loop {
            let bytes = Zeroizing::new(rand::random::<[u8; 32]>());
            // Fails only for zero or values >= the group order: probability about 2^-32 per try.
            if let Ok(key) = p256::ecdsa::SigningKey::from_bytes((&*bytes).into()) {
                return Self {
                    kid: kid.to_owned(),
                    key,
                };
            }
        }
    }

    /// The key id put in every token header and in the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 DER, so it can be stored sealed and reloaded on every replica.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.key
            .to_pkcs8_der()
            // Encoding a valid in-memory P-256 scalar into DER has no failure path besides
            // allocation (which aborts); the `Result` exists for other key types.
            .expect("P-256 key encodes as PKCS#8")
            .to_bytes()
    }

    /// Loads a key stored by [`SigningKey::to_pkcs8_der`].
    pub fn from_pkcs8_der(kid: &str, der: &[u8]) -> Result<Self, JwtError> {
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(der)
            .map_err(|_| JwtError::InvalidKey("not a PKCS#8 P-256 private key".into()))?;
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    /// The public JWK for this key, as published in the JWKS.
    pub fn public_jwk(&self) -> Value {
        self.verifying_key().public_jwk()
    }

    /// The public half, for verifying tokens this key signed and for the JWKS.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::new(&self.kid, &p256::PublicKey::from(self.key.verifying_key()))
    }

    /// Signs a compact JWS: header {"alg":"ES256","typ":typ,"kid":kid}, payload = claims JSON.
    ///
    /// Signed here with the pre-parsed key rather than through `jsonwebtoken::encode`, for two
    /// measured reasons (10 000 RFC 9068 tokens, release build, this 2-CPU machine, three
    /// interleaved rounds): `encode` took 226–247 µs a token against 174–184 µs here (it
    /// re-parses the PKCS#8 key on every call and computes a recovery id it then drops), and
    /// 5 065 of its 10 000 signatures were high-S, which [`verify_jwt`] refuses so that every
    /// token has exactly one valid encoding.
    pub fn sign_jwt<C: Serialize + ?Sized>(
        &self,
        typ: &str,
        claims: &C,
    ) -> Result<String, JwtError> {
        // `Value`'s Display escapes strings as JSON, so the header is valid for any typ/kid.
        let header = format!(
            r#"{{"alg":"{ALG}","typ":{},"kid":{}}}"#,
            Value::from(typ),
            Value::from(self.kid.as_str())
        );
        let payload = serde_json::to_vec(claims)
            .map_err(|_| JwtError::Malformed("claims do not serialize as JSON".into()))?;

        // base64url is 4/3 of the input (plus rounding per part), two dots, an 86-char signature.
        let mut token = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 4 + 2 + 86);
        URL_SAFE_NO_PAD.encode_string(header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);

        let signature: Signature = self.key.sign(token.as_bytes());
        // Low-S form makes every token's encoding unique (see `verify_jwt`).
        let signature = signature.normalize_s().unwrap_or(signature);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

/// A public key that verifies tokens the broker issued: its JWK and the `jsonwebtoken`
/// decoding key built from it once.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    jwk: JwkEcKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A JWKS entry: the EC key members (`kty`, `crv`, `x`, `y`, and `d` if someone put a private
/// key there) as `p256` reads and writes them, plus the JWK parameters the broker uses.
#[derive(Serialize, Deserialize)]
struct PublishedJwk {
    #[serde(flatten)]
    key: JwkEcKey,
    kid: String,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alg: Option<String>,
}

impl VerifyingKey {
    fn new(kid: &str, key: &p256::PublicKey) -> Self {
        Self {
            kid: kid.to_owned(),
            jwk: key.to_jwk(),
            decoding: decoding_key(key),
        }
    }

    /// The key id tokens name to select this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK: {"kty":"EC","crv":"P-256","x","y","kid","use":"sig","alg":"ES256"}.
    pub fn public_jwk(&self) -> Value {
        let published = PublishedJwk {
            key: self.jwk.clone(),
            kid: self.kid.clone(),
            key_use: Some("sig".into()),
            alg: Some(ALG.into()),
        };
        // A struct of strings always serializes; `Value::Null` is unreachable.
        serde_json::to_value(published).unwrap_or(Value::Null)
    }

    /// Reads a public JWK (e.g. a JWKS entry of another broker replica or a rotated-out key).
    /// Private members (`d`) are refused so secrets are not mistaken for public keys.
    pub fn from_jwk(v: &Value) -> Result<Self, JwtError> {
        let invalid = |m: &str| JwtError::InvalidKey(m.to_owned());
        let jwk = PublishedJwk::deserialize(v)
            .map_err(|_| invalid("not an EC JWK with kty, crv, x, y and kid"))?;
        if jwk.alg.as_deref().is_some_and(|a| a != ALG) {
            return Err(invalid("alg must be ES256"));
        }
        if jwk.key_use.as_deref().is_some_and(|u| u != "sig") {
            return Err(invalid("use must be sig"));
        }
        if jwk.key.is_keypair() {
            return Err(invalid("JWK contains private key material"));
        }
        // Checks `crv`, the coordinates' encoding and length, and that the point is on P-256.
        let key = jwk
            .key
            .to_public_key::<p256::NistP256>()
            .map_err(|_| invalid("not a point on P-256"))?;
        Ok(Self::new(&jwk.kid, &key))
    }
}

/// The `jsonwebtoken` key for a P-256 public key. Its EC key bytes are the SEC1 uncompressed
/// point 0x04 || x || y (what `DecodingKey::from_ec_components` assembles from a JWK's
/// coordinates and what its ES256 verifier parses), so the point is handed over directly.
fn decoding_key(key: &p256::PublicKey) -> DecodingKey {
    DecodingKey::from_ec_der(key.to_encoded_point(false).as_bytes())
}

/// The JWKS document for a set of public keys, served per org at `/orgs/{org}/jwks.json`.
pub fn jwks(keys: &[VerifyingKey]) -> Value {
    serde_json::json!({ "keys": keys.iter().map(VerifyingKey::public_jwk).collect::<Vec<_>>() })
}

/// The RFC 7519 time claims of a claims type, whole seconds.
pub trait TimeClaims {
    /// `exp`, required.
    fn exp(&self) -> i64;
    /// `nbf`, if the token has one.
    fn nbf(&self) -> Option<i64> {
        None
    }
    /// `iat`, if the token has one.
    fn iat(&self) -> Option<i64> {
        None
    }
}

/// What a token must be, besides signed by one of the trusted keys.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The header's `typ` (`at+jwt` for RFC 9068 access tokens).
    pub typ: &'a str,
    /// `iss`.
    pub iss: &'a str,
    /// `aud`, when the caller is one audience; `None` accepts any audience.
    pub aud: Option<&'a str>,
    /// Now, Unix seconds, from the caller's clock.
    pub now: i64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: i64,
}

/// Verifies a compact JWS signed by one of `keys` and returns its claims as `C`.
///
/// `jsonwebtoken` parses the header, pins the algorithm to ES256 (`alg: none`, HS*, RS*, PS*,
/// EdDSA and a key of another family are errors), refuses unknown `crit` extensions, checks
/// the signature before the claims are parsed, and checks `iss`, `aud` and that `exp` is
/// present. Kept here: the `kid` look-up; `typ`; the low-S rule; and the time claims, because
/// `jsonwebtoken::Validation` reads the system clock (`get_current_timestamp`) with no way to
/// pass the caller's, and the broker's clock is a parameter that tests control. Time rules:
/// `exp` must be > `now - leeway` (RFC 7519 §4.1.4: an `exp` equal to now has expired, which
/// `jsonwebtoken` would still accept); `nbf` and `iat`, if present, must be <= `now + leeway`.
pub fn verify_jwt<C: DeserializeOwned + TimeClaims>(
    token: &str,
    keys: &[VerifyingKey],
    expected: &Expected<'_>,
) -> Result<C, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("token exceeds 16 KiB"));
    }
    let header = jsonwebtoken::decode_header(token).map_err(refusal)?;
    if header.alg != Algorithm::ES256 {
        return Err(JwtError::UnsupportedAlg(format!("{:?}", header.alg)));
    }
    let kid = header.kid.as_deref().ok_or(JwtError::UnknownKid)?;
    let mut candidates = keys.iter().filter(|k| k.kid == kid).peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::UnknownKid);
    }
    require_low_s(token)?;

    let mut validation = Validation::new(Algorithm::ES256);
    // Time claims are checked below against the caller's clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[expected.iss]);
    match expected.aud {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }

    let mut last = JwtError::BadSignature;
    for key in candidates {
        match jsonwebtoken::decode::<C>(token, &key.decoding, &validation) {
            Ok(data) => {
                if data.header.typ.as_deref() != Some(expected.typ) {
                    return Err(JwtError::WrongType);
                }
                check_times(&data.claims, expected.now, expected.leeway_secs)?;
                return Ok(data.claims);
            }
            // A rotation overlap may give two keys one `kid`: try the next.
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                last = JwtError::BadSignature;
            }
            Err(e) => return Err(refusal(e)),
        }
    }
    Err(last)
}

/// JWS ES256 signatures are the fixed 64-byte r||s (DER or any other length is refused by
/// `jsonwebtoken`), and (r, n - s) verifies as well as (r, s). The broker signs in low-S form
/// and base64url decoding is strict, so refusing high S gives a token exactly one valid
/// encoding: a re-encoded twin cannot slip past a deny list or cache keyed on the token.
/// `jsonwebtoken`'s ES256 verifier accepts both forms, hence this check.
fn require_low_s(token: &str) -> Result<(), JwtError> {
    let encoded = token.rsplit('.').next().unwrap_or_default();
    let mut bytes = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes[..]) {
        Ok(64) => match Signature::from_slice(&bytes) {
            Ok(sig) if sig.normalize_s().is_none() => Ok(()),
            _ => Err(JwtError::BadSignature),
        },
        _ => Err(JwtError::BadSignature),
    }
}

/// Applies the RFC 7519 time claims: `exp` required, `nbf` and `iat` optional.
fn check_times(claims: &impl TimeClaims, now: i64, leeway: i64) -> Result<(), JwtError> {
    if claims.exp() <= now.saturating_sub(leeway) {
        return Err(JwtError::Expired);
    }
    let not_before = now.saturating_add(leeway);
    if [claims.nbf(), claims.iat()]
        .into_iter()
        .flatten()
        .any(|t| t > not_before)
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

/// Maps a `jsonwebtoken` refusal to the broker's reasons, without echoing token content
/// (a JSON error message would quote the attacker's text).
fn refusal(e: jsonwebtoken::errors::Error) -> JwtError {
    match e.kind() {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            JwtError::UnsupportedAlg("not ES256".into())
        }
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidKeyFormat => {
            JwtError::InvalidKey("not a P-256 public key".into())
        }
        ErrorKind::MissingRequiredClaim(c) => malformed(&format!("missing {c} claim")),
        ErrorKind::InvalidClaimFormat(c) => malformed(&format!("{c} has the wrong type")),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) => malformed("a part is not base64url"),
        ErrorKind::Json(_) => malformed("header or claims are not the expected JSON"),
        _ => malformed("not a compact JWS"),
    }
}

/// Shorthand for a [`JwtError::Malformed`].
fn malformed(msg: &str) -> JwtError {
    JwtError::Malformed(msg.to_owned())
}

#[cfg(test)]
mod tests;
