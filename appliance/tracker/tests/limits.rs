//! Bounded cost per request: a payload with more objects than the box imports at once is
//! refused whole before it is parsed, with a WebMessage naming the limit, and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use clinicbox_tracker::TrackerConfig;
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_payload_over_the_object_limit_is_refused_whole() {
    let b = TestBox::with(TrackerConfig {
        max_objects_per_import: 100,
        ..TrackerConfig::default()
    })
    .await;
    let before = b.store.stats().unwrap().last_seq;
    // 101 empty objects, the shape that once cost hundreds of MB.
    let events: Vec<_> = (0..101).map(|_| json!({})).collect();
    let r = b
        .call(
            Method::POST,
            "/api/tracker?async=false",
            Some(ANDROID),
            Some(json!({ "events": events })),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    let msg = r.json();
    assert_eq!(msg["httpStatusCode"], 413);
    assert!(
        msg["message"].as_str().unwrap().contains("at most 100"),
        "{msg}"
    );
    // Lists the importer does not name count too: program owners, geometry coordinates.
    let owners: Vec<_> = (0..101).map(|_| json!({})).collect();
    let r = b
        .call(
            Method::POST,
            "/api/tracker?async=false",
            Some(ANDROID),
            Some(json!({"trackedEntities": [{"programOwners": owners}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(
        b.store.stats().unwrap().last_seq,
        before,
        "nothing was written"
    );

    // At the limit, the import runs (and reports on every object).
    let events: Vec<_> = (0..100).map(|_| json!({})).collect();
    let (status, report) = b
        .post_sync(
            ANDROID,
            "importStrategy=CREATE_AND_UPDATE",
            json!({ "events": events }),
        )
        .await;
    assert_eq!(status, 409, "{report}");
    assert_eq!(errors(&report).len(), 100);
}
