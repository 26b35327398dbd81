//! Issue 3 end to end: the real `clinicbox serve --demo` on loopback, driven over raw HTTP/1.1
//! the way the Android SDK drives a DHIS2 2.42 server: the login sequence and the full metadata
//! sync in order with the SDK's query strings (raw `[ ] : ,` on the wire), then import, auth,
//! scope and the `clinicbox user`/`metadata` admin commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../appliance/api/tests/common/sdk.rs"]
mod sdk;

use clinicbox_tests::{BoxBuilder, Response, RunningBox, run_admin};
use serde_json::{Value, json};

const ANDROID: &str = "Basic YW5kcm9pZDpBbmRyb2lkMTIz"; // android:Android123
const ADMIN: &str = "Basic YWRtaW46ZGlzdHJpY3Q="; // admin:district
const WRONG: &str = "Basic YW5kcm9pZDp3cm9uZw=="; // android:wrong
const NURSE: &str = "Basic bnVyc2U6UzNjdXJlLXBhc3Mx"; // nurse:S3cure-pass1

fn get(b: &RunningBox, path: &str, auth: &str) -> Response {
    b.request(
        "GET",
        path,
        &[
            ("Authorization", auth),
            ("Accept", "application/json"),
            ("User-Agent", "com.dhis2/1.14.0/3.4.1/Android_34"),
        ],
        b"",
    )
}

fn post(b: &RunningBox, path: &str, auth: &str, body: &Value) -> Response {
    b.request(
        "POST",
        path,
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// 200, JSON content type, no cookie, no redirect.
fn ok(r: &Response, path: &str) -> Value {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 200, "{path}: {body}");
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{path}: content-type {ct}"
    );
    assert!(r.header("set-cookie").is_none(), "{path} set a cookie");
    assert!(r.header("location").is_none(), "{path} redirected");
    r.json()
}

/// A DHIS2 WebMessage with this status and the four fields the SDK requires.
fn web_message(r: &Response, code: u16) -> Value {
    assert_eq!(r.status, code, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json")
    );
    let v = r.json();
    assert_eq!(v["httpStatusCode"], code);
    for k in ["httpStatus", "status", "message"] {
        assert!(v[k].is_string(), "WebMessage without {k}: {v}");
    }
    v
}

fn strict_date(v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} missing"));
    let b = s.as_bytes();
    let shape = b.len() == 23
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        });
    assert!(shape, "{what}: {s:?} is not yyyy-MM-ddTHH:mm:ss.SSS");
}

/// Every object in every list has an id, and its dates have the SDK's shape.
fn check_objects(v: &Value, path: &str) {
    let Some(obj) = v.as_object() else { return };
    for (k, list) in obj {
        let Some(items) = list.as_array() else {
            continue;
        };
        for it in items {
            if k == "icons" {
                continue;
            }
            assert!(it["id"].is_string(), "{path}: {k} item without id: {it}");
            for d in ["created", "lastUpdated"] {
                if !it[d].is_null() {
                    strict_date(&it[d], &format!("{path} {k}.{d}"));
                }
            }
        }
    }
}

