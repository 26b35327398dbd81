//! `POST`/`GET /api/dataValueSets` through the router over a real store: the SDK's requests,
//! DHIS2's counts and conflict codes, locks, deletions, dry runs and the audit trail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use axum::http::Method;
use clinicbox_aggregate::records::{AUDIT, AuditEntry, AuditType, DATA_VALUES};
use clinicbox_dhis2::aggregate::{DataApproval, DataApprovalState};
use clinicbox_store::{Collection, DataValueKey};
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn counts(summary: &Value) -> (u64, u64, u64, u64) {
    let c = &summary["importCount"];
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("importCount.{k}: {summary}"))
    };
    (n("imported"), n("updated"), n("ignored"), n("deleted"))
}

fn by_cell(values: &[Value]) -> BTreeMap<(String, String), Value> {
    values
        .iter()
        .map(|v| {
            (
                (
                    v["dataElement"].as_str().unwrap().to_string(),
                    v["categoryOptionCombo"].as_str().unwrap().to_string(),
                ),
                v.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_month_is_imported_reposted_corrected_and_downloaded_by_another_tablet() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let month = month_payload(&pe, ["40", "35", "7", "5", "2", "1"]);

    let (code, s) = b.import(ANDROID, &month).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["status"], "SUCCESS");
    assert_eq!(s["responseType"], "ImportSummary");
    assert_eq!(counts(&s), (6, 0, 0, 0));
    assert_eq!(s["conflicts"], json!([]));

    // The same month again: nothing changes, everything is ignored.
    let (code, s) = b.import(ANDROID, &month).await;
    assert_eq!((code, counts(&s)), (200, (0, 0, 6, 0)), "{s}");

    // One correction.
    let corrected = month_payload(&pe, ["40", "35", "9", "5", "2", "1"]);
    let (code, s) = b.import(ANDROID, &corrected).await;
    assert_eq!((code, counts(&s)), (200, (0, 1, 5, 0)), "{s}");

    // A second tablet (same clinic) downloads exactly that state with the SDK's request.
    let got = b
        .download(ANDROID, DS, &[&b.month(-1), &pe], CLINIC_A)
        .await;
    assert_eq!(got.len(), 6, "{got:?}");
    let cells = by_cell(&got);
    assert_eq!(cells[&(MAL.to_string(), FEMALE.to_string())]["value"], "9");
    assert_eq!(cells[&(OPD.to_string(), FEMALE.to_string())]["value"], "40");
    for v in &got {
        assert_eq!(v["period"], pe.as_str());
        assert_eq!(v["orgUnit"], CLINIC_A);
        assert_eq!(v["attributeOptionCombo"], DEFAULT_COC);
        assert_eq!(v["storedBy"], "android");
        assert_eq!(v["deleted"], false);
        assert_eq!(v["followup"], false);
        // The SDK parses these with yyyy-MM-dd'T'HH:mm:ss.SSS.
        for k in ["created", "lastUpdated"] {
            let t = v[k].as_str().unwrap();
            assert!(
                clinicbox_dhis2::Dhis2Timestamp::parse_strict(t).is_ok(),
                "{k}={t}"
            );
        }
    }
    // The district user (admin) sees it through the parent with children=true.
    assert_eq!(b.download(ADMIN, DS, &[&pe], DISTRICT).await.len(), 6);
    // Without children the district itself holds nothing.
    let r = b
        .get(
            &format!("/api/dataValueSets?dataSet={DS}&period={pe}&orgUnit={DISTRICT}"),
            ADMIN,
        )
        .await;
    assert_eq!(r.json()["dataValues"], json!([]));
}

#[tokio::test]
async fn an_invalid_value_is_a_conflict_pointing_at_its_index_and_the_rest_is_imported() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let month = month_payload(&pe, ["40", "35", "7", "-4", "2", "1"]);
    let (code, s) = b.import(ANDROID, &month).await;
    assert_eq!(code, 409, "{s}");
    assert_eq!(s["status"], "WARNING");
    assert_eq!(counts(&s), (5, 0, 1, 0));
    let c = &s["conflicts"].as_array().unwrap()[..];
    assert_eq!(c.len(), 1, "{s}");
    assert_eq!(c[0]["indexes"], json!([3]));
    assert_eq!(c[0]["errorCode"], "E7619");
    assert_eq!(c[0]["property"], "value");
    assert_eq!(c[0]["object"], MAL);
    assert_eq!(
        c[0]["value"],
        format!(
            "Value must match value type of data element `{MAL}`: `value_not_zero_or_positive_integer`"
        )
    );
    assert_eq!(s["rejectedIndexes"], json!([3]));
    let got = b.download(ANDROID, DS, &[&pe], CLINIC_A).await;
    assert_eq!(got.len(), 5);
    assert!(!by_cell(&got).contains_key(&(MAL.to_string(), MALE.to_string())));
}

#[tokio::test]
async fn every_rule_reports_dhis2s_code_at_the_right_index() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let next = b.month(1);
    let week = b
        .now()
        .current(clinicbox_dhis2::PeriodType::Weekly)
        .unwrap()
        .id()
        .to_string();
    // (data set, value, expected code or None for accepted)
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            DS,
            dv("cbDeNoSuch1", &pe, CLINIC_A, FEMALE, "1"),
            Some("E7610"),
        ),
        (DS, dv(OPD, "2024M13", CLINIC_A, FEMALE, "1"), Some("E7611")),
        (DS, dv(OPD, &pe, "cbOuNoSuch1", FEMALE, "1"), Some("E7612")),
        (
            DS,
            dv(OPD, &pe, CLINIC_A, "cbCocNoSuch", "1"),
            Some("E7613"),
        ),
        (
            DS,
            json!({"dataElement": OPD, "period": pe, "orgUnit": CLINIC_A, "categoryOptionCombo": FEMALE,
                    "attributeOptionCombo": "cbAocNoSuch", "value": "1"}),
            Some("E7615"),
        ),
        (DS, dv(OPD, &pe, CLINIC_B_OU, FEMALE, "1"), Some("E7617")),
        (DS, dv(OPD, &pe, CLINIC_A, FEMALE, "twelve"), Some("E7619")),
        (DS, dv(OPD, &week, CLINIC_A, FEMALE, "1"), Some("E7632")),
        (
            DS,
            dv(DE_NUM, &pe, CLINIC_A, DEFAULT_COC, "1"),
            Some("E7633"),
        ),
        (DS, dv(OPD, &pe, CLINIC_A, DEFAULT_COC, "1"), Some("E7634")),
        (
            DS,
            json!({"dataElement": OPD, "period": pe, "orgUnit": CLINIC_A, "categoryOptionCombo": FEMALE,
                    "attributeOptionCombo": MALE, "value": "1"}),
            Some("E7635"),
        ),
        (DS, dv(OPD, &next, CLINIC_A, FEMALE, "1"), Some("E7641")),
        (DS, dv(OPD, &pe, CLINIC_A, MALE, "3"), None),
        (
            DS_WEEKLY,
            dv(DE_OPT, &week, CLINIC_A, DEFAULT_COC, "PURPLE"),
            Some("E7621"),
        ),
        (
            DS_WEEKLY,
            dv(DE_OPT, &week, CLINIC_A, DEFAULT_COC, "RED"),
            None,
        ),
        (
            DS_WEEKLY,
            dv(DE_BOOL, &week, CLINIC_A, DEFAULT_COC, "maybe"),
            Some("E7619"),
        ),
        (
            DS_WEEKLY,
            dv(DE_NUM, &week, CLINIC_A, DEFAULT_COC, "007"),
            Some("E7619"),
        ),
        (
            DS_INPUT,
            dv(DE_NUM, &b.month(-1), CLINIC_A, DEFAULT_COC, "1"),
            Some("E7643"),
        ),
        (DS_INPUT, dv(DE_NUM, &pe, CLINIC_A, DEFAULT_COC, "1"), None),
        (
            DS_EXPIRY,
            dv(DE_NUM, &b.month(-2), CLINIC_A, DEFAULT_COC, "1"),
            Some("E7640"),
        ),
        (DS_EXPIRY, dv(DE_NUM, &pe, CLINIC_A, DEFAULT_COC, "2"), None),
    ];
    for (ds, value, expected) in cases {
        let (code, s) = b
            .import(
                ANDROID,
                &json!({"dataSet": ds, "dataValues": [
                    dv(DE_NUM, "1999X1", CLINIC_A, DEFAULT_COC, "1"), value.clone()
                ]}),
            )
            .await;
        assert_eq!(code, 409, "{s}");
        let conflicts = s["conflicts"].as_array().unwrap();
        // Index 0 is always the bad period; the case under test is index 1.
        let at_1: Vec<&Value> = conflicts
            .iter()
            .filter(|c| c["indexes"].as_array().unwrap().contains(&json!(1)))
            .collect();
        match expected {
            Some(e) => {
                assert_eq!(at_1.len(), 1, "{ds} {value}: {s}");
                assert_eq!(at_1[0]["errorCode"], e, "{ds} {value}: {s}");
                assert!(at_1[0]["object"].is_string() && at_1[0]["value"].is_string());
            }
            None => {
                assert!(at_1.is_empty(), "{ds} {value}: {s}");
                assert_eq!(counts(&s).0 + counts(&s).1, 1, "{ds} {value}: {s}");
            }
        }
    }
    // A data set assigned to clinic B only: the superuser may capture anywhere, yet clinic A
    // does not report it (E7636).
    let (_, s) = b
        .import(ADMIN, &json!({"dataSet": DS_CLINIC_B, "dataValues": [dv(DE_NUM, &pe, CLINIC_A, DEFAULT_COC, "1")]}))
        .await;
    assert_eq!(s["conflicts"][0]["errorCode"], "E7636", "{s}");
    // The same rejected value twice is one conflict with both indexes.
    let (_, s) = b
        .import(
            ANDROID,
            &json!({"dataSet": DS, "dataValues": [
                dv(OPD, &next, CLINIC_A, FEMALE, "1"), dv(OPD, &next, CLINIC_A, FEMALE, "1")
            ]}),
        )
        .await;
    assert_eq!(s["conflicts"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["conflicts"][0]["indexes"], json!([0, 1]));
    assert_eq!(
        s["conflicts"][0]["value"],
        format!(
            "Period: `{next}` is after latest open future period: `{pe}` for data element: `{OPD}` and data set: `{DS}`"
        )
    );
    // force=true lets a superuser past the locks, not a clinic user.
    let late = json!({"dataSet": DS_EXPIRY, "dataValues": [dv(DE_NUM, &b.month(-2), CLINIC_A, DEFAULT_COC, "4")]});
    let (_, s) = b.import_with("?force=true", ANDROID, &late).await;
    assert_eq!(s["conflicts"][0]["errorCode"], "E7640");
    let (code, s) = b.import_with("?force=true", ADMIN, &late).await;
    assert_eq!((code, counts(&s)), (200, (1, 0, 0, 0)), "{s}");
}

