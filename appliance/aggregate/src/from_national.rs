//! Data values changed at national, merged into the box by the uplink's pull.
//!
//! National is the authority for its own values: no user's rights, approval or expiry apply,
//! only the box's structure (the element, org unit, combos and period must be ones the box
//! knows; a value is bounded). A value written here is marked `fromNational`, so the outbox
//! never sends it back; the next change on a tablet clears the mark and is sent as usual.
//!
//! When the box holds a change of the same value national has not confirmed yet, both sides
//! changed it: the later change wins, by the time each side recorded it (national's
//! `lastUpdated` in its zone against the box's clock corrected by the measured skew), and both
//! versions are kept as a [`Conflict`]. A box change that wins over a value national only
//! echoed back (stored by one of the box's own users) is no conflict.

use clinicbox_api::conflicts::{self, Conflict, MergeContext, NATIONAL, Side};
use clinicbox_dhis2::aggregate::DataValue;
use clinicbox_dhis2::period::Period;
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone};
use clinicbox_store::{DataValueKey, Store, StoreError, WriteCtx};
use clinicbox_web::Snapshot;

use crate::records::{AUDIT, AuditEntry, AuditType, DATA_VALUES, StoredDataValue, audit_key};

/// The longest value national may send (DHIS2's limit for long text).
const MAX_VALUE_CHARS: usize = 50_000;

/// What one merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    pub applied: u64,
    pub unchanged: u64,
    /// Values the box cannot hold (an unknown element, org unit, combo or period).
    pub skipped: u64,
    pub conflicts: u64,
}

/// One value from national, checked.
struct Incoming {
    key: DataValueKey,
    body: StoredDataValue,
    deleted: bool,
    /// National's `lastUpdated` (ms), when it gave one.
    updated_ms: Option<i64>,
}

/// Merges `values` (national's `dataValues[]`) into the store in one write.
pub async fn merge(
    store: &Store,
    snap: &Snapshot,
    values: Vec<DataValue>,
    cx: MergeContext,
) -> Result<Merged, StoreError> {
    let total = values.len();
    let incoming: Vec<Incoming> = values
        .into_iter()
        .filter_map(|v| checked(snap, v, &cx.zone))
        .collect();
    let skipped = (total - incoming.len()) as u64;
    let merged = store
        .write(move |ctx| -> Result<Merged, StoreError> {
            let mut m = Merged {
                skipped,
                ..Merged::default()
            };
            for i in &incoming {
                merge_one(ctx, i, &cx, &mut m)?;
            }
            Ok(m)
        })
        .await
        .map_err(|e| e.flatten())?;
    Ok(merged.value)
}

fn checked(snap: &Snapshot, v: DataValue, zone: &ServerTimeZone) -> Option<Incoming> {
    let key = DataValueKey {
        data_element: v.data_element?,
        period: v.period?,
        org_unit: v.org_unit?,
        category_option_combo: v.category_option_combo?,
        attribute_option_combo: v.attribute_option_combo?,
    };
    let known = snap.contains("dataElements", &key.data_element)
        && snap.contains("organisationUnits", &key.org_unit)
        && snap.contains("categoryOptionCombos", &key.category_option_combo)
        && snap.contains("categoryOptionCombos", &key.attribute_option_combo)
        && Period::parse(&key.period).is_ok();
    let bounded = |s: &Option<String>| {
        s.as_ref()
            .is_none_or(|s| s.chars().count() <= MAX_VALUE_CHARS && !s.contains('\0'))
    };
    if !known || !bounded(&v.value) || !bounded(&v.comment) {
        return None;
    }
    let updated_ms = v
        .last_updated
        .as_deref()
        .and_then(|t| Dhis2Timestamp::parse_lenient(t).ok())
        .and_then(|t| t.to_epoch_ms(zone).ok());
    let stored_by: String = v
        .stored_by
        .unwrap_or_else(|| NATIONAL.into())
        .chars()
        .take(255)
        .collect();
    Some(Incoming {
        key,
        deleted: v.deleted.unwrap_or(false) || v.value.is_none(),
        body: StoredDataValue {
            value: v.value,
            comment: v.comment,
            followup: v.followup.unwrap_or(false),
            stored_by,
            last_updated_by: NATIONAL.into(),
            from_national: true,
        },
        updated_ms,
    })
}

fn merge_one(
    ctx: &mut WriteCtx<'_>,
    i: &Incoming,
    cx: &MergeContext,
    m: &mut Merged,
) -> Result<(), StoreError> {
    let k = i.key.to_key();
    let Some(rec) = ctx.get(DATA_VALUES, &k)? else {
        if i.deleted {
            m.unchanged += 1;
        } else {
            write(ctx, i, None)?;
            m.applied += 1;
        }
        return Ok(());
    };
    let Ok(current) = rec.json::<StoredDataValue>() else {
        return Ok(());
    };
    let same = rec.deleted == i.deleted
        && (i.deleted
            || (current.value == i.body.value
                && current.comment == i.body.comment
                && current.followup == i.body.followup));
    if same {
        m.unchanged += 1;
        return Ok(());
    }
    let pending = rec.seq > cx.confirmed_seq && !current.from_national;
    let on_box = (!rec.deleted).then(|| current.value.clone()).flatten();
    if !pending {
        write(ctx, i, on_box)?;
        m.applied += 1;
        return Ok(());
    }
    // Both changed it: the later change wins.
    let national_wins = cx.national_later(rec.updated_ms, i.updated_ms);
    let echo = cx.is_echo(Some(&i.body.stored_by));
    if national_wins {
        write(ctx, i, on_box.clone())?;
        m.applied += 1;
    }
    if national_wins || !echo {
        m.conflicts += 1;
        let conflict = Conflict {
            kind: "dataValue".into(),
            key: k,
            field: None,
            on_box,
            at_national: if i.deleted {
                None
            } else {
                i.body.value.clone()
            },
            chosen: if national_wins {
                Side::National
            } else {
                Side::Box
            },
            at_ms: ctx.now_ms(),
        };
        conflicts::record(ctx, &conflict)?;
    }
    Ok(())
}

/// Stores national's version with an audit entry naming national.
fn write(ctx: &mut WriteCtx<'_>, i: &Incoming, previous: Option<String>) -> Result<(), StoreError> {
    let k = i.key.to_key();
    let audit_type = if i.deleted {
        ctx.put_tombstone(
            DATA_VALUES,
            &k,
            serde_json::to_vec(&i.body).map_err(|source| StoreError::Json {
                collection: DATA_VALUES.name().into(),
                key: k.clone(),
                source,
            })?,
        )?;
        AuditType::Delete
    } else {
        ctx.put_json(DATA_VALUES, &k, &i.body)?;
        if previous.is_some() {
            AuditType::Update
        } else {
            AuditType::Create
        }
    };
    let at_ms = ctx.now_ms();
    let audit = AuditEntry {
        audit_type,
        data_element: i.key.data_element.clone(),
        period: i.key.period.clone(),
        org_unit: i.key.org_unit.clone(),
        category_option_combo: i.key.category_option_combo.clone(),
        attribute_option_combo: i.key.attribute_option_combo.clone(),
        value: if i.deleted {
            None
        } else {
            i.body.value.clone()
        },
        previous_value: previous,
        comment: i.body.comment.clone(),
        followup: i.body.followup,
        modified_by: NATIONAL.into(),
        at_ms,
    };
    ctx.put_json(AUDIT, &audit_key(&i.key, at_ms), &audit)
}
