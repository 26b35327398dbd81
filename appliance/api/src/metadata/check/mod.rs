//! Checking a metadata package against the current metadata before anything is written, in the
//! phases DHIS2's own importer runs:
//! 1. reading the package's objects and their UIDs (`items.rs`);
//! 2. per object: duplicates in the package, the strategy against what exists, required
//!    properties, users (`objects.rs`);
//! 3. references, against the package and the current metadata; for a deletion, whatever
//!    still points at a deleted object (`references.rs`);
//! 4. org-unit paths and levels over the final tree (`paths.rs`);
//! 5. the import report (`report.rs`).
//!
//! Pure: no store access; `import` writes what a [`Plan`] says.

mod items;
mod objects;
mod paths;
mod references;
mod report;

use clinicbox_dhis2::schema::Schema;
use clinicbox_dhis2::{ErrorReport, ImportReport, UserPayload};
use serde_json::{Map, Value};

use super::Snapshot;
use super::import::{ImportParams, ImportStrategy};
use crate::metadata::ImportError;

/// One object of the package and what the checks found.
pub(crate) struct Item {
    pub schema: &'static Schema,
    /// Its position in its collection (DHIS2's object report `index`).
    pub index: usize,
    pub uid: String,
    pub obj: Map<String, Value>,
    /// The current metadata holds it.
    pub exists: bool,
    pub errors: Vec<ErrorReport>,
    /// A user's account part, parsed.
    pub user: Option<UserPayload>,
}

/// The result of checking a package.
pub struct Plan {
    pub(crate) items: Vec<Item>,
    pub(crate) strategy: ImportStrategy,
    /// Org units outside the package whose path/level changed because an ancestor moved.
    pub(crate) moved: Vec<(String, Map<String, Value>)>,
    pub(crate) report: ImportReport,
    /// Something may be written (no error, or errors skipped with `atomicMode=NONE`).
    pub(crate) ok: bool,
}

impl Plan {
    pub fn report(&self) -> &ImportReport {
        &self.report
    }
}

/// Checks `package` against `snap`.
pub fn check(snap: &Snapshot, package: &Value, params: ImportParams) -> Result<Plan, ImportError> {
    let mut items = items::read(snap, package, params.strategy)?;
    objects::duplicates(&mut items);
    objects::per_object(snap, &mut items, params.strategy);
    objects::usernames(&mut items);
    references::resolve(snap, &mut items, params);
    let moved = if params.strategy == ImportStrategy::Delete {
        Vec::new()
    } else {
        paths::org_unit_paths(snap, &mut items)
    };
    let (report, ok) = report::report(&items, params);
    Ok(Plan {
        items,
        strategy: params.strategy,
        moved,
        report,
        ok,
    })
}

fn err(s: &Schema, uid: &str, code: &str, message: String, property: Option<&str>) -> ErrorReport {
    ErrorReport {
        message,
        main_klass: s.klass.to_string(),
        error_code: code.to_string(),
        main_id: Some(uid.to_string()),
        error_klass: None,
        error_property: property.map(str::to_string),
        error_properties: Vec::new(),
        value: None,
    }
}

/// Values (ids) at a dotted reference path; `a.b` walks through arrays of embedded objects.
fn ids_at(obj: &Map<String, Value>, path: &str) -> Vec<Value> {
    let mut cur: Vec<&Value> = Vec::new();
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return Vec::new();
    };
    if let Some(v) = obj.get(first) {
        cur.push(v);
    }
    for p in parts {
        let mut next = Vec::new();
        for v in cur {
            match v {
                Value::Array(a) => next.extend(a.iter().filter_map(|i| i.get(p))),
                Value::Object(o) => next.extend(o.get(p)),
                _ => {}
            }
        }
        cur = next;
    }
    let mut out = Vec::new();
    for v in cur {
        match v {
            Value::Array(a) => out.extend(a.iter().filter_map(|i| i.get("id").cloned())),
            Value::Object(o) => out.extend(o.get("id").cloned()),
            _ => {}
        }
    }
    out
}

/// Test helpers: a snapshot from a package, and the error codes each item got.
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::Value;

    use super::Item;
    use crate::metadata::Snapshot;

    pub fn snapshot(package: Value) -> Snapshot {
        Snapshot::from_package(&package)
    }

    pub fn codes(items: &[Item]) -> Vec<(String, Vec<String>)> {
        items
            .iter()
            .map(|i| {
                (
                    i.uid.clone(),
                    i.errors.iter().map(|e| e.error_code.clone()).collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dotted_path_walks_through_embedded_lists() {
        let obj = json!({"programStages": [{"id": "s1"}, {"id": "s2"}],
            "attributeValues": [{"attribute": {"id": "a1"}, "value": "x"}],
            "categoryCombo": {"id": "cc"}});
        let obj = obj.as_object().unwrap();
        assert_eq!(ids_at(obj, "programStages"), vec![json!("s1"), json!("s2")]);
        assert_eq!(ids_at(obj, "attributeValues.attribute"), vec![json!("a1")]);
        assert_eq!(ids_at(obj, "categoryCombo"), vec![json!("cc")]);
        assert!(ids_at(obj, "nothing.here").is_empty());
    }
}
