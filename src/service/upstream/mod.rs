//! Upstream tokens: minting, refreshing and revoking each user's tokens at connectors' own
//! authorization servers (DESIGN.md, "Upstream strategies").
//!
//! - `id_jag`: an Identity Assertion JWT Authorization Grant signed as the org's issuer,
//!   redeemed with RFC 7523 `jwt-bearer`; no refresh token; a new ID-JAG for every mint.
//! - `token_exchange`: RFC 8693 with a subject token the org's issuer signs for the user; a
//!   refresh token it returns is kept as the user's grant and used first next time.
//! - `authorization_code`: the refresh token of the person's one-time consent (`consent`).
//!
//! Invariants (DESIGN.md 3–5): a rotated refresh token is stored (compare-and-set on the
//! grant's version, which also fences a holder whose lock lapsed) before its access token is
//! served, and if that write fails nothing is served; a refresh token is never replaced by
//! an empty one; `invalid_grant` is believed only after a fresh read shows the same grant
//! (another replica may have rotated it), and then the grant needs re-consent; a token the
//! broker obtained but cannot keep (its write lost, the user revoked meanwhile) is queued for
//! revocation upstream rather than left alive.

mod consent;
mod idp;
mod outbox;
mod refresh;
pub mod secrets;

pub use consent::{ConsentError, ConsentStatus, ConsentView};
pub use idp::IdpClient;
pub use outbox::RevocationWorker;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::tokens::{Signer, TokenRecord};
use crate::crypto::seal::KeyRing;
use crate::domain::clock::Clock;
use crate::domain::connector::{Connector, Strategy};
use crate::domain::consent::{Consents, IDP_GRANT, RevocationItem, TokenKind};
use crate::domain::upstream::{ClientAuth, IdJagSource, Upstream};
use crate::domain::vault::EventBus;
use crate::domain::{OrgId, StoreError, UserId};
use crate::upstream::{
    ClientAuthn, Endpoints, IdJagClaims, JwtClaims, SubjectTokenClaims, TokenGrant, TokenSet,
    UpstreamClient, UpstreamError,
};

/// Lifetime of the assertions the broker signs (ID-JAG, subject token, client assertion).
pub(crate) const ASSERTION_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// How often a refresh re-reads a grant another replica rotated before giving up.
const MAX_GRANT_READS: usize = 4;

/// Why an upstream token could not be had; each maps to one vend answer.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// 409 `consent_required`: no grant, or one the AS refused for good.
    #[error("consent required")]
    ConsentRequired,
    /// 502 `upstream_error`: the AS refused or failed (its `error` code).
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// The grant moved under the write (another writer, an offboarding): nothing was served;
    /// the caller re-reads.
    #[error("the grant changed; retry")]
    Moved,
    /// The system of record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The connector's declaration cannot work (no key for the org, no secret).
    #[error("{0}")]
    Config(String),
}

/// What one mint is for.
pub struct MintRequest<'a> {
    /// Tenant.
    pub org: &'a OrgId,
    /// The user.
    pub user: &'a UserId,
    /// The connector (an upstream strategy).
    pub connector: &'a Connector,
    /// Scopes asked for (already within the entitlement).
    pub scopes: &'a [String],
    /// Now, Unix seconds.
    pub now: i64,
}

/// What `/metrics` shows of upstream work on this replica.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    /// Access tokens obtained upstream (any strategy).
    pub mints: std::sync::atomic::AtomicU64,
    /// Of those, by refreshing a stored grant.
    pub refreshes: std::sync::atomic::AtomicU64,
    /// Mints that failed at the upstream (refused, failed, circuit open, over budget).
    pub failures: std::sync::atomic::AtomicU64,
    /// Upstream revocations delivered, by final status: revoked, unsupported, failed.
    pub revoked: std::sync::atomic::AtomicU64,
    /// See `revoked`.
    pub unsupported: std::sync::atomic::AtomicU64,
    /// See `revoked`.
    pub failed: std::sync::atomic::AtomicU64,
}

/// The upstream service.
#[derive(Clone)]
pub struct Upstreams {
    client: UpstreamClient,
    ring: Arc<KeyRing>,
    signer: Arc<Signer>,
    consents: Arc<dyn Consents>,
    eph: Arc<dyn crate::domain::vault::Ephemeral>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    public_url: Arc<str>,
    idps: Arc<std::collections::HashMap<String, IdpClient>>,
    counters: Arc<UpstreamCounters>,
}

