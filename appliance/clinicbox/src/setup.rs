//! The daemon's side of first-boot setup (`/setup` on the status page): claiming a new box,
//! handing over the recovery keys that `clinicbox-firstboot` left, and importing the first
//! metadata package.

use std::path::{Path, PathBuf};

use clinicbox_api::ApiState;
use clinicbox_api::admin::{self, NewUser};
use clinicbox_api::error::ApiError;
use clinicbox_api::metadata::import::{ImportParams, import};
use clinicbox_dhis2::ImportStatus;
use clinicbox_statuspage::setup::{BoxFuture, Claim, PendingKey, SetupError};
use clinicbox_statuspage::{SetupActions, SetupStatus};

/// Recovery keys waiting for the status page: `<keys dir>/<name>.pending`, one key per file,
/// written by the image's first boot (`image/scripts/firstboot`).
const PENDING_SUFFIX: &str = "pending";

/// Where the pending recovery keys are, under the data dir.
pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

pub struct BoxSetup {
    api: ApiState,
    keys_dir: PathBuf,
    /// Two claims at once must not both find the box without users.
    claim_lock: tokio::sync::Mutex<()>,
}

impl BoxSetup {
    pub fn new(api: ApiState, keys_dir: PathBuf) -> Self {
        BoxSetup {
            api,
            keys_dir,
            claim_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn pending_files(&self) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(&self.keys_dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == PENDING_SUFFIX))
            .collect();
        files.sort();
        files
    }

    fn has_users(&self) -> Result<bool, ApiError> {
        Ok(self.api.metadata().snapshot()?.count("users") > 0)
    }
}

fn label(file: &Path) -> String {
    match file.file_stem().and_then(|s| s.to_str()) {
        Some("store-recovery-key") => {
            "Store recovery key (opens the encrypted database: clinicbox keys … --unlock-recovery)"
                .into()
        }
        Some("data-recovery-key") => {
            "Data partition recovery key (opens the LUKS2 partition: cryptsetup open)".into()
        }
        Some(other) => other.replace('-', " "),
        None => "recovery key".into(),
    }
}

fn failed(e: ApiError) -> SetupError {
    match e {
        ApiError::BadRequest(m) | ApiError::Conflict(m) => SetupError::Invalid(m),
        other => SetupError::Failed(other.to_string()),
    }
}

impl SetupActions for BoxSetup {
    fn status(&self) -> SetupStatus {
        let snap = match self.api.metadata().snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "setup status: metadata unavailable: {e}");
                return SetupStatus::default();
            }
        };
        SetupStatus {
            has_users: snap.count("users") > 0,
            clinic_name: admin::clinic_name(&self.api).ok().flatten(),
            pending_keys: self.pending_files().len(),
            forms: snap.count("programs") + snap.count("dataSets"),
        }
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<(), SetupError>> {
        Box::pin(async move {
            let _one_at_a_time = self.claim_lock.lock().await;
            if self.has_users().map_err(failed)? {
                return Err(SetupError::AlreadyClaimed);
            }
            // Checked before anything is written, so a refused claim changes nothing.
            if !clinicbox_dhis2::user::valid_username(&claim.username) {
                return Err(SetupError::Invalid(format!(
                    "Invalid username {:?}: use letters, digits and . _ - @",
                    claim.username
                )));
            }
            clinicbox_api::users::check_password(&claim.password).map_err(failed)?;
            admin::set_clinic_name(&self.api, &claim.clinic_name)
                .await
                .map_err(failed)?;
            let user = NewUser {
                username: claim.username,
                password: claim.password,
                first_name: "Clinic".into(),
                surname: "Administrator".into(),
                superuser: true,
                ..NewUser::default()
            };
            admin::add_user(self.api.metadata(), &user)
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn pending_keys(&self) -> Vec<PendingKey> {
        self.pending_files()
            .into_iter()
            .filter_map(|f| {
                let key = std::fs::read_to_string(&f).ok()?.trim().to_string();
                (!key.is_empty()).then(|| PendingKey {
                    label: label(&f),
                    key,
                })
            })
            .collect()
    }

    fn keys_written_down(&self) -> Result<(), SetupError> {
        for f in self.pending_files() {
            std::fs::remove_file(&f)
                .map_err(|e| SetupError::Failed(format!("cannot delete {}: {e}", f.display())))?;
        }
        Ok(())
    }

    fn import_metadata(&self, package: Vec<u8>) -> BoxFuture<'_, Result<String, SetupError>> {
        Box::pin(async move {
            let package: serde_json::Value = serde_json::from_slice(&package).map_err(|e| {
                SetupError::Invalid(format!(
                    "This file is not a DHIS2 metadata package (not valid JSON: {e})"
                ))
            })?;
            if !package.is_object() {
                return Err(SetupError::Invalid(
                    "This file is not a DHIS2 metadata package (expected a JSON object)".into(),
                ));
            }
            let report = import(self.api.metadata(), &package, ImportParams::default())
                .await
                .map_err(failed)?;
            let summary = admin::summarize(&report);
            if report.status == ImportStatus::Error {
                return Err(SetupError::Invalid(format!(
                    "The package was not imported: {summary}"
                )));
            }
            Ok(summary)
        })
    }
}
