//! `POST /api/metadata` and `clinicbox metadata import`: parse a DHIS2 metadata package, check
//! it against the current metadata (ids, references, strategy, users), then write it in one
//! store transaction, or nothing with `atomicMode=ALL` when anything is wrong.

use std::collections::{BTreeMap, HashMap, HashSet};

use clinicbox_dhis2::schema::{self, Schema};
use clinicbox_dhis2::{
    ErrorReport, ImportReport, ImportStatus, ObjectReport, Stats, TypeReport, Uid, UserPayload,
};
use clinicbox_store::Collection;
use serde_json::{Map, Value};

use super::{MetadataService, Snapshot, StoredUser, bump_revision, ref_ids};
use crate::auth;
use crate::error::ApiError;
use crate::query::Query;

/// DHIS2 `importStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStrategy {
    CreateAndUpdate,
    Create,
    Update,
    Delete,
}

/// Import options (DHIS2 names in the query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportParams {
    pub strategy: ImportStrategy,
    /// `atomicMode=ALL` (default): any error means nothing is written.
    pub atomic: bool,
    /// `importMode=VALIDATE`: check only.
    pub validate_only: bool,
    /// `importReportMode=FULL`: an object report for every object, not only failed ones.
    pub full_report: bool,
}

impl Default for ImportParams {
    fn default() -> Self {
        ImportParams {
            strategy: ImportStrategy::CreateAndUpdate,
            atomic: true,
            validate_only: false,
            full_report: false,
        }
    }
}

impl ImportParams {
    pub fn from_query(q: &Query) -> Result<Self, ApiError> {
        let strategy = match q.get("importStrategy").unwrap_or("CREATE_AND_UPDATE") {
            "CREATE_AND_UPDATE" | "NEW_AND_UPDATES" => ImportStrategy::CreateAndUpdate,
            "CREATE" | "NEW" => ImportStrategy::Create,
            "UPDATE" | "UPDATES" => ImportStrategy::Update,
            "DELETE" | "DELETES" => ImportStrategy::Delete,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Value '{other}' is not valid for parameter importStrategy. Valid values are: [CREATE_AND_UPDATE, CREATE, UPDATE, DELETE]"
                )));
            }
        };
        let atomic = match q.get("atomicMode").unwrap_or("ALL") {
            "ALL" => true,
            "NONE" => false,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Value '{other}' is not valid for parameter atomicMode. Valid values are: [ALL, NONE]"
                )));
            }
        };
        let validate_only = match q.get("importMode").unwrap_or("COMMIT") {
            "COMMIT" => false,
            "VALIDATE" => true,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Value '{other}' is not valid for parameter importMode. Valid values are: [COMMIT, VALIDATE]"
                )));
            }
        };
        let full_report = matches!(q.get("importReportMode"), Some("FULL" | "DEBUG"));
        Ok(ImportParams {
            strategy,
            atomic,
            validate_only,
            full_report,
        })
    }
}

/// Properties a reader computes; never stored from a package.
const COMPUTED: &[&str] = &[
    "access",
    "href",
    "displayName",
    "displayShortName",
    "displayDescription",
    "displayFormName",
    "favorite",
    "favorites",
    "lastUpdated",
    "lastUpdatedBy",
    "ancestors",
    "children",
];

/// Types whose objects need no `name`.
const NAMELESS: &[&str] = &[
    "users",
    "programRuleActions",
    "categoryOptionCombos",
    "visualizations",
    "eventVisualizations",
];

