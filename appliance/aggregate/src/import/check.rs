//! One posted value checked in DHIS2 2.42's order; the first failing check is its conflict:
//! 1. what it names ([`Checker::identify`]): data element (E7610), period (E7611), org unit
//!    (E7612), both option combos known (E7613, E7615) and writable (E7614, E7616), the org unit
//!    in the capture scope (E7617);
//! 2. the value itself ([`Checker::posted`]): its value type (E7619), a file value's resource
//!    (E7619), the comment's length (E7620), the option set (E7621);
//! 3. the data set whose rules apply ([`Checker::data_set`]): period type (E7632), element in
//!    the set (E7633), combos in their combos (E7634, E7635), org unit assigned (E7636);
//! 4. who stored it and where the attribute options may be used ([`Checker::restrictions`]):
//!    `storedBy` length (E7637), option dates and org units (E7638, E7639);
//! 5. whether entry is open ([`Checker::open_for_entry`]): expiry (E7640), future periods
//!    (E7641), input periods (E7643), approval (E7642).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use clinicbox_api::files::{StoredFile, Use, uploaded_in_scope};
use clinicbox_dhis2::Period;
use clinicbox_dhis2::aggregate::{ConflictCode, DataValue, DataValueSet, ImportStrategy};
use clinicbox_dhis2::value_type::{self, MAX_STORED_BY_LENGTH, MAX_VALUE_LENGTH, ValueError};
use clinicbox_store::{Collection, DataValueKey, ReadView, StoreError};
use clinicbox_web::AuthUser;
use clinicbox_web::Snapshot;
use serde_json::{Map, Value};

use super::{Action, ImportParams, Op, trimmed};
use crate::approvals;
use crate::periods::Now;
use crate::rules::{Categories, DataSetRules, Lock, data_sets_for, element_combo, option_codes};

