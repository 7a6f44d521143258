//! Sign-in to the broker through the org's identity provider (OIDC), server-side sessions,
//! and the users sign-in finds or creates.
//!
//! - Login state (`state`, `nonce`, PKCE verifier, `return_to`) is kept sealed in the
//!   ephemeral store for ten minutes under a hash of `state`, taken exactly once, and bound to
//!   the browser that started the login by a random cookie whose hash it records.
//! - Users are identified by issuer + subject. The first sign-in of an identity links it to
//!   the SCIM user whose `externalId` is that subject, or creates a user when the org allows
//!   just-in-time creation; a mutable claim such as e-mail never identifies anyone.
//! - Groups from the ID token are stored apart from SCIM memberships and count for
//!   entitlements only as the org's `groups_source` says; a change goes through the same
//!   projection sync and revocation as a SCIM change.
//! - Sessions live sealed in the ephemeral store under a hash of the cookie, are replaced at
//!   every login and end at logout or expiry.

pub mod oidc;
pub mod saml;
mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

pub use session::Session;

use crate::config::{Config, GroupsSource, SignInConfig};
use crate::crypto::seal::{Aad, KeyRing};
use crate::domain::audit::AuditEntry;
use crate::domain::clock::Clock;
use crate::domain::ports::{Directory, Identities, IndexedAttr, Scan, SortAttr};
use crate::domain::vault::Ephemeral;
use crate::domain::{OrgId, UserId};
use crate::service::access::Access;
use crate::service::audit_sink::AuditSink;
use crate::service::provisioning::{Provisioning, ScimCtx};

/// How long a started login may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The cookie binding a login to the browser that started it.
pub const LOGIN_COOKIE: &str = "ab_login";
/// The same for SAML (`SameSite=None; Secure`: it rides on the IdP's cross-site POST).
pub const SAML_COOKIE: &str = "ab_saml";
/// The session cookie.
pub const SESSION_COOKIE: &str = "ab_session";

/// Why a sign-in failed; each has a status and a stable code for the error page.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignInError {
    /// The org has no sign-in configured.
    #[error("this org has no sign-in configured")]
    UnknownOrg,
    /// Broken configuration.
    #[error("sign-in is misconfigured: {0}")]
    Config(String),
    /// The provider could not be reached or answered nonsense.
    #[error("the identity provider is unavailable: {0}")]
    Provider(String),
    /// The provider returned an error to the callback.
    #[error("the identity provider refused the sign-in: {0}")]
    IdpError(String),
    /// The code exchange failed.
    #[error("the code exchange failed: {0}")]
    TokenExchange(String),
    /// The ID token failed validation.
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    /// Signed with a key id the provider's key set does not have (re-fetch, then invalid).
    #[error("the ID token is signed with an unknown key")]
    UnknownKey,
    /// Unknown, expired, reused or foreign `state`.
    #[error("invalid sign-in state: {0}")]
    InvalidState(String),
    /// A SAML response failed validation.
    #[error("the SAML response is not valid: {0}")]
    InvalidAssertion(String),
    /// A SAML assertion was presented a second time.
    #[error("this assertion was already used")]
    Replayed,
    /// RFC 9207: the response's `iss` is not our provider's (mix-up attack).
    #[error("the authorization response comes from another issuer")]
    IssuerMismatch,
    /// No user for this identity and no just-in-time creation.
    #[error("no user is provisioned for this identity: {0}")]
    NotProvisioned(String),
    /// The user is deactivated.
    #[error("the user is not active")]
    UserInactive,
    /// The provider left groups out (Entra overage) and the org takes groups from sign-in.
    #[error(
        "the identity provider left the groups out of the ID token because there are too many (group overage); filter the groups in the app registration or use SCIM"
    )]
    GroupsOverage,
    /// Storage unavailable: fail closed.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl SignInError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            SignInError::UnknownOrg => 404,
            SignInError::NotProvisioned(_) | SignInError::UserInactive => 403,
            SignInError::Config(_) => 500,
            SignInError::Provider(_) => 502,
            SignInError::Unavailable(_) => 503,
            SignInError::InvalidIdToken(_)
            | SignInError::UnknownKey
            | SignInError::TokenExchange(_)
            | SignInError::InvalidAssertion(_)
            | SignInError::Replayed => 401,
            _ => 400,
        }
    }

    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            SignInError::UnknownOrg => "unknown_org",
            SignInError::Config(_) => "misconfigured",
            SignInError::Provider(_) => "idp_unavailable",
            SignInError::IdpError(_) => "idp_error",
            SignInError::TokenExchange(_) => "token_exchange_failed",
            SignInError::InvalidIdToken(_) | SignInError::UnknownKey => "invalid_id_token",
            SignInError::InvalidState(_) => "invalid_state",
            SignInError::InvalidAssertion(_) => "invalid_assertion",
            SignInError::Replayed => "assertion_replayed",
            SignInError::IssuerMismatch => "issuer_mismatch",
            SignInError::NotProvisioned(_) => "not_provisioned",
            SignInError::UserInactive => "user_inactive",
            SignInError::GroupsOverage => "groups_overage",
            SignInError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<crate::domain::vault::VaultError> for SignInError {
    fn from(e: crate::domain::vault::VaultError) -> Self {
        SignInError::Unavailable(e.to_string())
    }
}

