//! Data values through `POST /api/dataValueSets`: control characters, objects and arrays, and
//! that a huge value (or identifier) never makes a huge import summary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// `(indexes, message)` of every conflict.
fn conflicts(summary: &Value) -> Vec<(Value, String)> {
    summary["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["errorCode"], "E7619", "{c}");
            (
                c["indexes"].clone(),
                c["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn reason(de: &str, why: &str) -> String {
    format!("Value must match value type of data element `{de}`: `{why}`")
}

#[tokio::test]
async fn control_characters_objects_and_arrays_are_conflicts_of_their_value_only() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let with = |de: &str, coc: &str, value: Value| {
        let mut v = dv(de, &pe, CLINIC_A, coc, "");
        v["value"] = value;
        v
    };
    let set = json!({"dataSet": DS, "dataValues": [
        with(OPD, FEMALE, json!("4\u{0}2")),
        with(OPD, MALE, json!({"count": 4})),
        with(MAL, FEMALE, json!([4])),
        // A control character at the end is refused, not trimmed away.
        with(MAL, MALE, json!("7\u{B}")),
        // Numbers are text, as in DHIS2; spaces around a value are trimmed.
        with(REF, FEMALE, json!(5)),
        with(REF, MALE, json!(" 3 ")),
    ]});
    let (code, s) = b.import(ANDROID, &set).await;
    assert_eq!(code, 409, "{s}");
    assert_eq!(s["status"], "WARNING");
    assert_eq!(
        s["importCount"],
        json!({"imported": 2, "updated": 0, "ignored": 4, "deleted": 0})
    );
    assert_eq!(
        conflicts(&s),
        vec![
            (json!([0]), reason(OPD, "value_contains_control_characters")),
            (
                json!([1]),
                reason(OPD, "value_not_string_number_or_boolean")
            ),
            (
                json!([2]),
                reason(MAL, "value_not_string_number_or_boolean")
            ),
            (json!([3]), reason(MAL, "value_contains_control_characters")),
        ]
    );
    let got = b.download(ANDROID, DS, &[&pe], CLINIC_A).await;
    let mut values: Vec<(String, String)> = got
        .iter()
        .map(|v| {
            (
                v["dataElement"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            (REF.to_string(), "3".to_string()),
            (REF.to_string(), "5".to_string())
        ]
    );

    // A deletion carries no value to check: an object there does not block it.
    let (code, s) = b
        .import(
            ANDROID,
            &json!({"dataSet": DS, "dataValues": [{
                "dataElement": REF, "period": pe, "orgUnit": CLINIC_A,
                "categoryOptionCombo": FEMALE, "attributeOptionCombo": DEFAULT_COC,
                "value": {"x": 1}, "deleted": true
            }]}),
        )
        .await;
    assert_eq!(
        (code, s["importCount"]["deleted"].clone()),
        (200, json!(1)),
        "{s}"
    );
}

#[tokio::test]
async fn a_2_mb_value_or_identifier_gives_a_small_summary() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let huge = "9".repeat(2 * 1024 * 1024);
    let set = json!({"dataSet": DS, "dataValues": [
        dv(OPD, &pe, CLINIC_A, FEMALE, &huge),
        dv(&format!("cbDe{huge}"), &pe, CLINIC_A, FEMALE, "1"),
        dv(OPD, &pe, CLINIC_A, MALE, "12"),
    ]});
    let r = b.post("/api/dataValueSets", ANDROID, &set).await;
    assert!(r.bytes.len() < 10 * 1024, "{} bytes", r.bytes.len());
    let s = r.web_message(409)["response"].clone();
    assert_eq!(s["importCount"]["imported"], 1, "{s}");
    let c = s["conflicts"].as_array().unwrap();
    assert_eq!(c.len(), 2, "{s}");
    assert_eq!(c[0]["errorCode"], "E7619");
    assert_eq!(
        c[0]["value"],
        reason(OPD, "value_length_greater_than_max_length")
    );
    // The unknown data element is named by a short prefix only.
    assert_eq!(c[1]["errorCode"], "E7610");
    let shown = format!("cbDe{}…", "9".repeat(36));
    assert_eq!(c[1]["object"], shown.as_str());
    assert_eq!(
        c[1]["value"],
        format!("Data element not found or not accessible: `{shown}`")
    );

    // At the limit a text value is accepted (here refused only for not being an integer).
    let at_limit = "9".repeat(50_000);
    let (_, s) = b
        .import(
            ANDROID,
            &json!({"dataSet": DS, "dataValues": [dv(OPD, &pe, CLINIC_A, FEMALE, &at_limit)]}),
        )
        .await;
    assert_eq!(
        s["conflicts"][0]["value"],
        reason(OPD, "value_not_zero_or_positive_integer")
    );
}
