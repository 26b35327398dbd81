//! Validation and merging: turns a flattened payload into the writes to commit, the catalog
//! changes to apply after the commit, and the import report.
//!
//! Objects are handled parents first (tracked entities, enrollments, events, relationships).
//! Each object either passes every check and is planned, or is reported with DHIS2 error codes
//! and skipped; children of a skipped object fail with E5000. With `atomicMode=ALL` any error
//! drops every write.
//!
//! This module holds the planner's state and the checks every object type shares; each object
//! type is planned in its own module, deletions in `delete`, and `write_out` turns the plan
//! into writes, catalog changes and the report.

mod delete;
mod enrollment;
mod event;
mod relationship;
mod tracked_entity;
mod write_out;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use clinicbox_dhis2::tracker::{
    ImportStrategy, Note, TrackerErrorReport, TrackerImportReport, TrackerType, ValidationCode,
};
use clinicbox_dhis2::value_type::{self, ValueError};
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone, Uid};
use clinicbox_store::{Collection, ReadView};
use clinicbox_web::{AuthUser, Snapshot};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::batch::Overlay;
use super::{Flat, ImportParams};
use crate::catalog::{Catalog, Change};
use crate::files::{self, FileOwner, StoredFile};
use crate::meta::{self, Meta, ref_id, str_of};
use crate::model::{
    StoredEnrollment, StoredEvent, StoredNote, StoredRelationship, StoredTrackedEntity,
};

use TrackerType::{Enrollment as EN, Event as EV, Relationship as REL, TrackedEntity as TE};
use ValidationCode as C;

/// A body to write.
#[derive(Debug)]
pub enum Body {
    TrackedEntity(Box<StoredTrackedEntity>),
    Enrollment(Box<StoredEnrollment>),
    Event(Box<StoredEvent>),
    Relationship(Box<StoredRelationship>),
    /// The file resource `uid` now belongs to this record.
    FileAssignment(FileOwner),
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
    /// What earlier imports of the same commit wrote (read before the store).
    overlay: &'a Overlay,
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
    /// Importing national's own data: national checked its org units against its whole
    /// hierarchy and its own access rules, so org units outside the box's metadata (a patient
    /// enrolled elsewhere, transferred in) are taken as national states them.
    national: bool,
    /// Unassigned file resources a value of this import references, with their new owner:
    /// assigned in the same commit as the owner, if it is written.
    file_refs: Vec<(String, FileOwner)>,
}

/// Errors of one object, collected before deciding whether it passes.
/// A type's error codes for the checks in [`Planner::admit`].
struct Admission {
    /// The type's name in E1048's message.
    label: &'static str,
    /// The UID was deleted and cannot be re-created.
    deleted: ValidationCode,
    /// CREATE, but the object exists.
    exists: ValidationCode,
    /// UPDATE, but the object does not exist (or cannot be loaded).
    missing: ValidationCode,
}

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
        self.list.push(error_report(self.t, &self.uid, code, args));
    }
    fn any(&self) -> bool {
        !self.list.is_empty()
    }
}

/// An error or warning report. Every argument is cut to a short excerpt, so no value a tablet
/// sent (a 12 MB attribute, say) is ever echoed whole into the report, its message or the job
/// record that keeps it.
fn error_report(
    t: TrackerType,
    uid: &str,
    code: ValidationCode,
    args: &[&str],
) -> TrackerErrorReport {
    let args: Vec<String> = args
        .iter()
        .map(|a| value_type::excerpt(a).into_owned())
        .collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TrackerErrorReport {
        message: code.message(&refs),
        error_code: code.to_string(),
        tracker_type: t,
        // A UID is 11 characters; anything else a payload calls one is cut like a value.
        uid: value_type::excerpt(uid).into_owned(),
        args,
    }
}

fn is_set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Why an attribute or data value was refused; the caller picks the error code for its kind
/// of value.
enum Refusal {
    /// Fails its value type or the checks every value gets (E1007 / E1302), with DHIS2's reason.
    Invalid(ValueError),
    /// An attribute value longer than DHIS2 stores (E1077).
    AttributeTooLong,
    /// Not a code of the option set (E1125), with the option set's UID.
    NotAnOption(String),
    /// The referenced file resource is not on the box, or not one this user may use (E1084).
    NoFile,
    /// The referenced file resource belongs to another record (E1009).
    FileTaken,
}

