//! `POST /api/dataValueSets`: parse, validate every value against the metadata, the user and
//! the locks (a [`Plan`] of operations and conflicts, no I/O but reads), then apply the plan in
//! one store write, so a whole data set costs one durable commit and an acknowledged import is
//! on disk. Counting follows DHIS2 2.42: a re-post of the same value, comment and follow-up is
//! `ignored`; a rejected value is `ignored` with a conflict whose `indexes` point at it.

use std::collections::HashMap;
use std::sync::Arc;

use clinicbox_api::files::{StoredFile, Use, uploaded_in_scope};
use clinicbox_api::query::Query;
use clinicbox_api::{ApiError, AuthUser};
use clinicbox_dhis2::Period;
use clinicbox_dhis2::aggregate::{
    ConflictCode, DataValue, DataValueSet, ImportConflict, ImportCount, ImportStrategy,
    ImportSummary, ImportSummaryStatus,
};
use clinicbox_dhis2::value_type::{self, MAX_STORED_BY_LENGTH, MAX_VALUE_LENGTH, ValueError};
use clinicbox_store::{Collection, DataValueKey, ReadView, StoreError, WriteCtx};
use serde_json::{Value, json};

use crate::approvals;
use crate::periods::Now;
use crate::records::{AUDIT, AuditEntry, AuditType, DATA_VALUES, StoredDataValue};
use crate::registrations;
use crate::rules::{Categories, DataSetRules, Lock, data_sets_for, element_combo, option_codes};

/// Query parameters of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportParams {
    pub strategy: ImportStrategy,
    pub dry_run: bool,
    /// Skip the lock checks (superusers only, as DHIS2's `force`).
    pub force: bool,
}

impl ImportParams {
    pub fn from_query(q: &Query) -> Result<ImportParams, ApiError> {
        let strategy = match q.get("importStrategy").or_else(|| q.get("strategy")) {
            None | Some("") => ImportStrategy::default(),
            Some(s) => ImportStrategy::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Value '{s}' is not valid for parameter importStrategy. Valid values are: [CREATE, UPDATE, CREATE_AND_UPDATE, DELETE]"
                ))
            })?,
        };
        for p in [
            "idScheme",
            "dataElementIdScheme",
            "orgUnitIdScheme",
            "categoryOptionComboIdScheme",
            "dataSetIdScheme",
        ] {
            if let Some(v) = q
                .get(p)
                .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("UID"))
            {
                return Err(ApiError::BadRequest(format!(
                    "{p}={v} is not supported by this box; send UIDs (idScheme=UID)"
                )));
            }
        }
        Ok(ImportParams {
            strategy,
            dry_run: q.bool("dryRun", false)?,
            force: q.bool("force", false)?,
        })
    }

    fn echo(&self) -> Value {
        json!({
            "importStrategy": self.strategy.name(),
            "dryRun": self.dry_run,
            "async": false,
            "force": self.force,
            "idSchemes": {}
        })
    }
}

/// What to do with one accepted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Put {
        value: Option<String>,
        comment: Option<String>,
        followup: Option<bool>,
    },
    /// `deleted: true`, strategy DELETE, or neither value nor comment.
    Delete,
    /// A zero where zero is not significant: deletes an existing value, else nothing.
    Zero,
}

/// One accepted value.
#[derive(Debug, Clone)]
pub struct Op {
    pub index: usize,
    pub key: DataValueKey,
    pub action: Action,
    pub stored_by: String,
}

/// A completion asked for with `completeDate` on the set.
#[derive(Debug, Clone)]
pub struct Completion {
    pub key: String,
    pub date: String,
}

/// The validated import: operations to apply and the summary so far (conflicts, ignored).
#[derive(Debug)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub summary: ImportSummary,
    pub completion: Option<Completion>,
}

impl Plan {
    fn abort(code: ConflictCode, objects: &[(&str, &str)]) -> Plan {
        let mut summary = ImportSummary::new(ImportSummaryStatus::Error);
        summary.description = Some("Import process was aborted".into());
        summary.add_conflict(ImportConflict::new(code, objects, None));
        summary.data_set_complete = Some("false".into());
        Plan {
            ops: Vec::new(),
            summary,
            completion: None,
        }
    }
}

