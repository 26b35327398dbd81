//! The demo metadata package (written for ClinicBox, DHIS2 `/api/metadata` format) and the
//! Android settings the demo serves. Loaded by `clinicbox serve --demo`.

use clinicbox_dhis2::{ImportReport, ImportStatus};
use serde_json::{Value, json};

use crate::ApiState;
use crate::datastore::{read_value, write_value};
use crate::error::ApiError;
use crate::metadata::import::{ImportParams, import};

/// The package: country → district → two clinics, "Outpatient visit" tracker program, an event
/// program, a monthly data set, option sets, program rules, users admin/district and
/// android/Android123.
pub const DEMO_METADATA: &str = include_str!("../demo/metadata.json");

/// Android Settings App values the demo serves (dataStore `ANDROID_SETTINGS_APP`).
pub fn android_settings() -> Vec<(&'static str, Value)> {
    vec![
        (
            "info",
            json!({"dataStoreVersion": "2.0", "androidSettingsVersion": "2.1.0"}),
        ),
        (
            "generalSettings",
            json!({
                "encryptDB": false,
                "reservedValues": 50,
                "allowScreenCapture": true,
                "lastUpdated": "2025-01-01T00:00:00.000"
            }),
        ),
        (
            "synchronization",
            json!({
                "dataSync": "30m",
                "metadataSync": "1d",
                "trackerImporterVersion": "V2",
                "trackerExporterVersion": "V2",
                "newOfflineLimit": false,
                "fileMaxLengthBytes": 10_000_000,
                "programSettings": {"globalSettings": {
                    "settingDownload": "GLOBAL",
                    "teiDownload": 500,
                    "enrollmentDownload": "ALL",
                    "eventsDownload": 1000,
                    "eventDateDownload": "ANY",
                    "enrollmentDateDownload": "ANY",
                    "updateDownload": "ANY"
                }, "specificSettings": {}},
                "dataSetSettings": {"globalSettings": {"periodDSDownload": 12}, "specificSettings": {}}
            }),
        ),
        (
            "appearance",
            json!({
                "filterSorting": {"home": {}, "dataSetSettings": {"globalSettings": {}, "specificSettings": {}},
                    "programSettings": {"globalSettings": {}, "specificSettings": {}}},
                "completionSpinner": {"globalSettings": {"visible": true}, "specificSettings": {}}
            }),
        ),
        (
            "analytics",
            json!({"tei": [], "home": [], "program": {}, "dataSet": {}}),
        ),
    ]
}

/// Imports the demo package and, where not yet set, the Android settings.
pub async fn load_demo(state: &ApiState) -> Result<ImportReport, ApiError> {
    let mut package: Value = serde_json::from_str(DEMO_METADATA)
        .map_err(|e| ApiError::Internal(format!("demo package is not JSON: {e}")))?;
    // A demo user who is already there keeps the password it has now (`clinicbox user passwd`
    // on a demo box survives a restart).
    let snap = state.metadata().snapshot()?;
    for user in package["users"].as_array_mut().into_iter().flatten() {
        let known = user["username"]
            .as_str()
            .is_some_and(|u| snap.credential(u).is_some());
        if let (true, Some(obj)) = (known, user.as_object_mut()) {
            obj.remove("password");
        }
    }
    let report = import(state.metadata(), &package, ImportParams::default()).await?;
    if report.status != ImportStatus::Ok {
        let msgs: Vec<String> = report.error_reports().map(|e| e.message.clone()).collect();
        return Err(ApiError::Internal(format!(
            "demo package rejected: {}",
            msgs.join("; ")
        )));
    }
    for (key, value) in android_settings() {
        if read_value(state, "ANDROID_SETTINGS_APP", key)?.is_none() {
            write_value(state, "ANDROID_SETTINGS_APP", key, value).await?;
        }
    }
    Ok(report)
}
