//! Renewing an access token from the person's stored grant, and keeping that grant right:
//! the rotated refresh token is stored (compare-and-set on the version read) before anything
//! is served, an empty one never replaces it, and a refusal is believed only when a fresh read
//! shows the same grant (another replica may have rotated it); a dead grant needs re-consent.

use secrecy::{ExposeSecret, SecretString};

use super::{MAX_GRANT_READS, MintError, MintRequest, Upstreams, secrets};
use crate::domain::consent::{GrantStatus, GrantWrite, IDP_GRANT, StoredGrant, TokenKind};
use crate::domain::upstream::Upstream;
use crate::domain::vault::BusEvent;
use crate::upstream::{Endpoints, TokenGrant, TokenSet, UpstreamError};

impl Upstreams {
    /// Refreshes with the stored grant (see the module header for the rules); the answer as
    /// the AS gave it.
    pub(super) async fn refresh(
        &self,
        req: &MintRequest<'_>,
        u: &Upstream,
        ep: &Endpoints,
    ) -> Result<TokenSet, MintError> {
        let mut last_version = None;
        for _ in 0..MAX_GRANT_READS {
            let Some(grant) = self
                .consents
                .grant(req.org, req.user, &req.connector.id)
                .await?
            else {
                return Err(MintError::ConsentRequired);
            };
            if grant.status == GrantStatus::NeedsReconsent {
                return Err(MintError::ConsentRequired);
            }
            if last_version == Some(grant.version) {
                // Refused twice for the same grant, read fresh: it is dead.
                return self.grant_died(req, &grant).await;
            }
            let refresh_token = secrets::open_grant(
                &self.ring,
                req.org,
                req.user,
                &req.connector.id,
                &grant.sealed,
            )
            .map_err(|_| MintError::Config("the stored grant does not open".into()))?;
            // Narrower than the grant: ask for just that (RFC 6749 §6); else ask for nothing.
            let narrower = req.scopes.iter().all(|s| grant.scopes.contains(s))
                && req.scopes.len() < grant.scopes.len();
            let result = self
                .token(
                    req.org,
                    &req.connector.id,
                    u,
                    ep,
                    TokenGrant::RefreshToken {
                        refresh_token: refresh_token.expose_secret(),
                        scopes: narrower.then_some(req.scopes),
                    },
                )
                .await;
            match result {
                Ok(set) => {
                    if let Some(rt) = &set.refresh_token
                        && rt.expose_secret() != refresh_token.expose_secret()
                    {
                        // Rotated: the new refresh token is the only one that works now; it
                        // is stored before anything is served.
                        self.store_grant(req, rt, &grant.scopes, Some(&grant))
                            .await?;
                    }
                    self.counters
                        .refreshes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(set);
                }
                Err(MintError::Upstream(UpstreamError::Refused { ref error, .. }))
                    if grant_refused(error) =>
                {
                    // Another replica may have rotated the grant since it was read: read
                    // again; only the same version refused again is dead.
                    last_version = Some(grant.version);
                    let fresh = self
                        .consents
                        .grant(req.org, req.user, &req.connector.id)
                        .await?;
                    match fresh {
                        Some(g) if g.version == grant.version => {
                            return self.grant_died(req, &g).await;
                        }
                        _ => continue,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(MintError::Moved)
    }

    /// Marks a grant the AS refused for good; the person must consent again.
    async fn grant_died(
        &self,
        req: &MintRequest<'_>,
        grant: &StoredGrant,
    ) -> Result<TokenSet, MintError> {
        let now = self.clock.now_ms();
        if self
            .consents
            .mark_needs_reconsent(req.org, req.user, &req.connector.id, grant.version, now)
            .await?
        {
            tracing::warn!(org = %req.org, connector = %req.connector.id, "upstream grant refused: needs re-consent");
            if req.connector.id == IDP_GRANT {
                // Not a connector: the connectors that need it say so themselves.
                return Err(MintError::ConsentRequired);
            }
            let event = BusEvent {
                kind: "consent.required".into(),
                org: req.org.to_string(),
                user_id: Some(req.user.to_string()),
                connectors: vec![req.connector.id.clone()],
                epoch: 0,
                at_ms: now,
                jti: None,
            };
            if let Err(e) = self.bus.publish(&event).await {
                tracing::warn!(error = %e, "consent.required event not published");
            }
        }
        Err(MintError::ConsentRequired)
    }

    /// Stores a refresh token as the user's grant (compare-and-set on what was read); when
    /// the write loses, the token is queued for revocation and nothing is served.
    pub(super) async fn store_grant(
        &self,
        req: &MintRequest<'_>,
        refresh_token: &SecretString,
        scopes: &[String],
        read: Option<&StoredGrant>,
    ) -> Result<i64, MintError> {
        let sealed = secrets::seal_grant(
            &self.ring,
            req.org,
            req.user,
            &req.connector.id,
            refresh_token.expose_secret(),
        );
        let w = GrantWrite {
            sealed: &sealed,
            scopes,
            expected: read.map(|g| g.version),
            now_ms: self.clock.now_ms(),
        };
        match self
            .consents
            .put_grant(req.org, req.user, &req.connector.id, w)
            .await?
        {
            Some(v) => Ok(v),
            None => {
                // The grant changed under the write. Gone (an offboarding removed it): the
                // token obtained meanwhile is revoked upstream. Replaced by a newer one: it is
                // only dropped, since revoking it could end the newer one's whole grant at the
                // AS (RFC 7009 §2.1).
                let now = self
                    .consents
                    .grant(req.org, req.user, &req.connector.id)
                    .await?;
                if now.is_none() {
                    self.enqueue_orphan(
                        req,
                        TokenKind::RefreshToken,
                        refresh_token.expose_secret(),
                    )
                    .await;
                }
                Err(MintError::Moved)
            }
        }
    }
}

/// The refusals that say a refresh token is no good: RFC 6749's `invalid_grant`, and the
/// names GitHub (`bad_refresh_token`) and Slack (`invalid_refresh_token`) give it.
fn grant_refused(error: &str) -> bool {
    matches!(
        error,
        "invalid_grant" | "bad_refresh_token" | "invalid_refresh_token"
    )
}
