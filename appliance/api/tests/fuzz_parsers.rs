//! Property-based fuzzing of the query parsers every metadata endpoint runs on tablet input:
//! `fields=` ([`FieldList::parse`]), `filter=` ([`Filter::parse`], [`Filters::parse`]), the raw
//! query string ([`Query::parse`]) and a whole list request ([`ListRequest::parse`]: fields,
//! filters, `rootJunction`, `paging`, `page`, `pageSize`, `order`), and the same parameters
//! through the router; and the object counter the importers run on raw bodies before parsing
//! them ([`count::items`]).
//!
//! The specification, for any input of bounded size (up to 64 KiB, any Unicode, NULs,
//! brackets nested tens of thousands deep):
//! - a parser never panics and never overflows its stack;
//! - it either accepts the input or refuses it with an [`ApiError`] that is a `400` DHIS2
//!   WebMessage (`httpStatusCode`, `httpStatus`, `status: ERROR`, `message`);
//! - the router answers such a request `200` or `400`, always with JSON;
//! - inputs written in the grammar (`a,b[c,d[e]],:all,!x,n~rename(m)`, `path.to:op:value`)
//!   parse to exactly the structure they were written from;
//! - the object counter takes any bytes, and counts exactly the elements of the named lists
//!   reachable from the top through named lists.
//!
//! Case counts: `PROPTEST_CASES=N` overrides the small defaults below (which keep this file
//! under ~20 s in a debug build on two cores), e.g.
//! `PROPTEST_CASES=20000 cargo test -p clinicbox-api --test fuzz_parsers`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use clinicbox_api::ApiError;
use clinicbox_api::count;
use clinicbox_api::fields::{FieldList, FieldNode, NoResolve, Transform, project};
use clinicbox_api::filter::{Filter, Filters, Op};
use clinicbox_api::metadata::serve::ListRequest;
use clinicbox_api::query::Query;
use clinicbox_dhis2::schema;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{TestCaseError, TestRunner, contextualize_config};
use serde_json::{Map, Value, json};

/// The largest input the properties generate (a URL is refused long before this in practice).
const MAX_INPUT_BYTES: usize = 64 * 1024;

/// Cases per property when `PROPTEST_CASES` is not set.
const CASES: u32 = 256;
/// Cases of the through-the-router property (each one is an HTTP round trip).
const ROUTER_CASES: u32 = 64;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// What a refusal must look like.
// ---------------------------------------------------------------------------------------------

/// Accepted, or refused with a 400 WebMessage (as the error itself and as the HTTP response).
fn accepted_or_bad_request<T>(
    input: &str,
    parsed: Result<T, ApiError>,
) -> Result<(), TestCaseError> {
    let Err(e) = parsed else {
        return Ok(());
    };
    let shown: String = input.chars().take(80).collect();
    prop_assert_eq!(
        e.status(),
        StatusCode::BAD_REQUEST,
        "{:?} for {:?}",
        e,
        shown
    );
    let msg = serde_json::to_value(e.web_message()).expect("a WebMessage serialises");
    prop_assert_eq!(&msg["httpStatusCode"], 400, "{}", msg);
    prop_assert_eq!(&msg["httpStatus"], "Bad Request", "{}", msg);
    prop_assert_eq!(&msg["status"], "ERROR", "{}", msg);
    prop_assert!(
        msg["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        msg
    );
    let response = e.into_response();
    prop_assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    prop_assert!(ct.starts_with("application/json"), "content-type {}", ct);
    Ok(())
}

/// Refused, with a 400 WebMessage.
fn refused_with_400<T: std::fmt::Debug>(
    input: &str,
    parsed: Result<T, ApiError>,
) -> Result<(), TestCaseError> {
    prop_assert!(parsed.is_err(), "{:?} accepted as {:?}", input, parsed);
    accepted_or_bad_request(input, parsed)
}

// ---------------------------------------------------------------------------------------------
// Hostile text: grammar characters, any Unicode, NULs, long repeats, deep nesting.
// ---------------------------------------------------------------------------------------------

/// Characters the parsers give a meaning to, plus a few that often break text handling.
const SPECIAL: &[char] = &[
    ',', '[', ']', '(', ')', '~', '|', '!', '-', ':', '*', '.', '$', ' ', '\t', '&', '=', '%', '+',
    '"', '\\', '\0', 'a', 'b', 'z', 'I', 'd', '0', '9', '_', 'é', 'ß', 'Σ', '中', '😀', '\u{202e}',
    '\u{feff}', '\u{0301}', '\u{ffff}',
];

/// Words of the grammars, so random text reaches deeper than the first check.
const WORDS: &[&str] = &[
    "id",
    "name",
    ":all",
    ":owner",
    ":persisted",
    ":identifiable",
    ":nameable",
    ":simple",
    ":bogus",
    "*",
    "!code",
    "-code",
    "~rename(",
    "~size",
    "~isEmpty",
    "~isNotEmpty",
    "~pluck",
    "|pluck(id)",
    "~nope",
    "eq",
    "!eq",
    "ne",
    "in",
    "!in",
    "like",
    "$like",
    "like$",
    "ilike",
    "null",
    "!null",
    "empty",
    "token",
    "gt",
    "le",
    "[a,b]",
    "2024-01-01T10:11:12.000",
    "asc",
    "desc",
    "iasc",
    "idesc",
    "OR",
    "AND",
    "true",
    "false",
    "0",
    "1",
    "-1",
    "18446744073709551616",
];

fn hostile_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(SPECIAL).prop_map(String::from),
        2 => select(WORDS).prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
    ]
}

