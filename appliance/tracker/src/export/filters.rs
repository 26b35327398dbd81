//! Tracker `filter=` on attribute or data values: `<uid>:<OP>:<value>[:<OP>:<value>…]` with
//! DHIS2's operators (the SDK sends them upper-case), `;` between IN values and `/` escaping
//! `: ; , /` inside values. Text comparisons are case-insensitive, as in DHIS2.

use clinicbox_dhis2::Uid;
use clinicbox_web::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    NotLike,
    Sw,
    Ew,
    In,
    Null,
    NotNull,
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub op: Op,
    pub values: Vec<String>,
}

/// All conditions on one attribute or data element.
#[derive(Debug, Clone)]
pub struct ValueFilter {
    pub uid: Uid,
    pub conditions: Vec<Condition>,
}

fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '/' {
            if let Some(n) = chars.next() {
                if matches!(n, ':' | ';' | ',' | '/') {
                    // Keep the escape so a later split on another separator still sees it.
                    cur.push('/');
                }
                cur.push(n);
            } else {
                cur.push('/');
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '/' {
            match chars.next() {
                Some(n) if matches!(n, ':' | ';' | ',' | '/') => out.push(n),
                Some(n) => {
                    out.push('/');
                    out.push(n);
                }
                None => out.push('/'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl ValueFilter {
    /// Every non-empty `filter=` of a query.
    pub fn all(q: &clinicbox_api::query::Query) -> Result<Vec<ValueFilter>, ApiError> {
        q.all("filter")
            .filter(|f| !f.is_empty())
            .map(ValueFilter::parse)
            .collect()
    }

    pub fn parse(raw: &str) -> Result<ValueFilter, ApiError> {
        let bad = |why: &str| ApiError::BadRequest(format!("Invalid filter '{raw}': {why}"));
        let parts = split_escaped(raw, ':');
        let uid = Uid::try_from(parts[0].as_str()).map_err(|_| bad("not a UID"))?;
        let mut conditions = Vec::new();
        let mut i = 1;
        while i < parts.len() {
            let op = match parts[i].to_ascii_uppercase().as_str() {
                "EQ" | "IEQ" => Op::Eq,
                "NE" | "NEQ" | "NIEQ" | "!EQ" => Op::Ne,
                "GT" => Op::Gt,
                "GE" => Op::Ge,
                "LT" => Op::Lt,
                "LE" => Op::Le,
                "LIKE" | "ILIKE" => Op::Like,
                "NLIKE" | "NILIKE" | "!LIKE" => Op::NotLike,
                "SW" => Op::Sw,
                "EW" => Op::Ew,
                "IN" => Op::In,
                "NULL" => Op::Null,
                "!NULL" | "NNULL" => Op::NotNull,
                other => return Err(bad(&format!("unknown operator {other}"))),
            };
            i += 1;
            let values = if matches!(op, Op::Null | Op::NotNull) {
                Vec::new()
            } else {
                let v = parts.get(i).ok_or_else(|| bad("missing value"))?;
                i += 1;
                if op == Op::In {
                    split_escaped(v, ';').iter().map(|s| unescape(s)).collect()
                } else {
                    vec![unescape(v)]
                }
            };
            conditions.push(Condition { op, values });
        }
        if conditions.is_empty() {
            // A bare UID means "has a value" in DHIS2's attribute filter.
            conditions.push(Condition {
                op: Op::NotNull,
                values: Vec::new(),
            });
        }
        Ok(ValueFilter { uid, conditions })
    }

    /// An exact value this filter requires (for an index lookup), if any.
    pub fn exact(&self) -> Option<&str> {
        self.conditions.iter().find_map(|c| match c.op {
            Op::Eq => c.values.first().map(String::as_str),
            _ => None,
        })
    }

    /// Whether `value` (None = no value) passes every condition.
    pub fn matches(&self, value: Option<&str>) -> bool {
        self.conditions.iter().all(|c| test(c, value))
    }
}

fn test(c: &Condition, value: Option<&str>) -> bool {
    let value = value.filter(|v| !v.is_empty());
    let v = match (c.op, value) {
        (Op::Null, v) => return v.is_none(),
        (Op::NotNull, v) => return v.is_some(),
        // A missing value passes only the negative operators.
        (op, None) => return matches!(op, Op::Ne | Op::NotLike),
        (_, Some(v)) => v.to_lowercase(),
    };
    let want = c
        .values
        .first()
        .map(|s| s.to_lowercase())
        .unwrap_or_default();
    let compare = || match (v.parse::<f64>(), want.parse::<f64>()) {
        (Ok(a), Ok(b)) => a.partial_cmp(&b),
        _ => Some(v.as_str().cmp(want.as_str())),
    };
    match c.op {
        Op::Eq => v == want,
        Op::Ne => v != want,
        Op::Like => v.contains(&want),
        Op::NotLike => !v.contains(&want),
        Op::Sw => v.starts_with(&want),
        Op::Ew => v.ends_with(&want),
        Op::In => c.values.iter().any(|w| w.to_lowercase() == v),
        Op::Gt => compare().is_some_and(|o| o.is_gt()),
        Op::Ge => compare().is_some_and(|o| o.is_ge()),
        Op::Lt => compare().is_some_and(|o| o.is_lt()),
        Op::Le => compare().is_some_and(|o| o.is_le()),
        Op::Null | Op::NotNull => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_filters_parse_and_match() {
        let f = ValueFilter::parse("cbAttrFirst:LIKE:ami").unwrap();
        assert!(f.matches(Some("Amina")) && !f.matches(Some("Otieno")) && !f.matches(None));
        let f = ValueFilter::parse("cbAttrPatId:EQ:OPD-000001").unwrap();
        assert_eq!(f.exact(), Some("OPD-000001"));
        assert!(f.matches(Some("opd-000001")));
        let f = ValueFilter::parse("cbAttrSex01:IN:F;M").unwrap();
        assert!(f.matches(Some("M")) && !f.matches(Some("X")));
        let f = ValueFilter::parse("cbDeTemp001:GT:37:LT:40").unwrap();
        assert!(f.matches(Some("38.5")) && !f.matches(Some("41")));
        let f = ValueFilter::parse("cbAttrFirst:SW:a/:b").unwrap();
        assert!(f.matches(Some("a:bc")));
        let f = ValueFilter::parse("cbAttrFirst:EW:ina").unwrap();
        assert!(f.matches(Some("AMINA")));
    }

    #[test]
    fn bad_filters_are_400s() {
        assert!(ValueFilter::parse("nope:EQ:x").is_err());
        assert!(ValueFilter::parse("cbAttrFirst:ZZ:x").is_err());
        assert!(ValueFilter::parse("cbAttrFirst:EQ").is_err());
    }
}
