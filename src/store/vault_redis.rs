//! The production token vault (`RedisVault`) and cross-replica event bus (`RedisBus`) on
//! standalone Redis, Redis Sentinel or Redis Cluster.
//!
//! URLs: `redis://[user:pass@]host:port[/db]` (and `rediss://`, which needs the redis crate's
//! TLS feature) is one server behind a reconnecting multiplexed connection (one per process:
//! it beat a pool); `redis+sentinel://[user:pass@]host:port,host:port/<master-name>[/db]` is
//! the master that those sentinels name, followed across failovers (see `sentinel`);
//! `redis+cluster://[user:pass@]host:port,host:port,…` is a Redis Cluster reached through
//! those seed nodes.
//!
//! Key layout: one hash per user, `ab:{<org>/<user>}` (the braces put all of a user's fields
//! in one Cluster hash slot, so scripts touching them stay atomic). Fields:
//! - `_s`: the projection's state as JSON (`active`, `connectors`);
//! - `_e`: the projection's epoch as a Redis integer, kept apart from `_s` so that the Lua
//!   scripts compare and bump it exactly (Lua numbers are doubles);
//! - `t:<connector>`: a sealed token.
//!
//! A vend is one round trip (`HMGET key _s _e t:<connector>`); every write is a Lua script
//! (EVALSHA, reloaded on NOSCRIPT) that checks the epoch where the data lives. Keys carry no
//! TTL on purpose: a projection that silently expired would turn into a rebuild storm at best
//! and, with tokens left behind, would lose the epoch that keeps a revoked user revoked.
//!
//! Needs Redis 4 or later (multi-field `HSET` inside the scripts).
//!
//! Every call is bounded by the configured operation timeout and fails with
//! `VaultError::Unavailable`, so callers answer 503 quickly while Redis is down; the
//! connections reconnect on their own with a short, capped back-off once it returns.

mod bus;
mod ephemeral;
mod replicated;
mod scripts;
mod sentinel;
mod subscription;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{
    Cmd, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, RedisFuture, ServerErrorKind, Value,
};
use serde::{Deserialize, Serialize};

use super::vault_memory::{check_epoch, check_ids};
use crate::domain::ids::{OrgId, UserId};
use crate::domain::vault::{CasOutcome, Projection, Vault, VaultError, VaultRead};

pub use bus::RedisBus;

/// Shortest wait before reconnecting a dropped standalone connection.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(25);
/// Longest wait between reconnection attempts: bounds recovery once Redis is back.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// Attempts per reconnection round (about 4 s); the next command starts a new round.
const RECONNECT_ATTEMPTS: usize = 12;
/// A TCP connect may take at least this long, however short the operation timeout.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Unacknowledged data older than this kills the socket, so a vanished host (no RST) is
/// noticed and the connection replaced instead of timing out forever.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(3);
/// Keepalive probes find a vanished host on an idle connection (the bus subscription).
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Interval between keepalive probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Requests queued for the one multiplexed connection before callers wait for room (the
/// crate's default of 50 is meant for light use; every concurrent vend queues here).
const PIPELINE_BUFFER: usize = 1024;
/// Cluster: attempts per request (redirections, reconnects) within the operation timeout.
const CLUSTER_RETRIES: u32 = 3;
/// Cluster: bounds of the wait between attempts, in milliseconds.
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (5, 50);

/// Where the vault lives, parsed from its URL. Holds credentials: never printed.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server (or a proxy in front of several).
    Standalone(ConnectionInfo),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<ConnectionInfo>),
    /// Sentinels that name the master of `master`; `node` (credentials, database) applies to
    /// the data nodes, not to the sentinels.
    Sentinel {
        sentinels: Vec<ConnectionInfo>,
        master: String,
        node: RedisConnectionInfo,
    },
}

/// A parsed URL plus the form of it that may appear in logs.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) target: Target,
    pub(crate) redacted: String,
}

