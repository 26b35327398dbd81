//! An attacker on the clinic LAN, against the real daemon: a logged-in nurse of another clinic
//! on the same box tries every read and write path on the first clinic's records, and a
//! stranger with no account tries to lock the staff out. Every write is refused with DHIS2's
//! code and changes nothing (the store's change log does not move); every read leaks nothing.

use std::net::Ipv4Addr;

use base64::Engine;
use clinicbox_tests::{BoxBuilder, Response, RunningBox, http_request_from};
use serde_json::{Value, json};

const ANDROID: (&str, &str) = ("android", "Android123");
const ADMIN: (&str, &str) = ("admin", "district");
const NURSE_B: (&str, &str) = ("nurseb", "Hillside-B-2026");
const CLINIC_A: &str = "cbClinicA01";
const CLINIC_B: &str = "cbClinicB01";
const OPD: &str = "cbPrgOpd001";
const HEALTH: &str = "cbPrgHealth";
const DS: &str = "cbDsOpdMon1";

fn basic(who: (&str, &str)) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.0, who.1))
    )
}

fn send(
    b: &RunningBox,
    who: (&str, &str),
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let auth = basic(who);
    let bytes = body.map(|v| serde_json::to_vec(v).expect("json"));
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "application/json"),
    ];
    if bytes.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    b.request(method, path, &headers, bytes.as_deref().unwrap_or(b""))
}

