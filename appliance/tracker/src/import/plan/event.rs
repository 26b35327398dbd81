//! Plans events: where an event is recorded, its enrollment and owner, its status, dates and
//! sharing, then its data values against the program stage; each a phase of [`Planner::event`].

use clinicbox_dhis2::tracker::{DataValue, Event, EventStatus, TrackerType, ValidationCode};
use clinicbox_dhis2::value_type::{self, ValueError};
use clinicbox_dhis2::{Dhis2Timestamp, Uid};
use clinicbox_store::Collection;

use super::{Admission, Errs, Exists, Kind, Obj, Planner, Refusal, Slot, is_set};
use crate::files::FileOwner;
use crate::meta::{self, Meta, ref_id, str_of};
use crate::model::{StoredDataValue, StoredEvent};

use TrackerType::{Enrollment as EN, Event as EV};
use ValidationCode as C;

/// Where an event is recorded: its stage, program and org unit (as sent, else as stored).
struct Place<'a> {
    stage: String,
    stage_obj: &'a Obj,
    program: String,
    prog: &'a Obj,
    org_unit: String,
    /// A tracker program's event (it belongs to an enrollment).
    tracker: bool,
}

/// An event's status, dates and attribute option combo, as they will be.
struct Timing {
    status: EventStatus,
    occurred_at: Option<Dhis2Timestamp>,
    scheduled_at: Option<Dhis2Timestamp>,
    aoc: Option<String>,
}

impl<'a> Planner<'a> {
    /// Plans one event, in DHIS2's order: admission, where it is recorded, its enrollment and
    /// owner, status, dates and sharing, its data values; then the stored event it becomes.
    pub(super) fn event(&mut self, index: usize, ev: Event) {
        let uid = ev.event.clone().unwrap_or_default();
        let Some((mut e, existing)) = self.admit_event(index, &uid) else {
            return;
        };
        let old = existing.as_ref().map(|(s, _)| s);
        let Some(place) = self.event_place(&mut e, &ev, old, &uid) else {
            return self.fail(e, index);
        };
        let Some((enrollment, te)) = self.event_enrollment(&mut e, &ev, old, &uid, &place) else {
            return self.fail(e, index);
        };
        let timing = self.event_timing(&mut e, &ev, old, &uid, &place, enrollment.as_deref());
        let mut stored = old.cloned().unwrap_or_else(|| {
            self.new_event(&ev, &place, enrollment.clone(), te.clone(), timing.status)
        });
        self.event_values(&mut e, &ev, &place, timing.status, &mut stored);
        if e.any() {
            return self.fail(e, index);
        }
        stored.org_unit = place.org_unit;
        stored.tracked_entity = te.clone().or(stored.tracked_entity);
        self.apply_event(&mut stored, &ev, timing);
        let mut notes = std::mem::take(&mut stored.notes);
        self.merge_notes(EV, &uid, &mut notes, ev.notes);
        stored.notes = notes;
        let created_ms = existing.as_ref().map(|(_, c)| *c);
        self.record_event(index, &uid, stored, old, created_ms, te.as_deref());
    }

    /// Admission, and the event as stored (an earlier object of this import wins).
    fn admit_event(
        &mut self,
        index: usize,
        uid: &str,
    ) -> Option<(Errs, Option<(StoredEvent, u64)>)> {
        let admission = Admission {
            label: "Event",
            deleted: C::E1082,
            exists: C::E1030,
            missing: C::E1032,
        };
        let (mut e, live) = self.admit(Errs::new(EV, uid), index, &admission)?;
        if !live {
            return Some((e, None));
        }
        let Some((s, c)) = self.load::<StoredEvent>(Collection::EVENTS, uid) else {
            e.add(C::E1032, &[uid]);
            self.fail(e, index);
            return None;
        };
        let s = self.evs.get(uid).map(|s| s.stored.clone()).unwrap_or(s);
        Some((e, Some((s, c))))
    }

