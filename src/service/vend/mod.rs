//! The gateway's token vend: `POST /internal/v1/token`.
//!
//! Warm path: one vault round trip (projection + sealed token), no database query; the
//! decision is made from the projection (fail closed: no projection, no token — it is rebuilt
//! from the system of record first) and the connector's own ceiling (enabled, scopes). A miss
//! mints, seals and stores with a compare-and-set on the user's epoch, so a mint racing a
//! revocation can never store its token.
//!
//! Every answer carries the epoch it was decided under. A vend that read the projection
//! before a revocation may still answer after it; its token carries the older epoch, which
//! the revocation's event told gateways to drop (CONTRACT.md, the gateway's rule), and which
//! introspection already answers as inactive. Revocation is held by that state, not by timing.

mod refresher;
mod served;
mod upstream;

pub use refresher::Refresher;
pub use served::{Served, TokenResponse, Vended};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::access::{Access, AccessError, token_field};
use super::tokens::{MintInput, Signer, TokenRecord, open, seal};
use crate::crypto::seal::{Aad, KeyRing};
use crate::domain::clock::Clock;
use crate::domain::connector::{Connector, Strategy};
use crate::domain::ports::{Directory, IndexedAttr, Scan, SortAttr};
use crate::domain::vault::{CasOutcome, Projection, VaultError};
use crate::domain::{OrgId, StoreError, UserId};

/// How a gateway names the user: an object with exactly one of these members.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRef {
    /// The SCIM id.
    Id(String),
    /// The `userName`.
    UserName(String),
    /// The primary e-mail.
    Email(String),
    /// The IdP subject (the SCIM `externalId`).
    Subject(String),
}

impl utoipa::PartialSchema for UserRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        exactly_one_of(&["id", "user_name", "email", "subject"])
    }
}

impl utoipa::ToSchema for UserRef {}

/// An object with exactly one of the string members `names` and nothing else: what serde
/// accepts for an externally tagged enum of strings such as [`UserRef`].
pub fn exactly_one_of(names: &[&str]) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    let mut one_of = OneOfBuilder::new();
    for name in names {
        one_of = one_of.item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(*name, ObjectBuilder::new().schema_type(Type::String))
                .required(*name)
                .additional_properties(Some(AdditionalProperties::FreeForm(false))),
        );
    }
    one_of.into()
}

/// A vend request after authentication.
#[derive(Debug, Clone)]
pub struct VendRequest {
    /// The tenant (already checked against the gateway key).
    pub org: OrgId,
    /// The user.
    pub user: UserRef,
    /// The connector id.
    pub connector: String,
    /// Requested scopes (a subset of the entitlement), or all.
    pub scopes: Option<Vec<String>>,
    /// The gateway credential (the token's `client_id`).
    pub gateway: Arc<str>,
}

/// Every way a vend can fail; `http::error` maps each to one status and `code` (CONTRACT.md).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VendError {
    /// 403 `user_inactive`
    #[error("the user is not active")]
    UserInactive,
    /// 403 `user_locked`
    #[error("the user is locked by an admin")]
    UserLocked,
    /// 403 `not_entitled`
    #[error("the user is not entitled to this connector")]
    NotEntitled,
    /// 403 `scope_not_entitled`
    #[error("scope {0} is not entitled")]
    ScopeNotEntitled(String),
    /// 404 `unknown_user`
    #[error("no such user")]
    UnknownUser,
    /// 404 `unknown_connector`
    #[error("no such connector")]
    UnknownConnector,
    /// 409 `consent_required`
    #[error("the user must consent first")]
    ConsentRequired(String),
    /// 502 `upstream_error`
    #[error("upstream error: {0}")]
    Upstream(String),
    /// 503 `unavailable`
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 503 `unavailable`: the audit record could not be queued, so nothing was given out.
    #[error("audit backlog full")]
    Unaudited,
}

