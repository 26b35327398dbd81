//! A logged-in user of another clinic on the same box, trying to touch clinic A's records: every
//! write is checked against the record as stored, not only against what the payload claims
//! (DHIS2 2.42's ownership validators), and every refusal changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use serde_json::{Value, json};

/// Hillside Clinic B's nurse: captures in clinic B and searches only there.
const NURSE_B: (&str, &str) = ("nurseb", "Hillside-B-2026");

async fn with_nurse_b(search: &[&str]) -> TestBox {
    let b = TestBox::demo().await;
    let user = clinicbox_api::admin::NewUser {
        username: NURSE_B.0.into(),
        password: NURSE_B.1.into(),
        first_name: "Neema".into(),
        surname: "Hillside".into(),
        roles: vec!["Clinic data capture".into()],
        org_units: vec![CLINIC_B.into()],
        search_org_units: search.iter().map(|s| s.to_string()).collect(),
        superuser: false,
    };
    clinicbox_api::admin::add_user(b.state.metadata(), &user)
        .await
        .unwrap();
    b
}

fn health_event(uid: &str, org_unit: &str, topic: &str) -> Value {
    json!({"events": [{"event": uid, "program": HEALTH, "programStage": HEALTH_STAGE,
        "orgUnit": org_unit, "status": "COMPLETED", "occurredAt": "2026-03-03T08:00:00.000",
        "dataValues": [{"dataElement": "cbDeTopic01", "value": topic},
                       {"dataElement": "cbDePartic1", "value": "14"}]}]})
}

/// What the admin sees of one event: the fingerprint a refused write must not change.
async fn event_as_stored(b: &TestBox, uid: &str) -> Value {
    let v = b
        .get_ok(
            &format!("/api/tracker/events/{uid}?fields=event,orgUnit,deleted,updatedAt,dataValues[dataElement,value]"),
            ADMIN,
        )
        .await;
    assert_eq!(v["event"], uid, "{v}");
    v
}

fn codes(report: &Value) -> Vec<String> {
    errors(report).into_iter().map(|(_, c)| c).collect()
}

#[tokio::test]
async fn an_event_of_another_clinic_cannot_be_moved_updated_or_deleted() {
    let b = with_nurse_b(&[]).await;
    let r = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            health_event("evHealthA01", CLINIC_A, "Hand washing"),
        )
        .await;
    assert_eq!(r["status"], "OK", "{r}");
    let before = event_as_stored(&b, "evHealthA01").await;

    // Moving clinic A's event into clinic B by saying so in the payload.
    for strategy in ["UPDATE", "CREATE_AND_UPDATE"] {
        let r = b
            .sdk_post(
                NURSE_B,
                strategy,
                health_event("evHealthA01", CLINIC_B, "Taken over"),
            )
            .await;
        assert_eq!(codes(&r), vec!["E1000"], "{strategy}: {r}");
    }
    // Updating it in place.
    let r = b
        .sdk_post(
            NURSE_B,
            "UPDATE",
            health_event("evHealthA01", CLINIC_A, "Changed"),
        )
        .await;
    assert_eq!(codes(&r), vec!["E1000"], "{r}");
    // Deleting it, with either org unit in the payload.
    for ou in [CLINIC_B, CLINIC_A] {
        let r = b
            .sdk_post(NURSE_B, "DELETE", health_event("evHealthA01", ou, "x"))
            .await;
        assert_eq!(codes(&r), vec!["E1000"], "{ou}: {r}");
    }
    assert_eq!(event_as_stored(&b, "evHealthA01").await, before);

    // Clinic A's own nurse still can.
    let r = b
        .sdk_post(
            ANDROID,
            "UPDATE",
            health_event("evHealthA01", CLINIC_A, "Nutrition"),
        )
        .await;
    assert!(codes(&r).is_empty(), "{r}");
}

