//! Token requests at an upstream's token endpoint: the four grants the broker uses, the three
//! client authentication methods, and the reading of the answer into a [`TokenSet`].
//!
//! One request builder serves every grant, on the shared `reqwest` client, rather than
//! `oauth2` 5's `exchange_code`/`exchange_refresh_token` for two of them and this builder for
//! the rest. `oauth2` 5 has no RFC 7523 or RFC 8693 grant and no `private_key_jwt`, so this
//! builder and its client authentication must exist anyway; and for the grants it does have, its
//! reading of the answer does not fit: it wants `expires_in` as a JSON number (some providers
//! send `"3600"`), splits `scope` on spaces only (GitHub and Slack use commas), cannot read
//! GitHub's and Slack's 200 answers carrying `error`, and its `RequestTokenError` keeps neither
//! the HTTP status nor `Retry-After`, which the breaker and the rate budget need. Two client
//! authentication codes (its and this one) could drift; one cannot.
//!
//! Invariants: requests are form-encoded with `Accept: application/json`; the client secret
//! and assertions travel only in the body or a header marked sensitive; answers are judged by
//! the shared RFC 6749 reader ([`super::error::answer_error`]); tokens never reach a log or a
//! `Debug` output.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::claims::{CLIENT_ASSERTION_TYPE, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE};
use super::error::{SERVER_ERROR, UpstreamError, answer_error};
use super::wire::{Raw, origin_of};
use super::{Endpoints, UpstreamClient};
use crate::domain::upstream::{ClientAuth, Upstream};

/// What a token request asks for. `Debug` shows only the grant's name: its fields are codes,
/// tokens and assertions.
#[derive(Clone, Copy)]
pub enum TokenGrant<'a> {
    /// RFC 6749 §4.1.3: redeem a consent's code (with its PKCE verifier).
    AuthorizationCode {
        /// The code from the callback.
        code: &'a str,
        /// The redirect URI of the authorization request.
        redirect_uri: &'a str,
        /// The PKCE verifier kept with the pending consent.
        code_verifier: &'a str,
    },
    /// RFC 6749 §6: a new access token (and perhaps a rotated refresh token).
    RefreshToken {
        /// The stored refresh token.
        refresh_token: &'a str,
        /// A narrower scope, if wanted.
        scopes: Option<&'a [String]>,
    },
    /// RFC 7523 §2.1 `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
    /// `assertion=<ID-JAG>`.
    JwtBearer {
        /// The signed ID-JAG.
        assertion: &'a str,
        /// Scopes asked for.
        scopes: Option<&'a [String]>,
    },
    /// RFC 8693 `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
    TokenExchange {
        /// The subject token.
        subject_token: &'a str,
        /// Its RFC 8693 token type URN.
        subject_token_type: &'a str,
        /// The token type wanted back.
        requested_token_type: Option<&'a str>,
        /// The target service.
        audience: Option<&'a str>,
        /// Scopes asked for.
        scopes: Option<&'a [String]>,
        /// RFC 8707 resource of the target, when the exchange names one.
        resource: Option<&'a str>,
    },
}

impl std::fmt::Debug for TokenGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenGrant::{}", self.name())
    }
}

