//! One-time per-user consent for `authorization_code` connectors
//! (`/auth/{org}/connect/{connector}`).
//!
//! The pending consent (PKCE S256 verifier, the signed-in user, a digest of that browser's
//! session) is kept single-use in the ephemeral store under a digest of `state`; the callback
//! takes it once and refuses it unless the same user in the same session finishes it, so a
//! consent link sent to someone else grants nothing to either. RFC 9207 `iss` is checked when
//! the AS sends it. The refresh token becomes the user's grant (compare-and-set), the access
//! token goes to the vault under the user's epoch.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{MintError, MintRequest, Upstreams};
use crate::domain::connector::{Connector, Strategy};
use crate::domain::consent::{GrantStatus, IDP_GRANT};
use crate::domain::{OrgId, UserId};
use crate::upstream::{AuthorizationRequest, TokenGrant, UpstreamError};

/// How long a started consent may take.
const CONSENT_TTL: Duration = Duration::from_secs(600);

/// Why a consent could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// No such connector, or not an `authorization_code` one.
    #[error("no consent is needed or possible for this connector")]
    NotConsentable,
    /// The user is not entitled to the connector.
    #[error("you are not entitled to this connector")]
    NotEntitled,
    /// The state is unknown, used or expired.
    #[error("this consent link is unknown, used or expired; start again")]
    UnknownState,
    /// The consent was started by another user or in another session.
    #[error("this consent was started in another session; start again from your own page")]
    OtherSession,
    /// The AS answered with another issuer than the connector's (RFC 9207 mix-up defence).
    #[error("the authorization response came from another issuer")]
    IssuerMismatch,
    /// The person declined, or the AS refused.
    #[error("the upstream did not grant access: {0}")]
    Denied(String),
    /// The AS failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Storage failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::domain::StoreError> for ConsentError {
    fn from(e: crate::domain::StoreError) -> Self {
        ConsentError::Unavailable(e.to_string())
    }
}

impl From<MintError> for ConsentError {
    fn from(e: MintError) -> Self {
        match e {
            MintError::Upstream(u) => ConsentError::Upstream(u),
            other => ConsentError::Unavailable(other.to_string()),
        }
    }
}

/// A consent on its way (stored under the state's digest).
#[derive(Serialize, Deserialize)]
struct Pending {
    org: String,
    connector: String,
    user: String,
    session: String,
    verifier: String,
    scopes: Vec<String>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.verifier.zeroize();
    }
}

/// Where a connector stands for a user (the `/me` page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    /// A usable grant is stored.
    Connected,
    /// No grant yet.
    NeedsConsent,
    /// The AS refused the stored grant for good.
    NeedsReconsent,
    /// The broker obtains tokens without the person (broker_jwt, id_jag, token_exchange).
    NotNeeded,
}

/// A connector's consent state for the `/me` page.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentView {
    /// The connector.
    pub connector: String,
    /// Its state.
    pub status: ConsentStatus,
    /// Where to (re)connect, when consent is needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
}

fn state_key(state: &str) -> String {
    format!(
        "ab:consent:{}",
        hex::encode(sha2::Sha256::digest(state.as_bytes()))
    )
}

impl Upstreams {
    /// The redirect URI to register at the AS.
    pub fn redirect_uri(&self, org: &OrgId, connector: &str) -> String {
        format!("{}/callback", self.consent_url(org, connector))
    }

    /// Starts a consent for the signed-in `user` (whose session digest is `session`) with
    /// the scopes they are entitled to; the URL to send the browser to.
    pub async fn start_consent(
        &self,
        org: &OrgId,
        c: &Connector,
        user: &UserId,
        session: &str,
        entitled: &[String],
    ) -> Result<String, ConsentError> {
        let u = match (&c.strategy, &c.upstream) {
            (Strategy::AuthorizationCode, Some(u)) if c.enabled => u,
            // Its grant is the IdP's: connecting is signing in again (which keeps one).
            (Strategy::IdJag, Some(u)) if c.enabled && from_idp(u) => {
                return Ok(format!(
                    "{}/auth/{org}/login?return_to=/auth/{org}/me",
                    self.public_url
                ));
            }
            _ => return Err(ConsentError::NotConsentable),
        };
        let ep = self.client.endpoints(u).await?;
        let (verifier, challenge) = crate::upstream::pkce_pair();
        let state = crate::upstream::random_state();
        let pending = Pending {
            org: org.to_string(),
            connector: c.id.clone(),
            user: user.to_string(),
            session: session.to_string(),
            verifier: verifier.expose_secret().to_string(),
            scopes: entitled.to_vec(),
        };
        let sealed = self.ring.seal(
            &serde_json::to_vec(&pending).unwrap_or_default(),
            &crate::crypto::seal::Aad {
                org: org.as_str(),
                user: "-",
                connector: "consent",
                record_version: 0,
            },
        );
        self.eph
            .put(&state_key(&state), &sealed, CONSENT_TTL)
            .await
            .map_err(|e| ConsentError::Unavailable(e.to_string()))?;
        let redirect_uri = self.redirect_uri(org, &c.id);
        let url = self.client.authorization_url(
            &ep,
            u,
            &AuthorizationRequest {
                redirect_uri: &redirect_uri,
                scopes: entitled,
                state: &state,
                code_challenge: &challenge,
            },
        )?;
        Ok(url.to_string())
    }

