//! The in-process token vault and event bus of the embedded default (one replica, no Redis).
//!
//! `MemoryVault` is also the reference implementation of the vault's semantics: the Redis
//! adapter must behave exactly like it, and one conformance suite
//! (tests/it/vault_conformance.rs) runs against both. The rules, in one place:
//! - an org id must not contain `/`, and neither id may be empty or contain `{` or `}`
//!   (they would make the Redis key ambiguous or split it across Cluster slots): `Internal`;
//! - epochs are kept within `0..=i64::MAX`, the range Redis integers can hold: `Internal`;
//! - `store_token` stores iff a projection exists and its epoch equals the given one;
//! - `write_projection` writes iff the stored version is the one the writer read (`None`: no
//!   projection stored), and then moves the version by one (a new projection starts at
//!   version 1 and at the given epoch). A revoking write also moves the epoch by one and
//!   purges every token of the user, in the same step. Nothing else ever changes the epoch;
//! - `discard_token` deletes a token field iff it still holds exactly the given bytes.
//!
//! Every operation holds the lock for a few map operations and never across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::domain::ids::{OrgId, UserId};
use crate::domain::rate::{self, RateLimit};
use crate::domain::vault::{
    BusEvent, CasOutcome, EventBus, Projection, ProjectionWrite, Vault, VaultError, VaultRead,
    Written,
};

/// The largest epoch a vault accepts (Redis keeps epochs as signed 64-bit integers).
pub(crate) const MAX_EPOCH: u64 = i64::MAX as u64;

/// Rejects ids that would make a vault key ambiguous or spread a user over Cluster slots.
pub(crate) fn check_ids(org: &OrgId, user: &UserId) -> Result<(), VaultError> {
    let (o, u) = (org.as_str(), user.as_str());
    if o.is_empty() || u.is_empty() {
        return Err(VaultError::Internal(
            "vault key: empty org or user id".into(),
        ));
    }
    if o.contains(['{', '}', '/']) || u.contains(['{', '}']) {
        return Err(VaultError::Internal(
            "vault key: org or user id contains a reserved character ({, } or / in an org)".into(),
        ));
    }
    Ok(())
}

/// Rejects an epoch outside the range every vault adapter can store exactly.
pub(crate) fn check_epoch(epoch: u64) -> Result<(), VaultError> {
    if epoch > MAX_EPOCH {
        return Err(VaultError::Internal(format!(
            "epoch {epoch} exceeds the vault's maximum {MAX_EPOCH}"
        )));
    }
    Ok(())
}

#[derive(Default)]
struct UserEntry {
    projection: Option<Projection>,
    tokens: BTreeMap<String, Vec<u8>>,
}

type Orgs = HashMap<String, HashMap<String, UserEntry>>;
/// Ephemeral values by key, with when each expires.
type EphemeralMap = HashMap<String, (std::time::Instant, Vec<u8>)>;

/// The embedded default's vault: sealed tokens and projections in process memory.
#[derive(Default)]
pub struct MemoryVault {
    orgs: RwLock<Orgs>,
    ephemeral: std::sync::Mutex<EphemeralMap>,
}

impl std::fmt::Debug for MemoryVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: even sealed tokens stay out of logs.
        let guard = self.orgs.read().unwrap_or_else(PoisonError::into_inner);
        let users: usize = guard.values().map(HashMap::len).sum();
        f.debug_struct("MemoryVault")
            .field("orgs", &guard.len())
            .field("users", &users)
            .finish()
    }
}

impl MemoryVault {
    /// An empty vault.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while the lock is held cannot leave an entry half-updated (each operation
    // finishes its map updates before anything that could panic), so a poisoned lock is
    // safe to keep using.
    fn read_guard(&self) -> std::sync::RwLockReadGuard<'_, Orgs> {
        self.orgs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_guard(&self) -> std::sync::RwLockWriteGuard<'_, Orgs> {
        self.orgs.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn entry_mut<'a>(orgs: &'a mut Orgs, org: &OrgId, user: &UserId) -> &'a mut UserEntry {
    orgs.entry(org.as_str().to_owned())
        .or_default()
        .entry(user.as_str().to_owned())
        .or_default()
}