#[test]
fn a_tablet_logs_in_and_syncs_all_metadata_in_the_sdk_order() {
    let b = BoxBuilder::demo().start();
    // URL screen: no credentials.
    let lc = b.request("GET", "/api/loginConfig", &[], b"");
    let lc = ok(&lc, "loginConfig");
    assert_eq!(lc["loginPageLayout"], "DEFAULT");
    assert_eq!(b.request("GET", "/api/ping", &[], b"").status, 200);

    let mut server_date = String::new();
    for path in sdk::sync_sequence() {
        let r = get(&b, &path, ANDROID);
        let v = ok(&r, &path);
        check_objects(&v, &path);
        if path.starts_with("/api/me?") {
            assert_eq!(v["id"], "cbUserAndro");
            assert_eq!(v["username"], "android");
            if let Some(ous) = v["organisationUnits"].as_array() {
                assert_eq!(
                    ous,
                    &vec![
                        json!({"id": "cbClinicA01", "path": "/cbCountry01/cbDistrct01/cbClinicA01"})
                    ]
                );
            }
        }
        if path.starts_with("/api/system/info") {
            assert!(v["version"].as_str().unwrap().starts_with("2.42."));
            assert!(
                v["contextPath"]
                    .as_str()
                    .unwrap()
                    .starts_with("http://127.0.0.1:")
            );
            assert_eq!(v["serverTimeZoneId"], "Etc/UTC");
            strict_date(&v["serverDate"], "serverDate");
            assert!(
                v["serverDate"].as_str().unwrap() >= server_date.as_str(),
                "serverDate went back"
            );
            server_date = v["serverDate"].as_str().unwrap().to_string();
        }
        if path.starts_with("/api/me/authorization") {
            assert!(v.as_array().unwrap().iter().all(Value::is_string));
        }
        if path.starts_with("/api/organisationUnits?") {
            let ou = &v["organisationUnits"][0];
            assert_eq!(v["organisationUnits"].as_array().unwrap().len(), 1);
            assert_eq!(ou["level"], 3);
            let programs: Vec<&str> = ou["programs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap())
                .collect();
            assert!(programs.contains(&"cbPrgOpd001") && programs.contains(&"cbPrgHealth"));
        }
        if path.starts_with("/api/programs?") {
            assert_eq!(v["programs"].as_array().unwrap().len(), 2);
            assert!(
                v["programs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["access"]["data"]["write"] == true)
            );
        }
        if path.starts_with("/api/programStages?") {
            let psde = &v["programStages"][0]["programStageDataElements"][0];
            assert!(
                psde["dataElement"]["valueType"].is_string(),
                "stage data elements must be expanded: {psde}"
            );
        }
        if path.starts_with("/api/categoryCombos?") && path.contains("filter=isDefault:eq:true") {
            assert_eq!(v["categoryCombos"][0]["isDefault"], true);
            assert_eq!(v["categoryCombos"].as_array().unwrap().len(), 1);
        }
        if path.starts_with("/api/options?") {
            assert_eq!(v["options"].as_array().unwrap().len(), 10);
        }
    }
    // Incremental relationship types: nothing changed since the last serverDate.
    let inc = format!(
        "/api/relationshipTypes?fields={}&filter=access.data.read:eq:true&filter=lastUpdated:gt:{server_date}&paging=false",
        sdk::relationship_type()
    );
    assert_eq!(
        ok(&get(&b, &inc, ANDROID), &inc)["relationshipTypes"],
        json!([])
    );
    b.stop();
}

#[test]
fn filters_paging_scope_and_auth_errors_over_the_wire() {
    let b = BoxBuilder::demo().start();
    // Filters filter.
    let v = ok(
        &get(
            &b,
            "/api/dataElements?fields=id&filter=domainType:eq:AGGREGATE&filter=name:ilike:malaria&paging=false",
            ADMIN,
        ),
        "des",
    );
    assert_eq!(v["dataElements"], json!([{"id": "cbDeAggMal1"}]));
    // Paging is stable: pages of 3 add up to the unpaged list, in order.
    let full = ok(
        &get(&b, "/api/options?fields=id&paging=false", ADMIN),
        "options",
    )["options"]
        .clone();
    let mut paged = Vec::new();
    for page in 1..=4 {
        let v = ok(
            &get(
                &b,
                &format!("/api/options?fields=id&paging=true&page={page}&pageSize=3"),
                ADMIN,
            ),
            "page",
        );
        paged.extend(v["options"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(Value::Array(paged), full);
    // Scope: android (Clinic A) does not see Clinic B.
    let v = ok(
        &get(&b, "/api/organisationUnits?fields=id&paging=false", ANDROID),
        "ous",
    );
    assert_eq!(v["organisationUnits"], json!([{"id": "cbClinicA01"}]));
    web_message(&get(&b, "/api/organisationUnits/cbClinicB01", ANDROID), 404);
    // Wrong password: a WebMessage 401, never "Account disabled", no redirect.
    let r = get(&b, "/api/me", WRONG);
    let m = web_message(&r, 401);
    assert_eq!(m["message"], "Unauthorized");
    assert!(r.header("location").is_none());
    web_message(&b.request("GET", "/api/me", &[], b""), 401);
    b.stop();
}

#[test]
fn metadata_import_is_idempotent_and_atomic() {
    let b = BoxBuilder::demo().start();
    let before = ok(
        &get(&b, "/api/programs/cbPrgOpd001?fields=lastUpdated", ADMIN),
        "p",
    );
    let package: Value =
        serde_json::from_str(include_str!("../../appliance/api/demo/metadata.json")).unwrap();
    let r = post(&b, "/api/metadata", ADMIN, &package);
    let m = web_message(&r, 200);
    assert_eq!(m["response"]["status"], "OK");
    assert_eq!(m["response"]["stats"]["created"], 0);
    assert_eq!(
        ok(
            &get(&b, "/api/programs/cbPrgOpd001?fields=lastUpdated", ADMIN),
            "p"
        ),
        before
    );
    let broken = json!({
        "constants": [{"id": "cbConstNew1", "name": "New constant", "value": 1}],
        "dataSets": [{"id": "cbDsBroken1", "name": "Broken", "periodType": "Monthly", "categoryCombo": {"id": "NoSuchCombo"}}]
    });
    let m = web_message(&post(&b, "/api/metadata", ADMIN, &broken), 409);
    assert_eq!(m["response"]["status"], "ERROR");
    web_message(&get(&b, "/api/constants/cbConstNew1", ADMIN), 404);
    web_message(&post(&b, "/api/metadata", ANDROID, &broken), 403);
    b.stop();
}

#[test]
fn admin_commands_manage_users_of_a_stopped_box() {
    let first = BoxBuilder::demo();
    let data = first.dir().join("data");
    let key = data.join("demo.key");
    let b = first.start();
    let kept = b.kill();
    let (d, k) = (data.display().to_string(), key.display().to_string());
    let admin = |args: &[&str], stdin: &str| {
        let mut all = vec!["--data-dir", d.as_str()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--unlock-key-file", k.as_str()]);
        run_admin(&all, stdin)
    };
    let (st, out, err) = admin(
        &[
            "user",
            "add",
            "nurse",
            "--role",
            "Clinic data capture",
            "--org-unit",
            "Hillside Clinic B",
        ],
        "S3cure-pass1\n",
    );
    assert!(st.success(), "{out}{err}");
    let (st, _, err) = admin(&["user", "passwd", "nurse"], "short\n");
    assert!(!st.success() && err.contains("8 to 72"), "{err}");
    let (st, out, _) = admin(&["user", "list"], "");
    assert!(
        st.success() && out.contains("nurse") && out.contains("Hillside Clinic B"),
        "{out}"
    );
    std::fs::write(
        data.join("pkg.json"),
        r#"{"constants":[{"id":"cbConstUsb1","name":"From a USB stick","value":7}]}"#,
    )
    .unwrap();
    let (st, out, err) = admin(
        &[
            "metadata",
            "import",
            &data.join("pkg.json").display().to_string(),
        ],
        "",
    );
    assert!(st.success() && out.contains("1 created"), "{out}{err}");

    let again = BoxBuilder::demo_at(d.clone()).start();
    let me = ok(
        &get(
            &again,
            "/api/me?fields=username,organisationUnits[id]",
            NURSE,
        ),
        "me",
    );
    assert_eq!(
        me,
        json!({"username": "nurse", "organisationUnits": [{"id": "cbClinicB01"}]})
    );
    ok(
        &get(&again, "/api/constants/cbConstUsb1", NURSE),
        "constant",
    );
    again.stop();

    let (st, _, _) = admin(&["user", "disable", "nurse"], "");
    assert!(st.success());
    let again = BoxBuilder::demo_at(d.clone()).start();
    assert_eq!(
        web_message(&get(&again, "/api/me", NURSE), 401)["message"],
        "Account disabled"
    );
    again.stop();
    drop(kept);
}
