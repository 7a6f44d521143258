//! Audit records from the hot path (vends and decisions) without a database round trip per
//! request: records go into a bounded queue that a background task writes in batches. A
//! record that cannot be queued (backlog full) means the vend is refused, as Vault does: an
//! unaudited token is never served. Queue depth is exported as a metric.
//!
//! The writer takes records from the queue every [`GATHER_WINDOW`] and folds repeated vends
//! of the same token (same gateway, user, connector, scopes, outcome, token id) for up to
//! [`FOLD_WINDOW`] into one record carrying `count`, the first time (`at`) and `last_at`.
//! Any other record (a revocation, an admin action) is written at the end of the gather
//! window it arrived in, with whatever vends were folded so far. Nothing is lost: every vend
//! is counted, with its time known to within the window. This keeps the database's cost per
//! vend small when gateways fetch the same user's token many times a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::service::vend::Served;

use crate::domain::audit::AuditEntry;
use crate::domain::ports::AuditWriter;

/// Most records waiting to be written before vends are refused (a few MiB at most: the hot
/// path queues compact records, expanded to audit entries by the writer).
pub const QUEUE_CAPACITY: usize = 16_384;

/// How long the writer gathers records before taking them from the queue; records other
/// than vends are written at the end of the window they arrived in.
pub const GATHER_WINDOW: Duration = Duration::from_millis(20);

/// How long repeated vends are folded before they are written.
pub const FOLD_WINDOW: Duration = Duration::from_millis(200);

/// Most distinct records held in the fold before it is written early.
const FOLD_MAX: usize = 4_096;

/// The compact audit record of one vend, as queued on the hot path.
#[derive(Debug, Clone)]
pub struct VendAudit {
    /// The tenant.
    pub org: crate::domain::OrgId,
    /// When.
    pub at_ms: i64,
    /// The gateway credential.
    pub gateway: Arc<str>,
    /// Outcome code (`ok` or an error code).
    pub outcome: &'static str,
    /// What was served, or what was asked for.
    pub subject: VendSubject,
}

/// The token a vend served (shared with its response, never copied), or the request it refused.
#[derive(Debug, Clone)]
pub enum VendSubject {
    /// A token was served.
    Served {
        /// The token's audit facts (user, connector, scopes, `jti`).
        token: Arc<Served>,
        /// Served from the vault rather than minted.
        cached: bool,
    },
    /// No token: the user as named (empty when it could not be resolved) and the connector.
    Refused {
        /// The user.
        user: String,
        /// The connector.
        connector: String,
    },
}

impl VendAudit {
    fn user(&self) -> &str {
        match &self.subject {
            VendSubject::Served { token, .. } => &token.user_id,
            VendSubject::Refused { user, .. } => user,
        }
    }

    fn connector(&self) -> &str {
        match &self.subject {
            VendSubject::Served { token, .. } => &token.connector,
            VendSubject::Refused { connector, .. } => connector,
        }
    }

    fn scopes(&self) -> &[String] {
        match &self.subject {
            VendSubject::Served { token, .. } => &token.scopes,
            VendSubject::Refused { .. } => &[],
        }
    }

    fn cached(&self) -> bool {
        matches!(self.subject, VendSubject::Served { cached: true, .. })
    }

    fn token_id(&self) -> Option<&str> {
        match &self.subject {
            VendSubject::Served { token, .. } => Some(&token.jti),
            VendSubject::Refused { .. } => None,
        }
    }

    /// The audit entry for `count` such vends, the last one at `last_ms`.
    fn entry(self, count: u64, last_ms: i64) -> AuditEntry {
        AuditEntry {
            at_ms: self.at_ms,
            actor: self.gateway.to_string(),
            action: "token.vend".into(),
            resource_type: "Token".into(),
            resource_id: self.user().to_string(),
            summary: serde_json::json!({
                "user_id": self.user(), "connector": self.connector(), "scopes": self.scopes(),
                "outcome": self.outcome, "cached": self.cached(), "token_id": self.token_id(),
                "count": count, "last_at": crate::domain::clock::rfc3339(last_ms),
            }),
            org: self.org,
        }
    }

