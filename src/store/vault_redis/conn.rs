//! Connections to the vault's Redis: the URL forms parsed into a [`Target`] (with a redacted
//! form for logs), and [`Conn`], one multiplexed, self-healing connection to a standalone
//! server, a Sentinel-named master or a Cluster, with its timeouts, reconnection back-off and
//! TCP settings; Redis errors mapped onto the vault's (transient ones are `Unavailable`).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{
    Cmd, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, RedisFuture, ServerErrorKind, Value,
};

use super::sentinel;
use crate::domain::vault::VaultError;

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

pub(crate) fn node_info(url: &str) -> Result<ConnectionInfo, RedisError> {
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
pub(crate) fn manager_config(op_timeout: Duration) -> ConnectionManagerConfig {
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
    pub(crate) async fn invoke<T: FromRedisValue>(
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
    pub(crate) fn timed_out(&self, op: &str, limit: Duration) -> VaultError {
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
}
