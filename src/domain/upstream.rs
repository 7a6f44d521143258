//! Upstream connectors: how the broker reaches a connector's own authorization server (AS),
//! and the provider presets admins pick instead of typing endpoints and learning quirks.
//!
//! A preset is data (endpoints, extra authorization parameters, how revocation works, whether
//! `expires_in` may be missing, whether refresh tokens rotate), never a code path per
//! provider: [`Upstream::resolved`] merges the preset under the admin's explicit values, and
//! the one upstream client follows the result.
//!
//! The client secret never appears in this module's serialized form: it is kept sealed
//! (bytes only the vault key ring opens) beside the connector, and the API shows only
//! `client_secret_set`.

use serde::{Deserialize, Serialize};

/// A provider preset.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Any OAuth 2.0 AS; endpoints from RFC 8414 discovery of `issuer`, or given explicitly.
    #[default]
    Generic,
    /// GitHub App user tokens.
    Github,
    /// Google.
    Google,
    /// Slack (OAuth v2, token rotation).
    Slack,
    /// Atlassian (Jira, Confluence) 3LO.
    Atlassian,
    /// Microsoft identity platform (Entra ID, v2.0 endpoints).
    Microsoft,
    /// Linear.
    Linear,
    /// Notion.
    Notion,
}

/// How the broker authenticates to the upstream token endpoint.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT the org's issuer signs (RFC 7523 §2.2, OpenID Connect Core §9).
    PrivateKeyJwt,
}

/// Where an ID-JAG comes from.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum IdJagSource {
    /// The broker signs it as the org's issuer (the upstream trusts the org's JWKS).
    #[default]
    Broker,
    /// RFC 8693 exchange at the org's IdP (Okta Cross App Access).
    IdpExchange,
}

/// How tokens are revoked at an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Revocation {
    /// RFC 7009 at the revocation endpoint.
    Rfc7009,
    /// `DELETE {url}` with Basic client authentication and `{"access_token": …}` (GitHub's
    /// "delete an app token"; `{client_id}` in the URL is replaced).
    DeleteWithClientAuth {
        /// The URL template.
        url: String,
    },
    /// `POST {url}` with the token as the Bearer credential (Slack's `auth.revoke`).
    BearerPost {
        /// The URL.
        url: String,
    },
    /// The provider offers no way to revoke a token: the receipt says `unsupported`.
    Unsupported {
        /// What the receipt says.
        why: String,
    },
}

/// What a preset contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// The AS's issuer, when it has one.
    pub issuer: Option<&'static str>,
    /// Endpoints.
    pub authorization_endpoint: Option<&'static str>,
    /// Token endpoint.
    pub token_endpoint: Option<&'static str>,
    /// RFC 7009 endpoint, for [`Revocation::Rfc7009`].
    pub revocation_endpoint: Option<&'static str>,
    /// How to revoke.
    pub revocation: Revocation,
    /// Extra authorization request parameters (Google: `access_type=offline`, …).
    pub auth_params: &'static [(&'static str, &'static str)],
    /// Scope separator on the wire (`" "` per RFC 6749; a few providers use `","`).
    pub scope_separator: &'static str,
    /// The token response may omit `expires_in` (the connector's lifetime is used).
    pub expires_in_optional: bool,
    /// Refresh tokens are single-use and rotate on every refresh.
    pub rotates_refresh_tokens: bool,
    /// The authorization request's parameter naming the scopes (`scope`; Slack asks for a
    /// person's own token with `user_scope`).
    pub scope_param: &'static str,
    /// The member of the token answer holding the person's token set when it is not the
    /// answer itself (Slack: `authed_user`).
    pub token_member: Option<&'static str>,
}

