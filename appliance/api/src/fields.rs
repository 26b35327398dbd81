//! DHIS2's `fields` parameter: parsing (`a,b[c,d[e]]`, `*`, `:all`, `:owner`, `:identifiable`,
//! `:nameable`, `:simple`, `!x`, `x~rename(y)`, `~size`, `~isEmpty`, `~isNotEmpty`, `~pluck`)
//! and projection of JSON objects, expanding `{id}` references through a [`Resolver`].

use serde_json::{Map, Value};

use crate::error::ApiError;

/// One requested property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNode {
    pub name: String,
    /// `Some` when the property was written with `[...]`.
    pub children: Option<FieldList>,
    pub transforms: Vec<Transform>,
}

/// A field transformer (`name~rename(label)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    Rename(String),
    Size,
    IsEmpty,
    IsNotEmpty,
    Pluck(Option<String>),
}

/// A parsed field list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldList {
    /// `*`, `:all`, `:owner` or `:persisted`: every stored property.
    pub all: bool,
    pub identifiable: bool,
    pub nameable: bool,
    pub simple: bool,
    pub includes: Vec<FieldNode>,
    pub excludes: Vec<String>,
}

const IDENTIFIABLE: &[&str] = &[
    "id",
    "code",
    "name",
    "displayName",
    "created",
    "lastUpdated",
    "createdBy",
    "lastUpdatedBy",
    "attributeValues",
];
const NAMEABLE_EXTRA: &[&str] = &[
    "shortName",
    "displayShortName",
    "description",
    "displayDescription",
];

impl FieldList {
    /// Parses a `fields` value.
    pub fn parse(s: &str) -> Result<FieldList, ApiError> {
        let chars: Vec<char> = s.chars().collect();
        let mut pos = 0;
        let list = parse_list(&chars, &mut pos, 0)?;
        if pos != chars.len() {
            return Err(bad_fields(s, "unbalanced brackets"));
        }
        Ok(list)
    }

    /// `*`.
    pub fn all() -> FieldList {
        FieldList {
            all: true,
            ..FieldList::default()
        }
    }

    /// Whether projecting with this list needs properties `obj` does not have (then an `{id}`
    /// reference is worth resolving).
    fn needs_more_than(&self, obj: &Map<String, Value>) -> bool {
        if self.all || self.simple {
            return true;
        }
        if (self.identifiable || self.nameable) && !obj.contains_key("name") {
            return true;
        }
        self.includes.iter().any(|n| !obj.contains_key(&n.name))
    }
}

fn bad_fields(s: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("Invalid fields parameter ({why}): {s}"))
}

