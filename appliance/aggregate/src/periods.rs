//! Period arithmetic the lock rules need: the period of a type that contains a date, and the
//! period `n` steps before or after another. Built on the wire crate's id parser, so every
//! period we compute is one DHIS2 (and the SDK) would name the same way.

use clinicbox_dhis2::{Dhis2Timestamp, Period, PeriodType, ServerTimeZone};
use jiff::ToSpan;
use jiff::civil::Date;

/// Id suffixes (after the year) that a period of type `t` can have.
fn suffixes(t: PeriodType) -> Vec<String> {
    use PeriodType::*;
    let numbered = |prefix: &str, n: u32| (1..=n).map(|i| format!("{prefix}{i}")).collect();
    match t {
        // Daily and Monthly are formatted directly in `containing`.
        Daily | Monthly => Vec::new(),
        Weekly => numbered("W", 53),
        WeeklyWednesday => numbered("WedW", 53),
        WeeklyThursday => numbered("ThuW", 53),
        WeeklySaturday => numbered("SatW", 53),
        WeeklySunday => numbered("SunW", 53),
        BiWeekly => numbered("BiW", 27),
        BiMonthly => (1..=6).map(|i| format!("{i:02}B")).collect(),
        Quarterly => numbered("Q", 4),
        QuarterlyNov => numbered("NovQ", 4),
        SixMonthly => numbered("S", 2),
        SixMonthlyApril => numbered("AprilS", 2),
        SixMonthlyNov => numbered("NovS", 2),
        Yearly => vec![String::new()],
        FinancialApril => vec!["April".into()],
        FinancialJuly => vec!["July".into()],
        FinancialOct => vec!["Oct".into()],
        FinancialNov => vec!["Nov".into()],
    }
}

fn covers(p: &Period, d: Date) -> bool {
    p.start_date() <= d && d <= p.end_date()
}

/// The period of type `t` that contains `d`.
pub fn containing(t: PeriodType, d: Date) -> Option<Period> {
    let y = i32::from(d.year());
    match t {
        PeriodType::Daily => {
            return Period::parse(&format!("{y:04}{:02}{:02}", d.month(), d.day())).ok();
        }
        PeriodType::Monthly => return Period::parse(&format!("{y:04}{:02}", d.month())).ok(),
        _ => {}
    }
    let sfx = suffixes(t);
    // Shifted years (financial, November, ISO weeks) are named after a neighbouring year.
    for year in [y, y - 1, y + 1] {
        if !(0..=9999).contains(&year) {
            continue;
        }
        for s in &sfx {
            if let Ok(p) = Period::parse(&format!("{year:04}{s}")) {
                if p.period_type() == t && covers(&p, d) {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// The period `n` periods after `p` (before it when `n` is negative), of the same type.
pub fn offset(p: &Period, n: i32) -> Option<Period> {
    let mut cur = p.clone();
    for _ in 0..n.unsigned_abs() {
        let d = if n > 0 {
            cur.end_date().checked_add(1.day()).ok()?
        } else {
            cur.start_date().checked_sub(1.day()).ok()?
        };
        cur = containing(cur.period_type(), d)?;
    }
    Some(cur)
}

/// "Now" as the lock rules see it: the store's clock, in the server's zone.
#[derive(Debug, Clone)]
pub struct Now {
    pub ms: u64,
    pub today: Date,
    pub zone: ServerTimeZone,
}

impl Now {
    pub fn at(ms: u64, zone: &ServerTimeZone) -> Option<Now> {
        let t = Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).ok()?, zone).ok()?;
        Some(Now {
            ms,
            today: t.datetime().date(),
            zone: zone.clone(),
        })
    }

    /// Milliseconds of the start of `d` in the server zone.
    pub fn midnight_ms(&self, d: Date) -> Option<i64> {
        Dhis2Timestamp::parse_lenient(&d.to_string())
            .ok()?
            .to_epoch_ms(&self.zone)
            .ok()
    }

    /// The current period of type `t`.
    pub fn current(&self, t: PeriodType) -> Option<Period> {
        containing(t, self.today)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn id(t: PeriodType, date: &str) -> String {
        containing(t, d(date))
            .map(|p| p.id().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn finds_the_containing_period_of_every_type() {
        use PeriodType::*;
        assert_eq!(id(Daily, "2024-02-29"), "20240229");
        assert_eq!(id(Monthly, "2024-02-29"), "202402");
        assert_eq!(id(Weekly, "2021-01-03"), "2020W53");
        assert_eq!(id(Weekly, "2024-12-30"), "2025W1");
        assert_eq!(id(WeeklySunday, "2023-12-31"), "2024SunW1");
        assert_eq!(id(BiWeekly, "2024-01-20"), "2024BiW2");
        assert_eq!(id(BiMonthly, "2024-06-30"), "202403B");
        assert_eq!(id(Quarterly, "2024-11-05"), "2024Q4");
        assert_eq!(id(QuarterlyNov, "2023-12-01"), "2024NovQ1");
        assert_eq!(id(SixMonthlyApril, "2025-02-01"), "2024AprilS2");
        assert_eq!(id(Yearly, "2024-07-01"), "2024");
        assert_eq!(id(FinancialApril, "2025-03-31"), "2024April");
        assert_eq!(id(FinancialNov, "2023-11-01"), "2024Nov");
    }

    #[test]
    fn offsets_cross_year_boundaries() {
        let p = Period::parse("202412").unwrap();
        assert_eq!(offset(&p, 1).unwrap().id(), "202501");
        assert_eq!(offset(&p, -12).unwrap().id(), "202312");
        assert_eq!(offset(&p, 0).unwrap().id(), "202412");
        let w = Period::parse("2020W53").unwrap();
        assert_eq!(offset(&w, 1).unwrap().id(), "2021W1");
        assert_eq!(offset(&w, -1).unwrap().id(), "2020W52");
    }

    #[test]
    fn now_is_read_in_the_server_zone() {
        // 2024-01-31T23:30Z is already February in Nairobi (UTC+3).
        let ms = 1_706_743_800_000;
        let utc = Now::at(ms, &ServerTimeZone::utc()).unwrap();
        let eat = Now::at(ms, &ServerTimeZone::new("Africa/Nairobi").unwrap()).unwrap();
        assert_eq!(utc.current(PeriodType::Monthly).unwrap().id(), "202401");
        assert_eq!(eat.current(PeriodType::Monthly).unwrap().id(), "202402");
        assert_eq!(eat.midnight_ms(d("2024-02-01")).unwrap(), 1_706_734_800_000);
    }
}