/// Copies of `chunk` up to `len` bytes (at a char boundary, at most MAX_INPUT_BYTES).
fn repeated(chunk: &str, len: usize) -> String {
    let len = len.min(MAX_INPUT_BYTES);
    let mut out = String::with_capacity(len + 4);
    if chunk.is_empty() {
        return out;
    }
    'fill: loop {
        for c in chunk.chars() {
            if out.len() + c.len_utf8() > len {
                break 'fill;
            }
            out.push(c);
        }
    }
    out
}

/// `a<open>` nested `depth` times around `x`, closed `closed` times.
fn nested(depth: usize, open: &str, close: &str, closed: usize) -> String {
    let mut s = String::new();
    for _ in 0..depth {
        s.push('a');
        s.push_str(open);
    }
    s.push('x');
    for _ in 0..closed.min(depth) {
        s.push_str(close);
    }
    s
}

/// Any text a tablet (or an attacker) could put in a parameter, bounded to 64 KiB.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(hostile_piece(), 0..64).prop_map(|v| v.concat()),
        2 => any::<String>(),
        1 => (
            prop::collection::vec(hostile_piece(), 1..16),
            1..=MAX_INPUT_BYTES
        )
            .prop_map(|(chunk, len)| repeated(&chunk.concat(), len)),
        1 => (
            1usize..=20_000,
            select(&["[", "(", "~rename("][..]),
            select(&["]", ")"][..]),
            any::<prop::sample::Index>()
        )
            .prop_map(|(depth, open, close, closed)| {
                nested(depth, open, close, closed.index(depth + 1))
            }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Valid `fields=` values, generated from the structure they must parse to.
// ---------------------------------------------------------------------------------------------

/// One comma-separated item of a field list as written.
#[derive(Debug, Clone)]
enum FieldItem {
    Include {
        /// Leading blanks (trimmed by the parser).
        lead: &'static str,
        node: FieldNode,
        /// `[` `]` or `(` `)` around the children.
        brackets: (char, char),
        /// `~` or `|` before each transformer.
        separator: char,
    },
    Exclude(char, String),
    Preset(&'static str),
    Empty,
}

fn property_name() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9]{0,11}"
}

fn transform() -> impl Strategy<Value = Transform> {
    prop_oneof![
        property_name().prop_map(Transform::Rename),
        Just(Transform::Size),
        Just(Transform::IsEmpty),
        Just(Transform::IsNotEmpty),
        Just(Transform::Pluck(None)),
        property_name().prop_map(|f| Transform::Pluck(Some(f))),
    ]
}

