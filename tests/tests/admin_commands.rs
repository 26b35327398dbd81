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
    let again = BoxBuilder::demo_at(&data).start();
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
    // The change is in the box's audit trail, as made on the command line.
    let status = clinicbox_tests::http_request(
        again.url().trim_start_matches("http://"),
        "GET",
        "/status.json",
        &[(
            "Authorization",
            &clinicbox_tests::clinic::basic("admin", "district"),
        )],
        b"",
    )
    .json();
    let newest = &status["audit"][0];
    assert!(
        newest["who"]
            .as_str()
            .is_some_and(|w| w.starts_with("command line (")),
        "{status}"
    );
    assert_eq!(newest["action"], "password reset");
    assert_eq!(newest["detail"], "android");
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

#[test]
fn a_refused_file_names_the_user_that_was_refused() {
    if !clinicbox_tests::prerequisites("permission errors", &["setpriv"], true) {
        return;
    }
    let b = BoxBuilder::demo().start();
    let dir = b.kill();
    let data = dir.path().join("data");
    // The demo's data belongs to root, mode 0700: user `nobody` may not read it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(clinicbox_tests::binary())
        .arg("--data-dir")
        .arg(&data)
        .args(["user", "list"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("permission denied to user nobody"), "{err}");
    assert!(
        err.contains(&data.display().to_string()),
        "names the file: {err}"
    );
}
