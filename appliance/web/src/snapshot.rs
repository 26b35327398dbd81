//! The metadata snapshot every request runs against: all metadata objects and users at one
//! revision, parsed and indexed (org units' programs, data sets and children; links DHIS2
//! serves from both ends). The API builds it from the store when the revision moves.

use std::collections::{BTreeMap, HashMap};

use clinicbox_dhis2::schema;
use serde_json::{Map, Value};

/// Credentials of one user, for the auth layer.
#[derive(Debug, Clone)]
pub struct Credential {
    pub uid: String,
    pub password_hash: Option<String>,
    pub disabled: bool,
}

/// Collections DHIS2 serves on the parent but a package may carry only on the child:
/// `(child, child's property naming the parent, parent, parent's collection)`. The snapshot
/// fills each parent's collection from its children.
pub const INVERSES: &[(&str, &str, &str, &str)] = &[
    ("sections", "dataSet", "dataSets", "sections"),
    (
        "categoryOptionCombos",
        "categoryCombo",
        "categoryCombos",
        "categoryOptionCombos",
    ),
    ("programStages", "program", "programs", "programStages"),
    (
        "programRuleVariables",
        "program",
        "programs",
        "programRuleVariables",
    ),
    ("programSections", "program", "programs", "programSections"),
    (
        "programStageSections",
        "programStage",
        "programStages",
        "programStageSections",
    ),
    ("options", "optionSet", "optionSets", "options"),
    (
        "programRuleActions",
        "programRule",
        "programRules",
        "programRuleActions",
    ),
];

/// All metadata at one revision, parsed and indexed.
pub struct Snapshot {
    pub revision: u64,
    types: HashMap<&'static str, BTreeMap<String, Map<String, Value>>>,
    ou_programs: HashMap<String, Vec<String>>,
    ou_data_sets: HashMap<String, Vec<String>>,
    ou_children: HashMap<String, Vec<String>>,
    credentials: HashMap<String, Credential>,
}

impl Snapshot {
    /// Objects of a type in id order.
    pub fn objects(&self, plural: &str) -> impl Iterator<Item = (&String, &Map<String, Value>)> {
        self.types.get(plural).into_iter().flat_map(|m| m.iter())
    }

    pub fn get(&self, plural: &str, uid: &str) -> Option<&Map<String, Value>> {
        self.types.get(plural)?.get(uid)
    }

    pub fn count(&self, plural: &str) -> usize {
        self.types.get(plural).map_or(0, BTreeMap::len)
    }

    pub fn contains(&self, plural: &str, uid: &str) -> bool {
        self.get(plural, uid).is_some()
    }

    /// `path` of an org unit (`/root/…/uid`).
    pub fn org_unit_path(&self, uid: &str) -> Option<&str> {
        self.get("organisationUnits", uid)?
            .get("path")
            .and_then(Value::as_str)
    }

    /// Programs assigned to an org unit (DHIS2 serves this as the org unit's `programs`).
    pub fn programs_of_org_unit(&self, uid: &str) -> &[String] {
        self.ou_programs.get(uid).map_or(&[], Vec::as_slice)
    }

    pub fn data_sets_of_org_unit(&self, uid: &str) -> &[String] {
        self.ou_data_sets.get(uid).map_or(&[], Vec::as_slice)
    }

    pub fn children_of_org_unit(&self, uid: &str) -> &[String] {
        self.ou_children.get(uid).map_or(&[], Vec::as_slice)
    }

    pub fn credential(&self, username: &str) -> Option<&Credential> {
        self.credentials.get(username)
    }

    /// A snapshot of metadata objects by type and the users' credentials, at `revision`:
    /// indexes the org units' programs, data sets and children and fills the collections DHIS2
    /// serves on both ends of a link.
    pub fn new(
        revision: u64,
        types: HashMap<&'static str, BTreeMap<String, Map<String, Value>>>,
        credentials: HashMap<String, Credential>,
    ) -> Snapshot {
        let mut snap = Snapshot {
            revision,
            types,
            ou_programs: HashMap::new(),
            ou_data_sets: HashMap::new(),
            ou_children: HashMap::new(),
            credentials,
        };
        snap.index();
        snap
    }

