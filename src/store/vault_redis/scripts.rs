//! The Lua scripts behind the vault's compare-and-set writes. Each runs atomically on the
//! node that owns the user's hash slot, so "check the epoch, then write" cannot interleave
//! with a revocation.
//!
//! Epochs and versions live in the hash fields `_e` and `_v` as canonical decimal strings
//! (what Rust's `u64` formatting and Redis's `HINCRBY` produce). The scripts compare and
//! return them as strings and never do arithmetic on them in Lua (whose numbers are doubles,
//! exact only up to 2^53): `HINCRBY` moves them, exactly, as 64-bit integers.

use std::sync::LazyLock;

use redis::Script;

/// A script a directory-driven write runs: its text (sent with `EVAL` in the replica wait's
/// pipeline) and the [`Script`] built from it once (`EVALSHA` otherwise).
pub(super) struct DirectoryScript {
    /// The Lua source.
    pub(super) source: String,
    /// The same source, hashed once for `EVALSHA`.
    pub(super) script: Script,
}

impl DirectoryScript {
    fn new(source: String) -> Self {
        let script = Script::new(&source);
        Self { source, script }
    }
}

/// `KEYS[1]` the user's hash; `ARGV[1]` the epoch the caller read; `ARGV[2]` the token
/// field; `ARGV[3]` the sealed token. Returns 1 when stored, 0 when the epoch moved or no
/// projection exists (fail closed: a projection must exist before a token is stored).
pub(super) static STORE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], '_e') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
",
    )
});

/// `KEYS[1]` the user's hash; `ARGV[1]` the version the writer read (empty: it read no
/// projection); `ARGV[2]` the state JSON; `ARGV[3]` the epoch a new projection starts at;
/// `ARGV[4]` `1` to revoke (move the epoch by one and purge every token), else `0`.
/// Writes iff the stored version (`_v`, 0 when a projection predates versions) is the one
/// read, then moves the version by one. Returns `{0}` when the version moved, otherwise
/// `{1, epoch, version, {purged token fields}}` (epoch and version as strings). The overflow
/// check comes before any write because a failing script does not roll back what it wrote.
pub(super) static WRITE_PROJECTION: LazyLock<DirectoryScript> = LazyLock::new(|| {
    DirectoryScript::new(
        r"
local e = redis.call('HGET', KEYS[1], '_e')
local v = redis.call('HGET', KEYS[1], '_v')
if e then
  if not v then v = '0' end
  if v ~= ARGV[1] then return {0} end
else
  if ARGV[1] ~= '' then return {0} end
  e = ARGV[3]
  v = '0'
end
if ARGV[4] == '1' and e == '9223372036854775807' then
  return redis.error_reply('ERR epoch overflow')
end
redis.call('HSET', KEYS[1], '_s', ARGV[2], '_e', e, '_v', v)
redis.call('HINCRBY', KEYS[1], '_v', 1)
local version = redis.call('HGET', KEYS[1], '_v')
local purged = {}
if ARGV[4] == '1' then
  redis.call('HINCRBY', KEYS[1], '_e', 1)
  e = redis.call('HGET', KEYS[1], '_e')
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 2) == 't:' then
      redis.call('HDEL', KEYS[1], f)
      purged[#purged + 1] = string.sub(f, 3)
    end
  end
end
return {1, e, version, purged}
"
        .to_string(),
    )
});

/// `KEYS[1]` the user's hash; `ARGV[1]` the token field; `ARGV[2]` the sealed token it must
/// still hold. Deletes the field iff it does; returns 1 when deleted.
pub(super) static DISCARD_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
",
    )
});
