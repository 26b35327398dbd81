//! Phase 2: each object on its own. The same object twice in the package; the strategy against
//! what exists (CREATE of a held object, UPDATE or DELETE of a missing one); a `name` where
//! DHIS2 needs one; a user's account part (its username unique on the box and in the package,
//! no empty password).

use std::collections::{HashMap, HashSet};

use clinicbox_dhis2::UserPayload;
use serde_json::Value;

use super::{Item, err};
use crate::metadata::Snapshot;
use crate::metadata::import::ImportStrategy;

/// Types whose objects need no `name`.
const NAMELESS: &[&str] = &[
    "users",
    "programRuleActions",
    "categoryOptionCombos",
    "visualizations",
    "eventVisualizations",
];

/// E5003 for every repeat of an object already in the package.
pub(super) fn duplicates(items: &mut [Item]) {
    let mut seen: HashSet<(&str, String)> = HashSet::new();
    for it in items {
        if !it.uid.is_empty() && !seen.insert((it.schema.plural, it.uid.clone())) {
            let m = format!(
                "Object {} `{}` appears more than once in the package",
                it.schema.singular, it.uid
            );
            it.errors
                .push(err(it.schema, &it.uid, "E5003", m, Some("id")));
        }
    }
}

/// The strategy, required properties and users, object by object.
pub(super) fn per_object(snap: &Snapshot, items: &mut [Item], strategy: ImportStrategy) {
    for it in items {
        strategy_allows(it, strategy);
        if strategy == ImportStrategy::Delete {
            continue;
        }
        let (s, uid) = (it.schema, it.uid.clone());
        if !NAMELESS.contains(&s.plural) && !it.obj.get("name").is_some_and(Value::is_string) {
            let m = "Missing required property `name`".to_string();
            it.errors.push(err(s, &uid, "E4000", m, Some("name")));
        }
        if s.plural == "users" {
            user(snap, it);
        }
    }
}

/// E5000 for creating what exists, E5001 for updating or deleting what does not.
fn strategy_allows(it: &mut Item, strategy: ImportStrategy) {
    let (s, uid) = (it.schema, it.uid.as_str());
    let e = match strategy {
        ImportStrategy::Create if it.exists => err(
            s,
            uid,
            "E5000",
            format!(
                "Found matching object for reference, but import mode is CREATE. Identifier was {uid}, and object was {}.",
                s.singular
            ),
            Some("id"),
        ),
        ImportStrategy::Update | ImportStrategy::Delete if !it.exists => err(
            s,
            uid,
            "E5001",
            format!(
                "No matching object for reference. Identifier was {uid}, and object was {}.",
                s.singular
            ),
            Some("id"),
        ),
        _ => return,
    };
    it.errors.push(e);
}

/// A user's account part: parsed, its username not another user's, no empty password.
fn user(snap: &Snapshot, it: &mut Item) {
    let (s, uid) = (it.schema, it.uid.clone());
    let u = match UserPayload::from_json(&Value::Object(it.obj.clone())) {
        Ok(u) => u,
        Err(e) => {
            it.errors
                .push(err(s, &uid, "E4000", e.to_string(), Some("username")));
            return;
        }
    };
    if snap.credential(&u.username).is_some_and(|c| c.uid != uid) {
        let m = format!(
            "Property `username` with value `{}` already exists on another user",
            u.username
        );
        it.errors.push(err(s, &uid, "E4054", m, Some("username")));
    }
    if u.password.as_deref() == Some("") {
        let m = "Password must not be empty".to_string();
        it.errors.push(err(s, &uid, "E4000", m, Some("password")));
    }
    it.user = Some(u);
}

