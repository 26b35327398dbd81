//! `clinicbox-bench aggregate`: a tablet's monthly data set upload (`POST /api/dataValueSets`,
//! one request of N values) and its download (`GET /api/dataValueSets` with the SDK's query),
//! through the real API and aggregate routers over a real store, in process. The peer is the
//! store itself: the same N records written in one durable write and read back with one scan,
//! in the same run, so the ratio shows what validation, JSON and the audit trail cost.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use clinicbox_aggregate::periods::{Now, offset};
use clinicbox_api::metadata::import::{ImportParams, import};
use clinicbox_api::{ApiConfig, ApiState};
use clinicbox_dhis2::PeriodType;
use clinicbox_store::{Collection, NewKeySlot, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const DS: &str = "cbBenchDs01";
const CLINIC_A: &str = "cbClinicA01";
const SEX_COMBO: &str = "cbComboSex1";
const COCS: [&str; 2] = ["cbCocFemale", "cbCocMale01"];
const DEFAULT_COC: &str = "HllvX50cXC0";
const FIELDS: &str = "dataElement,period,orgUnit,categoryOptionCombo,attributeOptionCombo,value,storedBy,created,lastUpdated,comment,followup,deleted";

fn element_id(i: usize) -> String {
    format!("cbBenchD{i:03}")
}

/// A monthly data set of `elements` data elements disaggregated by sex (2 values each).
fn package(elements: usize) -> Value {
    let sharing = json!({"public": "rwrw----", "external": false, "users": {}, "userGroups": {}});
    json!({
        "dataElements": (0..elements).map(|i| json!({
            "id": element_id(i), "name": format!("Bench element {i}"), "shortName": format!("Bench {i}"),
            "valueType": "INTEGER_ZERO_OR_POSITIVE", "domainType": "AGGREGATE", "aggregationType": "SUM",
            "categoryCombo": {"id": SEX_COMBO}, "zeroIsSignificant": false, "sharing": sharing
        })).collect::<Vec<_>>(),
        "dataSets": [{
            "id": DS, "name": "Bench monthly", "shortName": "Bench monthly", "periodType": "Monthly",
            "categoryCombo": {"id": "bjDvmb4bfuf"}, "openFuturePeriods": 1, "expiryDays": 0,
            "organisationUnits": [{"id": CLINIC_A}], "sharing": sharing,
            "dataSetElements": (0..elements).map(|i| json!({"dataSet": {"id": DS}, "dataElement": {"id": element_id(i)}})).collect::<Vec<_>>()
        }]
    })
}

fn payload(pe: &str, elements: usize, base: usize) -> Vec<u8> {
    let values: Vec<Value> = (0..elements)
        .flat_map(|i| {
            COCS.iter().enumerate().map(move |(j, coc)| {
                json!({"dataElement": element_id(i), "period": pe, "orgUnit": CLINIC_A,
                       "categoryOptionCombo": coc, "attributeOptionCombo": DEFAULT_COC,
                       "value": (base + 2 * i + j).to_string(), "storedBy": "android", "followup": false})
            })
        })
        .collect();
    serde_json::to_vec(&json!({"dataSet": DS, "dataValues": values})).unwrap_or_default()
}

struct Client {
    app: Router,
    auth: String,
}

impl Client {
    async fn send(&self, method: &str, uri: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(Body::from(body))?;
        let resp = self.app.clone().oneshot(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, bytes))
    }

    /// Posts one data set; checks the counts; returns the elapsed time.
    async fn import(&self, body: Vec<u8>, expect: (&str, u64)) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let (status, bytes) = self.send("POST", "/api/dataValueSets", body).await?;
        let elapsed = t.elapsed();
        let v: Value = serde_json::from_slice(&bytes)?;
        let got = v["response"]["importCount"][expect.0].as_u64();
        anyhow::ensure!(
            status == 200 && got == Some(expect.1),
            "unexpected import answer {status}: {v}"
        );
        Ok(elapsed)
    }

    async fn download(&self, periods: &[String], expect: usize) -> anyhow::Result<Duration> {
        let uri = format!(
            "/api/dataValueSets?fields={FIELDS}&dataSet={DS}&period={}&orgUnit={CLINIC_A}&children=true&includeDeleted=true&paging=false",
            periods.join(",")
        );
        let t = Instant::now();
        let (status, bytes) = self.send("GET", &uri, Vec::new()).await?;
        let elapsed = t.elapsed();
        let v: Value = serde_json::from_slice(&bytes)?;
        let n = v["dataValues"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(
            status == 200 && n == expect,
            "download gave {status}, {n} values"
        );
        Ok(elapsed)
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn run(values: usize, rounds: usize) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(values, rounds.max(1)))
}

