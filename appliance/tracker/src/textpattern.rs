//! DHIS2 TextPattern (`"OPD-" + ORG_UNIT_CODE(...) + "-" + SEQUENTIAL(######)`): parsing,
//! the reservation key and value generation.
//!
//! Segments: `"text"` (with `\"` escapes), `SEQUENTIAL(#…)` (1–12 `#`), `RANDOM(…)` (1–12 of
//! `#` digit, `X` upper-case letter, `x` lower-case letter, `*` letter or digit),
//! `ORG_UNIT_CODE(…)` (empty = whole code, `...` = first three characters, `^...` from the
//! start, `...$` from the end) and `CURRENT_DATE(format)` (Java `SimpleDateFormat` letters
//! `y M d H m s`; anything else is literal).

use datefmt::format_date;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Sequential(usize),
    Random(String),
    OrgUnitCode(String),
    CurrentDate(String),
}

impl Segment {
    pub fn is_generated(&self) -> bool {
        matches!(self, Segment::Sequential(_) | Segment::Random(_))
    }
}

/// A parsed pattern: segments with their raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPattern {
    pub segments: Vec<(Segment, String)>,
}

/// Why a pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TextPattern: {0}")]
pub struct PatternError(pub String);

impl TextPattern {
    pub fn parse(s: &str) -> Result<TextPattern, PatternError> {
        let err = |why: &str| PatternError(format!("{why} in {s:?}"));
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        let mut segments = Vec::new();
        let skip_ws = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        loop {
            skip_ws(&mut i);
            if i >= chars.len() {
                return Err(err("empty segment"));
            }
            let start = i;
            let seg = if chars[i] == '"' {
                i += 1;
                let mut text = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err("unterminated text")),
                        Some('\\') => {
                            text.push(*chars.get(i + 1).ok_or_else(|| err("bad escape"))?);
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
                Segment::Text(text)
            } else {
                let name_end = chars[i..]
                    .iter()
                    .position(|c| *c == '(')
                    .map(|p| i + p)
                    .ok_or_else(|| err("expected ("))?;
                let name: String = chars[i..name_end].iter().collect();
                let close = chars[name_end..]
                    .iter()
                    .position(|c| *c == ')')
                    .map(|p| name_end + p)
                    .ok_or_else(|| err("expected )"))?;
                let param: String = chars[name_end + 1..close].iter().collect();
                i = close + 1;
                match name.trim() {
                    "SEQUENTIAL" => {
                        if param.is_empty() || param.len() > 12 || !param.chars().all(|c| c == '#')
                        {
                            return Err(err("SEQUENTIAL takes 1-12 #"));
                        }
                        Segment::Sequential(param.len())
                    }
                    "RANDOM" => {
                        if param.is_empty()
                            || param.len() > 12
                            || !param.chars().all(|c| "#Xx*".contains(c))
                        {
                            return Err(err("RANDOM takes 1-12 of # X x *"));
                        }
                        Segment::Random(param)
                    }
                    "ORG_UNIT_CODE" => {
                        let body = param.trim_start_matches('^').trim_end_matches('$');
                        if !body.chars().all(|c| c == '.') {
                            return Err(err("ORG_UNIT_CODE takes dots"));
                        }
                        Segment::OrgUnitCode(param)
                    }
                    "CURRENT_DATE" => {
                        if param.is_empty() {
                            return Err(err("CURRENT_DATE needs a format"));
                        }
                        Segment::CurrentDate(param)
                    }
                    other => return Err(err(&format!("unknown method {other}"))),
                }
            };
            let raw: String = chars[start..i].iter().collect();
            segments.push((seg, raw));
            skip_ws(&mut i);
            if i >= chars.len() {
                break;
            }
            if chars[i] != '+' {
                return Err(err("expected +"));
            }
            i += 1;
        }
        Ok(TextPattern { segments })
    }

    /// The first generated segment (DHIS2 allows one).
    pub fn generated(&self) -> Option<&Segment> {
        self.segments
            .iter()
            .map(|(s, _)| s)
            .find(|s| s.is_generated())
    }

    pub fn needs_org_unit_code(&self) -> bool {
        self.segments
            .iter()
            .any(|(s, _)| matches!(s, Segment::OrgUnitCode(_)))
    }

    /// The pattern with everything but the generated segment resolved (DHIS2's reservation
    /// `key`), or with `generated` in its place when given.
    pub fn resolve(
        &self,
        org_unit_code: Option<&str>,
        date: &DateParts,
        generated: Option<&str>,
    ) -> Result<String, PatternError> {
        let mut out = String::new();
        for (seg, raw) in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Sequential(_) | Segment::Random(_) => match generated {
                    Some(g) => out.push_str(g),
                    None => out.push_str(raw),
                },
                Segment::OrgUnitCode(fmt) => {
                    let code = org_unit_code.ok_or_else(|| {
                        PatternError("Missing required value ORG_UNIT_CODE".into())
                    })?;
                    out.push_str(&format_code(fmt, code)?);
                }
                Segment::CurrentDate(fmt) => out.push_str(&format_date(fmt, date)),
            }
        }
        Ok(out)
    }
}

