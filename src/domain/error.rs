//! Errors that storage ports report, already translated from driver-specific errors.

/// What can go wrong talking to the system of record.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The store cannot be reached or timed out; the caller answers 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint was violated; names the attribute.
    #[error("conflict on {0}")]
    Conflict(String),
    /// A compare-and-set on a record version lost a race.
    #[error("version mismatch")]
    VersionMismatch,
    /// The record does not exist (in this org).
    #[error("not found")]
    NotFound,
    /// Any other failure; details are logged, not returned.
    #[error("store error: {0}")]
    Internal(String),
}