/// The parts [`Upstreams`] is built from.
pub struct UpstreamParts {
    /// The HTTP client (timeouts, breakers, budgets).
    pub client: UpstreamClient,
    /// Vault key ring (grants and client secrets are sealed under it).
    pub ring: Arc<KeyRing>,
    /// The orgs' issuers (assertions are signed as the org).
    pub signer: Arc<Signer>,
    /// Grants and the revocation outbox.
    pub consents: Arc<dyn Consents>,
    /// Consent state (single use).
    pub eph: Arc<dyn crate::domain::vault::Ephemeral>,
    /// Events (`consent.required`).
    pub bus: Arc<dyn EventBus>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Where people reach the broker (redirect URIs, consent URLs).
    pub public_url: String,
    /// Each org's IdP as a token endpoint client (orgs with OIDC sign-in), by org id.
    pub idps: std::collections::HashMap<String, IdpClient>,
}

impl Upstreams {
    /// Builds the service.
    pub fn new(p: UpstreamParts) -> Self {
        Self {
            client: p.client,
            ring: p.ring,
            signer: p.signer,
            consents: p.consents,
            eph: p.eph,
            bus: p.bus,
            clock: p.clock,
            public_url: p.public_url.trim_end_matches('/').into(),
            idps: Arc::new(p.idps),
            counters: Arc::default(),
        }
    }

    /// This replica's counters (for `/metrics`).
    pub fn counters(&self) -> &UpstreamCounters {
        &self.counters
    }

    /// Where a person consents to a connector (the 409's `consent_url`).
    pub fn consent_url(&self, org: &OrgId, connector: &str) -> String {
        format!("{}/auth/{org}/connect/{connector}", self.public_url)
    }

    /// Whether the org's IdP can issue ID-JAGs to the broker (the org signs in with OIDC).
    pub fn has_idp(&self, org: &OrgId) -> bool {
        self.idps.contains_key(org.as_str())
    }

    /// The grants and outbox store.
    pub fn consents(&self) -> &Arc<dyn Consents> {
        &self.consents
    }

    /// The access token of a sealed vault record (for revocation upstream).
    pub fn open_vault_token(
        &self,
        org: &OrgId,
        user: &UserId,
        field: &str,
        epoch: u64,
        sealed: &[u8],
    ) -> Option<String> {
        let aad = crate::crypto::seal::Aad {
            org: org.as_str(),
            user: user.as_str(),
            connector: field,
            record_version: epoch,
        };
        super::tokens::open(&self.ring, sealed, &aad)
            .ok()
            .map(|r| r.access_token.clone())
    }

    /// Obtains a fresh access token for the user at the connector's AS.
    pub async fn mint(&self, req: &MintRequest<'_>) -> Result<TokenRecord, MintError> {
        use std::sync::atomic::Ordering::Relaxed;
        let result = self.mint_once(req).await;
        match &result {
            Ok(_) => self.counters.mints.fetch_add(1, Relaxed),
            Err(MintError::Upstream(_)) => self.counters.failures.fetch_add(1, Relaxed),
            Err(_) => 0,
        };
        result
    }

    async fn mint_once(&self, req: &MintRequest<'_>) -> Result<TokenRecord, MintError> {
        let u = upstream_of(req.connector)?;
        let ep = self.client.endpoints(u).await?;
        match req.connector.strategy {
            Strategy::AuthorizationCode => {
                let set = self.refresh(req, u, &ep).await?;
                Ok(self.record(req, u, &set))
            }
            Strategy::TokenExchange => match self.refresh(req, u, &ep).await {
                Ok(set) => Ok(self.record(req, u, &set)),
                // No grant yet, or a dead one: a new exchange needs nobody's consent.
                Err(MintError::ConsentRequired) => self.exchange(req, u, &ep).await,
                Err(e) => Err(e),
            },
            Strategy::IdJag => self.id_jag(req, u, &ep).await,
            Strategy::BrokerJwt => Err(MintError::Config(
                "broker_jwt tokens are minted by the broker itself".into(),
            )),
        }
    }