impl From<crate::domain::StoreError> for SignInError {
    fn from(e: crate::domain::StoreError) -> Self {
        SignInError::Unavailable(e.to_string())
    }
}

/// What the OIDC callback received.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    /// The authorization code.
    pub code: Option<String>,
    /// Our `state`.
    pub state: Option<String>,
    /// RFC 9207 issuer.
    pub iss: Option<String>,
    /// An error from the provider.
    pub error: Option<String>,
    /// Its description.
    pub error_description: Option<String>,
}

/// A started login: where to send the browser and the binding cookie's value.
pub struct Begun {
    /// The provider's authorization URL.
    pub redirect: String,
    /// The login cookie value.
    pub binding: String,
    /// A SAML login (its binding cookie must survive the IdP's cross-site POST).
    pub saml: bool,
}

/// A finished login.
pub struct Finished {
    /// The new session cookie value.
    pub session: String,
    /// Where to go now (a path on this broker).
    pub return_to: String,
    /// The session's lifetime.
    pub ttl: Duration,
}

#[derive(Serialize, Deserialize)]
struct LoginState {
    org: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    binding_hash: String,
}

#[derive(Serialize, Deserialize)]
struct PendingSaml {
    org: String,
    request_id: String,
    return_to: String,
    binding_hash: String,
}

/// Login state bound to an org and a browser.
trait Bound {
    fn org(&self) -> &str;
    fn binding_hash(&self) -> &str;
}

impl Bound for LoginState {
    fn org(&self) -> &str {
        &self.org
    }
    fn binding_hash(&self) -> &str {
        &self.binding_hash
    }
}

impl Bound for PendingSaml {
    fn org(&self) -> &str {
        &self.org
    }
    fn binding_hash(&self) -> &str {
        &self.binding_hash
    }
}

/// What the ACS receives (HTTP-POST binding).
#[derive(Debug, Default, Deserialize)]
pub struct AcsForm {
    /// The base64 response.
    #[serde(rename = "SAMLResponse")]
    pub saml_response: Option<String>,
    /// Our RelayState.
    #[serde(rename = "RelayState")]
    pub relay_state: Option<String>,
}

struct OrgSignIn {
    cfg: SignInConfig,
    oidc: Option<oidc::OidcProvider>,
    saml: Option<saml::SamlProvider>,
}

/// The sign-in service.
#[derive(Clone)]
pub struct SignIn {
    orgs: Arc<HashMap<String, Arc<OrgSignIn>>>,
    eph: Arc<dyn Ephemeral>,
    ring: Arc<KeyRing>,
    identities: Arc<dyn Identities>,
    dir: Arc<dyn Directory>,
    provisioning: Provisioning,
    access: Access,
    audit: AuditSink,
    clock: Arc<dyn Clock>,
    public_url: String,
}

