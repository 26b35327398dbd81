//! DHIS2 timestamps: `yyyy-MM-ddTHH:mm:ss.SSS`, wall-clock time in the server's time zone.
//!
//! The Android SDK parses tracker audit timestamps with a strict kotlinx pattern (exactly three
//! fraction digits, no zone suffix) and other dates with a prefix `SimpleDateFormat` that still
//! needs the milliseconds. So we always *emit* exactly that shape, and *accept* the looser forms
//! DHIS2 itself accepts on input (date only, no seconds, any fraction, a trailing zone that is
//! ignored).

use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a DHIS2 timestamp or zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("not a DHIS2 timestamp (expected yyyy-MM-ddTHH:mm:ss.SSS): {0:?}")]
    Format(String),
    #[error("date or time out of range: {0:?}")]
    Range(String),
    #[error("unknown IANA time zone {0:?}")]
    Zone(String),
}

/// A validated IANA time zone, the one the box reports as `serverTimeZoneId`.
#[derive(Clone, Debug)]
pub struct ServerTimeZone {
    name: String,
    tz: TimeZone,
}

impl ServerTimeZone {
    /// Looks the zone up in the bundled tz database (so the box does not depend on the image
    /// shipping `/usr/share/zoneinfo`).
    pub fn new(name: &str) -> Result<Self, TimestampError> {
        if name.is_empty() || name.starts_with('/') || name.contains("..") {
            return Err(TimestampError::Zone(name.to_string()));
        }
        let tz = TimeZone::get(name).map_err(|_| TimestampError::Zone(name.to_string()))?;
        Ok(ServerTimeZone {
            name: name.to_string(),
            tz,
        })
    }

    pub fn utc() -> Self {
        ServerTimeZone {
            name: "Etc/UTC".to_string(),
            tz: TimeZone::UTC,
        }
    }

    /// The IANA name, as served in `system/info`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Default for ServerTimeZone {
    fn default() -> Self {
        ServerTimeZone::utc()
    }
}

/// A DHIS2 timestamp (millisecond precision, no zone).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dhis2Timestamp(DateTime);

impl Dhis2Timestamp {
    /// Milliseconds since the Unix epoch rendered as wall-clock time in `zone`.
    pub fn from_epoch_ms(ms: i64, zone: &ServerTimeZone) -> Result<Self, TimestampError> {
        let ts = jiff::Timestamp::from_millisecond(ms)
            .map_err(|_| TimestampError::Range(ms.to_string()))?;
        let dt = zone.tz.to_datetime(ts);
        Ok(Dhis2Timestamp(truncate_ms(dt)))
    }

    /// Milliseconds since the Unix epoch, reading this wall-clock time in `zone` (the earlier
    /// instant when a DST fold makes it ambiguous).
    pub fn to_epoch_ms(&self, zone: &ServerTimeZone) -> Result<i64, TimestampError> {
        let z = zone
            .tz
            .to_ambiguous_zoned(self.0)
            .compatible()
            .map_err(|_| TimestampError::Range(self.to_string()))?;
        Ok(z.timestamp().as_millisecond())
    }

    /// Strict parse: exactly `yyyy-MM-ddTHH:mm:ss.SSS`, what tablets need to read.
    pub fn parse_strict(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        let shape_ok = b.len() == 23
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                _ => c.is_ascii_digit(),
            });
        if !shape_ok {
            return Err(TimestampError::Format(s.to_string()));
        }
        Self::parse_lenient(s)
    }

    /// Lenient parse of what DHIS2 accepts on input: `yyyy-MM-dd`, optionally followed by
    /// `THH:mm`, `:ss`, a fraction of 1–9 digits, and a zone suffix (`Z`, `+hh:mm`) that is
    /// ignored because DHIS2 stores wall-clock time. A space may stand for the `T`.
    pub fn parse_lenient(s: &str) -> Result<Self, TimestampError> {
        let err = || TimestampError::Format(s.to_string());
        let b = s.as_bytes();
        let num = |from: usize, len: usize| -> Result<i32, TimestampError> {
            let part = b.get(from..from + len).ok_or_else(err)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(err());
            }
            std::str::from_utf8(part)
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or_else(err)
        };
        if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (mut h, mut mi, mut sec, mut nanos) = (0, 0, 0, 0i32);
        let mut i = 10;
        if i < b.len() && (b[i] == b'T' || b[i] == b' ') {
            h = num(i + 1, 2)?;
            if b.get(i + 3) != Some(&b':') {
                return Err(err());
            }
            mi = num(i + 4, 2)?;
            i += 6;
            if b.get(i) == Some(&b':') {
                sec = num(i + 1, 2)?;
                i += 3;
                if b.get(i) == Some(&b'.') {
                    let start = i + 1;
                    let mut end = start;
                    while end < b.len() && b[end].is_ascii_digit() {
                        end += 1;
                    }
                    let digits = end - start;
                    if digits == 0 || digits > 9 {
                        return Err(err());
                    }
                    nanos = num(start, digits)? * 10i32.pow((9 - digits) as u32);
                    i = end;
                }
            }
        }
        match &s[i..] {
            "" | "Z" => {}
            rest if is_offset(rest) => {}
            _ => return Err(err()),
        }
        let range = || TimestampError::Range(s.to_string());
        let date = Date::new(
            i16::try_from(y).map_err(|_| range())?,
            i8::try_from(mo).map_err(|_| range())?,
            i8::try_from(d).map_err(|_| range())?,
        )
        .map_err(|_| range())?;
        let time = Time::new(
            i8::try_from(h).map_err(|_| range())?,
            i8::try_from(mi).map_err(|_| range())?,
            i8::try_from(sec).map_err(|_| range())?,
            nanos,
        )
        .map_err(|_| range())?;
        Ok(Dhis2Timestamp(truncate_ms(DateTime::from_parts(
            date, time,
        ))))
    }

    pub fn datetime(&self) -> DateTime {
        self.0
    }

    /// The date part as `yyyy-MM-dd` (complete registrations and similar use this).
    pub fn date_string(&self) -> String {
        let d = self.0.date();
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    }
}

