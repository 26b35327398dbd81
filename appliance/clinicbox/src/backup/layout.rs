//! What a box's data directory holds, and what a backup does with each entry. Every file the
//! daemon keeps in its data directory is named here, so a backup cannot miss one that a later
//! change adds: the layout test runs a box and fails on any entry this table does not know.

use std::path::{Path, PathBuf};

/// What a backup does with an entry of the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The store: a consistent copy taken by `serve` while tablets keep writing.
    Snapshot,
    /// Copied as it is (a directory with everything in it).
    Copy,
    /// Left out: rebuilt by the box (a cache), or only meaningful while it runs (a socket, the
    /// backup's own staging).
    Skip,
    /// Never in a backup: a secret meant to be shown once and then gone.
    Never,
}

/// One entry: a name at the top of the data directory, or a name pattern (`*.pending`).
pub struct Entry {
    pub name: &'static str,
    pub rule: Rule,
    pub why: &'static str,
}

/// The store's file (the store crate's name for it).
pub const STORE_FILE: &str = clinicbox_store::DB_FILE;
/// The TLS certificate and key the box serves (self-signed, or the installed pair).
pub const TLS_DIR: &str = "tls";
/// Key files and recovery keys waiting to be shown on the setup page.
pub const KEYS_DIR: &str = "keys";
/// The demo store's key file.
pub const DEMO_KEY: &str = "demo.key";
/// A demo box's stand-in for the ministry's HQ key (see `recipients::demo_hq_identity`).
pub const DEMO_HQ_KEY: &str = "hq.key";
/// Tablets seen on the LAN, for the status page.
pub const TABLETS_SEEN: &str = "tablets-seen.json";
/// Where `serve` writes the store's snapshot for a backup in progress.
pub const STAGING_DIR: &str = "backup";
/// A backup uploaded on the first-setup page, while it is restored.
pub const RESTORE_UPLOAD: &str = "restore-upload.backup";
/// A restored data directory waiting for the next start to take its place.
pub const RESTORE_INCOMING: &str = "restore-incoming";
/// The recipients a backup is encrypted to for the box's recovery keys (public keys).
pub const RECOVERY_RECIPIENTS: &str = "backup-recipients.txt";

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: STORE_FILE,
        rule: Rule::Snapshot,
        why: "every record, the key slots, the uplink's positions",
    },
    Entry {
        name: TLS_DIR,
        rule: Rule::Copy,
        why: "the certificate tablets already trust",
    },
    Entry {
        name: KEYS_DIR,
        rule: Rule::Copy,
        why: "the key file that unlocks the store (recovery keys waiting to be shown are never copied)",
    },
    Entry {
        name: DEMO_KEY,
        rule: Rule::Copy,
        why: "the demo store's key file",
    },
    Entry {
        name: RECOVERY_RECIPIENTS,
        rule: Rule::Copy,
        why: "the public keys the next backups are encrypted to",
    },
    Entry {
        name: TABLETS_SEEN,
        rule: Rule::Skip,
        why: "a cache the status page rebuilds",
    },
    Entry {
        name: STAGING_DIR,
        rule: Rule::Skip,
        why: "a backup in progress",
    },
    Entry {
        name: RESTORE_UPLOAD,
        rule: Rule::Skip,
        why: "a backup being restored",
    },
    Entry {
        name: RESTORE_INCOMING,
        rule: Rule::Skip,
        why: "a restore waiting for the next start",
    },
    Entry {
        name: "*.sock",
        rule: Rule::Skip,
        why: "sockets of the running box (a demo keeps them in its data directory)",
    },
    Entry {
        name: DEMO_HQ_KEY,
        rule: Rule::Never,
        why: "it opens the backup: a backup never holds a key to itself",
    },
    Entry {
        name: "*.pending",
        rule: Rule::Never,
        why: "a recovery key waiting to be shown once: a backup never holds a key in the clear",
    },
];

/// The rule for `name`, a file or directory name inside the data directory (or inside one of
/// its copied directories, for the `*.pending` rule); `None` for a name the layout does not
/// know.
pub fn rule(name: &str) -> Option<Rule> {
    ENTRIES.iter().find_map(|e| {
        let hit = match e.name.strip_prefix('*') {
            Some(suffix) => name.ends_with(suffix),
            None => e.name == name,
        };
        hit.then_some(e.rule)
    })
}

/// The staging file `serve` writes the store's snapshot to.
pub fn staging_file(data_dir: &Path) -> PathBuf {
    data_dir.join(STAGING_DIR).join(STORE_FILE)
}

/// The files a backup copies as they are, as (path inside the archive, path on disk), in a
/// stable order; the store comes separately. Fails on an entry the layout does not know.
pub fn copied_files(data_dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(data_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        match rule(&name) {
            Some(Rule::Copy) => walk(data_dir, &name, &mut out)?,
            Some(_) => {}
            None => {
                return Err(std::io::Error::other(format!(
                    "{} holds `{name}`, which the backup layout does not know",
                    data_dir.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Adds `rel` (a file, or a directory's files) under `root`, leaving out what is never copied.
fn walk(root: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path)?;
    if meta.is_file() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if rule(&name) != Some(Rule::Never) {
            out.push((rel.to_string(), path));
        }
    } else if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            walk(root, &format!("{rel}/{name}"), out)?;
        }
    }
    // Anything else (a socket, a link) is not data.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_one_rule_and_pending_recovery_keys_are_never_copied() {
        assert_eq!(rule("store.redb"), Some(Rule::Snapshot));
        assert_eq!(rule("tls"), Some(Rule::Copy));
        assert_eq!(rule("uplink.sock"), Some(Rule::Skip));
        assert_eq!(rule("recovery-1.pending"), Some(Rule::Never));
        assert_eq!(rule("something-new.json"), None);
    }

    #[test]
    fn copied_files_leave_out_secrets_shown_once_and_refuse_what_they_do_not_know() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("keys")).expect("mkdir");
        std::fs::create_dir_all(d.join("tls")).expect("mkdir");
        std::fs::write(d.join("keys/store.key"), b"k").expect("write");
        std::fs::write(d.join("keys/recovery-2.pending"), b"secret").expect("write");
        std::fs::write(d.join("tls/self-signed.pem"), b"cert").expect("write");
        std::fs::write(d.join("store.redb"), b"db").expect("write");
        std::fs::write(d.join("tablets-seen.json"), b"{}").expect("write");
        let names: Vec<String> = copied_files(d)
            .expect("layout")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["keys/store.key", "tls/self-signed.pem"]);
        std::fs::write(d.join("new-thing.json"), b"{}").expect("write");
        assert!(copied_files(d).is_err());
    }
}