impl<'a> Planner<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        user: &'a AuthUser,
        snap: &'a Snapshot,
        cat: &'a Catalog,
        read: &'a ReadView,
        overlay: &'a Overlay,
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
            overlay,
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
            file_refs: Vec::new(),
            // No box user can hold this UID: box users' UIDs are DHIS2's 11 characters.
            national: user.uid == clinicbox_api::conflicts::NATIONAL,
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

    /// The checks every tracked entity, enrollment and event starts with: a valid UID, and
    /// existence against the import strategy. On failure the errors are recorded and `None`
    /// returned; otherwise the error list back and whether a live object exists.
    fn admit(&mut self, mut e: Errs, index: usize, codes: &Admission) -> Option<(Errs, bool)> {
        let uid = e.uid.clone();
        if !Uid::is_valid(&uid) {
            e.add(ValidationCode::E1048, &[codes.label, &uid]);
        } else {
            let strategy = self.params.import_strategy;
            match self.exists(e.t, &uid) {
                Exists::Deleted => e.add(codes.deleted, &[&uid]),
                Exists::Live if strategy == ImportStrategy::Create => e.add(codes.exists, &[&uid]),
                Exists::Missing if strategy == ImportStrategy::Update => {
                    e.add(codes.missing, &[&uid])
                }
                Exists::Missing => return Some((e, false)),
                Exists::Live => return Some((e, true)),
            }
        }
        self.fail(e, index);
        None
    }

    fn outcome(&mut self, t: TrackerType, uid: &str, index: usize, kind: Kind) {
        if let Some(v) = self.outcomes.get_mut(&t) {
            v.push((value_type::excerpt(uid).into_owned(), index, kind));
        }
    }

    fn warn(&mut self, t: TrackerType, uid: &str, code: ValidationCode, args: &[&str]) {
        self.warnings.push(error_report(t, uid, code, args));
    }

    /// A stored object: as an earlier import of this batch wrote it, or as the store holds it.
    fn load<T: DeserializeOwned>(&self, c: Collection, uid: &str) -> Option<(T, u64)> {
        if let Some((body, created)) = self.overlay.record(c, uid) {
            return serde_json::from_slice(body).ok().map(|b| (b, created));
        }
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
        if self.national {
            return true;
        }
        if let Some(c) = self.capture.borrow().get(ou) {
            return *c;
        }
        let c = self.user.can_capture_in(ou);
        self.capture.borrow_mut().insert(ou.to_string(), c);
        c
    }

    /// Whether `ou` is an org unit the write may name: one the box holds, or any of national's.
    fn org_unit_known(&self, ou: &str) -> bool {
        self.national || self.meta.org_unit_exists(ou)
    }

    /// Whether `program` is assigned to `ou` (national's data: as national assigned it).
    fn program_offered(&self, program: &str, ou: &str) -> bool {
        self.national || self.meta.program_in_org_unit(program, ou)
    }

    /// The org unit a write fails on, if any (reported as E1000), for an enrollment or event
    /// that lives in `stored` (None: being created) and that the payload puts in `target`, as
    /// DHIS2 2.42's ownership validators decide it — always against the object as stored, never
    /// only against what the payload claims:
    /// - create: the capture scope must hold `target`;
    /// - update in place: the capture scope must hold `stored`, unless `owned` — a tracker
    ///   program's update is governed by program ownership (checked by the caller, with
    ///   temporary ownership) instead;
    /// - a move to another org unit: the capture scope must hold both.
    fn org_unit_denied(&self, stored: Option<&str>, target: &str, owned: bool) -> Option<String> {
        let denied = |ou: &str| (!self.can_capture(ou)).then(|| ou.to_string());
        match stored {
            None => denied(target),
            Some(now) if now != target => denied(now).or_else(|| denied(target)),
            Some(_) if owned => None,
            Some(now) => denied(now),
        }
    }

    /// Write access to a stored tracked entity: its org unit or one of its program owners in the
    /// capture scope, or a temporary ownership (break the glass) of it.
    fn te_writable(&self, uid: &str, stored: &StoredTrackedEntity) -> bool {
        self.can_capture(&stored.org_unit)
            || stored
                .program_owners
                .iter()
                .any(|o| self.can_capture(&o.org_unit))
            || self.overrides.iter().any(|(te, _)| te == uid)
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

    /// Checks one attribute (`attribute`) or data value sent as `value` against the wire
    /// crate's value-type checker, then its option set and file resource, as DHIS2 does.
    /// `Ok(None)`: a blank value, which deletes like an empty one; `Ok(Some)`: the value to
    /// store (booleans normalised).
    fn check_value<'v>(
        &mut self,
        obj: &Obj,
        value: &'v str,
        attribute: bool,
        owner: &FileOwner,
    ) -> Result<Option<Cow<'v, str>>, Refusal> {
        let vt = str_of(obj, "valueType").unwrap_or("TEXT");
        let checked = if attribute {
            value_type::check_attribute(vt, value)
        } else {
            value_type::check(vt, value)
        }
        .map_err(|e| match e {
            ValueError::AttributeTooLong => Refusal::AttributeTooLong,
            e => Refusal::Invalid(e),
        })?;
        if value_type::is_blank(&checked) {
            return Ok(None);
        }
        if let Some(os) = ref_id(obj.get("optionSet")) {
            let codes = self.meta.option_codes(&os);
            let ok = if vt == "MULTI_TEXT" {
                checked.split(',').all(|c| codes.contains(c.trim()))
            } else {
                codes.contains(checked.as_ref())
            };
            if !ok {
                return Err(Refusal::NotAnOption(os));
            }
        }
        if value_type::is_file(vt) {
            self.check_file(&checked, owner)?;
        }
        Ok(Some(checked))
    }

    /// A file value: the file must be on the box and usable by this user (their own, or their
    /// clinic's), and not another record's already (DHIS2's E1009). An unassigned file is
    /// assigned to `owner` in the import's commit.
    fn check_file(&mut self, file: &str, owner: &FileOwner) -> Result<(), Refusal> {
        let stored = self
            .read
            .get(Collection::FILE_RESOURCES, file)
            .ok()
            .flatten()
            .filter(|r| !r.deleted)
            .and_then(|r| r.json::<StoredFile>().ok())
            .ok_or(Refusal::NoFile)?;
        // An earlier import of this batch may have assigned it.
        let assigned = self
            .overlay
            .file_owner(file)
            .or(stored.assigned_to.as_ref());
        match assigned {
            Some(o) if o == owner => Ok(()),
            Some(_) => Err(Refusal::FileTaken),
            // Claimed by another record earlier in this payload.
            None if self.file_refs.iter().any(|(f, o)| f == file && o != owner) => {
                Err(Refusal::FileTaken)
            }
            None if files::uploaded_in_scope(self.user, &stored, files::Use::Assign) => {
                self.file_refs.push((file.to_string(), owner.clone()));
                Ok(())
            }
            None => Err(Refusal::NoFile),
        }
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
}
