//! The uplink's side of a signed update, end to end: a TUF repository published with
//! `clinicbox_update::publish` into the stand-in's update mirror (`--updates`, `Range` as
//! nginx answers it, a fault that cuts a download part-way), the real `clinicbox uplink
//! --once` with `[uplink.update]`, and what it staged read back as `clinicbox update` will:
//! a folder verified offline with its own trust. Every check reads the mirror's ledger or
//! the staged files, never the uplink's word alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use clinicbox_tests::clinic::basic;
use clinicbox_tests::national::{National, uplink_once_with};
use clinicbox_tests::{BoxBuilder, RunningBox, http_request};
use clinicbox_update::publish::{self, Expiry, Keys};
use jiff::{SignedDuration, Timestamp};
use semver::Version;
use serde_json::json;

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// A release of 300,000 bytes: a cut after a third leaves exactly 100,000.
fn image() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

/// Publishes `board`'s release `version` into the stand-in's mirror (made with its keys and
/// root the first time); the root a release ships.
fn publish(national: &National, work: &Path, board: &str, version: &str) -> PathBuf {
    let bundle = work.join("bundle");
    std::fs::write(&bundle, image()).unwrap();
    publish_file(national, work, &bundle, board, version)
}

/// Signs the file `bundle` into the stand-in's mirror as `board`'s release `version`.
fn publish_file(
    national: &National,
    work: &Path,
    bundle: &Path,
    board: &str,
    version: &str,
) -> PathBuf {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let keys = Keys::generate(&work.join("keys"), 1, 1).unwrap();
        let now = Timestamp::now();
        let repo = national.updates_dir();
        let root = repo.join("metadata/1.root.json");
        if !root.exists() {
            publish::create(&repo, &keys, now + 365 * DAY)
                .await
                .unwrap();
        }
        let expiry = Expiry {
            targets: now + 90 * DAY,
            snapshot: now + 90 * DAY,
            timestamp: now + 7 * DAY,
        };
        let v = Version::parse(version).unwrap();
        publish::add_release(&repo, &keys, bundle, board, &v, expiry)
            .await
            .unwrap();
        root
    })
}

/// `[uplink.update]` pointing at the stand-in's mirror; the file and the update folder.
fn config(national: &National, work: &Path, root: &Path) -> (PathBuf, PathBuf) {
    let dir = work.join("uplink-update");
    let cfg = work.join("update.toml");
    let text = format!(
        "[uplink.update]\nmirror_url = \"{}/updates/\"\nboard = \"nuc\"\nroot_file = \"{}\"\ndir = \"{}\"\n[update]\nstate_dir = \"{}\"\n",
        national.url,
        root.display(),
        dir.display(),
        work.join("installer").display()
    );
    std::fs::write(&cfg, text).unwrap();
    (cfg, dir)
}

/// A demo box, national with its mirror holding `board`'s release `version`, and the
/// uplink's configuration for it.
struct Setup {
    b: RunningBox,
    national: National,
    work: tempfile::TempDir,
    root: PathBuf,
    cfg: PathBuf,
    /// The uplink's update folder.
    dir: PathBuf,
}

impl Setup {
    fn new(board: &str, version: &str) -> Setup {
        let b = BoxBuilder::demo().start();
        let national = National::start(None);
        let work = tempfile::tempdir().unwrap();
        let root = publish(&national, work.path(), board, version);
        let (cfg, dir) = config(&national, work.path(), &root);
        Setup {
            b,
            national,
            work,
            root,
            cfg,
            dir,
        }
    }

    /// `clinicbox uplink --once` with `[uplink.update]`: what it printed.
    fn round(&self) -> String {
        let global = [std::ffi::OsStr::new("--config"), self.cfg.as_os_str()];
        uplink_once_with(&self.b.dir().join("data"), &self.national, &global)
    }

    fn status_update(&self) -> serde_json::Value {
        let auth = basic("admin", "district");
        let url = self.b.url().trim_start_matches("http://");
        let status = http_request(url, "GET", "/status.json", &[("Authorization", &auth)], b"");
        status.json()["uplink"]["update"].clone()
    }
}

fn update_line(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.strip_prefix("update: "))
        .unwrap_or_else(|| panic!("no update line in {out}"))
}

fn target_requests(national: &National) -> Vec<Option<String>> {
    national.ledger()["update_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("targets/"))
        .map(|r| r["range"].as_str().map(str::to_owned))
        .collect()
}

fn staged_release(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("staging/targets"))
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bundle"))
}

