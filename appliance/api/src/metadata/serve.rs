//! Serving metadata: `GET /api/<type>` and `/api/<type>/<uid>` for every supported type, with
//! visibility (sharing and org-unit scope), per-user computed properties (`access`, org-unit
//! `programs`/`dataSets`/`ancestors`/`children`), the `fields` and `filter` engines, `order` and
//! offset paging with a stable order; plus `categoryOptions/orgUnits`, `icons` and the
//! `GET /api/metadata` export.

use std::cmp::Ordering;
use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use clinicbox_dhis2::Access;
use clinicbox_dhis2::schema::{self, Schema};
use serde_json::{Map, Value, json};

use crate::ApiState;
use crate::error::{ApiError, ApiResult, json_response};
use crate::fields::{FieldList, Resolver, project};
use crate::filter::Filters;
use crate::metadata::{Snapshot, ref_ids};
use crate::query::Query;
use crate::scope::AuthUser;

/// Reads metadata as one user sees it.
pub struct View<'a> {
    pub user: &'a AuthUser,
    pub snap: &'a Snapshot,
}

impl<'a> View<'a> {
    pub fn new(user: &'a AuthUser) -> Self {
        View {
            user,
            snap: &user.snapshot,
        }
    }

    /// Whether the user may see this object at all.
    pub fn visible(&self, s: &Schema, id: &str, obj: &Map<String, Value>) -> bool {
        if self.user.is_superuser() {
            return true;
        }
        match s.plural {
            "organisationUnits" => obj
                .get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| self.user.scope.can_see_org_unit(p)),
            "users" => id == self.user.uid || self.user.has_authority("F_USER_VIEW"),
            _ if s.shareable => self.user.access_to(obj).read,
            _ => true,
        }
    }

    /// The object with the properties computed for this user.
    pub fn enrich(&self, s: &Schema, id: &str, obj: &Map<String, Value>) -> Map<String, Value> {
        let mut o = obj.clone();
        let access = if s.shareable {
            self.user.access_to(obj)
        } else if self.user.is_admin() {
            Access::all()
        } else {
            let mut a = Access::from_grant(clinicbox_dhis2::AccessString::NONE);
            a.read = true;
            a
        };
        o.insert(
            "access".into(),
            serde_json::to_value(access).unwrap_or(Value::Null),
        );
        o.insert(
            "href".into(),
            Value::from(format!("/api/{}/{id}", s.plural)),
        );
        if s.plural == "organisationUnits" {
            let refs =
                |ids: &[String]| Value::Array(ids.iter().map(|i| json!({"id": i})).collect());
            let ancestors: Vec<String> = o
                .get("path")
                .and_then(Value::as_str)
                .map(|p| {
                    p.split('/')
                        .filter(|x| !x.is_empty() && *x != id)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            o.insert("ancestors".into(), refs(&ancestors));
            o.insert("programs".into(), refs(self.snap.programs_of_org_unit(id)));
            o.insert("dataSets".into(), refs(self.snap.data_sets_of_org_unit(id)));
            o.insert("children".into(), refs(self.snap.children_of_org_unit(id)));
            o.insert(
                "leaf".into(),
                Value::Bool(self.snap.children_of_org_unit(id).is_empty()),
            );
        }
        if s.plural == "users" {
            o.remove("password");
        }
        o
    }
}

impl Resolver for View<'_> {
    fn resolve(&self, property: &str, reference: &Map<String, Value>) -> Option<Value> {
        let plural = schema::target_of_property(property)?;
        let s = schema::by_plural(plural)?;
        let id = reference.get("id")?.as_str()?;
        let obj = self.snap.get(plural, id)?;
        // Nested objects are expanded as DHIS2 does, without a second sharing check: the SDK
        // reads e.g. a stage's data elements through the stage.
        Some(Value::Object(self.enrich(s, id, obj)))
    }
}

/// A parsed `order` parameter.
#[derive(Debug, Clone)]
struct Order(Vec<(String, bool, bool)>); // (property, descending, case-insensitive)

impl Order {
    fn parse(q: &Query, default: &str) -> Result<Order, ApiError> {
        let raw = q.list("order");
        let items: Vec<String> = if raw.is_empty() {
            vec![default.to_string()]
        } else {
            raw
        };
        let mut out = Vec::new();
        for it in items {
            let (p, dir) = it.split_once(':').unwrap_or((&it, "asc"));
            let (desc, ci) = match dir.to_ascii_lowercase().as_str() {
                "asc" => (false, false),
                "desc" => (true, false),
                "iasc" => (false, true),
                "idesc" => (true, true),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "Invalid order {it:?}: direction must be asc, desc, iasc or idesc"
                    )));
                }
            };
            out.push((p.to_string(), desc, ci));
        }
        Ok(Order(out))
    }

    fn cmp(&self, a: &Map<String, Value>, b: &Map<String, Value>) -> Ordering {
        for (p, desc, ci) in &self.0 {
            let o = cmp_values(a.get(p), b.get(p), *ci);
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        // Always end on the id: a total, stable order for offset paging.
        cmp_values(a.get("id"), b.get("id"), false)
    }
}