    /// ID-JAG signed as the org, redeemed with `jwt-bearer`.
    async fn id_jag(
        &self,
        req: &MintRequest<'_>,
        u: &Upstream,
        ep: &Endpoints,
    ) -> Result<TokenRecord, MintError> {
        let assertion = match u.id_jag_source {
            IdJagSource::Broker => {
                let mut claims = IdJagClaims {
                    jwt: self.about_user(req, ep)?,
                    client_id: u.client_id.clone(),
                    scope: None,
                    resource: None,
                };
                claims.scope = (!req.scopes.is_empty()).then(|| req.scopes.join(" "));
                claims.resource = u.resource.clone();
                SecretString::from(self.sign(req.org, crate::upstream::ID_JAG_TYP, &claims)?)
            }
            IdJagSource::IdpExchange => {
                let aud = ep
                    .issuer
                    .as_deref()
                    .ok_or_else(|| MintError::Config("the upstream has no issuer".into()))?;
                self.id_jag_from_idp(req, u, aud).await?
            }
        };
        let set = self
            .token(
                req.org,
                &req.connector.id,
                u,
                ep,
                TokenGrant::JwtBearer {
                    assertion: assertion.expose_secret(),
                    scopes: Some(req.scopes),
                },
            )
            .await?;
        if let Some(rt) = &set.refresh_token {
            // The design keeps none for id_jag: a refresh token nobody will use is ended now.
            self.enqueue_orphan(req, TokenKind::RefreshToken, rt.expose_secret())
                .await;
        }
        Ok(self.record(req, u, &set))
    }

    /// RFC 8693 with a subject token signed as the org; a refresh token becomes the grant.
    async fn exchange(
        &self,
        req: &MintRequest<'_>,
        u: &Upstream,
        ep: &Endpoints,
    ) -> Result<TokenRecord, MintError> {
        let mut claims = SubjectTokenClaims {
            jwt: self.about_user(req, ep)?,
            scope: None,
            email: None,
        };
        claims.scope = (!req.scopes.is_empty()).then(|| req.scopes.join(" "));
        let subject = self.sign(req.org, "JWT", &claims)?;
        let set = self
            .token(
                req.org,
                &req.connector.id,
                u,
                ep,
                TokenGrant::TokenExchange {
                    subject_token: &subject,
                    subject_token_type: crate::upstream::TOKEN_TYPE_JWT,
                    requested_token_type: Some(crate::upstream::TOKEN_TYPE_ACCESS_TOKEN),
                    audience: None,
                    scopes: Some(req.scopes),
                    resource: None,
                },
            )
            .await?;
        if let Some(rt) = &set.refresh_token {
            let current = self
                .consents
                .grant(req.org, req.user, &req.connector.id)
                .await?;
            self.store_grant(req, rt, &granted(req.scopes, &set), current.as_ref())
                .await?;
        }
        Ok(self.record(req, u, &set))
    }

    /// Queues a token the broker holds but will not keep for revocation upstream.
    pub(crate) async fn enqueue_orphan(&self, req: &MintRequest<'_>, kind: TokenKind, token: &str) {
        let item = RevocationItem {
            connector: req.connector.id.clone(),
            kind,
            sealed: secrets::seal_revocation(
                &self.ring,
                req.org,
                req.user,
                &req.connector.id,
                token,
            ),
        };
        if let Err(e) = self
            .consents
            .revoke_upstream(
                req.org,
                req.user,
                Some(&[]),
                &[item],
                0,
                self.clock.now_ms(),
            )
            .await
        {
            tracing::warn!(error = %e, "an unkept upstream token could not be queued for revocation");
        }
    }

    /// One token request with the connector's client authentication.
    async fn token(
        &self,
        org: &OrgId,
        connector: &str,
        u: &Upstream,
        ep: &Endpoints,
        grant: TokenGrant<'_>,
    ) -> Result<TokenSet, MintError> {
        let secret = self.client_secret(org, connector, u)?;
        let sign = self.client_assertion(org, u);
        let authn = ClientAuthn {
            client_id: &u.client_id,
            secret: secret.as_ref(),
            assertion: (u.client_auth == ClientAuth::PrivateKeyJwt).then_some(sign.as_ref()),
        };
        Ok(self.client.token(u, ep, &authn, grant).await?)
    }

