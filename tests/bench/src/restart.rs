//! `clinicbox-bench restart`: how long the tracker's catalog takes to come back when `serve`
//! starts on a store holding `patients` patients: from its saved snapshot plus the changes
//! made after it, next to rebuilding it from every record (the baseline), in the same run; and
//! how much memory the catalog holds.

use std::time::Instant;

use clinicbox_store::{Collection, Store};
use clinicbox_tracker::catalog::{Catalog, saved};

use crate::figures::figure;

/// Patients added after the save (each four records), as a power cut between saves leaves.
const CHANGED_AFTER_SAVE: u32 = 1_000;

pub fn run(patients: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = crate::demo_store(&data)?;
    println!("clinicbox-bench restart: {patients} patients (tracked entity, enrollment, 2 events)");
    fill(&store, patients)?;
    let started = Instant::now();
    let mut bytes = 0usize;
    let read = store.read()?;
    for c in [
        Collection::TRACKED_ENTITIES,
        Collection::ENROLLMENTS,
        Collection::EVENTS,
        Collection::RELATIONSHIPS,
    ] {
        for r in read.scan(c)? {
            bytes += r?.1.body.len();
        }
    }
    drop(read);
    let scan = started.elapsed().as_secs_f64();
    let file = std::fs::metadata(data.join(clinicbox_store::DB_FILE))?.len();
    println!(
        "every record read and decrypted: {scan:.2} s ({} MiB of records; the store file {} MiB, {} bytes per patient)",
        bytes >> 20,
        file >> 20,
        file / u64::from(patients.max(1))
    );
    print_space(&store, patients)?;
    let started = Instant::now();
    let catalog = Catalog::build(&store.read()?)?;
    let rebuild = started.elapsed().as_secs_f64();
    println!(
        "rebuilt from every record: {rebuild:.2} s ({} tracked entities)",
        catalog.tes.len()
    );

    let rt = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let seq = store.read()?.last_seq()?;
    let encoded = catalog.encode();
    let bytes = encoded.len();
    rt.block_on(saved::save(&store, seq, encoded))?;
    let save = started.elapsed().as_secs_f64();
    drop(catalog);
    let stored = saved::stored_bytes(&store.read()?)?;
    println!(
        "saved: {:.1} MiB encoded, {:.1} MiB stored ({} bytes per patient) in {save:.2} s",
        bytes as f64 / f64::from(1 << 20),
        stored as f64 / f64::from(1 << 20),
        stored / u64::from(patients.max(1))
    );
    // What a power cut leaves: changes made after the last save.
    fill_from(&store, patients, CHANGED_AFTER_SAVE)?;
    let before = crate::allocated();
    let started = Instant::now();
    let (loaded, report) = saved::load(&store.read()?)?
        .ok_or_else(|| anyhow::anyhow!("the saved catalog did not load"))?;
    let load = started.elapsed().as_secs_f64();
    println!(
        "loaded from the saved copy and {} records changed after it: {load:.2} s ({} tracked entities)",
        report.replayed,
        loaded.tes.len()
    );
    let catalog_bytes = crate::allocated().saturating_sub(before);
    drop(loaded);
    let catalog_mib = catalog_bytes as f64 / f64::from(1 << 20);
    figure(
        "restart",
        &format!(
            "catalog at start, {patients} patients (saved copy + {CHANGED_AFTER_SAVE} patients changed after it)"
        ),
        load,
        "s",
        "rebuilt from every record",
        rebuild,
    );
    println!(
        "the loaded catalog's memory: {catalog_mib:.0} MiB ({} bytes per patient)",
        (catalog_mib * 1024.0 * 1024.0) as u64 / u64::from(patients.max(1))
    );
    figure(
        "restart",
        &format!("saving the catalog, {patients} patients"),
        save,
        "s",
        "rebuilt from every record",
        rebuild,
    );
    Ok(())
}