#[async_trait]
impl Vault for MemoryVault {
    async fn ping(&self) -> Result<(), VaultError> {
        Ok(())
    }

    async fn read(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
    ) -> Result<VaultRead, VaultError> {
        check_ids(org, user)?;
        let guard = self.read_guard();
        let Some(entry) = guard
            .get(org.as_str())
            .and_then(|users| users.get(user.as_str()))
        else {
            return Ok(VaultRead::default());
        };
        Ok(VaultRead {
            projection: entry.projection.clone(),
            sealed: entry.tokens.get(connector).cloned(),
        })
    }

    async fn write_projection(
        &self,
        org: &OrgId,
        user: &UserId,
        w: ProjectionWrite<'_>,
    ) -> Result<Written, VaultError> {
        check_ids(org, user)?;
        check_epoch(w.projection.epoch)?;
        let mut guard = self.write_guard();
        let entry = entry_mut(&mut guard, org, user);
        let (epoch, version) = match (&entry.projection, w.expected) {
            (Some(stored), Some(read)) if stored.version == read => (stored.epoch, read),
            (None, None) => (w.projection.epoch, 0),
            _ => return Ok(Written::Moved),
        };
        let epoch = if w.revoke {
            epoch
                .checked_add(1)
                .filter(|e| *e <= MAX_EPOCH)
                .ok_or_else(|| VaultError::Internal("epoch overflow".into()))?
        } else {
            epoch
        };
        let purged = if w.revoke {
            std::mem::take(&mut entry.tokens).into_keys().collect()
        } else {
            Vec::new()
        };
        let version = version + 1;
        entry.projection = Some(Projection {
            epoch,
            version,
            ..w.projection.clone()
        });
        Ok(Written::Stored {
            epoch,
            version,
            purged,
        })
    }

    async fn store_token(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        epoch: u64,
        sealed: &[u8],
    ) -> Result<CasOutcome, VaultError> {
        check_ids(org, user)?;
        let mut guard = self.write_guard();
        let Some(entry) = guard
            .get_mut(org.as_str())
            .and_then(|users| users.get_mut(user.as_str()))
        else {
            return Ok(CasOutcome::EpochMoved);
        };
        match &entry.projection {
            Some(p) if p.epoch == epoch => {
                entry.tokens.insert(connector.to_owned(), sealed.to_vec());
                Ok(CasOutcome::Stored)
            }
            _ => Ok(CasOutcome::EpochMoved),
        }
    }

    async fn discard_token(
        &self,
        org: &OrgId,
        user: &UserId,
        field: &str,
        sealed: &[u8],
    ) -> Result<bool, VaultError> {
        check_ids(org, user)?;
        let mut guard = self.write_guard();
        let Some(entry) = guard
            .get_mut(org.as_str())
            .and_then(|users| users.get_mut(user.as_str()))
        else {
            return Ok(false);
        };
        if entry.tokens.get(field).map(Vec::as_slice) != Some(sealed) {
            return Ok(false);
        }
        entry.tokens.remove(field);
        Ok(true)
    }

    async fn token_connectors(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Vec<String>, VaultError> {
        check_ids(org, user)?;
        let guard = self.read_guard();
        Ok(guard
            .get(org.as_str())
            .and_then(|users| users.get(user.as_str()))
            .map(|e| e.tokens.keys().cloned().collect())
            .unwrap_or_default())
    }
}

/// How many events a slow in-process subscriber may fall behind before it sees `Lagged`.
const BUS_CAPACITY: usize = 1024;

/// The embedded default's event bus: a broadcast channel inside the one process.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    tx: broadcast::Sender<BusEvent>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A bus with no subscribers yet.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        Self { tx }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, event: &BusEvent) -> Result<(), VaultError> {
        // An error only means nobody is subscribed right now, which is not a failure.
        let _ = self.tx.send(event.clone());
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.tx.subscribe()
    }
}