fn cmp_values(a: Option<&Value>, b: Option<&Value>, ci: bool) -> Ordering {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        // Missing values sort last, as in DHIS2 (nulls last).
        (None | Some(Value::Null), _) => Ordering::Greater,
        (_, None | Some(Value::Null)) => Ordering::Less,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) if ci => {
            x.to_lowercase().cmp(&y.to_lowercase())
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// Everything a list request asks for.
pub struct ListRequest {
    pub fields: FieldList,
    pub filters: Filters,
    pub paging: bool,
    pub page: usize,
    pub page_size: usize,
    order: Order,
}

impl ListRequest {
    pub fn parse(s: &Schema, q: &Query, default_fields: &str) -> Result<ListRequest, ApiError> {
        let fields_raw: Vec<&str> = q.all("fields").filter(|f| !f.is_empty()).collect();
        let fields = FieldList::parse(&if fields_raw.is_empty() {
            default_fields.to_string()
        } else {
            fields_raw.join(",")
        })?;
        let default_order = if s.plural == "options" {
            "sortOrder"
        } else {
            "id"
        };
        Ok(ListRequest {
            fields,
            filters: Filters::parse(q.all("filter"), q.get("rootJunction"))?,
            paging: q.bool("paging", true)?,
            page: q.positive("page", 1)?,
            page_size: q.positive("pageSize", 50)?,
            order: Order::parse(q, default_order)?,
        })
    }
}

/// Lists visible objects of a type that pass `extra` and the request's filters, ordered.
pub fn select(
    view: &View<'_>,
    s: &Schema,
    req: &ListRequest,
    extra: &dyn Fn(&str, &Map<String, Value>) -> bool,
) -> Vec<Map<String, Value>> {
    let candidates: Vec<(&String, &Map<String, Value>)> = match req.filters.id_candidates() {
        Some(ids) => {
            let ids: HashSet<String> = ids.into_iter().collect();
            view.snap
                .objects(s.plural)
                .filter(|(id, _)| ids.contains(id.as_str()))
                .collect()
        }
        None => view.snap.objects(s.plural).collect(),
    };
    let mut out: Vec<Map<String, Value>> = candidates
        .into_iter()
        .filter(|(id, o)| view.visible(s, id, o) && extra(id, o))
        .map(|(id, o)| view.enrich(s, id, o))
        .filter(|o| req.filters.matches(o, view))
        .collect();
    out.sort_by(|a, b| req.order.cmp(a, b));
    out
}

/// Pages and projects a selection into DHIS2's list shape.
pub fn list_body(
    view: &View<'_>,
    key: &str,
    req: &ListRequest,
    all: Vec<Map<String, Value>>,
) -> Value {
    let total = all.len();
    let (start, end) = if req.paging {
        let start = (req.page - 1).saturating_mul(req.page_size).min(total);
        (start, start.saturating_add(req.page_size).min(total))
    } else {
        (0, total)
    };
    let items: Vec<Value> = all[start..end]
        .iter()
        .map(|o| project(o, &req.fields, view))
        .collect();
    let mut body = Map::new();
    if req.paging {
        let page_count = total.div_ceil(req.page_size).max(1);
        body.insert(
            "pager".into(),
            json!({"page": req.page, "pageCount": page_count, "total": total, "pageSize": req.page_size}),
        );
    }
    body.insert(key.into(), Value::Array(items));
    Value::Object(body)
}

/// `GET /api/<type>`.
pub async fn list(
    s: &'static Schema,
    State(_state): State<ApiState>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let view = View::new(&user);
    let req = ListRequest::parse(s, &q, "id,displayName")?;
    let snap = view.snap;
    // Endpoint-specific parameters DHIS2 supports and the SDK uses.
    let data_set_elements: Option<HashSet<String>> = match (s.plural, q.get("dataSet")) {
        ("validationRules", Some(ds)) => Some(
            snap.get("dataSets", ds)
                .map(|d| {
                    d.get("dataSetElements")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .flat_map(|e| ref_ids(e.get("dataElement")))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .unwrap_or_default(),
        ),
        _ => None,
    };
    let user_only = s.plural == "organisationUnits" && q.bool("userOnly", false)?;
    let capture: HashSet<&str> = user.scope.capture.iter().map(|o| o.uid.as_str()).collect();
    let extra = |id: &str, o: &Map<String, Value>| {
        if user_only && !capture.contains(id) {
            return false;
        }
        match &data_set_elements {
            Some(des) => rule_uses_any(o, des),
            None => true,
        }
    };
    let all = select(&view, s, &req, &extra);
    Ok(json_response(
        StatusCode::OK,
        &list_body(&view, s.plural, &req, all),
    ))
}

/// Whether a validation rule's expressions mention any of `des` (`#{de}` or `#{de.coc}`).
fn rule_uses_any(rule: &Map<String, Value>, des: &HashSet<String>) -> bool {
    ["leftSide", "rightSide"].iter().any(|side| {
        rule.get(*side)
            .and_then(|s| s.get("expression"))
            .and_then(Value::as_str)
            .is_some_and(|e| {
                e.split("#{").skip(1).any(|rest| {
                    let id: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect();
                    des.contains(&id)
                })
            })
    })
}

/// `GET /api/<type>/<uid>`.
pub async fn get_one(
    s: &'static Schema,
    State(_state): State<ApiState>,
    Path(uid): Path<String>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let view = View::new(&user);
    let not_found = || {
        let mut name = s.singular.to_string();
        if let Some(first) = name.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        ApiError::NotFound(format!("{name} with id {uid} could not be found."))
    };
    let obj = view.snap.get(s.plural, &uid).ok_or_else(not_found)?;
    if !view.visible(s, &uid, obj) {
        return Err(not_found());
    }
    let enriched = view.enrich(s, &uid, obj);
    let filters = Filters::parse(q.all("filter"), q.get("rootJunction"))?;
    if !filters.matches(&enriched, &view) {
        return Err(not_found());
    }
    let fields_raw: Vec<&str> = q.all("fields").filter(|f| !f.is_empty()).collect();
    let fields = FieldList::parse(&if fields_raw.is_empty() {
        "*".to_string()
    } else {
        fields_raw.join(",")
    })?;
    Ok(json_response(
        StatusCode::OK,
        &project(&enriched, &fields, &view),
    ))
}

/// `GET /api/categoryOptions/orgUnits?categoryOptions=a,b`: `{option: [orgUnit…]}` for options
/// restricted to org units; an option left out is not restricted (≥2.40 semantics).
pub async fn category_option_org_units(user: AuthUser, q: Query) -> ApiResult<Response> {
    let view = View::new(&user);
    let Some(s) = schema::by_plural("categoryOptions") else {
        return Err(ApiError::Internal("categoryOptions schema missing".into()));
    };
    let mut out = Map::new();
    for id in q.list("categoryOptions") {
        let Some(o) = view.snap.get("categoryOptions", &id) else {
            continue;
        };
        if !view.visible(s, &id, o) {
            continue;
        }
        let ous = ref_ids(o.get("organisationUnits"));
        if !ous.is_empty() {
            out.insert(id, Value::Array(ous.into_iter().map(Value::from).collect()));
        }
    }
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}

/// `GET /api/icons`: the box serves no custom icons yet; an empty list keeps the SDK's optional
/// icon step quiet.
pub async fn icons(_user: AuthUser, q: Query) -> ApiResult<Response> {
    let mut body = Map::new();
    if q.bool("paging", true)? {
        body.insert(
            "pager".into(),
            json!({"page":1,"pageCount":1,"total":0,"pageSize":50}),
        );
    }
    body.insert("icons".into(), json!([]));
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

/// `GET /api/metadata?<type>=true&<type>:fields=…&<type>:filter=…`: a multi-type export of what
/// the caller can see (the SDK's SMS module asks for ids only).
pub async fn export(user: AuthUser, q: Query) -> ApiResult<Response> {
    let view = View::new(&user);
    let mut body = Map::new();
    let global_fields = q.get("fields").unwrap_or(":owner").to_string();
    let all_types = q.bool("all", false)?;
    for s in schema::SCHEMAS {
        let p = s.plural;
        let wanted = all_types
            || q.bool(p, false).unwrap_or(false)
            || q.get(&format!("{p}:fields")).is_some()
            || q.get(&format!("{p}:filter")).is_some();
        if !wanted {
            continue;
        }
        let fields = q
            .get(&format!("{p}:fields"))
            .map_or_else(|| global_fields.clone(), str::to_string);
        let sub = Query::parse(&format!(
            "fields={}&paging=false{}",
            pct(&fields),
            q.all(&format!("{p}:filter"))
                .map(|f| format!("&filter={}", pct(f)))
                .collect::<String>()
        ));
        let req = ListRequest::parse(s, &sub, ":owner")?;
        let all = select(&view, s, &req, &|_, _| true);
        if let Value::Object(m) = list_body(&view, p, &req, all) {
            body.extend(m);
        }
    }
    body.insert(
        "system".into(),
        json!({"version": clinicbox_dhis2::DHIS2_VERSION}),
    );
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

fn pct(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
