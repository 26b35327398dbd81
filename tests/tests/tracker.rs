//! Tablets sharing tracker data through a real box: simulated tablets speak the Android SDK's
//! exact requests (raw `[ ] , :` in query strings, the SDK's field lists, async upload with job
//! polling, `updatedAfter` from `system/info`'s `serverDate`) against the `clinicbox` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clinicbox_tests::{BoxBuilder, Response, RunningBox, http_request};
use serde_json::{Value, json};

const CLINIC_A: &str = "cbClinicA01";
const OPD: &str = "cbPrgOpd001";
const PERSON: &str = "cbTetPerson";
const TRIAGE: &str = "cbStgTriage";
const CONSULT: &str = "cbStgConsul";
const PHARMACY: &str = "cbStgPharma";

/// `NewTrackedEntityInstanceFields.allFields` as the SDK sends it.
const TE_FIELDS: &str = "trackedEntity,createdAt,updatedAt,createdAtClient,updatedAtClient,orgUnit,trackedEntityType,geometry,deleted,attributes[attribute,value,createdAt,updatedAt],relationships[relationship,relationshipName,relationshipType,createdAt,updatedAt,from[trackedEntity[trackedEntity],enrollment[enrollment],event[event]],to[trackedEntity[trackedEntity],enrollment[enrollment],event[event]]],enrollments[enrollment,createdAt,updatedAt,createdAtClient,updatedAtClient,orgUnit,program,enrolledAt,occurredAt,completedAt,followUp,status,deleted,trackedEntity,geometry,attributeOptionCombo,events[event,enrollment,createdAt,updatedAt,createdAtClient,updatedAtClient,status,geometry,program,programStage,orgUnit,occurredAt,completedAt,scheduledAt,deleted,attributeOptionCombo,assignedUser,completedBy,notes[note,value,storedAt,storedBy],dataValues[dataElement,createdBy,value,createdAt,updatedAt,providedElsewhere]],notes[note,value,storedAt,storedBy]],programOwners";

fn b64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A simulated tablet: one user, its own `updatedAfter` watermark, the SDK's requests.
struct Tablet {
    host: String,
    auth: String,
    watermark: Option<String>,
}

impl Tablet {
    fn new(b: &RunningBox) -> Tablet {
        Tablet::at(b.url())
    }

    fn at(url: &str) -> Tablet {
        Tablet {
            host: url.trim_start_matches("http://").to_string(),
            auth: format!("Basic {}", b64("android:Android123")),
            watermark: None,
        }
    }

    fn get(&self, path: &str) -> Response {
        http_request(
            &self.host,
            "GET",
            path,
            &[
                ("Authorization", &self.auth),
                ("Accept", "application/json"),
            ],
            b"",
        )
    }

    fn get_ok(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("application/json")
        );
        r.json()
    }

    /// `system/info` → serverDate, read before a download as the SDK does.
    fn server_date(&self) -> String {
        self.get_ok("/api/system/info?fields=serverDate,dateFormat,version,contextPath,systemName,serverTimeZoneId")
            ["serverDate"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The SDK's upload: POST, wait 1 s… (here: poll at once), poll the job, read the report.
    fn upload(&self, strategy: &str, payload: &Value) -> Value {
        let body = serde_json::to_vec(payload).unwrap();
        let r = http_request(
            &self.host,
            "POST",
            &format!("/api/tracker?atomicMode=OBJECT&importStrategy={strategy}"),
            &[
                ("Authorization", &self.auth),
                ("Content-Type", "application/json; charset=utf-8"),
            ],
            &body,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let id = r.json()["response"]["id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/api/tracker/jobs/{id}"));
            if r.status == 200
                && r.json()
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n["completed"] == true)
            {
                break;
            }
            assert!(r.status == 200 || r.status == 404, "job poll: {}", r.status);
            assert!(Instant::now() < deadline, "job {id} never completed");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.get_ok(&format!("/api/tracker/jobs/{id}/report"))
    }

    /// The SDK's tracked-entity download for one program and capture org unit: all pages of
    /// `page_size`, `updatedAfter` = the serverDate of the previous successful download.
    fn download(&mut self, page_size: usize) -> Vec<Value> {
        let date = self.server_date();
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let mut path = format!(
                "/api/tracker/trackedEntities?fields={TE_FIELDS}&orgUnits={CLINIC_A}&orgUnitMode=DESCENDANTS&program={OPD}&order=createdAt:desc&includeDeleted=true&paging=true&page={page}&pageSize={page_size}"
            );
            if let Some(w) = &self.watermark {
                path.push_str(&format!("&updatedAfter={w}"));
            }
            let v = self.get_ok(&path);
            let items = v["trackedEntities"].as_array().unwrap().clone();
            let n = items.len();
            out.extend(items);
            if n < page_size {
                break;
            }
            page += 1;
        }
        self.watermark = Some(date);
        out
    }
}