impl VendError {
    /// The stable code, as the audit record of a refused vend names it (the HTTP `code`).
    pub fn code(&self) -> &'static str {
        match self {
            VendError::UserInactive => "user_inactive",
            VendError::UserLocked => "user_locked",
            VendError::NotEntitled => "not_entitled",
            VendError::ScopeNotEntitled(_) => "scope_not_entitled",
            VendError::UnknownUser => "unknown_user",
            VendError::UnknownConnector => "unknown_connector",
            VendError::ConsentRequired(_) => "consent_required",
            VendError::Upstream(_) => "upstream_error",
            VendError::Unavailable(_) | VendError::Unaudited => "unavailable",
        }
    }
}

impl From<VaultError> for VendError {
    fn from(e: VaultError) -> Self {
        VendError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for VendError {
    fn from(e: StoreError) -> Self {
        VendError::Unavailable(e.to_string())
    }
}

impl From<AccessError> for VendError {
    fn from(e: AccessError) -> Self {
        VendError::Unavailable(e.to_string())
    }
}

/// How long connector definitions and name→id look-ups are cached per replica.
const CACHE_TTL: Duration = Duration::from_secs(5);

type ConnectorCache = RwLock<HashMap<String, (Instant, Arc<Vec<Connector>>)>>;
type AliasCache = RwLock<HashMap<(String, u8, String), (Instant, UserId)>>;

/// The vend service.
#[derive(Clone)]
pub struct Vend {
    access: Access,
    dir: Arc<dyn Directory>,
    ring: Arc<KeyRing>,
    signer: Arc<Signer>,
    clock: Arc<dyn Clock>,
    default_ttl_secs: u64,
    refresh_margin_secs: i64,
    connectors: Arc<ConnectorCache>,
    aliases: Arc<AliasCache>,
    upstreams: Option<crate::service::upstream::Upstreams>,
    eph: Arc<dyn crate::domain::vault::Ephemeral>,
}

impl Vend {
    /// Builds the vend service.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        access: Access,
        dir: Arc<dyn Directory>,
        ring: Arc<KeyRing>,
        signer: Arc<Signer>,
        clock: Arc<dyn Clock>,
        default_ttl_secs: u64,
        refresh_margin_secs: u64,
        eph: Arc<dyn crate::domain::vault::Ephemeral>,
    ) -> Self {
        Self {
            upstreams: None,
            eph,
            access,
            dir,
            ring,
            signer,
            clock,
            default_ttl_secs,
            refresh_margin_secs: refresh_margin_secs as i64,
            connectors: Arc::default(),
            aliases: Arc::default(),
        }
    }

    /// Mints upstream connectors' tokens with `upstreams`.
    pub fn with_upstreams(mut self, upstreams: crate::service::upstream::Upstreams) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// Whether a stored record can be served for `scopes` now (outside the refresh margin).
    /// An upstream token's margin is at most half its lifetime: the provider chooses the
    /// lifetime, and a token shorter than the margin would otherwise be refreshed on every
    /// vend.
    fn usable(&self, rec: &TokenRecord, scopes: &[String], now: i64) -> bool {
        let margin = match &rec.asked {
            Some(_) => self
                .refresh_margin_secs
                .min((rec.expires_at - rec.minted_at) / 2),
            None => self.refresh_margin_secs,
        };
        rec.expires_at - now > margin && rec.asked.as_deref().unwrap_or(&rec.scopes) == scopes
    }

    /// The signer (JWKS, introspection).
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// The upstream service, when upstream connectors are configured.
    pub fn upstreams(&self) -> Option<&crate::service::upstream::Upstreams> {
        self.upstreams.as_ref()
    }

    /// The vault key ring (sealing upstream secrets).
    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    /// Forgets cached connector definitions of an org (after an admin change).
    pub fn invalidate(&self, org: &OrgId) {
        if let Ok(mut c) = self.connectors.write() {
            c.remove(org.as_str());
        }
        if let Ok(mut a) = self.aliases.write() {
            a.retain(|k, _| k.0 != org.as_str());
        }
    }

    /// The org's connectors, cached briefly.
    pub async fn connectors(&self, org: &OrgId) -> Result<Arc<Vec<Connector>>, VendError> {
        if let Ok(c) = self.connectors.read()
            && let Some((at, list)) = c.get(org.as_str())
            && at.elapsed() < CACHE_TTL
        {
            return Ok(list.clone());
        }
        let list = Arc::new(self.access.connectors(org).await?);
        if let Ok(mut c) = self.connectors.write() {
            c.insert(org.to_string(), (Instant::now(), list.clone()));
        }
        Ok(list)
    }

    /// Resolves how the gateway named the user to a user id.
    pub async fn resolve_user(&self, org: &OrgId, user: &UserRef) -> Result<UserId, VendError> {
        let (kind, attr, value) = match user {
            // Ids are server-assigned UUIDs; an empty one, or one with a character the vault
            // reserves for its keys (`{`, `}`), names no user, rather than failing the vault
            // look-up (a 503).
            UserRef::Id(id) if id.is_empty() || id.contains(['{', '}']) => {
                return Err(VendError::UnknownUser);
            }
            UserRef::Id(id) => return Ok(UserId::new(id.clone())),
            UserRef::UserName(v) => (1u8, IndexedAttr::UserName, v.to_lowercase()),
            UserRef::Email(v) => (2u8, IndexedAttr::Email, v.to_lowercase()),
            UserRef::Subject(v) => (3u8, IndexedAttr::ExternalId, v.clone()),
        };
        let key = (org.to_string(), kind, value.clone());
        if let Ok(a) = self.aliases.read()
            && let Some((at, id)) = a.get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(id.clone());
        }
        let scan = Scan {
            lookup: Some((attr, value)),
            sort: SortAttr::Natural,
            descending: false,
            offset: 0,
            limit: 2,
        };
        let page = self.dir.scan_users(org, &scan).await?;
        // An ambiguous e-mail or subject names nobody: fail closed.
        let [user] = page.items.as_slice() else {
            return Err(VendError::UnknownUser);
        };
        if let Ok(mut a) = self.aliases.write() {
            a.insert(key, (Instant::now(), user.id.clone()));
        }
        Ok(user.id.clone())
    }

