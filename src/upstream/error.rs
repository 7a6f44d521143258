//! Upstream failures, and the one reader of an authorization server's error answers.
//!
//! Every answer of every endpoint (token, revocation, discovery) is judged by
//! [`answer_error`], whatever built the request: the RFC 6749 §5.2 error object is read by
//! [`parse_error`] alone, so a 400 `invalid_grant`, GitHub's and Slack's 200 with `error`, and a
//! 503 `temporarily_unavailable` are told apart in one place.
//!
//! Invariants: 4xx answers and 2xx answers carrying `error` are permanent ([`UpstreamError::Refused`]);
//! 5xx, 429, timeouts, broken connections and unreadable bodies are transient. Error codes
//! taken from an upstream are reduced to RFC 6749's character set and a bounded length before
//! they are logged or returned, so a hostile AS cannot inject text into logs or API answers.

use serde_json::Value;

/// Why a call to an upstream authorization server (AS) did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The AS answered with an RFC 6749 error (4xx, or a 2xx body with `error`): permanent,
    /// do not retry.
    #[error("the upstream refused the request: {error} (HTTP {status})")]
    Refused {
        /// The HTTP status of the answer.
        status: u16,
        /// The upstream's `error` code (RFC 6749 §5.2), or `invalid_client`/`unexpected_response`
        /// for a 4xx without an error object.
        error: String,
        /// The upstream's `error_description`, if any (not shown in `Display`).
        description: Option<String>,
    },
    /// 5xx, 429, timeout, connection failure, unparsable body: transient.
    #[error("the upstream is unavailable: {error}")]
    Transient {
        /// The upstream's `error` code when it sent one, else `server_error` (5xx, unreadable
        /// answer) or `temporarily_unavailable` (429, timeout, connection failure).
        error: String,
    },
    /// The circuit for this upstream is open (recent failures): transient, no request sent.
    #[error("the upstream's circuit is open after repeated failures")]
    CircuitOpen,
    /// The rate budget for this upstream is spent for longer than `max_wait`: transient, no
    /// request sent.
    #[error("the upstream's rate budget is spent")]
    RateLimited,
    /// Misconfiguration (no token endpoint, bad URL, discovery mismatch, missing secret).
    #[error("upstream misconfigured: {0}")]
    Config(String),
}

/// The code of a timeout, a refused connection or a 429 without an error object.
pub(super) const UNAVAILABLE: &str = "temporarily_unavailable";
/// The code of a 5xx without an error object, or of an unreadable answer.
pub(super) const SERVER_ERROR: &str = "server_error";

impl UpstreamError {
    /// Whether trying again later may succeed (the service keeps the grant and answers 502/503
    /// without marking it for re-consent).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Transient { .. }
                | UpstreamError::CircuitOpen
                | UpstreamError::RateLimited
        )
    }

    /// A stable code for the API answer and the audit record: the upstream's `error` code, or
    /// `circuit_open`, `rate_limited`, `invalid_configuration` for what never reached it.
    pub fn code(&self) -> &str {
        match self {
            UpstreamError::Refused { error, .. } | UpstreamError::Transient { error } => error,
            UpstreamError::CircuitOpen => "circuit_open",
            UpstreamError::RateLimited => "rate_limited",
            UpstreamError::Config(_) => "invalid_configuration",
        }
    }

    /// A transient error with a code.
    pub(super) fn transient(code: &str) -> Self {
        UpstreamError::Transient { error: code.into() }
    }
}

/// An RFC 6749 §5.2 error object, as read from a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OAuthError {
    /// `error`, sanitized.
    pub error: String,
    /// `error_description`, sanitized.
    pub description: Option<String>,
}

/// Longest error code kept; RFC 6749 codes are short words.
const MAX_CODE_LEN: usize = 64;
/// Longest description kept.
const MAX_DESCRIPTION_LEN: usize = 256;

/// Keeps the characters RFC 6749 §5.2 allows in `error` and `error_description`
/// (%x20-21 / %x23-5B / %x5D-7E), up to `max` of them.
fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| matches!(c, ' '..='~') && *c != '"' && *c != '\\')
        .take(max)
        .collect()
}

/// The one RFC 6749 error reader: `Some` when `body` is a JSON object with a string `error`
/// (what RFC 6749 §5.2 servers send, and what GitHub and Slack put in their 200 answers).
pub(super) fn parse_error(body: &[u8]) -> Option<OAuthError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = sanitize(v.get("error")?.as_str()?, MAX_CODE_LEN);
    if error.trim().is_empty() {
        return None;
    }
    let description = v
        .get("error_description")
        .and_then(Value::as_str)
        .map(|d| sanitize(d, MAX_DESCRIPTION_LEN));
    Some(OAuthError { error, description })
}