impl Provider {
    /// The preset's data.
    pub fn preset(self) -> Preset {
        let rfc7009 = |endpoint: &'static str| (Some(endpoint), Revocation::Rfc7009);
        let base = Preset {
            issuer: None,
            authorization_endpoint: None,
            token_endpoint: None,
            revocation_endpoint: None,
            revocation: Revocation::Rfc7009,
            auth_params: &[],
            scope_separator: " ",
            expires_in_optional: false,
            rotates_refresh_tokens: true,
            scope_param: "scope",
            token_member: None,
        };
        match self {
            Provider::Generic => base,
            Provider::Github => Preset {
                authorization_endpoint: Some("https://github.com/login/oauth/authorize"),
                token_endpoint: Some("https://github.com/login/oauth/access_token"),
                revocation: Revocation::DeleteWithClientAuth {
                    url: "https://api.github.com/applications/{client_id}/token".into(),
                },
                scope_separator: ",",
                ..base
            },
            Provider::Google => {
                let (revocation_endpoint, revocation) =
                    rfc7009("https://oauth2.googleapis.com/revoke");
                Preset {
                    issuer: Some("https://accounts.google.com"),
                    authorization_endpoint: Some("https://accounts.google.com/o/oauth2/v2/auth"),
                    token_endpoint: Some("https://oauth2.googleapis.com/token"),
                    revocation_endpoint,
                    revocation,
                    auth_params: &[("access_type", "offline"), ("prompt", "consent")],
                    rotates_refresh_tokens: false,
                    ..base
                }
            }
            Provider::Slack => Preset {
                authorization_endpoint: Some("https://slack.com/oauth/v2/authorize"),
                token_endpoint: Some("https://slack.com/api/oauth.v2.access"),
                revocation: Revocation::BearerPost {
                    url: "https://slack.com/api/auth.revoke".into(),
                },
                scope_separator: ",",
                // The person's own (user) token, not the workspace's bot token.
                scope_param: "user_scope",
                token_member: Some("authed_user"),
                ..base
            },
            Provider::Atlassian => Preset {
                authorization_endpoint: Some("https://auth.atlassian.com/authorize"),
                token_endpoint: Some("https://auth.atlassian.com/oauth/token"),
                revocation: Revocation::Unsupported {
                    why: "Atlassian offers no token revocation endpoint; the grant ends when \
                          the user's app access is removed in Atlassian"
                        .into(),
                },
                auth_params: &[("audience", "api.atlassian.com"), ("prompt", "consent")],
                ..base
            },
            Provider::Microsoft => Preset {
                authorization_endpoint: Some(
                    "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                ),
                token_endpoint: Some("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
                revocation: Revocation::Unsupported {
                    why: "the Microsoft identity platform has no RFC 7009 endpoint; revoke \
                          the user's sessions in Entra (revokeSignInSessions)"
                        .into(),
                },
                ..base
            },
            Provider::Linear => {
                let (revocation_endpoint, revocation) =
                    rfc7009("https://api.linear.app/oauth/revoke");
                Preset {
                    authorization_endpoint: Some("https://linear.app/oauth/authorize"),
                    token_endpoint: Some("https://api.linear.app/oauth/token"),
                    revocation_endpoint,
                    revocation,
                    ..base
                }
            }
            Provider::Notion => {
                let (revocation_endpoint, revocation) =
                    rfc7009("https://api.notion.com/v1/oauth/revoke");
                Preset {
                    authorization_endpoint: Some("https://api.notion.com/v1/oauth/authorize"),
                    token_endpoint: Some("https://api.notion.com/v1/oauth/token"),
                    revocation_endpoint,
                    revocation,
                    auth_params: &[("owner", "user")],
                    expires_in_optional: true,
                    ..base
                }
            }
        }
    }
}

/// Serializes a sealed secret as whether one is set.
fn is_set<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(v.is_some())
}

/// A connector's upstream AS, as the admin declared it (CONTRACT.md, connector `upstream`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Upstream {
    /// The preset.
    #[serde(default)]
    pub provider: Provider,
    /// The AS's issuer (RFC 8414 discovery for `generic`; `aud` of assertions sent to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Where people consent (`authorization_code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// The token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// The RFC 7009 revocation endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// The RFC 7662 introspection endpoint (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    /// The broker's client id at this AS.
    pub client_id: String,
    /// The client secret, sealed; shown only as `client_secret_set`.
    #[serde(
        default,
        rename = "client_secret_set",
        serialize_with = "is_set",
        skip_deserializing
    )]
    #[schema(value_type = bool)]
    pub client_secret: Option<Vec<u8>>,
    /// An environment variable of the broker holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// How the broker authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// RFC 8707 resource indicator sent with token requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Access token lifetime when the AS omits `expires_in`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_token_ttl_secs: Option<u64>,
    /// Where ID-JAGs come from (`id_jag` connectors).
    #[serde(default)]
    pub id_jag_source: IdJagSource,
    /// Timeout of each call to this AS, milliseconds (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A connector's upstream AS as the admin API and config declare it (CONTRACT.md): the stored
