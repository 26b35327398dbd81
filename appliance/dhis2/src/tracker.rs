//! DHIS2 2.42 tracker wire formats (`/api/tracker`): the import payload (flat or nested), the
//! export objects and pages, the tracker import report, job notifications, validation codes,
//! file resources and reserved values.
//!
//! One set of object types serves both directions, as in DHIS2: every field is optional on the
//! way in and left out when absent on the way out. UIDs are plain strings here so that one bad
//! UID becomes a per-object validation error instead of failing the whole payload; dates and
//! enums are typed, so a malformed one fails the payload with 400, as in DHIS2.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::import_report::Stats;
use crate::timestamp::Dhis2Timestamp;

/// The four kinds of tracker object (`TrackerType`; the SDK's `TrackerImporterObjectType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrackerType {
    TrackedEntity,
    Enrollment,
    Event,
    Relationship,
}

impl TrackerType {
    pub const ALL: [TrackerType; 4] = [
        TrackerType::TrackedEntity,
        TrackerType::Enrollment,
        TrackerType::Event,
        TrackerType::Relationship,
    ];

    /// The name DHIS2 uses in messages (`TrackedEntity`, `Enrollment`, …).
    pub fn display_name(self) -> &'static str {
        match self {
            TrackerType::TrackedEntity => "TrackedEntity",
            TrackerType::Enrollment => "Enrollment",
            TrackerType::Event => "Event",
            TrackerType::Relationship => "Relationship",
        }
    }
}

/// `EnrollmentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum EnrollmentStatus {
    #[default]
    Active,
    Completed,
    Cancelled,
}

/// `EventStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventStatus {
    #[default]
    Active,
    Completed,
    Visited,
    Schedule,
    Overdue,
    Skipped,
}

impl EventStatus {
    /// Statuses of an event that has not happened yet (it needs `scheduledAt`).
    pub fn is_planned(self) -> bool {
        matches!(
            self,
            EventStatus::Schedule | EventStatus::Overdue | EventStatus::Skipped
        )
    }
}

/// A note's text as tablets send it: a string, a number or a boolean becomes its text; `null`
/// (and a missing value) means no note. (Attribute and data values use
/// [`crate::value_type::deserialize_value`], which refuses objects and arrays per value.)
fn de_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => Some(other.to_string()),
    })
}

