//! DHIS2 period identifiers (`202401`, `2024W5`, `2024Q1`, `2024AprilS1`, …) and their date ranges.

use std::fmt;

use jiff::ToSpan;
use jiff::civil::{Date, Weekday};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a DHIS2 period id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a DHIS2 period id: {0:?}")]
pub struct PeriodError(String);

/// DHIS2 period types, named as DHIS2 names them in `periodType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeriodType {
    Daily,
    Weekly,
    WeeklyWednesday,
    WeeklyThursday,
    WeeklySaturday,
    WeeklySunday,
    BiWeekly,
    Monthly,
    BiMonthly,
    Quarterly,
    QuarterlyNov,
    SixMonthly,
    SixMonthlyApril,
    SixMonthlyNov,
    Yearly,
    FinancialApril,
    FinancialJuly,
    FinancialOct,
    FinancialNov,
}

impl PeriodType {
    pub fn name(self) -> &'static str {
        match self {
            PeriodType::Daily => "Daily",
            PeriodType::Weekly => "Weekly",
            PeriodType::WeeklyWednesday => "WeeklyWednesday",
            PeriodType::WeeklyThursday => "WeeklyThursday",
            PeriodType::WeeklySaturday => "WeeklySaturday",
            PeriodType::WeeklySunday => "WeeklySunday",
            PeriodType::BiWeekly => "BiWeekly",
            PeriodType::Monthly => "Monthly",
            PeriodType::BiMonthly => "BiMonthly",
            PeriodType::Quarterly => "Quarterly",
            PeriodType::QuarterlyNov => "QuarterlyNov",
            PeriodType::SixMonthly => "SixMonthly",
            PeriodType::SixMonthlyApril => "SixMonthlyApril",
            PeriodType::SixMonthlyNov => "SixMonthlyNov",
            PeriodType::Yearly => "Yearly",
            PeriodType::FinancialApril => "FinancialApril",
            PeriodType::FinancialJuly => "FinancialJuly",
            PeriodType::FinancialOct => "FinancialOct",
            PeriodType::FinancialNov => "FinancialNov",
        }
    }

    /// Parses a `periodType` value as found in metadata.
    pub fn from_name(s: &str) -> Option<PeriodType> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// A validated period: its id, type and inclusive date range.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Period {
    id: String,
    period_type: PeriodType,
    start: Date,
    end: Date,
}

