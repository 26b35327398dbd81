//! Which live tracked entities hold an attribute value: the store's keyed-hash index
//! [`INDEX`], written in the same commit as the entity (so it never disagrees with the records
//! a snapshot holds) instead of a map in memory that grew with every patient. Answers the
//! unique-value checks, exact-match search and reserved values.
//!
//! The index is derived data an older release does not keep: a store it wrote last is
//! rebuilt whole at start ([`rebuild_if_behind`], see `Store::derived_current`).

use clinicbox_dhis2::Uid;
use clinicbox_store::{Collection, ReadView, Store, StoreError, WriteCtx};

use crate::model::StoredTrackedEntity;

/// The keyed-hash index of `attribute ‖ 0 ‖ lower-cased value` → tracked entity UID.
pub const INDEX: &str = "teValue";

/// What the index files a value under: case-insensitive, as DHIS2's unique checks are.
fn indexed(attribute: &str, value: &str) -> String {
    format!("{attribute}\u{0}{}", value.to_lowercase())
}

/// Live tracked entities holding `value` for `attribute` in snapshot `read`, by UID.
pub fn holders(read: &ReadView, attribute: Uid, value: &str) -> Result<Vec<Uid>, StoreError> {
    let mut out: Vec<Uid> = read
        .index_lookup(INDEX, &indexed(attribute.as_str(), value))?
        .iter()
        .filter_map(|k| Uid::try_from(k.as_str()).ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

fn add_all(ctx: &mut WriteCtx<'_>, uid: &str, te: &StoredTrackedEntity) -> Result<(), StoreError> {
    for a in te
        .attributes
        .iter()
        .filter(|a| Uid::try_from(a.attribute.as_str()).is_ok())
    {
        ctx.index_add(INDEX, &indexed(&a.attribute, &a.value), uid)?;
    }
    Ok(())
}

/// Files the values of entity `uid` as `new` holds them (`None`: deleted), unfiling what the
/// record it replaces held. Called in the commit that writes the entity.
pub fn write(
    ctx: &mut WriteCtx<'_>,
    uid: &str,
    new: Option<&StoredTrackedEntity>,
) -> Result<(), StoreError> {
    if let Some(old) = ctx.get(Collection::TRACKED_ENTITIES, uid)? {
        if !old.deleted {
            match old.json::<StoredTrackedEntity>() {
                Ok(old) => {
                    for a in &old.attributes {
                        ctx.index_remove(INDEX, &indexed(&a.attribute, &a.value), uid);
                    }
                }
                // Its values stay filed: a unique check may then refuse one of them until the
                // next rebuild, which is safer than letting a duplicate in.
                Err(_) => tracing::warn!(uid, "a stored tracked entity could not be read"),
            }
        }
    }
    match new {
        Some(te) => add_all(ctx, uid, te),
        None => Ok(()),
    }
}

/// Rebuilds the index from every live tracked entity, in one commit, when the store says an
/// older build wrote it last. Returns how many entities were filed, if it rebuilt.
pub fn rebuild_if_behind(store: &Store) -> Result<Option<u64>, StoreError> {
    if store.derived_current() {
        return Ok(None);
    }
    let read = store.read()?;
    let mut live = Vec::new();
    for item in read.scan(Collection::TRACKED_ENTITIES)? {
        let (key, rec) = item?;
        if rec.deleted {
            continue;
        }
        match rec.json::<StoredTrackedEntity>() {
            Ok(te) => live.push((key, te)),
            Err(_) => tracing::warn!(uid = %key, "skipping an unreadable tracked entity"),
        }
    }
    drop(read);
    let filed = live.len() as u64;
    // Nothing else writes tracked entities before the tracker has started, so the snapshot
    // read above is still what the store holds.
    store
        .write_blocking(move |ctx| {
            ctx.index_clear(INDEX);
            for (key, te) in &live {
                add_all(ctx, key, te)?;
            }
            ctx.mark_derived_current();
            Ok::<_, StoreError>(())
        })
        .map_err(clinicbox_store::WriteError::flatten)?;
    Ok(Some(filed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::saved::tests::store;
    use crate::catalog::{Catalog, Change, Stamps, TeMeta, digest};

    fn te(patient_id: &str) -> StoredTrackedEntity {
        serde_json::from_value(serde_json::json!({
            "trackedEntityType": "cbTetPerson", "orgUnit": "cbClinicA01",
            "attributes": [{"attribute": "cbAttrPatId", "value": patient_id, "createdMs": 1, "updatedMs": 1}]
        }))
        .expect("entity")
    }

    /// Writes entity `uid` as the import does: index first, then the record.
    fn put(s: &Store, uid: &'static str, body: Option<StoredTrackedEntity>) {
        s.write_blocking(move |ctx| {
            write(ctx, uid, body.as_ref())?;
            let bytes = serde_json::to_vec(&body.clone().unwrap_or_else(|| te(""))).expect("json");
            match body {
                Some(_) => ctx.put(Collection::TRACKED_ENTITIES, uid, bytes),
                None => ctx.put_tombstone(Collection::TRACKED_ENTITIES, uid, bytes),
            }
        })
        .map_err(clinicbox_store::WriteError::flatten)
        .expect("write");
    }

    fn held(s: &Store, value: &str) -> Vec<String> {
        let attr = Uid::try_from("cbAttrPatId").expect("uid");
        holders(&s.read().expect("read"), attr, value)
            .expect("lookup")
            .iter()
            .map(|u| u.as_str().to_string())
            .collect()
    }

    #[test]
    fn the_index_follows_each_write_of_an_entity_case_insensitively() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(dir.path());
        put(&s, "teValues001", Some(te("OPD-1")));
        put(&s, "teValues002", Some(te("opd-1")));
        assert_eq!(held(&s, "Opd-1"), ["teValues001", "teValues002"]);
        put(&s, "teValues001", Some(te("OPD-2")));
        assert_eq!(
            held(&s, "OPD-1"),
            ["teValues002"],
            "a changed value is unfiled"
        );
        assert_eq!(held(&s, "OPD-2"), ["teValues001"]);
        put(&s, "teValues002", None);
        assert!(
            held(&s, "OPD-1").is_empty(),
            "a deleted entity holds nothing"
        );
        assert_eq!(rebuild_if_behind(&s).expect("rebuild"), None, "current");
    }

    #[test]
    fn a_batch_sees_its_own_values_before_they_are_committed_and_not_after_it_ends() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(dir.path());
        put(&s, "teValues001", Some(te("OPD-1")));
        let attr = Uid::try_from("cbAttrPatId").expect("uid");
        let meta = |value: Option<&str>| TeMeta {
            tet: Uid::try_from("cbTetPerson").expect("uid"),
            org_unit: Uid::try_from("cbClinicA01").expect("uid"),
            owners: Vec::new(),
            values: value
                .map(|v| digest("cbAttrPatId", v))
                .into_iter()
                .collect(),
            stamps: Stamps {
                created_ms: 1,
                updated_ms: 1,
                deleted: false,
            },
        };
        let u = |s: &str| Uid::try_from(s).expect("uid");
        let mut cat = Catalog::default();
        // In the batch: entity 1 lets go of OPD-1, entity 2 takes it.
        cat.apply_provisional(vec![
            Change::Te(u("teValues001"), meta(Some("OPD-9"))),
            Change::Te(u("teValues002"), meta(Some("opd-1"))),
        ]);
        let read = s.read().expect("read");
        assert_eq!(
            cat.holders(&read, attr, "OPD-1").expect("holders"),
            [u("teValues002")]
        );
        assert_eq!(
            cat.holders(&read, attr, "OPD-9").expect("holders"),
            [u("teValues001")]
        );
        // The commit failed: the store's index answers again.
        cat.settle();
        assert_eq!(
            cat.holders(&read, attr, "OPD-1").expect("holders"),
            [u("teValues001")]
        );
        assert!(cat.tes[&u("teValues002")].values.is_empty(), "none kept");
    }
}
