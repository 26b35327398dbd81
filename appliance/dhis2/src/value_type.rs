//! DHIS2 value types: whether a text is a valid value of a `valueType`, for tracker attribute
//! and data values and aggregate data values alike.
//!
//! One checker for the whole box, so a value the tracker accepts is never one the aggregate
//! module refuses (or the other way round), and so what the box accepts is what national DHIS2
//! 2.42 accepts when the uplink pushes it (`ValidationUtils.valueIsValid`). The box is stricter
//! than DHIS2 in two places: control characters are refused for every value type (national's
//! Postgres refuses NUL, so such a value could never be synchronised), and a JSON object or
//! array is never taken as a value's text.
//!
//! Reasons are DHIS2's keys (`value_not_numeric`, …); they go into E1007/E1302 (tracker) and
//! E7619 (aggregate) messages. No reason ever carries the value, and [`excerpt`] cuts whatever
//! a caller echoes from a payload to a short prefix.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::{Dhis2Timestamp, Uid};

/// The longest value DHIS2 stores, for every value type (`VALUE_MAX_LENGTH`), in UTF-16 code
/// units as Java counts them. Comments have the same limit.
pub const MAX_VALUE_LENGTH: usize = 50_000;
/// The longest tracked entity attribute value DHIS2 stores (`MAX_ATTR_VALUE_LENGTH`, E1077).
pub const MAX_ATTRIBUTE_VALUE_LENGTH: usize = 1_200;
/// The longest `storedBy` DHIS2 stores.
pub const MAX_STORED_BY_LENGTH: usize = 255;
/// How many characters of a payload's text an error message or report may echo.
pub const EXCERPT_CHARS: usize = 40;

/// What a value deserialiser records for a JSON object or array, so the importer refuses that
/// one value instead of failing the whole payload (the payload structs keep `Option<String>`).
/// It starts with NUL, so a client that sends this text literally is refused all the same.
pub(crate) const NOT_SCALAR: &str = "\u{0}(not a string, number or boolean)";

/// The longest number DHIS2 accepts (`MathUtils.NUMBER_MAX_LENGTH`: shorter than 250).
const NUMBER_MAX_LENGTH: usize = 250;

/// Why a value does not fit its value type; the message is DHIS2's reason key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A JSON object or array was sent as the value.
    #[error("value_not_string_number_or_boolean")]
    NotScalar,
    #[error("value_length_greater_than_max_length")]
    TooLong,
    /// A tracked entity attribute value longer than [`MAX_ATTRIBUTE_VALUE_LENGTH`] (E1077).
    #[error("attribute_value_too_long")]
    AttributeTooLong,
    /// U+0000–U+001F other than TAB, LF and CR, or U+007F.
    #[error("value_contains_control_characters")]
    ControlCharacter,
    #[error("value_not_numeric")]
    NotNumeric,
    #[error("value_not_unit_interval")]
    NotUnitInterval,
    #[error("value_not_percentage")]
    NotPercentage,
    #[error("value_not_integer")]
    NotInteger,
    #[error("value_not_positive_integer")]
    NotPositiveInteger,
    #[error("value_not_negative_integer")]
    NotNegativeInteger,
    #[error("value_not_zero_or_positive_integer")]
    NotZeroOrPositiveInteger,
    #[error("value_not_bool")]
    NotBool,
    #[error("value_not_true_only")]
    NotTrueOnly,
    #[error("value_not_valid_date")]
    NotDate,
    #[error("value_not_valid_datetime")]
    NotDateTime,
    #[error("value_not_valid_time")]
    NotTime,
    #[error("value_not_valid_letter")]
    NotLetter,
    #[error("value_not_valid_email")]
    NotEmail,
    #[error("value_not_valid_phone_number")]
    NotPhoneNumber,
    #[error("value_not_url")]
    NotUrl,
    #[error("value_not_coordinate")]
    NotCoordinate,
    /// `FILE_RESOURCE` and `IMAGE` values are file resource UIDs.
    #[error("value_not_valid_file_resource_uid")]
    NotFileResource,
    #[error("value_not_valid_org_unit")]
    NotOrgUnit,
    #[error("value_not_valid_tracker_associate")]
    NotTrackerAssociate,
}

