//! The keeper task: resolves the master, swaps the connection, and listens for the sentinels'
//! failover announcements (see the parent module's documentation).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError, RedisResult};
use tokio::sync::{mpsc, watch};

use super::super::subscription::{jittered, pump};
use super::super::{connect_timeout, manager_config};
use super::{Master, State, no_master};

/// How often the keeper asks a sentinel where the master is.
const MASTER_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Least time between two resolutions, so a burst of failing commands asks once.
const MIN_RESOLVE_GAP: Duration = Duration::from_millis(100);
/// Resolution runs off the request path: it may take at least this long.
pub(super) const MIN_RESOLVE_TIME: Duration = Duration::from_secs(1);
/// The channel on which a sentinel announces that it switched a master:
/// `<master-name> <old-ip> <old-port> <new-ip> <new-port>`.
const SWITCH_CHANNEL: &str = "+switch-master";
/// First and longest wait before subscribing again after no sentinel accepted or the
/// subscription dropped (the once-a-second check covers the meantime).
const SUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(500);
const SUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The background task that resolves the master and swaps the connection.
pub(super) struct Keeper {
    pub(super) sentinel: Sentinel,
    /// One client per sentinel, for the cheap periodic check and the subscription.
    pub(super) probes: Vec<redis::Client>,
    /// The connection to the sentinel that answered the last check.
    pub(super) probe: Option<MultiplexedConnection>,
    pub(super) master_name: String,
    pub(super) node: SentinelNodeConnectionInfo,
    pub(super) op_timeout: Duration,
    /// Bound of one resolution, check or subscription step.
    pub(super) limit: Duration,
    pub(super) redacted: String,
    pub(super) state: watch::Sender<State>,
}

impl Keeper {
    /// Runs until every `SentinelConn` (every sender of `woken`) is gone.
    pub(super) async fn run(mut self, mut woken: mpsc::Receiver<()>) {
        // The listener ends when `announced` is dropped, that is when this task ends.
        let (announce, mut announced) = mpsc::channel(1);
        tokio::spawn(listen(Listener {
            sentinels: self.probes.clone(),
            master_name: self.master_name.clone(),
            limit: self.limit,
            redacted: self.redacted.clone(),
            announce,
        }));
        let (mut resolve, mut announcement) = (true, false);
        loop {
            if resolve {
                self.resolve().await;
                let gap = tokio::time::sleep(MIN_RESOLVE_GAP);
                if announcement {
                    gap.await;
                } else {
                    // An announcement cuts the gap short (once: the next resolution waits it).
                    tokio::select! {
                        () = gap => {}
                        Some(()) = announced.recv() => {
                            announcement = true;
                            continue;
                        }
                    }
                }
                // Wake-ups queued meanwhile came from the connection just replaced or checked.
                while woken.try_recv().is_ok() {}
            }
            announcement = false;
            resolve = tokio::select! {
                wake = woken.recv() => match wake {
                    Some(()) => true,
                    None => return,
                },
                Some(()) = announced.recv() => {
                    announcement = true;
                    true
                }
                () = tokio::time::sleep(MASTER_CHECK_EVERY) => self.moved().await,
            };
        }
    }

