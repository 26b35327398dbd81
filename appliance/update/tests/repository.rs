//! A repository published with the release machine's side ([`publish`]) and read as a box reads
//! a USB stick's folder: what installs, and each way a repository is refused with nothing
//! trusted or written.

use std::path::{Path, PathBuf};

use clinicbox_update::publish::{self, Expiry, Keys};
use clinicbox_update::{ClockFloor, Source, UpdateError, choose, verify};
use jiff::{SignedDuration, Timestamp};
use semver::Version;

const DAY: SignedDuration = SignedDuration::from_hours(24);

struct Fixture {
    dir: tempfile::TempDir,
    keys: Keys,
    shipped_root: Vec<u8>,
    now: Timestamp,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let keys = Keys::generate(&dir.path().join("keys"), 3, 2).expect("keys");
        let now = Timestamp::now();
        let root = publish::create(&dir.path().join("repo"), &keys, now + 365 * DAY)
            .await
            .expect("create");
        let shipped_root = std::fs::read(root).expect("root");
        Fixture {
            dir,
            keys,
            shipped_root,
            now,
        }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn trusted(&self) -> PathBuf {
        self.dir.path().join("trusted")
    }

    fn expiry(&self, timestamp_days: i32) -> Expiry {
        Expiry {
            targets: self.now + 90 * DAY,
            snapshot: self.now + 90 * DAY,
            timestamp: self.now + timestamp_days * DAY,
        }
    }

    async fn release(&self, board: &str, version: &str, body: &[u8]) -> String {
        let bundle = self.dir.path().join("bundle.tmp");
        std::fs::write(&bundle, body).expect("bundle");
        let v = Version::parse(version).expect("version");
        publish::add_release(&self.repo(), &self.keys, &bundle, board, &v, self.expiry(7))
            .await
            .expect("publish")
    }

    async fn verify_at(
        &self,
        folder: &Path,
        now: Timestamp,
    ) -> Result<clinicbox_update::Verified, UpdateError> {
        let source = Source::folder(folder).expect("source");
        verify(&source, &self.trusted(), &self.shipped_root, now).await
    }