/// What the sign-in service is built from.
pub struct SignInParts {
    /// Short-lived shared state.
    pub eph: Arc<dyn Ephemeral>,
    /// Seals login state and sessions.
    pub ring: Arc<KeyRing>,
    /// Identity links and asserted groups.
    pub identities: Arc<dyn Identities>,
    /// The directory.
    pub dir: Arc<dyn Directory>,
    /// Creates users just in time.
    pub provisioning: Provisioning,
    /// Projection sync after changes.
    pub access: Access,
    /// Audit records.
    pub audit: AuditSink,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The broker's public base URL.
    pub public_url: String,
}

impl SignIn {
    /// Builds the relying parties of every org with `[sign_in]`.
    pub fn new(config: &Config, parts: SignInParts) -> anyhow::Result<Self> {
        let mut orgs = HashMap::new();
        for (id, org) in &config.orgs {
            let Some(cfg) = &org.sign_in else { continue };
            let oidc = match &cfg.oidc {
                Some(o) => {
                    let secret =
                        crate::config::read_secret(&o.client_secret_env, &o.client_secret_file)
                            .map_err(|e| {
                                anyhow::anyhow!("orgs.{id}.sign_in.oidc client secret: {e}")
                            })?;
                    let redirect = format!("{}/auth/{id}/oidc/callback", parts.public_url);
                    Some(
                        oidc::OidcProvider::new(o.clone(), SecretString::from(secret), redirect)
                            .map_err(|e| anyhow::anyhow!("orgs.{id}.sign_in.oidc: {e}"))?,
                    )
                }
                None => None,
            };
            let saml = match &cfg.saml {
                Some(sc) => Some(
                    saml::SamlProvider::new(sc.clone(), &parts.public_url, id)
                        .map_err(|e| anyhow::anyhow!("orgs.{id}.sign_in.saml: {e}"))?,
                ),
                None => None,
            };
            orgs.insert(
                id.clone(),
                Arc::new(OrgSignIn {
                    cfg: cfg.clone(),
                    oidc,
                    saml,
                }),
            );
        }
        Ok(Self {
            orgs: Arc::new(orgs),
            eph: parts.eph,
            ring: parts.ring,
            identities: parts.identities,
            dir: parts.dir,
            provisioning: parts.provisioning,
            access: parts.access,
            audit: parts.audit,
            clock: parts.clock,
            public_url: parts.public_url,
        })
    }

