//! Per-user upstream grants and the durable outbox of upstream revocations: both in the system
//! of record, because neither can be rebuilt.
//!
//! - A **grant** is what a consent (`authorization_code`) or a token exchange left that cannot
//!   be re-minted: the refresh token, sealed. Every write is a compare-and-set on `version`,
//!   which is also the fencing token of refreshes: a holder whose lock lapsed and who read an
//!   older version can never overwrite a newer refresh token.
//! - A **revocation** row is one token to revoke at an upstream. Offboarding removes the grant
//!   and enqueues its revocation in one transaction, so nothing is lost across restarts; the
//!   worker moves each row to `revoked`, `unsupported` or `failed` and the row is the receipt.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::clock::Millis;
use super::{OrgId, StoreError, UserId};

/// The grant key of a person's refresh token at the org's own IdP (OIDC sign-in with
/// `offline_access`), kept for connectors whose ID-JAGs come from the IdP
/// (`id_jag_source = "idp_exchange"`). Never a connector id (those are `a-z 0-9 - _`).
pub const IDP_GRANT: &str = "~idp";

/// Keeps the refresh token an OIDC sign-in returned, as the person's [`IDP_GRANT`].
#[async_trait]
pub trait IdpGrants: Send + Sync {
    /// Stores `refresh_token` (granted `scopes`) as the user's IdP grant, replacing any
    /// earlier one.
    async fn keep_idp_grant(
        &self,
        org: &OrgId,
        user: &UserId,
        refresh_token: &secrecy::SecretString,
        scopes: &[String],
    ) -> Result<(), StoreError>;
}

/// Whether a stored grant still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Usable.
    Active,
    /// The upstream refused it for good (`invalid_grant` on a fresh read): the person must
    /// consent again.
    NeedsReconsent,
}

impl GrantStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::NeedsReconsent => "needs_reconsent",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(GrantStatus::Active),
            "needs_reconsent" => Some(GrantStatus::NeedsReconsent),
            _ => None,
        }
    }
}

/// One user's grant at one connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    /// The sealed refresh token record.
    pub sealed: Vec<u8>,
    /// Moved by every write that changes the grant (not by a re-seal of the same token).
    pub version: i64,
    /// Usable or not.
    pub status: GrantStatus,
    /// Scopes the upstream granted.
    pub scopes: Vec<String>,
    /// Last write.
    pub updated_ms: Millis,
}

/// RFC 7009 `token_type_hint` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A refresh token (revoking it ends the grant at RFC 7009 servers).
    RefreshToken,
    /// An access token.
    AccessToken,
}

impl TokenKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::RefreshToken => "refresh_token",
            TokenKind::AccessToken => "access_token",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "refresh_token" => Some(TokenKind::RefreshToken),
            "access_token" => Some(TokenKind::AccessToken),
            _ => None,
        }
    }
}

/// A token to revoke upstream, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationItem {
    /// The connector whose upstream issued it.
    pub connector: String,
    /// Which kind.
    pub kind: TokenKind,
    /// The token, sealed (see `service::upstream` for the binding).
    pub sealed: Vec<u8>,
}

/// Where an upstream revocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevocationStatus {
    /// Not delivered yet (retries continue).
    Pending,
    /// The upstream confirmed.
    Revoked,
    /// This upstream offers no way to revoke tokens.
    Unsupported,
    /// Given up after the last attempt.
    Failed,
}

impl RevocationStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationStatus::Pending => "pending",
            RevocationStatus::Revoked => "revoked",
            RevocationStatus::Unsupported => "unsupported",
            RevocationStatus::Failed => "failed",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(RevocationStatus::Pending),
            "revoked" => Some(RevocationStatus::Revoked),
            "unsupported" => Some(RevocationStatus::Unsupported),
            "failed" => Some(RevocationStatus::Failed),
            _ => None,
        }
    }
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRow {
    /// Row id.
    pub id: String,
    /// Tenant.
    pub org: OrgId,
    /// The user whose token it is.
    pub user: UserId,
    /// The connector.
    pub connector: String,
    /// Which kind of token.
    pub kind: TokenKind,
    /// The token, sealed; emptied once the row is final.
    pub sealed: Vec<u8>,
    /// The user's epoch after the revocation that enqueued it.
    pub epoch: u64,
    /// Where it stands.
    pub status: RevocationStatus,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When the next attempt is due (or the current claim lapses).
    pub next_at_ms: Millis,
    /// When enqueued.
    pub created_ms: Millis,
    /// Last change.
    pub updated_ms: Millis,
}

