//! A box updated to this release keeps serving what the previous release stored, and leaves
//! the store one the previous release can still open (the slot it rolls back to).
//!
//! `tests/fixtures/box-<release>.tar.gz` is a demo box's data directory as that release's
//! binary left it after a clean stop (three patients, one with a photo, a month of figures,
//! the saved catalog), and `box-<release>.json` what its tablets read. A release adds its own
//! with its binary (`CLINICBOX_BIN=… CLINICBOX_WRITE_FIXTURE=1 cargo test -p clinicbox-tests
//! --test previous_release -- --ignored`) and keeps the earlier ones while a box may still run
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use clinicbox_tests::clinic::{
    add_photo_element, basic, import_to, month_values, patient, uid, upload_file_to,
};
use clinicbox_tests::{BoxBuilder, RunningBox, http_request};
use serde_json::{Value, json};

/// The month the fixture's figures are for (a past one: entry refuses future periods).
const MONTH: &str = "202611";
const PATIENTS: u32 = 3;
const PHOTO: &[u8] = b"\x89PNG\r\n\x1a\nprevious-release-photo";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn get(b: &RunningBox, path: &str) -> (u16, Value) {
    let r = http_request(
        b.url().trim_start_matches("http://"),
        "GET",
        path,
        &[("Authorization", &basic("android", "Android123"))],
        b"",
    );
    let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, body)
}

/// What a tablet reads of patient `n`: its attributes, enrollment and events.
fn patient_as_read(b: &RunningBox, n: u32) -> Value {
    let (st, te) = get(
        b,
        &format!(
            "/api/tracker/trackedEntities/{}?program=cbPrgOpd001&fields=attributes[attribute,value],enrollments[enrollment,status,events[event,dataValues[dataElement,value]]]",
            uid("te", n)
        ),
    );
    assert_eq!(st, 200, "patient {n}: {te}");
    te
}

