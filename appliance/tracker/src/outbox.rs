//! Tracker records rendered for national: what the uplink posts to `POST /api/tracker`.
//!
//! The same renderer as the tablets' downloads, minus what national sets itself or ignores on
//! import (`createdAt`, `updatedAt`, `createdBy`, `updatedBy`, display names, `deleted`,
//! owners), so the bytes on the LTE link carry only data. Every object, note and relationship
//! keeps its UID: that is what makes a re-send an update on national, never a copy.

use clinicbox_dhis2::tracker::TrackerType;
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone};
use clinicbox_store::{Collection, ReadView, Record, StoreError};
use clinicbox_web::{ApiError, Snapshot};
use serde_json::{Map, Value};

use crate::export::render::Renderer;
use crate::model::{
    StoredEnrollment, StoredEvent, StoredRelationship, StoredTrackedEntity, StoredTransfer,
};
use crate::{NationalError, Tracker};

/// Program owners moved on the box (`PUT /api/tracker/ownership/transfer`), one record per
/// entity and program: the change log carries each move to the outbox.
pub const TRANSFERS: Collection = Collection::named("ownershipTransfers");

/// The key of a transfer record.
pub fn transfer_key(te: &str, program: &str) -> String {
    format!("{te}/{program}")
}

/// The transfer recorded under `key`, as national should receive it.
pub fn transfer(read: &ReadView, key: &str) -> Result<Option<StoredTransfer>, StoreError> {
    Ok(read
        .get(TRANSFERS, key)?
        .filter(|r| !r.deleted)
        .and_then(|r| r.json().ok()))
}

/// The tracker type stored in collection `c`, if it is one national takes.
pub fn tracker_type(c: &str) -> Option<TrackerType> {
    match c {
        n if n == Collection::TRACKED_ENTITIES.name() => Some(TrackerType::TrackedEntity),
        n if n == Collection::ENROLLMENTS.name() => Some(TrackerType::Enrollment),
        n if n == Collection::EVENTS.name() => Some(TrackerType::Event),
        n if n == Collection::RELATIONSHIPS.name() => Some(TrackerType::Relationship),
        _ => None,
    }
}

fn collection(t: TrackerType) -> Collection {
    match t {
        TrackerType::TrackedEntity => Collection::TRACKED_ENTITIES,
        TrackerType::Enrollment => Collection::ENROLLMENTS,
        TrackerType::Event => Collection::EVENTS,
        TrackerType::Relationship => Collection::RELATIONSHIPS,
    }
}

/// One stored object as national should receive it.
#[derive(Debug, Clone, PartialEq)]
pub enum ForNational {
    /// Create or update this object (`importStrategy=CREATE_AND_UPDATE`).
    Upsert(Value),
    /// Delete it: only its UID (`importStrategy=DELETE`).
    Delete(Value),
}

/// Renders the current state of `uid` against metadata `snap` (one per batch); `None` if no
/// record exists (never written). Times the box stamped itself (`completedAt`) are written in
/// `national`'s zone when given: DHIS2 reads a timestamp without an offset in its own zone.
pub fn render(
    tracker: &Tracker,
    read: &ReadView,
    snap: &Snapshot,
    t: TrackerType,
    uid: &str,
    national: Option<&ServerTimeZone>,
) -> Result<Option<ForNational>, NationalError> {
    let Some(rec) = read.get(collection(t), uid)? else {
        return Ok(None);
    };
    // National's own version, pulled: nothing to send back.
    if crate::from_national::from_national(&rec) {
        return Ok(None);
    }
    if rec.deleted {
        return Ok(Some(ForNational::Delete(uid_only(t, uid))));
    }
    let r = Renderer {
        state: tracker.api(),
        snap,
        read,
    };
    let mut value = for_import(upsert(&r, read, t, uid, &rec)?);
    if let Some(zone) = national.filter(|z| z.name() != tracker.zone().name()) {
        rezone(&mut value, "completedAt", tracker.zone(), zone);
    }
    Ok(Some(ForNational::Upsert(value)))
}

/// Rewrites timestamp field `key` of `v` from the box's zone to national's.
fn rezone(v: &mut Value, key: &str, from: &ServerTimeZone, to: &ServerTimeZone) {
    let Some(field) = v.get_mut(key) else { return };
    let moved = field
        .as_str()
        .and_then(|s| Dhis2Timestamp::parse_lenient(s).ok())
        .and_then(|ts| ts.to_epoch_ms(from).ok())
        .and_then(|ms| Dhis2Timestamp::from_epoch_ms(ms, to).ok());
    if let Some(ts) = moved {
        *field = Value::String(ts.to_string());
    }
}