/// A list that may also be sent as `null`.
fn de_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A user reference (`createdBy`, `updatedBy`, `assignedUser`, note `createdBy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A tracked entity attribute value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    #[serde(default)]
    pub attribute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// `None` on the way in deletes the value; always written on the way out. An object or
    /// array sent here is marked so the import refuses this value (E1007), see
    /// [`crate::value_type::deserialize_value`].
    #[serde(default, deserialize_with = "crate::value_type::deserialize_value")]
    pub value: Option<String>,
}

/// An event data value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataValue {
    #[serde(default)]
    pub data_element: String,
    /// `None` on the way in deletes the value; an object or array is refused per value
    /// (E1302), see [`crate::value_type::deserialize_value`].
    #[serde(default, deserialize_with = "crate::value_type::deserialize_value")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provided_elsewhere: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<UserInfo>,
}

/// A note on an enrollment or event. Notes are append-only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, deserialize_with = "de_value")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<UserInfo>,
}

/// `{"trackedEntity": "uid"}`, `{"enrollment": "uid"}` or `{"event": "uid"}` inside a
/// relationship item. Older clients send the bare UID string; both are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemRef {
    #[serde(flatten)]
    pub inner: BTreeMap<String, Value>,
}

impl ItemRef {
    pub fn new(key: &str, uid: &str) -> ItemRef {
        let mut inner = BTreeMap::new();
        inner.insert(key.to_string(), Value::from(uid));
        ItemRef { inner }
    }

    /// The UID under `key`.
    pub fn uid(&self, key: &str) -> Option<&str> {
        self.inner.get(key).and_then(Value::as_str)
    }
}

/// Deserialises an item reference from `"uid"` or `{"<key>": "uid", …}`; the key is filled in
/// by [`RelationshipItem`]'s deserialiser.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawRef {
    Uid(String),
    Obj(BTreeMap<String, Value>),
}

/// One side of a relationship: exactly one of the three should be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelationshipItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked_entity: Option<ItemRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<ItemRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<ItemRef>,
}

impl<'de> Deserialize<'de> for RelationshipItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(default)]
            tracked_entity: Option<RawRef>,
            #[serde(default)]
            enrollment: Option<RawRef>,
            #[serde(default)]
            event: Option<RawRef>,
        }
        let raw = Raw::deserialize(d)?;
        let conv = |key: &str, r: Option<RawRef>| {
            r.map(|r| match r {
                RawRef::Uid(u) => ItemRef::new(key, &u),
                RawRef::Obj(inner) => ItemRef { inner },
            })
        };
        Ok(RelationshipItem {
            tracked_entity: conv("trackedEntity", raw.tracked_entity),
            enrollment: conv("enrollment", raw.enrollment),
            event: conv("event", raw.event),
        })
    }
}

impl RelationshipItem {
    pub fn tracked_entity(uid: &str) -> RelationshipItem {
        RelationshipItem {
            tracked_entity: Some(ItemRef::new("trackedEntity", uid)),
            ..RelationshipItem::default()
        }
    }
    pub fn enrollment(uid: &str) -> RelationshipItem {
        RelationshipItem {
            enrollment: Some(ItemRef::new("enrollment", uid)),
            ..RelationshipItem::default()
        }
    }
    pub fn event(uid: &str) -> RelationshipItem {
        RelationshipItem {
            event: Some(ItemRef::new("event", uid)),
            ..RelationshipItem::default()
        }
    }

    /// `(type, uid)` when exactly one side is set.
    pub fn single(&self) -> Option<(TrackerType, String)> {
        let mut found = Vec::new();
        if let Some(r) = &self.tracked_entity {
            found.push((TrackerType::TrackedEntity, r.uid("trackedEntity")));
        }
        if let Some(r) = &self.enrollment {
            found.push((TrackerType::Enrollment, r.uid("enrollment")));
        }
        if let Some(r) = &self.event {
            found.push((TrackerType::Event, r.uid("event")));
        }
        match found.as_slice() {
            [(t, Some(u))] => Some((*t, (*u).to_string())),
            _ => None,
        }
    }
}

/// A relationship between two tracker objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bidirectional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<RelationshipItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<RelationshipItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// A program owner (`programOwners[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramOwner {
    #[serde(default)]
    pub org_unit: String,
    #[serde(default)]
    pub tracked_entity: String,
    #[serde(default)]
    pub program: String,
}

/// An event (tracker program stage event or single event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EventStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_entity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_category_options: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_user: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Value>,
    #[serde(default, deserialize_with = "de_list")]
    pub data_values: Vec<DataValue>,
    #[serde(default, deserialize_with = "de_list")]
    pub notes: Vec<Note>,
    #[serde(
        default,
        deserialize_with = "de_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub relationships: Vec<Relationship>,
}

/// An enrollment of a tracked entity in a program.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_entity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EnrollmentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Value>,
    #[serde(default, deserialize_with = "de_list")]
    pub attributes: Vec<Attribute>,
    #[serde(default, deserialize_with = "de_list")]
    pub events: Vec<Event>,
    #[serde(default, deserialize_with = "de_list")]
    pub notes: Vec<Note>,
    #[serde(
        default,
        deserialize_with = "de_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub relationships: Vec<Relationship>,
}

/// A tracked entity (a patient).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackedEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_entity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_entity_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub potential_duplicate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<UserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Value>,
    #[serde(default, deserialize_with = "de_list")]
    pub attributes: Vec<Attribute>,
    #[serde(default, deserialize_with = "de_list")]
    pub enrollments: Vec<Enrollment>,
    #[serde(default, deserialize_with = "de_list")]
    pub relationships: Vec<Relationship>,
    #[serde(default, deserialize_with = "de_list")]
    pub program_owners: Vec<ProgramOwner>,
}

/// The body of `POST /api/tracker`: flat (four lists) or nested (children inside parents).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackerPayload {
    #[serde(default, deserialize_with = "de_list")]
    pub tracked_entities: Vec<TrackedEntity>,
    #[serde(default, deserialize_with = "de_list")]
    pub enrollments: Vec<Enrollment>,
    #[serde(default, deserialize_with = "de_list")]
    pub events: Vec<Event>,
    #[serde(default, deserialize_with = "de_list")]
    pub relationships: Vec<Relationship>,
}

/// `importStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImportStrategy {
    Create,
    Update,
    #[default]
    CreateAndUpdate,
    Delete,
}