fn is_offset(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b.first(), Some(b'+' | b'-'))
        && matches!(b.len(), 3 | 5 | 6)
        && b[1..].iter().all(|c| c.is_ascii_digit() || *c == b':')
}

fn truncate_ms(dt: DateTime) -> DateTime {
    let ns = dt.subsec_nanosecond();
    let ms_ns = ns - ns % 1_000_000;
    dt.with().subsec_nanosecond(ms_ns).build().unwrap_or(dt)
}

impl fmt::Display for Dhis2Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.millisecond()
        )
    }
}

impl fmt::Debug for Dhis2Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dhis2Timestamp({self})")
    }
}

impl std::str::FromStr for Dhis2Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dhis2Timestamp::parse_lenient(s)
    }
}

impl Serialize for Dhis2Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dhis2Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Dhis2Timestamp::parse_lenient(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_exactly_three_fraction_digits() {
        let t = Dhis2Timestamp::from_epoch_ms(0, &ServerTimeZone::utc()).unwrap();
        assert_eq!(t.to_string(), "1970-01-01T00:00:00.000");
        let t = Dhis2Timestamp::from_epoch_ms(1_700_000_000_123, &ServerTimeZone::utc()).unwrap();
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123");
        assert!(Dhis2Timestamp::parse_strict(&t.to_string()).is_ok());
    }

    #[test]
    fn renders_in_the_server_zone_and_round_trips() {
        let oslo = ServerTimeZone::new("Europe/Oslo").unwrap();
        let nbo = ServerTimeZone::new("Africa/Nairobi").unwrap();
        let ms = 1_700_000_000_123;
        let t = Dhis2Timestamp::from_epoch_ms(ms, &oslo).unwrap();
        assert_eq!(t.to_string(), "2023-11-14T23:13:20.123");
        assert_eq!(t.to_epoch_ms(&oslo).unwrap(), ms);
        let t = Dhis2Timestamp::from_epoch_ms(ms, &nbo).unwrap();
        assert_eq!(t.to_string(), "2023-11-15T01:13:20.123");
        assert_eq!(oslo.name(), "Europe/Oslo");
    }

    #[test]
    fn rejects_unknown_zones() {
        assert!(ServerTimeZone::new("Mars/Olympus").is_err());
        assert!(ServerTimeZone::new("").is_err());
        assert!(ServerTimeZone::new("../etc/passwd").is_err());
    }

    #[test]
    fn strict_parse_requires_milliseconds_and_no_zone() {
        assert!(Dhis2Timestamp::parse_strict("2024-02-29T10:11:12.345").is_ok());
        for bad in [
            "2024-02-29T10:11:12",
            "2024-02-29T10:11:12.34",
            "2024-02-29T10:11:12.345Z",
            "2024-02-29 10:11:12.345",
            "2023-02-29T10:11:12.345",
            "2024-13-01T10:11:12.345",
        ] {
            assert!(Dhis2Timestamp::parse_strict(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lenient_parse_accepts_dhis2_inputs() {
        let cases = [
            ("2024-01-05", "2024-01-05T00:00:00.000"),
            ("2024-01-05T07:08", "2024-01-05T07:08:00.000"),
            ("2024-01-05T07:08:09", "2024-01-05T07:08:09.000"),
            ("2024-01-05T07:08:09.1", "2024-01-05T07:08:09.100"),
            ("2024-01-05T07:08:09.123456789", "2024-01-05T07:08:09.123"),
            ("2024-01-05T07:08:09.123Z", "2024-01-05T07:08:09.123"),
            ("2024-01-05T07:08:09.123+02:00", "2024-01-05T07:08:09.123"),
            ("2024-01-05 07:08:09.123", "2024-01-05T07:08:09.123"),
        ];
        for (input, want) in cases {
            assert_eq!(
                Dhis2Timestamp::parse_lenient(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        for bad in [
            "",
            "2024",
            "2024-1-5",
            "yesterday",
            "2024-01-05T7:08",
            "2024-01-05X",
        ] {
            assert!(Dhis2Timestamp::parse_lenient(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn orders_chronologically() {
        let a = Dhis2Timestamp::parse_lenient("2024-01-05T07:08:09.001").unwrap();
        let b = Dhis2Timestamp::parse_lenient("2024-01-05T07:08:09.010").unwrap();
        assert!(a < b);
        assert_eq!(a.date_string(), "2024-01-05");
    }
}