/// Items of one level of a field list, with children down to `depth` more levels.
fn field_items(depth: u32) -> BoxedStrategy<Vec<FieldItem>> {
    let children: BoxedStrategy<Option<Vec<FieldItem>>> = if depth == 0 {
        Just(None).boxed()
    } else {
        prop::option::weighted(0.4, field_items(depth - 1)).boxed()
    };
    let include = (
        select(&["", " ", "  "][..]),
        property_name(),
        children,
        prop::collection::vec(transform(), 0..3),
        select(&[('[', ']'), ('(', ')')][..]),
        select(&['~', '|'][..]),
    )
        .prop_map(|(lead, name, children, transforms, brackets, separator)| {
            FieldItem::Include {
                lead,
                node: FieldNode {
                    name,
                    children: children.map(|items| expected_list(&items)),
                    transforms,
                },
                brackets,
                separator,
            }
        });
    let item = prop_oneof![
        6 => include,
        2 => (select(&['!', '-'][..]), property_name()).prop_map(|(c, n)| FieldItem::Exclude(c, n)),
        2 => select(
            &["*", ":all", ":owner", ":persisted", ":identifiable", ":nameable", ":simple"][..]
        )
        .prop_map(FieldItem::Preset),
        1 => Just(FieldItem::Empty),
    ];
    prop::collection::vec(item, 0..6)
        .prop_map(|items| {
            // A repeated name merges (its own property below); keep names unique per level.
            let mut seen = BTreeSet::new();
            items
                .into_iter()
                .filter(|i| match i {
                    FieldItem::Include { node, .. } => seen.insert(node.name.clone()),
                    _ => true,
                })
                .collect()
        })
        .boxed()
}

/// What a list of items means: presets set flags, `!x`/`-x` exclude, names are included in
/// order with their children and transformers.
fn expected_list(items: &[FieldItem]) -> FieldList {
    let mut list = FieldList::default();
    for item in items {
        match item {
            FieldItem::Include { node, .. } => list.includes.push(node.clone()),
            FieldItem::Exclude(_, name) => list.excludes.push(name.clone()),
            FieldItem::Preset("*" | ":all" | ":owner" | ":persisted") => list.all = true,
            FieldItem::Preset(":identifiable") => list.identifiable = true,
            FieldItem::Preset(":nameable") => list.nameable = true,
            FieldItem::Preset(_) => list.simple = true,
            FieldItem::Empty => {}
        }
    }
    list
}

