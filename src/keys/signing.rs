//! Each org's signing keys over time, and the reload that keeps every replica's signer equal
//! to the database.
//!
//! A key's life is stored data (`signing_keys`): published from its creation, signing from
//! its activation, signing no more from its retirement, published until `publish_for` after
//! that. A rotation (by age, or `auth-broker keys rotate-signing`) stores a new key that
//! activates a publication lead later and, in the same transaction, retires the org's other
//! keys at that same instant. Every replica reloads the keys every poll interval (well below
//! the lead) and publishes every key not yet past its publication, so by the time a new key
//! signs, every replica's JWKS (and introspection) already has it; the old key keeps signing
//! until then and stays published while tokens it signed can be alive. Which key signs is
//! decided at signing time from those stored instants (`Signer`), not by when a replica
//! happened to reload.
//!
//! An org's first key has no one to be published to before it: it signs at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::config::Config;
use crate::crypto::seal::KeyRing;
use crate::crypto::signing::{SigningKey, VerifyingKey};
use crate::domain::clock::{Clock, Millis};
use crate::domain::ports::{NewSigningKey, SigningKeyStore, StoredSigningKey};
use crate::domain::{OrgId, StoreError};
use crate::service::tokens::Signer;

use super::signing_key_aad;

/// When signing keys rotate, how long before signing a new key is published, and how long a
/// retired one stays published.
#[derive(Debug, Clone, Copy)]
pub struct SigningPolicy {
    /// A key that has signed for this long is replaced (with the lead).
    pub max_age_ms: Millis,
    /// A retired key stays in the JWKS this long after it stopped signing (longer than any
    /// token's lifetime).
    pub publish_for_ms: Millis,
    /// A new key is published this long before it signs (longer than the reload interval).
    pub publish_lead_ms: Millis,
}

impl SigningPolicy {
    /// From `[broker]`: `signing_key_max_age_days`, `signing_key_publish_lead_secs`, and a
    /// publication after retirement of twice the token lifetime or two days, whichever is
    /// longer.
    pub fn from_config(config: &Config) -> Self {
        let b = &config.broker;
        Self {
            max_age_ms: (b.signing_key_max_age_days as i64).saturating_mul(86_400_000),
            publish_for_ms: (b.token_ttl_secs as i64).max(86_400).saturating_mul(2_000),
            publish_lead_ms: (b.signing_key_publish_lead_secs as i64).saturating_mul(1_000),
        }
    }
}

/// A key that can sign, with the stretch of time it signs in.
#[derive(Debug, Clone)]
pub struct ScheduledKey {
    /// Signs from then on.
    pub from_ms: Millis,
    /// Signs no more from then on (the activation of the key that replaces it).
    pub until_ms: Option<Millis>,
    /// The key, parsed once.
    pub key: Arc<SigningKey>,
}

/// One org's keys as a signer holds them.
#[derive(Debug, Clone)]
pub struct OrgKeys {
    /// The org (issuer).
    pub org: OrgId,
    /// Keys whose private part opened, newest activation first.
    pub signing: Vec<ScheduledKey>,
    /// Every key the org's JWKS publishes, newest activation first.
    pub published: Vec<VerifyingKey>,
}

/// Something wrong with one stored key: it is left out of what the problem concerns.
struct Problem {
    kid: String,
    /// The key should sign now or later (a start-up with such a problem fails).
    signs: bool,
    message: String,
}

/// Builds an org's keys from the stored rows at `now`; `known` lends keys already parsed (by
/// kid), so a reload opens only keys it has not seen.
fn org_keys(
    org: &OrgId,
    rows: &[StoredSigningKey],
    ring: &KeyRing,
    policy: SigningPolicy,
    now: Millis,
    known: Option<&OrgKeys>,
) -> (OrgKeys, Vec<Problem>) {
    let mut mine: Vec<&StoredSigningKey> = rows
        .iter()
        .filter(|k| k.org.as_ref() == Some(org))
        .collect();
    mine.sort_by(|a, b| {
        (b.activates_ms, b.created_ms, &b.kid).cmp(&(a.activates_ms, a.created_ms, &a.kid))
    });
    let (mut signing, mut published, mut problems) = (Vec::new(), Vec::new(), Vec::new());
    for k in mine {
        if k.retired_ms
            .is_some_and(|r| r <= now - policy.publish_for_ms)
        {
            continue;
        }
        let signs = k.retired_ms.is_none_or(|r| r > now);
        let problem = |message: String| Problem {
            kid: k.kid.clone(),
            signs,
            message,
        };
        let lent = known.and_then(|o| o.published.iter().find(|v| v.kid() == k.kid));
        match lent
            .cloned()
            .map_or_else(|| VerifyingKey::from_jwk(&k.public_jwk), Ok)
        {
            Ok(v) => published.push(v),
            Err(e) => problems.push(problem(format!("public key unusable: {e}"))),
        }
        let lent = known.and_then(|o| o.signing.iter().find(|s| s.key.kid() == k.kid));
        let key = match lent {
            Some(s) => Ok(s.key.clone()),
            None => ring
                .open(&k.sealed_der, &signing_key_aad(Some(org.as_str()), &k.kid))
                .map_err(|e| format!("cannot be opened with the vault key ring: {e}"))
                .and_then(|der| SigningKey::from_pkcs8_der(&k.kid, &der).map_err(|e| e.to_string()))
                .map(Arc::new),
        };
        match key {
            Ok(key) => signing.push(ScheduledKey {
                from_ms: k.activates_ms,
                until_ms: k.retired_ms,
                key,
            }),
            // A key past its signing stretch that no longer opens is only published.
            Err(e) if signs => problems.push(problem(e)),
            Err(_) => {}
        }
    }
    let keys = OrgKeys {
        org: org.clone(),
        signing,
        published,
    };
    (keys, problems)
}

