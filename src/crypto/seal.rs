//! Sealing of token records at rest (invariant 6): AES-256-GCM under a key ring.
//!
//! Every ciphertext names the key that sealed it and is bound, through the AEAD's additional
//! authenticated data, to its owner (org, user, connector) and to the record version. A sealed
//! record copied under another user, connector or version therefore fails to open, and old keys
//! keep opening what they sealed while only the active key seals, so rotation can re-seal online.
//!
//! Wire format (version 1):
//!
//! ```text
//! 0x01 | key-id length (u8, 1..=64) | key id (ASCII) | nonce (12 random bytes) | ciphertext || tag (16)
//! ```
//!
//! The authenticated data is the format header (version byte, key-id length, key id) followed by
//! the owner encoding: org, user and connector each as a u32 big-endian byte length and the bytes,
//! then the record version as u64 big-endian. Lengths are prefixed, so `("ab", "c")` and
//! `("a", "bc")` never authenticate as each other.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine;
use base64::engine::general_purpose::{
    STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT,
};
use secrecy::SecretString;
use zeroize::Zeroizing;

/// Format version byte that starts every sealed record.
const FORMAT_V1: u8 = 0x01;
/// Length of the random AES-GCM nonce (96 bits).
const NONCE_LEN: usize = 12;
/// Length of the AES-GCM authentication tag.
const TAG_LEN: usize = 16;
/// Longest accepted key id.
const MAX_KEY_ID_LEN: usize = 64;

/// Why a key could not be loaded or a record could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The record was sealed under a key id this ring does not hold (e.g. a retired key).
    #[error("sealed record uses unknown vault key id `{0}`")]
    UnknownKey(String),
    /// The bytes are not a sealed record of a known format (truncated, wrong version, bad header).
    #[error("malformed sealed record")]
    Malformed,
    /// Authentication failed: wrong key, wrong owner or record version, or tampered bytes.
    #[error("sealed record failed authentication")]
    Decrypt,
    /// A vault key or key ring is unusable; the message names the problem, never the key bytes.
    #[error("invalid vault key: {0}")]
    InvalidKey(String),
}

/// A 256-bit vault key with an id; zeroized on drop, never printed.
pub struct VaultKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl VaultKey {
    /// Wraps raw key bytes (e.g. from a KMS or a key file) after checking the id and rejecting
    /// an all-zero key, which is what an uninitialised secret usually looks like.
    pub fn new(id: &str, key: [u8; 32]) -> Result<Self, SealError> {
        Self::from_zeroizing(id, Zeroizing::new(key))
    }

    /// Shared by the constructors, so key bytes are moved only inside `Zeroizing`.
    fn from_zeroizing(id: &str, key: Zeroizing<[u8; 32]>) -> Result<Self, SealError> {
        validate_key_id(id)?;
        if key.iter().all(|b| *b == 0) {
            return Err(SealError::InvalidKey(format!(
                "key `{id}` is all zero bytes"
            )));
        }
        Ok(Self {
            id: id.to_owned(),
            key,
        })
    }

    /// Loads a key from its base64 text form (as printed by `auth-broker keys generate` or
    /// `openssl rand -base64 32`); standard or URL-safe alphabet, padding optional, surrounding
    /// whitespace ignored. Anything but exactly 32 bytes is rejected.
    pub fn from_base64(id: &str, b64: &str) -> Result<Self, SealError> {
        let text = b64.trim();
        // Decode into a fixed, zeroized buffer larger than a key so that over-long input is
        // reported as a wrong length instead of being silently truncated.
        let mut buf = Zeroizing::new([0u8; 48]);
        let len = STANDARD_PAD_INDIFFERENT
            .decode_slice(text, &mut buf[..])
            .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode_slice(text, &mut buf[..]))
            .map_err(|_| {
                SealError::InvalidKey(format!("key `{id}` is not base64 of exactly 32 bytes"))
            })?;
        if len != 32 {
            return Err(SealError::InvalidKey(format!(
                "key `{id}` decodes to {len} bytes, expected 32"
            )));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&buf[..32]);
        Self::from_zeroizing(id, key)
    }

    /// Creates a fresh random key, for the embedded default and for `keys generate`.
    ///
    /// The id is checked when the key joins a [`KeyRing`], which is the only place a key is used.
    pub fn generate(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            key: Zeroizing::new(rand::random::<[u8; 32]>()),
        }
    }

    /// The key id written into every record this key seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key in standard padded base64, the form [`VaultKey::from_base64`] reads; exists so the
    /// embedded default can persist its generated key and `keys generate` can print one.
    pub fn export_base64(&self) -> SecretString {
        SecretString::from(STANDARD.encode(&self.key[..]))
    }

    /// A cipher for this key, built per use (the AES key schedule costs ~100 ns) so that no
    /// long-lived copy of the expanded key exists besides the `Zeroizing` bytes. aes-gcm's
    /// `zeroize` feature is not enabled, so the short-lived schedule is not wiped on drop.
    fn cipher(&self) -> Aes256Gcm {
        let key: &Key<Aes256Gcm> = (&*self.key).into();
        Aes256Gcm::new(key)
    }
}

