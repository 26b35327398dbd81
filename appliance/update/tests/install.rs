//! A release installed from a repository folder into the other slot of a box made of files:
//! the slots are files behind `/dev/disk`-style links, the ESP a folder. What is written,
//! what is refused before anything is, and what a bad bundle leaves bootable.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use clinicbox_update::boot::{Disks, Loader, Slot, SystemdBoot};
use clinicbox_update::bundle::{self, Contents};
use clinicbox_update::chunks::Index;
use clinicbox_update::install::{self, Layout, Outcome, Request};
use clinicbox_update::publish::{self, Expiry, Keys};
use clinicbox_update::seed;
use clinicbox_update::state::State;
use clinicbox_update::tryboot::Tryboot;
use jiff::{SignedDuration, Timestamp};
use semver::Version;

const DAY: SignedDuration = SignedDuration::from_hours(24);
const SLOT_BYTES: u64 = 4 << 20;
const UUID_A: &str = "0c11cb0c-5e00-4b1d-9a9e-00000000000a";
const UUID_B: &str = "0c11cb0c-5e00-4b1d-9a9e-00000000000b";
const SLOT_A_ENTRY: &str = "title ClinicBox 0.1.0 (slot A)\nsort-key clinicbox\nversion 0.1.0\n";

struct BoxOnFiles {
    dir: tempfile::TempDir,
    keys: Keys,
    shipped_root: Vec<u8>,
    layout: Layout,
}

impl BoxOnFiles {
    async fn new() -> BoxOnFiles {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let keys = Keys::generate(&d.join("keys"), 1, 1).expect("keys");
        let root = publish::create(&d.join("repo"), &keys, Timestamp::now() + 365 * DAY)
            .await
            .expect("create");
        let shipped_root = std::fs::read(root).expect("root");
        for (slot, uuid) in [("a", UUID_A), ("b", UUID_B)] {
            let img = d.join(format!("slot-{slot}.img"));
            std::fs::write(&img, vec![0xEE; SLOT_BYTES as usize]).expect("slot");
            for (dir, name) in [
                ("by-partlabel", format!("root-{slot}")),
                ("by-partuuid", uuid.to_owned()),
            ] {
                std::fs::create_dir_all(d.join("disk").join(dir)).expect("links");
                symlink(&img, d.join("disk").join(dir).join(name)).expect("link");
            }
        }
        let entries = d.join("esp/loader/entries");
        std::fs::create_dir_all(&entries).expect("esp");
        std::fs::write(entries.join("clinicbox-a.conf"), SLOT_A_ENTRY).expect("entry a");
        let layout = Layout {
            boot: Loader::SystemdBoot(SystemdBoot {
                esp: d.join("esp"),
                tries: 3,
            }),
            disks: Disks::by_label(d.join("disk")),
        };
        BoxOnFiles {
            dir,
            keys,
            shipped_root,
            layout,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A bundle of `board`/`version` with a root image of `root_bytes`, signed into the
    /// repository as `signed_board`.
    async fn publish(&self, board: &str, signed_board: &str, version: &str, root_bytes: usize) {
        let root: Vec<u8> = (0..root_bytes).map(|i| (i * 7 % 253) as u8).collect();
        self.publish_root(board, signed_board, version, &root).await;
    }

    async fn publish_root(&self, board: &str, signed_board: &str, version: &str, root: &[u8]) {
        let d = self.path("parts");
        std::fs::create_dir_all(&d).expect("parts");
        std::fs::write(d.join("root.ext4"), root).expect("root");
        std::fs::write(d.join("vmlinuz"), format!("kernel {version}")).expect("kernel");
        std::fs::write(d.join("initrd.img"), format!("initrd {version}")).expect("initrd");
        let v: Version = version.parse().expect("version");
        let contents = Contents {
            board: board.into(),
            version: v.clone(),
            cmdline: "console=ttyS0 panic=10".into(),
            root: d.join("root.ext4"),
            boot: vec![d.join("vmlinuz"), d.join("initrd.img")],
        };
        let file = self.path("release.bundle");
        bundle::write(&contents, &file).expect("bundle");
        let now = Timestamp::now();
        let expiry = Expiry {
            targets: now + 30 * DAY,
            snapshot: now + 30 * DAY,
            timestamp: now + 7 * DAY,
        };
        publish::add_release(
            &self.path("repo"),
            &self.keys,
            &file,
            signed_board,
            &v,
            expiry,
        )
        .await
        .expect("publish");
    }

    async fn install(&self) -> Result<Outcome, clinicbox_update::UpdateError> {
        self.install_board("nuc").await
    }

    async fn install_board(&self, board: &str) -> Result<Outcome, clinicbox_update::UpdateError> {
        let running: Version = "0.1.0".parse().expect("running");
        let repo = self.path("repo");
        let state = self.path("state");
        install::from_folder(Request {
            from: &repo,
            board,
            running: &running,
            running_slot: Slot::A,
            shipped_root: &self.shipped_root,
            now: Timestamp::now(),
            layout: &self.layout,
            state_dir: &state,
        })
        .await
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("esp/loader/entries"))
            .expect("entries")
            .map(|e| e.expect("entry").file_name().into_string().expect("name"))
            .collect();
        names.sort();
        names
    }

    fn slot_b(&self) -> Vec<u8> {
        std::fs::read(self.path("slot-b.img")).expect("slot b")
    }

    /// Flips one byte in the middle of the signed bundle in the repository's targets.
    fn tamper_target(&self) {
        let targets = self.path("repo/targets");
        let file = std::fs::read_dir(&targets)
            .expect("targets")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "bundle"))
            .expect("a bundle");
        let mut bytes = std::fs::read(&file).expect("read");
        let at = bytes.len() - 2_000;
        bytes[at] ^= 0xFF;
        std::fs::remove_file(&file).expect("unlink");
        std::fs::write(&file, bytes).expect("write");
    }
}