/// What the org needs added at `now`: `Some(true)` its first key, `Some(false)` a rotation
/// (its newest signing key is older than the maximum age and no rotation is under way).
fn due(org: &OrgId, rows: &[StoredSigningKey], policy: SigningPolicy, now: Millis) -> Option<bool> {
    let live: Vec<&StoredSigningKey> = rows
        .iter()
        .filter(|k| k.org.as_ref() == Some(org) && k.retired_ms.is_none())
        .collect();
    if live.is_empty() {
        return Some(true);
    }
    if live.iter().any(|k| k.activates_ms > now) {
        return None;
    }
    let newest = live.iter().map(|k| k.activates_ms).max().unwrap_or(now);
    (now - newest >= policy.max_age_ms).then_some(false)
}

/// Generates and stores a key for `org` that signs from `activates_ms` (see
/// [`NewSigningKey::first`]); its kid, or `None` when the store declined (another replica or
/// operator added one first).
async fn add_key(
    store: &dyn SigningKeyStore,
    ring: &KeyRing,
    org: &OrgId,
    now: Millis,
    activates_ms: Millis,
    first: bool,
) -> Result<Option<String>, StoreError> {
    let kid = format!("ab-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let key = SigningKey::generate(&kid);
    let sealed = ring.seal(
        &key.to_pkcs8_der(),
        &signing_key_aad(Some(org.as_str()), &kid),
    );
    let added = store
        .add_signing_key(&NewSigningKey {
            org,
            kid: &kid,
            sealed_der: &sealed,
            public_jwk: &key.public_jwk(),
            created_ms: now,
            activates_ms,
            first,
        })
        .await?;
    Ok(added.then_some(kid))
}

/// Adds what each org is due (its first key, signing at once; or a rotation by age, with the
/// publication lead). Returns whether anything was added.
async fn add_due(
    store: &dyn SigningKeyStore,
    ring: &KeyRing,
    orgs: &[OrgId],
    rows: &[StoredSigningKey],
    policy: SigningPolicy,
    now: Millis,
) -> Result<bool, StoreError> {
    let mut added = false;
    for org in orgs {
        let Some(first) = due(org, rows, policy, now) else {
            continue;
        };
        let activates = if first {
            now
        } else {
            now + policy.publish_lead_ms
        };
        if let Some(kid) = add_key(store, ring, org, now, activates, first).await? {
            if !first {
                tracing::info!(org = %org, kid = %kid, activates_ms = activates, "signing key reached its maximum age; a new one is published and signs after the lead");
            }
            added = true;
        }
    }
    Ok(added)
}

/// Every org's keys at start-up: the first key of a new org is made, a rotation by age is
/// scheduled (the current key signs until the new one activates), and every key that signs
/// now or later must open, or start-up fails.
pub async fn load_org_keys(
    store: &dyn SigningKeyStore,
    ring: &KeyRing,
    orgs: &[OrgId],
    policy: SigningPolicy,
    now: Millis,
) -> anyhow::Result<Vec<OrgKeys>> {
    let mut rows = store.signing_keys().await?;
    if add_due(store, ring, orgs, &rows, policy, now).await? {
        rows = store.signing_keys().await?;
    }
    let mut out = Vec::with_capacity(orgs.len());
    for org in orgs {
        let (keys, problems) = org_keys(org, &rows, ring, policy, now, None);
        if let Some(p) = problems.iter().find(|p| p.signs) {
            anyhow::bail!("signing key {} of org {org}: {}", p.kid, p.message);
        }
        out.push(keys);
    }
    Ok(out)
}

/// What `keys rotate-signing` did for one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// A new key is published now and signs from `activates_ms`; the org's other keys stop
    /// signing then.
    Scheduled {
        /// The org.
        org: OrgId,
        /// The new key.
        kid: String,
        /// When it starts signing.
        activates_ms: Millis,
    },
    /// A key stored earlier is still waiting to activate: nothing was added.
    UnderWay {
        /// The org.
        org: OrgId,
        /// The waiting key.
        kid: String,
        /// When it starts signing.
        activates_ms: Millis,
    },
}