/// `value` checked against `value_type`. `Ok` holds the value to store: booleans normalised to
/// `true`/`false` (DHIS2 accepts `1`/`0`/`t`/`f` in any case), everything else unchanged. A
/// blank value (only whitespace) passes, as in DHIS2; callers treat it as "no value".
pub fn check<'v>(value_type: &str, value: &'v str) -> Result<Cow<'v, str>, ValueError> {
    check_text(value)?;
    if is_blank(value) {
        return Ok(Cow::Borrowed(value));
    }
    check_type(value_type, value)
}

/// [`check`] for a tracked entity attribute value, which DHIS2 also limits to
/// [`MAX_ATTRIBUTE_VALUE_LENGTH`].
pub fn check_attribute<'v>(value_type: &str, value: &'v str) -> Result<Cow<'v, str>, ValueError> {
    if value == NOT_SCALAR {
        return Err(ValueError::NotScalar);
    }
    if longer_than(value, MAX_ATTRIBUTE_VALUE_LENGTH) {
        return Err(ValueError::AttributeTooLong);
    }
    check(value_type, value)
}

/// The checks every value gets whatever its type: a scalar, at most [`MAX_VALUE_LENGTH`], no
/// control characters. The aggregate import runs this on the value as posted, before it trims
/// it, so a control character at either end is refused rather than silently dropped.
pub fn check_text(value: &str) -> Result<(), ValueError> {
    if value == NOT_SCALAR {
        return Err(ValueError::NotScalar);
    }
    if longer_than(value, MAX_VALUE_LENGTH) {
        return Err(ValueError::TooLong);
    }
    if value.chars().any(is_forbidden_control) {
        return Err(ValueError::ControlCharacter);
    }
    Ok(())
}

/// Only whitespace: DHIS2 does not type-check it, and the box stores it as no value.
pub fn is_blank(value: &str) -> bool {
    value.trim().is_empty()
}

/// Whether `text` is longer than `max` UTF-16 code units (Java's `String.length()`, which
/// DHIS2's limits count), so the box never accepts a value national would refuse.
pub fn longer_than(text: &str, max: usize) -> bool {
    // A UTF-16 code unit takes at least one UTF-8 byte: short texts need no counting, and long
    // ones are counted only up to the limit.
    text.len() > max && text.encode_utf16().nth(max).is_some()
}

/// At most [`EXCERPT_CHARS`] characters of `text`, with `…` when it was cut and control
/// characters shown as U+FFFD: what an error message or import report may echo of a payload,
/// so a huge value cannot blow up a report (or the job record that keeps it).
pub fn excerpt(text: &str) -> Cow<'_, str> {
    excerpt_of(text, EXCERPT_CHARS)
}

/// At most [`MESSAGE_CHARS`] characters of an error message, cut as [`excerpt`] cuts: a message
/// may quote a filter, a path or a field list a request sent.
pub fn excerpt_message(text: &str) -> Cow<'_, str> {
    excerpt_of(text, MESSAGE_CHARS)
}

/// The longest error message a request's input can make the box answer with.
pub const MESSAGE_CHARS: usize = 300;

/// At most `max_chars` characters of `text`, cut as [`excerpt`] cuts.
pub fn excerpt_of(text: &str, max_chars: usize) -> Cow<'_, str> {
    let cut = text.char_indices().nth(max_chars).map(|(i, _)| i);
    let head = &text[..cut.unwrap_or(text.len())];
    if cut.is_none() && !head.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out: String = head
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if cut.is_some() {
        out.push('…');
    }
    Cow::Owned(out)
}

/// Whether values of this type are numbers (zero may be insignificant for them).
pub fn is_numeric(value_type: &str) -> bool {
    matches!(
        value_type,
        "NUMBER"
            | "UNIT_INTERVAL"
            | "PERCENTAGE"
            | "INTEGER"
            | "INTEGER_POSITIVE"
            | "INTEGER_NEGATIVE"
            | "INTEGER_ZERO_OR_POSITIVE"
    )
}

/// Whether values of this type are file resource UIDs.
pub fn is_file(value_type: &str) -> bool {
    matches!(value_type, "FILE_RESOURCE" | "IMAGE")
}

/// A numeric value that equals zero.
pub fn is_zero(value: &str) -> bool {
    value.parse::<f64>().is_ok_and(|v| v == 0.0)
}

