//! `clinicbox-bench serve-memory`: the real `clinicbox serve` holding `patients` patients —
//! resident memory after start and after twenty tablets at once each download a page of
//! patients and upload one — next to an empty demo box's in the same run: what the data costs
//! in memory above the box itself. Both run with a Pi 4's store cache and the allocator
//! setting of the image's unit.

use clinicbox_tests::{BoxBuilder, http_request};

use crate::figures::figure;

const TABLETS: usize = 20;
/// The store's page cache on a Pi 4 (hw/pi4.toml `[store] cache_mib`).
const PI4_CACHE_MIB: u32 = 48;

struct Memory {
    after_start_kib: u64,
    after_tablets_kib: u64,
    peak_kib: u64,
}

pub fn run(patients: u32) -> anyhow::Result<()> {
    crate::use_binaries_beside_this_one()?;
    println!("clinicbox-bench serve-memory: an empty demo box and one holding {patients} patients");
    let empty = measure(0)?;
    let full = measure(patients)?;
    for (what, m) in [("empty box", &empty), ("with the patients", &full)] {
        println!(
            "{what}: {} MiB after start, {} MiB after {TABLETS} tablets, peak {} MiB",
            m.after_start_kib >> 10,
            m.after_tablets_kib >> 10,
            m.peak_kib >> 10
        );
    }
    let per_100k = |kib: u64| (kib as f64 / 1024.0) * 100_000.0 / f64::from(patients.max(1));
    println!(
        "above the empty box, per 100,000 patients: {:.0} MiB after start, {:.0} MiB after {TABLETS} tablets",
        per_100k(full.after_start_kib.saturating_sub(empty.after_start_kib)),
        per_100k(
            full.after_tablets_kib
                .saturating_sub(empty.after_tablets_kib)
        ),
    );
    figure(
        "serve-memory",
        &format!("resident memory, {patients} patients, after {TABLETS} tablets"),
        (full.after_tablets_kib >> 10) as f64,
        "MiB",
        "empty demo box, same tablets",
        (empty.after_tablets_kib >> 10) as f64,
    );
    Ok(())
}

fn measure(patients: u32) -> anyhow::Result<Memory> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    if patients > 0 {
        let store = crate::demo_store(&data)?;
        crate::restart::fill(&store, patients)?;
        store.close()?;
    }
    // As the image runs it on a Pi 4 (hw/pi4.toml, image/units/clinicbox.service).
    let b = BoxBuilder::demo_at(data.display().to_string())
        .config(&format!("[store]\ncache_mib = {PI4_CACHE_MIB}\n"))
        .env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
        .start();
    let pid = b.pid();
    let after_start_kib = status_kib(pid, "VmRSS:");
    let host = b.url().trim_start_matches("http://").to_string();
    let auth = crate::tracker::basic_auth();
    let answers: Vec<(u16, u16)> = std::thread::scope(|s| {
        let mut tablets = Vec::new();
        for t in 0..TABLETS {
            let (host, auth) = (&host, &auth);
            tablets.push(s.spawn(move || {
                let headers = [("Authorization", auth.as_str())];
                let page = http_request(host, "GET", "/api/tracker/trackedEntities?program=cbPrgOpd001&orgUnits=cbClinicA01&orgUnitMode=DESCENDANTS&page=1&pageSize=50&fields=*", &headers, b"");
                let body = serde_json::to_vec(&crate::tablets::patient(t, 0)).unwrap_or_default();
                let post = http_request(
                    host,
                    "POST",
                    "/api/tracker?async=false&atomicMode=OBJECT",
                    &[
                        ("Authorization", auth.as_str()),
                        ("Content-Type", "application/json"),
                    ],
                    &body,
                );
                (page.status, post.status)
            }));
        }
        tablets
            .into_iter()
            .map(|t| t.join().unwrap_or((0, 0)))
            .collect()
    });
    anyhow::ensure!(
        answers.iter().all(|a| *a == (200, 200)),
        "tablets got {answers:?}"
    );
    let after_tablets_kib = status_kib(pid, "VmRSS:");
    let peak_kib = status_kib(pid, "VmHWM:");
    b.stop();
    Ok(Memory {
        after_start_kib,
        after_tablets_kib,
        peak_kib,
    })
}

fn status_kib(pid: u32, field: &str) -> u64 {
    crate::tracker::proc_status_kib(&format!("/proc/{pid}/status"), field)
}
