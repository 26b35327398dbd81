//! The uplink's pull end to end: a demo box, the real `clinicbox uplink --once` and the
//! stand-in national (`src/bin/national_standin/`) holding the ministry's metadata and staff.
//! Every check reads what a tablet or an admin reads from the box.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clinicbox_tests::clinic::{
    CLINIC_A, DS, OPD, basic, demo_object, demo_package, import_to, month_values, this_month,
};
use clinicbox_tests::national::{National, uplink_once_ok, uplink_once_with};
use clinicbox_tests::{BoxBuilder, RunningBox, http_request};
use serde_json::{Value, json};

/// National as the ministry runs it: the demo's metadata, the sync account on clinic A.
fn national_with_demo() -> National {
    let national = National::start(None);
    national.put_metadata(&demo_package());
    national.assign_sync_user(&[CLINIC_A]);
    national
}

fn get_as(b: &RunningBox, user: (&str, &str), path: &str) -> (u16, Value) {
    let auth = basic(user.0, user.1);
    let r = http_request(
        b.url().trim_start_matches("http://"),
        "GET",
        path,
        &[("Authorization", &auth)],
        b"",
    );
    let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, body)
}

const ANDROID: (&str, &str) = ("android", "Android123");
const ADMIN: (&str, &str) = ("admin", "district");

fn ids(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["id"].as_str().map(str::to_string))
        .collect()
}

/// The box's clock as tablets filter by it.
fn box_time(b: &RunningBox) -> String {
    let (_, info) = get_as(b, ANDROID, "/api/system/info");
    info["serverDate"].as_str().expect("serverDate").to_string()
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {out}"))
}

