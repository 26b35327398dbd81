//! DHIS2 metadata `ImportReport` (`POST /api/metadata`): status, stats, per-type reports.

use serde::{Deserialize, Serialize};

/// Status of an import (DHIS2 `Status`; the SDK's `ImportStatus` accepts only these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ImportStatus {
    Ok,
    Warning,
    Error,
}

/// Counts of what an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub ignored: u64,
    pub total: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.created += other.created;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.ignored += other.ignored;
        self.total += other.total;
    }

    /// Recomputes `total` from the parts.
    pub fn with_total(mut self) -> Self {
        self.total = self.created + self.updated + self.deleted + self.ignored;
        self
    }
}

/// One validation error on one object (DHIS2 `ErrorReport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    pub message: String,
    /// The klass of the object being imported, e.g. `org.hisp.dhis.program.Program`.
    pub main_klass: String,
    /// DHIS2 error code (`E5002` invalid reference, `E4000` missing property, …).
    pub error_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_klass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_property: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_properties: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What happened to one object of the package (DHIS2 `ObjectReport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    pub klass: String,
    /// Position of the object in its collection in the posted package.
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub error_reports: Vec<ErrorReport>,
}

/// Per object type (DHIS2 `TypeReport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeReport {
    pub klass: String,
    pub stats: Stats,
    pub object_reports: Vec<ObjectReport>,
}

/// The whole report, served as the `response` of a WebMessage with `responseType: ImportReport`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub response_type: String,
    pub status: ImportStatus,
    pub stats: Stats,
    pub type_reports: Vec<TypeReport>,
    /// Records the box wrote (DHIS2 counts an identical object as updated; the box does not
    /// rewrite it). Not part of DHIS2's report.
    #[serde(skip)]
    pub written: u64,
}

impl ImportReport {
    pub fn new(status: ImportStatus, type_reports: Vec<TypeReport>) -> Self {
        let mut stats = Stats::default();
        for t in &type_reports {
            stats.add(&t.stats);
        }
        ImportReport {
            response_type: "ImportReport".to_string(),
            status,
            stats,
            type_reports,
            written: 0,
        }
    }

    /// Every error report in the import, in order.
    pub fn error_reports(&self) -> impl Iterator<Item = &ErrorReport> {
        self.type_reports
            .iter()
            .flat_map(|t| t.object_reports.iter())
            .flat_map(|o| o.error_reports.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_dhis2_field_names() {
        let r = ImportReport::new(
            ImportStatus::Error,
            vec![TypeReport {
                klass: "org.hisp.dhis.program.Program".into(),
                stats: Stats {
                    ignored: 1,
                    ..Stats::default()
                }
                .with_total(),
                object_reports: vec![ObjectReport {
                    klass: "org.hisp.dhis.program.Program".into(),
                    index: 0,
                    uid: Some("IpHINAT79UW".into()),
                    display_name: None,
                    error_reports: vec![ErrorReport {
                        message: "Invalid reference".into(),
                        main_klass: "org.hisp.dhis.program.Program".into(),
                        error_code: "E5002".into(),
                        main_id: Some("IpHINAT79UW".into()),
                        error_klass: None,
                        error_property: Some("trackedEntityType".into()),
                        error_properties: vec![],
                        value: None,
                    }],
                }],
            }],
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["responseType"], "ImportReport");
        assert_eq!(v["status"], "ERROR");
        assert_eq!(v["stats"]["ignored"], 1);
        assert_eq!(v["stats"]["total"], 1);
        let e = &v["typeReports"][0]["objectReports"][0]["errorReports"][0];
        assert_eq!(e["errorCode"], "E5002");
        assert_eq!(e["mainKlass"], "org.hisp.dhis.program.Program");
        assert_eq!(e["errorProperty"], "trackedEntityType");
        assert_eq!(r.error_reports().count(), 1);
    }
}