/// Where the store file's bytes go, per patient and table.
pub(crate) fn print_space(store: &Store, patients: u32) -> anyhow::Result<()> {
    let space = store.space()?;
    let per = |b: u64| b / u64::from(patients.max(1));
    println!(
        "store file: {} bytes per patient ({} allocated)",
        per(space.file_bytes),
        per(space.allocated_bytes)
    );
    for t in space.tables.iter().filter(|t| t.stored_bytes > 0) {
        println!(
            "  {:<24} {:>9} entries  stored {:>5} B/patient  meta {:>4}  fragmented {:>5}",
            t.name,
            t.entries,
            per(t.stored_bytes),
            per(t.metadata_bytes),
            per(t.fragmented_bytes)
        );
    }
    Ok(())
}

/// Patients as the tracker stores them: a tracked entity with three attributes, an enrollment,
/// a triage and a consultation with their values and a note.
pub(crate) fn fill(store: &Store, patients: u32) -> anyhow::Result<()> {
    fill_from(store, 0, patients)
}

fn fill_from(store: &Store, first: u32, patients: u32) -> anyhow::Result<()> {
    const BATCH: u32 = 2_000;
    let mut n = first;
    while n < first + patients {
        let end = (n + BATCH).min(first + patients);
        store
            .write_blocking(move |ctx| -> Result<(), clinicbox_store::StoreError> {
                let ms = ctx.now_ms();
                for p in n..end {
                    let attr = |a: &str, v: &str| format!("{{\"attribute\":\"{a}\",\"value\":\"{v}\",\"createdMs\":{ms},\"updatedMs\":{ms},\"storedBy\":\"android\"}}");
                    let te = format!(
                        "{{\"trackedEntityType\":\"cbTetPerson\",\"orgUnit\":\"cbClinicA01\",\"createdBy\":\"android\",\"attributes\":[{},{},{}],\"programOwners\":[{{\"program\":\"cbPrgOpd001\",\"orgUnit\":\"cbClinicA01\"}}]}}",
                        attr("cbAttrPatId", &format!("OPD-{p:07}")),
                        attr("cbAttrFirst", "Amina"),
                        attr("cbAttrLastN", "Otieno"),
                    );
                    // Filed in the value index as an import files it, so the store's size and
                    // the box's memory count it.
                    let stored: clinicbox_tracker::model::StoredTrackedEntity =
                        serde_json::from_str(&te).map_err(|e| clinicbox_store::StoreError::Malformed {
                            collection: "bench".into(),
                            key: String::new(),
                            reason: e.to_string(),
                        })?;
                    clinicbox_tracker::catalog::values::write(ctx, &format!("te{p:09}"), Some(&stored))?;
                    ctx.put(Collection::TRACKED_ENTITIES, &format!("te{p:09}"), te.into_bytes())?;
                    let en = format!("{{\"trackedEntity\":\"te{p:09}\",\"program\":\"cbPrgOpd001\",\"orgUnit\":\"cbClinicA01\",\"status\":\"ACTIVE\",\"enrolledAt\":\"2026-12-01T09:00:00.000\",\"occurredAt\":\"2026-12-01T09:00:00.000\",\"createdBy\":\"android\"}}");
                    ctx.put(Collection::ENROLLMENTS, &format!("en{p:09}"), en.into_bytes())?;
                    for (s, stage) in ["cbStgTriage", "cbStgConsul"].iter().enumerate() {
                        let ev = format!("{{\"enrollment\":\"en{p:09}\",\"trackedEntity\":\"te{p:09}\",\"program\":\"cbPrgOpd001\",\"programStage\":\"{stage}\",\"orgUnit\":\"cbClinicA01\",\"status\":\"COMPLETED\",\"occurredAt\":\"2026-12-01T09:05:00.000\",\"completedAt\":\"2026-12-01T09:15:00.000\",\"dataValues\":[{{\"dataElement\":\"cbDeWeight1\",\"value\":\"61.{s}\",\"createdMs\":{ms},\"updatedMs\":{ms},\"storedBy\":\"android\"}},{{\"dataElement\":\"cbDeTriage1\",\"value\":\"YELLOW\",\"createdMs\":{ms},\"updatedMs\":{ms},\"storedBy\":\"android\"}}],\"notes\":[],\"createdBy\":\"android\"}}");
                        ctx.put(Collection::EVENTS, &format!("ev{p:08}{s}"), ev.into_bytes())?;
                    }
                }
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        n = end;
    }
    Ok(())
}