fn month_as_read(b: &RunningBox) -> Value {
    let (st, v) = get(
        b,
        &format!("/api/dataValueSets?dataSet=cbDsOpdMon1&period={MONTH}&orgUnit=cbClinicA01"),
    );
    assert_eq!(st, 200, "{v}");
    let mut values: Vec<(String, String)> = v["dataValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["categoryOptionCombo"].as_str().unwrap().to_owned(),
                d["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    values.sort();
    json!(values)
}

/// The bytes of the photo on patient 1's triage.
fn photo_of(b: &RunningBox) -> Vec<u8> {
    let read = patient_as_read(b, 1);
    let values = &read["enrollments"][0]["events"][0]["dataValues"];
    let file = values
        .as_array()
        .and_then(|v| v.iter().find(|d| d["dataElement"] == "cbDePhoto01"))
        .and_then(|d| d["value"].as_str())
        .unwrap_or_else(|| panic!("no photo in {read}"));
    let r = http_request(
        b.url().trim_start_matches("http://"),
        "GET",
        &format!("/api/fileResources/{file}/data"),
        &[("Authorization", &basic("android", "Android123"))],
        b"",
    );
    assert_eq!(r.status, 200, "the photo {file}");
    r.body
}

/// Every fixture a release left, oldest first.
fn previous_releases() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.retain(|p| p.to_string_lossy().ends_with(".tar.gz"));
    found.sort();
    found
}

fn unpack(fixture: &Path, into: &Path) {
    let st = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar");
    assert!(st.success(), "unpacking {}", fixture.display());
}

/// What the fixture's box must still say after the update (`box-<release>.json`, written
/// with it): each patient and the month.
fn expected(fixture: &Path) -> Value {
    let path = PathBuf::from(fixture.to_string_lossy().replace(".tar.gz", ".json"));
    serde_json::from_slice(&std::fs::read(&path).expect("expected")).expect("expected json")
}

/// Sends a change of patients already there: applied, with no error (a warning about notes
/// sent again is fine).
fn update_to(b: &RunningBox, payload: &Value) {
    let r = clinicbox_tests::clinic::post_to(b.url(), "/api/tracker?async=false", payload);
    assert_eq!(r["validationReport"]["errorReports"], json!([]), "{r}");
    assert_ne!(r["status"], "ERROR", "{r}");
}

/// The attribute-value index this release keeps beside the records was never written by the
/// previous one: rebuilt at start, it finds the old patients for a search and a unique check.
fn finds_old_values(b: &RunningBox, fixture: &Path) {
    let (status, found) = get(
        b,
        "/api/tracker/trackedEntities?program=cbPrgOpd001&orgUnit=cbClinicA01&filter=cbAttrPatId:EQ:up-0002&fields=trackedEntity",
    );
    assert_eq!(status, 200, "{found}");
    assert!(
        found.to_string().contains(&uid("te", 2)),
        "{}: the search by patient id finds patient 2: {found}",
        fixture.display()
    );
    let mut clash = patient(PATIENTS + 2);
    clash["trackedEntities"][0]["attributes"][0]["value"] = json!("UP-0002");
    let r = http_request(
        b.url().trim_start_matches("http://"),
        "POST",
        "/api/tracker?async=false",
        &[
            ("Authorization", &basic("android", "Android123")),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(&clash).expect("json"),
    );
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        r.status == 409 && body.contains("E1064"),
        "{}: patient 2's unique id is refused to another: {} {body}",
        fixture.display(),
        r.status
    );
}

fn as_read(b: &RunningBox) -> Value {
    let patients: Vec<Value> = (1..=PATIENTS).map(|n| patient_as_read(b, n)).collect();
    json!({"patients": patients, "month": month_as_read(b)})
}

#[test]
fn a_box_from_the_previous_release_serves_its_data_and_stays_openable_by_it() {
    let releases = previous_releases();
    assert!(
        !releases.is_empty(),
        "no fixture in {}",
        fixtures().display()
    );
    for fixture in releases {
        let dir = tempfile::tempdir().expect("tempdir");
        unpack(&fixture, dir.path());
        let data = dir.path().join("data");
        let format_before = clinicbox_store::inspect_format(&data).expect("format");
        let b = BoxBuilder::demo_at(data.display().to_string()).start();
        assert_eq!(as_read(&b), expected(&fixture), "{}", fixture.display());
        assert_eq!(photo_of(&b), PHOTO, "{}: the photo", fixture.display());
        finds_old_values(&b, &fixture);
        // This release writes on top of it: a new patient and an update of an old one.
        import_to(b.url(), &patient(PATIENTS + 1));
        let mut again = patient(1);
        again["events"][0]["dataValues"][0]["value"] = json!("62.0");
        update_to(&b, &again);
        b.stop();
        // What the previous release needs to open it is unchanged: the slot it rolls back to
        // still reads this store.
        let after = clinicbox_store::inspect_format(&data).expect("format");
        assert!(
            after.readable_from <= format_before.format,
            "{}: this release left a store that needs format {} (the previous release reads {})",
            fixture.display(),
            after.readable_from,
            format_before.format
        );
        // And it starts again on it, everything there.
        let b = BoxBuilder::demo_at(data.display().to_string()).start();
        let read = patient_as_read(&b, 1);
        assert!(read.to_string().contains("62.0"), "{read}");
        let _ = patient_as_read(&b, PATIENTS + 1);
        b.stop();
    }
}

/// Writes this release's fixture (see the module docs).
#[test]
#[ignore = "writes tests/fixtures: run by hand at a release"]
fn write_this_releases_fixture() {
    if std::env::var_os("CLINICBOX_WRITE_FIXTURE").is_none() {
        return;
    }
    let b = BoxBuilder::demo().start();
    for n in 1..=PATIENTS {
        import_to(b.url(), &patient(n));
    }
    add_photo_element(b.url());
    let file = upload_file_to(b.url(), PHOTO);
    let mut photo = patient(1);
    photo["events"][0]["dataValues"]
        .as_array_mut()
        .unwrap()
        .push(json!({"dataElement": "cbDePhoto01", "value": file}));
    update_to(&b, &photo);
    clinicbox_tests::clinic::post_to(
        b.url(),
        "/api/dataValueSets",
        &month_values(MONTH, ["12", "9"]),
    );
    let expected = as_read(&b);
    let (_, dir) = b.stop_keeping();
    let release = env!("CARGO_PKG_VERSION");
    let out = fixtures().join(format!("box-{release}.tar.gz"));
    std::fs::create_dir_all(fixtures()).expect("fixtures");
    let st = std::process::Command::new("tar")
        .arg("--sort=name")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(dir.path())
        .arg("data")
        .status()
        .expect("tar");
    assert!(st.success());
    std::fs::write(
        fixtures().join(format!("box-{release}.json")),
        serde_json::to_vec_pretty(&expected).unwrap(),
    )
    .expect("expected.json");
}
