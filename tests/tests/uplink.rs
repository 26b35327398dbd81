//! The uplink end to end: a demo box, tablets posting through its API, the real
//! `clinicbox uplink` process and a stand-in national DHIS2 process
//! (`src/bin/national_standin/`) that answers as DHIS2 2.42 does, 409 partial commits,
//! warnings and faults included. Every check reads national's ledger, never the uplink's word.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clinicbox_tests::national::{National, pushed, uplink_once, uplink_once_ok};
use clinicbox_tests::wan::{Wan, start_daemon};
use clinicbox_tests::{BoxBuilder, RunningBox, http_request};
use serde_json::{Value, json};

use clinicbox_tests::clinic::{
    CLINIC_A, DEFAULT_COC, DS, TRIAGE, basic, fnv1a, import_to, month_values, patient, patients,
    post_to, uid, upload_file_to,
};

/// Android's post to box `b`.
fn post(b: &RunningBox, path: &str, body: &Value) -> Value {
    post_to(b.url(), path, body)
}

fn import(b: &RunningBox, payload: &Value) {
    import_to(b.url(), payload)
}

fn upload_file(b: &RunningBox, bytes: &[u8]) -> String {
    upload_file_to(b.url(), bytes)
}

fn this_month(b: &RunningBox) -> String {
    clinicbox_tests::clinic::this_month(b.url())
}

fn add_photo_element(b: &RunningBox) {
    clinicbox_tests::clinic::add_photo_element(b.url())
}

fn add_big_monthly_form(b: &RunningBox, des: usize) -> Vec<String> {
    clinicbox_tests::clinic::add_big_monthly_form(b.url(), des)
}

fn status_json(b: &RunningBox) -> Value {
    let auth = basic("admin", "district");
    http_request(
        b.url().trim_start_matches("http://"),
        "GET",
        "/status.json",
        &[("Authorization", &auth)],
        b"",
    )
    .json()
}

fn data_dir(b: &RunningBox) -> std::path::PathBuf {
    b.dir().join("data")
}

fn count(ledger: &Value, list: &str) -> usize {
    ledger[list].as_object().map_or(0, |m| m.len())
}