/// The rule of one value type, for a value that passed [`check_text`] and is not blank.
fn check_type<'v>(value_type: &str, value: &'v str) -> Result<Cow<'v, str>, ValueError> {
    use ValueError as E;
    let rule = |ok: bool, err: ValueError| {
        if ok {
            Ok(Cow::Borrowed(value))
        } else {
            Err(err)
        }
    };
    match value_type {
        "NUMBER" => rule(is_number(value), E::NotNumeric),
        "UNIT_INTERVAL" => rule(number_in(value, 0.0, 1.0), E::NotUnitInterval),
        "PERCENTAGE" => rule(number_in(value, 0.0, 100.0), E::NotPercentage),
        "INTEGER" => rule(is_int(value, true, true, true), E::NotInteger),
        "INTEGER_POSITIVE" => rule(is_int(value, false, false, true), E::NotPositiveInteger),
        "INTEGER_NEGATIVE" => rule(is_int(value, true, false, false), E::NotNegativeInteger),
        "INTEGER_ZERO_OR_POSITIVE" => rule(
            is_int(value, false, true, true),
            E::NotZeroOrPositiveInteger,
        ),
        "BOOLEAN" => normalize_bool(value).map(Cow::Borrowed).ok_or(E::NotBool),
        "TRUE_ONLY" => match normalize_bool(value) {
            Some("true") => Ok(Cow::Borrowed("true")),
            _ => Err(E::NotTrueOnly),
        },
        "DATE" | "AGE" => rule(Dhis2Timestamp::parse_lenient(value).is_ok(), E::NotDate),
        "DATETIME" => rule(Dhis2Timestamp::parse_lenient(value).is_ok(), E::NotDateTime),
        "TIME" => rule(is_time(value), E::NotTime),
        "LETTER" => rule(is_letter(value), E::NotLetter),
        "EMAIL" => rule(is_email(value), E::NotEmail),
        "PHONE_NUMBER" => rule(is_phone(value), E::NotPhoneNumber),
        "URL" => rule(is_url(value), E::NotUrl),
        "COORDINATE" => rule(is_coordinate(value), E::NotCoordinate),
        "FILE_RESOURCE" | "IMAGE" => rule(Uid::is_valid(value), E::NotFileResource),
        "ORGANISATION_UNIT" => rule(Uid::is_valid(value), E::NotOrgUnit),
        "TRACKER_ASSOCIATE" => rule(Uid::is_valid(value), E::NotTrackerAssociate),
        // TEXT, LONG_TEXT, MULTI_TEXT (checked against its option set by the caller),
        // USERNAME, GEOJSON, REFERENCE and types we do not know: the common checks only.
        _ => Ok(Cow::Borrowed(value)),
    }
}

fn is_forbidden_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{7F}')
}

/// DHIS2's boolean spellings (`normalizeBoolean`, and `valueIsValid` ignoring case).
fn normalize_bool(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Some("true"),
        "false" | "f" | "0" => Some("false"),
        _ => None,
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// DHIS2's numeric pattern `^(-?0|-?[1-9]\d*)(\.\d+)?(E(-)?\d+)?$`, finite, shorter than
/// 250 characters.
fn is_number(v: &str) -> bool {
    if v.len() >= NUMBER_MAX_LENGTH {
        return false;
    }
    let (mantissa, exp) = match v.split_once('E') {
        Some((m, e)) => (m, Some(e)),
        None => (v, None),
    };
    if exp.is_some_and(|e| !all_digits(e.strip_prefix('-').unwrap_or(e))) {
        return false;
    }
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    if frac.is_some_and(|f| !all_digits(f)) {
        return false;
    }
    let int = int.strip_prefix('-').unwrap_or(int);
    all_digits(int)
        && (int == "0" || !int.starts_with('0'))
        && v.parse::<f64>().is_ok_and(f64::is_finite)
}

fn number_in(v: &str, lo: f64, hi: f64) -> bool {
    is_number(v) && v.parse::<f64>().is_ok_and(|n| (lo..=hi).contains(&n))
}

/// Integers without leading zeros that fit DHIS2's 32-bit integers (`INT_PATTERN` and
/// `IntegerValidator`); `-0` is not an integer there.
fn is_int(v: &str, negative: bool, zero: bool, positive: bool) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if !all_digits(digits) || (digits.len() > 1 && digits.starts_with('0')) {
        return false;
    }
    match v.parse::<i32>() {
        Ok(0) => zero && !v.starts_with('-'),
        Ok(n) if n < 0 => negative,
        Ok(_) => positive,
        Err(_) => false,
    }
}

