//! Plans events: validation against the program stage and data-value merge.

use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{DataValue, Event, EventStatus, TrackerType, ValidationCode};
use clinicbox_dhis2::value_type::{self, ValueError};
use clinicbox_store::Collection;

use super::{Admission, Errs, Exists, Kind, Obj, Planner, Refusal, Slot, is_set};
use crate::files::FileOwner;
use crate::meta::{self, Meta, ref_id, str_of};
use crate::model::{StoredDataValue, StoredEvent};

use TrackerType::{Enrollment as EN, Event as EV};
use ValidationCode as C;

impl Planner<'_> {
    pub(super) fn event(&mut self, index: usize, ev: Event) {
        let uid = ev.event.clone().unwrap_or_default();
        let admission = Admission {
            label: "Event",
            deleted: C::E1082,
            exists: C::E1030,
            missing: C::E1032,
        };
        let Some((mut e, live)) = self.admit(Errs::new(EV, &uid), index, &admission) else {
            return;
        };
        let existing = if live {
            match self.load::<StoredEvent>(Collection::EVENTS, &uid) {
                Some(x) => Some(x),
                None => {
                    e.add(C::E1032, &[&uid]);
                    return self.fail(e, index);
                }
            }
        } else {
            None
        };
        let existing =
            existing.map(|(s, c)| (self.evs.get(&uid).map(|s| s.stored.clone()).unwrap_or(s), c));
        let old = existing.as_ref().map(|(s, _)| s);
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
            return self.fail(e, index);
        };
        let Some(stage_obj) = self.meta.stage(&stage) else {
            e.add(C::E1013, &[&stage]);
            return self.fail(e, index);
        };
        let program = is_set(&ev.program)
            .map(str::to_string)
            .or_else(|| Meta::program_of_stage(stage_obj))
            .or_else(|| old.map(|s| s.program.clone()))
            .unwrap_or_default();
        let Some(prog) = self.meta.program(&program) else {
            e.add(C::E1010, &[&program]);
            return self.fail(e, index);
        };
        if Meta::program_of_stage(stage_obj).as_deref() != Some(program.as_str()) {
            e.add(C::E1089, &[&uid, &stage, &program]);
            return self.fail(e, index);
        }
        let org_unit = is_set(&ev.org_unit)
            .map(str::to_string)
            .or_else(|| old.map(|s| s.org_unit.clone()));
        let Some(org_unit) = org_unit else {
            e.add(C::E1123, &["orgUnit"]);
            return self.fail(e, index);
        };
        if !self.org_unit_known(&org_unit) {
            e.add(C::E1011, &[&org_unit]);
            return self.fail(e, index);
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
        if let Some(o) = old {
            if o.program_stage != stage {
                e.add(C::E1128, &["programStage"]);
            }
        }
        let mut enrollment = None;
        let mut te = None;
        if tracker {
            let en = is_set(&ev.enrollment)
                .map(str::to_string)
                .or_else(|| old.and_then(|s| s.enrollment.clone()));
            let Some(en) = en else {
                e.add(C::E1033, &[&uid]);
                return self.fail(e, index);
            };
            if let Some(o) = old {
                if o.enrollment.as_deref() != Some(en.as_str()) {
                    e.add(C::E1128, &["enrollment"]);
                }
            }
            if self.failed.contains(&en) {
                e.add(C::E5000, &["Event", &uid, "Enrollment", &en]);
                return self.fail(e, index);
            }
            if self.exists(EN, &en) != Exists::Live {
                e.add(C::E1081, &[&en]);
                return self.fail(e, index);
            }
            let Some((en_program, te_uid, en_org_unit)) = self.en_slot(&en).map(|s| {
                (
                    s.stored.program.clone(),
                    s.stored.tracked_entity.clone(),
                    s.stored.org_unit.clone(),
                )
            }) else {
                e.add(C::E1081, &[&en]);
                return self.fail(e, index);
            };
            if en_program != program {
                e.add(C::E1079, &[&uid, &program, &en]);
            }
            let owner = self
                .te_slot(&te_uid)
                .and_then(|s| s.stored.owner(&program).map(str::to_string))
                .unwrap_or(en_org_unit);
            if !self.owner_ok(prog, &program, &owner, &te_uid) {
                e.add(C::E1102, &[&self.user.username, &te_uid, &program]);
            }
            enrollment = Some(en);
            te = Some(te_uid);
        }
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
        if let Some(en) = &enrollment {
            if !meta::bool_of(stage_obj, "repeatable") && self.stage_taken(en, &stage, &uid) {
                e.add(C::E1039, &[&stage]);
            }
        }
        if old.is_some_and(|o| o.status == EventStatus::Completed)
            && status != EventStatus::Completed
            && !self.user.has_authority("F_UNCOMPLETE_EVENT")
        {
            e.add(C::E1083, &[&self.user.username]);
        }
        if !self.can_write(&program, prog) {
            e.add(C::E1091, &[&self.user.username, &program]);
        }
        if !self.can_write(&stage, stage_obj) {
            e.add(C::E1095, &[&self.user.username, &stage]);
        }
        let combo = ref_id(prog.get("categoryCombo"));
        let aoc = match is_set(&ev.attribute_option_combo) {
            Some(a) => {
                if !self.meta.snap.contains("categoryOptionCombos", a) {
                    e.add(C::E1115, &[a]);
                } else if let Some(cc) = &combo {
                    if !self.meta.combos_of(cc).iter().any(|c| c == a) {
                        e.add(C::E1054, &[a, cc]);
                    }
                }
                Some(a.to_string())
            }
            None => old
                .and_then(|o| o.attribute_option_combo.clone())
                .or_else(|| self.default_coc()),
        };
        let mut stored = old.cloned().unwrap_or_else(|| StoredEvent {
            enrollment: enrollment.clone(),
            tracked_entity: te.clone(),
            program: program.clone(),
            program_stage: stage.clone(),
            org_unit: org_unit.clone(),
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
        });
        self.merge_data_values(&mut e, stage_obj, &mut stored.data_values, &ev.data_values);
        {
            let strategy = str_of(stage_obj, "validationStrategy").unwrap_or("ON_COMPLETE");
            let enforce = strategy == "ON_UPDATE_AND_INSERT"
                || (strategy == "ON_COMPLETE" && status == EventStatus::Completed);
            if enforce {
                let members = self.members(&stage, stage_obj);
                for m in &members.1 {
                    // A value that was sent but invalid is reported once, as invalid.
                    let sent = ev.data_values.iter().any(|d| {
                        &d.data_element == m
                            && is_set(&d.value).is_some_and(|v| !value_type::is_blank(v))
                    });
                    if !sent && !stored.data_values.iter().any(|d| &d.data_element == m) {
                        e.add(C::E1303, &[m]);
                    }
                }
            }
        }
        if e.any() {
            return self.fail(e, index);
        }
        stored.org_unit = org_unit;
        stored.tracked_entity = te.clone().or(stored.tracked_entity);
        stored.occurred_at = occurred_at;
        stored.scheduled_at = scheduled_at;
        stored.attribute_option_combo = aoc;
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
        let was = stored.status;
        stored.status = status;
        if status == EventStatus::Completed {
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
        } else {
            stored.completed_at = None;
            stored.completed_by = None;
        }
        let mut notes = std::mem::take(&mut stored.notes);
        self.merge_notes(EV, &uid, &mut notes, ev.notes);
        stored.notes = notes;
        let changed = old.is_none_or(|o| *o != stored);
        if changed && old.is_some() {
            stored.updated_by = Some(self.user.username.clone());
        }
        if changed {
            self.touch(te.as_deref());
        }
        let kind = if old.is_some() {
            Kind::Updated
        } else {
            Kind::Created
        };
        let created_ms = existing.as_ref().map(|(_, c)| *c);
        if !self.evs.contains_key(&uid) {
            self.order.push((EV, uid.clone()));
        }
        if let Some(en) = &stored.enrollment {
            self.planned_stage
                .entry((en.clone(), stored.program_stage.clone()))
                .or_default()
                .insert(uid.clone());
        }
        self.evs.insert(
            uid.clone(),
            Slot {
                stored,
                created_ms,
                dirty: changed,
                deleted: false,
            },
        );
        self.outcome(EV, &uid, index, kind);
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
