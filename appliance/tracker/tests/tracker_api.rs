//! The tablet contract for tracker data, in process: the SDK's upload (POST, job polling,
//! report) and download requests against the routers over a real store with the demo metadata.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use serde_json::{Value, json};

fn download_uri(extra: &str) -> String {
    format!(
        "/api/tracker/trackedEntities?fields={TE_FIELDS}&orgUnits={CLINIC_A}&orgUnitMode=DESCENDANTS&program={OPD}&order=createdAt:desc&includeDeleted=true&paging=true&page=1&pageSize=50{extra}"
    )
}

#[tokio::test]
async fn sdk_upload_job_and_report_list_every_object() {
    let b = TestBox::demo().await;
    let report = b
        .sdk_post(
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
    assert_eq!(report["status"], "OK", "{report}");
    assert!(
        report["validationReport"]["errorReports"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for t in ["TRACKED_ENTITY", "ENROLLMENT", "EVENT", "RELATIONSHIP"] {
        assert_eq!(report["bundleReport"]["typeReportMap"][t]["trackerType"], t);
    }
    assert_eq!(reported(&report, "TRACKED_ENTITY"), vec!["teAmina0001"]);
    assert_eq!(reported(&report, "ENROLLMENT"), vec!["enAmina0001"]);
    assert_eq!(reported(&report, "EVENT"), vec!["evTriage001"]);
    assert_eq!(report["stats"]["created"], 3);
    assert_eq!(report["stats"]["total"], 3);
    // Unknown jobs are 404 (the SDK keeps polling); the report endpoint too.
    let r = b.get("/api/tracker/jobs/Jzz01234567", ANDROID).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["httpStatusCode"], 404);
}

#[tokio::test]
async fn download_has_the_sdk_shape_and_exact_timestamps() {
    let b = TestBox::demo().await;
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
    let page = b.get_ok(&download_uri(""), ANDROID).await;
    assert_eq!(page["pager"]["page"], 1);
    assert_eq!(page["pager"]["pageSize"], 50);
    let te = &page["trackedEntities"][0];
    assert_eq!(te["trackedEntity"], "teAmina0001");
    assert_eq!(te["deleted"], false);
    for k in [
        "createdAt",
        "updatedAt",
        "createdAtClient",
        "updatedAtClient",
    ] {
        assert_ts(&te[k], k);
    }
    let attrs: HashSet<String> = te["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attribute"].as_str().unwrap().to_string())
        .collect();
    // With a program: entity-type and program attributes.
    assert!(
        attrs.contains("cbAttrFirst") && attrs.contains("cbAttrSex01"),
        "{attrs:?}"
    );
    assert_ts(&te["attributes"][0]["createdAt"], "attribute createdAt");
    let en = &te["enrollments"][0];
    assert_eq!(en["enrollment"], "enAmina0001");
    assert_eq!(en["status"], "ACTIVE");
    assert_eq!(en["attributeOptionCombo"], "HllvX50cXC0");
    assert_eq!(en["notes"][0]["value"], "Arrived walking");
    let ev = &en["events"][0];
    assert_eq!(ev["event"], "evTriage001");
    assert_eq!(ev["status"], "COMPLETED");
    assert_ts(&ev["completedAt"], "completedAt");
    assert_eq!(ev["completedBy"], "android");
    assert_eq!(ev["dataValues"].as_array().unwrap().len(), 3);
    assert_ts(&ev["dataValues"][0]["createdAt"], "dataValue createdAt");
    assert_eq!(te["programOwners"][0]["orgUnit"], CLINIC_A);
    assert_eq!(te["programOwners"][0]["program"], OPD);
    // Default fields leave the collections out.
    let plain = b
        .get_ok(
            &format!("/api/tracker/trackedEntities?program={OPD}"),
            ANDROID,
        )
        .await;
    assert!(plain["trackedEntities"][0].get("enrollments").is_none());
    assert!(plain["trackedEntities"][0].get("attributes").is_some());
    // Single entity and single enrollment.
    let one = b
        .get_ok(
            &format!("/api/tracker/trackedEntities/teAmina0001?program={OPD}&fields=trackedEntity,enrollments[enrollment]"),
            ANDROID,
        )
        .await;
    assert_eq!(one["enrollments"][0]["enrollment"], "enAmina0001");
    let en = b
        .get_ok("/api/tracker/enrollments/enAmina0001?fields=*", ANDROID)
        .await;
    assert_eq!(en["trackedEntity"], "teAmina0001");
    let events = b
        .get_ok(
            &format!("/api/tracker/events?orgUnit={CLINIC_A}&orgUnitMode=DESCENDANTS&program={OPD}&includeDeleted=true&paging=true&page=1&pageSize=50"),
            ANDROID,
        )
        .await;
    assert_eq!(events["events"][0]["event"], "evTriage001");
    // Download by UID lists (relationship relatives, "download these").
    let by_uid = b
        .get_ok(
            "/api/tracker/trackedEntities?trackedEntities=teAmina0001,teNope00001&fields=trackedEntity&orgUnitMode=ACCESSIBLE",
            ANDROID,
        )
        .await;
    assert_eq!(by_uid["trackedEntities"].as_array().unwrap().len(), 1);
    let by_uid = b
        .get_ok(
            "/api/tracker/events?events=evTriage001&fields=event,dataValues",
            ANDROID,
        )
        .await;
    assert_eq!(
        by_uid["events"][0]["dataValues"].as_array().unwrap().len(),
        3
    );
}

#[tokio::test]
async fn partial_update_changes_only_sent_values_and_null_deletes() {
    let b = TestBox::demo().await;
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
    // The SDK sends the whole object but only changed values: weight changed, temp deleted.
    let update = json!({"events": [{
        "event": "evTriage001", "enrollment": "enAmina0001", "program": OPD,
        "programStage": TRIAGE, "orgUnit": CLINIC_A, "status": "ACTIVE",
        "occurredAt": "2026-03-01T09:05:00.000",
        "dataValues": [
            {"dataElement": "cbDeWeight1", "value": "62"},
            {"dataElement": "cbDeTemp001", "value": null}
        ]
    }], "trackedEntities": [{
        "trackedEntity": "teAmina0001", "trackedEntityType": PERSON, "orgUnit": CLINIC_A,
        "attributes": [{"attribute": "cbAttrFirst", "value": "Aminah"}]
    }], "enrollments": [{
        "enrollment": "enAmina0001", "trackedEntity": "teAmina0001", "program": OPD,
        "orgUnit": CLINIC_A, "enrolledAt": "2026-03-01T09:00:00.000", "status": "ACTIVE",
        "attributes": [{"attribute": "cbAttrPhone", "value": null}]
    }]});
    let report = b.sdk_post(ANDROID, "CREATE_AND_UPDATE", update).await;
    assert_eq!(report["status"], "OK", "{report}");
    assert_eq!(report["stats"]["updated"], 3);
    let te = b
        .get_ok(
            &format!("/api/tracker/trackedEntities/teAmina0001?program={OPD}&fields=attributes[attribute,value],enrollments[events[dataValues[dataElement,value]]]"),
            ANDROID,
        )
        .await;
    let attr = |id: &str| {
        te["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["attribute"] == id)
            .map(|a| a["value"].clone())
    };
    assert_eq!(attr("cbAttrFirst"), Some(json!("Aminah")));
    assert_eq!(
        attr("cbAttrLastN"),
        Some(json!("Otieno")),
        "untouched value kept"
    );
    assert_eq!(attr("cbAttrPhone"), None, "null deletes");
    assert_eq!(attr("cbAttrSex01"), Some(json!("F")));
    let dvs = &te["enrollments"][0]["events"][0]["dataValues"];
    let dv = |id: &str| {
        dvs.as_array()
            .unwrap()
            .iter()
            .find(|d| d["dataElement"] == id)
            .map(|d| d["value"].clone())
    };
    assert_eq!(dv("cbDeWeight1"), Some(json!("62")));
    assert_eq!(dv("cbDeTemp001"), None);
    assert_eq!(dv("cbDeTriage1"), Some(json!("YELLOW")));
}

#[tokio::test]
async fn re_posting_the_same_payload_changes_nothing() {
    let b = TestBox::demo().await;
    let p = registration(
        "teAmina0001",
        "enAmina0001",
        "evTriage001",
        "OPD-000001",
        "Amina",
    );
    b.sdk_post(ANDROID, "CREATE_AND_UPDATE", p.clone()).await;
    let before = b.get_ok(&download_uri(""), ANDROID).await;
    let report = b.sdk_post(ANDROID, "CREATE_AND_UPDATE", p).await;
    // As in DHIS2: the re-sent note is skipped with a warning (E1119), nothing fails.
    assert_eq!(report["status"], "WARNING", "{report}");
    assert!(errors(&report).is_empty());
    assert_eq!(report["stats"]["created"], 0);
    assert_eq!(report["stats"]["updated"], 3);
    // Every object is still acknowledged, so the tablet marks it synced.
    assert_eq!(reported(&report, "EVENT"), vec!["evTriage001"]);
    let after = b.get_ok(&download_uri(""), ANDROID).await;
    assert_eq!(
        before, after,
        "an identical re-post must not change anything"
    );
    assert_eq!(after["trackedEntities"].as_array().unwrap().len(), 1);
    assert_eq!(
        after["trackedEntities"][0]["enrollments"][0]["notes"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "notes are not duplicated"
    );
}

#[tokio::test]
async fn mixed_batch_imports_the_valid_events_and_reports_only_the_bad_one() {
    let b = TestBox::demo().await;
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
    let mut events = Vec::new();
    for i in 0..4 {
        events.push(json!({
            "event": uid('c', i), "enrollment": "enAmina0001", "program": OPD,
            "programStage": CONSULT, "orgUnit": CLINIC_A, "status": "ACTIVE",
            "occurredAt": "2026-03-02T10:00:00.000",
            "dataValues": [{"dataElement": "cbDeDiagnos", "value": if i == 2 { "FLU" } else { "MALARIA" }}]
        }));
    }
    let report = b
        .sdk_post(ANDROID, "CREATE_AND_UPDATE", json!({"events": events}))
        .await;
    assert_eq!(report["status"], "ERROR");
    assert_eq!(errors(&report), vec![(uid('c', 2), "E1125".to_string())]);
    let ok = reported(&report, "EVENT");
    assert_eq!(ok.len(), 3);
    assert!(!ok.contains(&uid('c', 2)));
    assert_eq!(report["stats"]["created"], 3);
    assert_eq!(report["stats"]["ignored"], 1);
}

#[tokio::test]
async fn validation_uses_dhis2_error_codes() {
    let b = TestBox::demo().await;
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
    let payload = json!({
        "trackedEntities": [
            // Outside the capture scope of android (clinic B).
            {"trackedEntity": "teOutside01", "trackedEntityType": PERSON, "orgUnit": CLINIC_B},
            // Same unique patient ID as Amina.
            {"trackedEntity": "teDuplic001", "trackedEntityType": PERSON, "orgUnit": CLINIC_A,
             "attributes": [{"attribute": "cbAttrPatId", "value": "OPD-000001"}]},
            {"trackedEntity": "bad uid", "trackedEntityType": PERSON, "orgUnit": CLINIC_A},
            {"trackedEntity": "teNoType001", "orgUnit": CLINIC_A},
        ],
        "enrollments": [
            // Its entity failed: E5000.
            {"enrollment": "enOutside01", "trackedEntity": "teOutside01", "program": OPD,
             "orgUnit": CLINIC_A, "enrolledAt": "2026-03-01T00:00:00.000"},
            // A second active enrollment for Amina.
            {"enrollment": "enSecond001", "trackedEntity": "teAmina0001", "program": OPD,
             "orgUnit": CLINIC_A, "enrolledAt": "2026-03-01T00:00:00.000", "status": "ACTIVE"},
        ],
        "events": [
            // Completed triage without the compulsory values; non-repeatable stage too.
            {"event": "evTriage002", "enrollment": "enAmina0001", "programStage": TRIAGE,
             "orgUnit": CLINIC_A, "status": "COMPLETED", "occurredAt": "2026-03-01T00:00:00.000"},
            // No enrollment in a tracker program.
            {"event": "evNoEnrol01", "programStage": CONSULT, "orgUnit": CLINIC_A,
             "occurredAt": "2026-03-01T00:00:00.000"},
            // Bad value type.
            {"event": "evBadQty001", "enrollment": "enAmina0001", "programStage": PHARMACY,
             "orgUnit": CLINIC_A, "occurredAt": "2026-03-01T00:00:00.000",
             "dataValues": [{"dataElement": "cbDeQty0001", "value": "-3"}]},
            // Unknown stage.
            {"event": "evNoStage01", "programStage": "cbStgNope01", "orgUnit": CLINIC_A},
        ]
    });
    let report = b.sdk_post(ANDROID, "CREATE_AND_UPDATE", payload).await;
    let errs = errors(&report);
    let has = |uid: &str, code: &str| errs.iter().any(|(u, c)| u == uid && c == code);
    assert!(has("teOutside01", "E1000"), "{errs:?}");
    assert!(has("teDuplic001", "E1064"), "{errs:?}");
    assert!(has("bad uid", "E1048"), "{errs:?}");
    assert!(has("teNoType001", "E1121"), "{errs:?}");
    assert!(has("enOutside01", "E5000"), "{errs:?}");
    assert!(has("enSecond001", "E1015"), "{errs:?}");
    assert!(has("evTriage002", "E1039"), "{errs:?}");
    assert!(has("evTriage002", "E1303"), "{errs:?}");
    assert!(has("evNoEnrol01", "E1033"), "{errs:?}");
    assert!(has("evBadQty001", "E1302"), "{errs:?}");
    assert!(has("evNoStage01", "E1013"), "{errs:?}");
    for e in report["validationReport"]["errorReports"]
        .as_array()
        .unwrap()
    {
        assert!(e["message"].as_str().unwrap().len() > 10);
        assert!(
            ["TRACKED_ENTITY", "ENROLLMENT", "EVENT"].contains(&e["trackerType"].as_str().unwrap())
        );
    }
    // Nothing of that was stored.
    let page = b.get_ok(&download_uri(""), ANDROID).await;
    assert_eq!(page["trackedEntities"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn atomic_all_writes_nothing_on_any_error_and_sync_mode_answers_409() {
    let b = TestBox::demo().await;
    let mut p = registration(
        "teAmina0001",
        "enAmina0001",
        "evTriage001",
        "OPD-000001",
        "Amina",
    );
    p["events"][0]["dataValues"][2]["value"] = json!("PURPLE");
    let (status, report) = b.post_sync(ANDROID, "atomicMode=ALL", p).await;
    assert_eq!(status, 409);
    assert_eq!(report["status"], "ERROR");
    assert_eq!(report["stats"]["ignored"], 3);
    assert_eq!(report["stats"]["created"], 0);
    let page = b.get_ok(&download_uri(""), ANDROID).await;
    assert!(page["trackedEntities"].as_array().unwrap().is_empty());
    // A valid payload in sync mode: 200 with the report as the body.
    let (status, report) = b
        .post_sync(
            ANDROID,
            "atomicMode=OBJECT&reportMode=FULL",
            registration(
                "teAmina0001",
                "enAmina0001",
                "evTriage001",
                "OPD-000001",
                "Amina",
            ),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stats"]["created"], 3);
    assert!(report["timingsStats"].is_object());
    // Malformed JSON and bad parameters are WebMessages, not reports.
    let r = b
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/api/tracker")
                .header("authorization", basic(ANDROID))
                .header("content-type", "application/json")
                .body(Body::from("{\"trackedEntities\": ["))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["httpStatusCode"], 400);
    let r = b
        .call(
            Method::POST,
            "/api/tracker?importStrategy=UPSERT",
            Some(ANDROID),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = b
        .call(Method::POST, "/api/tracker", None, Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deletion_is_soft_reaches_downloads_and_blocks_re_creation() {
    let b = TestBox::demo().await;
    let p = registration(
        "teAmina0001",
        "enAmina0001",
        "evTriage001",
        "OPD-000001",
        "Amina",
    );
    b.sdk_post(ANDROID, "CREATE_AND_UPDATE", p.clone()).await;
    let server_date = b.state.server_date();
    let report = b
        .sdk_post(
            ANDROID,
            "DELETE",
            json!({"events": [{"event": "evTriage001"}]}),
        )
        .await;
    assert_eq!(report["stats"]["deleted"], 1, "{report}");
    assert_eq!(reported(&report, "EVENT"), vec!["evTriage001"]);
    // Another tablet's incremental download sees the tombstone.
    let page = b
        .get_ok(
            &download_uri(&format!("&updatedAfter={server_date}")),
            ANDROID,
        )
        .await;
    let ev = &page["trackedEntities"][0]["enrollments"][0]["events"][0];
    assert_eq!(ev["event"], "evTriage001");
    assert_eq!(ev["deleted"], true);
    // Without includeDeleted it is gone.
    let r = b.get("/api/tracker/events/evTriage001", ANDROID).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A deleted UID cannot come back.
    let report = b.sdk_post(ANDROID, "CREATE_AND_UPDATE", p).await;
    assert!(
        errors(&report).contains(&("evTriage001".into(), "E1082".into())),
        "{report}"
    );
    // Deleting it again is acknowledged (a lost report), deleting the unknown is E1032.
    let report = b
        .sdk_post(
            ANDROID,
            "DELETE",
            json!({"events": [{"event": "evTriage001"}, {"event": "evNever0001"}]}),
        )
        .await;
    assert_eq!(reported(&report, "EVENT"), vec!["evTriage001"]);
    assert_eq!(
        errors(&report),
        vec![("evNever0001".into(), "E1032".into())]
    );
    // Deleting the entity cascades (android holds F_TEI_CASCADE_DELETE).
    let report = b
        .sdk_post(
            ANDROID,
            "DELETE",
            json!({"trackedEntities": [{"trackedEntity": "teAmina0001"}]}),
        )
        .await;
    assert_eq!(report["status"], "OK", "{report}");
    let page = b.get_ok(&download_uri(""), ANDROID).await;
    let te = &page["trackedEntities"][0];
    assert_eq!(te["deleted"], true);
    assert_eq!(te["enrollments"][0]["deleted"], true);
}

#[tokio::test]
async fn job_reports_and_data_survive_a_restart() {
    let b = TestBox::demo().await;
    let r = b
        .call(
            Method::POST,
            "/api/tracker?atomicMode=OBJECT&importStrategy=CREATE_AND_UPDATE",
            Some(ANDROID),
            Some(registration(
                "teAmina0001",
                "enAmina0001",
                "evTriage001",
                "OPD-000001",
                "Amina",
            )),
        )
        .await;
    let id = r.json()["response"]["id"].as_str().unwrap().to_string();
    let b = b.restart().await;
    let jobs = b.get_ok(&format!("/api/tracker/jobs/{id}"), ANDROID).await;
    assert_eq!(jobs[0]["completed"], true);
    let report = b
        .get_ok(&format!("/api/tracker/jobs/{id}/report"), ANDROID)
        .await;
    assert_eq!(reported(&report, "EVENT"), vec!["evTriage001"]);
    // The catalog was rebuilt: the unique ID is still taken and the entity downloads.
    let page = b.get_ok(&download_uri(""), ANDROID).await;
    assert_eq!(page["trackedEntities"].as_array().unwrap().len(), 1);
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            json!({"trackedEntities": [{"trackedEntity": "teOther0001", "trackedEntityType": PERSON,
                "orgUnit": CLINIC_A, "attributes": [{"attribute": "cbAttrPatId", "value": "opd-000001"}]}]}),
        )
        .await;
    assert_eq!(
        errors(&report),
        vec![("teOther0001".into(), "E1064".into())]
    );
}

#[tokio::test]
async fn odd_page_sizes_return_every_record_exactly_once() {
    let b = TestBox::demo().await;
    let mut tes = Vec::new();
    for i in 0..23 {
        tes.push(
            json!({"trackedEntity": uid('t', i), "trackedEntityType": PERSON, "orgUnit": CLINIC_A,
            "attributes": [{"attribute": "cbAttrFirst", "value": format!("P{i}")}]}),
        );
    }
    let mut ens = Vec::new();
    for i in 0..23 {
        ens.push(json!({"enrollment": uid('e', i), "trackedEntity": uid('t', i), "program": OPD,
            "orgUnit": CLINIC_A, "enrolledAt": "2026-03-01T00:00:00.000",
            "attributes": [{"attribute": "cbAttrLastN", "value": "X"}, {"attribute": "cbAttrSex01", "value": "M"},
                           {"attribute": "cbAttrDob01", "value": "2000-01-01"}]}));
    }
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            json!({"trackedEntities": tes, "enrollments": ens}),
        )
        .await;
    assert_eq!(report["status"], "OK", "{report}");
    for size in [1usize, 2, 5, 7, 22, 23, 50] {
        let mut seen = Vec::new();
        let mut page = 1;
        loop {
            let v = b
                .get_ok(
                    &format!("/api/tracker/trackedEntities?fields=trackedEntity&orgUnits={CLINIC_A}&orgUnitMode=DESCENDANTS&program={OPD}&order=createdAt:desc&includeDeleted=true&paging=true&page={page}&pageSize={size}"),
                    ANDROID,
                )
                .await;
            let items = v["trackedEntities"].as_array().unwrap();
            seen.extend(
                items
                    .iter()
                    .map(|t| t["trackedEntity"].as_str().unwrap().to_string()),
            );
            if items.len() < size {
                assert!(v["pager"].get("nextPage").is_none());
                break;
            }
            page += 1;
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(seen.len(), 23, "page size {size}");
        assert_eq!(unique.len(), 23, "page size {size}");
    }
    let v = b
        .get_ok(
            &format!("/api/tracker/trackedEntities?program={OPD}&pageSize=10&page=2&totalPages=true&fields=trackedEntity"),
            ANDROID,
        )
        .await;
    assert_eq!(v["pager"]["total"], 23);
    assert_eq!(v["pager"]["pageCount"], 3);
    assert!(v["pager"]["nextPage"].as_str().unwrap().contains("page=3"));
    assert!(v["pager"]["prevPage"].as_str().unwrap().contains("page=1"));
}

#[tokio::test]
async fn online_search_over_encrypted_values_with_dhis2_rules() {
    let b = TestBox::demo().await;
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
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        registration(
            "teBaraka001",
            "enBaraka001",
            "evTriage002",
            "OPD-000002",
            "Baraka",
        ),
    )
    .await;
    let search = |filter: &str| {
        format!(
            "/api/tracker/trackedEntities?fields=trackedEntity,attributes[attribute,value],programOwners&{filter}&program={OPD}&orgUnitMode=ACCESSIBLE&paging=true&page=1&pageSize=50"
        )
    };
    let ids = |v: &Value| -> Vec<String> {
        v["trackedEntities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trackedEntity"].as_str().unwrap().to_string())
            .collect()
    };
    let v = b
        .get_ok(&search("filter=cbAttrFirst:LIKE:min"), ANDROID)
        .await;
    assert_eq!(ids(&v), vec!["teAmina0001"]);
    let v = b
        .get_ok(&search("filter=cbAttrPatId:EQ:opd-000002"), ANDROID)
        .await;
    assert_eq!(ids(&v), vec!["teBaraka001"]);
    let v = b
        .get_ok(
            &search("filter=cbAttrFirst:SW:bar&filter=cbAttrLastN:EW:ieno"),
            ANDROID,
        )
        .await;
    assert_eq!(ids(&v), vec!["teBaraka001"]);
    let v = b
        .get_ok(&search("filter=cbAttrFirst:IN:amina;baraka"), ANDROID)
        .await;
    assert_eq!(ids(&v).len(), 2);
    let v = b
        .get_ok(&format!("/api/tracker/trackedEntities?trackedEntityType={PERSON}&filter=cbAttrFirst:LIKE:ara"), ANDROID)
        .await;
    assert_eq!(ids(&v), vec!["teBaraka001"]);
    // Outside the search scope: the message the app looks for.
    let r = b
        .get(&format!("/api/tracker/trackedEntities?program={OPD}&orgUnits={CLINIC_B}&filter=cbAttrFirst:LIKE:a"), ANDROID)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Organisation unit is not part of the search scope")
    );
    // Neither program nor type.
    let r = b
        .get(
            "/api/tracker/trackedEntities?filter=cbAttrFirst:LIKE:a",
            ANDROID,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = b.get(&search("filter=cbAttrFirst:BOGUS:a"), ANDROID).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn reserved_values_are_unique_in_the_box_range_and_never_reissued() {
    let b = TestBox::demo().await;
    let uri = "/api/trackedEntityAttributes/cbAttrPatId/generateAndReserve?numberToReserve=25";
    let first = b.get_ok(uri, ANDROID).await;
    let second = b.get_ok(uri, ANDROID).await;
    let mut all = HashSet::new();
    for v in first
        .as_array()
        .unwrap()
        .iter()
        .chain(second.as_array().unwrap())
    {
        assert_eq!(v["ownerObject"], "TRACKEDENTITYATTRIBUTE");
        assert_eq!(v["ownerUid"], "cbAttrPatId");
        assert_eq!(v["key"], "OPD-SEQUENTIAL(######)");
        assert_ts(&v["created"], "created");
        assert_ts(&v["expiryDate"], "expiryDate");
        let value = v["value"].as_str().unwrap();
        let n: u64 = value.strip_prefix("OPD-").unwrap().parse().unwrap();
        assert!((500_000..505_000).contains(&n), "box 0 slice: {value}");
        assert!(all.insert(value.to_string()), "{value} handed out twice");
    }
    assert_eq!(all.len(), 50);
    // After a restart the counter continues.
    let b = b.restart().await;
    let third = b.get_ok(uri, ANDROID).await;
    for v in third.as_array().unwrap() {
        assert!(all.insert(v["value"].as_str().unwrap().to_string()));
    }
    // A value already held by a patient is skipped.
    let r = b
        .get(
            "/api/trackedEntityAttributes/cbAttrFirst/generateAndReserve",
            ANDROID,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = b
        .get(
            "/api/trackedEntityAttributes/cbAttrNope1/generateAndReserve",
            ANDROID,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = b
        .get(
            "/api/trackedEntityAttributes/cbAttrPatId/generateAndReserve?numberToReserve=5000",
            ANDROID,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn national_blocks_are_handed_out_first() {
    let b = TestBox::demo().await;
    let far = b.store.server_time_ms() + 86_400_000;
    b.tracker
        .add_national_values(
            "cbAttrPatId",
            None,
            vec!["OPD-000101".into(), "OPD-000102".into()],
            far,
        )
        .await
        .unwrap();
    let pools = b.tracker.national_pools().await.unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(
        (pools[0].attribute.as_str(), pools[0].have),
        ("cbAttrPatId", 2)
    );
    // The same block again adds nothing.
    let again = b
        .tracker
        .add_national_values("cbAttrPatId", None, vec!["OPD-000101".into()], far)
        .await
        .unwrap();
    assert_eq!(again, 0);
    let v = b
        .get_ok(
            "/api/trackedEntityAttributes/cbAttrPatId/generateAndReserve?numberToReserve=3",
            ANDROID,
        )
        .await;
    let values: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["value"].as_str().unwrap())
        .collect();
    assert_eq!(values[..2], ["OPD-000101", "OPD-000102"]);
    assert!(values[2].starts_with("OPD-50"));
    // Handed out: never taken into the pool again.
    let stale = b
        .tracker
        .add_national_values("cbAttrPatId", None, vec!["OPD-000102".into()], far)
        .await
        .unwrap();
    assert_eq!(stale, 0);
    assert_eq!(b.tracker.national_pools().await.unwrap()[0].have, 0);
}

#[tokio::test]
async fn file_resources_round_trip_encrypted_and_serve_attribute_files() {
    let b = TestBox::demo().await;
    let boundary = "XyZbOuNdArY";
    let png = b"\x89PNG\r\n\x1a\nclinicbox-photo-bytes";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(png);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = b
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/api/fileResources")
                .header("authorization", basic(ANDROID))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let msg = r.json();
    let fr = &msg["response"]["fileResource"];
    let id = fr["id"].as_str().unwrap().to_string();
    assert_eq!(fr["storageStatus"], "STORED");
    assert_eq!(fr["contentType"], "image/png");
    assert_eq!(fr["contentLength"], png.len());
    assert_eq!(fr["domain"], "DATA_VALUE");
    let meta = b.get_ok(&format!("/api/fileResources/{id}"), ANDROID).await;
    assert_eq!(meta["storageStatus"], "STORED");
    assert_ts(&meta["created"], "created");
    let data = b
        .get(&format!("/api/fileResources/{id}/data"), ANDROID)
        .await;
    assert_eq!(data.bytes, png);
    // Bytes are not in the store file in clear.
    let raw = std::fs::read(b.dir.path().join("data").join(clinicbox_store::DB_FILE)).unwrap();
    assert!(
        !raw.windows(b"clinicbox-photo-bytes".len())
            .any(|w| w == b"clinicbox-photo-bytes")
    );
    // An unknown file resource is E1084 when referenced; an existing one downloads via 2.42 paths.
    // cbAttrPhone is not a file attribute, so use the data-value path through a FILE check:
    let r = b.get("/api/fileResources/Kj6vYde4LHh", ANDROID).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["httpStatusCode"], 404);
    // Missing `file` part.
    let r = b
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/api/fileResources")
                .header("authorization", basic(ANDROID))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Body::from(format!("--{boundary}--\r\n")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn ownership_transfer_moves_the_owner_and_bumps_the_entity() {
    let b = TestBox::demo().await;
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
    let since = b.state.server_date();
    // android cannot move it outside its search scope.
    let r = b
        .call(
            Method::PUT,
            &format!("/api/tracker/ownership/transfer?trackedEntity=teAmina0001&program={OPD}&ou={CLINIC_B}"),
            Some(ANDROID),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = b
        .call(
            Method::PUT,
            &format!("/api/tracker/ownership/transfer?trackedEntity=teAmina0001&program={OPD}&ou={CLINIC_B}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["httpStatusCode"], 200);
    let v = b
        .get_ok(
            &format!("/api/tracker/trackedEntities?program={OPD}&orgUnits={DISTRICT}&orgUnitMode=DESCENDANTS&updatedAfter={since}&fields=trackedEntity,programOwners"),
            ADMIN,
        )
        .await;
    assert_eq!(
        v["trackedEntities"][0]["programOwners"][0]["orgUnit"],
        CLINIC_B
    );
    // Now owned by clinic B: android (search scope clinic A) no longer sees it in clinic A.
    let v = b.get_ok(&download_uri(""), ANDROID).await;
    assert!(v["trackedEntities"].as_array().unwrap().is_empty(), "{v}");
    let r = b
        .call(
            Method::POST,
            &format!("/api/tracker/ownership/override?trackedEntity=teAmina0001&program={OPD}&reason=emergency"),
            Some(ADMIN),
            None,
        )
        .await;
    // DHIS2 2.42 grants temporary ownership only to non-superusers, on protected programs.
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("superuser"), "{}", r.text());
}

#[tokio::test]
async fn incremental_download_returns_what_changed_since_server_date() {
    let b = TestBox::demo().await;
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
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        registration(
            "teBaraka001",
            "enBaraka001",
            "evTriage002",
            "OPD-000002",
            "Baraka",
        ),
    )
    .await;
    let since = b.state.server_date();
    let v = b
        .get_ok(&download_uri(&format!("&updatedAfter={since}")), ANDROID)
        .await;
    assert!(v["trackedEntities"].as_array().unwrap().is_empty(), "{v}");
    // A consultation on Amina bumps Amina only.
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        consultation("teAmina0001", "enAmina0001", "evConsult01", "MALARIA"),
    )
    .await;
    let v = b
        .get_ok(&download_uri(&format!("&updatedAfter={since}")), ANDROID)
        .await;
    let tes = v["trackedEntities"].as_array().unwrap();
    assert_eq!(tes.len(), 1);
    assert_eq!(tes[0]["trackedEntity"], "teAmina0001");
    assert_eq!(
        tes[0]["enrollments"][0]["events"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn single_events_of_an_event_program_import_and_export() {
    let b = TestBox::demo().await;
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            json!({"events": [{"event": "evHealth001", "program": HEALTH, "programStage": HEALTH_STAGE,
                "orgUnit": CLINIC_A, "status": "COMPLETED", "occurredAt": "2026-03-03T08:00:00.000",
                "dataValues": [{"dataElement": "cbDeTopic01", "value": "Hand washing"},
                               {"dataElement": "cbDePartic1", "value": "14"}]}]}),
        )
        .await;
    assert_eq!(report["status"], "OK", "{report}");
    // The stage of a single-stage event program may be left out.
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            json!({"events": [{"event": "evHealth002", "program": HEALTH, "orgUnit": CLINIC_A,
                "status": "ACTIVE", "occurredAt": "2026-03-04T08:00:00.000",
                "dataValues": [{"dataElement": "cbDeTopic01", "value": "Nutrition"}]}]}),
        )
        .await;
    assert_eq!(reported(&report, "EVENT"), vec!["evHealth002"], "{report}");
    let v = b
        .get_ok(
            &format!("/api/tracker/events?orgUnit={CLINIC_A}&orgUnitMode=DESCENDANTS&program={HEALTH}&includeDeleted=true&paging=true&page=1&pageSize=50"),
            ANDROID,
        )
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert!(v["events"][0].get("enrollment").is_none());
    let v = b
        .get_ok(
            &format!("/api/tracker/events?program={HEALTH}&filter=cbDePartic1:GT:10"),
            ANDROID,
        )
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    let v = b
        .get_ok(
            &format!("/api/tracker/events?program={HEALTH}&filter=cbDePartic1:GT:20"),
            ANDROID,
        )
        .await;
    assert!(v["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn relationships_import_once_and_export_on_both_sides() {
    let b = TestBox::demo().await;
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        registration(
            "teMother001",
            "enMother001",
            "evTriage001",
            "OPD-000001",
            "Amina",
        ),
    )
    .await;
    b.sdk_post(
        ANDROID,
        "CREATE_AND_UPDATE",
        registration(
            "teChild0001",
            "enChild0001",
            "evTriage002",
            "OPD-000002",
            "Zawadi",
        ),
    )
    .await;
    let rel = json!({"relationships": [{"relationship": "relMothChi1", "relationshipType": "cbRelMthChd",
        "from": {"trackedEntity": {"trackedEntity": "teMother001"}},
        "to": {"trackedEntity": {"trackedEntity": "teChild0001"}}}]});
    let report = b.sdk_post(ANDROID, "CREATE_AND_UPDATE", rel.clone()).await;
    assert_eq!(reported(&report, "RELATIONSHIP"), vec!["relMothChi1"]);
    // Re-sent: acknowledged, not duplicated.
    let report = b.sdk_post(ANDROID, "CREATE_AND_UPDATE", rel).await;
    assert_eq!(reported(&report, "RELATIONSHIP"), vec!["relMothChi1"]);
    assert!(errors(&report).is_empty());
    let v = b.get_ok(&download_uri(""), ANDROID).await;
    for te in v["trackedEntities"].as_array().unwrap() {
        assert_eq!(
            te["relationships"][0]["relationship"], "relMothChi1",
            "{te}"
        );
        assert_eq!(
            te["relationships"][0]["from"]["trackedEntity"]["trackedEntity"],
            "teMother001"
        );
    }
    let v = b
        .get_ok(
            "/api/tracker/relationships?trackedEntity=teChild0001",
            ANDROID,
        )
        .await;
    assert_eq!(v["relationships"][0]["relationshipType"], "cbRelMthChd");
    // A second relationship between the same two is a duplicate.
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            json!({"relationships": [{"relationship": "relMothChi2", "relationshipType": "cbRelMthChd",
                "from": {"trackedEntity": {"trackedEntity": "teChild0001"}},
                "to": {"trackedEntity": {"trackedEntity": "teMother001"}}}]}),
        )
        .await;
    assert_eq!(
        errors(&report),
        vec![("relMothChi2".into(), "E4018".into())]
    );
}

#[tokio::test]
async fn nested_payloads_are_flattened() {
    let b = TestBox::demo().await;
    let flat = registration(
        "teAmina0001",
        "enAmina0001",
        "evTriage001",
        "OPD-000001",
        "Amina",
    );
    let mut te = flat["trackedEntities"][0].clone();
    let mut en = flat["enrollments"][0].clone();
    let mut ev = flat["events"][0].clone();
    ev.as_object_mut().unwrap().remove("enrollment");
    en.as_object_mut().unwrap().remove("trackedEntity");
    en["events"] = json!([ev]);
    te["enrollments"] = json!([en]);
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            json!({"trackedEntities": [te]}),
        )
        .await;
    assert_eq!(report["status"], "OK", "{report}");
    assert_eq!(report["stats"]["created"], 3);
    // Objects without UIDs get generated ones, reported back.
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE",
            json!({"events": [{"enrollment": "enAmina0001", "programStage": CONSULT, "orgUnit": CLINIC_A,
                "occurredAt": "2026-03-04T00:00:00.000"}]}),
        )
        .await;
    let uids = reported(&report, "EVENT");
    assert_eq!(uids.len(), 1);
    assert!(clinicbox_dhis2::Uid::is_valid(&uids[0]));
}
