//! Upstream revocation on offboarding: the durable outbox and its worker.
//!
//! A revocation that takes a user's access away (deactivation, deletion, lock, a lost
//! connector) removes the user's grants and enqueues the revocation of each, plus the
//! upstream access tokens the vault held, in one transaction of the system of record, before
//! the caller answers. Every replica runs a worker that claims due rows (a lease, so two
//! replicas never deliver the same row at once), calls the upstream, and records the result
//! on the row, which is the receipt: `revoked`, `unsupported` (the provider offers no way) or,
//! after [`MAX_ATTEMPTS`] with backoff, `failed`. Rows survive restarts; a row whose lease
//! lapsed (its worker died) is due again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Upstreams, secrets};
use crate::domain::audit::AuditEntry;
use crate::domain::connector::Strategy;
use crate::domain::consent::{
    IDP_GRANT, RevocationItem, RevocationRow, RevocationStatus, TokenKind,
};
use crate::domain::ports::AuditWriter;
use crate::domain::ports::PolicyStore;
use crate::domain::{OrgId, UserId};
use crate::upstream::{ClientAuthn, RevokeOutcome};

/// Attempts before a revocation is given up as `failed`.
pub const MAX_ATTEMPTS: u32 = 8;
/// How long a claimed row is someone's.
const LEASE_MS: i64 = 60_000;
/// Rows claimed per pass.
const BATCH: u32 = 50;

impl Upstreams {
    /// Removes the user's grants (all, or those of `connectors`) and queues their revocation
    /// upstream with the access tokens in `held` (connector → access token), in one write.
    pub async fn offboard(
        &self,
        org: &OrgId,
        user: &UserId,
        connectors: Option<&[String]>,
        held: &[(String, String)],
        epoch: u64,
    ) -> Result<Vec<RevocationRow>, crate::domain::StoreError> {
        let extra: Vec<RevocationItem> = held
            .iter()
            .map(|(connector, token)| RevocationItem {
                connector: connector.clone(),
                kind: TokenKind::AccessToken,
                sealed: secrets::seal_revocation(&self.ring, org, user, connector, token),
            })
            .collect();
        self.consents
            .revoke_upstream(org, user, connectors, &extra, epoch, self.clock.now_ms())
            .await
    }

    /// Delivers one claimed row; returns its new status.
    async fn deliver(
        &self,
        policy: &dyn PolicyStore,
        row: &RevocationRow,
    ) -> (RevocationStatus, Option<String>) {
        let connectors = match policy.connectors(&row.org).await {
            Ok(c) => c,
            Err(e) => return (RevocationStatus::Pending, Some(format!("store: {e}"))),
        };
        // The person's IdP grant goes back to the org's IdP; any other to its connector's AS.
        let found = if row.connector == IDP_GRANT {
            self.idps.get(row.org.as_str()).map(|i| &i.upstream)
        } else {
            connectors
                .iter()
                .find(|c| c.id == row.connector && c.strategy != Strategy::BrokerJwt)
                .and_then(|c| c.upstream.as_ref())
        };
        let Some(u) = found else {
            return (
                RevocationStatus::Failed,
                Some("the connector was deleted; its upstream is unknown".into()),
            );
        };
        let Ok(token) =
            secrets::open_queued(&self.ring, &row.org, &row.user, &row.connector, &row.sealed)
        else {
            return (
                RevocationStatus::Failed,
                Some("the queued token does not open (vault key missing?)".into()),
            );
        };
        let ep = match self.client.endpoints(u).await {
            Ok(ep) => ep,
            Err(e) => return (RevocationStatus::Pending, Some(e.to_string())),
        };
        let secret = match self.client_secret(&row.org, &row.connector, u) {
            Ok(s) => s,
            Err(e) => return (RevocationStatus::Failed, Some(e.to_string())),
        };
        let sign = self.client_assertion(&row.org, u);
        let authn = ClientAuthn {
            client_id: &u.client_id,
            secret: secret.as_ref(),
            assertion: (u.client_auth == crate::domain::upstream::ClientAuth::PrivateKeyJwt)
                .then_some(sign.as_ref()),
        };
        use secrecy::ExposeSecret;
        match self
            .client
            .revoke(u, &ep, &authn, token.expose_secret(), row.kind)
            .await
        {
            RevokeOutcome::Revoked => (RevocationStatus::Revoked, None),
            RevokeOutcome::Unsupported(why) => (RevocationStatus::Unsupported, Some(why)),
            RevokeOutcome::Failed {
                transient: true,
                error,
            } => (RevocationStatus::Pending, Some(error)),
            RevokeOutcome::Failed { error, .. } => (RevocationStatus::Failed, Some(error)),
        }
    }
}

/// The outbox worker of one replica.
#[derive(Clone)]
pub struct RevocationWorker {
    upstreams: Upstreams,
    policy: Arc<dyn PolicyStore>,
    audit: Arc<dyn AuditWriter>,
}

impl RevocationWorker {
    /// Builds the worker.
    pub fn new(
        upstreams: Upstreams,
        policy: Arc<dyn PolicyStore>,
        audit: Arc<dyn AuditWriter>,
    ) -> Self {
        Self {
            upstreams,
            policy,
            audit,
        }
    }

    /// Works the outbox every `every` until the task is aborted.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.pass().await {
                    tracing::warn!(error = %e, "upstream revocation pass failed; retrying");
                }
            }
        })
    }

    /// One pass: claims due rows and delivers them; how many were worked.
    pub async fn pass(&self) -> Result<usize, crate::domain::StoreError> {
        let u = &self.upstreams;
        let now = u.clock.now_ms();
        let rows = u.consents.claim_revocations(now, LEASE_MS, BATCH).await?;
        let n = rows.len();
        let work = rows.into_iter().map(|row| async move {
            let (mut status, error) = u.deliver(self.policy.as_ref(), &row).await;
            let attempts = row.attempts + 1;
            if status == RevocationStatus::Pending && attempts >= MAX_ATTEMPTS {
                status = RevocationStatus::Failed;
            }
            let now = u.clock.now_ms();
            // Backoff: 1 s, 2 s, 4 s … capped at five minutes.
            let next = now + (1_000i64 << attempts.min(8)).min(300_000);
            if let Err(e) = u
                .consents
                .record_revocation(&row.id, status, attempts, error.as_deref(), next, now)
                .await
            {
                tracing::warn!(error = %e, "upstream revocation result not recorded; the row is retried");
                return;
            }
            let counter = match status {
                RevocationStatus::Revoked => Some(&u.counters.revoked),
                RevocationStatus::Unsupported => Some(&u.counters.unsupported),
                RevocationStatus::Failed => Some(&u.counters.failed),
                RevocationStatus::Pending => None,
            };
            if let Some(c) = counter {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if status != RevocationStatus::Pending {
                let entry = AuditEntry {
                    org: row.org.clone(),
                    at_ms: now,
                    actor: "broker:outbox".into(),
                    action: format!("upstream.revocation.{}", status.as_str()),
                    resource_type: "User".into(),
                    resource_id: row.user.to_string(),
                    summary: json!({"connector": row.connector, "token_kind": row.kind.as_str(),
                        "attempts": attempts, "last_error": error, "epoch": row.epoch}),
                };
                if let Err(e) = self.audit.append(&[entry]).await {
                    tracing::warn!(error = %e, "upstream revocation audit record not written");
                }
            }
        });
        futures_util::future::join_all(work).await;
        Ok(n)
    }
}