/// Several keys, one active: the active key seals, every key opens.
pub struct KeyRing {
    keys: Vec<VaultKey>,
    active: usize,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active_id())
            .field(
                "ids",
                &self.keys.iter().map(VaultKey::id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Additional authenticated data binding a ciphertext to its owner and record version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    /// The org that owns the record.
    pub org: &'a str,
    /// The user the token belongs to.
    pub user: &'a str,
    /// The connector (upstream) the token is for.
    pub connector: &'a str,
    /// The record version, so an older sealed value cannot be replayed as a newer one.
    pub record_version: u64,
}

impl Aad<'_> {
    /// Appends the unambiguous byte encoding of the owner and version to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        for field in [self.org, self.user, self.connector] {
            put_len(out, field.len());
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&self.record_version.to_be_bytes());
    }
}

/// The bytes AES-GCM authenticates: the record's format header, then the owner encoding.
fn authenticated_data(header: &[u8], aad: &Aad<'_>) -> Vec<u8> {
    // 3 length prefixes (4 bytes each) and the u64 version.
    let owner_len = 3 * 4 + 8 + aad.org.len() + aad.user.len() + aad.connector.len();
    let mut ad = Vec::with_capacity(header.len() + owner_len);
    ad.extend_from_slice(header);
    aad.encode_into(&mut ad);
    ad
}