/// Dependency exports national answered so far.
fn exports(national: &National) -> u64 {
    let l = national.ledger();
    ["programs", "dataSets"]
        .iter()
        .map(|t| {
            l["requests"][format!("GET /api/{t}/{{uid}}/metadata")]
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn national_s_metadata_changes_reach_a_tablet_s_next_sync_and_a_quiet_round_costs_little() {
    let national = national_with_demo();
    // National changes: a new diagnosis, a new stage, a renamed data element, a new nurse.
    let diagnoses: Vec<Value> = [
        "cbOptMalari",
        "cbOptPneumo",
        "cbOptDiarrh",
        "cbOptHypert",
        "cbOptOther1",
        "cbOptCholer",
    ]
    .map(|id| json!({ "id": id }))
    .to_vec();
    national.put_metadata(&json!({
        "options": [{"id": "cbOptCholer", "name": "Cholera", "code": "CHOLERA",
            "sortOrder": 6, "optionSet": {"id": "cbOsDiag001"}}],
        "optionSets": [{"id": "cbOsDiag001", "name": "Diagnosis", "valueType": "TEXT",
            "options": diagnoses}],
    }));
    let mut program = demo_package()["programs"][0].clone();
    program["programStages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "cbStgFollow"}));
    let mut weight = demo_package()["dataElements"][0].clone();
    weight["name"] = json!("Body weight (kg)");
    national.put_metadata(&json!({
        "programStages": [{"id": "cbStgFollow", "name": "Follow-up", "program": {"id": "cbPrgOpd001"},
            "sortOrder": 4, "repeatable": true, "programStageDataElements": [
                {"id": "cbPsdeFw001", "dataElement": {"id": "cbDeWeight1"}, "compulsory": false}]}],
        "programs": [program],
        "dataElements": [weight],
        "users": [{"id": "cbUserNurse", "username": "wanjiru", "password": "Nurse-2026!",
            "firstName": "Wanjiru", "surname": "Kamau", "disabled": false,
            "userRoles": [{"id": "cbRoleCaptr"}], "organisationUnits": [{"id": CLINIC_A}],
            "dataViewOrganisationUnits": [{"id": CLINIC_A}],
            "teiSearchOrganisationUnits": [{"id": CLINIC_A}]}],
    }));

    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    let synced = box_time(&b);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "metadata: ").starts_with("metadata: applied"),
        "{out}"
    );

    // The tablet's next metadata sync sees every change through its lastUpdated filters.
    let since = format!("filter=lastUpdated:gt:{synced}&fields=id,name&paging=false");
    let (_, stages) = get_as(&b, ANDROID, &format!("/api/programStages?{since}"));
    assert!(
        ids(&stages, "programStages").contains(&"cbStgFollow".into()),
        "{stages}"
    );
    let (_, des) = get_as(&b, ANDROID, &format!("/api/dataElements?{since}"));
    let weight = des["dataElements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "cbDeWeight1")
        .unwrap_or_else(|| panic!("renamed element not newer: {des}"));
    assert_eq!(weight["name"], "Body weight (kg)");
    let (_, set) = get_as(
        &b,
        ANDROID,
        "/api/optionSets/cbOsDiag001?fields=id,options[id,code]",
    );
    assert!(
        ids(&set, "options").contains(&"cbOptCholer".into()),
        "{set}"
    );
    // The new nurse is a user of the box (her password is checked at national first).
    let (_, users) = get_as(
        &b,
        ADMIN,
        "/api/users?filter=username:eq:wanjiru&fields=id,username,organisationUnits[id]",
    );
    assert_eq!(
        ids(&users, "users"),
        vec!["cbUserNurse".to_string()],
        "{users}"
    );
    // Only what the clinic needs: no org unit of clinic B's subtree came from national.
    let read = exports(&national);
    assert_eq!(
        read, 3,
        "two programs and a data set are assigned to clinic A"
    );

    // A round with nothing changed: no dependency export, every list answered 304.
    let quiet = uplink_once_ok(&data, &national);
    assert!(
        line(&quiet, "metadata: ").starts_with("metadata: unchanged"),
        "{quiet}"
    );
    assert_eq!(exports(&national), read, "no export read again");
    let received: u64 = line(&quiet, "bytes: ")
        .split(", ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("received bytes");
    assert!(received < 8 * 1024, "a quiet round read {received} bytes");

    // A change to objects the box holds: fetched by id, no export read again.
    let mut weight = demo_package()["dataElements"][0].clone();
    weight["name"] = json!("Weight at visit (kg)");
    national.put_metadata(&json!({"dataElements": [weight]}));
    let by_id = || {
        national.ledger()["requests"]["GET /api/metadata"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = by_id();
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "metadata: ").starts_with("metadata: applied"),
        "{out}"
    );
    assert_eq!(
        exports(&national),
        read,
        "no export read for a rename: {out}"
    );
    assert_eq!(by_id(), before + 2, "the probe and one fetch by id");
    let (_, de) = get_as(&b, ANDROID, "/api/dataElements/cbDeWeight1?fields=name");
    assert_eq!(de["name"], "Weight at visit (kg)");

    // A new object the box does not hold (a rule of its program): the exports are read whole.
    national.put_metadata(
        &json!({"programRules": [{"id": "cbRuleNew01", "name": "New rule",
        "program": {"id": "cbPrgOpd001"}, "condition": "true", "priority": 9}]}),
    );
    uplink_once_ok(&data, &national);
    assert_eq!(exports(&national), read + 3, "every export read again");
    let (code, rule) = get_as(&b, ANDROID, "/api/programRules/cbRuleNew01?fields=name");
    assert_eq!((code, &rule["name"]), (200, &json!("New rule")), "{rule}");
}

#[test]
fn an_option_national_removed_leaves_the_set_and_stored_values_that_use_it_stay() {
    let national = national_with_demo();
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    // A clinic records a triage of YELLOW, and the first round brings the metadata.
    import_to(b.url(), &clinicbox_tests::clinic::patient(1));
    uplink_once_ok(&data, &national);

    national.remove_metadata("options", "cbOptYell01");
    let out = uplink_once_ok(&data, &national);
    assert!(line(&out, "metadata: ").contains("1 deleted"), "{out}");
    // Flagged for an admin, on the summary and the status page.
    assert!(
        out.contains("1 stored value(s) refer to options or fields national removed"),
        "{out}"
    );
    let (_, status) = get_as(&b, ADMIN, "/status.json");
    assert_eq!(status["uplink"]["metadata"]["staleValues"], 1, "{status}");
    let (_, set) = get_as(
        &b,
        ANDROID,
        "/api/optionSets/cbOsTriage1?fields=options[id]",
    );
    assert!(
        !ids(&set, "options").contains(&"cbOptYell01".into()),
        "{set}"
    );
    let (status, _) = get_as(&b, ANDROID, "/api/options/cbOptYell01");
    assert_eq!(status, 404);
    // The event keeps its value for the tablet.
    let ev_uid = clinicbox_tests::clinic::uid("ev", 1);
    let (_, ev) = get_as(
        &b,
        ANDROID,
        &format!("/api/tracker/events/{ev_uid}?fields=dataValues"),
    );
    let triage = ev["dataValues"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["dataElement"] == "cbDeTriage1")
        .map(|v| v["value"].clone());
    assert_eq!(triage, Some(json!("YELLOW")), "{ev}");
}

#[test]
fn a_package_the_box_would_refuse_is_refused_whole_and_the_box_keeps_its_metadata() {
    let national = national_with_demo();
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    uplink_once_ok(&data, &national);
    // National adds a nameless element to a stage: the box's checks refuse it.
    let mut stage = demo_package()["programStages"][1].clone();
    stage["name"] = json!("Consultation (new)");
    stage["programStageDataElements"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "cbPsdeBad01", "dataElement": {"id": "cbDeBadNone"}}));
    national.put_metadata(&json!({
        "dataElements": [{"id": "cbDeBadNone", "valueType": "TEXT", "domainType": "TRACKER",
            "aggregationType": "NONE"}],
        "programStages": [stage],
    }));
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "metadata: ").starts_with("metadata: refused"),
        "{out}"
    );
    assert!(out.contains("E4000"), "the reason is printed: {out}");
    let (_, st) = get_as(&b, ANDROID, "/api/programStages/cbStgConsul?fields=name");
    assert_eq!(st["name"], "Consultation", "the box kept its metadata");
    let (_, status) = get_as(&b, ADMIN, "/status.json");
    assert_eq!(
        status["uplink"]["metadata"]["result"], "refused",
        "{status}"
    );

    // Fixed at national: the next round applies it.
    national.put_metadata(
        &json!({"dataElements": [{"id": "cbDeBadNone", "name": "Fixed",
        "shortName": "Fixed", "valueType": "TEXT", "domainType": "TRACKER",
        "aggregationType": "NONE"}]}),
    );
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "metadata: ").starts_with("metadata: applied"),
        "{out}"
    );
    let (_, st) = get_as(&b, ANDROID, "/api/programStages/cbStgConsul?fields=name");
    assert_eq!(st["name"], "Consultation (new)");
}

