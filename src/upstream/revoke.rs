//! Revoking a token at an upstream, by the method its declaration resolves to: RFC 7009,
//! GitHub's `DELETE` with client authentication, Slack's Bearer `auth.revoke`, or none.
//!
//! RFC 7009 requests are built by the token module's client authentication and read by the
//! shared error reader rather than with `oauth2`'s `revoke_token`, for the reasons given in
//! [`super::token`] (no `private_key_jwt`; the status that tells a 503 from a refusal is lost).
//!
//! Invariants: the outcome is a receipt: [`RevokeOutcome::Revoked`] also when the upstream says
//! the token was already dead (RFC 7009 §2.2's 200 for an invalid token, GitHub's 404, Slack's
//! `token_revoked`/`invalid_auth`); a failure says whether retrying may help; an upstream with
//! no revocation method is told without a request.

use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::{Method, Url};
use serde_json::Value;

use super::error::{SERVER_ERROR, UpstreamError, answer_error};
use super::token::{ClientAuthn, basic, bearer_like};
use super::wire::{Raw, origin_of};
use super::{Endpoints, UpstreamClient};
use crate::domain::consent::TokenKind;
use crate::domain::upstream::{Revocation, Upstream};

/// What revoking one token came to: the revocation outbox's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The token is dead at the upstream (revoked now, or already).
    Revoked,
    /// The upstream offers no way to revoke it; the text says why (for the receipt).
    Unsupported(String),
    /// Not revoked.
    Failed {
        /// Whether a later attempt may succeed (5xx, timeout, open circuit, spent budget).
        transient: bool,
        /// The upstream's error code, or the client's (see [`UpstreamError::code`]).
        error: String,
    },
}

impl From<UpstreamError> for RevokeOutcome {
    fn from(e: UpstreamError) -> Self {
        RevokeOutcome::Failed {
            transient: e.is_transient(),
            error: e.code().to_string(),
        }
    }
}

/// Slack's `error` codes that mean the token no longer works.
const SLACK_ALREADY_DEAD: [&str; 2] = ["token_revoked", "invalid_auth"];

/// RFC 7009 §2.2: any 2xx is revoked (an unknown token included); the rest by the shared reader.
fn read_rfc7009(raw: &Raw) -> Result<(), UpstreamError> {
    match answer_error(raw.status, &raw.body) {
        _ if (200..300).contains(&raw.status) => Ok(()),
        Some(e) => Err(e),
        None => Err(UpstreamError::transient(SERVER_ERROR)),
    }
}

/// GitHub: 204 revoked, 404 already gone.
fn read_github(raw: &Raw) -> Result<(), UpstreamError> {
    match raw.status {
        200..=299 | 404 => Ok(()),
        s => Err(answer_error(s, &raw.body).unwrap_or(UpstreamError::transient(SERVER_ERROR))),
    }
}

/// Slack: `{"ok":true}`, or an error naming an already-dead token.
fn read_slack(raw: &Raw) -> Result<(), UpstreamError> {
    let ok = serde_json::from_slice::<Value>(&raw.body)
        .ok()
        .and_then(|v| v.get("ok").and_then(Value::as_bool));
    match answer_error(raw.status, &raw.body) {
        None if ok == Some(true) => Ok(()),
        Some(UpstreamError::Refused { error, .. })
            if SLACK_ALREADY_DEAD.contains(&error.as_str()) =>
        {
            Ok(())
        }
        Some(e) => Err(e),
        None => Err(UpstreamError::transient(SERVER_ERROR)),
    }
}