/// E4054 for a username two users of the package share.
pub(super) fn usernames(items: &mut [Item]) {
    let mut names: HashMap<String, String> = HashMap::new();
    for it in items {
        let Some(u) = &it.user else { continue };
        if let Some(first) = names.insert(u.username.clone(), it.uid.clone())
            && first != it.uid
        {
            let m = format!(
                "Property `username` with value `{}` is used by two users in the package",
                u.username
            );
            it.errors
                .push(err(it.schema, &it.uid, "E4054", m, Some("username")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{codes, snapshot};
    use super::*;
    use serde_json::json;

    fn items(snap: &Snapshot, pkg: serde_json::Value, strategy: ImportStrategy) -> Vec<Item> {
        super::super::items::read(snap, &pkg, strategy).unwrap()
    }

    fn got(items: &[Item]) -> Vec<(String, Vec<String>)> {
        codes(items)
    }

    fn want(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(u, c)| (u.to_string(), c.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn the_same_object_twice_is_refused_the_second_time() {
        let snap = snapshot(json!({}));
        let mut it = items(
            &snap,
            json!({"options": [{"id": "cbOpt000001", "name": "a"}, {"id": "cbOpt000001", "name": "b"}]}),
            ImportStrategy::CreateAndUpdate,
        );
        duplicates(&mut it);
        assert_eq!(
            got(&it),
            want(&[("cbOpt000001", &[]), ("cbOpt000001", &["E5003"])])
        );
    }

    #[test]
    fn the_strategy_is_checked_against_what_exists() {
        let snap = snapshot(json!({"options": [{"id": "cbOptHeld01", "name": "held"}]}));
        let pkg = json!({"options": [{"id": "cbOptHeld01", "name": "x"}, {"id": "cbOptNew001", "name": "y"}]});
        for (strategy, expected) in [
            (ImportStrategy::Create, [&["E5000"][..], &[]]),
            (ImportStrategy::Update, [&[], &["E5001"]]),
            (ImportStrategy::Delete, [&[], &["E5001"]]),
            (ImportStrategy::CreateAndUpdate, [&[], &[]]),
        ] {
            let mut it = items(&snap, pkg.clone(), strategy);
            per_object(&snap, &mut it, strategy);
            assert_eq!(
                got(&it),
                want(&[("cbOptHeld01", expected[0]), ("cbOptNew001", expected[1])]),
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn a_name_is_required_but_where_dhis2_needs_none() {
        let snap = snapshot(json!({}));
        let mut it = items(
            &snap,
            json!({"options": [{"id": "cbOpt000001"}], "programRuleActions": [{"id": "cbPra000001"}]}),
            ImportStrategy::CreateAndUpdate,
        );
        per_object(&snap, &mut it, ImportStrategy::CreateAndUpdate);
        let mut got = got(&it);
        got.sort();
        assert_eq!(
            got,
            want(&[("cbOpt000001", &["E4000"]), ("cbPra000001", &[])])
        );
    }

    #[test]
    fn a_username_belongs_to_one_user_on_the_box_and_in_the_package() {
        let snap = snapshot(json!({"users": [{"id": "cbUsrHeld01", "username": "nurse"}]}));
        let user = |id: &str, name: &str, password: &str| json!({"id": id, "username": name, "password": password, "firstName": "A", "surname": "B"});
        let mut it = items(
            &snap,
            json!({"users": [
                user("cbUsrHeld01", "nurse", "Secret123!"),
                user("cbUsrNew001", "nurse", "Secret123!"),
                user("cbUsrNew002", "clerk", ""),
                user("cbUsrNew003", "clerk", "Secret123!"),
            ]}),
            ImportStrategy::CreateAndUpdate,
        );
        per_object(&snap, &mut it, ImportStrategy::CreateAndUpdate);
        usernames(&mut it);
        assert_eq!(
            got(&it),
            want(&[
                ("cbUsrHeld01", &[]),
                ("cbUsrNew001", &["E4054", "E4054"]),
                ("cbUsrNew002", &["E4000"]),
                ("cbUsrNew003", &["E4054"]),
            ])
        );
    }
}
