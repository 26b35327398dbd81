//! DHIS2's `filter` parameter: `path:op[:value]`, dotted paths through references and
//! collections (`program.id`, `access.data.read`, `categories.id`), several filters ANDed
//! (or ORed with `rootJunction=OR`).

use clinicbox_dhis2::Dhis2Timestamp;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::fields::Resolver;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Like,
    NotLike,
    StartsWith,
    NotStartsWith,
    EndsWith,
    NotEndsWith,
    ILike,
    NotILike,
    IStartsWith,
    NotIStartsWith,
    IEndsWith,
    NotIEndsWith,
    IEq,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Null,
    NotNull,
    Empty,
    NotEmpty,
    Token,
    NotToken,
}

/// One parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub path: Vec<String>,
    pub op: Op,
    pub values: Vec<String>,
}

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, ApiError> {
        let bad = |why: &str| ApiError::BadRequest(format!("Invalid filter {s:?}: {why}"));
        let (path, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected path:operator:value"))?;
        let (op_s, value) = match rest.split_once(':') {
            Some((o, v)) => (o, Some(v)),
            None => (rest, None),
        };
        let op = match op_s {
            "eq" => Op::Eq,
            "!eq" | "ne" | "neq" => Op::Ne,
            "ieq" => Op::IEq,
            "like" => Op::Like,
            "!like" => Op::NotLike,
            "$like" => Op::StartsWith,
            "!$like" => Op::NotStartsWith,
            "like$" => Op::EndsWith,
            "!like$" => Op::NotEndsWith,
            "ilike" => Op::ILike,
            "!ilike" => Op::NotILike,
            "$ilike" | "startsWith" => Op::IStartsWith,
            "!$ilike" | "!startsWith" => Op::NotIStartsWith,
            "ilike$" | "endsWith" => Op::IEndsWith,
            "!ilike$" | "!endsWith" => Op::NotIEndsWith,
            "gt" => Op::Gt,
            "ge" | "gte" => Op::Ge,
            "lt" => Op::Lt,
            "le" | "lte" => Op::Le,
            "in" => Op::In,
            "!in" => Op::NotIn,
            "null" => Op::Null,
            "!null" => Op::NotNull,
            "empty" => Op::Empty,
            "!empty" => Op::NotEmpty,
            "token" => Op::Token,
            "!token" => Op::NotToken,
            _ => return Err(bad("unknown operator")),
        };
        let needs_value = !matches!(op, Op::Null | Op::NotNull | Op::Empty | Op::NotEmpty);
        let values = match (op, value) {
            (Op::In | Op::NotIn, Some(v)) => {
                let inner = v
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .unwrap_or(v);
                inner
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            (_, Some(v)) => vec![v.to_string()],
            (_, None) if needs_value => return Err(bad("missing value")),
            (_, None) => Vec::new(),
        };
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(bad("empty property path"));
        }
        Ok(Filter {
            path: path.split('.').map(str::to_string).collect(),
            op,
            values,
        })
    }

    /// Whether `obj` passes this filter.
    pub fn matches(&self, obj: &Map<String, Value>, r: &dyn Resolver) -> bool {
        let mut found = Vec::new();
        collect_map(obj, &self.path, None, r, &mut found);
        self.test(&found)
    }

    fn test(&self, found: &[Value]) -> bool {
        let scalars: Vec<&Value> = found.iter().filter(|v| !v.is_null()).collect();
        let any =
            |f: &dyn Fn(&str) -> bool| scalars.iter().any(|v| as_text(v).is_some_and(|t| f(&t)));
        let first = self.values.first().map(String::as_str).unwrap_or("");
        let lower = first.to_lowercase();
        match self.op {
            Op::Eq => any(&|s| s == first),
            Op::Ne => !any(&|s| s == first),
            Op::IEq => any(&|s| s.to_lowercase() == lower),
            Op::Like => any(&|s| s.contains(first)),
            Op::NotLike => !any(&|s| s.contains(first)),
            Op::StartsWith => any(&|s| s.starts_with(first)),
            Op::NotStartsWith => !any(&|s| s.starts_with(first)),
            Op::EndsWith => any(&|s| s.ends_with(first)),
            Op::NotEndsWith => !any(&|s| s.ends_with(first)),
            Op::ILike => any(&|s| s.to_lowercase().contains(&lower)),
            Op::NotILike => !any(&|s| s.to_lowercase().contains(&lower)),
            Op::IStartsWith => any(&|s| s.to_lowercase().starts_with(&lower)),
            Op::NotIStartsWith => !any(&|s| s.to_lowercase().starts_with(&lower)),
            Op::IEndsWith => any(&|s| s.to_lowercase().ends_with(&lower)),
            Op::NotIEndsWith => !any(&|s| s.to_lowercase().ends_with(&lower)),
            Op::Token => any(&|s| tokens_match(s, first)),
            Op::NotToken => !any(&|s| tokens_match(s, first)),
            Op::Gt => any(&|s| compare(s, first).is_some_and(|o| o.is_gt())),
            Op::Ge => any(&|s| compare(s, first).is_some_and(|o| o.is_ge())),
            Op::Lt => any(&|s| compare(s, first).is_some_and(|o| o.is_lt())),
            Op::Le => any(&|s| compare(s, first).is_some_and(|o| o.is_le())),
            Op::In => any(&|s| self.values.iter().any(|v| v == s)),
            Op::NotIn => !any(&|s| self.values.iter().any(|v| v == s)),
            Op::Null => scalars.is_empty(),
            Op::NotNull => !scalars.is_empty(),
            Op::Empty => scalars.is_empty() || scalars.iter().all(|v| is_empty(v)),
            Op::NotEmpty => scalars.iter().any(|v| !is_empty(v)),
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

fn tokens_match(s: &str, query: &str) -> bool {
    let hay = s.to_lowercase();
    query
        .to_lowercase()
        .split_whitespace()
        .all(|t| hay.contains(t))
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        // A reference compares by its id (`program:eq:<uid>`).
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Orders two values as timestamps, numbers, or text, in that order of preference.
fn compare(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    if let (Ok(x), Ok(y)) = (
        Dhis2Timestamp::parse_lenient(a),
        Dhis2Timestamp::parse_lenient(b),
    ) {
        return Some(x.cmp(&y));
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.partial_cmp(&y);
    }
    Some(a.cmp(b))
}

/// Collects the values at `path`, flattening arrays and resolving `{id}` references whose next
/// property is not stored inline.
fn collect(v: &Value, path: &[String], prop: Option<&str>, r: &dyn Resolver, out: &mut Vec<Value>) {
    if path.is_empty() {
        match v {
            // An array at the end of the path: its elements are the candidates, but keep the
            // array itself for `empty`.
            Value::Array(items) if items.is_empty() => out.push(v.clone()),
            Value::Array(items) => out.extend(items.iter().cloned()),
            other => out.push(other.clone()),
        }
        return;
    }
    match v {
        Value::Array(items) => {
            for i in items {
                collect(i, path, prop, r, out);
            }
        }
        Value::Object(o) => collect_map(o, path, prop, r, out),
        _ => {}
    }
}

fn collect_map(
    o: &Map<String, Value>,
    path: &[String],
    prop: Option<&str>,
    r: &dyn Resolver,
    out: &mut Vec<Value>,
) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    match o.get(head) {
        Some(next) => collect(next, rest, Some(head), r, out),
        None => {
            if let (Some(p), true) = (prop, o.contains_key("id")) {
                if let Some(full) = r.resolve(p, o) {
                    if let Some(next) = full.get(head) {
                        collect(next, rest, Some(head), r, out);
                    }
                }
            }
        }
    }
}

/// A set of filters with their junction.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub filters: Vec<Filter>,
    pub or: bool,
}

impl Filters {
    pub fn parse<'a>(
        values: impl Iterator<Item = &'a str>,
        root_junction: Option<&str>,
    ) -> Result<Filters, ApiError> {
        let or = match root_junction {
            None => false,
            Some(j) if j.eq_ignore_ascii_case("AND") => false,
            Some(j) if j.eq_ignore_ascii_case("OR") => true,
            Some(j) => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid rootJunction {j:?}: expected AND or OR"
                )));
            }
        };
        Ok(Filters {
            filters: values
                .filter(|v| !v.is_empty())
                .map(Filter::parse)
                .collect::<Result<_, _>>()?,
            or,
        })
    }

    pub fn matches(&self, obj: &Map<String, Value>, r: &dyn Resolver) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        if self.or {
            self.filters.iter().any(|f| f.matches(obj, r))
        } else {
            self.filters.iter().all(|f| f.matches(obj, r))
        }
    }

    /// Values of an `id:eq`/`id:in` filter, when one is present (lets callers skip a scan).
    pub fn id_candidates(&self) -> Option<Vec<String>> {
        if self.or {
            return None;
        }
        self.filters.iter().find_map(|f| {
            (f.path.len() == 1 && f.path[0] == "id" && matches!(f.op, Op::Eq | Op::In))
                .then(|| f.values.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::NoResolve;
    use serde_json::json;

    fn o(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn m(f: &str, v: Value) -> bool {
        Filter::parse(f).unwrap().matches(&o(v), &NoResolve)
    }

    #[test]
    fn sdk_filters() {
        let p = json!({"id":"IpHINAT79UW","program":{"id":"p0000000001"},
            "access":{"read":true,"data":{"read":true,"write":false}},
            "categories":[{"id":"c0000000001"},{"id":"c0000000002"}],
            "path":"/root0000001/dist0000001/clin0000001","isDefault":true,
            "lastUpdated":"2024-03-01T10:00:00.000"});
        assert!(m("id:in:[x,IpHINAT79UW]", p.clone()));
        assert!(!m("id:in:[x,y]", p.clone()));
        assert!(m("program.id:in:[p0000000001]", p.clone()));
        assert!(m("program:eq:p0000000001", p.clone()));
        assert!(m("access.data.read:eq:true", p.clone()));
        assert!(!m("access.data.write:eq:true", p.clone()));
        assert!(m("categories.id:in:[c0000000002,zz]", p.clone()));
        assert!(m("path:like:dist0000001", p.clone()));
        assert!(!m("path:like:other", p.clone()));
        assert!(m("isDefault:eq:true", p.clone()));
        assert!(m("lastUpdated:gt:2024-02-29T23:59:59.999", p.clone()));
        assert!(!m("lastUpdated:gt:2024-03-01T10:00:00.000", p.clone()));
        assert!(m("lastUpdated:ge:2024-03-01", p.clone()));
    }

    #[test]
    fn string_and_null_operators() {
        let v = json!({"name":"Outpatient Visit","sortOrder":3,"code":null,"items":[]});
        assert!(m("name:ilike:patient", v.clone()));
        assert!(!m("name:like:patient visit", v.clone()));
        assert!(m("name:$like:Out", v.clone()));
        assert!(m("name:like$:Visit", v.clone()));
        assert!(m("name:!eq:Other", v.clone()));
        assert!(m("name:token:visit out", v.clone()));
        assert!(m("sortOrder:gt:2", v.clone()));
        assert!(m("sortOrder:le:3", v.clone()));
        assert!(m("code:null", v.clone()));
        assert!(m("name:!null", v.clone()));
        assert!(m("items:empty", v.clone()));
        assert!(m("missing:!in:[a]", v.clone()));
    }

    #[test]
    fn timestamps_with_colons_parse() {
        let f = Filter::parse("lastUpdated:gt:2024-01-01T10:11:12.000").unwrap();
        assert_eq!(f.values, vec!["2024-01-01T10:11:12.000"]);
    }

    #[test]
    fn rejects_bad_filters() {
        for bad in ["name", "name:zz:x", "name:eq", ":eq:x", "a..b:eq:x"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn junctions() {
        let v = o(json!({"a":"1","b":"2"}));
        let and = Filters::parse(["a:eq:1", "b:eq:3"].into_iter(), None).unwrap();
        assert!(!and.matches(&v, &NoResolve));
        let or = Filters::parse(["a:eq:1", "b:eq:3"].into_iter(), Some("OR")).unwrap();
        assert!(or.matches(&v, &NoResolve));
        assert_eq!(
            Filters::parse(["id:in:[a,b]"].into_iter(), None)
                .unwrap()
                .id_candidates(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
    }
}
