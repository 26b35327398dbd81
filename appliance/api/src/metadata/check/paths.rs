//! Phase 4: org-unit paths and levels, computed over the tree as it will be (the box's org units
//! with the package's valid ones on top). A cycle is refused; org units outside the package
//! whose path changes because an ancestor moved are returned to be rewritten too.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::{Item, err};
use crate::metadata::{Snapshot, ref_ids};

/// Deep enough for any real hierarchy; deeper means a cycle or garbage.
const MAX_DEPTH: usize = 64;

/// Sets `path` and `level` on the package's org units; returns the box's org units that moved.
pub(super) fn org_unit_paths(
    snap: &Snapshot,
    items: &mut [Item],
) -> Vec<(String, Map<String, Value>)> {
    let is_ou = |i: &Item| i.schema.plural == "organisationUnits";
    let mut parent: HashMap<String, Option<String>> = snap
        .objects("organisationUnits")
        .map(|(id, o)| (id.clone(), ref_ids(o.get("parent")).into_iter().next()))
        .collect();
    for it in items.iter().filter(|i| is_ou(i) && i.errors.is_empty()) {
        let p = ref_ids(it.obj.get("parent")).into_iter().next();
        parent.insert(it.uid.clone(), p);
    }
    for it in items.iter_mut().filter(|i| is_ou(i) && i.errors.is_empty()) {
        match path_of(&parent, &it.uid) {
            Some(path) => set_path(&mut it.obj, path),
            None => {
                let m = "Organisation unit hierarchy contains a cycle".to_string();
                let e = err(it.schema, &it.uid, "E4000", m, Some("parent"));
                it.errors.push(e);
            }
        }
    }
    let in_package: HashSet<&str> = items
        .iter()
        .filter(|i| is_ou(i))
        .map(|i| i.uid.as_str())
        .collect();
    let mut moved = Vec::new();
    for (id, o) in snap.objects("organisationUnits") {
        if in_package.contains(id.as_str()) {
            continue;
        }
        if let Some(path) = path_of(&parent, id)
            && o.get("path").and_then(Value::as_str) != Some(path.as_str())
        {
            let mut o = o.clone();
            set_path(&mut o, path);
            moved.push((id.clone(), o));
        }
    }
    moved
}

/// `/root/…/start`, or `None` for a cycle.
fn path_of(parent: &HashMap<String, Option<String>>, start: &str) -> Option<String> {
    let mut chain = vec![start.to_string()];
    let mut cur = start.to_string();
    while let Some(Some(p)) = parent.get(&cur) {
        if chain.contains(p) || chain.len() > MAX_DEPTH {
            return None;
        }
        chain.push(p.clone());
        cur = p.clone();
    }
    chain.reverse();
    Some(format!("/{}", chain.join("/")))
}

fn set_path(obj: &mut Map<String, Value>, path: String) {
    let level = path.matches('/').count();
    obj.insert("path".into(), Value::from(path));
    obj.insert("level".into(), Value::from(level));
}

#[cfg(test)]
mod tests {
    use super::super::testing::{codes, snapshot};
    use super::*;
    use crate::metadata::import::ImportStrategy;
    use serde_json::json;

    fn ou(id: &str, parent: Option<&str>) -> Value {
        match parent {
            Some(p) => json!({"id": id, "name": id, "parent": {"id": p}}),
            None => json!({"id": id, "name": id}),
        }
    }

    #[test]
    fn paths_follow_the_tree_as_it_will_be_and_moved_subtrees_are_rewritten() {
        let snap = snapshot(json!({"organisationUnits": [
            {"id": "cbCountry01", "name": "c", "path": "/cbCountry01"},
            {"id": "cbDistrct01", "name": "d", "parent": {"id": "cbCountry01"}, "path": "/cbCountry01/cbDistrct01"},
            {"id": "cbClinicA01", "name": "a", "parent": {"id": "cbDistrct01"}, "path": "/cbCountry01/cbDistrct01/cbClinicA01"},
        ]}));
        // A new district, and the old district moved under it.
        let pkg = json!({"organisationUnits": [
            ou("cbDistrct02", Some("cbCountry01")),
            ou("cbDistrct01", Some("cbDistrct02")),
        ]});
        let mut items =
            super::super::items::read(&snap, &pkg, ImportStrategy::CreateAndUpdate).unwrap();
        let moved = org_unit_paths(&snap, &mut items);
        let path = |id: &str| {
            items
                .iter()
                .find(|i| i.uid == id)
                .map(|i| (i.obj["path"].clone(), i.obj["level"].clone()))
        };
        assert_eq!(
            path("cbDistrct01"),
            Some((json!("/cbCountry01/cbDistrct02/cbDistrct01"), json!(3)))
        );
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].0, "cbClinicA01");
        assert_eq!(
            moved[0].1["path"],
            "/cbCountry01/cbDistrct02/cbDistrct01/cbClinicA01"
        );
    }

    #[test]
    fn a_cycle_is_refused() {
        let snap = snapshot(json!({}));
        let pkg = json!({"organisationUnits": [ou("cbOuCycle01", Some("cbOuCycle02")), ou("cbOuCycle02", Some("cbOuCycle01"))]});
        let mut items =
            super::super::items::read(&snap, &pkg, ImportStrategy::CreateAndUpdate).unwrap();
        org_unit_paths(&snap, &mut items);
        assert!(
            codes(&items)
                .iter()
                .all(|(_, c)| c == &["E4000".to_string()])
        );
    }
}