struct Item {
    schema: &'static Schema,
    index: usize,
    uid: String,
    obj: Map<String, Value>,
    exists: bool,
    errors: Vec<ErrorReport>,
    user: Option<UserPayload>,
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

/// The result of checking a package.
pub struct Plan {
    items: Vec<Item>,
    strategy: ImportStrategy,
    /// Org units outside the package whose path/level changed because an ancestor moved.
    moved: Vec<(String, Map<String, Value>)>,
    report: ImportReport,
    ok: bool,
}

impl Plan {
    pub fn report(&self) -> &ImportReport {
        &self.report
    }
}

/// Checks `package` against `snap`. Pure: no store access.
pub fn check(snap: &Snapshot, package: &Value, params: ImportParams) -> Result<Plan, ApiError> {
    let Value::Object(pkg) = package else {
        return Err(ApiError::BadRequest(
            "A metadata package must be a JSON object of collections".into(),
        ));
    };
    let mut items: Vec<Item> = Vec::new();
    for (key, value) in pkg {
        let Some(s) = schema::by_plural(key) else {
            if !matches!(key.as_str(), "system" | "date") {
                tracing::info!(metadata.collection = %key, "ignoring an unsupported metadata collection");
            }
            continue;
        };
        let Value::Array(objects) = value else {
            return Err(ApiError::BadRequest(format!("`{key}` must be an array")));
        };
        for (index, o) in objects.iter().enumerate() {
            let mut errors = Vec::new();
            let mut obj = match o {
                Value::Object(m) => m.clone(),
                _ => {
                    errors.push(err(
                        s,
                        "",
                        "E4000",
                        format!("{} #{index} is not an object", s.singular),
                        None,
                    ));
                    Map::new()
                }
            };
            let uid = match obj.get("id") {
                Some(Value::String(id)) if Uid::is_valid(id) => id.clone(),
                Some(Value::String(id)) => {
                    errors.push(err(
                        s,
                        id,
                        "E4014",
                        format!("Invalid UID `{id}` for property `{}`", s.singular),
                        Some("id"),
                    ));
                    id.clone()
                }
                Some(_) => {
                    errors.push(err(
                        s,
                        "",
                        "E4014",
                        "Property `id` must be a string".into(),
                        Some("id"),
                    ));
                    String::new()
                }
                None if params.strategy == ImportStrategy::Update
                    || params.strategy == ImportStrategy::Delete =>
                {
                    errors.push(err(
                        s,
                        "",
                        "E4000",
                        "Missing required property `id`".into(),
                        Some("id"),
                    ));
                    String::new()
                }
                None => {
                    let id = Uid::generate().to_string();
                    obj.insert("id".into(), Value::from(id.clone()));
                    id
                }
            };
            let exists = snap.contains(s.plural, &uid);
            items.push(Item {
                schema: s,
                index,
                uid,
                obj,
                exists,
                errors,
                user: None,
            });
        }
    }
    // Duplicates within the package.
    let mut seen: HashSet<(&str, String)> = HashSet::new();
    for it in &mut items {
        if !it.uid.is_empty() && !seen.insert((it.schema.plural, it.uid.clone())) {
            let m = format!(
                "Object {} `{}` appears more than once in the package",
                it.schema.singular, it.uid
            );
            it.errors
                .push(err(it.schema, &it.uid, "E5003", m, Some("id")));
        }
    }
    let deleting = params.strategy == ImportStrategy::Delete;
    for it in &mut items {
        let (s, uid) = (it.schema, it.uid.clone());
        match params.strategy {
            ImportStrategy::Create if it.exists => it.errors.push(err(s, &uid, "E5000",
                format!("Found matching object for reference, but import mode is CREATE. Identifier was {uid}, and object was {}.", s.singular), Some("id"))),
            ImportStrategy::Update | ImportStrategy::Delete if !it.exists => it.errors.push(err(s, &uid, "E5001",
                format!("No matching object for reference. Identifier was {uid}, and object was {}.", s.singular), Some("id"))),
            _ => {}
        }
        if deleting {
            continue;
        }
        if !NAMELESS.contains(&s.plural) && !it.obj.get("name").is_some_and(Value::is_string) {
            it.errors.push(err(
                s,
                &uid,
                "E4000",
                "Missing required property `name`".into(),
                Some("name"),
            ));
        }
        if s.plural == "users" {
            match UserPayload::from_json(&Value::Object(it.obj.clone())) {
                Ok(u) => {
                    if let Some(other) = snap.credential(&u.username) {
                        if other.uid != uid {
                            it.errors.push(err(s, &uid, "E4054",
                                format!("Property `username` with value `{}` already exists on another user", u.username), Some("username")));
                        }
                    }
                    if u.password.as_deref() == Some("") {
                        it.errors.push(err(
                            s,
                            &uid,
                            "E4000",
                            "Password must not be empty".into(),
                            Some("password"),
                        ));
                    }
                    it.user = Some(u);
                }
                Err(e) => it
                    .errors
                    .push(err(s, &uid, "E4000", e.to_string(), Some("username"))),
            }
        }
    }
    // Usernames unique inside the package too.
    let mut names: HashMap<String, String> = HashMap::new();
    for it in &mut items {
        if let Some(u) = &it.user {
            if let Some(first) = names.insert(u.username.clone(), it.uid.clone()) {
                if first != it.uid {
                    let m = format!(
                        "Property `username` with value `{}` is used by two users in the package",
                        u.username
                    );
                    it.errors
                        .push(err(it.schema, &it.uid, "E4054", m, Some("username")));
                }
            }
        }
    }

    // References: resolved against the package and the current metadata, until no new object
    // fails (with atomicMode=NONE a failed object cannot satisfy a reference).
    let mut moved = Vec::new();
    loop {
        let valid: HashSet<(&str, &str)> = items
            .iter()
            .filter(|i| i.errors.is_empty())
            .map(|i| (i.schema.plural, i.uid.as_str()))
            .collect();
        let exists = |t: &str, id: &str| {
            if deleting {
                return snap.contains(t, id) && !valid.contains(&(t, id));
            }
            // An object already stored keeps satisfying references even if its update fails.
            valid.contains(&(t, id)) || snap.contains(t, id)
        };
        let mut new_errors: Vec<(usize, ErrorReport)> = Vec::new();
        if !deleting {
            for (n, it) in items.iter().enumerate() {
                if !it.errors.is_empty() {
                    continue;
                }
                let mut refs: Vec<(&str, &str)> = it
                    .schema
                    .references
                    .iter()
                    .map(|r| (r.path, r.target))
                    .collect();
                refs.push(("attributeValues.attribute", "attributes"));
                for (path, target) in refs {
                    for id in ids_at(&it.obj, path) {
                        let id_s = id.as_str().unwrap_or("");
                        if !Uid::is_valid(id_s) || !exists(target, id_s) {
                            let tk = schema::by_plural(target).map_or(target, |t| t.klass);
                            new_errors.push((n, ErrorReport {
                                message: format!("Invalid reference [{id_s}] ({}) on object {} ({}) for association `{path}`",
                                    tk.rsplit('.').next().unwrap_or(tk), it.uid, it.schema.klass.rsplit('.').next().unwrap_or("")),
                                main_klass: it.schema.klass.to_string(),
                                error_code: "E5002".into(),
                                main_id: Some(it.uid.clone()),
                                error_klass: Some(tk.to_string()),
                                error_property: Some(path.to_string()),
                                error_properties: vec![id_s.to_string(), path.to_string()],
                                value: Some(id_s.to_string()),
                            }));
                        }
                    }
                }
            }
        } else {
            // Deleting: nothing that stays may still point at a deleted object.
            let doomed: HashSet<(&str, &str)> = items
                .iter()
                .filter(|i| i.errors.is_empty())
                .map(|i| (i.schema.plural, i.uid.as_str()))
                .collect();
            let mut blocked: HashMap<(&str, String), String> = HashMap::new();
            for s in schema::SCHEMAS {
                for (uid, obj) in snap.objects(s.plural) {
                    if doomed.contains(&(s.plural, uid.as_str())) {
                        continue;
                    }
                    for r in s.references {
                        // A parent's collection filled from its children stops naming a
                        // child once the child is gone (an option leaves its set).
                        let filled = super::INVERSES
                            .iter()
                            .any(|&(_, _, parent, coll)| parent == s.plural && coll == r.path);
                        if filled {
                            continue;
                        }
                        for id in ids_at(obj, r.path) {
                            if let Some(id) = id.as_str() {
                                if doomed.contains(&(r.target, id)) {
                                    blocked
                                        .entry((r.target, id.to_string()))
                                        .or_insert(format!("{} {uid}", s.singular));
                                }
                            }
                        }
                    }
                }
            }
            for (n, it) in items.iter().enumerate() {
                if let Some(by) = blocked.get(&(it.schema.plural, it.uid.clone())) {
                    if it.errors.is_empty() {
                        new_errors.push((n, err(it.schema, &it.uid, "E4030",
                            format!("Object could not be deleted because it is associated with another object: {by}"), None)));
                    }
                }
            }
        }
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

    // Org unit paths and levels over the final tree.
    if !deleting {
        let mut parent: HashMap<String, Option<String>> = snap
            .objects("organisationUnits")
            .map(|(id, o)| (id.clone(), ref_ids(o.get("parent")).into_iter().next()))
            .collect();
        for it in items
            .iter()
            .filter(|i| i.schema.plural == "organisationUnits" && i.errors.is_empty())
        {
            parent.insert(
                it.uid.clone(),
                ref_ids(it.obj.get("parent")).into_iter().next(),
            );
        }
        let path_of = |start: &str| -> Option<String> {
            let mut chain = vec![start.to_string()];
            let mut cur = start.to_string();
            while let Some(Some(p)) = parent.get(&cur) {
                if chain.contains(p) || chain.len() > 64 {
                    return None;
                }
                chain.push(p.clone());
                cur = p.clone();
            }
            chain.reverse();
            Some(format!("/{}", chain.join("/")))
        };
        for it in items
            .iter_mut()
            .filter(|i| i.schema.plural == "organisationUnits" && i.errors.is_empty())
        {
            match path_of(&it.uid) {
                Some(path) => {
                    let level = path.matches('/').count();
                    it.obj.insert("path".into(), Value::from(path));
                    it.obj.insert("level".into(), Value::from(level));
                }
                None => {
                    let e = err(
                        it.schema,
                        &it.uid,
                        "E4000",
                        "Organisation unit hierarchy contains a cycle".into(),
                        Some("parent"),
                    );
                    it.errors.push(e);
                }
            }
        }
        let in_pkg: HashSet<&str> = items
            .iter()
            .filter(|i| i.schema.plural == "organisationUnits")
            .map(|i| i.uid.as_str())
            .collect();
        for (id, o) in snap.objects("organisationUnits") {
            if in_pkg.contains(id.as_str()) {
                continue;
            }
            if let Some(path) = path_of(id) {
                if o.get("path").and_then(Value::as_str) != Some(path.as_str()) {
                    let mut o = o.clone();
                    let level = path.matches('/').count();
                    o.insert("path".into(), Value::from(path));
                    o.insert("level".into(), Value::from(level));
                    moved.push((id.clone(), o));
                }
            }
        }
    }

    let any_error = items.iter().any(|i| !i.errors.is_empty());
    let ok = !(any_error && params.atomic);
    let mut by_type: BTreeMap<usize, TypeReport> = BTreeMap::new();
    for it in &items {
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
            tr.object_reports.push(ObjectReport {
                klass: it.schema.klass.to_string(),
                index: it.index,
                uid: Some(it.uid.clone()),
                display_name: it
                    .obj
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                error_reports: it.errors.clone(),
            });
        }
    }
    let status = if !any_error {
        ImportStatus::Ok
    } else if params.atomic {
        ImportStatus::Error
    } else {
        ImportStatus::Warning
    };
    let report = ImportReport::new(status, by_type.into_values().collect());
    Ok(Plan {
        items,
        strategy: params.strategy,
        moved,
        report,
        ok,
    })
}

/// One prepared write.
enum Write {
    Put {
        key: String,
        body: Value,
    },
    Delete {
        key: String,
    },
    PutUser {
        uid: String,
        user: Value,
        password: Option<String>,
        username: String,
    },
    DeleteUser {
        uid: String,
        username: String,
    },
}

/// Checks and, unless told only to validate or the check failed atomically, writes `package`.
/// Returns the import report (status ERROR means nothing was written).
pub async fn import(
    svc: &MetadataService,
    package: &Value,
    params: ImportParams,
) -> Result<ImportReport, ApiError> {
    let _guard = svc.write_lock.lock().await;
    let snap = svc.snapshot()?;
    let plan = check(&snap, package, params)?;
    if !plan.ok || params.validate_only {
        return Ok(plan.report);
    }
    let mut writes = Vec::new();
    for it in plan.items.into_iter().filter(|i| i.errors.is_empty()) {
        let plural = it.schema.plural;
        if plan.strategy == ImportStrategy::Delete {
            if plural == "users" {
                let username = snap
                    .get("users", &it.uid)
                    .and_then(|u| u.get("username"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                writes.push(Write::DeleteUser {
                    uid: it.uid,
                    username,
                });
            } else {
                writes.push(Write::Delete {
                    key: format!("{plural}/{}", it.uid),
                });
            }
            continue;
        }
        let mut obj = it.obj;
        for k in COMPUTED {
            obj.remove(*k);
        }
        if let Some(u) = it.user {
            obj.remove("password");
            if let Some(Value::Object(c)) = obj.get_mut("userCredentials") {
                c.remove("password");
            }
            // Normalise to the 2.42 shape.
            obj.insert("username".into(), Value::from(u.username.clone()));
            obj.insert("disabled".into(), Value::Bool(u.disabled));
            if !obj.contains_key("userRoles") {
                let roles: Vec<Value> = u
                    .user_roles
                    .iter()
                    .map(|r| serde_json::json!({"id": r}))
                    .collect();
                obj.insert("userRoles".into(), Value::Array(roles));
            }
            obj.remove("userCredentials");
            writes.push(Write::PutUser {
                uid: it.uid,
                user: Value::Object(obj),
                password: u.password,
                username: u.username,
            });
        } else {
            writes.push(Write::Put {
                key: format!("{plural}/{}", it.uid),
                body: Value::Object(obj),
            });
        }
    }
    for (id, mut o) in plan.moved {
        for k in COMPUTED {
            o.remove(*k);
        }
        o.remove("created");
        writes.push(Write::Put {
            key: format!("organisationUnits/{id}"),
            body: Value::Object(o),
        });
    }
    // Hash new passwords off the async threads; keep an existing hash the password still matches
    // so that re-importing the same package changes nothing. A user without a password keeps
    // the stored hash unless the package says the password changed since (national's
    // `passwordLastUpdated`): then the next login has to be checked where it changed.
    let store = svc.store().clone();
    let existing: HashMap<String, Option<String>> = {
        let read = store.read()?;
        let mut m = HashMap::new();
        for w in &writes {
            if let Write::PutUser { uid, user, .. } = w {
                let old = read
                    .get(Collection::USERS, uid)?
                    .filter(|r| !r.deleted)
                    .and_then(|r| r.json::<StoredUser>().ok());
                let changed_at = |u: &Value| u.get("passwordLastUpdated").cloned();
                let h = old.and_then(|s| {
                    let was = changed_at(&s.user);
                    let moved = was.is_some() && was != changed_at(user);
                    s.password_hash.filter(|_| !moved)
                });
                m.insert(uid.clone(), h);
            }
        }
        m
    };
    let writes =
        tokio::task::spawn_blocking(move || -> Result<Vec<(Write, Option<String>)>, ApiError> {
            let mut out = Vec::new();
            for w in writes {
                let hash = match &w {
                    Write::PutUser { uid, password, .. } => {
                        let old = existing.get(uid).cloned().flatten();
                        match (password, old) {
                            (Some(p), Some(h)) if auth::verify_password(p.as_bytes(), &h) => {
                                Some(h)
                            }
                            (Some(p), _) => Some(auth::hash_password(p)?),
                            (None, old) => old,
                        }
                    }
                    _ => None,
                };
                out.push((w, hash));
            }
            Ok(out)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("import task failed: {e}")))??;

    let written = store
        .write(move |ctx| -> Result<u64, clinicbox_store::StoreError> {
            let mut written = 0u64;
            for (w, hash) in writes {
                match w {
                    Write::Put { key, body } => {
                        let bytes = serde_json::to_vec(&body).map_err(|source| {
                            clinicbox_store::StoreError::Json {
                                collection: Collection::METADATA.name().into(),
                                key: key.clone(),
                                source,
                            }
                        })?;
                        let same = ctx
                            .get(Collection::METADATA, &key)?
                            .is_some_and(|r| !r.deleted && r.body == bytes);
                        if !same {
                            ctx.put(Collection::METADATA, &key, bytes)?;
                            written += 1;
                        }
                    }
                    Write::Delete { key } => {
                        written += u64::from(ctx.delete(Collection::METADATA, &key)?);
                    }
                    Write::PutUser {
                        uid,
                        user,
                        username,
                        ..
                    } => {
                        let stored = StoredUser {
                            user,
                            password_hash: hash,
                        };
                        let bytes = serde_json::to_vec(&stored).map_err(|source| {
                            clinicbox_store::StoreError::Json {
                                collection: Collection::USERS.name().into(),
                                key: uid.clone(),
                                source,
                            }
                        })?;
                        let old = ctx.get(Collection::USERS, &uid)?;
                        if let Some(old_user) = old
                            .as_ref()
                            .filter(|r| !r.deleted)
                            .and_then(|r| r.json::<StoredUser>().ok())
                        {
                            if let Some(old_name) =
                                old_user.user.get("username").and_then(Value::as_str)
                            {
                                if old_name != username {
                                    ctx.index_remove(crate::users::USERNAME_INDEX, old_name, &uid);
                                }
                            }
                        }
                        if !old.is_some_and(|r| !r.deleted && r.body == bytes) {
                            ctx.put(Collection::USERS, &uid, bytes)?;
                            ctx.index_add(crate::users::USERNAME_INDEX, &username, &uid)?;
                            written += 1;
                        }
                    }
                    Write::DeleteUser { uid, username } => {
                        written += u64::from(ctx.delete(Collection::USERS, &uid)?);
                        ctx.index_remove(crate::users::USERNAME_INDEX, &username, &uid);
                    }
                }
            }
            bump_revision(ctx)?;
            Ok(written)
        })
        .await
        .map_err(|e| e.flatten())?
        .value;
    tracing::info!(
        created = plan.report.stats.created,
        updated = plan.report.stats.updated,
        deleted = plan.report.stats.deleted,
        ignored = plan.report.stats.ignored,
        "metadata imported"
    );
    let mut report = plan.report;
    report.written = written;
    Ok(report)
}
