//! DHIS2 UIDs: 11 characters, a letter first, then letters or digits (`CodeGenerator` rule).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of every DHIS2 UID.
pub const UID_LEN: usize = 11;

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALPHANUMERIC: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Why a string is not a DHIS2 UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("UID must be {UID_LEN} characters, got {0}")]
    Length(usize),
    #[error("UID must start with a letter")]
    FirstChar,
    #[error("UID may contain only letters and digits")]
    Alphabet,
}

/// A validated DHIS2 UID such as `IpHINAT79UW`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid([u8; UID_LEN]);

impl Uid {
    /// Below every UID: the start of a range over `(key, Uid)` pairs. Not a valid UID itself
    /// (never stored, never rendered).
    pub const RANGE_START: Uid = Uid([0; UID_LEN]);

    /// A fresh random UID from the OS random source, with DHIS2's alphabet rule.
    ///
    /// # Panics
    /// Only if the OS random source fails, which leaves nothing safe to do.
    #[allow(clippy::expect_used)]
    pub fn generate() -> Uid {
        let mut raw = [0u8; UID_LEN * 2];
        getrandom::fill(&mut raw).expect("OS random source");
        let mut out = [0u8; UID_LEN];
        // Modulo bias over 256 is below 1 %, irrelevant for identifiers.
        out[0] = LETTERS[raw[0] as usize % LETTERS.len()];
        for i in 1..UID_LEN {
            let r = u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]) as usize;
            out[i] = ALPHANUMERIC[r % ALPHANUMERIC.len()];
        }
        Uid(out)
    }

    /// Whether `s` is a valid UID, without allocating.
    pub fn is_valid(s: &str) -> bool {
        Uid::try_from(s).is_ok()
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl TryFrom<&str> for Uid {
    type Error = UidError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        let b = s.as_bytes();
        if b.len() != UID_LEN {
            return Err(UidError::Length(s.chars().count()));
        }
        if !b[0].is_ascii_alphabetic() {
            return Err(UidError::FirstChar);
        }
        if !b.iter().all(u8::is_ascii_alphanumeric) {
            return Err(UidError::Alphabet);
        }
        let mut out = [0u8; UID_LEN];
        out.copy_from_slice(b);
        Ok(Uid(out))
    }
}

impl std::str::FromStr for Uid {
    type Err = UidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uid::try_from(s)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({})", self.as_str())
    }
}

impl Serialize for Uid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Uid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Uid::try_from(s.as_ref()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dhis2_uids() {
        for s in ["IpHINAT79UW", "a0000000000", "Zzzzzzzzzz9"] {
            assert_eq!(Uid::try_from(s).map(|u| u.to_string()), Ok(s.to_string()));
        }
    }

    #[test]
    fn rejects_bad_uids() {
        assert_eq!(Uid::try_from("IpHINAT79U"), Err(UidError::Length(10)));
        assert_eq!(Uid::try_from("IpHINAT79UWX"), Err(UidError::Length(12)));
        assert_eq!(Uid::try_from("1pHINAT79UW"), Err(UidError::FirstChar));
        assert_eq!(Uid::try_from("IpHINAT7-UW"), Err(UidError::Alphabet));
        assert_eq!(Uid::try_from("IpHINAT7éU"), Err(UidError::Alphabet));
        assert!(Uid::try_from("").is_err());
    }

    #[test]
    fn generated_uids_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let u = Uid::generate();
            assert!(Uid::is_valid(u.as_str()), "{u}");
            assert!(seen.insert(u));
        }
    }

    #[test]
    fn serde_round_trip_and_rejection() {
        let u: Uid = serde_json::from_str("\"IpHINAT79UW\"").unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), "\"IpHINAT79UW\"");
        assert!(serde_json::from_str::<Uid>("\"short\"").is_err());
    }
}
