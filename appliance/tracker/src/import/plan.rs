//! Validation and merging: turns a flattened payload into the writes to commit, the catalog
//! changes to apply after the commit, and the import report.
//!
//! Objects are handled parents first (tracked entities, enrollments, events, relationships).
//! Each object either passes every check and is planned, or is reported with DHIS2 error codes
//! and skipped; children of a skipped object fail with E5000. With `atomicMode=ALL` any error
//! drops every write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use clinicbox_api::{AuthUser, Snapshot};
use clinicbox_dhis2::import_report::Stats;
use clinicbox_dhis2::tracker::{
    AtomicMode, Attribute, BundleReport, DataValue, Enrollment, EnrollmentStatus, Event,
    EventStatus, ImportStrategy, Note, Relationship, TrackedEntity, TrackerErrorReport,
    TrackerImportReport, TrackerObjectReport, TrackerStatus, TrackerType, TrackerTypeReport,
    ValidationCode, ValidationReport,
};
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone, Uid};
use clinicbox_store::{Collection, ReadView};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{Flat, ImportParams};
use crate::catalog::{self, Catalog, Change, Stamps};
use crate::meta::{self, Meta, ref_id, str_of};
use crate::model::{
    StoredAttribute, StoredDataValue, StoredEnrollment, StoredEvent, StoredNote, StoredOwner,
    StoredRelationship, StoredTrackedEntity,
};
use crate::values;

use TrackerType::{Enrollment as EN, Event as EV, Relationship as REL, TrackedEntity as TE};
use ValidationCode as C;

/// A body to write.
#[derive(Debug)]
pub enum Body {
    TrackedEntity(Box<StoredTrackedEntity>),
    Enrollment(Box<StoredEnrollment>),
    Event(Box<StoredEvent>),
    Relationship(Box<StoredRelationship>),
}

/// One record write of the commit.
#[derive(Debug)]
pub struct Write {
    pub uid: String,
    pub body: Body,
    pub tombstone: bool,
}

/// What the planner produced.
pub struct Outcome {
    pub writes: Vec<Write>,
    pub changes: Vec<Change>,
    pub report: TrackerImportReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exists {
    Missing,
    Live,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Updated,
    Deleted,
    Ignored,
}

struct Slot<T> {
    stored: T,
    /// `None` for an object this payload creates.
    created_ms: Option<u64>,
    dirty: bool,
    deleted: bool,
}

type Obj = Map<String, Value>;

/// A stage's data elements: all of them, and the compulsory ones.
type StageMembers = (HashSet<String>, Vec<String>);

pub struct Planner<'a> {
    user: &'a AuthUser,
    meta: Meta<'a>,
    cat: &'a Catalog,
    read: &'a ReadView,
    params: ImportParams,
    zone: &'a ServerTimeZone,
    now_ms: u64,
    errors: Vec<TrackerErrorReport>,
    warnings: Vec<TrackerErrorReport>,
    outcomes: BTreeMap<TrackerType, Vec<(String, usize, Kind)>>,
    failed: HashSet<String>,
    tes: HashMap<String, Slot<StoredTrackedEntity>>,
    ens: HashMap<String, Slot<StoredEnrollment>>,
    evs: HashMap<String, Slot<StoredEvent>>,
    rels: HashMap<String, Slot<StoredRelationship>>,
    order: Vec<(TrackerType, String)>,
    claims: HashMap<(String, String), String>,
    overrides: &'a HashSet<(String, String)>,
    /// Data-write access per metadata UID (sharing is parsed once per import).
    writable: HashMap<String, bool>,
    /// Stage data elements per stage: (all, compulsory).
    stage_members: HashMap<String, Rc<StageMembers>>,
    default_coc: Option<Option<String>>,
    /// Planned live events per (enrollment, stage), for the non-repeatable rule.
    planned_stage: HashMap<(String, String), HashSet<String>>,
    /// Planned enrollments per (entity, program).
    planned_enrollments: HashMap<(String, String), HashSet<String>>,
    /// Capture-scope answers per org unit.
    capture: std::cell::RefCell<HashMap<String, bool>>,
}

/// Errors of one object, collected before deciding whether it passes.
struct Errs {
    t: TrackerType,
    uid: String,
    list: Vec<TrackerErrorReport>,
}

impl Errs {
    fn new(t: TrackerType, uid: &str) -> Errs {
        Errs {
            t,
            uid: uid.to_string(),
            list: Vec::new(),
        }
    }
    fn add(&mut self, code: ValidationCode, args: &[&str]) {
        self.list.push(TrackerErrorReport {
            message: code.message(args),
            error_code: code.to_string(),
            tracker_type: self.t,
            uid: self.uid.clone(),
            args: args.iter().map(|s| s.to_string()).collect(),
        });
    }
    fn any(&self) -> bool {
        !self.list.is_empty()
    }
}

