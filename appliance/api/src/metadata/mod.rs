//! Metadata as the box holds it: objects in the store's `METADATA` collection under
//! `<type>/<uid>` (users in `USERS`), and an in-memory [`Snapshot`] rebuilt when the metadata
//! revision changes, from which every metadata endpoint, the auth layer and scope checks read.

pub mod check;
pub mod import;
pub mod serve;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone, schema};
use clinicbox_store::{Collection, ReadView, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One record holding the metadata revision, bumped by every metadata or user write so that
/// every process and handle sees the change.
pub const REVISION: Collection = Collection::named("metadataRevision");
const REVISION_KEY: &str = "current";

/// A user as stored in `USERS`: the DHIS2 user object (no password) and the Argon2id hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredUser {
    pub user: Value,
    pub password_hash: Option<String>,
}

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

    fn build(
        revision: u64,
        read: &ReadView,
        zone: &ServerTimeZone,
    ) -> Result<Snapshot, StoreError> {
        let mut types: HashMap<&'static str, BTreeMap<String, Map<String, Value>>> = HashMap::new();
        for s in schema::SCHEMAS {
            types.insert(s.plural, BTreeMap::new());
        }
        let stamp = |ms: u64| {
            Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(i64::MAX), zone)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        for item in read.scan(Collection::METADATA)? {
            let (key, rec) = item?;
            if rec.deleted {
                continue;
            }
            let Some((plural, uid)) = key.split_once('/') else {
                continue;
            };
            let Some(s) = schema::by_plural(plural) else {
                continue;
            };
            let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&rec.body) else {
                tracing::warn!(metadata.key = %key, "skipping an unreadable metadata record");
                continue;
            };
            finish_object(s, &mut obj, &stamp(rec.created_ms), &stamp(rec.updated_ms));
            if let Some(m) = types.get_mut(s.plural) {
                m.insert(uid.to_string(), obj);
            }
        }
        let mut credentials = HashMap::new();
        let users_schema = schema::by_plural("users");
        for item in read.scan(Collection::USERS)? {
            let (uid, rec) = item?;
            if rec.deleted {
                continue;
            }
            let Ok(stored) = rec.json::<StoredUser>() else {
                tracing::warn!(user.uid = %uid, "skipping an unreadable user record");
                continue;
            };
            let Value::Object(mut user) = stored.user else {
                continue;
            };
            if let Some(s) = users_schema {
                finish_object(s, &mut user, &stamp(rec.created_ms), &stamp(rec.updated_ms));
            }
            if let Some(username) = user.get("username").and_then(Value::as_str) {
                credentials.insert(
                    username.to_string(),
                    Credential {
                        uid: uid.clone(),
                        password_hash: stored.password_hash,
                        disabled: user
                            .get("disabled")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    },
                );
            }
            if let Some(m) = types.get_mut("users") {
                m.insert(uid, user);
            }
        }
        let mut snap = Snapshot {
            revision,
            types,
            ou_programs: HashMap::new(),
            ou_data_sets: HashMap::new(),
            ou_children: HashMap::new(),
            credentials,
        };
        snap.index();
        Ok(snap)
    }

    /// A snapshot holding a package's objects as stored (tests of the checks).
    #[cfg(test)]
    pub(crate) fn from_package(package: &Value) -> Snapshot {
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
        let mut snap = Snapshot {
            revision: 1,
            types,
            ou_programs: HashMap::new(),
            ou_data_sets: HashMap::new(),
            ou_children: HashMap::new(),
            credentials,
        };
        snap.index();
        snap
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
            let Some(parents) = self.types.get_mut(parent) else {
                continue;
            };
            for (p, id) in links {
                let Some(obj) = parents.get_mut(&p) else {
                    continue;
                };
                let entry = obj
                    .entry(collection)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = entry {
                    if !items
                        .iter()
                        .any(|i| i.get("id").and_then(Value::as_str) == Some(&id))
                    {
                        items.push(serde_json::json!({ "id": id }));
                    }
                }
            }
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
            let Some(targets) = self.types.get_mut(other) else {
                continue;
            };
            for (t, id) in links {
                let Some(obj) = targets.get_mut(&t) else {
                    continue;
                };
                let entry = obj
                    .entry(collection)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = entry {
                    if !items
                        .iter()
                        .any(|i| i.get("id").and_then(Value::as_str) == Some(&id))
                    {
                        items.push(serde_json::json!({ "id": id }));
                    }
                }
            }
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

/// Adds the properties DHIS2 computes for every reader: display names, `isDefault`, and the
/// box's own `created`/`lastUpdated` (tablets compare `lastUpdated` with our `serverDate`).
fn finish_object(s: &schema::Schema, obj: &mut Map<String, Value>, created: &str, updated: &str) {
    if !obj.contains_key("created") {
        obj.insert("created".into(), Value::from(created));
    }
    obj.insert("lastUpdated".into(), Value::from(updated));
    let fallback = |keys: &[&str], obj: &Map<String, Value>| {
        keys.iter()
            .find_map(|k| obj.get(*k).filter(|v| v.is_string()).cloned())
    };
    for (display, sources) in [
        ("displayName", &["name"][..]),
        ("displayShortName", &["shortName", "name"][..]),
        ("displayDescription", &["description"][..]),
        ("displayFormName", &["formName", "name"][..]),
    ] {
        if !obj.contains_key(display) {
            if let Some(v) = fallback(sources, obj) {
                obj.insert(display.into(), v);
            }
        }
    }
    if s.plural == "users" && !obj.contains_key("displayName") {
        let first = obj.get("firstName").and_then(Value::as_str).unwrap_or("");
        let last = obj.get("surname").and_then(Value::as_str).unwrap_or("");
        let name = format!("{first} {last}").trim().to_string();
        obj.insert("name".into(), Value::from(name.clone()));
        obj.insert("displayName".into(), Value::from(name));
    }
    if matches!(
        s.plural,
        "categoryCombos" | "categories" | "categoryOptions" | "categoryOptionCombos"
    ) && !obj.contains_key("isDefault")
    {
        let is_default = obj.get("name").and_then(Value::as_str) == Some("default");
        obj.insert("isDefault".into(), Value::Bool(is_default));
    }
    obj.remove("password");
}

/// Reads and caches metadata snapshots; serialises writes.
#[derive(Clone)]
pub struct MetadataService {
    store: Store,
    zone: ServerTimeZone,
    current: Arc<Mutex<Arc<Snapshot>>>,
    /// One metadata/user write at a time: imports validate against the snapshot they write over.
    pub(crate) write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl MetadataService {
    pub fn new(store: Store, zone: ServerTimeZone) -> Result<Self, StoreError> {
        let read = store.read()?;
        let rev = read_revision(&read)?;
        let snap = Snapshot::build(rev, &read, &zone)?;
        Ok(MetadataService {
            store,
            zone,
            current: Arc::new(Mutex::new(Arc::new(snap))),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn zone(&self) -> &ServerTimeZone {
        &self.zone
    }

    /// The current snapshot, rebuilt first if the stored revision moved.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        let read = self.store.read()?;
        let rev = read_revision(&read)?;
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.revision != rev {
            let snap = Snapshot::build(rev, &read, &self.zone)?;
            tracing::debug!(metadata.revision = rev, "metadata snapshot rebuilt");
            *cur = Arc::new(snap);
        }
        Ok(cur.clone())
    }
}

fn read_revision(read: &ReadView) -> Result<u64, StoreError> {
    Ok(read
        .get(REVISION, REVISION_KEY)?
        .and_then(|r| r.json::<u64>().ok())
        .unwrap_or(0))
}

/// Bumps the metadata revision inside a write (every metadata/user write calls this).
pub fn bump_revision(ctx: &mut clinicbox_store::WriteCtx<'_>) -> Result<(), StoreError> {
    let cur = ctx
        .get(REVISION, REVISION_KEY)?
        .and_then(|r| r.json::<u64>().ok())
        .unwrap_or(0);
    ctx.put_json(REVISION, REVISION_KEY, &(cur + 1))
}
