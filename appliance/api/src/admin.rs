//! What the `clinicbox user …` and `clinicbox metadata import` commands call.

use std::path::Path;

use clinicbox_dhis2::ImportReport;

use crate::error::ApiError;
use crate::metadata::MetadataService;
use crate::metadata::import::{ImportParams, import};

pub use crate::users::{NewUser, UserSummary, add_user, list_users, set_disabled, set_password};

/// Imports a metadata package from a file (e.g. on a USB stick). `.json` only; a `.gz` must be
/// unpacked first.
pub async fn import_file(
    svc: &MetadataService,
    path: &Path,
    params: ImportParams,
) -> Result<ImportReport, ApiError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ApiError::BadRequest(format!("cannot read {}: {e}", path.display())))?;
    let package: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("{} is not valid JSON: {e}", path.display())))?;
    import(svc, &package, params).await
}

/// A one-line summary of a report for a terminal.
pub fn summarize(r: &ImportReport) -> String {
    let status = serde_json::to_value(r.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!(
        "import {status}: {} created, {} updated, {} deleted, {} ignored ({} objects)",
        r.stats.created, r.stats.updated, r.stats.deleted, r.stats.ignored, r.stats.total
    )
}
