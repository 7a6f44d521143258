//! The broker's ES256 signing keys, its JWKS and the compact JWTs it issues and verifies.
//!
//! The broker acts as an authorization server (RFC 9068 access tokens for `broker_jwt`
//! connectors, ID-JAG and RFC 8693 subject assertions), so it signs JWTs and publishes the public
//! halves in each org's JWKS (`/orgs/{org}/jwks.json`). Keys are parsed once and reused for
//! every signature (re-parsing per call costs more than the signature itself). Verification is
//! deliberately narrow: ES256 only, key chosen by `kid` from a caller-supplied set, never from
//! the token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::Signature;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use p256::{EncodedPoint, FieldBytes};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// The only JWS algorithm the broker signs with or accepts.
const ALG: &str = "ES256";
/// Longest compact token `verify_jwt` will look at; checked before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest algorithm name echoed back in an error.
const MAX_ALG_ECHO: usize = 32;

/// Why a key could not be loaded or a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not a well-formed compact JWS with JSON header and claims (the message says which part).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than ES256 (including `none` and HMAC/RSA).
    #[error("unsupported JWS algorithm `{0}`")]
    UnsupportedAlg(String),
    /// The header has no `kid`, or one that none of the trusted keys carries.
    #[error("unknown or missing key id")]
    UnknownKid,
    /// The signature is not a valid ES256 signature by the key named in the header.
    #[error("bad signature")]
    BadSignature,
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
        VerifyingKey {
            kid: self.kid.clone(),
            key: *self.key.verifying_key(),
        }
    }

    /// Signs a compact JWS: header {"alg":"ES256","typ":typ,"kid":kid}, payload = claims JSON.
    pub fn sign_jwt(&self, typ: &str, claims: &Value) -> String {
        // `Value`'s Display escapes strings as JSON, so the header is valid for any typ/kid.
        let header = format!(
            r#"{{"alg":"{ALG}","typ":{},"kid":{}}}"#,
            Value::from(typ),
            Value::from(self.kid.as_str())
        );
        let payload = claims.to_string();

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
        token
    }
}

/// A public key that verifies tokens the broker issued.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    key: p256::ecdsa::VerifyingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// The key id tokens name to select this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK: {"kty":"EC","crv":"P-256","x","y","kid","use":"sig","alg":"ES256"}.
    pub fn public_jwk(&self) -> Value {
        let point = self.key.to_encoded_point(false);
        // A verifying key is never the identity point, so its uncompressed encoding always
        // carries both affine coordinates.
        let x = point.x().expect("uncompressed point has x");
        let y = point.y().expect("uncompressed point has y");
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "kid": self.kid,
            "use": "sig",
            "alg": ALG,
        })
    }

    /// Reads a public JWK (e.g. a JWKS entry of another broker replica or a rotated-out key).
    /// Private members (`d`) are refused so secrets are not mistaken for public keys.
    pub fn from_jwk(v: &Value) -> Result<Self, JwtError> {
        let invalid = |m: &str| JwtError::InvalidKey(m.to_owned());
        let obj = v
            .as_object()
            .ok_or_else(|| invalid("JWK is not a JSON object"))?;
        let member = |name: &str| obj.get(name).and_then(Value::as_str);
        if member("kty") != Some("EC") {
            return Err(invalid("kty must be EC"));
        }
        if member("crv") != Some("P-256") {
            return Err(invalid("crv must be P-256"));
        }
        if obj.get("alg").is_some_and(|a| a.as_str() != Some(ALG)) {
            return Err(invalid("alg must be ES256"));
        }
        if obj.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            return Err(invalid("use must be sig"));
        }
        if obj.contains_key("d") {
            return Err(invalid("JWK contains private key material"));
        }
        let kid = member("kid").ok_or_else(|| invalid("kid is missing"))?;
        let coordinate = |name: &str| -> Result<FieldBytes, JwtError> {
            let text = member(name).ok_or_else(|| invalid(&format!("{name} is missing")))?;
            let bytes = URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| invalid(&format!("{name} is not base64url")))?;
            let bytes = <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| invalid(&format!("{name} must be 32 bytes")))?;
            Ok(FieldBytes::from(bytes))
        };
        let (x, y) = (coordinate("x")?, coordinate("y")?);
        let point = EncodedPoint::from_affine_coordinates(&x, &y, false);
        let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
            .map_err(|_| invalid("point is not on P-256"))?;
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }
}

