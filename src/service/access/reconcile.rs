//! The reconciler: every replica repairs projections that disagree with the system of record.
//!
//! A revocation can be interrupted after the database committed (the vault timed out, the
//! process died); the IdP's retry normally completes it, but an IdP that never retries must
//! not leave a deprovisioned user with access. Two passes cover that:
//! - **events**: the directory's event outbox is written in the same transaction as every
//!   change, so following it from a durable per-org cursor reaches every user a committed
//!   change touched, deleted users included. The cursor moves only past events whose users
//!   were all brought in line; events are followed one pass after they were first seen, so
//!   the request that wrote them normally gets there first.
//! - **sweep**: every user of every org is compared with the system of record now and then,
//!   which also catches what no directory event names (a vault restored from an old backup).
//!
//! Repairs go through the one projection writer (compare-and-set, revocation included), so a
//! repair racing a request is harmless; each repair is counted
//! (`auth_broker_reconciler_repairs_total`) and logged.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{Access, AccessError, Mode};
use crate::domain::events::DirectoryEvent;
use crate::domain::ports::{AuditLog, Scan, SortAttr, Tenants};
use crate::domain::{OrgId, UserId};

/// Events read per org and pass.
const EVENTS_PER_PASS: u64 = 500;
/// Users read per page of a sweep.
const SWEEP_PAGE: u64 = 200;
/// Who the audit trail names for repairs.
const ACTOR: &str = "broker:reconciler";

/// The reconciler of one replica.
#[derive(Clone)]
pub struct Reconciler {
    access: Access,
    tenants: Arc<dyn Tenants>,
}

impl Access {
    /// Users named by directory events of `group` that the reconciler has not followed yet:
    /// a retried group write that changes nothing brings them in line, completing what an
    /// interrupted earlier write left.
    pub async fn pending_members(
        &self,
        org: &OrgId,
        group: &crate::domain::GroupId,
    ) -> Result<Vec<UserId>, AccessError> {
        let Some(outbox) = &self.outbox else {
            return Ok(Vec::new());
        };
        let cursor = self.locks.reconcile_cursor(org).await?;
        let mut users: Vec<UserId> = outbox
            .events_after(org, cursor, EVENTS_PER_PASS)
            .await?
            .into_iter()
            .filter_map(|(_, ev)| match ev {
                DirectoryEvent::MembershipAdded { group: g, user }
                | DirectoryEvent::MembershipRemoved { group: g, user }
                    if &g == group =>
                {
                    Some(user)
                }
                _ => None,
            })
            .collect();
        users.sort();
        users.dedup();
        Ok(users)
    }
}

impl Reconciler {
    /// Builds the reconciler over the access service (which must have its outbox) and the
    /// list of orgs.
    pub fn new(access: Access, tenants: Arc<dyn Tenants>) -> Self {
        Self { access, tenants }
    }

    fn outbox(&self) -> Result<&Arc<dyn AuditLog>, AccessError> {
        self.access.outbox.as_ref().ok_or_else(|| {
            AccessError::Store(crate::domain::StoreError::Internal(
                "the reconciler needs the directory's event outbox".into(),
            ))
        })
    }

    /// Runs both passes forever at their intervals (the task is dropped at shutdown).
    pub fn spawn(
        self,
        events_every: Duration,
        sweep_every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut events_tick = tokio::time::interval(events_every);
            let mut sweep_tick = tokio::time::interval(sweep_every);
            events_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first sweep tick fires at once: a replica starting after a crash repairs
            // what the crash interrupted.
            let mut seen: HashMap<String, i64> = HashMap::new();
            loop {
                tokio::select! {
                    _ = events_tick.tick() => {
                        if let Err(e) = self.follow_events(&mut seen).await {
                            tracing::warn!(error = %e, "reconciler: events pass incomplete; next pass retries");
                        }
                    }
                    _ = sweep_tick.tick() => {
                        if let Err(e) = self.sweep().await {
                            tracing::warn!(error = %e, "reconciler: sweep incomplete; next sweep retries");
                        }
                    }
                }
            }
        })
    }

    /// Follows each org's directory events past its cursor, up to what the previous pass saw
    /// (`seen`, updated here). Returns the number of users brought in line.
    pub async fn follow_events(
        &self,
        seen: &mut HashMap<String, i64>,
    ) -> Result<usize, AccessError> {
        let mut repaired = 0;
        for org in self.tenants.list_orgs().await? {
            let cursor = self.access.locks.reconcile_cursor(&org.id).await?;
            let batch = self
                .outbox()?
                .events_after(&org.id, cursor, EVENTS_PER_PASS)
                .await?;
            let newest = batch.last().map_or(cursor, |(seq, _)| *seq);
            let limit = seen.insert(org.id.to_string(), newest).unwrap_or(cursor);
            let due: Vec<&(i64, DirectoryEvent)> =
                batch.iter().filter(|(seq, _)| *seq <= limit).collect();
            let Some((last, _)) = due.last() else {
                continue;
            };
            let mut users = BTreeSet::new();
            for (_, ev) in &due {
                users.extend(self.users_of_event(&org.id, ev).await?);
            }
            for u in &users {
                if self.repair(&org.id, u).await? {
                    repaired += 1;
                }
            }
            self.access
                .locks
                .advance_reconcile_cursor(&org.id, *last)
                .await?;
        }
        Ok(repaired)
    }

    /// Compares every user of every org with the system of record. Returns the number of
    /// projections repaired.
    pub async fn sweep(&self) -> Result<usize, AccessError> {
        let mut repaired = 0;
        for org in self.tenants.list_orgs().await? {
            let mut offset = 0;
            loop {
                let scan = Scan {
                    lookup: None,
                    sort: SortAttr::Natural,
                    descending: false,
                    offset,
                    limit: SWEEP_PAGE,
                };
                let page = self.access.dir.scan_users(&org.id, &scan).await?;
                for u in &page.items {
                    if self.repair(&org.id, &u.id).await? {
                        repaired += 1;
                    }
                }
                if (page.items.len() as u64) < SWEEP_PAGE {
                    break;
                }
                offset += SWEEP_PAGE;
            }
        }
        Ok(repaired)
    }

    async fn repair(&self, org: &OrgId, user: &UserId) -> Result<bool, AccessError> {
        let out = self
            .access
            .converge(org, user, Mode::Repair, "reconciler.repair", ACTOR)
            .await?;
        Ok(out.changed)
    }

    /// The users a directory event may have changed access for.
    async fn users_of_event(
        &self,
        org: &OrgId,
        ev: &DirectoryEvent,
    ) -> Result<Vec<UserId>, AccessError> {
        Ok(match ev {
            DirectoryEvent::UserCreated { user, .. }
            | DirectoryEvent::UserDeactivated { user }
            | DirectoryEvent::UserReactivated { user }
            | DirectoryEvent::UserRenamed { user }
            | DirectoryEvent::UserDeleted { user }
            | DirectoryEvent::MembershipAdded { user, .. }
            | DirectoryEvent::MembershipRemoved { user, .. } => vec![user.clone()],
            DirectoryEvent::GroupRenamed { group } => self
                .access
                .dir
                .members_of(org, std::slice::from_ref(group))
                .await?
                .into_values()
                .flatten()
                .map(|m| m.user_id)
                .collect(),
            DirectoryEvent::GroupCreated { .. } | DirectoryEvent::GroupDeleted { .. } => Vec::new(),
        })
    }
}
