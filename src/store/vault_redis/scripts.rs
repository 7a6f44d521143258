//! The Lua scripts behind the vault's compare-and-set writes. Each runs atomically on the
//! node that owns the user's hash slot, so "check the epoch, then write" cannot interleave
//! with a revocation.
//!
//! Epochs live in the hash field `_e` as canonical decimal strings (what Rust's `u64`
//! formatting and Redis's `HINCRBY` produce). The scripts compare and return them as strings
//! and never turn them into Lua numbers: those are doubles, exact only up to 2^53, and cjson
//! would re-encode large ones as `1e+15`.

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

/// Compares two canonical non-negative decimal strings: a shorter one is smaller.
const GT: &str = r"
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
";

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

/// `KEYS[1]` the user's hash; `ARGV[1]` the projection's epoch; `ARGV[2]` its state JSON.
/// The projection with the higher epoch wins entirely (a tie replaces the stored one).
/// Returns the epoch in force, as a string.
pub(super) static PUT_PROJECTION: LazyLock<DirectoryScript> = LazyLock::new(|| {
    DirectoryScript::new(format!(
        r"{GT}
local cur = redis.call('HGET', KEYS[1], '_e')
if cur and gt(cur, ARGV[1]) then return cur end
redis.call('HSET', KEYS[1], '_s', ARGV[2], '_e', ARGV[1])
return ARGV[1]
"
    ))
});

/// `KEYS[1]` the user's hash; `ARGV[1]` the given projection's epoch; `ARGV[2]` its state
/// JSON; `ARGV[3]` `all` or `some`; `ARGV[4..]` the connectors to purge when `some`.
/// Sets the epoch to `max(stored, given) + 1`, writes the state, deletes the token fields.
/// Returns `{new epoch as a string, {deleted connector names}}`. The overflow check comes
/// before any write because a failing script does not roll back what it already wrote.
pub(super) static REVOKE: LazyLock<DirectoryScript> = LazyLock::new(|| {
    DirectoryScript::new(format!(
        r"{GT}
local cur = redis.call('HGET', KEYS[1], '_e')
local base = ARGV[1]
if cur and gt(cur, base) then base = cur end
if base == '9223372036854775807' then return redis.error_reply('ERR epoch overflow') end
redis.call('HSET', KEYS[1], '_e', base, '_s', ARGV[2])
redis.call('HINCRBY', KEYS[1], '_e', 1)
local epoch = redis.call('HGET', KEYS[1], '_e')
local deleted = {{}}
if ARGV[3] == 'all' then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 2) == 't:' then
      redis.call('HDEL', KEYS[1], f)
      deleted[#deleted + 1] = string.sub(f, 3)
    end
  end
else
  for i = 4, #ARGV do
    if redis.call('HDEL', KEYS[1], 't:' .. ARGV[i]) == 1 then
      deleted[#deleted + 1] = ARGV[i]
    end
  end
end
return {{epoch, deleted}}
"
    ))
});
