//! `auth-broker keys rotate`: re-seals, online, everything the vault key ring seals in the
//! vault and the system of record under the ring's active key:
//! - the vault's token records (a compare-and-set on the user's epoch, so a record revoked or
//!   replaced meanwhile is skipped);
//! - each org's signing keys;
//! - each upstream connector's client secret (a compare-and-set on the sealed bytes read,
//!   with an audit record; nothing else of the connector changes);
//! - each person's upstream grant (a compare-and-set on the version and sealed bytes read,
//!   which leaves the version as it is: the refresh token is the same, so a refresh that read
//!   the grant before still stores its rotated token, and nothing it obtained is thrown away);
//! - the pending rows of the upstream revocation outbox (only while still pending, in the
//!   form each was queued in).
//!
//! Serving never stops: every write is conditional on what was read, and whatever wins a race
//! against the rotation was written by a serving replica under its own active key. A record no
//! key of the ring opens is counted `unreadable` and left untouched.

use std::sync::Arc;

use secrecy::ExposeSecret;
use serde_json::json;

use crate::crypto::seal::{Aad, KeyRing};
use crate::domain::audit::AuditEntry;
use crate::domain::clock::Millis;
use crate::domain::consent::{Consents, GrantKey, StoredGrant};
use crate::domain::ports::{Directory, PolicyStore, Scan, SigningKeyStore, SortAttr, Tenants};
use crate::domain::vault::{CasOutcome, Vault};
use crate::domain::{OrgId, StoreError};
use crate::service::upstream::secrets;

/// How many times a grant rewritten under the rotation is read again before it is skipped.
const GRANT_READS: usize = 3;
/// Rows read per page.
const PAGE: u32 = 200;
/// The actor of the audit records a rotation writes.
pub const ACTOR: &str = "cli:keys-rotate";

/// What a rotation did with one kind of sealed record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Re-sealed under the active key.
    pub resealed: u64,
    /// Already under the active key.
    pub current: u64,
    /// Changed or vanished meanwhile (skipped safely: its writer sealed it).
    pub skipped: u64,
    /// No key in the ring opens it (left untouched, reported).
    pub unreadable: u64,
}

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Vault token records re-sealed under the active key.
    pub resealed: u64,
    /// Vault token records already under the active key.
    pub current: u64,
    /// Vault token records that changed or vanished meanwhile (skipped safely).
    pub skipped: u64,
    /// Vault token records no key in the ring opens (left untouched, reported).
    pub unreadable: u64,
    /// Signing keys re-sealed.
    pub signing_keys: u64,
    /// Upstream connectors' client secrets.
    pub client_secrets: Counts,
    /// People's upstream grants (refresh tokens).
    pub grants: Counts,
    /// Pending rows of the upstream revocation outbox.
    pub revocations: Counts,
}

impl RotationReport {
    /// Records of every kind that no key in the ring opens (any makes the command exit 1).
    pub fn unreadable_total(&self) -> u64 {
        self.unreadable
            + self.client_secrets.unreadable
            + self.grants.unreadable
            + self.revocations.unreadable
    }
}

/// The stores a rotation walks.
#[derive(Clone, Copy)]
pub struct Sealed<'a> {
    /// Orgs.
    pub tenants: &'a dyn Tenants,
    /// Users (whose vault records are walked).
    pub dir: &'a dyn Directory,
    /// Signing keys.
    pub signing: &'a dyn SigningKeyStore,
    /// Connectors (client secrets).
    pub policy: &'a dyn PolicyStore,
    /// Grants and the revocation outbox.
    pub consents: &'a dyn Consents,
}

/// Re-seals everything under `ring`'s active key; `now_ms` dates the audit records.
pub async fn rotate(
    stores: Sealed<'_>,
    vault: Arc<dyn Vault>,
    ring: &KeyRing,
    now_ms: Millis,
) -> anyhow::Result<RotationReport> {
    let mut report = RotationReport::default();
    for k in stores.signing.signing_keys().await? {
        let aad = crate::keys::signing_key_aad(k.org.as_ref().map(OrgId::as_str), &k.kid);
        if !ring.needs_reseal(&k.sealed_der) {
            continue;
        }
        let der = ring
            .open(&k.sealed_der, &aad)
            .map_err(|e| anyhow::anyhow!("signing key {}: {e}", k.kid))?;
        stores
            .signing
            .reseal_signing_key(&k.kid, &ring.seal(&der, &aad))
            .await?;
        report.signing_keys += 1;
    }
    let orgs = stores.tenants.list_orgs().await?;
    for org in &orgs {
        reseal_org(&org.id, stores.dir, vault.as_ref(), ring, &mut report).await?;
        reseal_client_secrets(&org.id, stores.policy, ring, now_ms, &mut report).await?;
    }
    reseal_grants(stores.consents, ring, &mut report.grants).await?;
    reseal_revocations(stores.consents, ring, &mut report.revocations).await?;
    Ok(report)
}

