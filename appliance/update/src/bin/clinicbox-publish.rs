//! `clinicbox-publish`: signs releases into a TUF repository, on the release machine.
//!
//!     clinicbox-publish init --repo DIR --keys DIR [--root-keys 3 --threshold 2]
//!     clinicbox-publish bundle --board nuc --version 0.2.0 --root ROOT.ext4 \
//!         --boot vmlinuz --boot initrd.img --cmdline "console=ttyS0" --out FILE
//!     clinicbox-publish add --repo DIR --keys DIR --file BUNDLE --board nuc --version 0.2.0
//!     clinicbox-publish refresh --repo DIR --keys DIR [--timestamp-days 7]
//!     clinicbox-publish rotate --repo DIR --keys OLD --new-keys NEW [--root-keys 3 --threshold 2]
//!
//! `bundle` packs a release's root image and boot files into the file `add` signs
//! (`clinicbox_update::bundle`); `./build.sh bundle` runs both on a built image.
//! `init` makes the keys that are missing and the repository's first root, whose path it
//! prints: that file is what a release ships as its trusted root (`[uplink.update]
//! root_file`). `add` signs a release in with the online keys (targets, snapshot, timestamp);
//! the root keys stay offline. `refresh` re-signs the timestamp alone (only `timestamp.pk8`
//! need be in `--keys`), before it expires. `rotate` makes the keys `NEW` lacks (copy in the
//! ones to keep) and a root naming them, signed by `OLD`'s root keys and `NEW`'s, then
//! re-signs targets, snapshot and timestamp with `NEW`'s: boxes follow the chain by themselves.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clinicbox_update::bundle::{self, Contents};
use clinicbox_update::publish::{self, Expiry, Keys};
use jiff::{SignedDuration, Timestamp};

#[derive(Parser)]
#[command(about = "Signs ClinicBox releases into a TUF repository")]
struct Cli {
    /// The repository: `metadata/` and `targets/` are written inside it.
    #[arg(long, global = true, default_value = "updates")]
    repo: PathBuf,
    /// The signing keys' folder (one Ed25519 PKCS#8 file per key, mode 0600).
    #[arg(long, global = true, default_value = "update-keys")]
    keys: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Makes missing keys and the repository's first root; prints the root's path.
    Init {
        #[command(flatten)]
        root: RootArgs,
    },
    /// Packs a release's root image and boot files into one bundle file.
    Bundle {
        #[arg(long)]
        board: String,
        #[arg(long)]
        version: semver::Version,
        /// The root file system image (the slot's bytes).
        #[arg(long)]
        root: PathBuf,
        /// A boot file (kernel, initrd), kept under its file name; repeat for each.
        #[arg(long, required = true)]
        boot: Vec<PathBuf>,
        /// The kernel command line besides the slot's root and name.
        #[arg(long, default_value = "")]
        cmdline: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Signs a release in: new targets, snapshot and timestamp.
    Add {
        /// The release's file.
        #[arg(long)]
        file: PathBuf,
        /// The board it is for: nuc, pi4 or pi5.
        #[arg(long)]
        board: String,
        /// Its version (semantic versioning).
        #[arg(long)]
        version: semver::Version,
        /// Days the targets and snapshot signatures last.
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Days the timestamp lasts: how long a box accepts this publication without a newer
        /// one (re-sign it before then).
        #[arg(long, default_value_t = 7)]
        timestamp_days: i64,
    },
    /// Re-signs the timestamp alone, with the timestamp key only.
    Refresh {
        #[arg(long, default_value_t = 7)]
        timestamp_days: i64,
    },
    /// A new root naming the keys in `--new-keys` (made where missing), signed by the current
    /// root keys (`--keys`) and the new; the other roles re-signed with the new keys.
    Rotate {
        #[arg(long)]
        new_keys: PathBuf,
        #[command(flatten)]
        root: RootArgs,
        #[arg(long, default_value_t = 90)]
        days: i64,
        #[arg(long, default_value_t = 7)]
        timestamp_days: i64,
    },
}

/// The root a command makes: its keys, how many must sign, how long it lasts.
#[derive(clap::Args)]
struct RootArgs {
    /// How many root keys sign a root, of how many.
    #[arg(long, default_value_t = 1)]
    threshold: u64,
    #[arg(long, default_value_t = 1)]
    root_keys: usize,
    /// Days until the root expires (a new root must be signed before then).
    #[arg(long, default_value_t = 365)]
    root_days: i64,
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

fn expiry(now: Timestamp, role_days: i64, timestamp_days: i64) -> Expiry {
    Expiry {
        targets: now + days(role_days),
        snapshot: now + days(role_days),
        timestamp: now + days(timestamp_days),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let now = Timestamp::now();
    match cli.command {
        Command::Init { root } => {
            let keys = Keys::generate(&cli.keys, root.root_keys, root.threshold)?;
            let root = rt
                .block_on(publish::create(
                    &cli.repo,
                    &keys,
                    now + days(root.root_days),
                ))
                .context("creating the repository")?;
            println!("{}", root.display());
        }
        Command::Bundle {
            board,
            version,
            root,
            boot,
            cmdline,
            out,
        } => {
            let contents = Contents {
                board,
                version,
                cmdline,
                root,
                boot,
            };
            let manifest = bundle::write(&contents, &out).context("packing the bundle")?;
            eprintln!(
                "bundle {} {}: root {} bytes, {} boot files",
                manifest.board,
                manifest.version,
                manifest.root.bytes,
                manifest.boot.len()
            );
            println!("{}", out.display());
        }
        Command::Add {
            file,
            board,
            version,
            days: d,
            timestamp_days,
        } => {
            let keys = Keys::in_folder(&cli.keys, 0, 1);
            let expiry = expiry(now, d, timestamp_days);
            let name = rt
                .block_on(publish::add_release(
                    &cli.repo, &keys, &file, &board, &version, expiry,
                ))
                .context("signing the release")?;
            println!("{name}");
        }
        Command::Refresh { timestamp_days } => {
            let key = Keys::in_folder(&cli.keys, 0, 1).timestamp;
            let expires = now + days(timestamp_days);
            let version = rt
                .block_on(publish::refresh_timestamp(&cli.repo, &key, expires))
                .context("re-signing the timestamp")?;
            eprintln!("timestamp version {version}, expires {expires}");
        }
        Command::Rotate {
            new_keys,
            root,
            days: d,
            timestamp_days,
        } => {
            let old = Keys::present(&cli.keys);
            let new = Keys::generate(&new_keys, root.root_keys, root.threshold)?;
            let root = rt
                .block_on(publish::rotate(
                    &cli.repo,
                    &old,
                    &new,
                    now + days(root.root_days),
                    expiry(now, d, timestamp_days),
                ))
                .context("rotating the keys")?;
            println!("{}", root.display());
        }
    }
    Ok(())
}