/// DHIS2's `^([0-9]|0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]$`.
fn is_time(v: &str) -> bool {
    let Some((h, m)) = v.split_once(':') else {
        return false;
    };
    (1..=2).contains(&h.len())
        && all_digits(h)
        && h.parse::<u8>().is_ok_and(|h| h < 24)
        && m.len() == 2
        && all_digits(m)
        && m.parse::<u8>().is_ok_and(|m| m < 60)
}

/// One letter that is one UTF-16 code unit, as Java's `Character.isLetter(value.charAt(0))`
/// with `length() == 1` sees it.
fn is_letter(v: &str) -> bool {
    let mut chars = v.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => c.is_alphabetic() && c.len_utf16() == 1,
        _ => false,
    }
}

fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
        && !v.chars().any(char::is_whitespace)
}

/// DHIS2's generic phone pattern `^[0-9+\(\)#\.\s\/ext-]{6,50}$` (spaces only for `\s`).
fn is_phone(v: &str) -> bool {
    let n = v.chars().count();
    (6..=50).contains(&n)
        && v.chars().all(|c| {
            c.is_ascii_digit()
                || matches!(
                    c,
                    '+' | '(' | ')' | '#' | '.' | ' ' | '/' | '-' | 'e' | 'x' | 't'
                )
        })
}

/// An `http`, `https` or `ftp` URL (the schemes of DHIS2's `UrlValidator`).
fn is_url(v: &str) -> bool {
    ["http://", "https://", "ftp://"].iter().any(|p| {
        v.len() > p.len()
            && v.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
    }) && !v.chars().any(char::is_whitespace)
}

/// `[longitude, latitude]` within range.
fn is_coordinate(v: &str) -> bool {
    let Some(inner) = v.trim().strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [lng, lat] => {
            lng.parse::<f64>()
                .is_ok_and(|x| (-180.0..=180.0).contains(&x))
                && lat
                    .parse::<f64>()
                    .is_ok_and(|y| (-90.0..=90.0).contains(&y))
        }
        _ => false,
    }
}

/// Deserialises an attribute or data value as DHIS2 reads it: a string as is, a number or a
/// boolean as its JSON text, `null` (or a missing field, with `#[serde(default)]`) as `None`,
/// which the importers take as "delete this value". An object or array is skipped without
/// building it and recorded as [`NOT_SCALAR`], so the importer refuses that one value with its
/// usual per-value error instead of storing JSON text or failing the whole payload.
pub(crate) fn deserialize_value<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    d.deserialize_option(ScalarText)
}

struct ScalarText;

