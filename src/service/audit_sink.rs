//! Audit records from the hot path (vends and decisions) without a database round trip per
//! request: records go into a bounded queue that a background task writes in batches. A
//! record that cannot be queued (backlog full) means the vend is refused, as Vault does: an
//! unaudited token is never served. Queue depth is exported as a metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::audit::AuditEntry;
use crate::domain::ports::AuditWriter;

/// Most records waiting to be written before vends are refused (a few MiB at most: the hot
/// path queues compact records, expanded to audit entries by the writer).
pub const QUEUE_CAPACITY: usize = 16_384;

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
}

impl From<VendAudit> for AuditEntry {
    fn from(v: VendAudit) -> Self {
        AuditEntry {
            org: v.org,
            at_ms: v.at_ms,
            actor: v.gateway,
            action: "token.vend".into(),
            resource_type: "Token".into(),
            resource_id: v.user.clone(),
            summary: serde_json::json!({
                "user_id": v.user, "connector": v.connector, "scopes": v.scopes,
                "outcome": v.outcome, "cached": v.cached,
            }),
        }
    }
}

/// What the queue carries.
#[derive(Debug)]
pub enum Pending {
    /// A full audit record.
    Entry(AuditEntry),
    /// A vend, expanded by the writer.
    Vend(VendAudit),
}

impl From<Pending> for AuditEntry {
    fn from(p: Pending) -> Self {
        match p {
            Pending::Entry(e) => e,
            Pending::Vend(v) => v.into(),
        }
    }
}
/// Most records written per batch.
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
            let mut pending = Vec::with_capacity(BATCH);
            let mut inflight = tokio::task::JoinSet::new();
            while rx.recv_many(&mut pending, BATCH).await > 0 {
                while inflight.len() >= WRITERS {
                    inflight.join_next().await;
                }
                let n = pending.len() as i64;
                let batch: Vec<AuditEntry> = pending.drain(..).map(AuditEntry::from).collect();
                let (writer, d) = (writer.clone(), d.clone());
                inflight.spawn(async move {
                    // Retry until written: records are never dropped silently.
                    let mut delay = Duration::from_millis(50);
                    while let Err(e) = writer.append(&batch).await {
                        tracing::warn!(error = %e, pending = n, "audit batch not written yet; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    d.fetch_sub(n, Ordering::Relaxed);
                });
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