#[tokio::test]
async fn set_level_errors_are_409_error_and_write_nothing() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    for (ds, code) in [("cbDsNoSuch1", "E7600"), (DS_READ_ONLY, "E7601")] {
        let (status, s) = b
            .import(ANDROID, &json!({"dataSet": ds, "dataValues": [dv(DE_NUM, &pe, CLINIC_A, DEFAULT_COC, "1")]}))
            .await;
        assert_eq!(status, 409);
        assert_eq!(s["status"], "ERROR");
        assert_eq!(s["conflicts"][0]["errorCode"], code, "{s}");
        assert_eq!(counts(&s), (0, 0, 0, 0));
    }
    let r = b
        .post(
            "/api/dataValueSets",
            ANDROID,
            &json!({"dataSet": DS, "orgUnit": "cbOuNoSuch1", "dataValues": []}),
        )
        .await;
    let m = r.web_message(409);
    assert_eq!(m["status"], "ERROR");
    assert_eq!(
        m["message"],
        "An error occurred, please check import summary."
    );
    assert_eq!(m["response"]["conflicts"][0]["errorCode"], "E7603");
    assert_eq!(b.store.read().unwrap().count(DATA_VALUES).unwrap(), 0);
}

#[tokio::test]
async fn deletions_keep_tombstones_that_other_tablets_download() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    b.import(
        ANDROID,
        &month_payload(&pe, ["40", "35", "7", "5", "2", "1"]),
    )
    .await;

    // The SDK deletes with deleted:true (and still sends the old value).
    let mut del = dv(OPD, &pe, CLINIC_A, FEMALE, "40");
    del["deleted"] = json!(true);
    // DHIS2 also deletes on an empty value, and on zero where zero is not significant.
    let empty = dv(OPD, &pe, CLINIC_A, MALE, "");
    let zero = dv(MAL, &pe, CLINIC_A, FEMALE, "0");
    let (code, s) = b
        .import(
            ANDROID,
            &json!({"dataSet": DS, "dataValues": [del, empty, zero]}),
        )
        .await;
    assert_eq!((code, counts(&s)), (200, (0, 0, 0, 3)), "{s}");

    let got = b.download(ANDROID, DS, &[&pe], CLINIC_A).await;
    assert_eq!(got.len(), 6);
    let cells = by_cell(&got);
    let gone = &cells[&(OPD.to_string(), FEMALE.to_string())];
    assert_eq!(gone["deleted"], true);
    assert_eq!(gone["value"], "40", "a tombstone keeps its last value");
    assert_eq!(cells[&(OPD.to_string(), MALE.to_string())]["deleted"], true);
    assert_eq!(
        cells[&(MAL.to_string(), FEMALE.to_string())]["deleted"],
        true
    );
    // Without includeDeleted they are left out.
    let r = b
        .get(
            &format!("/api/dataValueSets?dataSet={DS}&period={pe}&orgUnit={CLINIC_A}"),
            ANDROID,
        )
        .await;
    assert_eq!(r.json()["dataValues"].as_array().unwrap().len(), 3);

    // Deleting again changes nothing; a new zero for an absent value is skipped.
    let mut again = dv(OPD, &pe, CLINIC_A, FEMALE, "40");
    again["deleted"] = json!(true);
    let (_, s) = b.import(ANDROID, &json!({"dataSet": DS, "dataValues": [again, dv(REF, &b.month(-1), CLINIC_A, FEMALE, "0")]})).await;
    assert_eq!(counts(&s), (0, 0, 2, 0), "{s}");
    // Typing it again brings it back as imported.
    let (_, s) = b
        .import(
            ANDROID,
            &json!({"dataSet": DS, "dataValues": [dv(OPD, &pe, CLINIC_A, FEMALE, "41")]}),
        )
        .await;
    assert_eq!(counts(&s), (1, 0, 0, 0), "{s}");
    // Zero where it is significant is a value.
    let week = b
        .now()
        .current(clinicbox_dhis2::PeriodType::Weekly)
        .unwrap()
        .id()
        .to_string();
    let (_, s) = b.import(ANDROID, &json!({"dataSet": DS_WEEKLY, "dataValues": [dv(DE_SIG, &week, CLINIC_A, DEFAULT_COC, "0")]})).await;
    assert_eq!(counts(&s), (1, 0, 0, 0), "{s}");
}

