//! Tablets uploading at once share store commits, and each upload is judged as if it had been
//! alone after the ones before it: a unique value two of them claim goes to one, two changes
//! to one patient both stay (the later one merged into the earlier one's version, not into the
//! stored one).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{Value, json};

/// A first name or surname change to the registered patient.
fn rename(attribute: &str, value: &str) -> Value {
    json!({"trackedEntities": [{"trackedEntity": "teShared001", "trackedEntityType": PERSON,
        "orgUnit": CLINIC_A, "attributes": [{"attribute": attribute, "value": value}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_waiting_together_share_a_commit_and_each_sees_the_ones_before_it() {
    // A slow disk, so that uploads arriving together wait for the same commit.
    let b = std::sync::Arc::new(TestBox::slow_disk(std::time::Duration::from_millis(40)).await);
    let first = registration(
        "teShared001",
        "enShared001",
        "evShared001",
        "OPD-900001",
        "Amina",
    );
    assert!(errors(&b.sdk_post(ANDROID, "CREATE_AND_UPDATE", first).await).is_empty());

    let mut uploads: Vec<(String, Value)> = Vec::new();
    for n in 0..8 {
        // Two of the new patients claim the same unique patient ID.
        let id = if n < 2 {
            "OPD-900100".to_string()
        } else {
            format!("OPD-9002{n:02}")
        };
        let p = registration(&uid('t', n), &uid('e', n), &uid('v', n), &id, "Baraka");
        uploads.push((format!("new {n}"), p));
    }
    uploads.push(("first name".into(), rename("cbAttrFirst", "Wanjiru")));
    uploads.push(("surname".into(), rename("cbAttrLastN", "Achieng")));
    let before = b.store.stats().unwrap().commits;
    let tasks: Vec<_> = uploads
        .into_iter()
        .map(|(what, payload)| {
            let b = b.clone();
            tokio::spawn(async move {
                let r = b.sdk_post(ANDROID, "CREATE_AND_UPDATE", payload).await;
                (what, r)
            })
        })
        .collect();
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await.unwrap());
    }
    let commits = b.store.stats().unwrap().commits - before;
    assert!(commits < 10, "10 uploads took {commits} commits");

    let refused: Vec<&String> = reports
        .iter()
        .filter(|(_, r)| errors(r).iter().any(|(_, code)| code == "E1064"))
        .map(|(what, _)| what)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one of the two claims of OPD-900100 wins: {refused:?}"
    );
    for (what, r) in &reports {
        if !refused.contains(&what) {
            assert!(errors(r).is_empty(), "{what}: {r}");
        }
    }

    let te = b
        .get_ok(
            "/api/tracker/trackedEntities/teShared001?fields=attributes[attribute,value]",
            ANDROID,
        )
        .await;
    let values: HashSet<(String, String)> = te["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attribute"].as_str().unwrap().into(),
                a["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        values.contains(&("cbAttrFirst".into(), "Wanjiru".into())),
        "{te}"
    );
    assert!(
        values.contains(&("cbAttrLastN".into(), "Achieng".into())),
        "{te}"
    );
    assert!(
        values.contains(&("cbAttrPatId".into(), "OPD-900001".into())),
        "{te}"
    );
}

#[tokio::test]
async fn a_commit_that_fails_leaves_the_catalog_as_the_store_is() {
    let b = TestBox::demo().await;
    let first = registration(
        "teShared001",
        "enShared001",
        "evShared001",
        "OPD-900001",
        "Amina",
    );
    assert!(errors(&b.sdk_post(ANDROID, "CREATE_AND_UPDATE", first).await).is_empty());
    // The store stops taking writes (as on a quiesce): the next upload is planned, then its
    // commit is refused.
    b.store.close().unwrap();
    let second = registration(
        "teShared002",
        "enShared002",
        "evShared002",
        "OPD-900002",
        "Baraka",
    );
    let r = b
        .call(
            axum::http::Method::POST,
            "/api/tracker?async=false&atomicMode=OBJECT",
            Some(ANDROID),
            Some(second),
        )
        .await;
    assert!(
        r.status.is_server_error() || r.status.as_u16() == 503,
        "{}",
        r.status
    );
    let cat = b.tracker.catalog().read().await;
    let te = |u: &str| clinicbox_dhis2::Uid::try_from(u).unwrap();
    assert!(cat.tes.contains_key(&te("teShared001")));
    assert!(
        !cat.tes.contains_key(&te("teShared002")),
        "the refused commit left no trace"
    );
    assert!(!cat.enrollments.contains_key(&te("enShared002")));
    assert!(!cat.events.contains_key(&te("evShared002")));
    let pat = te("cbAttrPatId");
    let read = b.store.read().unwrap();
    assert!(cat.holders(&read, pat, "OPD-900002").unwrap().is_empty());
    assert_eq!(cat.holders(&read, pat, "OPD-900001").unwrap().len(), 1);
}
