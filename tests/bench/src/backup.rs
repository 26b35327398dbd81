//! `clinicbox-bench backup`: a backup and a restore of a store holding `patients` patients
//! (each a tracked entity, an enrollment and two events, sealed as the store seals them), next to
//! copying the store file, in the same run: time and size as ratios.

use std::path::Path;
use std::time::{Duration, Instant};

use clinicbox::backup::{RestoreKey, archive, write_encrypted};
use clinicbox_store::{Collection, Store};

use crate::figures::figure;

/// Records per write transaction while filling the store.
const FILL_BATCH: u32 = 5_000;

pub(crate) fn fill(store: &Store, patients: u32) -> anyhow::Result<()> {
    let mut n = 0;
    while n < patients {
        let end = (n + FILL_BATCH / 4).min(patients);
        store
            .write_blocking(move |ctx| -> Result<(), clinicbox_store::StoreError> {
                for p in n..end {
                    let te = format!("{{\"trackedEntityType\":\"cbTetPerson\",\"orgUnit\":\"cbClinicA01\",\"attributes\":[{{\"attribute\":\"cbAttrPatId\",\"value\":\"UP-{p:07}\"}},{{\"attribute\":\"cbAttrFirst\",\"value\":\"Amina\"}},{{\"attribute\":\"cbAttrLastN\",\"value\":\"Otieno\"}}]}}");
                    ctx.put(Collection::TRACKED_ENTITIES, &format!("te{p:09}"), te.into_bytes())?;
                    let en = format!("{{\"trackedEntity\":\"te{p:09}\",\"program\":\"cbPrgOpd001\",\"orgUnit\":\"cbClinicA01\",\"status\":\"ACTIVE\",\"enrolledAt\":\"2026-12-01T09:00:00.000\"}}");
                    ctx.put(Collection::ENROLLMENTS, &format!("en{p:09}"), en.into_bytes())?;
                    for s in 0..2 {
                        let ev = format!("{{\"enrollment\":\"en{p:09}\",\"programStage\":\"cbStgTriage\",\"orgUnit\":\"cbClinicA01\",\"status\":\"COMPLETED\",\"occurredAt\":\"2026-12-01T09:05:00.000\",\"dataValues\":[{{\"dataElement\":\"cbDeWeight1\",\"value\":\"61.{s}\"}},{{\"dataElement\":\"cbDeTriage1\",\"value\":\"YELLOW\"}}]}}");
                        ctx.put(Collection::EVENTS, &format!("ev{p:09}{s}"), ev.into_bytes())?;
                    }
                }
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        n = end;
    }
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Copies `from` to `to` and makes it durable: what backing up the file alone would cost.
fn copy_file(from: &Path, to: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()?;
    Ok(started.elapsed())
}

pub fn run(patients: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = crate::demo_store(&data)?;
    println!("clinicbox-bench backup: {patients} patients (tracked entity, enrollment, 2 events)");
    fill(&store, patients)?;
    let store_bytes = std::fs::metadata(data.join(clinicbox_store::DB_FILE))?.len();

    // Baseline: the store file copied as it is (the box stopped), made durable.
    let copy = copy_file(
        &data.join(clinicbox_store::DB_FILE),
        &dir.path().join("copy.redb"),
    )?;

    // The backup: a snapshot while the store is open, then the encrypted archive.
    let started = Instant::now();
    std::fs::create_dir_all(data.join("backup"))?;
    let staging = data.join("backup").join(clinicbox_store::DB_FILE);
    let snap = store.snapshot_to(&staging)?;
    let snapshot = started.elapsed();
    let identity = age::x25519::Identity::generate();
    let files = vec![
        ("store.redb".to_string(), staging.clone()),
        ("demo.key".to_string(), data.join("demo.key")),
    ];
    let base = archive::Manifest {
        format: archive::FORMAT,
        box_id: "bench".into(),
        box_name: "bench".into(),
        created_ms: 0,
        last_seq: snap.last_seq,
        version: "bench".into(),
        files: Vec::new(),
    };
    let stick = dir.path().join("stick");
    std::fs::create_dir_all(&stick)?;
    let written = write_encrypted(
        &stick,
        "bench.backup",
        &[identity.to_public()],
        &files,
        base,
    )?;
    let backup = started.elapsed();
    store.close()?;

    // The restore: decrypt, check every file against the manifest, open the store.
    let id_file = dir.path().join("hq.key");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&id_file, identity.to_string().expose_secret())?;
    }
    let started = Instant::now();
    clinicbox::backup::restore(
        &written.path,
        &dir.path().join("restored"),
        &RestoreKey::HqIdentity(id_file),
    )?;
    let restore = started.elapsed();

    println!("\n{:<44} {:>10} {:>12}", "", "seconds", "MiB");
    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "{:<44} {:>10.2} {:>12.1}",
        "copy of the store file (baseline)",
        secs(copy),
        mib(store_bytes)
    );
    println!(
        "{:<44} {:>10.2} {:>12.1}",
        "snapshot while open",
        secs(snapshot),
        mib(snap.bytes)
    );
    println!(
        "{:<44} {:>10.2} {:>12.1}",
        "backup: snapshot + encrypted archive",
        secs(backup),
        mib(written.bytes)
    );
    println!(
        "{:<44} {:>10.2}",
        "restore: decrypt, check, open",
        secs(restore)
    );
    let name = format!("{patients} patients");
    figure(
        "backup",
        &format!("backup time, {name}"),
        secs(backup),
        "s",
        "copy of the store file",
        secs(copy),
    );
    figure(
        "backup",
        &format!("backup size, {name}"),
        mib(written.bytes),
        "MiB",
        "the store file",
        mib(store_bytes),
    );
    figure(
        "backup",
        &format!("restore time, {name}"),
        secs(restore),
        "s",
        "copy of the store file",
        secs(copy),
    );
    Ok(())
}
