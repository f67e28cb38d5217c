//! The hub's errors. Each names what went wrong in words a caller can act on; the API maps
//! them to HTTP statuses and problem+json.

use domain::catalogue::Refusal;
use store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// No credentials, or credentials the hub does not accept.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but the catalogue does not allow it (role or relationship missing).
    #[error(transparent)]
    Forbidden(Box<Refusal>),
    /// A field broke a rule; nothing was applied.
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state of the hub; nothing was applied.
    #[error("{0}")]
    Conflict(String),
    /// The catalogue has it, but this hub does not execute it yet.
    #[error("{0}")]
    Unsupported(String),
    /// The hub could not do it now (storage failure, shutting down); nothing acknowledged.
    #[error("{0}")]
    Unavailable(String),
}

impl HubError {
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> HubError {
        HubError::Invalid { field: field.into(), rule: rule.into() }
    }
}

impl From<Refusal> for HubError {
    fn from(r: Refusal) -> HubError {
        HubError::Forbidden(Box::new(r))
    }
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> HubError {
        match e {
            StoreError::Conflict(m) => HubError::Conflict(m),
            StoreError::NotFound(m) => HubError::NotFound(m),
            StoreError::Backend(m) => {
                tracing::error!(message = "Store failure.", error = %m);
                // The detail stays in the hub's log; callers learn only that nothing was applied.
                HubError::Unavailable("storage failure; nothing was applied (the hub's log has the detail)".into())
            }
            StoreError::Closed => HubError::Unavailable("the hub is shutting down".into()),
        }
    }
}

impl From<domain::registry::FieldError> for HubError {
    fn from(e: domain::registry::FieldError) -> HubError {
        HubError::Invalid { field: e.field.to_string(), rule: e.rule }
    }
}
