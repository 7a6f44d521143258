//! The broker's own tokens: the sealed token record kept in the vault, and RFC 9068 JWT
//! access tokens minted for `broker_jwt` connectors, each org signing as its own issuer with
//! its own ES256 keys.
//!
//! Invariant: a key signs only once its activation time has passed, and a replica learns of a
//! key (and publishes it) a publication lead before that (`keys::signing`), so every token
//! the broker signs names a key that every replica's JWKS already has.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::crypto::seal::{Aad, KeyRing, SealError};
use crate::crypto::signing::{Expected, SigningKey, TimeClaims, VerifyingKey, verify_jwt};
use crate::domain::clock::{Clock, Millis, SystemClock};
use crate::domain::connector::Connector;
use crate::keys::{OrgKeys, ScheduledKey};

/// What the vault holds (sealed) for one user, connector and scope set.
#[derive(Serialize, Deserialize)]
pub struct TokenRecord {
    /// The access token itself.
    pub access_token: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Scopes the token carries.
    pub scopes: Vec<String>,
    /// Token id (`jti`).
    pub jti: String,
    /// When it was minted, Unix seconds.
    pub minted_at: i64,
    /// The scopes asked for, when the issuer may grant fewer (upstream tokens): what a cached
    /// token is matched on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked: Option<Vec<String>>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Drop for TokenRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
    }
}

/// Seals a record under the active key, bound to its owner and epoch.
pub fn seal(ring: &KeyRing, rec: &TokenRecord, aad: &Aad<'_>) -> Vec<u8> {
    let mut plain = zeroize::Zeroizing::new(serde_json::to_vec(rec).unwrap_or_default());
    let out = ring.seal(&plain, aad);
    use zeroize::Zeroize;
    plain.zeroize();
    out
}

/// Opens a sealed record; any mismatch of owner, epoch or key is an error, never a token.
pub fn open(ring: &KeyRing, sealed: &[u8], aad: &Aad<'_>) -> Result<TokenRecord, SealError> {
    let plain = ring.open(sealed, aad)?;
    serde_json::from_slice(&plain).map_err(|_| SealError::Malformed)
}

/// The `typ` of the broker's access tokens (RFC 9068 §2.1), checked on verification.
const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The claims of the broker's RFC 9068 access tokens: what `mint` signs and `verify` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The org's issuer.
    pub iss: String,
    /// The user.
    pub sub: String,
    /// The connector's audience.
    pub aud: String,
    /// The OAuth client the token was issued to (the gateway credential).
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Token id: what revocation names.
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The org.
    pub ab_org: String,
    /// The connector.
    pub ab_con: String,
    /// The user's epoch when minted; introspection compares it.
    pub ab_ep: u64,
}

impl TimeClaims for AccessClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
    fn iat(&self) -> Option<i64> {
        Some(self.iat)
    }
}

/// One org's keys as the signer holds them between reloads.
struct KeySet {
    /// Newest activation first (see [`OrgKeys`]).
    signing: Vec<ScheduledKey>,
    published: Arc<[VerifyingKey]>,
}

impl KeySet {
    fn new(keys: OrgKeys) -> Self {
        Self {
            signing: keys.signing,
            published: keys.published.into(),
        }
    }

    /// The key that signs at `now`: the newest whose signing stretch contains `now`; failing
    /// that (the key that should sign does not open here), the newest already activated; and
    /// before any activation, the first to activate. Every one of them is published.
    fn at(&self, now: Millis) -> Option<&SigningKey> {
        let s = &self.signing;
        s.iter()
            .find(|k| k.from_ms <= now && k.until_ms.is_none_or(|u| u > now))
            .or_else(|| s.iter().find(|k| k.from_ms <= now))
            .or_else(|| s.last())
            .map(|k| &*k.key)
    }

