//! `clinicbox-bench scale`: what a tablet's requests cost on a box holding few patients and on
//! one holding many, in the same run, through the daemon's own routers: "anything new?", a
//! page of 50, a new tablet's full download, the restart (catalog from its saved copy) and the
//! store's bytes per patient. The goal is a request that costs what it returns: the ratio of
//! the large box to the small one near 1 for a page and for "anything new?", and a full
//! download whose time per patient does not grow.
//!
//! Reads never sync the file, so a slow SD card's fsync changes none of these figures; it is
//! measured where it matters, in `clinicbox-bench tablets`.

use std::time::Instant;

use serde_json::Value;

use crate::figures::figure;
use crate::tracker::{Bench, basic_auth, open};

const PAGE: usize = 50;
/// The Android SDK's download: every field the app reads, newest first, tombstones included.
const DOWNLOAD: &str = "fields=trackedEntity,createdAt,updatedAt,orgUnit,trackedEntityType,deleted,attributes[attribute,value,createdAt,updatedAt],enrollments[enrollment,createdAt,updatedAt,orgUnit,program,enrolledAt,occurredAt,status,deleted,trackedEntity,events[event,enrollment,createdAt,updatedAt,status,program,programStage,orgUnit,occurredAt,completedAt,deleted,dataValues[dataElement,value,createdAt,updatedAt]]],programOwners&orgUnits=cbClinicA01&orgUnitMode=DESCENDANTS&program=cbPrgOpd001&order=createdAt:desc&includeDeleted=true&paging=true";

struct Figures {
    patients: u32,
    anything_new_ms: f64,
    /// The median page of a full download.
    page_ms: f64,
    /// The middle page asked on its own.
    page_alone_ms: f64,
    download_s: f64,
    restart_s: f64,
    bytes_per_patient: u64,
}

pub fn run(small: u32, large: u32) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "clinicbox-bench scale: {small} and {large} patients (tracked entity, enrollment, 2 events)"
    );
    let s = rt.block_on(measure(small))?;
    let l = rt.block_on(measure(large))?;
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "", s.patients, l.patients, "ratio"
    );
    let row = |what: &str, unit: &str, a: f64, b: f64| {
        println!(
            "{:<34} {:>9.2} {unit:<2} {:>9.2} {unit:<2} {:>8.2}",
            what,
            a,
            b,
            b / a.max(f64::MIN_POSITIVE)
        );
    };
    row(
        "\"anything new?\" (one page)",
        "ms",
        s.anything_new_ms,
        l.anything_new_ms,
    );
    row("a page of 50, in a download", "ms", s.page_ms, l.page_ms);
    row(
        "the middle page, asked alone",
        "ms",
        s.page_alone_ms,
        l.page_alone_ms,
    );
    row("full download", "s", s.download_s, l.download_s);
    let per = |f: &Figures| f.download_s * 1e6 / f64::from(f.patients);
    row("full download per patient", "us", per(&s), per(&l));
    row("restart (catalog)", "s", s.restart_s, l.restart_s);
    row(
        "store file per patient",
        "B",
        s.bytes_per_patient as f64,
        l.bytes_per_patient as f64,
    );
    let at = |f: &Figures| format!("{} patients", f.patients);
    figure(
        "scale",
        &format!("\"anything new?\" at {}", at(&l)),
        l.anything_new_ms,
        "ms",
        &at(&s),
        s.anything_new_ms,
    );
    figure(
        "scale",
        &format!("a page of 50 in a download at {}", at(&l)),
        l.page_ms,
        "ms",
        &at(&s),
        s.page_ms,
    );
    figure(
        "scale",
        &format!("full download per patient at {}", at(&l)),
        per(&l),
        "us",
        &at(&s),
        per(&s),
    );
    figure(
        "scale",
        &format!("restart at {}", at(&l)),
        l.restart_s,
        "s",
        &at(&s),
        s.restart_s,
    );
    figure(
        "scale",
        &format!("store bytes per patient at {}", at(&l)),
        l.bytes_per_patient as f64,
        "B",
        &at(&s),
        s.bytes_per_patient as f64,
    );
    Ok(())
}

async fn measure(patients: u32) -> anyhow::Result<Figures> {
    let dir = match std::env::var_os("CLINICBOX_BENCH_DIR") {
        Some(b) => tempfile::tempdir_in(b)?,
        None => tempfile::tempdir()?,
    };
    let (store, state, tracker, _) = open(dir.path(), "scale").await?;
    let filling = store.clone();
    tokio::task::spawn_blocking(move || crate::restart::fill(&filling, patients)).await??;
    // What a clean stop leaves, then the start that reads it back.
    drop(tracker);
    let rebuilt = clinicbox_tracker::Tracker::start(state.clone(), Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    rebuilt.save_catalog().await?;
    drop(rebuilt);
    let started = Instant::now();
    let tracker = clinicbox_tracker::Tracker::start(state.clone(), Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let restart_s = started.elapsed().as_secs_f64();
    let b = Bench {
        app: clinicbox::app::in_process(&store, state, tracker),
        auth: basic_auth(),
        store: store.clone(),
    };
    let anything_new_ms = crate::tracker::anything_new(&b).await?;
    // A page asked out of the blue walks past the pages before it; a tablet asks them in
    // order, and then a page costs what it returns.
    let middle = (patients as usize / PAGE / 2).max(1);
    let mut alone = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let n = download_page(&b, middle).await?;
        anyhow::ensure!(n == PAGE.min(patients as usize), "page {middle}: {n}");
        alone.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let started = Instant::now();
    let (mut seen, mut pages) = (0, Vec::new());
    for p in 1.. {
        let page_started = Instant::now();
        let n = download_page(&b, p).await?;
        pages.push(page_started.elapsed().as_secs_f64() * 1e3);
        seen += n;
        if n < PAGE {
            break;
        }
    }
    let download_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(seen == patients as usize, "downloaded {seen} of {patients}");
    let f = Figures {
        patients,
        anything_new_ms,
        page_ms: crate::tracker::median(pages),
        page_alone_ms: crate::tracker::median(alone),
        download_s,
        restart_s,
        bytes_per_patient: store.space()?.file_bytes / u64::from(patients.max(1)),
    };
    println!(
        "{patients} patients: anything new {:.2} ms, a page of the download {:.2} ms (page {middle} alone {:.2} ms), full download {:.2} s, restart {:.3} s",
        f.anything_new_ms, f.page_ms, f.page_alone_ms, f.download_s, f.restart_s
    );
    crate::restart::print_space(&store, patients)?;
    Ok(f)
}

/// One page of the SDK's download; the number of patients on it.
async fn download_page(b: &Bench, page: usize) -> anyhow::Result<usize> {
    let (status, bytes) = b
        .call(
            "GET",
            &format!("/api/tracker/trackedEntities?{DOWNLOAD}&page={page}&pageSize={PAGE}"),
            None,
        )
        .await?;
    anyhow::ensure!(
        status == 200,
        "download {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let v: Value = serde_json::from_slice(&bytes)?;
    Ok(v["trackedEntities"].as_array().map_or(0, Vec::len))
}