fn ok(r: &Response) -> Value {
    assert!(
        (200..300).contains(&r.status),
        "{}: {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// The store's change-log position: any committed write moves it.
fn fingerprint(b: &RunningBox) -> u64 {
    let s = send(b, ADMIN, "GET", "/status.json", None).json();
    s["store"]["lastSeq"].as_u64().expect("store.lastSeq")
}

/// A synchronous tracker import: the codes of its error reports.
fn tracker(b: &RunningBox, who: (&str, &str), strategy: &str, payload: Value) -> Vec<String> {
    let r = send(
        b,
        who,
        "POST",
        &format!("/api/tracker?async=false&atomicMode=OBJECT&importStrategy={strategy}"),
        Some(&payload),
    );
    let v = r.json();
    v["validationReport"]["errorReports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["errorCode"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn registration(te: &str, en: &str, ev: &str, ou: &str, id: &str) -> Value {
    json!({
        "trackedEntities": [{"trackedEntity": te, "trackedEntityType": "cbTetPerson", "orgUnit": ou,
            "attributes": [{"attribute": "cbAttrPatId", "value": id},
                           {"attribute": "cbAttrFirst", "value": "Amina"},
                           {"attribute": "cbAttrLastN", "value": "Otieno"}]}],
        "enrollments": [{"enrollment": en, "trackedEntity": te, "program": OPD, "orgUnit": ou,
            "enrolledAt": "2026-03-01T09:00:00.000", "status": "ACTIVE",
            "attributes": [{"attribute": "cbAttrSex01", "value": "F"},
                           {"attribute": "cbAttrDob01", "value": "1990-04-02"}]}],
        "events": [{"event": ev, "enrollment": en, "program": OPD, "programStage": "cbStgTriage",
            "orgUnit": ou, "status": "COMPLETED", "occurredAt": "2026-03-01T09:05:00.000",
            "dataValues": [{"dataElement": "cbDeTemp001", "value": "38.4"},
                           {"dataElement": "cbDeTriage1", "value": "YELLOW"}],
            "notes": [{"note": format!("{}N", &ev[..10]), "value": "first visit"}]}]
    })
}

fn health_event(ev: &str, ou: &str) -> Value {
    json!({"events": [{"event": ev, "program": HEALTH, "programStage": "cbStgHealth", "orgUnit": ou,
        "status": "COMPLETED", "occurredAt": "2026-03-03T08:00:00.000",
        "dataValues": [{"dataElement": "cbDeTopic01", "value": "Hand washing"},
                       {"dataElement": "cbDePartic1", "value": "14"}]}]})
}

fn upload_file(b: &RunningBox, who: (&str, &str), bytes: &[u8]) -> String {
    let boundary = "AdVeRsArY";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"note.html\"\r\nContent-Type: text/html\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let auth = basic(who);
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = b.request(
        "POST",
        "/api/fileResources",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", ct.as_str()),
        ],
        &body,
    );
    ok(&r)["response"]["fileResource"]["id"]
        .as_str()
        .expect("file id")
        .to_owned()
}

/// Clinic A's records, made by its own nurse; clinic B's nurse added by the district.
fn clinic_a(b: &RunningBox) -> (String, String) {
    let user = json!({"users": [{
        "id": "cbUserNrsB1", "username": NURSE_B.0, "password": NURSE_B.1, "firstName": "Neema",
        "surname": "Hillside", "userRoles": [{"id": "cbRoleCaptr"}], "organisationUnits": [{"id": CLINIC_B}],
        "dataViewOrganisationUnits": [{"id": CLINIC_B}], "teiSearchOrganisationUnits": [{"id": CLINIC_B}]
    }]});
    ok(&send(b, ADMIN, "POST", "/api/metadata", Some(&user)));
    for (te, en, ev, id) in [
        ("teAdvMother", "enAdvMother", "evAdvMother", "OPD-900001"),
        ("teAdvChild1", "enAdvChild1", "evAdvChild1", "OPD-900002"),
    ] {
        assert!(
            tracker(
                b,
                ANDROID,
                "CREATE_AND_UPDATE",
                registration(te, en, ev, CLINIC_A, id)
            )
            .is_empty()
        );
    }
    assert!(
        tracker(
            b,
            ANDROID,
            "CREATE_AND_UPDATE",
            health_event("evAdvHealth", CLINIC_A)
        )
        .is_empty()
    );
    let rel = json!({"relationships": [{"relationship": "relAdvMthCh", "relationshipType": "cbRelMthChd",
        "from": {"trackedEntity": {"trackedEntity": "teAdvMother"}},
        "to": {"trackedEntity": {"trackedEntity": "teAdvChild1"}}}]});
    assert!(tracker(b, ANDROID, "CREATE_AND_UPDATE", rel).is_empty());
    let file = upload_file(
        b,
        ANDROID,
        b"<html><script>alert(document.cookie)</script></html>",
    );
    // This month's report for clinic A, completed.
    let pe = send(b, ANDROID, "GET", "/api/system/info", None).json()["serverDate"]
        .as_str()
        .expect("serverDate")[..7]
        .replace('-', "");
    let values = json!({"dataSet": DS, "dataValues": [
        {"dataElement": "cbDeAggOpd1", "categoryOptionCombo": "cbCocFemale", "period": pe,
         "orgUnit": CLINIC_A, "attributeOptionCombo": "HllvX50cXC0", "value": "42"}]});
    ok(&send(
        b,
        ANDROID,
        "POST",
        "/api/dataValueSets",
        Some(&values),
    ));
    let reg = json!({"completeDataSetRegistrations": [{"dataSet": DS, "period": pe,
        "organisationUnit": CLINIC_A, "completed": true}]});
    ok(&send(
        b,
        ANDROID,
        "POST",
        "/api/completeDataSetRegistrations",
        Some(&reg),
    ));
    (file, pe)
}

#[test]
fn another_clinics_nurse_can_neither_change_nor_read_this_clinics_records() {
    let b = BoxBuilder::demo().start();
    let (file, pe) = clinic_a(&b);
    let before = fingerprint(&b);

    // Writes, each strategy, each type, with clinic B's or clinic A's org unit in the payload.
    let moved = |mut v: Value, ou: &str| {
        for list in ["trackedEntities", "enrollments", "events"] {
            if let Some(a) = v[list].as_array_mut() {
                for o in a {
                    o["orgUnit"] = json!(ou);
                }
            }
        }
        v
    };
    let attempts: Vec<(&str, Value)> = vec![
        (
            "UPDATE",
            moved(
                registration(
                    "teAdvMother",
                    "enAdvMother",
                    "evAdvMother",
                    CLINIC_A,
                    "OPD-900001",
                ),
                CLINIC_B,
            ),
        ),
        (
            "CREATE_AND_UPDATE",
            registration(
                "teAdvMother",
                "enAdvMother",
                "evAdvMother",
                CLINIC_A,
                "OPD-900001",
            ),
        ),
        ("DELETE", json!({"events": [{"event": "evAdvMother"}]})),
        (
            "DELETE",
            json!({"enrollments": [{"enrollment": "enAdvMother"}]}),
        ),
        (
            "DELETE",
            json!({"trackedEntities": [{"trackedEntity": "teAdvMother"}]}),
        ),
        ("UPDATE", health_event("evAdvHealth", CLINIC_B)),
        ("UPDATE", health_event("evAdvHealth", CLINIC_A)),
        ("DELETE", health_event("evAdvHealth", CLINIC_B)),
        (
            "DELETE",
            json!({"relationships": [{"relationship": "relAdvMthCh"}]}),
        ),
        // A note added to clinic A's event travels with the event and its checks.
        (
            "UPDATE",
            json!({"events": [{"event": "evAdvMother", "enrollment": "enAdvMother", "program": OPD,
            "programStage": "cbStgTriage", "orgUnit": CLINIC_A, "status": "COMPLETED",
            "occurredAt": "2026-03-01T09:05:00.000",
            "notes": [{"note": "noteAdvB001", "value": "written by clinic B"}]}]}),
        ),
    ];
    for (strategy, payload) in attempts {
        let codes = tracker(&b, NURSE_B, strategy, payload.clone());
        assert!(
            codes
                .iter()
                .any(|c| ["E1000", "E1003", "E1102", "E4020"].contains(&c.as_str())),
            "{strategy} {payload}: {codes:?}"
        );
        assert_eq!(
            fingerprint(&b),
            before,
            "{strategy} {payload} changed the store"
        );
    }
    // A relationship from a clinic-B patient to a clinic-A patient.
    assert!(
        tracker(
            &b,
            NURSE_B,
            "CREATE_AND_UPDATE",
            registration(
                "teAdvBPat01",
                "enAdvBPat01",
                "evAdvBPat01",
                CLINIC_B,
                "OPD-900003"
            )
        )
        .is_empty()
    );
    let before = fingerprint(&b);
    let link = json!({"relationships": [{"relationship": "relAdvBtoA1", "relationshipType": "cbRelMthChd",
        "from": {"trackedEntity": {"trackedEntity": "teAdvBPat01"}},
        "to": {"trackedEntity": {"trackedEntity": "teAdvChild1"}}}]});
    assert_eq!(
        tracker(&b, NURSE_B, "CREATE_AND_UPDATE", link),
        vec!["E4020"]
    );
    // Ownership: no transfer of A's patient, no break the glass on an open program.
    for (method, path) in [
        (
            "PUT",
            format!(
                "/api/tracker/ownership/transfer?trackedEntity=teAdvMother&program={OPD}&ou={CLINIC_B}"
            ),
        ),
        (
            "POST",
            format!(
                "/api/tracker/ownership/override?trackedEntity=teAdvMother&program={OPD}&reason=x"
            ),
        ),
    ] {
        let r = send(&b, NURSE_B, method, &path, None);
        assert!(
            [403, 404].contains(&r.status),
            "{path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    // Data values and completeness of clinic A.
    let values = json!({"dataSet": DS, "dataValues": [
        {"dataElement": "cbDeAggOpd1", "categoryOptionCombo": "cbCocFemale", "period": pe,
         "orgUnit": CLINIC_A, "attributeOptionCombo": "HllvX50cXC0", "value": "1"}]});
    let r = send(&b, NURSE_B, "POST", "/api/dataValueSets", Some(&values));
    assert_eq!(r.json()["response"]["conflicts"][0]["errorCode"], "E7617");
    let reg = json!({"completeDataSetRegistrations": [{"dataSet": DS, "period": pe,
        "organisationUnit": CLINIC_A, "completed": false}]});
    let r = send(
        &b,
        NURSE_B,
        "POST",
        "/api/completeDataSetRegistrations",
        Some(&reg),
    );
    assert_eq!(r.json()["response"]["conflicts"][0]["errorCode"], "E7617");
    assert_eq!(fingerprint(&b), before, "a refused write changed the store");

    // Reads: nothing of clinic A comes back.
    let reads = [
        "/api/tracker/trackedEntities/teAdvMother?fields=*".to_owned(),
        format!(
            "/api/tracker/trackedEntities?orgUnits={CLINIC_A}&program={OPD}&fields=trackedEntity"
        ),
        format!(
            "/api/tracker/trackedEntities?program={OPD}&filter=cbAttrFirst:LIKE:ami&fields=trackedEntity"
        ),
        "/api/tracker/events/evAdvHealth?fields=*".to_owned(),
        format!("/api/tracker/events?orgUnit={CLINIC_A}&program={HEALTH}&fields=event"),
        "/api/tracker/enrollments/enAdvMother?fields=*".to_owned(),
        "/api/tracker/relationships?trackedEntity=teAdvChild1".to_owned(),
        "/api/tracker/relationships/relAdvMthCh".to_owned(),
        format!("/api/fileResources/{file}"),
        format!("/api/fileResources/{file}/data"),
        format!("/api/dataValueSets?dataSet={DS}&period={pe}&orgUnit={CLINIC_A}"),
        format!("/api/completeDataSetRegistrations?dataSet={DS}&period={pe}&orgUnit={CLINIC_A}"),
        format!("/api/dataApprovals/multiple?ds={DS}&pe={pe}&ou={CLINIC_A}"),
    ];
    for path in reads {
        let r = send(&b, NURSE_B, "GET", &path, None);
        let body = String::from_utf8_lossy(&r.body);
        for secret in [
            "teAdvMother",
            "evAdvHealth",
            "enAdvMother",
            "relAdvMthCh",
            "Amina",
            "alert(",
            "\"42\"",
        ] {
            assert!(
                r.status >= 400 || !body.contains(secret),
                "{path} ({}) leaked {secret}: {body}",
                r.status
            );
        }
    }
    // Clinic A's own nurse still reads and writes all of it.
    ok(&send(
        &b,
        ANDROID,
        "GET",
        "/api/tracker/trackedEntities/teAdvMother?fields=trackedEntity",
        None,
    ));
    assert!(tracker(&b, ANDROID, "UPDATE", health_event("evAdvHealth", CLINIC_A)).is_empty());
    b.stop();
}

/// A stranger guessing the nurse's password from another device on the LAN slows guessing down
/// but never locks her out: her tablet keeps logging in.
#[test]
fn a_strangers_guesses_leave_staff_able_to_log_in() {
    // No verification cache: the tablet is let in by the rule, not by a cached credential.
    let b = BoxBuilder::demo()
        .config("[api]\ncredential_cache_secs = 0\n")
        .start();
    let host = b.url().trim_start_matches("http://").to_owned();
    let tablet = Ipv4Addr::new(127, 0, 0, 21);
    let stranger = Ipv4Addr::new(127, 0, 0, 66);
    let me = |from, who: (&str, &str)| {
        let auth = basic(who);
        http_request_from(
            from,
            &host,
            "GET",
            "/api/me?fields=id",
            &[("Authorization", auth.as_str())],
            b"",
        )
    };
    assert_eq!(me(tablet, ANDROID).status, 200);
    for _ in 0..40 {
        assert_eq!(me(stranger, ("android", "guess")).status, 401);
    }
    for _ in 0..3 {
        let r = me(tablet, ANDROID);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    // The stranger's made-up credentials never show up as a tablet seen.
    let status = send(&b, ADMIN, "GET", "/status.json", None).json();
    let seen = status["tablets"].to_string();
    assert!(!seen.contains("127.0.0.66"), "{seen}");
    b.stop();
}
