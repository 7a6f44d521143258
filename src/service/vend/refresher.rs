//! The background refresher: renews upstream access tokens minted from stored grants a little
//! before vends would have to, so a person's first vend after a quiet spell does not wait for
//! the upstream.
//!
//! It finds what is due through the grants' due-time index (never a scan of every token),
//! and renews through the very path a vend takes (the single-flight lock, the grant's
//! compare-and-set, the vault's epoch compare-and-set), so it can race vends and other
//! replicas freely. It fails closed like a vend: a user the projection does not show active
//! and entitled now is not refreshed.

use std::sync::Arc;
use std::time::Duration;

use super::upstream::{Miss, Obtained, refresher_window};
use super::{UserRef, Vend, VendRequest};
use crate::domain::consent::Consents;
use crate::domain::{OrgId, UserId};
use crate::service::tokens::open;

/// Grants renewed per pass.
const BATCH: u32 = 20;
/// When a grant that could not be renewed is looked at again.
const RETRY_MS: i64 = 30_000;

/// The refresher of one replica.
#[derive(Clone)]
pub struct Refresher {
    vend: Vend,
    consents: Arc<dyn Consents>,
}

impl Refresher {
    /// Builds it over the vend service.
    pub fn new(vend: Vend, consents: Arc<dyn Consents>) -> Self {
        Self { vend, consents }
    }

    /// Runs a pass every `every` until the task is aborted.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.pass().await {
                    Ok(n) if n > 0 => tracing::debug!(renewed = n, "upstream tokens renewed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "refresher pass failed; retrying"),
                }
            }
        })
    }

    /// One pass; how many tokens were renewed.
    pub async fn pass(&self) -> Result<usize, crate::domain::StoreError> {
        let now_ms = self.vend.clock.now_ms();
        let due = self.consents.due_grants(now_ms, BATCH).await?;
        let mut renewed = 0;
        for (org, user, connector) in due {
            match self.renew(&org, &user, &connector).await {
                Ok(true) => renewed += 1,
                Ok(false) => {
                    // Not renewable now (not entitled, no projection): a vend sets a new due
                    // time when it mints.
                    self.consents
                        .set_grant_due(&org, &user, &connector, None)
                        .await?;
                }
                Err(e) => {
                    tracing::debug!(org = %org, connector = %connector, error = %e, "refresh failed; retried later");
                    self.consents
                        .set_grant_due(&org, &user, &connector, Some(now_ms + RETRY_MS))
                        .await?;
                }
            }
        }
        Ok(renewed)
    }

    /// Renews one user's token at one connector; `false` when the user may not have one now.
    async fn renew(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
    ) -> Result<bool, super::VendError> {
        let v = &self.vend;
        let read = v.access.vault().read(org, user, connector).await?;
        let Some(p) = read.projection else {
            return Ok(false);
        };
        let connectors = v.connectors(org).await?;
        let (c, scopes) = match super::decide(&p, &connectors, connector, None) {
            Ok(found) => found,
            Err(_) => return Ok(false),
        };
        let req = VendRequest {
            org: org.clone(),
            user: UserRef::Id(user.to_string()),
            connector: connector.to_string(),
            scopes: None,
            gateway: Arc::from("broker:refresher"),
        };
        let aad = crate::crypto::seal::Aad {
            org: org.as_str(),
            user: user.as_str(),
            connector,
            record_version: p.epoch,
        };
        let stale = read
            .sealed
            .as_deref()
            .and_then(|sealed| open(&v.ring, sealed, &aad).ok());
        let margin = stale.as_ref().map_or(v.refresh_margin_secs, |r| {
            v.refresh_margin_secs.min((r.expires_at - r.minted_at) / 2)
        });
        let miss = Miss {
            req: &req,
            connector: c,
            user,
            scopes,
            field: connector,
            epoch: p.epoch,
            stale,
            early_secs: refresher_window(margin),
        };
        match v.upstream_token(miss).await? {
            Obtained::Token(..) => Ok(true),
            Obtained::Retry => Ok(false),
        }
    }
}
