//! The error of the tracker's work for the uplink: national's changes merged, values national
//! reserved, objects rendered for national, values metadata no longer allows. It runs outside
//! any HTTP request; the planner and renderer it shares with the tablets' routes answer in
//! `ApiError`, which is sorted here by whose fault it is, so the uplink never matches on HTTP
//! statuses.

use clinicbox_store::StoreError;
use clinicbox_web::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum NationalError {
    /// What national sent cannot be used as it is (the message says why).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The box failed: a stored object it cannot read or render, a task that died.
    #[error("{0}")]
    Failed(String),
}

impl From<ApiError> for NationalError {
    fn from(e: ApiError) -> NationalError {
        match e {
            ApiError::Store(s) => NationalError::Store(s),
            ApiError::BadRequest(m) | ApiError::Conflict(m) | ApiError::NotFound(m) => {
                NationalError::Invalid(m)
            }
            ApiError::Import(_) | ApiError::LimitExceeded(_) | ApiError::PayloadTooLarge => {
                NationalError::Invalid(e.to_string())
            }
            other => NationalError::Failed(other.to_string()),
        }
    }
}
