//! A token response that refuses to leave late. The vend fence (`service::access::fence`)
//! lets a vend answer only until `answer_by`, the moment after which a revocation that moved
//! the epoch since the vend's read may already have answered. Checking that when the vend is
//! decided leaves the stretch until the socket write unguarded: a thread stalled there for a
//! few milliseconds (a busy host) could deliver a token after the revocation returned. The
//! body checks again when hyper takes the bytes to write them. Past the instant it reads the
//! user's epoch again ([`Reconfirm`]) and goes out with a new deadline if nothing moved; if
//! the epoch moved, the vault failed or the re-read budget is spent it fails instead, hyper
//! drops the connection without the token, and the gateway retries. A withheld response
//! leaves a `withheld` audit record after its vend's `ok` ([`WithheldAudit`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use http_body::{Frame, SizeHint};

use crate::service::audit_sink::WithheldAudit;
use crate::service::vend::Reconfirm;

/// A re-read of the epoch in flight: the new deadline, or `None` to withhold.
type Confirming = Pin<Box<dyn Future<Output = Option<Instant>> + Send>>;

/// Counters a fenced body reports to (`/metrics`).
#[derive(Debug, Default)]
pub struct FenceCounters {
    /// Responses withheld.
    pub late: AtomicU64,
    /// Late responses whose epoch was read again (sent or withheld after it).
    pub reconfirmed: AtomicU64,
}

/// The JSON of a token response, with the instant it must be written by.
pub struct FencedBody {
    bytes: Option<Bytes>,
    answer_by: Instant,
    reconfirm: Option<Reconfirm>,
    confirming: Option<Confirming>,
    counters: Arc<FenceCounters>,
    withheld: Option<WithheldAudit>,
}

impl FencedBody {
    /// A body of `bytes` that may be sent until `answer_by`, or later once `reconfirm`
    /// (when given) has read the epoch unchanged again.
    pub fn new(
        bytes: Bytes,
        answer_by: Instant,
        reconfirm: Option<Reconfirm>,
        counters: Arc<FenceCounters>,
    ) -> Self {
        Self {
            bytes: Some(bytes),
            answer_by,
            reconfirm,
            confirming: None,
            counters,
            withheld: None,
        }
    }

    /// Leaves `withheld` in the audit if the response is withheld.
    pub fn audited(mut self, withheld: WithheldAudit) -> Self {
        self.withheld = Some(withheld);
        self
    }

    fn withhold(&mut self) -> Poll<Option<Result<Frame<Bytes>, Late>>> {
        self.bytes = None;
        self.counters.late.fetch_add(1, Ordering::Relaxed);
        if let Some(withheld) = self.withheld.take() {
            withheld.record();
        }
        tracing::warn!("token response withheld: written too long after the epoch read");
        Poll::Ready(Some(Err(Late)))
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
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Late>>> {
        let this = self.get_mut();
        if let Some(confirming) = this.confirming.as_mut() {
            match confirming.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(outcome) => {
                    this.confirming = None;
                    match outcome {
                        Some(by) => this.answer_by = by,
                        None => return this.withhold(),
                    }
                }
            }
        }
        let Some(bytes) = this.bytes.take() else {
            return Poll::Ready(None);
        };
        if Instant::now() < this.answer_by {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(reconfirm) = this.reconfirm.take() else {
            return this.withhold();
        };
        this.bytes = Some(bytes);
        this.counters.reconfirmed.fetch_add(1, Ordering::Relaxed);
        this.confirming = Some(Box::pin(reconfirm.confirm()));
        // Polled now, so the read is sent and this task woken when it answers.
        Pin::new(this).poll_frame(cx)
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
    use crate::domain::vault::{Projection, Vault};
    use crate::domain::{OrgId, UserId};
    use crate::service::access::VendFence;
    use crate::store::vault_memory::MemoryVault;
    use http_body::Body as _;
    use http_body_util::BodyExt;
    use std::time::Duration;

    const BODY: &[u8] = b"{\"access_token\":\"t\"}";

    fn body(answer_by: Instant, reconfirm: Option<Reconfirm>) -> (FencedBody, Arc<FenceCounters>) {
        let counters = Arc::new(FenceCounters::default());
        let body = FencedBody::new(
            Bytes::from_static(BODY),
            answer_by,
            reconfirm,
            counters.clone(),
        );
        (body, counters)
    }

    /// User `u` of org `o` at epoch 3.
    fn projection(active: bool) -> Projection {
        Projection {
            active,
            epoch: 3,
            connectors: Default::default(),
        }
    }

    /// A vault holding one active user at epoch 3, and a check for a vend of that epoch
    /// that read it `read_ago` ago.
    async fn vault_and_check(read_ago: Duration) -> (Arc<MemoryVault>, Reconfirm) {
        let vault = Arc::new(MemoryVault::new());
        let (org, user) = (OrgId::new("o"), UserId::new("u"));
        let p = projection(true);
        vault.put_projection(&org, &user, &p).await.unwrap();
        let check = Reconfirm::new(
            vault.clone(),
            VendFence,
            org,
            user,
            3,
            Instant::now() - read_ago,
        );
        (vault, check)
    }

    #[tokio::test]
    async fn in_time_the_bytes_go_out() {
        let (body, counters) = body(Instant::now() + Duration::from_secs(5), None);
        assert_eq!(body.size_hint().exact(), Some(BODY.len() as u64));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], BODY);
        assert_eq!(counters.late.load(Ordering::Relaxed), 0);
        assert_eq!(counters.reconfirmed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn too_late_without_a_check_nothing_goes_out() {
        let (body, counters) = body(Instant::now(), None);
        assert!(body.collect().await.is_err());
        assert_eq!(counters.late.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn too_late_with_the_epoch_unchanged_the_bytes_go_out_after_a_re_read() {
        let (_vault, check) = vault_and_check(Duration::from_millis(20)).await;
        let (body, counters) = body(Instant::now(), Some(check));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], BODY);
        assert_eq!(counters.reconfirmed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.late.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn too_late_after_a_revocation_nothing_goes_out() {
        let (vault, check) = vault_and_check(Duration::from_millis(20)).await;
        let (org, user) = (OrgId::new("o"), UserId::new("u"));
        let p = projection(true);
        let (epoch, _) = vault.revoke(&org, &user, &p, None).await.unwrap();
        assert_eq!(epoch, 4);
        let (body, counters) = body(Instant::now(), Some(check));
        assert!(body.collect().await.is_err());
        assert_eq!(counters.reconfirmed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.late.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn too_late_for_an_inactive_user_nothing_goes_out() {
        let (vault, check) = vault_and_check(Duration::from_millis(20)).await;
        let (org, user) = (OrgId::new("o"), UserId::new("u"));
        // Same epoch but inactive: a projection written without a revocation cannot happen
        // in the broker, yet the check must still refuse it.
        let p = projection(false);
        vault.put_projection(&org, &user, &p).await.unwrap();
        let (body, counters) = body(Instant::now(), Some(check));
        assert!(body.collect().await.is_err());
        assert_eq!(counters.late.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn too_late_past_the_re_read_budget_nothing_goes_out() {
        let spent = crate::service::access::RECHECK_BUDGET + Duration::from_millis(1);
        let (_vault, check) = vault_and_check(spent).await;
        let (body, counters) = body(Instant::now(), Some(check));
        assert!(body.collect().await.is_err());
        assert_eq!(counters.late.load(Ordering::Relaxed), 1);
    }
}