/// A grant write.
#[derive(Debug, Clone, Copy)]
pub struct GrantWrite<'a> {
    /// The sealed refresh token record.
    pub sealed: &'a [u8],
    /// Scopes granted.
    pub scopes: &'a [String],
    /// The version read (`None`: none existed). The write happens only if that still holds.
    pub expected: Option<i64>,
    /// Now.
    pub now_ms: Millis,
}

/// Which grant: org, user and connector (the order a walk over every grant follows).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrantKey {
    /// Tenant.
    pub org: OrgId,
    /// The person.
    pub user: UserId,
    /// The connector.
    pub connector: String,
}

/// Grants and the revocation outbox (the SQL store implements it).
#[async_trait]
pub trait Consents: Send + Sync {
    /// The user's grant at a connector.
    async fn grant(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
    ) -> Result<Option<StoredGrant>, StoreError>;
    /// Every grant of the user, by connector.
    async fn grants_of(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Vec<(String, StoredGrant)>, StoreError>;
    /// Stores an active grant iff the stored version is still `w.expected`; the new version, or
    /// `None` when it moved (nothing written).
    async fn put_grant(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        w: GrantWrite<'_>,
    ) -> Result<Option<i64>, StoreError>;
    /// Marks the grant `needs_reconsent` iff its version is still `expected`.
    async fn mark_needs_reconsent(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        expected: i64,
        now_ms: Millis,
    ) -> Result<bool, StoreError>;
    /// In one transaction: removes the user's grants (all, or those of `connectors`) and
    /// enqueues the revocation of each, plus `extra`. Returns the rows enqueued.
    async fn revoke_upstream(
        &self,
        org: &OrgId,
        user: &UserId,
        connectors: Option<&[String]>,
        extra: &[RevocationItem],
        epoch: u64,
        now_ms: Millis,
    ) -> Result<Vec<RevocationRow>, StoreError>;
    /// Claims up to `limit` pending rows due by `now_ms` for `lease_ms` (a claimed row is not
    /// due again until then, so replicas do not deliver the same row at once).
    async fn claim_revocations(
        &self,
        now_ms: Millis,
        lease_ms: Millis,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError>;
    /// Records an attempt's outcome; a final status empties the sealed token.
    async fn record_revocation(
        &self,
        id: &str,
        status: RevocationStatus,
        attempts: u32,
        last_error: Option<&str>,
        next_at_ms: Millis,
        now_ms: Millis,
    ) -> Result<(), StoreError>;
    /// Sets when the refresher should renew the access token minted from the grant (`None`:
    /// never, until a vend sets it again).
    async fn set_grant_due(
        &self,
        org: &OrgId,
        user: &UserId,
        connector: &str,
        due_ms: Option<Millis>,
    ) -> Result<(), StoreError>;
    /// Up to `limit` active grants due by `now_ms`, soonest first: `(org, user, connector)`.
    async fn due_grants(
        &self,
        now_ms: Millis,
        limit: u32,
    ) -> Result<Vec<(OrgId, UserId, String)>, StoreError>;
    /// How many upstream revocations are still pending (the outbox's depth, all orgs).
    async fn pending_revocations(&self) -> Result<i64, StoreError>;
    /// The user's upstream revocations (the receipt), oldest first.
    async fn revocations_of(
        &self,
        org: &OrgId,
        user: &UserId,
    ) -> Result<Vec<RevocationRow>, StoreError>;
    /// Up to `limit` grants of every org, in [`GrantKey`] order, after `after` (a walk over
    /// every grant: vault key rotation).
    async fn grants_after(
        &self,
        after: Option<&GrantKey>,
        limit: u32,
    ) -> Result<Vec<(GrantKey, StoredGrant)>, StoreError>;
    /// Replaces a grant's sealed refresh token with the same token sealed again (vault key
    /// rotation) iff the grant is still at `version` with the `read` sealed bytes. Nothing
    /// else moves, the version included: the token is the same, so a refresh that read the
    /// grant before still lands its rotated token over it. `false` when the grant changed or
    /// is gone (nothing written).
    async fn reseal_grant(
        &self,
        key: &GrantKey,
        version: i64,
        read: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError>;
    /// Up to `limit` pending revocation rows of every org, by id, after `after_id`.
    async fn pending_revocations_after(
        &self,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError>;
    /// Replaces a pending row's sealed token with the same token sealed again (vault key
    /// rotation) iff the row is still pending with the `read` sealed bytes; `false` otherwise
    /// (it became final meanwhile: nothing written).
    async fn reseal_revocation(
        &self,
        id: &str,
        read: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError>;
}
