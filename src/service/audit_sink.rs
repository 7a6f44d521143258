//! Audit records from the hot path (vends and decisions) without a database round trip per
//! request: records go into a bounded queue that a background task writes in batches. A
//! record that cannot be queued (backlog full) means the vend is refused, as Vault does: an
//! unaudited token is never served. Queue depth is exported as a metric.
//!
//! The writer gathers records for up to [`GATHER_WINDOW`] and folds repeated vends of the
//! same token (same gateway, user, connector, scopes, outcome, token id) into one record
//! carrying `count`, the first time (`at`) and `last_at`. Nothing is lost: every vend is
//! counted, with its time known to within the window. This keeps the database's cost per
//! vend small when gateways fetch the same user's token many times a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::audit::AuditEntry;
use crate::domain::ports::AuditWriter;

/// Most records waiting to be written before vends are refused (a few MiB at most: the hot
/// path queues compact records, expanded to audit entries by the writer).
pub const QUEUE_CAPACITY: usize = 16_384;

/// How long the writer gathers records before folding and writing them.
pub const GATHER_WINDOW: Duration = Duration::from_millis(20);

/// The compact audit record of one vend, as queued on the hot path.
#[derive(Debug, Clone)]
pub struct VendAudit {
    /// The tenant.
    pub org: crate::domain::OrgId,
    /// When.
    pub at_ms: i64,
    /// The gateway credential.
    pub gateway: String,
    /// The user (empty when it could not be resolved).
    pub user: String,
    /// The connector.
    pub connector: String,
    /// Scopes served.
    pub scopes: Vec<String>,
    /// Outcome code (`ok` or an error code).
    pub outcome: &'static str,
    /// Served from the vault rather than minted.
    pub cached: bool,
    /// The served token's id (`jti`), never the token.
    pub token_id: Option<String>,
}

impl VendAudit {
    /// The audit entry for `count` such vends, the last one at `last_ms`.
    fn entry(self, count: u64, last_ms: i64) -> AuditEntry {
        AuditEntry {
            org: self.org,
            at_ms: self.at_ms,
            actor: self.gateway,
            action: "token.vend".into(),
            resource_type: "Token".into(),
            resource_id: self.user.clone(),
            summary: serde_json::json!({
                "user_id": self.user, "connector": self.connector, "scopes": self.scopes,
                "outcome": self.outcome, "cached": self.cached, "token_id": self.token_id,
                "count": count, "last_at": crate::domain::clock::rfc3339(last_ms),
            }),
        }
    }
}

impl VendAudit {
    /// Whether `other` is the same vend but for its time (what folding merges).
    fn same_as(&self, other: &VendAudit) -> bool {
        self.org == other.org
            && self.gateway == other.gateway
            && self.user == other.user
            && self.connector == other.connector
            && self.scopes == other.scopes
            && self.outcome == other.outcome
            && self.cached == other.cached
            && self.token_id == other.token_id
    }

    fn fold_hash(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = FOLD_HASHER.build_hasher();
        (
            self.org.as_str(),
            &self.gateway,
            &self.user,
            &self.connector,
        )
            .hash(&mut h);
        (&self.scopes, self.outcome, self.cached, &self.token_id).hash(&mut h);
        h.finish()
    }
}

/// One hasher state per process, so fold hashes are not predictable from outside.
static FOLD_HASHER: std::sync::LazyLock<std::collections::hash_map::RandomState> =
    std::sync::LazyLock::new(Default::default);

/// A vend record being folded: the first one, how many, the last time.
struct Folded {
    first: VendAudit,
    count: u64,
    last_ms: i64,
}

/// Folds repeated vends (see the module docs); other entries pass through. The result keeps
/// the order in which the first record of each entry came.
pub fn fold(batch: Vec<Pending>) -> Vec<AuditEntry> {
    enum Slot {
        Entry(AuditEntry),
        Vend(Folded),
    }
    let mut out: Vec<Slot> = Vec::with_capacity(batch.len());
    // hash -> indexes in `out` of the vends with that hash
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    for p in batch {
        match p {
            Pending::Entry(e) => out.push(Slot::Entry(e)),
            Pending::Vend(v) => {
                let slots = index.entry(v.fold_hash()).or_default();
                let hit = slots
                    .iter()
                    .copied()
                    .find(|&i| matches!(&out[i], Slot::Vend(f) if f.first.same_as(&v)));
                match hit.map(|i| &mut out[i]) {
                    Some(Slot::Vend(f)) => {
                        f.count += 1;
                        f.last_ms = f.last_ms.max(v.at_ms);
                    }
                    _ => {
                        slots.push(out.len());
                        let last_ms = v.at_ms;
                        out.push(Slot::Vend(Folded {
                            first: v,
                            count: 1,
                            last_ms,
                        }));
                    }
                }
            }
        }
    }
    out.into_iter()
        .map(|s| match s {
            Slot::Entry(e) => e,
            Slot::Vend(f) => f.first.entry(f.count, f.last_ms),
        })
        .collect()
}

/// What the queue carries.
#[derive(Debug)]
pub enum Pending {
    /// A full audit record.
    Entry(AuditEntry),
    /// A vend, expanded by the writer.
    Vend(VendAudit),
}

/// Most records gathered before they are folded and written.
const GATHER: usize = 8_192;
/// Most audit entries written per database batch.
const BATCH: usize = 256;
/// Batches written concurrently.
const WRITERS: usize = 4;

/// The sending side, cloned into every handler.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Pending>,
    depth: Arc<AtomicI64>,
}

