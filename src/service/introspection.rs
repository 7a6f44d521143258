//! RFC 7662 introspection and RFC 7009 revocation of the broker's own tokens, each scoped to
//! the caller: a gateway key sees the tokens of its orgs, a resource-server credential only
//! those of its connector (its org, `ab_con` and the connector's audience). Anything else is
//! simply not active, and revoking it does nothing.
//!
//! Invariants:
//! - A token is verified only with the keys of an org the caller is bound to, and `iss` and
//!   `ab_org` must name that org: another org's token never verifies here.
//! - Active means: verified, not revoked by `jti`, and the user's live projection still
//!   active at the token's epoch with its connector and scopes entitled.
//! - Revocation ends exactly one token: its `jti` goes on a deny list in the shared
//!   ephemeral store until the token expires (every replica sees it), and the vault's cached
//!   copy of that token is discarded so it is not served again. The user's other tokens and
//!   the user's epoch are untouched.

use std::sync::Arc;
use std::time::Duration;

use super::access::field_connector;
use super::tokens::{AccessClaims, Signer, open};
use super::vend::Vend;
use crate::crypto::seal::{Aad, KeyRing};
use crate::domain::clock::Clock;
use crate::domain::vault::{BusEvent, Ephemeral, EventBus, Vault, VaultError};
use crate::domain::{OrgId, UserId};

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: i64 = 30;

/// Who asks, as authenticated at the edge.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// A gateway key: every token of its orgs.
    Gateway {
        /// The orgs the key is bound to.
        orgs: &'a [String],
    },
    /// A resource-server credential: the tokens of one connector of one org.
    Resource {
        /// Its org.
        org: &'a str,
        /// Its connector.
        connector: &'a str,
    },
}

/// The token a revocation ended (for its audit record; never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its org.
    pub org: OrgId,
    /// Its user (`sub`).
    pub user: UserId,
    /// Its connector (`ab_con`).
    pub connector: String,
    /// Its id (`jti`).
    pub jti: String,
}

/// The introspection and revocation service.
#[derive(Clone)]
pub struct Introspection {
    signer: Arc<Signer>,
    vault: Arc<dyn Vault>,
    eph: Arc<dyn Ephemeral>,
    ring: Arc<KeyRing>,
    vend: Vend,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
}

/// The parts [`Introspection`] works with.
pub struct IntrospectionParts {
    /// Every org's issuer and keys.
    pub signer: Arc<Signer>,
    /// Projections and cached tokens.
    pub vault: Arc<dyn Vault>,
    /// The revoked-`jti` deny list.
    pub eph: Arc<dyn Ephemeral>,
    /// Opens cached tokens.
    pub ring: Arc<KeyRing>,
    /// Connector definitions (cached).
    pub vend: Vend,
    /// Tells every replica's gateways that one token ended.
    pub bus: Arc<dyn EventBus>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// The deny-list key of a revoked token: its org and `jti` (a random id, not a secret).
fn revoked_key(org: &str, jti: &str) -> String {
    format!("rjti:{org}:{jti}")
}

impl Introspection {
    /// Builds the service.
    pub fn new(p: IntrospectionParts) -> Self {
        Self {
            signer: p.signer,
            vault: p.vault,
            eph: p.eph,
            ring: p.ring,
            vend: p.vend,
            bus: p.bus,
            clock: p.clock,
        }
    }

    /// The claims of `token` if it is one of the caller's and active now; `None` otherwise.
    pub async fn introspect(
        &self,
        caller: Caller<'_>,
        token: &str,
    ) -> Result<Option<AccessClaims>, VaultError> {
        let Some((org, claims)) = self.owned(caller, token).await else {
            return Ok(None);
        };
        if self
            .eph
            .get(&revoked_key(org, &claims.jti))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let Some(p) = self
            .vault
            .read(&OrgId::new(org), &UserId::new(&claims.sub), "_")
            .await?
            .projection
        else {
            return Ok(None);
        };
        let Some(entitled) = p.connectors.get(&claims.ab_con) else {
            return Ok(None);
        };
        let scopes_ok = claims
            .scope
            .split_whitespace()
            .all(|sc| entitled.iter().any(|e| e == sc));
        Ok((p.active && p.epoch == claims.ab_ep && scopes_ok).then_some(claims))
    }

