//! The vault's connection to a Redis deployment watched by Sentinel: commands go to whichever
//! server the sentinels name master of `<master-name>` right now.
//!
//! URL: `redis+sentinel://[user:pass@]host:port,host:port/<master-name>[/db]`. The hosts are
//! sentinels (port 26379 when left out), asked without credentials; the credentials and the
//! database apply to the data nodes.
//!
//! One keeper task per connection ([`keeper`]) owns the redis crate's `Sentinel` client and is
//! the only place that resolves the master, so resolution is single-flight. It resolves at
//! start, and then:
//!
//! - when a sentinel announces a failover: the keeper holds one Pub/Sub connection to the
//!   first sentinel that answers, subscribed to `+switch-master`
//!   (`<master-name> <old-ip> <old-port> <new-ip> <new-port>`); a message naming our master
//!   resolves at once (cutting short the pause between two resolutions). When no sentinel
//!   takes the subscription or it drops (a ping every few seconds notices a silent one), it
//!   subscribes again with back-off, from half a second up to 30 s;
//! - when its once-a-second question to a sentinel (`SENTINEL GET-MASTER-ADDR-BY-NAME`) names
//!   another address: this covers a lost subscription or announcement. After a failover the
//!   old master keeps accepting writes until Sentinel demotes it (about ten seconds later), so
//!   waiting for errors alone would write into a server about to be wiped;
//! - when a command fails in a way that says the master may have moved (an I/O error, a
//!   timeout, `READONLY` from a demoted master).
//!
//! Resolving asks the sentinels in order for the master (`SENTINEL MASTERS`) and checks its
//! `ROLE`: an announcement is a hint to resolve, not an address taken on trust. On a new
//! address the keeper builds a `ConnectionManager` (the standalone configuration) and
//! publishes it; commands use whichever manager is current. The command that failed still
//! fails (`Unavailable`, callers retry); the next ones go to the new master.
//!
//! Redis replicates asynchronously: writes acknowledged by the old master after the promotion
//! and before the switch are lost, as with any Sentinel client. With the announcement that
//! window is the sentinel's own (it announces up to a tick, about 100 ms, after the promotion)
//! plus one resolution; without it, up to about a second.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use tokio::sync::{mpsc, watch};

use super::{Target, connect_timeout, node_info, tcp_settings};
use crate::domain::vault::VaultError;

mod keeper;

/// The port of a sentinel given without one.
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Parses what follows `redis+sentinel://`: sentinels, master name, optional database.
pub(super) fn parse(rest: &str) -> Result<Target, String> {
    if rest.contains(['?', '#']) {
        return Err("a sentinel URL takes no query or fragment".into());
    }
    let (authority, path) = rest
        .split_once('/')
        .ok_or("a sentinel URL needs the master name as its path: …/<master-name>[/db]")?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let mut segments = path.split('/');
    let master = segments.next().unwrap_or_default();
    if master.is_empty()
        || !master
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err("the master name must be non-empty letters, digits, or - _ . :".into());
    }
    let db = match (segments.next(), segments.next()) {
        (None, _) => 0,
        (Some(db), None) => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or("the database must be a non-negative integer")?,
        (Some(_), Some(_)) => return Err("the path is <master-name>[/db]".into()),
    };
    let sentinels = hosts
        .split(',')
        .map(|h| {
            if h.is_empty() {
                return Err("empty sentinel address".to_string());
            }
            let has_port = h.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
            let h = if has_port {
                h.to_string()
            } else {
                format!("{h}:{DEFAULT_SENTINEL_PORT}")
            };
            node_info(&format!("redis://{h}")).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The data nodes' settings: parsed as a URL so that credentials are percent-decoded.
    let node = format!("redis://{userinfo}127.0.0.1/{db}")
        .as_str()
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .redis_settings()
        .clone();
    Ok(Target::Sentinel {
        sentinels,
        master: master.to_string(),
        node,
    })
}

/// A connection to the current master, shared by all clones; the keeper task stops when the
/// last clone is dropped.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    current: watch::Receiver<State>,
    wake: mpsc::Sender<()>,
    db: i64,
}

