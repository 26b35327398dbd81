//! Aggregate data wire formats: data value sets (`/api/dataValueSets`), their `ImportSummary`
//! with DHIS2's conflict codes (E76xx), complete data set registrations and data approvals.
//!
//! Shapes follow DHIS2 2.42 and what the Android SDK parses: `DataValueDTO` needs the five key
//! fields, `DataValueImportSummaryDTO` needs `importCount`, `status` and `responseType`, and
//! `ImportConflictDTO` needs `object` and `value`; conflicts carry `indexes` into the posted
//! `dataValues` array so the SDK can mark exactly the rejected values.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `status` of an ImportSummary (DHIS2 `ImportStatus`; the SDK accepts only these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ImportSummaryStatus {
    Success,
    Warning,
    Error,
}

/// What an aggregate import did, per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCount {
    pub imported: u64,
    pub updated: u64,
    pub ignored: u64,
    pub deleted: u64,
}

/// DHIS2's import strategies, with the legacy names older clients still send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportStrategy {
    Create,
    Update,
    #[default]
    CreateAndUpdate,
    Delete,
}

impl ImportStrategy {
    /// Parses `importStrategy` (case-insensitive; `NEW`, `UPDATES`, `NEW_AND_UPDATES`, `DELETES`
    /// are DHIS2's legacy aliases).
    pub fn parse(s: &str) -> Option<ImportStrategy> {
        match s.to_ascii_uppercase().as_str() {
            "CREATE" | "NEW" => Some(ImportStrategy::Create),
            "UPDATE" | "UPDATES" => Some(ImportStrategy::Update),
            "CREATE_AND_UPDATE" | "NEW_AND_UPDATES" => Some(ImportStrategy::CreateAndUpdate),
            "DELETE" | "DELETES" => Some(ImportStrategy::Delete),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ImportStrategy::Create => "CREATE",
            ImportStrategy::Update => "UPDATE",
            ImportStrategy::CreateAndUpdate => "CREATE_AND_UPDATE",
            ImportStrategy::Delete => "DELETE",
        }
    }
}

/// DHIS2's data value import conflict codes (`ErrorCode.E76xx`), each with the property it
/// concerns and its message template (`{0}`, `{1}`… are the conflict's objects, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictCode {
    E7600,
    E7601,
    E7603,
    E7604,
    E7610,
    E7611,
    E7612,
    E7613,
    E7614,
    E7615,
    E7616,
    E7617,
    E7618,
    E7619,
    E7620,
    E7621,
    E7632,
    E7633,
    E7634,
    E7635,
    E7636,
    E7637,
    E7638,
    E7639,
    E7640,
    E7641,
    E7642,
    E7643,
}

