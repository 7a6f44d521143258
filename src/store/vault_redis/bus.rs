//! `RedisBus`: cross-replica events over Redis pub/sub on the channel `ab:events`.
//!
//! Publishing goes through the ordinary command connection. Receiving needs a dedicated
//! connection in subscribed mode: a background task holds one, forwards every message into
//! a `tokio::sync::broadcast` channel that local subscribers read, pings it to notice a dead
//! peer, and reconnects with a capped, jittered back-off forever. In Cluster mode `PUBLISH`
//! reaches every node, so one subscription to the first reachable seed node is enough. With
//! Sentinel the subscription sits on the current master, asked of the connection's keeper at
//! every attempt, and moves when the keeper switches masters (an old master may live on,
//! unreplicated, for seconds after a failover).
//!
//! Pub/sub is at-most-once: an event published while this replica is disconnected is not
//! replayed. That is acceptable because events only speed up what the vault already
//! enforces (revocation bumps the epoch in the vault itself); `is_subscribed` exposes the gap.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{ConnectionAddr, ConnectionInfo, Value};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::sentinel::SentinelConn;
use super::subscription::{jittered, pump};
use super::{Conn, Endpoint, RedisVault, connect_timeout, map_redis_error};
use crate::domain::vault::{BusEvent, EventBus, VaultError};

/// The one pub/sub channel every replica publishes to and listens on.
const CHANNEL: &str = "ab:events";

/// The channel of a deployment. Pub/sub ignores logical databases, so brokers that share a
/// Redis server but use different databases get different channels.
fn channel(db: i64) -> String {
    match db {
        0 => CHANNEL.to_string(),
        db => format!("{CHANNEL}:db{db}"),
    }
}
/// Events a slow local subscriber may fall behind before it sees `Lagged`.
const LOCAL_CAPACITY: usize = 1024;
/// First wait before re-subscribing after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between subscription attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The subscription's connect, subscribe and ping steps are off the request path: they may
/// take at least this long.
const MIN_BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);

/// Cross-replica publish/subscribe through Redis (standalone, Sentinel or Cluster).
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    op_timeout: Duration,
    endpoint: Arc<Endpoint>,
    tx: broadcast::Sender<BusEvent>,
    subscribed: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop listening (and close the subscription).
        self.task.abort();
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("url", &self.inner.endpoint.redacted)
            .field("subscribed", &*self.inner.subscribed.borrow())
            .finish()
    }
}

impl RedisBus {
    /// Connects to `url` (same forms as `RedisVault::connect`) with its own command
    /// connection. Waits up to `op_timeout` for the subscription; if Redis is unreachable
    /// it returns anyway and keeps subscribing in the background.
    pub async fn connect(url: &str, op_timeout: Duration) -> Result<Self, VaultError> {
        if op_timeout.is_zero() {
            return Err(VaultError::Internal(
                "redis operation timeout must be positive".into(),
            ));
        }
        let endpoint = Arc::new(Endpoint::parse(url)?);
        let conn = Conn::open(&endpoint, op_timeout)?;
        Ok(Self::start(conn, endpoint, op_timeout).await)
    }

    /// A bus that publishes through the vault's connection (one command connection per
    /// process) and subscribes to the vault's deployment.
    pub async fn attach(vault: &RedisVault) -> Self {
        let (conn, endpoint, op_timeout) = vault.shared();
        Self::start(conn, endpoint, op_timeout).await
    }

    async fn start(conn: Conn, endpoint: Arc<Endpoint>, op_timeout: Duration) -> Self {
        let (tx, _) = broadcast::channel(LOCAL_CAPACITY);
        let (state_tx, subscribed) = watch::channel(false);
        let source = match &conn {
            Conn::Sentinel(c) => Source::Sentinel(c.clone()),
            Conn::Standalone(_) | Conn::Cluster(_) => Source::Nodes(endpoint.nodes()),
        };
        let task = tokio::spawn(subscriber(
            source,
            channel(endpoint.db()),
            endpoint.redacted.clone(),
            tx.clone(),
            state_tx,
            background_timeout(op_timeout),
        ));
        let bus = Self {
            inner: Arc::new(Inner {
                conn,
                op_timeout,
                endpoint,
                tx,
                subscribed,
                task,
            }),
        };
        if !bus.wait_subscribed(op_timeout).await {
            tracing::warn!(url = %bus.inner.endpoint.redacted, "event bus not subscribed yet; will keep trying");
        }
        bus
    }

