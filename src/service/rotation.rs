//! `auth-broker keys rotate`: re-seals every vault record and the broker's signing keys under
//! the active vault key, online. Each token write is a compare-and-set on the user's epoch,
//! so a record revoked or replaced meanwhile is simply skipped; serving never stops.

use std::sync::Arc;

use crate::crypto::seal::{Aad, KeyRing};
use crate::domain::OrgId;
use crate::domain::ports::{Directory, Scan, SigningKeyStore, SortAttr, Tenants};
use crate::domain::vault::{CasOutcome, Vault};

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Records re-sealed under the active key.
    pub resealed: u64,
    /// Records already under the active key.
    pub current: u64,
    /// Records that changed or vanished meanwhile (skipped safely).
    pub skipped: u64,
    /// Records no key in the ring opens (left untouched, reported).
    pub unreadable: u64,
    /// Signing keys re-sealed.
    pub signing_keys: u64,
}

/// Re-seals everything under `ring`'s active key.
pub async fn rotate(
    tenants: &dyn Tenants,
    dir: &dyn Directory,
    vault: Arc<dyn Vault>,
    signing: &dyn SigningKeyStore,
    ring: &KeyRing,
) -> anyhow::Result<RotationReport> {
    let mut report = RotationReport::default();
    for k in signing.signing_keys().await? {
        let aad = crate::keys::signing_key_aad(k.org.as_ref().map(OrgId::as_str), &k.kid);
        if !ring.needs_reseal(&k.sealed_der) {
            continue;
        }
        let der = ring
            .open(&k.sealed_der, &aad)
            .map_err(|e| anyhow::anyhow!("signing key {}: {e}", k.kid))?;
        signing
            .reseal_signing_key(&k.kid, &ring.seal(&der, &aad))
            .await?;
        report.signing_keys += 1;
    }
    for org in tenants.list_orgs().await? {
        reseal_org(&org.id, dir, vault.as_ref(), ring, &mut report).await?;
    }
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