fn reported(report: &Value, t: &str) -> Vec<String> {
    report["bundleReport"]["typeReportMap"][t]["objectReports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["uid"].as_str().unwrap().to_string())
        .collect()
}

fn error_uids(report: &Value) -> Vec<String> {
    report["validationReport"]["errorReports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uid"].as_str().unwrap().to_string())
        .collect()
}

fn is_ts(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    let b = s.as_bytes();
    b.len() == 23
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        })
}

fn registration(te: &str, en: &str, ev: &str, patient_id: &str, first: &str) -> Value {
    json!({
        "trackedEntities": [{
            "trackedEntity": te, "trackedEntityType": PERSON, "orgUnit": CLINIC_A, "deleted": false,
            "createdAtClient": "2026-03-01T09:00:00.000", "updatedAtClient": "2026-03-01T09:00:00.000",
            "attributes": [
                {"attribute": "cbAttrPatId", "value": patient_id},
                {"attribute": "cbAttrFirst", "value": first},
                {"attribute": "cbAttrLastN", "value": "Otieno"}
            ],
            "programOwners": [{"program": OPD, "trackedEntity": te, "orgUnit": CLINIC_A}]
        }],
        "enrollments": [{
            "enrollment": en, "trackedEntity": te, "program": OPD, "orgUnit": CLINIC_A,
            "enrolledAt": "2026-03-01T09:00:00.000", "occurredAt": "2026-03-01T09:00:00.000",
            "status": "ACTIVE", "followUp": false, "deleted": false,
            "attributes": [
                {"attribute": "cbAttrSex01", "value": "F"},
                {"attribute": "cbAttrDob01", "value": "1990-04-02"},
                {"attribute": "cbAttrPhone", "value": "+254700000001"}
            ]
        }],
        "events": [{
            "event": ev, "enrollment": en, "trackedEntity": te, "program": OPD,
            "programStage": TRIAGE, "orgUnit": CLINIC_A, "status": "COMPLETED",
            "occurredAt": "2026-03-01T09:05:00.000", "deleted": false,
            "dataValues": [
                {"dataElement": "cbDeWeight1", "value": "61.5", "providedElsewhere": false},
                {"dataElement": "cbDeTemp001", "value": "38.4", "providedElsewhere": false},
                {"dataElement": "cbDeTriage1", "value": "YELLOW", "providedElsewhere": false}
            ]
        }],
        "relationships": []
    })
}

fn find<'v>(list: &'v [Value], key: &str, uid: &str) -> Option<&'v Value> {
    list.iter().find(|v| v[key] == uid)
}

