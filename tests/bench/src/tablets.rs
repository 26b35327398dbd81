//! `clinicbox-bench tablets`: tablets uploading at once through the daemon's own app (API and
//! tracker, in process) on a real store, first on this machine's disk, then with every sync of
//! the store taking as long as an SD card's: patients per second, upload latency and the
//! store's writes per commit for one tablet and for twenty, in the same run. On an SD card a
//! box is as fast as its commits are few: twenty tablets should share them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clinicbox_store::StoreOptions;

use crate::figures::figure;
use crate::tracker::{Bench, basic_auth, open_with, payload};

/// Uploads each tablet makes, one after another (a patient with two visits each); with 20
/// tablets the UIDs' two-digit round stays under 100.
const UPLOADS_PER_TABLET: usize = 5;

struct Run {
    patients_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    writes_per_commit: f64,
}

pub fn run(sync_ms: u64, tablets: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=20).contains(&tablets),
        "1 to 20 tablets (the UIDs hold a two-digit round)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "clinicbox-bench tablets: 1 and {tablets} tablets, {UPLOADS_PER_TABLET} uploads each (a patient, an enrollment, two events)"
    );
    for (disk, delay) in [
        ("this disk", Duration::ZERO),
        ("SD card", Duration::from_millis(sync_ms)),
    ] {
        let one = rt.block_on(measure(delay, 1))?;
        let many = rt.block_on(measure(delay, tablets))?;
        for (n, r) in [(1, &one), (tablets, &many)] {
            println!(
                "{disk} (sync ≥ {} ms), {n} tablet(s): {:.1} patients/s, upload p50 {:.0} ms, p99 {:.0} ms, {:.2} writes per commit",
                delay.as_millis(),
                r.patients_per_s,
                r.p50_ms,
                r.p99_ms,
                r.writes_per_commit
            );
        }
        figure(
            "tablets",
            &format!(
                "{tablets} tablets uploading at once, {disk} (sync ≥ {} ms)",
                delay.as_millis()
            ),
            many.patients_per_s,
            "patients/s",
            "one tablet",
            one.patients_per_s,
        );
    }
    Ok(())
}

async fn measure(sync_delay: Duration, tablets: usize) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let options = StoreOptions {
        sync_delay,
        ..StoreOptions::default()
    };
    let (store, _state, _tracker, app) = open_with(dir.path(), "tablets", options).await?;
    let bench = Arc::new(Bench {
        app,
        auth: basic_auth(),
        store: store.clone(),
    });
    let before = store.stats()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tablets {
        let bench = bench.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for u in 0..UPLOADS_PER_TABLET {
                let body = serde_json::to_vec(&payload(t * UPLOADS_PER_TABLET + u, 1, 2))?;
                let (report, post, poll) = bench.upload_timed(body).await?;
                anyhow::ensure!(report["status"] == "OK", "upload refused: {report}");
                latencies.push((post + poll).as_secs_f64() * 1e3);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let after = store.stats()?;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let commits = after.commits.saturating_sub(before.commits).max(1);
    Ok(Run {
        patients_per_s: (tablets * UPLOADS_PER_TABLET) as f64 / secs,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        writes_per_commit: after.writes.saturating_sub(before.writes) as f64 / commits as f64,
    })
}