/// What the keeper knows: the master in use, and why the last resolution failed, if it did.
#[derive(Clone, Default)]
struct State {
    master: Option<Arc<Master>>,
    error: Option<String>,
}

/// A resolved master and the connection to it.
#[derive(Clone)]
struct Master {
    info: ConnectionInfo,
    manager: ConnectionManager,
}

impl SentinelConn {
    /// Starts the keeper (which resolves the master in the background) without waiting for
    /// the network. Needs a Tokio runtime.
    pub(super) fn open(
        sentinels: &[ConnectionInfo],
        master: &str,
        node: &RedisConnectionInfo,
        op_timeout: Duration,
        redacted: &str,
    ) -> Result<Self, VaultError> {
        let bad = |why: String| VaultError::Internal(format!("redis {redacted}: {why}"));
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| bad("a Sentinel connection needs a Tokio runtime".into()))?;
        let sentinel = Sentinel::build(sentinels.to_vec()).map_err(|e| bad(e.to_string()))?;
        let (state, current) = watch::channel(State::default());
        let (wake, woken) = mpsc::channel(1);
        let keeper = keeper::Keeper {
            sentinel,
            probes: sentinels
                .iter()
                .map(|s| redis::Client::open(s.clone()))
                .collect::<RedisResult<_>>()
                .map_err(|e| bad(e.to_string()))?,
            probe: None,
            master_name: master.to_string(),
            node: SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(node.clone())
                .set_tcp_settings(tcp_settings()),
            op_timeout,
            limit: connect_timeout(op_timeout).max(keeper::MIN_RESOLVE_TIME),
            redacted: redacted.to_string(),
            state,
        };
        runtime.spawn(keeper.run(woken));
        Ok(Self {
            current,
            wake,
            db: node.db(),
        })
    }

    /// Asks the keeper to check where the master is (a no-op if a check is already queued).
    pub(crate) fn suspect(&self) {
        let _ = self.wake.try_send(());
    }

    /// The current master; with none, fails at once if the last resolution failed, or else
    /// waits for the keeper's first answer (the caller bounds the wait).
    async fn master(&self) -> RedisResult<Arc<Master>> {
        let mut rx = self.current.clone();
        let (master, error) = {
            let state = rx.borrow_and_update();
            (state.master.clone(), state.error.clone())
        };
        if let Some(m) = master {
            return Ok(m);
        }
        self.suspect();
        if error.is_some() {
            return Err(no_master(error.as_deref()));
        }
        if rx.changed().await.is_err() {
            return Err(no_master(Some("the Sentinel keeper stopped")));
        }
        let state = rx.borrow().clone();
        state
            .master
            .ok_or_else(|| no_master(state.error.as_deref()))
    }

    /// Where the current master is, for a pub/sub subscription (which needs its own socket).
    pub(crate) async fn master_info(&self) -> RedisResult<ConnectionInfo> {
        self.master().await.map(|m| m.info.clone())
    }

    /// Returns once the master is no longer at `addr` (a subscription there must move).
    pub(crate) async fn moved_from(&self, addr: &ConnectionAddr) {
        let mut rx = self.current.clone();
        let elsewhere = rx
            .wait_for(|s| s.master.as_ref().is_some_and(|m| m.info.addr() != addr))
            .await
            .is_ok();
        if !elsewhere {
            // The keeper is gone, so the master can no longer change: wait forever.
            std::future::pending::<()>().await;
        }
    }

    /// Wakes the keeper when `result` says the master may have moved.
    fn check<T>(&self, result: &RedisResult<T>) {
        if let Err(e) = result
            && suggests_move(e)
        {
            self.suspect();
        }
    }
}