    /// A copy of the repository as it is now (a stick made today, replayed later).
    fn snapshot_copy(&self, name: &str) -> PathBuf {
        let to = self.dir.path().join(name);
        copy_dir(&self.repo(), &to);
        to
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

fn running(v: &str) -> Version {
    Version::parse(v).expect("version")
}

fn target_file(repo: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(repo.join("targets"))
        .expect("targets")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with(name))
        .expect("the target's file")
}

#[tokio::test]
async fn the_newest_release_for_the_board_is_saved_whole() {
    let f = Fixture::new().await;
    f.release("nuc", "0.2.0", b"nuc image 0.2.0").await;
    f.release("pi4", "0.9.0", b"pi4 image 0.9.0").await;
    let repo = f.verify_at(&f.repo(), f.now).await.expect("verifies");
    let pick = choose(&repo, "nuc", &running("0.1.0"), None)
        .expect("choose")
        .expect("a newer release");
    assert_eq!(
        (pick.board.as_str(), pick.version.to_string()),
        ("nuc", "0.2.0".into())
    );
    let dest = f.dir.path().join("staged.bundle");
    repo.save_target(&pick.name, &dest).await.expect("saved");
    assert_eq!(std::fs::read(&dest).expect("read"), b"nuc image 0.2.0");
    assert!(
        f.trusted().join("timestamp.json").exists(),
        "what verified is kept"
    );
    assert_eq!(
        choose(&repo, "nuc", &running("0.2.0"), None).expect("choose"),
        None,
        "nothing newer than what runs"
    );
}

#[tokio::test]
async fn a_tampered_target_is_refused_and_nothing_is_left() {
    let f = Fixture::new().await;
    let name = f.release("nuc", "0.2.0", b"nuc image 0.2.0").await;
    std::fs::write(target_file(&f.repo(), &name), b"nuc image 0.2.1").expect("tamper");
    let repo = f
        .verify_at(&f.repo(), f.now)
        .await
        .expect("the metadata is intact");
    let dest = f.dir.path().join("staged.bundle");
    let err = repo.save_target(&name, &dest).await.expect_err("refused");
    assert!(matches!(err, UpdateError::Target { .. }), "{err}");
    assert!(!dest.exists());
    assert!(!f.dir.path().join("staged.bundle.part").exists());
}

#[tokio::test]
async fn expired_metadata_is_refused_and_a_clock_gone_back_still_updates() {
    let f = Fixture::new().await;
    f.release("nuc", "0.2.0", b"image").await;
    let err = f
        .verify_at(&f.repo(), f.now + 8 * DAY)
        .await
        .expect_err("the timestamp lasts 7 days");
    assert!(
        matches!(
            err,
            UpdateError::Expired {
                role: "timestamp",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !f.trusted().join("timestamp.json").exists(),
        "nothing trusted"
    );
    // A NUC with a flat CMOS battery wakes up in 2000; the floor it kept says today.
    let mut floor =
        ClockFloor::open(&f.dir.path().join("clock-floor"), f.now - 30 * DAY).expect("floor");
    floor.raise(f.now).expect("raise");
    let judged = floor.now("2000-01-01T00:00:00Z".parse().expect("ts"), false);
    f.verify_at(&f.repo(), judged)
        .await
        .expect("verifies at the floor");
}

#[tokio::test]
async fn an_older_release_is_never_chosen() {
    let f = Fixture::new().await;
    f.release("nuc", "0.2.0", b"image").await;
    let repo = f.verify_at(&f.repo(), f.now).await.expect("verifies");
    assert_eq!(
        choose(&repo, "nuc", &running("0.3.0"), None).expect("choose"),
        None
    );
    let pinned = Version::parse("0.2.0").expect("v");
    let err = choose(&repo, "nuc", &running("0.3.0"), Some(&pinned)).expect_err("downgrade");
    assert!(matches!(err, UpdateError::BadRelease { .. }), "{err}");
    assert_eq!(
        choose(&repo, "nuc", &running("0.2.0"), Some(&pinned)).expect("choose"),
        None,
        "the pinned release runs already"
    );
}

#[tokio::test]
async fn metadata_older_than_what_was_trusted_is_refused() {
    let f = Fixture::new().await;
    f.release("nuc", "0.2.0", b"image 2").await;
    let stale = f.snapshot_copy("stick-made-last-month");
    f.release("nuc", "0.3.0", b"image 3").await;
    f.verify_at(&f.repo(), f.now)
        .await
        .expect("the current repository");
    let kept = std::fs::read(f.trusted().join("timestamp.json")).expect("kept");
    let err = f.verify_at(&stale, f.now).await.expect_err("replayed");
    assert!(matches!(err, UpdateError::Untrusted(_)), "{err}");
    assert_eq!(
        std::fs::read(f.trusted().join("timestamp.json")).expect("kept"),
        kept,
        "what was trusted stays"
    );
}

#[tokio::test]
async fn a_snapshot_from_another_publication_is_refused() {
    let f = Fixture::new().await;
    f.release("nuc", "0.2.0", b"image 2").await;
    let old = f.snapshot_copy("old");
    f.release("nuc", "0.3.0", b"image 3").await;
    let mixed = f.snapshot_copy("mixed");
    // The current timestamp, with the previous publication's snapshot under the name it signs.
    std::fs::copy(
        old.join("metadata/1.snapshot.json"),
        mixed.join("metadata/2.snapshot.json"),
    )
    .expect("mix");
    let err = f.verify_at(&mixed, f.now).await.expect_err("mix-and-match");
    assert!(matches!(err, UpdateError::Untrusted(_)), "{err}");
}

#[tokio::test]
async fn a_repository_signed_by_other_keys_is_refused() {
    let f = Fixture::new().await;
    let other = Fixture::new().await;
    other.release("nuc", "9.9.9", b"someone else's image").await;
    let err = f
        .verify_at(&other.repo(), f.now)
        .await
        .expect_err("unknown keys");
    assert!(matches!(err, UpdateError::Untrusted(_)), "{err}");
    assert!(!f.trusted().join("root.json").exists());
}

/// Every key replaced: a box that trusted the first root follows the rotated one, and a
/// repository still signed with the retired keys (stolen, or a stale mirror) no longer counts.
#[tokio::test]
async fn a_box_follows_a_key_rotation_and_the_retired_keys_no_longer_count() {
    let f = Fixture::new().await;
    f.release("nuc", "0.2.0", b"image 0.2.0").await;
    f.verify_at(&f.repo(), f.now).await.expect("verifies");
    let before = f.snapshot_copy("before-rotation");

    let new = Keys::generate(&f.dir.path().join("new-keys"), 3, 2).expect("new keys");
    let root = publish::rotate(&f.repo(), &f.keys, &new, f.now + 365 * DAY, f.expiry(7))
        .await
        .expect("rotate");
    assert!(root.ends_with("metadata/2.root.json"), "{}", root.display());
    let bundle = f.dir.path().join("bundle.tmp");
    std::fs::write(&bundle, b"image 0.3.0").expect("bundle");
    publish::add_release(
        &f.repo(),
        &new,
        &bundle,
        "nuc",
        &running("0.3.0"),
        f.expiry(7),
    )
    .await
    .expect("a release signed with the new keys");
    let repo = f
        .verify_at(&f.repo(), f.now)
        .await
        .expect("follows the chain");
    let pick = choose(&repo, "nuc", &running("0.2.0"), None)
        .expect("choose")
        .expect("newer");
    assert_eq!(pick.version, running("0.3.0"));
    assert_eq!(
        kept_version(&f, "root.json"),
        2,
        "the box keeps the new root"
    );

    // The old keys keep publishing into the copy, past the rotated versions.
    for v in ["0.4.0", "0.5.0", "0.6.0"] {
        std::fs::write(&bundle, v).expect("bundle");
        publish::add_release(&before, &f.keys, &bundle, "nuc", &running(v), f.expiry(7))
            .await
            .expect("old keys publish into the copy");
    }
    let err = f
        .verify_at(&before, f.now)
        .await
        .expect_err("signed by retired keys");
    assert!(matches!(err, UpdateError::Untrusted(_)), "{err}");
    assert_eq!(kept_version(&f, "timestamp.json"), 3, "nothing replaced");
}

fn kept_version(f: &Fixture, role: &str) -> u64 {
    let bytes = std::fs::read(f.trusted().join(role)).expect("kept");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    json["signed"]["version"].as_u64().expect("version")
}

/// A rotation needs the current root's threshold: one root key of three signing alone is not
/// a rotation, and nothing is written.
#[tokio::test]
async fn a_rotation_without_the_current_root_threshold_is_refused() {
    let f = Fixture::new().await;
    f.release("nuc", "0.2.0", b"image 0.2.0").await;
    let mut one_key = f.keys.clone();
    one_key.root.truncate(1);
    let new = Keys::generate(&f.dir.path().join("new-keys"), 1, 1).expect("new keys");
    let err = publish::rotate(&f.repo(), &one_key, &new, f.now + 365 * DAY, f.expiry(7))
        .await
        .expect_err("1 of a threshold of 2");
    assert!(err.to_string().contains("needs 2"), "{err}");
    assert!(!f.repo().join("metadata/2.root.json").exists());
}

/// The online timestamp key alone keeps a repository alive past its timestamp's expiry; the
/// snapshot and targets it names are unchanged.
#[tokio::test]
async fn a_timestamp_re_signed_alone_keeps_the_repository_current() {
    let f = Fixture::new().await;
    f.release("nuc", "0.2.0", b"image").await;
    let later = f.now + 8 * DAY;
    let err = f.verify_at(&f.repo(), later).await.expect_err("expired");
    assert!(matches!(err, UpdateError::Expired { .. }), "{err}");

    let only_timestamp = f.dir.path().join("online");
    std::fs::create_dir_all(&only_timestamp).expect("dir");
    let key = only_timestamp.join("timestamp.pk8");
    std::fs::copy(&f.keys.timestamp, &key).expect("copy the timestamp key");
    let version = publish::refresh_timestamp(&f.repo(), &key, later + 7 * DAY)
        .await
        .expect("refresh");
    assert_eq!(version, 2);
    let repo = f.verify_at(&f.repo(), later).await.expect("current again");
    assert!(
        choose(&repo, "nuc", &running("0.1.0"), None)
            .expect("choose")
            .is_some()
    );
    let snapshot = std::fs::read_dir(f.repo().join("metadata"))
        .expect("metadata")
        .filter(|e| {
            let name = e.as_ref().expect("entry").file_name();
            name.to_string_lossy().ends_with(".snapshot.json")
        })
        .count();
    assert_eq!(snapshot, 1, "no new snapshot was signed");

    let err = publish::refresh_timestamp(&f.repo(), &f.keys.snapshot, later + 7 * DAY)
        .await
        .expect_err("another role's key cannot sign the timestamp");
    assert!(matches!(err, UpdateError::Publish(_)), "{err}");
}