#[tokio::test]
async fn incremental_downloads_use_last_updated() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    b.import(
        ANDROID,
        &month_payload(&pe, ["40", "35", "7", "5", "2", "1"]),
    )
    .await;
    // Commit times are milliseconds and lastUpdated is inclusive: keep the writes apart from
    // the serverDate the tablet reads between them.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let server_date = b.state.server_date();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.import(
        ANDROID,
        &month_payload(&pe, ["40", "35", "8", "5", "2", "1"]),
    )
    .await;
    let r = b
        .get(
            &format!("/api/dataValueSets?fields={SDK_FIELDS}&lastUpdated={server_date}&dataSet={DS}&period={pe}&orgUnit={CLINIC_A}&children=true&includeDeleted=true&paging=false"),
            ANDROID,
        )
        .await;
    let values = r.json()["dataValues"].as_array().cloned().unwrap();
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(values[0]["value"], "8");
    // lastUpdated alone (no period) works too.
    let r = b
        .get(
            &format!(
                "/api/dataValueSets?dataSet={DS}&lastUpdated={server_date}&orgUnit={CLINIC_A}"
            ),
            ANDROID,
        )
        .await;
    assert_eq!(r.json()["dataValues"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn dry_run_and_strategies() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let month = month_payload(&pe, ["40", "35", "7", "5", "2", "1"]);
    let (_, s) = b.import_with("?dryRun=true", ANDROID, &month).await;
    assert_eq!(counts(&s), (6, 0, 0, 0));
    assert_eq!(
        b.store.read().unwrap().count(DATA_VALUES).unwrap(),
        0,
        "dry run wrote"
    );

    let (_, s) = b
        .import_with("?importStrategy=UPDATE", ANDROID, &month)
        .await;
    assert_eq!(counts(&s), (0, 0, 6, 0), "{s}");
    assert_eq!(s["rejectedIndexes"].as_array().unwrap().len(), 6);
    let (_, s) = b
        .import_with("?importStrategy=CREATE", ANDROID, &month)
        .await;
    assert_eq!(counts(&s), (6, 0, 0, 0), "{s}");
    let changed = month_payload(&pe, ["41", "35", "7", "5", "2", "1"]);
    let (_, s) = b
        .import_with("?importStrategy=CREATE", ANDROID, &changed)
        .await;
    assert_eq!(counts(&s), (0, 0, 6, 0), "{s}");
    let (_, s) = b
        .import_with("?importStrategy=UPDATE", ANDROID, &changed)
        .await;
    assert_eq!(counts(&s), (0, 1, 5, 0), "{s}");
    let (_, s) = b
        .import_with("?importStrategy=DELETE&dryRun=true", ANDROID, &changed)
        .await;
    assert_eq!(counts(&s), (0, 0, 0, 6), "{s}");
    let (_, s) = b
        .import_with("?importStrategy=DELETE", ANDROID, &changed)
        .await;
    assert_eq!(counts(&s), (0, 0, 0, 6), "{s}");
    let r = b
        .post("/api/dataValueSets?importStrategy=MERGE", ANDROID, &month)
        .await;
    r.web_message(400);
    let r = b
        .post("/api/dataValueSets?idScheme=CODE", ANDROID, &month)
        .await;
    r.web_message(400);
}

#[tokio::test]
async fn a_user_of_another_clinic_cannot_write_or_read_this_clinic() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let (code, s) = b
        .import(
            CLINIC_B,
            &month_payload(&pe, ["1", "1", "1", "1", "1", "1"]),
        )
        .await;
    assert_eq!(code, 409);
    assert_eq!(counts(&s), (0, 0, 6, 0));
    assert_eq!(s["conflicts"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["conflicts"][0]["errorCode"], "E7617");
    assert_eq!(s["conflicts"][0]["indexes"], json!([0, 1, 2, 3, 4, 5]));
    assert_eq!(b.store.read().unwrap().count(DATA_VALUES).unwrap(), 0);
    let r = b
        .get(
            &format!("/api/dataValueSets?dataSet={DS}&period={pe}&orgUnit={CLINIC_A}"),
            CLINIC_B,
        )
        .await;
    let m = r.web_message(409);
    assert_eq!(
        m["message"],
        format!("User is not allowed to view org unit: `{CLINIC_A}`")
    );
    // Their own clinic works.
    let own = json!({"dataSet": DS, "dataValues": [dv(OPD, &pe, CLINIC_B_OU, FEMALE, "3")]});
    let (code, s) = b.import(CLINIC_B, &own).await;
    assert_eq!((code, counts(&s)), (200, (1, 0, 0, 0)), "{s}");
}

#[tokio::test]
async fn reads_need_a_selection_and_auth_and_bad_bodies_get_web_messages() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    for (q, msg) in [
        (
            format!("period={pe}&orgUnit={CLINIC_A}"),
            "At least one valid data set",
        ),
        (
            format!("dataSet={DS}&orgUnit={CLINIC_A}"),
            "At least one valid period",
        ),
        (
            format!("dataSet={DS}&period={pe}"),
            "At least one valid organisation unit",
        ),
        (
            format!("dataSet={DS_READ_ONLY}x&period={pe}&orgUnit={CLINIC_A}"),
            "Data set does not exist",
        ),
        (
            format!("dataSet={DS}&period=2024X1&orgUnit={CLINIC_A}"),
            "Period is invalid",
        ),
    ] {
        let r = b.get(&format!("/api/dataValueSets?{q}"), ANDROID).await;
        let m = r.web_message(409);
        assert!(m["message"].as_str().unwrap().starts_with(msg), "{q}: {m}");
    }
    let r = b
        .call(
            Method::GET,
            &format!("/api/dataValueSets?dataSet={DS}"),
            None,
            None,
        )
        .await;
    r.web_message(401);
    let r = b
        .call(
            Method::POST,
            "/api/dataValueSets",
            Some(ANDROID),
            Some(&json!({"dataValues": 5})),
        )
        .await;
    r.web_message(400);
    let r = b
        .call(Method::PUT, "/api/dataValueSets", Some(ANDROID), None)
        .await;
    r.web_message(405);
}

