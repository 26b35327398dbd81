//! Data value checks by `valueType`, with DHIS2's reason keys (`value_not_numeric`, …) so a
//! conflict reads as national DHIS2's would.

use clinicbox_dhis2::{Dhis2Timestamp, Uid};

/// The longest value or comment DHIS2 stores.
pub const MAX_LENGTH: usize = 50_000;
/// The longest `storedBy` DHIS2 stores.
pub const MAX_STORED_BY: usize = 255;

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

/// `value` checked against `value_type`; `Ok` holds the value to store (booleans normalised
/// from `1`/`0`/`t`/`f` as DHIS2 does), `Err` DHIS2's reason key.
pub fn check(value_type: &str, value: &str) -> Result<String, &'static str> {
    if value.chars().count() > MAX_LENGTH {
        return Err("value_length_greater_than_max_length");
    }
    let ok = |good: bool, reason: &'static str| {
        if good {
            Ok(value.to_string())
        } else {
            Err(reason)
        }
    };
    match value_type {
        "NUMBER" => ok(is_number(value), "value_not_numeric"),
        "UNIT_INTERVAL" => ok(
            is_number(value) && number_in(value, 0.0, 1.0),
            "value_not_unit_interval",
        ),
        "PERCENTAGE" => ok(
            is_number(value) && number_in(value, 0.0, 100.0),
            "value_not_percentage",
        ),
        "INTEGER" => ok(is_int(value, true, true, true), "value_not_integer"),
        "INTEGER_POSITIVE" => ok(
            is_int(value, false, false, true),
            "value_not_positive_integer",
        ),
        "INTEGER_NEGATIVE" => ok(
            is_int(value, true, false, false),
            "value_not_negative_integer",
        ),
        "INTEGER_ZERO_OR_POSITIVE" => ok(
            is_int(value, false, true, true),
            "value_not_zero_or_positive_integer",
        ),
        "BOOLEAN" => match normalize_bool(value) {
            Some(b) => Ok(b.to_string()),
            None => Err("value_not_bool"),
        },
        "TRUE_ONLY" => match normalize_bool(value) {
            Some("true") => Ok("true".into()),
            _ => Err("value_not_true_only"),
        },
        "DATE" | "AGE" => ok(is_date(value), "value_not_valid_date"),
        "DATETIME" => ok(
            Dhis2Timestamp::parse_lenient(value).is_ok(),
            "value_not_valid_datetime",
        ),
        "TIME" => ok(is_time(value), "value_not_valid_time"),
        "LETTER" => ok(
            value.chars().count() == 1 && value.chars().all(char::is_alphabetic),
            "value_not_valid_letter",
        ),
        "EMAIL" => ok(is_email(value), "value_not_valid_email"),
        "PHONE_NUMBER" => ok(is_phone(value), "value_not_valid_phone_number"),
        "URL" => ok(is_url(value), "value_not_url"),
        "COORDINATE" => ok(is_coordinate(value), "value_not_coordinate"),
        "FILE_RESOURCE" => ok(Uid::is_valid(value), "value_not_valid_file_resource_uid"),
        "IMAGE" => ok(Uid::is_valid(value), "value_not_valid_image"),
        "ORGANISATION_UNIT" => ok(Uid::is_valid(value), "value_not_valid_org_unit"),
        // TEXT, LONG_TEXT, MULTI_TEXT (checked against its option set), USERNAME, GEOJSON,
        // REFERENCE, TRACKER_ASSOCIATE and types we do not know: the length check above.
        _ => Ok(value.to_string()),
    }
}

/// A numeric value that equals zero.
pub fn is_zero(value: &str) -> bool {
    value.parse::<f64>().is_ok_and(|v| v == 0.0)
}

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

