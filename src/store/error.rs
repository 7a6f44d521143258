//! Translation of driver errors into domain errors at the adapter edge: unreachable database →
//! `Unavailable` (503), unique violations → `Conflict` naming the attribute (SCIM 409).

use crate::domain::StoreError;

/// Maps a sqlx error to the domain's `StoreError`.
pub fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
                let attr = if text.contains("user_name") {
                    "userName"
                } else if text.contains("secret_hash") {
                    "secret"
                } else {
                    "id"
                };
                StoreError::Conflict(attr.into())
            } else if db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
            {
                StoreError::Unavailable(db.message().to_string())
            } else {
                StoreError::Internal(db.message().to_string())
            }
        }
        _ => StoreError::Internal(e.to_string()),
    }
}