/// `atomicMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum AtomicMode {
    #[default]
    All,
    Object,
}

/// `importMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum ImportMode {
    #[default]
    Commit,
    Validate,
}

/// `reportMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReportMode {
    Full,
    #[default]
    Errors,
    Warnings,
}

/// `status` of a tracker import report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum TrackerStatus {
    Ok,
    Warning,
    Error,
}

/// One validation error or warning (`validationReport.errorReports[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackerErrorReport {
    pub message: String,
    pub error_code: String,
    pub tracker_type: TrackerType,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// `validationReport`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    pub error_reports: Vec<TrackerErrorReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_reports: Option<Vec<TrackerErrorReport>>,
}

/// One imported object (`objectReports[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackerObjectReport {
    pub tracker_type: TrackerType,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub error_reports: Vec<TrackerErrorReport>,
}

/// Per tracker type (`typeReportMap.<TYPE>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackerTypeReport {
    pub tracker_type: TrackerType,
    pub stats: Stats,
    pub object_reports: Vec<TrackerObjectReport>,
}

/// `bundleReport`: what was persisted, per type. All four types are always present (the SDK
/// requires them when `bundleReport` is sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleReport {
    pub status: TrackerStatus,
    pub type_report_map: BTreeMap<TrackerType, TrackerTypeReport>,
    pub stats: Stats,
}

/// The tracker `ImportReport` (sync reply body and job report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackerImportReport {
    pub status: TrackerStatus,
    pub validation_report: ValidationReport,
    pub stats: Stats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_report: Option<BundleReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings_stats: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl TrackerImportReport {
    /// DHIS2's summary line, e.g. `Import complete with status OK, 1 created, 0 updated, 0
    /// deleted, 0 ignored`.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let status = match self.status {
            TrackerStatus::Ok => "OK",
            TrackerStatus::Warning => "WARNING",
            TrackerStatus::Error => "ERROR",
        };
        format!(
            "Import complete with status {status}, {} created, {} updated, {} deleted, {} ignored",
            s.created, s.updated, s.deleted, s.ignored
        )
    }

    /// This report as `reportMode` asks for it: ERRORS drops warnings and timings, WARNINGS
    /// drops timings, FULL keeps everything.
    pub fn for_mode(&self, mode: ReportMode) -> TrackerImportReport {
        let mut r = self.clone();
        match mode {
            ReportMode::Full => {}
            ReportMode::Warnings => r.timings_stats = None,
            ReportMode::Errors => {
                r.timings_stats = None;
                r.validation_report.warning_reports = None;
            }
        }
        if mode != ReportMode::Errors && r.validation_report.warning_reports.is_none() {
            r.validation_report.warning_reports = Some(Vec::new());
        }
        r
    }
}

/// One entry of `GET /api/tracker/jobs/{id}` (the SDK's `JobProgressDTO`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobNotification {
    pub uid: String,
    pub level: String,
    pub category: String,
    pub time: Dhis2Timestamp,
    pub message: String,
    pub completed: bool,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// `GET /api/fileResources/{uid}` and the upload reply's `response.fileResource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileResource {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub content_type: String,
    pub content_length: u64,
    pub storage_status: String,
    pub domain: String,
    pub created: Dhis2Timestamp,
    pub last_updated: Dhis2Timestamp,
    pub has_multiple_storage_files: bool,
}

/// One reserved value (`generateAndReserve` replies with a list of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservedValue {
    pub owner_object: String,
    pub owner_uid: String,
    pub key: String,
    pub value: String,
    pub created: Dhis2Timestamp,
    pub expiry_date: Dhis2Timestamp,
}