    /// Asks the sentinels for the master (the crate checks its `ROLE`) and, if it is not the
    /// one in use, connects to it.
    async fn resolve(&mut self) {
        let lookup = self
            .sentinel
            .async_master_for(&self.master_name, Some(&self.node));
        let client = match tokio::time::timeout(self.limit, lookup).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return self.failed(e.to_string()),
            Err(_) => return self.failed(format!("no answer within {:?}", self.limit)),
        };
        let info = client.get_connection_info().clone();
        let same = self
            .state
            .borrow()
            .master
            .as_ref()
            .is_some_and(|m| m.info.addr() == info.addr());
        if same {
            self.state.send_modify(|s| s.error = None);
            return;
        }
        match ConnectionManager::new_lazy_with_config(client, manager_config(self.op_timeout)) {
            Ok(manager) => {
                tracing::info!(url = %self.redacted, master = %info.addr(), "vault master resolved through Sentinel");
                self.state.send_replace(State {
                    master: Some(Arc::new(Master { info, manager })),
                    error: None,
                });
            }
            Err(e) => self.failed(e.to_string()),
        }
    }

    /// Records a failed resolution; warns once per outage (failing commands ask often).
    fn failed(&self, why: String) {
        if self.state.borrow().error.is_none() {
            tracing::warn!(url = %self.redacted, master = %self.master_name, error = %why, "cannot resolve the vault master through Sentinel");
        } else {
            tracing::debug!(url = %self.redacted, master = %self.master_name, error = %why, "still cannot resolve the vault master through Sentinel");
        }
        self.state.send_modify(|s| s.error = Some(why));
    }

    /// Whether a sentinel names another master than the one in use (or there is none yet).
    async fn moved(&mut self) -> bool {
        let Some(current) = self
            .state
            .borrow()
            .master
            .as_ref()
            .map(|m| m.info.addr().clone())
        else {
            return true;
        };
        match tokio::time::timeout(self.limit, self.ask_master_addr()).await {
            Ok(Ok(Some((host, port)))) => ConnectionAddr::Tcp(host, port) != current,
            // The name is unknown to this sentinel, or no sentinel answers: keep the master.
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::debug!(url = %self.redacted, error = %e, "no sentinel answers");
                self.probe = None;
                false
            }
            Err(_) => {
                self.probe = None;
                false
            }
        }
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` on the first sentinel that answers.
    async fn ask_master_addr(&mut self) -> RedisResult<Option<(String, u16)>> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master_name);
        if let Some(probe) = &mut self.probe {
            match cmd.query_async(probe).await {
                Ok(addr) => return Ok(addr),
                Err(_) => self.probe = None,
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout(self.op_timeout)))
            .set_response_timeout(Some(self.limit));
        let mut last = None;
        for client in &self.probes {
            let attempt = async {
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let addr = cmd.query_async(&mut conn).await?;
                Ok::<_, RedisError>((conn, addr))
            };
            match attempt.await {
                Ok((conn, addr)) => {
                    self.probe = Some(conn);
                    return Ok(addr);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| no_master(Some("no sentinel configured"))))
    }
}

/// What the listener task needs: the sentinels (no credentials), and where to announce.
struct Listener {
    sentinels: Vec<redis::Client>,
    master_name: String,
    limit: Duration,
    redacted: String,
    announce: mpsc::Sender<()>,
}

/// Holds a `+switch-master` subscription on the first sentinel that answers and signals the
/// keeper when a message names our master; subscribes again with back-off when none answers
/// or the subscription drops. Ends when the keeper does.
async fn listen(l: Listener) {
    let subscriptions = async {
        let mut delay = SUBSCRIBE_BACKOFF_MIN;
        loop {
            match subscribe(&l.sentinels, l.limit).await {
                Ok((pubsub, sentinel)) => {
                    delay = SUBSCRIBE_BACKOFF_MIN;
                    tracing::debug!(url = %l.redacted, %sentinel, "listening for Sentinel failover announcements");
                    let why = pump(pubsub, l.limit, |payload| {
                        let payload = String::from_utf8_lossy(payload);
                        if let Some((ip, port)) = switched_to(&payload, &l.master_name) {
                            tracing::info!(url = %l.redacted, master = %l.master_name, new = %format_args!("{ip}:{port}"), "a sentinel announced a failover");
                            // Full means a resolution is already queued.
                            let _ = l.announce.try_send(());
                        }
                    })
                    .await;
                    tracing::info!(url = %l.redacted, %sentinel, reason = why, "Sentinel announcement subscription lost; polling until it is back");
                }
                Err(e) => {
                    tracing::debug!(url = %l.redacted, error = %e, "no sentinel takes the announcement subscription; polling");
                }
            }
            tokio::time::sleep(jittered(delay)).await;
            delay = (delay * 2).min(SUBSCRIBE_BACKOFF_MAX);
        }
    };
    tokio::select! {
        () = l.announce.closed() => {}
        () = subscriptions => {}
    }
}

/// Subscribes to [`SWITCH_CHANNEL`] on the first sentinel that answers within `limit`.
async fn subscribe(
    sentinels: &[redis::Client],
    limit: Duration,
) -> RedisResult<(redis::aio::PubSub, ConnectionAddr)> {
    let mut last = None;
    for client in sentinels {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(SWITCH_CHANNEL).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(pubsub)) => return Ok((pubsub, client.get_connection_info().addr().clone())),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(no_master(Some("no sentinel answered in time"))),
        }
    }
    Err(last.unwrap_or_else(|| no_master(Some("no sentinel configured"))))
}

/// The new address in a `+switch-master` message about `master`, if it is one.
fn switched_to<'a>(payload: &'a str, master: &str) -> Option<(&'a str, u16)> {
    let words: Vec<&str> = payload.split_ascii_whitespace().collect();
    match words[..] {
        [name, _old_ip, _old_port, ip, port] if name == master => Some((ip, port.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_switch_announcements_for_our_master_only() {
        let msg = "vault 10.0.0.1 6379 10.0.0.2 6380";
        assert_eq!(switched_to(msg, "vault"), Some(("10.0.0.2", 6380)));
        assert_eq!(switched_to(msg, "vaul"), None, "another master");
        assert_eq!(switched_to(msg, "other"), None);
        for bad in [
            "",
            "vault",
            "vault 10.0.0.1 6379 10.0.0.2",
            "vault a 1 b x",
            "vault a 1 b 2 c",
        ] {
            assert_eq!(switched_to(bad, "vault"), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_jitter_stays_within_bounds() {
        for _ in 0..100 {
            let d = jittered(SUBSCRIBE_BACKOFF_MIN);
            assert!(
                d >= SUBSCRIBE_BACKOFF_MIN / 2 && d <= SUBSCRIBE_BACKOFF_MIN,
                "{d:?}"
            );
        }
    }
}
