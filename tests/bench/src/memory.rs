//! `clinicbox-bench memory`: the store's resident memory after reading every record of a store
//! holding `patients` patients (what a new tablet's full download reads, twice), with the
//! database's own default page cache (1 GiB) next to the box's bound (`[store] cache_mib`,
//! 64 MiB), each in a fresh process of its own, in the same run: memory and time as ratios.

use std::path::Path;
use std::time::Instant;

use clinicbox_store::{Collection, Store, StoreOptions, Unlock};

use crate::figures::figure;

/// What the database library uses unless told otherwise.
const LIBRARY_DEFAULT_MIB: usize = 1024;

pub fn run(patients: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = crate::demo_store(&data)?;
    println!("clinicbox-bench memory: {patients} patients (tracked entity, enrollment, 2 events)");
    crate::backup::fill(&store, patients)?;
    store.close()?;
    drop(store);
    let file = std::fs::metadata(data.join(clinicbox_store::DB_FILE))?.len();
    println!("store file: {} MiB", file >> 20);
    let bound = clinicbox_store::DEFAULT_CACHE_BYTES >> 20;
    let wide = child(&data, LIBRARY_DEFAULT_MIB)?;
    let narrow = child(&data, bound)?;
    println!(
        "resident after reading every record twice: {} MiB with a {LIBRARY_DEFAULT_MIB} MiB cache, {} MiB with {bound} MiB",
        wide.0 >> 10,
        narrow.0 >> 10
    );
    println!(
        "time to read every record twice: {:.2} s with {LIBRARY_DEFAULT_MIB} MiB, {:.2} s with {bound} MiB",
        wide.1, narrow.1
    );
    let base = format!("database default cache ({LIBRARY_DEFAULT_MIB} MiB)");
    figure(
        "memory",
        &format!("peak RSS, {patients} patients read twice, {bound} MiB cache"),
        (narrow.0 >> 10) as f64,
        "MiB",
        &base,
        (wide.0 >> 10) as f64,
    );
    figure(
        "memory",
        &format!("time to read {patients} patients twice, {bound} MiB cache"),
        narrow.1,
        "s",
        &base,
        wide.1,
    );
    Ok(())
}

/// Runs [`scan`] in a fresh process: its peak RSS (KiB) and seconds.
fn child(data: &Path, cache_mib: usize) -> anyhow::Result<(u64, f64)> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("memory-scan")
        .arg(data)
        .arg(cache_mib.to_string())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (field("peak_kib="), field("secs=")) {
        (Some(kib), Some(secs)) => Ok((kib as u64, secs)),
        _ => anyhow::bail!(
            "memory-scan {cache_mib}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `clinicbox-bench memory-scan DIR MIB`: opens the store with a `MIB` cache and reads every
/// tracked entity, enrollment and event twice (decrypted, as a download would).
pub fn scan(data: &Path, cache_mib: usize) -> anyhow::Result<()> {
    let options = StoreOptions {
        cache_bytes: cache_mib << 20,
        ..StoreOptions::default()
    };
    let store = Store::open_with(data, &Unlock::key_file(data.join("demo.key")), options)?;
    let started = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..2 {
        let read = store.read()?;
        for c in [
            Collection::TRACKED_ENTITIES,
            Collection::ENROLLMENTS,
            Collection::EVENTS,
        ] {
            for r in read.scan(c)? {
                bytes += r?.1.body.len();
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "peak_kib={} secs={secs:.3} bytes={bytes}",
        crate::tracker::peak_rss_kib()
    );
    Ok(())
}