/// A conflict: DHIS2's code and the objects its message names.
pub(super) type Conflict = (ConflictCode, Vec<(&'static str, String)>);

/// Why a value is not taken: a conflict for the tablet, or the store failing under the check.
enum Refusal {
    Conflict(Conflict),
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// A conflict of one value. Every object is cut to a short excerpt (the wire crate's helper,
/// as in tracker reports), so nothing a tablet posted is echoed whole into the summary.
fn conflict(code: ConflictCode, objects: &[(&'static str, &str)]) -> Refusal {
    Refusal::Conflict((
        code,
        objects
            .iter()
            .map(|(k, v)| (*k, value_type::excerpt(v).into_owned()))
            .collect(),
    ))
}

/// What a value names, each part known and open to the user.
struct Named<'v> {
    de_id: &'v str,
    /// The period as posted, and parsed.
    pe: &'v str,
    period: Period,
    ou: &'v str,
    ou_path: String,
    coc: String,
    aoc: String,
}

/// The value as it will be stored.
struct Posted<'d> {
    deleted: bool,
    value_type: &'d str,
    value: Option<String>,
    comment: Option<String>,
}

/// Validation state shared by the values of one request.
pub(super) struct Checker<'a> {
    user: &'a AuthUser,
    now: &'a Now,
    read: &'a ReadView,
    params: ImportParams,
    pub(super) cats: Categories<'a>,
    rules: HashMap<String, Option<Arc<DataSetRules>>>,
    options: HashMap<String, HashSet<String>>,
    approved: HashMap<String, bool>,
    /// Per combo: its first option the user may not write (checked once per request).
    unwritable: HashMap<String, Option<String>>,
    /// Per org unit: in the user's capture scope.
    capture: HashMap<String, bool>,
    /// Per data set and period: the lock, if any.
    locks: HashMap<(String, String), Option<Lock>>,
}

/// The value to store, checked with the wire crate's value-type checker: `None` when blank or
/// missing (no value), else the value trimmed (as DHIS2's data value import trims) and
/// normalised. The checks every value gets run on the value as posted, so a control character
/// at either end is refused rather than trimmed away.
fn checked_value(value_type: &str, posted: Option<&str>) -> Result<Option<String>, ValueError> {
    let Some(posted) = posted else {
        return Ok(None);
    };
    value_type::check_text(posted)?;
    let trimmed = posted.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    value_type::check(value_type, trimmed).map(|v| Some(v.into_owned()))
}

impl<'a> Checker<'a> {
    pub(super) fn new(
        user: &'a AuthUser,
        now: &'a Now,
        read: &'a ReadView,
        params: ImportParams,
        cats: Categories<'a>,
    ) -> Self {
        Checker {
            user,
            now,
            read,
            params,
            cats,
            rules: HashMap::new(),
            options: HashMap::new(),
            approved: HashMap::new(),
            unwritable: HashMap::new(),
            capture: HashMap::new(),
            locks: HashMap::new(),
        }
    }

    /// Checks value `index`: the operation to apply, or its conflict.
    pub(super) fn check(
        &mut self,
        set: &DataValueSet,
        set_rules: Option<&Arc<DataSetRules>>,
        index: usize,
        v: &DataValue,
    ) -> Result<Result<Op, Conflict>, StoreError> {
        match self.op(set, set_rules, index, v) {
            Ok(op) => Ok(Ok(op)),
            Err(Refusal::Conflict(c)) => Ok(Err(c)),
            Err(Refusal::Store(e)) => Err(e),
        }
    }

    fn op(
        &mut self,
        set: &DataValueSet,
        set_rules: Option<&Arc<DataSetRules>>,
        index: usize,
        v: &DataValue,
    ) -> Result<Op, Refusal> {
        let snap = self.user.snapshot.clone();
        let (de, named) = self.identify(&snap, set, v)?;
        let posted = self.posted(&snap, de, &named, v)?;
        let rules = self.data_set(&snap, set_rules, de, &named)?;
        let stored_by = self.restrictions(&named, v)?;
        if let Some(r) = &rules {
            self.open_for_entry(r, &named)?;
        }
        let action = action(de, posted, v);
        Ok(Op {
            index,
            key: DataValueKey {
                data_element: named.de_id.to_string(),
                period: named.period.id().to_string(),
                org_unit: named.ou.to_string(),
                category_option_combo: named.coc,
                attribute_option_combo: named.aoc,
            },
            action,
            stored_by,
        })
    }

    /// Phase 1: the element, period, org unit and combos the value names.
    fn identify<'s, 'v>(
        &mut self,
        snap: &'s Snapshot,
        set: &'v DataValueSet,
        v: &'v DataValue,
    ) -> Result<(&'s Map<String, Value>, Named<'v>), Refusal> {
        let de_id = trimmed(&v.data_element).unwrap_or("");
        let Some(de) = snap.get("dataElements", de_id) else {
            return Err(conflict(ConflictCode::E7610, &[("dataElement", de_id)]));
        };
        let pe = trimmed(&v.period).or(trimmed(&set.period)).unwrap_or("");
        let Ok(period) = Period::parse(pe) else {
            return Err(conflict(ConflictCode::E7611, &[("period", pe)]));
        };
        let ou = trimmed(&v.org_unit)
            .or(trimmed(&set.org_unit))
            .unwrap_or("");
        let Some(ou_path) = snap.org_unit_path(ou).map(str::to_string) else {
            return Err(conflict(ConflictCode::E7612, &[("orgUnit", ou)]));
        };
        let coc = self.combo(
            trimmed(&v.category_option_combo),
            [ConflictCode::E7613, ConflictCode::E7614],
            "categoryOptionCombo",
        )?;
        let aoc = self.combo(
            trimmed(&v.attribute_option_combo).or(trimmed(&set.attribute_option_combo)),
            [ConflictCode::E7615, ConflictCode::E7616],
            "attributeOptionCombo",
        )?;
        if !self.can_capture(ou) {
            return Err(conflict(
                ConflictCode::E7617,
                &[("orgUnit", ou), ("user", &self.user.uid)],
            ));
        }
        let named = Named {
            de_id,
            pe,
            period,
            ou,
            ou_path,
            coc,
            aoc,
        };
        Ok((de, named))
    }

    /// A category or attribute option combo: known (`codes[0]`) and writable (`codes[1]`);
    /// the default combo when none is posted.
    fn combo(
        &mut self,
        posted: Option<&str>,
        codes: [ConflictCode; 2],
        name: &'static str,
    ) -> Result<String, Refusal> {
        let c = match posted {
            Some(c) if !self.cats.exists(c) => return Err(conflict(codes[0], &[(name, c)])),
            Some(c) => c.to_string(),
            None => self.cats.default_coc.clone(),
        };
        match self.unwritable(&c) {
            Some(o) => Err(conflict(codes[1], &[(name, &c), ("categoryOption", &o)])),
            None => Ok(c),
        }
    }

    /// Phase 2: the value, its file, its comment and its option set.
    fn posted<'d>(
        &mut self,
        snap: &Snapshot,
        de: &'d Map<String, Value>,
        named: &Named<'_>,
        v: &DataValue,
    ) -> Result<Posted<'d>, Refusal> {
        let de_id = named.de_id;
        let deleted = v.deleted == Some(true) || self.params.strategy == ImportStrategy::Delete;
        let value_type = de
            .get("valueType")
            .and_then(Value::as_str)
            .unwrap_or("TEXT");
        let comment = v.comment.clone().filter(|c| !c.trim().is_empty());
        let mut value = trimmed(&v.value).map(str::to_string);
        if !deleted {
            value = checked_value(value_type, v.value.as_deref()).map_err(|reason| {
                conflict(
                    ConflictCode::E7619,
                    &[("dataElement", de_id), ("value", &reason.to_string())],
                )
            })?;
        }
        if let (Some(raw), false) = (value.as_deref(), deleted)
            && value_type::is_file(value_type)
            && let Some(why) = self.file_refused(raw)?
        {
            return Err(conflict(
                ConflictCode::E7619,
                &[("dataElement", de_id), ("value", why)],
            ));
        }
        if comment
            .as_ref()
            .is_some_and(|c| value_type::longer_than(c, MAX_VALUE_LENGTH))
        {
            return Err(conflict(
                ConflictCode::E7620,
                &[("comment", "comment_length_greater_than_max_length")],
            ));
        }
        let option_set = de
            .get("optionSet")
            .and_then(|o| o.get("id"))
            .and_then(Value::as_str);
        if let (Some(val), false, Some(os)) = (&value, deleted, option_set)
            && !self.in_option_set(snap, os, value_type, val)
        {
            return Err(conflict(ConflictCode::E7621, &[("dataElement", de_id)]));
        }
        Ok(Posted {
            deleted,
            value_type,
            value,
            comment,
        })
    }

    fn in_option_set(&mut self, snap: &Snapshot, os: &str, value_type: &str, val: &str) -> bool {
        let codes = self
            .options
            .entry(os.to_string())
            .or_insert_with(|| option_codes(snap, os));
        if value_type == "MULTI_TEXT" {
            val.split(',').all(|c| codes.contains(c.trim()))
        } else {
            codes.contains(val)
        }
    }

    /// Phase 3: the data set whose rules apply (the posted one, else one holding this element
    /// here) and what it allows. Without one, the value cannot be placed (E7636).
    fn data_set(
        &mut self,
        snap: &Snapshot,
        set_rules: Option<&Arc<DataSetRules>>,
        de: &Map<String, Value>,
        named: &Named<'_>,
    ) -> Result<Option<Arc<DataSetRules>>, Refusal> {
        let (de_id, ou, coc, aoc) = (named.de_id, named.ou, &named.coc, &named.aoc);
        let rules = match set_rules {
            Some(r) => Some(r.clone()),
            None => match data_sets_for(snap, de_id, ou).first() {
                Some(id) => self.rules(id),
                None => None,
            },
        };
        let combo = element_combo(snap, rules.as_deref(), de, de_id, &self.cats.default_combo);
        let Some(r) = &rules else {
            if !self.cats.in_combo(&combo, coc) {
                return Err(conflict(
                    ConflictCode::E7634,
                    &[("categoryOptionCombo", coc), ("dataElement", de_id)],
                ));
            }
            return Err(conflict(
                ConflictCode::E7636,
                &[("orgUnit", ou), ("dataElement", de_id)],
            ));
        };
        if r.period_type
            .is_some_and(|t| t != named.period.period_type())
        {
            return Err(conflict(
                ConflictCode::E7632,
                &[("period", named.pe), ("dataElement", de_id)],
            ));
        }
        if !r.elements.contains_key(de_id) {
            return Err(conflict(
                ConflictCode::E7633,
                &[("dataElement", de_id), ("dataSet", &r.id)],
            ));
        }
        if !self.cats.in_combo(&combo, coc) {
            return Err(conflict(
                ConflictCode::E7634,
                &[("categoryOptionCombo", coc), ("dataElement", de_id)],
            ));
        }
        if !self.cats.in_combo(&r.attribute_combo, aoc) {
            return Err(conflict(
                ConflictCode::E7635,
                &[("attributeOptionCombo", aoc), ("dataElement", de_id)],
            ));
        }
        if !r.org_units.contains(ou) {
            return Err(conflict(
                ConflictCode::E7636,
                &[("orgUnit", ou), ("dataElement", de_id)],
            ));
        }
        Ok(rules)
    }

    /// Phase 4: who stored it (bounded), and the attribute options' dates and org units;
    /// returns `storedBy`.
    fn restrictions(&mut self, named: &Named<'_>, v: &DataValue) -> Result<String, Refusal> {
        let stored_by = trimmed(&v.stored_by)
            .unwrap_or(&self.user.username)
            .to_string();
        if stored_by.chars().count() > MAX_STORED_BY_LENGTH {
            return Err(conflict(
                ConflictCode::E7637,
                &[("storedBy", "stored_by_length_greater_than_max_length")],
            ));
        }
        let aoc = &named.aoc;
        if let Some(code) = self
            .cats
            .aoc_restriction(aoc, &named.period, &named.ou_path)
        {
            let first = if code == ConflictCode::E7638 {
                ("period", named.pe)
            } else {
                ("orgUnit", named.ou)
            };
            return Err(conflict(code, &[first, ("attributeOptionCombo", aoc)]));
        }
        Ok(stored_by)
    }

    /// Phase 5: the data set's period open for entry and not approved (a superuser's
    /// `force=true` skips both, as in DHIS2).
    fn open_for_entry(&mut self, r: &DataSetRules, named: &Named<'_>) -> Result<(), Refusal> {
        if self.params.force && self.user.is_superuser() {
            return Ok(());
        }
        let (pe, ou, aoc) = (named.pe, named.ou, named.aoc.as_str());
        match self.lock(r, &named.period) {
            Some(Lock::Expired) => {
                return Err(conflict(
                    ConflictCode::E7640,
                    &[("period", pe), ("dataSet", &r.id)],
                ));
            }
            Some(Lock::Future(latest)) => {
                return Err(conflict(
                    ConflictCode::E7641,
                    &[
                        ("period", pe),
                        ("latestOpenPeriod", &latest),
                        ("dataElement", named.de_id),
                        ("dataSet", &r.id),
                    ],
                ));
            }
            Some(Lock::InputClosed) => {
                return Err(conflict(
                    ConflictCode::E7643,
                    &[("period", pe), ("dataSet", &r.id)],
                ));
            }
            None => {}
        }
        if let Some(wf) = &r.workflow
            && self.is_approved(wf, pe, ou, aoc)?
        {
            return Err(conflict(
                ConflictCode::E7642,
                &[
                    ("orgUnit", ou),
                    ("period", pe),
                    ("attributeOptionCombo", aoc),
                    ("dataSet", &r.id),
                ],
            ));
        }
        Ok(())
    }

    fn rules(&mut self, id: &str) -> Option<Arc<DataSetRules>> {
        let snap = &self.user.snapshot;
        let (now, default) = (self.now, self.cats.default_combo.clone());
        self.rules
            .entry(id.to_string())
            .or_insert_with(|| DataSetRules::load(snap, id, now, &default).map(Arc::new))
            .clone()
    }

    fn unwritable(&mut self, coc: &str) -> Option<String> {
        if let Some(v) = self.unwritable.get(coc) {
            return v.clone();
        }
        let v = self.cats.unwritable_option(coc, self.user);
        self.unwritable.insert(coc.to_string(), v.clone());
        v
    }

    fn can_capture(&mut self, ou: &str) -> bool {
        let user = self.user;
        *self
            .capture
            .entry(ou.to_string())
            .or_insert_with(|| user.can_capture_in(ou))
    }

    fn lock(&mut self, rules: &DataSetRules, period: &Period) -> Option<Lock> {
        let (now, user) = (self.now, self.user);
        self.locks
            .entry((rules.id.clone(), period.id().to_string()))
            .or_insert_with(|| rules.lock(period, now, user))
            .clone()
    }

    fn is_approved(&mut self, wf: &str, pe: &str, ou: &str, aoc: &str) -> Result<bool, StoreError> {
        let key = format!("{wf}/{pe}/{ou}/{aoc}");
        if let Some(v) = self.approved.get(&key) {
            return Ok(*v);
        }
        let v = approvals::is_approved(self.read, &key)?;
        self.approved.insert(key, v);
        Ok(v)
    }

    /// Why a file value cannot reference `uid`: not on the box, not this user's to use (the
    /// uploader's or their clinic's), or already a tracker record's.
    fn file_refused(&self, uid: &str) -> Result<Option<&'static str>, StoreError> {
        let file = self
            .read
            .get(Collection::FILE_RESOURCES, uid)?
            .filter(|r| !r.deleted)
            .and_then(|r| r.json::<StoredFile>().ok());
        Ok(match file {
            None => Some("file_resource_not_found"),
            Some(f) if f.assigned_to.is_some() => Some("file_resource_already_assigned"),
            Some(f) if !uploaded_in_scope(self.user, &f, Use::Assign) => {
                Some("file_resource_not_found")
            }
            Some(_) => None,
        })
    }
}