/// DHIS2 tracker validation codes (`ValidationCode`) with their message templates; `{0}`,
/// `{1}`, … are filled from the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidationCode {
    E1000,
    E1001,
    E1002,
    E1003,
    E1005,
    E1006,
    E1007,
    E1009,
    E1010,
    E1011,
    E1013,
    E1014,
    E1015,
    E1016,
    E1018,
    E1019,
    E1020,
    E1022,
    E1025,
    E1029,
    E1030,
    E1031,
    E1032,
    E1033,
    E1039,
    E1041,
    E1048,
    E1049,
    E1050,
    E1054,
    E1063,
    E1064,
    E1068,
    E1069,
    E1070,
    E1076,
    E1077,
    E1079,
    E1080,
    E1081,
    E1082,
    E1083,
    E1084,
    E1089,
    E1090,
    E1091,
    E1095,
    E1100,
    E1102,
    E1103,
    E1104,
    E1113,
    E1114,
    E1115,
    E1119,
    E1121,
    E1122,
    E1123,
    E1124,
    E1125,
    E1126,
    E1127,
    E1128,
    E1302,
    E1303,
    E1304,
    E1305,
    E4000,
    E4001,
    E4006,
    E4010,
    E4012,
    E4014,
    E4015,
    E4016,
    E4017,
    E4018,
    E4020,
    E5000,
}