async fn reseal_org(
    org: &OrgId,
    dir: &dyn Directory,
    vault: &dyn Vault,
    ring: &KeyRing,
    report: &mut RotationReport,
) -> anyhow::Result<()> {
    let mut offset = 0;
    loop {
        let scan = Scan {
            lookup: None,
            sort: SortAttr::Natural,
            descending: false,
            offset,
            limit: 500,
        };
        let page = dir.scan_users(org, &scan).await?;
        if page.items.is_empty() {
            return Ok(());
        }
        offset += page.items.len() as u64;
        for user in &page.items {
            for field in vault.token_connectors(org, &user.id).await? {
                let read = vault.read(org, &user.id, &field).await?;
                let (Some(p), Some(sealed)) = (read.projection, read.sealed) else {
                    report.skipped += 1;
                    continue;
                };
                if !ring.needs_reseal(&sealed) {
                    report.current += 1;
                    continue;
                }
                let aad = Aad {
                    org: org.as_str(),
                    user: user.id.as_str(),
                    connector: &field,
                    record_version: p.epoch,
                };
                let Ok(plain) = ring.open(&sealed, &aad) else {
                    report.unreadable += 1;
                    continue;
                };
                let resealed = ring.seal(&plain, &aad);
                match vault
                    .store_token(org, &user.id, &field, p.epoch, &resealed)
                    .await?
                {
                    CasOutcome::Stored => report.resealed += 1,
                    CasOutcome::EpochMoved => report.skipped += 1,
                }
            }
        }
    }
}

/// The org's upstream connectors' client secrets (those stored sealed; a secret named by
/// `client_secret_env` is not the broker's to re-seal).
async fn reseal_client_secrets(
    org: &OrgId,
    policy: &dyn PolicyStore,
    ring: &KeyRing,
    now_ms: Millis,
    report: &mut RotationReport,
) -> Result<(), StoreError> {
    let counts = &mut report.client_secrets;
    for c in policy.connectors(org).await? {
        let Some(sealed) = c.upstream.as_ref().and_then(|u| u.client_secret.as_deref()) else {
            continue;
        };
        if !ring.needs_reseal(sealed) {
            counts.current += 1;
            continue;
        }
        let Ok(secret) = secrets::open_client_secret(ring, org, &c.id, sealed) else {
            tracing::error!(org = %org, connector = %c.id, "client secret opens with no key of the ring; left as it is");
            counts.unreadable += 1;
            continue;
        };
        let resealed = secrets::seal_client_secret(ring, org, &c.id, secret.expose_secret());
        let audit = AuditEntry {
            org: org.clone(),
            at_ms: now_ms,
            actor: ACTOR.into(),
            action: "keys.rotate.client_secret".into(),
            resource_type: "Connector".into(),
            resource_id: c.id.clone(),
            summary: json!({"vault_key": ring.active_id()}),
        };
        if policy
            .reseal_client_secret(org, &c.id, sealed, &resealed, &audit)
            .await?
        {
            tracing::info!(org = %org, connector = %c.id, vault_key = %ring.active_id(), "client secret re-sealed");
            counts.resealed += 1;
        } else {
            counts.skipped += 1;
        }
    }
    Ok(())
}

/// Every org's grants, page by page.
async fn reseal_grants(
    consents: &dyn Consents,
    ring: &KeyRing,
    counts: &mut Counts,
) -> Result<(), StoreError> {
    let mut after: Option<GrantKey> = None;
    loop {
        let page = consents.grants_after(after.as_ref(), PAGE).await?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (key, grant) in page {
            reseal_grant(consents, ring, &key, grant, counts).await?;
        }
    }
}

/// One grant: re-sealed where it still is what was read, else read again (a refresh stored
/// its rotated token, under its replica's active key) and looked at anew.
async fn reseal_grant(
    consents: &dyn Consents,
    ring: &KeyRing,
    key: &GrantKey,
    mut grant: StoredGrant,
    counts: &mut Counts,
) -> Result<(), StoreError> {
    for _ in 0..GRANT_READS {
        if !ring.needs_reseal(&grant.sealed) {
            counts.current += 1;
            return Ok(());
        }
        let (org, user, connector) = (&key.org, &key.user, key.connector.as_str());
        let Ok(token) = secrets::open_grant(ring, org, user, connector, &grant.sealed) else {
            tracing::error!(org = %org, user = %user, connector, "upstream grant opens with no key of the ring; left as it is");
            counts.unreadable += 1;
            return Ok(());
        };
        let resealed = secrets::seal_grant(ring, org, user, connector, token.expose_secret());
        if consents
            .reseal_grant(key, grant.version, &grant.sealed, &resealed)
            .await?
        {
            counts.resealed += 1;
            return Ok(());
        }
        match consents.grant(org, user, connector).await? {
            Some(g) => grant = g,
            None => break,
        }
    }
    counts.skipped += 1;
    Ok(())
}

/// Every pending outbox row, in the form it was queued in: a grant queued as it was opens as
/// a grant, a token sealed for revocation opens as such (the outbox opens both).
async fn reseal_revocations(
    consents: &dyn Consents,
    ring: &KeyRing,
    counts: &mut Counts,
) -> Result<(), StoreError> {
    let mut after: Option<String> = None;
    loop {
        let page = consents
            .pending_revocations_after(after.as_deref(), PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id.clone());
        for row in page {
            if !ring.needs_reseal(&row.sealed) {
                counts.current += 1;
                continue;
            }
            let (org, user, connector) = (&row.org, &row.user, row.connector.as_str());
            let resealed = if let Ok(t) =
                secrets::open_grant(ring, org, user, connector, &row.sealed)
            {
                secrets::seal_grant(ring, org, user, connector, t.expose_secret())
            } else if let Ok(t) = secrets::open_queued(ring, org, user, connector, &row.sealed) {
                secrets::seal_revocation(ring, org, user, connector, t.expose_secret())
            } else {
                tracing::error!(org = %org, user = %user, connector, row = %row.id, "queued upstream revocation opens with no key of the ring; left as it is");
                counts.unreadable += 1;
                continue;
            };
            if consents
                .reseal_revocation(&row.id, &row.sealed, &resealed)
                .await?
            {
                counts.resealed += 1;
            } else {
                counts.skipped += 1;
            }
        }
    }
}
