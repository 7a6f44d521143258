//! Tests for the broker's ES256 keys, JWKS and JWT verification, including hostile tokens.

use super::*;
use p256::elliptic_curve::PrimeField;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{Map, json};
use sha2::{Digest, Sha256};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://broker.example/orgs/acme";
const AUD: &str = "https://mcp.github.example";
const TYP: &str = "at+jwt";

/// Claims as a test reads them: the time claims typed, the rest as sent.
#[derive(Debug, PartialEq, Deserialize)]
struct Claims {
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl TimeClaims for Claims {
    fn exp(&self) -> i64 {
        self.exp
    }
    fn nbf(&self) -> Option<i64> {
        self.nbf
    }
    fn iat(&self) -> Option<i64> {
        self.iat
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "sub": "u-123",
        "aud": AUD,
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
        "scope": "repo:read",
    })
}

/// Claims with `extra` merged over an `iss` (times and the rest come from `extra`).
fn with_iss(extra: Value) -> Value {
    let mut c = json!({ "iss": ISS });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn expect(now: i64, leeway_secs: i64) -> Expected<'static> {
    Expected {
        typ: TYP,
        iss: ISS,
        aud: None,
        now,
        leeway_secs,
    }
}

fn verify(token: &str, keys: &[VerifyingKey], now: i64, leeway: i64) -> Result<Claims, JwtError> {
    verify_jwt(token, keys, &expect(now, leeway))
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    key.sign_jwt(TYP, claims).unwrap()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// Signs `header` and `payload` (raw JSON text) with the p256 key directly, low-S, so a test
/// can put anything in a correctly signed token.
fn sign_raw(key: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let s: Signature = key.key.sign(input.as_bytes());
    let s = s.normalize_s().unwrap_or(s);
    format!("{input}.{}", b64(s.to_bytes()))
}

fn sec1(key: &VerifyingKey) -> Vec<u8> {
    key.jwk
        .to_public_key::<p256::NistP256>()
        .unwrap()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

/// HMAC-SHA256 (RFC 2104), to forge the classic HS256 key-confusion token in a test.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

#[test]
fn sign_then_verify_round_trips() {
    let key = SigningKey::generate("k1");
    let token = sign(&key, &claims());
    let got = verify(&token, &[key.verifying_key()], NOW, 0).unwrap();
    assert_eq!(got.exp, NOW + 300);
    assert_eq!(got.iat, Some(NOW));
    assert_eq!(got.nbf, Some(NOW));
    assert_eq!(got.rest["sub"], "u-123");
    assert_eq!(got.rest["iss"], ISS);
    assert_eq!(got.rest["scope"], "repo:read");
}

#[test]
fn token_encoding_is_compact_base64url_without_padding() {
    let key = SigningKey::generate("k1");
    let token = key.sign_jwt("JWT", &claims()).unwrap();
    let p = parts(&token);
    assert_eq!(p.len(), 3);
    for part in &p {
        assert!(
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{part}"
        );
    }
    assert_eq!(URL_SAFE_NO_PAD.decode(&p[2]).unwrap().len(), 64);
    // The header keeps the documented member order.
    let header = String::from_utf8(URL_SAFE_NO_PAD.decode(&p[0]).unwrap()).unwrap();
    assert_eq!(header, r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#);
}

#[test]
fn header_values_are_json_escaped() {
    let kid = r#"odd"kid\"#;
    let key = SigningKey::generate(kid);
    let token = key.sign_jwt("a\"b", &claims()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid));
    assert_eq!(header.typ.as_deref(), Some("a\"b"));
    let expected = Expected {
        typ: "a\"b",
        ..expect(NOW, 0)
    };
    assert!(verify_jwt::<Claims>(&token, &[key.verifying_key()], &expected).is_ok());
}

#[test]
fn jwks_has_the_expected_shape() {
    let a = SigningKey::generate("a");
    let b = SigningKey::generate("b");
    let doc = jwks(&[a.verifying_key(), b.verifying_key()]);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (jwk, kid) in keys.iter().zip(["a", "b"]) {
        let obj = jwk.as_object().unwrap();
        let mut members: Vec<&str> = obj.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["kid"], kid);
        for c in ["x", "y"] {
            let text = jwk[c].as_str().unwrap();
            assert_eq!(text.len(), 43, "{c}");
            assert_eq!(URL_SAFE_NO_PAD.decode(text).unwrap().len(), 32);
        }
    }
    assert_eq!(a.public_jwk(), keys[0]);
    assert_eq!(jwks(&[]), json!({"keys": []}));
}

#[test]
fn jwk_round_trips_and_verifies() {
    let key = SigningKey::generate("k1");
    let vk = VerifyingKey::from_jwk(&key.public_jwk()).unwrap();
    assert_eq!(vk.kid(), "k1");
    assert_eq!(vk.public_jwk(), key.public_jwk());
    let token = sign(&key, &claims());
    assert!(verify(&token, &[vk], NOW, 0).is_ok());
}

#[test]
fn from_jwk_rejects_bad_keys() {
    let good = SigningKey::generate("k1").public_jwk();
    let with = |k: &str, v: Value| {
        let mut j = good.clone();
        j[k] = v;
        j
    };
    let without = |k: &str| {
        let mut j = good.clone();
        j.as_object_mut().unwrap().remove(k);
        j
    };
    let mut off_curve = good.clone();
    let mut x = URL_SAFE_NO_PAD.decode(good["x"].as_str().unwrap()).unwrap();
    x[31] ^= 1;
    off_curve["x"] = b64(&x).into();
    let cases = [
        json!("not an object"),
        with("kty", "RSA".into()),
        with("crv", "P-384".into()),
        with("alg", "RS256".into()),
        with("use", "enc".into()),
        with("d", "AAAA".into()),
        with("x", "!!".into()),
        with("x", b64([1u8; 31]).into()),
        with("y", b64([1u8; 33]).into()),
        with("kid", 7.into()),
        without("kid"),
        without("x"),
        without("kty"),
        off_curve,
    ];
    for case in cases {
        assert!(
            matches!(VerifyingKey::from_jwk(&case), Err(JwtError::InvalidKey(_))),
            "{case}"
        );
    }
    // Optional members may be absent.
    assert!(VerifyingKey::from_jwk(&without("alg")).is_ok());
    assert!(VerifyingKey::from_jwk(&without("use")).is_ok());
}

#[test]
fn tampering_with_any_part_breaks_the_signature() {
    let key = SigningKey::generate("k1");
    let keys = [key.verifying_key()];
    let p = parts(&sign(&key, &claims()));

    let mut more = claims();
    more["scope"] = "repo:write".into();
    let payload = format!("{}.{}.{}", p[0], b64(more.to_string()), p[2]);
    assert_eq!(verify(&payload, &keys, NOW, 0), Err(JwtError::BadSignature));

    let header = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#),
        p[1],
        p[2]
    );
    assert_eq!(verify(&header, &keys, NOW, 0), Err(JwtError::BadSignature));

    let mut sig = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
    for i in [0, 31, 32, 63] {
        sig[i] ^= 0x01;
        let t = format!("{}.{}.{}", p[0], p[1], b64(&sig));
        assert_eq!(
            verify(&t, &keys, NOW, 0),
            Err(JwtError::BadSignature),
            "{i}"
        );
        sig[i] ^= 0x01;
    }

    for bad_sig in [
        String::new(),
        b64([0u8; 64]),
        b64([0xFFu8; 64]),
        b64([1u8; 63]),
        b64([1u8; 65]),
    ] {
        let t = format!("{}.{}.{}", p[0], p[1], bad_sig);
        assert_eq!(verify(&t, &keys, NOW, 0), Err(JwtError::BadSignature));
    }
}