/// Writes items the way a client would.
fn render_items(items: &[FieldItem]) -> String {
    items
        .iter()
        .map(|item| match item {
            FieldItem::Include {
                lead,
                node,
                brackets,
                separator,
            } => format!("{lead}{}", render_node(node, *brackets, *separator)),
            FieldItem::Exclude(c, name) => format!("{c}{name}"),
            FieldItem::Preset(p) => (*p).to_string(),
            FieldItem::Empty => String::new(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn render_node(node: &FieldNode, brackets: (char, char), separator: char) -> String {
    let mut s = node.name.clone();
    if let Some(children) = &node.children {
        s.push(brackets.0);
        s.push_str(&render_list(children, brackets, separator));
        s.push(brackets.1);
    }
    for t in &node.transforms {
        s.push(separator);
        match t {
            Transform::Rename(to) => s.push_str(&format!("rename({to})")),
            Transform::Size => s.push_str("size"),
            Transform::IsEmpty => s.push_str("isEmpty"),
            Transform::IsNotEmpty => s.push_str("isNotEmpty"),
            Transform::Pluck(None) => s.push_str("pluck"),
            Transform::Pluck(Some(f)) => s.push_str(&format!("pluck({f})")),
        }
    }
    s
}

/// Writes a parsed list back (presets first, then includes, then exclusions).
fn render_list(list: &FieldList, brackets: (char, char), separator: char) -> String {
    let mut parts = Vec::new();
    for (on, preset) in [
        (list.all, "*"),
        (list.identifiable, ":identifiable"),
        (list.nameable, ":nameable"),
        (list.simple, ":simple"),
    ] {
        if on {
            parts.push(preset.to_string());
        }
    }
    parts.extend(
        list.includes
            .iter()
            .map(|n| render_node(n, brackets, separator)),
    );
    parts.extend(list.excludes.iter().map(|x| format!("!{x}")));
    parts.join(",")
}

// ---------------------------------------------------------------------------------------------
// Valid `filter=` values.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// `path:op`
    None,
    /// `path:op:value` (the value may hold `:`)
    One,
    /// `path:op:[a,b]` or `path:op:a,b`
    List,
}

/// Every operator spelling DHIS2 clients send, with what it means.
const OPERATORS: &[(&str, Op, Arity)] = &[
    ("eq", Op::Eq, Arity::One),
    ("!eq", Op::Ne, Arity::One),
    ("ne", Op::Ne, Arity::One),
    ("neq", Op::Ne, Arity::One),
    ("ieq", Op::IEq, Arity::One),
    ("like", Op::Like, Arity::One),
    ("!like", Op::NotLike, Arity::One),
    ("$like", Op::StartsWith, Arity::One),
    ("!$like", Op::NotStartsWith, Arity::One),
    ("like$", Op::EndsWith, Arity::One),
    ("!like$", Op::NotEndsWith, Arity::One),
    ("ilike", Op::ILike, Arity::One),
    ("!ilike", Op::NotILike, Arity::One),
    ("$ilike", Op::IStartsWith, Arity::One),
    ("startsWith", Op::IStartsWith, Arity::One),
    ("!$ilike", Op::NotIStartsWith, Arity::One),
    ("!startsWith", Op::NotIStartsWith, Arity::One),
    ("ilike$", Op::IEndsWith, Arity::One),
    ("endsWith", Op::IEndsWith, Arity::One),
    ("!ilike$", Op::NotIEndsWith, Arity::One),
    ("!endsWith", Op::NotIEndsWith, Arity::One),
    ("gt", Op::Gt, Arity::One),
    ("ge", Op::Ge, Arity::One),
    ("gte", Op::Ge, Arity::One),
    ("lt", Op::Lt, Arity::One),
    ("le", Op::Le, Arity::One),
    ("lte", Op::Le, Arity::One),
    ("in", Op::In, Arity::List),
    ("!in", Op::NotIn, Arity::List),
    ("null", Op::Null, Arity::None),
    ("!null", Op::NotNull, Arity::None),
    ("empty", Op::Empty, Arity::None),
    ("!empty", Op::NotEmpty, Arity::None),
    ("token", Op::Token, Arity::One),
    ("!token", Op::NotToken, Arity::One),
];

/// A filter as written and the filter it must parse to.
fn written_filter() -> impl Strategy<Value = (String, Filter)> {
    (
        prop::collection::vec("[^:.]{1,10}", 1..5),
        select(OPERATORS),
        "(?s).{0,40}",
        prop::collection::vec("[\\p{L}\\p{N}_-]{1,11}", 1..6),
        any::<bool>(),
    )
        .prop_map(|(path, (op_s, op, arity), value, items, bracketed)| {
            let written_path = path.join(".");
            let (text, values) = match arity {
                Arity::None => (format!("{written_path}:{op_s}"), Vec::new()),
                Arity::One => (format!("{written_path}:{op_s}:{value}"), vec![value]),
                Arity::List => {
                    let list = items.join(",");
                    let written = if bracketed { format!("[{list}]") } else { list };
                    (format!("{written_path}:{op_s}:{written}"), items)
                }
            };
            (text, Filter { path, op, values })
        })
}

// ---------------------------------------------------------------------------------------------
// Query strings and list requests.
// ---------------------------------------------------------------------------------------------

const LIST_KEYS: &[&str] = &[
    "fields",
    "filter",
    "order",
    "page",
    "pageSize",
    "paging",
    "rootJunction",
    "x",
];

/// A raw query string of list parameters with hostile values (kept short: the values go
/// through every parser, each of which has its own 64 KiB property).
fn hostile_list_query() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            select(LIST_KEYS),
            prop_oneof![
                3 => prop::collection::vec(hostile_piece(), 0..24).prop_map(|v| v.concat()),
                1 => any::<String>(),
            ],
        ),
        0..8,
    )
    .prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

const PLURALS: &[&str] = &[
    "dataElements",
    "options",
    "programs",
    "organisationUnits",
    "users",
];

// ---------------------------------------------------------------------------------------------
// Raw bodies for the object counter.
// ---------------------------------------------------------------------------------------------

/// Small JSON documents whose keys are mostly a tracker payload's lists.
fn json_document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z\\\"]{0,4}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                select(
                    &[
                        "trackedEntities",
                        "enrollments",
                        "events",
                        "notes",
                        "dataValues",
                        "programOwners",
                        "geometry",
                        "x"
                    ][..]
                ),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// What [`count::items`] must answer for `v`: every array element at any depth counts one.
