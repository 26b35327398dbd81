//! Attribute and data values through `POST /api/tracker`: control characters, objects and
//! arrays, DHIS2's attribute length limit (E1077), and that a huge value never makes a huge
//! report (errors echo at most a short prefix of what was sent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

/// A patient of clinic A with these attribute values (and a patient ID, unique per UID).
fn patient(te: &str, attributes: Value) -> Value {
    let mut attributes = attributes.as_array().cloned().unwrap_or_default();
    attributes.push(json!({"attribute": "cbAttrPatId", "value": format!("OPD-{te}")}));
    json!({"trackedEntities": [{
        "trackedEntity": te, "trackedEntityType": PERSON, "orgUnit": CLINIC_A,
        "attributes": attributes
    }]})
}

/// A completed consultation in Amina's enrollment with these data values.
fn consultation_with(ev: &str, data_values: Value) -> Value {
    json!({"events": [{
        "event": ev, "enrollment": "enAmina0001", "trackedEntity": "teAmina0001", "program": OPD,
        "programStage": CONSULT, "orgUnit": CLINIC_A, "status": "ACTIVE",
        "occurredAt": "2026-03-01T10:00:00.000", "dataValues": data_values
    }]})
}

async fn with_amina() -> TestBox {
    let b = TestBox::demo().await;
    let r = b
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
    assert_eq!(r["status"], "OK", "{r}");
    b
}

/// The error reports of a report.
fn reports(report: &Value) -> Vec<Value> {
    report["validationReport"]["errorReports"]
        .as_array()
        .unwrap()
        .clone()
}

fn one_error(report: &Value, uid: &str, code: &str) -> Value {
    let all = reports(report);
    let found: Vec<&Value> = all
        .iter()
        .filter(|e| e["uid"] == uid && e["errorCode"] == code)
        .collect();
    assert_eq!(found.len(), 1, "{uid} {code}: {report}");
    found[0].clone()
}

async fn not_stored(b: &TestBox, path: &str) {
    let r = b.get(path, ANDROID).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
}

#[tokio::test]
async fn a_nul_in_an_attribute_or_a_data_value_is_refused() {
    let b = with_amina().await;
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            patient(
                "teNulAttr01",
                json!([{"attribute": "cbAttrFirst", "value": "Ami\u{0}na"}]),
            ),
        )
        .await;
    let e = one_error(&report, "teNulAttr01", "E1007");
    assert_eq!(
        e["message"],
        "Error validating attribute value type: `TEXT`; Error: `value_contains_control_characters`."
    );
    not_stored(&b, "/api/tracker/trackedEntities/teNulAttr01").await;

    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            consultation_with(
                "evNulValue1",
                json!([{"dataElement": "cbDeNotes01", "value": "Fever\u{0}"}]),
            ),
        )
        .await;
    let e = one_error(&report, "evNulValue1", "E1302");
    assert_eq!(
        e["message"],
        "DataElement `cbDeNotes01` is not valid: `value_contains_control_characters`."
    );
    not_stored(&b, "/api/tracker/events/evNulValue1").await;

    // Other control characters too, and at the edges (never trimmed away); TAB, LF and CR
    // are text.
    for (i, bad) in ["\u{1B}[31mred", "trailing\u{B}", "\u{7F}"]
        .iter()
        .enumerate()
    {
        let ev = format!("evCtrlVal0{i}");
        let report = b
            .sdk_post(
                ANDROID,
                "CREATE_AND_UPDATE",
                consultation_with(&ev, json!([{"dataElement": "cbDeNotes01", "value": bad}])),
            )
            .await;
        one_error(&report, &ev, "E1302");
    }
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            consultation_with(
                "evTabsOk001",
                json!([{"dataElement": "cbDeNotes01", "value": "line 1\r\nline 2\tend"}]),
            ),
        )
        .await;
    assert_eq!(report["status"], "OK", "{report}");
    let ev = b.get_ok("/api/tracker/events/evTabsOk001", ANDROID).await;
    assert_eq!(ev["dataValues"][0]["value"], "line 1\r\nline 2\tend");
}

#[tokio::test]
async fn objects_and_arrays_are_refused_per_value_not_stored_as_text() {
    let b = with_amina().await;
    let payload = json!({
        "trackedEntities": [
            patient("teObjAttr01", json!([{"attribute": "cbAttrFirst", "value": {"first": "Amina"}}]))
                ["trackedEntities"][0].clone(),
            patient("teArrAttr01", json!([{"attribute": "cbAttrLastN", "value": ["Otieno"]}]))
                ["trackedEntities"][0].clone(),
            // Numbers and booleans are still text, as in DHIS2.
            patient("teNumAttr01", json!([{"attribute": "cbAttrFirst", "value": 42}]))
                ["trackedEntities"][0].clone(),
        ],
        "events": consultation_with(
            "evObjValue1",
            json!([{"dataElement": "cbDeNotes01", "value": {"text": "x"}}]),
        )["events"].clone()
    });
    let report = b.sdk_post(ANDROID, "CREATE_AND_UPDATE", payload).await;
    for te in ["teObjAttr01", "teArrAttr01"] {
        let e = one_error(&report, te, "E1007");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("value_not_string_number_or_boolean"),
            "{e}"
        );
        not_stored(&b, &format!("/api/tracker/trackedEntities/{te}")).await;
    }
    let e = one_error(&report, "evObjValue1", "E1302");
    assert_eq!(
        e["message"],
        "DataElement `cbDeNotes01` is not valid: `value_not_string_number_or_boolean`."
    );
    assert_eq!(reports(&report).len(), 3, "{report}");
    let te = b
        .get_ok(
            "/api/tracker/trackedEntities/teNumAttr01?fields=attributes",
            ANDROID,
        )
        .await;
    let first = te["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attribute"] == "cbAttrFirst")
        .cloned()
        .unwrap();
    assert_eq!(first["value"], "42");
}

