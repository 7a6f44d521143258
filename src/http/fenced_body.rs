//! A token response that refuses to leave late. The vend fence (`service::access::fence`)
//! lets a vend answer only until `answer_by`, the moment after which a revocation that moved
//! the epoch since the vend's read may already have answered. Checking that when the vend is
//! decided leaves the stretch until the socket write unguarded: a thread stalled there for a
//! few milliseconds (a busy host) could deliver a token after the revocation returned. The
//! body checks again when hyper takes the bytes to write them; past the instant it fails
//! instead, hyper drops the connection without the token, and the gateway retries.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use http_body::{Frame, SizeHint};

/// The JSON of a token response, with the instant it must be written by.
pub struct FencedBody {
    bytes: Option<Bytes>,
    answer_by: Instant,
    /// Counted when the body refuses to be sent.
    late: Arc<AtomicU64>,
}

impl FencedBody {
    /// A body of `bytes` that may be sent until `answer_by`.
    pub fn new(bytes: Bytes, answer_by: Instant, late: Arc<AtomicU64>) -> Self {
        Self {
            bytes: Some(bytes),
            answer_by,
            late,
        }
    }
}

/// Why a token response was not sent.
#[derive(Debug, thiserror::Error)]
#[error("the vend fence closed before the token response was written")]
pub struct Late;

impl http_body::Body for FencedBody {
    type Data = Bytes;
    type Error = Late;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Late>>> {
        let this = self.get_mut();
        Poll::Ready(match this.bytes.take() {
            None => None,
            Some(bytes) if Instant::now() < this.answer_by => Some(Ok(Frame::data(bytes))),
            Some(_) => {
                this.late.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("token response withheld: written too long after the epoch read");
                Some(Err(Late))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[tokio::test]
    async fn in_time_the_bytes_go_out() {
        let late = Arc::new(AtomicU64::new(0));
        let body = FencedBody::new(
            Bytes::from_static(b"{\"access_token\":\"t\"}"),
            Instant::now() + Duration::from_secs(5),
            late.clone(),
        );
        assert_eq!(body.size_hint().exact(), Some(20));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"{\"access_token\":\"t\"}");
        assert_eq!(late.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn too_late_nothing_goes_out() {
        let late = Arc::new(AtomicU64::new(0));
        let body = FencedBody::new(
            Bytes::from_static(b"{\"access_token\":\"t\"}"),
            Instant::now(),
            late.clone(),
        );
        assert!(body.collect().await.is_err());
        assert_eq!(late.load(Ordering::Relaxed), 1);
    }
}
