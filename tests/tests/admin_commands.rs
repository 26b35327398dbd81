//! The admin commands as a technician meets them beside a demo box.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clinicbox_tests::{BoxBuilder, run_admin};

#[test]
fn a_demo_store_opens_for_admin_commands_by_its_data_directory_and_a_held_store_says_who_holds_it()
{
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data").display().to_string();
    // `serve` holds the store: the command says so, once.
    let (st, out, err) = run_admin(&["--data-dir", &data, "user", "list"], "");
    assert!(!st.success(), "{out}");
    assert!(err.contains("in use by `clinicbox serve`"), "{err}");
    let dir = b.kill();
    // Stopped: the demo's key next to its data opens it, no flag needed.
    let data = dir.path().join("data").display().to_string();
    let (st, out, err) = run_admin(&["--data-dir", &data, "user", "list"], "");
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("android"), "{out}");
    // A password changed on the demo survives its next start.
    let (st, out, err) = run_admin(
        &["--data-dir", &data, "user", "passwd", "android"],
        "Changed-Pass-2026\n",
    );
    assert!(st.success(), "{out}{err}");
    let again = BoxBuilder::new()
        .arg("--demo")
        .arg("--data-dir")
        .arg(&data)
        .start();
    let login = |password: &str| {
        clinicbox_tests::http_request(
            again.url().trim_start_matches("http://"),
            "GET",
            "/api/me",
            &[(
                "Authorization",
                &clinicbox_tests::clinic::basic("android", password),
            )],
            b"",
        )
        .status
    };
    assert_eq!(login("Changed-Pass-2026"), 200);
    assert_eq!(login("Android123"), 401);
    drop(again);
    // Elsewhere, a store with no way configured to unlock it says what to set.
    let (st, _, err) = run_admin(
        &["--data-dir", "/nonexistent-clinicbox", "user", "list"],
        "",
    );
    assert!(!st.success());
    assert!(err.contains("store.key_file"), "{err}");
}

#[test]
fn a_second_box_on_a_port_in_use_says_so_before_it_writes_anything() {
    let first = BoxBuilder::demo().start();
    let port = first.url().rsplit(':').next().expect("port").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let (st, out, err) = run_admin(
        &[
            "serve",
            "--demo",
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        "",
    );
    assert!(!st.success(), "{out}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(
        !data.exists(),
        "a store was made before the port was checked"
    );
}
