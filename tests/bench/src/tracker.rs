//! `clinicbox-bench tracker`: tracker sync through the real API and tracker routers over a real
//! store, in process, with the store itself as the peer in the same run:
//!
//! 1. one `POST /api/tracker` of 200 tracked entities + 200 enrollments + 1,000 events (the
//!    SDK's flat payload, async, then job and report) vs the same 1,400 records written with one
//!    raw durable store write (events/s and the ratio; target ≥ 0.5);
//! 2. the SDK's download of 500 tracked entities with their enrollments and events (10 pages of
//!    50) vs one raw scan of the same records;
//! 3. online search (`filter=…:LIKE:`, `…:EQ:`) at 10,000 tracked entities;
//! 4. peak RSS of the process.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use clinicbox_api::{ApiConfig, ApiState};
use clinicbox_store::{Collection, NewKeySlot, Store};
use clinicbox_tracker::{Tracker, TrackerConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const CLINIC_A: &str = "cbClinicA01";
const OPD: &str = "cbPrgOpd001";
const PERSON: &str = "cbTetPerson";
const FIELDS: &str = "trackedEntity,createdAt,updatedAt,createdAtClient,updatedAtClient,orgUnit,trackedEntityType,geometry,deleted,attributes[attribute,value,createdAt,updatedAt],relationships[relationship,relationshipType,from[trackedEntity[trackedEntity]],to[trackedEntity[trackedEntity]]],enrollments[enrollment,createdAt,updatedAt,createdAtClient,updatedAtClient,orgUnit,program,enrolledAt,occurredAt,completedAt,followUp,status,deleted,trackedEntity,geometry,attributeOptionCombo,events[event,enrollment,createdAt,updatedAt,createdAtClient,updatedAtClient,status,geometry,program,programStage,orgUnit,occurredAt,completedAt,scheduledAt,deleted,attributeOptionCombo,assignedUser,completedBy,notes[note,value,storedAt,storedBy],dataValues[dataElement,createdBy,value,createdAt,updatedAt,providedElsewhere]],notes[note,value,storedAt,storedBy]],programOwners";

fn uid(prefix: char, round: usize, i: usize) -> String {
    format!("{prefix}{round:02}{i:08}")
}

/// The SDK's flat payload: `tes` patients, one enrollment each, `events_per` events each
/// (triage, then consultations, then a pharmacy visit).
pub(crate) fn payload(round: usize, tes: usize, events_per: usize) -> Value {
    let mut t = Vec::new();
    let mut e = Vec::new();
    let mut ev = Vec::new();
    for i in 0..tes {
        let (te, en) = (uid('t', round, i), uid('e', round, i));
        t.push(json!({"trackedEntity": te, "trackedEntityType": PERSON, "orgUnit": CLINIC_A,
            "createdAtClient": "2026-03-01T09:00:00.000", "updatedAtClient": "2026-03-01T09:00:00.000",
            "attributes": [
                {"attribute": "cbAttrPatId", "value": format!("BENCH-{round:02}-{i:06}")},
                {"attribute": "cbAttrFirst", "value": format!("Given{i}")},
                {"attribute": "cbAttrLastN", "value": format!("Family{}", i % 97)}]}));
        e.push(json!({"enrollment": en, "trackedEntity": te, "program": OPD, "orgUnit": CLINIC_A,
            "enrolledAt": "2026-03-01T09:00:00.000", "occurredAt": "2026-03-01T09:00:00.000", "status": "ACTIVE",
            "attributes": [{"attribute": "cbAttrSex01", "value": if i % 2 == 0 { "F" } else { "M" }},
                           {"attribute": "cbAttrDob01", "value": "1990-04-02"}]}));
        for k in 0..events_per {
            let (stage, values) = match k {
                0 => (
                    "cbStgTriage",
                    json!([{"dataElement": "cbDeWeight1", "value": "61.5"},
                    {"dataElement": "cbDeTemp001", "value": "37.9"}, {"dataElement": "cbDeTriage1", "value": "GREEN"}]),
                ),
                k if k + 1 == events_per => (
                    "cbStgPharma",
                    json!([{"dataElement": "cbDeDrug001", "value": "Paracetamol"},
                    {"dataElement": "cbDeQty0001", "value": "10"}]),
                ),
                _ => (
                    "cbStgConsul",
                    json!([{"dataElement": "cbDeDiagnos", "value": "MALARIA"},
                    {"dataElement": "cbDeNotes01", "value": "Fever and headache for two days, no vomiting."}]),
                ),
            };
            ev.push(json!({"event": format!("v{round:02}{i:05}{k:03}"), "enrollment": en, "trackedEntity": te,
                "program": OPD, "programStage": stage, "orgUnit": CLINIC_A, "status": "COMPLETED",
                "occurredAt": "2026-03-01T10:00:00.000", "dataValues": values}));
        }
    }
    json!({"trackedEntities": t, "enrollments": e, "events": ev, "relationships": []})
}

pub(crate) struct Bench {
    pub(crate) app: Router,
    pub(crate) auth: String,
    pub(crate) store: Store,
}

impl Bench {
    pub(crate) async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "10.0.0.1:8080")
            .header("authorization", &self.auth);
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = match body {
            Some(bytes) => b.body(Body::from(bytes))?,
            None => b.body(Body::empty())?,
        };
        let resp = self.app.clone().oneshot(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, bytes))
    }

    /// The SDK's upload: POST, job, report. Returns the report.
    async fn upload(&self, body: Vec<u8>) -> anyhow::Result<Value> {
        Ok(self.upload_timed(body).await?.0)
    }

    /// The upload, with the time of the POST alone (the import is durable when it answers)
    /// and of the job poll plus report.
    pub(crate) async fn upload_timed(
        &self,
        body: Vec<u8>,
    ) -> anyhow::Result<(Value, Duration, Duration)> {
        let started = Instant::now();
        let (status, bytes) = self
            .call(
                "POST",
                "/api/tracker?atomicMode=OBJECT&importStrategy=CREATE_AND_UPDATE",
                Some(body),
            )
            .await?;
        let post = started.elapsed();
        let started = Instant::now();
        anyhow::ensure!(
            status == 200,
            "POST: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        let id = serde_json::from_slice::<Value>(&bytes)?["response"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (status, _) = self
            .call("GET", &format!("/api/tracker/jobs/{id}"), None)
            .await?;
        anyhow::ensure!(status == 200, "job: {status}");
        let (_, report) = self
            .call(
                "GET",
                &format!("/api/tracker/jobs/{id}/report?reportMode=FULL"),
                None,
            )
            .await?;
        Ok((serde_json::from_slice(&report)?, post, started.elapsed()))
    }
}

