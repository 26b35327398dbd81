//! Plans tracked entities: validation, attribute merge and unique-value claims.

use std::collections::HashSet;

use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{Attribute, TrackedEntity, TrackerType, ValidationCode};
use clinicbox_dhis2::value_type;

use super::{Admission, Errs, Kind, Obj, Planner, Refusal, Slot, is_set};
use crate::files::FileOwner;
use crate::meta::{self, Meta, str_of};
use crate::model::{StoredAttribute, StoredTrackedEntity};

use TrackerType::TrackedEntity as TE;
use ValidationCode as C;

impl Planner<'_> {
    pub(super) fn tracked_entity(&mut self, index: usize, te: TrackedEntity) {
        let uid = te.tracked_entity.clone().unwrap_or_default();
        let admission = Admission {
            label: "TrackedEntity",
            deleted: C::E1114,
            exists: C::E1002,
            missing: C::E1063,
        };
        let Some((mut e, live)) = self.admit(Errs::new(TE, &uid), index, &admission) else {
            return;
        };
        let existing = if live {
            match self.te_slot(&uid) {
                Some(s) => Some((s.stored.clone(), s.created_ms)),
                None => {
                    e.add(C::E1063, &[&uid]);
                    return self.fail(e, index);
                }
            }
        } else {
            None
        };
        let tet = is_set(&te.tracked_entity_type)
            .map(str::to_string)
            .or_else(|| {
                existing
                    .as_ref()
                    .map(|(s, _)| s.tracked_entity_type.clone())
            });
        let org_unit = is_set(&te.org_unit)
            .map(str::to_string)
            .or_else(|| existing.as_ref().map(|(s, _)| s.org_unit.clone()));
        let Some(tet) = tet else {
            e.add(C::E1121, &["trackedEntityType"]);
            return self.fail(e, index);
        };
        let Some(org_unit) = org_unit else {
            e.add(C::E1121, &["orgUnit"]);
            return self.fail(e, index);
        };
        let Some(tet_obj) = self.meta.tet(&tet) else {
            e.add(C::E1005, &[&tet]);
            return self.fail(e, index);
        };
        if !self.org_unit_known(&org_unit) {
            e.add(C::E1049, &[&org_unit]);
            return self.fail(e, index);
        }
        self.te_rights(
            &mut e,
            &uid,
            existing.as_ref().map(|(old, _)| old),
            &tet,
            &org_unit,
        );
        if !self.can_write(&tet, tet_obj) {
            e.add(C::E1001, &[&self.user.username, &tet]);
        }
        let mut stored = existing
            .as_ref()
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| StoredTrackedEntity {
                tracked_entity_type: tet.clone(),
                org_unit: org_unit.clone(),
                created_at_client: te.created_at_client,
                created_by: Some(self.user.username.clone()),
                ..StoredTrackedEntity::default()
            });
        stored.org_unit = org_unit;
        self.apply_te_fields(&mut stored, &te);
        self.merge_attributes(&mut e, &uid, &mut stored.attributes, &te.attributes, None);
        if !e.any() {
            for m in Meta::tet_attributes(tet_obj) {
                if m.mandatory && stored.attribute(&m.uid).is_none() {
                    e.add(C::E1090, &[&m.uid, &tet, &uid]);
                }
            }
        }
        if e.any() {
            return self.fail(e, index);
        }
        self.place_te(index, uid, stored, existing);
    }

    /// Who may write this entity: a new one needs capture scope on its org unit; an update,
    /// write access to the entity as stored, and a move, both org units.
    fn te_rights(
        &self,
        e: &mut Errs,
        uid: &str,
        existing: Option<&StoredTrackedEntity>,
        tet: &str,
        org_unit: &str,
    ) {
        match existing {
            None => {
                if !self.can_capture(org_unit) {
                    e.add(C::E1000, &[&self.user.username, org_unit]);
                }
            }
            Some(old) => {
                if old.tracked_entity_type != tet {
                    e.add(C::E1126, &["trackedEntityType"]);
                }
                // A move needs both org units; an update in place, write access to the entity
                // as stored (DHIS2's E1003), which its program owners and temporary owners have.
                if old.org_unit != org_unit && !self.can_capture(org_unit) {
                    e.add(C::E1000, &[&self.user.username, org_unit]);
                }
                let writable = if old.org_unit == org_unit {
                    self.te_writable(uid, old)
                } else {
                    self.can_capture(&old.org_unit)
                };
                if !writable {
                    e.add(C::E1003, &[&self.user.username, uid]);
                }
            }
        }
    }

    /// The entity's own fields the payload sets (only those sent change).
    fn apply_te_fields(&self, stored: &mut StoredTrackedEntity, te: &TrackedEntity) {
        // Owners move only by transfer; national's own data says where they are now.
        if self.national {
            for o in te
                .program_owners
                .iter()
                .filter(|o| !o.program.is_empty() && !o.org_unit.is_empty())
            {
                stored.set_owner(&o.program, &o.org_unit);
            }
        }
        if te.geometry.is_some() {
            stored.geometry = te.geometry.clone();
        }
        if let Some(i) = te.inactive {
            stored.inactive = i;
        }
        if let Some(d) = te.potential_duplicate {
            stored.potential_duplicate = d;
        }
        if te.updated_at_client.is_some() {
            stored.updated_at_client = te.updated_at_client;
        }
    }

    /// Records the planned entity and its outcome; an unchanged one is not rewritten.
    fn place_te(
        &mut self,
        index: usize,
        uid: String,
        mut stored: StoredTrackedEntity,
        existing: Option<(StoredTrackedEntity, Option<u64>)>,
    ) {
        let changed = existing.as_ref().is_none_or(|(old, _)| *old != stored);
        if changed && existing.is_some() {
            stored.updated_by = Some(self.user.username.clone());
        }
        let kind = if existing.is_some() {
            Kind::Updated
        } else {
            Kind::Created
        };
        let created_ms = existing.as_ref().and_then(|(_, c)| *c);
        if !self.tes.contains_key(&uid) {
            self.order.push((TE, uid.clone()));
        }
        self.tes.insert(
            uid.clone(),
            Slot {
                stored,
                created_ms,
                dirty: changed,
                deleted: false,
            },
        );
        self.outcome(TE, &uid, index, kind);
    }

    /// Merges incoming attribute values into `stored` (only sent values change; a null value
    /// deletes). `allowed` restricts enrollment attributes to the program's.
    pub(super) fn merge_attributes(
        &mut self,
        e: &mut Errs,
        te_uid: &str,
        stored: &mut Vec<StoredAttribute>,
        incoming: &[Attribute],
        allowed: Option<&HashSet<String>>,
    ) {
        let owner = FileOwner::TrackedEntity(te_uid.to_string());
        for a in incoming {
            let attr = a.attribute.as_str();
            let Some(obj) = self.meta.attribute(attr).filter(|_| Uid::is_valid(attr)) else {
                e.add(C::E1006, &[attr]);
                continue;
            };
            if allowed.is_some_and(|set| !set.contains(attr)) {
                e.add(C::E1019, &[attr]);
                continue;
            }
            let pos = stored.iter().position(|s| s.attribute == attr);
            let checked =
                match is_set(&a.value).map(|v| (v, self.check_value(obj, v, true, &owner))) {
                    None | Some((_, Ok(None))) => None,
                    Some((_, Ok(Some(v)))) => Some(v),
                    Some((sent, Err(refusal))) => {
                        refuse_attribute(e, attr, obj, sent, refusal);
                        continue;
                    }
                };
            let Some(value) = checked.as_deref() else {
                if let Some(p) = pos {
                    stored.remove(p);
                }
                continue;
            };
            if meta::bool_of(obj, "unique") && !self.unique_ok(attr, value, te_uid) {
                e.add(C::E1064, &[value, attr]);
                continue;
            }
            match pos {
                Some(p) if stored[p].value == value => {}
                Some(p) => {
                    stored[p].value = value.to_string();
                    stored[p].updated_ms = 0;
                    stored[p].stored_by = Some(self.user.username.clone());
                }
                None => stored.push(StoredAttribute {
                    attribute: attr.to_string(),
                    value: value.to_string(),
                    created_ms: 0,
                    updated_ms: 0,
                    stored_by: Some(self.user.username.clone()),
                }),
            }
        }
    }

    /// No other live tracked entity holds `value` for the unique attribute `attr`.
    fn unique_ok(&mut self, attr: &str, value: &str, te: &str) -> bool {
        let key = (attr.to_string(), value.to_lowercase());
        if let Some(holder) = self.claims.get(&key) {
            if holder != te {
                return false;
            }
        }
        let Ok(a) = Uid::try_from(attr) else {
            return false;
        };
        let holders = match self.cat.holders(self.read, a, value) {
            Ok(h) => h,
            Err(err) => {
                // Refused rather than risk a duplicate; the tablet sends it again later.
                tracing::error!(error = %err, "the attribute-value index could not be read");
                return false;
            }
        };
        for h in &holders {
            let h = h.as_str();
            if h == te {
                continue;
            }
            // A holder changed or deleted earlier in this payload may have let go of it.
            if let Some(s) = self.tes.get(h) {
                let still = !s.deleted
                    && s.stored
                        .attribute(attr)
                        .is_some_and(|v| v.value.to_lowercase() == key.1);
                if !still {
                    continue;
                }
            }
            return false;
        }
        self.claims.insert(key, te.to_string());
        true
    }
}

/// Reports a refused attribute value with DHIS2's code. `Errs::add` cuts every argument, so the
/// value sent is echoed at most as a short prefix; E1077 names the attribute, never the value.
fn refuse_attribute(e: &mut Errs, attr: &str, obj: &Obj, sent: &str, refusal: Refusal) {
    match refusal {
        Refusal::Invalid(why) => e.add(
            C::E1007,
            &[str_of(obj, "valueType").unwrap_or("TEXT"), &why.to_string()],
        ),
        Refusal::AttributeTooLong => e.add(
            C::E1077,
            &[attr, &value_type::MAX_ATTRIBUTE_VALUE_LENGTH.to_string()],
        ),
        Refusal::NotAnOption(option_set) => e.add(C::E1125, &[sent, &option_set]),
        Refusal::NoFile => e.add(C::E1084, &[sent]),
        Refusal::FileTaken => e.add(C::E1009, &[sent]),
    }
}