    /// The connector's client secret: opened from its sealed copy, or read from the broker's
    /// environment.
    pub(crate) fn client_secret(
        &self,
        org: &OrgId,
        connector: &str,
        u: &Upstream,
    ) -> Result<Option<SecretString>, MintError> {
        if connector == IDP_GRANT {
            return Ok(self.idps.get(org.as_str()).map(|i| i.secret.clone()));
        }
        secrets::client_secret(&self.ring, org, connector, u).map_err(MintError::Config)
    }

    /// The token record kept in the vault: scopes granted = asked ∩ what the AS returned.
    fn record(&self, req: &MintRequest<'_>, u: &Upstream, set: &TokenSet) -> TokenRecord {
        let ttl = set.expires_in.unwrap_or_else(|| {
            req.connector
                .upstream
                .as_ref()
                .map_or(u.fallback_ttl_secs(), Upstream::fallback_ttl_secs)
        });
        TokenRecord {
            access_token: set.access_token.expose_secret().to_string(),
            expires_at: req.now + ttl.min(i64::MAX as u64 / 2) as i64,
            scopes: granted(req.scopes, set),
            jti: uuid::Uuid::new_v4().to_string(),
            minted_at: req.now,
            asked: Some(req.scopes.to_vec()),
        }
    }

    /// The claims every assertion about the user shares: the org's issuer about the user,
    /// for the upstream's issuer, issued now.
    fn about_user(&self, req: &MintRequest<'_>, ep: &Endpoints) -> Result<JwtClaims, MintError> {
        let iss = self.issuer(req.org)?;
        let aud = ep
            .issuer
            .as_deref()
            .ok_or_else(|| MintError::Config("the upstream has no issuer".into()))?;
        Ok(JwtClaims::new(
            &iss,
            req.user.as_str(),
            aud,
            self.clock.now_ms(),
            ASSERTION_TTL,
        ))
    }

    /// Signs `private_key_jwt` client assertions as the org, for a token endpoint (`aud`).
    pub(crate) fn client_assertion(
        &self,
        org: &OrgId,
        u: &Upstream,
    ) -> Box<dyn Fn(&str) -> String + Send + Sync> {
        let signer = self.signer.clone();
        let (org, client_id, now) = (org.to_string(), u.client_id.clone(), self.clock.now_ms());
        Box::new(move |aud: &str| {
            let claims =
                crate::upstream::client_assertion_claims(&client_id, aud, now, ASSERTION_TTL);
            signer.sign_as(&org, "JWT", &claims).unwrap_or_default()
        })
    }

    fn issuer(&self, org: &OrgId) -> Result<String, MintError> {
        self.signer
            .issuer(org.as_str())
            .map(str::to_string)
            .ok_or_else(|| MintError::Config(format!("org {org} has no signing key")))
    }

    fn sign<C: serde::Serialize>(
        &self,
        org: &OrgId,
        typ: &str,
        claims: &C,
    ) -> Result<String, MintError> {
        self.signer
            .sign_as(org.as_str(), typ, claims)
            .ok_or_else(|| MintError::Config(format!("org {org} has no signing key")))
    }
}

/// The connector's upstream declaration (validated on the way in, so present).
fn upstream_of(c: &Connector) -> Result<&Upstream, MintError> {
    c.upstream
        .as_ref()
        .ok_or_else(|| MintError::Config(format!("connector {} has no upstream", c.id)))
}

/// Scopes granted: what was asked, narrowed to what the AS says it granted (when it says).
fn granted(asked: &[String], set: &TokenSet) -> Vec<String> {
    match &set.scope {
        Some(returned) => asked
            .iter()
            .filter(|s| returned.contains(s))
            .cloned()
            .collect(),
        None => asked.to_vec(),
    }
}

/// Builds the stored upstream declaration from admin input, sealing a given secret (an
/// omitted one keeps `kept_secret`, unless the secret now comes from the environment).
pub fn upstream_from_input(
    org: &OrgId,
    connector: &str,
    input: super::admin::UpstreamInput,
    ring: &KeyRing,
    kept_secret: Option<Vec<u8>>,
) -> Upstream {
    let client_secret = match (&input.client_secret, &input.client_secret_env) {
        (Some(s), _) => Some(secrets::seal_client_secret(ring, org, connector, s)),
        (None, Some(_)) => None,
        (None, None) => kept_secret,
    };
    input.into_upstream(client_secret)
}