impl ValidationCode {
    /// The message template (DHIS2 2.42 wording).
    pub fn template(self) -> &'static str {
        use ValidationCode::*;
        match self {
            E1000 => "User: `{0}` has no write access to OrganisationUnit: `{1}`.",
            E1001 => "User: `{0}` has no data write access to TrackedEntityType: `{1}`.",
            E1002 => "TrackedEntity: `{0}`, already exists.",
            E1003 => "User: `{0}` has no write access to TrackedEntity: `{1}`.",
            E1005 => "Could not find TrackedEntityType: `{0}`.",
            E1006 => "Attribute: `{0}` does not exist.",
            E1007 => "Error validating attribute value type: `{0}`; Error: `{1}`.",
            E1009 => "File resource: `{0}` has already been assigned to another object.",
            E1010 => "Could not find Program: `{0}`, linked to Event.",
            E1011 => "Could not find OrganisationUnit: `{0}`, linked to Event.",
            E1013 => "Could not find ProgramStage: `{0}`, linked to Event.",
            E1014 => {
                "Provided Program: `{0}` is a Program without registration. An Enrollment cannot be created into Program without registration."
            }
            E1015 => "TrackedEntity: `{0}` already has an active Enrollment in Program `{1}`.",
            E1016 => {
                "TrackedEntity: `{0}` already has an enrollment in Program: `{1}`, and this program only allows enrolling once."
            }
            E1018 => {
                "Attribute: `{0}` is mandatory in program `{1}` but not declared in Enrollment `{2}`."
            }
            E1019 => "Only ProgramAttributes are allowed for enrollment, invalid Attribute: `{0}`.",
            E1020 => "Enrollment date: `{0}` cannot be a future date.",
            E1022 => "TrackedEntity: `{0}` must have same TrackedEntityType as Program `{1}`.",
            E1025 => "Property enrolledAt is null.",
            E1029 => "Event OrganisationUnit: `{0}` and Program: `{1}`, do not match.",
            E1030 => "Event: `{0}` already exists.",
            E1031 => "Event occurredAt date is missing.",
            E1032 => "Event: `{0}` do not exist.",
            E1033 => "Event: `{0}` Enrollment value is null.",
            E1039 => "ProgramStage: `{0}` is not repeatable and an event already exists.",
            E1041 => "Enrollment OrganisationUnit: `{0}` and Program: `{1}` do not match.",
            E1048 => "Object: `{0}`, uid: `{1}`, has an invalid uid format.",
            E1049 => "Could not find OrganisationUnit: `{0}` linked to TrackedEntity.",
            E1050 => "Event ScheduledAt date is missing.",
            E1054 => "AttributeOptionCombo `{0}` is not in the event Program CategoryCombo `{1}`.",
            E1063 => "TrackedEntity: `{0}`, does not exist.",
            E1064 => "Non-unique attribute value `{0}` for attribute `{1}`.",
            E1068 => "Could not find TrackedEntity: `{0}` linked to Enrollment.",
            E1069 => "Could not find Program: `{0}` linked to Enrollment.",
            E1070 => "Could not find OrganisationUnit: `{0}` linked to Enrollment.",
            E1076 => "`{0}` `{1}` is mandatory and must be specified.",
            // DHIS2's template names `{0}` twice; the box passes the attribute UID there
            // (never the value) and the limit as `{1}`.
            E1077 => "Attribute: `{0}`, text value exceed the maximum allowed length: `{0}`.",
            E1079 => {
                "Event: `{0}` program: `{1}` is different from Program defined in Enrollment `{2}`."
            }
            E1080 => "Enrollment: `{0}` already exists.",
            E1081 => "Enrollment: `{0}` do not exist.",
            E1082 => "Event: `{0}` is already deleted and cannot be modified.",
            E1083 => "User: `{0}` is not authorized to update completed events.",
            E1084 => "File resource: `{0}`, reference could not be found.",
            E1089 => {
                "Event: `{0}` references ProgramStage `{1}` which do not belong to Program `{2}`."
            }
            E1090 => {
                "Attribute: `{0}` is mandatory in TrackedEntityType `{1}` but not found in TrackedEntity `{2}`."
            }
            E1091 => "User: `{0}` has no data write access to Program: `{1}`.",
            E1095 => "User: `{0}` has no data write access to ProgramStage: `{1}`.",
            E1100 => {
                "User: `{0}` lacks 'F_TEI_CASCADE_DELETE' authority to delete TrackedEntity: `{1}`."
            }
            E1102 => {
                "User: `{0}` does not have access to the tracked entity: `{1}` and Program: `{2}`."
            }
            E1103 => {
                "User: `{0}` lacks 'F_ENROLLMENT_CASCADE_DELETE' authority to delete Enrollment : `{1}`."
            }
            E1104 => {
                "User: `{0}` has no data read access to Program: `{1}`, TrackedEntityType: `{2}`."
            }
            E1113 => "Enrollment: `{0}` is already deleted and cannot be modified.",
            E1114 => "TrackedEntity: `{0}` is already deleted and cannot be modified.",
            E1115 => "Could not find CategoryOptionCombo: `{0}`.",
            E1119 => "A Note with UID `{0}` already exists.",
            E1121 => "Missing required trackedEntity property: `{0}`.",
            E1122 => "Missing required enrollment property: `{0}`.",
            E1123 => "Missing required event property: `{0}`.",
            E1124 => "Missing required relationship property: `{0}`.",
            E1125 => "Value `{0}` is not a valid option code in OptionSet `{1}`.",
            E1126 => "Not allowed to update trackedEntity property: {0}.",
            E1127 => "Not allowed to update enrollment property: {0}.",
            E1128 => "Not allowed to update event property: {0}.",
            E1302 => "DataElement `{0}` is not valid: `{1}`.",
            E1303 => "Mandatory DataElement `{0}` is not present.",
            E1304 => "DataElement `{0}` is not a valid data element.",
            E1305 => "DataElement `{0}` is not part of ProgramStage `{1}`.",
            E4000 => "Relationship: `{0}` cannot link to itself.",
            E4001 => {
                "RelationshipItem `{0}` for Relationship `{1}` is invalid as an item must be associated with exactly one of TrackedEntity, Enrollment, Event."
            }
            E4006 => "Could not find RelationshipType: `{0}`.",
            E4010 => "RelationshipType `{0}` constraint requires a {1} but a {2} was found.",
            E4012 => "Could not find `{0}`: `{1}`, linked to relationship.",
            E4014 => {
                "RelationshipType `{0}` constraint requires TrackedEntityType `{1}` but `{2}` was found."
            }
            E4015 => "Relationship: `{0}` already exists.",
            E4016 => "Relationship: `{0}` do not exist.",
            E4017 => "Relationship: `{0}` is already deleted and cannot be modified.",
            E4018 => "Relationship: `{0}` linking {1}: `{2}` to {3}: `{4}` already exists.",
            E4020 => "User: `{0}`, has no write access to relationship: `{1}`.",
            E5000 => {
                "{0} `{1}` cannot be created because {2} `{3}` referenced by it could not be created."
            }
        }
    }

    /// The template with `{n}` replaced by `args[n]`.
    pub fn message(self, args: &[&str]) -> String {
        let mut out = self.template().to_string();
        for (i, a) in args.iter().enumerate() {
            out = out.replace(&format!("{{{i}}}"), a);
        }
        out
    }
}