fn parse_list(c: &[char], pos: &mut usize, depth: usize) -> Result<FieldList, ApiError> {
    if depth > 16 {
        return Err(ApiError::BadRequest("fields nested too deeply".into()));
    }
    let mut list = FieldList::default();
    loop {
        // One item, up to ',' or a closing bracket.
        let start = *pos;
        while *pos < c.len() && !matches!(c[*pos], ',' | '[' | ']' | '(' | ')' | '~' | '|') {
            *pos += 1;
        }
        let token: String = c[start..*pos].iter().collect::<String>().trim().to_string();
        let mut node_children = None;
        if *pos < c.len() && matches!(c[*pos], '[' | '(') {
            *pos += 1;
            let inner = parse_list(c, pos, depth + 1)?;
            if *pos >= c.len() || !matches!(c[*pos], ']' | ')') {
                return Err(ApiError::BadRequest(
                    "Invalid fields parameter: missing ]".into(),
                ));
            }
            *pos += 1;
            node_children = Some(inner);
        }
        let mut transforms = Vec::new();
        while *pos < c.len() && matches!(c[*pos], '~' | '|') {
            *pos += 1;
            let s = *pos;
            while *pos < c.len() && c[*pos].is_ascii_alphanumeric() {
                *pos += 1;
            }
            let name: String = c[s..*pos].iter().collect();
            let mut arg = None;
            if *pos < c.len() && c[*pos] == '(' {
                let a = *pos + 1;
                while *pos < c.len() && c[*pos] != ')' {
                    *pos += 1;
                }
                if *pos >= c.len() {
                    return Err(ApiError::BadRequest(
                        "Invalid fields parameter: unclosed transformer".into(),
                    ));
                }
                arg = Some(c[a..*pos].iter().collect::<String>());
                *pos += 1;
            }
            transforms.push(match (name.as_str(), arg) {
                ("rename", Some(a)) if !a.is_empty() => Transform::Rename(a),
                ("size", _) => Transform::Size,
                ("isEmpty", _) => Transform::IsEmpty,
                ("isNotEmpty", _) => Transform::IsNotEmpty,
                ("pluck", a) => Transform::Pluck(a.filter(|s| !s.is_empty())),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "Invalid fields parameter: unknown transformer {name}"
                    )));
                }
            });
        }
        match token.as_str() {
            "" if node_children.is_none() => {}
            "*" | ":all" | ":owner" | ":persisted" => list.all = true,
            ":identifiable" => list.identifiable = true,
            ":nameable" => list.nameable = true,
            ":simple" => list.simple = true,
            t if t.starts_with('!') || t.starts_with('-') => list.excludes.push(t[1..].to_string()),
            t if t.starts_with(':') => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid fields parameter: unknown preset {t}"
                )));
            }
            t => {
                // A repeated name merges (the SDK never repeats, DHIS2 tolerates it).
                if let Some(existing) = list.includes.iter_mut().find(|n| n.name == t) {
                    if node_children.is_some() {
                        existing.children = node_children;
                    }
                } else {
                    list.includes.push(FieldNode {
                        name: t.to_string(),
                        children: node_children,
                        transforms,
                    });
                }
            }
        }
        if *pos < c.len() && c[*pos] == ',' {
            *pos += 1;
            continue;
        }
        return Ok(list);
    }
}

/// Expands `{id}` references while projecting.
pub trait Resolver {
    /// The full (enriched) object a reference under `property` points to, if known.
    fn resolve(&self, property: &str, reference: &Map<String, Value>) -> Option<Value>;
}

/// A resolver that never expands anything.
pub struct NoResolve;

impl Resolver for NoResolve {
    fn resolve(&self, _: &str, _: &Map<String, Value>) -> Option<Value> {
        None
    }
}