#[test]
fn high_s_and_non_canonical_signatures_are_rejected() {
    let key = SigningKey::generate("k1");
    let keys = [key.verifying_key()];
    let token = sign(&key, &claims());
    let p = parts(&token);
    let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(&p[2]).unwrap()).unwrap();
    assert!(
        sig.normalize_s().is_none(),
        "the broker signs in low-S form"
    );

    // (r, n - s) is mathematically valid ECDSA, but a second encoding of the same token.
    let twin = Signature::from_scalars(sig.r().to_repr(), (-*sig.s()).to_repr()).unwrap();
    let input = &token.as_bytes()[..p[0].len() + 1 + p[1].len()];
    use p256::ecdsa::signature::Verifier;
    assert!(key.key.verifying_key().verify(input, &twin).is_ok());
    let t = format!("{}.{}.{}", p[0], p[1], b64(twin.to_bytes()));
    assert_eq!(verify(&t, &keys, NOW, 0), Err(JwtError::BadSignature));

    // Padding or trailing characters on the signature are not accepted either.
    let padded = format!("{token}==");
    assert_eq!(verify(&padded, &keys, NOW, 0), Err(JwtError::BadSignature));
}

#[test]
fn der_signatures_are_rejected() {
    let key = SigningKey::generate("k1");
    let p = parts(&sign(&key, &claims()));
    let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(&p[2]).unwrap()).unwrap();
    let der = sig.to_der();
    assert_ne!(der.as_bytes().len(), 64);
    let t = format!("{}.{}.{}", p[0], p[1], b64(der.as_bytes()));
    assert_eq!(
        verify(&t, &[key.verifying_key()], NOW, 0),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn algorithm_confusion_is_refused() {
    let key = SigningKey::generate("k1");
    let keys = [key.verifying_key()];
    let payload = b64(claims().to_string());

    // `none` is no JWS signature algorithm the header parser knows: malformed, signed or not.
    for header in [
        r#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#,
        r#"{"alg":"none"}"#,
    ] {
        for sig in [String::new(), b64([1u8; 64])] {
            let t = format!("{}.{payload}.{sig}", b64(header));
            assert!(
                matches!(verify(&t, &keys, NOW, 0), Err(JwtError::Malformed(_))),
                "{header}"
            );
        }
    }

    // Key confusion: HMAC keyed with the public key as an attacker finds it (the JWKS entry,
    // the SEC1 point, the PEM-less DER point).
    let header = b64(r#"{"alg":"HS256","typ":"at+jwt","kid":"k1"}"#);
    let input = format!("{header}.{payload}");
    for secret in [
        key.public_jwk().to_string().into_bytes(),
        sec1(&keys[0]),
        key.public_jwk()["x"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let hs = format!("{input}.{}", b64(hmac_sha256(&secret, input.as_bytes())));
        assert_eq!(
            verify(&hs, &keys, NOW, 0),
            Err(JwtError::UnsupportedAlg("HS256".into()))
        );
    }

    // Other families, and an RS256 token whose "signature" is the right length for ES256.
    for alg in ["RS256", "PS256", "ES384", "EdDSA", "HS512"] {
        let h = b64(format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"k1"}}"#));
        for sig in [b64([1u8; 64]), b64([1u8; 256])] {
            let t = format!("{h}.{payload}.{sig}");
            assert_eq!(
                verify(&t, &keys, NOW, 0),
                Err(JwtError::UnsupportedAlg(alg.into())),
                "{alg}"
            );
        }
    }

    // Names that are no JWS algorithm, or ES256 misspelt.
    for alg in ["es256", "ES256 ", "ES256K", &"A".repeat(500)] {
        let h = b64(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#));
        let Err(JwtError::Malformed(why)) = verify(&format!("{h}.{payload}.x"), &keys, NOW, 0)
        else {
            panic!("expected Malformed for {alg}");
        };
        assert!(!why.contains(alg.trim()), "token text is not echoed: {why}");
    }
}

#[test]
fn wrong_type_issuer_or_audience_is_refused() {
    let key = SigningKey::generate("k1");
    let keys = [key.verifying_key()];
    let good = sign(&key, &claims());
    assert!(verify(&good, &keys, NOW, 0).is_ok());

    // `typ`: another type, none at all, or a case variant.
    for typ in ["JWT", "id_token+jwt", "application/at+jwt", "AT+JWT"] {
        let t = key.sign_jwt(typ, &claims()).unwrap();
        assert_eq!(verify(&t, &keys, NOW, 0), Err(JwtError::WrongType), "{typ}");
    }
    let no_typ = sign_raw(&key, r#"{"alg":"ES256","kid":"k1"}"#, &claims().to_string());
    assert_eq!(verify(&no_typ, &keys, NOW, 0), Err(JwtError::WrongType));

    // `iss`: another org's issuer, missing, or an array smuggling the right one in.
    let mut other = claims();
    other["iss"] = "https://broker.example/orgs/globex".into();
    assert_eq!(
        verify(&sign(&key, &other), &keys, NOW, 0),
        Err(JwtError::WrongIssuer)
    );
    let mut missing = claims();
    missing.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        verify(&sign(&key, &missing), &keys, NOW, 0),
        Err(JwtError::Malformed("missing iss claim".into()))
    );
    let mut array = claims();
    array["iss"] = json!([ISS, "https://evil.example"]);
    let expected = Expected {
        iss: ISS,
        ..expect(NOW, 0)
    };
    #[derive(Debug, Deserialize)]
    struct Typed {
        #[allow(dead_code)]
        iss: String,
        exp: i64,
    }
    impl TimeClaims for Typed {
        fn exp(&self) -> i64 {
            self.exp
        }
    }
    assert!(matches!(
        verify_jwt::<Typed>(&sign(&key, &array), &keys, &expected),
        Err(JwtError::Malformed(_))
    ));

    // `aud`, when the caller is one audience.
    let for_aud = |aud: &'static str| Expected {
        aud: Some(aud),
        ..expect(NOW, 0)
    };
    assert!(verify_jwt::<Claims>(&good, &keys, &for_aud(AUD)).is_ok());
    assert_eq!(
        verify_jwt::<Claims>(&good, &keys, &for_aud("https://mcp.other.example")),
        Err(JwtError::WrongAudience)
    );
    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        verify_jwt::<Claims>(&sign(&key, &no_aud), &keys, &for_aud(AUD)),
        Err(JwtError::Malformed("missing aud claim".into()))
    );
}

#[test]
fn missing_or_unknown_kid_is_refused() {
    let key = SigningKey::generate("k1");
    let other = SigningKey::generate("k2");
    let token = sign(&key, &claims());
    assert_eq!(
        verify(&token, &[other.verifying_key()], NOW, 0),
        Err(JwtError::UnknownKid)
    );
    assert_eq!(verify(&token, &[], NOW, 0), Err(JwtError::UnknownKid));

    let p = parts(&token);
    let no_kid = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"ES256","typ":"at+jwt"}"#),
        p[1],
        p[2]
    );
    assert_eq!(
        verify(&no_kid, &[key.verifying_key()], NOW, 0),
        Err(JwtError::UnknownKid)
    );
    let numeric_kid = format!("{}.{}.{}", b64(r#"{"alg":"ES256","kid":7}"#), p[1], p[2]);
    assert!(matches!(
        verify(&numeric_kid, &[key.verifying_key()], NOW, 0),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn a_different_key_with_the_same_kid_does_not_verify() {
    let a = SigningKey::generate("shared");
    let b = SigningKey::generate("shared");
    let token = sign(&a, &claims());
    assert_eq!(
        verify(&token, &[b.verifying_key()], NOW, 0),
        Err(JwtError::BadSignature)
    );
    // With both present (a rotation overlap gone wrong), the right one still verifies.
    assert!(verify(&token, &[b.verifying_key(), a.verifying_key()], NOW, 0).is_ok());
}

#[test]
fn time_claims_are_enforced_with_leeway() {
    let key = SigningKey::generate("k1");
    let keys = [key.verifying_key()];
    let with = |c: Value| sign(&key, &with_iss(c));

    let expired = with(json!({"exp": NOW - 10}));
    assert_eq!(verify(&expired, &keys, NOW, 0), Err(JwtError::Expired));
    assert_eq!(verify(&expired, &keys, NOW, 10), Err(JwtError::Expired));
    assert!(verify(&expired, &keys, NOW, 11).is_ok());
    // exp equal to now is already expired.
    let at_now = with(json!({"exp": NOW}));
    assert_eq!(verify(&at_now, &keys, NOW, 0), Err(JwtError::Expired));

    let future_nbf = with(json!({"exp": NOW + 600, "nbf": NOW + 60}));
    assert_eq!(
        verify(&future_nbf, &keys, NOW, 0),
        Err(JwtError::NotYetValid)
    );
    assert_eq!(
        verify(&future_nbf, &keys, NOW, 59),
        Err(JwtError::NotYetValid)
    );
    assert!(verify(&future_nbf, &keys, NOW, 60).is_ok());

    let future_iat = with(json!({"exp": NOW + 600, "iat": NOW + 60}));
    assert_eq!(
        verify(&future_iat, &keys, NOW, 30),
        Err(JwtError::NotYetValid)
    );

    // The time is the caller's: the same token is valid at one `now` and expired at another,
    // whatever the system clock says.
    let dated = with(json!({"exp": 1_000, "iat": 900}));
    assert!(verify(&dated, &keys, 950, 0).is_ok());
    assert_eq!(verify(&dated, &keys, 1_000, 0), Err(JwtError::Expired));
    assert_eq!(verify(&dated, &keys, 800, 0), Err(JwtError::NotYetValid));

    // Without `exp` the typed claims do not parse (a claims type without one is refused by
    // `Validation`'s required `exp`).
    let no_exp = with(json!({"sub": "u"}));
    assert!(matches!(
        verify(&no_exp, &keys, NOW, 0),
        Err(JwtError::Malformed(_))
    ));
    // The broker issues whole seconds; anything else in a time claim is refused.
    for bad in [
        json!({"exp": "tomorrow"}),
        json!({"exp": NOW as f64 + 1.5}),
        json!({"exp": 1e300}),
        json!({"exp": NOW + 60, "nbf": "now"}),
        json!({"exp": NOW + 60, "iat": [1]}),
        json!({"exp": NOW + 60, "iat": u64::MAX}),
    ] {
        assert!(
            matches!(
                verify(&with(bad.clone()), &keys, NOW, 0),
                Err(JwtError::Malformed(_))
            ),
            "{bad}"
        );
    }

    // Extreme values do not overflow.
    let far = with(json!({"exp": i64::MAX, "nbf": i64::MIN, "iat": i64::MIN}));
    assert!(verify(&far, &keys, 0, i64::MAX).is_ok());
    let late_iat = with(json!({"exp": i64::MAX, "iat": i64::MAX}));
    assert_eq!(
        verify(&late_iat, &keys, i64::MIN, i64::MAX),
        Err(JwtError::NotYetValid)
    );
    assert!(verify(&with(json!({"exp": i64::MAX})), &keys, i64::MAX, i64::MAX).is_ok());
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let key = SigningKey::generate("k1");
    let keys = [key.verifying_key()];
    let token = sign(&key, &claims());
    let p = parts(&token);
    let sig = b64([1u8; 64]);
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b".into(),
        format!("{token}.extra"),
        format!("!!.{}.{}", p[1], p[2]),
        format!("{}.{}.{}", b64("not json"), p[1], sig),
        format!("{}.{}.{}", b64("[1,2]"), p[1], sig),
        format!("{}.{}.{}", b64(r#"{"typ":"JWT","kid":"k1"}"#), p[1], sig),
        format!("{}.{}.{}", b64(r#"{"alg":256,"kid":"k1"}"#), p[1], sig),
        format!("{}==.{}.{}", p[0], p[1], p[2]),
    ];
    for case in &cases {
        assert!(
            matches!(verify(case, &keys, NOW, 0), Err(JwtError::Malformed(_))),
            "{case}: {:?}",
            verify(case, &keys, NOW, 0)
        );
    }

    // Critical header extensions the broker does not implement, correctly signed.
    for header in [
        r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","crit":["b64"]}"#,
        r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","crit":["exp"],"exp":1}"#,
        r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","crit":[]}"#,
        r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","crit":["b64"],"b64":false}"#,
    ] {
        let t = sign_raw(&key, header, &claims().to_string());
        assert!(
            matches!(verify(&t, &keys, NOW, 0), Err(JwtError::Malformed(_))),
            "{header}"
        );
    }

    // Correctly signed payloads that are not a JSON object, or not JSON.
    for payload in ["[1,2,3]", "null", "not json", r#"{"exp":1"#] {
        let t = sign_raw(
            &key,
            r#"{"alg":"ES256","typ":"at+jwt","kid":"k1"}"#,
            payload,
        );
        assert!(
            matches!(verify(&t, &keys, NOW, 0), Err(JwtError::Malformed(_))),
            "{payload}"
        );
    }

    // Random garbage, including strings made of valid base64url characters and dots.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
    for i in 0..2000usize {
        let len = i % 200;
        let junk: String = (0..len)
            .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>()) % ALPHABET.len()]))
            .collect();
        assert!(verify(&junk, &keys, NOW, 0).is_err());
    }
    // Every truncation of a valid token fails.
    for len in 0..token.len() {
        assert!(verify(&token[..len], &keys, NOW, 0).is_err(), "{len}");
    }
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    let key = SigningKey::generate("k1");
    let keys = [key.verifying_key()];

    let mut big = claims();
    big["pad"] = "x".repeat(11_000).into();
    let token = sign(&key, &big);
    assert!(token.len() <= MAX_TOKEN_LEN);
    assert!(verify(&token, &keys, NOW, 0).is_ok());

    big["pad"] = "x".repeat(13_000).into();
    let token = sign(&key, &big);
    assert!(token.len() > MAX_TOKEN_LEN);
    assert_eq!(
        verify(&token, &keys, NOW, 0),
        Err(JwtError::Malformed("token exceeds 16 KiB".into()))
    );
    let junk = "!".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        verify(&junk, &keys, NOW, 0),
        Err(JwtError::Malformed("token exceeds 16 KiB".into()))
    );
}

#[test]
fn pkcs8_round_trip_keeps_the_key() {
    let key = SigningKey::generate("k1");
    let der = key.to_pkcs8_der();
    let back = SigningKey::from_pkcs8_der("k1", &der).unwrap();
    assert_eq!(back.kid(), "k1");
    assert_eq!(back.public_jwk(), key.public_jwk());
    // Tokens from the reloaded key verify under the original public key.
    let token = sign(&back, &claims());
    assert!(verify(&token, &[key.verifying_key()], NOW, 0).is_ok());

    for bad in [
        &[][..],
        &[0x30, 0x00][..],
        &der[..der.len() - 1],
        b"-----BEGIN PRIVATE KEY-----",
    ] {
        assert!(matches!(
            SigningKey::from_pkcs8_der("k1", bad),
            Err(JwtError::InvalidKey(_))
        ));
    }
}

#[test]
fn generated_keys_differ() {
    let a = SigningKey::generate("a");
    let b = SigningKey::generate("a");
    assert_ne!(a.public_jwk()["x"], b.public_jwk()["x"]);
    assert_ne!(*a.to_pkcs8_der(), *b.to_pkcs8_der());
}

#[test]
fn debug_prints_the_kid_only() {
    let key = SigningKey::generate("signing-2026");
    let vk = key.verifying_key();
    let scalar = key.key.to_bytes();
    let jwk = key.public_jwk();
    for out in [format!("{key:?}"), format!("{key:#?}"), format!("{vk:?}")] {
        assert!(out.contains("signing-2026"), "{out}");
        assert!(!out.contains(&hex::encode(scalar)), "{out}");
        assert!(!out.contains(&b64(scalar)), "{out}");
        assert!(!out.contains(jwk["x"].as_str().unwrap()), "{out}");
    }
}

#[test]
fn signing_many_tokens_smoke() {
    let key = SigningKey::generate("k1");
    let keys = [key.verifying_key()];
    let mut c = claims();
    for i in 0..1000 {
        c["jti"] = i.into();
        let token = sign(&key, &c);
        assert!(verify(&token, &keys, NOW, 0).is_ok(), "{i}");
    }
}