#[test]
fn a_box_clock_off_from_national_s_is_said_on_the_summary_and_the_status_page() {
    let national = national_with_demo();
    national.faults(json!({"clock_offset_secs": -600}));
    let b = BoxBuilder::demo().start();
    let out = uplink_once_ok(&b.dir().join("data"), &national);
    let clock = line(&out, "clock: ");
    assert!(clock.contains("ahead of national's"), "{clock}");
    let (_, status) = get_as(&b, ADMIN, "/status.json");
    let skew = status["uplink"]["clockSkewSecs"].as_i64().expect("skew");
    assert!((590..=640).contains(&skew), "{skew}");
}

fn nurse(password: &str, disabled: bool) -> Value {
    json!({"users": [{"id": "cbUserNurse", "username": "wanjiru", "password": password,
        "firstName": "Wanjiru", "surname": "Kamau", "disabled": disabled,
        "userRoles": [{"id": "cbRoleCaptr"}], "organisationUnits": [{"id": CLINIC_A}],
        "dataViewOrganisationUnits": [{"id": CLINIC_A}],
        "teiSearchOrganisationUnits": [{"id": CLINIC_A}]}]})
}

/// Waits up to 60 s for `pred` on what `GET path` answers the admin.
fn wait_for_admin(b: &RunningBox, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, v) = get_as(b, ADMIN, path);
        if pred(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

fn login(b: &RunningBox, password: &str) -> u16 {
    get_as(b, ("wanjiru", password), "/api/me?fields=id").0
}

fn staff_checks(national: &National) -> u64 {
    national.ledger()["requests"]["GET /api/me (staff)"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_national_nurse_logs_in_online_once_then_offline_and_national_s_changes_to_her_account_follow()
{
    let wan = clinicbox_tests::wan::Wan::new("p");
    let national = National::start(Some(&wan.ns));
    national.put_metadata(&demo_package());
    national.assign_sync_user(&[CLINIC_A]);
    national.put_metadata(&nurse("Nurse-2026!", false));
    let b = BoxBuilder::demo().start();
    wan.up();
    let _uplink = clinicbox_tests::wan::start_daemon(&b, &wan, &national, "interval_secs = 2\n");
    let users = "/api/users?filter=username:eq:wanjiru&fields=id,disabled";
    let v = wait_for_admin(&b, users, |v| ids(v, "users").len() == 1);
    assert_eq!(ids(&v, "users"), vec!["cbUserNurse".to_string()], "{v}");

    // Her first login on the box is checked at national, once; a wrong password is refused.
    assert_eq!(login(&b, "Nurse-2026!"), 200);
    assert_eq!(staff_checks(&national), 1);
    assert_eq!(login(&b, "not-her-password"), 401);
    assert_eq!(login(&b, "Nurse-2026!"), 200);
    assert_eq!(
        staff_checks(&national),
        2,
        "only the wrong password went to national"
    );

    // The dongle loses its signal and the box restarts: she still logs in, offline.
    wan.down();
    let dir = b.kill();
    let data = dir.path().join("data");
    let b2 = BoxBuilder::demo_at(data.display().to_string()).start();
    assert_eq!(
        login(&b2, "Nurse-2026!"),
        200,
        "offline after one online login"
    );
    assert_eq!(staff_checks(&national), 2);

    // National changes her password: once the box hears of it, the old one stops working and
    // the new one is checked at national.
    national.put_metadata(&nurse("Changed-2027!", false));
    wan.up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while login(&b2, "Changed-2027!") != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(login(&b2, "Changed-2027!"), 200);
    assert_ne!(
        login(&b2, "Nurse-2026!"),
        200,
        "the old password no longer works"
    );

    // Disabled at national: disabled on the box at the next round.
    national.put_metadata(&nurse("Changed-2027!", true));
    let v = wait_for_admin(&b2, users, |v| v["users"][0]["disabled"] == true);
    assert_eq!(v["users"][0]["disabled"], true, "{v}");
    assert_ne!(login(&b2, "Changed-2027!"), 200);
    drop(dir);
}

fn post_values(b: &RunningBox, body: &Value) -> (u16, Value) {
    let auth = basic(ANDROID.0, ANDROID.1);
    let r = http_request(
        b.url().trim_start_matches("http://"),
        "POST",
        "/api/dataValueSets",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(body).unwrap(),
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn a_month_approved_at_national_locks_entry_on_the_box_until_national_unapproves_it() {
    const WF: &str = "cbWfOpd0001";
    let national = national_with_demo();
    let mut ds = demo_object("dataSets", DS);
    ds["workflow"] = json!({"id": WF});
    national.put_metadata(&json!({
        "dataApprovalWorkflows": [{"id": WF, "name": "OPD monthly approval",
            "periodType": "Monthly", "categoryCombo": {"id": "bjDvmb4bfuf"}}],
        "dataSets": [ds],
    }));
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    let pe = this_month(b.url());
    let state = |s: Value| json!([{"wf": WF, "pe": pe, "ou": CLINIC_A, "state": s}]);
    national.set_approvals(&state(json!("APPROVED_HERE")));

    let out = uplink_once_ok(&data, &national);
    assert_ne!(line(&out, "approvals: "), "approvals: 0 changed", "{out}");
    let q = format!("/api/dataApprovals/multiple?wf={WF}&pe={pe}&ou={CLINIC_A}");
    let (_, states) = get_as(&b, ANDROID, &q);
    assert_eq!(states[0]["state"], "APPROVED_HERE", "{states}");
    let (code, r) = post_values(&b, &month_values(&pe, ["4", "5"]));
    assert_eq!(code, 409, "{r}");
    assert_eq!(r["response"]["conflicts"][0]["errorCode"], "E7642", "{r}");
    assert_eq!(r["response"]["importCount"]["imported"], 0, "{r}");

    // A quiet round changes nothing; national un-approves: entry opens on the next round.
    let out = uplink_once_ok(&data, &national);
    assert_eq!(line(&out, "approvals: "), "approvals: 0 changed", "{out}");
    national.set_approvals(&state(Value::Null));
    let out = uplink_once_ok(&data, &national);
    assert_eq!(line(&out, "approvals: "), "approvals: 1 changed", "{out}");
    let (_, states) = get_as(&b, ANDROID, &q);
    assert_ne!(states[0]["state"], "APPROVED_HERE", "{states}");
    let (code, r) = post_values(&b, &month_values(&pe, ["4", "5"]));
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["response"]["importCount"]["imported"], 2, "{r}");
}

/// `n` patient IDs a tablet reserves on box `b`.
fn tablet_reserves(b: &RunningBox, n: usize) -> Vec<String> {
    let path =
        format!("/api/trackedEntityAttributes/cbAttrPatId/generateAndReserve?numberToReserve={n}");
    let (code, v) = get_as(b, ANDROID, &path);
    assert_eq!(code, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["value"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn patient_ids_never_collide_between_two_boxes_and_national_over_many_top_ups() {
    let national = national_with_demo();
    let a = BoxBuilder::demo().start();
    let b = BoxBuilder::demo()
        .config("[tracker]\nbox_number = 1\n")
        .start();
    // Small pools so that rounds top up often and tablets sometimes outrun them.
    let cfg = a.dir().join("uplink-small-pools.toml");
    std::fs::write(&cfg, "[uplink]\nreserved_values = 20\n").unwrap();
    let global = [std::ffi::OsStr::new("--config"), cfg.as_os_str()];
    let mut handed: Vec<String> = Vec::new();
    let mut from_national = 0;
    for round in 0..6 {
        for (bx, take) in [(&a, 12), (&b, 8 + round * 3)] {
            let out = uplink_once_with(&bx.dir().join("data"), &national, &global);
            let line = line(&out, "reserved values: ");
            from_national += line
                .split(' ')
                .nth(2)
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{line}"));
            handed.extend(tablet_reserves(bx, take));
        }
        // A national form takes some too.
        let own = national
            .get("/api/trackedEntityAttributes/cbAttrPatId/generateAndReserve?numberToReserve=5");
        handed.extend(
            own.as_array()
                .unwrap()
                .iter()
                .map(|v| v["value"].as_str().unwrap().to_string()),
        );
    }
    let unique: std::collections::HashSet<&String> = handed.iter().collect();
    assert_eq!(unique.len(), handed.len(), "a value was handed out twice");
    // Tablets got national's values first, and each box's own slice only past its pool.
    let national_range = handed.iter().filter(|v| v.as_str() < "OPD-500000").count();
    assert!(from_national >= 100, "{from_national}");
    assert!(national_range >= 100, "{national_range}");
    assert!(
        handed.iter().any(|v| v.starts_with("OPD-505")),
        "box B used its own slice"
    );
    let issued = national.ledger()["reserved"]["cbAttrPatId"]["issued"].clone();
    assert_eq!(issued.as_array().unwrap().len(), from_national + 30);
}

/// The value a tablet downloads for `(element, coc)` this month at clinic A.
fn box_value(b: &RunningBox, pe: &str, coc: &str) -> Option<String> {
    let path = format!("/api/dataValueSets?dataSet={DS}&period={pe}&orgUnit={CLINIC_A}");
    let (_, set) = get_as(b, ANDROID, &path);
    set["dataValues"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["dataElement"] == "cbDeAggOpd1" && v["categoryOptionCombo"] == coc)
        .and_then(|v| v["value"].as_str().map(str::to_string))
}

fn district_sets(national: &National, pe: &str, coc: &str, value: &str) {
    national.set_data_values(&json!([{"dataElement": "cbDeAggOpd1", "period": pe,
        "orgUnit": CLINIC_A, "categoryOptionCombo": coc,
        "attributeOptionCombo": "HllvX50cXC0", "value": value, "storedBy": "district.officer"}]));
}

fn national_value<'a>(l: &'a Value, pe: &str, coc: &str) -> &'a Value {
    &l["data_values"][format!("cbDeAggOpd1/{pe}/{CLINIC_A}/{coc}/HllvX50cXC0")]
}

#[test]
fn a_value_corrected_at_national_reaches_tablets_and_one_changed_on_both_sides_keeps_the_later() {
    const FEMALE: &str = "cbCocFemale";
    const MALE: &str = "cbCocMale01";
    let national = national_with_demo();
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    let pe = this_month(b.url());
    let (code, r) = post_values(&b, &month_values(&pe, ["4", "5"]));
    assert_eq!(code, 200, "{r}");
    uplink_once_ok(&data, &national);
    assert_eq!(national_value(&national.ledger(), &pe, FEMALE)["writes"], 1);

    // The district corrects a figure: the box takes it and does not send it back.
    district_sets(&national, &pe, FEMALE, "7");
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").starts_with("national data: 1 applied"),
        "{out}"
    );
    assert_eq!(box_value(&b, &pe, FEMALE).as_deref(), Some("7"));
    let l = national.ledger();
    assert_eq!(
        national_value(&l, &pe, FEMALE)["writes"],
        2,
        "the push and the district only"
    );
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").starts_with("national data: 0 applied"),
        "{out}"
    );

    // Changed on both sides, national later: national's value is kept on the box, the box's is
    // shown to an admin and not sent.
    let (code, r) = post_values(&b, &month_values(&pe, ["7", "9"]));
    assert_eq!(code, 200, "{r}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    district_sets(&national, &pe, MALE, "8");
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").ends_with("1 changed on both sides"),
        "{out}"
    );
    assert_eq!(box_value(&b, &pe, MALE).as_deref(), Some("8"));
    assert_eq!(national_value(&national.ledger(), &pe, MALE)["value"], "8");
    let (_, status) = get_as(&b, ADMIN, "/status.json");
    let c = &status["uplink"]["conflicts"][0];
    assert_eq!(
        (&c["onBox"], &c["atNational"], &c["chosen"]),
        (&json!("9"), &json!("8"), &json!("national")),
        "{status}"
    );

    // The other way round: the box's later change is kept and reaches national.
    district_sets(&national, &pe, MALE, "10");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (code, r) = post_values(&b, &month_values(&pe, ["7", "11"]));
    assert_eq!(code, 200, "{r}");
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").ends_with("1 changed on both sides"),
        "{out}"
    );
    assert_eq!(box_value(&b, &pe, MALE).as_deref(), Some("11"));
    assert_eq!(national_value(&national.ledger(), &pe, MALE)["value"], "11");
    let (_, status) = get_as(&b, ADMIN, "/status.json");
    assert_eq!(
        status["uplink"]["conflictsCount"], 1,
        "one record per value: {status}"
    );
    assert_eq!(
        status["uplink"]["conflicts"][0]["chosen"], "box",
        "{status}"
    );
    // Staff see that something needs a look, not the values.
    let (_, staff) = get_as(&b, ANDROID, "/status.json");
    assert_eq!(staff["uplink"]["conflicts"], json!([]), "{staff}");
}

/// What a tablet sees of three changes national made in three different sources.
fn seen_changes(b: &RunningBox) -> [bool; 3] {
    let (_, option) = get_as(b, ANDROID, "/api/options/cbOptOther1?fields=name");
    let (_, clinic) = get_as(
        b,
        ANDROID,
        &format!("/api/organisationUnits/{CLINIC_A}?fields=name"),
    );
    let (_, users) = get_as(b, ADMIN, "/api/users?fields=username&paging=false");
    let nurse = users.to_string().contains("wanjiru");
    [
        option["name"] == "Other diagnosis",
        clinic["name"] == "Clinic A (renamed)",
        nurse,
    ]
}

#[test]
fn a_link_cut_mid_pull_leaves_the_box_on_whole_metadata_old_or_new() {
    use clinicbox_tests::link::{LossyLink, Profile};
    let national = national_with_demo();
    let mut clinic = demo_object("organisationUnits", CLINIC_A);
    clinic["name"] = json!("Clinic A (renamed)");
    national.put_metadata(&json!({
        "options": [{"id": "cbOptOther1", "code": "OTHER", "name": "Other diagnosis",
            "sortOrder": 5, "optionSet": {"id": "cbOsDiag001"}}],
        "organisationUnits": [clinic],
    }));
    national.put_metadata(&nurse("Wanjiru123", false));
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("pull link seed {seed}");
    // A quick link that cuts a request or an answer at a random byte, one in six: most rounds
    // die somewhere in the pull. Whatever got through, the box holds all or none of it.
    let profile = Profile {
        delay: std::time::Duration::from_millis(10),
        rate_bps: 4_000_000,
        loss: 0.0,
        rto: std::time::Duration::from_millis(10),
        cut: 0.16,
    };
    let link = LossyLink::start(national.addr(), profile, seed);
    let url = format!("http://{}", link.addr);
    let mut applied = false;
    for round in 1..=12 {
        let (_, _, err) = clinicbox_tests::national::uplink_once_via(&data, &national, &url);
        let seen = seen_changes(&b);
        assert!(
            seen == [false; 3] || seen == [true; 3],
            "round {round}: the box holds part of national's changes {seen:?} ({})",
            err.trim()
        );
        assert!(
            !applied || seen == [true; 3],
            "round {round}: a change went back"
        );
        applied = seen == [true; 3];
    }
    let cuts = link.stats.cuts.load(std::sync::atomic::Ordering::Relaxed);
    assert!(cuts > 0, "the link cut nothing");
    eprintln!("{cuts} cut(s); applied through the bad link: {applied}");
    // The link heals: the next round brings it all.
    uplink_once_ok(&data, &national);
    assert_eq!(seen_changes(&b), [true; 3]);
}

/// A nurse sets the weight of the triage visit `p`'s event on the box.
fn nurse_sets_weight(b: &RunningBox, p: &Value, weight: &str) {
    let mut event = p["events"][0].clone();
    event["dataValues"] = json!([{"dataElement": "cbDeWeight1", "value": weight}]);
    event.as_object_mut().unwrap().remove("notes");
    import_to(b.url(), &json!({ "events": [event] }));
}

fn event_value(b: &RunningBox, event: &str, element: &str) -> Option<String> {
    let (_, ev) = get_as(
        b,
        ANDROID,
        &format!("/api/tracker/events/{event}?fields=dataValues"),
    );
    ev["dataValues"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["dataElement"] == element)
        .and_then(|d| d["value"].as_str().map(str::to_string))
}

#[test]
fn a_patient_transferred_in_at_national_reaches_tablets_and_a_visit_changed_on_both_sides_keeps_the_later_value()
 {
    let national = national_with_demo();
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    uplink_once_ok(&data, &national);

    // A patient registered elsewhere is transferred in: national holds her with an enrollment
    // at clinic A and a visit.
    let p = clinicbox_tests::clinic::patient(41);
    let (te, ev) = (
        p["trackedEntities"][0]["trackedEntity"]
            .as_str()
            .unwrap()
            .to_string(),
        p["events"][0]["event"].as_str().unwrap().to_string(),
    );
    national.set_tracker(&p);
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").starts_with("national data: 3 applied"),
        "{out}"
    );
    let (code, got) = get_as(
        &b,
        ANDROID,
        &format!("/api/tracker/trackedEntities/{te}?program=cbPrgOpd001&fields=attributes"),
    );
    assert_eq!(code, 200, "{got}");
    assert!(got.to_string().contains("Otieno"), "{got}");
    assert_eq!(event_value(&b, &ev, "cbDeWeight1").as_deref(), Some("61.5"));
    // National's own records are not sent back.
    let writes = |l: &Value| {
        (
            l["tracked_entities"][&te]["writes"].clone(),
            l["events"][&ev]["writes"].clone(),
        )
    };
    assert_eq!(writes(&national.ledger()), (json!(1), json!(1)));
    // Her child is registered at national too, with the relationship: both reach the box.
    let child = clinicbox_tests::clinic::patient(42);
    let child_te = child["trackedEntities"][0]["trackedEntity"].clone();
    national.set_tracker(&child);
    national.set_tracker(&json!({"relationships": [{"relationship": "relNation01",
        "relationshipType": "cbRelMthChd", "from": {"trackedEntity": {"trackedEntity": te}},
        "to": {"trackedEntity": {"trackedEntity": child_te}}}]}));
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").contains(" 0 skipped"),
        "{out}"
    );
    let (_, rels) = get_as(
        &b,
        ANDROID,
        &format!("/api/tracker/relationships?trackedEntity={te}"),
    );
    assert!(rels.to_string().contains("relNation01"), "{rels}");
    assert_eq!(
        national.ledger()["relationships"]["relNation01"]["writes"],
        1
    );
    // Met again in the next round's overlap: nothing rewritten, nothing sent.
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").starts_with("national data: 0 applied"),
        "{out}"
    );
    assert_eq!(writes(&national.ledger()), (json!(1), json!(1)));

    // The nurse corrects the weight on the box; then the district changes it too, and the
    // triage colour: the later weight (national's) and national's colour are kept; the box's
    // weight is shown to an admin.
    nurse_sets_weight(&b, &p, "63");
    std::thread::sleep(std::time::Duration::from_millis(20));
    national.set_tracker(&json!({"events": [{"event": ev,
        "dataValues": [{"dataElement": "cbDeWeight1", "value": "64", "storedBy": "district.officer"},
                       {"dataElement": "cbDeTriage1", "value": "RED", "storedBy": "district.officer"}]}]}));
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").ends_with("1 changed on both sides"),
        "{out}"
    );
    assert_eq!(event_value(&b, &ev, "cbDeWeight1").as_deref(), Some("64"));
    assert_eq!(event_value(&b, &ev, "cbDeTriage1").as_deref(), Some("RED"));
    let (_, status) = get_as(&b, ADMIN, "/status.json");
    let c = &status["uplink"]["conflicts"][0];
    assert_eq!(
        (&c["type"], &c["onBox"], &c["atNational"], &c["chosen"]),
        (
            &json!("event"),
            &json!("63"),
            &json!("64"),
            &json!("national")
        ),
        "{status}"
    );

    // The other way round: the district first, the nurse later: the box's value is kept and
    // reaches national.
    national.set_tracker(&json!({"events": [{"event": ev,
        "dataValues": [{"dataElement": "cbDeWeight1", "value": "65", "storedBy": "district.officer"}]}]}));
    std::thread::sleep(std::time::Duration::from_millis(20));
    nurse_sets_weight(&b, &p, "66");
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").ends_with("1 changed on both sides"),
        "{out}"
    );
    assert_eq!(event_value(&b, &ev, "cbDeWeight1").as_deref(), Some("66"));
    let weight = national.ledger()["events"][&ev]["body"]["dataValues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataElement"] == "cbDeWeight1")
        .unwrap()["value"]
        .clone();
    assert_eq!(weight, "66");

    // The visit is deleted at national (entered in error): gone from the box, not sent back.
    uplink_once_ok(&data, &national);
    national.delete_tracker("events", &ev);
    let writes = national.ledger()["events"][&ev]["writes"].clone();
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").starts_with("national data: 1 applied"),
        "{out}"
    );
    let (code, _) = get_as(&b, ANDROID, &format!("/api/tracker/events/{ev}"));
    assert_eq!(code, 404);
    let l = national.ledger();
    assert_eq!(
        (&l["events"][&ev]["writes"], &l["events"][&ev]["deleted"]),
        (&writes, &json!(true))
    );
}

