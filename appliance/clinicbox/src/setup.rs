//! The daemon's side of first-boot setup (`/setup` on the status page): claiming a new box,
//! handing over the recovery keys that `clinicbox-firstboot` left, importing the metadata
//! package, and the tablet users.

use std::path::{Path, PathBuf};

use clinicbox_api::ApiState;
use clinicbox_api::admin::{self, ClinicNameError, NewUser, UserError};
use clinicbox_api::metadata::ImportError;
use clinicbox_api::metadata::import::{ImportParams, import};
use clinicbox_statuspage::setup::{
    BoxFuture, Choice, Claim, NewTabletUser, PendingKey, SetupError, UserChoices, UserRow,
};
use clinicbox_statuspage::{SetupActions, SetupStatus};
use clinicbox_store::StoreError;

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
    /// Two claims (or a claim and a restore) at once must not both find the box without users.
    claim_lock: tokio::sync::Mutex<()>,
    /// Restoring a backup: the data directory, and how to restart `serve` into the restore.
    restore: Option<(PathBuf, Restart)>,
}

/// Asks `serve` to stop, so its unit starts it again on the restored data.
pub type Restart = std::sync::Arc<dyn Fn() + Send + Sync>;

impl BoxSetup {
    pub fn new(api: ApiState, keys_dir: PathBuf) -> Self {
        BoxSetup {
            api,
            keys_dir,
            claim_lock: tokio::sync::Mutex::new(()),
            restore: None,
        }
    }

    /// Offers "Restore from a backup" on the first-setup page.
    pub fn with_restore(mut self, data_dir: PathBuf, restart: Restart) -> Self {
        self.restore = Some((data_dir, restart));
        self
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

    fn has_users(&self) -> Result<bool, StoreError> {
        Ok(self.api.metadata().snapshot()?.count("users") > 0)
    }
}

impl BoxSetup {
    /// Restores `upload` into the data directory's `restore-incoming`, then restarts `serve`,
    /// which moves it into place before it opens the store.
    async fn restore_backup(&self, upload: &Path, key: String) -> Result<String, SetupError> {
        let Some((data_dir, restart)) = self.restore.clone() else {
            return Err(SetupError::Failed("restoring is not available here".into()));
        };
        let _one_at_a_time = self.claim_lock.lock().await;
        if self.has_users().map_err(failed)? {
            return Err(SetupError::AlreadyClaimed);
        }
        let key = clinicbox_store::Zeroizing::new(key);
        let key = if key.contains("AGE-SECRET-KEY-") {
            crate::backup::RestoreKey::HqIdentityText(key)
        } else {
            crate::backup::RestoreKey::RecoveryKey(key)
        };
        let incoming = data_dir.join(crate::backup::layout::RESTORE_INCOMING);
        let _ = std::fs::remove_dir_all(&incoming);
        let upload = upload.to_path_buf();
        let manifest =
            tokio::task::spawn_blocking(move || crate::backup::restore(&upload, &incoming, &key))
                .await
                .map_err(|e| SetupError::Failed(e.to_string()))?
                .map_err(|e| SetupError::Invalid(format!("{e:#}")))?;
        tracing::info!(box_id = %manifest.box_id, "setup: a backup was restored; restarting into it");
        // Restart once this answer is on its way.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            restart();
        });
        Ok(format!(
            "Restored box {} ({}) up to change {}.",
            manifest.box_id, manifest.box_name, manifest.last_seq
        ))
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

/// The first few objects a metadata import refused, and how many more.
fn refusals(report: &clinicbox_dhis2::ImportReport) -> String {
    let mut why: Vec<String> = report
        .error_reports()
        .take(5)
        .map(|e| format!("{}: {}", e.error_code, e.message))
        .collect();
    let more = report.error_reports().count().saturating_sub(why.len());
    if more > 0 {
        why.push(format!("and {more} more"));
    }
    why.join("; ")
}

/// An error from an admin action, told apart by whose it is: the person at the page can fix
/// their input; a failure of the box is reported as one.
trait ActionError: std::fmt::Display {
    fn is_input(&self) -> bool;
}

impl ActionError for UserError {
    fn is_input(&self) -> bool {
        self.is_request()
    }
}

impl ActionError for ClinicNameError {
    fn is_input(&self) -> bool {
        matches!(self, ClinicNameError::Invalid)
    }
}

impl ActionError for ImportError {
    fn is_input(&self) -> bool {
        matches!(self, ImportError::Package(_) | ImportError::File { .. })
    }
}

impl ActionError for StoreError {
    fn is_input(&self) -> bool {
        false
    }
}

fn failed(e: impl ActionError) -> SetupError {
    if e.is_input() {
        SetupError::Invalid(e.to_string())
    } else {
        SetupError::Failed(e.to_string())
    }
}

impl SetupActions for BoxSetup {
    fn restore_upload(&self) -> Option<PathBuf> {
        let (data_dir, _) = self.restore.as_ref()?;
        Some(data_dir.join(crate::backup::layout::RESTORE_UPLOAD))
    }

