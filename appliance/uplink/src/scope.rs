//! Fitting national's metadata to the box: a program lists every org unit in the country and a
//! user may name groups the box never pulls. References outside what the box holds are dropped
//! here, so the import's reference checks see only what the box serves; anything else missing
//! still fails the import, whole.

use std::collections::{BTreeMap, HashSet};

use clinicbox_dhis2::schema;
use serde_json::{Map, Value};

/// Objects by collection and UID: the same category combo from two programs' exports is one.
#[derive(Debug, Default)]
pub struct Package {
    objects: BTreeMap<String, BTreeMap<String, Value>>,
}

impl Package {
    /// Adds the collections of a national answer the box knows (others, and `system`/`date`,
    /// are left out).
    pub fn add_export(&mut self, export: &Value) {
        let Some(m) = export.as_object() else {
            return;
        };
        for (collection, list) in m {
            if let Some(list) = list.as_array() {
                self.add(collection, list.iter().cloned());
            }
        }
    }

    pub fn add(&mut self, collection: &str, objects: impl IntoIterator<Item = Value>) {
        if schema::by_plural(collection).is_none() {
            return;
        }
        let into = self.objects.entry(collection.to_string()).or_default();
        for o in objects {
            if let Some(id) = o.get("id").and_then(Value::as_str) {
                into.insert(id.to_string(), o);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.objects.values().all(BTreeMap::is_empty)
    }

    /// The package as the import reads it, references fitted to `org_units` and `user_groups`.
    pub fn fitted(
        self,
        org_units: &HashSet<String>,
        user_groups: &HashSet<String>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for (collection, objects) in self.objects {
            let Some(s) = schema::by_plural(&collection) else {
                continue;
            };
            let list: Vec<Value> = objects
                .into_values()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        fit(s, m, org_units, user_groups);
                    }
                    o
                })
                .collect();
            out.insert(collection, Value::Array(list));
        }
        out
    }
}

/// Drops `o`'s references to org units and user groups the box does not hold; a user never
/// carries a password from national.
fn fit(
    s: &schema::Schema,
    o: &mut Map<String, Value>,
    org_units: &HashSet<String>,
    user_groups: &HashSet<String>,
) {
    for r in s.references {
        let keep: &HashSet<String> = match r.target {
            "organisationUnits" => org_units,
            "userGroups" => user_groups,
            _ => continue,
        };
        // Top-level references only: org units and groups are never named deeper.
        if r.path.contains('.') {
            continue;
        }
        let held = |v: &Value| {
            v.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| keep.contains(id))
        };
        match o.get_mut(r.path) {
            Some(Value::Array(list)) => list.retain(held),
            Some(v @ Value::Object(_)) if !held(v) => {
                o.remove(r.path);
            }
            _ => {}
        }
    }
    if s.plural == "users" {
        o.remove("password");
        if let Some(Value::Object(c)) = o.get_mut("userCredentials") {
            c.remove("password");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_program_keeps_only_the_boxs_org_units_and_one_copy_of_shared_dependencies() {
        let mut p = Package::default();
        let combo = json!({"id": "comboAAAAAA", "name": "c"});
        p.add_export(&json!({
            "date": "2026-12-06T10:00:00.000",
            "system": {"version": "2.42.3"},
            "programs": [{"id": "progAAAAAAA", "name": "p",
                "organisationUnits": [{"id": "clinicAAAAA"}, {"id": "elsewhereAA"}]}],
            "categoryCombos": [combo.clone()],
            "dashboards": [{"id": "dashAAAAAAA"}],
        }));
        p.add_export(&json!({"categoryCombos": [combo]}));
        let out = p.fitted(&set(&["clinicAAAAA"]), &set(&[]));
        assert_eq!(
            out["programs"][0]["organisationUnits"],
            json!([{"id": "clinicAAAAA"}])
        );
        assert_eq!(out["categoryCombos"].as_array().map(Vec::len), Some(1));
        assert!(out.get("dashboards").is_none() && out.get("system").is_none());
        assert!(out.get("date").is_none());
    }

    #[test]
    fn a_user_keeps_the_boxs_org_units_and_groups_and_never_a_password() {
        let mut p = Package::default();
        p.add(
            "users",
            [
                json!({"id": "userAAAAAAA", "username": "nurse", "password": "x",
                "organisationUnits": [{"id": "clinicAAAAA"}, {"id": "districtAAA"}],
                "userGroups": [{"id": "groupAAAAAA"}, {"id": "groupBBBBBB"}]}),
            ],
        );
        let out = p.fitted(&set(&["clinicAAAAA"]), &set(&["groupBBBBBB"]));
        let u = &out["users"][0];
        assert_eq!(u["organisationUnits"], json!([{"id": "clinicAAAAA"}]));
        assert_eq!(u["userGroups"], json!([{"id": "groupBBBBBB"}]));
        assert!(u.get("password").is_none());
    }

    #[test]
    fn the_top_org_unit_loses_a_parent_the_box_does_not_hold() {
        let mut p = Package::default();
        p.add(
            "organisationUnits",
            [json!({"id": "districtAAA", "name": "d", "parent": {"id": "countryAAAA"}})],
        );
        let out = p.fitted(&set(&["districtAAA"]), &set(&[]));
        assert!(out["organisationUnits"][0].get("parent").is_none());
    }
}