    /// Finishes a consent: the callback's `code`, `state` and `iss`, in the session of
    /// `user` (digest `session`). Returns the connector id.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_consent(
        &self,
        org: &OrgId,
        c: &Connector,
        user: &UserId,
        session: &str,
        state: &str,
        code: Option<&str>,
        iss: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), ConsentError> {
        let sealed = self
            .eph
            .take(&state_key(state))
            .await
            .map_err(|e| ConsentError::Unavailable(e.to_string()))?
            .ok_or(ConsentError::UnknownState)?;
        let plain = self
            .ring
            .open(
                &sealed,
                &crate::crypto::seal::Aad {
                    org: org.as_str(),
                    user: "-",
                    connector: "consent",
                    record_version: 0,
                },
            )
            .map_err(|_| ConsentError::UnknownState)?;
        let pending: Pending =
            serde_json::from_slice(&plain).map_err(|_| ConsentError::UnknownState)?;
        if pending.org != org.as_str() || pending.connector != c.id {
            return Err(ConsentError::UnknownState);
        }
        let same_user = pending.user == user.as_str();
        let same_session: bool =
            subtle::ConstantTimeEq::ct_eq(pending.session.as_bytes(), session.as_bytes()).into();
        if !(same_user && same_session) {
            return Err(ConsentError::OtherSession);
        }
        let Some(u) = c
            .upstream
            .as_ref()
            .filter(|_| c.strategy == Strategy::AuthorizationCode)
        else {
            return Err(ConsentError::NotConsentable);
        };
        let ep = self.client.endpoints(u).await?;
        // RFC 9207: an `iss` must be the connector's issuer, and an AS that says it sends one
        // must have sent it (a response without it may come from another AS: mix-up).
        match (iss, ep.issuer.as_deref()) {
            (Some(got), Some(expected)) if got != expected => {
                return Err(ConsentError::IssuerMismatch);
            }
            (None, _) if ep.sends_iss => return Err(ConsentError::IssuerMismatch),
            _ => {}
        }
        if let Some(e) = error {
            return Err(ConsentError::Denied(e.to_string()));
        }
        let code = code.ok_or_else(|| ConsentError::Denied("no code".into()))?;
        let redirect_uri = self.redirect_uri(org, &c.id);
        let set = self
            .token(
                org,
                &c.id,
                u,
                &ep,
                TokenGrant::AuthorizationCode {
                    code,
                    redirect_uri: &redirect_uri,
                    code_verifier: &pending.verifier,
                },
            )
            .await?;
        let req = MintRequest {
            org,
            user,
            connector: c,
            scopes: &pending.scopes,
            now: self.clock.now_ms() / 1000,
        };
        let Some(rt) = &set.refresh_token else {
            // Without a refresh token the consent lasts as long as its access token: honest
            // about it in the log; the next vend after expiry asks for consent again.
            tracing::warn!(org = %org, connector = %c.id, "the upstream gave no refresh token at consent");
            return Ok(());
        };
        let scopes = super::granted(&pending.scopes, &set);
        // A re-consent replaces whatever is stored (a dead grant, or a live one the person
        // chose to renew). The replaced refresh token is dropped, not revoked: an AS that
        // reuses its grant for a second consent (oidc-provider does) would end the new refresh
        // token with it (RFC 7009 §2.1 lets it revoke the whole grant), and once dropped the
        // broker holds it nowhere.
        for _ in 0..3 {
            let current = self.consents.grant(org, user, &c.id).await?;
            match self.store_grant(&req, rt, &scopes, current.as_ref()).await {
                Ok(_) => return Ok(()),
                Err(MintError::Moved) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ConsentError::Unavailable("the grant kept changing".into()))
    }

    /// Each connector's consent state for the user.
    pub async fn consent_views(
        &self,
        org: &OrgId,
        user: &UserId,
        connectors: &[Connector],
    ) -> Result<Vec<ConsentView>, ConsentError> {
        let grants = self
            .consents
            .grants_of(org, user)
            .await
            .map_err(|e| ConsentError::Unavailable(e.to_string()))?;
        Ok(connectors
            .iter()
            .map(|c| {
                let grant_key = match (&c.strategy, &c.upstream) {
                    (Strategy::AuthorizationCode, _) => Some(c.id.as_str()),
                    (Strategy::IdJag, Some(u)) if from_idp(u) => Some(IDP_GRANT),
                    _ => None,
                };
                let status = match grant_key {
                    None => ConsentStatus::NotNeeded,
                    Some(key) => match grants.iter().find(|(id, _)| id == key) {
                        None => ConsentStatus::NeedsConsent,
                        Some((_, g)) if g.status == GrantStatus::NeedsReconsent => {
                            ConsentStatus::NeedsReconsent
                        }
                        Some(_) => ConsentStatus::Connected,
                    },
                };
                ConsentView {
                    connector: c.id.clone(),
                    status,
                    connect_url: matches!(
                        status,
                        ConsentStatus::NeedsConsent
                            | ConsentStatus::NeedsReconsent
                            | ConsentStatus::Connected
                    )
                    .then(|| self.consent_url(org, &c.id)),
                }
            })
            .collect())
    }
}

/// Whether an `id_jag` upstream takes its ID-JAGs from the org's IdP.
fn from_idp(u: &crate::domain::upstream::Upstream) -> bool {
    u.id_jag_source == crate::domain::upstream::IdJagSource::IdpExchange
}