impl Period {
    pub fn parse(s: &str) -> Result<Period, PeriodError> {
        parse(s).ok_or_else(|| PeriodError(s.to_string()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn period_type(&self) -> PeriodType {
        self.period_type
    }
    /// First day of the period.
    pub fn start_date(&self) -> Date {
        self.start
    }
    /// Last day of the period (inclusive).
    pub fn end_date(&self) -> Date {
        self.end
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Period({} {:?} {}..={})",
            self.id, self.period_type, self.start, self.end
        )
    }
}

impl TryFrom<&str> for Period {
    type Error = PeriodError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Period::parse(s)
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Period::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn digits(s: &str) -> Option<i32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn ymd(y: i32, m: i32, d: i32) -> Option<Date> {
    Date::new(
        i16::try_from(y).ok()?,
        i8::try_from(m).ok()?,
        i8::try_from(d).ok()?,
    )
    .ok()
}

fn last_day(start: Date, months: i32) -> Option<Date> {
    start
        .checked_add(months.months())
        .ok()?
        .checked_sub(1.day())
        .ok()
}

/// Start of week 1 for weeks starting on `first`: the `first`-weekday on or before 4 January,
/// i.e. the first week with at least four days in the year (ISO 8601 for Monday).
fn week_one(year: i32, first: Weekday) -> Option<Date> {
    let jan4 = ymd(year, 1, 4)?;
    let back = i32::from(jan4.weekday().since(first));
    jan4.checked_sub(back.days()).ok()
}

fn week(year: i32, n: i32, first: Weekday, len_weeks: i32) -> Option<(Date, Date)> {
    if n < 1 {
        return None;
    }
    let start = week_one(year, first)?
        .checked_add(((n - 1) * 7).days())
        .ok()?;
    let end = start.checked_add((7 * len_weeks - 1).days()).ok()?;
    // The week must start before week 1 of the next year.
    if start >= week_one(year + 1, first)? {
        return None;
    }
    Some((start, end))
}

fn parse(s: &str) -> Option<Period> {
    if !s.is_ascii() || s.len() < 4 {
        return None;
    }
    let year = digits(&s[..4])?;
    let rest = &s[4..];
    let mk = |t: PeriodType, start: Date, end: Date| Period {
        id: s.to_string(),
        period_type: t,
        start,
        end,
    };
    let months = |t: PeriodType, start_month: i32, index: i32, len: i32, count: i32| {
        if index < 1 || index > count {
            return None;
        }
        // Financial/shifted periods starting late in the year belong to the previous year's start.
        let m0 = start_month - 1 + (index - 1) * len;
        let start = ymd(year + m0.div_euclid(12), m0.rem_euclid(12) + 1, 1)?;
        Some(mk(t, start, last_day(start, len)?))
    };
    let prefixed = |prefix: &str| rest.strip_prefix(prefix).and_then(digits);
    let weekly = |t: PeriodType, prefix: &str, first: Weekday| {
        let n = prefixed(prefix)?;
        let (a, b) = week(year, n, first, 1)?;
        Some(mk(t, a, b))
    };
    match rest {
        "" => {
            let start = ymd(year, 1, 1)?;
            Some(mk(PeriodType::Yearly, start, ymd(year, 12, 31)?))
        }
        "April" => months(PeriodType::FinancialApril, 4, 1, 12, 1),
        "July" => months(PeriodType::FinancialJuly, 7, 1, 12, 1),
        "Oct" => months(PeriodType::FinancialOct, 10, 1, 12, 1),
        // DHIS2 names FinancialNov periods after the year they end in.
        "Nov" => {
            let start = ymd(year - 1, 11, 1)?;
            Some(mk(PeriodType::FinancialNov, start, ymd(year, 10, 31)?))
        }
        _ if rest.len() == 4 && digits(rest).is_some() => {
            let (m, d) = (digits(&rest[..2])?, digits(&rest[2..])?);
            let day = ymd(year, m, d)?;
            Some(mk(PeriodType::Daily, day, day))
        }
        _ if rest.len() == 2 && digits(rest).is_some() => {
            months(PeriodType::Monthly, 1, digits(rest)?, 1, 12)
        }
        _ if rest.len() == 3 && rest.ends_with('B') => {
            months(PeriodType::BiMonthly, 1, digits(&rest[..2])?, 2, 6)
        }
        _ if rest.starts_with("BiW") => {
            let n = prefixed("BiW")?;
            let (a, _) = week(year, 2 * n - 1, Weekday::Monday, 1)?;
            let end = a.checked_add(13.days()).ok()?;
            Some(mk(PeriodType::BiWeekly, a, end))
        }
        _ if rest.starts_with("WedW") => {
            weekly(PeriodType::WeeklyWednesday, "WedW", Weekday::Wednesday)
        }
        _ if rest.starts_with("ThuW") => {
            weekly(PeriodType::WeeklyThursday, "ThuW", Weekday::Thursday)
        }
        _ if rest.starts_with("SatW") => {
            weekly(PeriodType::WeeklySaturday, "SatW", Weekday::Saturday)
        }
        _ if rest.starts_with("SunW") => weekly(PeriodType::WeeklySunday, "SunW", Weekday::Sunday),
        _ if rest.starts_with('W') => weekly(PeriodType::Weekly, "W", Weekday::Monday),
        _ if rest.starts_with("NovQ") => {
            // Quarters of a November-start year, named after the year they mostly fall in.
            let q = prefixed("NovQ")?;
            let mut p = months(PeriodType::QuarterlyNov, 11, q, 3, 4)?;
            p.start = p.start.checked_sub(1.year()).ok()?;
            p.end = last_day(p.start, 3)?;
            Some(p)
        }
        _ if rest.starts_with('Q') => months(PeriodType::Quarterly, 1, prefixed("Q")?, 3, 4),
        _ if rest.starts_with("AprilS") => {
            months(PeriodType::SixMonthlyApril, 4, prefixed("AprilS")?, 6, 2)
        }
        _ if rest.starts_with("NovS") => {
            let h = prefixed("NovS")?;
            let mut p = months(PeriodType::SixMonthlyNov, 11, h, 6, 2)?;
            p.start = p.start.checked_sub(1.year()).ok()?;
            p.end = last_day(p.start, 6)?;
            Some(p)
        }
        _ if rest.starts_with('S') => months(PeriodType::SixMonthly, 1, prefixed("S")?, 6, 2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(id: &str) -> (PeriodType, String, String) {
        let p = Period::parse(id).unwrap_or_else(|e| panic!("{e}"));
        (
            p.period_type(),
            p.start_date().to_string(),
            p.end_date().to_string(),
        )
    }

    #[test]
    fn parses_common_period_types() {
        use PeriodType::*;
        let cases = [
            ("20240229", Daily, "2024-02-29", "2024-02-29"),
            ("2024W1", Weekly, "2024-01-01", "2024-01-07"),
            ("2021W1", Weekly, "2021-01-04", "2021-01-10"),
            ("2020W53", Weekly, "2020-12-28", "2021-01-03"),
            ("2024WedW1", WeeklyWednesday, "2024-01-03", "2024-01-09"),
            ("2024SunW1", WeeklySunday, "2023-12-31", "2024-01-06"),
            ("2024BiW1", BiWeekly, "2024-01-01", "2024-01-14"),
            ("2024BiW2", BiWeekly, "2024-01-15", "2024-01-28"),
            ("202402", Monthly, "2024-02-01", "2024-02-29"),
            ("202412", Monthly, "2024-12-01", "2024-12-31"),
            ("202403B", BiMonthly, "2024-05-01", "2024-06-30"),
            ("2024Q4", Quarterly, "2024-10-01", "2024-12-31"),
            ("2024NovQ1", QuarterlyNov, "2023-11-01", "2024-01-31"),
            ("2024S2", SixMonthly, "2024-07-01", "2024-12-31"),
            ("2024AprilS2", SixMonthlyApril, "2024-10-01", "2025-03-31"),
            ("2024NovS1", SixMonthlyNov, "2023-11-01", "2024-04-30"),
            ("2024", Yearly, "2024-01-01", "2024-12-31"),
            ("2024April", FinancialApril, "2024-04-01", "2025-03-31"),
            ("2024July", FinancialJuly, "2024-07-01", "2025-06-30"),
            ("2024Oct", FinancialOct, "2024-10-01", "2025-09-30"),
            ("2024Nov", FinancialNov, "2023-11-01", "2024-10-31"),
        ];
        for (id, t, a, b) in cases {
            assert_eq!(range(id), (t, a.to_string(), b.to_string()), "{id}");
        }
    }

    #[test]
    fn rejects_invalid_periods() {
        for bad in [
            "",
            "24",
            "2024W0",
            "2024W53",
            "2020W54",
            "202413",
            "202400",
            "20240230",
            "2024Q5",
            "2024S3",
            "202407B",
            "2024X1",
            "2024-01",
            "２０２４",
            "2024W",
            "2024Wx",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn period_type_names_round_trip() {
        for t in [
            PeriodType::Monthly,
            PeriodType::FinancialApril,
            PeriodType::WeeklySunday,
        ] {
            assert_eq!(PeriodType::from_name(t.name()), Some(t));
        }
        assert_eq!(PeriodType::from_name("Fortnightly"), None);
    }

    #[test]
    fn serde_uses_the_id() {
        let p: Period = serde_json::from_str("\"2024Q1\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"2024Q1\"");
        assert!(serde_json::from_str::<Period>("\"2024Q9\"").is_err());
    }
}