    fn restore(&self, upload: PathBuf, key: String) -> BoxFuture<'_, Result<String, SetupError>> {
        Box::pin(async move {
            let outcome = self.restore_backup(&upload, key).await;
            let _ = std::fs::remove_file(&upload);
            outcome
        })
    }

    fn status(&self) -> SetupStatus {
        let snap = match self.api.metadata().snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "setup status: metadata unavailable: {e}");
                return SetupStatus::default();
            }
        };
        let tablet_users = snap
            .objects("users")
            .filter(|(_, u)| {
                u.get("organisationUnits")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|a| !a.is_empty())
            })
            .count();
        SetupStatus {
            has_users: snap.count("users") > 0,
            clinic_name: admin::clinic_name(&self.api).ok().flatten(),
            pending_keys: self.pending_files().len(),
            forms: snap.count("programs") + snap.count("dataSets"),
            tablet_users,
        }
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<(), SetupError>> {
        Box::pin(async move {
            let _one_at_a_time = self.claim_lock.lock().await;
            if self.has_users().map_err(failed)? {
                return Err(SetupError::AlreadyClaimed);
            }
            // The name is checked first and `add_user` checks the account before it writes, so
            // a refused claim changes nothing; only a store failure can leave the name unset.
            admin::check_clinic_name(&claim.clinic_name).map_err(failed)?;
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
            admin::set_clinic_name(&self.api, &claim.clinic_name)
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

    fn import_metadata(
        &self,
        package: Vec<u8>,
        skip_refused: bool,
    ) -> BoxFuture<'_, Result<String, SetupError>> {
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
            let params = ImportParams {
                atomic: !skip_refused,
                ..ImportParams::default()
            };
            let report = import(self.api.metadata(), &package, params)
                .await
                .map_err(failed)?;
            let summary = admin::summarize(&report);
            let refused = refusals(&report);
            if refused.is_empty() {
                return Ok(summary);
            }
            if skip_refused {
                return Ok(format!("{summary}; skipped: {refused}"));
            }
            // Nothing was imported (atomic, as DHIS2 does by default): say why, and the way on.
            Err(SetupError::Invalid(format!(
                "The package was not imported, nothing changed ({summary}). {refused}. To import \
                 everything else and skip these, upload it again with \"Import the rest\" ticked."
            )))
        })
    }

    fn users(&self) -> Vec<UserRow> {
        admin::list_users(self.api.metadata())
            .unwrap_or_default()
            .into_iter()
            .map(|u| UserRow {
                username: u.username,
                name: u.name,
                roles: u.roles,
                org_units: u.org_units,
                disabled: u.disabled,
            })
            .collect()
    }

    fn user_choices(&self) -> UserChoices {
        let Ok(snap) = self.api.metadata().snapshot() else {
            return UserChoices::default();
        };
        let choices = |plural: &str| -> Vec<Choice> {
            let mut v: Vec<Choice> = snap
                .objects(plural)
                .map(|(id, o)| Choice {
                    id: id.clone(),
                    name: o
                        .get("name")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or(id)
                        .to_string(),
                })
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        UserChoices {
            org_units: choices("organisationUnits"),
            roles: choices("userRoles"),
        }
    }

    fn add_user(&self, user: NewTabletUser) -> BoxFuture<'_, Result<(), SetupError>> {
        Box::pin(async move {
            let new = NewUser {
                username: user.username.trim().to_string(),
                password: user.password,
                first_name: user.first_name.trim().to_string(),
                surname: user.surname.trim().to_string(),
                roles: vec![user.role],
                org_units: vec![user.org_unit],
                ..NewUser::default()
            };
            if new.first_name.is_empty() || new.surname.is_empty() {
                return Err(SetupError::Invalid(
                    "First name and surname are needed".into(),
                ));
            }
            admin::add_user(self.api.metadata(), &new)
                .await
                .map(|_| ())
                .map_err(failed)
        })
    }

    fn set_password(
        &self,
        username: String,
        password: String,
    ) -> BoxFuture<'_, Result<(), SetupError>> {
        Box::pin(async move {
            admin::set_password(self.api.metadata(), &username, &password)
                .await
                .map_err(failed)
        })
    }

    fn set_disabled(
        &self,
        username: String,
        disabled: bool,
    ) -> BoxFuture<'_, Result<(), SetupError>> {
        Box::pin(async move {
            admin::set_disabled(self.api.metadata(), &username, disabled)
                .await
                .map_err(failed)
        })
    }
}
