//! Why a metadata import could not run at all (as opposed to objects it refused, which its
//! report lists). The setup page, the command line and the uplink's pull call the import
//! outside any HTTP request, so it has its own error; `POST /api/metadata` turns it into a
//! WebMessage.

use clinicbox_store::StoreError;
use clinicbox_web::ApiError;

use crate::auth::HashError;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The package's shape: not an object of collections, or not JSON at all.
    #[error("{0}")]
    Package(String),
    /// The package file could not be read.
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The blocking task that hashes passwords did not finish.
    #[error("import task failed: {0}")]
    Task(String),
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> ApiError {
        match e {
            ImportError::Package(m) => ApiError::BadRequest(m),
            ImportError::File { .. } => ApiError::BadRequest(e.to_string()),
            ImportError::Store(s) => s.into(),
            ImportError::Hash(_) | ImportError::Task(_) => ApiError::Internal(e.to_string()),
        }
    }
}