fn upsert(
    r: &Renderer<'_>,
    read: &ReadView,
    t: TrackerType,
    uid: &str,
    rec: &Record,
) -> Result<Value, ApiError> {
    let json = |v: Result<Value, serde_json::Error>| {
        v.map_err(|e| ApiError::Internal(format!("rendering for national: {e}")))
    };
    let stored = |e: serde_json::Error| ApiError::Internal(format!("reading a stored object: {e}"));
    // The renderer falls back to the box's record times for the client times; national must
    // get only what a tablet said (a box time in the box's zone would be read in national's).
    let (mut value, client) = match t {
        TrackerType::TrackedEntity => {
            let (te, stored) = r.tracked_entity(uid, rec, None, true)?;
            let client = (stored.created_at_client, stored.updated_at_client);
            (json(serde_json::to_value(te))?, client)
        }
        TrackerType::Enrollment => {
            // Program attributes travel with the enrollment, as DHIS2 imports them.
            let e: StoredEnrollment = rec.json().map_err(stored)?;
            let te = read
                .get(Collection::TRACKED_ENTITIES, &e.tracked_entity)?
                .and_then(|rec| rec.json::<StoredTrackedEntity>().ok());
            let mut en = r.enrollment(uid, rec, te.as_ref())?;
            // The entity type's attributes travel on the tracked entity; national merges both
            // into the same values, so sending them twice only costs bytes.
            if let Some(te) = &te {
                let on_te = r.attribute_filter(&te.tracked_entity_type, None);
                en.attributes.retain(|a| !on_te.contains(&a.attribute));
            }
            (
                json(serde_json::to_value(en))?,
                (e.created_at_client, e.updated_at_client),
            )
        }
        TrackerType::Event => {
            let e: StoredEvent = rec.json().map_err(stored)?;
            let v = json(serde_json::to_value(r.event(uid, rec)?))?;
            (v, (e.created_at_client, e.updated_at_client))
        }
        TrackerType::Relationship => {
            let rel: StoredRelationship = rec.json().map_err(stored)?;
            let v = json(serde_json::to_value(r.relationship(uid, rec)?))?;
            (v, (rel.created_at_client, None))
        }
    };
    if let Some(m) = value.as_object_mut() {
        for (key, ts) in [("createdAtClient", client.0), ("updatedAtClient", client.1)] {
            match ts {
                Some(ts) => m.insert(key.into(), json(serde_json::to_value(ts))?),
                None => m.remove(key),
            };
        }
    }
    Ok(value)
}

fn uid_only(t: TrackerType, uid: &str) -> Value {
    let key = match t {
        TrackerType::TrackedEntity => "trackedEntity",
        TrackerType::Enrollment => "enrollment",
        TrackerType::Event => "event",
        TrackerType::Relationship => "relationship",
    };
    let mut m = Map::new();
    m.insert(key.into(), Value::String(uid.into()));
    Value::Object(m)
}

/// Flags whose `false` is DHIS2's default: left out, they mean the same on create and update.
const FALSE_BY_DEFAULT: &[&str] = &["followUp", "inactive", "providedElsewhere"];

/// Fields national sets itself or ignores on import, at any depth.
const SERVER_SET: &[&str] = &[
    "createdAt",
    "updatedAt",
    "createdBy",
    "updatedBy",
    "deleted",
    "potentialDuplicate",
    "programOwners",
    "relationshipName",
    "bidirectional",
    "displayName",
    "code",
    "valueType",
    // When a note was stored: national stamps its own.
    "storedAt",
];

/// Whether field `k` with value `v` says nothing national needs.
fn left_out(k: &str, v: &Value) -> bool {
    SERVER_SET.contains(&k)
        || (FALSE_BY_DEFAULT.contains(&k) && v == &Value::Bool(false))
        || v.is_null()
        || v.as_array().is_some_and(|a| a.is_empty())
}

/// Drops [`SERVER_SET`] fields, [`FALSE_BY_DEFAULT`] flags that are false, nulls and empty
/// lists, recursively.
pub fn for_import(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, v)| !left_out(k, v))
                .map(|(k, v)| (k, for_import(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(for_import).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_set_fields_and_empty_lists_are_left_out_at_every_depth() {
        let v = json!({
            "event": "a1234567890", "createdAt": "x", "deleted": false, "notes": [], "followUp": false,
            "dataValues": [{"dataElement": "d1234567890", "value": "3", "updatedAt": "y", "createdBy": {"uid": "u"}}],
            "geometry": null
        });
        assert_eq!(
            for_import(v),
            json!({"event": "a1234567890", "dataValues": [{"dataElement": "d1234567890", "value": "3"}]})
        );
    }

    #[test]
    fn a_time_the_box_stamped_is_written_in_national_s_zone() {
        let mut v = json!({"completedAt": "2026-12-06T08:16:57.044", "occurredAt": "2026-12-01T09:05:00.000"});
        let utc = ServerTimeZone::utc();
        let nairobi = ServerTimeZone::new("Africa/Nairobi").expect("zone");
        rezone(&mut v, "completedAt", &utc, &nairobi);
        assert_eq!(v["completedAt"], "2026-12-06T11:16:57.044");
        assert_eq!(
            v["occurredAt"], "2026-12-01T09:05:00.000",
            "the tablet's own times stay"
        );
    }

    #[test]
    fn a_delete_carries_only_the_uid() {
        assert_eq!(
            uid_only(TrackerType::Relationship, "r1234567890"),
            json!({"relationship": "r1234567890"})
        );
    }
}