impl TokenGrant<'_> {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            TokenGrant::AuthorizationCode { .. } => "authorization_code",
            TokenGrant::RefreshToken { .. } => "refresh_token",
            TokenGrant::JwtBearer { .. } => "jwt_bearer",
            TokenGrant::TokenExchange { .. } => "token_exchange",
        }
    }

    /// The grant's form fields; scopes joined with the provider's separator.
    fn form(&self, separator: &str) -> Vec<(&'static str, String)> {
        let mut form = Vec::new();
        let mut put = |k: &'static str, v: &str| form.push((k, v.to_string()));
        let scopes = match *self {
            TokenGrant::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                put("grant_type", "authorization_code");
                put("code", code);
                put("redirect_uri", redirect_uri);
                put("code_verifier", code_verifier);
                None
            }
            TokenGrant::RefreshToken {
                refresh_token,
                scopes,
            } => {
                put("grant_type", "refresh_token");
                put("refresh_token", refresh_token);
                scopes
            }
            TokenGrant::JwtBearer { assertion, scopes } => {
                put("grant_type", GRANT_JWT_BEARER);
                put("assertion", assertion);
                scopes
            }
            TokenGrant::TokenExchange {
                subject_token,
                subject_token_type,
                requested_token_type,
                audience,
                scopes,
                resource,
            } => {
                put("grant_type", GRANT_TOKEN_EXCHANGE);
                put("subject_token", subject_token);
                put("subject_token_type", subject_token_type);
                if let Some(t) = requested_token_type {
                    put("requested_token_type", t);
                }
                if let Some(a) = audience {
                    put("audience", a);
                }
                if let Some(r) = resource {
                    put("resource", r);
                }
                scopes
            }
        };
        if let Some(s) = scopes.filter(|s| !s.is_empty()) {
            put("scope", &s.join(separator));
        }
        form
    }
}

/// Signs a `private_key_jwt` client assertion for the given `aud` (the token endpoint URL);
/// build its claims with [`super::client_assertion_claims`].
pub type AssertionSigner<'a> = dyn Fn(&str) -> String + Send + Sync + 'a;

/// Client authentication material for one request; which of it is used follows the
/// upstream's `client_auth`.
#[derive(Clone, Copy)]
pub struct ClientAuthn<'a> {
    /// The broker's client id at the upstream.
    pub client_id: &'a str,
    /// The client secret (`client_secret_basic`, `client_secret_post`, GitHub's revocation).
    pub secret: Option<&'a SecretString>,
    /// Signs a client assertion for an `aud` (`private_key_jwt`).
    pub assertion: Option<&'a AssertionSigner<'a>>,
}

impl std::fmt::Debug for ClientAuthn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthn")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.is_some())
            .field("assertion", &self.assertion.is_some())
            .finish()
    }
}

/// `Authorization: Basic` with the id and secret form-encoded first (RFC 6749 §2.3.1), marked
/// sensitive so no HTTP layer logs it.
pub(super) fn basic(client_id: &str, secret: &SecretString) -> HeaderValue {
    use base64::Engine;
    let enc = |s: &str| {
        openidconnect::url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
    };
    let pair = format!("{}:{}", enc(client_id), enc(secret.expose_secret()));
    let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
    bearer_like("Basic", &b64)
}

