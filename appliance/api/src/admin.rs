//! What the `clinicbox user …` and `clinicbox metadata import` commands and the status page's
//! setup call.

use std::path::Path;

use clinicbox_dhis2::ImportReport;

use clinicbox_store::StoreError;

use crate::ApiState;
use crate::metadata::import::{ImportParams, import};
use crate::metadata::{ImportError, MetadataService, bump_revision};
use crate::system::SYSTEM_SETTINGS;

pub use crate::users::{
    NewUser, UserError, UserSummary, add_user, list_users, set_disabled, set_password,
};

/// Imports a metadata package from a file (e.g. on a USB stick). `.json` only; a `.gz` must be
/// unpacked first.
pub async fn import_file(
    svc: &MetadataService,
    path: &Path,
    params: ImportParams,
) -> Result<ImportReport, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let package: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ImportError::Package(format!("{} is not valid JSON: {e}", path.display())))?;
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

/// The system setting that holds the clinic's name (DHIS2's application title, which the
/// Capture app shows).
pub const CLINIC_NAME_SETTING: &str = "applicationTitle";

/// The clinic's name as set on this box, if it has been.
pub fn clinic_name(state: &ApiState) -> Result<Option<String>, StoreError> {
    let read = state.store().read()?;
    Ok(read
        .get(SYSTEM_SETTINGS, CLINIC_NAME_SETTING)?
        .filter(|r| !r.deleted)
        .and_then(|r| r.json::<String>().ok()))
}

/// Why the clinic could not be named.
#[derive(Debug, thiserror::Error)]
pub enum ClinicNameError {
    #[error("The clinic name must have 1 to 120 characters")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A clinic name as it will be stored (trimmed), or why it cannot be one: 1–120 characters,
/// no control characters.
pub fn check_clinic_name(name: &str) -> Result<&str, ClinicNameError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 120 || name.chars().any(char::is_control) {
        return Err(ClinicNameError::Invalid);
    }
    Ok(name)
}

/// Names the clinic (see [`check_clinic_name`]).
pub async fn set_clinic_name(state: &ApiState, name: &str) -> Result<(), ClinicNameError> {
    let name = check_clinic_name(name)?;
    let value = serde_json::Value::String(name.to_string());
    state
        .store()
        .write(move |ctx| -> Result<(), StoreError> {
            ctx.put_json(SYSTEM_SETTINGS, CLINIC_NAME_SETTING, &value)?;
            bump_revision(ctx)
        })
        .await
        .map_err(|e| e.flatten())?;
    Ok(())
}