/// An I/O failure or a timeout (the master may be gone), or `READONLY`/`MASTERDOWN` (the
/// server we talk to is a replica now).
fn suggests_move(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

fn no_master(why: Option<&str>) -> RedisError {
    let why = why.unwrap_or("not resolved yet");
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("no master known through Sentinel: {why}"),
    ))
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut manager = self.master().await?.manager.clone();
            let result = manager.req_packed_command(cmd).await;
            self.check(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut manager = self.master().await?.manager.clone();
            let result = manager.req_packed_commands(pipeline, offset, count).await;
            self.check(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::super::Endpoint;
    use super::*;

    fn parsed(url: &str) -> Result<(Vec<String>, String, RedisConnectionInfo), String> {
        match parse(url.strip_prefix("redis+sentinel://").unwrap_or(url))? {
            Target::Sentinel {
                sentinels,
                master,
                node,
            } => Ok((
                sentinels.iter().map(|s| s.addr().to_string()).collect(),
                master,
                node,
            )),
            _ => Err("not a sentinel target".into()),
        }
    }

    #[test]
    fn parses_sentinels_master_and_db() {
        let (sentinels, master, node) =
            parsed("redis+sentinel://u:p%40ss@10.0.0.1:26380,10.0.0.2,[::1]:7/mymaster/3").unwrap();
        assert_eq!(
            sentinels,
            ["10.0.0.1:26380", "10.0.0.2:26379", "::1:7"],
            "a sentinel without a port gets 26379"
        );
        assert_eq!(master, "mymaster");
        assert_eq!(node.db(), 3);
        assert_eq!(node.username(), Some("u"));
        assert_eq!(node.password(), Some("p@ss"), "percent-decoded");

        let (sentinels, master, node) = parsed("redis+sentinel://s1:1/vault-main.eu:1").unwrap();
        assert_eq!((sentinels.len(), master.as_str()), (1, "vault-main.eu:1"));
        assert_eq!((node.db(), node.password()), (0, None));
    }

    #[test]
    fn credentials_go_to_the_data_nodes_only() {
        let Ok(Target::Sentinel { sentinels, .. }) = parse(":secret@s1:1,s2:2/m") else {
            panic!("parses")
        };
        for s in &sentinels {
            assert_eq!(s.redis_settings().password(), None);
            assert_eq!(s.redis_settings().db(), 0);
        }
    }

    #[test]
    fn rejects_malformed_urls() {
        for bad in [
            "s1:1",           // no master name
            "s1:1/",          // empty master name
            "s1:1/m/x",       // db not a number
            "s1:1/m/-1",      // negative db
            "s1:1/m/0/extra", // too many segments
            "s1:1/m?pass=x",  // query
            "s1:1/m#f",       // fragment
            "s1:1,,s2:2/m",   // empty sentinel
            "s1:1/my master", // space in the name
            "s1:x/m",         // bad port
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_sentinel_urls_and_refuses_tls() {
        let e =
            Endpoint::parse("redis+sentinel://u:pw@127.0.0.1:26379,127.0.0.1:26380/m/2").unwrap();
        let Target::Sentinel {
            sentinels,
            master,
            node,
        } = &e.target
        else {
            panic!("not a sentinel target")
        };
        assert_eq!((sentinels.len(), master.as_str()), (2, "m"));
        assert_eq!((node.password(), node.db(), e.db()), (Some("pw"), 2, 2));
        assert!(e.nodes().is_empty());
        assert_eq!(
            e.redacted,
            "redis+sentinel://***@127.0.0.1:26379,127.0.0.1:26380/m/2"
        );
        let Err(VaultError::Internal(why)) = Endpoint::parse("rediss+sentinel://:pw@a:1/m") else {
            panic!("TLS sentinel URL accepted")
        };
        assert!(
            why.contains("not supported") && !why.contains("pw"),
            "{why}"
        );
        let Err(VaultError::Internal(why)) = Endpoint::parse("redis+sentinel://:hunter2@a:1")
        else {
            panic!("URL without a master name accepted")
        };
        assert!(
            why.contains("master name") && !why.contains("hunter2"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn debug_and_errors_never_show_the_password() {
        let url = "redis+sentinel://:hunter2@127.0.0.1:1/m";
        let v = super::super::RedisVault::connect(url, Duration::from_millis(50))
            .await
            .unwrap();
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***@127.0.0.1:1/m"), "{shown}");
        let e = crate::domain::vault::Vault::ping(&v).await.unwrap_err();
        assert!(matches!(e, VaultError::Unavailable(_)), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
