//! `clinicbox-bench uplink`: what the uplink puts on a bad LTE link, next to the same records
//! sent the way the Android app sends them straight to a server, through the same link, in
//! the same run.
//!
//! A release demo box takes `patients` patients (tracked entity, enrollment, triage and
//! consultation events, three notes) from tablets in syncs of 20, and a 2,000-value monthly
//! report. Then:
//! - **uplink**: `clinicbox uplink --once` to a stand-in national through the link
//!   (800 ms one-way delay, 80 kbit/s, 20 % loss as a 400 ms stall per lost segment, no cuts);
//! - **app-style baseline**: the same tablet payloads to a fresh stand-in through an identical
//!   link, as the Capture app posts them (`POST /api/tracker` async, one job poll, the job
//!   report; `POST /api/dataValueSets` uncompressed), one connection per request.
//!
//! Prints bytes on the wire per event and per data value, push time, and the uplink's peak
//! RSS, each with the baseline and the ratio.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clinicbox_tests::clinic::{self, CLINIC_A, DEFAULT_COC};
use clinicbox_tests::link::{LossyLink, Profile};
use clinicbox_tests::national::{National, TOKEN};
use clinicbox_tests::{BoxBuilder, http_request};
use serde_json::json;

/// What one way of sending cost.
#[derive(Default)]
struct Cost {
    /// Events national holds after the tracker push (the uplink's round also takes what
    /// tablets recorded while it ran).
    events: u64,
    tracker_up: u64,
    tracker_down: u64,
    tracker_time: Duration,
    values_up: u64,
    values_down: u64,
    values_time: Duration,
}

fn link_profile() -> Profile {
    Profile::lte_bad_day(0.0)
}

fn delta(link: &LossyLink, before: (u64, u64)) -> (u64, u64) {
    (
        link.stats.up_bytes.load(Ordering::Relaxed) - before.0,
        link.stats.down_bytes.load(Ordering::Relaxed) - before.1,
    )
}

fn counters(link: &LossyLink) -> (u64, u64) {
    (
        link.stats.up_bytes.load(Ordering::Relaxed),
        link.stats.down_bytes.load(Ordering::Relaxed),
    )
}

/// `clinicbox uplink --once` beside the box; returns its peak RSS in KiB.
fn uplink_once(data: &std::path::Path, url: &str, token: &std::path::Path) -> anyhow::Result<u64> {
    let status = Command::new(clinicbox_tests::binary())
        .args(["uplink", "--demo", "--data-dir"])
        .arg(data)
        .args(["--national-url", url, "--national-token-file"])
        .arg(token)
        .arg("--once")
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "uplink --once failed: {status}");
    // The only child waited for so far: the uplink.
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    Ok(usage.max_rss() as u64)
}

