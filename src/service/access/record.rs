//! What a projection write tells the world: the event every replica relays to its gateways
//! (carrying the user's new epoch), and for a revocation the offboarding receipt and audit
//! record, kept before the caller answers.

use serde_json::json;

use super::{Access, AccessError, field_connector};
use crate::domain::audit::AuditEntry;
use crate::domain::consent::IDP_GRANT;
use crate::domain::vault::{BusEvent, Projection};
use crate::domain::{OrgId, UserId};

use super::Receipt;

/// What a revocation is, for its event, receipt and audit record.
pub(super) struct Revocation<'a> {
    pub(super) kind: &'static str,
    pub(super) reason: &'a str,
    pub(super) action: &'static str,
    pub(super) actor: &'a str,
    /// Connectors lost without a stored token (still announced and receipted).
    pub(super) lost: Vec<String>,
    /// Whether every entitlement was lost (directory-driven revocations say so).
    pub(super) all: Option<bool>,
}

impl Access {
    /// The upstream access tokens the user holds (connector, token), opened from the vault.
    pub(super) async fn upstream_tokens(
        &self,
        org: &OrgId,
        user: &UserId,
        current: Option<&Projection>,
        held: &[String],
    ) -> Result<Vec<(String, String)>, AccessError> {
        let (Some(up), Some(p)) = (&self.upstreams, current) else {
            return Ok(Vec::new());
        };
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let connectors = self.policy.connectors(org).await?;
        let mut out = Vec::new();
        for field in held {
            let connector = field_connector(field);
            let upstream = connectors.iter().any(|c| {
                c.id == connector && c.strategy != crate::domain::connector::Strategy::BrokerJwt
            });
            if !upstream {
                continue;
            }
            let read = self.vault.read(org, user, field).await?;
            if let Some(token) = read
                .sealed
                .as_deref()
                .and_then(|sealed| up.open_vault_token(org, user, field, p.epoch, sealed))
            {
                out.push((connector.to_string(), token));
            }
        }
        Ok(out)
    }

    /// Revokes upstream grants of connectors the user cannot use now (`usable`: what the
    /// system of record entitles, empty for an inactive or locked user) that an interrupted
    /// offboarding left behind: the reconciler's repair of the upstream half.
    pub(super) async fn repair_upstream_grants(
        &self,
        org: &OrgId,
        user: &UserId,
        usable: &std::collections::BTreeMap<String, Vec<String>>,
        epoch: u64,
    ) -> Result<(), AccessError> {
        let Some(up) = &self.upstreams else {
            return Ok(());
        };
        let stale: Vec<String> = up
            .consents()
            .grants_of(org, user)
            .await?
            .into_iter()
            .map(|(connector, _)| connector)
            // The IdP grant serves every idp_exchange connector: it outlives its access only
            // when nothing is usable (an inactive or locked user, or no entitlement left).
            .filter(|c| match c.as_str() {
                IDP_GRANT => usable.is_empty(),
                c => !usable.contains_key(c),
            })
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        self.counters
            .repairs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(org = %org, user = %user, connectors = ?stale, "upstream grants outlived their access; revoked by the reconciler");
        up.offboard(org, user, Some(&stale), &[], epoch).await?;
        Ok(())
    }

    /// Ends the user's upstream grants (`None`: all) and queues their revocation, with the
    /// access tokens `held`, in the durable outbox.
    pub(super) async fn offboard_upstream(
        &self,
        org: &OrgId,
        user: &UserId,
        connectors: Option<&[String]>,
        held: &[(String, String)],
        epoch: u64,
    ) -> Result<(), AccessError> {
        let Some(up) = &self.upstreams else {
            return Ok(());
        };
        let held: Vec<(String, String)> = held
            .iter()
            .filter(|(c, _)| connectors.is_none_or(|cs| cs.is_empty() || cs.contains(c)))
            .cloned()
            .collect();
        up.offboard(org, user, connectors, &held, epoch).await?;
        Ok(())
    }

    /// Tells every replica that the user's entitlements changed (nothing was revoked). A
    /// failure to publish is logged: the projection already holds the change.
    pub(super) async fn announce_change(
        &self,
        org: &OrgId,
        user: &UserId,
        next: &Projection,
        epoch: u64,
    ) {
        let event = BusEvent {
            kind: "entitlements.changed".into(),
            org: org.to_string(),
            user_id: Some(user.to_string()),
            connectors: next.connectors.keys().cloned().collect(),
            epoch,
            at_ms: self.clock.now_ms(),
            jti: None,
        };
        if let Err(e) = self.bus.publish(&event).await {
            tracing::warn!(error = %e, "entitlements event not published");
        }
    }

    /// Publishes a revocation's event and keeps its receipt and audit record.
    pub(super) async fn record_revocation(
        &self,
        org: &OrgId,
        user: &UserId,
        epoch: u64,
        purged: &[String],
        r: Revocation<'_>,
    ) -> Result<(), AccessError> {
        let now = self.clock.now_ms();
        let mut connectors: Vec<String> = purged
            .iter()
            .map(|f| field_connector(f).to_string())
            .chain(r.lost)
            .collect();
        connectors.sort();
        connectors.dedup();
        let event = BusEvent {
            kind: r.kind.into(),
            org: org.to_string(),
            user_id: Some(user.to_string()),
            connectors: connectors.clone(),
            epoch,
            at_ms: now,
            jti: None,
        };
        if let Err(e) = self.bus.publish(&event).await {
            tracing::warn!(error = %e, "revocation event not published; gateways learn the epoch on their next vend");
        }
        let receipt = Receipt {
            org: org.clone(),
            user: user.clone(),
            reason: r.reason.to_string(),
            epoch,
            connectors: connectors.clone(),
            at_ms: now,
        };
        let summary = match r.all {
            Some(all) => {
                json!({"reason": r.reason, "epoch": epoch, "connectors": connectors, "all": all})
            }
            None => json!({"reason": r.reason, "epoch": epoch, "connectors": connectors}),
        };
        let audit = AuditEntry {
            org: org.clone(),
            at_ms: now,
            actor: r.actor.to_string(),
            action: r.action.into(),
            resource_type: "User".into(),
            resource_id: user.to_string(),
            summary,
        };
        self.receipts.record(&receipt, &audit).await?;
        Ok(())
    }
}