/// [`Upstream`](Upstream) plus the write-only `client_secret`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamInput {
    /// Provider preset (`generic` when absent).
    #[serde(default)]
    pub provider: Provider,
    /// The AS's issuer (discovery for `generic`; `aud` of assertions).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Authorization endpoint (consent).
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// RFC 7009 revocation endpoint.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// RFC 7662 introspection endpoint.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// The broker's client id at the AS.
    pub client_id: String,
    /// The client secret: stored sealed, never returned (on PUT, absent keeps the stored one).
    #[serde(default, skip_serializing_if = "never_shown")]
    #[schema(format = Password, write_only)]
    pub client_secret: Option<String>,
    /// An environment variable of the broker holding the secret instead.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Client authentication at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// RFC 8707 resource indicator.
    #[serde(default)]
    pub resource: Option<String>,
    /// Access token lifetime when the AS omits `expires_in`, seconds.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub default_token_ttl_secs: Option<u64>,
    /// Where ID-JAGs come from.
    #[serde(default)]
    pub id_jag_source: IdJagSource,
    /// Timeout of each call, milliseconds.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 100, maximum = 60_000)]
    pub timeout_ms: Option<u64>,
}

/// The plain secret is never serialized (it is write-only).
fn never_shown(_: &Option<String>) -> bool {
    true
}

/// A whole number; `60.0` is as good as `60`, since JSON (and the document's `integer`) does
/// not tell them apart. Range checks are [`Upstream::problems`]'.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or_else(|| D::Error::custom("must be a whole number"))
}

impl UpstreamInput {
    /// The stored declaration, with the client secret already sealed (or none).
    pub fn into_upstream(self, client_secret: Option<Vec<u8>>) -> Upstream {
        Upstream {
            provider: self.provider,
            issuer: self.issuer,
            authorization_endpoint: self.authorization_endpoint,
            token_endpoint: self.token_endpoint,
            revocation_endpoint: self.revocation_endpoint,
            introspection_endpoint: self.introspection_endpoint,
            client_id: self.client_id,
            client_secret,
            client_secret_env: self.client_secret_env,
            client_auth: self.client_auth,
            resource: self.resource,
            default_token_ttl_secs: self.default_token_ttl_secs,
            id_jag_source: self.id_jag_source,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// An upstream with the preset applied: what the client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The AS's issuer, if known.
    pub issuer: Option<String>,
    /// Consent endpoint.
    pub authorization_endpoint: Option<String>,
    /// Token endpoint.
    pub token_endpoint: Option<String>,
    /// RFC 7009 endpoint.
    pub revocation_endpoint: Option<String>,
    /// How to revoke.
    pub revocation: Revocation,
    /// Preset data.
    pub preset: Preset,
}

/// What the admin API and config take as an upstream URL, and the OpenAPI document states as
/// [`URL_PATTERN`]: `http(s)://`, a host name or IPv4 address, an optional port, an optional
/// path of URL characters; no user info, query or fragment (none of an AS's endpoints needs
/// them).
pub fn plain_url(u: &str) -> bool {
    let Some(rest) = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
    else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()));
    let path_ok = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=:@/".contains(c));
    host_ok && port_ok && path_ok
}

/// [`plain_url`] as a regular expression (the OpenAPI document's `pattern`).
pub const URL_PATTERN: &str =
    "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$";