#[tokio::test]
async fn approved_periods_lock_entry_and_are_served_from_stored_states() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let approvals = |q: String| {
        let b = &b;
        async move {
            b.get(
                &format!("/api/dataApprovals/multiple?fields=wf,ou,pe,aoc,state&{q}"),
                ANDROID,
            )
            .await
        }
    };
    let q = format!("wf={WORKFLOW}&pe={pe}&ou={CLINIC_A}&aoc={DEFAULT_COC}");
    let r = approvals(q.clone()).await;
    assert_eq!(r.json(), json!([]), "no stored state means none served");

    let value = json!({"dataSet": DS_APPROVAL, "dataValues": [dv(DE_NUM, &pe, CLINIC_A, DEFAULT_COC, "5")]});
    let (code, _) = b.import(ANDROID, &value).await;
    assert_eq!(code, 200);

    let state = DataApproval {
        wf: WORKFLOW.into(),
        pe: pe.clone(),
        ou: CLINIC_A.into(),
        aoc: DEFAULT_COC.into(),
        state: Some(DataApprovalState::ApprovedHere),
    };
    assert_eq!(
        clinicbox_aggregate::record_approvals(&b.store, vec![state.clone()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        clinicbox_aggregate::record_approvals(&b.store, vec![state])
            .await
            .unwrap(),
        0
    );
    let r = approvals(q.clone()).await;
    assert_eq!(
        r.json(),
        json!([{"wf": WORKFLOW, "ou": CLINIC_A, "pe": pe, "aoc": DEFAULT_COC, "state": "APPROVED_HERE"}])
    );
    // Clinic B's nurse does not see clinic A's approvals.
    let r = b
        .get(
            &format!("/api/dataApprovals/multiple?wf={WORKFLOW}&pe={pe}"),
            CLINIC_B,
        )
        .await;
    assert_eq!(r.json(), json!([]));

    let change = json!({"dataSet": DS_APPROVAL, "dataValues": [dv(DE_NUM, &pe, CLINIC_A, DEFAULT_COC, "6")]});
    let (code, s) = b.import(ANDROID, &change).await;
    assert_eq!(code, 409);
    assert_eq!(s["conflicts"][0]["errorCode"], "E7642", "{s}");
    // Unapproved again (national sent no state): entry opens.
    let cleared = DataApproval {
        wf: WORKFLOW.into(),
        pe: pe.clone(),
        ou: CLINIC_A.into(),
        aoc: DEFAULT_COC.into(),
        state: None,
    };
    clinicbox_aggregate::record_approvals(&b.store, vec![cleared])
        .await
        .unwrap();
    assert_eq!(approvals(q).await.json(), json!([]));
    let (code, s) = b.import(ANDROID, &change).await;
    assert_eq!((code, counts(&s)), (200, (0, 1, 0, 0)), "{s}");
}

#[tokio::test]
async fn file_values_need_their_file_resource_and_are_downloadable() {
    let b = TestBox::new().await;
    let week = b
        .now()
        .current(clinicbox_dhis2::PeriodType::Weekly)
        .unwrap()
        .id()
        .to_string();
    let fr = "cbTFileRes1";
    b.store
        .write(move |ctx| -> Result<(), clinicbox_store::StoreError> {
            ctx.put_json(
                Collection::FILE_RESOURCES,
                fr,
                &json!({"id": fr, "name": "register.png", "contentType": "image/png", "contentLength": 4,
                        "storageStatus": "STORED", "domain": "DATA_VALUE"}),
            )?;
            ctx.put(Collection::FILE_BLOBS, fr, b"\x89PNG".to_vec())
        })
        .await
        .unwrap();
    let (_, s) = b
        .import(
            ANDROID,
            &json!({"dataSet": DS_WEEKLY, "dataValues": [
                dv(DE_FILE, &week, CLINIC_A, DEFAULT_COC, fr),
                dv(DE_FILE, &week, CLINIC_B_OU, DEFAULT_COC, "cbTFileNone"),
            ]}),
        )
        .await;
    assert_eq!(counts(&s), (1, 0, 1, 0), "{s}");
    assert_eq!(s["conflicts"][0]["indexes"], json!([1]));
    assert_eq!(
        s["conflicts"][0]["errorCode"], "E7617",
        "clinic B is out of scope first"
    );
    let (_, s) = b
        .import(ADMIN, &json!({"dataSet": DS_WEEKLY, "dataValues": [dv(DE_FILE, &week, CLINIC_B_OU, DEFAULT_COC, "cbTFileNone")]}))
        .await;
    assert_eq!(s["conflicts"][0]["errorCode"], "E7619", "{s}");

    // The SDK's request puts the attribute option combo in `co`.
    let r = b
        .get(
            &format!("/api/dataValues/files?de={DE_FILE}&pe={week}&ou={CLINIC_A}&co={DEFAULT_COC}"),
            ANDROID,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type, "image/png");
    assert_eq!(r.bytes, b"\x89PNG");
    let r = b
        .get(
            &format!(
                "/api/dataValues/files?de={DE_FILE}&pe={week}&ou={CLINIC_B_OU}&co={DEFAULT_COC}"
            ),
            ANDROID,
        )
        .await;
    r.web_message(409);
    let r = b
        .get(
            &format!("/api/dataValues/files?de={DE_NUM}&pe={week}&ou={CLINIC_A}"),
            ANDROID,
        )
        .await;
    r.web_message(404);
}

#[tokio::test]
async fn every_change_is_audited_and_in_the_change_log() {
    let b = TestBox::new().await;
    let pe = b.month(0);
    let before = b
        .store
        .read()
        .unwrap()
        .changes_since(0, 1_000_000)
        .unwrap()
        .last()
        .map_or(0, |c| c.seq);
    let one = |v: &str| json!({"dataSet": DS, "dataValues": [dv(OPD, &pe, CLINIC_A, FEMALE, v)]});
    b.import(ANDROID, &one("10")).await;
    b.import(ANDROID, &one("10")).await;
    b.import(ADMIN, &one("12")).await;
    let mut del = dv(OPD, &pe, CLINIC_A, FEMALE, "12");
    del["deleted"] = json!(true);
    b.import(ANDROID, &json!({"dataSet": DS, "dataValues": [del]}))
        .await;

    let key = DataValueKey {
        data_element: OPD.into(),
        period: pe.clone(),
        org_unit: CLINIC_A.into(),
        category_option_combo: FEMALE.into(),
        attribute_option_combo: DEFAULT_COC.into(),
    };
    let read = b.store.read().unwrap();
    let trail: Vec<AuditEntry> = read
        .scan_prefix(AUDIT, &format!("{}/", key.to_key()))
        .unwrap()
        .map(|r| r.unwrap().1.json().unwrap())
        .collect();
    let summary: Vec<(AuditType, Option<&str>, Option<&str>, &str)> = trail
        .iter()
        .map(|a| {
            (
                a.audit_type,
                a.value.as_deref(),
                a.previous_value.as_deref(),
                a.modified_by.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (AuditType::Create, Some("10"), None, "android"),
            (AuditType::Update, Some("12"), Some("10"), "admin"),
            (AuditType::Delete, None, Some("12"), "android"),
        ]
    );
    assert!(trail.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // The uplink's view: value and audit writes are in the change log, the ignored re-post is not.
    let changes = read.changes_since(before, 1000).unwrap();
    let in_log = |c: &str| changes.iter().filter(|ch| ch.collection == c).count();
    assert_eq!(in_log(DATA_VALUES.name()), 3);
    assert_eq!(in_log(AUDIT.name()), 3);
    assert!(
        changes
            .iter()
            .any(|c| c.collection == DATA_VALUES.name() && c.deleted)
    );
}

#[tokio::test]
async fn concurrent_tablets_lose_nothing() {
    let b = std::sync::Arc::new(TestBox::new().await);
    let pe = b.month(0);
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let b = b.clone();
        let pe = pe.clone();
        tasks.push(tokio::spawn(async move {
            // Each tablet writes one cell, repeatedly, with its own values.
            let cells = [(OPD, FEMALE), (OPD, MALE), (MAL, FEMALE), (MAL, MALE), (REF, FEMALE), (REF, MALE), (OPD, FEMALE), (OPD, MALE)];
            let (de, coc) = cells[t as usize];
            let ou = if t < 6 { CLINIC_A } else { CLINIC_B_OU };
            let who = if t < 6 { ANDROID } else { CLINIC_B };
            for i in 0..5 {
                let (code, s) = b
                    .import(who, &json!({"dataSet": DS, "dataValues": [dv(de, &pe, ou, coc, &(t * 100 + i).to_string())]}))
                    .await;
                assert_eq!(code, 200, "{s}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let a = by_cell(&b.download(ANDROID, DS, &[&pe], CLINIC_A).await);
    assert_eq!(a.len(), 6);
    assert_eq!(a[&(REF.to_string(), MALE.to_string())]["value"], "504");
    let bb = by_cell(&b.download(CLINIC_B, DS, &[&pe], CLINIC_B_OU).await);
    assert_eq!(bb[&(OPD.to_string(), MALE.to_string())]["value"], "704");
}

/// A file uploaded by clinic A is not clinic B's to put in its report.
#[tokio::test]
async fn a_file_value_cannot_take_another_clinics_file() {
    let b = TestBox::new().await;
    let week = b
        .now()
        .current(clinicbox_dhis2::PeriodType::Weekly)
        .unwrap()
        .id()
        .to_string();
    let boundary = "AgGrEgAtE";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.png\"\r\nContent-Type: image/png\r\n\r\n\u{89}PNG register\r\n--{boundary}--\r\n"
    );
    let resp = b
        .app
        .clone()
        .oneshot(
            axum::http::Request::builder()
                .method("POST")
                .uri("/api/fileResources")
                .header("host", "10.0.0.1:8080")
                .header("authorization", basic(ANDROID))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let fr = v["response"]["fileResource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, s) = b
        .import(
            CLINIC_B,
            &json!({"dataSet": DS_WEEKLY, "dataValues": [dv(DE_FILE, &week, CLINIC_B_OU, DEFAULT_COC, &fr)]}),
        )
        .await;
    assert_eq!(s["conflicts"][0]["errorCode"], "E7619", "{s}");
    assert!(
        s["conflicts"][0]["value"]
            .as_str()
            .unwrap()
            .contains("file_resource_not_found"),
        "{s}"
    );
    // Its own clinic may.
    let (_, s) = b
        .import(
            ANDROID,
            &json!({"dataSet": DS_WEEKLY, "dataValues": [dv(DE_FILE, &week, CLINIC_A, DEFAULT_COC, &fr)]}),
        )
        .await;
    assert_eq!(counts(&s), (1, 0, 0, 0), "{s}");
}