fn expected_count(v: &Value) -> usize {
    match v {
        Value::Array(items) => items.len() + items.iter().map(expected_count).sum::<usize>(),
        Value::Object(m) => m.values().map(expected_count).sum(),
        _ => 0,
    }
}

/// Any body: bytes, text, documents cut short, nesting far beyond any parser's limit.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        hostile_text().prop_map(String::into_bytes),
        (json_document(), any::<prop::sample::Index>()).prop_map(|(d, cut)| {
            let bytes = serde_json::to_vec(&d).unwrap_or_default();
            bytes[..cut.index(bytes.len() + 1)].to_vec()
        }),
        (
            1usize..=100_000,
            select(&["[", "{\"events\":[", "{\"events\":", "{\"x\":"][..])
        )
            .prop_map(|(n, open)| open.repeat(n).into_bytes()),
    ]
}

// ---------------------------------------------------------------------------------------------
// The properties.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn any_fields_value_is_parsed_or_refused_with_400(s in hostile_text()) {
        accepted_or_bad_request(&s, FieldList::parse(&s))?;
    }

    #[test]
    fn any_filter_value_is_parsed_or_refused_with_400(s in hostile_text()) {
        accepted_or_bad_request(&s, Filter::parse(&s))?;
    }

    #[test]
    fn any_set_of_filters_and_junction_is_parsed_or_refused_with_400(
        filters in prop::collection::vec(hostile_text(), 0..4),
        junction in prop::option::of(prop_oneof![
            select(&["AND", "OR", "or", "And", ""][..]).prop_map(String::from),
            hostile_text(),
        ]),
    ) {
        let parsed = Filters::parse(filters.iter().map(String::as_str), junction.as_deref());
        accepted_or_bad_request(&format!("{filters:?} {junction:?}"), parsed)?;
    }

    #[test]
    fn any_query_string_splits_into_its_pairs_in_order(raw in hostile_text()) {
        let q = Query::parse(&raw);
        // Every non-empty `&`-separated piece becomes exactly one pair, in order.
        let pieces = raw.split('&').filter(|p| !p.is_empty()).count();
        prop_assert_eq!(q.pairs().len(), pieces);
        if let Some((k, v)) = q.pairs().first() {
            prop_assert_eq!(q.get(k), Some(v.as_str()));
        }
    }

    #[test]
    fn any_list_request_is_parsed_or_refused_with_400(
        raw in hostile_list_query(),
        plural in select(PLURALS),
    ) {
        let s = schema::by_plural(plural).expect("a known metadata type");
        let q = Query::parse(&raw);
        accepted_or_bad_request(&raw, ListRequest::parse(s, &q, "id,displayName"))?;
    }

    #[test]
    fn paging_numbers_are_positive_integers(n in any::<usize>(), text in hostile_text()) {
        let q = Query::parse(&format!("page={n}"));
        match n {
            0 => refused_with_400("page=0", q.positive("page", 1))?,
            _ => prop_assert_eq!(q.positive("page", 1).ok(), Some(n)),
        }
        // Any other text: the default when empty, else a positive number or a 400.
        let q = Query::parse(&format!("pageSize={}", utf8_percent_encode(&text, NON_ALPHANUMERIC)));
        let got = q.positive("pageSize", 50);
        match text.parse::<usize>() {
            _ if text.is_empty() => prop_assert_eq!(got.ok(), Some(50)),
            Ok(n) if n >= 1 => prop_assert_eq!(got.ok(), Some(n)),
            _ => refused_with_400(&text, got)?,
        }
    }

    #[test]
    fn any_body_is_counted_without_panicking(body in hostile_body()) {
        // At most one object per byte: the count can never exceed what a body could hold.
        prop_assert!(count::items(&body) <= body.len());
    }

    #[test]
    fn the_item_count_is_every_array_element_at_any_depth(doc in json_document()) {
        let bytes = serde_json::to_vec(&doc).expect("a Value serialises");
        prop_assert_eq!(count::items(&bytes), expected_count(&doc), "{}", doc);
    }

    #[test]
    fn written_field_lists_parse_to_the_structure_they_were_written_from(
        items in field_items(3),
    ) {
        let text = render_items(&items);
        let parsed = FieldList::parse(&text);
        prop_assert!(parsed.is_ok(), "{:?} refused: {:?}", text, parsed.err());
        prop_assert_eq!(parsed.ok(), Some(expected_list(&items)), "{}", text);
    }

    #[test]
    fn a_repeated_name_keeps_its_first_transformers_and_its_last_children(
        name in property_name(),
        first in prop::collection::vec(transform(), 0..3),
        children in field_items(1),
    ) {
        let node = |children: Option<FieldList>, transforms: Vec<Transform>| FieldNode {
            name: name.clone(),
            children,
            transforms,
        };
        let head = render_node(&node(None, first.clone()), ('[', ']'), '~');
        let text = format!("{head},{name}[{}]", render_items(&children));
        let parsed = FieldList::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(
            parsed.includes,
            vec![node(Some(expected_list(&children)), first)],
            "{}",
            text
        );
    }

    #[test]
    fn projection_keeps_exactly_the_requested_properties_present_and_not_excluded(
        present in prop::collection::btree_set(
            select(&["id", "name", "code", "a", "b", "c", "d"][..]), 0..7),
        requested in prop::collection::btree_set(
            select(&["id", "name", "code", "a", "b", "x", "y"][..]), 0..7),
        excluded in prop::collection::btree_set(select(&["id", "code", "b", "x"][..]), 0..3),
        star in any::<bool>(),
    ) {
        let obj: Map<String, Value> =
            present.iter().map(|k| ((*k).to_string(), json!(k))).collect();
        let mut parts: Vec<String> = requested.iter().map(|k| (*k).to_string()).collect();
        if star {
            parts.push("*".into());
        }
        parts.extend(excluded.iter().map(|x| format!("!{x}")));
        let text = parts.join(",");
        let list = FieldList::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let got: BTreeSet<String> = match project(&obj, &list, &NoResolve) {
            Value::Object(m) => m.keys().cloned().collect(),
            other => return Err(TestCaseError::fail(format!("not an object: {other}"))),
        };
        let want: BTreeSet<String> = present
            .iter()
            .filter(|k| star || requested.contains(*k))
            .filter(|k| !excluded.contains(*k))
            .map(|k| (*k).to_string())
            .collect();
        prop_assert_eq!(got, want, "{}", text);
    }

    #[test]
    fn written_filters_parse_to_their_path_operator_and_values((text, want) in written_filter()) {
        let parsed = Filter::parse(&text);
        prop_assert!(parsed.is_ok(), "{:?} refused: {:?}", text, parsed.err());
        prop_assert_eq!(parsed.ok(), Some(want), "{:?}", text);
    }

    #[test]
    fn a_filter_matches_the_object_it_was_written_from(
        value in "(?s).{0,24}",
        others in prop::collection::vec("[a-z]{1,6}", 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let obj: Map<String, Value> = [
            ("name".to_string(), json!(value)),
            ("code".to_string(), Value::Null),
        ]
        .into_iter()
        .collect();
        let matches = |f: &str| -> Result<bool, TestCaseError> {
            Filter::parse(f)
                .map(|f| f.matches(&obj, &NoResolve))
                .map_err(|e| TestCaseError::fail(format!("{f:?}: {e}")))
        };
        let eq = format!("name:eq:{value}");
        let ne = format!("name:!eq:{value}");
        prop_assert!(matches(&eq)?, "{}", eq);
        prop_assert!(!matches(&ne)?, "{}", ne);
        prop_assert!(matches("name:!null")?);
        prop_assert!(matches("code:null")?);
        prop_assert!(matches("missing.path:null")?);
        // Any prefix of the value is `like` it and `$like` it.
        let chars: Vec<char> = value.chars().collect();
        let prefix: String = chars[..cut.index(chars.len() + 1)].iter().collect();
        let like = format!("name:like:{prefix}");
        let starts = format!("name:$like:{prefix}");
        prop_assert!(matches(&like)?, "{}", like);
        prop_assert!(matches(&starts)?, "{}", starts);
        // `in` matches when the value is one of the items (items are split on `,` and
        // trimmed, and one pair of outer brackets is dropped, so only such values are listed).
        let listable = !value.is_empty()
            && !value.contains(',')
            && value.trim() == value
            && !value.starts_with('[')
            && !value.ends_with(']');
        if listable {
            let mut items = others.clone();
            items.push(value.clone());
            let within = format!("name:in:[{}]", items.join(","));
            let not_within = format!("name:!in:[{}]", items.join(","));
            prop_assert!(matches(&within)?, "{}", within);
            prop_assert!(!matches(&not_within)?, "{}", not_within);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nesting depth, explicitly: the parser bounds it, so no input can exhaust the stack.
// ---------------------------------------------------------------------------------------------

#[test]
fn field_lists_nest_at_most_sixteen_levels() {
    let deepest_accepted = nested(16, "[", "]", 16);
    assert!(
        FieldList::parse(&deepest_accepted).is_ok(),
        "{deepest_accepted}"
    );
    for depth in [17, 1_000, 100_000] {
        for (open, close) in [("[", "]"), ("(", ")")] {
            let closed = nested(depth, open, close, depth);
            let e = FieldList::parse(&closed).expect_err("too deep");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(e.to_string().contains("nested too deeply"), "{e}");
            // Unclosed: refused the same way.
            let open_only = nested(depth, open, close, 0);
            assert_eq!(
                FieldList::parse(&open_only).map_err(|e| e.status()).err(),
                Some(StatusCode::BAD_REQUEST)
            );
        }
    }
    // A filter has no nesting: 100k brackets are just a value.
    let f = Filter::parse(&format!("name:eq:{}", "[".repeat(100_000))).expect("a value");
    assert_eq!(f.values[0].len(), 100_000);
}

// ---------------------------------------------------------------------------------------------
// The same parameters through the router: 200 or 400, always JSON, never 5xx.
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_list_parameters_through_the_router_get_200_or_a_400_web_message() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let b = rt.block_on(common::Box::demo());
    let strategy = (
        select(PLURALS),
        prop::collection::vec(
            (
                select(LIST_KEYS),
                prop_oneof![
                    3 => prop::collection::vec(hostile_piece(), 0..24).prop_map(|v| v.concat()),
                    1 => field_items(2).prop_map(|items| render_items(&items)),
                    1 => written_filter().prop_map(|(text, _)| text),
                ],
            ),
            0..6,
        ),
        select(&[common::ANDROID, common::ADMIN][..]),
    );
    let mut runner = TestRunner::new(contextualize_config(config(ROUTER_CASES)));
    let outcome = runner.run(&strategy, |(plural, pairs, who)| {
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect::<Vec<_>>()
            .join("&");
        let uri = format!("/api/{plural}?{query}");
        let r = rt.block_on(b.get(&uri, who));
        let body = String::from_utf8_lossy(&r.bytes);
        prop_assert!(
            r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
            "{} {}: {}",
            r.status,
            uri,
            body
        );
        prop_assert!(
            r.content_type().starts_with("application/json"),
            "{}: {}",
            uri,
            r.content_type()
        );
        let v: Value = serde_json::from_slice(&r.bytes)
            .map_err(|e| TestCaseError::fail(format!("{uri}: not JSON ({e}): {body}")))?;
        if r.status == StatusCode::BAD_REQUEST {
            prop_assert_eq!(&v["httpStatusCode"], 400, "{}", v);
            prop_assert_eq!(&v["status"], "ERROR", "{}", v);
        } else {
            prop_assert!(v[plural].is_array(), "{}: {}", uri, v);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