async fn run_async(values: usize, rounds: usize) -> anyhow::Result<()> {
    let elements = values.div_ceil(2).max(1);
    let n = elements * 2;
    let base = std::env::var_os("CLINICBOX_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b)?,
        None => tempfile::tempdir()?,
    };
    println!(
        "clinicbox-bench aggregate: one data set of {n} values ({elements} elements x 2 sex), {rounds} rounds"
    );
    println!(
        "directory: {}  machine: {} cores",
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    let (store, _) = Store::create(
        &dir.path().join("store"),
        NewKeySlot::KeyFile {
            path: dir.path().join("store.key"),
            label: "bench".into(),
            create: true,
        },
    )?;
    let state = ApiState::new(store.clone(), ApiConfig::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    clinicbox_api::demo::load_demo(&state)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    import(
        state.metadata(),
        &package(elements),
        ImportParams::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The daemon's own app, layers and all: what is measured is what runs.
    let app = clinicbox::app::in_process(
        &store,
        state.clone(),
        clinicbox_tracker::Tracker::start(state.clone(), Default::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let client = Client {
        app,
        auth: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("android:Android123")
        ),
    };
    // The first call verifies the password (Argon2id); tablets pay that once per session.
    client.send("GET", "/api/me?fields=id", Vec::new()).await?;

    let now = Now::at(store.server_time_ms(), state.zone())
        .ok_or_else(|| anyhow::anyhow!("clock out of range"))?;
    let current = now
        .current(PeriodType::Monthly)
        .ok_or_else(|| anyhow::anyhow!("no current month"))?;
    let periods: Vec<String> = (0..rounds)
        .map(|r| offset(&current, -(r as i32)).map(|p| p.id().to_string()))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("period arithmetic failed"))?;

    let mut fresh = Vec::new();
    for pe in &periods {
        fresh.push(
            client
                .import(payload(pe, elements, 1), ("imported", n as u64))
                .await?,
        );
    }
    let mut same = Vec::new();
    let mut changed = Vec::new();
    for (r, pe) in periods.iter().enumerate() {
        same.push(
            client
                .import(payload(pe, elements, 1), ("ignored", n as u64))
                .await?,
        );
        changed.push(
            client
                .import(payload(pe, elements, 2 + r), ("updated", n as u64))
                .await?,
        );
    }
    let mut one = Vec::new();
    for pe in &periods {
        one.push(client.download(std::slice::from_ref(pe), n).await?);
    }
    let window = client.download(&periods, n * rounds).await?;

    // The peer: the same number of records through the store directly, one durable write.
    let record = serde_json::to_vec(&json!({"value": "12345", "followup": false,
        "storedBy": "android", "lastUpdatedBy": "android"}))?;
    let mut raw_write = Vec::new();
    let mut raw_read = Vec::new();
    for r in 0..rounds {
        let body = record.clone();
        let t = Instant::now();
        store
            .write(move |ctx| -> Result<(), clinicbox_store::StoreError> {
                for i in 0..n {
                    ctx.put(
                        Collection::named("benchPeer"),
                        &format!("{r:03}/{i:06}"),
                        body.clone(),
                    )?;
                }
                Ok(())
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        raw_write.push(t.elapsed());
        let t = Instant::now();
        let read = store.read()?;
        let mut count = 0;
        for item in read.scan_prefix(Collection::named("benchPeer"), &format!("{r:03}/"))? {
            let (_, rec) = item?;
            let _: Value = rec.json()?;
            count += 1;
        }
        anyhow::ensure!(count == n, "peer read {count} of {n}");
        raw_read.push(t.elapsed());
    }
    store.close()?;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let (imp, ign, upd, raw_w) = (
        median(fresh),
        median(same),
        median(changed),
        median(raw_write),
    );
    let (down, raw_r) = (median(one), median(raw_read));
    println!();
    println!(
        "{:<58} {:>10} {:>12}",
        "operation (median)", "ms", "values/s"
    );
    println!(
        "{:<58} {:>10.1} {:>12.0}",
        format!("POST dataValueSets, {n} new values"),
        ms(imp),
        rate(imp)
    );
    println!(
        "{:<58} {:>10.1} {:>12.0}",
        format!("POST dataValueSets, {n} identical (ignored)"),
        ms(ign),
        rate(ign)
    );
    println!(
        "{:<58} {:>10.1} {:>12.0}",
        format!("POST dataValueSets, {n} changed (updated)"),
        ms(upd),
        rate(upd)
    );
    println!(
        "{:<58} {:>10.1} {:>12.0}",
        format!("peer: store, {n} records in one durable write"),
        ms(raw_w),
        rate(raw_w)
    );
    println!(
        "{:<58} {:>10.1} {:>12.0}",
        format!("GET dataValueSets, 1 period ({n} values)"),
        ms(down),
        rate(down)
    );
    println!(
        "{:<58} {:>10.1} {:>12.0}",
        format!(
            "GET dataValueSets, {rounds} periods ({} values)",
            n * rounds
        ),
        ms(window),
        rate(window) * rounds as f64
    );
    println!(
        "{:<58} {:>10.1} {:>12.0}",
        format!("peer: store, scan + parse {n} records"),
        ms(raw_r),
        rate(raw_r)
    );
    println!();
    println!(
        "ratio import / raw store write: {:.2}",
        raw_w.as_secs_f64() / imp.as_secs_f64()
    );
    println!(
        "ratio download / raw store scan: {:.2}",
        raw_r.as_secs_f64() / down.as_secs_f64()
    );
    let peer = "store, one durable write";
    let import_name = format!("POST dataValueSets, {n} new values");
    crate::figures::figure(
        "aggregate",
        &import_name,
        rate(imp),
        "values/s",
        peer,
        rate(raw_w),
    );
    let down_name = format!("GET dataValueSets, {n} values");
    let scan = "store, scan + parse";
    crate::figures::figure(
        "aggregate",
        &down_name,
        rate(down),
        "values/s",
        scan,
        rate(raw_r),
    );
    Ok(())
}