/// Applies an `ORG_UNIT_CODE` format to a code.
fn format_code(fmt: &str, code: &str) -> Result<String, PatternError> {
    let n = fmt.chars().filter(|c| *c == '.').count();
    let chars: Vec<char> = code.chars().collect();
    if n == 0 {
        return Ok(code.to_string());
    }
    if n > chars.len() {
        return Err(PatternError(format!(
            "org unit code {code:?} is shorter than the pattern's {n} characters"
        )));
    }
    Ok(if fmt.ends_with('$') && !fmt.starts_with('^') {
        chars[chars.len() - n..].iter().collect()
    } else {
        chars[..n].iter().collect()
    })
}

/// The date and time `CURRENT_DATE` formats (the server zone's wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateParts {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

mod datefmt {
    use super::DateParts;

    /// Formats with Java `SimpleDateFormat` letters (`y M d H m s`); other characters are
    /// copied. `yy` is the two-digit year.
    pub fn format_date(fmt: &str, d: &DateParts) -> String {
        let chars: Vec<char> = fmt.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let mut n = 1;
            while i + n < chars.len() && chars[i + n] == c {
                n += 1;
            }
            let num = |v: i64, width: usize| format!("{v:0width$}");
            match c {
                'y' if n == 2 => out.push_str(&num(i64::from(d.year % 100), 2)),
                'y' => out.push_str(&num(i64::from(d.year), n.max(4))),
                'M' => out.push_str(&num(i64::from(d.month), n)),
                'd' => out.push_str(&num(i64::from(d.day), n)),
                'H' => out.push_str(&num(i64::from(d.hour), n)),
                'm' => out.push_str(&num(i64::from(d.minute), n)),
                's' => out.push_str(&num(i64::from(d.second), n)),
                _ => (0..n).for_each(|_| out.push(c)),
            }
            i += n;
        }
        out
    }
}

/// How many distinct values a RANDOM format can produce.
pub fn random_space(fmt: &str) -> u128 {
    fmt.chars()
        .map(|c| match c {
            '#' => 10u128,
            'X' | 'x' => 26,
            _ => 62,
        })
        .product()
}

/// One random value for a RANDOM format.
pub fn random_value(fmt: &str) -> String {
    const DIGITS: &[u8] = b"0123456789";
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALL: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut raw = vec![0u8; fmt.len() * 2];
    // The OS random source; a failure leaves zeros, which only makes values less random.
    let _ = getrandom::fill(&mut raw);
    fmt.chars()
        .enumerate()
        .map(|(i, c)| {
            let r = usize::from(u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]));
            let set = match c {
                '#' => DIGITS,
                'X' => UPPER,
                'x' => LOWER,
                _ => ALL,
            };
            char::from(set[r % set.len()])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> DateParts {
        DateParts {
            year: 2026,
            month: 3,
            day: 7,
            hour: 9,
            minute: 5,
            second: 1,
        }
    }

    #[test]
    fn parses_and_resolves_the_demo_pattern() {
        let p = TextPattern::parse("\"OPD-\" + SEQUENTIAL(######)").unwrap();
        assert_eq!(p.generated(), Some(&Segment::Sequential(6)));
        assert_eq!(
            p.resolve(None, &date(), None).unwrap(),
            "OPD-SEQUENTIAL(######)"
        );
        assert_eq!(
            p.resolve(None, &date(), Some("500001")).unwrap(),
            "OPD-500001"
        );
    }

    #[test]
    fn org_unit_code_and_date_segments() {
        let p = TextPattern::parse(
            "ORG_UNIT_CODE(...) + \"-\" + CURRENT_DATE(yyyyMMdd) + \"-\" + RANDOM(X##)",
        )
        .unwrap();
        assert!(p.needs_org_unit_code());
        assert_eq!(
            p.resolve(Some("RIV_A"), &date(), Some("K42")).unwrap(),
            "RIV-20260307-K42"
        );
        assert!(p.resolve(None, &date(), None).is_err());
        let p = TextPattern::parse("ORG_UNIT_CODE(..$) + ORG_UNIT_CODE()").unwrap();
        assert_eq!(p.resolve(Some("RIV_A"), &date(), None).unwrap(), "_ARIV_A");
        let p = TextPattern::parse("CURRENT_DATE(yy-MM)").unwrap();
        assert_eq!(p.resolve(None, &date(), None).unwrap(), "26-03");
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "",
            "SEQUENTIAL(#X#)",
            "RANDOM()",
            "\"open",
            "FOO(1)",
            "\"a\" \"b\"",
            "SEQUENTIAL(#############)",
        ] {
            assert!(TextPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_values_follow_their_format() {
        for _ in 0..200 {
            let v = random_value("X#x*");
            let c: Vec<char> = v.chars().collect();
            assert!(c[0].is_ascii_uppercase() && c[1].is_ascii_digit());
            assert!(c[2].is_ascii_lowercase() && c[3].is_ascii_alphanumeric());
        }
        assert_eq!(random_space("X##"), 2600);
    }
}
