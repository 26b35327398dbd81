//! Phase 1: the package's objects and their UIDs. A package that is not an object of arrays is
//! refused whole; an object without an `id` gets one when it is being created.

use clinicbox_dhis2::Uid;
use clinicbox_dhis2::schema::{self, Schema};
use serde_json::{Map, Value};

use super::{Item, err};
use crate::metadata::ImportError;
use crate::metadata::Snapshot;
use crate::metadata::import::ImportStrategy;

/// Every object of every collection the box knows, in package order, and whether `snap`
/// holds it.
pub(super) fn read(
    snap: &Snapshot,
    package: &Value,
    strategy: ImportStrategy,
) -> Result<Vec<Item>, ImportError> {
    let Value::Object(pkg) = package else {
        return Err(ImportError::Package(
            "A metadata package must be a JSON object of collections".into(),
        ));
    };
    let mut items = Vec::new();
    for (key, value) in pkg {
        let Some(s) = schema::by_plural(key) else {
            if !matches!(key.as_str(), "system" | "date") {
                tracing::info!(metadata.collection = %key, "ignoring an unsupported metadata collection");
            }
            continue;
        };
        let Value::Array(objects) = value else {
            return Err(ImportError::Package(format!("`{key}` must be an array")));
        };
        for (index, o) in objects.iter().enumerate() {
            let mut it = item(s, index, o, strategy);
            it.exists = snap.contains(s.plural, &it.uid);
            items.push(it);
        }
    }
    Ok(items)
}

fn item(s: &'static Schema, index: usize, o: &Value, strategy: ImportStrategy) -> Item {
    let mut errors = Vec::new();
    let mut obj = match o {
        Value::Object(m) => m.clone(),
        _ => {
            let m = format!("{} #{index} is not an object", s.singular);
            errors.push(err(s, "", "E4000", m, None));
            Map::new()
        }
    };
    let uid = uid(s, &mut obj, strategy, &mut errors);
    Item {
        schema: s,
        index,
        uid,
        obj,
        exists: false,
        errors,
        user: None,
    }
}

/// The object's UID: its valid `id`, or a new one for an object being created.
fn uid(
    s: &Schema,
    obj: &mut Map<String, Value>,
    strategy: ImportStrategy,
    errors: &mut Vec<clinicbox_dhis2::ErrorReport>,
) -> String {
    match obj.get("id") {
        Some(Value::String(id)) if Uid::is_valid(id) => id.clone(),
        Some(Value::String(id)) => {
            let m = format!("Invalid UID `{id}` for property `{}`", s.singular);
            errors.push(err(s, id, "E4014", m, Some("id")));
            id.clone()
        }
        Some(_) => {
            let m = "Property `id` must be a string".to_string();
            errors.push(err(s, "", "E4014", m, Some("id")));
            String::new()
        }
        None if matches!(strategy, ImportStrategy::Update | ImportStrategy::Delete) => {
            let m = "Missing required property `id`".to_string();
            errors.push(err(s, "", "E4000", m, Some("id")));
            String::new()
        }
        None => {
            let id = Uid::generate().to_string();
            obj.insert("id".into(), Value::from(id.clone()));
            id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(items: &[Item]) -> Vec<Vec<String>> {
        items
            .iter()
            .map(|i| i.errors.iter().map(|e| e.error_code.clone()).collect())
            .collect()
    }

    #[test]
    fn each_object_gets_a_uid_or_the_reason_it_cannot() {
        let pkg = json!({"options": [
            {"id": "cbOpt000001", "name": "ok"},
            {"id": "not a uid", "name": "bad"},
            {"id": 7, "name": "number"},
            {"name": "new"},
            "not an object"
        ], "system": {}, "somethingElse": [{}]});
        let snap = super::super::testing::snapshot(
            json!({"options": [{"id": "cbOpt000001", "name": "held"}]}),
        );
        let items = read(&snap, &pkg, ImportStrategy::CreateAndUpdate).unwrap();
        assert!(items[0].exists && !items[3].exists);
        assert_eq!(items.len(), 5);
        assert_eq!(
            codes(&items),
            vec![
                vec![],
                vec!["E4014".to_string()],
                vec!["E4014".to_string()],
                vec![],
                vec!["E4000".to_string()]
            ]
        );
        assert!(Uid::is_valid(&items[3].uid), "a new object gets a UID");
        assert_eq!(items[3].obj["id"], json!(items[3].uid));
        assert_eq!(items[1].index, 1);
    }

    #[test]
    fn an_update_or_a_deletion_needs_the_id() {
        let pkg = json!({"options": [{"name": "no id"}]});
        for strategy in [ImportStrategy::Update, ImportStrategy::Delete] {
            let items = read(&super::super::testing::snapshot(json!({})), &pkg, strategy).unwrap();
            assert_eq!(codes(&items), vec![vec!["E4000".to_string()]]);
        }
    }

    #[test]
    fn a_package_that_is_not_collections_is_refused_whole() {
        for bad in [json!([]), json!({"options": {"id": "x"}})] {
            assert!(matches!(
                read(
                    &super::super::testing::snapshot(json!({})),
                    &bad,
                    ImportStrategy::CreateAndUpdate
                ),
                Err(ImportError::Package(_))
            ));
        }
    }
}