impl Endpoint {
    /// Parses a `redis://`, `rediss://`, `redis+sentinel://` or `redis+cluster://` URL.
    pub(crate) fn parse(url: &str) -> Result<Self, VaultError> {
        let redacted = redact(url);
        let bad = |why: String| VaultError::Internal(format!("redis URL {redacted}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("missing scheme".into()))?;
        let target = match scheme {
            "redis" | "rediss" => {
                Target::Standalone(node_info(url).map_err(|e| bad(e.to_string()))?)
            }
            "redis+cluster" | "rediss+cluster" => {
                let node_scheme = scheme.trim_end_matches("+cluster");
                let authority = rest.strip_suffix('/').unwrap_or(rest);
                if authority.contains(['/', '?', '#']) {
                    return Err(bad("a cluster URL takes no path or query".into()));
                }
                let (userinfo, hosts) = match authority.rsplit_once('@') {
                    Some((u, h)) => (format!("{u}@"), h),
                    None => (String::new(), authority),
                };
                let nodes = hosts
                    .split(',')
                    .map(|h| {
                        if h.is_empty() {
                            return Err(bad("empty seed node".into()));
                        }
                        node_info(&format!("{node_scheme}://{userinfo}{h}"))
                            .map_err(|e| bad(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Target::Cluster(nodes)
            }
            "redis+sentinel" => sentinel::parse(rest).map_err(bad)?,
            "rediss+sentinel" => {
                return Err(bad(
                    "TLS to a Sentinel deployment is not supported; use redis+sentinel://".into(),
                ));
            }
            other => return Err(bad(format!("unsupported scheme {other}"))),
        };
        Ok(Self { target, redacted })
    }

    /// The fixed nodes a pub/sub subscription may use, in order of preference (none for
    /// Sentinel: its master is found at run time).
    pub(crate) fn nodes(&self) -> Vec<ConnectionInfo> {
        match &self.target {
            Target::Standalone(info) => vec![info.clone()],
            Target::Cluster(nodes) => nodes.clone(),
            Target::Sentinel { .. } => Vec::new(),
        }
    }

    /// The logical database the data lives in (0 on a cluster).
    pub(crate) fn db(&self) -> i64 {
        match &self.target {
            Target::Standalone(info) => info.redis_settings().db(),
            Target::Cluster(nodes) => nodes.first().map_or(0, |n| n.redis_settings().db()),
            Target::Sentinel { node, .. } => node.db(),
        }
    }
}

fn node_info(url: &str) -> Result<ConnectionInfo, RedisError> {
    Ok(url.into_connection_info()?.set_tcp_settings(tcp_settings()))
}

/// Socket options for every vault connection: no Nagle delay on small requests, and dead
/// peers detected by the kernel.
pub(crate) fn tcp_settings() -> TcpSettings {
    use redis::io::tcp::socket2::TcpKeepalive;
    let settings = TcpSettings::default().set_nodelay(true).set_keepalive(
        TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL),
    );
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(TCP_USER_TIMEOUT);
    settings
}

/// A URL with any `user:pass@` replaced by `***@` and the query (which may carry `pass=`)
/// dropped, for logs and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable redis URL>".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (creds, hosts) = match authority.rsplit_once('@') {
        Some((_, hosts)) => ("***@", hosts),
        None => ("", authority),
    };
    let path = tail.split(['?', '#']).next().unwrap_or("");
    format!("{scheme}://{creds}{hosts}{path}")
}

/// The time a connection attempt may take.
pub(crate) fn connect_timeout(op_timeout: Duration) -> Duration {
    op_timeout.max(MIN_CONNECT_TIMEOUT)
}

/// How a connection to one server (standalone, or a Sentinel-named master) reconnects and
/// times out.
fn manager_config(op_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout(op_timeout)))
        .set_response_timeout(Some(op_timeout))
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
        .set_exponent_base(2.0)
        .set_number_of_retries(RECONNECT_ATTEMPTS)
        .set_pipeline_buffer_size(PIPELINE_BUFFER)
}

/// One multiplexed, self-healing connection to the deployment, shared by all clones.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnected in the background when the connection drops.
    Standalone(ConnectionManager),
    /// A cluster, routed by key slot, following topology changes.
    Cluster(ClusterConnection),
    /// The master named by Sentinel, re-resolved when it fails over.
    Sentinel(sentinel::SentinelConn),
}

