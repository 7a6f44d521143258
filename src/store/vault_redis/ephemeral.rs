//! The ephemeral store (sign-in state, sessions, replay caches) on the vault's connection.

use std::time::Duration;

use async_trait::async_trait;

use super::RedisVault;
use crate::domain::rate::RateLimit;
use crate::domain::vault::{Ephemeral, VaultError};

/// Sign-in state, sessions and replay caches as plain Redis strings with a TTL (`SET PX`,
/// `GETDEL` (Redis 6.2+), `SET NX PX`), counters (`INCR`, `PEXPIRE` on creation), and rate
/// budgets (one number, changed by a script on the server's clock).
#[async_trait]
impl Ephemeral for RedisVault {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), VaultError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl_ms(ttl));
        self.conn
            .query::<()>(&cmd, self.op_timeout, "eph.put")
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.conn.query(&cmd, self.op_timeout, "eph.get").await
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(key);
        self.conn.query(&cmd, self.op_timeout, "eph.take").await
    }

    async fn remove(&self, key: &str) -> Result<(), VaultError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        self.conn
            .query::<()>(&cmd, self.op_timeout, "eph.remove")
            .await
    }

    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, VaultError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(1).arg("NX").arg("PX").arg(ttl_ms(ttl));
        let set: Option<String> = self.conn.query(&cmd, self.op_timeout, "eph.claim").await?;
        Ok(set.is_some())
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, VaultError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(owner).arg("NX").arg("PX").arg(ttl_ms(ttl));
        let set: Option<String> = self.conn.query(&cmd, self.op_timeout, "eph.lock").await?;
        Ok(set.is_some())
    }

    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, VaultError> {
        let mut invocation = RENEW.key(key);
        invocation.arg(owner).arg(ttl_ms(ttl));
        let n: i64 = self
            .conn
            .invoke(&invocation, self.op_timeout, "eph.renew")
            .await?;
        Ok(n == 1)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), VaultError> {
        let mut invocation = UNLOCK.key(key);
        invocation.arg(owner);
        let _: i64 = self
            .conn
            .invoke(&invocation, self.op_timeout, "eph.unlock")
            .await?;
        Ok(())
    }

    async fn reserve_rate(
        &self,
        key: &str,
        limit: &RateLimit,
    ) -> Result<Option<Duration>, VaultError> {
        let mut invocation = RESERVE.key(key);
        invocation
            .arg(micros(limit.interval).max(1))
            .arg(limit.burst.max(1))
            .arg(micros(limit.max_wait));
        let wait: i64 = self
            .conn
            .invoke(&invocation, self.op_timeout, "eph.reserve_rate")
            .await?;
        Ok(u64::try_from(wait).ok().map(Duration::from_micros))
    }

    async fn throttle_rate(
        &self,
        key: &str,
        stop: Option<Duration>,
        limit: &RateLimit,
    ) -> Result<(), VaultError> {
        let mut invocation = THROTTLE.key(key);
        invocation
            .arg(micros(limit.interval).max(1))
            .arg(limit.burst.max(1))
            .arg(stop.map_or(-1, |d| i64::try_from(micros(d)).unwrap_or(i64::MAX)));
        let _: i64 = self
            .conn
            .invoke(&invocation, self.op_timeout, "eph.throttle_rate")
            .await?;
        Ok(())
    }

    async fn count(&self, key: &str, ttl: Duration) -> Result<u64, VaultError> {
        // One atomic step on the key's node: a counter created here gets its TTL at once.
        let mut invocation = COUNT.key(key);
        invocation.arg(ttl_ms(ttl));
        self.conn
            .invoke(&invocation, self.op_timeout, "eph.count")
            .await
    }
}

/// `KEYS[1]` the counter; `ARGV[1]` its TTL in ms, set when the counter is created.
static COUNT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
",
    )
});

/// `KEYS[1]` a lock; `ARGV[1]` the owner, `ARGV[2]` the new TTL in ms: extends it iff the
/// owner still holds it.
static RENEW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// `KEYS[1]` a lock; `ARGV[1]` the owner: deletes it iff the owner still holds it.
static UNLOCK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// `domain::rate::reserve` on the server's clock. `KEYS[1]` the budget (its `tat` in µs);
/// `ARGV[1]` the interval in µs, `ARGV[2]` the burst, `ARGV[3]` the longest wait in µs. Returns
/// the wait in µs, or -1 when refused (nothing stored then). `TIME` makes the script
/// non-deterministic, hence effects replication (the default since Redis 7).
static RESERVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - (now + interval * burst)
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[3]) then return -1 end
local ttl = math.floor((new_tat - now + interval * burst) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
return wait
",
    )
});

/// `domain::rate::throttle` on the server's clock. `KEYS[1]` the budget; `ARGV[1]` the
/// interval in µs, `ARGV[2]` the burst, `ARGV[3]` the stop in µs (-1: empty the budget).
static THROTTLE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst, stop = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local floor = now + interval * burst
if stop >= 0 then floor = now + stop + interval * (burst - 1) end
if floor > tat then tat = floor end
local ttl = math.floor((tat - now + interval * burst) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
return 1
",
    )
});

/// Whole microseconds (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A TTL in whole milliseconds, at least one (Redis refuses zero).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