pub fn run(patients: u32) -> anyhow::Result<()> {
    // `clinicbox` and `national_standin` are built next to this binary (./build.sh bench).
    crate::use_binaries_beside_this_one()?;
    let b = BoxBuilder::demo().start();
    let url = b.url().to_string();
    let form = clinic::add_big_monthly_form(&url, 1000);
    let mut payloads = Vec::new();
    for chunk in (0..patients).step_by(20) {
        let p = clinic::patients(1000 + chunk, 20.min(patients - chunk));
        clinic::import_to(&url, &p);
        payloads.push(p);
    }
    let pe = clinic::this_month(&url);
    let report = json!({"dataSet": "cbDsBigMon1", "dataValues": form.iter().flat_map(|de| {
        ["cbCocFemale", "cbCocMale01"].map(|coc| json!({"dataElement": de, "period": pe,
            "orgUnit": CLINIC_A, "categoryOptionCombo": coc, "attributeOptionCombo": DEFAULT_COC,
            "value": "3"}))
    }).collect::<Vec<_>>()});
    let events = u64::from(patients) * 2;
    let values = 2000u64;
    let data = b.dir().join("data");
    // Tablets syncing while nothing else happens, as the baseline of the next measurement.
    let idle = tablet_syncs(&url, 50_000);

    // The uplink: tracker first, then the report.
    let national = National::start(None);
    let link = LossyLink::start(national.addr(), link_profile(), 7);
    let via = format!("http://{}", link.addr);
    let mut up = Cost::default();
    let (t0, c0) = (Instant::now(), counters(&link));
    // Tablets keep syncing while the uplink pushes: do they notice?
    let (rss_kib, busy) = std::thread::scope(|s| {
        let push = s.spawn(|| uplink_once(&data, &via, &national.token_file));
        let busy = tablet_syncs(&url, 60_000);
        (push.join(), busy)
    });
    let rss_kib = rss_kib.map_err(|_| anyhow::anyhow!("the uplink thread panicked"))??;
    up.tracker_time = t0.elapsed();
    (up.tracker_up, up.tracker_down) = delta(&link, c0);
    clinic::post_to(&url, "/api/dataValueSets", &report);
    let (t0, c0) = (Instant::now(), counters(&link));
    uplink_once(&data, &via, &national.token_file)?;
    up.values_time = t0.elapsed();
    (up.values_up, up.values_down) = delta(&link, c0);
    up.events = national.ledger()["events"]
        .as_object()
        .map_or(0, |m| m.len()) as u64;
    anyhow::ensure!(up.events >= events, "national did not get every event");

    // The Android app's way, to a fresh national through an identical link.
    let national2 = National::start(None);
    let link2 = LossyLink::start(national2.addr(), link_profile(), 7);
    let host = link2.addr.to_string();
    let auth = format!("ApiToken {TOKEN}");
    let send = |method: &str, path: &str, body: &[u8]| {
        http_request(
            &host,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    let mut app = Cost::default();
    let (t0, c0) = (Instant::now(), counters(&link2));
    for p in &payloads {
        let r = send(
            "POST",
            "/api/tracker?atomicMode=OBJECT&importStrategy=CREATE_AND_UPDATE",
            &serde_json::to_vec(p)?,
        );
        let job = r.json()["response"]["id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        send("GET", &format!("/api/tracker/jobs/{job}"), b"");
        send(
            "GET",
            &format!("/api/tracker/jobs/{job}/report?reportMode=ERRORS"),
            b"",
        );
    }
    app.tracker_time = t0.elapsed();
    app.events = events;
    (app.tracker_up, app.tracker_down) = delta(&link2, c0);
    let (t0, c0) = (Instant::now(), counters(&link2));
    let r = send("POST", "/api/dataValueSets", &serde_json::to_vec(&report)?);
    anyhow::ensure!(r.status == 200, "baseline dataValueSets: {}", r.status);
    app.values_time = t0.elapsed();
    (app.values_up, app.values_down) = delta(&link2, c0);
    anyhow::ensure!(
        national2.ledger()["events"]
            .as_object()
            .map_or(0, |m| m.len()) as u64
            == events,
        "the baseline did not deliver every event"
    );
    b.stop();
    print_table(patients, values, &up, &app, rss_kib);
    println!(
        "{:<44} {:>12.1} ms  {:>11.1} ms  {:>7.2}",
        "tablet sync of 5 patients, median: pushing / idle",
        busy.as_secs_f64() * 1000.0,
        idle.as_secs_f64() * 1000.0,
        busy.as_secs_f64() / idle.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    Ok(())
}

/// Ten tablet syncs of 5 new patients each (numbered from `first`); the median time.
fn tablet_syncs(url: &str, first: u32) -> Duration {
    let mut times: Vec<Duration> = (0..10)
        .map(|i| {
            let t = Instant::now();
            clinic::import_to(url, &clinic::patients(first + i * 5, 5));
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn print_table(patients: u32, values: u64, up: &Cost, app: &Cost, rss_kib: u64) {
    let per = |b: u64, n: u64| b as f64 / n.max(1) as f64;
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{name:<44} {a:>12.1} {unit:<3} {b:>12.1} {unit:<3} {:>7.2}",
            a / b.max(f64::MIN_POSITIVE)
        );
        crate::figures::figure("uplink", name, a, unit, "the Android app's way", b);
    };
    println!(
        "\nuplink vs app-style on the same link (800 ms, 80 kbit/s, 20 % loss): {patients} patients \
         ({} events pushed by the uplink, {} by the app-style baseline), {values} data values",
        up.events, app.events
    );
    println!(
        "{:<44} {:>16} {:>16} {:>7}",
        "", "uplink", "app-style", "ratio"
    );
    row(
        "bytes up per event (tracker, all objects)",
        per(up.tracker_up, up.events),
        per(app.tracker_up, app.events),
        "B",
    );
    row(
        "bytes down per event",
        per(up.tracker_down, up.events),
        per(app.tracker_down, app.events),
        "B",
    );
    row(
        "bytes up per data value",
        per(up.values_up, values),
        per(app.values_up, values),
        "B",
    );
    row(
        "bytes down per data value",
        per(up.values_down, values),
        per(app.values_down, values),
        "B",
    );
    let per100 = |d: Duration, n: u64| d.as_secs_f64() * 100.0 / n.max(1) as f64;
    row(
        "seconds to push 100 events",
        per100(up.tracker_time, up.events),
        per100(app.tracker_time, app.events),
        "s",
    );
    row(
        "seconds to push the monthly report",
        up.values_time.as_secs_f64(),
        app.values_time.as_secs_f64(),
        "s",
    );
    println!(
        "{:<44} {:>12.1} MiB",
        "uplink peak RSS",
        rss_kib as f64 / 1024.0
    );
}
