//! What this crate keeps in the store. Keys are UIDs and period ids only (no personal data);
//! bodies are JSON. Every write lands in the store's change log, which the uplink reads.
//!
//! | collection | key | body |
//! |---|---|---|
//! | `dataValues` | `de/pe/ou/coc/aoc` ([`DataValueKey`]) | [`StoredDataValue`]; deletions are tombstones keeping the last value |
//! | `completeDataSetRegistrations` | `ds/pe/ou/aoc` | [`StoredRegistration`]; un-completed = tombstone |
//! | `dataApprovals` | `wf/pe/ou/aoc` | [`DataApproval`] (written by the uplink from national) |
//! | `dataValueAudit` | `de/pe/ou/coc/aoc/<ms>/<uid>` | [`AuditEntry`]: who changed what, when |

use clinicbox_dhis2::Uid;
use clinicbox_dhis2::aggregate::DataApproval;
use clinicbox_store::{Collection, DataValueKey};
use serde::{Deserialize, Serialize};

/// Aggregate data values (shared constant of the store).
pub const DATA_VALUES: Collection = Collection::DATA_VALUES;
/// Complete data set registrations.
pub const REGISTRATIONS: Collection = Collection::named("completeDataSetRegistrations");
/// Data approval states, as national DHIS2 reported them.
pub const APPROVALS: Collection = Collection::named("dataApprovals");
/// The data value audit trail.
pub const AUDIT: Collection = Collection::named("dataValueAudit");

/// A data value as stored. `created`/`lastUpdated` are the record's store timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDataValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default)]
    pub followup: bool,
    /// What the client said (`storedBy`), else the username; DHIS2 serves this.
    pub stored_by: String,
    /// The authenticated account that made the last change.
    pub last_updated_by: String,
    /// National's own version, pulled by the uplink: the outbox does not send it back. A
    /// tablet's change clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_national: bool,
}

/// A complete registration as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRegistration {
    /// Completion date, `yyyy-MM-dd`.
    pub date: String,
    pub stored_by: String,
    pub last_updated_by: String,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuditType {
    Create,
    Update,
    Delete,
}

/// One change of one data value: who (the authenticated account), what (old and new value),
/// when (the commit's server time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub audit_type: AuditType,
    pub data_element: String,
    pub period: String,
    pub org_unit: String,
    pub category_option_combo: String,
    pub attribute_option_combo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub followup: bool,
    pub modified_by: String,
    /// Server time of the change (ms since the epoch).
    pub at_ms: u64,
}

/// The registration key `ds/pe/ou/aoc`.
pub fn registration_key(ds: &str, pe: &str, ou: &str, aoc: &str) -> String {
    format!("{ds}/{pe}/{ou}/{aoc}")
}

/// Parts of a registration key.
pub fn split4(key: &str) -> Option<(&str, &str, &str, &str)> {
    let mut it = key.split('/');
    let r = (it.next()?, it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some(r)
}

/// The approval key `wf/pe/ou/aoc`.
pub fn approval_key(a: &DataApproval) -> String {
    format!("{}/{}/{}/{}", a.wf, a.pe, a.ou, a.aoc)
}

/// A fresh audit key: under the value's key, ordered by time, unique per entry.
pub fn audit_key(value: &DataValueKey, at_ms: u64) -> String {
    format!("{}/{at_ms:015}/{}", value.to_key(), Uid::generate())
}