impl<'de> Visitor<'de> for ScalarText {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // The text serde_json gives the number, as before this visitor existed.
        Ok(Some(
            serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string()),
        ))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some(NOT_SCALAR.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Some(NOT_SCALAR.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ValueError as E;

    /// Every value type with values it accepts and values it refuses (and the reason).
    #[test]
    fn every_value_type_accepts_and_refuses() {
        let cases: &[(&str, &[&str], &[&str], ValueError)] = &[
            (
                "NUMBER",
                &["0", "-0", "12", "-3.5", "1.25E3", "2E-2", "0.5", "36.6"],
                &[
                    "007", "+1", ".5", "1.", "1e3", "abc", "1,5", "NaN", "warm", " 5",
                ],
                E::NotNumeric,
            ),
            (
                "UNIT_INTERVAL",
                &["0", "0.3", "1", "1.0"],
                &["1.01", "-0.1", "x", "1e0"],
                E::NotUnitInterval,
            ),
            (
                "PERCENTAGE",
                &["0", "99.5", "100"],
                &["101", "100.5", "-1", "ten"],
                E::NotPercentage,
            ),
            (
                "INTEGER",
                &["0", "-4", "2147483647", "-2147483648"],
                &["3000000000", "1.0", "01", "-0", "+1", "x"],
                E::NotInteger,
            ),
            (
                "INTEGER_POSITIVE",
                &["1", "3"],
                &["0", "-1", "01", "1.5"],
                E::NotPositiveInteger,
            ),
            (
                "INTEGER_NEGATIVE",
                &["-4", "-1"],
                &["0", "-0", "4", "-01"],
                E::NotNegativeInteger,
            ),
            (
                "INTEGER_ZERO_OR_POSITIVE",
                &["0", "7"],
                &["-1", "1.0", "00"],
                E::NotZeroOrPositiveInteger,
            ),
            ("BOOLEAN", &["true", "false"], &["yes", "2"], E::NotBool),
            (
                "TRUE_ONLY",
                &["true"],
                &["false", "0", "yes"],
                E::NotTrueOnly,
            ),
            (
                "DATE",
                &["2024-02-29", "2024-02-29T10:00:00.000"],
                &["2023-02-29", "29/02/2024", "2024-2-9", "2024-02-29T25:00"],
                E::NotDate,
            ),
            ("AGE", &["1990-04-02"], &["34"], E::NotDate),
            (
                "DATETIME",
                &["2024-02-29T10:00:00.000", "2024-02-29 10:00", "2024-02-29"],
                &["2024-02-29T10", "now"],
                E::NotDateTime,
            ),
            (
                "TIME",
                &["09:30", "9:30", "23:59", "00:00"],
                &["24:00", "9.30", "12:60", "123:00", "+9:30", "12:5"],
                E::NotTime,
            ),
            ("LETTER", &["a", "Z", "é"], &["ab", "1", "-"], E::NotLetter),
            (
                "EMAIL",
                &["a@b.org", "first.last@clinic.example.org"],
                &[
                    "nope",
                    "a@b",
                    "@b.org",
                    "a@b@c.org",
                    "a b@c.org",
                    "a@.org",
                    "a@b..org",
                ],
                E::NotEmail,
            ),
            (
                "PHONE_NUMBER",
                &["+254 700 000000", "(020) 123-4567", "123456", "0700 ext 12"],
                &["call me", "12345", &"1".repeat(51)],
                E::NotPhoneNumber,
            ),
            (
                "URL",
                &[
                    "http://a.org",
                    "HTTPS://clinic.example/x?y=1",
                    "ftp://files",
                ],
                &["http://", "www.a.org", "http://a b", "mailto:a@b.org"],
                E::NotUrl,
            ),
            (
                "COORDINATE",
                &["[36.8, -1.3]", "[-180,90]"],
                &[
                    "[236.8, -1.3]",
                    "[36.8,-91]",
                    "36.8,-1.3",
                    "[1,2,3]",
                    "[a,b]",
                ],
                E::NotCoordinate,
            ),
            (
                "FILE_RESOURCE",
                &["Xk3LmN8pQr2"],
                &["not-a-uid", "x"],
                E::NotFileResource,
            ),
            ("IMAGE", &["Kj6vYde4LHh"], &["x"], E::NotFileResource),
            (
                "ORGANISATION_UNIT",
                &["cbClinicA01"],
                &["clinic A"],
                E::NotOrgUnit,
            ),
            (
                "TRACKER_ASSOCIATE",
                &["Kj6vYde4LHh"],
                &["android"],
                E::NotTrackerAssociate,
            ),
        ];
        for (vt, good, bad, err) in cases {
            for v in *good {
                assert!(check(vt, v).is_ok(), "{vt} should accept {v:?}");
            }
            for v in *bad {
                assert_eq!(check(vt, v), Err(*err), "{vt} should refuse {v:?}");
            }
        }
    }

    #[test]
    fn text_types_take_anything_printable() {
        for vt in [
            "TEXT",
            "LONG_TEXT",
            "MULTI_TEXT",
            "USERNAME",
            "GEOJSON",
            "REFERENCE",
            "SOMETHING_NEW",
        ] {
            assert!(
                check(vt, "anything, even\ttabs\r\nand lines").is_ok(),
                "{vt}"
            );
        }
    }

    #[test]
    fn booleans_are_normalised() {
        for (raw, stored) in [
            ("1", "true"),
            ("t", "true"),
            ("TRUE", "true"),
            ("True", "true"),
            ("F", "false"),
            ("0", "false"),
            ("FALSE", "false"),
        ] {
            assert_eq!(check("BOOLEAN", raw).as_deref(), Ok(stored), "{raw}");
        }
        assert_eq!(check("TRUE_ONLY", "1").as_deref(), Ok("true"));
        assert_eq!(check("TRUE_ONLY", "T").as_deref(), Ok("true"));
        assert_eq!(check("NUMBER", "5"), Ok(Cow::Borrowed("5")));
    }

    #[test]
    fn blank_values_are_not_type_checked() {
        // DHIS2's `valueIsValid` passes blank values; the importers store them as no value.
        assert!(check("NUMBER", "").is_ok());
        for vt in ["NUMBER", "DATE", "BOOLEAN", "TRUE_ONLY", "EMAIL", "TEXT"] {
            assert!(check(vt, "   ").is_ok(), "{vt}");
            assert!(check(vt, "\t\r\n").is_ok(), "{vt}");
        }
        assert!(is_blank(" \t") && is_blank("") && !is_blank(" x "));
    }

    #[test]
    fn every_type_has_the_same_length_limit() {
        for vt in ["TEXT", "LONG_TEXT", "MULTI_TEXT", "GEOJSON"] {
            assert!(check(vt, &"x".repeat(MAX_VALUE_LENGTH)).is_ok(), "{vt}");
            assert_eq!(
                check(vt, &"x".repeat(MAX_VALUE_LENGTH + 1)),
                Err(E::TooLong),
                "{vt}"
            );
        }
        // Too long wins over the type rule.
        assert_eq!(
            check("NUMBER", &"1".repeat(MAX_VALUE_LENGTH + 1)),
            Err(E::TooLong)
        );
        assert_eq!(
            check("NUMBER", &"1".repeat(NUMBER_MAX_LENGTH)),
            Err(E::NotNumeric)
        );
        assert!(check("NUMBER", &"1".repeat(NUMBER_MAX_LENGTH - 1)).is_ok());
    }

    #[test]
    fn lengths_count_utf16_code_units_as_dhis2_does() {
        // 'é' is one UTF-16 unit (two UTF-8 bytes); '😀' is two units (four bytes).
        assert!(check("TEXT", &"é".repeat(MAX_VALUE_LENGTH)).is_ok());
        assert_eq!(
            check("TEXT", &"😀".repeat(MAX_VALUE_LENGTH / 2 + 1)),
            Err(E::TooLong)
        );
        assert!(check("TEXT", &"😀".repeat(MAX_VALUE_LENGTH / 2)).is_ok());
        assert!(!longer_than("abc", 3) && longer_than("abcd", 3));
        assert!(longer_than("😀😀", 3) && !longer_than("😀a", 3));
    }

    #[test]
    fn attribute_values_have_dhis2s_shorter_limit() {
        let max = "x".repeat(MAX_ATTRIBUTE_VALUE_LENGTH);
        assert!(check_attribute("TEXT", &max).is_ok());
        assert_eq!(
            check_attribute("TEXT", &format!("{max}x")),
            Err(E::AttributeTooLong)
        );
        assert_eq!(
            check_attribute("TEXT", &"x".repeat(MAX_VALUE_LENGTH + 1)),
            Err(E::AttributeTooLong)
        );
        assert_eq!(
            check_attribute("TEXT", &"😀".repeat(MAX_ATTRIBUTE_VALUE_LENGTH / 2 + 1)),
            Err(E::AttributeTooLong)
        );
        // The other rules still apply.
        assert_eq!(check_attribute("NUMBER", "x"), Err(E::NotNumeric));
        assert_eq!(check_attribute("TEXT", "a\0b"), Err(E::ControlCharacter));
        assert_eq!(check_attribute("TEXT", NOT_SCALAR), Err(E::NotScalar));
    }

    #[test]
    fn control_characters_are_refused_for_every_type() {
        let forbidden = (0u32..0x20)
            .filter(|c| ![0x09, 0x0A, 0x0D].contains(c))
            .chain([0x7F])
            .filter_map(char::from_u32);
        for c in forbidden {
            for vt in [
                "TEXT",
                "LONG_TEXT",
                "NUMBER",
                "BOOLEAN",
                "DATE",
                "PHONE_NUMBER",
            ] {
                for v in [
                    format!("{c}"),
                    format!("1{c}"),
                    format!("{c}1"),
                    format!("a{c}b"),
                ] {
                    assert_eq!(
                        check(vt, &v),
                        Err(E::ControlCharacter),
                        "{vt} {:?}",
                        c as u32
                    );
                }
            }
        }
        for ok in [
            "tab\there",
            "line\nbreak",
            "crlf\r\n",
            "é ü ß 中文 \u{A0}\u{80}",
        ] {
            assert!(check("TEXT", ok).is_ok(), "{ok:?}");
            assert!(check_text(ok).is_ok(), "{ok:?}");
        }
        assert_eq!(check_text("5\u{B}"), Err(E::ControlCharacter));
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(excerpt("OPD-000001"), "OPD-000001");
        assert!(matches!(excerpt("OPD-000001"), Cow::Borrowed(_)));
        let forty = "y".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&forty), forty.as_str());
        assert_eq!(excerpt(&format!("{forty}z")), format!("{forty}…"));
        let huge = "é".repeat(2 * 1024 * 1024);
        let cut = excerpt(&huge);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("a\0b\u{7F}"), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn reasons_are_dhis2s_keys_and_never_echo_the_value() {
        assert_eq!(
            check("INTEGER_ZERO_OR_POSITIVE", "-4")
                .unwrap_err()
                .to_string(),
            "value_not_zero_or_positive_integer"
        );
        assert_eq!(
            check("NUMBER", "abc").unwrap_err().to_string(),
            "value_not_numeric"
        );
        assert_eq!(
            check("BOOLEAN", "yes").unwrap_err().to_string(),
            "value_not_bool"
        );
        assert_eq!(
            check("TRUE_ONLY", "false").unwrap_err().to_string(),
            "value_not_true_only"
        );
        assert_eq!(
            E::TooLong.to_string(),
            "value_length_greater_than_max_length"
        );
        assert_eq!(
            E::ControlCharacter.to_string(),
            "value_contains_control_characters"
        );
        assert_eq!(
            E::NotScalar.to_string(),
            "value_not_string_number_or_boolean"
        );
        for e in [
            E::NotScalar,
            E::AttributeTooLong,
            E::TooLong,
            E::NotTrackerAssociate,
        ] {
            assert!(e.to_string().chars().count() <= EXCERPT_CHARS, "{e}");
        }
    }

    #[test]
    fn numeric_file_and_zero_helpers() {
        assert!(is_numeric("INTEGER_POSITIVE") && !is_numeric("TEXT"));
        assert!(is_file("IMAGE") && is_file("FILE_RESOURCE") && !is_file("URL"));
        assert!(is_zero("0.0") && is_zero("0") && !is_zero("0.1"));
    }

    #[derive(serde::Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "deserialize_value")]
        value: Option<String>,
    }

    fn read(json: &str) -> Option<String> {
        serde_json::from_str::<Holder>(json).unwrap().value
    }

    #[test]
    fn values_deserialise_from_scalars_and_mark_objects_and_arrays() {
        assert_eq!(read(r#"{"value": "x"}"#).as_deref(), Some("x"));
        assert_eq!(read(r#"{"value": 42}"#).as_deref(), Some("42"));
        assert_eq!(read(r#"{"value": -3}"#).as_deref(), Some("-3"));
        assert_eq!(read(r#"{"value": 61.5}"#).as_deref(), Some("61.5"));
        assert_eq!(read(r#"{"value": true}"#).as_deref(), Some("true"));
        assert_eq!(read(r#"{"value": null}"#), None);
        assert_eq!(read("{}"), None);
        for non_scalar in [r#"{"a": [1, {"b": 2}]}"#, "[1, 2]", "[]", "{}"] {
            let v = read(&format!(r#"{{"value": {non_scalar}}}"#));
            assert_eq!(v.as_deref(), Some(NOT_SCALAR), "{non_scalar}");
            assert_eq!(check("TEXT", NOT_SCALAR), Err(E::NotScalar));
        }
        // Through serde_json::Value too (the tracker's nested payload tests use it).
        let v: Holder = serde_json::from_value(serde_json::json!({"value": {"a": 1}})).unwrap();
        assert_eq!(v.value.as_deref(), Some(NOT_SCALAR));
        let v: Holder = serde_json::from_value(serde_json::json!({"value": 7})).unwrap();
        assert_eq!(v.value.as_deref(), Some("7"));
    }
}