#[tokio::test]
async fn a_tracker_event_and_enrollment_of_another_clinic_cannot_be_taken_over() {
    let b = with_nurse_b(&[]).await;
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        registration(
            "teAmina0001",
            "enAmina0001",
            "evTriage001",
            "OPD-000001",
            "Amina",
        ),
    )
    .await;
    let before = event_as_stored(&b, "evTriage001").await;
    let r = b
        .sdk_post(
            NURSE_B,
            "UPDATE",
            json!({"events": [{"event": "evTriage001", "enrollment": "enAmina0001", "program": OPD,
                "programStage": TRIAGE, "orgUnit": CLINIC_B, "status": "COMPLETED",
                "occurredAt": "2026-03-01T09:05:00.000",
                "dataValues": [{"dataElement": "cbDeTemp001", "value": "36.6"}]}]}),
        )
        .await;
    let c = codes(&r);
    assert!(
        c.contains(&"E1000".into()) && c.contains(&"E1102".into()),
        "{r}"
    );
    let r = b
        .sdk_post(
            NURSE_B,
            "UPDATE",
            json!({"enrollments": [{"enrollment": "enAmina0001", "trackedEntity": "teAmina0001",
                "program": OPD, "orgUnit": CLINIC_B, "status": "ACTIVE",
                "enrolledAt": "2026-03-01T09:00:00.000"}]}),
        )
        .await;
    assert!(codes(&r).contains(&"E1000".into()), "{r}");
    let r = b
        .sdk_post(
            NURSE_B,
            "DELETE",
            json!({"events": [{"event": "evTriage001"}]}),
        )
        .await;
    assert_eq!(codes(&r), vec!["E1000"], "{r}");
    assert_eq!(event_as_stored(&b, "evTriage001").await, before);
}

#[tokio::test]
async fn relationships_need_access_to_their_ends_as_stored() {
    let b = with_nurse_b(&[]).await;
    for (te, en, ev, id, name) in [
        (
            "teMother001",
            "enMother001",
            "evTriage001",
            "OPD-000001",
            "Amina",
        ),
        (
            "teChild0001",
            "enChild0001",
            "evTriage002",
            "OPD-000002",
            "Zawadi",
        ),
    ] {
        b.sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            registration(te, en, ev, id, name),
        )
        .await;
    }
    let rel = |uid: &str, from: &str, to: &str| {
        json!({"relationships": [{"relationship": uid, "relationshipType": "cbRelMthChd",
            "from": {"trackedEntity": {"trackedEntity": from}},
            "to": {"trackedEntity": {"trackedEntity": to}}}]})
    };
    let r = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            rel("relMothChi1", "teMother001", "teChild0001"),
        )
        .await;
    assert!(codes(&r).is_empty(), "{r}");
    let child_before = b
        .get_ok(
            "/api/tracker/trackedEntities/teChild0001?fields=updatedAt",
            ADMIN,
        )
        .await;

    // Deleting clinic A's relationship.
    let r = b
        .sdk_post(
            NURSE_B,
            "DELETE",
            json!({"relationships": [{"relationship": "relMothChi1"}]}),
        )
        .await;
    assert_eq!(codes(&r), vec!["E4020"], "{r}");
    // Linking a clinic-B patient to a clinic-A patient nurse B cannot read.
    let mut mother_b = registration(
        "teMotherB01",
        "enMotherB01",
        "evTriageB01",
        "OPD-000003",
        "Neema",
    );
    for list in ["trackedEntities", "enrollments", "events"] {
        for o in mother_b[list].as_array_mut().unwrap() {
            o["orgUnit"] = json!(CLINIC_B);
        }
    }
    let r = b.sdk_post(NURSE_B, "CREATE_AND_UPDATE", mother_b).await;
    assert!(codes(&r).is_empty(), "{r}");
    let r = b
        .sdk_post(
            NURSE_B,
            "CREATE_AND_UPDATE",
            rel("relMothChi2", "teMotherB01", "teChild0001"),
        )
        .await;
    assert_eq!(codes(&r), vec!["E4020"], "{r}");

    let v = b
        .get_ok(
            "/api/tracker/relationships?trackedEntity=teChild0001",
            ADMIN,
        )
        .await;
    let rels: Vec<&Value> = v["relationships"].as_array().unwrap().iter().collect();
    assert_eq!(rels.len(), 1, "{v}");
    assert_eq!(rels[0]["relationship"], "relMothChi1");
    let child_after = b
        .get_ok(
            "/api/tracker/trackedEntities/teChild0001?fields=updatedAt",
            ADMIN,
        )
        .await;
    assert_eq!(
        child_after, child_before,
        "a refused link touched the patient"
    );
}