impl Conn {
    /// Builds the connection without waiting for the network: an unreachable Redis at start
    /// is an outage like any other, reported by `ping` and recovered from on its own.
    pub(crate) fn open(endpoint: &Endpoint, op_timeout: Duration) -> Result<Self, VaultError> {
        let config_err =
            |e: RedisError| VaultError::Internal(format!("redis {}: {e}", endpoint.redacted));
        match &endpoint.target {
            Target::Standalone(info) => {
                let client = redis::Client::open(info.clone()).map_err(config_err)?;
                let manager =
                    ConnectionManager::new_lazy_with_config(client, manager_config(op_timeout))
                        .map_err(config_err)?;
                Ok(Conn::Standalone(manager))
            }
            Target::Sentinel {
                sentinels,
                master,
                node,
            } => Ok(Conn::Sentinel(sentinel::SentinelConn::open(
                sentinels,
                master,
                node,
                op_timeout,
                &endpoint.redacted,
            )?)),
            Target::Cluster(nodes) => {
                let (min_wait, max_wait) = CLUSTER_RETRY_WAIT_MS;
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(connect_timeout(op_timeout))
                    .response_timeout(op_timeout)
                    .overall_response_timeout(Some(op_timeout))
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(min_wait)
                    .max_retry_wait(max_wait)
                    .tcp_settings(tcp_settings())
                    .build()
                    .map_err(config_err)?;
                // The per-connection config overrides the builder's timeouts: repeat them.
                let config = ClusterConfig::new()
                    .set_connection_timeout(connect_timeout(op_timeout))
                    .set_response_timeout(op_timeout);
                Ok(Conn::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }

    /// Runs one command within `limit`.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        limit: Duration,
        op: &'static str,
    ) -> Result<T, VaultError> {
        let mut conn = self.clone();
        match tokio::time::timeout(limit, cmd.query_async::<T>(&mut conn)).await {
            Ok(result) => result.map_err(map_redis_error),
            Err(_) => Err(self.timed_out(op, limit)),
        }
    }

    /// Runs one script (EVALSHA, loading it on NOSCRIPT) within `limit`.
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        limit: Duration,
        op: &'static str,
    ) -> Result<T, VaultError> {
        let mut conn = self.clone();
        match tokio::time::timeout(limit, invocation.invoke_async::<T>(&mut conn)).await {
            Ok(result) => result.map_err(map_redis_error),
            Err(_) => Err(self.timed_out(op, limit)),
        }
    }

    /// A call got no answer in time: a Sentinel master that stopped answering may have
    /// been replaced, so have it looked up again.
    fn timed_out(&self, op: &str, limit: Duration) -> VaultError {
        if let Conn::Sentinel(c) = self {
            c.suspect();
        }
        VaultError::Unavailable(format!(
            "redis {op}: no answer within {} ms",
            limit.as_millis()
        ))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Standalone(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

/// Connection trouble and transient server states are `Unavailable` (503, retry later);
/// anything else (a wrong type, a script error, a refused permission) is `Internal`.
pub(crate) fn map_redis_error(e: RedisError) -> VaultError {
    let transient = match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound | ErrorKind::AuthenticationFailed => {
            true
        }
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        ),
        ErrorKind::Extension => e.code() == Some("OOM"),
        _ => false,
    };
    if transient {
        VaultError::Unavailable(format!("redis: {e}"))
    } else {
        VaultError::Internal(format!("redis: {e}"))
    }
}

/// The `_s` field: the projection without its epoch (that is `_e`).
#[derive(Serialize)]
struct StateRef<'a> {
    active: bool,
    connectors: &'a BTreeMap<String, Vec<String>>,
}

/// The `_s` field as read back.
#[derive(Deserialize)]
struct State {
    active: bool,
    connectors: BTreeMap<String, Vec<String>>,
}

fn state_json(p: &Projection) -> Result<Vec<u8>, VaultError> {
    serde_json::to_vec(&StateRef {
        active: p.active,
        connectors: &p.connectors,
    })
    .map_err(|e| VaultError::Internal(format!("encode projection: {e}")))
}

/// `ab:{<org>/<user>}`: everything about one user in one Cluster hash slot.
fn user_key(org: &OrgId, user: &UserId) -> Result<String, VaultError> {
    check_ids(org, user)?;
    Ok(format!("ab:{{{}/{}}}", org.as_str(), user.as_str()))
}

fn token_field(connector: &str) -> String {
    format!("t:{connector}")
}

fn parse_epoch(s: &str) -> Result<u64, VaultError> {
    s.parse()
        .map_err(|_| VaultError::Internal(format!("stored epoch is not an integer: {s:?}")))
}

/// The production vault: per-user hashes in Redis (standalone, Sentinel or Cluster).
#[derive(Clone)]
pub struct RedisVault {
    conn: Conn,
    op_timeout: Duration,
    endpoint: Arc<Endpoint>,
    local: Arc<LocalConns>,
    /// Where revocations and projections wait for replicas, when they do.
    replicated: Option<replicated::Replicated>,
}

/// Standalone connections owned by single-threaded runtimes (the broker's I/O threads), one
/// each: a vend's command is written, answered and handed back on the thread that serves the
/// request, with no wake-up of another thread on the way.
type LocalConns = std::sync::RwLock<HashMap<tokio::runtime::Id, Conn>>;

impl std::fmt::Debug for RedisVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisVault")
            .field("url", &self.endpoint.redacted)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

impl RedisVault {
    /// Builds the vault for `url`. Fails only on a malformed URL or a zero timeout: when
    /// Redis is unreachable the vault is returned anyway, answers `Unavailable` (see
    /// `ping`) and connects by itself once Redis answers.
    pub async fn connect(url: &str, op_timeout: Duration) -> Result<Self, VaultError> {
        Self::connect_with(url, op_timeout, None).await
    }

