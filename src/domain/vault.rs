//! The token vault port: where sealed upstream tokens and each user's small authorization
//! projection live (Redis in production, in-process for the embedded default).
//!
//! Invariants the adapters must keep:
//! - A vend reads the projection and the sealed token in **one round trip**.
//! - Every token write is a compare-and-set on the user's **epoch**; revocation bumps the
//!   epoch and purges tokens atomically, so a mint that was in flight when the user was
//!   deprovisioned can never store its token ("no resurrection").
//! - Every projection write is a compare-and-set on the projection's **version**, which every
//!   write moves: a writer whose read is no longer current changes nothing and must re-read
//!   the system of record. A tie never replaces; the epoch never goes down.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::ids::{OrgId, UserId};

/// What the vault knows about a user: enough to decide a vend without the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projection {
    /// The user is active in the directory.
    pub active: bool,
    /// An admin lock holds: no vend until it is lifted, whatever the directory says.
    pub locked: bool,
    /// Bumped by every revocation; token writes must present the current value, and every
    /// token carries the epoch it was issued under.
    pub epoch: u64,
    /// Moved by every projection write: the compare-and-set token of projection writers.
    pub version: u64,
    /// Entitled connectors and their scopes.
    pub connectors: BTreeMap<String, Vec<String>>,
}

impl Projection {
    /// The same access (active, locked, connectors and scopes), whatever the counters say.
    pub fn same_access(&self, other: &Projection) -> bool {
        self.active == other.active
            && self.locked == other.locked
            && self.connectors == other.connectors
    }
}

/// A projection write: what the writer read, and what it derived from the system of record.
#[derive(Debug, Clone, Copy)]
pub struct ProjectionWrite<'a> {
    /// The version the writer read (`None`: it read no projection). The write happens only
    /// if that is still what is stored.
    pub expected: Option<u64>,
    /// The new state (its `epoch` is used only when none is stored: where a new projection
    /// starts; its `version` is ignored).
    pub projection: &'a Projection,
    /// Revoke: move the epoch by one and purge every token of the user, in the same step.
    pub revoke: bool,
}

/// What a projection write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Stored: the epoch and version now in force, and the token fields purged.
    Stored {
        /// The epoch in force.
        epoch: u64,
        /// The version in force.
        version: u64,
        /// Token fields purged by a revocation.
        purged: Vec<String>,
    },
    /// The stored version is not the one the writer read: nothing was written.
    Moved,
}

/// The result of a vend read: the projection (if cached) and the sealed token (if any).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VaultRead {
    /// The user's projection, absent after a flush or before first use.
    pub projection: Option<Projection>,
    /// The sealed token record for the connector.
    pub sealed: Option<Vec<u8>>,
}

/// Vault failures. `Unavailable` means the store did not answer in time: callers fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The vault is unreachable or timed out.
    #[error("vault unavailable: {0}")]
    Unavailable(String),
    /// Any other failure.
    #[error("vault error: {0}")]
    Internal(String),
}

/// Why a compare-and-set write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The write happened.
    Stored,
    /// The epoch moved (the user was revoked meanwhile) or no projection exists: not stored.
    EpochMoved,
}

/// Sealed token storage plus per-user projections.
#[async_trait]
pub trait Vault: Send + Sync {
    /// Answers when the vault is reachable (readiness).
    async fn ping(&self) -> Result<(), VaultError>;
    /// One round trip: the user's projection and the sealed token for `connector`.
    async fn read(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
    ) -> Result<VaultRead, VaultError>;
    /// Writes a projection iff the stored version is still the one the writer read (see
    /// [`ProjectionWrite`]), revoking in the same atomic step when asked.
    async fn write_projection(
        &self,
        org: &OrgId,
        user: &UserId,
        w: ProjectionWrite<'_>,
    ) -> Result<Written, VaultError>;
    /// Stores a sealed token iff the user's current epoch equals `epoch`.
    async fn store_token(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        epoch: u64,
        sealed: &[u8],
    ) -> Result<CasOutcome, VaultError>;
    /// Deletes one token field iff it still holds exactly `sealed` (one token's revocation:
    /// a newer token stored meanwhile stays). `true` when it was deleted.
    async fn discard_token(
        &self,
        org: &OrgId,
        user: &UserId,
        field: &str,
        sealed: &[u8],
    ) -> Result<bool, VaultError>;
    /// Every connector the user has a stored token for (admin views, re-sealing).
    async fn token_connectors(&self, org: &OrgId, user: &UserId)
    -> Result<Vec<String>, VaultError>;
}

