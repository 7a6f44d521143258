//! Token records opened recently, keyed by their ciphertext, so that a warm vend of an
//! unchanged sealed record skips AES-GCM, JSON decoding and building its response.
//!
//! The vault stays the authority: every vend still reads the sealed record from it, and the
//! cache is used only when that ciphertext is byte-for-byte the one opened before, for the
//! same org, user, field and epoch (what the AAD binds). A revoked or replaced record is never
//! served from here: its ciphertext is gone from the vault, or differs. Entries are few and
//! bounded; token values stay in zeroizing secrets.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::served::Served;
use crate::crypto::seal::{Aad, KeyRing, SealError};
use crate::service::access::field_connector;
use crate::service::tokens::{TokenRecord, open};

/// Most records kept; the cache is emptied when it is full (it refills on the next vends).
const CAPACITY: usize = 2048;
/// The GCM tag closes every ciphertext: unique per seal, a cheap key.
const TAG: usize = 16;

/// An opened record and what it was opened for.
pub struct Opened {
    sealed: Vec<u8>,
    org: String,
    user: String,
    field: String,
    epoch: u64,
    /// The record.
    pub record: TokenRecord,
    /// Its response and audit facts, shared with every vend that serves it.
    pub served: Arc<Served>,
}

/// The cache.
#[derive(Default)]
pub struct OpenCache {
    map: RwLock<HashMap<[u8; TAG], Arc<Opened>>>,
}

impl OpenCache {
    /// Opens `sealed` for `aad`, or returns the record opened from the same bytes before.
    pub fn open(
        &self,
        ring: &KeyRing,
        sealed: &[u8],
        aad: &Aad<'_>,
    ) -> Result<Arc<Opened>, SealError> {
        let key: Option<[u8; TAG]> = sealed
            .len()
            .checked_sub(TAG)
            .and_then(|at| sealed[at..].try_into().ok());
        if let Some(k) = key
            && let Ok(map) = self.map.read()
            && let Some(o) = map.get(&k)
            && o.sealed == sealed
            && o.epoch == aad.record_version
            && o.org == aad.org
            && o.user == aad.user
            && o.field == aad.connector
        {
            return Ok(o.clone());
        }
        let record = open(ring, sealed, aad)?;
        let opened = Arc::new(Opened {
            sealed: sealed.to_vec(),
            org: aad.org.to_string(),
            user: aad.user.to_string(),
            field: aad.connector.to_string(),
            epoch: aad.record_version,
            served: Arc::new(Served::new(
                &record,
                field_connector(aad.connector),
                aad.user,
            )),
            record,
        });
        if let Some(k) = key
            && let Ok(mut map) = self.map.write()
        {
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(k, opened.clone());
        }
        Ok(opened)
    }

    /// Records held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