/// The JWKS document for a set of public keys, served per org at `/orgs/{org}/jwks.json`.
pub fn jwks(keys: &[VerifyingKey]) -> Value {
    json!({ "keys": keys.iter().map(VerifyingKey::public_jwk).collect::<Vec<_>>() })
}

/// Verifies a compact JWS signed by one of `keys` and returns (header, claims), for
/// introspection and for checking the broker's own assertions.
///
/// Only ES256 is accepted; `alg: none`, HS*, RS*, a `crit` header, and a missing or unknown
/// `kid` are errors. The signature is checked before the claims are parsed. Time claims: `exp`
/// is required and must be > `now_unix - leeway_secs`; `nbf` and `iat`, if present, must be
/// <= `now_unix + leeway_secs`. The caller checks `typ`, `iss`, `aud` and the rest.
pub fn verify_jwt(
    token: &str,
    keys: &[VerifyingKey],
    now_unix: i64,
    leeway_secs: i64,
) -> Result<(Value, Value), JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("token exceeds 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts"));
    };

    let header = decode_json_object(header_b64, "header")?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == ALG => {}
        Some(Value::String(alg)) => return Err(JwtError::UnsupportedAlg(truncate(alg))),
        Some(_) => return Err(malformed("header alg is not a string")),
        None => return Err(malformed("header has no alg")),
    }
    // RFC 7515 §4.1.11: extensions marked critical must be understood; the broker knows none.
    if header.contains_key("crit") {
        return Err(malformed("unsupported crit header"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwtError::UnknownKid)?;
    let mut candidates = keys.iter().filter(|k| k.kid == kid).peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::UnknownKid);
    }

    // JWS ES256 signatures are the fixed 64-byte r||s; DER or any other length is refused.
    // The broker signs in low-S form and base64url decoding is strict, so a token has exactly
    // one valid encoding: a re-encoded twin (high S, padding, stray bits) cannot slip past a
    // revocation list or replay cache keyed on the token's hash.
    let mut sig_bytes = [0u8; 64];
    let signature = match URL_SAFE_NO_PAD.decode_slice(signature_b64, &mut sig_bytes[..]) {
        Ok(64) => Signature::from_slice(&sig_bytes).map_err(|_| JwtError::BadSignature)?,
        _ => return Err(JwtError::BadSignature),
    };
    if signature.normalize_s().is_some() {
        return Err(JwtError::BadSignature);
    }
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !candidates.any(|k| k.key.verify(signing_input, &signature).is_ok()) {
        return Err(JwtError::BadSignature);
    }

    let claims = decode_json_object(payload_b64, "payload")?;
    check_times(&claims, now_unix, leeway_secs)?;
    Ok((Value::Object(header), Value::Object(claims)))
}

/// Applies the RFC 7519 time claims: `exp` required, `nbf` and `iat` optional.
fn check_times(claims: &Map<String, Value>, now: i64, leeway: i64) -> Result<(), JwtError> {
    // Fractional seconds round toward "invalid": `exp` down, `nbf`/`iat` up.
    let exp =
        numeric_date(claims, "exp", f64::floor)?.ok_or_else(|| malformed("missing exp claim"))?;
    if exp <= now.saturating_sub(leeway) {
        return Err(JwtError::Expired);
    }
    for name in ["nbf", "iat"] {
        if let Some(t) = numeric_date(claims, name, f64::ceil)?
            && t > now.saturating_add(leeway)
        {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(())
}

/// Reads a NumericDate claim (seconds, possibly fractional, per RFC 7519 §2), rounding a
/// fractional value to whole seconds with `round`.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
    round: fn(f64) -> f64,
) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                // `as` saturates for values beyond i64, which is the right ordering for dates.
                Ok(Some(round(f) as i64))
            } else {
                Err(malformed(&format!("{name} is not a NumericDate")))
            }
        }
        Some(_) => Err(malformed(&format!("{name} is not a NumericDate"))),
    }
}

/// Decodes one base64url part and parses it as a JSON object.
fn decode_json_object(part: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(&format!("{what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(&format!("{what} is not a JSON object"))),
        Err(_) => Err(malformed(&format!("{what} is not JSON"))),
    }
}

/// Shorthand for a [`JwtError::Malformed`].
fn malformed(msg: &str) -> JwtError {
    JwtError::Malformed(msg.to_owned())
}

/// Bounds an attacker-chosen string before it goes into an error (and from there into logs).
fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_ALG_ECHO) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests;
