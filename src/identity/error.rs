//! Why a sign-in failed, with the stable code its audit record names; `http::error` maps each
//! failure to its HTTP status.

/// Why a sign-in failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignInError {
    /// The org has more sign-ins pending than `server.max_pending_logins` allows.
    #[error("too many sign-ins are pending for this org; retry later")]
    TooManyLogins,
    /// The org has no sign-in configured.
    #[error("this org has no sign-in configured")]
    UnknownOrg,
    /// Broken configuration.
    #[error("sign-in is misconfigured: {0}")]
    Config(String),
    /// The provider could not be reached or answered nonsense.
    #[error("the identity provider is unavailable: {0}")]
    Provider(String),
    /// The provider returned an error to the callback.
    #[error("the identity provider refused the sign-in: {0}")]
    IdpError(String),
    /// The code exchange failed.
    #[error("the code exchange failed: {0}")]
    TokenExchange(String),
    /// The ID token failed validation.
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    /// Signed with a key id the provider's key set does not have (re-fetch, then invalid).
    #[error("the ID token is signed with an unknown key")]
    UnknownKey,
    /// Unknown, expired, reused or foreign `state`.
    #[error("invalid sign-in state: {0}")]
    InvalidState(String),
    /// A SAML response failed validation.
    #[error("the SAML response is not valid: {0}")]
    InvalidAssertion(String),
    /// A SAML assertion was presented a second time.
    #[error("this assertion was already used")]
    Replayed,
    /// RFC 9207: the response's `iss` is not our provider's (mix-up attack).
    #[error("the authorization response comes from another issuer")]
    IssuerMismatch,
    /// No user for this identity and no just-in-time creation.
    #[error("no user is provisioned for this identity: {0}")]
    NotProvisioned(String),
    /// The user is deactivated.
    #[error("the user is not active")]
    UserInactive,
    /// The provider left groups out (Entra overage) and the org takes groups from sign-in.
    #[error(
        "the identity provider left the groups out of the ID token because there are too many (group overage); filter the groups in the app registration or use SCIM"
    )]
    GroupsOverage,
    /// Storage unavailable: fail closed.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl SignInError {
    /// Stable code, as the audit record of the refused sign-in names it (`http::error` answers
    /// the same code with the status it gives the failure).
    pub fn code(&self) -> &'static str {
        match self {
            SignInError::UnknownOrg => "unknown_org",
            SignInError::Config(_) => "misconfigured",
            SignInError::Provider(_) => "idp_unavailable",
            SignInError::IdpError(_) => "idp_error",
            SignInError::TokenExchange(_) => "token_exchange_failed",
            SignInError::InvalidIdToken(_) | SignInError::UnknownKey => "invalid_id_token",
            SignInError::InvalidState(_) => "invalid_state",
            SignInError::InvalidAssertion(_) => "invalid_assertion",
            SignInError::Replayed => "assertion_replayed",
            SignInError::IssuerMismatch => "issuer_mismatch",
            SignInError::NotProvisioned(_) => "not_provisioned",
            SignInError::UserInactive => "user_inactive",
            SignInError::GroupsOverage => "groups_overage",
            SignInError::Unavailable(_) => "unavailable",
            SignInError::TooManyLogins => "too_many_logins",
        }
    }
}

impl From<crate::domain::vault::VaultError> for SignInError {
    fn from(e: crate::domain::vault::VaultError) -> Self {
        SignInError::Unavailable(e.to_string())
    }
}

impl From<crate::domain::StoreError> for SignInError {
    fn from(e: crate::domain::StoreError) -> Self {
        SignInError::Unavailable(e.to_string())
    }
}
