//! The metadata pull: what the box's org units need from national, and nothing else.
//!
//! Sources, each a conditional GET (`If-None-Match` with the ETag the box kept):
//! - the org-unit subtree of each root (the sync account's org units, or `[uplink] org_units`),
//!   with the programs and data sets assigned there, and the roots' ancestors (so paths match
//!   national's);
//! - org-unit levels; the users under each root, their roles and groups;
//! - each assigned program's and data set's dependency export.
//!
//! DHIS2 stamps a dependency export with the time it was made, so its ETag never repeats;
//! the exports are read whole only on the first pull, when the assignments changed, or when
//! `/api/metadata?filter=lastUpdated:ge:…` (a few hundred bytes) names a changed object the
//! box does not hold. When every changed object is one the box holds, only those are fetched,
//! by id (`/api/metadata?<type>:filter=id:in:[…]`), unless they name something new.
//! Deletions come from `/api/deletedObjects` since the same watermark (national's clock).

use std::collections::{BTreeMap, HashSet};

use clinicbox_control::pull::{Deletion, MetadataPull, PullOutcome, PullState, Source};
use clinicbox_dhis2::schema;
use serde_json::Value;

use crate::UplinkError;
use crate::local::LocalBox;
use crate::national::{Fetched, National, NationalInfo};
use crate::scope::Package;

/// The `named` key of an export source: every id it carried, so a later change can be fetched
/// by id when it names nothing new.
const KNOWN: &str = "known";
/// The user fields the box keeps (never a password: DHIS2 exports none).
const USER_FIELDS: &str = "id,username,firstName,surname,email,phoneNumber,disabled,passwordLastUpdated,userRoles[id],userGroups[id],organisationUnits[id],dataViewOrganisationUnits[id],teiSearchOrganisationUnits[id]";
/// Collections a change probe asks about: what dependency exports carry.
const PROBED: &[&str] = &[
    "programs",
    "programStages",
    "programStageSections",
    "programSections",
    "programRules",
    "programRuleVariables",
    "programRuleActions",
    "programIndicators",
    "dataSets",
    "sections",
    "dataElements",
    "trackedEntityTypes",
    "trackedEntityAttributes",
    "optionSets",
    "options",
    "optionGroups",
    "categoryCombos",
    "categories",
    "categoryOptions",
    "categoryOptionCombos",
    "legendSets",
    "relationshipTypes",
];

/// What one pull did, for the round's summary.
#[derive(Debug, Clone, Default)]
pub struct PullSummary {
    pub outcome: PullOutcome,
    /// Sources national answered in full, and with 304.
    pub fetched: u32,
    pub not_modified: u32,
}

/// One source's answer, fitted: objects to import and the ids it named.
#[derive(Default)]
struct Part {
    objects: Vec<(String, Vec<Value>)>,
    named: BTreeMap<String, Vec<String>>,
}

struct Puller<'a> {
    national: &'a National,
    old: PullState,
    new: PullState,
    package: Package,
    summary: PullSummary,
}

/// The org units the box serves: `[uplink] org_units`, or the sync account's at national.
pub async fn roots(national: &National, configured: &[String]) -> Result<Vec<String>, UplinkError> {
    let roots = if configured.is_empty() {
        national.my_org_units().await?
    } else {
        configured.to_vec()
    };
    if roots.is_empty() {
        return Err(UplinkError::Config(
            "the sync account has no org units at national and [uplink] org_units is empty: nothing to pull".into(),
        ));
    }
    Ok(roots)
}

/// Pulls the box's metadata and users from national and has `serve` apply them.
pub async fn metadata(
    local: &LocalBox,
    national: &National,
    info: &NationalInfo,
    roots: &[String],
) -> Result<PullSummary, UplinkError> {
    let mut p = Puller {
        national,
        old: local.pull_state().await?,
        new: PullState::default(),
        package: Package::default(),
        summary: PullSummary::default(),
    };
    p.org_units(roots).await?;
    p.users(roots).await?;
    p.dependencies().await?;
    let deletions = p.deletions().await?;
    let org_units: HashSet<String> = p.new.named("organisationUnits").into_iter().collect();
    let groups: HashSet<String> = p.new.named("userGroups").into_iter().collect();
    p.new.watermark = info.server_date.clone();
    p.new.applied_ms = p.old.applied_ms;
    let pull = MetadataPull {
        package: std::mem::take(&mut p.package).fitted(&org_units, &groups),
        deletions,
        state: p.new,
    };
    p.summary.outcome = local.apply_metadata(&pull).await?;
    Ok(p.summary)
}