    /// As [`RedisVault::connect`], with revocations and projections answered only once
    /// `wait_replicas` replicas hold them (`storage.redis_wait_replicas`; unset: 1 behind
    /// Sentinel, whose failover promotes a replica, and none otherwise). With Cluster the
    /// wait is for the replicas of the master that holds the user's slot.
    pub async fn connect_with(
        url: &str,
        op_timeout: Duration,
        wait_replicas: Option<u32>,
    ) -> Result<Self, VaultError> {
        if op_timeout.is_zero() {
            return Err(VaultError::Internal(
                "redis operation timeout must be positive".into(),
            ));
        }
        let endpoint = Arc::new(Endpoint::parse(url)?);
        let conn = Conn::open(&endpoint, op_timeout)?;
        let replicas = match (&endpoint.target, wait_replicas) {
            (_, Some(n)) => n,
            (Target::Sentinel { .. }, None) => 1,
            (_, None) => 0,
        };
        let replicated = if replicas > 0 {
            Some(replicated::Replicated {
                // Its calls may be held for the replicas' acknowledgement on top.
                conn: Conn::open(&endpoint, op_timeout + replicated::REPLICA_WAIT)?,
                replicas,
            })
        } else {
            None
        };
        let vault = Self {
            conn,
            op_timeout,
            endpoint,
            local: Arc::default(),
            replicated,
        };
        // Establish the connection now rather than on the first vend.
        if let Err(e) = vault.ping().await {
            tracing::warn!(url = %vault.endpoint.redacted, error = %e, "vault not reachable yet; will keep trying");
        }
        Ok(vault)
    }

