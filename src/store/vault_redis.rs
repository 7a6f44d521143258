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
//! - `_s`: the projection's state as JSON (`active`, `locked`, `connectors`);
//! - `_e`: the projection's epoch as a Redis integer, kept apart from `_s` so that the Lua
//!   scripts compare and bump it exactly (Lua numbers are doubles);
//! - `_v`: the projection's version, moved by every projection write (the writers'
//!   compare-and-set token; absent on projections written before versions: read as 0);
//! - `t:<connector>`: a sealed token.
//!
//! A vend is one round trip (`HMGET key _s _e _v t:<connector>`); every write is a Lua script
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
mod conn;
mod ephemeral;
mod replicated;
mod scripts;
mod sentinel;
mod subscription;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{FromRedisValue, Value};
use serde::{Deserialize, Serialize};

use super::vault_memory::{check_epoch, check_ids};
use crate::domain::ids::{OrgId, UserId};
use crate::domain::vault::{
    CasOutcome, Projection, ProjectionWrite, Vault, VaultError, VaultRead, Written,
};

pub use bus::RedisBus;
pub(crate) use conn::{
    Conn, Endpoint, Target, connect_timeout, manager_config, map_redis_error, node_info,
    tcp_settings,
};

/// The `_s` field: the projection without its counters (those are `_e` and `_v`).
#[derive(Serialize)]
struct StateRef<'a> {
    active: bool,
    locked: bool,
    connectors: &'a BTreeMap<String, Vec<String>>,
}

/// The `_s` field as read back.
#[derive(Deserialize)]
struct State {
    active: bool,
    #[serde(default)]
    locked: bool,
    connectors: BTreeMap<String, Vec<String>>,
}

fn state_json(p: &Projection) -> Result<Vec<u8>, VaultError> {
    serde_json::to_vec(&StateRef {
        active: p.active,
        locked: p.locked,
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
    /// Where revocations and projections wait for replicas, when they do.
    replicated: Option<replicated::Replicated>,
}

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
            replicated,
        };
        // Establish the connection now rather than on the first vend.
        if let Err(e) = vault.ping().await {
            tracing::warn!(url = %vault.endpoint.redacted, error = %e, "vault not reachable yet; will keep trying");
        }
        Ok(vault)
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
            .arg("_v")
            .arg(token_field(connector));
        type Fields = (Option<Vec<u8>>, Option<u64>, Option<u64>, Option<Vec<u8>>);
        let (state, epoch, version, sealed): Fields =
            self.conn.query(&cmd, self.op_timeout, "read").await?;
        // Both halves are always written together; if either is missing the projection counts
        // as absent and is rebuilt from the system of record (put_projection rewrites both).
        let projection = match (state, epoch) {
            (Some(state), Some(epoch)) => {
                let state: State = serde_json::from_slice(&state).map_err(|e| {
                    VaultError::Internal(format!("stored projection is not valid: {e}"))
                })?;
                Some(Projection {
                    active: state.active,
                    locked: state.locked,
                    epoch,
                    version: version.unwrap_or(0),
                    connectors: state.connectors,
                })
            }
            _ => None,
        };
        Ok(VaultRead { projection, sealed })
    }

    async fn write_projection(
        &self,
        org: &OrgId,
        user: &UserId,
        w: ProjectionWrite<'_>,
    ) -> Result<Written, VaultError> {
        let key = user_key(org, user)?;
        check_epoch(w.projection.epoch)?;
        let args = [
            w.expected
                .map(|v| v.to_string())
                .unwrap_or_default()
                .into_bytes(),
            state_json(w.projection)?,
            w.projection.epoch.to_string().into_bytes(),
            if w.revoke {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            },
        ];
        let answer: Vec<Value> = self
            .directory_write(&scripts::WRITE_PROJECTION, &key, &args, "write_projection")
            .await?;
        let unexpected =
            || VaultError::Internal("redis write_projection: unexpected answer".into());
        match answer.as_slice() {
            [Value::Int(0)] => Ok(Written::Moved),
            [Value::Int(1), epoch, version, purged] => {
                let text = |v: &Value| -> Result<String, VaultError> {
                    String::from_redis_value(v.clone()).map_err(|_| unexpected())
                };
                Ok(Written::Stored {
                    epoch: parse_epoch(&text(epoch)?)?,
                    version: parse_epoch(&text(version)?)?,
                    purged: Vec::<String>::from_redis_value(purged.clone())
                        .map_err(|_| unexpected())?,
                })
            }
            _ => Err(unexpected()),
        }
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
            .conn
            .invoke(&invocation, self.op_timeout, "store_token")
            .await?;
        Ok(if stored == 1 {
            CasOutcome::Stored
        } else {
            CasOutcome::EpochMoved
        })
    }

    async fn discard_token(
        &self,
        org: &OrgId,
        user: &UserId,
        field: &str,
        sealed: &[u8],
    ) -> Result<bool, VaultError> {
        let key = user_key(org, user)?;
        let mut invocation = scripts::DISCARD_TOKEN.key(&key);
        invocation.arg(token_field(field)).arg(sealed);
        let deleted: i64 = self
            .conn
            .invoke(&invocation, self.op_timeout, "discard_token")
            .await?;
        Ok(deleted == 1)
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

    #[tokio::test]
    async fn debug_never_shows_the_password() {
        let e = Endpoint::parse("redis://user:hunter2@127.0.0.1:1").unwrap();
        let conn = Conn::open(&e, Duration::from_millis(50)).unwrap_or_else(|_| panic!("opens"));
        let v = RedisVault {
            conn,
            op_timeout: Duration::from_millis(50),
            endpoint: Arc::new(e),
            replicated: None,
        };
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***@127.0.0.1:1"), "{shown}");
    }
}