impl Puller<'_> {
    /// Reads one source: its objects go into the package when national sent them; a 304
    /// carries the ids the last answer named.
    async fn source(
        &mut self,
        path: &str,
        part: impl FnOnce(&Value) -> Part,
    ) -> Result<bool, UplinkError> {
        let old = self.old.sources.get(path).cloned();
        let etag = old.as_ref().and_then(|s| s.etag.clone());
        match self.national.fetch(path, etag.as_deref()).await? {
            Fetched::NotModified => {
                let old = old.ok_or_else(|| {
                    UplinkError::Protocol(format!("{path} answered 304 to a plain request"))
                })?;
                self.summary.not_modified += 1;
                self.new.sources.insert(path.to_string(), old);
                Ok(false)
            }
            Fetched::Body { json, etag } => {
                let Part { objects, named } = part(&json);
                for (collection, list) in objects {
                    self.package.add(&collection, list);
                }
                self.summary.fetched += 1;
                self.new
                    .sources
                    .insert(path.to_string(), Source { etag, named });
                Ok(true)
            }
        }
    }

    /// The subtrees (with their assignments), the roots' ancestors and the levels.
    async fn org_units(&mut self, roots: &[String]) -> Result<(), UplinkError> {
        for root in roots {
            let path = format!(
                "/api/organisationUnits/{root}?includeDescendants=true&fields=:owner,programs[id],dataSets[id]&paging=false"
            );
            let root = root.clone();
            self.source(&path, |json| subtree(json, &root)).await?;
        }
        let ancestors = self.new.named("ancestors");
        if !ancestors.is_empty() {
            let path = format!(
                "/api/organisationUnits?filter=id:in:[{}]&fields=:owner&paging=false",
                ancestors.join(",")
            );
            self.source(&path, |json| listed(json, "organisationUnits"))
                .await?;
        }
        self.source(
            "/api/organisationUnitLevels?fields=:owner&paging=false",
            |json| listed(json, "organisationUnitLevels"),
        )
        .await?;
        Ok(())
    }

    /// The users under each root, then the roles and groups they name.
    async fn users(&mut self, roots: &[String]) -> Result<(), UplinkError> {
        for root in roots {
            let path = format!(
                "/api/users?filter=organisationUnits.path:like:{root}&fields={USER_FIELDS}&paging=false"
            );
            self.source(&path, |json| {
                let mut part = listed(json, "users");
                for (field, into) in [("userRoles", "userRoles"), ("userGroups", "userGroups")] {
                    let ids = json
                        .get("users")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .flat_map(|u| ref_ids(u.get(field)))
                        .collect();
                    part.named.insert(format!("{into}Named"), ids);
                }
                part
            })
            .await?;
        }
        for (named, collection, fields) in [
            ("userRolesNamed", "userRoles", ":owner"),
            ("userGroupsNamed", "userGroups", "id,name,code,sharing"),
        ] {
            let ids = self.new.named(named);
            if ids.is_empty() {
                continue;
            }
            let path = format!(
                "/api/{collection}?filter=id:in:[{}]&fields={fields}&paging=false",
                ids.join(",")
            );
            self.source(&path, |json| listed(json, collection)).await?;
        }
        Ok(())
    }

    /// The dependency exports of the assigned programs and data sets: whole on the first pull
    /// and when the assignments changed; otherwise only the objects national changed since
    /// the last pull when they are all ones the box holds (else whole again).
    async fn dependencies(&mut self) -> Result<(), UplinkError> {
        let assigned = |s: &PullState| (s.named("programs"), s.named("dataSets"));
        let (programs, data_sets) = assigned(&self.new);
        let exports: Vec<String> = programs
            .iter()
            .map(|p| format!("/api/programs/{p}/metadata.json"))
            .chain(
                data_sets
                    .iter()
                    .map(|d| format!("/api/dataSets/{d}/metadata.json")),
            )
            .collect();
        let whole = match self.old.watermark.clone() {
            None => true,
            Some(_) if assigned(&self.old) != (programs.clone(), data_sets.clone()) => true,
            Some(_) if exports.iter().any(|p| !self.old.sources.contains_key(p)) => true,
            Some(w) => !self.changed_objects(&w).await?,
        };
        for path in exports {
            match self.old.sources.get(&path) {
                Some(old) if !whole => {
                    self.new.sources.insert(path, old.clone());
                }
                _ => {
                    self.source(&path, |json| Part {
                        objects: collections(json),
                        named: BTreeMap::from([(KNOWN.to_string(), all_ids(json))]),
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Adds what national changed since `watermark`, fetched by id, when every changed object
    /// is one the box's exports hold and names only such objects. False otherwise: the
    /// exports are read whole instead.
    async fn changed_objects(&mut self, watermark: &str) -> Result<bool, UplinkError> {
        let types: String = PROBED.iter().map(|t| format!("&{t}=true")).collect();
        let path = format!("/api/metadata?fields=id&filter=lastUpdated:ge:{watermark}{types}");
        let Fetched::Body { json, .. } = self.national.fetch(&path, None).await? else {
            return Err(UplinkError::Protocol(format!("{path} answered 304")));
        };
        let known: HashSet<String> = self.old.named(KNOWN).into_iter().collect();
        let mut query = String::new();
        for t in PROBED {
            let ids: Vec<&str> = json
                .get(*t)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|o| o.get("id").and_then(Value::as_str))
                .collect();
            // A new object (a rule, a stage) may belong to the box's programs without any
            // object the box holds naming it: only the whole exports can tell.
            if ids.iter().any(|id| !known.contains(*id)) {
                return Ok(false);
            }
            if !ids.is_empty() {
                query.push_str(&format!("&{t}=true&{t}:filter=id:in:[{}]", ids.join(",")));
            }
        }
        if query.is_empty() {
            return Ok(true);
        }
        let path = format!("/api/metadata?fields=:owner{query}");
        let Fetched::Body { json, .. } = self.national.fetch(&path, None).await? else {
            return Err(UplinkError::Protocol(format!("{path} answered 304")));
        };
        let fetched: HashSet<String> = all_ids(&json).into_iter().collect();
        if fetched.iter().any(|id| !known.contains(id)) {
            return Ok(false);
        }
        for (collection, list) in collections(&json) {
            self.package.add(&collection, list);
        }
        self.summary.fetched += 1;
        Ok(true)
    }

    /// What national deleted since the last applied pull.
    async fn deletions(&mut self) -> Result<Vec<Deletion>, UplinkError> {
        let Some(w) = self.old.watermark.clone() else {
            return Ok(Vec::new());
        };
        let path = format!("/api/deletedObjects?deletedAt={w}&fields=klass,uid&paging=false");
        let Fetched::Body { json, .. } = self.national.fetch(&path, None).await? else {
            return Err(UplinkError::Protocol(format!("{path} answered 304")));
        };
        Ok(json
            .get("deletedObjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let klass = d.get("klass")?.as_str()?;
                let klass = klass.rsplit('.').next().unwrap_or(klass);
                let s = schema::SCHEMAS
                    .iter()
                    .find(|s| s.klass.rsplit('.').next() == Some(klass))?;
                Some(Deletion {
                    collection: s.plural.to_string(),
                    uid: d.get("uid")?.as_str()?.to_string(),
                })
            })
            .collect())
    }
}

/// A subtree answer: its org units (assignments moved out of them), and what they name.
fn subtree(json: &Value, root: &str) -> Part {
    let mut part = Part::default();
    let mut ous = Vec::new();
    let (mut programs, mut data_sets, mut ancestors) = (Vec::new(), Vec::new(), Vec::new());
    for o in json
        .get("organisationUnits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut o = o.clone();
        if let Some(m) = o.as_object_mut() {
            programs.extend(ref_ids(m.remove("programs").as_ref()));
            data_sets.extend(ref_ids(m.remove("dataSets").as_ref()));
            if m.get("id").and_then(Value::as_str) == Some(root) {
                let path = m.get("path").and_then(Value::as_str).unwrap_or("");
                ancestors.extend(
                    path.split('/')
                        .filter(|s| !s.is_empty() && *s != root)
                        .map(str::to_string),
                );
            }
        }
        ous.push(o);
    }
    let ids = ous
        .iter()
        .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    part.named.insert("organisationUnits".into(), ids);
    part.named.insert("ancestors".into(), ancestors);
    part.named.insert("programs".into(), programs);
    part.named.insert("dataSets".into(), data_sets);
    part.objects.push(("organisationUnits".into(), ous));
    part
}

/// A list answer `{collection: […]}`: its objects, and their ids.
fn listed(json: &Value, collection: &str) -> Part {
    let list: Vec<Value> = json
        .get(collection)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ids = list
        .iter()
        .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    Part {
        objects: vec![(collection.to_string(), list)],
        named: BTreeMap::from([(collection.to_string(), ids)]),
    }
}

/// The collections of a metadata export (`system` and other non-lists left out).
fn collections(json: &Value) -> Vec<(String, Vec<Value>)> {
    json.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_array()?.clone())))
        .collect()
}

/// Every id anywhere in `json`: the objects of an export and everything they name.
fn all_ids(json: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    let mut stack = vec![json];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(id)) = m.get("id") {
                    ids.push(id.clone());
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

fn ref_ids(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}