#[tokio::test]
async fn break_the_glass_is_only_for_protected_programs_and_never_for_superusers() {
    // Nurse B may search the whole district: OPD is OPEN, so she reads clinic A's patients
    // without breaking any glass, and DHIS2 refuses an override there.
    let b = with_nurse_b(&[DISTRICT]).await;
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        registration(
            "teAmina0001",
            "enAmina0001",
            "evTriage001",
            "OPD-000001",
            "Amina",
        ),
    )
    .await;
    let uri = format!(
        "/api/tracker/ownership/override?trackedEntity=teAmina0001&program={OPD}&reason=emergency"
    );
    let r = b.call(Method::POST, &uri, Some(NURSE_B), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("only be granted to protected programs"),
        "{}",
        r.text()
    );
    let r = b.call(Method::POST, &uri, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("superuser"), "{}", r.text());
}

async fn upload(
    b: &TestBox,
    who: (&str, &str),
    name: &str,
    declared: &str,
    bytes: &[u8],
) -> String {
    let boundary = "XyZbOuNdArY";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {declared}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = b
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/api/fileResources")
                .header("authorization", basic(who))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    r.json()["response"]["fileResource"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn files_are_for_their_clinic_and_never_served_as_a_page() {
    let b = with_nurse_b(&[]).await;
    let page = b"<html><script>fetch('/admin')</script></html>";
    let id = upload(&b, ANDROID, "note.html", "text/html", page).await;
    // Clinic A's file is not there for clinic B's nurse: neither its description nor its bytes.
    for path in [
        format!("/api/fileResources/{id}"),
        format!("/api/fileResources/{id}/data"),
    ] {
        let r = b.get(&path, NURSE_B).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
        assert_eq!(r.json()["httpStatusCode"], 404);
    }
    // Its own clinic gets it, as bytes to download, whatever the uploader declared.
    let meta = b.get_ok(&format!("/api/fileResources/{id}"), ANDROID).await;
    assert_eq!(meta["contentType"], "application/octet-stream");
    let r = b
        .get(&format!("/api/fileResources/{id}/data"), ANDROID)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes, page);
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert!(
        r.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;"),
        "{:?}",
        r.headers
    );
    // A photo is shown inline, typed from its bytes.
    let id = upload(
        &b,
        ANDROID,
        "photo.png",
        "image/*",
        b"\x89PNG\r\n\x1a\nbytes",
    )
    .await;
    let r = b
        .get(&format!("/api/fileResources/{id}/data"), ANDROID)
        .await;
    assert_eq!(r.headers["content-type"], "image/png");
    assert!(
        r.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline;")
    );
}

/// OPD made PROTECTED, as a ministry may for sensitive programs.
async fn protected_opd(b: &TestBox) {
    let demo: Value = serde_json::from_str(clinicbox_api::demo::DEMO_METADATA).unwrap();
    let mut program = demo["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == OPD)
        .unwrap()
        .clone();
    program["accessLevel"] = json!("PROTECTED");
    let report = clinicbox_api::metadata::import::import(
        b.state.metadata(),
        &json!({ "programs": [program] }),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        serde_json::to_value(&report).unwrap()["status"],
        "OK",
        "{}",
        serde_json::to_value(&report).unwrap()
    );
}

#[tokio::test]
async fn break_the_glass_lets_the_temporary_owner_update_a_protected_enrollment() {
    // Nurse B may search the district; OPD is PROTECTED, so clinic A's patient needs the glass.
    let b = with_nurse_b(&[DISTRICT]).await;
    protected_opd(&b).await;
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        registration(
            "teAmina0001",
            "enAmina0001",
            "evTriage001",
            "OPD-000001",
            "Amina",
        ),
    )
    .await;
    let consult = json!({"events": [{"event": "evTriage001", "enrollment": "enAmina0001",
        "program": OPD, "programStage": TRIAGE, "orgUnit": CLINIC_A, "status": "COMPLETED",
        "occurredAt": "2026-03-01T09:05:00.000",
        "dataValues": [{"dataElement": "cbDeTemp001", "value": "39.1"}]}]});
    // Before breaking the glass: refused by ownership.
    let r = b.sdk_post(NURSE_B, "UPDATE", consult.clone()).await;
    assert_eq!(codes(&r), vec!["E1102"], "{r}");
    let uri = format!(
        "/api/tracker/ownership/override?trackedEntity=teAmina0001&program={OPD}&reason=referred+in+labour"
    );
    let r = b.call(Method::POST, &uri, Some(NURSE_B), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["message"], "Temporary Ownership granted");
    // The SDK re-posts exactly what was refused: now it goes through.
    let r = b.sdk_post(NURSE_B, "UPDATE", consult).await;
    assert!(codes(&r).is_empty(), "{r}");
    let v = event_as_stored(&b, "evTriage001").await;
    assert_eq!(v["orgUnit"], CLINIC_A, "the event stays in clinic A");
    assert!(v["dataValues"].to_string().contains("39.1"), "{v}");
    // A patient she holds no glass for stays closed.
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        registration(
            "teZawadi001",
            "enZawadi001",
            "evTriage002",
            "OPD-000002",
            "Zawadi",
        ),
    )
    .await;
    let r = b
        .sdk_post(
            NURSE_B,
            "UPDATE",
            json!({"enrollments": [{"enrollment": "enZawadi001", "trackedEntity": "teZawadi001",
                "program": OPD, "orgUnit": CLINIC_A, "status": "COMPLETED",
                "enrolledAt": "2026-03-01T09:00:00.000"}]}),
        )
        .await;
    assert_eq!(codes(&r), vec!["E1102"], "{r}");
}