    /// Revokes `token` (that one `jti`) if it is one of the caller's and says which token it
    /// was; does nothing otherwise.
    pub async fn revoke(
        &self,
        caller: Caller<'_>,
        token: &str,
    ) -> Result<Option<Revoked>, VaultError> {
        let Some((org, claims)) = self.owned(caller, token).await else {
            return Ok(None);
        };
        let now = self.clock.now_ms() / 1000;
        let ttl = Duration::from_secs((claims.exp - now + LEEWAY_SECS).max(1) as u64);
        self.eph
            .put(&revoked_key(org, &claims.jti), b"1", ttl)
            .await?;
        let revoked = Revoked {
            org: OrgId::new(org),
            user: UserId::new(claims.sub),
            connector: claims.ab_con,
            jti: claims.jti,
        };
        self.discard_cached_copy(
            &revoked.org,
            &revoked.user,
            &revoked.connector,
            &revoked.jti,
        )
        .await?;
        self.announce(&revoked).await;
        Ok(Some(revoked))
    }

    /// The org and verified claims of `token` if it belongs to the caller (revoked tokens
    /// included: the caller of `revoke` may still own them). A resource-server credential's
    /// connector audience is part of the verification (`aud`).
    async fn owned<'c>(&self, caller: Caller<'c>, token: &str) -> Option<(&'c str, AccessClaims)> {
        let now = self.clock.now_ms() / 1000;
        match caller {
            Caller::Gateway { orgs } => orgs.iter().find_map(|org| {
                self.signer
                    .verify(org, token, None, now, LEEWAY_SECS)
                    .map(|c| (org.as_str(), c))
            }),
            Caller::Resource { org, connector } => {
                let connectors = self.vend.connectors(&OrgId::new(org)).await.ok()?;
                let audience = &connectors.iter().find(|c| c.id == connector)?.audience;
                let claims = self
                    .signer
                    .verify(org, token, Some(audience), now, LEEWAY_SECS)?;
                (claims.ab_con == connector).then_some((org, claims))
            }
        }
    }

    /// Tells the gateways of every replica that this one token ended (`token.revoked` with its
    /// `jti`, under the user's unchanged epoch). A failure to publish is logged: introspection
    /// already answers the token as inactive.
    async fn announce(&self, r: &Revoked) {
        let epoch = match self.vault.read(&r.org, &r.user, "_").await {
            Ok(read) => read.projection.map_or(0, |p| p.epoch),
            Err(_) => 0,
        };
        let event = BusEvent {
            kind: "token.revoked".into(),
            org: r.org.to_string(),
            user_id: Some(r.user.to_string()),
            connectors: vec![r.connector.clone()],
            epoch,
            at_ms: self.clock.now_ms(),
            jti: Some(r.jti.clone()),
        };
        if let Err(e) = self.bus.publish(&event).await {
            tracing::warn!(error = %e, "token revocation event not published");
        }
    }

    /// Finds the vault's cached copy of the token `jti` among the user's fields of
    /// `connector` and discards it, so the next vend mints a new token.
    async fn discard_cached_copy(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        jti: &str,
    ) -> Result<(), VaultError> {
        for field in self.vault.token_connectors(org, user).await? {
            if field_connector(&field) != connector {
                continue;
            }
            let read = self.vault.read(org, user, &field).await?;
            let (Some(p), Some(sealed)) = (read.projection, read.sealed) else {
                continue;
            };
            let aad = Aad {
                org: org.as_str(),
                user: user.as_str(),
                connector: &field,
                record_version: p.epoch,
            };
            if open(&self.ring, &sealed, &aad).is_ok_and(|rec| rec.jti == jti) {
                // Deleted only if the field still holds this very token.
                self.vault.discard_token(org, user, &field, &sealed).await?;
            }
        }
        Ok(())
    }
}