/// `{scheme} {credential}` as a sensitive header value.
pub(super) fn bearer_like(scheme: &str, credential: &str) -> HeaderValue {
    // A token with bytes a header cannot carry would be refused by any AS anyway; an empty
    // value makes that refusal the AS's answer rather than a panic here.
    let mut v = HeaderValue::from_str(&format!("{scheme} {credential}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// Client authentication, ready to put on a request.
struct Credentials {
    header: Option<HeaderValue>,
    form: Vec<(&'static str, String)>,
}

impl Credentials {
    /// The upstream's `client_auth` method with the caller's material; `aud` is the token
    /// endpoint (the audience of client assertions, whatever endpoint they are sent to).
    fn new(method: ClientAuth, auth: &ClientAuthn<'_>, aud: &Url) -> Result<Self, UpstreamError> {
        let missing = |what: &str| {
            UpstreamError::Config(format!(
                "client_auth {method:?} needs {what}, which is not set"
            ))
        };
        let id = auth.client_id.to_string();
        Ok(match method {
            ClientAuth::ClientSecretBasic => Self {
                header: Some(basic(
                    auth.client_id,
                    auth.secret.ok_or_else(|| missing("a client secret"))?,
                )),
                form: Vec::new(),
            },
            ClientAuth::ClientSecretPost => {
                let secret = auth.secret.ok_or_else(|| missing("a client secret"))?;
                Self {
                    header: None,
                    form: vec![
                        ("client_id", id),
                        ("client_secret", secret.expose_secret().to_string()),
                    ],
                }
            }
            ClientAuth::PrivateKeyJwt => {
                let sign = auth
                    .assertion
                    .ok_or_else(|| missing("a client assertion signer"))?;
                let assertion = sign(aud.as_str());
                if assertion.is_empty() {
                    return Err(missing("a signed client assertion (the signer gave none)"));
                }
                Self {
                    header: None,
                    form: vec![
                        ("client_id", id),
                        ("client_assertion_type", CLIENT_ASSERTION_TYPE.into()),
                        ("client_assertion", assertion),
                    ],
                }
            }
        })
    }

    /// Puts the credentials and `form` on a request as a form-encoded JSON-accepting POST.
    fn apply(self, rb: RequestBuilder, mut form: Vec<(&'static str, String)>) -> RequestBuilder {
        form.extend(self.form);
        let rb = rb.header(ACCEPT, "application/json").form(&form);
        match self.header {
            Some(h) => rb.header(AUTHORIZATION, h),
            None => rb,
        }
    }
}

/// What a successful token request gave. `Debug` shows no token (they are `SecretString`s).
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The access token.
    pub access_token: SecretString,
    /// A (possibly rotated) refresh token; `None` when the answer had none.
    pub refresh_token: Option<SecretString>,
    /// Lifetime in seconds; `None` when the AS did not say (the caller applies the
    /// connector's default, `Upstream::fallback_ttl_secs`).
    pub expires_in: Option<u64>,
    /// Granted scopes (split on spaces or commas); `None` when the answer did not say (RFC
    /// 6749 §5.1: then as requested).
    pub scope: Option<Vec<String>>,
    /// `token_type` as sent (`Bearer` when absent).
    pub token_type: String,
    /// RFC 8693 `issued_token_type`.
    pub issued_token_type: Option<String>,
    /// An OpenID Connect ID token (an IdP's answer to a refresh).
    pub id_token: Option<SecretString>,
}

/// Seconds from a JSON number or a string of digits.
fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Scopes from a space- or comma-separated string (or, leniently, an array of strings).
pub(super) fn split_scopes(v: &Value) -> Option<Vec<String>> {
    let words: Vec<String> = match v {
        Value::String(s) => s
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => return None,
    };
    Some(words)
}

/// Reads a token endpoint's answer (status and body); the token set is the answer itself, or
/// its member `member` when the provider nests the person's tokens (Slack's `authed_user`).
pub(super) fn read_token(
    status: u16,
    body: &[u8],
    member: Option<&str>,
) -> Result<TokenSet, UpstreamError> {
    if let Some(e) = answer_error(status, body) {
        return Err(e);
    }
    let unreadable = || UpstreamError::transient(SERVER_ERROR);
    let mut v: Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    if let Some(m) = member
        && v.get(m).is_some_and(Value::is_object)
    {
        v = v[m].take();
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let access_token = text("access_token").ok_or_else(unreadable)?;
    Ok(TokenSet {
        access_token: SecretString::from(access_token),
        refresh_token: text("refresh_token").map(SecretString::from),
        expires_in: v.get("expires_in").and_then(seconds),
        scope: v.get("scope").and_then(split_scopes),
        token_type: text("token_type").unwrap_or("Bearer").to_string(),
        issued_token_type: text("issued_token_type").map(str::to_string),
        id_token: text("id_token").map(SecretString::from),
    })
}

impl UpstreamClient {
    /// POSTs `form` to `url` (the token, revocation or introspection endpoint) with the
    /// upstream's client authentication: the one way an authenticated form request is sent.
    pub(super) async fn post_form(
        &self,
        u: &Upstream,
        ep: &Endpoints,
        auth: &ClientAuthn<'_>,
        url: &Url,
        form: Vec<(&'static str, String)>,
    ) -> Result<Raw, UpstreamError> {
        let creds = Credentials::new(u.client_auth, auth, &ep.token_endpoint)?;
        self.inner
            .wire
            .send(Method::POST, url, self.timeout(u), |rb| {
                creds.apply(rb, form)
            })
            .await
    }

    /// POSTs a token request (form-encoded, `Accept: application/json`) with client
    /// authentication, plus `resource` (RFC 8707) when the upstream declares one.
    pub async fn token(
        &self,
        u: &Upstream,
        ep: &Endpoints,
        auth: &ClientAuthn<'_>,
        grant: TokenGrant<'_>,
    ) -> Result<TokenSet, UpstreamError> {
        let mut form = grant.form(u.provider.preset().scope_separator);
        if let Some(r) = &u.resource {
            form.push(("resource", r.clone()));
        }
        let url = &ep.token_endpoint;
        let raw = self.post_form(u, ep, auth, url, form).await?;
        read_token(raw.status, &raw.body, u.provider.preset().token_member).inspect_err(|e| {
            tracing::warn!(
                origin = %origin_of(url).unwrap_or_default(),
                grant = grant.name(),
                status = raw.status,
                error = e.code(),
                "upstream token request failed"
            );
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn token_answers_are_read_leniently_where_providers_differ() {
        let ok = |v: Value| read_token(200, v.to_string().as_bytes(), None).unwrap();
        let t = ok(
            json!({"access_token":"a","token_type":"bearer","expires_in":"3600","scope":"repo,gist"}),
        );
        assert_eq!(t.expires_in, Some(3600));
        assert_eq!(t.scope, Some(vec!["repo".into(), "gist".into()]));
        assert!(t.refresh_token.is_none());
        let t = ok(
            json!({"access_token":"a","expires_in":60.0,"scope":"read  write","refresh_token":""}),
        );
        assert_eq!((t.expires_in, t.token_type.as_str()), (Some(60), "Bearer"));
        assert_eq!(t.scope, Some(vec!["read".into(), "write".into()]));
        assert!(t.refresh_token.is_none(), "an empty refresh token is none");
        let t = ok(json!({"access_token":"a","expires_in":-5,"scope":["x"]}));
        assert_eq!((t.expires_in, t.scope), (None, Some(vec!["x".into()])));
        let t = ok(json!({"access_token":"a","expires_in":"soon"}));
        assert_eq!((t.expires_in, t.scope), (None, None));
    }

    #[test]
    fn a_success_without_an_access_token_is_transient() {
        for body in [
            &b"<html>"[..],
            br#"{"token_type":"bearer"}"#,
            br#"{"access_token":""}"#,
        ] {
            let e = read_token(200, body, None).unwrap_err();
            assert_eq!(e, UpstreamError::transient(SERVER_ERROR));
        }
    }

    #[test]
    fn a_nested_token_set_is_read_where_the_preset_says() {
        let t = read_token(
            200,
            br#"{"ok":true,"access_token":"xoxb-bot","authed_user":{"id":"U1","access_token":"xoxp-user","refresh_token":"xoxe-r","expires_in":43200,"scope":"search:read"}}"#,
            Some("authed_user"),
        )
        .unwrap();
        assert_eq!(
            t.access_token.expose_secret(),
            "xoxp-user",
            "the person's token, not the bot's"
        );
        assert_eq!(
            t.refresh_token
                .as_ref()
                .map(|r| r.expose_secret().to_string())
                .as_deref(),
            Some("xoxe-r")
        );
        assert_eq!(t.expires_in, Some(43200));
    }

    #[test]
    fn debug_shows_no_token() {
        let t = read_token(
            200,
            br#"{"access_token":"AT-SECRET","refresh_token":"RT-SECRET"}"#,
            None,
        )
        .unwrap();
        let d = format!("{t:?}");
        assert!(!d.contains("SECRET"), "{d}");
        let secret = SecretString::from("CS-SECRET");
        let a = ClientAuthn {
            client_id: "broker",
            secret: Some(&secret),
            assertion: None,
        };
        assert!(!format!("{a:?}").contains("SECRET"));
        let g = TokenGrant::RefreshToken {
            refresh_token: "RT-SECRET",
            scopes: None,
        };
        assert_eq!(format!("{g:?}"), "TokenGrant::refresh_token");
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        use base64::Engine;
        let h = basic("my client", &SecretString::from("p@ss:word"));
        assert!(h.is_sensitive());
        let b64 = h.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(String::from_utf8(raw).unwrap(), "my+client:p%40ss%3Aword");
    }
}