#[test]
fn a_demo_box_s_records_reach_national_once_and_a_second_round_sends_nothing() {
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    for n in 0..3 {
        let mut p = patient(n);
        if n == 2 {
            p["events"][0]["status"] = json!("COMPLETED");
            p["events"][0]["dataValues"]
                .as_array_mut()
                .unwrap()
                .push(json!({"dataElement": "cbDeTemp001", "value": "37.2"}));
        }
        import(&b, &p);
    }
    // A relationship between two patients, and one patient deleted again.
    import(
        &b,
        &json!({"relationships": [{"relationship": "relUplink01", "relationshipType": "cbRelMthChd",
        "from": {"trackedEntity": {"trackedEntity": "teUplink000"}},
        "to": {"trackedEntity": {"trackedEntity": "teUplink001"}}}]}),
    );
    let pe = this_month(&b);
    post(&b, "/api/dataValueSets", &month_values(&pe, ["12", "9"]));
    post(
        &b,
        "/api/completeDataSetRegistrations",
        &json!({"completeDataSetRegistrations": [{"period": pe, "dataSet": DS,
            "organisationUnit": CLINIC_A, "attributeOptionCombo": DEFAULT_COC, "completed": true}]}),
    );
    let before = status_json(&b);
    assert!(
        before["uplink"]["pending"]["events"].as_u64() == Some(3),
        "pending before the round: {}",
        before["uplink"]
    );

    let out = uplink_once_ok(&data_dir(&b), &national);
    assert!(out.contains("connected: national DHIS2 2.42.3"), "{out}");
    assert_eq!(pushed(&out, "trackedEntities"), 3, "{out}");
    assert_eq!(pushed(&out, "events"), 3, "{out}");
    assert_eq!(pushed(&out, "relationships"), 1, "{out}");
    assert_eq!(pushed(&out, "dataValues"), 2, "{out}");
    assert_eq!(pushed(&out, "completeDataSetRegistrations"), 1, "{out}");

    let ledger = national.ledger();
    assert_eq!(count(&ledger, "tracked_entities"), 3);
    assert_eq!(count(&ledger, "enrollments"), 3);
    assert_eq!(count(&ledger, "events"), 3);
    assert_eq!(count(&ledger, "relationships"), 1);
    assert_eq!(count(&ledger, "notes"), 6, "{}", ledger["notes"]);
    assert_eq!(count(&ledger, "data_values"), 2);
    assert_eq!(count(&ledger, "registrations"), 1);
    let ev = &ledger["events"]["evUplink001"]["body"];
    assert_eq!(ev["programStage"], TRIAGE);
    assert!(
        ev["dataValues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["value"] == "YELLOW"),
        "{ev}"
    );
    // The completion time the box stamped reaches national in national's zone (the demo box
    // keeps UTC, the stand-in Africa/Nairobi, three hours ahead).
    let auth = basic("android", "Android123");
    let on_box = http_request(
        b.url().trim_start_matches("http://"),
        "GET",
        &format!("/api/tracker/events/{}?fields=completedAt", uid("ev", 2)),
        &[("Authorization", &auth)],
        b"",
    )
    .json()["completedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let at_national = ledger["events"][uid("ev", 2)]["body"]["completedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let hour = |t: &str| t[11..13].parse::<u32>().unwrap();
    assert_eq!(
        (hour(&on_box) + 3) % 24,
        hour(&at_national),
        "{on_box} → {at_national}"
    );
    assert_eq!(on_box[14..], at_national[14..]);
    // What national sets itself is not sent; the tablet's own client time is.
    let te = &ledger["tracked_entities"]["teUplink000"]["body"];
    assert!(
        te.get("createdBy").is_none() && te.get("deleted").is_none(),
        "{te}"
    );
    assert_eq!(te["createdAtClient"], "2026-12-01T09:00:00.000");

    // Nothing changed: nothing is sent again.
    let again = uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(pushed(&again, "events"), 0, "{again}");
    let after = national.ledger();
    assert_eq!(after["events"]["evUplink001"]["writes"], 1);
    assert_eq!(after["data_values"], ledger["data_values"]);

    let s = status_json(&b);
    assert_eq!(s["uplink"]["pending"], json!({}), "{}", s["uplink"]);
    assert_eq!(s["uplink"]["state"], "idle");
    // The page says it in words, for staff.
    let page = http_request(b.url().trim_start_matches("http://"), "GET", "/", &[], b"");
    let page = String::from_utf8_lossy(&page.body);
    assert!(
        page.contains("data-figure=\"uplink\">Last sent to national"),
        "{page}"
    );
    assert!(s["uplink"]["lastSuccessMs"].as_u64().is_some());
    assert_eq!(s["uplink"]["nationalVersion"], "2.42.3");

    // A change after the round is sent again, a deletion as a deletion.
    let mut event = patient(1)["events"][0].clone();
    event["dataValues"] = json!([{"dataElement": "cbDeTriage1", "value": "RED"}]);
    event.as_object_mut().unwrap().remove("notes");
    import(&b, &json!({ "events": [event] }));
    let r = post(
        &b,
        "/api/tracker?async=false&importStrategy=DELETE",
        &json!({"relationships": [{"relationship": "relUplink01"}]}),
    );
    assert_eq!(r["status"], "OK", "{r}");
    let third = uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(pushed(&third, "events"), 1, "{third}");
    let l = national.ledger();
    assert_eq!(l["events"]["evUplink001"]["writes"], 2);
    assert!(
        l["events"]["evUplink001"]["body"]["dataValues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["value"] == "RED")
    );
    assert_eq!(l["relationships"]["relUplink01"]["deleted"], true);
    assert_eq!(count(&l, "notes"), 6, "re-sent notes are not added twice");
    b.stop();
}

#[test]
fn an_answer_lost_after_national_applied_is_sent_again_and_nothing_counts_twice() {
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    import(&b, &patient(7));
    let pe = this_month(&b);
    post(&b, "/api/dataValueSets", &month_values(&pe, ["4", "5"]));

    // national applies the tracker import, then the connection dies before the answer: the
    // round sends the same batch again (smaller), as an update on national, notes once.
    national.faults(json!({"drop_answer_after_apply": 1}));
    let out = uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(pushed(&out, "events"), 1, "{out}");
    let l = national.ledger();
    assert_eq!(l["dropped_answers"], 1);
    assert_eq!(
        l["events"]["evUplink007"]["writes"], 2,
        "applied, cut, sent again"
    );
    assert_eq!(count(&l, "notes"), 2, "{}", l["notes"]);
    assert_eq!(count(&l, "data_values"), 2);
    for v in l["data_values"].as_object().unwrap().values() {
        assert_eq!(v["writes"], 1, "{v}");
    }

    // Cut on every try: the round gives up with one line, and marks nothing sent.
    import(&b, &patient(8));
    national.faults(json!({"drop_answer_after_apply": 100}));
    let (status, out, err) = uplink_once(&data_dir(&b), &national);
    assert!(!status.success(), "{out}");
    // National here holds no metadata for the box, so the pull warns first; the failure
    // itself is one line.
    let failure = err.lines().filter(|l| !l.contains(" WARN ")).count();
    assert_eq!(failure, 1, "one line: {err}");
    assert!(err.contains("national is unreachable"), "{err}");
    assert!(status_json(&b)["uplink"]["pending"]["events"].as_u64() == Some(1));
    national.faults(json!({"drop_answer_after_apply": 0}));
    uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(count(&national.ledger(), "notes"), 4);

    // An aggregate answer lost: the values are sent again and national ignores the copy.
    post(&b, "/api/dataValueSets", &month_values(&pe, ["6", "5"]));
    national.faults(json!({"drop_answer_after_apply": 1}));
    uplink_once_ok(&data_dir(&b), &national);
    let l = national.ledger();
    let writes: Vec<u64> = l["data_values"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["writes"].as_u64().unwrap())
        .collect();
    assert_eq!(
        writes.iter().sum::<u64>(),
        3,
        "one value changed once: {writes:?}"
    );
    assert_eq!(status_json(&b)["uplink"]["pending"], json!({}));
    b.stop();
}

#[test]
fn a_refused_record_is_parked_with_national_s_reason_and_the_rest_goes_through() {
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    let pe = this_month(&b);
    import(&b, &patient(1));
    post(&b, "/api/dataValueSets", &month_values(&pe, ["1", "2"]));
    national.faults(json!({"locked_periods": [pe]}));

    let out = uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(pushed(&out, "events"), 1, "{out}");
    assert!(out.contains("parked: 2"), "{out}");
    assert!(out.contains("E7640"), "{out}");
    let s = status_json(&b)["uplink"].clone();
    assert_eq!(s["parkedCount"], 2, "{s}");
    assert_eq!(s["parked"][0]["code"], "E7640");
    assert_eq!(s["parked"][0]["type"], "dataValues");
    assert_eq!(s["pending"], json!({}), "parked is not pending: {s}");
    // Without an admin login the reasons are not shown (they may quote a value).
    let anon = http_request(
        b.url().trim_start_matches("http://"),
        "GET",
        "/status.json",
        &[],
        b"",
    )
    .json();
    assert_eq!(anon["uplink"]["parkedCount"], 2);
    assert_eq!(anon["uplink"]["parked"], json!([]));
    // Staff read "need attention" on the page; an admin gets the list with national's reason.
    let host = b.url().trim_start_matches("http://");
    let page = http_request(host, "GET", "/", &[], b"");
    assert!(String::from_utf8_lossy(&page.body).contains("2 record(s) need attention"));
    let auth = basic("admin", "district");
    let admin = http_request(host, "GET", "/admin", &[("Authorization", &auth)], b"");
    let admin = String::from_utf8_lossy(&admin.body);
    assert!(
        admin.contains("Records national refused") && admin.contains("E7640"),
        "{admin}"
    );

    // A later round does not send them again by itself …
    let quiet = uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(pushed(&quiet, "dataValues"), 0, "{quiet}");
    // … a change on the box does; once national takes it, it is no longer parked.
    national.faults(json!({"locked_periods": []}));
    post(&b, "/api/dataValueSets", &month_values(&pe, ["3", "2"]));
    let out = uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(pushed(&out, "dataValues"), 1, "{out}");
    let s = status_json(&b)["uplink"].clone();
    assert_eq!(s["parkedCount"], 1, "the unchanged value stays parked: {s}");
    b.stop();
}

#[test]
fn a_revoked_token_or_a_502_storm_stops_the_round_and_marks_nothing_sent() {
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    import(&b, &patient(3));

    national.faults(json!({"unauthorized": true}));
    let (status, _, err) = uplink_once(&data_dir(&b), &national);
    assert!(!status.success());
    assert!(err.contains("401") && err.contains("token"), "{err}");
    national.faults(json!({"unauthorized": false, "storm_status": 502, "storm_count": 3}));
    for _ in 0..3 {
        let (status, _, err) = uplink_once(&data_dir(&b), &national);
        assert!(!status.success());
        assert!(err.contains("502"), "{err}");
    }
    let s = status_json(&b)["uplink"].clone();
    assert_eq!(s["pending"]["events"], 1, "{s}");
    assert!(
        s["lastError"].as_str().is_some_and(|e| e.contains("502")),
        "{s}"
    );
    assert_eq!(count(&national.ledger(), "events"), 0);

    // The storm passes; the next round sends everything.
    uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(national.ledger()["events"]["evUplink003"]["writes"], 1);
    b.stop();
}

#[test]
fn a_national_server_on_an_unsupported_version_is_refused_with_a_reason() {
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    import(&b, &patient(4));
    national.faults(json!({"version": "2.38.4"}));
    let (status, _, err) = uplink_once(&data_dir(&b), &national);
    assert!(!status.success());
    assert!(err.contains("2.38.4") && err.contains("2.39–2.43"), "{err}");
    assert_eq!(count(&national.ledger(), "tracked_entities"), 0);
    b.stop();
}

/// A namespace with its own loopback (where the stand-in national listens) and a `wan0`
/// that has no default route until [`Wan::up`]: an LTE dongle without, then with, signal.
#[test]
fn the_daemon_sends_when_the_wan_link_comes_up_and_stops_cleanly_on_sigterm() {
    let wan = Wan::new("l");
    let b = BoxBuilder::demo().start();
    let national = National::start(Some(&wan.ns));
    import(&b, &patient(11));
    let mut uplink = start_daemon(&b, &wan, &national, "");

    // No default route: nothing is sent, and the status page says why.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(count(&national.ledger(), "events"), 0);
    let s = status_json(&b)["uplink"].clone();
    assert_eq!(s["state"], "waiting for the WAN link", "{s}");
    assert_eq!(s["pending"]["events"], 1, "{s}");

    // The link comes up: a round starts at once, not after interval_secs.
    wan.up();
    let l = clinicbox_tests::national::wait_for_ledger(
        &national,
        std::time::Duration::from_secs(30),
        |l| count(l, "events") == 1,
    );
    assert_eq!(l["events"]["evUplink011"]["writes"], 1, "{l}");

    // Down and up again (the dongle lost and found its signal): the next patient goes at once.
    wan.down();
    import(&b, &patient(12));
    std::thread::sleep(std::time::Duration::from_secs(3));
    wan.up();
    let l = clinicbox_tests::national::wait_for_ledger(
        &national,
        std::time::Duration::from_secs(30),
        |l| count(l, "events") == 2,
    );
    assert_eq!(count(&l, "events"), 2, "{l}");
    assert_eq!(l["events"]["evUplink011"]["writes"], 1, "sent once: {l}");
    // The first round checked in to national; the second, hours before the next check-in is
    // due (`check_in_secs`), did not.
    let check_ins: u64 = l["data_store_writes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("clinicbox-fleet/"))
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    assert_eq!(check_ins, 1, "{}", l["data_store_writes"]);
    // The round confirms to serve just after national's answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let s = loop {
        let s = status_json(&b)["uplink"].clone();
        if s["pending"] == json!({}) || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(s["pending"], json!({}), "{s}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(uplink.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(st) = uplink.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the uplink did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    b.stop();
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn start_on(data: &std::path::Path) -> RunningBox {
    BoxBuilder::demo_at(data.display().to_string()).start()
}

/// Starts `clinicbox uplink --once` and SIGKILLs it after `ms` (if still running).
fn uplink_killed_after(data: &std::path::Path, national: &National, ms: u64) {
    let mut child = std::process::Command::new(clinicbox_tests::binary())
        .args(["uplink", "--demo", "--data-dir"])
        .arg(data)
        .args(["--national-url", &national.url, "--national-token-file"])
        .arg(&national.token_file)
        .arg("--once")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = child.kill();
    let _ = child.wait();
}

/// kill -9 of the uplink, and of `serve`, at random moments over many rounds (answers cut after
/// national applied them, too): every acknowledged tablet write is on national exactly once
/// afterwards. `CLINICBOX_UPLINK_SOAK_ROUNDS` (default 12) sets the rounds.
#[test]
fn sigkill_of_the_uplink_or_serve_at_any_moment_loses_nothing_and_duplicates_nothing() {
    let rounds: u32 = std::env::var("CLINICBOX_UPLINK_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("uplink soak: {rounds} rounds, seed {rng}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let national = National::start(None);
    let mut b = start_on(&data);
    let pe = this_month(&b);
    let mut acked: Vec<u32> = Vec::new();
    let mut last_values = ["0".to_string(), "0".to_string()];
    for round in 0..rounds {
        for k in 0..2 {
            let n = 100 + round * 2 + k;
            import(&b, &patient(n));
            acked.push(n);
        }
        let values = [format!("{}", round + 1), format!("{}", 2 * round + 1)];
        post(
            &b,
            "/api/dataValueSets",
            &month_values(&pe, [values[0].as_str(), values[1].as_str()]),
        );
        last_values = values;
        if xorshift(&mut rng) % 3 == 0 {
            national.faults(json!({"drop_answer_after_apply": 1}));
        }
        let ms = 20 + xorshift(&mut rng) % 400;
        if round % 3 == 2 {
            // serve dies while the uplink pushes; the uplink's next request fails.
            let mut child = std::process::Command::new(clinicbox_tests::binary())
                .args(["uplink", "--demo", "--data-dir"])
                .arg(&data)
                .args(["--national-url", &national.url, "--national-token-file"])
                .arg(&national.token_file)
                .arg("--once")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(ms));
            drop(b.kill());
            let _ = child.wait();
            b = start_on(&data);
        } else {
            uplink_killed_after(&data, &national, ms);
        }
    }
    national.faults(json!({"drop_answer_after_apply": 0}));
    let out = uplink_once_ok(&data, &national);
    let l = national.ledger();
    for n in &acked {
        for (list, uid) in [
            ("tracked_entities", uid("te", *n)),
            ("enrollments", uid("en", *n)),
            ("events", uid("ev", *n)),
        ] {
            assert!(
                l[list][&uid]["writes"].as_u64() >= Some(1),
                "{uid} missing: {out}"
            );
        }
    }
    assert_eq!(count(&l, "events"), acked.len(), "nothing extra");
    assert_eq!(
        count(&l, "notes"),
        2 * acked.len(),
        "no note twice: {}",
        l["notes"]
    );
    let values: Vec<&Value> = l["data_values"].as_object().unwrap().values().collect();
    assert_eq!(values.len(), 2);
    let mut got: Vec<String> = values
        .iter()
        .map(|v| v["value"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want = last_values.to_vec();
    want.sort();
    assert_eq!(got, want, "national holds the box's last figures");
    for v in &values {
        assert!(
            v["writes"].as_u64().unwrap() <= u64::from(rounds),
            "a value written more often than it changed: {v}"
        );
    }
    assert_eq!(status_json(&b)["uplink"]["pending"], json!({}));
    b.stop();
}

#[test]
fn a_photo_reaches_national_before_the_event_that_names_it_and_only_once() {
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    national.faults(json!({"file_data_elements": ["cbDePhoto01"]}));
    add_photo_element(&b);
    // A small PNG: the signature, then bytes that are not text.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..40_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let file = upload_file(&b, &png);
    let mut p = patient(21);
    p["events"][0]["dataValues"]
        .as_array_mut()
        .unwrap()
        .push(json!({"dataElement": "cbDePhoto01", "value": file}));
    import(&b, &p);

    // The upload's answer is cut after national stored it: the next try finds it there.
    national.faults(json!({"drop_answer_after_apply": 1}));
    let out = uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(pushed(&out, "fileResources"), 1, "{out}");
    assert_eq!(pushed(&out, "events"), 1, "{out}");
    let l = national.ledger();
    assert_eq!(l["files"][&file]["bytes"], png.len(), "{}", l["files"]);
    assert_eq!(l["files"][&file]["fnv"], fnv1a(&png));
    assert_eq!(l["files"][&file]["domain"], "DATA_VALUE");
    assert_eq!(l["requests"]["POST /api/fileResources"], 1, "uploaded once");
    let ev = &l["events"]["evUplink021"]["body"]["dataValues"];
    assert!(
        ev.as_array()
            .unwrap()
            .iter()
            .any(|d| d["value"] == file.as_str()),
        "{ev}"
    );
    b.stop();
}

#[test]
fn children_refused_for_their_parent_s_sake_follow_it_once_it_goes_through() {
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    import(&b, &patient(31));
    // national already has the patient's ID on someone else: the patient is refused (E1064),
    // its enrollment and event with it (E5000).
    national.faults(json!({"duplicate_uids": ["teUplink031"]}));
    let out = uplink_once_ok(&data_dir(&b), &national);
    assert!(out.contains("parked: 3"), "{out}");
    assert!(out.contains("E1064") && out.contains("E5000"), "{out}");

    // The district sorts the duplicate out; a nurse corrects the patient's name. The patient
    // goes again because it changed; its enrollment and event follow because they were refused
    // only for its sake.
    national.faults(json!({"duplicate_uids": []}));
    let mut te = patient(31)["trackedEntities"][0].clone();
    te["attributes"] = json!([{"attribute": "cbAttrFirst", "value": "Aminah"}]);
    import(&b, &json!({ "trackedEntities": [te] }));
    let out = uplink_once_ok(&data_dir(&b), &national);
    assert_eq!(pushed(&out, "trackedEntities"), 1, "{out}");
    assert_eq!(pushed(&out, "enrollments"), 1, "{out}");
    assert_eq!(pushed(&out, "events"), 1, "{out}");
    let l = national.ledger();
    assert_eq!(l["events"]["evUplink031"]["writes"], 1);
    assert_eq!(count(&l, "notes"), 2);
    assert_eq!(status_json(&b)["uplink"]["parkedCount"], 0);
    b.stop();
}

#[test]
fn a_slow_lossy_link_that_cuts_connections_still_delivers_everything_once() {
    use clinicbox_tests::link::{LossyLink, Profile};
    use std::sync::atomic::Ordering;
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    let patients = 15;
    for n in 0..patients {
        import(&b, &patient(200 + n));
    }
    let pe = this_month(&b);
    post(&b, "/api/dataValueSets", &month_values(&pe, ["31", "27"]));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("lossy link seed {seed}");
    let link = LossyLink::start(national.addr(), Profile::lte_bad_day(0.3), seed);
    let url = format!("http://{}", link.addr);
    let started = std::time::Instant::now();
    let mut rounds = 0;
    let done = loop {
        rounds += 1;
        let (status, out, err) =
            clinicbox_tests::national::uplink_once_via(&data_dir(&b), &national, &url);
        if status.success() {
            break Some(out);
        }
        eprintln!("round {rounds} failed: {}", err.trim());
        if rounds == 15 {
            break None;
        }
    };
    let s = &link.stats;
    eprintln!(
        "lossy link: {rounds} round(s), {:.1} s, {} B up, {} B down, {} connections, {} cut",
        started.elapsed().as_secs_f64(),
        s.up_bytes.load(Ordering::Relaxed),
        s.down_bytes.load(Ordering::Relaxed),
        s.connections.load(Ordering::Relaxed),
        s.cuts.load(Ordering::Relaxed)
    );
    assert!(done.is_some(), "no round got through in 15 tries");
    let l = national.ledger();
    assert_eq!(count(&l, "events"), patients as usize);
    assert_eq!(count(&l, "notes"), 2 * patients as usize, "no note twice");
    for v in l["data_values"].as_object().unwrap().values() {
        assert_eq!(v["writes"], 1, "{v}");
    }
    assert_eq!(status_json(&b)["uplink"]["pending"], json!({}));
    b.stop();
}

/// A day of a busy clinic: tablets registering patients at once (each an enrollment and two
/// events with notes), a big monthly report, some deletions and photos; then one round. It all
/// reaches national, once. `CLINICBOX_BUSY_DAY` = `tablets x patients` (default 20x300).
#[test]
fn a_busy_clinic_day_reaches_national_intact() {
    let (tablets, per_tablet): (u32, u32) = std::env::var("CLINICBOX_BUSY_DAY")
        .ok()
        .and_then(|v| {
            let (t, p) = v.split_once('x')?;
            Some((t.parse().ok()?, p.parse().ok()?))
        })
        .unwrap_or((20, 300));
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    national.faults(json!({"file_data_elements": ["cbDePhoto01"]}));
    add_photo_element(&b);
    let form = add_big_monthly_form(&b, 1000);
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..tablets {
            let b = b.url();
            s.spawn(move || {
                let first = 1000 + t * per_tablet;
                for chunk in (0..per_tablet).step_by(20) {
                    import_to(b, &patients(first + chunk, 20.min(per_tablet - chunk)));
                }
                // One photo per tablet, on its first patient's triage.
                let file = upload_file_to(b, format!("\u{89}PNG tablet {t}").as_bytes());
                let mut ev = patient(first)["events"][0].clone();
                ev.as_object_mut().unwrap().remove("notes");
                ev["dataValues"] = json!([{"dataElement": "cbDePhoto01", "value": file}]);
                import_to(b, &json!({ "events": [ev] }));
                // A consultation recorded by mistake, deleted again.
                let r = post_to(
                    b,
                    "/api/tracker?async=false&importStrategy=DELETE",
                    &json!({"events": [{"event": uid("co", first + 1)}]}),
                );
                assert_eq!(r["status"], "OK", "{r}");
            });
        }
    });
    let pe = this_month(&b);
    let values: Vec<Value> = form
        .iter()
        .flat_map(|de| {
            ["cbCocFemale", "cbCocMale01"].map(|coc| {
                json!({"dataElement": de, "period": pe, "orgUnit": CLINIC_A,
                "categoryOptionCombo": coc, "attributeOptionCombo": DEFAULT_COC, "value": "3"})
            })
        })
        .collect();
    let r = post(
        &b,
        "/api/dataValueSets",
        &json!({"dataSet": "cbDsBigMon1", "dataValues": values}),
    );
    assert_eq!(r["response"]["importCount"]["imported"], 2000, "{r}");
    let recorded = started.elapsed();

    let t0 = std::time::Instant::now();
    let out = uplink_once_ok(&data_dir(&b), &national);
    let pushed_in = t0.elapsed();
    let patients_total = (tablets * per_tablet) as usize;
    eprintln!(
        "busy day: {patients_total} patients by {tablets} tablets recorded in {:.1} s, pushed in {:.1} s\n{out}",
        recorded.as_secs_f64(),
        pushed_in.as_secs_f64()
    );
    let l = national.ledger();
    assert_eq!(count(&l, "tracked_entities"), patients_total);
    assert_eq!(count(&l, "enrollments"), patients_total);
    // Each tablet's deleted consultation was deleted before national saw it.
    assert_eq!(count(&l, "events"), 2 * patients_total - tablets as usize);
    assert_eq!(
        count(&l, "notes"),
        3 * patients_total - tablets as usize,
        "every note once"
    );
    assert_eq!(count(&l, "files"), tablets as usize);
    assert!(out.contains("parked: 0"), "{out}");
    assert_eq!(count(&l, "data_values"), 2000);
    // An event is sent again only if it changed after it was sent (the photo added to each
    // tablet's first triage may land in a later batch than the triage itself).
    let again = l["events"]
        .as_object()
        .unwrap()
        .values()
        .filter(|e| e["writes"] != 1)
        .count();
    assert!(
        again <= tablets as usize,
        "{again} events sent more than once"
    );
    assert_eq!(status_json(&b)["uplink"]["pending"], json!({}));
    b.stop();
}

/// What `clinicbox power` would report: on battery, or on line.
fn report_power(b: &RunningBox, on_battery: bool) {
    use clinicbox_control::{ControlClient, PowerReport, PowerState};
    let report = PowerReport {
        state: if on_battery {
            PowerState::OnBattery
        } else {
            PowerState::OnLine
        },
        source: "test".into(),
        charge_percent: Some(80.0),
        runtime_s: Some(3600),
        on_battery_s: u64::from(on_battery) * 60,
        detail: "test".into(),
        observed_at_unix_s: 0,
    };
    let path = data_dir(b).join("control.sock");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            ControlClient::new(path, std::time::Duration::from_secs(5))
                .report_power(report)
                .await
        })
        .unwrap();
}

#[test]
fn on_battery_the_daemon_waits_for_mains_when_told_to() {
    let wan = Wan::new("b");
    wan.up();
    let b = BoxBuilder::demo().start();
    let national = National::start(Some(&wan.ns));
    report_power(&b, true);
    import(&b, &patient(41));
    let uplink = start_daemon(&b, &wan, &national, "on_battery = \"pause\"\n");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        count(&national.ledger(), "events"),
        0,
        "nothing sent on battery"
    );
    let s = status_json(&b)["uplink"].clone();
    assert_eq!(s["state"], "paused: the box runs on battery", "{s}");

    report_power(&b, false);
    let l = clinicbox_tests::national::wait_for_ledger(
        &national,
        std::time::Duration::from_secs(40),
        |l| count(l, "events") == 1,
    );
    assert_eq!(count(&l, "events"), 1, "sent once mains is back");
    drop(uplink);
    b.stop();
}

#[test]
fn national_over_https_is_trusted_through_the_ministry_s_ca_file_and_refused_without_it() {
    let b = BoxBuilder::demo().start();
    let national = National::start_tls();
    assert!(national.url.starts_with("https://"), "{}", national.url);
    import(&b, &patient(51));

    // The system's roots do not know the ministry's CA: a clear refusal, nothing marked sent.
    let (status, _, err) = uplink_once(&data_dir(&b), &national);
    assert!(!status.success());
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(status_json(&b)["uplink"]["pending"]["events"], 1);

    // With [uplink] ca_file it goes through.
    let config = b.dir().join("ca.toml");
    std::fs::write(
        &config,
        format!("[uplink]\nca_file = \"{}\"\n", national.ca_file().display()),
    )
    .unwrap();
    let out = std::process::Command::new(clinicbox_tests::binary())
        .arg("--config")
        .arg(&config)
        .args(["uplink", "--demo", "--data-dir"])
        .arg(data_dir(&b))
        .args(["--national-url", &national.url, "--national-token-file"])
        .arg(&national.token_file)
        .arg("--once")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pushed(&text, "events"), 1, "{text}");
    assert_eq!(status_json(&b)["uplink"]["pending"], json!({}));
    b.stop();
}