impl UpstreamClient {
    /// Revokes one token by the resolved [`Revocation`] method (`kind` is RFC 7009's
    /// `token_type_hint`; the other methods need none).
    pub async fn revoke(
        &self,
        u: &Upstream,
        ep: &Endpoints,
        auth: &ClientAuthn<'_>,
        token: &str,
        kind: TokenKind,
    ) -> RevokeOutcome {
        let target = match &ep.revocation {
            Revocation::Rfc7009 => ep.revocation_endpoint.as_ref().map(Url::as_str),
            Revocation::DeleteWithClientAuth { url } | Revocation::BearerPost { url } => {
                Some(url.as_str())
            }
            Revocation::Unsupported { .. } => None,
        };
        let outcome = match &ep.revocation {
            Revocation::Unsupported { why } => return RevokeOutcome::Unsupported(why.clone()),
            Revocation::Rfc7009 => match &ep.revocation_endpoint {
                None => {
                    return RevokeOutcome::Unsupported(
                        "the upstream has no revocation endpoint".into(),
                    );
                }
                Some(url) => self.rfc7009(u, ep, auth, url, token, kind).await,
            },
            Revocation::DeleteWithClientAuth { url } => self.github(u, auth, url, token).await,
            Revocation::BearerPost { url } => self.bearer_post(u, url, token).await,
        };
        match outcome {
            Ok(()) => RevokeOutcome::Revoked,
            Err(e) => {
                tracing::warn!(
                    origin = %target
                        .and_then(|t| Url::parse(t).ok())
                        .and_then(|u| origin_of(&u).ok())
                        .unwrap_or_default(),
                    error = e.code(),
                    kind = kind.as_str(),
                    "upstream revocation failed"
                );
                e.into()
            }
        }
    }

    async fn rfc7009(
        &self,
        u: &Upstream,
        ep: &Endpoints,
        auth: &ClientAuthn<'_>,
        url: &Url,
        token: &str,
        kind: TokenKind,
    ) -> Result<(), UpstreamError> {
        let form = vec![
            ("token", token.to_string()),
            ("token_type_hint", kind.as_str().to_string()),
        ];
        read_rfc7009(&self.post_form(u, ep, auth, url, form).await?)
    }

    async fn github(
        &self,
        u: &Upstream,
        auth: &ClientAuthn<'_>,
        template: &str,
        token: &str,
    ) -> Result<(), UpstreamError> {
        let id: String =
            openidconnect::url::form_urlencoded::byte_serialize(auth.client_id.as_bytes())
                .collect();
        let url = Url::parse(&template.replace("{client_id}", &id))
            .map_err(|e| UpstreamError::Config(format!("revocation url: {e}")))?;
        let secret = auth.secret.ok_or_else(|| {
            UpstreamError::Config("revocation by DELETE needs the client secret".into())
        })?;
        let body = serde_json::json!({ "access_token": token });
        let raw = self
            .inner
            .wire
            .send(Method::DELETE, &url, self.timeout(u), |rb| {
                rb.header(AUTHORIZATION, basic(auth.client_id, secret))
                    .header(ACCEPT, "application/vnd.github+json")
                    .json(&body)
            })
            .await?;
        read_github(&raw)
    }

    async fn bearer_post(&self, u: &Upstream, url: &str, token: &str) -> Result<(), UpstreamError> {
        let url =
            Url::parse(url).map_err(|e| UpstreamError::Config(format!("revocation url: {e}")))?;
        let raw = self
            .inner
            .wire
            .send(Method::POST, &url, self.timeout(u), |rb| {
                rb.header(AUTHORIZATION, bearer_like("Bearer", token))
                    .header(ACCEPT, "application/json")
            })
            .await?;
        read_slack(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(status: u16, body: &str) -> Raw {
        Raw {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn receipts_per_method() {
        assert!(read_rfc7009(&raw(200, "")).is_ok());
        let e = read_rfc7009(&raw(400, r#"{"error":"unsupported_token_type"}"#)).unwrap_err();
        assert_eq!(
            (e.is_transient(), e.code()),
            (false, "unsupported_token_type")
        );
        assert!(read_rfc7009(&raw(503, "")).unwrap_err().is_transient());
        assert!(read_github(&raw(204, "")).is_ok());
        assert!(read_github(&raw(404, r#"{"message":"Not Found"}"#)).is_ok());
        assert_eq!(
            read_github(&raw(422, "{}")).unwrap_err().code(),
            "unexpected_response"
        );
        assert!(read_slack(&raw(200, r#"{"ok":true,"revoked":true}"#)).is_ok());
        assert!(read_slack(&raw(200, r#"{"ok":false,"error":"token_revoked"}"#)).is_ok());
        assert!(read_slack(&raw(200, r#"{"ok":false,"error":"invalid_auth"}"#)).is_ok());
        let e = read_slack(&raw(200, r#"{"ok":false,"error":"not_allowed"}"#)).unwrap_err();
        assert_eq!((e.is_transient(), e.code()), (false, "not_allowed"));
        assert!(read_slack(&raw(200, "<html>")).unwrap_err().is_transient());
    }
}
