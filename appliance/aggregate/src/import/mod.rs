//! `POST /api/dataValueSets`: parse, validate every value against the metadata, the user and
//! the locks (a [`Plan`] of operations and conflicts, no I/O but reads), then apply the plan in
//! one store write, so a whole data set costs one durable commit and an acknowledged import is
//! on disk. Counting follows DHIS2 2.42: a re-post of the same value, comment and follow-up is
//! `ignored`; a rejected value is `ignored` with a conflict whose `indexes` point at it.
//! Each value's checks, in DHIS2's order, are in `check.rs`.

mod check;

use std::collections::HashMap;
use std::sync::Arc;

use clinicbox_api::query::Query;
use clinicbox_dhis2::Period;
use clinicbox_dhis2::aggregate::{
    ConflictCode, DataValueSet, ImportConflict, ImportCount, ImportStrategy, ImportSummary,
    ImportSummaryStatus,
};
use clinicbox_store::{DataValueKey, ReadView, StoreError, WriteCtx};
use clinicbox_web::{ApiError, AuthUser};
use serde_json::{Value, json};

use crate::periods::Now;
use crate::records::{AUDIT, AuditEntry, AuditType, DATA_VALUES, StoredDataValue};
use crate::registrations;
use crate::rules::{Categories, DataSetRules};

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

use check::Checker;

fn trimmed(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
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
    let mut checker = Checker::new(user, now, read, params, cats);
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