/// A photo data element on the health-session stage (the demo has no file values).
async fn health_photo(b: &TestBox) {
    let demo: Value = serde_json::from_str(clinicbox_api::demo::DEMO_METADATA).unwrap();
    let mut de = demo["dataElements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "cbDeTopic01")
        .unwrap()
        .clone();
    de["id"] = json!("cbDePhoto01");
    de["name"] = json!("Session photo");
    de["shortName"] = json!("Session photo");
    de["valueType"] = json!("IMAGE");
    let mut stage = demo["programStages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == HEALTH_STAGE)
        .unwrap()
        .clone();
    stage["programStageDataElements"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({"id": "cbPsdePhot1", "dataElement": {"id": "cbDePhoto01"},
            "compulsory": false, "allowProvidedElsewhere": false, "sortOrder": 9,
            "displayInReports": true, "allowFutureDate": false, "renderOptionsAsRadio": false}),
        );
    let report = clinicbox_api::metadata::import::import(
        b.state.metadata(),
        &json!({ "dataElements": [de], "programStages": [stage] }),
        Default::default(),
    )
    .await
    .unwrap();
    let report = serde_json::to_value(&report).unwrap();
    assert_eq!(report["status"], "OK", "{report}");
}

fn with_photo(uid: &str, ou: &str, photo: &str) -> Value {
    let mut v = health_event(uid, ou, "Photo session");
    v["events"][0]["dataValues"]
        .as_array_mut()
        .unwrap()
        .push(json!({"dataElement": "cbDePhoto01", "value": photo}));
    v
}

#[tokio::test]
async fn a_file_follows_the_record_that_holds_it_and_no_other_record_can_take_it() {
    // Nurse B may search the whole district, so only the record decides what she reads.
    let b = with_nurse_b(&[DISTRICT]).await;
    health_photo(&b).await;
    let photo = upload(
        &b,
        ANDROID,
        "session.png",
        "image/png",
        b"\x89PNG\r\n\x1a\nsession",
    )
    .await;
    let r = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            with_photo("evPhotoA001", CLINIC_A, &photo),
        )
        .await;
    assert!(codes(&r).is_empty(), "{r}");
    // Clinic B's record cannot take clinic A's photo (DHIS2's E1009), nor can clinic A's
    // other records.
    for (who, ev, ou) in [
        (NURSE_B, "evPhotoB001", CLINIC_B),
        (ANDROID, "evPhotoA002", CLINIC_A),
    ] {
        let r = b
            .sdk_post(who, "CREATE_AND_UPDATE", with_photo(ev, ou, &photo))
            .await;
        assert_eq!(codes(&r), vec!["E1009"], "{r}");
    }
    // Re-sending the owner keeps it.
    let r = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            with_photo("evPhotoA001", CLINIC_A, &photo),
        )
        .await;
    assert!(codes(&r).is_empty(), "{r}");
    // A file uploaded by clinic A and not used yet is not clinic B's to use.
    let unused = upload(
        &b,
        ANDROID,
        "other.png",
        "image/png",
        b"\x89PNG\r\n\x1a\nother",
    )
    .await;
    let r = b
        .sdk_post(
            NURSE_B,
            "CREATE_AND_UPDATE",
            with_photo("evPhotoB002", CLINIC_B, &unused),
        )
        .await;
    assert_eq!(codes(&r), vec!["E1084"], "{r}");
    // Whoever may read the event reads its photo; the admin too.
    for who in [ANDROID, ADMIN] {
        let r = b
            .get(&format!("/api/fileResources/{photo}/data"), who)
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}