    /// A snapshot holding a package's objects as stored (tests and tools).
    pub fn from_package(package: &Value) -> Snapshot {
        let mut types: HashMap<&'static str, BTreeMap<String, Map<String, Value>>> = HashMap::new();
        let mut credentials = HashMap::new();
        for s in schema::SCHEMAS {
            let mut objects = BTreeMap::new();
            for o in package
                .get(s.plural)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(obj), Some(id)) = (o.as_object(), o.get("id").and_then(Value::as_str))
                else {
                    continue;
                };
                if let Some(username) = obj.get("username").and_then(Value::as_str) {
                    let credential = Credential {
                        uid: id.to_string(),
                        password_hash: None,
                        disabled: false,
                    };
                    credentials.insert(username.to_string(), credential);
                }
                objects.insert(id.to_string(), obj.clone());
            }
            types.insert(s.plural, objects);
        }
        Snapshot::new(1, types, credentials)
    }

    /// Adds `{id}` to `collection` of each `(target, id)`'s target object of type `plural`,
    /// once.
    fn link(&mut self, plural: &str, collection: &str, links: Vec<(String, String)>) {
        let Some(targets) = self.types.get_mut(plural) else {
            return;
        };
        for (t, id) in links {
            let Some(obj) = targets.get_mut(&t) else {
                continue;
            };
            let entry = obj
                .entry(collection)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = entry
                && !items
                    .iter()
                    .any(|i| i.get("id").and_then(Value::as_str) == Some(&id))
            {
                items.push(serde_json::json!({ "id": id }));
            }
        }
    }

    fn index(&mut self) {
        let assign = |plural: &str| {
            let mut map: HashMap<String, Vec<String>> = HashMap::new();
            for (id, obj) in self.objects(plural) {
                for ou in ref_ids(obj.get("organisationUnits")) {
                    map.entry(ou).or_default().push(id.clone());
                }
            }
            map
        };
        let programs = assign("programs");
        let data_sets = assign("dataSets");
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for (id, obj) in self.objects("organisationUnits") {
            if let Some(p) = obj
                .get("parent")
                .and_then(|p| p.get("id"))
                .and_then(Value::as_str)
            {
                children.entry(p.to_string()).or_default().push(id.clone());
            }
        }
        for &(child, parent_prop, parent, collection) in INVERSES {
            let links: Vec<(String, String)> = self
                .objects(child)
                .filter_map(|(id, o)| {
                    let p = o.get(parent_prop)?.get("id")?.as_str()?;
                    Some((p.to_string(), id.clone()))
                })
                .collect();
            self.link(parent, collection, links);
        }
        // Many-to-many links DHIS2 serves from both ends (e.g. `categoryOptions.categories`,
        // filtered on by the SDK) but a package carries on the owning side only.
        for (owner, prop, other, collection) in [
            (
                "categories",
                "categoryOptions",
                "categoryOptions",
                "categories",
            ),
            (
                "categoryCombos",
                "categories",
                "categories",
                "categoryCombos",
            ),
            (
                "organisationUnitGroups",
                "organisationUnits",
                "organisationUnits",
                "organisationUnitGroups",
            ),
            (
                "dataElementGroups",
                "dataElements",
                "dataElements",
                "dataElementGroups",
            ),
            ("userGroups", "users", "users", "userGroups"),
        ] {
            let links: Vec<(String, String)> = self
                .objects(owner)
                .flat_map(|(id, o)| {
                    ref_ids(o.get(prop))
                        .into_iter()
                        .map(move |t| (t, id.clone()))
                })
                .collect();
            self.link(other, collection, links);
        }
        self.ou_programs = programs;
        self.ou_data_sets = data_sets;
        self.ou_children = children;
    }
}

/// `{id}` or `[{id}, …]` → ids.
pub fn ref_ids(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_string))
            .collect(),
        Some(Value::Object(o)) => o
            .get("id")
            .and_then(Value::as_str)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