impl ConflictCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictCode::E7600 => "E7600",
            ConflictCode::E7601 => "E7601",
            ConflictCode::E7603 => "E7603",
            ConflictCode::E7604 => "E7604",
            ConflictCode::E7610 => "E7610",
            ConflictCode::E7611 => "E7611",
            ConflictCode::E7612 => "E7612",
            ConflictCode::E7613 => "E7613",
            ConflictCode::E7614 => "E7614",
            ConflictCode::E7615 => "E7615",
            ConflictCode::E7616 => "E7616",
            ConflictCode::E7617 => "E7617",
            ConflictCode::E7618 => "E7618",
            ConflictCode::E7619 => "E7619",
            ConflictCode::E7620 => "E7620",
            ConflictCode::E7621 => "E7621",
            ConflictCode::E7632 => "E7632",
            ConflictCode::E7633 => "E7633",
            ConflictCode::E7634 => "E7634",
            ConflictCode::E7635 => "E7635",
            ConflictCode::E7636 => "E7636",
            ConflictCode::E7637 => "E7637",
            ConflictCode::E7638 => "E7638",
            ConflictCode::E7639 => "E7639",
            ConflictCode::E7640 => "E7640",
            ConflictCode::E7641 => "E7641",
            ConflictCode::E7642 => "E7642",
            ConflictCode::E7643 => "E7643",
        }
    }

    /// The property of the data value the conflict is about.
    pub fn property(self) -> &'static str {
        use ConflictCode::*;
        match self {
            E7600 | E7601 => "dataSet",
            E7603 | E7612 | E7617 | E7636 | E7639 | E7642 => "orgUnit",
            E7604 | E7615 | E7616 | E7635 => "attributeOptionCombo",
            E7610 | E7633 => "dataElement",
            E7611 | E7632 | E7638 | E7640 | E7641 | E7643 => "period",
            E7613 | E7614 | E7634 => "categoryOptionCombo",
            E7618 | E7619 | E7621 => "value",
            E7620 => "comment",
            E7637 => "storedBy",
        }
    }

    /// DHIS2 2.42's message template.
    pub fn template(self) -> &'static str {
        use ConflictCode::*;
        match self {
            E7600 => "Data set not found or not accessible: `{0}`",
            E7601 => "User does not have write access for DataSet: `{0}`",
            E7603 => "Org unit not found or not accessible: `{0}`",
            E7604 => "Attribute option combo not found or not accessible: `{0}`",
            E7610 => "Data element not found or not accessible: `{0}`",
            E7611 => "Period not valid: `{0}`",
            E7612 => "Organisation unit not found or not accessible: `{0}`",
            E7613 => "Category option combo not found or not accessible for writing data: `{0}`",
            E7614 => "Category option combo: `{0}` option not accessible: `{1}`",
            E7615 => "Attribute option combo not found or not accessible for writing data: `{0}`",
            E7616 => "Attribute option combo: `{0}` option not accessible: `{1}`",
            E7617 => "Organisation unit: `{0}` not in hierarchy of current user: `{1}`",
            E7618 => "Data value or comment not specified for data element: `{0}`",
            E7619 => "Value must match value type of data element `{0}`: `{1}`",
            E7620 => "Invalid comment: {0}",
            E7621 => "Data value is not a valid option of the data element option set: `{0}`",
            E7632 => "Period type of period: `{0}` not valid for data element: `{1}`",
            E7633 => "Data element: `{0}` is not part of dataset(s): `{1}`",
            E7634 => {
                "Category option combo: `{0}` must be part of category combo of data element: `{1}`"
            }
            E7635 => {
                "Attribute option combo: `{0}` must be part of category combo of data sets of data element: `{1}`"
            }
            E7636 => {
                "Data element: `{1}` must be assigned through data sets to organisation unit: `{0}`"
            }
            E7637 => "Invalid storedBy: {0}",
            E7638 => "Period: `{0}` is not within date range of attribute option combo: `{1}`",
            E7639 => "Organisation unit: `{0}` is not valid for attribute option combo: `{1}`",
            E7640 => "Current date is past expiry days for period: `{0}`  and data set: `{1}`",
            E7641 => {
                "Period: `{0}` is after latest open future period: `{1}` for data element: `{2}` and data set: `{3}`"
            }
            E7642 => {
                "Data already approved for data set: `{3}` period: `{1}` org unit: `{0}` attribute option combo: `{2}`"
            }
            E7643 => "Period: `{0}` is not open for this data set at this time: `{1}`",
        }
    }
}

/// One conflict of an import (DHIS2 `ImportConflict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportConflict {
    /// The first object's value (what the SDK shows).
    pub object: String,
    /// Every object the message names, by property.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, String>,
    /// The message.
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// Positions of the affected values in the posted `dataValues` array.
    #[serde(default)]
    pub indexes: Vec<usize>,
}

impl ImportConflict {
    /// A conflict with `code`; `objects` are `(property, value)` pairs filling the template's
    /// `{0}`, `{1}`… in order.
    pub fn new(code: ConflictCode, objects: &[(&str, &str)], index: Option<usize>) -> Self {
        let mut message = code.template().to_string();
        for (i, (_, v)) in objects.iter().enumerate() {
            message = message.replace(&format!("{{{i}}}"), v);
        }
        ImportConflict {
            object: objects
                .first()
                .map(|(_, v)| v.to_string())
                .unwrap_or_default(),
            objects: objects
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            value: message,
            error_code: Some(code.as_str().to_string()),
            property: Some(code.property().to_string()),
            indexes: index.into_iter().collect(),
        }
    }

    /// Two conflicts with the same code, objects and message are one conflict with both
    /// indexes, as DHIS2 reports them.
    pub fn same_as(&self, other: &ImportConflict) -> bool {
        self.error_code == other.error_code
            && self.objects == other.objects
            && self.value == other.value
    }
}

