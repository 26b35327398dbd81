//! `clinicbox-publish` as a release machine runs it: `init`, then `add`, and the repository
//! read back as a box reads a USB stick.

use std::path::Path;
use std::process::Command;

use clinicbox_update::{Source, choose, verify};
use jiff::Timestamp;
use semver::Version;

fn publish(dir: &Path, args: &[&str]) -> String {
    publish_with(dir, "keys", args)
}

fn publish_with(dir: &Path, keys: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_clinicbox-publish"))
        .arg("--repo")
        .arg(dir.join("repo"))
        .arg("--keys")
        .arg(dir.join(keys))
        .args(args)
        .output()
        .expect("run clinicbox-publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn init_then_add_makes_a_repository_a_box_accepts() {
    let dir = tempfile::tempdir().expect("dir");
    let root = publish(
        dir.path(),
        &["init", "--root-keys", "3", "--threshold", "2"],
    );
    assert!(root.ends_with("metadata/1.root.json"), "{root}");
    let bundle = dir.path().join("release.bundle");
    std::fs::write(&bundle, b"a release").expect("bundle");
    let file = bundle.to_str().expect("path");
    let name = publish(
        dir.path(),
        &[
            "add",
            "--file",
            file,
            "--board",
            "nuc",
            "--version",
            "0.2.0",
        ],
    );
    assert_eq!(name, "clinicbox-nuc-0.2.0.bundle");
    let keys = std::fs::read_dir(dir.path().join("keys"))
        .expect("keys")
        .count();
    assert_eq!(keys, 6, "three root keys, targets, snapshot, timestamp");

    let (repo, release) = as_a_box(dir.path(), &root).await;
    repo.save_target(&release.name, &dir.path().join("out"))
        .await
        .expect("saved");
    assert_eq!(
        std::fs::read(dir.path().join("out")).expect("read"),
        b"a release"
    );
}

/// The key runbook as commands: rotate every key into a new folder, publish with it, re-sign
/// the timestamp; a box that shipped with the first root follows.
#[tokio::test]
async fn rotate_then_refresh_keeps_a_box_that_shipped_the_first_root() {
    let dir = tempfile::tempdir().expect("dir");
    let root = publish(dir.path(), &["init"]);
    let bundle = dir.path().join("release.bundle");
    std::fs::write(&bundle, b"0.3.0").expect("bundle");
    let file = bundle.to_str().expect("path");
    let new_keys = dir.path().join("new-keys");
    let rotated = publish(
        dir.path(),
        &["rotate", "--new-keys", new_keys.to_str().expect("path")],
    );
    assert!(rotated.ends_with("metadata/2.root.json"), "{rotated}");
    let add = [
        "add",
        "--file",
        file,
        "--board",
        "nuc",
        "--version",
        "0.3.0",
    ];
    publish_with(dir.path(), "new-keys", &add);
    publish_with(dir.path(), "new-keys", &["refresh"]);

    let (_, release) = as_a_box(dir.path(), &root).await;
    assert_eq!(release.version, Version::new(0, 3, 0));
}

/// The repository read as a box that shipped the root at `root` reads it: verified, and the
/// release it would take over 0.1.0.
async fn as_a_box(
    dir: &Path,
    root: &str,
) -> (clinicbox_update::Verified, clinicbox_update::Release) {
    let source = Source::folder(&dir.join("repo")).expect("source");
    let shipped = std::fs::read(root).expect("root");
    let repo = verify(&source, &dir.join("trusted"), &shipped, Timestamp::now())
        .await
        .expect("verifies");
    let release = choose(&repo, "nuc", &Version::new(0, 1, 0), None)
        .expect("choose")
        .expect("the release");
    (repo, release)
}
