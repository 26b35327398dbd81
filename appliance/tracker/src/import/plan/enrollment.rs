//! Plans enrollments: what one refers to and who may write it, its dates and status rules, the
//! program's attributes; each a phase of [`Planner::enrollment`].

use std::collections::HashSet;

use clinicbox_dhis2::tracker::{Enrollment, EnrollmentStatus, TrackerType, ValidationCode};
use clinicbox_dhis2::{Dhis2Timestamp, Uid};

use super::{Admission, Errs, Exists, Kind, Obj, Planner, Slot, is_set};
use crate::meta::{self, Meta};
use crate::model::{StoredAttribute, StoredEnrollment, StoredTrackedEntity};

use TrackerType::{Enrollment as EN, TrackedEntity as TE};
use ValidationCode as C;

/// What an enrollment refers to: its program, tracked entity (as stored or planned) and org
/// unit.
struct Refs<'a> {
    program: String,
    prog: &'a Obj,
    te: String,
    te_stored: StoredTrackedEntity,
    org_unit: String,
}

impl<'a> Planner<'a> {
    /// Plans one enrollment, in DHIS2's order: admission, what it refers to and who may write
    /// it, its dates and status rules, the program's attributes; then the stored enrollment and
    /// its entity's side (attributes, first owner).
    pub(super) fn enrollment(&mut self, index: usize, en: Enrollment) {
        let uid = en.enrollment.clone().unwrap_or_default();
        let Some((mut e, existing)) = self.admit_enrollment(index, &uid) else {
            return;
        };
        let old = existing.as_ref().map(|(s, _)| s);
        let Some(refs) = self.enrollment_refs(&mut e, &en, old, &uid) else {
            return self.fail(e, index);
        };
        let Some((status, enrolled_at)) = self.enrollment_rules(&mut e, &en, old, &uid, &refs)
        else {
            return self.fail(e, index);
        };
        let attrs = self.enrollment_attributes(&mut e, &en, &uid, &refs);
        let aoc = is_set(&en.attribute_option_combo)
            .map(str::to_string)
            .or_else(|| old.and_then(|o| o.attribute_option_combo.clone()))
            .or_else(|| self.default_coc());
        if e.any() {
            return self.fail(e, index);
        }
        let mut stored = old
            .cloned()
            .unwrap_or_else(|| self.new_enrollment(&en, &refs, status, enrolled_at));
        stored.org_unit = refs.org_unit.clone();
        stored.enrolled_at = enrolled_at;
        stored.attribute_option_combo = aoc;
        self.apply_enrollment(&mut stored, &en, status);
        let mut notes = std::mem::take(&mut stored.notes);
        self.merge_notes(EN, &uid, &mut notes, en.notes);
        stored.notes = notes;
        let created_ms = existing.as_ref().and_then(|(_, c)| *c);
        self.record_enrollment(index, &uid, stored, old, created_ms, &refs, attrs);
    }

    /// Admission, and the enrollment as stored or planned earlier in this import.
    #[allow(clippy::type_complexity)]
    fn admit_enrollment(
        &mut self,
        index: usize,
        uid: &str,
    ) -> Option<(Errs, Option<(StoredEnrollment, Option<u64>)>)> {
        let admission = Admission {
            label: "Enrollment",
            deleted: C::E1113,
            exists: C::E1080,
            missing: C::E1081,
        };
        let (mut e, live) = self.admit(Errs::new(EN, uid), index, &admission)?;
        if !live {
            return Some((e, None));
        }
        match self.en_slot(uid) {
            Some(s) => {
                let existing = (s.stored.clone(), s.created_ms);
                Some((e, Some(existing)))
            }
            None => {
                e.add(C::E1081, &[uid]);
                self.fail(e, index);
                None
            }
        }
    }