/// What an answer means when it is not a success: `None` for a 2xx without `error` (the caller
/// reads its own success shape), else the error. Shared by token, revocation and discovery.
pub(super) fn answer_error(status: u16, body: &[u8]) -> Option<UpstreamError> {
    let parsed = parse_error(body);
    match status {
        429 | 500..=599 => Some(UpstreamError::transient(parsed.as_ref().map_or(
            if status == 429 {
                UNAVAILABLE
            } else {
                SERVER_ERROR
            },
            |e| &e.error,
        ))),
        // Redirects are not followed: a token endpoint that redirects is configured wrong.
        300..=399 => Some(UpstreamError::Config(format!(
            "the upstream answered HTTP {status} (a redirect); configure the final URL"
        ))),
        _ => match parsed {
            Some(e) => Some(UpstreamError::Refused {
                status,
                error: e.error,
                description: e.description,
            }),
            None if (400..=499).contains(&status) => Some(UpstreamError::Refused {
                status,
                // RFC 6749 §5.2: a 401 from a token endpoint is a failed client authentication.
                error: if status == 401 {
                    "invalid_client"
                } else {
                    "unexpected_response"
                }
                .into(),
                description: Some(format!("HTTP {status} without an RFC 6749 error object")),
            }),
            None if (200..=299).contains(&status) => None,
            None => Some(UpstreamError::transient(SERVER_ERROR)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_once_for_every_endpoint() {
        let refused = |e: Option<UpstreamError>| match e {
            Some(UpstreamError::Refused { status, error, .. }) => Some((status, error)),
            _ => None,
        };
        let grant = br#"{"error":"invalid_grant","error_description":"expired"}"#;
        assert_eq!(
            refused(answer_error(400, grant)),
            Some((400, "invalid_grant".into()))
        );
        // GitHub and Slack: 200 with `error`.
        let gh = br#"{"error":"bad_verification_code","error_uri":"https://docs"}"#;
        assert_eq!(
            refused(answer_error(200, gh)),
            Some((200, "bad_verification_code".into()))
        );
        let slack = br#"{"ok":false,"error":"invalid_code"}"#;
        assert_eq!(
            refused(answer_error(200, slack)),
            Some((200, "invalid_code".into()))
        );
        assert_eq!(
            refused(answer_error(401, b"")),
            Some((401, "invalid_client".into()))
        );
        assert_eq!(
            refused(answer_error(404, b"<html>")),
            Some((404, "unexpected_response".into()))
        );
        for (status, body, code) in [
            (500, &b""[..], "server_error"),
            (
                503,
                br#"{"error":"temporarily_unavailable"}"#,
                "temporarily_unavailable",
            ),
            (429, br#"{"error":"slow_down"}"#, "slow_down"),
            (429, b"", "temporarily_unavailable"),
        ] {
            let e = answer_error(status, body).unwrap();
            assert!(e.is_transient(), "{status}");
            assert_eq!(e.code(), code);
        }
        assert_eq!(answer_error(200, br#"{"access_token":"x"}"#), None);
        assert_eq!(answer_error(204, b""), None);
        assert!(matches!(
            answer_error(302, b""),
            Some(UpstreamError::Config(_))
        ));
    }

    #[test]
    fn hostile_error_codes_are_bounded_and_cleaned() {
        let long = format!(r#"{{"error":"{}"}}"#, "a".repeat(10_000));
        assert_eq!(
            parse_error(long.as_bytes()).unwrap().error.len(),
            MAX_CODE_LEN
        );
        let injected = br#"{"error":"bad\r\nlevel=ERROR \"x\"","error_description":"d\u0000"}"#;
        let e = parse_error(injected).unwrap();
        assert_eq!(e.error, "badlevel=ERROR x");
        assert_eq!(e.description.as_deref(), Some("d"));
        for not_an_error in [
            &br#"{"error":{"code":1}}"#[..],
            br#"{"error":""}"#,
            br#"["error"]"#,
            b"error",
        ] {
            assert_eq!(parse_error(not_an_error), None);
        }
    }

    #[test]
    fn codes_and_transience() {
        assert_eq!(UpstreamError::CircuitOpen.code(), "circuit_open");
        assert_eq!(UpstreamError::RateLimited.code(), "rate_limited");
        assert_eq!(
            UpstreamError::Config("x".into()).code(),
            "invalid_configuration"
        );
        assert!(UpstreamError::RateLimited.is_transient());
        assert!(!UpstreamError::Config("x".into()).is_transient());
    }
}
