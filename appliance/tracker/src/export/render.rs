//! Stored tracker records → DHIS2 2.42 JSON objects. Audit timestamps come from the store's
//! clock and are written exactly `yyyy-MM-ddTHH:mm:ss.SSS` in the server zone.

use std::collections::HashSet;

use clinicbox_api::ApiState;
use clinicbox_dhis2::Dhis2Timestamp;
use clinicbox_dhis2::tracker::{
    Attribute, DataValue, Enrollment, Event, Note, ProgramOwner, Relationship, TrackedEntity,
    UserInfo,
};
use clinicbox_store::{Collection, ReadView, Record};
use clinicbox_web::{ApiError, Snapshot};
use serde_json::Value;

use crate::meta::{Meta, str_of};
use crate::model::{
    StoredEnrollment, StoredEvent, StoredNote, StoredRelationship, StoredTrackedEntity,
};

pub struct Renderer<'a> {
    pub state: &'a ApiState,
    pub snap: &'a Snapshot,
    pub read: &'a ReadView,
}

fn json_err(e: serde_json::Error) -> ApiError {
    ApiError::Internal(format!("rendering a tracker object: {e}"))
}

impl<'a> Renderer<'a> {
    pub fn ts(&self, ms: u64) -> Option<Dhis2Timestamp> {
        Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(i64::MAX), self.state.zone()).ok()
    }

    pub fn record(&self, c: Collection, uid: &str) -> Result<Option<Record>, ApiError> {
        Ok(self.read.get(c, uid)?)
    }

    /// `{uid, username, firstName, surname}` of a username, from the metadata.
    fn user_info(&self, username: Option<&str>) -> Option<UserInfo> {
        let username = username?;
        let uid = self.snap.credential(username).map(|c| c.uid.clone());
        let user = uid.as_deref().and_then(|u| self.snap.get("users", u));
        let s = |k: &str| user.and_then(|o| str_of(o, k)).map(str::to_string);
        Some(UserInfo {
            uid,
            username: Some(username.to_string()),
            first_name: s("firstName"),
            surname: s("surname"),
            display_name: None,
        })
    }

    fn notes(&self, notes: &[StoredNote]) -> Vec<Note> {
        notes
            .iter()
            .map(|n| Note {
                note: Some(n.note.clone()),
                value: Some(n.value.clone()),
                stored_at: self.ts(n.stored_ms),
                stored_by: n.stored_by.clone(),
                created_by: self.user_info(n.stored_by.as_deref()),
            })
            .collect()
    }

    /// The attributes to show: the entity type's, plus the program's when one is given.
    pub fn attribute_filter(&self, tet: &str, program: Option<&str>) -> HashSet<String> {
        let mut set: HashSet<String> = Meta::new(self.snap)
            .tet(tet)
            .map(|t| Meta::tet_attributes(t).into_iter().map(|m| m.uid).collect())
            .unwrap_or_default();
        if let Some(p) = program.and_then(|p| self.snap.get("programs", p)) {
            set.extend(Meta::program_attributes(p).into_iter().map(|m| m.uid));
        }
        set
    }

    fn attributes(&self, te: &StoredTrackedEntity, keep: &HashSet<String>) -> Vec<Attribute> {
        te.attributes
            .iter()
            .filter(|a| keep.contains(&a.attribute))
            .map(|a| {
                let m = self.snap.get("trackedEntityAttributes", &a.attribute);
                Attribute {
                    attribute: a.attribute.clone(),
                    code: m.and_then(|m| str_of(m, "code")).map(str::to_string),
                    display_name: m.and_then(|m| str_of(m, "name")).map(str::to_string),
                    created_at: self.ts(a.created_ms),
                    updated_at: self.ts(a.updated_ms),
                    stored_by: a.stored_by.clone(),
                    value_type: m.and_then(|m| str_of(m, "valueType")).map(str::to_string),
                    value: Some(a.value.clone()),
                }
            })
            .collect()
    }

    /// A tracked entity without its collections filled (callers add what `fields` asks for).
    pub fn tracked_entity(
        &self,
        uid: &str,
        rec: &Record,
        program: Option<&str>,
        with_attributes: bool,
    ) -> Result<(TrackedEntity, StoredTrackedEntity), ApiError> {
        let te: StoredTrackedEntity = rec.json().map_err(json_err)?;
        let keep = self.attribute_filter(&te.tracked_entity_type, program);
        let out = TrackedEntity {
            tracked_entity: Some(uid.to_string()),
            tracked_entity_type: Some(te.tracked_entity_type.clone()),
            org_unit: Some(te.org_unit.clone()),
            created_at: self.ts(rec.created_ms),
            created_at_client: te.created_at_client.or(self.ts(rec.created_ms)),
            updated_at: self.ts(rec.updated_ms),
            updated_at_client: te.updated_at_client.or(self.ts(rec.updated_ms)),
            inactive: Some(te.inactive),
            deleted: Some(rec.deleted),
            potential_duplicate: Some(te.potential_duplicate),
            stored_by: te.created_by.clone(),
            created_by: self.user_info(te.created_by.as_deref()),
            updated_by: self.user_info(te.updated_by.as_deref()),
            geometry: te.geometry.clone(),
            attributes: if with_attributes {
                self.attributes(&te, &keep)
            } else {
                Vec::new()
            },
            enrollments: Vec::new(),
            relationships: Vec::new(),
            program_owners: te
                .program_owners
                .iter()
                .filter(|o| program.is_none_or(|p| p == o.program))
                .map(|o| ProgramOwner {
                    org_unit: o.org_unit.clone(),
                    tracked_entity: uid.to_string(),
                    program: o.program.clone(),
                })
                .collect(),
        };
        Ok((out, te))
    }

    pub fn enrollment(
        &self,
        uid: &str,
        rec: &Record,
        te: Option<&StoredTrackedEntity>,
    ) -> Result<Enrollment, ApiError> {
        let e: StoredEnrollment = rec.json().map_err(json_err)?;
        let attributes = match te {
            Some(te) => {
                let keep: HashSet<String> = self
                    .snap
                    .get("programs", &e.program)
                    .map(|p| {
                        Meta::program_attributes(p)
                            .into_iter()
                            .map(|m| m.uid)
                            .collect()
                    })
                    .unwrap_or_default();
                self.attributes(te, &keep)
            }
            None => Vec::new(),
        };
        Ok(Enrollment {
            enrollment: Some(uid.to_string()),
            tracked_entity: Some(e.tracked_entity.clone()),
            program: Some(e.program.clone()),
            status: Some(e.status),
            org_unit: Some(e.org_unit.clone()),
            created_at: self.ts(rec.created_ms),
            created_at_client: e.created_at_client.or(self.ts(rec.created_ms)),
            updated_at: self.ts(rec.updated_ms),
            updated_at_client: e.updated_at_client.or(self.ts(rec.updated_ms)),
            enrolled_at: Some(e.enrolled_at),
            occurred_at: e.occurred_at.or(Some(e.enrolled_at)),
            completed_at: e.completed_at,
            completed_by: e.completed_by.clone(),
            follow_up: Some(e.follow_up),
            deleted: Some(rec.deleted),
            stored_by: e.created_by.clone(),
            created_by: self.user_info(e.created_by.as_deref()),
            updated_by: self.user_info(e.updated_by.as_deref()),
            attribute_option_combo: e.attribute_option_combo.clone(),
            geometry: e.geometry.clone(),
            attributes,
            events: Vec::new(),
            notes: self.notes(&e.notes),
            relationships: Vec::new(),
        })
    }

    pub fn event(&self, uid: &str, rec: &Record) -> Result<Event, ApiError> {
        let e: StoredEvent = rec.json().map_err(json_err)?;
        Ok(Event {
            event: Some(uid.to_string()),
            status: Some(e.status),
            program: Some(e.program.clone()),
            program_stage: Some(e.program_stage.clone()),
            enrollment: e.enrollment.clone(),
            tracked_entity: e.tracked_entity.clone(),
            org_unit: Some(e.org_unit.clone()),
            occurred_at: e.occurred_at,
            scheduled_at: e.scheduled_at,
            completed_at: e.completed_at,
            completed_by: e.completed_by.clone(),
            stored_by: e.created_by.clone(),
            follow_up: Some(e.follow_up),
            deleted: Some(rec.deleted),
            created_at: self.ts(rec.created_ms),
            created_at_client: e.created_at_client.or(self.ts(rec.created_ms)),
            updated_at: self.ts(rec.updated_ms),
            updated_at_client: e.updated_at_client.or(self.ts(rec.updated_ms)),
            attribute_option_combo: e.attribute_option_combo.clone(),
            attribute_category_options: e.attribute_category_options.clone(),
            assigned_user: e.assigned_user.clone(),
            created_by: self.user_info(e.created_by.as_deref()),
            updated_by: self.user_info(e.updated_by.as_deref()),
            geometry: e.geometry.clone(),
            data_values: e
                .data_values
                .iter()
                .map(|d| DataValue {
                    data_element: d.data_element.clone(),
                    value: Some(d.value.clone()),
                    provided_elsewhere: Some(d.provided_elsewhere),
                    created_at: self.ts(d.created_ms),
                    updated_at: self.ts(d.updated_ms),
                    stored_by: d.stored_by.clone(),
                    created_by: self.user_info(d.stored_by.as_deref()),
                    updated_by: self.user_info(d.stored_by.as_deref()),
                })
                .collect(),
            notes: self.notes(&e.notes),
            relationships: Vec::new(),
        })
    }

    pub fn relationship(&self, uid: &str, rec: &Record) -> Result<Relationship, ApiError> {
        let r: StoredRelationship = rec.json().map_err(json_err)?;
        let name = self
            .snap
            .get("relationshipTypes", &r.relationship_type)
            .and_then(|t| str_of(t, "name"))
            .map(str::to_string);
        Ok(Relationship {
            relationship: Some(uid.to_string()),
            relationship_type: Some(r.relationship_type.clone()),
            relationship_name: name,
            bidirectional: Some(r.bidirectional),
            created_at: self.ts(rec.created_ms),
            updated_at: self.ts(rec.updated_ms),
            created_at_client: r.created_at_client.or(self.ts(rec.created_ms)),
            from: Some(r.from.clone()),
            to: Some(r.to.clone()),
            deleted: Some(rec.deleted),
        })
    }
}

/// A wire object as a JSON map, for projection.
pub fn to_map<T: serde::Serialize>(v: &T) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::to_value(v).map_err(json_err)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::Internal(
            "tracker object is not a JSON object".into(),
        )),
    }
}
