//! The one way a JSON request body is read. It honours `server.max_body_bytes` (the limit the
//! router's `DefaultBodyLimit` enforces and that `http::app` leaves in the request's
//! extensions) and names that limit in its 413; malformed JSON is a 400 naming serde's
//! message. [`JsonBody`] answers problem+json, [`ScimBody`] the SCIM error schema (any content
//! type is read, so `application/scim+json` is as good as `application/json`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::{ApiError, BodyError, ScimResponseError};
use super::{AppState, HttpLimits};

/// The `{org}` segment of the matched route (empty when the route has none), for the
/// authentication extractors, which run before the handler's own `Path`.
pub async fn path_org(
    parts: &mut axum::http::request::Parts,
    state: &AppState,
) -> Result<String, String> {
    use axum::extract::FromRequestParts;
    let params = axum::extract::RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| e.body_text())?;
    Ok(params
        .iter()
        .find(|(k, _)| *k == "org")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default())
}

/// A JSON body on the broker's own APIs.
pub struct JsonBody<T>(pub T);

/// A JSON body that may be absent: an empty (or all-whitespace) body or `null` is `None`.
pub struct OptionalJsonBody<T>(pub Option<T>);

/// A JSON body on `/scim`.
pub struct ScimBody<T>(pub T);

/// The body's bytes, within the configured limit.
async fn bytes(req: Request, state: &AppState) -> Result<Bytes, BodyError> {
    // `http::app` always installs the limits; axum's own default is the fallback.
    let limit = req
        .extensions()
        .get::<HttpLimits>()
        .map_or(2 * 1024 * 1024, |l| l.max_body_bytes);
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            BodyError::TooLarge { limit }
        } else {
            BodyError::Unreadable(e.body_text())
        }
    })
}

/// Every body the APIs take is a JSON object. serde's derived structs would also take a JSON
/// array (the fields in order), which no document describes: only an object is read.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(BodyError::Malformed(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| BodyError::Malformed(e.to_string()))
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self(parse(&bytes(req, state).await?)?))
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let b = bytes(req, state).await?;
        if b.iter().all(u8::is_ascii_whitespace) || b.trim_ascii() == b"null" {
            return Ok(Self(None));
        }
        Ok(Self(Some(parse::<T>(&b)?)))
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for ScimBody<T> {
    type Rejection = ScimResponseError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ScimResponseError> {
        Ok(Self(parse(&bytes(req, state).await?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default)]
    struct AllOptional {
        #[allow(dead_code)]
        name: Option<String>,
    }

    #[test]
    fn only_an_object_is_read() {
        assert!(parse::<AllOptional>(b"{}").is_ok());
        assert!(parse::<AllOptional>(b" \n{\"name\": \"a\"}").is_ok());
        for body in [&b"[]"[..], b"[\"a\"]", b"null", b"1", b"\"x\"", b""] {
            assert!(
                parse::<AllOptional>(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