fn events_of(te: &Value) -> Vec<Value> {
    te["enrollments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn tablets_share_a_patient_through_the_box() {
    let b = BoxBuilder::demo().start();
    let tablet_a = Tablet::new(&b);
    let mut tablet_b = Tablet::new(&b);
    let mut tablet_c = Tablet::new(&b);

    // B syncs first (nothing yet) so its next download is incremental.
    assert!(tablet_b.download(50).is_empty());

    // A registers, enrolls and records triage.
    let report = tablet_a.upload(
        "CREATE_AND_UPDATE",
        &registration(
            "teAmina0001",
            "enAmina0001",
            "evTriage001",
            "OPD-000001",
            "Amina",
        ),
    );
    assert_eq!(report["status"], "OK", "{report}");
    assert_eq!(reported(&report, "EVENT"), vec!["evTriage001"]);

    // B downloads incrementally and sees the patient with the triage.
    let got = tablet_b.download(50);
    assert_eq!(got.len(), 1);
    let te = &got[0];
    assert_eq!(te["trackedEntity"], "teAmina0001");
    for k in [
        "createdAt",
        "updatedAt",
        "createdAtClient",
        "updatedAtClient",
    ] {
        assert!(is_ts(&te[k]), "{k}: {}", te[k]);
    }
    assert_eq!(events_of(te).len(), 1);
    assert!(is_ts(&events_of(te)[0]["updatedAt"]));

    // B records the consultation.
    let consult = json!({"events": [{
        "event": "evConsult01", "enrollment": "enAmina0001", "trackedEntity": "teAmina0001",
        "program": OPD, "programStage": CONSULT, "orgUnit": CLINIC_A, "status": "COMPLETED",
        "occurredAt": "2026-03-01T10:00:00.000",
        "dataValues": [{"dataElement": "cbDeDiagnos", "value": "MALARIA"},
                       {"dataElement": "cbDeReferrd", "value": "false"}]
    }]});
    let report = tablet_b.upload("CREATE_AND_UPDATE", &consult);
    assert_eq!(report["status"], "OK", "{report}");

    // C (a fresh tablet at the pharmacy) sees both.
    let got = tablet_c.download(50);
    let evs: HashSet<String> = events_of(&got[0])
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        evs,
        HashSet::from(["evTriage001".into(), "evConsult01".into()])
    );

    // A partial update from C: one changed value, one null.
    let update = json!({"events": [{
        "event": "evTriage001", "enrollment": "enAmina0001", "program": OPD, "programStage": TRIAGE,
        "orgUnit": CLINIC_A, "status": "COMPLETED", "occurredAt": "2026-03-01T09:05:00.000",
        "dataValues": [{"dataElement": "cbDeTriage1", "value": "RED"},
                       {"dataElement": "cbDeWeight1", "value": null}]
    }]});
    let report = tablet_c.upload("CREATE_AND_UPDATE", &update);
    assert_eq!(report["status"], "OK", "{report}");
    let got = tablet_b.download(50);
    let triage = find(&events_of(&got[0]), "event", "evTriage001")
        .cloned()
        .unwrap();
    let dv: HashMap<String, String> = triage["dataValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["dataElement"].as_str().unwrap().to_string(),
                d["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(dv.get("cbDeTriage1").map(String::as_str), Some("RED"));
    assert_eq!(
        dv.get("cbDeTemp001").map(String::as_str),
        Some("38.4"),
        "untouched"
    );
    assert!(!dv.contains_key("cbDeWeight1"), "null deleted it: {dv:?}");

    // Re-posting A's registration changes nothing: B's next incremental download is empty
    // for data (the re-post is an acknowledged no-op).
    let before = tablet_c.get_ok(&format!(
        "/api/tracker/trackedEntities/teAmina0001?program={OPD}&fields={TE_FIELDS}"
    ));
    let report = tablet_a.upload(
        "CREATE_AND_UPDATE",
        &registration(
            "teAmina0001",
            "enAmina0001",
            "evTriage001x",
            "OPD-000001",
            "Amina",
        )
        .as_object()
        .map(|o| {
            let mut o = o.clone();
            o.insert("events".into(), json!([]));
            Value::Object(o)
        })
        .unwrap(),
    );
    assert!(error_uids(&report).is_empty(), "{report}");
    assert_eq!(report["stats"]["created"], 0);
    let after = tablet_c.get_ok(&format!(
        "/api/tracker/trackedEntities/teAmina0001?program={OPD}&fields={TE_FIELDS}"
    ));
    assert_eq!(before, after);
    // B's next incremental download brings nothing new (at most the same entity again when
    // its last change fell in the millisecond of B's serverDate).
    for te in tablet_b.download(50) {
        assert_eq!(
            te["updatedAt"], before["updatedAt"],
            "a no-op re-post moved updatedAt"
        );
    }

    // A deletes the consultation; B learns about it as deleted:true.
    let report = tablet_a.upload("DELETE", &json!({"events": [{"event": "evConsult01"}]}));
    assert_eq!(report["stats"]["deleted"], 1, "{report}");
    let got = tablet_b.download(50);
    let consult = find(&events_of(&got[0]), "event", "evConsult01")
        .cloned()
        .unwrap();
    assert_eq!(consult["deleted"], true);
    b.stop();
}

#[test]
fn mixed_batches_and_odd_page_sizes() {
    let b = BoxBuilder::demo().start();
    let tablet = Tablet::new(&b);
    let report = tablet.upload(
        "CREATE_AND_UPDATE",
        &registration(
            "teAmina0001",
            "enAmina0001",
            "evTriage001",
            "OPD-000001",
            "Amina",
        ),
    );
    assert_eq!(report["status"], "OK");
    // One invalid event (quantity must be positive) among valid ones.
    let events: Vec<Value> = (0..5)
        .map(|i| {
            json!({"event": format!("evPharm{i:04}"), "enrollment": "enAmina0001", "program": OPD,
                "programStage": PHARMACY, "orgUnit": CLINIC_A, "status": "COMPLETED",
                "occurredAt": "2026-03-01T11:00:00.000",
                "dataValues": [{"dataElement": "cbDeDrug001", "value": "Artemether"},
                               {"dataElement": "cbDeQty0001", "value": if i == 3 { "0" } else { "6" }}]})
        })
        .collect();
    let report = tablet.upload("CREATE_AND_UPDATE", &json!({"events": events}));
    assert_eq!(error_uids(&report), vec!["evPharm0003"]);
    let ok = reported(&report, "EVENT");
    assert_eq!(ok.len(), 4);
    assert!(!ok.contains(&"evPharm0003".to_string()));

    // 37 more patients, then page through with odd sizes.
    let mut tes = Vec::new();
    let mut ens = Vec::new();
    for i in 0..37 {
        let te = format!("tePage{i:05}");
        tes.push(
            json!({"trackedEntity": te, "trackedEntityType": PERSON, "orgUnit": CLINIC_A,
            "attributes": [{"attribute": "cbAttrFirst", "value": format!("P{i}")},
                           {"attribute": "cbAttrLastN", "value": "Page"}]}),
        );
        ens.push(
            json!({"enrollment": format!("enPage{i:05}"), "trackedEntity": te, "program": OPD,
            "orgUnit": CLINIC_A, "enrolledAt": "2026-03-02T08:00:00.000", "status": "ACTIVE",
            "attributes": [{"attribute": "cbAttrSex01", "value": "M"},
                           {"attribute": "cbAttrDob01", "value": "2001-01-01"}]}),
        );
    }
    let report = tablet.upload(
        "CREATE_AND_UPDATE",
        &json!({"trackedEntities": tes, "enrollments": ens}),
    );
    assert_eq!(report["status"], "OK", "{report}");
    for size in [1, 3, 7, 13, 37, 38, 50] {
        let mut t = Tablet::new(&b);
        let got = t.download(size);
        let ids: Vec<&str> = got
            .iter()
            .map(|t| t["trackedEntity"].as_str().unwrap())
            .collect();
        let unique: HashSet<&&str> = ids.iter().collect();
        assert_eq!(ids.len(), 38, "page size {size}");
        assert_eq!(unique.len(), 38, "page size {size}");
    }
    b.stop();
}

#[test]
fn twenty_tablets_post_and_download_at_once() {
    let b = BoxBuilder::demo().start();
    let tablets = 20;
    let rounds = 6;
    let deadline = Instant::now() + Duration::from_secs(240);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = b.url().to_string();
    std::thread::scope(|s| {
        for n in 0..tablets {
            let (url, acknowledged, failures) = (&url, acknowledged.clone(), failures.clone());
            s.spawn(move || {
                let mut t = Tablet::at(url);
                for round in 0..rounds {
                    if Instant::now() > deadline {
                        break;
                    }
                    let k = n * 100 + round;
                    let (te, en, ev) = (
                        format!("teTab{k:06}"),
                        format!("enTab{k:06}"),
                        format!("evTab{k:06}"),
                    );
                    let report = t.upload(
                        "CREATE_AND_UPDATE",
                        &registration(&te, &en, &ev, &format!("OPD-9{k:05}"), "Load"),
                    );
                    if report["status"] != "OK" {
                        failures.lock().unwrap().push(format!("{k}: {report}"));
                    }
                    let mut acked = acknowledged.lock().unwrap();
                    for ty in ["TRACKED_ENTITY", "ENROLLMENT", "EVENT"] {
                        acked.extend(reported(&report, ty));
                    }
                    drop(acked);
                    let _ = t.download(50);
                }
            });
        }
    });
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 3 * tablets,
        "too few rounds ran: {}",
        acked.len()
    );
    // Every acknowledged object is there, exactly once.
    let mut all = Tablet::new(&b);
    let got = all.download(50);
    let mut present = HashSet::new();
    for te in &got {
        present.insert(te["trackedEntity"].as_str().unwrap().to_string());
        for e in te["enrollments"].as_array().unwrap() {
            present.insert(e["enrollment"].as_str().unwrap().to_string());
            for ev in e["events"].as_array().unwrap() {
                present.insert(ev["event"].as_str().unwrap().to_string());
            }
        }
    }
    for uid in &acked {
        assert!(present.contains(uid), "acknowledged {uid} is missing");
    }
    assert_eq!(got.len(), acked.len() / 3);
    b.stop();
}

#[test]
fn an_acknowledged_import_and_its_job_survive_a_power_cut() {
    let first = BoxBuilder::demo();
    let data = first.dir().join("data");
    let b = first.start();
    let tablet = Tablet::new(&b);
    let body = serde_json::to_vec(&registration(
        "teAmina0001",
        "enAmina0001",
        "evTriage001",
        "OPD-000001",
        "Amina",
    ))
    .unwrap();
    let r = http_request(
        &tablet.host,
        "POST",
        "/api/tracker?atomicMode=OBJECT&importStrategy=CREATE_AND_UPDATE",
        &[
            ("Authorization", &tablet.auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(r.status, 200);
    let id = r.json()["response"]["id"].as_str().unwrap().to_string();
    // SIGKILL right after the acknowledgement: the tablet polls after the box is back.
    let kept = b.kill();
    let again = BoxBuilder::demo_at(data.display().to_string()).start();
    let tablet = Tablet::new(&again);
    let jobs = tablet.get_ok(&format!("/api/tracker/jobs/{id}"));
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|n| n["completed"] == true)
    );
    let report = tablet.get_ok(&format!("/api/tracker/jobs/{id}/report"));
    assert_eq!(reported(&report, "EVENT"), vec!["evTriage001"]);
    let mut t = Tablet::new(&again);
    let got = t.download(50);
    assert_eq!(got.len(), 1);
    assert_eq!(events_of(&got[0])[0]["event"], "evTriage001");
    again.stop();
    drop(kept);
}

/// The daemon's "tracker catalog loaded" log line of its last start.
fn catalog_line(log: &str) -> String {
    log.lines()
        .rfind(|l| l.contains("tracker catalog loaded"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_restarted_box_reads_its_saved_catalog_and_what_changed_after_it() {
    let first = BoxBuilder::demo();
    let data = first.dir().join("data");
    let b = first.start();
    let amina = registration(
        "teAmina0001",
        "enAmina0001",
        "evTriage001",
        "OPD-000001",
        "Amina",
    );
    assert!(error_uids(&Tablet::new(&b).upload("CREATE_AND_UPDATE", &amina)).is_empty());
    // The data stays in the first box's directory for the next two starts.
    let (log, data_dir) = b.stop_keeping();
    assert!(
        log.contains("tracker catalog saved"),
        "a clean stop saves:\n{log}"
    );

    // Started from the saved copy; then a new patient and a new visit for Amina, and a power cut.
    let b = BoxBuilder::demo_at(data.display().to_string()).start();
    assert!(
        catalog_line(&b.log()).contains("from_saved_copy=true"),
        "{}",
        b.log()
    );
    let tablet = Tablet::new(&b);
    let baraka = registration(
        "teBaraka001",
        "enBaraka001",
        "evTriage002",
        "OPD-000002",
        "Baraka",
    );
    assert!(error_uids(&tablet.upload("CREATE_AND_UPDATE", &baraka)).is_empty());
    let visit = json!({"events": [{
        "event": "evConsult01", "enrollment": "enAmina0001", "trackedEntity": "teAmina0001",
        "program": OPD, "programStage": CONSULT, "orgUnit": CLINIC_A, "status": "ACTIVE",
        "occurredAt": "2026-03-02T09:00:00.000", "dataValues": []}]});
    let report = tablet.upload("CREATE_AND_UPDATE", &visit);
    assert!(error_uids(&report).is_empty(), "{report}");
    let kept = b.kill();

    let again = BoxBuilder::demo_at(data.display().to_string()).start();
    let line = catalog_line(&again.log());
    assert!(line.contains("from_saved_copy=true"), "{line}");
    assert!(
        !line.contains("replayed=0"),
        "the changes after the save are read: {line}"
    );
    let mut t = Tablet::new(&again);
    let got = t.download(50);
    let ids: HashSet<&str> = got
        .iter()
        .filter_map(|te| te["trackedEntity"].as_str())
        .collect();
    assert_eq!(ids, HashSet::from(["teAmina0001", "teBaraka001"]));
    let amina = find(&got, "trackedEntity", "teAmina0001").unwrap();
    let visits: HashSet<String> = events_of(amina)
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        visits,
        HashSet::from(["evTriage001".into(), "evConsult01".into()])
    );
    // The unique patient ID index came back too: Baraka's ID cannot be given twice.
    let copy = registration(
        "teCopy00001",
        "enCopy00001",
        "evCopy00001",
        "OPD-000002",
        "Copy",
    );
    let report = t.upload("CREATE_AND_UPDATE", &copy);
    assert!(
        error_uids(&report).contains(&"teCopy00001".to_string()),
        "{report}"
    );
    again.stop();
    drop((kept, data_dir));
}