    /// Vends a token.
    pub async fn vend(&self, req: &VendRequest) -> Result<Vended, VendError> {
        let user = self.resolve_user(&req.org, &req.user).await?;
        let requested = req.scopes.as_ref().map(|s| {
            let mut v = s.clone();
            v.sort();
            v.dedup();
            v
        });
        let field = match &requested {
            Some(r) if !r.is_empty() => token_field(&req.connector, r, &[]),
            _ => req.connector.clone(),
        };
        for _attempt in 0..3 {
            let read = self.access.vault().read(&req.org, &user, &field).await?;
            let projection = match read.projection {
                Some(p) => p,
                None => {
                    self.rebuild(&req.org, &user).await?;
                    continue;
                }
            };
            let connectors = self.connectors(&req.org).await?;
            let (connector, scopes) = decide(
                &projection,
                &connectors,
                &req.connector,
                requested.as_deref(),
            )?;
            let now = self.clock.now_ms() / 1000;
            let aad = Aad {
                org: req.org.as_str(),
                user: user.as_str(),
                connector: &field,
                record_version: projection.epoch,
            };
            let stored = read
                .sealed
                .as_deref()
                .and_then(|sealed| open(&self.ring, sealed, &aad).ok());
            let (fresh, stale) = match stored {
                Some(rec) if self.usable(&rec, scopes, now) => (Some(rec), None),
                other => (None, other),
            };
            let (rec, cached) = match fresh {
                Some(rec) => (rec, true),
                None if connector.strategy != Strategy::BrokerJwt => {
                    let miss = upstream::Miss {
                        req,
                        connector,
                        user: &user,
                        scopes,
                        field: &field,
                        epoch: projection.epoch,
                        stale: stale.filter(|r| r.asked.as_deref().unwrap_or(&r.scopes) == scopes),
                        early_secs: 0,
                    };
                    match self.upstream_token(miss).await? {
                        upstream::Obtained::Token(rec, cached) => (rec, cached),
                        upstream::Obtained::Retry => continue,
                    }
                }
                None => {
                    let rec = self.mint(req, connector, &user, scopes, projection.epoch, now)?;
                    let sealed = seal(&self.ring, &rec, &aad);
                    match self
                        .access
                        .vault()
                        .store_token(&req.org, &user, &field, projection.epoch, &sealed)
                        .await?
                    {
                        CasOutcome::Stored => {}
                        // Revoked while minting: the token is discarded, never returned;
                        // decide again.
                        CasOutcome::EpochMoved => continue,
                    }
                    (rec, false)
                }
            };
            let served = Served::new(&rec, &req.connector, user.as_str(), projection.epoch);
            return Ok(Vended {
                served: Arc::new(served),
                cached,
            });
        }
        Err(VendError::Unavailable(
            "the user's access kept changing; retry".into(),
        ))
    }