fn trimmed(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Validation state shared by the values of one request.
struct Checker<'a> {
    user: &'a AuthUser,
    now: &'a Now,
    read: &'a ReadView,
    params: ImportParams,
    cats: Categories<'a>,
    rules: HashMap<String, Option<Arc<DataSetRules>>>,
    options: HashMap<String, std::collections::HashSet<String>>,
    approved: HashMap<String, bool>,
    /// Per combo: its first option the user may not write (checked once per request).
    unwritable: HashMap<String, Option<String>>,
    /// Per org unit: in the user's capture scope.
    capture: HashMap<String, bool>,
    /// Per data set and period: the lock, if any.
    locks: HashMap<(String, String), Option<Lock>>,
}

type Conflict = (ConflictCode, Vec<(&'static str, String)>);

/// A conflict of one value. Every object is cut to a short excerpt (the wire crate's helper,
/// as in tracker reports), so nothing a tablet posted is echoed whole into the summary.
fn conflict(code: ConflictCode, objects: &[(&'static str, &str)]) -> Conflict {
    (
        code,
        objects
            .iter()
            .map(|(k, v)| (*k, value_type::excerpt(v).into_owned()))
            .collect(),
    )
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

impl Checker<'_> {
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

    /// Checks value `index` in DHIS2's order; the first failing check is its conflict.
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

    fn check(
        &mut self,
        set: &DataValueSet,
        set_rules: Option<&Arc<DataSetRules>>,
        index: usize,
        v: &DataValue,
    ) -> Result<Result<Op, Conflict>, StoreError> {
        let snap = self.user.snapshot.clone();
        let user = self.user;
        let de_id = trimmed(&v.data_element).unwrap_or("");
        let Some(de) = snap.get("dataElements", de_id) else {
            return Ok(Err(conflict(
                ConflictCode::E7610,
                &[("dataElement", de_id)],
            )));
        };
        let pe = trimmed(&v.period).or(trimmed(&set.period)).unwrap_or("");
        let Ok(period) = Period::parse(pe) else {
            return Ok(Err(conflict(ConflictCode::E7611, &[("period", pe)])));
        };
        let ou = trimmed(&v.org_unit)
            .or(trimmed(&set.org_unit))
            .unwrap_or("");
        let Some(ou_path) = snap.org_unit_path(ou).map(str::to_string) else {
            return Ok(Err(conflict(ConflictCode::E7612, &[("orgUnit", ou)])));
        };
        let coc = match trimmed(&v.category_option_combo) {
            Some(c) if !self.cats.exists(c) => {
                return Ok(Err(conflict(
                    ConflictCode::E7613,
                    &[("categoryOptionCombo", c)],
                )));
            }
            Some(c) => c.to_string(),
            None => self.cats.default_coc.clone(),
        };
        if let Some(o) = self.unwritable(&coc) {
            return Ok(Err(conflict(
                ConflictCode::E7614,
                &[("categoryOptionCombo", &coc), ("categoryOption", &o)],
            )));
        }
        let aoc = match trimmed(&v.attribute_option_combo).or(trimmed(&set.attribute_option_combo))
        {
            Some(c) if !self.cats.exists(c) => {
                return Ok(Err(conflict(
                    ConflictCode::E7615,
                    &[("attributeOptionCombo", c)],
                )));
            }
            Some(c) => c.to_string(),
            None => self.cats.default_coc.clone(),
        };
        if let Some(o) = self.unwritable(&aoc) {
            return Ok(Err(conflict(
                ConflictCode::E7616,
                &[("attributeOptionCombo", &aoc), ("categoryOption", &o)],
            )));
        }
        if !self.can_capture(ou) {
            return Ok(Err(conflict(
                ConflictCode::E7617,
                &[("orgUnit", ou), ("user", &user.uid)],
            )));
        }

        let deleted = v.deleted == Some(true) || self.params.strategy == ImportStrategy::Delete;
        let value_type = de
            .get("valueType")
            .and_then(Value::as_str)
            .unwrap_or("TEXT");
        let comment = v.comment.clone().filter(|c| !c.trim().is_empty());
        let mut value = trimmed(&v.value).map(str::to_string);
        if !deleted {
            value = match checked_value(value_type, v.value.as_deref()) {
                Ok(value) => value,
                Err(reason) => {
                    return Ok(Err(conflict(
                        ConflictCode::E7619,
                        &[("dataElement", de_id), ("value", &reason.to_string())],
                    )));
                }
            };
        }
        if let (Some(raw), false) = (value.as_deref(), deleted) {
            if value_type::is_file(value_type) {
                if let Some(why) = self.file_refused(raw)? {
                    return Ok(Err(conflict(
                        ConflictCode::E7619,
                        &[("dataElement", de_id), ("value", why)],
                    )));
                }
            }
        }
        if comment
            .as_ref()
            .is_some_and(|c| value_type::longer_than(c, MAX_VALUE_LENGTH))
        {
            return Ok(Err(conflict(
                ConflictCode::E7620,
                &[("comment", "comment_length_greater_than_max_length")],
            )));
        }
        if let (Some(val), false, Some(os)) = (
            &value,
            deleted,
            de.get("optionSet")
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str),
        ) {
            let codes = self
                .options
                .entry(os.to_string())
                .or_insert_with(|| option_codes(&snap, os));
            let ok = if value_type == "MULTI_TEXT" {
                val.split(',').all(|c| codes.contains(c.trim()))
            } else {
                codes.contains(val)
            };
            if !ok {
                return Ok(Err(conflict(
                    ConflictCode::E7621,
                    &[("dataElement", de_id)],
                )));
            }
        }

        // The data set whose rules apply: the posted one, else one holding this element here.
        let rules = match set_rules {
            Some(r) => Some(r.clone()),
            None => match data_sets_for(&snap, de_id, ou).first() {
                Some(id) => self.rules(id),
                None => None,
            },
        };
        let combo = element_combo(&snap, rules.as_deref(), de, de_id, &self.cats.default_combo);
        match &rules {
            Some(r) => {
                if r.period_type.is_some_and(|t| t != period.period_type()) {
                    return Ok(Err(conflict(
                        ConflictCode::E7632,
                        &[("period", pe), ("dataElement", de_id)],
                    )));
                }
                if !r.elements.contains_key(de_id) {
                    return Ok(Err(conflict(
                        ConflictCode::E7633,
                        &[("dataElement", de_id), ("dataSet", &r.id)],
                    )));
                }
                if !self.cats.in_combo(&combo, &coc) {
                    return Ok(Err(conflict(
                        ConflictCode::E7634,
                        &[("categoryOptionCombo", &coc), ("dataElement", de_id)],
                    )));
                }
                if !self.cats.in_combo(&r.attribute_combo, &aoc) {
                    return Ok(Err(conflict(
                        ConflictCode::E7635,
                        &[("attributeOptionCombo", &aoc), ("dataElement", de_id)],
                    )));
                }
                if !r.org_units.contains(ou) {
                    return Ok(Err(conflict(
                        ConflictCode::E7636,
                        &[("orgUnit", ou), ("dataElement", de_id)],
                    )));
                }
            }
            None => {
                if !self.cats.in_combo(&combo, &coc) {
                    return Ok(Err(conflict(
                        ConflictCode::E7634,
                        &[("categoryOptionCombo", &coc), ("dataElement", de_id)],
                    )));
                }
                return Ok(Err(conflict(
                    ConflictCode::E7636,
                    &[("orgUnit", ou), ("dataElement", de_id)],
                )));
            }
        }
        let stored_by = trimmed(&v.stored_by).unwrap_or(&user.username).to_string();
        if stored_by.chars().count() > MAX_STORED_BY_LENGTH {
            return Ok(Err(conflict(
                ConflictCode::E7637,
                &[("storedBy", "stored_by_length_greater_than_max_length")],
            )));
        }
        if let Some(code) = self.cats.aoc_restriction(&aoc, &period, &ou_path) {
            let first = if code == ConflictCode::E7638 {
                ("period", pe)
            } else {
                ("orgUnit", ou)
            };
            return Ok(Err(conflict(
                code,
                &[first, ("attributeOptionCombo", &aoc)],
            )));
        }
        if let Some(r) = &rules {
            if !(self.params.force && user.is_superuser()) {
                match self.lock(r, &period) {
                    Some(Lock::Expired) => {
                        return Ok(Err(conflict(
                            ConflictCode::E7640,
                            &[("period", pe), ("dataSet", &r.id)],
                        )));
                    }
                    Some(Lock::Future(latest)) => {
                        return Ok(Err(conflict(
                            ConflictCode::E7641,
                            &[
                                ("period", pe),
                                ("latestOpenPeriod", &latest),
                                ("dataElement", de_id),
                                ("dataSet", &r.id),
                            ],
                        )));
                    }
                    Some(Lock::InputClosed) => {
                        return Ok(Err(conflict(
                            ConflictCode::E7643,
                            &[("period", pe), ("dataSet", &r.id)],
                        )));
                    }
                    None => {}
                }
                if let Some(wf) = &r.workflow {
                    if self.is_approved(wf, pe, ou, &aoc)? {
                        return Ok(Err(conflict(
                            ConflictCode::E7642,
                            &[
                                ("orgUnit", ou),
                                ("period", pe),
                                ("attributeOptionCombo", &aoc),
                                ("dataSet", &r.id),
                            ],
                        )));
                    }
                }
            }
        }

        let zero_insignificant = value_type::is_numeric(value_type)
            && value.as_deref().is_some_and(value_type::is_zero)
            && de.get("zeroIsSignificant").and_then(Value::as_bool) != Some(true);
        let action = if deleted || (value.is_none() && comment.is_none()) {
            Action::Delete
        } else if zero_insignificant {
            Action::Zero
        } else {
            Action::Put {
                value,
                comment,
                followup: v.followup,
            }
        };
        Ok(Ok(Op {
            index,
            key: DataValueKey {
                data_element: de_id.to_string(),
                period: period.id().to_string(),
                org_unit: ou.to_string(),
                category_option_combo: coc,
                attribute_option_combo: aoc,
            },
            action,
            stored_by,
        }))
    }
}

/// Validates a posted set for `user` at `now`, reading approvals and file resources from `read`.
pub fn plan(
    user: &AuthUser,
    set: &DataValueSet,
    params: ImportParams,
    now: &Now,
    read: &ReadView,
) -> Result<Plan, StoreError> {
    let snap = user.snapshot.clone();
    let cats = Categories::new(&snap);
    let set_rules = match trimmed(&set.data_set) {
        None => None,
        Some(id) => {
            let Some(ds) = snap.get("dataSets", id) else {
                return Ok(Plan::abort(ConflictCode::E7600, &[("dataSet", id)]));
            };
            if !user.access_to(ds).data.write {
                return Ok(Plan::abort(ConflictCode::E7601, &[("dataSet", id)]));
            }
            DataSetRules::load(&snap, id, now, &cats.default_combo).map(Arc::new)
        }
    };
    if let Some(ou) = trimmed(&set.org_unit).filter(|o| !snap.contains("organisationUnits", o)) {
        return Ok(Plan::abort(ConflictCode::E7603, &[("orgUnit", ou)]));
    }
    if let Some(aoc) =
        trimmed(&set.attribute_option_combo).filter(|a| !snap.contains("categoryOptionCombos", a))
    {
        return Ok(Plan::abort(
            ConflictCode::E7604,
            &[("attributeOptionCombo", aoc)],
        ));
    }
    let mut checker = Checker {
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
    };
    let mut summary = ImportSummary::new(ImportSummaryStatus::Success);
    summary.import_options = Some(params.echo());
    let mut ops = Vec::with_capacity(set.data_values.len());
    for (i, v) in set.data_values.iter().enumerate() {
        match checker.check(set, set_rules.as_ref(), i, v)? {
            Ok(op) => ops.push(op),
            Err((code, objects)) => {
                let objects: Vec<(&str, &str)> =
                    objects.iter().map(|(k, v)| (*k, v.as_str())).collect();
                summary.add_conflict(ImportConflict::new(code, &objects, Some(i)));
                summary.import_count.ignored += 1;
            }
        }
    }
    let completion = set_rules.as_ref().and_then(|r| {
        let date = registrations::completion_date(set.complete_date.as_deref()?, now)?;
        let pe = Period::parse(trimmed(&set.period)?).ok()?;
        let ou = trimmed(&set.org_unit)?;
        let aoc = trimmed(&set.attribute_option_combo).unwrap_or(&checker.cats.default_coc);
        let allowed = user.can_capture_in(ou)
            && r.org_units.contains(ou)
            && r.period_type == Some(pe.period_type());
        allowed.then(|| Completion {
            key: crate::records::registration_key(&r.id, pe.id(), ou, aoc),
            date,
        })
    });
    summary.data_set_complete = Some(
        completion
            .as_ref()
            .map_or_else(|| "false".to_string(), |c| c.date.clone()),
    );
    Ok(Plan {
        ops,
        summary,
        completion,
    })
}

/// The decision for one operation given the stored value (`(body, is_tombstone)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Create(StoredDataValue),
    Update(StoredDataValue),
    Delete(StoredDataValue),
    /// Nothing to do; `rejected` when the strategy refused it (DHIS2 lists it as rejected).
    Ignore {
        rejected: bool,
    },
}

/// DHIS2's create/update/delete/ignore rules for one value.
pub fn decide(
    existing: Option<&(StoredDataValue, bool)>,
    op: &Op,
    strategy: ImportStrategy,
    username: &str,
) -> Outcome {
    let live = existing.filter(|(_, tombstone)| !tombstone).map(|(b, _)| b);
    match (live, &op.action) {
        (Some(_), _) if strategy == ImportStrategy::Create => Outcome::Ignore { rejected: true },
        (Some(old), Action::Delete | Action::Zero) => Outcome::Delete(StoredDataValue {
            stored_by: op.stored_by.clone(),
            last_updated_by: username.to_string(),
            from_national: false,
            ..old.clone()
        }),
        (Some(old), Action::Put { .. }) if strategy == ImportStrategy::Delete => {
            Outcome::Delete(StoredDataValue {
                stored_by: op.stored_by.clone(),
                last_updated_by: username.to_string(),
                from_national: false,
                ..old.clone()
            })
        }
        (
            Some(old),
            Action::Put {
                value,
                comment,
                followup,
            },
        ) => {
            let followup = followup.unwrap_or(old.followup);
            if old.value == *value && old.comment == *comment && old.followup == followup {
                Outcome::Ignore { rejected: false }
            } else {
                Outcome::Update(StoredDataValue {
                    value: value.clone(),
                    comment: comment.clone(),
                    followup,
                    stored_by: op.stored_by.clone(),
                    last_updated_by: username.to_string(),
                    from_national: false,
                })
            }
        }
        (
            None,
            Action::Put {
                value,
                comment,
                followup,
            },
        ) => match strategy {
            ImportStrategy::Create | ImportStrategy::CreateAndUpdate => {
                Outcome::Create(StoredDataValue {
                    value: value.clone(),
                    comment: comment.clone(),
                    followup: followup.unwrap_or(false),
                    stored_by: op.stored_by.clone(),
                    last_updated_by: username.to_string(),
                    from_national: false,
                })
            }
            ImportStrategy::Update | ImportStrategy::Delete => Outcome::Ignore { rejected: true },
        },
        (None, Action::Delete | Action::Zero) => Outcome::Ignore { rejected: false },
    }
}

/// Where operations land: the store (inside a write) or a dry run's scratch copy.
trait Target {
    fn existing(&mut self, key: &str) -> Result<Option<(StoredDataValue, bool)>, StoreError>;
    fn apply(
        &mut self,
        key: &DataValueKey,
        outcome: &Outcome,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
    fn now_ms(&self) -> u64;
}

fn parse_body(key: &str, rec: &clinicbox_store::Record) -> Result<StoredDataValue, StoreError> {
    rec.json().map_err(|source| StoreError::Json {
        collection: DATA_VALUES.name().into(),
        key: key.into(),
        source,
    })
}

struct Live<'c, 'a>(&'c mut WriteCtx<'a>);

impl Target for Live<'_, '_> {
    fn existing(&mut self, key: &str) -> Result<Option<(StoredDataValue, bool)>, StoreError> {
        match self.0.get(DATA_VALUES, key)? {
            Some(r) => Ok(Some((parse_body(key, &r)?, r.deleted))),
            None => Ok(None),
        }
    }

    fn apply(
        &mut self,
        key: &DataValueKey,
        outcome: &Outcome,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let k = key.to_key();
        match outcome {
            Outcome::Create(b) | Outcome::Update(b) => self.0.put_json(DATA_VALUES, &k, b)?,
            Outcome::Delete(b) => {
                let body = serde_json::to_vec(b).map_err(|source| StoreError::Json {
                    collection: DATA_VALUES.name().into(),
                    key: k.clone(),
                    source,
                })?;
                self.0.put_tombstone(DATA_VALUES, &k, body)?;
            }
            Outcome::Ignore { .. } => return Ok(()),
        }
        let audit_key = crate::records::audit_key(key, audit.at_ms);
        self.0.put_json(AUDIT, &audit_key, &audit)
    }

    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

struct DryRun<'r> {
    read: &'r ReadView,
    overlay: HashMap<String, (StoredDataValue, bool)>,
    now_ms: u64,
}

impl Target for DryRun<'_> {
    fn existing(&mut self, key: &str) -> Result<Option<(StoredDataValue, bool)>, StoreError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(Some(v.clone()));
        }
        match self.read.get(DATA_VALUES, key)? {
            Some(r) => Ok(Some((parse_body(key, &r)?, r.deleted))),
            None => Ok(None),
        }
    }

    fn apply(
        &mut self,
        key: &DataValueKey,
        outcome: &Outcome,
        _: AuditEntry,
    ) -> Result<(), StoreError> {
        let entry = match outcome {
            Outcome::Create(b) | Outcome::Update(b) => (b.clone(), false),
            Outcome::Delete(b) => (b.clone(), true),
            Outcome::Ignore { .. } => return Ok(()),
        };
        self.overlay.insert(key.to_key(), entry);
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

/// Counts and strategy rejections of applying a plan.
#[derive(Debug, Default)]
pub struct Applied {
    pub count: ImportCount,
    pub rejected: Vec<usize>,
}

fn run(
    target: &mut dyn Target,
    ops: &[Op],
    strategy: ImportStrategy,
    username: &str,
) -> Result<Applied, StoreError> {
    let mut out = Applied::default();
    for op in ops {
        let existing = target.existing(&op.key.to_key())?;
        let outcome = decide(existing.as_ref(), op, strategy, username);
        let previous = existing.and_then(|(b, tomb)| if tomb { None } else { b.value });
        let (audit_type, new) = match &outcome {
            Outcome::Create(b) => {
                out.count.imported += 1;
                (AuditType::Create, b)
            }
            Outcome::Update(b) => {
                out.count.updated += 1;
                (AuditType::Update, b)
            }
            Outcome::Delete(b) => {
                out.count.deleted += 1;
                (AuditType::Delete, b)
            }
            Outcome::Ignore { rejected } => {
                out.count.ignored += 1;
                if *rejected {
                    out.rejected.push(op.index);
                }
                continue;
            }
        };
        let audit = AuditEntry {
            audit_type,
            data_element: op.key.data_element.clone(),
            period: op.key.period.clone(),
            org_unit: op.key.org_unit.clone(),
            category_option_combo: op.key.category_option_combo.clone(),
            attribute_option_combo: op.key.attribute_option_combo.clone(),
            value: if audit_type == AuditType::Delete {
                None
            } else {
                new.value.clone()
            },
            previous_value: previous,
            comment: new.comment.clone(),
            followup: new.followup,
            modified_by: username.to_string(),
            at_ms: target.now_ms(),
        };
        target.apply(&op.key, &outcome, audit)?;
    }
    Ok(out)
}

/// Applies a plan: one durable store write (or, for a dry run, a scratch copy over `read`).
/// Returns the finished summary.
pub async fn apply(
    store: &clinicbox_store::Store,
    plan: Plan,
    params: ImportParams,
    username: &str,
) -> Result<ImportSummary, StoreError> {
    let Plan {
        ops,
        mut summary,
        completion,
    } = plan;
    if summary.status == ImportSummaryStatus::Error {
        return Ok(summary);
    }
    let applied = if params.dry_run {
        let read = store.read()?;
        let mut target = DryRun {
            read: &read,
            overlay: HashMap::new(),
            now_ms: store.server_time_ms(),
        };
        run(&mut target, &ops, params.strategy, username)?
    } else {
        let user = username.to_string();
        store
            .write(move |ctx| -> Result<Applied, StoreError> {
                let applied = run(&mut Live(ctx), &ops, params.strategy, &user)?;
                if let Some(c) = completion {
                    registrations::complete_in(ctx, &c.key, &c.date, &user, &user)?;
                }
                Ok(applied)
            })
            .await
            .map_err(|e| e.flatten())?
            .value
    };
    let c = &mut summary.import_count;
    c.imported += applied.count.imported;
    c.updated += applied.count.updated;
    c.deleted += applied.count.deleted;
    c.ignored += applied.count.ignored;
    for i in applied.rejected {
        if !summary.rejected_indexes.contains(&i) {
            summary.rejected_indexes.push(i);
        }
    }
    summary.status = if summary.conflicts.is_empty() {
        ImportSummaryStatus::Success
    } else {
        ImportSummaryStatus::Warning
    };
    summary.description = Some("Import process completed successfully".into());
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: Action) -> Op {
        Op {
            index: 0,
            key: DataValueKey {
                data_element: "de".into(),
                period: "202601".into(),
                org_unit: "ou".into(),
                category_option_combo: "coc".into(),
                attribute_option_combo: "aoc".into(),
            },
            action,
            stored_by: "android".into(),
        }
    }

    fn put(v: &str) -> Action {
        Action::Put {
            value: Some(v.into()),
            comment: None,
            followup: None,
        }
    }

    fn stored(v: &str) -> StoredDataValue {
        StoredDataValue {
            value: Some(v.into()),
            comment: None,
            followup: false,
            stored_by: "android".into(),
            last_updated_by: "android".into(),
            from_national: false,
        }
    }

    #[test]
    fn a_tablet_s_change_of_national_s_value_is_the_box_s_again() {
        let national = StoredDataValue {
            from_national: true,
            ..stored("7")
        };
        let existing = Some((national.clone(), false));
        let strategy = ImportStrategy::CreateAndUpdate;
        match decide(existing.as_ref(), &op(put("8")), strategy, "android") {
            Outcome::Update(b) => assert!(!b.from_national, "sent to national"),
            other => panic!("{other:?}"),
        }
        match decide(existing.as_ref(), &op(Action::Delete), strategy, "android") {
            Outcome::Delete(b) => assert!(!b.from_national, "the deletion is sent"),
            other => panic!("{other:?}"),
        }
        // The same value again: nothing changes, national already has it.
        let same = decide(existing.as_ref(), &op(put("7")), strategy, "android");
        assert_eq!(same, Outcome::Ignore { rejected: false });
    }

    #[test]
    fn decides_like_dhis2() {
        use ImportStrategy::*;
        let live = (stored("5"), false);
        let tomb = (stored("5"), true);
        assert!(matches!(
            decide(None, &op(put("5")), CreateAndUpdate, "u"),
            Outcome::Create(_)
        ));
        assert_eq!(
            decide(Some(&live), &op(put("5")), CreateAndUpdate, "u"),
            Outcome::Ignore { rejected: false }
        );
        assert!(matches!(
            decide(Some(&live), &op(put("6")), CreateAndUpdate, "u"),
            Outcome::Update(_)
        ));
        assert!(matches!(
            decide(Some(&tomb), &op(put("5")), CreateAndUpdate, "u"),
            Outcome::Create(_)
        ));
        assert!(matches!(
            decide(Some(&live), &op(Action::Delete), CreateAndUpdate, "u"),
            Outcome::Delete(_)
        ));
        assert!(matches!(
            decide(Some(&live), &op(Action::Zero), CreateAndUpdate, "u"),
            Outcome::Delete(_)
        ));
        assert_eq!(
            decide(Some(&tomb), &op(Action::Delete), CreateAndUpdate, "u"),
            Outcome::Ignore { rejected: false }
        );
        assert_eq!(
            decide(None, &op(Action::Zero), CreateAndUpdate, "u"),
            Outcome::Ignore { rejected: false }
        );
        assert_eq!(
            decide(Some(&live), &op(put("6")), Create, "u"),
            Outcome::Ignore { rejected: true }
        );
        assert_eq!(
            decide(None, &op(put("6")), Update, "u"),
            Outcome::Ignore { rejected: true }
        );
        assert!(matches!(
            decide(Some(&live), &op(put("5")), Delete, "u"),
            Outcome::Delete(_)
        ));
        // A follow-up flag alone is a change; leaving it out keeps the stored one.
        let flagged = Action::Put {
            value: Some("5".into()),
            comment: None,
            followup: Some(true),
        };
        assert!(matches!(
            decide(Some(&live), &op(flagged), CreateAndUpdate, "u"),
            Outcome::Update(_)
        ));
    }
}