/// DHIS2's numeric pattern `^(-?0|-?[1-9]\d*)(\.\d+)?(E(-)?\d+)?$`.
fn is_number(v: &str) -> bool {
    let (mantissa, exp) = match v.split_once('E') {
        Some((m, e)) => (m, Some(e)),
        None => (v, None),
    };
    if let Some(e) = exp {
        if !all_digits(e.strip_prefix('-').unwrap_or(e)) {
            return false;
        }
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
    v.parse::<f64>().is_ok_and(|n| (lo..=hi).contains(&n))
}

/// Integers without leading zeros that fit DHIS2's 32-bit integer columns.
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

fn is_date(v: &str) -> bool {
    v.len() == 10 && v.parse::<jiff::civil::Date>().is_ok()
}

fn is_time(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 5
        && b[2] == b':'
        && all_digits(&v[..2])
        && all_digits(&v[3..])
        && v[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && v[3..].parse::<u8>().is_ok_and(|m| m < 60)
}

fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !v.chars().any(char::is_whitespace)
}

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

fn is_url(v: &str) -> bool {
    ["http://", "https://", "ftp://"]
        .iter()
        .any(|p| v.len() > p.len() && v.to_ascii_lowercase().starts_with(p))
        && !v.chars().any(char::is_whitespace)
}

/// `[longitude, latitude]`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_dhis2s_patterns() {
        for ok in ["0", "-0", "12", "-3.5", "1.25E3", "2E-2", "0.5"] {
            assert!(check("NUMBER", ok).is_ok(), "{ok}");
        }
        for bad in ["007", "+1", ".5", "1.", "1e3", "abc", "", "1,5", "NaN"] {
            assert_eq!(check("NUMBER", bad), Err("value_not_numeric"), "{bad}");
        }
        assert!(check("INTEGER_ZERO_OR_POSITIVE", "0").is_ok());
        assert!(check("INTEGER_ZERO_OR_POSITIVE", "-1").is_err());
        assert!(check("INTEGER_ZERO_OR_POSITIVE", "1.0").is_err());
        assert!(check("INTEGER_POSITIVE", "0").is_err());
        assert!(check("INTEGER_NEGATIVE", "-4").is_ok());
        assert!(check("INTEGER", "3000000000").is_err());
        assert!(check("PERCENTAGE", "100").is_ok());
        assert!(check("PERCENTAGE", "100.5").is_err());
        assert!(check("UNIT_INTERVAL", "0.3").is_ok());
    }

    #[test]
    fn booleans_are_normalised() {
        assert_eq!(check("BOOLEAN", "1"), Ok("true".into()));
        assert_eq!(check("BOOLEAN", "F"), Ok("false".into()));
        assert_eq!(check("BOOLEAN", "yes"), Err("value_not_bool"));
        assert_eq!(check("TRUE_ONLY", "false"), Err("value_not_true_only"));
    }

    #[test]
    fn dates_times_and_text_shapes() {
        assert!(check("DATE", "2024-02-29").is_ok());
        assert!(check("DATE", "2023-02-29").is_err());
        assert!(check("DATETIME", "2024-02-29T10:00:00.000").is_ok());
        assert!(check("TIME", "23:59").is_ok());
        assert!(check("TIME", "24:00").is_err());
        assert!(check("LETTER", "a").is_ok());
        assert!(check("LETTER", "ab").is_err());
        assert!(check("EMAIL", "a@b.org").is_ok());
        assert!(check("EMAIL", "a@b").is_err());
        assert!(check("PHONE_NUMBER", "+254 700 000000").is_ok());
        assert!(check("COORDINATE", "[36.8, -1.3]").is_ok());
        assert!(check("COORDINATE", "[236.8, -1.3]").is_err());
        assert!(check("FILE_RESOURCE", "Xk3LmN8pQr2").is_ok());
        assert!(check("FILE_RESOURCE", "not-a-uid").is_err());
        assert!(check("TEXT", &"x".repeat(MAX_LENGTH + 1)).is_err());
        assert!(is_zero("0.0") && !is_zero("0.1"));
    }
}