    /// What tells two sets apart: each key and its stretch, and what is published.
    fn same_as(&self, other: &OrgKeys) -> bool {
        let signing = |a: &ScheduledKey, b: &ScheduledKey| {
            a.key.kid() == b.key.kid() && a.from_ms == b.from_ms && a.until_ms == b.until_ms
        };
        self.signing.len() == other.signing.len()
            && self
                .signing
                .iter()
                .zip(&other.signing)
                .all(|(a, b)| signing(a, b))
            && self.published.len() == other.published.len()
            && self
                .published
                .iter()
                .zip(&other.published)
                .all(|(a, b)| a.kid() == b.kid())
    }
}

/// Each org's issuer: its `iss` (fixed for the process: orgs come from the configuration) and
/// its keys, replaced whole by each reload that changes them.
struct Issuer {
    iss: String,
    keys: RwLock<Arc<KeySet>>,
}

impl Issuer {
    /// The keys in force: a read lock held for one `Arc` clone, so a reload never waits on a
    /// signature and a signature never waits on more than the swap.
    fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            // The lock is only held for a clone or a swap, neither of which panics.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The broker's issuers, one per org (`iss` = `{base}/orgs/{org}`), each with its own keys:
/// the one that signs now, the ones waiting to sign and the retired ones, all published. A
/// token of one org never verifies with another org's keys, so `iss` and the key set pin the
/// org. Keys are swapped in by the reload (`keys::SigningKeySync`) while serving; which key
/// signs is decided at each signature from the keys' stored activation times.
pub struct Signer {
    issuers: HashMap<String, Issuer>,
    clock: Arc<dyn Clock>,
    /// Signs for an org without keys, which start-up makes impossible (every stored org gets
    /// keys before serving); never published, so what it signs verifies nowhere.
    unpublished: SigningKey,
}

impl Signer {
    /// `iss` of an org's tokens, from the issuer base (`broker.issuer`, else the public URL).
    pub fn issuer_url(base: &str, org: &str) -> String {
        format!("{}/orgs/{org}", base.trim_end_matches('/'))
    }

    /// Builds a signer over every org's keys, choosing keys by the system clock.
    pub fn new(base: &str, keys: Vec<OrgKeys>) -> Self {
        let issuers = keys
            .into_iter()
            .map(|k| {
                let org = k.org.to_string();
                let issuer = Issuer {
                    iss: Self::issuer_url(base, &org),
                    keys: RwLock::new(Arc::new(KeySet::new(k))),
                };
                (org, issuer)
            })
            .collect();
        Self {
            issuers,
            clock: Arc::new(SystemClock),
            unpublished: SigningKey::generate("ab-unpublished"),
        }
    }

    /// The same signer choosing keys by `clock` (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces an org's keys (a reload); `true` when they differ from those in force. An org
    /// the signer has no issuer for is ignored (orgs are fixed for the process).
    pub fn replace(&self, keys: OrgKeys) -> bool {
        let Some(issuer) = self.issuers.get(keys.org.as_str()) else {
            return false;
        };
        if issuer.keys().same_as(&keys) {
            return false;
        }
        let set = Arc::new(KeySet::new(keys));
        match issuer.keys.write() {
            Ok(mut live) => *live = set,
            Err(poisoned) => {
                *poisoned.into_inner() = set;
                issuer.keys.clear_poison();
            }
        }
        true
    }

    /// The org's keys in force (what a reload reuses rather than opening again).
    pub fn keys(&self, org: &str) -> Option<OrgKeys> {
        let set = self.issuers.get(org)?.keys();
        Some(OrgKeys {
            org: crate::domain::OrgId::new(org),
            signing: set.signing.clone(),
            published: set.published.to_vec(),
        })
    }

    /// `iss` of the org's tokens, if the org is known.
    pub fn issuer(&self, org: &str) -> Option<&str> {
        self.issuers.get(org).map(|i| i.iss.as_str())
    }

