//! A clinic's tablets, as the uplink's tests and benchmark need them: the records they post
//! to a demo box (patients with an enrollment and events with notes, photos, monthly figures)
//! and the metadata an admin adds. Requests go to a box URL (`http://127.0.0.1:PORT`), so
//! threads standing for tablets share the URL, not the box.

// Test helpers: a step that fails is a failed test, with the panic's message.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use crate::http_request;

pub const CLINIC_A: &str = "cbClinicA01";
pub const OPD: &str = "cbPrgOpd001";
pub const TRIAGE: &str = "cbStgTriage";
pub const DS: &str = "cbDsOpdMon1";
pub const DEFAULT_COC: &str = "HllvX50cXC0";
const DEMO_METADATA: &str = include_str!("../../appliance/api/demo/metadata.json");

/// The demo's metadata package (what `serve --demo` imports).
pub fn demo_package() -> Value {
    serde_json::from_str(DEMO_METADATA).unwrap_or(Value::Null)
}

/// The demo package's object `id` of `collection`, to change and send again.
pub fn demo_object(collection: &str, id: &str) -> Value {
    demo_package()[collection]
        .as_array()
        .and_then(|list| list.iter().find(|o| o["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no {collection} {id} in the demo package"))
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// [`post`] to the box at `url` (threads share the URL, not the box).
pub fn post_to(url: &str, path: &str, body: &Value) -> Value {
    let auth = basic("android", "Android123");
    let r = http_request(
        url.trim_start_matches("http://"),
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(body).unwrap(),
    );
    assert!(
        r.status == 200,
        "{path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// The UID of object `kind` of patient `n` (11 characters): `te`, `en`, `ev` (triage), `co`
/// (consultation), and the notes `ne`, `nv`, `nc` on the enrollment, triage and consultation.
pub fn uid(kind: &str, n: u32) -> String {
    match (kind, n) {
        ("co", n) if n < 1000 => format!("evConsul{n:03}"),
        ("co", n) => format!("evCon{n:06}"),
        // Notes: of the enrollment, the triage event, the consultation.
        ("ne", n) if n < 10_000 => format!("ntEnUpl{n:04}"),
        ("nv", n) if n < 10_000 => format!("ntEvUpl{n:04}"),
        ("nc", n) if n < 10_000 => format!("ntCoUpl{n:04}"),
        (k, n) if k.starts_with('n') => format!("nt{k}{n:07}"),
        (k, n) if n < 1000 => format!("{k}Uplink{n:03}"),
        (k, n) => format!("{k}Upl{n:06}"),
    }
}

/// A patient with an enrollment, a triage event and a note on each.
pub fn patient(n: u32) -> Value {
    let te = uid("te", n);
    let en = uid("en", n);
    let ev = uid("ev", n);
    json!({
        "trackedEntities": [{
            "trackedEntity": te, "trackedEntityType": "cbTetPerson", "orgUnit": CLINIC_A,
            "createdAtClient": "2026-12-01T09:00:00.000",
            "attributes": [
                {"attribute": "cbAttrPatId", "value": format!("UP-{n:04}")},
                {"attribute": "cbAttrFirst", "value": "Amina"},
                {"attribute": "cbAttrLastN", "value": "Otieno"}
            ]
        }],
        "enrollments": [{
            "enrollment": en, "trackedEntity": te, "program": OPD, "orgUnit": CLINIC_A,
            "enrolledAt": "2026-12-01T09:00:00.000", "occurredAt": "2026-12-01T09:00:00.000",
            "status": "ACTIVE",
            "attributes": [
                {"attribute": "cbAttrSex01", "value": "F"},
                {"attribute": "cbAttrDob01", "value": "1990-04-02"}
            ],
            "notes": [{"note": uid("ne", n), "value": "first visit"}]
        }],
        "events": [{
            "event": ev, "enrollment": en, "program": OPD, "programStage": TRIAGE,
            "orgUnit": CLINIC_A, "status": "ACTIVE", "occurredAt": "2026-12-01T09:05:00.000",
            "dataValues": [
                {"dataElement": "cbDeWeight1", "value": "61.5"},
                {"dataElement": "cbDeTriage1", "value": "YELLOW"}
            ],
            "notes": [{"note": uid("nv", n), "value": "feverish"}]
        }]
    })
}

pub fn import_to(url: &str, payload: &Value) {
    let r = post_to(url, "/api/tracker?async=false", payload);
    assert_eq!(r["status"], "OK", "{r}");
}

pub fn month_values(pe: &str, values: [&str; 2]) -> Value {
    json!({"dataSet": DS, "dataValues": [
        {"dataElement": "cbDeAggOpd1", "period": pe, "orgUnit": CLINIC_A, "categoryOptionCombo": "cbCocFemale",
         "attributeOptionCombo": DEFAULT_COC, "value": values[0]},
        {"dataElement": "cbDeAggOpd1", "period": pe, "orgUnit": CLINIC_A, "categoryOptionCombo": "cbCocMale01",
         "attributeOptionCombo": DEFAULT_COC, "value": values[1]}
    ]})
}

/// The current month as the box sees it (aggregate entry refuses future periods).
pub fn this_month(url: &str) -> String {
    let auth = basic("android", "Android123");
    let r = http_request(
        url.trim_start_matches("http://"),
        "GET",
        "/api/system/info",
        &[("Authorization", &auth)],
        b"",
    );
    let date = r.json()["serverDate"].as_str().unwrap().to_string();
    format!("{}{}", &date[0..4], &date[5..7])
}

/// Adds a photo (IMAGE) data element to the triage stage, as an admin would.
pub fn add_photo_element(url: &str) {
    let mut de = demo_object("dataElements", "cbDeWeight1");
    for (k, v) in [
        ("id", "cbDePhoto01"),
        ("name", "Wound photo"),
        ("shortName", "Wound photo"),
        ("valueType", "IMAGE"),
    ] {
        de[k] = json!(v);
    }
    de.as_object_mut().unwrap().remove("code");
    let mut stage = demo_object("programStages", TRIAGE);
    stage["programStageDataElements"]
        .as_array_mut()
        .unwrap()
        .push(json!({
        "id": "cbPsdePhot1", "dataElement": {"id": "cbDePhoto01"}, "compulsory": false,
        "allowProvidedElsewhere": false, "sortOrder": 9, "displayInReports": true,
        "allowFutureDate": false, "renderOptionsAsRadio": false}));
    import_metadata(
        url,
        &json!({"dataElements": [de], "programStages": [stage]}),
    );
}

pub fn upload_file_to(url: &str, bytes: &[u8]) -> String {
    let boundary = "uplinkTestBoundary7MA4YWxk";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"wound.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let auth = basic("android", "Android123");
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = http_request(
        url.trim_start_matches("http://"),
        "POST",
        "/api/fileResources",
        &[("Authorization", &auth), ("Content-Type", &ct)],
        &body,
    );
    assert!(
        r.status == 202 || r.status == 200,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["response"]["fileResource"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A big monthly form: `des` aggregate data elements (female/male each) in a new data set.
pub fn add_big_monthly_form(url: &str, des: usize) -> Vec<String> {
    let base = demo_object("dataElements", "cbDeAggOpd1");
    let mut ds = demo_object("dataSets", DS);
    let ids: Vec<String> = (0..des).map(|i| format!("bd{i:09}")).collect();
    let elements: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut de = base.clone();
            de["id"] = json!(id);
            de["name"] = json!(format!("Item {id}"));
            de["shortName"] = json!(format!("Item {id}"));
            de
        })
        .collect();
    ds["id"] = json!("cbDsBigMon1");
    ds["name"] = json!("Monthly big report");
    ds["shortName"] = json!("Big monthly");
    ds.as_object_mut().unwrap().remove("indicators");
    ds["dataSetElements"] = ids
        .iter()
        .map(|id| json!({"dataSet": {"id": "cbDsBigMon1"}, "dataElement": {"id": id}}))
        .collect();
    import_metadata(url, &json!({"dataElements": elements, "dataSets": [ds]}));
    ids
}

/// Several patients in one flat payload, as one tablet sync sends them.
pub fn patients(from: u32, count: u32) -> Value {
    let mut all = json!({"trackedEntities": [], "enrollments": [], "events": []});
    for n in from..from + count {
        let mut p = patient(n);
        // A second event per visit: the consultation.
        let mut consult = p["events"][0].clone();
        consult["event"] = json!(uid("co", n));
        consult["programStage"] = json!("cbStgConsul");
        consult["dataValues"] = json!([{"dataElement": "cbDeDiagnos", "value": "MALARIA"}]);
        consult["notes"] = json!([{"note": uid("nc", n), "value": "treated"}]);
        p["events"].as_array_mut().unwrap().push(consult);
        for list in ["trackedEntities", "enrollments", "events"] {
            let items = p[list].as_array().unwrap().clone();
            all[list].as_array_mut().unwrap().extend(items);
        }
    }
    all
}

/// `POST /api/metadata` as the demo's admin; panics unless it imported.
fn import_metadata(url: &str, package: &Value) {
    let auth = basic("admin", "district");
    let r = http_request(
        url.trim_start_matches("http://"),
        "POST",
        "/api/metadata",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(package).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// FNV-1a of `bytes` as 16 hex digits: the stand-in's ledger names a file's bytes by it.
pub fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
