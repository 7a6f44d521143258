//! ID-JAGs from the org's own IdP (`id_jag_source = "idp_exchange"`, as Okta Cross App Access
//! does): the person's fresh ID token is exchanged at the IdP (RFC 8693,
//! `requested_token_type=urn:ietf:params:oauth:token-type:id-jag`, `audience` = the upstream's
//! issuer) for an ID-JAG the IdP signs; the upstream trusts the IdP, not the broker.
//!
//! Invariants:
//! - the ID token comes from the person's IdP grant ([`IDP_GRANT`]): the refresh token of
//!   their last OIDC sign-in that asked for `offline_access`, sealed and versioned like any
//!   grant (a rotated one is stored, compare-and-set, before its ID token is used);
//! - one holder per person refreshes it at a time (a renewed lock in the shared ephemeral store),
//!   because an IdP with rotating refresh tokens and reuse detection ends the whole family
//!   when one is used twice, and two connectors of one person may mint at once;
//! - a refusal is believed only as `refresh` believes one (a fresh read shows the same
//!   grant); no grant, or a dead one, is 409 `consent_required`, whose URL leads to signing in
//!   again; the IdP deciding the person may no longer have an ID-JAG is its answer (502 with
//!   its code), never a token.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{MAX_GRANT_READS, MintError, MintRequest, Upstreams, secrets};
use crate::domain::connector::{ActionSet, Connector, Strategy};
use crate::domain::consent::{GrantWrite, IDP_GRANT, IdpGrants};
use crate::domain::upstream::{ClientAuth, Provider, Upstream};
use crate::domain::{OrgId, StoreError, UserId};
use crate::service::lock::HeldLock;
use crate::upstream::{
    Endpoints, TOKEN_TYPE_ID_JAG, TOKEN_TYPE_ID_TOKEN, TokenGrant, UpstreamError,
};

/// How long one holder owns the IdP grant's lock without renewing it ([`HeldLock`] renews it
/// while the holder works; the compare-and-set, not the lock, keeps the data right).
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How long a second minter waits for the holder.
const LOCK_WAIT: Duration = Duration::from_secs(20);
/// How often a waiter tries the lock again.
const POLL: Duration = Duration::from_millis(20);

/// One org's IdP as a client of its token and revocation endpoints: the sign-in's OIDC client
/// (client id and secret, `client_secret_basic`, RFC 8414 / OIDC discovery from the issuer).
#[derive(Clone)]
pub struct IdpClient {
    /// The IdP as an upstream declaration (never stored, never shown).
    pub upstream: Upstream,
    /// The sign-in client's secret.
    pub secret: SecretString,
}

impl IdpClient {
    /// The IdP at `issuer`, where the broker is the OIDC client `client_id`.
    pub fn new(issuer: &str, client_id: &str, secret: SecretString) -> Self {
        Self {
            upstream: Upstream {
                provider: Provider::Generic,
                issuer: Some(issuer.to_string()),
                client_id: client_id.to_string(),
                client_auth: ClientAuth::ClientSecretBasic,
                ..Upstream::default()
            },
            secret,
        }
    }
}

impl Upstreams {
    /// An ID-JAG for `aud` (the upstream's issuer) from the org's IdP, for the request's user
    /// and scopes (and the upstream's `resource`).
    pub(super) async fn id_jag_from_idp(
        &self,
        req: &MintRequest<'_>,
        u: &Upstream,
        aud: &str,
    ) -> Result<SecretString, MintError> {
        let idp = self.idps.get(req.org.as_str()).ok_or_else(|| {
            MintError::Config(format!(
                "org {} has no OIDC sign-in: idp_exchange needs one",
                req.org
            ))
        })?;
        let ep = self.client.endpoints(&idp.upstream).await?;
        let id_token = self.idp_id_token(req, idp, &ep).await?;
        let set = self
            .token(
                req.org,
                IDP_GRANT,
                &idp.upstream,
                &ep,
                TokenGrant::TokenExchange {
                    subject_token: id_token.expose_secret(),
                    subject_token_type: TOKEN_TYPE_ID_TOKEN,
                    requested_token_type: Some(TOKEN_TYPE_ID_JAG),
                    audience: Some(aud),
                    scopes: Some(req.scopes),
                    resource: u.resource.as_deref(),
                },
            )
            .await?;
        if set.issued_token_type.as_deref() != Some(TOKEN_TYPE_ID_JAG) {
            return Err(unexpected("the IdP's exchange did not issue an ID-JAG").into());
        }
        Ok(set.access_token)
    }

    /// A fresh ID token from the person's IdP grant, refreshed by one holder at a time.
    async fn idp_id_token(
        &self,
        req: &MintRequest<'_>,
        idp: &IdpClient,
        ep: &Endpoints,
    ) -> Result<SecretString, MintError> {
        let key = format!("ab:{{{}/{}}}:lock:{IDP_GRANT}", req.org, req.user);
        let deadline = Instant::now() + LOCK_WAIT;
        let held = loop {
            match HeldLock::try_take(&self.eph, &key, LOCK_TTL).await {
                Ok(Some(held)) => break held,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                Ok(None) => {
                    return Err(UpstreamError::Transient {
                        error: "temporarily_unavailable".into(),
                    }
                    .into());
                }
                Err(e) => return Err(StoreError::Unavailable(e.to_string()).into()),
            }
        };
        let idp_connector = Connector {
            org: req.org.clone(),
            id: IDP_GRANT.to_string(),
            display_name: "IdP".into(),
            strategy: Strategy::AuthorizationCode,
            audience: String::new(),
            scopes: Vec::new(),
            tools: Default::default(),
            default_actions: ActionSet::ALLOW_ALL,
            enabled: true,
            token_ttl_secs: 0,
            upstream: Some(idp.upstream.clone()),
        };
        let at_idp = MintRequest {
            org: req.org,
            user: req.user,
            connector: &idp_connector,
            scopes: &[],
            now: req.now,
        };
        let result = self.refresh(&at_idp, &idp.upstream, ep).await;
        held.release().await;
        result?
            .id_token
            .ok_or_else(|| unexpected("the IdP's refresh gave no ID token").into())
    }
}

/// An answer that is not what the protocol promises: permanent.
fn unexpected(why: &str) -> UpstreamError {
    UpstreamError::Refused {
        status: 200,
        error: "unexpected_response".into(),
        description: Some(why.into()),
    }
}

#[async_trait]
impl IdpGrants for Upstreams {
    async fn keep_idp_grant(
        &self,
        org: &OrgId,
        user: &UserId,
        refresh_token: &SecretString,
        scopes: &[String],
    ) -> Result<(), StoreError> {
        let sealed = secrets::seal_grant(
            &self.ring,
            org,
            user,
            IDP_GRANT,
            refresh_token.expose_secret(),
        );
        // A newer sign-in's grant replaces the older one; a refresh rotating the older one at
        // the same moment only moves the version, so read again and replace that.
        for _ in 0..MAX_GRANT_READS {
            let current = self.consents.grant(org, user, IDP_GRANT).await?;
            let write = GrantWrite {
                sealed: &sealed,
                scopes,
                expected: current.map(|g| g.version),
                now_ms: self.clock.now_ms(),
            };
            if self
                .consents
                .put_grant(org, user, IDP_GRANT, write)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(StoreError::VersionMismatch)
    }
}
