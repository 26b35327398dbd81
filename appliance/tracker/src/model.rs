//! Tracker objects as the box stores them (JSON bodies in the store's `TRACKED_ENTITIES`,
//! `ENROLLMENTS`, `EVENTS` and `RELATIONSHIPS` collections, keyed by UID).
//!
//! `createdAt`/`updatedAt` of the objects themselves are the record's `created_ms`/`updated_ms`
//! (the store's clock); per-value and per-note times are kept in the body as milliseconds. A
//! time of 0 in a planned body means "the commit's time" and is filled in by [`Stamp`] inside
//! the write, where the commit time is known. Users are kept as usernames and expanded to
//! DHIS2's `{uid, username, firstName, surname}` when served.

use clinicbox_dhis2::tracker::{EnrollmentStatus, EventStatus, RelationshipItem, UserInfo};
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One attribute value of a tracked entity (TET and program attributes alike, as in DHIS2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAttribute {
    pub attribute: String,
    pub value: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
}

/// One data value of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDataValue {
    pub data_element: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provided_elsewhere: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Username of the last writer (served as `storedBy`, `createdBy` and `updatedBy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
}

/// A note (append-only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredNote {
    pub note: String,
    pub value: String,
    pub stored_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// Which program owns a tracked entity where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredOwner {
    pub program: String,
    pub org_unit: String,
}

/// A program owner moved on the box, for national: the latest transfer of one entity in one
/// program (collection [`crate::outbox::TRANSFERS`], key `trackedEntity/program`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTransfer {
    pub tracked_entity: String,
    pub program: String,
    pub org_unit: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTrackedEntity {
    pub tracked_entity_type: String,
    pub org_unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Value>,
    #[serde(default)]
    pub inactive: bool,
    #[serde(default)]
    pub potential_duplicate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(default)]
    pub attributes: Vec<StoredAttribute>,
    #[serde(default)]
    pub program_owners: Vec<StoredOwner>,
    /// National's own version, pulled by the uplink: the outbox does not send it back. Any
    /// write from a tablet clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_national: bool,
}

impl StoredTrackedEntity {
    pub fn attribute(&self, uid: &str) -> Option<&StoredAttribute> {
        self.attributes.iter().find(|a| a.attribute == uid)
    }

    pub fn owner(&self, program: &str) -> Option<&str> {
        self.program_owners
            .iter()
            .find(|o| o.program == program)
            .map(|o| o.org_unit.as_str())
    }

    /// Makes `org_unit` the owner in `program`.
    pub fn set_owner(&mut self, program: &str, org_unit: &str) {
        match self
            .program_owners
            .iter_mut()
            .find(|o| o.program == program)
        {
            Some(o) => o.org_unit = org_unit.to_string(),
            None => self.program_owners.push(StoredOwner {
                program: program.to_string(),
                org_unit: org_unit.to_string(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEnrollment {
    pub tracked_entity: String,
    pub program: String,
    pub org_unit: String,
    pub status: EnrollmentStatus,
    pub enrolled_at: Dhis2Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_by: Option<String>,
    #[serde(default)]
    pub follow_up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    #[serde(default)]
    pub notes: Vec<StoredNote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// Set while planning: `completedAt` becomes the commit time.
    #[serde(skip)]
    pub complete_now: bool,
    /// National's own version, pulled by the uplink: the outbox does not send it back. Any
    /// write from a tablet clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_national: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_entity: Option<String>,
    pub program: String,
    pub program_stage: String,
    pub org_unit: String,
    pub status: EventStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_by: Option<String>,
    #[serde(default)]
    pub follow_up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_category_options: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_user: Option<UserInfo>,
    #[serde(default)]
    pub data_values: Vec<StoredDataValue>,
    #[serde(default)]
    pub notes: Vec<StoredNote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_client: Option<Dhis2Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(skip)]
    pub complete_now: bool,
    /// National's own version, pulled by the uplink: the outbox does not send it back. Any
    /// write from a tablet clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_national: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRelationship {
    pub relationship_type: String,
    pub from: RelationshipItem,
    pub to: RelationshipItem,
    #[serde(default)]
    pub bidirectional: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_client: Option<Dhis2Timestamp>,
    /// National's own version, pulled by the uplink: the outbox does not send it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_national: bool,
}

/// Fills "commit time" placeholders (0 ms, `complete_now`) with the commit's time.
pub trait Stamp {
    fn stamp(&mut self, now_ms: u64, zone: &ServerTimeZone);
}

fn ts(ms: u64, zone: &ServerTimeZone) -> Option<Dhis2Timestamp> {
    Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(i64::MAX), zone).ok()
}

fn fix(ms: &mut u64, now: u64) {
    if *ms == 0 {
        *ms = now;
    }
}

fn stamp_notes(notes: &mut [StoredNote], now: u64) {
    for n in notes {
        fix(&mut n.stored_ms, now);
    }
}

impl Stamp for StoredTrackedEntity {
    fn stamp(&mut self, now: u64, _: &ServerTimeZone) {
        for a in &mut self.attributes {
            fix(&mut a.created_ms, now);
            fix(&mut a.updated_ms, now);
        }
    }
}

impl Stamp for StoredEnrollment {
    fn stamp(&mut self, now: u64, zone: &ServerTimeZone) {
        stamp_notes(&mut self.notes, now);
        if std::mem::take(&mut self.complete_now) {
            self.completed_at = ts(now, zone);
        }
    }
}

impl Stamp for StoredEvent {
    fn stamp(&mut self, now: u64, zone: &ServerTimeZone) {
        stamp_notes(&mut self.notes, now);
        for d in &mut self.data_values {
            fix(&mut d.created_ms, now);
            fix(&mut d.updated_ms, now);
        }
        if std::mem::take(&mut self.complete_now) {
            self.completed_at = ts(now, zone);
        }
    }
}

impl Stamp for StoredRelationship {
    fn stamp(&mut self, _: u64, _: &ServerTimeZone) {}
}