    /// Its stage, program and org unit: known, consistent, in the user's scope. `None`: a
    /// failure that stops the checks.
    fn event_place(
        &mut self,
        e: &mut Errs,
        ev: &Event,
        old: Option<&StoredEvent>,
        uid: &str,
    ) -> Option<Place<'a>> {
        // An event program has one stage; DHIS2 lets clients leave it out.
        let single_stage = is_set(&ev.program)
            .and_then(|p| self.meta.program(p))
            .filter(|p| !Meta::is_tracker_program(p))
            .map(|p| clinicbox_api::metadata::ref_ids(p.get("programStages")))
            .filter(|s| s.len() == 1)
            .and_then(|mut s| s.pop());
        let stage = is_set(&ev.program_stage)
            .map(str::to_string)
            .or_else(|| old.map(|s| s.program_stage.clone()))
            .or(single_stage);
        let Some(stage) = stage else {
            e.add(C::E1123, &["programStage"]);
            return None;
        };
        let Some(stage_obj) = self.meta.stage(&stage) else {
            e.add(C::E1013, &[&stage]);
            return None;
        };
        let program = is_set(&ev.program)
            .map(str::to_string)
            .or_else(|| Meta::program_of_stage(stage_obj))
            .or_else(|| old.map(|s| s.program.clone()))
            .unwrap_or_default();
        let Some(prog) = self.meta.program(&program) else {
            e.add(C::E1010, &[&program]);
            return None;
        };
        if Meta::program_of_stage(stage_obj).as_deref() != Some(program.as_str()) {
            e.add(C::E1089, &[uid, &stage, &program]);
            return None;
        }
        let org_unit = is_set(&ev.org_unit)
            .map(str::to_string)
            .or_else(|| old.map(|s| s.org_unit.clone()));
        let Some(org_unit) = org_unit else {
            e.add(C::E1123, &["orgUnit"]);
            return None;
        };
        if !self.org_unit_known(&org_unit) {
            e.add(C::E1011, &[&org_unit]);
            return None;
        }
        let tracker = Meta::is_tracker_program(prog);
        if let Some(denied) =
            self.org_unit_denied(old.map(|o| o.org_unit.as_str()), &org_unit, tracker)
        {
            e.add(C::E1000, &[&self.user.username, &denied]);
        }
        if !self.program_offered(&program, &org_unit) {
            e.add(C::E1029, &[&org_unit, &program]);
        }
        if old.is_some_and(|o| o.program_stage != stage) {
            e.add(C::E1128, &["programStage"]);
        }
        Some(Place {
            stage,
            stage_obj,
            program,
            prog,
            org_unit,
            tracker,
        })
    }

    /// A tracker event's enrollment (live, of the same program) and tracked entity, whose owner
    /// decides (E1102); `(None, None)` for an event program's. `None`: a failure that stops.
    #[allow(clippy::type_complexity)]
    fn event_enrollment(
        &mut self,
        e: &mut Errs,
        ev: &Event,
        old: Option<&StoredEvent>,
        uid: &str,
        place: &Place<'a>,
    ) -> Option<(Option<String>, Option<String>)> {
        if !place.tracker {
            return Some((None, None));
        }
        let en = is_set(&ev.enrollment)
            .map(str::to_string)
            .or_else(|| old.and_then(|s| s.enrollment.clone()));
        let Some(en) = en else {
            e.add(C::E1033, &[uid]);
            return None;
        };
        if old.is_some_and(|o| o.enrollment.as_deref() != Some(en.as_str())) {
            e.add(C::E1128, &["enrollment"]);
        }
        if self.failed.contains(&en) {
            e.add(C::E5000, &["Event", uid, "Enrollment", &en]);
            return None;
        }
        if self.exists(EN, &en) != Exists::Live {
            e.add(C::E1081, &[&en]);
            return None;
        }
        let Some((en_program, te_uid, en_org_unit)) = self.en_slot(&en).map(|s| {
            (
                s.stored.program.clone(),
                s.stored.tracked_entity.clone(),
                s.stored.org_unit.clone(),
            )
        }) else {
            e.add(C::E1081, &[&en]);
            return None;
        };
        let program = &place.program;
        if &en_program != program {
            e.add(C::E1079, &[uid, program, &en]);
        }
        let owner = self
            .te_slot(&te_uid)
            .and_then(|s| s.stored.owner(program).map(str::to_string))
            .unwrap_or(en_org_unit);
        if !self.owner_ok(place.prog, program, &owner, &te_uid) {
            e.add(C::E1102, &[&self.user.username, &te_uid, program]);
        }
        Some((Some(en), Some(te_uid)))
    }

    /// Status and dates (a planned event needs its scheduled date, any other its occurred
    /// date), a non-repeatable stage used once, re-opening a completed event, sharing, and the
    /// attribute option combo.
    fn event_timing(
        &mut self,
        e: &mut Errs,
        ev: &Event,
        old: Option<&StoredEvent>,
        uid: &str,
        place: &Place<'a>,
        enrollment: Option<&str>,
    ) -> Timing {
        let status = ev
            .status
            .or_else(|| old.map(|s| s.status))
            .unwrap_or(EventStatus::Active);
        let occurred_at = ev.occurred_at.or_else(|| old.and_then(|s| s.occurred_at));
        let scheduled_at = ev.scheduled_at.or_else(|| old.and_then(|s| s.scheduled_at));
        if status.is_planned() {
            if scheduled_at.is_none() {
                e.add(C::E1050, &[]);
            }
        } else if occurred_at.is_none() {
            e.add(C::E1031, &[]);
        }
        if let Some(en) = enrollment
            && !meta::bool_of(place.stage_obj, "repeatable")
            && self.stage_taken(en, &place.stage, uid)
        {
            e.add(C::E1039, &[&place.stage]);
        }
        if old.is_some_and(|o| o.status == EventStatus::Completed)
            && status != EventStatus::Completed
            && !self.user.has_authority("F_UNCOMPLETE_EVENT")
        {
            e.add(C::E1083, &[&self.user.username]);
        }
        if !self.can_write(&place.program, place.prog) {
            e.add(C::E1091, &[&self.user.username, &place.program]);
        }
        if !self.can_write(&place.stage, place.stage_obj) {
            e.add(C::E1095, &[&self.user.username, &place.stage]);
        }
        let aoc = self.event_aoc(e, ev, old, place.prog);
        Timing {
            status,
            occurred_at,
            scheduled_at,
            aoc,
        }
    }

    /// The attribute option combo sent (known, of the program's combo), else as stored, else
    /// the default.
    fn event_aoc(
        &mut self,
        e: &mut Errs,
        ev: &Event,
        old: Option<&StoredEvent>,
        prog: &Obj,
    ) -> Option<String> {
        let Some(a) = is_set(&ev.attribute_option_combo) else {
            return old
                .and_then(|o| o.attribute_option_combo.clone())
                .or_else(|| self.default_coc());
        };
        if !self.meta.snap.contains("categoryOptionCombos", a) {
            e.add(C::E1115, &[a]);
        } else if let Some(cc) = ref_id(prog.get("categoryCombo"))
            && !self.meta.combos_of(&cc).iter().any(|c| c == a)
        {
            e.add(C::E1054, &[a, &cc]);
        }
        Some(a.to_string())
    }

    fn new_event(
        &self,
        ev: &Event,
        place: &Place<'a>,
        enrollment: Option<String>,
        te: Option<String>,
        status: EventStatus,
    ) -> StoredEvent {
        StoredEvent {
            enrollment,
            tracked_entity: te,
            program: place.program.clone(),
            program_stage: place.stage.clone(),
            org_unit: place.org_unit.clone(),
            status,
            occurred_at: None,
            scheduled_at: None,
            completed_at: None,
            completed_by: None,
            follow_up: false,
            geometry: None,
            attribute_option_combo: None,
            attribute_category_options: None,
            assigned_user: None,
            data_values: Vec::new(),
            notes: Vec::new(),
            created_at_client: ev.created_at_client,
            updated_at_client: None,
            created_by: Some(self.user.username.clone()),
            updated_by: None,
            complete_now: false,
            from_national: false,
        }
    }

    /// Merges the data values sent, then the stage's compulsory elements when its validation
    /// strategy says so now (E1303; a value sent but invalid is reported once, as invalid).
    fn event_values(
        &mut self,
        e: &mut Errs,
        ev: &Event,
        place: &Place<'a>,
        status: EventStatus,
        stored: &mut StoredEvent,
    ) {
        self.merge_data_values(e, place.stage_obj, &mut stored.data_values, &ev.data_values);
        let strategy = str_of(place.stage_obj, "validationStrategy").unwrap_or("ON_COMPLETE");
        let enforce = strategy == "ON_UPDATE_AND_INSERT"
            || (strategy == "ON_COMPLETE" && status == EventStatus::Completed);
        if !enforce {
            return;
        }
        let members = self.members(&place.stage, place.stage_obj);
        for m in &members.1 {
            let sent = ev.data_values.iter().any(|d| {
                &d.data_element == m && is_set(&d.value).is_some_and(|v| !value_type::is_blank(v))
            });
            if !sent && !stored.data_values.iter().any(|d| &d.data_element == m) {
                e.add(C::E1303, &[m]);
            }
        }
    }

    /// Copies what the event sent onto the stored one; completing stamps when and by whom.
    fn apply_event(&self, stored: &mut StoredEvent, ev: &Event, timing: Timing) {
        stored.occurred_at = timing.occurred_at;
        stored.scheduled_at = timing.scheduled_at;
        stored.attribute_option_combo = timing.aoc;
        if ev.attribute_category_options.is_some() {
            stored.attribute_category_options = ev.attribute_category_options.clone();
        }
        if let Some(f) = ev.follow_up {
            stored.follow_up = f;
        }
        if ev.geometry.is_some() {
            stored.geometry = ev.geometry.clone();
        }
        if ev.assigned_user.is_some() {
            stored.assigned_user = ev.assigned_user.clone();
        }
        if ev.updated_at_client.is_some() {
            stored.updated_at_client = ev.updated_at_client;
        }
        let (was, status) = (stored.status, timing.status);
        stored.status = status;
        if status != EventStatus::Completed {
            stored.completed_at = None;
            stored.completed_by = None;
            return;
        }
        if ev.completed_at.is_some() {
            stored.completed_at = ev.completed_at;
        } else if was != EventStatus::Completed || stored.completed_at.is_none() {
            stored.complete_now = true;
        }
        if was != EventStatus::Completed || stored.completed_by.is_none() {
            stored.completed_by = is_set(&ev.completed_by)
                .map(str::to_string)
                .or_else(|| Some(self.user.username.clone()));
        }
    }

    /// Keeps the planned event for the write and the stage rule, and reports it.
    fn record_event(
        &mut self,
        index: usize,
        uid: &str,
        mut stored: StoredEvent,
        old: Option<&StoredEvent>,
        created_ms: Option<u64>,
        te: Option<&str>,
    ) {
        let changed = old.is_none_or(|o| *o != stored);
        if changed && old.is_some() {
            stored.updated_by = Some(self.user.username.clone());
        }
        if changed {
            self.touch(te);
        }
        let kind = if old.is_some() {
            Kind::Updated
        } else {
            Kind::Created
        };
        if !self.evs.contains_key(uid) {
            self.order.push((EV, uid.to_string()));
        }
        if let Some(en) = &stored.enrollment {
            self.planned_stage
                .entry((en.clone(), stored.program_stage.clone()))
                .or_default()
                .insert(uid.to_string());
        }
        self.evs.insert(
            uid.to_string(),
            Slot {
                stored,
                created_ms,
                dirty: changed,
                deleted: false,
            },
        );
        self.outcome(EV, uid, index, kind);
    }

    /// Another live event of the enrollment already uses this non-repeatable stage.
    fn stage_taken(&self, enrollment: &str, stage: &str, me: &str) -> bool {
        let key = (enrollment.to_string(), stage.to_string());
        if self.planned_stage.get(&key).is_some_and(|set| {
            set.iter()
                .any(|u| u != me && self.evs.get(u).is_some_and(|s| !s.deleted))
        }) {
            return true;
        }
        let (Ok(en), Ok(st)) = (Uid::try_from(enrollment), Uid::try_from(stage)) else {
            return false;
        };
        self.cat.events_of(en).iter().any(|ev| {
            ev.as_str() != me
                && self
                    .evs
                    .get(ev.as_str())
                    .is_none_or(|s| !s.deleted && s.stored.program_stage == stage)
                && self
                    .cat
                    .events
                    .get(ev)
                    .is_some_and(|m| !m.stamps.deleted && m.stage == st)
        })
    }

    fn merge_data_values(
        &mut self,
        e: &mut Errs,
        stage: &Obj,
        stored: &mut Vec<StoredDataValue>,
        incoming: &[DataValue],
    ) {
        let stage_uid = str_of(stage, "id").unwrap_or_default().to_string();
        let members = self.members(&stage_uid, stage);
        let owner = FileOwner::Event(e.uid.clone());
        let members = &members.0;
        for d in incoming {
            let de = d.data_element.as_str();
            let Some(obj) = self.meta.data_element(de).filter(|_| Uid::is_valid(de)) else {
                e.add(C::E1304, &[de]);
                continue;
            };
            if !members.contains(de) {
                e.add(C::E1305, &[de, &stage_uid]);
                continue;
            }
            let pos = stored.iter().position(|s| s.data_element == de);
            let checked =
                match is_set(&d.value).map(|v| (v, self.check_value(obj, v, false, &owner))) {
                    None | Some((_, Ok(None))) => None,
                    Some((_, Ok(Some(v)))) => Some(v),
                    Some((sent, Err(refusal))) => {
                        refuse_data_value(e, de, sent, refusal);
                        continue;
                    }
                };
            let Some(value) = checked.as_deref() else {
                if let Some(p) = pos {
                    stored.remove(p);
                }
                continue;
            };
            let pe = d.provided_elsewhere.unwrap_or(false);
            match pos {
                Some(p) if stored[p].value == value && stored[p].provided_elsewhere == pe => {}
                Some(p) => {
                    let s = &mut stored[p];
                    s.value = value.to_string();
                    s.provided_elsewhere = pe;
                    s.updated_ms = 0;
                    s.stored_by = Some(self.user.username.clone());
                }
                None => stored.push(StoredDataValue {
                    data_element: de.to_string(),
                    value: value.to_string(),
                    provided_elsewhere: pe,
                    created_ms: 0,
                    updated_ms: 0,
                    stored_by: Some(self.user.username.clone()),
                }),
            }
        }
    }
}

/// Reports a refused data value with DHIS2's code. `Errs::add` cuts every argument, so the
/// value sent is echoed at most as a short prefix.
fn refuse_data_value(e: &mut Errs, de: &str, sent: &str, refusal: Refusal) {
    match refusal {
        Refusal::Invalid(why) => e.add(C::E1302, &[de, &why.to_string()]),
        // Only attributes have the shorter limit; kept total for the compiler.
        Refusal::AttributeTooLong => e.add(C::E1302, &[de, &ValueError::TooLong.to_string()]),
        Refusal::NotAnOption(option_set) => e.add(C::E1125, &[sent, &option_set]),
        Refusal::NoFile => e.add(C::E1084, &[sent]),
        Refusal::FileTaken => e.add(C::E1009, &[sent]),
    }
}