/// A cross-replica notification (revocations, deactivations, entitlement changes) that every
/// replica relays to its gateways' event streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusEvent {
    /// `token.revoked`, `user.deactivated`, `user.locked` or `entitlements.changed`.
    pub kind: String,
    /// The tenant.
    pub org: String,
    /// The user concerned.
    pub user_id: Option<String>,
    /// The connectors concerned (empty = all).
    pub connectors: Vec<String>,
    /// The user's epoch after the change: a gateway drops every token of the user issued
    /// under a lower one, including responses that arrive later.
    #[serde(default)]
    pub epoch: u64,
    /// When it happened (Unix milliseconds).
    pub at_ms: i64,
    /// The one token ended (RFC 7009), when the event is about one token only: a gateway drops
    /// its cached copy of that token; the user's epoch did not move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Publish/subscribe across replicas (Redis pub/sub, or in-process for the embedded default).
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes to every replica, this one included.
    async fn publish(&self, event: &BusEvent) -> Result<(), VaultError>;
    /// A receiver of every event published by any replica from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BusEvent>;
}

/// Short-lived values shared by every replica: sign-in state (single use), sessions, replay
/// caches. Kept beside the vault (Redis, or in process for the embedded default), never in the
/// system of record. Keys are chosen by the caller and should not reveal secrets (hash them).
#[async_trait]
pub trait Ephemeral: Send + Sync {
    /// Stores `value` under `key` for `ttl`, replacing what was there.
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: std::time::Duration,
    ) -> Result<(), VaultError>;
    /// The value, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError>;
    /// Returns and deletes the value in one step: at most one caller ever gets it.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError>;
    /// Deletes the value.
    async fn remove(&self, key: &str) -> Result<(), VaultError>;
    /// Creates `key` for `ttl` if it does not exist; `false` when it already did (replay).
    async fn claim(&self, key: &str, ttl: std::time::Duration) -> Result<bool, VaultError>;
    /// Adds one to the counter at `key` (created at 0 with `ttl`, which later additions do
    /// not extend) and returns its new value.
    async fn count(&self, key: &str, ttl: std::time::Duration) -> Result<u64, VaultError>;
    /// Reserves one call against the rate budget at `key`, shared by every replica using
    /// this store ([`super::rate::reserve`], on the store's clock): the wait before sending,
    /// or `None` when it would exceed the limit's `max_wait` (nothing is reserved then).
    async fn reserve_rate(
        &self,
        key: &str,
        limit: &super::rate::RateLimit,
    ) -> Result<Option<std::time::Duration>, VaultError>;
    /// Stops the rate budget at `key` for `stop`, or empties it ([`super::rate::throttle`]).
    async fn throttle_rate(
        &self,
        key: &str,
        stop: Option<std::time::Duration>,
        limit: &super::rate::RateLimit,
    ) -> Result<(), VaultError>;
    /// Takes the lock `key` for `owner` (a random token) for `ttl` if nobody holds it.
    async fn lock(
        &self,
        key: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, VaultError>;
    /// Extends the lock to `ttl` from now iff `owner` still holds it (`false`: it lapsed and
    /// may be someone else's: the holder must stop writing).
    async fn renew(
        &self,
        key: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, VaultError>;
    /// Releases the lock iff `owner` still holds it.
    async fn unlock(&self, key: &str, owner: &str) -> Result<(), VaultError>;
}