pub(crate) async fn open(
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(Store, ApiState, Tracker, Router)> {
    open_with(dir, name, clinicbox_store::StoreOptions::default()).await
}

pub(crate) async fn open_with(
    dir: &std::path::Path,
    name: &str,
    options: clinicbox_store::StoreOptions,
) -> anyhow::Result<(Store, ApiState, Tracker, Router)> {
    let (store, _) = Store::create_with(
        &dir.join(name),
        NewKeySlot::KeyFile {
            path: dir.join(format!("{name}.key")),
            label: "bench".into(),
            create: true,
        },
        options,
    )?;
    let state = ApiState::new(store.clone(), ApiConfig::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    clinicbox_api::demo::load_demo(&state)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tracker = Tracker::start(state.clone(), TrackerConfig::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The daemon's own app, layers and all: what is measured is what runs.
    let app = clinicbox::app::in_process(&store, state.clone(), tracker.clone());
    Ok((store, state, tracker, app))
}

/// The same records as one raw durable write: each object encoded as JSON and put under its
/// UID, in one commit (encoding counts: it is part of writing a record).
fn raw_write(store: &Store, p: &Value) -> anyhow::Result<Duration> {
    let mut recs = Vec::new();
    for (key, coll, id) in [
        (
            "trackedEntities",
            Collection::TRACKED_ENTITIES,
            "trackedEntity",
        ),
        ("enrollments", Collection::ENROLLMENTS, "enrollment"),
        ("events", Collection::EVENTS, "event"),
    ] {
        for o in p[key].as_array().into_iter().flatten() {
            recs.push((
                coll,
                o[id].as_str().unwrap_or_default().to_string(),
                o.clone(),
            ));
        }
    }
    let started = Instant::now();
    let recs: Vec<_> = recs
        .into_iter()
        .map(|(c, k, o)| serde_json::to_vec(&o).map(|b| (c, k, b)))
        .collect::<Result<_, _>>()?;
    store
        .write_blocking(move |ctx| {
            for (c, k, b) in recs {
                ctx.put(c, &k, b)?;
            }
            Ok::<_, clinicbox_store::StoreError>(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(started.elapsed())
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub(crate) fn basic_auth() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("android:Android123")
    )
}

pub(crate) fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM:` peak, `VmRSS:` now).
pub(crate) fn status_kib(field: &str) -> u64 {
    proc_status_kib("/proc/self/status", field)
}

/// A memory figure from a process's `status` file.
pub(crate) fn proc_status_kib(status: &str, field: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

pub fn run(rounds: usize, search_tes: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(rounds, search_tes))
}

/// Median ms of five "anything new since now?" downloads of one program's page, as a tablet
/// asks between syncs.
pub(crate) async fn anything_new(b: &Bench) -> anyhow::Result<f64> {
    let (_, info) = b.call("GET", "/api/system/info", None).await?;
    let info: Value = serde_json::from_slice(&info)?;
    let now = info["serverDate"].as_str().unwrap_or_default().to_string();
    let mut ms = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (st, body) = b
            .call("GET", &format!("/api/tracker/trackedEntities?program={OPD}&orgUnits=cbClinicA01&orgUnitMode=DESCENDANTS&updatedAfter={now}&page=1&pageSize=50&fields=*"), None)
            .await?;
        anyhow::ensure!(
            st == 200,
            "anything new {st}: {}",
            String::from_utf8_lossy(&body)
        );
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(ms))
}

async fn run_async(rounds: usize, search_tes: usize) -> anyhow::Result<()> {
    let base = std::env::var_os("CLINICBOX_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b)?,
        None => tempfile::tempdir()?,
    };
    println!(
        "clinicbox-bench tracker: {rounds} rounds; directory {}; {} cores",
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (store, _state, _tracker, app) = open(dir.path(), "api").await?;
    let (raw_store, _rs, _rt, _ra) = open(dir.path(), "raw").await?;
    let b = Bench {
        app,
        auth: basic_auth(),
        store,
    };
    let _ = &b.store;

    // 1. Upload: one POST of 200 TEs + 200 enrollments + 1,000 events.
    let mut api_rates = Vec::new();
    let mut raw_rates = Vec::new();
    let mut job_ms = Vec::new();
    for round in 0..rounds {
        let p = payload(round, 200, 5);
        let body = serde_json::to_vec(&p)?;
        let (report, api, job) = b.upload_timed(body).await?;
        job_ms.push(job.as_secs_f64() * 1e3);
        anyhow::ensure!(
            report["status"] == "OK",
            "import failed: {}",
            report["validationReport"]
        );
        anyhow::ensure!(
            report["stats"]["created"] == 1400,
            "created {}",
            report["stats"]["created"]
        );
        let raw = {
            let store = raw_store.clone();
            tokio::task::spawn_blocking(move || raw_write(&store, &p)).await??
        };
        api_rates.push(1000.0 / api.as_secs_f64());
        raw_rates.push(1000.0 / raw.as_secs_f64());
        println!(
            "  round {round}: POST {:.0} ms (validation {}), raw write {:.0} ms",
            api.as_secs_f64() * 1e3,
            report["timingsStats"]["timers"]["validation"]
                .as_str()
                .unwrap_or("?"),
            raw.as_secs_f64() * 1e3
        );
    }
    let (api, raw) = (median(api_rates), median(raw_rates));

    // 2. Download of 500 TEs (SDK: 10 pages of 50) vs a raw scan of the same records.
    let dl_dir = tempfile::tempdir_in(dir.path())?;
    let (dl_store, _s2, _t2, dl_app) = open(dl_dir.path(), "dl").await?;
    let dl = Bench {
        app: dl_app,
        auth: b.auth.clone(),
        store: dl_store,
    };
    let report = dl.upload(serde_json::to_vec(&payload(90, 500, 3))?).await?;
    anyhow::ensure!(report["status"] == "OK", "download setup failed");
    let mut dl_ms = Vec::new();
    let mut scan_ms = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut n = 0;
        for page in 1..=11 {
            let (status, bytes) = dl
                .call("GET", &format!("/api/tracker/trackedEntities?fields={FIELDS}&orgUnits={CLINIC_A}&orgUnitMode=DESCENDANTS&program={OPD}&order=createdAt:desc&includeDeleted=true&paging=true&page={page}&pageSize=50"), None)
                .await?;
            anyhow::ensure!(status == 200, "download {status}");
            let v: Value = serde_json::from_slice(&bytes)?;
            let items = v["trackedEntities"].as_array().map_or(0, Vec::len);
            n += items;
            if items < 50 {
                break;
            }
        }
        anyhow::ensure!(n == 500, "downloaded {n}");
        dl_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let read = dl.store.read()?;
        let mut count = 0usize;
        for c in [
            Collection::TRACKED_ENTITIES,
            Collection::ENROLLMENTS,
            Collection::EVENTS,
        ] {
            for r in read.scan(c)? {
                let (_, rec) = r?;
                let _: Value = serde_json::from_slice(&rec.body)?;
                count += 1;
            }
        }
        anyhow::ensure!(count == 500 + 500 + 1500, "scanned {count}");
        scan_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (dl_med, scan_med) = (median(dl_ms), median(scan_ms));

    // 3. Search at `search_tes` tracked entities.
    let search_dir = tempfile::tempdir_in(dir.path())?;
    let (s_store, s_state, _t3, s_app) = open(search_dir.path(), "search").await?;
    let s = Bench {
        app: s_app,
        auth: b.auth.clone(),
        store: s_store,
    };
    let batch = 1000;
    for r in 0..search_tes.div_ceil(batch) {
        let report = s
            .upload(serde_json::to_vec(&payload(
                r,
                batch.min(search_tes - r * batch),
                0,
            ))?)
            .await?;
        anyhow::ensure!(report["status"] == "OK", "search setup failed");
    }
    // What a restart costs: the catalog is rebuilt from every tracker record.
    let started = Instant::now();
    Tracker::start(s_state.clone(), TrackerConfig::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rebuild_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut like_ms = Vec::new();
    let mut eq_ms = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (st, body) = s
            .call("GET", &format!("/api/tracker/trackedEntities?fields=trackedEntity,attributes[attribute,value],programOwners&filter=cbAttrFirst:LIKE:ven12&program={OPD}&orgUnitMode=ACCESSIBLE&paging=true&page=1&pageSize=50"), None)
            .await?;
        anyhow::ensure!(st == 200, "search {st}: {}", String::from_utf8_lossy(&body));
        like_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let (st, body) = s
            .call("GET", &format!("/api/tracker/trackedEntities?fields=trackedEntity,attributes[attribute,value],programOwners&filter=cbAttrPatId:EQ:BENCH-03-000042&program={OPD}&orgUnitMode=ACCESSIBLE&paging=true&page=1&pageSize=50"), None)
            .await?;
        anyhow::ensure!(st == 200, "search {st}");
        let v: Value = serde_json::from_slice(&body)?;
        anyhow::ensure!(
            v["trackedEntities"].as_array().map_or(0, Vec::len) == usize::from(search_tes > 3042),
            "EQ hits"
        );
        eq_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    // A tablet's "anything new?" when nothing is: at `search_tes` TEs and at the download
    // store's 1,400 records, the same query.
    let new_big = anything_new(&s).await?;
    let new_small = anything_new(&b).await?;

    println!();
    println!(
        "{:<64} {:>12}",
        "upload: one POST of 200 TEs + 200 enrollments + 1,000 events", "events/s"
    );
    println!(
        "{:<64} {:>12.0}",
        "  POST /api/tracker (validate, merge, commit, job report)", api
    );
    println!(
        "{:<64} {:>12.0}",
        "  raw store write of the same 1,400 records (one commit)", raw
    );
    println!("  ratio POST / raw write: {:.2} (target >= 0.5)", api / raw);
    println!(
        "  then job poll + report of 1,400 object reports: {:.0} ms",
        median(job_ms)
    );
    println!();
    println!(
        "download of 500 TEs (+500 enrollments, 1,500 events), SDK pages of 50: {dl_med:.0} ms"
    );
    println!(
        "  raw scan + JSON parse of the same 2,500 records: {scan_med:.0} ms (ratio {:.2})",
        scan_med / dl_med
    );
    println!();
    println!(
        "\"anything new?\" (updatedAfter = now, one page): {new_big:.1} ms at {search_tes} TEs, {new_small:.1} ms on the small upload store (median of 5)"
    );
    crate::figures::figure(
        "tracker",
        &format!("anything new? at {search_tes} TEs"),
        new_big,
        "ms",
        "the same on the small upload store",
        new_small,
    );
    println!();
    println!(
        "online search at {search_tes} TEs: LIKE {:.0} ms, EQ (unique ID) {:.1} ms (median of 5)",
        median(like_ms),
        median(eq_ms)
    );
    println!("catalog rebuild at start with {search_tes} TEs + enrollments: {rebuild_ms:.0} ms");
    println!();
    println!("peak RSS: {:.1} MiB", peak_rss_kib() as f64 / 1024.0);
    let upload = "POST /api/tracker, 1,400 objects";
    crate::figures::figure(
        "tracker",
        upload,
        api,
        "events/s",
        "store, one raw write",
        raw,
    );
    let download = "download 500 TEs, pages of 50";
    let scan = "store, scan + parse";
    crate::figures::figure("tracker", download, dl_med, "ms", scan, scan_med);
    Ok(())
}
