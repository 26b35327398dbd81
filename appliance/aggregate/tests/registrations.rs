//! `POST`/`GET`/`DELETE /api/completeDataSetRegistrations` with the SDK's parameters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::Method;
use common::*;
use serde_json::{Value, json};

const FIELDS: &str = "period,dataSet,organisationUnit,attributeOptionCombo,date,storedBy,completed";

fn reg(ds: &str, pe: &str, ou: &str, completed: bool) -> Value {
    json!({"period": pe, "dataSet": ds, "organisationUnit": ou, "attributeOptionCombo": DEFAULT_COC,
           "date": "2020-01-31", "storedBy": "android", "completed": completed})
}

fn counts(m: &Value) -> [u64; 4] {
    let c = &m["response"]["importCount"];
    ["imported", "updated", "ignored", "deleted"].map(|k| c[k].as_u64().unwrap())
}

async fn registrations(b: &TestBox, who: (&str, &str), pe: &str, ou: &str) -> Vec<Value> {
    let r = b
        .get(
            &format!("/api/completeDataSetRegistrations?fields={FIELDS}&dataSet={DS}&period={pe}&orgUnit={ou}&children=true&paging=false"),
            who,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["completeDataSetRegistrations"]
        .as_array()
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn complete_repost_uncomplete_and_download() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let body = json!({"completeDataSetRegistrations": [reg(DS, &pe, CLINIC_A, true)]});
    let m = b
        .post("/api/completeDataSetRegistrations", ANDROID, &body)
        .await
        .web_message(200);
    assert_eq!(m["response"]["status"], "SUCCESS");
    assert_eq!(m["response"]["responseType"], "ImportSummary");
    assert_eq!(counts(&m), [1, 0, 0, 0]);
    let m = b
        .post("/api/completeDataSetRegistrations", ANDROID, &body)
        .await
        .web_message(200);
    assert_eq!(counts(&m), [0, 0, 1, 0], "an identical re-post is ignored");

    let got = registrations(&b, ANDROID, &pe, CLINIC_A).await;
    assert_eq!(
        got,
        vec![
            json!({"period": pe, "dataSet": DS, "organisationUnit": CLINIC_A,
                    "attributeOptionCombo": DEFAULT_COC, "date": "2020-01-31",
                    "storedBy": "android", "completed": true})
        ]
    );
    // The district sees it through children=true.
    assert_eq!(registrations(&b, ADMIN, &pe, DISTRICT).await.len(), 1);

    // The SDK un-completes with DELETE, naming the attribute combo by its combo and options.
    let r = b
        .call(
            Method::DELETE,
            &format!("/api/completeDataSetRegistrations?ds={DS}&pe={pe}&ou={CLINIC_A}&cc={DEFAULT_COMBO}&cp={DEFAULT_OPTION}&multiOu=false"),
            Some(ANDROID),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let got = registrations(&b, ANDROID, &pe, CLINIC_A).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]["completed"], false,
        "other tablets must learn of the un-completion"
    );
    // Deleting again is still a success; completed:false on nothing is ignored.
    let r = b
        .call(
            Method::DELETE,
            &format!("/api/completeDataSetRegistrations?ds={DS}&pe={pe}&ou={CLINIC_A}"),
            Some(ANDROID),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let off = json!({"completeDataSetRegistrations": [reg(DS, &pe, CLINIC_A, false)]});
    let m = b
        .post("/api/completeDataSetRegistrations", ANDROID, &off)
        .await
        .web_message(200);
    assert_eq!(counts(&m), [0, 0, 1, 0]);
    // Completing again re-imports it; completed:false then un-completes it.
    let m = b
        .post("/api/completeDataSetRegistrations", ANDROID, &body)
        .await
        .web_message(200);
    assert_eq!(counts(&m), [1, 0, 0, 0]);
    let m = b
        .post("/api/completeDataSetRegistrations", ANDROID, &off)
        .await
        .web_message(200);
    assert_eq!(counts(&m), [0, 1, 0, 0]);
    assert_eq!(
        registrations(&b, ANDROID, &pe, CLINIC_A).await[0]["completed"],
        false
    );
}

#[tokio::test]
async fn registrations_are_checked_like_values() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let body = json!({"completeDataSetRegistrations": [
        reg(DS, &pe, CLINIC_A, true),
        reg(DS, &pe, CLINIC_B_OU, true),
        reg(DS, &b.month(1), CLINIC_A, true),
        reg("cbDsNoSuch1", &pe, CLINIC_A, true),
        reg(DS_READ_ONLY, &pe, CLINIC_A, true),
        reg(DS_EXPIRY, &b.month(-2), CLINIC_A, true),
        reg(DS, "2024W1", CLINIC_A, true),
    ]});
    let m = b
        .post(
            "/api/completeDataSetRegistrations?dryRun=true",
            ANDROID,
            &body,
        )
        .await
        .web_message(409);
    assert_eq!(m["status"], "WARNING");
    assert_eq!(counts(&m), [1, 0, 6, 0]);
    let at = |i: usize| -> Value {
        m["response"]["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["indexes"] == json!([i]))
            .cloned()
            .unwrap_or_else(|| panic!("no conflict for {i}: {m}"))
    };
    assert_eq!(at(1)["errorCode"], "E7617");
    assert!(
        at(2)["value"]
            .as_str()
            .unwrap()
            .contains("after latest open future period")
    );
    assert_eq!(at(3)["errorCode"], "E7600");
    assert_eq!(at(4)["errorCode"], "E7601");
    assert_eq!(at(5)["errorCode"], "E7640");
    assert!(
        at(6)["value"]
            .as_str()
            .unwrap()
            .contains("is not the period type")
    );
    assert!(
        registrations(&b, ANDROID, &pe, CLINIC_A).await.is_empty(),
        "dry run wrote"
    );

    // DELETE refuses what the user may not touch, with a WebMessage.
    let r = b
        .call(
            Method::DELETE,
            &format!("/api/completeDataSetRegistrations?ds={DS}&pe={pe}&ou={CLINIC_A}"),
            Some(CLINIC_B),
            None,
        )
        .await;
    let m = r.web_message(409);
    assert!(
        m["message"].as_str().unwrap().contains("not in hierarchy"),
        "{m}"
    );
    let r = b
        .call(Method::DELETE, &format!("/api/completeDataSetRegistrations?ds={DS}&pe={pe}&ou={CLINIC_A}&cc={DEFAULT_COMBO}&cp=cbNoOption1"), Some(ANDROID), None)
        .await;
    r.web_message(409);
    let r = b
        .call(
            Method::DELETE,
            "/api/completeDataSetRegistrations?ds=x",
            Some(ANDROID),
            None,
        )
        .await;
    r.web_message(409);
}

#[tokio::test]
async fn multi_ou_uncompletes_the_children_and_complete_date_completes_a_set() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let body = json!({"completeDataSetRegistrations": [reg(DS, &pe, CLINIC_A, true), reg(DS, &pe, CLINIC_B_OU, true)]});
    let m = b
        .post("/api/completeDataSetRegistrations", ADMIN, &body)
        .await
        .web_message(200);
    assert_eq!(counts(&m), [2, 0, 0, 0]);
    let r = b
        .call(
            Method::DELETE,
            &format!(
                "/api/completeDataSetRegistrations?ds={DS}&pe={pe}&ou={DISTRICT}&multiOu=true"
            ),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let got = registrations(&b, ADMIN, &pe, DISTRICT).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|g| g["completed"] == false), "{got:?}");

    // `completeDate` on a data value set completes it in the same commit.
    let mut set = month_payload(&pe, ["1", "2", "3", "4", "5", "6"]);
    set["period"] = json!(pe);
    set["orgUnit"] = json!(CLINIC_A);
    set["completeDate"] = json!("true");
    let (code, s) = b.import(ANDROID, &set).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["dataSetComplete"], b.now().today.to_string());
    let got = registrations(&b, ANDROID, &pe, CLINIC_A).await;
    assert_eq!(got[0]["completed"], true);
}