#[tokio::test]
async fn attribute_values_longer_than_1200_characters_are_e1077() {
    let b = with_amina().await;
    let at_limit = "a".repeat(1_200);
    let over = format!("{at_limit}b");
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            json!({"trackedEntities": [
                patient("teLongOk001", json!([{"attribute": "cbAttrFirst", "value": at_limit}]))
                    ["trackedEntities"][0].clone(),
                patient("teTooLong01", json!([{"attribute": "cbAttrFirst", "value": over}]))
                    ["trackedEntities"][0].clone(),
            ]}),
        )
        .await;
    assert_eq!(reports(&report).len(), 1, "{report}");
    let e = one_error(&report, "teTooLong01", "E1077");
    assert_eq!(
        e["message"],
        "Attribute: `cbAttrFirst`, text value exceed the maximum allowed length: `cbAttrFirst`."
    );
    assert_eq!(e["args"], json!(["cbAttrFirst", "1200"]));
    assert!(
        !report
            .to_string()
            .contains("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    );
    not_stored(&b, "/api/tracker/trackedEntities/teTooLong01").await;
    assert_eq!(reported(&report, "TRACKED_ENTITY"), vec!["teLongOk001"]);

    // An enrollment's program attributes have the same limit.
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            json!({"enrollments": [{
                "enrollment": "enAmina0001", "trackedEntity": "teAmina0001", "program": OPD,
                "orgUnit": CLINIC_A, "enrolledAt": "2026-03-01T09:00:00.000", "status": "ACTIVE",
                "attributes": [{"attribute": "cbAttrPhone", "value": "1".repeat(1_201)}]
            }]}),
        )
        .await;
    one_error(&report, "enAmina0001", "E1077");
}

#[tokio::test]
async fn a_2_mb_value_gives_a_report_of_a_few_hundred_bytes() {
    let b = with_amina().await;
    let huge = "x".repeat(2 * 1024 * 1024);
    let mut payload = patient(
        "teHugeAttr1",
        json!([{"attribute": "cbAttrFirst", "value": huge}]),
    );
    payload["events"] = consultation_with(
        "evHugeValue",
        json!([
            {"dataElement": "cbDeNotes01", "value": huge},
            {"dataElement": "cbDeDiagnos", "value": format!("NOT-AN-OPTION-{huge}")}
        ]),
    )["events"]
        .clone();

    let report = b
        .sdk_post(ANDROID, "CREATE_AND_UPDATE", payload.clone())
        .await;
    one_error(&report, "teHugeAttr1", "E1077");
    let mut too_long: Vec<String> = reports(&report)
        .iter()
        .filter(|e| e["uid"] == "evHugeValue" && e["errorCode"] == "E1302")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    too_long.sort();
    assert_eq!(
        too_long,
        [
            "DataElement `cbDeDiagnos` is not valid: `value_length_greater_than_max_length`.",
            "DataElement `cbDeNotes01` is not valid: `value_length_greater_than_max_length`."
        ]
    );
    let size = report.to_string().len();
    assert!(size < 10 * 1024, "report of {size} bytes: {report}");

    // The synchronous answer (the report itself) is as small.
    let (status, sync) = b.post_sync(ANDROID, "atomicMode=OBJECT", payload).await;
    assert_eq!(status, 409, "{sync}");
    let size = sync.to_string().len();
    assert!(size < 10 * 1024, "sync report of {size} bytes");

    // A value that fails its option set is echoed as a short prefix only.
    let long_code = format!("NOT-AN-OPTION-{}", "y".repeat(500));
    let report = b
        .sdk_post(
            ANDROID,
            "CREATE_AND_UPDATE",
            consultation_with(
                "evLongCode1",
                json!([{"dataElement": "cbDeDiagnos", "value": long_code}]),
            ),
        )
        .await;
    let e = one_error(&report, "evLongCode1", "E1125");
    let shown = format!("NOT-AN-OPTION-{}…", "y".repeat(40 - 14));
    assert_eq!(e["args"][0], shown.as_str());
    assert_eq!(
        e["message"],
        format!("Value `{shown}` is not a valid option code in OptionSet `cbOsDiag001`.")
    );
}