    /// Whether cookies must carry `Secure` (the broker is reached over https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// The broker's public base URL (for `Origin` checks).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    fn org(&self, org: &str) -> Result<&Arc<OrgSignIn>, SignInError> {
        self.orgs.get(org).ok_or(SignInError::UnknownOrg)
    }

    /// Whether the org has sign-in configured.
    pub fn has_org(&self, org: &str) -> bool {
        self.orgs.contains_key(org)
    }

    /// Starts a login: stores the state and returns where to send the browser.
    pub async fn begin(&self, org: &str, return_to: Option<&str>) -> Result<Begun, SignInError> {
        let o = self.org(org)?;
        let return_to = safe_return_to(org, return_to);
        let binding = random_token();
        if let Some(saml) = &o.saml {
            // The ACS is reached by a cross-site POST: the RelayState (unguessable, single
            // use) finds the pending request, the SameSite=None cookie binds it to this browser.
            let relay = random_token();
            let (request_id, redirect) = saml.authn_request(&relay)?;
            let pending = PendingSaml {
                org: org.to_string(),
                request_id,
                return_to,
                binding_hash: hex_hash(&binding),
            };
            self.put_state(org, "saml", &relay, &pending).await?;
            return Ok(Begun {
                redirect,
                binding,
                saml: true,
            });
        }
        let oidc = o.oidc.as_ref().ok_or(SignInError::UnknownOrg)?;
        let state = random_token();
        let nonce = random_token();
        let pkce_verifier = random_token();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(pkce_verifier.as_bytes()));
        let redirect = oidc.authorization_url(&state, &nonce, &challenge).await?;
        let login = LoginState {
            org: org.to_string(),
            nonce,
            pkce_verifier,
            return_to,
            binding_hash: hex_hash(&binding),
        };
        self.put_state(org, "login", &state, &login).await?;
        Ok(Begun {
            redirect,
            binding,
            saml: false,
        })
    }

    async fn put_state<T: Serialize>(
        &self,
        org: &str,
        kind: &str,
        token: &str,
        value: &T,
    ) -> Result<(), SignInError> {
        let key = format!("ab:{kind}:{}", hex_hash(token));
        let plain = serde_json::to_vec(value).map_err(|e| SignInError::Config(e.to_string()))?;
        let sealed = self.ring.seal(&plain, &aad(org, kind, &key));
        self.eph.put(&key, &sealed, LOGIN_TTL).await?;
        Ok(())
    }

    /// The org's SP metadata, when it signs in with SAML.
    pub fn saml_metadata(&self, org: &str) -> Result<String, SignInError> {
        self.org(org)?
            .saml
            .as_ref()
            .ok_or(SignInError::UnknownOrg)?
            .metadata_xml()
    }

    /// Finishes an OIDC login. Every failure is audited; no session exists unless this
    /// returns `Ok`.
    pub async fn finish_oidc(
        &self,
        org: &str,
        cb: &Callback,
        binding: Option<&str>,
        old_session: Option<&str>,
    ) -> Result<Finished, SignInError> {
        let result = self.finish_inner(org, cb, binding).await;
        self.conclude(org, "oidc", result, old_session).await
    }

    /// Finishes a SAML login at the ACS. Every failure is audited; no session exists unless
    /// this returns `Ok`.
    pub async fn finish_saml(
        &self,
        org: &str,
        form: &AcsForm,
        binding: Option<&str>,
        old_session: Option<&str>,
    ) -> Result<Finished, SignInError> {
        let result = self.finish_saml_inner(org, form, binding).await;
        self.conclude(org, "saml", result, old_session).await
    }

    /// Audits the outcome and, on success, opens a new session (ending the browser's old one).
    async fn conclude(
        &self,
        org: &str,
        method: &str,
        result: Result<(UserId, oidc::Identity, String), SignInError>,
        old_session: Option<&str>,
    ) -> Result<Finished, SignInError> {
        match &result {
            Ok((user, identity, _)) => {
                self.record(
                    org,
                    "signin.success",
                    user.as_str(),
                    json!({"method": method, "issuer": identity.issuer, "subject": identity.subject,
                           "groups": identity.groups, "groups_overage": identity.groups_overage}),
                );
            }
            Err(e) => {
                tracing::warn!(org, method, code = e.code(), error = %e, "sign-in refused");
                self.record(
                    org,
                    "signin.failure",
                    "",
                    json!({"method": method, "code": e.code(), "reason": e.to_string()}),
                );
            }
        }
        let (user, identity, return_to) = result?;
        if let Some(old) = old_session {
            let _ = self.eph.remove(&session_key(old)).await;
        }
        let o = self.org(org)?;
        let ttl = Duration::from_secs(o.cfg.session_ttl_secs);
        let now = self.clock.now_ms();
        let session = Session {
            org: org.to_string(),
            user_id: user.to_string(),
            issuer: identity.issuer,
            subject: identity.subject,
            name: identity.name,
            groups: identity.groups,
            groups_overage: identity.groups_overage,
            created_ms: now,
            expires_ms: now + ttl.as_millis() as i64,
        };
        let cookie = random_token();
        let key = session_key(&cookie);
        let plain = serde_json::to_vec(&session).map_err(|e| SignInError::Config(e.to_string()))?;
        let sealed = self.ring.seal(&plain, &aad(org, "session", &key));
        self.eph.put(&key, &sealed, ttl).await?;
        Ok(Finished {
            session: cookie,
            return_to,
            ttl,
        })
    }

    async fn finish_saml_inner(
        &self,
        org: &str,
        form: &AcsForm,
        binding: Option<&str>,
    ) -> Result<(UserId, oidc::Identity, String), SignInError> {
        let o = self.org(org)?;
        let saml = o.saml.as_ref().ok_or(SignInError::UnknownOrg)?;
        let relay = form
            .relay_state
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                SignInError::InvalidState(
                    "no RelayState: IdP-initiated sign-in is not accepted".into(),
                )
            })?;
        let pending: PendingSaml = self.take_state(org, "saml", relay, binding).await?;
        let encoded = form
            .saml_response
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| SignInError::InvalidAssertion("no SAMLResponse".into()))?;
        let verified = saml.verify(encoded, &pending.request_id).await?;
        // One use per assertion, across every replica, until it expires.
        let replay_key = format!(
            "ab:samlseen:{}",
            hex_hash(&format!(
                "{}|{}",
                saml.idp_entity_id(),
                verified.assertion_id
            ))
        );
        if !self
            .eph
            .claim(&replay_key, Duration::from_secs(verified.remember_secs))
            .await?
        {
            return Err(SignInError::Replayed);
        }
        let user = self.admit(org, o, &verified.identity).await?;
        Ok((user, verified.identity, pending.return_to))
    }

    /// Takes (once) the login state stored under `token` and checks that this browser started
    /// the login.
    async fn take_state<T: serde::de::DeserializeOwned + Bound>(
        &self,
        org: &str,
        kind: &str,
        token: &str,
        binding: Option<&str>,
    ) -> Result<T, SignInError> {
        let key = format!("ab:{kind}:{}", hex_hash(token));
        let sealed =
            self.eph.take(&key).await?.ok_or_else(|| {
                SignInError::InvalidState("unknown, expired or already used".into())
            })?;
        let plain = self
            .ring
            .open(&sealed, &aad(org, kind, &key))
            .map_err(|_| SignInError::InvalidState("not issued for this org".into()))?;
        let state: T = serde_json::from_slice(&plain)
            .map_err(|_| SignInError::InvalidState("unreadable".into()))?;
        let bound = binding.map(hex_hash).unwrap_or_default();
        let bound_ok: bool =
            subtle::ConstantTimeEq::ct_eq(bound.as_bytes(), state.binding_hash().as_bytes()).into();
        if state.org() != org || !bound_ok {
            return Err(SignInError::InvalidState(
                "the login was started in another browser".into(),
            ));
        }
        Ok(state)
    }

    async fn finish_inner(
        &self,
        org: &str,
        cb: &Callback,
        binding: Option<&str>,
    ) -> Result<(UserId, oidc::Identity, String), SignInError> {
        let o = self.org(org)?;
        let state = cb
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SignInError::InvalidState("the response has no state".into()))?;
        // Taken, not read: a state works once, whatever happens next.
        let login: LoginState = self.take_state(org, "login", state, binding).await?;
        let oidc = o.oidc.as_ref().ok_or(SignInError::UnknownOrg)?;
        // RFC 9207: a provider that sends `iss` must send ours; one that says it does must.
        match cb.iss.as_deref() {
            Some(iss) if iss != oidc.issuer() => return Err(SignInError::IssuerMismatch),
            None if oidc.sends_iss().await? => return Err(SignInError::IssuerMismatch),
            _ => {}
        }
        if let Some(err) = &cb.error {
            let desc = cb.error_description.as_deref().unwrap_or_default();
            let mut text = format!("{err} {desc}");
            text.truncate(200);
            return Err(SignInError::IdpError(text.trim().to_string()));
        }
        let code = cb
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| SignInError::InvalidState("the response has no code".into()))?;
        let identity = oidc
            .complete(code, &login.pkce_verifier, &login.nonce)
            .await?;
        let user = self.admit(org, o, &identity).await?;
        Ok((user, identity, login.return_to))
    }

    /// The user behind a verified identity, if active; applies asserted groups.
    async fn admit(
        &self,
        org: &str,
        o: &OrgSignIn,
        identity: &oidc::Identity,
    ) -> Result<UserId, SignInError> {
        let source = o.cfg.groups_source;
        let org_id = OrgId::new(org);
        let user = self.resolve_user(&org_id, &o.cfg, identity).await?;
        let Some(u) = self.dir.get_user(&org_id, &user).await? else {
            return Err(SignInError::NotProvisioned(
                "the linked user was deleted".into(),
            ));
        };
        if !u.active {
            return Err(SignInError::UserInactive);
        }
        if source != GroupsSource::Scim {
            // With an overage the provider did not say which groups the person has: the
            // groups of earlier sign-ins stop counting (fail closed) rather than linger.
            let asserted: &[String] = if identity.groups_overage {
                &[]
            } else {
                &identity.groups
            };
            let now = self.clock.now_ms();
            let changed = self
                .identities
                .set_asserted_groups(&org_id, &user, asserted, now)
                .await?;
            if changed {
                self.access
                    .sync_user(&org_id, &user, "signin.groups", "signin:oidc")
                    .await
                    .map_err(|e| SignInError::Unavailable(e.to_string()))?;
            }
        }
        if identity.groups_overage && source == GroupsSource::Assertion {
            return Err(SignInError::GroupsOverage);
        }
        Ok(user)
    }

    /// The user an identity is: its link, else the SCIM user whose `externalId` is the
    /// subject, else (when the org allows it) a new user.
    async fn resolve_user(
        &self,
        org: &OrgId,
        cfg: &SignInConfig,
        id: &oidc::Identity,
    ) -> Result<UserId, SignInError> {
        if let Some(u) = self
            .identities
            .find_identity(org, &id.issuer, &id.subject)
            .await?
        {
            return Ok(u);
        }
        let now = self.clock.now_ms();
        let scan = Scan {
            lookup: Some((IndexedAttr::ExternalId, id.subject.clone())),
            sort: SortAttr::Natural,
            descending: false,
            offset: 0,
            limit: 2,
        };
        let page = self.dir.scan_users(org, &scan).await?;
        match page.items.as_slice() {
            [u] => {
                return Ok(self
                    .identities
                    .link_identity(org, &id.issuer, &id.subject, &u.id, now)
                    .await?);
            }
            [] => {}
            _ => {
                return Err(SignInError::NotProvisioned(
                    "several users carry this subject as externalId".into(),
                ));
            }
        }
        if !cfg.jit {
            return Err(SignInError::NotProvisioned(
                "ask your IdP admin to assign you to the broker's app (SCIM)".into(),
            ));
        }
        let user_name = id
            .preferred_username
            .clone()
            .or_else(|| id.email.clone())
            .unwrap_or_else(|| id.subject.clone());
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "externalId": id.subject,
            "active": true,
        });
        if let Some(email) = &id.email {
            body["emails"] = json!([{"value": email, "primary": true, "type": "work"}]);
        }
        if let Some(name) = &id.name {
            body["displayName"] = json!(name);
        }
        let ctx = ScimCtx {
            org: org.clone(),
            actor: "signin:jit".into(),
            base_url: format!("{}/scim/v2/{}", self.public_url, org),
        };
        let created = self
            .provisioning
            .create_user(&ctx, body)
            .await
            .map_err(|e| {
                SignInError::NotProvisioned(format!("cannot create the user: {}", e.detail))
            })?;
        let user = created.body["id"]
            .as_str()
            .map(|id| UserId::new(id.to_string()))
            .ok_or_else(|| SignInError::Unavailable("the created user has no id".into()))?;
        self.access
            .sync_user(org, &user, "signin.jit", "signin:jit")
            .await
            .map_err(|e| SignInError::Unavailable(e.to_string()))?;
        Ok(self
            .identities
            .link_identity(org, &id.issuer, &id.subject, &user, now)
            .await?)
    }

    /// The session behind a cookie, if it is valid for `org` and not expired.
    pub async fn session(&self, org: &str, cookie: &str) -> Result<Option<Session>, SignInError> {
        let key = session_key(cookie);
        let Some(sealed) = self.eph.get(&key).await? else {
            return Ok(None);
        };
        let Ok(plain) = self.ring.open(&sealed, &aad(org, "session", &key)) else {
            // Sealed for another org (or tampered with): not a session here.
            return Ok(None);
        };
        let s: Session = match serde_json::from_slice(&plain) {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
        if s.org != org || s.expires_ms <= self.clock.now_ms() {
            return Ok(None);
        }
        Ok(Some(s))
    }

    /// Ends a session.
    pub async fn logout(&self, org: &str, cookie: &str) -> Result<(), SignInError> {
        if let Some(s) = self.session(org, cookie).await? {
            self.record(org, "signin.logout", &s.user_id, json!({}));
        }
        self.eph.remove(&session_key(cookie)).await?;
        Ok(())
    }

    /// Whether the session's user is, right now, active and in the org's admin group.
    pub async fn is_admin(&self, org: &str, s: &Session) -> Result<bool, SignInError> {
        let Some(admin_group) = self.orgs.get(org).and_then(|o| o.cfg.admin_group.clone()) else {
            return Ok(false);
        };
        let org_id = OrgId::new(org);
        let user = UserId::new(s.user_id.clone());
        let Some(u) = self.dir.get_user(&org_id, &user).await? else {
            return Ok(false);
        };
        if !u.active {
            return Ok(false);
        }
        Ok(self
            .groups_for_entitlements(&org_id, &user)
            .await?
            .iter()
            .any(|g| g.eq_ignore_ascii_case(&admin_group)))
    }

    /// The group names that count for the user's entitlements (per `groups_source`).
    pub async fn groups_for_entitlements(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Vec<String>, SignInError> {
        let source = self.access.groups_source(org);
        let mut out = Vec::new();
        if source != GroupsSource::Assertion {
            let mut g = self.dir.groups_of(org, std::slice::from_ref(user)).await?;
            out.extend(
                g.remove(user)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|g| g.display),
            );
        }
        if source != GroupsSource::Scim {
            out.extend(self.identities.asserted_groups(org, user).await?);
        }
        Ok(out)
    }

    /// The org's sign-in settings.
    pub fn config(&self, org: &str) -> Option<&SignInConfig> {
        self.orgs.get(org).map(|o| &o.cfg)
    }

    fn record(&self, org: &str, action: &str, user: &str, summary: serde_json::Value) {
        let entry = AuditEntry {
            org: OrgId::new(org),
            at_ms: self.clock.now_ms(),
            actor: "signin:oidc".into(),
            action: action.into(),
            resource_type: "User".into(),
            resource_id: user.to_string(),
            summary,
        };
        if self.audit.record(entry).is_err() {
            tracing::warn!(org, action, "audit backlog full: sign-in record not queued");
        }
    }
}

