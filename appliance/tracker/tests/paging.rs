//! A tablet's download, newest first, is read from the catalog's creation index and continued
//! through a cursor: its pages must be exactly the pages the general path (sort everything,
//! then cut) returns, on a box that changes between two pages too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const SIZE: usize = 20;

/// `n` patients registered in one import (so they share their creation time).
fn patients(first: usize, n: usize) -> Value {
    let mut out =
        json!({"trackedEntities": [], "enrollments": [], "events": [], "relationships": []});
    for i in first..first + n {
        let one = registration(
            &uid('t', i),
            &uid('e', i),
            &uid('v', i),
            &format!("PG-{i:05}"),
            "Amina",
        );
        for key in ["trackedEntities", "enrollments", "events"] {
            let items = one[key].as_array().unwrap().clone();
            out[key].as_array_mut().unwrap().extend(items);
        }
    }
    out
}

/// One page of the download; with `total`, the general path (a total needs every match).
async fn page(b: &TestBox, n: usize, total: bool) -> (Vec<String>, bool) {
    let v = b
        .get_ok(
            &format!("/api/tracker/trackedEntities?program={OPD}&orgUnits={CLINIC_A}&orgUnitMode=DESCENDANTS&order=createdAt:desc&fields=trackedEntity&paging=true&pageSize={SIZE}&page={n}&totalPages={total}"),
            ANDROID,
        )
        .await;
    let uids = v["trackedEntities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trackedEntity"].as_str().unwrap().to_string())
        .collect();
    (uids, v["pager"]["nextPage"].is_string())
}

async fn download(b: &TestBox, total: bool) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    for n in 1.. {
        let (uids, next) = page(b, n, total).await;
        pages.push(uids);
        if !next {
            break;
        }
    }
    pages
}

#[tokio::test]
async fn a_download_in_pages_is_the_sorted_list_cut_in_pages() {
    let b = TestBox::demo().await;
    for (first, n) in [(0, 45), (45, 1), (46, 30)] {
        b.sdk_post(ANDROID, "CREATE_AND_UPDATE", patients(first, n))
            .await;
    }
    let indexed = download(&b, false).await;
    let sorted = download(&b, true).await;
    assert_eq!(indexed, sorted);
    assert_eq!(indexed.len(), 4, "76 patients in pages of {SIZE}");
    assert_eq!(indexed.concat().len(), 76);
    assert_eq!(indexed[0][0], uid('t', 46), "the newest import first");
    // Within one import (one creation time), by UID.
    assert!(indexed[0].windows(2).all(|w| w[0] < w[1]));
    // A page past the end is empty and has no next page.
    assert_eq!(page(&b, 9, false).await, (Vec::new(), false));
}

#[tokio::test]
async fn a_patient_registered_between_two_pages_shifts_the_next_page_as_dhis2_does() {
    let b = TestBox::demo().await;
    b.sdk_post(ANDROID, "CREATE_AND_UPDATE", patients(0, 50))
        .await;
    let (first, _) = page(&b, 1, false).await;
    // The cursor left by page 1 is for the box as it was.
    b.sdk_post(ANDROID, "CREATE_AND_UPDATE", patients(100, 1))
        .await;
    let (second, _) = page(&b, 2, false).await;
    let (second_sorted, _) = page(&b, 2, true).await;
    assert_eq!(second, second_sorted);
    assert_eq!(second[0], first[SIZE - 1], "everything moved down by one");
    // Pages asked out of order still come out right.
    assert_eq!(page(&b, 3, false).await, page(&b, 3, true).await);
    assert_eq!(page(&b, 1, false).await, page(&b, 1, true).await);
}
