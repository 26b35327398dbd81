//! Phase 3: references. Every reference of an object must name a valid object of the package
//! or one the box holds (E5002); with `atomicMode=NONE` an object refused for another reason
//! cannot satisfy a reference, so the check runs again until no new object fails. A deletion
//! is refused while anything that stays still points at the object (E4030).

use std::collections::{HashMap, HashSet};

use clinicbox_dhis2::schema;
use clinicbox_dhis2::{ErrorReport, Uid};

use super::{Item, err, ids_at};
use crate::metadata::Snapshot;
use crate::metadata::import::{ImportParams, ImportStrategy};

/// Adds the reference errors to `items`.
pub(super) fn resolve(snap: &Snapshot, items: &mut [Item], params: ImportParams) {
    let deleting = params.strategy == ImportStrategy::Delete;
    loop {
        let new_errors = if deleting {
            blocked_deletions(snap, items)
        } else {
            missing_references(snap, items)
        };
        if new_errors.is_empty() {
            break;
        }
        for (n, e) in new_errors {
            items[n].errors.push(e);
        }
        if params.atomic || deleting {
            break;
        }
    }
}

/// The objects without errors so far.
fn valid(items: &[Item]) -> HashSet<(&str, &str)> {
    items
        .iter()
        .filter(|i| i.errors.is_empty())
        .map(|i| (i.schema.plural, i.uid.as_str()))
        .collect()
}

/// E5002 for each reference of a valid object that names nothing valid.
fn missing_references(snap: &Snapshot, items: &[Item]) -> Vec<(usize, ErrorReport)> {
    let valid = valid(items);
    // An object already stored keeps satisfying references even if its update fails.
    let exists = |t: &str, id: &str| valid.contains(&(t, id)) || snap.contains(t, id);
    let mut out = Vec::new();
    for (n, it) in items.iter().enumerate() {
        if !it.errors.is_empty() {
            continue;
        }
        let refs = it
            .schema
            .references
            .iter()
            .map(|r| (r.path, r.target))
            .chain([("attributeValues.attribute", "attributes")]);
        for (path, target) in refs {
            for id in ids_at(&it.obj, path) {
                let id = id.as_str().unwrap_or("");
                if !Uid::is_valid(id) || !exists(target, id) {
                    out.push((n, invalid_reference(it, path, target, id)));
                }
            }
        }
    }
    out
}

fn invalid_reference(it: &Item, path: &str, target: &str, id: &str) -> ErrorReport {
    let tk = schema::by_plural(target).map_or(target, |t| t.klass);
    let short = |k: &'static str| k.rsplit('.').next().unwrap_or(k);
    ErrorReport {
        message: format!(
            "Invalid reference [{id}] ({}) on object {} ({}) for association `{path}`",
            tk.rsplit('.').next().unwrap_or(tk),
            it.uid,
            short(it.schema.klass)
        ),
        main_klass: it.schema.klass.to_string(),
        error_code: "E5002".into(),
        main_id: Some(it.uid.clone()),
        error_klass: Some(tk.to_string()),
        error_property: Some(path.to_string()),
        error_properties: vec![id.to_string(), path.to_string()],
        value: Some(id.to_string()),
    }
}