/// Writes a length as u32 big-endian. A length that does not fit (4 GiB and over, never a real
/// id) is written as `0xFFFF_FFFF` followed by the u64 length, which keeps the encoding
/// prefix-free instead of panicking or truncating.
fn put_len(out: &mut Vec<u8>, len: usize) {
    match u32::try_from(len) {
        Ok(n) if n != u32::MAX => out.extend_from_slice(&n.to_be_bytes()),
        _ => {
            out.extend_from_slice(&u32::MAX.to_be_bytes());
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Checks a key id: 1..=64 characters from `[A-Za-z0-9_.-]`.
fn validate_key_id(id: &str) -> Result<(), SealError> {
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN {
        return Err(SealError::InvalidKey(format!(
            "key id must be 1..={MAX_KEY_ID_LEN} characters, got {}",
            id.len()
        )));
    }
    if !id.bytes().all(is_key_id_byte) {
        return Err(SealError::InvalidKey(format!(
            "key id `{}` may only contain A-Z a-z 0-9 _ . -",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// The characters a key id may contain.
fn is_key_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// The parts of a sealed record, borrowed from it.
struct Parsed<'s> {
    /// Version byte, key-id length and key id: authenticated along with the owner.
    header: &'s [u8],
    key_id: &'s str,
    nonce: &'s [u8; NONCE_LEN],
    ciphertext: &'s [u8],
    tag: &'s [u8; TAG_LEN],
}

/// Splits a sealed record into its parts; `None` for anything that is not well formed.
fn parse(sealed: &[u8]) -> Option<Parsed<'_>> {
    let (&version, rest) = sealed.split_first()?;
    if version != FORMAT_V1 {
        return None;
    }
    let (&id_len, rest) = rest.split_first()?;
    let id_len = usize::from(id_len);
    if id_len == 0 || id_len > MAX_KEY_ID_LEN {
        return None;
    }
    let (id_bytes, rest) = rest.split_at_checked(id_len)?;
    if !id_bytes.iter().copied().all(is_key_id_byte) {
        return None;
    }
    let key_id = std::str::from_utf8(id_bytes).ok()?;
    let (nonce, rest) = rest.split_first_chunk::<NONCE_LEN>()?;
    let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>()?;
    Some(Parsed {
        header: &sealed[..2 + id_len],
        key_id,
        nonce,
        ciphertext,
        tag,
    })
}

impl KeyRing {
    /// Builds the ring from every key that may still have sealed records; `active` names the key
    /// new records are sealed under. Ids must be valid and unique and `active` must be among them.
    pub fn new(active: &str, keys: Vec<VaultKey>) -> Result<Self, SealError> {
        for (i, key) in keys.iter().enumerate() {
            validate_key_id(&key.id)?;
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(SealError::InvalidKey(format!(
                    "duplicate key id `{}`",
                    key.id
                )));
            }
        }
        let active = keys.iter().position(|k| k.id == active).ok_or_else(|| {
            SealError::InvalidKey(format!(
                "active key `{}` is not among the configured keys",
                active.escape_debug()
            ))
        })?;
        Ok(Self { keys, active })
    }

    /// The id of the key that seals new records.
    pub fn active_id(&self) -> &str {
        &self.keys[self.active].id
    }

    /// Seals `plaintext` under the active key with a fresh random nonce, bound to `aad`.
    ///
    /// # Panics
    /// Only if `plaintext` exceeds AES-GCM's limit of 2^36 − 32 bytes (64 GiB); records sealed
    /// here are tokens of a few kilobytes.
    pub fn seal(&self, plaintext: &[u8], aad: &Aad<'_>) -> Vec<u8> {
        let key = &self.keys[self.active];
        let nonce: [u8; NONCE_LEN] = rand::random();
        let header_len = 2 + key.id.len();

        let mut out = Vec::with_capacity(header_len + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(FORMAT_V1);
        // Ring construction validated the id to at most 64 bytes, so it fits in the u8.
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);

        let ad = authenticated_data(&out[..header_len], aad);

        // The capacity above already covers the tag, so `out` never reallocates and no copy of
        // the plaintext is left behind in a freed buffer once it is encrypted in place.
        let body_start = out.len();
        out.extend_from_slice(plaintext);
        let tag = key
            .cipher()
            .encrypt_in_place_detached((&nonce).into(), &ad, &mut out[body_start..])
            // AES-GCM fails only for plaintexts over 2^36 - 32 bytes or AAD over 2^61 bytes; token
            // records and owner ids are orders of magnitude smaller (see `# Panics`).
            .expect("AES-GCM input within limits");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a record sealed under any key of the ring, checking it belongs to `aad`.
    /// The plaintext is zeroized when dropped.
    pub fn open(&self, sealed: &[u8], aad: &Aad<'_>) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let parsed = parse(sealed).ok_or(SealError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == parsed.key_id)
            .ok_or_else(|| SealError::UnknownKey(parsed.key_id.to_owned()))?;

        let ad = authenticated_data(parsed.header, aad);

        let mut plaintext = Zeroizing::new(parsed.ciphertext.to_vec());
        key.cipher()
            .decrypt_in_place_detached(
                parsed.nonce.into(),
                &ad,
                &mut plaintext[..],
                parsed.tag.into(),
            )
            .map_err(|_| SealError::Decrypt)?;
        Ok(plaintext)
    }

    /// The key id a ciphertext was sealed under (for rotation), without opening it.
    pub fn key_id_of(sealed: &[u8]) -> Option<&str> {
        parse(sealed).map(|p| p.key_id)
    }

    /// True when the ciphertext is not under the active key.
    pub fn needs_reseal(&self, sealed: &[u8]) -> bool {
        Self::key_id_of(sealed) != Some(self.active_id())
    }
}

#[cfg(test)]
mod tests;