#[test]
fn a_release_cut_part_way_resumes_at_the_next_round_and_is_staged_for_an_offline_check() {
    let s = Setup::new("nuc", "0.2.0");
    s.national.faults(json!({"cut_update_downloads": 1}));

    let first = s.round();
    assert!(
        update_line(&first).starts_with("failed: the update mirror"),
        "{first}"
    );
    assert!(
        staged_release(&s.dir).is_none(),
        "nothing staged from a cut download"
    );

    let second = s.round();
    assert_eq!(
        update_line(&second),
        "0.2.0 downloaded and verified, ready to install"
    );
    assert_eq!(
        target_requests(&s.national),
        vec![None, Some("bytes=100000-".to_owned())],
        "the second round asked only for what the cut left out"
    );
    let staged = staged_release(&s.dir).expect("staged");
    assert_eq!(std::fs::read(&staged).unwrap(), image());
    assert_eq!(
        s.status_update(),
        "0.2.0 downloaded and verified, ready to install",
        "the status page says what the uplink staged"
    );

    // `clinicbox update` has no network: it verifies the staged folder with its own trust.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let source = clinicbox_update::Source::folder(&s.dir.join("staging")).unwrap();
        let shipped = std::fs::read(&s.root).unwrap();
        let trusted = s.work.path().join("updater-trusted");
        let repo = clinicbox_update::verify(&source, &trusted, &shipped, Timestamp::now())
            .await
            .expect("the staged repository verifies offline");
        let release = clinicbox_update::choose(&repo, "nuc", &Version::new(0, 1, 0), None)
            .unwrap()
            .expect("the staged release");
        repo.save_target(&release.name, &s.work.path().join("checked"))
            .await
            .expect("whole and signed");
    });

    // Staged already: a third round fetches metadata only, and its check-in tells the
    // remote admins what the last pass did.
    let third = s.round();
    assert_eq!(update_line(&third), update_line(&second));
    assert_eq!(target_requests(&s.national).len(), 2);
    let keys = s.national.get("/api/dataStore/clinicbox-fleet");
    let id = keys[0].as_str().expect("the box checked in");
    let check_in = s
        .national
        .get(&format!("/api/dataStore/clinicbox-fleet/{id}"));
    assert_eq!(
        check_in["update"], "0.2.0 downloaded and verified, ready to install",
        "{check_in}"
    );
}

