//! The vend of an upstream connector's token on a miss: single-flight across replicas.
//!
//! One lock per (org, user, token field) in the shared ephemeral store, held with an owner
//! token and renewed while the holder works; everyone else waits for the holder's result in
//! the vault instead of calling the authorization server. The lock only saves calls: what
//! keeps the data right is the grant's compare-and-set (a holder whose lock lapsed cannot
//! overwrite a newer refresh token) and the vault's epoch compare-and-set (a token obtained
//! across a revocation is never stored, and is queued for revocation upstream instead).

use std::time::{Duration, Instant};

use super::{Vend, VendError, VendRequest};
use crate::crypto::seal::Aad;
use crate::domain::UserId;
use crate::domain::connector::{Connector, Strategy};
use crate::domain::consent::TokenKind;
use crate::domain::vault::CasOutcome;
use crate::service::lock::HeldLock;
use crate::service::tokens::{TokenRecord, open, seal};
use crate::service::upstream::{MintError, MintRequest};

/// How long a holder owns the lock without renewing it ([`HeldLock`] renews it).
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often a waiter looks for the holder's result.
const POLL: Duration = Duration::from_millis(20);

/// What a miss came to.
pub(super) enum Obtained {
    /// A token to serve (`true`: someone else obtained it).
    Token(TokenRecord, bool),
    /// The user's access moved meanwhile: decide again.
    Retry,
}

/// One upstream miss.
pub(super) struct Miss<'a> {
    pub(super) req: &'a VendRequest,
    pub(super) connector: &'a Connector,
    pub(super) user: &'a UserId,
    pub(super) scopes: &'a [String],
    pub(super) field: &'a str,
    pub(super) epoch: u64,
    /// The stored token, unexpired but inside the refresh margin: served if the AS is down.
    pub(super) stale: Option<TokenRecord>,
    /// How much earlier than a vend this caller renews (the background refresher's window).
    pub(super) early_secs: i64,
}

impl Vend {
    /// Obtains the token once across replicas (see the module header).
    pub(super) async fn upstream_token(&self, m: Miss<'_>) -> Result<Obtained, VendError> {
        let key = format!("ab:{{{}/{}}}:lock:{}", m.req.org, m.user, m.field);
        let deadline = Instant::now() + LOCK_TTL + Duration::from_secs(5);
        loop {
            if let Some(held) = HeldLock::try_take(&self.eph, &key, LOCK_TTL).await? {
                let result = self.hold(&m).await;
                held.release().await;
                return result;
            }
            tokio::time::sleep(POLL).await;
            match self.look(&m).await? {
                Some(found) => return Ok(found),
                None if Instant::now() > deadline => {
                    return Err(VendError::Unavailable(
                        "another replica is still obtaining this token; retry".into(),
                    ));
                }
                None => {}
            }
        }
    }

    /// What the vault holds now: a fresh token for this request, a moved epoch, or nothing.
    async fn look(&self, m: &Miss<'_>) -> Result<Option<Obtained>, VendError> {
        let read = self
            .access
            .vault()
            .read(&m.req.org, m.user, m.field)
            .await?;
        let Some(p) = read.projection else {
            return Ok(Some(Obtained::Retry));
        };
        if p.epoch != m.epoch {
            return Ok(Some(Obtained::Retry));
        }
        let now = self.clock.now_ms() / 1000;
        Ok(read
            .sealed
            .as_deref()
            .and_then(|sealed| open(&self.ring, sealed, &self.aad(m)).ok())
            .filter(|rec| self.usable(rec, m.scopes, now + m.early_secs))
            .map(|rec| Obtained::Token(rec, true)))
    }

    fn aad<'a>(&self, m: &'a Miss<'a>) -> Aad<'a> {
        Aad {
            org: m.req.org.as_str(),
            user: m.user.as_str(),
            connector: m.field,
            record_version: m.epoch,
        }
    }

    /// The lock holder: look again, then mint upstream and store.
    async fn hold(&self, m: &Miss<'_>) -> Result<Obtained, VendError> {
        if let Some(found) = self.look(m).await? {
            return Ok(found);
        }
        let Some(up) = &self.upstreams else {
            return Err(VendError::Upstream(
                "upstream connectors are not configured on this broker".into(),
            ));
        };
        let now = self.clock.now_ms() / 1000;
        let mint = MintRequest {
            org: &m.req.org,
            user: m.user,
            connector: m.connector,
            scopes: m.scopes,
            now,
        };
        let rec = match up.mint(&mint).await {
            Ok(rec) => rec,
            Err(MintError::ConsentRequired) => {
                return Err(VendError::ConsentRequired(
                    up.consent_url(&m.req.org, &m.connector.id),
                ));
            }
            Err(MintError::Moved) => return Ok(Obtained::Retry),
            Err(MintError::Upstream(e)) => {
                if e.is_transient()
                    && let Some(stale) = &m.stale
                    && stale.expires_at > now
                {
                    tracing::warn!(connector = %m.connector.id, error = %e.code(), "upstream unavailable; serving the still-valid token");
                    return Ok(Obtained::Token(clone_record(stale), true));
                }
                return Err(VendError::Upstream(e.code().to_string()));
            }
            Err(MintError::Store(e)) => return Err(e.into()),
            Err(MintError::Config(why)) => {
                tracing::warn!(connector = %m.connector.id, why = %why, "upstream connector cannot mint");
                return Err(VendError::Upstream("invalid_configuration".into()));
            }
        };
        let sealed = seal(&self.ring, &rec, &self.aad(m));
        match self
            .access
            .vault()
            .store_token(&m.req.org, m.user, m.field, m.epoch, &sealed)
            .await?
        {
            CasOutcome::Stored => {
                self.schedule_refresh(m, &rec).await;
                Ok(Obtained::Token(rec, false))
            }
            CasOutcome::EpochMoved => {
                // Revoked while minting: never served, and ended upstream too.
                up.enqueue_orphan(&mint, TokenKind::AccessToken, &rec.access_token)
                    .await;
                Ok(Obtained::Retry)
            }
        }
    }
}

impl Vend {
    /// Tells the background refresher when to renew a token minted from a stored grant: a
    /// little before a vend would have to (jittered, so a wave of tokens minted together is
    /// not renewed together).
    async fn schedule_refresh(&self, m: &Miss<'_>, rec: &TokenRecord) {
        let Some(up) = &self.upstreams else { return };
        let grant_backed = matches!(
            m.connector.strategy,
            Strategy::AuthorizationCode | Strategy::TokenExchange
        );
        if !grant_backed || m.field != m.connector.id {
            return;
        }
        let margin = self
            .refresh_margin_secs
            .min((rec.expires_at - rec.minted_at) / 2);
        let window = refresher_window(margin);
        let jitter = rand::random_range(0..=window * 1000);
        let due_ms = (rec.expires_at - margin) * 1000 - jitter;
        if let Err(e) = up
            .consents()
            .set_grant_due(&m.req.org, m.user, &m.connector.id, Some(due_ms))
            .await
        {
            tracing::debug!(error = %e, "refresh not scheduled; a vend refreshes on read");
        }
    }
}

/// How much earlier than a vend the background refresher renews, for a refresh margin.
pub(super) fn refresher_window(margin: i64) -> i64 {
    (margin / 2).max(1)
}

fn clone_record(r: &TokenRecord) -> TokenRecord {
    TokenRecord {
        access_token: r.access_token.clone(),
        expires_at: r.expires_at,
        scopes: r.scopes.clone(),
        jti: r.jti.clone(),
        minted_at: r.minted_at,
        asked: r.asked.clone(),
    }
}
