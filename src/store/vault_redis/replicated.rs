//! Directory-driven vault writes (revocations, projections) that answer only once a replica
//! holds them (`storage.redis_wait_replicas`).
//!
//! Redis replicates asynchronously. Without this, a revocation the master acknowledged and a
//! crash of that master a moment later could leave a promoted replica with the old epoch and
//! the purged tokens: a token would come back. So each such write goes out as one pipeline on
//! a connection of its own: the script (`EVAL`), `WAIT <replicas> <ms>`, and `ROLE`. `WAIT`
//! blocks the calling connection on the server, which is why vends never share this one; the
//! pipeline keeps all three on the same server connection, so `WAIT` counts exactly this
//! write (and everything this connection wrote before it). With Cluster the pipeline goes,
//! whole, to the master of the slot its one key hashes to (neither `WAIT` nor `ROLE` names a
//! key), so the count is of that master's replicas.
//!
//! The write is confirmed when as many replicas acknowledged it as were asked for, or as are
//! connected to the master (`ROLE`), whichever is fewer: a master with no replica at all has
//! nothing to fail over to. Otherwise the caller gets `Unavailable`: the write is in force on
//! the master, and the retry it asks for (an IdP retries a SCIM write that got 503) confirms
//! it, because a replica that acknowledges a later write of this connection holds the earlier
//! ones too.

use std::time::Duration;

use redis::{FromRedisValue, Value};

use super::{Conn, map_redis_error};
use crate::domain::vault::VaultError;

/// How long a write waits for its replicas. A healthy replica acknowledges within a
/// millisecond; this is for one that is briefly stalled (a busy host), and bounds how long a
/// SCIM write can be held before it gets 503.
pub(crate) const REPLICA_WAIT: Duration = Duration::from_millis(500);

/// How many replicas a directory-driven write waits for, and on which connection.
#[derive(Clone)]
pub(crate) struct Replicated {
    pub(crate) conn: Conn,
    pub(crate) replicas: u32,
}

impl Replicated {
    /// Runs `source` (a script's text) with `key` and `args`, then waits for the replicas, at
    /// most [`REPLICA_WAIT`]. `limit` (the vault's call limit) bounds the call beyond that
    /// wait, so that `WAIT`'s count, not a timeout, comes back.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        source: &str,
        key: &str,
        args: &[Vec<u8>],
        limit: Duration,
        op: &'static str,
    ) -> Result<T, VaultError> {
        let mut pipe = redis::pipe();
        let eval = pipe.cmd("EVAL").arg(source).arg(1).arg(key);
        for a in args {
            eval.arg(a.as_slice());
        }
        let wait_ms = REPLICA_WAIT.as_millis() as u64;
        pipe.cmd("WAIT").arg(self.replicas).arg(wait_ms);
        pipe.cmd("ROLE");
        let mut conn = self.conn.clone();
        let whole = REPLICA_WAIT + limit;
        let answers: Vec<Value> =
            match tokio::time::timeout(whole, pipe.query_async(&mut conn)).await {
                Ok(r) => r.map_err(map_redis_error)?,
                // As on the shared connection: a silent Sentinel master is looked up again.
                Err(_) => return Err(self.conn.timed_out(op, whole)),
            };
        let [written, acked, role] = <[Value; 3]>::try_from(answers).map_err(|a| {
            VaultError::Internal(format!("redis {op}: {} answers to 3 commands", a.len()))
        })?;
        let unreadable = |e: &dyn std::fmt::Display| {
            VaultError::Internal(format!("redis {op}: unexpected answer: {e}"))
        };
        let acked: u32 = FromRedisValue::from_redis_value(acked).map_err(|e| unreadable(&e))?;
        let connected = connected_replicas(role)?;
        if !confirmed(self.replicas, acked, connected) {
            return Err(VaultError::Unavailable(format!(
                "redis {op}: written on the master but acknowledged by {acked} of {connected} \
                 replicas within {wait_ms} ms; retry"
            )));
        }
        FromRedisValue::from_redis_value(written).map_err(|e| unreadable(&e))
    }
}

/// Whether a write `acked` by that many replicas is confirmed when `wanted` were asked for
/// and `connected` are connected.
fn confirmed(wanted: u32, acked: u32, connected: u32) -> bool {
    acked >= wanted.min(connected)
}

/// The number of replicas a master's `ROLE` answer lists (`master`, offset, replicas).
fn connected_replicas(role: Value) -> Result<u32, VaultError> {
    let bad = |what: &str| VaultError::Unavailable(format!("redis ROLE: {what}"));
    let Value::Array(parts) = role else {
        return Err(bad("not an array"));
    };
    match parts.first() {
        Some(Value::BulkString(b)) if b.as_slice() == b"master" => {}
        Some(Value::SimpleString(s)) if s == "master" => {}
        // A demoted master: the write may be lost, as any write to a replica would be refused.
        _ => return Err(bad("the server is no longer the master")),
    }
    match parts.get(2) {
        Some(Value::Array(replicas)) => Ok(replicas.len() as u32),
        _ => Err(bad("no replica list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_confirmed_by_the_replicas_asked_for_or_all_connected_ones() {
        assert!(confirmed(1, 1, 1));
        assert!(confirmed(1, 1, 2));
        assert!(
            !confirmed(1, 0, 1),
            "a lagging replica holds the answer back"
        );
        assert!(!confirmed(2, 1, 2));
        // With no replica connected there is nothing to fail over to.
        assert!(confirmed(1, 0, 0));
        assert!(confirmed(2, 1, 1));
        assert!(confirmed(0, 0, 3));
    }

    #[test]
    fn role_answers_are_read_for_their_replicas() {
        let master = |n: usize| {
            Value::Array(vec![
                Value::BulkString(b"master".to_vec()),
                Value::Int(100),
                Value::Array(
                    (0..n)
                        .map(|_| {
                            Value::Array(vec![
                                Value::BulkString(b"127.0.0.1".to_vec()),
                                Value::BulkString(b"6380".to_vec()),
                                Value::BulkString(b"100".to_vec()),
                            ])
                        })
                        .collect(),
                ),
            ])
        };
        assert_eq!(connected_replicas(master(0)).unwrap(), 0);
        assert_eq!(connected_replicas(master(2)).unwrap(), 2);
        let replica = Value::Array(vec![
            Value::BulkString(b"slave".to_vec()),
            Value::BulkString(b"127.0.0.1".to_vec()),
            Value::Int(6379),
        ]);
        assert!(matches!(
            connected_replicas(replica),
            Err(VaultError::Unavailable(_))
        ));
        assert!(connected_replicas(Value::Nil).is_err());
    }
}