/// `return_to` if it is a path on this broker, else the user page.
pub fn safe_return_to(org: &str, return_to: Option<&str>) -> String {
    match return_to {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.chars().any(|c| c.is_control())
                && p.len() <= 512 =>
        {
            p.to_string()
        }
        _ => format!("/auth/{org}/me"),
    }
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn hex_hash(v: &str) -> String {
    hex::encode(Sha256::digest(v.as_bytes()))
}

fn session_key(cookie: &str) -> String {
    format!("ab:sess:{}", hex_hash(cookie))
}

fn aad<'a>(org: &'a str, purpose: &'a str, key: &'a str) -> Aad<'a> {
    Aad {
        org,
        user: purpose,
        connector: key,
        record_version: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::safe_return_to;

    #[test]
    fn return_to_stays_on_this_broker() {
        assert_eq!(
            safe_return_to("acme", Some("/auth/acme/me?x=1")),
            "/auth/acme/me?x=1"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "javascript:alert(1)",
            "",
            "relative/path",
            "/ok\r\nSet-Cookie: x=y",
        ] {
            assert_eq!(
                safe_return_to("acme", Some(bad)),
                "/auth/acme/me",
                "{bad:?}"
            );
        }
        assert_eq!(safe_return_to("acme", None), "/auth/acme/me");
    }
}
