#![doc = include_str!("../README.md")]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod audit;
pub mod error;
pub mod scope;
pub mod snapshot;

pub use error::{ApiError, ApiResult};
pub use scope::{AuthUser, OrgUnitRef, Scope};
pub use snapshot::{Credential, Snapshot};