#[test]
fn a_release_that_does_not_match_its_signature_is_not_staged() {
    let s = Setup::new("nuc", "0.2.0");
    let target = std::fs::read_dir(s.national.updates_dir().join("targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .expect("the published release");
    let mut bytes = std::fs::read(&target).unwrap();
    bytes[1234] ^= 0xff;
    std::fs::write(&target, bytes).unwrap();
    let out = s.round();
    assert!(
        update_line(&out).contains("does not match its signed hash"),
        "{out}"
    );
    let left: Vec<_> = std::fs::read_dir(s.dir.join("staging/targets"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "no release and no partial kept: {left:?}");
}

#[test]
fn a_mirror_offering_only_another_board_s_release_stages_nothing() {
    let s = Setup::new("pi4", "9.0.0");
    let out = s.round();
    assert!(update_line(&out).starts_with("up to date"), "{out}");
    assert!(target_requests(&s.national).is_empty());
    assert!(staged_release(&s.dir).is_none());
}

#[test]
fn a_release_that_came_back_to_the_old_slot_here_is_not_fetched_again() {
    let s = Setup::new("nuc", "0.2.0");
    // What `clinicbox update booted` records after the box came back from 0.2.0.
    let installer = clinicbox_update::state::State {
        refused: vec!["0.2.0".into()],
        ..Default::default()
    };
    installer.save(&s.work.path().join("installer")).unwrap();
    let out = s.round();
    assert!(
        update_line(&out).starts_with("0.2.0 came back to the old slot on this box"),
        "{out}"
    );
    assert!(
        target_requests(&s.national).is_empty(),
        "nothing downloaded"
    );
    assert!(staged_release(&s.dir).is_none());
    // A newer release is fetched as ever.
    publish(&s.national, s.work.path(), "nuc", "0.2.1");
    let out = s.round();
    assert!(update_line(&out).starts_with("0.2.1 downloaded"), "{out}");
}

#[test]
fn a_version_pinned_in_the_fleet_configuration_is_staged_instead_of_the_newest() {
    let s = Setup::new("nuc", "0.3.0");
    publish(&s.national, s.work.path(), "nuc", "0.2.0");
    let first = s.round();
    assert_eq!(
        update_line(&first),
        "0.3.0 downloaded and verified, ready to install"
    );
    let keys = s.national.get("/api/dataStore/clinicbox-fleet");
    let id = keys[0].as_str().expect("the box checked in");
    let path = format!("/api/dataStore/clinicbox-fleet-config/{id}");
    let wish = json!({"revision": 1, "by": "hq-admin", "settings": {"desiredVersion": "0.2.0"}});
    let (st, answer) = s.national.send("POST", &path, &wish);
    assert_eq!(st, 201, "{answer}");

    let second = s.round();
    assert_eq!(
        update_line(&second),
        "0.2.0 downloaded and verified, ready to install",
        "{second}"
    );
    let staged = staged_release(&s.dir).expect("staged");
    assert!(
        staged
            .to_string_lossy()
            .ends_with("clinicbox-nuc-0.2.0.bundle"),
        "only the pinned release is kept: {staged:?}"
    );
    let files = std::fs::read_dir(s.dir.join("staging/targets"))
        .unwrap()
        .count();
    assert_eq!(files, 1, "the newer release staged before was removed");
}

/// `kib` KiB of noise from `seed` (a root image that does not compress away).
fn noise(kib: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..kib * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A real bundle of `version` (kernel, initrd, `root`) in `work/parts`; its path.
fn bundle_of(work: &Path, version: &str, root: &[u8]) -> PathBuf {
    let parts = work.join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    std::fs::write(parts.join("root.ext4"), root).unwrap();
    std::fs::write(parts.join("vmlinuz"), "the same kernel").unwrap();
    std::fs::write(parts.join("initrd.img"), format!("initrd {version}")).unwrap();
    let contents = clinicbox_update::bundle::Contents {
        board: "nuc".into(),
        version: Version::parse(version).unwrap(),
        cmdline: String::new(),
        root: parts.join("root.ext4"),
        boot: vec![parts.join("vmlinuz"), parts.join("initrd.img")],
    };
    let file = work.join(format!("{version}.bundle"));
    clinicbox_update::bundle::write(&contents, &file).unwrap();
    file
}

/// The index `clinicbox update` keeps of the slot the box runs: what the uplink measures a
/// release against.
fn seed_from(bundle: &Path, version: &str, installer: &Path) -> clinicbox_update::chunks::Index {
    let mut index = clinicbox_update::chunks::index_bundle(bundle, None).unwrap();
    index.manifest.version = version.into();
    std::fs::create_dir_all(installer).unwrap();
    index.save(&installer.join("slot-a.chunks")).unwrap();
    index
}

#[test]
fn a_box_that_knows_its_running_slot_fetches_only_the_chunks_it_lacks() {
    let b = BoxBuilder::demo().start();
    let national = National::start(None);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let running = env!("CARGO_PKG_VERSION");
    let old_root = noise(2048, 1);
    let seed = seed_from(
        &bundle_of(w, running, &old_root),
        running,
        &w.join("installer"),
    );
    // The next release: 64 KiB of its root changed, 16 KiB inserted (files moved).
    let mut new_root = old_root.clone();
    new_root[500_000..565_536].copy_from_slice(&noise(64, 2));
    new_root.splice(1_200_000..1_200_000, noise(16, 3));
    let root = publish_file(
        &national,
        w,
        &bundle_of(w, "9.0.0", &new_root),
        "nuc",
        "9.0.0",
    );
    let (cfg, dir) = config(&national, w, &root);
    let global = [std::ffi::OsStr::new("--config"), cfg.as_os_str()];

    let out = uplink_once_with(&b.dir().join("data"), &national, &global);
    let said = update_line(&out);
    assert!(
        said.starts_with("9.0.0 downloaded and verified, ready to install (")
            && said.ends_with("the rest is in the running slot)"),
        "{said}"
    );
    let index_file = std::fs::read_dir(national.updates_dir().join("targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".chunks"))
        .expect("the release's chunk index");
    let release = clinicbox_update::chunks::Index::load(&index_file).unwrap();
    let have = seed.locations();
    let needed: std::collections::BTreeSet<String> = release
        .distinct()
        .iter()
        .filter(|c| !have.contains_key(&c.sha256))
        .map(|c| c.url_path())
        .collect();
    let asked: Vec<String> = national.ledger()["update_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            r["path"]
                .as_str()?
                .strip_prefix("targets/")
                .map(str::to_owned)
        })
        .collect();
    assert!(
        !asked.iter().any(|p| p.ends_with(".bundle")),
        "the bundle is not fetched: {asked:?}"
    );
    let chunks_asked: std::collections::BTreeSet<String> = asked
        .iter()
        .filter(|p| p.starts_with("chunks/"))
        .cloned()
        .collect();
    assert_eq!(chunks_asked, needed, "exactly the chunks slot A lacks");
    assert!(
        needed.len() * 4 < release.distinct().len(),
        "{} of {} chunks",
        needed.len(),
        release.distinct().len()
    );
    let staged = dir.join("staging/targets");
    for c in &needed {
        assert!(staged.join(c).is_file(), "{c} staged");
    }

    // Staged already: the next round fetches no chunk again.
    uplink_once_with(&b.dir().join("data"), &national, &global);
    let again = national.ledger()["update_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("targets/chunks/"))
        .count();
    assert_eq!(again, needed.len());
}