    async fn rebuild(&self, org: &OrgId, user: &UserId) -> Result<(), VendError> {
        if self.dir.get_user(org, user).await?.is_none() {
            return Err(VendError::UnknownUser);
        }
        self.access
            .sync_user(org, user, "vault.rebuild", "broker")
            .await?;
        Ok(())
    }

    fn mint(
        &self,
        req: &VendRequest,
        c: &Connector,
        user: &UserId,
        scopes: &[String],
        epoch: u64,
        now: i64,
    ) -> Result<TokenRecord, VendError> {
        match c.strategy {
            Strategy::BrokerJwt => {
                let ttl = if c.token_ttl_secs > 0 {
                    c.token_ttl_secs
                } else {
                    self.default_ttl_secs
                };
                Ok(self.signer.mint(
                    &MintInput {
                        org: req.org.as_str(),
                        user_id: user.as_str(),
                        connector: c,
                        client_id: &req.gateway,
                        scopes,
                        epoch,
                        ttl_secs: ttl,
                    },
                    now,
                ))
            }
            other => Err(VendError::Upstream(format!(
                "strategy {other:?} is not available in this version of the broker"
            ))),
        }
    }
}

/// The decision: the connector and the scopes to mint (borrowed from the entitlement or the
/// request), or why not. The projection decides who may have what; the connector's own
/// definition (enabled, scope ceiling) bounds it once more, so a connector disabled or
/// narrowed a moment ago vends nothing beyond its definition even before every projection
/// has been re-derived.
fn decide<'a>(
    p: &'a Projection,
    connectors: &'a [Connector],
    connector: &str,
    requested: Option<&'a [String]>,
) -> Result<(&'a Connector, &'a [String]), VendError> {
    if p.locked {
        return Err(VendError::UserLocked);
    }
    if !p.active {
        return Err(VendError::UserInactive);
    }
    let Some(c) = connectors.iter().find(|c| c.id == connector) else {
        return Err(VendError::UnknownConnector);
    };
    let Some(entitled) = p.connectors.get(connector).filter(|_| c.enabled) else {
        return Err(VendError::NotEntitled);
    };
    let scopes: &[String] = match requested {
        None | Some([]) => entitled,
        Some(req) => match req.iter().find(|s| !entitled.contains(s)) {
            Some(s) => return Err(VendError::ScopeNotEntitled(s.clone())),
            None => req,
        },
    };
    match scopes.iter().find(|s| !c.scopes.contains(s)) {
        Some(s) => Err(VendError::ScopeNotEntitled(s.clone())),
        None => Ok((c, scopes)),
    }
}