/// The lifetime used when neither the AS nor the connector says one.
pub const DEFAULT_UPSTREAM_TTL_SECS: u64 = 3600;

impl Upstream {
    /// The preset under the explicit values (explicit wins).
    pub fn resolved(&self) -> Resolved {
        let preset = self.provider.preset();
        let pick = |own: &Option<String>, p: Option<&'static str>| {
            own.clone().or_else(|| p.map(str::to_string))
        };
        let revocation_endpoint = pick(&self.revocation_endpoint, preset.revocation_endpoint);
        let revocation = match (&preset.revocation, &revocation_endpoint) {
            // An explicit RFC 7009 endpoint overrides a preset that has none.
            (Revocation::Unsupported { .. }, Some(_)) if self.revocation_endpoint.is_some() => {
                Revocation::Rfc7009
            }
            (r, _) => r.clone(),
        };
        Resolved {
            issuer: pick(&self.issuer, preset.issuer),
            authorization_endpoint: pick(
                &self.authorization_endpoint,
                preset.authorization_endpoint,
            ),
            token_endpoint: pick(&self.token_endpoint, preset.token_endpoint),
            revocation_endpoint,
            revocation,
            preset,
        }
    }

    /// The lifetime of an access token whose response had no `expires_in`.
    pub fn fallback_ttl_secs(&self) -> u64 {
        self.default_token_ttl_secs
            .unwrap_or(DEFAULT_UPSTREAM_TTL_SECS)
    }

    /// Problems with this declaration, as `(key, message)` relative to the `upstream` object.
    pub fn problems(&self, strategy: super::connector::Strategy) -> Vec<(&'static str, String)> {
        use super::connector::Strategy;
        let mut out = Vec::new();
        let r = self.resolved();
        let url_ok = plain_url;
        for (key, v) in [
            ("issuer", &self.issuer),
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("revocation_endpoint", &self.revocation_endpoint),
            ("introspection_endpoint", &self.introspection_endpoint),
        ] {
            if let Some(u) = v
                && !url_ok(u)
            {
                out.push((key, format!("must be an http(s) URL, not {u:?}")));
            }
        }
        if super::text::is_blank(&self.client_id) {
            out.push(("client_id", "must not be empty".into()));
        }
        let discovers = self.provider == Provider::Generic && r.issuer.is_some();
        if r.token_endpoint.is_none() && !discovers {
            out.push((
                "token_endpoint",
                "is required (or an issuer to discover it from)".into(),
            ));
        }
        if strategy == Strategy::AuthorizationCode
            && r.authorization_endpoint.is_none()
            && !discovers
        {
            out.push((
                "authorization_endpoint",
                "is required for authorization_code (or an issuer to discover it from)".into(),
            ));
        }
        if strategy == Strategy::IdJag && self.issuer.is_none() {
            out.push((
                "issuer",
                "is required for id_jag: it is the `aud` of the ID-JAG".into(),
            ));
        }
        if strategy != Strategy::IdJag && self.id_jag_source == IdJagSource::IdpExchange {
            out.push((
                "id_jag_source",
                "idp_exchange is only for id_jag connectors".into(),
            ));
        }
        if strategy == Strategy::TokenExchange && self.issuer.is_none() {
            out.push((
                "issuer",
                "is required for token_exchange: it is the `aud` of the subject token".into(),
            ));
        }
        if self.client_secret.is_some() && self.client_secret_env.is_some() {
            out.push((
                "client_secret_env",
                "give client_secret or client_secret_env, not both".into(),
            ));
        }
        let has_secret = self.client_secret.is_some() || self.client_secret_env.is_some();
        if self.client_auth != ClientAuth::PrivateKeyJwt && !has_secret {
            out.push((
                "client_secret",
                "is required unless client_auth is private_key_jwt".into(),
            ));
        }
        if let Some(0) = self.default_token_ttl_secs {
            out.push(("default_token_ttl_secs", "must be at least 1".into()));
        }
        if let Some(ms) = self.timeout_ms
            && !(100..=60_000).contains(&ms)
        {
            out.push(("timeout_ms", "must be from 100 to 60000".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests;