    /// Whether `other` is the same vend but for its time (what folding merges).
    fn same_as(&self, other: &VendAudit) -> bool {
        self.org == other.org
            && self.gateway == other.gateway
            && self.user() == other.user()
            && self.connector() == other.connector()
            && self.scopes() == other.scopes()
            && self.outcome == other.outcome
            && self.cached() == other.cached()
            && self.token_id() == other.token_id()
    }

    fn fold_hash(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = FOLD_HASHER.build_hasher();
        (
            self.org.as_str(),
            &*self.gateway,
            self.user(),
            self.connector(),
        )
            .hash(&mut h);
        (self.scopes(), self.outcome, self.cached(), self.token_id()).hash(&mut h);
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

/// Folds repeated vends as records arrive (see the module docs); other entries pass through.
/// `take` keeps the order in which the first record of each entry came.
#[derive(Default)]
struct Folder {
    out: Vec<Slot>,
    /// hash -> indexes in `out` of the vends with that hash
    index: HashMap<u64, Vec<usize>>,
    /// Whether `out` holds an entry that is not a vend (written without waiting for folds).
    urgent: bool,
    /// Flush requests, answered once what came before them is written.
    acks: Vec<tokio::sync::oneshot::Sender<()>>,
}

enum Slot {
    Entry(AuditEntry),
    Vend(Folded),
}

impl Folder {
    fn push(&mut self, p: Pending) {
        match p {
            Pending::Entry(e) => {
                self.urgent = true;
                self.out.push(Slot::Entry(e));
            }
            Pending::Flush(ack) => {
                self.urgent = true;
                self.acks.push(ack);
            }
            Pending::Vend(v) => {
                let slots = self.index.entry(v.fold_hash()).or_default();
                let out = &mut self.out;
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

    fn len(&self) -> usize {
        self.out.len()
    }

    fn take(&mut self) -> Vec<AuditEntry> {
        self.index.clear();
        self.urgent = false;
        std::mem::take(&mut self.out)
            .into_iter()
            .map(|s| match s {
                Slot::Entry(e) => e,
                Slot::Vend(f) => f.first.entry(f.count, f.last_ms),
            })
            .collect()
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the queue carries.
#[derive(Debug)]
pub enum Pending {
    /// A full audit record.
    Entry(AuditEntry),
    /// A vend, expanded by the writer.
    Vend(VendAudit),
    /// Write everything queued before this, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
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
            let mut pending = Vec::with_capacity(GATHER);
            let mut folder = Folder::default();
            // Records taken from the queue and not yet handed to a writer.
            let mut taken: i64 = 0;
            let mut flush_at: Option<Instant> = None;
            // Up to WRITERS batches in flight on separate connections: the writer is bound by
            // database round trips, not CPU, so overlapping them multiplies the drain rate.
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                let closed = tokio::select! {
                    n = rx.recv_many(&mut pending, GATHER) => n == 0,
                    () = sleep_until_or_never(flush_at) => false,
                };
                if !pending.is_empty() {
                    // Sleep through the window rather than waking for each record (a wake per
                    // vend would cost the hot path a cross-thread notification), then take
                    // what came meanwhile; the queue holds far more than one window's worth.
                    if pending.len() < GATHER {
                        tokio::time::sleep(GATHER_WINDOW).await;
                        while pending.len() < GATHER {
                            match rx.try_recv() {
                                Ok(p) => pending.push(p),
                                Err(_) => break,
                            }
                        }
                    }
                    flush_at.get_or_insert_with(|| Instant::now() + FOLD_WINDOW);
                    taken += pending.len() as i64;
                    for p in pending.drain(..) {
                        folder.push(p);
                    }
                }
                let due = closed
                    || folder.urgent
                    || folder.len() >= FOLD_MAX
                    || flush_at.is_some_and(|t| t <= Instant::now());
                if due && taken > 0 {
                    flush_at = None;
                    let acks = std::mem::take(&mut folder.acks);
                    let n = std::mem::take(&mut taken);
                    let entries = folder.take();
                    // The records leave the backlog when the batch's last chunk is written.
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
                    if !acks.is_empty() {
                        while inflight.join_next().await.is_some() {}
                        for ack in acks {
                            let _ = ack.send(());
                        }
                    }
                }
                if closed {
                    break;
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

    /// Writes every record queued so far (at shutdown); waits for room in the queue.
    pub async fn flush(&self) {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Pending::Flush(ack)).await.is_ok() {
            let _ = done.await;
        } else {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
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

    /// Folds one batch, as the writer does between two writes.
    fn fold(batch: Vec<Pending>) -> Vec<AuditEntry> {
        let mut f = Folder::default();
        for p in batch {
            f.push(p);
        }
        f.take()
    }
    use crate::domain::OrgId;

    fn vend(user: &str, at_ms: i64, token: Option<&str>, outcome: &'static str) -> Pending {
        let subject = match token {
            Some(jti) => VendSubject::Served {
                token: Arc::new(Served::new(
                    &crate::service::tokens::TokenRecord {
                        access_token: "t".into(),
                        expires_at: 2_000_000_000,
                        scopes: vec!["repo:read".into()],
                        jti: jti.into(),
                        minted_at: 1_999_999_000,
                        asked: None,
                    },
                    "github",
                    user,
                    1,
                )),
                cached: true,
            },
            None => VendSubject::Refused {
                user: user.into(),
                connector: "github".into(),
            },
        };
        Pending::Vend(VendAudit {
            org: OrgId::new("acme"),
            at_ms,
            gateway: "gateway:1".into(),
            outcome,
            subject,
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

    /// Collects what the sink writes, batch by batch.
    #[derive(Default)]
    struct Collect(std::sync::Mutex<Vec<Vec<AuditEntry>>>);

    #[async_trait::async_trait]
    impl AuditWriter for Collect {
        async fn append(&self, entries: &[AuditEntry]) -> Result<(), crate::domain::StoreError> {
            self.0.lock().unwrap().push(entries.to_vec());
            Ok(())
        }
    }

    impl Collect {
        fn written(&self) -> Vec<AuditEntry> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .flat_map(|b| b.clone())
                .collect()
        }
    }

    fn queue(sink: &AuditSink, p: Pending) {
        match p {
            Pending::Vend(v) => sink.record(v).unwrap(),
            Pending::Entry(e) => sink.record(e).unwrap(),
            Pending::Flush(_) => unreachable!(),
        }
    }

    // Paused time: the windows are exact however loaded the machine running the tests is.
    #[tokio::test(start_paused = true)]
    async fn vends_fold_across_gathers_and_other_records_are_not_held_back() {
        let out = Arc::new(Collect::default());
        let (sink, _task) = AuditSink::start(out.clone());
        // Vends over several gather windows, all within one fold window.
        for i in 0..3 {
            queue(&sink, vend("ann", i, Some("j1"), "ok"));
            tokio::time::sleep(GATHER_WINDOW + Duration::from_millis(5)).await;
        }
        assert!(out.written().is_empty(), "vends wait for the fold window");
        let started = Instant::now();
        queue(&sink, entry(100));
        while out.written().is_empty() {
            assert!(
                started.elapsed() < FOLD_WINDOW,
                "a revocation is written without waiting for the fold window"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let written = out.written();
        assert_eq!(written.len(), 2, "{written:#?}");
        assert_eq!(
            written[0].summary["count"], 3,
            "one record for the three vends"
        );
        assert_eq!(written[1].action, "access.revoke");
        assert_eq!(sink.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn folded_vends_are_written_after_the_fold_window_or_on_flush() {
        let out = Arc::new(Collect::default());
        let (sink, _task) = AuditSink::start(out.clone());
        queue(&sink, vend("ann", 1, Some("j1"), "ok"));
        queue(&sink, vend("ann", 2, Some("j1"), "ok"));
        tokio::time::sleep(FOLD_WINDOW + GATHER_WINDOW * 3).await;
        let written = out.written();
        assert_eq!(written.len(), 1, "{written:#?}");
        assert_eq!(written[0].summary["count"], 2);

        // A flush (shutdown) writes what is being folded at once.
        queue(&sink, vend("bob", 3, Some("j2"), "ok"));
        tokio::time::timeout(FOLD_WINDOW / 2, sink.flush())
            .await
            .expect("flush does not wait for the fold window");
        let written = out.written();
        assert_eq!(written.len(), 2, "{written:#?}");
        assert_eq!(written[1].resource_id, "bob");
        assert_eq!(sink.depth(), 0);
    }
}