    /// The connection for the hot path: on a single-threaded runtime, that runtime's own
    /// (opened on first use, reconnecting like the shared one); otherwise the shared one.
    fn here(&self) -> Conn {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if !matches!(self.conn, Conn::Standalone(_)) {
            return self.conn.clone();
        }
        let Ok(handle) = Handle::try_current() else {
            return self.conn.clone();
        };
        if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
            return self.conn.clone();
        }
        let id = handle.id();
        if let Some(c) = self.local.read().ok().and_then(|m| m.get(&id).cloned()) {
            return c;
        }
        match (
            Conn::open(&self.endpoint, self.op_timeout),
            self.local.write(),
        ) {
            (Ok(c), Ok(mut m)) => m.entry(id).or_insert(c).clone(),
            _ => self.conn.clone(),
        }
    }

    /// The URL with credentials removed, for logs and status pages.
    pub fn redacted_url(&self) -> &str {
        &self.endpoint.redacted
    }

    /// A directory-driven write (projection, revocation) of `script`: through the replica
    /// wait when there is one, otherwise as any other script call.
    async fn directory_write<T: FromRedisValue>(
        &self,
        script: &scripts::DirectoryScript,
        key: &str,
        args: &[Vec<u8>],
        op: &'static str,
    ) -> Result<T, VaultError> {
        if let Some(r) = &self.replicated {
            return r.eval(&script.source, key, args, self.op_timeout, op).await;
        }
        let mut invocation = script.script.key(key);
        for a in args {
            invocation.arg(a.as_slice());
        }
        self.conn.invoke(&invocation, self.op_timeout, op).await
    }

    /// The connection, endpoint and timeout, for a bus that shares this vault's connection.
    pub(crate) fn shared(&self) -> (Conn, Arc<Endpoint>, Duration) {
        (self.conn.clone(), self.endpoint.clone(), self.op_timeout)
    }
}

#[async_trait]
impl Vault for RedisVault {
    async fn ping(&self) -> Result<(), VaultError> {
        // On a cluster PING goes to every primary: ready means every slot is served.
        self.conn
            .query::<Value>(&redis::cmd("PING"), self.op_timeout, "PING")
            .await
            .map(|_| ())
    }