/// E4030 for each object to delete that something staying on the box still names.
fn blocked_deletions(snap: &Snapshot, items: &[Item]) -> Vec<(usize, ErrorReport)> {
    let doomed = valid(items);
    let mut blocked: HashMap<(&str, String), String> = HashMap::new();
    for s in schema::SCHEMAS {
        for (uid, obj) in snap.objects(s.plural) {
            if doomed.contains(&(s.plural, uid.as_str())) {
                continue;
            }
            for r in s.references {
                // A parent's collection filled from its children stops naming a child once
                // the child is gone (an option leaves its set).
                let filled = crate::metadata::INVERSES
                    .iter()
                    .any(|&(_, _, parent, coll)| parent == s.plural && coll == r.path);
                if filled {
                    continue;
                }
                for id in ids_at(obj, r.path) {
                    if let Some(id) = id.as_str()
                        && doomed.contains(&(r.target, id))
                    {
                        blocked
                            .entry((r.target, id.to_string()))
                            .or_insert(format!("{} {uid}", s.singular));
                    }
                }
            }
        }
    }
    items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.errors.is_empty())
        .filter_map(|(n, it)| {
            let by = blocked.get(&(it.schema.plural, it.uid.clone()))?;
            let m = format!(
                "Object could not be deleted because it is associated with another object: {by}"
            );
            Some((n, err(it.schema, &it.uid, "E4030", m, None)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{codes, snapshot};
    use super::*;
    use serde_json::{Value, json};

    fn checked(snap: &Snapshot, pkg: Value, params: ImportParams) -> Vec<(String, Vec<String>)> {
        let mut items = super::super::items::read(snap, &pkg, params.strategy).unwrap();
        resolve(snap, &mut items, params);
        codes(&items)
    }

    fn want(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(u, c)| (u.to_string(), c.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    /// An option set in the package, an option naming it, and one naming a set nobody holds.
    fn options_package() -> Value {
        json!({
            "optionSets": [{"id": "cbOsNew0001", "name": "set", "valueType": "TEXT"}],
            "options": [
                {"id": "cbOptNew001", "name": "a", "code": "A", "optionSet": {"id": "cbOsNew0001"}},
                {"id": "cbOptNew002", "name": "b", "code": "B", "optionSet": {"id": "cbOsGone001"}}
            ]
        })
    }

    #[test]
    fn a_reference_names_an_object_of_the_package_or_of_the_box() {
        let snap = snapshot(json!({}));
        let mut got = checked(&snap, options_package(), ImportParams::default());
        got.sort();
        assert_eq!(
            got,
            want(&[
                ("cbOptNew001", &[]),
                ("cbOptNew002", &["E5002"]),
                ("cbOsNew0001", &[]),
            ])
        );
    }

    #[test]
    fn without_atomicity_an_object_refused_cannot_satisfy_a_reference_down_a_chain() {
        // A data set names a data element that names an option set refused for another
        // reason: the element fails on the first pass, the set on the next.
        let snap = snapshot(json!({}));
        let pkg = json!({
            "optionSets": [{"id": "cbOsNew0001", "name": "set", "valueType": "TEXT"}],
            "dataElements": [{"id": "cbDeNew0001", "name": "de", "optionSet": {"id": "cbOsNew0001"}}],
            "dataSets": [{"id": "cbDsNew0001", "name": "ds",
                "dataSetElements": [{"dataElement": {"id": "cbDeNew0001"}}]}]
        });
        for (atomic, data_set_fails) in [(false, true), (true, false)] {
            let params = ImportParams {
                atomic,
                ..ImportParams::default()
            };
            let mut items = super::super::items::read(&snap, &pkg, params.strategy).unwrap();
            let set = items.iter_mut().find(|i| i.uid == "cbOsNew0001").unwrap();
            set.errors.push(err(
                set.schema,
                "cbOsNew0001",
                "E4000",
                "refused".into(),
                None,
            ));
            resolve(&snap, &mut items, params);
            let got: HashMap<String, Vec<String>> = codes(&items).into_iter().collect();
            assert_eq!(got["cbDeNew0001"], vec!["E5002".to_string()], "{got:?}");
            assert_eq!(
                !got["cbDsNew0001"].is_empty(),
                data_set_fails,
                "atomic {atomic}: {got:?}"
            );
        }
    }

    #[test]
    fn a_deletion_is_refused_while_something_staying_names_the_object() {
        let snap = snapshot(json!({
            "optionSets": [{"id": "cbOsHeld001", "name": "set", "valueType": "TEXT"}],
            "dataElements": [{"id": "cbDeHeld001", "name": "de", "optionSet": {"id": "cbOsHeld001"}}]
        }));
        let params = ImportParams {
            strategy: ImportStrategy::Delete,
            ..ImportParams::default()
        };
        let got = checked(
            &snap,
            json!({"optionSets": [{"id": "cbOsHeld001"}]}),
            params,
        );
        assert_eq!(got, want(&[("cbOsHeld001", &["E4030"])]));
        // Deleted together, nothing that stays names it.
        let both =
            json!({"optionSets": [{"id": "cbOsHeld001"}], "dataElements": [{"id": "cbDeHeld001"}]});
        let got = checked(&snap, both, params);
        assert!(got.iter().all(|(_, c)| c.is_empty()), "{got:?}");
    }
}
