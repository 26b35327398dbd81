//! Phase 5: the import report, per type in the schema's order: what would be created, updated,
//! deleted or ignored, and an object report for each refused object (every object with
//! `importReportMode=FULL`). With `atomicMode=ALL` one error means nothing is written.

use std::collections::BTreeMap;

use clinicbox_dhis2::schema;
use clinicbox_dhis2::{ImportReport, ImportStatus, ObjectReport, Stats, TypeReport};
use serde_json::Value;

use super::Item;
use crate::metadata::import::{ImportParams, ImportStrategy};

/// The report, and whether anything may be written.
pub(super) fn report(items: &[Item], params: ImportParams) -> (ImportReport, bool) {
    let any_error = items.iter().any(|i| !i.errors.is_empty());
    let ok = !(any_error && params.atomic);
    let mut by_type: BTreeMap<usize, TypeReport> = BTreeMap::new();
    for it in items {
        let order = schema::SCHEMAS
            .iter()
            .position(|s| s.plural == it.schema.plural)
            .unwrap_or(usize::MAX);
        let tr = by_type.entry(order).or_insert_with(|| TypeReport {
            klass: it.schema.klass.to_string(),
            stats: Stats::default(),
            object_reports: Vec::new(),
        });
        let written = ok && it.errors.is_empty();
        match (written, params.strategy, it.exists) {
            (false, _, _) => tr.stats.ignored += 1,
            (true, ImportStrategy::Delete, _) => tr.stats.deleted += 1,
            (true, _, true) => tr.stats.updated += 1,
            (true, _, false) => tr.stats.created += 1,
        }
        tr.stats.total += 1;
        if !it.errors.is_empty() || params.full_report {
            tr.object_reports.push(object_report(it));
        }
    }
    let status = match (any_error, params.atomic) {
        (false, _) => ImportStatus::Ok,
        (true, true) => ImportStatus::Error,
        (true, false) => ImportStatus::Warning,
    };
    (
        ImportReport::new(status, by_type.into_values().collect()),
        ok,
    )
}

fn object_report(it: &Item) -> ObjectReport {
    ObjectReport {
        klass: it.schema.klass.to_string(),
        index: it.index,
        uid: Some(it.uid.clone()),
        display_name: it
            .obj
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string),
        error_reports: it.errors.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::snapshot;
    use super::*;
    use serde_json::json;

    #[test]
    fn one_error_writes_nothing_unless_atomicity_is_off() {
        let snap = snapshot(json!({"options": [{"id": "cbOptHeld01", "name": "held"}]}));
        let pkg = json!({"options": [{"id": "cbOptHeld01", "name": "x"}, {"id": "cbOptNew001", "name": "y"}, {"id": "cbOptBad001", "name": "z"}]});
        for (atomic, status, stats, ok) in [
            (true, ImportStatus::Error, (0, 0, 3), false),
            (false, ImportStatus::Warning, (1, 1, 1), true),
        ] {
            let params = ImportParams {
                atomic,
                ..ImportParams::default()
            };
            let mut items = super::super::items::read(&snap, &pkg, params.strategy).unwrap();
            let bad = items.iter_mut().find(|i| i.uid == "cbOptBad001").unwrap();
            bad.errors.push(super::super::err(
                bad.schema,
                "cbOptBad001",
                "E4000",
                "x".into(),
                None,
            ));
            let (r, may_write) = report(&items, params);
            assert_eq!(r.status, status);
            assert_eq!(
                (r.stats.created, r.stats.updated, r.stats.ignored),
                stats,
                "atomic {atomic}"
            );
            assert_eq!(may_write, ok);
            let reports = &r.type_reports[0].object_reports;
            assert_eq!(reports.len(), 1, "only the refused object is reported");
            assert_eq!(reports[0].index, 2);
        }
    }
}