    /// Whether the subscription is up right now (events published meanwhile are missed).
    pub fn is_subscribed(&self) -> bool {
        *self.inner.subscribed.borrow()
    }

    /// Waits until the subscription is up, at most `within`; tells whether it is.
    pub async fn wait_subscribed(&self, within: Duration) -> bool {
        let mut rx = self.inner.subscribed.clone();
        matches!(
            tokio::time::timeout(within, rx.wait_for(|up| *up)).await,
            Ok(Ok(_))
        )
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, event: &BusEvent) -> Result<(), VaultError> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| VaultError::Internal(format!("encode event: {e}")))?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel(self.inner.endpoint.db())).arg(payload);
        self.inner
            .conn
            .query::<Value>(&cmd, self.inner.op_timeout, "PUBLISH")
            .await
            .map(|_| ())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.inner.tx.subscribe()
    }
}

fn background_timeout(op_timeout: Duration) -> Duration {
    connect_timeout(op_timeout).max(MIN_BACKGROUND_TIMEOUT)
}

/// Where the subscription may go.
enum Source {
    /// Fixed nodes, tried in order (standalone, or cluster seeds).
    Nodes(Vec<ConnectionInfo>),
    /// Whichever server is master now.
    Sentinel(SentinelConn),
}

impl Source {
    /// The nodes to try this round.
    async fn nodes(&self, limit: Duration) -> Vec<ConnectionInfo> {
        match self {
            Source::Nodes(nodes) => nodes.clone(),
            Source::Sentinel(c) => match tokio::time::timeout(limit, c.master_info()).await {
                Ok(Ok(info)) => vec![info],
                _ => Vec::new(),
            },
        }
    }

    /// Returns when a subscription at `addr` is on the wrong server (never for fixed nodes).
    async fn moved_from(&self, addr: &ConnectionAddr) {
        match self {
            Source::Nodes(_) => std::future::pending().await,
            Source::Sentinel(c) => c.moved_from(addr).await,
        }
    }

    /// Subscribing failed: the master may have moved.
    fn failed(&self) {
        if let Source::Sentinel(c) = self {
            c.suspect();
        }
    }
}

/// Holds the subscription for the life of the bus, re-establishing it whenever it drops.
async fn subscriber(
    source: Source,
    channel: String,
    redacted: String,
    tx: broadcast::Sender<BusEvent>,
    state: watch::Sender<bool>,
    limit: Duration,
) {
    let mut delay = BACKOFF_MIN;
    loop {
        for node in &source.nodes(limit).await {
            match subscribe_to(node, &channel, limit).await {
                Ok(pubsub) => {
                    state.send_replace(true);
                    delay = BACKOFF_MIN;
                    let forward = |payload: &[u8]| match serde_json::from_slice::<BusEvent>(payload)
                    {
                        // An error only means no local subscriber right now.
                        Ok(event) => {
                            let _ = tx.send(event);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring a malformed event on the bus")
                        }
                    };
                    let why = tokio::select! {
                        why = pump(pubsub, limit, forward) => why,
                        () = source.moved_from(node.addr()) => "the master moved",
                    };
                    state.send_replace(false);
                    tracing::warn!(url = %redacted, node = %node.addr(), reason = why, "event bus subscription lost; reconnecting");
                    break;
                }
                Err(e) => {
                    source.failed();
                    tracing::debug!(url = %redacted, node = %node.addr(), error = %e, "event bus cannot subscribe");
                }
            }
        }
        tokio::time::sleep(jittered(delay)).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

async fn subscribe_to(
    node: &ConnectionInfo,
    channel: &str,
    limit: Duration,
) -> Result<redis::aio::PubSub, VaultError> {
    let client = redis::Client::open(node.clone()).map_err(map_redis_error)?;
    let mut pubsub = tokio::time::timeout(limit, client.get_async_pubsub())
        .await
        .map_err(|_| VaultError::Unavailable("pub/sub connect timed out".into()))?
        .map_err(map_redis_error)?;
    tokio::time::timeout(limit, pubsub.subscribe(channel))
        .await
        .map_err(|_| VaultError::Unavailable("SUBSCRIBE timed out".into()))?
        .map_err(map_redis_error)?;
    Ok(pubsub)
}
