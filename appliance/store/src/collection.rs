//! Named collections of records.

use std::fmt;

/// A named collection of records (one redb table). Crates define their own with
/// [`Collection::named`]; the ones every DHIS2 concern shares are constants here.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Collection(&'static str);

impl Collection {
    /// Tracked entities, keyed by DHIS2 UID.
    pub const TRACKED_ENTITIES: Collection = Collection("trackedEntities");
    /// Enrollments, keyed by DHIS2 UID.
    pub const ENROLLMENTS: Collection = Collection("enrollments");
    /// Events, keyed by DHIS2 UID.
    pub const EVENTS: Collection = Collection("events");
    /// Relationships, keyed by DHIS2 UID.
    pub const RELATIONSHIPS: Collection = Collection("relationships");
    /// File resource descriptions, keyed by DHIS2 UID.
    pub const FILE_RESOURCES: Collection = Collection("fileResources");
    /// File contents, keyed by the file resource's UID.
    pub const FILE_BLOBS: Collection = Collection("fileBlobs");
    /// Metadata objects, keyed by `<type>/<uid>` (e.g. `programs/IpHINAT79UW`).
    pub const METADATA: Collection = Collection("metadata");
    /// dataStore entries, keyed by `<namespace>/<key>`.
    pub const DATA_STORE: Collection = Collection("dataStore");
    /// Users, keyed by DHIS2 UID.
    pub const USERS: Collection = Collection("users");
    /// Aggregate data values, keyed by [`DataValueKey`](crate::DataValueKey).
    pub const DATA_VALUES: Collection = Collection("dataValues");

    /// A collection owned by another crate. Names are short ASCII identifiers.
    ///
    /// # Panics
    /// On a name that is empty, longer than 48 bytes, not `[A-Za-z0-9_]`, or reserved for the
    /// store's own tables; names are compile-time constants, so this is a programming error.
    pub const fn named(name: &'static str) -> Collection {
        let b = name.as_bytes();
        assert!(!b.is_empty() && b.len() <= 48, "collection name length");
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            assert!(
                c.is_ascii_alphanumeric() || c == b'_',
                "collection names are [A-Za-z0-9_]"
            );
            i += 1;
        }
        assert!(b[0] != b'_', "names starting with _ are the store's own");
        Collection(name)
    }

    /// The collection's name, as it appears in the change log.
    pub const fn name(self) -> &'static str {
        self.0
    }

    pub(crate) fn table_name(self) -> String {
        format!("c.{}", self.0)
    }
}

impl fmt::Debug for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The key of an aggregate data value: DHIS2 identifies a value by these five UIDs/ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataValueKey {
    pub data_element: String,
    pub period: String,
    pub org_unit: String,
    pub category_option_combo: String,
    pub attribute_option_combo: String,
}

impl DataValueKey {
    /// The record key: the five parts joined by `/`, in DHIS2's order.
    pub fn to_key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.data_element,
            self.period,
            self.org_unit,
            self.category_option_combo,
            self.attribute_option_combo
        )
    }

    /// Parses a key made by [`DataValueKey::to_key`].
    pub fn from_key(key: &str) -> Option<DataValueKey> {
        let mut parts = key.split('/');
        let k = DataValueKey {
            data_element: parts.next()?.to_owned(),
            period: parts.next()?.to_owned(),
            org_unit: parts.next()?.to_owned(),
            category_option_combo: parts.next()?.to_owned(),
            attribute_option_combo: parts.next()?.to_owned(),
        };
        parts.next().is_none().then_some(k)
    }
}

/// Keys are stored in the clear, so they must never hold personal data: DHIS2 UIDs, metadata
/// codes, period ids. This rejects what cannot be one (control characters, overlong keys).
pub(crate) fn check_key(key: &str) -> Result<(), crate::StoreError> {
    if key.is_empty() || key.len() > 512 || key.chars().any(char::is_control) {
        return Err(crate::StoreError::InvalidKey(format!(
            "key of {} bytes is empty, too long or has control characters",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_value_key_round_trips() {
        let k = DataValueKey {
            data_element: "fbfJHSPpUQD".into(),
            period: "202611".into(),
            org_unit: "DiszpKrYNg8".into(),
            category_option_combo: "HllvX50cXC0".into(),
            attribute_option_combo: "HllvX50cXC0".into(),
        };
        assert_eq!(DataValueKey::from_key(&k.to_key()), Some(k));
        assert_eq!(DataValueKey::from_key("a/b/c/d"), None);
        assert_eq!(DataValueKey::from_key("a/b/c/d/e/f"), None);
    }

    #[test]
    fn keys_with_control_characters_are_refused() {
        assert!(check_key("IpHINAT79UW").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\nb").is_err());
    }
}