/// `auth-broker keys rotate-signing`: for each org, a new key published now and signing
/// after the publication lead, unless a rotation is already under way. Running replicas pick
/// it up at their next reload; none needs a restart.
pub async fn rotate_signing(
    store: &dyn SigningKeyStore,
    ring: &KeyRing,
    orgs: &[OrgId],
    policy: SigningPolicy,
    now: Millis,
) -> anyhow::Result<Vec<RotationOutcome>> {
    let mut out = Vec::with_capacity(orgs.len());
    for org in orgs {
        let first = !store
            .signing_keys()
            .await?
            .iter()
            .any(|k| k.org.as_ref() == Some(org) && k.retired_ms.is_none());
        // A first key has nothing to take over from: it signs at once.
        let activates_ms = if first {
            now
        } else {
            now + policy.publish_lead_ms
        };
        if let Some(kid) = add_key(store, ring, org, now, activates_ms, first).await? {
            tracing::info!(org = %org, kid = %kid, activates_ms, "signing key rotation scheduled");
            out.push(RotationOutcome::Scheduled {
                org: org.clone(),
                kid,
                activates_ms,
            });
            continue;
        }
        let waiting = store
            .signing_keys()
            .await?
            .into_iter()
            .filter(|k| k.org.as_ref() == Some(org) && k.retired_ms.is_none())
            .max_by_key(|k| k.activates_ms)
            .ok_or_else(|| anyhow::anyhow!("org {org}: a signing key was added meanwhile"))?;
        out.push(RotationOutcome::UnderWay {
            org: org.clone(),
            kid: waiting.kid,
            activates_ms: waiting.activates_ms,
        });
    }
    Ok(out)
}

/// Keeps a signer equal to the stored keys: reloads them every interval, adds what is due
/// (rotation by age, with the lead), and swaps each org's keys into the signer. It holds the
/// signer weakly: once the server drops it, the reload stops.
pub struct SigningKeySync {
    store: Arc<dyn SigningKeyStore>,
    ring: Arc<KeyRing>,
    signer: Weak<Signer>,
    orgs: Vec<OrgId>,
    policy: SigningPolicy,
    clock: Arc<dyn Clock>,
    /// Keys whose problem was logged (once per key, not per reload).
    reported: Mutex<HashSet<String>>,
}

impl SigningKeySync {
    /// A sync of `signer` for `orgs` (the signer's issuers).
    pub fn new(
        store: Arc<dyn SigningKeyStore>,
        ring: Arc<KeyRing>,
        signer: &Arc<Signer>,
        orgs: Vec<OrgId>,
        policy: SigningPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            ring,
            signer: Arc::downgrade(signer),
            orgs,
            policy,
            clock,
            reported: Mutex::default(),
        }
    }

    /// One reload; returns how many orgs' keys changed in the signer. A key that does not open
    /// (sealed under a vault key this replica lacks) is logged and left out of signing; the
    /// keys that do open go on signing.
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let Some(signer) = self.signer.upgrade() else {
            return Ok(0);
        };
        let now = self.clock.now_ms();
        let mut rows = self.store.signing_keys().await?;
        let (store, ring) = (self.store.as_ref(), self.ring.as_ref());
        if add_due(store, ring, &self.orgs, &rows, self.policy, now).await? {
            rows = self.store.signing_keys().await?;
        }
        let mut changed = 0;
        let mut found = Vec::new();
        for org in &self.orgs {
            let known = signer.keys(org.as_str());
            let (keys, problems) = org_keys(org, &rows, ring, self.policy, now, known.as_ref());
            found.extend(problems.into_iter().map(|p| (org, p)));
            if signer.replace(keys) {
                changed += 1;
            }
        }
        if let Ok(mut reported) = self.reported.lock() {
            for (org, p) in found {
                if reported.insert(p.kid.clone()) {
                    tracing::error!(org = %org, kid = %p.kid, "signing key left out: {}", p.message);
                }
            }
        }
        Ok(changed)
    }

    /// Reloads every `every` until the signer is dropped or the task is aborted.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; start-up has just loaded the keys.
            tick.tick().await;
            let mut failing = false;
            loop {
                tick.tick().await;
                if self.signer.strong_count() == 0 {
                    return;
                }
                match self.refresh().await {
                    Ok(_) => failing = false,
                    // Logged once per outage; the keys in force stay until the store answers.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "signing key reload failed; keeping the current keys");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
