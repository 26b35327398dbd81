//! Query strings, parsed by hand: the Android SDK sends raw `[ ] : ,` (its
//! `PreventURLDecodePlugin` undoes Ktor's encoding) and repeats `filter=`, which generic
//! extractors either reject or collapse.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// The query string as an ordered list of decoded `(key, value)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `a=1&b=x:y:[1,2]&a=2`. `%XX` and `+` are decoded; a bad escape is kept literally.
    pub fn parse(raw: &str) -> Query {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Query { pairs }
    }

    /// First value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// A boolean parameter: `true`/`false` (DHIS2 is case-insensitive), `default` when absent.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::BadRequest(format!(
                "Value '{v}' is not valid for parameter {key}. Valid values are: [true, false]"
            ))),
        }
    }

    /// A positive integer parameter, `default` when absent.
    pub fn positive(&self, key: &str, default: usize) -> Result<usize, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(ApiError::BadRequest(format!(
                    "Value '{v}' is not valid for parameter {key}: expected a positive integer"
                ))),
            },
        }
    }

    /// Comma-separated values of every occurrence of `key` (`key=a,b&key=c` → `[a,b,c]`).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.all(key)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Query::parse(parts.uri.query().unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_raw_brackets_colons_commas_and_repeats() {
        let q = Query::parse(
            "fields=id,programStages[id,name]&filter=id:in:[a,b]&filter=access.data.read:eq:true&paging=false",
        );
        assert_eq!(q.get("fields"), Some("id,programStages[id,name]"));
        assert_eq!(
            q.all("filter").collect::<Vec<_>>(),
            vec!["id:in:[a,b]", "access.data.read:eq:true"]
        );
        assert!(!q.bool("paging", true).unwrap());
    }

    #[test]
    fn decodes_percent_and_plus() {
        let q = Query::parse("filter=name%3Alike%3AOut+patient&x=%5B1%5D&bad=%zz");
        assert_eq!(q.get("filter"), Some("name:like:Out patient"));
        assert_eq!(q.get("x"), Some("[1]"));
        assert_eq!(q.get("bad"), Some("%zz"));
    }

    #[test]
    fn validates_numbers_and_booleans() {
        let q = Query::parse("page=0&pageSize=x&paging=maybe&ok=TRUE");
        assert!(q.positive("page", 1).is_err());
        assert!(q.positive("pageSize", 50).is_err());
        assert!(q.bool("paging", true).is_err());
        assert!(q.bool("ok", false).unwrap());
        assert_eq!(q.positive("missing", 7).unwrap(), 7);
    }

    #[test]
    fn lists_split_on_commas_across_repeats() {
        let q = Query::parse("key=a,b&key=c&key=");
        assert_eq!(q.list("key"), vec!["a", "b", "c"]);
    }
}