impl MemoryVault {
    /// The ephemeral map with expired entries dropped, and now.
    fn live(&self) -> (std::sync::MutexGuard<'_, EphemeralMap>, std::time::Instant) {
        let mut map = self
            .ephemeral
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        map.retain(|_, (until, _)| *until > now);
        (map, now)
    }

    /// Inserts `value` under `key` for `ttl` unless a live entry is there.
    fn insert_new(&self, key: &str, value: &[u8], ttl: std::time::Duration) -> bool {
        let (mut map, now) = self.live();
        if map.contains_key(key) {
            return false;
        }
        map.insert(key.to_string(), (now + ttl, value.to_vec()));
        true
    }
}

/// Sign-in state, sessions, replay caches and locks in process memory; expired entries are
/// dropped whenever the map is touched.
#[async_trait]
impl crate::domain::vault::Ephemeral for MemoryVault {
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: std::time::Duration,
    ) -> Result<(), VaultError> {
        let (mut map, now) = self.live();
        map.insert(key.to_string(), (now + ttl, value.to_vec()));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let (map, _) = self.live();
        Ok(map.get(key).map(|(_, v)| v.clone()))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let (mut map, _) = self.live();
        Ok(map.remove(key).map(|(_, v)| v))
    }

    async fn remove(&self, key: &str) -> Result<(), VaultError> {
        self.live().0.remove(key);
        Ok(())
    }

    async fn claim(&self, key: &str, ttl: std::time::Duration) -> Result<bool, VaultError> {
        Ok(self.insert_new(key, &[], ttl))
    }

    async fn lock(
        &self,
        key: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, VaultError> {
        Ok(self.insert_new(key, owner.as_bytes(), ttl))
    }

    async fn renew(
        &self,
        key: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, VaultError> {
        let (mut map, now) = self.live();
        match map.get_mut(key) {
            Some((until, v)) if v.as_slice() == owner.as_bytes() => {
                *until = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), VaultError> {
        let (mut map, _) = self.live();
        if map
            .get(key)
            .is_some_and(|(_, v)| v.as_slice() == owner.as_bytes())
        {
            map.remove(key);
        }
        Ok(())
    }

    async fn reserve_rate(
        &self,
        key: &str,
        limit: &RateLimit,
    ) -> Result<Option<std::time::Duration>, VaultError> {
        let (mut map, now) = self.live();
        let now_us = unix_micros();
        let tat = map.get(key).map_or(0, |(_, v)| be_u64(v));
        Ok(rate::reserve(tat, now_us, limit).map(|(new_tat, wait)| {
            let ttl = limit.idle_ttl(new_tat, now_us);
            map.insert(key.to_string(), (now + ttl, new_tat.to_be_bytes().to_vec()));
            wait
        }))
    }

    async fn throttle_rate(
        &self,
        key: &str,
        stop: Option<std::time::Duration>,
        limit: &RateLimit,
    ) -> Result<(), VaultError> {
        let (mut map, now) = self.live();
        let now_us = unix_micros();
        let tat = map.get(key).map_or(0, |(_, v)| be_u64(v));
        let new_tat = rate::throttle(tat, now_us, stop, limit);
        let ttl = limit.idle_ttl(new_tat, now_us);
        map.insert(key.to_string(), (now + ttl, new_tat.to_be_bytes().to_vec()));
        Ok(())
    }

    async fn count(&self, key: &str, ttl: std::time::Duration) -> Result<u64, VaultError> {
        let (mut map, now) = self.live();
        let (_, value) = map
            .entry(key.to_string())
            .or_insert_with(|| (now + ttl, 0u64.to_be_bytes().to_vec()));
        let n = be_u64(value) + 1;
        *value = n.to_be_bytes().to_vec();
        Ok(n)
    }
}

/// Microseconds since the Unix epoch (the rate budget's clock; 0 before 1970).
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A stored big-endian `u64` (0 when the value is not one).
fn be_u64(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map_or(0, u64::from_be_bytes)
}
