//! Aggregate records rendered for national: `dataValues[]` entries for
//! `POST /api/dataValueSets` and registrations for `POST /api/completeDataSetRegistrations`.
//!
//! Each entry names all its ids (national accepts a bulk set whose values carry their own
//! period, org unit and combos). A deletion is `deleted: true`; an un-completion is
//! `completed: false`. Re-sending an identical value is ignored by national, so a batch sent
//! twice counts nothing twice.

use clinicbox_store::{DataValueKey, ReadView, StoreError};
use serde_json::{Value, json};

use crate::records::{DATA_VALUES, REGISTRATIONS, StoredDataValue, StoredRegistration};

/// The data value stored under `key`, as national imports it; `None` if there is none.
pub fn data_value(read: &ReadView, key: &str) -> Result<Option<Value>, StoreError> {
    let (Some(k), Some(rec)) = (DataValueKey::from_key(key), read.get(DATA_VALUES, key)?) else {
        return Ok(None);
    };
    let Ok(v) = rec.json::<StoredDataValue>() else {
        return Ok(None);
    };
    // National's own version, pulled: nothing to send back.
    if v.from_national {
        return Ok(None);
    }
    let mut out = json!({
        "dataElement": k.data_element,
        "period": k.period,
        "orgUnit": k.org_unit,
        "categoryOptionCombo": k.category_option_combo,
        "attributeOptionCombo": k.attribute_option_combo,
        "storedBy": v.stored_by,
    });
    if rec.deleted {
        out["deleted"] = Value::Bool(true);
    } else {
        if let Some(value) = v.value {
            out["value"] = Value::String(value);
        }
        if let Some(c) = v.comment {
            out["comment"] = Value::String(c);
        }
        if v.followup {
            out["followup"] = Value::Bool(true);
        }
    }
    Ok(Some(out))
}

/// The registration stored under `ds/pe/ou/aoc`, as national imports it.
pub fn registration(read: &ReadView, key: &str) -> Result<Option<Value>, StoreError> {
    let parts: Vec<&str> = key.split('/').collect();
    let [ds, pe, ou, aoc] = parts[..] else {
        return Ok(None);
    };
    let Some(rec) = read.get(REGISTRATIONS, key)? else {
        return Ok(None);
    };
    let Ok(r) = rec.json::<StoredRegistration>() else {
        return Ok(None);
    };
    Ok(Some(json!({
        "dataSet": ds,
        "period": pe,
        "organisationUnit": ou,
        "attributeOptionCombo": aoc,
        "date": r.date,
        "storedBy": r.stored_by,
        "completed": !rec.deleted,
    })))
}
