//! `clinicbox-bench tablets`: tablets uploading at once through the daemon's own app (API and
//! tracker, in process) on a real store, first on this machine's disk, then with every sync of
//! the store taking as long as an SD card's: patients per second, upload latency and the
//! uploads per store commit for one tablet and for twenty, in the same run. On an SD card a
//! box is as fast as its commits are few: twenty tablets should share them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clinicbox_store::StoreOptions;

use crate::figures::figure;
use crate::tracker::{Bench, basic_auth, open_with};

/// Uploads each tablet makes, one after another (a patient with two visits each).
const UPLOADS_PER_TABLET: usize = 20;

struct Run {
    patients_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    uploads_per_commit: f64,
}

pub fn run(sync_ms: u64, tablets: usize) -> anyhow::Result<()> {
    anyhow::ensure!((1..=99).contains(&tablets), "1 to 99 tablets");
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
                "{disk} (sync ≥ {} ms), {n} tablet(s): {:.1} patients/s, upload p50 {:.0} ms, p99 {:.0} ms, {:.2} uploads per commit",
                delay.as_millis(),
                r.patients_per_s,
                r.p50_ms,
                r.p99_ms,
                r.uploads_per_commit
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
    // Logged in once before the clock starts: the first login's password check is not what
    // is measured, and twenty of them at once would stagger the tablets.
    let (status, _) = bench.call("GET", "/api/me", None).await?;
    anyhow::ensure!(status == 200, "login: {status}");
    let start = Arc::new(tokio::sync::Barrier::new(tablets + 1));
    let mut tasks = Vec::new();
    for t in 0..tablets {
        let bench = bench.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut latencies = Vec::new();
            for u in 0..UPLOADS_PER_TABLET {
                let body = serde_json::to_vec(&patient(t, u))?;
                let (report, post, poll) = bench.upload_timed(body).await?;
                anyhow::ensure!(report["status"] == "OK", "upload refused: {report}");
                latencies.push((post + poll).as_secs_f64() * 1e3);
            }
            anyhow::Ok(latencies)
        }));
    }
    let before = store.stats()?;
    let started = Instant::now();
    start.wait().await;
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
        uploads_per_commit: (tablets * UPLOADS_PER_TABLET) as f64 / commits as f64,
    })
}

/// Tablet `t`'s upload `u`: a patient, her enrollment, a triage and a consultation.
pub(crate) fn patient(t: usize, u: usize) -> serde_json::Value {
    let id = |kind: char| format!("{kind}{t:02}{u:08}");
    let (te, en) = (id('t'), id('e'));
    serde_json::json!({
        "trackedEntities": [{"trackedEntity": te, "trackedEntityType": "cbTetPerson",
            "orgUnit": "cbClinicA01", "attributes": [
                {"attribute": "cbAttrPatId", "value": format!("TAB-{t:02}{u:05}")},
                {"attribute": "cbAttrFirst", "value": "Amina"},
                {"attribute": "cbAttrLastN", "value": "Otieno"}]}],
        "enrollments": [{"enrollment": en, "trackedEntity": te, "program": "cbPrgOpd001",
            "orgUnit": "cbClinicA01", "enrolledAt": "2026-03-01T09:00:00.000", "status": "ACTIVE",
            "attributes": [{"attribute": "cbAttrSex01", "value": "F"},
                {"attribute": "cbAttrDob01", "value": "1990-04-02"}]}],
        "events": [
            {"event": id('a'), "enrollment": en, "trackedEntity": te, "program": "cbPrgOpd001",
             "programStage": "cbStgTriage", "orgUnit": "cbClinicA01", "status": "COMPLETED",
             "occurredAt": "2026-03-01T09:05:00.000", "dataValues": [
                {"dataElement": "cbDeTemp001", "value": "38.4"},
                {"dataElement": "cbDeTriage1", "value": "YELLOW"}]},
            {"event": id('b'), "enrollment": en, "trackedEntity": te, "program": "cbPrgOpd001",
             "programStage": "cbStgConsul", "orgUnit": "cbClinicA01", "status": "COMPLETED",
             "occurredAt": "2026-03-01T10:00:00.000", "dataValues": [
                {"dataElement": "cbDeDiagnos", "value": "MALARIA"}]}],
        "relationships": []
    })
}
