//! The fleet through national's dataStore, end to end: a demo box, the real `clinicbox uplink
//! --once` checking in to the stand-in national, a remote admin writing the box's configuration
//! there with national's own API, and `clinicbox fleet report` reading every box back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use clinicbox_tests::clinic::{CLINIC_A, basic, demo_package, import_to, patient};
use clinicbox_tests::national::{National, uplink_once, uplink_once_ok};
use clinicbox_tests::{BoxBuilder, RunningBox, http_request, run_admin};
use serde_json::{Value, json};

const CHECK_INS: &str = "/api/dataStore/clinicbox-fleet";

fn national_with_demo() -> National {
    let national = National::start(None);
    national.put_metadata(&demo_package());
    national.assign_sync_user(&[CLINIC_A]);
    national
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {out}"))
}

/// The box's one check-in at national.
fn check_in(national: &National) -> Value {
    let keys = national.get(CHECK_INS);
    let key = keys[0]
        .as_str()
        .unwrap_or_else(|| panic!("no check-in: {keys}"));
    national.get(&format!("{CHECK_INS}/{key}"))
}

fn status(b: &RunningBox) -> Value {
    let r = http_request(
        b.url().trim_start_matches("http://"),
        "GET",
        "/status.json",
        &[("Authorization", &basic("admin", "district"))],
        b"",
    );
    r.json()
}

/// A remote admin's wish for box `id`, written with national's dataStore API.
fn wish(national: &National, id: &str, config: &Value) {
    let path = format!("/api/dataStore/clinicbox-fleet-config/{id}");
    let (st, _) = national.send("PUT", &path, config);
    if st == 404 {
        let (st, answer) = national.send("POST", &path, config);
        assert_eq!(st, 201, "{answer}");
    }
}

/// The maintenance window `clinicbox update status` says is in force, and where it comes from.
fn reboot_window(data: &Path) -> (Value, Value) {
    let state = data.join("update-state");
    let config = data.join("update.toml");
    std::fs::write(
        &config,
        format!("[update]\nstate_dir = \"{}\"\n", state.display()),
    )
    .unwrap();
    let (st, out, err) = run_admin(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "update",
            "status",
        ],
        "",
    );
    assert!(st.success(), "{out}{err}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    (
        shown["rebootHours"].clone(),
        shown["rebootHoursFrom"].clone(),
    )
}

fn backup_to(b: &RunningBox) -> PathBuf {
    let stick = b.dir().join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    let data = b.dir().join("data");
    let (st, out, err) = run_admin(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "backup",
            "--to",
            stick.to_str().unwrap(),
        ],
        "",
    );
    assert!(st.success(), "{out}{err}");
    PathBuf::from(out.lines().last().unwrap().trim())
}