/// What storing the value means: a deletion (deleted, or neither value nor comment), a zero
/// DHIS2 does not keep (numeric, not significant), or a write.
fn action(de: &Map<String, Value>, posted: Posted<'_>, v: &DataValue) -> Action {
    let zero_insignificant = value_type::is_numeric(posted.value_type)
        && posted.value.as_deref().is_some_and(value_type::is_zero)
        && de.get("zeroIsSignificant").and_then(Value::as_bool) != Some(true);
    if posted.deleted || (posted.value.is_none() && posted.comment.is_none()) {
        Action::Delete
    } else if zero_insignificant {
        Action::Zero
    } else {
        Action::Put {
            value: posted.value,
            comment: posted.comment,
            followup: v.followup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_value_is_checked_as_posted_and_stored_trimmed() {
        assert_eq!(
            checked_value("INTEGER", Some(" 12 ")),
            Ok(Some("12".into()))
        );
        assert_eq!(checked_value("INTEGER", Some("  ")), Ok(None));
        assert_eq!(checked_value("INTEGER", None), Ok(None));
        assert!(checked_value("INTEGER", Some("12a")).is_err());
        assert!(
            checked_value("TEXT", Some("x\u{0}")).is_err(),
            "a control character"
        );
    }

    fn posted(value: Option<&str>, comment: Option<&str>, deleted: bool) -> Posted<'static> {
        Posted {
            deleted,
            value_type: "INTEGER",
            value: value.map(str::to_string),
            comment: comment.map(str::to_string),
        }
    }

    #[test]
    fn storing_means_a_write_a_deletion_or_a_zero_dhis2_does_not_keep() {
        let de = json!({"valueType": "INTEGER"});
        let de = de.as_object().unwrap();
        let significant = json!({"valueType": "INTEGER", "zeroIsSignificant": true});
        let significant = significant.as_object().unwrap();
        let v = DataValue::default();
        assert_eq!(action(de, posted(None, None, false), &v), Action::Delete);
        assert_eq!(
            action(de, posted(Some("5"), None, true), &v),
            Action::Delete
        );
        assert_eq!(action(de, posted(Some("0"), None, false), &v), Action::Zero);
        assert!(matches!(
            action(significant, posted(Some("0"), None, false), &v),
            Action::Put { .. }
        ));
        assert!(matches!(
            action(de, posted(None, Some("seen"), false), &v),
            Action::Put { value: None, .. }
        ));
    }

    /// The demo metadata as stored (the default combo marked as the API marks it), a
    /// superuser of the whole hierarchy, a store for approvals and files, and a day in
    /// December 2026.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: clinicbox_store::Store,
        user: AuthUser,
        now: Now,
    }

    fn fixture() -> Fixture {
        let mut package: Value =
            serde_json::from_str(clinicbox_api::demo::DEMO_METADATA).expect("demo metadata");
        for c in package["categoryCombos"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let default = c["name"] == "default";
            c["isDefault"] = Value::Bool(default);
        }
        // Paths as the import computes them.
        let parents: HashMap<String, Option<String>> = package["organisationUnits"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                let id = o["id"].as_str().unwrap_or_default().to_string();
                (id, o["parent"]["id"].as_str().map(str::to_string))
            })
            .collect();
        for o in package["organisationUnits"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let mut chain = vec![o["id"].as_str().unwrap_or_default().to_string()];
            while let Some(Some(p)) = chain.last().and_then(|c| parents.get(c)) {
                chain.push(p.clone());
            }
            chain.reverse();
            o["path"] = Value::from(format!("/{}", chain.join("/")));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = clinicbox_store::Store::create(
            &dir.path().join("data"),
            clinicbox_store::NewKeySlot::KeyFile {
                path: dir.path().join("key"),
                label: "test".into(),
                create: true,
            },
        )
        .expect("store");
        let user = AuthUser {
            uid: "cbUserTest1".into(),
            username: "tester".into(),
            authorities: std::collections::BTreeSet::new(),
            user_groups: Vec::new(),
            user_roles: Vec::new(),
            scope: clinicbox_web::Scope {
                capture: Vec::new(),
                search: Vec::new(),
                view: Vec::new(),
                all: true,
            },
            snapshot: Arc::new(Snapshot::from_package(&package)),
        };
        let zone = clinicbox_dhis2::ServerTimeZone::new("Africa/Nairobi").expect("zone");
        // 2026-12-06 12:00 UTC.
        let now = Now::at(1_796_558_400_000, &zone).expect("now");
        Fixture {
            _dir: dir,
            store,
            user,
            now,
        }
    }

    fn value(de: &str, pe: &str, coc: Option<&str>, v: &str) -> DataValue {
        DataValue {
            data_element: Some(de.into()),
            period: Some(pe.into()),
            org_unit: Some("cbClinicA01".into()),
            category_option_combo: coc.map(str::to_string),
            value: Some(v.into()),
            ..DataValue::default()
        }
    }

    /// The code of the first check `v` fails, in a set naming `data_set` (or none).
    fn first_failure(f: &Fixture, data_set: Option<&str>, v: DataValue) -> Option<ConflictCode> {
        let read = f.store.read().expect("read");
        let snap = f.user.snapshot.clone();
        let cats = Categories::new(&snap);
        let params =
            ImportParams::from_query(&clinicbox_api::query::Query::parse("")).expect("params");
        let mut checker = Checker::new(&f.user, &f.now, &read, params, cats);
        let set = DataValueSet {
            data_set: data_set.map(str::to_string),
            data_values: vec![v.clone()],
            ..DataValueSet::default()
        };
        let rules = data_set.and_then(|id| checker.rules(id));
        match checker.check(&set, rules.as_ref(), 0, &v).expect("store") {
            Ok(_) => None,
            Err((code, _)) => Some(code),
        }
    }

    #[test]
    fn what_a_value_names_is_checked_first() {
        let f = fixture();
        let ok = |coc| value("cbDeAggOpd1", "202612", coc, "4");
        assert_eq!(first_failure(&f, None, ok(Some("cbCocFemale"))), None);
        let cases = [
            (
                value("cbDeNothing", "202612", None, "4"),
                ConflictCode::E7610,
            ),
            (
                value("cbDeAggOpd1", "2026-13", None, "4"),
                ConflictCode::E7611,
            ),
            (
                DataValue {
                    org_unit: Some("cbNowhere01".into()),
                    ..ok(Some("cbCocFemale"))
                },
                ConflictCode::E7612,
            ),
            (ok(Some("cbCocNone01")), ConflictCode::E7613),
        ];
        for (v, code) in cases {
            assert_eq!(first_failure(&f, None, v), Some(code));
        }
    }

    #[test]
    fn then_the_value_then_its_data_set_then_whether_entry_is_open() {
        let f = fixture();
        let ds = Some("cbDsOpdMon1");
        let v = |pe: &str, value_: &str| value("cbDeAggOpd1", pe, Some("cbCocFemale"), value_);
        assert_eq!(
            first_failure(&f, ds, v("202612", "-3")),
            Some(ConflictCode::E7619)
        );
        // A tracker element is in no data set here; a weekly period is not the set's type.
        let tracker_element = value("cbDeQty0001", "202612", None, "3");
        assert_eq!(
            first_failure(&f, ds, tracker_element),
            Some(ConflictCode::E7633)
        );
        assert_eq!(
            first_failure(&f, ds, v("2026W49", "3")),
            Some(ConflictCode::E7632)
        );
        // Expired (15 days after the period) and too far ahead (one future period open).
        assert_eq!(
            first_failure(&f, ds, v("202609", "3")),
            Some(ConflictCode::E7640)
        );
        assert_eq!(
            first_failure(&f, ds, v("202703", "3")),
            Some(ConflictCode::E7641)
        );
        assert_eq!(first_failure(&f, ds, v("202612", "3")), None);
    }
}
