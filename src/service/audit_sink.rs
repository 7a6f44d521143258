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

/// Most records waiting to be written before vends are refused.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Most records written per batch.
const BATCH: usize = 512;

/// The sending side, cloned into every handler.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEntry>,
    depth: Arc<AtomicI64>,
}

/// Why a record could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("audit backlog full")]
pub struct AuditFull;

impl AuditSink {
    /// Starts the writer task over `writer`; it drains until every sender is dropped.
    pub fn start(writer: Arc<dyn AuditWriter>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<AuditEntry>(QUEUE_CAPACITY);
        let depth = Arc::new(AtomicI64::new(0));
        let d = depth.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let n = batch.len() as i64;
                // Retry until written: records are never dropped silently.
                let mut delay = Duration::from_millis(50);
                while let Err(e) = writer.append(&batch).await {
                    tracing::warn!(error = %e, pending = n, "audit batch not written yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                d.fetch_sub(n, Ordering::Relaxed);
                batch.clear();
            }
        });
        (Self { tx, depth }, task)
    }

    /// Queues a record; `AuditFull` when the backlog is at capacity.
    pub fn record(&self, entry: AuditEntry) -> Result<(), AuditFull> {
        self.tx.try_send(entry).map_err(|_| AuditFull)?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records waiting to be written.
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }
}
