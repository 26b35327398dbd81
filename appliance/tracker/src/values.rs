//! DHIS2 value types: whether a text is a valid value of a `valueType`.

use clinicbox_dhis2::{Dhis2Timestamp, Uid};

/// Why a value does not fit its value type (the text goes into E1007/E1302 messages).
pub fn check(value_type: &str, value: &str) -> Result<(), String> {
    let bad = |what: &str| Err(format!("Value '{value}' is not a valid {what}"));
    let num = || value.trim().parse::<f64>().ok().filter(|f| f.is_finite());
    let int = || {
        let v = value.trim();
        (!v.is_empty() && v.len() <= 19)
            .then(|| v.parse::<i64>().ok())
            .flatten()
    };
    match value_type {
        "TEXT" | "LONG_TEXT" | "MULTI_TEXT" | "USERNAME" | "GEOJSON" | "REFERENCE" => {
            if value_type == "TEXT" && value.chars().count() > 50_000 {
                return bad("text (too long)");
            }
            Ok(())
        }
        "LETTER" => {
            if value.chars().count() == 1 && value.chars().all(char::is_alphabetic) {
                Ok(())
            } else {
                bad("letter")
            }
        }
        "PHONE_NUMBER" => {
            let ok = !value.is_empty()
                && value.len() <= 50
                && value
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-().".contains(c))
                && value.chars().any(|c| c.is_ascii_digit());
            if ok { Ok(()) } else { bad("phone number") }
        }
        "EMAIL" => {
            let ok = value
                .split_once('@')
                .is_some_and(|(a, b)| !a.is_empty() && b.contains('.') && !value.contains(' '));
            if ok { Ok(()) } else { bad("email") }
        }
        "BOOLEAN" => match value {
            "true" | "false" => Ok(()),
            _ => bad("boolean"),
        },
        "TRUE_ONLY" => match value {
            "true" => Ok(()),
            _ => bad("true-only value"),
        },
        "DATE" | "AGE" => {
            if value.len() >= 10 && Dhis2Timestamp::parse_lenient(value).is_ok() {
                Ok(())
            } else {
                bad("date")
            }
        }
        "DATETIME" => {
            if Dhis2Timestamp::parse_lenient(value).is_ok() {
                Ok(())
            } else {
                bad("date and time")
            }
        }
        "TIME" => {
            let b = value.as_bytes();
            let ok = b.len() == 5
                && b[2] == b':'
                && value[..2].parse::<u8>().is_ok_and(|h| h < 24)
                && value[3..].parse::<u8>().is_ok_and(|m| m < 60);
            if ok { Ok(()) } else { bad("time") }
        }
        "NUMBER" => num().map(|_| ()).ok_or(()).or_else(|_| bad("number")),
        "UNIT_INTERVAL" => match num() {
            Some(f) if (0.0..=1.0).contains(&f) => Ok(()),
            _ => bad("unit interval"),
        },
        "PERCENTAGE" => match num() {
            Some(f) if (0.0..=100.0).contains(&f) => Ok(()),
            _ => bad("percentage"),
        },
        "INTEGER" => int().map(|_| ()).ok_or(()).or_else(|_| bad("integer")),
        "INTEGER_POSITIVE" => match int() {
            Some(i) if i > 0 => Ok(()),
            _ => bad("positive integer"),
        },
        "INTEGER_NEGATIVE" => match int() {
            Some(i) if i < 0 => Ok(()),
            _ => bad("negative integer"),
        },
        "INTEGER_ZERO_OR_POSITIVE" => match int() {
            Some(i) if i >= 0 => Ok(()),
            _ => bad("zero or positive integer"),
        },
        "COORDINATE" => {
            let inner = value.trim().trim_start_matches('[').trim_end_matches(']');
            let parts: Vec<_> = inner.split(',').map(|p| p.trim().parse::<f64>()).collect();
            if parts.len() == 2 && parts.iter().all(Result::is_ok) {
                Ok(())
            } else {
                bad("coordinate")
            }
        }
        "URL" => {
            if value.starts_with("http://") || value.starts_with("https://") {
                Ok(())
            } else {
                bad("URL")
            }
        }
        "ORGANISATION_UNIT" | "TRACKER_ASSOCIATE" | "FILE_RESOURCE" | "IMAGE" => {
            if Uid::is_valid(value) {
                Ok(())
            } else {
                bad("UID")
            }
        }
        _ => Ok(()),
    }
}

/// Value types whose value is a file resource UID.
pub fn is_file(value_type: &str) -> bool {
    matches!(value_type, "FILE_RESOURCE" | "IMAGE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_types() {
        for (t, ok, bad) in [
            ("NUMBER", "36.6", "warm"),
            ("INTEGER_POSITIVE", "3", "0"),
            ("INTEGER_ZERO_OR_POSITIVE", "0", "-1"),
            ("BOOLEAN", "true", "yes"),
            ("TRUE_ONLY", "true", "false"),
            ("DATE", "2024-02-29", "29/02/2024"),
            ("PHONE_NUMBER", "+254 700 000000", "call me"),
            ("EMAIL", "a@b.org", "nope"),
            ("TIME", "09:30", "9.30"),
            ("PERCENTAGE", "99.5", "101"),
            ("IMAGE", "Kj6vYde4LHh", "x"),
        ] {
            assert!(check(t, ok).is_ok(), "{t} {ok}");
            assert!(check(t, bad).is_err(), "{t} {bad}");
        }
        assert!(check("TEXT", "anything").is_ok());
    }
}