#[test]
fn a_box_checks_in_with_figures_only_and_applies_a_valid_remote_configuration_once() {
    let national = national_with_demo();
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    import_to(b.url(), &patient(1));
    let backup = backup_to(&b);

    let out = uplink_once_ok(&data, &national);
    assert_eq!(
        line(&out, "check-in: "),
        "check-in: sent (no remote configuration for this box)"
    );
    let c = check_in(&national);
    let id = c["boxId"].as_str().expect("boxId").to_string();
    assert_eq!(c["version"], env!("CARGO_PKG_VERSION"), "{c}");
    assert_eq!(c["pending"], 0, "everything went in this round: {c}");
    assert_eq!(c["parked"], 0, "{c}");
    assert!(c["lastSyncMs"].as_u64().is_some(), "{c}");
    assert_eq!(
        c["lastBackup"]["bytes"].as_u64(),
        Some(std::fs::metadata(&backup).unwrap().len()),
        "{c}"
    );
    assert!(c["disk"]["totalBytes"].as_u64().unwrap_or(0) > 0, "{c}");
    assert!(c["clockOffsetSecs"].as_i64().is_some(), "{c}");
    // Figures only: no patient, no account, no record id.
    let text = c.to_string();
    for secret in [
        "Amina",
        "Otieno",
        "UP-0001",
        "android",
        patient(1)["trackedEntities"][0]["trackedEntity"]
            .as_str()
            .unwrap(),
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // A remote admin sets two settings; the next round applies them and says so.
    wish(
        &national,
        &id,
        &json!({"revision": 1, "by": "hq-admin", "settings": {"nightlyBackupHour": 3, "staleTabletDays": 14, "rebootHours": [22, 4]}}),
    );
    assert_eq!(
        reboot_window(&data),
        (json!([2, 5]), json!("[update] reboot_hours")),
        "before: the configured window"
    );
    let out = uplink_once_ok(&data, &national);
    assert_eq!(
        line(&out, "check-in: "),
        "check-in: sent; remote configuration 1 in force"
    );
    let c = check_in(&national);
    assert_eq!(c["remoteConfig"]["appliedRevision"], 1, "{c}");
    assert_eq!(c["remoteConfig"]["appliedBy"], "hq-admin", "{c}");
    assert_eq!(c["remoteConfig"]["settings"]["staleTabletDays"], 14, "{c}");
    let st = status(&b);
    assert_eq!(
        st["stale_tablet_days"], 14,
        "the status page follows the remote setting"
    );
    let audit = st["audit"].as_array().expect("audit trail");
    assert_eq!(audit[0]["who"], "fleet configuration by hq-admin", "{st}");
    assert_eq!(audit[0]["action"], "remote configuration 1 applied");
    assert_eq!(
        audit[0]["detail"],
        "nightlyBackupHour = 3, rebootHours = 22:00-4:00, staleTabletDays = 14"
    );
    assert_eq!(
        reboot_window(&data),
        (json!([22, 4]), json!("remote configuration")),
        "the installer restarts in the remote admin's window"
    );

    // An hour that is not one, and a setting the box does not offer: refused whole, the
    // settings in force stay, and the refusal is echoed.
    for (rev, config) in [
        (
            2,
            json!({"revision": 2, "by": "hq-admin", "settings": {"nightlyBackupHour": 25}}),
        ),
        (
            3,
            json!({"revision": 3, "settings": {"staleTabletDays": 2, "sshEnabled": true}}),
        ),
    ] {
        wish(&national, &id, &config);
        let out = uplink_once_ok(&data, &national);
        let said = line(&out, "check-in: ");
        assert!(
            said.contains(&format!("remote configuration {rev} refused")),
            "{said}"
        );
        let c = check_in(&national);
        assert_eq!(c["remoteConfig"]["appliedRevision"], 1, "{c}");
        assert_eq!(c["remoteConfig"]["refusedRevision"], rev, "{c}");
        assert_eq!(status(&b)["stale_tablet_days"], 14);
    }
    // An older revision written back later never undoes a newer one.
    wish(
        &national,
        &id,
        &json!({"revision": 1, "settings": {"staleTabletDays": 30}}),
    );
    uplink_once_ok(&data, &national);
    assert_eq!(status(&b)["stale_tablet_days"], 14);
    let audit_len = status(&b)["audit"].as_array().unwrap().len();
    assert_eq!(audit_len, 3, "applied, refused, refused: {}", status(&b));

    // What was applied survives a restart.
    let kept = b.kill();
    let b = BoxBuilder::demo_at(data.display().to_string()).start();
    assert_eq!(status(&b)["stale_tablet_days"], 14);
    b.stop();
    drop(kept);
    let writes = &national.ledger()["data_store_writes"];
    assert_eq!(
        writes[format!("clinicbox-fleet/{id}")],
        5,
        "one check-in per round: {writes}"
    );
}

#[test]
fn a_check_in_national_refuses_is_said_and_the_round_still_sends_the_clinic_s_records() {
    let national = national_with_demo();
    national.faults(json!({"data_store_forbidden": true}));
    let b = BoxBuilder::demo().start();
    import_to(b.url(), &patient(2));
    let (st, out, err) = uplink_once(&b.dir().join("data"), &national);
    assert!(st.success(), "{err}{out}");
    let said = line(&out, "check-in: ");
    assert!(
        said.starts_with("check-in: failed:") && said.contains("403"),
        "{said}"
    );
    let l = national.ledger();
    assert_eq!(
        l["tracked_entities"].as_object().map(|m| m.len()),
        Some(1),
        "{l}"
    );
    assert!(
        l["data_store"].as_object().is_none_or(|m| m.is_empty()),
        "{l}"
    );
}

#[test]
fn fleet_report_lists_every_box_with_the_troubled_ones_first() {
    let national = national_with_demo();
    let b = BoxBuilder::demo().start();
    uplink_once_ok(&b.dir().join("data"), &national);
    // Another box, silent for five days with records national refused.
    let now = jiff::Timestamp::now().as_millisecond();
    let silent = json!({"boxId": "clinic-upcountry", "clinicName": "Upcountry", "version": "0.0.9",
        "uptimeSecs": 100, "pending": 40, "parked": 2, "tabletsSeen": 3, "tabletsStale": 0,
        "checkedInAtMs": now - 5 * 86_400_000});
    let (st, answer) = national.send("POST", &format!("{CHECK_INS}/clinic-upcountry"), &silent);
    assert_eq!(st, 201, "{answer}");

    let (st, out, err) = run_admin(
        &[
            "fleet",
            "report",
            "--national-url",
            &national.url,
            "--token-file",
            national.token_file.to_str().unwrap(),
        ],
        "",
    );
    assert!(st.success(), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("BOX"), "{out}");
    assert!(lines[1].starts_with("clinic-upcountry"), "{out}");
    assert!(
        lines[1].contains("silent 5 days") && lines[1].contains("2 refused by national"),
        "{out}"
    );
    assert!(lines[2].contains(env!("CARGO_PKG_VERSION")), "{out}");
    assert_eq!(lines[3], "2 box(es)");
}