/// A clinic of the district at national, outside the box's org units.
const CLINIC_Z: &str = "cbClinicZ01";

fn add_clinic_z(national: &National) {
    national.put_metadata(
        &json!({"organisationUnits": [{"id": CLINIC_Z, "name": "Lakeside Clinic Z",
        "shortName": "Clinic Z", "openingDate": "2020-01-01", "level": 3,
        "parent": {"id": "cbDistrct01"}, "path": format!("/cbCountry01/cbDistrct01/{CLINIC_Z}")}]}),
    );
}

/// A request to the box as `user`, with a JSON body.
fn send_as(
    b: &RunningBox,
    user: (&str, &str),
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let auth = basic(user.0, user.1);
    let r = http_request(
        b.url().trim_start_matches("http://"),
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(body).unwrap(),
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// National's ownership moves, as its ledger lists them.
fn transfers(national: &National) -> Vec<Value> {
    national.ledger()["transfers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_patient_transferred_in_from_a_clinic_the_box_does_not_hold_brings_her_records_and_a_move_on_the_box_reaches_national_once()
 {
    // The box serves clinics A and B.
    let national = national_with_demo();
    national.assign_sync_user(&[CLINIC_A, "cbClinicB01"]);
    // A clinic of the district the box knows nothing of.
    add_clinic_z(&national);
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    uplink_once_ok(&data, &national);

    // She was registered, enrolled and seen at clinic Z: national's pulls for the box do not
    // carry her while Z owns her.
    let p: Value = serde_json::from_str(
        &clinicbox_tests::clinic::patient(43)
            .to_string()
            .replace(CLINIC_A, CLINIC_Z),
    )
    .unwrap();
    let te = p["trackedEntities"][0]["trackedEntity"]
        .as_str()
        .unwrap()
        .to_string();
    let ev = p["events"][0]["event"].as_str().unwrap().to_string();
    let en = p["enrollments"][0]["enrollment"]
        .as_str()
        .unwrap()
        .to_string();
    national.set_tracker(&p);
    uplink_once_ok(&data, &national);
    let her = format!("/api/tracker/trackedEntities/{te}?program={OPD}&fields=*");
    assert_eq!(get_as(&b, ADMIN, &her).0, 404);

    // National transfers her to clinic A: she comes with her enrollment and visit at Z.
    national.transfer(&te, OPD, CLINIC_A);
    let out = uplink_once_ok(&data, &national);
    assert!(
        line(&out, "national data: ").starts_with("national data: 3 applied"),
        "{out}"
    );
    let (code, got) = get_as(&b, ANDROID, &her);
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["enrollments"][0]["orgUnit"], CLINIC_Z, "{got}");
    assert_eq!(
        got["programOwners"][0]["orgUnit"], CLINIC_A,
        "the owner is clinic A: {got}"
    );
    assert_eq!(event_value(&b, &ev, "cbDeWeight1").as_deref(), Some("61.5"));

    // The nurse sees her at clinic A: the visit reaches national, which now lets the box write.
    let visit = json!({"events": [{"event": "evTransfer1", "enrollment": en, "program": OPD,
        "programStage": "cbStgConsul", "orgUnit": CLINIC_A, "status": "ACTIVE",
        "occurredAt": "2026-12-05T10:00:00.000",
        "dataValues": [{"dataElement": "cbDeDiagnos", "value": "MALARIA"}]}]});
    import_to(b.url(), &visit);
    uplink_once_ok(&data, &national);
    assert_eq!(national.ledger()["events"]["evTransfer1"]["writes"], 1);

    // The district admin moves her to clinic B (also the box's) on the box; national's answer
    // is cut, so the move is sent again next round and national moves her once.
    let (code, body) = send_as(
        &b,
        ADMIN,
        "PUT",
        &format!("/api/tracker/ownership/transfer?trackedEntity={te}&program={OPD}&ou=cbClinicB01"),
        &Value::Null,
    );
    assert_eq!(code, 200, "{body}");
    national.faults(json!({"drop_transfer_answers": 1}));
    let _ = clinicbox_tests::national::uplink_once(&data, &national);
    uplink_once_ok(&data, &national);
    uplink_once_ok(&data, &national);
    let l = national.ledger();
    assert_eq!(
        (
            &l["requests"]["PUT /api/tracker/ownership/transfer"],
            &l["dropped_answers"]
        ),
        (&json!(2), &json!(1))
    );
    let moves = transfers(&national);
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert_eq!(
        (&moves[1]["to"], &moves[1]["by"]),
        (&json!("cbClinicB01"), &json!("sync"))
    );
    assert_eq!(
        national.get(&format!(
            "/api/tracker/trackedEntities?program={OPD}&orgUnits=cbClinicB01&ouMode=DESCENDANTS"
        ))["trackedEntities"][0]["trackedEntity"],
        te.as_str()
    );

    // National's copy met again in the pull's overlap did not undo the box's move. The box
    // keeps her records; clinic A's nurse may no longer write for her, as on national.
    let (code, got) = get_as(&b, ADMIN, &her);
    assert_eq!(code, 200);
    assert_eq!(got["programOwners"][0]["orgUnit"], "cbClinicB01", "{got}");
    let mut later = visit.clone();
    later["events"][0]["event"] = json!("evTransfer2");
    let (_, report) = send_as(&b, ANDROID, "POST", "/api/tracker?async=false", &later);
    assert_eq!(report["status"], "ERROR", "{report}");
    assert!(report.to_string().contains("E1102"), "{report}");
}

#[test]
fn a_patient_national_moves_away_keeps_her_records_on_the_box_and_its_tablets_learn_it_from_the_first_refused_write()
 {
    let national = national_with_demo();
    add_clinic_z(&national);
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    // Registered and seen at clinic A on the box, sent to national.
    let p = clinicbox_tests::clinic::patient(44);
    let te = p["trackedEntities"][0]["trackedEntity"]
        .as_str()
        .unwrap()
        .to_string();
    let en = p["enrollments"][0]["enrollment"]
        .as_str()
        .unwrap()
        .to_string();
    import_to(b.url(), &p);
    uplink_once_ok(&data, &national);
    assert_eq!(national.ledger()["tracked_entities"][&te]["writes"], 1);

    // National moves her to clinic Z; the box's queries no longer carry her, and a nurse records
    // a consultation on the box: national refuses it, and the box learns where she went.
    national.transfer(&te, OPD, CLINIC_Z);
    let consult = |event: &str| {
        json!({"events": [{"event": event, "enrollment": en, "program": OPD,
            "programStage": "cbStgConsul", "orgUnit": CLINIC_A, "status": "ACTIVE",
            "occurredAt": "2026-12-05T10:00:00.000",
            "dataValues": [{"dataElement": "cbDeDiagnos", "value": "MALARIA"}]}]})
    };
    import_to(b.url(), &consult("evMovedAw01"));
    let out = uplink_once_ok(&data, &national);
    assert!(out.contains("events evMovedAw01: E1102"), "{out}");
    assert!(
        out.contains("1 patient(s) moved away from the box's clinics at national"),
        "{out}"
    );
    assert!(national.ledger()["events"]["evMovedAw01"].is_null());

    // Her records stay on the box; clinic A's tablets now get DHIS2's answer themselves.
    let (code, got) = get_as(
        &b,
        ADMIN,
        &format!("/api/tracker/trackedEntities/{te}?fields=attributes"),
    );
    assert_eq!(code, 200, "{got}");
    assert!(got.to_string().contains("Otieno"), "{got}");
    let (_, report) = send_as(
        &b,
        ANDROID,
        "POST",
        "/api/tracker?async=false",
        &consult("evMovedAw02"),
    );
    assert!(report.to_string().contains("E1102"), "{report}");
    // Asked once: the next round has nothing new refused.
    let out = uplink_once_ok(&data, &national);
    assert!(!out.contains("moved away"), "{out}");
    assert_eq!(
        national.ledger()["requests"]["GET /api/tracker/trackedEntities/{uid}"],
        1
    );
}