fn is_set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl<'a> Planner<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        user: &'a AuthUser,
        snap: &'a Snapshot,
        cat: &'a Catalog,
        read: &'a ReadView,
        params: ImportParams,
        zone: &'a ServerTimeZone,
        now_ms: u64,
        overrides: &'a HashSet<(String, String)>,
        flat: Flat,
    ) -> Outcome {
        let mut p = Planner {
            user,
            meta: Meta::new(snap),
            cat,
            read,
            params,
            zone,
            now_ms,
            errors: Vec::new(),
            warnings: Vec::new(),
            outcomes: TrackerType::ALL.iter().map(|t| (*t, Vec::new())).collect(),
            failed: HashSet::new(),
            tes: HashMap::new(),
            ens: HashMap::new(),
            evs: HashMap::new(),
            rels: HashMap::new(),
            order: Vec::new(),
            claims: HashMap::new(),
            overrides,
            writable: HashMap::new(),
            stage_members: HashMap::new(),
            default_coc: None,
            planned_stage: HashMap::new(),
            planned_enrollments: HashMap::new(),
            capture: std::cell::RefCell::new(HashMap::new()),
        };
        if params.import_strategy == ImportStrategy::Delete {
            // Children first, so a payload that deletes a whole tree needs no cascade right.
            for (i, r) in flat.relationships.iter().enumerate() {
                p.delete(REL, r.relationship.as_deref().unwrap_or(""), i);
            }
            for (i, e) in flat.events.iter().enumerate() {
                p.delete(EV, e.event.as_deref().unwrap_or(""), i);
            }
            for (i, e) in flat.enrollments.iter().enumerate() {
                p.delete(EN, e.enrollment.as_deref().unwrap_or(""), i);
            }
            for (i, t) in flat.tracked_entities.iter().enumerate() {
                p.delete(TE, t.tracked_entity.as_deref().unwrap_or(""), i);
            }
        } else {
            for (i, t) in flat.tracked_entities.into_iter().enumerate() {
                p.tracked_entity(i, t);
            }
            for (i, e) in flat.enrollments.into_iter().enumerate() {
                p.enrollment(i, e);
            }
            for (i, e) in flat.events.into_iter().enumerate() {
                p.event(i, e);
            }
            for (i, r) in flat.relationships.into_iter().enumerate() {
                p.relationship(i, r);
            }
        }
        p.finish()
    }

    // ---- shared helpers ------------------------------------------------------------------

    fn can_write(&mut self, uid: &str, obj: &Obj) -> bool {
        if let Some(w) = self.writable.get(uid) {
            return *w;
        }
        let w = meta::data_write(self.user, obj);
        self.writable.insert(uid.to_string(), w);
        w
    }

    fn default_coc(&mut self) -> Option<String> {
        if self.default_coc.is_none() {
            self.default_coc = Some(self.meta.default_coc());
        }
        self.default_coc.clone().flatten()
    }

    fn members(&mut self, stage_uid: &str, stage: &Obj) -> Rc<StageMembers> {
        if let Some(m) = self.stage_members.get(stage_uid) {
            return m.clone();
        }
        let list = Meta::stage_data_elements(stage);
        let all = list.iter().map(|m| m.uid.clone()).collect();
        let mandatory = list
            .into_iter()
            .filter(|m| m.mandatory)
            .map(|m| m.uid)
            .collect();
        let m = Rc::new((all, mandatory));
        self.stage_members.insert(stage_uid.to_string(), m.clone());
        m
    }

    fn fail(&mut self, e: Errs, index: usize) {
        self.failed.insert(e.uid.clone());
        if let Some(v) = self.outcomes.get_mut(&e.t) {
            v.push((e.uid.clone(), index, Kind::Ignored));
        }
        self.errors.extend(e.list);
    }

    fn outcome(&mut self, t: TrackerType, uid: &str, index: usize, kind: Kind) {
        if let Some(v) = self.outcomes.get_mut(&t) {
            v.push((uid.to_string(), index, kind));
        }
    }

    fn warn(&mut self, t: TrackerType, uid: &str, code: ValidationCode, args: &[&str]) {
        self.warnings.push(TrackerErrorReport {
            message: code.message(args),
            error_code: code.to_string(),
            tracker_type: t,
            uid: uid.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
        });
    }

    fn load<T: DeserializeOwned>(&self, c: Collection, uid: &str) -> Option<(T, u64)> {
        let rec = self.read.get(c, uid).ok().flatten()?;
        let body = rec.json::<T>().ok()?;
        Some((body, rec.created_ms))
    }

    fn exists(&self, t: TrackerType, uid: &str) -> Exists {
        let planned = match t {
            TE => self.tes.get(uid).map(|s| s.deleted),
            EN => self.ens.get(uid).map(|s| s.deleted),
            EV => self.evs.get(uid).map(|s| s.deleted),
            REL => self.rels.get(uid).map(|s| s.deleted),
        };
        if let Some(deleted) = planned {
            return if deleted {
                Exists::Deleted
            } else {
                Exists::Live
            };
        }
        let Ok(u) = Uid::try_from(uid) else {
            return Exists::Missing;
        };
        let deleted = match t {
            TE => self.cat.tes.get(&u).map(|m| m.stamps.deleted),
            EN => self.cat.enrollments.get(&u).map(|m| m.stamps.deleted),
            EV => self.cat.events.get(&u).map(|m| m.stamps.deleted),
            REL => self.cat.relationships.get(&u).map(|m| m.stamps.deleted),
        };
        match deleted {
            None => Exists::Missing,
            Some(true) => Exists::Deleted,
            Some(false) => Exists::Live,
        }
    }

    /// Loads a live tracked entity into the plan (for merging or touching).
    fn te_slot(&mut self, uid: &str) -> Option<&mut Slot<StoredTrackedEntity>> {
        if !self.tes.contains_key(uid) {
            if self.exists(TE, uid) != Exists::Live {
                return None;
            }
            let (stored, created) =
                self.load::<StoredTrackedEntity>(Collection::TRACKED_ENTITIES, uid)?;
            self.tes.insert(
                uid.to_string(),
                Slot {
                    stored,
                    created_ms: Some(created),
                    dirty: false,
                    deleted: false,
                },
            );
            self.order.push((TE, uid.to_string()));
        }
        self.tes.get_mut(uid)
    }

    fn en_slot(&mut self, uid: &str) -> Option<&mut Slot<StoredEnrollment>> {
        if !self.ens.contains_key(uid) {
            if self.exists(EN, uid) == Exists::Missing {
                return None;
            }
            let deleted = self.exists(EN, uid) == Exists::Deleted;
            let (stored, created) = self.load::<StoredEnrollment>(Collection::ENROLLMENTS, uid)?;
            self.ens.insert(
                uid.to_string(),
                Slot {
                    stored,
                    created_ms: Some(created),
                    dirty: false,
                    deleted,
                },
            );
            self.order.push((EN, uid.to_string()));
        }
        self.ens.get_mut(uid)
    }

    /// Marks a tracked entity as changed so its `updatedAt` moves (DHIS2 bumps the entity when
    /// anything below it changes; tablets find changes through the entity's `updatedAt`).
    fn touch(&mut self, te: Option<&str>) {
        if let Some(te) = te {
            if let Some(s) = self.te_slot(te) {
                if !s.deleted {
                    s.dirty = true;
                }
            }
        }
    }

    fn can_capture(&self, ou: &str) -> bool {
        if let Some(c) = self.capture.borrow().get(ou) {
            return *c;
        }
        let c = self.user.can_capture_in(ou);
        self.capture.borrow_mut().insert(ou.to_string(), c);
        c
    }

    /// Ownership rule of DHIS2: open programs need the owner in the search scope, protected and
    /// closed ones in the capture scope (or a "break the glass" override for protected ones).
    fn owner_ok(&self, program: &Obj, program_uid: &str, owner_ou: &str, te: &str) -> bool {
        match Meta::access_level(program) {
            "PROTECTED" => {
                self.can_capture(owner_ou)
                    || self
                        .overrides
                        .contains(&(te.to_string(), program_uid.to_string()))
            }
            "CLOSED" => self.can_capture(owner_ou),
            _ => self.can_capture(owner_ou) || self.user.can_search_in(owner_ou),
        }
    }

    fn future(&self, t: &Dhis2Timestamp) -> bool {
        // One day of slack: tablets write local wall-clock time, which may be ahead of ours.
        t.to_epoch_ms(self.zone)
            .is_ok_and(|ms| ms > i64::try_from(self.now_ms).unwrap_or(i64::MAX) + 86_400_000)
    }

    /// Checks one value against its value type and option set; the error args are filled in
    /// by the caller's code.
    fn check_value(&mut self, obj: &Obj, value: &str) -> Result<(), (bool, String)> {
        let vt = str_of(obj, "valueType").unwrap_or("TEXT");
        if let Some(os) = ref_id(obj.get("optionSet")) {
            let codes = self.meta.option_codes(&os);
            let ok = if vt == "MULTI_TEXT" {
                value.split(',').all(|c| codes.contains(c.trim()))
            } else {
                codes.contains(value)
            };
            if !ok {
                return Err((true, os));
            }
            return Ok(());
        }
        values::check(vt, value).map_err(|e| (false, e))?;
        if values::is_file(vt)
            && self
                .read
                .get(Collection::FILE_RESOURCES, value)
                .ok()
                .flatten()
                .is_none()
        {
            return Err((false, "file".into()));
        }
        Ok(())
    }

    fn merge_notes(
        &mut self,
        t: TrackerType,
        uid: &str,
        stored: &mut Vec<StoredNote>,
        incoming: Vec<Note>,
    ) -> bool {
        let mut changed = false;
        for n in incoming {
            let Some(value) = is_set(&n.value).map(str::to_string) else {
                continue;
            };
            let note_uid = match is_set(&n.note) {
                Some(u) if Uid::is_valid(u) => u.to_string(),
                _ => Uid::generate().to_string(),
            };
            if stored.iter().any(|s| s.note == note_uid) {
                self.warn(t, uid, C::E1119, &[&note_uid]);
                continue;
            }
            stored.push(StoredNote {
                note: note_uid,
                value,
                stored_ms: 0,
                stored_by: Some(self.user.username.clone()),
                created_by: Some(self.user.username.clone()),
            });
            changed = true;
        }
        changed
    }

    // ---- tracked entities ----------------------------------------------------------------

    fn tracked_entity(&mut self, index: usize, te: TrackedEntity) {
        let uid = te.tracked_entity.clone().unwrap_or_default();
        let mut e = Errs::new(TE, &uid);
        if !Uid::is_valid(&uid) {
            e.add(C::E1048, &["TrackedEntity", &uid]);
            return self.fail(e, index);
        }
        let strategy = self.params.import_strategy;
        let existing = match self.exists(TE, &uid) {
            Exists::Deleted => {
                e.add(C::E1114, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Live if strategy == ImportStrategy::Create => {
                e.add(C::E1002, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Missing if strategy == ImportStrategy::Update => {
                e.add(C::E1063, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Missing => None,
            Exists::Live => match self.te_slot(&uid) {
                Some(s) => Some((s.stored.clone(), s.created_ms)),
                None => {
                    e.add(C::E1063, &[&uid]);
                    return self.fail(e, index);
                }
            },
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
        if !self.meta.org_unit_exists(&org_unit) {
            e.add(C::E1049, &[&org_unit]);
            return self.fail(e, index);
        }
        if !self.can_capture(&org_unit) {
            e.add(C::E1000, &[&self.user.username, &org_unit]);
        }
        if let Some((old, _)) = &existing {
            if old.tracked_entity_type != tet {
                e.add(C::E1126, &["trackedEntityType"]);
            }
            if old.org_unit != org_unit && !self.can_capture(&old.org_unit) {
                e.add(C::E1003, &[&self.user.username, &uid]);
            }
        }
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
    fn merge_attributes(
        &mut self,
        e: &mut Errs,
        te_uid: &str,
        stored: &mut Vec<StoredAttribute>,
        incoming: &[Attribute],
        allowed: Option<&HashSet<String>>,
    ) {
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
            let Some(value) = is_set(&a.value) else {
                if let Some(p) = pos {
                    stored.remove(p);
                }
                continue;
            };
            if let Err((option, why)) = self.check_value(obj, value) {
                if option {
                    e.add(C::E1125, &[value, &why]);
                } else if why == "file" {
                    e.add(C::E1084, &[value]);
                } else {
                    e.add(
                        C::E1007,
                        &[str_of(obj, "valueType").unwrap_or("TEXT"), &why],
                    );
                }
                continue;
            }
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
        for h in self.cat.holders(a, value) {
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

    // ---- enrollments ---------------------------------------------------------------------

    fn enrollment(&mut self, index: usize, en: Enrollment) {
        let uid = en.enrollment.clone().unwrap_or_default();
        let mut e = Errs::new(EN, &uid);
        if !Uid::is_valid(&uid) {
            e.add(C::E1048, &["Enrollment", &uid]);
            return self.fail(e, index);
        }
        let strategy = self.params.import_strategy;
        let existing = match self.exists(EN, &uid) {
            Exists::Deleted => {
                e.add(C::E1113, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Live if strategy == ImportStrategy::Create => {
                e.add(C::E1080, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Missing if strategy == ImportStrategy::Update => {
                e.add(C::E1081, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Missing => None,
            Exists::Live => match self.en_slot(&uid) {
                Some(s) => Some((s.stored.clone(), s.created_ms)),
                None => {
                    e.add(C::E1081, &[&uid]);
                    return self.fail(e, index);
                }
            },
        };
        let old = existing.as_ref().map(|(s, _)| s);
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
            return self.fail(e, index);
        };
        let Some(prog) = self.meta.program(&program) else {
            e.add(C::E1069, &[&program]);
            return self.fail(e, index);
        };
        if !Meta::is_tracker_program(prog) {
            e.add(C::E1014, &[&program]);
            return self.fail(e, index);
        }
        if self.failed.contains(&te) {
            e.add(C::E5000, &["Enrollment", &uid, "TrackedEntity", &te]);
            return self.fail(e, index);
        }
        if self.exists(TE, &te) != Exists::Live {
            e.add(C::E1068, &[&te]);
            return self.fail(e, index);
        }
        if !self.meta.org_unit_exists(&org_unit) {
            e.add(C::E1070, &[&org_unit]);
            return self.fail(e, index);
        }
        if !self.can_capture(&org_unit) {
            e.add(C::E1000, &[&self.user.username, &org_unit]);
        }
        if !self.meta.program_in_org_unit(&program, &org_unit) {
            e.add(C::E1041, &[&org_unit, &program]);
        }
        if let Some(o) = old {
            if o.program != program {
                e.add(C::E1127, &["program"]);
            }
            if o.tracked_entity != te {
                e.add(C::E1127, &["trackedEntity"]);
            }
        }
        if !self.can_write(&program, prog) {
            e.add(C::E1091, &[&self.user.username, &program]);
        }
        let Some(te_stored) = self.te_slot(&te).map(|s| s.stored.clone()) else {
            e.add(C::E1068, &[&te]);
            return self.fail(e, index);
        };
        if Meta::program_tet(prog).as_deref() != Some(te_stored.tracked_entity_type.as_str()) {
            e.add(C::E1022, &[&te, &program]);
        }
        let owner = te_stored
            .owner(&program)
            .unwrap_or(org_unit.as_str())
            .to_string();
        if !self.owner_ok(prog, &program, &owner, &te) {
            e.add(C::E1102, &[&self.user.username, &te, &program]);
        }
        let enrolled_at = en.enrolled_at.or_else(|| old.map(|s| s.enrolled_at));
        let Some(enrolled_at) = enrolled_at else {
            e.add(C::E1025, &[]);
            return self.fail(e, index);
        };
        if !meta::bool_of(prog, "selectEnrollmentDatesInFuture") && self.future(&enrolled_at) {
            e.add(C::E1020, &[&enrolled_at.to_string()]);
        }
        let status = en
            .status
            .or_else(|| old.map(|s| s.status))
            .unwrap_or(EnrollmentStatus::Active);
        // Status rules against the entity's other enrollments in the program.
        let becomes_active = status == EnrollmentStatus::Active
            && old.is_none_or(|o| o.status != EnrollmentStatus::Active);
        let others = self.other_enrollments(&te, &program, &uid);
        if becomes_active && others.contains(&EnrollmentStatus::Active) {
            e.add(C::E1015, &[&te, &program]);
        }
        if old.is_none() && meta::bool_of(prog, "onlyEnrollOnce") && !others.is_empty() {
            e.add(C::E1016, &[&te, &program]);
        }
        // Program attributes are stored on the entity, as in DHIS2.
        let program_attrs = Meta::program_attributes(prog);
        let allowed: HashSet<String> = program_attrs.iter().map(|m| m.uid.clone()).collect();
        let mut attrs = te_stored.attributes.clone();
        self.merge_attributes(&mut e, &te, &mut attrs, &en.attributes, Some(&allowed));
        if !e.any() {
            for m in &program_attrs {
                if m.mandatory && !attrs.iter().any(|a| a.attribute == m.uid) {
                    e.add(C::E1018, &[&m.uid, &program, &uid]);
                }
            }
        }
        let aoc = is_set(&en.attribute_option_combo)
            .map(str::to_string)
            .or_else(|| old.and_then(|o| o.attribute_option_combo.clone()))
            .or_else(|| self.default_coc());
        if e.any() {
            return self.fail(e, index);
        }
        let mut stored = old.cloned().unwrap_or_else(|| StoredEnrollment {
            tracked_entity: te.clone(),
            program: program.clone(),
            org_unit: org_unit.clone(),
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
        });
        stored.org_unit = org_unit.clone();
        stored.enrolled_at = enrolled_at;
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
        stored.attribute_option_combo = aoc;
        let was = stored.status;
        stored.status = status;
        if status == EnrollmentStatus::Completed {
            if en.completed_at.is_some() {
                stored.completed_at = en.completed_at;
            } else if was != EnrollmentStatus::Completed || stored.completed_at.is_none() {
                stored.complete_now = true;
            }
            if was != EnrollmentStatus::Completed || stored.completed_by.is_none() {
                stored.completed_by = Some(self.user.username.clone());
            }
        } else {
            stored.completed_at = None;
            stored.completed_by = None;
        }
        let mut notes = std::mem::take(&mut stored.notes);
        self.merge_notes(EN, &uid, &mut notes, en.notes);
        stored.notes = notes;
        let changed = old.is_none_or(|o| *o != stored);
        if changed && old.is_some() {
            stored.updated_by = Some(self.user.username.clone());
        }
        // Entity side: merged attributes and, for a first enrollment, the program owner.
        if let Some(slot) = self.te_slot(&te) {
            if slot.stored.attributes != attrs {
                slot.stored.attributes = attrs;
                slot.dirty = true;
            }
            if slot.stored.owner(&program).is_none() {
                slot.stored.program_owners.push(StoredOwner {
                    program: program.clone(),
                    org_unit: org_unit.clone(),
                });
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
        let created_ms = existing.as_ref().and_then(|(_, c)| *c);
        if !self.ens.contains_key(&uid) {
            self.order.push((EN, uid.clone()));
        }
        self.planned_enrollments
            .entry((te.clone(), program.clone()))
            .or_default()
            .insert(uid.clone());
        self.ens.insert(
            uid.clone(),
            Slot {
                stored,
                created_ms,
                dirty: changed,
                deleted: false,
            },
        );
        self.outcome(EN, &uid, index, kind);
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

    // ---- events --------------------------------------------------------------------------

    fn event(&mut self, index: usize, ev: Event) {
        let uid = ev.event.clone().unwrap_or_default();
        let mut e = Errs::new(EV, &uid);
        if !Uid::is_valid(&uid) {
            e.add(C::E1048, &["Event", &uid]);
            return self.fail(e, index);
        }
        let strategy = self.params.import_strategy;
        let existing = match self.exists(EV, &uid) {
            Exists::Deleted => {
                e.add(C::E1082, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Live if strategy == ImportStrategy::Create => {
                e.add(C::E1030, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Missing if strategy == ImportStrategy::Update => {
                e.add(C::E1032, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Missing => None,
            Exists::Live => match self.load::<StoredEvent>(Collection::EVENTS, &uid) {
                Some(x) => Some(x),
                None => {
                    e.add(C::E1032, &[&uid]);
                    return self.fail(e, index);
                }
            },
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
        if !self.meta.org_unit_exists(&org_unit) {
            e.add(C::E1011, &[&org_unit]);
            return self.fail(e, index);
        }
        if !self.can_capture(&org_unit) {
            e.add(C::E1000, &[&self.user.username, &org_unit]);
        }
        if !self.meta.program_in_org_unit(&program, &org_unit) {
            e.add(C::E1029, &[&org_unit, &program]);
        }
        if let Some(o) = old {
            if o.program_stage != stage {
                e.add(C::E1128, &["programStage"]);
            }
        }
        let tracker = Meta::is_tracker_program(prog);
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
                    let sent = ev
                        .data_values
                        .iter()
                        .any(|d| &d.data_element == m && is_set(&d.value).is_some());
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
            let Some(value) = is_set(&d.value) else {
                if let Some(p) = pos {
                    stored.remove(p);
                }
                continue;
            };
            if let Err((option, why)) = self.check_value(obj, value) {
                if option {
                    e.add(C::E1125, &[value, &why]);
                } else if why == "file" {
                    e.add(C::E1084, &[value]);
                } else {
                    e.add(C::E1302, &[de, &why]);
                }
                continue;
            }
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

    // ---- relationships -------------------------------------------------------------------

    fn relationship(&mut self, index: usize, r: Relationship) {
        let uid = r.relationship.clone().unwrap_or_default();
        let mut e = Errs::new(REL, &uid);
        if !Uid::is_valid(&uid) {
            e.add(C::E1048, &["Relationship", &uid]);
            return self.fail(e, index);
        }
        match self.exists(REL, &uid) {
            Exists::Deleted => {
                e.add(C::E4017, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Live if self.params.import_strategy == ImportStrategy::Create => {
                e.add(C::E4015, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Live => {
                // Relationships are immutable; a re-sent one is acknowledged, not changed.
                self.warn(REL, &uid, C::E4015, &[&uid]);
                return self.outcome(REL, &uid, index, Kind::Ignored);
            }
            Exists::Missing if self.params.import_strategy == ImportStrategy::Update => {
                e.add(C::E4016, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Missing => {}
        }
        let Some(rt) = is_set(&r.relationship_type).map(str::to_string) else {
            e.add(C::E1124, &["relationshipType"]);
            return self.fail(e, index);
        };
        let Some(rt_obj) = self.meta.relationship_type(&rt) else {
            e.add(C::E4006, &[&rt]);
            return self.fail(e, index);
        };
        let (Some(from), Some(to)) = (r.from.clone(), r.to.clone()) else {
            e.add(C::E1124, &[if r.from.is_none() { "from" } else { "to" }]);
            return self.fail(e, index);
        };
        let (Some(f), Some(t)) = (from.single(), to.single()) else {
            e.add(C::E4001, &["from/to", &uid]);
            return self.fail(e, index);
        };
        if f == t {
            e.add(C::E4000, &[&uid]);
            return self.fail(e, index);
        }
        for ((ty, item), side) in [(&f, "fromConstraint"), (&t, "toConstraint")] {
            if self.failed.contains(item) {
                e.add(C::E5000, &["Relationship", &uid, ty.display_name(), item]);
                continue;
            }
            if self.exists(*ty, item) != Exists::Live {
                e.add(C::E4012, &[ty.display_name(), item]);
                continue;
            }
            let Some(Value::Object(c)) = rt_obj.get(side) else {
                continue;
            };
            let want = match str_of(c, "relationshipEntity") {
                Some("TRACKED_ENTITY_INSTANCE") => TE,
                Some("PROGRAM_INSTANCE") => EN,
                Some("PROGRAM_STAGE_INSTANCE") => EV,
                _ => *ty,
            };
            if want != *ty {
                e.add(C::E4010, &[&rt, want.display_name(), ty.display_name()]);
                continue;
            }
            if *ty == TE {
                if let Some(want_tet) = ref_id(c.get("trackedEntityType")) {
                    let found = self.te_tet(item).unwrap_or_default();
                    if found != want_tet {
                        e.add(C::E4014, &[&rt, &want_tet, &found]);
                    }
                }
            }
        }
        let bidirectional = meta::bool_of(rt_obj, "bidirectional");
        if !e.any() && self.duplicate(&rt, &f, &t, bidirectional) {
            e.add(
                C::E4018,
                &[&uid, f.0.display_name(), &f.1, t.0.display_name(), &t.1],
            );
        }
        if !self.can_write(&rt, rt_obj) {
            e.add(C::E4006, &[&rt]);
        }
        if e.any() {
            return self.fail(e, index);
        }
        let stored = StoredRelationship {
            relationship_type: rt,
            from,
            to,
            bidirectional,
            created_at_client: r.created_at_client,
        };
        for (ty, item) in [&f, &t] {
            let te = self.te_of(*ty, item);
            self.touch(te.as_deref());
        }
        self.order.push((REL, uid.clone()));
        self.rels.insert(
            uid.clone(),
            Slot {
                stored,
                created_ms: None,
                dirty: true,
                deleted: false,
            },
        );
        self.outcome(REL, &uid, index, Kind::Created);
    }

    fn te_tet(&self, te: &str) -> Option<String> {
        if let Some(s) = self.tes.get(te) {
            return Some(s.stored.tracked_entity_type.clone());
        }
        self.cat
            .tes
            .get(&Uid::try_from(te).ok()?)
            .map(|m| m.tet.to_string())
    }

    /// The tracked entity an item belongs to.
    fn te_of(&self, t: TrackerType, uid: &str) -> Option<String> {
        match t {
            TE => Some(uid.to_string()),
            EN => self
                .ens
                .get(uid)
                .map(|s| s.stored.tracked_entity.clone())
                .or_else(|| {
                    let m = self.cat.enrollments.get(&Uid::try_from(uid).ok()?)?;
                    Some(m.te.to_string())
                }),
            EV => self
                .evs
                .get(uid)
                .and_then(|s| s.stored.tracked_entity.clone())
                .or_else(|| {
                    let m = self.cat.events.get(&Uid::try_from(uid).ok()?)?;
                    m.te.map(|t| t.to_string())
                }),
            REL => None,
        }
    }

    fn duplicate(
        &self,
        rt: &str,
        f: &(TrackerType, String),
        t: &(TrackerType, String),
        bidirectional: bool,
    ) -> bool {
        let same = |a: &(TrackerType, String), b: &(TrackerType, String)| {
            (a == f && b == t) || (bidirectional && a == t && b == f)
        };
        for s in self.rels.values() {
            if s.deleted || s.stored.relationship_type != rt {
                continue;
            }
            if let (Some(a), Some(b)) = (s.stored.from.single(), s.stored.to.single()) {
                if same(&a, &b) {
                    return true;
                }
            }
        }
        let (Ok(fu), Ok(rtu)) = (Uid::try_from(f.1.as_str()), Uid::try_from(rt)) else {
            return false;
        };
        self.cat.relationships_of(fu).iter().any(|r| {
            self.cat.relationships.get(r).is_some_and(|m| {
                !m.stamps.deleted
                    && m.rel_type == rtu
                    && same(
                        &(m.from.0, m.from.1.to_string()),
                        &(m.to.0, m.to.1.to_string()),
                    )
            })
        })
    }

    // ---- deletion ------------------------------------------------------------------------

    fn delete(&mut self, t: TrackerType, uid: &str, index: usize) {
        let mut e = Errs::new(t, uid);
        if !Uid::is_valid(uid) {
            e.add(C::E1048, &[t.display_name(), uid]);
            return self.fail(e, index);
        }
        match self.exists(t, uid) {
            Exists::Missing => {
                let code = match t {
                    TE => C::E1063,
                    EN => C::E1081,
                    EV => C::E1032,
                    REL => C::E4016,
                };
                e.add(code, &[uid]);
                return self.fail(e, index);
            }
            // Already deleted (a re-sent deletion after a lost report): the goal is reached,
            // so it is acknowledged and the tablet can purge its copy.
            Exists::Deleted => return self.outcome(t, uid, index, Kind::Ignored),
            Exists::Live => {}
        }
        let can_cascade_te = self.user.has_authority("F_TEI_CASCADE_DELETE");
        let can_cascade_en = self.user.has_authority("F_ENROLLMENT_CASCADE_DELETE");
        match t {
            TE => {
                let Some(slot) = self.te_slot(uid) else {
                    e.add(C::E1063, &[uid]);
                    return self.fail(e, index);
                };
                let ou = slot.stored.org_unit.clone();
                if !self.can_capture(&ou) {
                    e.add(C::E1000, &[&self.user.username, &ou]);
                    return self.fail(e, index);
                }
                let live: Vec<String> = self.live_children(TE, uid);
                if !live.is_empty() && !can_cascade_te {
                    e.add(C::E1100, &[&self.user.username, uid]);
                    return self.fail(e, index);
                }
                for en in live {
                    for ev in self.live_children(EN, &en) {
                        self.tombstone(EV, &ev);
                    }
                    self.tombstone(EN, &en);
                }
                self.tombstone(TE, uid);
            }
            EN => {
                let Some(slot) = self.en_slot(uid) else {
                    e.add(C::E1081, &[uid]);
                    return self.fail(e, index);
                };
                let (ou, te) = (
                    slot.stored.org_unit.clone(),
                    slot.stored.tracked_entity.clone(),
                );
                if !self.can_capture(&ou) {
                    e.add(C::E1000, &[&self.user.username, &ou]);
                    return self.fail(e, index);
                }
                let live = self.live_children(EN, uid);
                if !live.is_empty() && !can_cascade_en {
                    e.add(C::E1103, &[&self.user.username, uid]);
                    return self.fail(e, index);
                }
                for ev in live {
                    self.tombstone(EV, &ev);
                }
                self.tombstone(EN, uid);
                self.touch(Some(&te));
            }
            EV => {
                let Some((stored, _)) = self.load::<StoredEvent>(Collection::EVENTS, uid) else {
                    e.add(C::E1032, &[uid]);
                    return self.fail(e, index);
                };
                if !self.can_capture(&stored.org_unit) {
                    e.add(C::E1000, &[&self.user.username, &stored.org_unit]);
                    return self.fail(e, index);
                }
                self.tombstone(EV, uid);
                self.touch(stored.tracked_entity.as_deref());
            }
            REL => {
                let te = self.rel_tes(uid);
                self.tombstone(REL, uid);
                for t in te {
                    self.touch(Some(&t));
                }
            }
        }
        self.outcome(t, uid, index, Kind::Deleted);
    }

    fn rel_tes(&self, rel: &str) -> Vec<String> {
        let Some(m) = Uid::try_from(rel)
            .ok()
            .and_then(|u| self.cat.relationships.get(&u))
        else {
            return Vec::new();
        };
        [m.from, m.to]
            .iter()
            .filter_map(|(t, u)| self.te_of(*t, u.as_str()))
            .collect()
    }

    /// Live enrollments of an entity, or live events of an enrollment.
    fn live_children(&self, t: TrackerType, uid: &str) -> Vec<String> {
        let Ok(u) = Uid::try_from(uid) else {
            return Vec::new();
        };
        match t {
            TE => self
                .cat
                .enrollments_of(u)
                .iter()
                .filter(|c| self.exists(EN, c.as_str()) == Exists::Live)
                .map(|c| c.to_string())
                .collect(),
            EN => self
                .cat
                .events_of(u)
                .iter()
                .filter(|c| self.exists(EV, c.as_str()) == Exists::Live)
                .map(|c| c.to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Plans a soft delete: the record keeps its last body, gets `deleted` and a new
    /// `updatedAt`; its relationships go with it.
    fn tombstone(&mut self, t: TrackerType, uid: &str) {
        if self.exists(t, uid) != Exists::Live {
            return;
        }
        match t {
            TE => {
                if let Some(s) = self.te_slot(uid) {
                    s.deleted = true;
                    s.dirty = true;
                }
            }
            EN => {
                if let Some(s) = self.en_slot(uid) {
                    s.deleted = true;
                    s.dirty = true;
                }
            }
            EV => {
                if !self.evs.contains_key(uid) {
                    let Some((stored, created)) = self.load::<StoredEvent>(Collection::EVENTS, uid)
                    else {
                        return;
                    };
                    self.order.push((EV, uid.to_string()));
                    self.evs.insert(
                        uid.to_string(),
                        Slot {
                            stored,
                            created_ms: Some(created),
                            dirty: true,
                            deleted: true,
                        },
                    );
                } else if let Some(s) = self.evs.get_mut(uid) {
                    s.deleted = true;
                    s.dirty = true;
                }
            }
            REL => {
                if !self.rels.contains_key(uid) {
                    let Some((stored, created)) =
                        self.load::<StoredRelationship>(Collection::RELATIONSHIPS, uid)
                    else {
                        return;
                    };
                    self.order.push((REL, uid.to_string()));
                    self.rels.insert(
                        uid.to_string(),
                        Slot {
                            stored,
                            created_ms: Some(created),
                            dirty: true,
                            deleted: true,
                        },
                    );
                } else if let Some(s) = self.rels.get_mut(uid) {
                    s.deleted = true;
                    s.dirty = true;
                }
                return;
            }
        }
        if let Ok(u) = Uid::try_from(uid) {
            let rels: Vec<String> = self
                .cat
                .relationships_of(u)
                .iter()
                .map(|r| r.to_string())
                .collect();
            for r in rels {
                self.tombstone(REL, &r);
            }
        }
    }

    // ---- result --------------------------------------------------------------------------

    fn finish(mut self) -> Outcome {
        let has_errors = !self.errors.is_empty();
        let all_or_nothing = self.params.atomic_mode == AtomicMode::All && has_errors;
        let mut writes = Vec::new();
        let mut changes = Vec::new();
        if !all_or_nothing {
            for (t, uid) in std::mem::take(&mut self.order) {
                self.emit(t, &uid, &mut writes, &mut changes);
            }
        }
        let mut type_map = BTreeMap::new();
        let mut total = Stats::default();
        for (t, list) in &self.outcomes {
            let mut stats = Stats::default();
            let mut reports = Vec::new();
            for (uid, index, kind) in list {
                let kind = if all_or_nothing { Kind::Ignored } else { *kind };
                match kind {
                    Kind::Created => stats.created += 1,
                    Kind::Updated => stats.updated += 1,
                    Kind::Deleted => stats.deleted += 1,
                    Kind::Ignored => stats.ignored += 1,
                }
                if !all_or_nothing && !self.failed.contains(uid) {
                    reports.push(TrackerObjectReport {
                        tracker_type: *t,
                        uid: uid.clone(),
                        index: Some(*index),
                        error_reports: Vec::new(),
                    });
                }
            }
            let stats = stats.with_total();
            total.add(&stats);
            type_map.insert(
                *t,
                TrackerTypeReport {
                    tracker_type: *t,
                    stats,
                    object_reports: reports,
                },
            );
        }
        let status = if has_errors {
            TrackerStatus::Error
        } else if !self.warnings.is_empty() {
            TrackerStatus::Warning
        } else {
            TrackerStatus::Ok
        };
        let report = TrackerImportReport {
            status,
            validation_report: ValidationReport {
                error_reports: self.errors,
                warning_reports: Some(self.warnings),
            },
            stats: total,
            bundle_report: Some(BundleReport {
                status,
                type_report_map: type_map,
                stats: total,
            }),
            timings_stats: None,
            message: None,
        };
        Outcome {
            writes,
            changes,
            report,
        }
    }

    fn emit(
        &mut self,
        t: TrackerType,
        uid: &str,
        writes: &mut Vec<Write>,
        changes: &mut Vec<Change>,
    ) {
        let Ok(u) = Uid::try_from(uid) else {
            return;
        };
        let stamps = |created: Option<u64>, deleted: bool| Stamps {
            created_ms: created.unwrap_or(0),
            updated_ms: 0,
            deleted,
        };
        match t {
            TE => {
                let Some(s) = self.tes.remove(uid) else {
                    return;
                };
                if !s.dirty {
                    return;
                }
                if let Some(m) = catalog::te_meta(&s.stored, stamps(s.created_ms, s.deleted)) {
                    changes.push(Change::Te(u, m));
                }
                writes.push(Write {
                    uid: uid.to_string(),
                    body: Body::TrackedEntity(Box::new(s.stored)),
                    tombstone: s.deleted,
                });
            }
            EN => {
                let Some(s) = self.ens.remove(uid) else {
                    return;
                };
                if !s.dirty {
                    return;
                }
                if let Some(m) = catalog::en_meta(&s.stored, stamps(s.created_ms, s.deleted)) {
                    changes.push(Change::Enrollment(u, m));
                }
                writes.push(Write {
                    uid: uid.to_string(),
                    body: Body::Enrollment(Box::new(s.stored)),
                    tombstone: s.deleted,
                });
            }
            EV => {
                let Some(s) = self.evs.remove(uid) else {
                    return;
                };
                if !s.dirty {
                    return;
                }
                if let Some(m) = catalog::ev_meta(&s.stored, stamps(s.created_ms, s.deleted)) {
                    changes.push(Change::Event(u, m));
                }
                writes.push(Write {
                    uid: uid.to_string(),
                    body: Body::Event(Box::new(s.stored)),
                    tombstone: s.deleted,
                });
            }
            REL => {
                let Some(s) = self.rels.remove(uid) else {
                    return;
                };
                if !s.dirty {
                    return;
                }
                if let Some(m) = catalog::rel_meta(&s.stored, stamps(s.created_ms, s.deleted)) {
                    changes.push(Change::Relationship(u, m));
                }
                writes.push(Write {
                    uid: uid.to_string(),
                    body: Body::Relationship(Box::new(s.stored)),
                    tombstone: s.deleted,
                });
            }
        }
    }
}