/// Why a record could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("audit backlog full")]
pub struct AuditFull;

impl AuditSink {
    /// Starts the writer task over `writer`; it drains until every sender is dropped.
    pub fn start(writer: Arc<dyn AuditWriter>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE_CAPACITY);
        let depth = Arc::new(AtomicI64::new(0));
        let d = depth.clone();
        let task = tokio::spawn(async move {
            // Up to WRITERS batches in flight on separate connections: the writer is bound by
            // database round trips, not CPU, so overlapping them multiplies the drain rate.
            let mut pending = Vec::with_capacity(GATHER);
            let mut inflight = tokio::task::JoinSet::new();
            while rx.recv_many(&mut pending, GATHER).await > 0 {
                // Sleep through the window rather than waking for each record (a wake per
                // vend would cost the hot path a cross-thread notification), then take what
                // came meanwhile; the queue holds far more than one window's worth.
                if pending.len() < GATHER {
                    tokio::time::sleep(GATHER_WINDOW).await;
                    while pending.len() < GATHER {
                        match rx.try_recv() {
                            Ok(p) => pending.push(p),
                            Err(_) => break,
                        }
                    }
                }
                let n = pending.len() as i64;
                let entries = fold(std::mem::take(&mut pending));
                // The queued records leave the backlog when the batch's last chunk is written.
                let left = Arc::new(AtomicI64::new(entries.chunks(BATCH).count() as i64));
                for chunk in entries.chunks(BATCH) {
                    while inflight.len() >= WRITERS {
                        inflight.join_next().await;
                    }
                    let batch = chunk.to_vec();
                    let (writer, d, left) = (writer.clone(), d.clone(), left.clone());
                    inflight.spawn(async move {
                        // Retry until written: records are never dropped silently.
                        let mut delay = Duration::from_millis(50);
                        while let Err(e) = writer.append(&batch).await {
                            tracing::warn!(error = %e, pending = batch.len(), "audit batch not written yet; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                        if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                            d.fetch_sub(n, Ordering::Relaxed);
                        }
                    });
                }
                if entries.is_empty() {
                    d.fetch_sub(n, Ordering::Relaxed);
                }
            }
            while inflight.join_next().await.is_some() {}
        });
        (Self { tx, depth }, task)
    }

    /// Queues a record; `AuditFull` when the backlog is at capacity.
    pub fn record(&self, entry: impl Into<Pending>) -> Result<(), AuditFull> {
        self.tx.try_send(entry.into()).map_err(|_| AuditFull)?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records waiting to be written.
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }
}

impl From<AuditEntry> for Pending {
    fn from(e: AuditEntry) -> Self {
        Pending::Entry(e)
    }
}

impl From<VendAudit> for Pending {
    fn from(v: VendAudit) -> Self {
        Pending::Vend(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrgId;

    fn vend(user: &str, at_ms: i64, token: Option<&str>, outcome: &'static str) -> Pending {
        Pending::Vend(VendAudit {
            org: OrgId::new("acme"),
            at_ms,
            gateway: "gateway:1".into(),
            user: user.into(),
            connector: "github".into(),
            scopes: vec!["repo:read".into()],
            outcome,
            cached: token.is_some(),
            token_id: token.map(str::to_string),
        })
    }

    fn entry(at_ms: i64) -> Pending {
        Pending::Entry(AuditEntry {
            org: OrgId::new("acme"),
            at_ms,
            actor: "admin".into(),
            action: "access.revoke".into(),
            resource_type: "User".into(),
            resource_id: "ann".into(),
            summary: serde_json::json!({}),
        })
    }

    #[test]
    fn repeated_vends_of_one_token_fold_into_one_counted_record() {
        let out = fold(vec![
            vend("ann", 10, Some("j1"), "ok"),
            vend("bob", 11, Some("j2"), "ok"),
            vend("ann", 12, Some("j1"), "ok"),
            entry(13),
            vend("ann", 15, Some("j1"), "ok"),
        ]);
        assert_eq!(out.len(), 3, "{out:#?}");
        assert_eq!(out[0].resource_id, "ann");
        assert_eq!(out[0].at_ms, 10, "the first time is kept");
        assert_eq!(out[0].summary["count"], 3);
        assert_eq!(out[0].summary["last_at"], crate::domain::clock::rfc3339(15));
        assert_eq!(out[0].summary["token_id"], "j1");
        assert_eq!(out[1].resource_id, "bob");
        assert_eq!(out[1].summary["count"], 1);
        assert_eq!(
            out[2].action, "access.revoke",
            "other entries pass through in order"
        );
    }

    #[test]
    fn different_tokens_outcomes_or_users_stay_apart() {
        let out = fold(vec![
            vend("ann", 1, Some("j1"), "ok"),
            vend("ann", 2, Some("j2"), "ok"),
            vend("ann", 3, None, "user_inactive"),
            vend("ann", 4, None, "not_entitled"),
            vend("bob", 5, Some("j1"), "ok"),
        ]);
        assert_eq!(out.len(), 5, "{out:#?}");
        let total: u64 = out
            .iter()
            .map(|e| e.summary["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 5, "every vend is counted");
    }

    #[test]
    fn folding_never_loses_a_count() {
        let batch: Vec<Pending> = (0..1000)
            .map(|i| {
                vend(
                    &format!("u{}", i % 7),
                    i,
                    Some(&format!("j{}", i % 3)),
                    "ok",
                )
            })
            .collect();
        let out = fold(batch);
        assert_eq!(out.len(), 21);
        let total: u64 = out
            .iter()
            .map(|e| e.summary["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 1000);
    }
}