    /// Its program (a tracker program), tracked entity (live, of the program's type) and org
    /// unit; the capture scope, the program's assignment and sharing, and the owner (E1102),
    /// judged on the enrollment as stored. `None`: a failure that stops the checks.
    fn enrollment_refs(
        &mut self,
        e: &mut Errs,
        en: &Enrollment,
        old: Option<&StoredEnrollment>,
        uid: &str,
    ) -> Option<Refs<'a>> {
        let program = is_set(&en.program)
            .map(str::to_string)
            .or_else(|| old.map(|s| s.program.clone()));
        let te = is_set(&en.tracked_entity)
            .map(str::to_string)
            .or_else(|| old.map(|s| s.tracked_entity.clone()));
        let org_unit = is_set(&en.org_unit)
            .map(str::to_string)
            .or_else(|| old.map(|s| s.org_unit.clone()));
        for (v, name) in [
            (&program, "program"),
            (&te, "trackedEntity"),
            (&org_unit, "orgUnit"),
        ] {
            if v.is_none() {
                e.add(C::E1122, &[name]);
            }
        }
        let (Some(program), Some(te), Some(org_unit)) = (program, te, org_unit) else {
            return None;
        };
        let Some(prog) = self.meta.program(&program) else {
            e.add(C::E1069, &[&program]);
            return None;
        };
        if !Meta::is_tracker_program(prog) {
            e.add(C::E1014, &[&program]);
            return None;
        }
        if self.failed.contains(&te) {
            e.add(C::E5000, &["Enrollment", uid, "TrackedEntity", &te]);
            return None;
        }
        if self.exists(TE, &te) != Exists::Live {
            e.add(C::E1068, &[&te]);
            return None;
        }
        if !self.org_unit_known(&org_unit) {
            e.add(C::E1070, &[&org_unit]);
            return None;
        }
        if let Some(denied) =
            self.org_unit_denied(old.map(|o| o.org_unit.as_str()), &org_unit, true)
        {
            e.add(C::E1000, &[&self.user.username, &denied]);
        }
        if !self.program_offered(&program, &org_unit) {
            e.add(C::E1041, &[&org_unit, &program]);
        }
        if old.is_some_and(|o| o.program != program) {
            e.add(C::E1127, &["program"]);
        }
        if old.is_some_and(|o| o.tracked_entity != te) {
            e.add(C::E1127, &["trackedEntity"]);
        }
        if !self.can_write(&program, prog) {
            e.add(C::E1091, &[&self.user.username, &program]);
        }
        let Some(te_stored) = self.te_slot(&te).map(|s| s.stored.clone()) else {
            e.add(C::E1068, &[&te]);
            return None;
        };
        if Meta::program_tet(prog).as_deref() != Some(te_stored.tracked_entity_type.as_str()) {
            e.add(C::E1022, &[&te, &program]);
        }
        // Without an owner record the owner is where the enrollment is now (as stored), never
        // where the payload says it is.
        let owner = te_stored
            .owner(&program)
            .or(old.map(|o| o.org_unit.as_str()))
            .unwrap_or(org_unit.as_str())
            .to_string();
        if !self.owner_ok(prog, &program, &owner, &te) {
            e.add(C::E1102, &[&self.user.username, &te, &program]);
        }
        Some(Refs {
            program,
            prog,
            te,
            te_stored,
            org_unit,
        })
    }

    /// The enrollment date (required; not in the future unless the program allows it) and the
    /// status rules against the entity's other enrollments in the program (one active, or one
    /// at all when the program enrolls once). `None`: no enrollment date.
    fn enrollment_rules(
        &mut self,
        e: &mut Errs,
        en: &Enrollment,
        old: Option<&StoredEnrollment>,
        uid: &str,
        refs: &Refs<'a>,
    ) -> Option<(EnrollmentStatus, Dhis2Timestamp)> {
        let Some(enrolled_at) = en.enrolled_at.or_else(|| old.map(|s| s.enrolled_at)) else {
            e.add(C::E1025, &[]);
            return None;
        };
        if !meta::bool_of(refs.prog, "selectEnrollmentDatesInFuture") && self.future(&enrolled_at) {
            e.add(C::E1020, &[&enrolled_at.to_string()]);
        }
        let status = en
            .status
            .or_else(|| old.map(|s| s.status))
            .unwrap_or(EnrollmentStatus::Active);
        let becomes_active = status == EnrollmentStatus::Active
            && old.is_none_or(|o| o.status != EnrollmentStatus::Active);
        let others = self.other_enrollments(&refs.te, &refs.program, uid);
        if becomes_active && others.contains(&EnrollmentStatus::Active) {
            e.add(C::E1015, &[&refs.te, &refs.program]);
        }
        if old.is_none() && meta::bool_of(refs.prog, "onlyEnrollOnce") && !others.is_empty() {
            e.add(C::E1016, &[&refs.te, &refs.program]);
        }
        Some((status, enrolled_at))
    }

    /// The program's attributes sent with the enrollment, merged into the entity's (where DHIS2
    /// keeps them), and the mandatory ones present (E1018).
    fn enrollment_attributes(
        &mut self,
        e: &mut Errs,
        en: &Enrollment,
        uid: &str,
        refs: &Refs<'a>,
    ) -> Vec<StoredAttribute> {
        let program_attrs = Meta::program_attributes(refs.prog);
        let allowed: HashSet<String> = program_attrs.iter().map(|m| m.uid.clone()).collect();
        let mut attrs = refs.te_stored.attributes.clone();
        self.merge_attributes(e, &refs.te, &mut attrs, &en.attributes, Some(&allowed));
        if !e.any() {
            for m in &program_attrs {
                if m.mandatory && !attrs.iter().any(|a| a.attribute == m.uid) {
                    e.add(C::E1018, &[&m.uid, &refs.program, uid]);
                }
            }
        }
        attrs
    }

    fn new_enrollment(
        &self,
        en: &Enrollment,
        refs: &Refs<'a>,
        status: EnrollmentStatus,
        enrolled_at: Dhis2Timestamp,
    ) -> StoredEnrollment {
        StoredEnrollment {
            tracked_entity: refs.te.clone(),
            program: refs.program.clone(),
            org_unit: refs.org_unit.clone(),
            status,
            enrolled_at,
            occurred_at: None,
            completed_at: None,
            completed_by: None,
            follow_up: false,
            geometry: None,
            attribute_option_combo: None,
            notes: Vec::new(),
            created_at_client: en.created_at_client,
            updated_at_client: None,
            created_by: Some(self.user.username.clone()),
            updated_by: None,
            complete_now: false,
            from_national: false,
        }
    }

    /// Copies what the enrollment sent onto the stored one; completing stamps when and by whom.
    fn apply_enrollment(
        &self,
        stored: &mut StoredEnrollment,
        en: &Enrollment,
        status: EnrollmentStatus,
    ) {
        if en.occurred_at.is_some() {
            stored.occurred_at = en.occurred_at;
        }
        if let Some(f) = en.follow_up {
            stored.follow_up = f;
        }
        if en.geometry.is_some() {
            stored.geometry = en.geometry.clone();
        }
        if en.updated_at_client.is_some() {
            stored.updated_at_client = en.updated_at_client;
        }
        let was = stored.status;
        stored.status = status;
        if status != EnrollmentStatus::Completed {
            stored.completed_at = None;
            stored.completed_by = None;
            return;
        }
        if en.completed_at.is_some() {
            stored.completed_at = en.completed_at;
        } else if was != EnrollmentStatus::Completed || stored.completed_at.is_none() {
            stored.complete_now = true;
        }
        if was != EnrollmentStatus::Completed || stored.completed_by.is_none() {
            stored.completed_by = Some(self.user.username.clone());
        }
    }

    /// Keeps the planned enrollment, updates its entity (merged attributes and, for a first
    /// enrollment in the program, the owner), and reports it.
    #[allow(clippy::too_many_arguments)]
    fn record_enrollment(
        &mut self,
        index: usize,
        uid: &str,
        mut stored: StoredEnrollment,
        old: Option<&StoredEnrollment>,
        created_ms: Option<u64>,
        refs: &Refs<'a>,
        attrs: Vec<StoredAttribute>,
    ) {
        let changed = old.is_none_or(|o| *o != stored);
        if changed && old.is_some() {
            stored.updated_by = Some(self.user.username.clone());
        }
        if let Some(slot) = self.te_slot(&refs.te) {
            if slot.stored.attributes != attrs {
                slot.stored.attributes = attrs;
                slot.dirty = true;
            }
            if slot.stored.owner(&refs.program).is_none() {
                slot.stored.set_owner(&refs.program, &refs.org_unit);
                slot.dirty = true;
            }
            if changed {
                slot.dirty = true;
            }
        }
        let kind = if old.is_some() {
            Kind::Updated
        } else {
            Kind::Created
        };
        if !self.ens.contains_key(uid) {
            self.order.push((EN, uid.to_string()));
        }
        self.planned_enrollments
            .entry((refs.te.clone(), refs.program.clone()))
            .or_default()
            .insert(uid.to_string());
        self.ens.insert(
            uid.to_string(),
            Slot {
                stored,
                created_ms,
                dirty: changed,
                deleted: false,
            },
        );
        self.outcome(EN, uid, index, kind);
    }

    /// Statuses of the entity's other live enrollments in `program` (store and payload).
    fn other_enrollments(&self, te: &str, program: &str, me: &str) -> Vec<EnrollmentStatus> {
        let mut out = Vec::new();
        let key = (te.to_string(), program.to_string());
        let planned = self.planned_enrollments.get(&key);
        for uid in planned.into_iter().flatten() {
            if let Some(s) = self.ens.get(uid) {
                if uid != me && !s.deleted {
                    out.push(s.stored.status);
                }
            }
        }
        if let (Ok(t), Ok(p)) = (Uid::try_from(te), Uid::try_from(program)) {
            for en in self.cat.enrollments_of(t) {
                if en.as_str() == me || planned.is_some_and(|set| set.contains(en.as_str())) {
                    continue;
                }
                // A stored enrollment changed earlier in this payload counts as planned.
                if let Some(s) = self.ens.get(en.as_str()) {
                    if !s.deleted && s.stored.program == program {
                        out.push(s.stored.status);
                    }
                    continue;
                }
                if let Some(m) = self.cat.enrollments.get(en) {
                    if !m.stamps.deleted && m.program == p {
                        out.push(m.status);
                    }
                }
            }
        }
        out
    }
}
