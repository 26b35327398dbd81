//! The daemon as systemd and a technician see it: readiness, watchdog, clean stop, key slots.

use std::time::Duration;

use clinicbox_tests::{BoxBuilder, init_store, run_admin};

#[test]
fn demo_box_reports_ready_serves_and_stops_cleanly_on_sigterm() {
    let mut b = BoxBuilder::demo().start();
    assert!(b.url().starts_with("http://127.0.0.1:"));
    let health = b.request("GET", "/health", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert!(b.notifications().iter().any(|n| n.starts_with("STATUS=")));
    assert!(
        b.dir()
            .join("data")
            .join(clinicbox_store::DB_FILE)
            .is_file()
    );
    let log = b.stop();
    assert!(
        log.contains("store closed"),
        "the store was not closed on SIGTERM:\n{log}"
    );
}

#[test]
fn a_demo_box_restarts_on_its_existing_store() {
    let first = BoxBuilder::demo();
    let dir = first.dir().to_owned();
    let b = first.start();
    let data = dir.join("data");
    let kept = b.kill();
    let again = BoxBuilder::demo_at(data.display().to_string()).start();
    assert_eq!(again.request("GET", "/health", &[], b"").status, 200);
    again.stop();
    drop(kept);
}

/// A SIGTERM that arrives the instant the box starts answering (before READY) still closes the
/// store: the handler is installed before the store opens. Ten starts, signalled at once.
#[test]
fn a_sigterm_right_at_start_still_closes_the_store() {
    for round in 0..10 {
        let mut b = BoxBuilder::demo().spawn();
        b.stdout_until(
            |l| l.starts_with("ClinicBox: serving http://"),
            Duration::from_secs(60),
        );
        let log = b.stop();
        assert!(
            log.contains("store closed"),
            "round {round}: the store was not closed:\n{log}"
        );
    }
}

/// Clients that send half a header, or a body slowly, hold neither the write gate nor the
/// stop: SIGTERM finishes well inside the unit's `TimeoutStopSec=30s`.
#[test]
fn slow_clients_do_not_hold_a_stop() {
    use std::io::Write;
    let b = BoxBuilder::demo()
        .config("[http]\ndrain_secs = 5\nheader_timeout_secs = 3\nbody_idle_secs = 20\n")
        .start();
    let addr = b.url().trim_start_matches("http://").to_owned();
    let mut half_header = std::net::TcpStream::connect(&addr).expect("connect");
    half_header
        .write_all(b"GET /api/me HTTP/1.1\r\nHost: box\r\nAuthoriz")
        .expect("write");
    let mut slow_body = std::net::TcpStream::connect(&addr).expect("connect");
    slow_body
        .write_all(
            b"POST /api/tracker HTTP/1.1\r\nHost: box\r\nAuthorization: Basic YW5kcm9pZDpBbmRyb2lkMTIz\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"trackedEntities\": [",
        )
        .expect("write");
    std::thread::sleep(Duration::from_millis(500));
    let log = b.stop_within(Duration::from_secs(15));
    assert!(log.contains("store closed"), "{log}");
    drop((half_header, slow_body));
}

#[test]
fn the_watchdog_is_petted_when_systemd_asks_for_one() {
    let mut b = BoxBuilder::demo().watchdog(400_000).start();
    b.wait_for_notification("WATCHDOG=1", Duration::from_secs(10));
    b.stop();
}

#[test]
fn a_wrong_key_file_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key = dir.path().join("store.key");
    let out = init_store(&data, &key, &[]);
    assert!(out.contains("recovery key"), "{out}");
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, [1u8; 32]).expect("write");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[store]\nkey_file = \"{}\"\n[http]\nlisten = [\"127.0.0.1:0\"]\n",
            data.display(),
            wrong.display()
        ),
    )
    .expect("w");
    let (st, _, err) = run_admin(&["--config", &cfg.display().to_string(), "serve"], "");
    assert!(!st.success());
    assert!(err.contains("no key slot accepts this key file"), "{err}");
}

#[test]
fn keys_commands_manage_slots_and_a_pin_box_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let key = dir.path().join("store.key").display().to_string();
    let (st, out, err) = run_admin(
        &["--data-dir", &data, "keys", "init", "--key-file", &key],
        "",
    );
    assert!(st.success(), "{out}{err}");
    let recovery = out
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 39 && l.chars().filter(|c| *c == '-').count() == 7)
        .expect("recovery key printed")
        .to_owned();

    let (st, out, err) = run_admin(
        &[
            "--data-dir",
            &data,
            "keys",
            "add-pin",
            "--unlock-key-file",
            &key,
        ],
        "2468-clinic\n",
    );
    assert!(st.success(), "{out}{err}");
    let (st, out, _) = run_admin(
        &["--data-dir", &data, "keys", "list", "--unlock-recovery"],
        &format!("{recovery}\n"),
    );
    assert!(st.success());
    for kind in ["KeyFile", "Recovery", "Pin"] {
        assert!(out.contains(kind), "{kind} missing in:\n{out}");
    }
    assert!(out.contains(" UTC"), "slot times as dates:\n{out}");
    let (st, _, err) = run_admin(
        &["--data-dir", &data, "keys", "remove", "0", "--unlock-pin"],
        "2468-clinic\n",
    );
    assert!(st.success(), "{err}");
    let (st, _, err) = run_admin(
        &[
            "--data-dir",
            &data,
            "keys",
            "list",
            "--unlock-key-file",
            &key,
        ],
        "",
    );
    assert!(!st.success(), "a removed key-file slot still unlocks");
    assert!(err.contains("no key slot accepts"), "{err}");
    let (st, _, err) = run_admin(
        &["--data-dir", &data, "keys", "remove", "1", "--unlock-pin"],
        "wrong-pin\n",
    );
    assert!(
        !st.success() && err.contains("no key slot accepts this PIN"),
        "{err}"
    );

    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "2468-clinic\n").expect("w");
    let b = BoxBuilder::new()
        .config(&format!(
            "data_dir = \"{data}\"\n[store]\npin_file = \"{}\"\n",
            pin_file.display()
        ))
        .start();
    assert_eq!(b.request("GET", "/health", &[], b"").status, 200);
    b.stop();
}
