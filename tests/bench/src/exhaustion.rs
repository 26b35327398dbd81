//! `clinicbox-bench exhaustion`: what one logged-in tablet can cost the box. Each hostile
//! request is sent through the daemon's own app, and the figures — answer size, store growth,
//! memory — are printed next to an ordinary tablet upload measured in the same run (ratios).
//! No figure is asserted here; the limits themselves are tested in the suites.

use std::time::Instant;

use serde_json::{Value, json};

use crate::tracker::{Bench, open, payload, peak_rss_kib as peak_kib};

const CLINIC_A: &str = "cbClinicA01";

struct Row {
    case: &'static str,
    status: u16,
    sent: usize,
    answered: usize,
    /// Store writes (one per import, its objects and job report together).
    writes: u64,
    store_growth: i64,
    peak_growth: u64,
    ms: u128,
}

async fn measure(
    b: &Bench,
    case: &'static str,
    uri: &str,
    body: Vec<u8>,
    then_poll: bool,
) -> anyhow::Result<Row> {
    let stats0 = b.store.stats().map_err(|e| anyhow::anyhow!("{e}"))?;
    let peak0 = peak_kib();
    let started = Instant::now();
    let sent = body.len();
    let (status, answer) = b.call("POST", uri, Some(body)).await?;
    let mut answered = answer.len();
    if then_poll && status == 200 {
        let v: Value = serde_json::from_slice(&answer)?;
        if let Some(id) = v["response"]["id"].as_str() {
            let (_, report) = b
                .call("GET", &format!("/api/tracker/jobs/{id}/report"), None)
                .await?;
            answered += report.len();
        }
    }
    let ms = started.elapsed().as_millis();
    let stats1 = b.store.stats().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Row {
        case,
        status,
        sent,
        answered,
        writes: stats1.writes - stats0.writes,
        store_growth: i64::try_from(stats1.file_bytes).unwrap_or(0)
            - i64::try_from(stats0.file_bytes).unwrap_or(0),
        peak_growth: peak_kib().saturating_sub(peak0),
        ms,
    })
}

/// One patient whose first-name attribute is `len` bytes long.
fn huge_attribute(uid: &str, len: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"trackedEntities": [{"trackedEntity": uid,
        "trackedEntityType": "cbTetPerson", "orgUnit": CLINIC_A,
        "attributes": [{"attribute": "cbAttrFirst", "value": "x".repeat(len)}]}]}))
    .unwrap_or_default()
}

pub fn run() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let (store, _, _, app) = open(dir.path(), "exhaustion").await?;
        let auth = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                "android:Android123"
            )
        );
        let b = Bench { app, auth, store };
        let mut rows = Vec::new();
        // Baseline: what a tablet ordinarily sends — 50 patients, their enrollments, 4 visits each.
        let normal = serde_json::to_vec(&payload(1, 50, 4))?;
        rows.push(
            measure(
                &b,
                "baseline: 50 patients, 250 objects (async + report)",
                "/api/tracker",
                normal,
                true,
            )
            .await?,
        );
        rows.push(
            measure(
                &b,
                "12 MB attribute value (sync)",
                "/api/tracker?async=false",
                huge_attribute("teExhHuge01", 12 * 1024 * 1024),
                false,
            )
            .await?,
        );
        for (i, case) in [
            "12 MB attribute value (async, report stored) #1",
            "12 MB attribute value (async, report stored) #2",
            "12 MB attribute value (async, report stored) #3",
            "12 MB attribute value (async, report stored) #4",
        ]
        .into_iter()
        .enumerate()
        {
            let uid = format!("teExhHug{i:03}");
            rows.push(
                measure(
                    &b,
                    case,
                    "/api/tracker",
                    huge_attribute(&uid, 12 * 1024 * 1024),
                    true,
                )
                .await?,
            );
        }
        let empties = format!("{{\"events\": [{}]}}", vec!["{}"; 300_000].join(","));
        rows.push(
            measure(
                &b,
                "300,000 empty objects in 0.9 MB (sync)",
                "/api/tracker?async=false",
                empties.into_bytes(),
                false,
            )
            .await?,
        );
        print(&rows);
        Ok(())
    })
}

fn print(rows: &[Row]) {
    let base = &rows[0];
    let per_sent = |r: &Row| r.answered as f64 / r.sent.max(1) as f64;
    println!(
        "\nWhat one tablet can cost the box (daemon's app in process; baseline = an ordinary upload, same run)"
    );
    println!(
        "{:<52} {:>6} {:>11} {:>11} {:>9} {:>10} {:>8} {:>12} {:>12} {:>8}",
        "case",
        "status",
        "sent B",
        "answered B",
        "ans/sent",
        "vs base",
        "writes",
        "store +B",
        "peak +KiB",
        "ms"
    );
    for r in rows {
        println!(
            "{:<52} {:>6} {:>11} {:>11} {:>9.4} {:>9.2}x {:>8} {:>12} {:>12} {:>8}",
            r.case,
            r.status,
            r.sent,
            r.answered,
            per_sent(r),
            per_sent(r) / per_sent(base).max(f64::MIN_POSITIVE),
            r.writes,
            r.store_growth,
            r.peak_growth,
            r.ms
        );
    }
    for r in &rows[1..] {
        let name = format!("{}: answer / request", r.case);
        let base_name = "an ordinary upload";
        crate::figures::figure(
            "exhaust",
            &name,
            per_sent(r),
            "B/B",
            base_name,
            per_sent(base),
        );
    }
}