    /// The org's published keys: its JWKS and what its tokens verify with.
    pub fn published(&self, org: &str) -> Option<Arc<[VerifyingKey]>> {
        Some(self.issuers.get(org)?.keys().published.clone())
    }

    /// The org's JWKS document.
    pub fn jwks(&self, org: &str) -> Option<serde_json::Value> {
        Some(crate::crypto::signing::jwks(&self.published(org)?))
    }

    /// The claims of an access token `org` issued: `typ` `at+jwt`, signed by one of the org's
    /// keys, in date (with `leeway_secs`), `iss` the org's issuer, `ab_org` the org and, if
    /// `aud` is given, that audience. `None` for anything else, including a valid token of
    /// another org.
    pub fn verify(
        &self,
        org: &str,
        token: &str,
        aud: Option<&str>,
        now: i64,
        leeway_secs: i64,
    ) -> Option<AccessClaims> {
        let issuer = self.issuers.get(org)?;
        let expected = Expected {
            typ: ACCESS_TOKEN_TYP,
            iss: &issuer.iss,
            aud,
            now,
            leeway_secs,
        };
        let keys = issuer.keys();
        let claims: AccessClaims = verify_jwt(token, &keys.published, &expected).ok()?;
        (claims.ab_org == org).then_some(claims)
    }

    /// Signs `claims` as the org's issuer with the key that signs now (assertions the broker
    /// sends to upstream authorization servers: ID-JAGs, subject tokens, client assertions);
    /// `None` for an org without keys.
    pub fn sign_as<C: Serialize>(&self, org: &str, typ: &str, claims: &C) -> Option<String> {
        let keys = self.issuers.get(org)?.keys();
        keys.at(self.clock.now_ms())?.sign_jwt(typ, claims).ok()
    }

    /// Mints an RFC 9068 JWT access token for a user and connector, as the user's org, with
    /// the key that signs now.
    pub fn mint(&self, grant: &MintInput<'_>, now: i64) -> TokenRecord {
        let issuer = self.issuers.get(grant.org);
        let keys = issuer.map(Issuer::keys);
        let (iss, key) = match (
            issuer,
            keys.as_deref().and_then(|k| k.at(self.clock.now_ms())),
        ) {
            (Some(i), Some(key)) => (i.iss.as_str(), key),
            _ => {
                tracing::error!(org = %grant.org, "no signing key for this org; the token will not verify");
                ("", &self.unpublished)
            }
        };
        let jti = uuid::Uuid::new_v4().to_string();
        let exp = now + grant.ttl_secs as i64;
        let claims = AccessClaims {
            iss: iss.to_owned(),
            sub: grant.user_id.to_owned(),
            aud: grant.connector.audience.clone(),
            client_id: grant.client_id.to_owned(),
            scope: grant.scopes.join(" "),
            jti,
            iat: now,
            exp,
            ab_org: grant.org.to_owned(),
            ab_con: grant.connector.id.clone(),
            ab_ep: grant.epoch,
        };
        // `AccessClaims` holds only strings and integers, which serde_json always serializes,
        // so signing cannot fail.
        let access_token = key
            .sign_jwt(ACCESS_TOKEN_TYP, &claims)
            .expect("access token claims serialize");
        TokenRecord {
            access_token,
            expires_at: exp,
            scopes: grant.scopes.to_vec(),
            jti: claims.jti,
            minted_at: now,
            asked: None,
        }
    }
}

/// What a minted token is about.
pub struct MintInput<'a> {
    /// The tenant.
    pub org: &'a str,
    /// The user (`sub`).
    pub user_id: &'a str,
    /// The connector (its audience becomes `aud`).
    pub connector: &'a Connector,
    /// The OAuth client the token is issued to (the gateway credential).
    pub client_id: &'a str,
    /// Scopes, sorted.
    pub scopes: &'a [String],
    /// The user's epoch when minted; introspection compares it.
    pub epoch: u64,
    /// Lifetime.
    pub ttl_secs: u64,
}

#[cfg(test)]
mod tests;