#[tokio::test]
async fn a_release_is_written_into_the_other_slot_and_its_entry_last() {
    let b = BoxOnFiles::new().await;
    b.publish("nuc", "nuc", "0.2.0", 1_000_000).await;
    let Outcome::Installed(done) = b.install().await.expect("install") else {
        panic!("nothing installed");
    };
    assert_eq!((done.slot, done.version.as_str()), (Slot::B, "0.2.0"));
    assert_eq!(b.entries(), ["clinicbox-a.conf", "clinicbox-b+3.conf"]);
    let entry = std::fs::read_to_string(&done.entry).expect("entry");
    assert!(
        entry.contains("sort-key   clinicbox\nversion    0.2.0\n"),
        "{entry}"
    );
    assert!(
        entry.contains("linux      /clinicbox/b/vmlinuz\ninitrd     /clinicbox/b/initrd.img\n"),
        "{entry}"
    );
    assert!(
        entry.contains(&format!(
            "options    root=PARTUUID={UUID_B} ro clinicbox.slot=b console=ttyS0 panic=10"
        )),
        "{entry}"
    );
    let kernel = std::fs::read(b.path("esp/clinicbox/b/vmlinuz")).expect("kernel");
    assert_eq!(kernel, b"kernel 0.2.0");
    let written = b.slot_b();
    assert_eq!(
        written[..1_000_000],
        std::fs::read(b.path("parts/root.ext4")).expect("root")[..]
    );
    assert_eq!(
        written.len() as u64,
        SLOT_BYTES,
        "the slot is written in place, not replaced"
    );
    assert_eq!(
        std::fs::read_to_string(b.path("esp/loader/entries/clinicbox-a.conf")).expect("a"),
        SLOT_A_ENTRY
    );
    let state = State::load(&b.path("state"));
    assert_eq!(
        state.installed.map(|r| (r.version, r.slot)),
        Some(("0.2.0".into(), "b".into()))
    );

    // Asked again (the next timer run in the window): nothing is written twice.
    let again = b.install().await.expect("again");
    assert!(
        matches!(again, Outcome::Ready(ref i) if i.version == "0.2.0"),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_bundle_that_breaks_while_it_is_written_leaves_only_the_running_slot_bootable() {
    let b = BoxOnFiles::new().await;
    std::fs::write(
        b.path("esp/loader/entries/clinicbox-b.conf"),
        "version 0.0.9\n",
    )
    .expect("old b");
    b.publish("nuc", "nuc", "0.2.0", 1_000_000).await;
    b.tamper_target();
    let e = b.install().await.expect_err("tampered");
    assert!(
        e.to_string().contains("does not match") || e.to_string().contains("bundle"),
        "{e}"
    );
    // Slot B's old entry went before its slot was touched; nothing bootable points at it.
    assert_eq!(b.entries(), ["clinicbox-a.conf"]);
    assert!(State::load(&b.path("state")).installed.is_none());
}

#[tokio::test]
async fn a_bundle_for_another_board_or_too_large_is_refused_before_anything_is_written() {
    let b = BoxOnFiles::new().await;
    std::fs::write(
        b.path("esp/loader/entries/clinicbox-b.conf"),
        "version 0.0.9\n",
    )
    .expect("old b");
    // Signed as a NUC release, but its own manifest says pi4.
    b.publish("pi4", "nuc", "0.2.0", 1_000).await;
    let e = b.install().await.expect_err("another board");
    assert!(e.to_string().contains("signed as nuc 0.2.0"), "{e}");
    assert_eq!(b.entries(), ["clinicbox-a.conf", "clinicbox-b.conf"]);
    assert!(b.slot_b().iter().all(|&x| x == 0xEE), "slot B untouched");

    b.publish("nuc", "nuc", "0.3.0", SLOT_BYTES as usize + 1)
        .await;
    let e = b.install().await.expect_err("too large");
    assert!(e.to_string().contains("slot B holds"), "{e}");
    assert_eq!(b.entries(), ["clinicbox-a.conf", "clinicbox-b.conf"]);
}

#[tokio::test]
async fn a_release_that_rolled_back_here_is_not_installed_again() {
    let b = BoxOnFiles::new().await;
    b.publish("nuc", "nuc", "0.2.0", 1_000).await;
    let state_dir = b.path("state");
    let state = State {
        refused: vec!["0.2.0".into()],
        ..State::default()
    };
    state.save(&state_dir).expect("state");
    let outcome = b.install().await.expect("install");
    assert_eq!(outcome, Outcome::Refused("0.2.0".parse().expect("v")));
    assert!(b.slot_b().iter().all(|&x| x == 0xEE));
    assert!(!Path::new(&b.path("esp/clinicbox/b")).exists());
}

#[tokio::test]
async fn a_release_whose_entry_used_up_its_tries_is_not_installed_again_before_it_is_recorded() {
    let b = BoxOnFiles::new().await;
    b.publish("nuc", "nuc", "0.2.0", 1_000).await;
    // Booted back from slot B a moment ago; the boot check has not run yet.
    std::fs::write(
        b.path("esp/loader/entries/clinicbox-b+0-3.conf"),
        "version 0.2.0\n",
    )
    .expect("bad b");
    let outcome = b.install().await.expect("install");
    assert_eq!(outcome, Outcome::Refused("0.2.0".parse().expect("v")));
    assert_eq!(b.entries(), ["clinicbox-a.conf", "clinicbox-b+0-3.conf"]);
}

#[tokio::test]
async fn the_newest_release_the_folder_holds_is_installed() {
    // The uplink staged 0.2.0 (a remote admin's pin) from metadata that also lists 0.3.0.
    let b = BoxOnFiles::new().await;
    b.publish("nuc", "nuc", "0.2.0", 1_000).await;
    b.publish("nuc", "nuc", "0.3.0", 1_000).await;
    let targets = b.path("repo/targets");
    for e in std::fs::read_dir(&targets).expect("targets") {
        let p = e.expect("entry").path();
        let name = p.to_string_lossy();
        if name.ends_with("-0.3.0.bundle") || name.ends_with("-0.3.0.chunks") {
            std::fs::remove_file(p).expect("unlink");
        }
    }
    let Outcome::Installed(done) = b.install().await.expect("install") else {
        panic!("nothing installed");
    };
    assert_eq!(done.version, "0.2.0");
}

/// A root image of `kib` KiB that reads as ext4 (its superblock's magic, block count and
/// 1 KiB blocks), its bytes from `seed`.
fn ext4_image(kib: u32, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let mut image: Vec<u8> = (0..kib as usize * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    image[1024 + 0x04..1024 + 0x08].copy_from_slice(&kib.to_le_bytes());
    image[1024 + 0x18..1024 + 0x1c].copy_from_slice(&0u32.to_le_bytes());
    image[1024 + 0x38..1024 + 0x3a].copy_from_slice(&[0x53, 0xef]);
    image[1024 + 0x60..1024 + 0x64].copy_from_slice(&0u32.to_le_bytes());
    image
}

impl BoxOnFiles {
    /// Slot A as flashed: `root` in its partition, its kernel and initrd on the ESP, and the
    /// seed the installer cuts from it after a healthy boot.
    fn flash_slot_a(&self, root: &[u8]) {
        let mut slot = std::fs::read(self.path("slot-a.img")).expect("slot a");
        slot[..root.len()].copy_from_slice(root);
        std::fs::write(self.path("slot-a.img"), slot).expect("flash");
        let boot = self.path("esp/clinicbox/a");
        std::fs::create_dir_all(&boot).expect("boot a");
        std::fs::write(boot.join("vmlinuz"), "kernel 0.1.0").expect("kernel");
        std::fs::write(boot.join("initrd.img"), "initrd 0.1.0").expect("initrd");
        let cut = seed::ensure(&self.layout, &self.path("state"), Slot::A, "nuc", "0.1.0");
        assert!(cut.expect("seed"), "cut from the slot");
    }

    /// Slot A flashed (a 1 MiB ext4-looking root, cut into its index), and release 0.2.0
    /// published: 64 KiB of that root changed, 16 KiB inserted (files move). Its root.
    async fn flashed_then_next_release(&self) -> Vec<u8> {
        let old = ext4_image(1024, 1);
        self.flash_slot_a(&old);
        let mut new = old.clone();
        new[300_000..365_536].copy_from_slice(&ext4_image(64, 2));
        new.splice(600_000..600_000, ext4_image(16, 3));
        new.truncate(old.len());
        self.publish_root("nuc", "nuc", "0.2.0", &new).await;
        new
    }

    /// What the uplink stages from the repository: its metadata, the release's index and only
    /// the chunks slot A's index lacks. Returns how many chunks it took, of how many.
    fn stage_chunks(&self) -> (usize, usize) {
        let (repo, staged) = (self.path("repo"), self.path("staged"));
        copy_tree(&repo.join("metadata"), &staged.join("metadata"));
        std::fs::create_dir_all(staged.join("targets")).expect("targets");
        let index_file = std::fs::read_dir(repo.join("targets"))
            .expect("targets")
            .map(|e| e.expect("entry").path())
            .find(|p| p.to_string_lossy().ends_with(".chunks"))
            .expect("the release's chunk index");
        let name = index_file.file_name().expect("name");
        std::fs::copy(&index_file, staged.join("targets").join(name)).expect("index");
        let index = Index::load(&index_file).expect("index");
        let have = seed::running(&self.path("state"), Slot::A, "0.1.0").expect("seed");
        let have = have.locations();
        let all = index.distinct();
        let missing: Vec<_> = all
            .iter()
            .filter(|c| !have.contains_key(&c.sha256))
            .collect();
        for c in &missing {
            let to = c.path_in(&staged.join("targets"));
            std::fs::create_dir_all(to.parent().expect("dir")).expect("dir");
            std::fs::copy(c.path_in(&repo.join("targets")), to).expect("chunk");
        }
        (missing.len(), all.len())
    }

    async fn install_from(&self, folder: &str) -> Result<Outcome, clinicbox_update::UpdateError> {
        let running: Version = "0.1.0".parse().expect("running");
        install::from_folder(Request {
            from: &self.path(folder),
            board: "nuc",
            running: &running,
            running_slot: Slot::A,
            shipped_root: &self.shipped_root,
            now: Timestamp::now(),
            layout: &self.layout,
            state_dir: &self.path("state"),
        })
        .await
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[tokio::test]
async fn a_release_from_chunks_takes_what_the_running_slot_holds_and_only_the_rest_is_staged() {
    let b = BoxOnFiles::new().await;
    let new = b.flashed_then_next_release().await;

    let (staged, all) = b.stage_chunks();
    assert!(
        staged * 3 < all,
        "{staged} of {all} chunks staged: the rest is in slot A"
    );
    let Outcome::Installed(done) = b.install_from("staged").await.expect("install") else {
        panic!("nothing installed");
    };
    assert_eq!((done.slot, done.version.as_str()), (Slot::B, "0.2.0"));
    assert_eq!(b.slot_b()[..new.len()], new[..]);
    let kernel = std::fs::read(b.path("esp/clinicbox/b/vmlinuz")).expect("kernel");
    assert_eq!(kernel, b"kernel 0.2.0");
    assert_eq!(b.entries(), ["clinicbox-a.conf", "clinicbox-b+3.conf"]);
    let kept = Index::load(&seed::index_path(&b.path("state"), Slot::B)).expect("b's index");
    assert_eq!(
        kept.manifest.version, "0.2.0",
        "slot B's index, for the update after"
    );
}

#[tokio::test]
async fn a_chunk_that_does_not_match_its_hash_leaves_only_the_running_slot_bootable() {
    let b = BoxOnFiles::new().await;
    b.flashed_then_next_release().await;
    b.stage_chunks();
    // Slot A changed under its index where the release needs it (the uplink staged nothing
    // for those bytes).
    let mut slot = std::fs::read(b.path("slot-a.img")).expect("slot a");
    slot[800_000] ^= 0xFF;
    std::fs::write(b.path("slot-a.img"), slot).expect("damage");

    let err = b.install_from("staged").await.expect_err("refused");
    assert!(
        matches!(err, clinicbox_update::UpdateError::SeedChanged(_)),
        "{err}"
    );
    assert_eq!(b.entries(), ["clinicbox-a.conf"], "B is not bootable");
    assert!(
        !seed::index_path(&b.path("state"), Slot::A).exists(),
        "slot A's index is dropped: the next stage fetches the whole bundle"
    );
}

impl BoxOnFiles {
    /// A Pi: its slots' boot partitions are folders (mounted FAT), its root partitions named by
    /// the MBR's PARTUUIDs.
    async fn pi() -> BoxOnFiles {
        let mut b = BoxOnFiles::new().await;
        let d = b.dir.path().to_owned();
        for (slot, n) in [("a", 5), ("b", 6)] {
            let link = d.join(format!("disk/by-partuuid/c11cb0c5-0{n}"));
            symlink(d.join(format!("slot-{slot}.img")), link).expect("link");
            std::fs::create_dir_all(d.join(format!("boot-{slot}"))).expect("boot partition");
        }
        b.layout = Layout {
            boot: Loader::Tryboot(Tryboot {
                dirs: [d.join("boot-a"), d.join("boot-b")],
            }),
            disks: Disks {
                links: d.join("disk"),
                roots: [
                    PathBuf::from("by-partuuid/c11cb0c5-05"),
                    PathBuf::from("by-partuuid/c11cb0c5-06"),
                ],
            },
        };
        b
    }
}

#[tokio::test]
async fn a_pi_release_goes_into_the_other_boot_partition_and_a_spent_tryboot_is_a_rollback() {
    let b = BoxOnFiles::pi().await;
    b.publish("pi4", "pi4", "0.2.0", 100_000).await;
    let Outcome::Installed(done) = b.install_board("pi4").await.expect("install") else {
        panic!("nothing installed");
    };
    assert_eq!((done.slot, done.version.as_str()), (Slot::B, "0.2.0"));
    let boot_b = b.path("boot-b");
    assert_eq!(
        std::fs::read(boot_b.join("vmlinuz")).expect("kernel"),
        b"kernel 0.2.0"
    );
    assert_eq!(
        std::fs::read_to_string(boot_b.join("cmdline.txt")).expect("cmdline"),
        "root=PARTUUID=c11cb0c5-06 ro clinicbox.slot=b console=ttyS0 panic=10\n"
    );
    assert_eq!(
        b.slot_b()[..100_000],
        std::fs::read(b.path("parts/root.ext4")).expect("root")[..]
    );
    let entry = |b: &BoxOnFiles| b.layout.boot.entries(Slot::B).expect("entries")[0].clone();
    assert_eq!(entry(&b).tries_left, Some(1), "one tryboot to come");
    // Run again before the restart (a power cut): nothing is written twice.
    let again = b.install_board("pi4").await.expect("again");
    assert!(matches!(again, Outcome::Ready(_)), "{again:?}");

    // The installer asks for the tryboot; slot B never comes back healthy, and the box is
    // on slot A again (the firmware's default).
    b.layout.boot.spend_try(Slot::B).expect("spend");
    let mut state = State::load(&b.path("state"));
    let other = b.layout.boot.entries(Slot::B).expect("entries");
    assert!(state.after_healthy_boot(Slot::A, "0.1.0", &other, 1));
    let rollback = state.last_rollback.clone().expect("rollback");
    assert_eq!(
        (rollback.version.as_str(), rollback.slot.as_str()),
        ("0.2.0", "b")
    );
    state.save(&b.path("state")).expect("save");
    let refused = b.install_board("pi4").await.expect("refused");
    assert_eq!(refused, Outcome::Refused("0.2.0".parse().expect("v")));

    // A healthy tryboot instead: blessed, the count gone.
    b.layout.boot.bless(Slot::B).expect("bless");
    assert_eq!(entry(&b).tries_left, None);
}

/// The uplink names the index only once every chunk is staged; until then (`.pending`) the
/// installer sees no release to install and writes nothing.
#[tokio::test]
async fn chunks_still_arriving_are_not_installed() {
    let b = BoxOnFiles::new().await;
    b.flashed_then_next_release().await;
    b.stage_chunks();
    let targets = b.path("staged/targets");
    for e in std::fs::read_dir(&targets).expect("targets") {
        let p = e.expect("entry").path();
        if p.to_string_lossy().ends_with(".chunks") {
            let mut pending = p.clone().into_os_string();
            pending.push(".pending");
            std::fs::rename(&p, pending).expect("rename");
        }
    }
    let outcome = b.install_from("staged").await.expect("install");
    assert_eq!(outcome, Outcome::Nothing);
    assert_eq!(b.entries(), ["clinicbox-a.conf"]);
    assert!(seed::index_path(&b.path("state"), Slot::A).exists());
}