    async fn read(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
    ) -> Result<VaultRead, VaultError> {
        let key = user_key(org, user)?;
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&key)
            .arg("_s")
            .arg("_e")
            .arg(token_field(connector));
        let (state, epoch, sealed): (Option<Vec<u8>>, Option<u64>, Option<Vec<u8>>) =
            self.here().query(&cmd, self.op_timeout, "read").await?;
        // Both halves are always written together; if either is missing the projection counts
        // as absent and is rebuilt from the system of record (put_projection rewrites both).
        let projection = match (state, epoch) {
            (Some(state), Some(epoch)) => {
                let state: State = serde_json::from_slice(&state).map_err(|e| {
                    VaultError::Internal(format!("stored projection is not valid: {e}"))
                })?;
                Some(Projection {
                    active: state.active,
                    epoch,
                    connectors: state.connectors,
                })
            }
            _ => None,
        };
        Ok(VaultRead { projection, sealed })
    }

    async fn put_projection(
        &self,
        org: &OrgId,
        user: &UserId,
        p: &Projection,
    ) -> Result<u64, VaultError> {
        let key = user_key(org, user)?;
        check_epoch(p.epoch)?;
        let args = [p.epoch.to_string().into_bytes(), state_json(p)?];
        let epoch: String = self
            .directory_write(&scripts::PUT_PROJECTION, &key, &args, "put_projection")
            .await?;
        parse_epoch(&epoch)
    }

    async fn store_token(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        epoch: u64,
        sealed: &[u8],
    ) -> Result<CasOutcome, VaultError> {
        let key = user_key(org, user)?;
        let mut invocation = scripts::STORE_TOKEN.key(&key);
        invocation
            .arg(epoch)
            .arg(token_field(connector))
            .arg(sealed);
        let stored: i64 = self
            .here()
            .invoke(&invocation, self.op_timeout, "store_token")
            .await?;
        Ok(if stored == 1 {
            CasOutcome::Stored
        } else {
            CasOutcome::EpochMoved
        })
    }

    async fn revoke(
        &self,
        org: &OrgId,
        user: &UserId,
        projection: &Projection,
        connectors: Option<&[String]>,
    ) -> Result<(u64, Vec<String>), VaultError> {
        let key = user_key(org, user)?;
        check_epoch(projection.epoch)?;
        let mut args = vec![
            projection.epoch.to_string().into_bytes(),
            state_json(projection)?,
        ];
        match connectors {
            None => args.push(b"all".to_vec()),
            Some(list) => {
                args.push(b"some".to_vec());
                args.extend(list.iter().map(|c| c.as_bytes().to_vec()));
            }
        }
        let (epoch, deleted): (String, Vec<String>) = self
            .directory_write(&scripts::REVOKE, &key, &args, "revoke")
            .await?;
        Ok((parse_epoch(&epoch)?, deleted))
    }

    async fn token_connectors(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Vec<String>, VaultError> {
        let key = user_key(org, user)?;
        let mut cmd = redis::cmd("HKEYS");
        cmd.arg(&key);
        let fields: Vec<String> = self
            .conn
            .query(&cmd, self.op_timeout, "token_connectors")
            .await?;
        let mut connectors: Vec<String> = fields
            .into_iter()
            .filter_map(|f| f.strip_prefix("t:").map(str::to_owned))
            .collect();
        connectors.sort();
        Ok(connectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_and_query() {
        assert_eq!(redact("redis://u:p@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://:secret@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1/2?pass=x"), "redis://h:1/2");
        assert_eq!(
            redact("redis+cluster://u:p@a:1,b:2"),
            "redis+cluster://***@a:1,b:2"
        );
        assert_eq!(redact("redis+cluster://a:1,b:2"), "redis+cluster://a:1,b:2");
        assert_eq!(
            redact("redis+sentinel://u:p@a:1,b:2/mymaster/0"),
            "redis+sentinel://***@a:1,b:2/mymaster/0"
        );
        assert_eq!(
            redact("redis+sentinel://:p@a:1/m?pass=x#f"),
            "redis+sentinel://***@a:1/m"
        );
        assert_eq!(redact("redis+sentinel://a:1/m"), "redis+sentinel://a:1/m");
        assert_eq!(redact("nonsense"), "<unparseable redis URL>");
    }

    #[test]
    fn parses_cluster_seeds_with_credentials() {
        let e = Endpoint::parse("redis+cluster://u:pw@127.0.0.1:7000,127.0.0.1:7001/").unwrap();
        let Target::Cluster(nodes) = &e.target else {
            panic!("not a cluster")
        };
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].addr().to_string(), "127.0.0.1:7001");
        assert_eq!(nodes[0].redis_settings().password(), Some("pw"));
        assert_eq!(
            e.redacted,
            "redis+cluster://***@127.0.0.1:7000,127.0.0.1:7001/"
        );
        assert!(Endpoint::parse("redis+cluster://a:1,,b:2").is_err());
        assert!(Endpoint::parse("http://a:1").is_err());
        assert!(Endpoint::parse("redis+cluster://a:1/0").is_err());
    }

    #[tokio::test]
    async fn debug_never_shows_the_password() {
        let e = Endpoint::parse("redis://user:hunter2@127.0.0.1:1").unwrap();
        let conn = Conn::open(&e, Duration::from_millis(50)).unwrap_or_else(|_| panic!("opens"));
        let v = RedisVault {
            conn,
            op_timeout: Duration::from_millis(50),
            endpoint: Arc::new(e),
            local: Arc::default(),
            replicated: None,
        };
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***@127.0.0.1:1"), "{shown}");
    }
}
