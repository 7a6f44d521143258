//! Sign-in to the broker through the org's identity provider (OIDC or SAML 2.0), server-side
//! sessions, and the users sign-in finds or creates.
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

mod error;
pub mod oidc;
pub mod saml;
mod session;
mod state;
mod users;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

pub use error::SignInError;
pub use session::Session;
pub use state::{AcsForm, Begun, Callback, Finished, safe_return_to};
use state::{Bound, LoginState, PendingSaml, aad, hex_hash, random_token, session_key};

use crate::config::{Config, SignInConfig};
use crate::crypto::seal::KeyRing;
use crate::domain::audit::AuditEntry;
use crate::domain::clock::Clock;
use crate::domain::consent::IdpGrants;
use crate::domain::ports::{Directory, Identities};
use crate::domain::vault::Ephemeral;
use crate::domain::{OrgId, UserId};
use crate::service::access::Access;
use crate::service::audit_sink::AuditSink;
use crate::service::provisioning::Provisioning;

/// How long a started login may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The cookie binding a login to the browser that started it.
pub const LOGIN_COOKIE: &str = "ab_login";
/// The same for SAML (`SameSite=None; Secure`: it rides on the IdP's cross-site POST).
pub const SAML_COOKIE: &str = "ab_saml";
/// The session cookie.
pub const SESSION_COOKIE: &str = "ab_session";

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
    idp_grants: Option<Arc<dyn IdpGrants>>,
    /// Sign-ins an org may have started within one login lifetime (`LOGIN_TTL`).
    max_pending_logins: u64,
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
    /// Keeps the refresh token an OIDC sign-in returns (`idp_exchange` connectors).
    pub idp_grants: Option<Arc<dyn IdpGrants>>,
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
            idp_grants: parts.idp_grants,
            max_pending_logins: config.server.max_pending_logins,
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
        self.admit_login(org).await?;
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

    /// Counts a sign-in started for `org` (anonymous: anyone may start one) and refuses it
    /// beyond `server.max_pending_logins` within the current login lifetime, so that nobody
    /// can fill the ephemeral store with pending state.
    async fn admit_login(&self, org: &str) -> Result<(), SignInError> {
        let window = self.clock.now_ms() / LOGIN_TTL.as_millis() as i64;
        let key = format!("ab:logins:{}:{window}", hex_hash(org));
        let started = self.eph.count(&key, LOGIN_TTL * 2).await?;
        if started > self.max_pending_logins {
            tracing::warn!(org, "sign-in refused: too many pending sign-ins");
            return Err(SignInError::TooManyLogins);
        }
        Ok(())
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
        let (identity, refresh_token) = oidc
            .complete(code, &login.pkce_verifier, &login.nonce)
            .await?;
        let user = self.admit(org, o, &identity).await?;
        if let (Some(rt), Some(keeper)) = (refresh_token, &self.idp_grants) {
            // Kept for connectors whose ID-JAGs come from the IdP. Without it the person
            // signs in all the same; those connectors answer 409 until a sign-in keeps one.
            let scopes = oidc.scopes();
            if let Err(e) = keeper
                .keep_idp_grant(&OrgId::new(org), &user, &rt, &scopes)
                .await
            {
                tracing::warn!(org, error = %e, "the IdP's refresh token was not kept");
            }
        }
        Ok((user, identity, login.return_to))
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