/// The answer to a data value or registration import (DHIS2 `ImportSummary`), served as the
/// `response` of a WebMessage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    pub response_type: String,
    pub status: ImportSummaryStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_options: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub import_count: ImportCount,
    #[serde(default)]
    pub conflicts: Vec<ImportConflict>,
    #[serde(default)]
    pub rejected_indexes: Vec<usize>,
    /// `"false"`, or the completion date when the set completed its registration (a string in
    /// DHIS2, too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_set_complete: Option<String>,
}

impl ImportSummary {
    pub fn new(status: ImportSummaryStatus) -> Self {
        ImportSummary {
            response_type: "ImportSummary".to_string(),
            status,
            import_options: None,
            description: None,
            import_count: ImportCount::default(),
            conflicts: Vec::new(),
            rejected_indexes: Vec::new(),
            data_set_complete: None,
        }
    }

    /// Adds a conflict, merging it into an equal one already reported.
    pub fn add_conflict(&mut self, c: ImportConflict) {
        for i in &c.indexes {
            if !self.rejected_indexes.contains(i) {
                self.rejected_indexes.push(*i);
            }
        }
        if let Some(same) = self.conflicts.iter_mut().find(|e| e.same_as(&c)) {
            for i in c.indexes {
                if !same.indexes.contains(&i) {
                    same.indexes.push(i);
                }
            }
        } else {
            self.conflicts.push(c);
        }
    }

    /// The WebMessage `(HTTP status, status, message)` DHIS2 wraps this summary in: 409 for
    /// ERROR and WARNING (the SDK accepts 409 with this body), 200 otherwise.
    pub fn web_message_parts(&self) -> (u16, crate::Status, &'static str) {
        match self.status {
            ImportSummaryStatus::Error => (
                409,
                crate::Status::Error,
                "An error occurred, please check import summary.",
            ),
            ImportSummaryStatus::Warning => (
                409,
                crate::Status::Warning,
                "One more conflicts encountered, please check import summary.",
            ),
            ImportSummaryStatus::Success => (200, crate::Status::Ok, "Import was successful."),
        }
    }
}

/// A data value set as posted and as served. Set-level `period`, `orgUnit` and
/// `attributeOptionCombo` apply to values that leave them out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataValueSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_set: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub complete_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub data_values: Vec<DataValue>,
}

/// One data value (DHIS2 `DataValueEntry`). On input every field may be missing (the importer
/// reports what is); `value` and `comment` accept JSON numbers and booleans, as DHIS2 does. An
/// object or array as `value` is refused for that value only (E7619), an object or array as
/// `comment` fails the payload (400).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_element: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_option_combo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::value_type::deserialize_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub comment: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub followup: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted: Option<bool>,
}

/// A complete data set registration (`completeDataSetRegistrations[]`). `completed: false`
/// tells a tablet that the registration was undone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteDataSetRegistration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    /// `yyyy-MM-dd` (the SDK's `SimpleDateStringDTO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub completed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_by: Option<String>,
}

/// The body of `POST /api/completeDataSetRegistrations` and of its `GET`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteDataSetRegistrations {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub complete_data_set_registrations: Vec<CompleteDataSetRegistration>,
}

/// DHIS2's `DataApprovalState` names (the SDK runs `valueOf` on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DataApprovalState {
    Unapprovable,
    UnapprovedAbove,
    UnapprovedWaiting,
    UnapprovedReady,
    ApprovedAbove,
    ApprovedHere,
    AcceptedHere,
    UnapprovedElsewhere,
    ApprovedElsewhere,
    AcceptedElsewhere,
}

impl DataApprovalState {
    /// Approved at this level or above: data can no longer be changed.
    pub fn is_approved(self) -> bool {
        matches!(
            self,
            DataApprovalState::ApprovedAbove
                | DataApprovalState::ApprovedHere
                | DataApprovalState::AcceptedHere
                | DataApprovalState::ApprovedElsewhere
                | DataApprovalState::AcceptedElsewhere
        )
    }
}