/// Projects an object with a field list.
pub fn project(obj: &Map<String, Value>, list: &FieldList, r: &dyn Resolver) -> Value {
    let mut out = Map::new();
    if list.all {
        for (k, v) in obj {
            out.insert(k.clone(), v.clone());
        }
    }
    if list.identifiable || list.nameable {
        let extra: &[&str] = if list.nameable { NAMEABLE_EXTRA } else { &[] };
        for k in IDENTIFIABLE.iter().chain(extra) {
            if let Some(v) = obj.get(*k) {
                out.insert((*k).to_string(), v.clone());
            }
        }
    }
    if list.simple {
        for (k, v) in obj {
            if !v.is_object() && !v.is_array() {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    for node in &list.includes {
        let Some(v) = obj.get(&node.name) else {
            continue;
        };
        let mut value = match &node.children {
            None => v.clone(),
            Some(children) => project_value(&node.name, v, children, r),
        };
        let mut key = node.name.clone();
        for t in &node.transforms {
            match t {
                Transform::Rename(n) => {
                    out.remove(&key);
                    key = n.clone();
                }
                Transform::Size => value = Value::from(size(&value)),
                Transform::IsEmpty => value = Value::Bool(size(&value) == 0),
                Transform::IsNotEmpty => value = Value::Bool(size(&value) != 0),
                Transform::Pluck(p) => {
                    let field = p.as_deref().unwrap_or("id");
                    if let Value::Array(items) = &value {
                        value = Value::Array(
                            items.iter().filter_map(|i| i.get(field).cloned()).collect(),
                        );
                    }
                }
            }
        }
        out.insert(key, value);
    }
    for x in &list.excludes {
        out.remove(x);
    }
    Value::Object(out)
}

fn size(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        Value::String(s) => s.chars().count(),
        Value::Object(o) => o.len(),
        Value::Null => 0,
        _ => 1,
    }
}

fn project_value(property: &str, v: &Value, list: &FieldList, r: &dyn Resolver) -> Value {
    match v {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| project_value(property, i, list, r))
                .collect(),
        ),
        Value::Object(o) => {
            if o.contains_key("id") && list.needs_more_than(o) {
                if let Some(Value::Object(full)) = r.resolve(property, o) {
                    return project(&full, list, r);
                }
            }
            project(o, list, r)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    struct Des;
    impl Resolver for Des {
        fn resolve(&self, property: &str, r: &Map<String, Value>) -> Option<Value> {
            (property == "dataElement" && r["id"] == "de000000001").then(|| {
                json!({"id":"de000000001","name":"Weight","valueType":"NUMBER","optionSet":{"id":"os000000001"}})
            })
        }
    }

    #[test]
    fn parses_nested_lists_presets_and_exclusions() {
        let l = FieldList::parse("id,name,programStages[id,dataElement[id,name]],:nameable,!code")
            .unwrap();
        assert!(l.nameable);
        assert_eq!(l.excludes, vec!["code"]);
        assert_eq!(l.includes.len(), 3);
        let ps = l.includes[2].children.as_ref().unwrap();
        assert_eq!(ps.includes[1].name, "dataElement");
        assert_eq!(ps.includes[1].children.as_ref().unwrap().includes.len(), 2);
        assert!(FieldList::parse("*").unwrap().all);
        assert!(FieldList::parse(":owner").unwrap().all);
    }

    #[test]
    fn rejects_broken_field_lists() {
        for bad in ["a[b", "a]b", "a~nope", ":bogus", "a~rename("] {
            assert!(FieldList::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn projects_and_expands_references() {
        let stage = obj(json!({
            "id": "ps000000001", "name": "Triage", "code": "T",
            "programStageDataElements": [
                {"id": "psde0000001", "compulsory": true, "dataElement": {"id": "de000000001"}}
            ]
        }));
        let l = FieldList::parse(
            "id,programStageDataElements[id,compulsory,dataElement[id,name,optionSet[id]]]",
        )
        .unwrap();
        assert_eq!(
            project(&stage, &l, &Des),
            json!({"id":"ps000000001","programStageDataElements":[{"id":"psde0000001","compulsory":true,
                "dataElement":{"id":"de000000001","name":"Weight","optionSet":{"id":"os000000001"}}}]})
        );
        // A bare nested name keeps the stored shape ({id} references stay references).
        let l = FieldList::parse("programStageDataElements").unwrap();
        assert_eq!(
            project(&stage, &l, &Des)["programStageDataElements"][0]["dataElement"],
            json!({"id":"de000000001"})
        );
    }

    #[test]
    fn star_exclusions_presets_and_transformers() {
        let o = obj(
            json!({"id":"a0000000001","name":"N","code":"C","shortName":"S","items":[{"id":"x"},{"id":"y"}],"nested":{"k":1}}),
        );
        let all = project(&o, &FieldList::parse("*,!code").unwrap(), &NoResolve);
        assert!(all.get("code").is_none() && all["shortName"] == "S");
        let ident = project(&o, &FieldList::parse(":identifiable").unwrap(), &NoResolve);
        assert!(ident.get("shortName").is_none() && ident["code"] == "C");
        let simple = project(&o, &FieldList::parse(":simple").unwrap(), &NoResolve);
        assert!(simple.get("items").is_none() && simple["name"] == "N");
        let t = project(
            &o,
            &FieldList::parse("name~rename(label),nested~isEmpty,items~pluck").unwrap(),
            &NoResolve,
        );
        assert_eq!(t, json!({"label":"N","items":["x","y"],"nested":false}));
        let t = project(&o, &FieldList::parse("items~size").unwrap(), &NoResolve);
        assert_eq!(t, json!({"items":2}));
    }

    #[test]
    fn missing_properties_are_omitted() {
        let o = obj(json!({"id":"a0000000001"}));
        assert_eq!(
            project(
                &o,
                &FieldList::parse("id,name,parent[id]").unwrap(),
                &NoResolve
            ),
            json!({"id":"a0000000001"})
        );
    }
}
