//! Backups end to end: the real `clinicbox serve`, `clinicbox backup` beside it while a tablet
//! keeps writing, and `clinicbox restore` into a new data directory that another box then
//! serves. What the tablets read back is the judge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use clinicbox_tests::clinic::{basic, import_to, patient};
use clinicbox_tests::{BoxBuilder, RunningBox, http_request, run_admin};

fn te_of(n: u32) -> String {
    patient(n)["trackedEntities"][0]["trackedEntity"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `clinicbox backup`; returns the file it printed last.
fn backup(args: &[&str]) -> PathBuf {
    let (st, out, err) = run_admin(args, "");
    assert!(st.success(), "backup: {out}{err}");
    PathBuf::from(out.lines().last().expect("a path").trim())
}

fn restore(args: &[&str], stdin: &str) -> (bool, String) {
    let (st, out, err) = run_admin(args, stdin);
    (st.success(), format!("{out}{err}"))
}

/// A tablet's read of patient `te`: its status and first name.
fn read_patient(b: &RunningBox, te: &str) -> (u16, String) {
    let r = http_request(
        b.url().trim_start_matches("http://"),
        "GET",
        &format!("/api/tracker/trackedEntities/{te}?fields=attributes"),
        &[("Authorization", &basic("android", "Android123"))],
        b"",
    );
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// The status page's "Last backup" line.
fn last_backup(b: &RunningBox) -> String {
    let r = http_request(b.url().trim_start_matches("http://"), "GET", "/", &[], b"");
    let page = String::from_utf8_lossy(&r.body).into_owned();
    page.split("data-figure=\"backup\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or("(no backup line)")
        .to_string()
}

/// Restores `file` with the HQ identity `hq` into `dir/data` (must succeed).
fn restore_with(file: &Path, hq: &str, dir: &Path) -> PathBuf {
    let new_dir = dir.join("data");
    let (ok, out) = restore(
        &[
            "--data-dir",
            &s(&new_dir),
            "restore",
            &s(file),
            "--hq-identity",
            hq,
        ],
        "",
    );
    assert!(ok, "{out}");
    new_dir
}

/// A demo box serving the data directory `dir`.
fn serve_demo(dir: &Path) -> RunningBox {
    BoxBuilder::demo_at(s(dir)).start()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_backup_taken_while_a_tablet_writes_restores_every_acknowledged_patient_on_another_box() {
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    let stick = tempfile::tempdir().expect("stick");
    // A tablet keeps registering patients while the backup runs; every one it was told was
    // stored before the backup started must come back.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tablet = {
        let (acked, stop, url) = (acked.clone(), stop.clone(), b.url().to_string());
        std::thread::spawn(move || {
            for n in 100..400u32 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                import_to(&url, &patient(n));
                acked.lock().unwrap().push(n);
            }
        })
    };
    while acked.lock().unwrap().len() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before: Vec<u32> = acked.lock().unwrap().clone();
    assert!(last_backup(&b).contains("never"), "{}", last_backup(&b));
    let file = backup(&["--data-dir", &s(&data), "backup", "--to", &s(stick.path())]);
    // The status page says when, how big and where.
    let said = last_backup(&b);
    assert!(said.contains(&s(stick.path())), "{said}");
    stop.store(true, Ordering::Release);
    tablet.join().expect("the tablet was never refused");
    assert!(file.is_file(), "{file:?}");
    assert!(file.starts_with(stick.path()));

    // Restored into a new data directory, served by another box.
    let hq = s(&data.join("hq.key"));
    let target = tempfile::tempdir().expect("target");
    let new_dir = restore_with(&file, &hq, target.path());
    assert!(
        !new_dir.join("hq.key").exists(),
        "a backup holds no key to itself"
    );
    let replacement = serve_demo(&new_dir);
    for n in &before {
        let (code, body) = read_patient(&replacement, &te_of(*n));
        assert_eq!(code, 200, "patient {n}: {body}");
        assert!(body.contains("Otieno"), "{body}");
    }
    // The same box: same id, so tablets and national see one box.
    let id = |b: &RunningBox| {
        let r = http_request(
            b.url().trim_start_matches("http://"),
            "GET",
            "/api/system/info",
            &[("Authorization", &basic("android", "Android123"))],
            b"",
        );
        r.json()["systemId"].clone()
    };
    assert_eq!(id(&replacement), id(&b));
    // A restore never overwrites: the data directory now exists and is not empty.
    let (ok, out) = restore(
        &[
            "--data-dir",
            &s(&new_dir),
            "restore",
            &s(&file),
            "--hq-identity",
            &hq,
        ],
        "",
    );
    assert!(!ok && out.contains("not empty"), "{out}");
}

#[test]
fn a_tampered_cut_or_foreign_backup_is_refused_and_nothing_is_made() {
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    import_to(b.url(), &patient(7));
    let stick = tempfile::tempdir().expect("stick");
    let file = backup(&["--data-dir", &s(&data), "backup", "--to", &s(stick.path())]);
    let bytes = std::fs::read(&file).expect("read");
    let hq = s(&data.join("hq.key"));
    let target = tempfile::tempdir().expect("target");
    let attempt = |name: &str, content: &[u8], key: &str| {
        let f = stick.path().join(name);
        std::fs::write(&f, content).expect("write");
        let new_dir = target.path().join(name);
        let (ok, out) = restore(
            &[
                "--data-dir",
                &s(&new_dir),
                "restore",
                &s(&f),
                "--hq-identity",
                key,
            ],
            "",
        );
        assert!(!ok, "{name} was restored: {out}");
        assert!(!new_dir.exists(), "{name}: a directory was made");
        assert!(!target.path().join(format!("{name}.partial")).exists());
        out
    };
    let mut tampered = bytes.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x40;
    attempt("tampered", &tampered, &hq);
    attempt("cut", &bytes[..bytes.len() * 2 / 3], &hq);
    attempt("not-a-backup", b"hello", &hq);
    // Another ministry's key.
    let other = BoxBuilder::demo().start();
    let foreign = s(&other.dir().join("data/hq.key"));
    let out = attempt("foreign", &bytes, &foreign);
    assert!(out.contains("does not open"), "{out}");
}

#[test]
fn a_box_set_up_as_the_image_does_is_restored_with_its_printed_recovery_key() {
    let dir = tempfile::tempdir().expect("dir");
    let (cfg_path, recovery) = image_like_box(dir.path(), true);
    let b = BoxBuilder::new().arg("--config").arg(s(&cfg_path)).start();
    // Nobody but the recovery key opens it: no HQ key is configured.
    let stick = tempfile::tempdir().expect("stick");
    let file = backup(&[
        "--config",
        &s(&cfg_path),
        "backup",
        "--to",
        &s(stick.path()),
    ]);
    drop(b);
    let new_dir = dir.path().join("restored");
    let (ok, out) = restore(
        &[
            "--data-dir",
            &s(&new_dir),
            "restore",
            &s(&file),
            "--recovery-key",
        ],
        &format!("{recovery}\n"),
    );
    assert!(ok, "{out}");
    assert!(new_dir.join("keys/store.key").is_file());
    // A wrong recovery key opens nothing.
    let (ok, out) = restore(
        &[
            "--data-dir",
            &s(&dir.path().join("other")),
            "restore",
            &s(&file),
            "--recovery-key",
        ],
        "0000-0000-0000-0000-0000-0000-0000-0000\n",
    );
    assert!(!ok && out.contains("does not open"), "{out}");
}

#[test]
fn a_restored_box_resumes_the_uplink_where_the_old_one_stopped_so_national_applies_nothing_twice() {
    use clinicbox_tests::national::{National, pushed, uplink_once_ok};
    let national = National::start(None);
    national.put_metadata(&clinicbox_tests::clinic::demo_package());
    national.assign_sync_user(&[clinicbox_tests::clinic::CLINIC_A]);
    let old = BoxBuilder::demo().start();
    let data = old.dir().join("data");
    for n in 1..=3 {
        import_to(old.url(), &patient(n));
    }
    uplink_once_ok(&data, &national);
    // Recorded after the last round: only the backup holds it.
    import_to(old.url(), &patient(4));
    let stick = tempfile::tempdir().expect("stick");
    let file = backup(&["--data-dir", &s(&data), "backup", "--to", &s(stick.path())]);
    let hq = s(&data.join("hq.key"));
    let _old_dir = old.kill();

    let target = tempfile::tempdir().expect("target");
    let new_dir = restore_with(&file, &hq, target.path());
    let replacement = serve_demo(&new_dir);
    let out = uplink_once_ok(&new_dir, &national);
    assert_eq!(pushed(&out, "trackedEntities"), 1, "{out}");
    let ledger = national.ledger();
    for n in 1..=4 {
        assert_eq!(
            ledger["tracked_entities"][te_of(n)]["writes"],
            1,
            "patient {n}"
        );
    }
    drop(replacement);
}

#[test]
fn a_backup_killed_at_any_moment_leaves_the_earlier_backups_whole_and_no_file_that_looks_complete()
{
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    // Enough records that a backup takes a moment to write.
    import_to(b.url(), &clinicbox_tests::clinic::patients(1000, 150));
    let stick = tempfile::tempdir().expect("stick");
    let first = backup(&["--data-dir", &s(&data), "backup", "--to", &s(stick.path())]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    let mut delay = u64::from(seed % 97);
    for _ in 0..8 {
        let mut child = std::process::Command::new(clinicbox_tests::binary())
            .args(["--data-dir", &s(&data), "backup", "--to", &s(stick.path())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn backup");
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        delay = (delay * 37 + 11) % 120;
    }
    // Every file that looks like a backup opens whole; the first one is still there.
    let hq = s(&data.join("hq.key"));
    let target = tempfile::tempdir().expect("target");
    let mut backups: Vec<PathBuf> = std::fs::read_dir(stick.path())
        .expect("stick")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "backup"))
        .collect();
    backups.sort();
    assert!(
        backups.contains(&first) || backups.len() >= 5,
        "{backups:?}"
    );
    for (i, f) in backups.iter().enumerate() {
        let new_dir = target.path().join(format!("r{i}"));
        let (ok, out) = restore(
            &[
                "--data-dir",
                &s(&new_dir),
                "restore",
                &s(f),
                "--hq-identity",
                &hq,
            ],
            "",
        );
        assert!(ok, "{f:?}: {out}");
    }
}

#[test]
fn a_full_stick_is_said_in_words_and_leaves_no_partial_file() {
    let stick = tempfile::tempdir().expect("stick");
    // A 64 KiB stick: needs root to mount.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs", &s(stick.path())])
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        clinicbox_tests::skipped("a full stick (a small tmpfs mounted) needs root");
        return;
    }
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    let (st, out, err) = run_admin(
        &["--data-dir", &s(&data), "backup", "--to", &s(stick.path())],
        "",
    );
    let left: Vec<_> = std::fs::read_dir(stick.path())
        .expect("stick")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let _ = std::process::Command::new("umount")
        .arg(stick.path())
        .status();
    assert!(!st.success(), "{out}");
    assert!(err.contains("is full"), "{err}");
    assert!(left.is_empty(), "{left:?}");
}

/// `path` of the box as the demo's admin, with `method` and a same-origin header.
fn as_admin(b: &RunningBox, method: &str, path: &str) -> (u16, String) {
    let host = b.url().trim_start_matches("http://").to_string();
    let r = http_request(
        &host,
        method,
        path,
        &[
            ("Authorization", &basic("admin", "district")),
            ("Origin", &format!("http://{host}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"",
    );
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn the_admin_backs_the_box_up_to_a_plugged_in_stick_with_one_button() {
    let sticks = tempfile::tempdir().expect("sticks");
    let stick = sticks.path().join("usb");
    let b = BoxBuilder::demo()
        .config(&format!(
            "[backup]\nstick_folder = \"{}\"\nstick_must_be_mounted = false\n",
            stick.display()
        ))
        .start();
    import_to(b.url(), &patient(3));
    // The status page links to the admin page and to setup.
    let home = http_request(b.url().trim_start_matches("http://"), "GET", "/", &[], b"");
    let home = String::from_utf8_lossy(&home.body).into_owned();
    assert!(home.contains("data-figure=\"setup-link\""));
    // A demo has no power daemon: the page says power is not watched rather than nothing.
    assert!(home.contains("not watched"), "{home}");
    // No stick yet: the page says to plug one in, and offers no button.
    let (_, page) = as_admin(&b, "GET", "/admin");
    assert!(page.contains("Plug in a USB stick"), "{page}");
    assert!(!page.contains("/admin/backup"));
    // A stick: one press.
    std::fs::create_dir(&stick).expect("stick");
    let (_, page) = as_admin(&b, "GET", "/admin");
    assert!(page.contains("Back up to the USB stick now"), "{page}");
    let (code, _) = as_admin(&b, "POST", "/admin/backup");
    assert_eq!(code, 303);
    let (_, page) = as_admin(&b, "GET", "/admin");
    assert!(page.contains("Backed up to"), "{page}");
    let files: Vec<_> = std::fs::read_dir(&stick)
        .expect("stick")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(last_backup(&b).contains(&s(&stick)), "{}", last_backup(&b));
    // The file opens with the demo's HQ key and brings the patient back.
    let hq = s(&b.dir().join("data/hq.key"));
    let target = tempfile::tempdir().expect("target");
    let new_dir = restore_with(&files[0], &hq, target.path());
    let replacement = serve_demo(&new_dir);
    assert_eq!(read_patient(&replacement, &te_of(3)).0, 200);
}

#[test]
fn a_stick_left_plugged_in_gets_its_backup_in_the_nightly_hour() {
    // The "night" is this hour (UTC, the box's zone here); near its end, wait for the next.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    if now() % 3600 > 3570 {
        std::thread::sleep(std::time::Duration::from_secs(31));
    }
    let hour = now() / 3600 % 24;
    let sticks = tempfile::tempdir().expect("sticks");
    let stick = sticks.path().join("usb");
    std::fs::create_dir(&stick).expect("stick");
    let b = BoxBuilder::demo()
        .config(&format!(
            "[api]\ntime_zone = \"Etc/UTC\"\n[backup]\nstick_folder = \"{}\"\nstick_must_be_mounted = false\nnightly_hour = {hour}\n",
            stick.display()
        ))
        .start();
    let mut files = Vec::new();
    for _ in 0..100 {
        files = std::fs::read_dir(&stick)
            .expect("stick")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().ends_with(".backup"))
            .collect();
        if !files.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(files.len(), 1, "no nightly backup: {}", b.log());
}

/// A box set up as the image does, its configuration in `dir`: the store's key file in
/// `data/keys/`, and (unless `fresh`) the demo metadata and users imported.
fn image_like_box(dir: &Path, fresh: bool) -> (PathBuf, String) {
    let data = dir.join("data");
    let key_file = data.join("keys/store.key");
    std::fs::create_dir_all(data.join("keys")).expect("mkdir");
    let printed = clinicbox_tests::init_store(&data, &key_file, &[]);
    let recovery = printed
        .lines()
        .map(str::trim)
        .find(|l| l.len() >= 32 && l.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        .expect("the recovery key is printed")
        .to_string();
    let cfg = dir.join("clinicbox.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[store]\nkey_file = \"{}\"\n[power]\ncontrol_socket = \"{}\"\n",
            data.display(),
            key_file.display(),
            dir.join("control.sock").display()
        ),
    )
    .expect("config");
    if !fresh {
        let package = dir.join("metadata.json");
        std::fs::write(
            &package,
            clinicbox_tests::clinic::demo_package().to_string(),
        )
        .expect("package");
        let (st, out, err) = run_admin(
            &["--config", &s(&cfg), "metadata", "import", &s(&package)],
            "",
        );
        assert!(st.success(), "{out}{err}");
    }
    (cfg, recovery)
}

#[test]
fn a_replacement_box_is_restored_from_its_first_setup_page_and_restarts_into_the_old_box() {
    // The old box, set up as the image does, with a patient.
    let old_dir = tempfile::tempdir().expect("old");
    let (old_cfg, recovery) = image_like_box(old_dir.path(), false);
    let old = BoxBuilder::new().arg("--config").arg(s(&old_cfg)).start();
    import_to(old.url(), &patient(5));
    let stick = tempfile::tempdir().expect("stick");
    let file = backup(&["--config", &s(&old_cfg), "backup", "--to", &s(stick.path())]);
    drop(old);

    // A fresh replacement: its first-setup page offers the restore.
    let new_dir = tempfile::tempdir().expect("new");
    let (new_cfg, _) = image_like_box(new_dir.path(), true);
    // Requests are read whole up to this; a backup is not, whatever its size.
    let mut text = std::fs::read_to_string(&new_cfg).expect("config");
    text.push_str("[http]\nmax_body_bytes = 65536\n");
    std::fs::write(&new_cfg, text).expect("config");
    let fresh = BoxBuilder::new().arg("--config").arg(s(&new_cfg)).start();
    let host = fresh.url().trim_start_matches("http://").to_string();
    let page = http_request(&host, "GET", "/setup", &[], b"");
    assert!(
        String::from_utf8_lossy(&page.body).contains("restore-form"),
        "no restore on the setup page"
    );
    let mut body = Vec::new();
    body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"backup\"; filename=\"box.backup\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(&std::fs::read(&file).expect("backup"));
    body.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n");
    body.extend_from_slice(recovery.as_bytes());
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let r = http_request(
        &host,
        "POST",
        "/setup/restore",
        &[
            ("Content-Type", "multipart/form-data; boundary=XyZ"),
            ("Origin", &format!("http://{host}")),
        ],
        &body,
    );
    let said = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 200, "{said}");
    assert!(said.contains("Backup restored"), "{said}");
    assert!(
        std::fs::metadata(&file).expect("backup").len() > 65536,
        "the backup should be larger than a request may be"
    );
    let status = fresh.wait_exit(std::time::Duration::from_secs(30));
    assert!(status.success(), "{status}");

    // Started again (as its unit would), it is the old box.
    let again = BoxBuilder::new().arg("--config").arg(s(&new_cfg)).start();
    let (code, body) = read_patient(&again, &te_of(5));
    assert_eq!(code, 200, "{body}");
    assert!(!new_dir.path().join("data/restore-incoming").exists());
    assert!(!new_dir.path().join("data/restore-upload.backup").exists());
}