impl fmt::Display for ValidationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_payload_with_null_values_parses() {
        let p: TrackerPayload = serde_json::from_value(json!({
            "trackedEntities": [{
                "trackedEntity": "PQfMcpmXeFE", "trackedEntityType": "nEenWmSyUEp",
                "orgUnit": "DiszpKrYNg8", "createdAtClient": "2024-01-05T07:08:09.123",
                "attributes": [{"attribute": "w75KJ2mc4zz", "value": null},
                               {"attribute": "zDhUuAYrxNC", "value": 42}],
                "enrollments": [{"program": "IpHINAT79UW", "status": "ACTIVE",
                    "events": [{"programStage": "A03MvHHogjR", "status": "COMPLETED",
                        "dataValues": [{"dataElement": "a3kGcGDCuk6", "value": true}]}]}]
            }],
            "events": null
        }))
        .unwrap();
        let te = &p.tracked_entities[0];
        assert_eq!(te.attributes[0].value, None);
        assert_eq!(te.attributes[1].value.as_deref(), Some("42"));
        let ev = &te.enrollments[0].events[0];
        assert_eq!(ev.status, Some(EventStatus::Completed));
        assert_eq!(ev.data_values[0].value.as_deref(), Some("true"));
        assert!(p.events.is_empty());
    }

    #[test]
    fn object_and_array_values_are_refused_per_value_not_per_payload() {
        let p: TrackerPayload = serde_json::from_value(json!({
            "trackedEntities": [{
                "trackedEntity": "PQfMcpmXeFE",
                "attributes": [{"attribute": "w75KJ2mc4zz", "value": {"nested": ["x"]}}]
            }],
            "events": [{"dataValues": [{"dataElement": "a3kGcGDCuk6", "value": [1, 2]}],
                        "notes": [{"value": "seen"}]}]
        }))
        .unwrap();
        let attr = p.tracked_entities[0].attributes[0]
            .value
            .as_deref()
            .unwrap();
        let dv = p.events[0].data_values[0].value.as_deref().unwrap();
        for v in [attr, dv] {
            assert_eq!(
                crate::value_type::check_attribute("TEXT", v),
                Err(crate::ValueError::NotScalar)
            );
        }
        assert_eq!(p.events[0].notes[0].value.as_deref(), Some("seen"));
    }

    #[test]
    fn bad_enums_and_dates_fail_the_payload() {
        assert!(
            serde_json::from_value::<TrackerPayload>(json!({"events":[{"status":"DONE"}]}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<TrackerPayload>(
                json!({"events":[{"occurredAt":"yesterday"}]})
            )
            .is_err()
        );
    }

    #[test]
    fn relationship_items_accept_both_shapes() {
        let r: Relationship = serde_json::from_value(json!({
            "relationshipType": "cbRelMthChd",
            "from": {"trackedEntity": {"trackedEntity": "PQfMcpmXeFE"}},
            "to": {"trackedEntity": "Kj6vYde4LHh"}
        }))
        .unwrap();
        assert_eq!(
            r.from.as_ref().and_then(RelationshipItem::single),
            Some((TrackerType::TrackedEntity, "PQfMcpmXeFE".into()))
        );
        assert_eq!(
            serde_json::to_value(r.to.unwrap()).unwrap(),
            json!({"trackedEntity": {"trackedEntity": "Kj6vYde4LHh"}})
        );
    }

    #[test]
    fn report_shape_matches_the_sdk_fixture() {
        let mut map = BTreeMap::new();
        for t in TrackerType::ALL {
            map.insert(
                t,
                TrackerTypeReport {
                    tracker_type: t,
                    stats: Stats::default(),
                    object_reports: vec![],
                },
            );
        }
        let r = TrackerImportReport {
            status: TrackerStatus::Ok,
            validation_report: ValidationReport::default(),
            stats: Stats::default(),
            bundle_report: Some(BundleReport {
                status: TrackerStatus::Ok,
                type_report_map: map,
                stats: Stats::default(),
            }),
            timings_stats: None,
            message: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "OK");
        assert!(v["validationReport"]["errorReports"].is_array());
        for k in ["TRACKED_ENTITY", "ENROLLMENT", "EVENT", "RELATIONSHIP"] {
            assert_eq!(v["bundleReport"]["typeReportMap"][k]["trackerType"], k);
        }
        assert_eq!(
            r.summary(),
            "Import complete with status OK, 0 created, 0 updated, 0 deleted, 0 ignored"
        );
    }

    #[test]
    fn messages_fill_their_arguments() {
        assert_eq!(
            ValidationCode::E1000.message(&["android", "cbClinicB01"]),
            "User: `android` has no write access to OrganisationUnit: `cbClinicB01`."
        );
        assert_eq!(
            ValidationCode::E1077.message(&["cbAttrFirst", "1200"]),
            "Attribute: `cbAttrFirst`, text value exceed the maximum allowed length: `cbAttrFirst`."
        );
    }
}