/// One approval state (`GET /api/dataApprovals/multiple` answers an array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataApproval {
    /// Workflow UID.
    pub wf: String,
    /// Period id.
    pub pe: String,
    /// Org unit UID.
    pub ou: String,
    /// Attribute option combo UID.
    pub aoc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DataApprovalState>,
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(serde::de::Error::custom(
            "expected a string, number or boolean",
        )),
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(serde::de::Error::custom("expected true or false")),
    }
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_sdk_payload_with_lenient_values() {
        let s: DataValueSet = serde_json::from_value(json!({
            "dataSet": "cbDsOpdMon1",
            "dataValues": [
                {"dataElement": "a", "period": "202601", "orgUnit": "o", "categoryOptionCombo": "c",
                 "attributeOptionCombo": "x", "value": "12", "followup": false, "deleted": null},
                {"dataElement": "b", "value": 7, "comment": null, "followup": "true"},
                {"dataElement": "c", "value": true}
            ]
        }))
        .unwrap();
        assert_eq!(s.data_set.as_deref(), Some("cbDsOpdMon1"));
        assert_eq!(s.data_values[0].value.as_deref(), Some("12"));
        assert_eq!(s.data_values[0].deleted, None);
        assert_eq!(s.data_values[1].value.as_deref(), Some("7"));
        assert_eq!(s.data_values[1].followup, Some(true));
        assert_eq!(s.data_values[2].value.as_deref(), Some("true"));
        // An array or object is never a value's text: refused for that value only.
        let s: DataValueSet =
            serde_json::from_value(json!({"dataValues": [{"value": [1]}, {"value": {"a": 1}}]}))
                .unwrap();
        for v in &s.data_values {
            assert_eq!(
                crate::value_type::check("TEXT", v.value.as_deref().unwrap()),
                Err(crate::ValueError::NotScalar)
            );
        }
        // A comment is not a value: an array there still fails the payload.
        assert!(
            serde_json::from_value::<DataValueSet>(json!({"dataValues": [{"comment": [1]}]}))
                .is_err()
        );
        let empty: DataValueSet = serde_json::from_value(json!({"dataValues": null})).unwrap();
        assert!(empty.data_values.is_empty());
    }

    #[test]
    fn conflicts_fill_templates_and_merge_indexes() {
        let mut s = ImportSummary::new(ImportSummaryStatus::Warning);
        let c = |i| {
            ImportConflict::new(
                ConflictCode::E7641,
                &[
                    ("period", "202612"),
                    ("latestOpenPeriod", "202611"),
                    ("dataElement", "de"),
                    ("dataSet", "ds"),
                ],
                Some(i),
            )
        };
        s.add_conflict(c(3));
        s.add_conflict(c(5));
        s.add_conflict(ImportConflict::new(
            ConflictCode::E7610,
            &[("dataElement", "zz")],
            Some(1),
        ));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["responseType"], "ImportSummary");
        assert_eq!(v["status"], "WARNING");
        assert_eq!(
            v["importCount"],
            json!({"imported":0,"updated":0,"ignored":0,"deleted":0})
        );
        let first = &v["conflicts"][0];
        assert_eq!(first["object"], "202612");
        assert_eq!(first["errorCode"], "E7641");
        assert_eq!(first["property"], "period");
        assert_eq!(first["indexes"], json!([3, 5]));
        assert_eq!(
            first["value"],
            "Period: `202612` is after latest open future period: `202611` for data element: `de` and data set: `ds`"
        );
        assert_eq!(
            v["conflicts"][1]["value"],
            "Data element not found or not accessible: `zz`"
        );
        assert_eq!(v["rejectedIndexes"], json!([3, 5, 1]));
        assert_eq!(s.web_message_parts().0, 409);
    }

    #[test]
    fn strategies_accept_legacy_names() {
        assert_eq!(
            ImportStrategy::parse("new_and_updates"),
            Some(ImportStrategy::CreateAndUpdate)
        );
        assert_eq!(
            ImportStrategy::parse("DELETES"),
            Some(ImportStrategy::Delete)
        );
        assert_eq!(ImportStrategy::parse("MERGE"), None);
    }

    #[test]
    fn approval_states_use_java_enum_names() {
        let a: DataApproval = serde_json::from_value(
            json!({"wf":"w","pe":"202601","ou":"o","aoc":"a","state":"APPROVED_HERE"}),
        )
        .unwrap();
        assert!(a.state.is_some_and(DataApprovalState::is_approved));
        assert_eq!(
            serde_json::to_value(DataApprovalState::UnapprovedReady).unwrap(),
            "UNAPPROVED_READY"
        );
        let r: CompleteDataSetRegistrations = serde_json::from_value(json!({
            "completeDataSetRegistrations": [{"period":"202601","dataSet":"d","organisationUnit":"o",
              "attributeOptionCombo":"a","date":"2026-02-01","storedBy":"android","completed":true}]
        }))
        .unwrap();
        assert_eq!(r.complete_data_set_registrations[0].completed, Some(true));
    }
}
