//! `clinicbox keys`: create a store and manage its key slots (PIN, recovery key, key file).
//! Slots wrap the data key; changing them never re-encrypts data.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clinicbox_store::{NewKeySlot, PinCost, Store};

use crate::config::Config;
use crate::unlock::{self, UnlockArgs};

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a new, empty store protected by a key file or a PIN, plus a recovery key.
    Init {
        /// Protect the store with this key file (32 random bytes are written if it is missing).
        /// Default: `[store] key_file` of the configuration.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Protect the store with a PIN/passphrase, asked for on the terminal.
        #[arg(long, conflicts_with = "key_file")]
        pin: bool,
        /// Do not create a recovery key (not recommended: a lost PIN then loses all data).
        #[arg(long)]
        no_recovery: bool,
    },
    /// List the key slots.
    List {
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Add a PIN/passphrase slot.
    AddPin {
        #[arg(long, default_value = "PIN")]
        label: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Add a recovery-key slot; the key is printed once, to be printed and kept safe.
    AddRecovery {
        #[arg(long, default_value = "recovery key")]
        label: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Add a key-file slot.
    AddKeyFile {
        file: PathBuf,
        /// Write 32 random bytes to FILE first (it must not exist).
        #[arg(long)]
        create: bool,
        #[arg(long, default_value = "key file")]
        label: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Remove a key slot (never the last one).
    Remove {
        id: u32,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Change the PIN of a PIN slot.
    ChangePin {
        id: u32,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

/// When a slot was made, for a technician: `2026-12-06 09:22 UTC`.
fn created(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || ms.to_string(),
            |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

pub fn run(cfg: &Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let dir = cfg.data_dir.as_path();
    match cmd {
        KeysCommand::Init {
            key_file,
            pin,
            no_recovery,
        } => {
            // The configured key file is the one `serve` will unlock with.
            let key_file = key_file.or_else(|| cfg.store.key_file.clone().filter(|_| !pin));
            init(dir, key_file, pin, no_recovery)
        }
        KeysCommand::List { unlock } => {
            let store = open(dir, cfg, &unlock)?;
            println!("{:<4} {:<10} {:<24} created", "id", "kind", "label");
            for s in store.key_slots()? {
                println!(
                    "{:<4} {:<10} {:<24} {}",
                    s.id,
                    format!("{:?}", s.kind),
                    s.label,
                    created(s.created_ms)
                );
            }
            Ok(())
        }
        KeysCommand::AddPin { label, unlock: u } => {
            let store = open(dir, cfg, &u)?;
            let pin = unlock::prompt_new_pin()?;
            let (info, _) = store.add_key_slot(NewKeySlot::Pin {
                pin,
                label,
                cost: PinCost::DEFAULT,
            })?;
            println!("added PIN slot {}", info.id);
            Ok(())
        }
        KeysCommand::AddRecovery { label, unlock: u } => {
            let store = open(dir, cfg, &u)?;
            let (info, key) = store.add_key_slot(NewKeySlot::Recovery { label })?;
            remember_recovery(dir, info.id, key.as_ref().map(|k| k.as_str()))?;
            print_recovery(info.id, key.as_ref().map(|k| k.as_str()));
            Ok(())
        }
        KeysCommand::AddKeyFile {
            file,
            create,
            label,
            unlock: u,
        } => {
            let store = open(dir, cfg, &u)?;
            let (info, _) = store.add_key_slot(NewKeySlot::KeyFile {
                path: file,
                label,
                create,
            })?;
            println!("added key-file slot {}", info.id);
            Ok(())
        }
        KeysCommand::Remove { id, unlock: u } => {
            let store = open(dir, cfg, &u)?;
            store.remove_key_slot(id)?;
            println!("removed key slot {id}");
            Ok(())
        }
        KeysCommand::ChangePin { id, unlock: u } => {
            let store = open(dir, cfg, &u)?;
            let pin = unlock::prompt_new_pin()?;
            let info = store.change_pin(id, pin, PinCost::DEFAULT)?;
            println!("PIN changed; the slot is now number {}", info.id);
            Ok(())
        }
    }
}

fn open(dir: &Path, cfg: &Config, u: &UnlockArgs) -> anyhow::Result<Store> {
    let secret = u.resolve_in(&cfg.store, dir)?;
    unlock::open_for_admin(dir, &secret)
}

fn init(dir: &Path, key_file: Option<PathBuf>, pin: bool, no_recovery: bool) -> anyhow::Result<()> {
    let first = match (key_file, pin) {
        (Some(path), false) => {
            let create = !path.exists();
            NewKeySlot::KeyFile {
                path,
                label: "key file".into(),
                create,
            }
        }
        (None, true) => NewKeySlot::Pin {
            pin: unlock::prompt_new_pin()?,
            label: "PIN".into(),
            cost: PinCost::DEFAULT,
        },
        _ => bail!("choose exactly one of --key-file FILE or --pin (or set [store] key_file)"),
    };
    let (store, _) = Store::create(dir, first)?;
    println!("created a new store in {}", dir.display());
    if !no_recovery {
        let (info, key) = store.add_key_slot(NewKeySlot::Recovery {
            label: "recovery key".into(),
        })?;
        remember_recovery(dir, info.id, key.as_ref().map(|k| k.as_str()))?;
        print_recovery(info.id, key.as_ref().map(|k| k.as_str()));
    }
    store.close()?;
    Ok(())
}

/// Keeps the recovery key's backup recipient (its public half), so backups open with it.
fn remember_recovery(dir: &Path, id: u32, key: Option<&str>) -> anyhow::Result<()> {
    let Some(key) = key else { return Ok(()) };
    crate::backup::recipients::remember_recovery_key(dir, id, key).with_context(|| {
        format!(
            "recording the recovery key's backup recipient in {}",
            dir.display()
        )
    })
}

fn print_recovery(id: u32, key: Option<&str>) {
    let Some(key) = key else { return };
    println!("recovery key (slot {id}) — shown once; print it and keep it away from the box:");
    println!();
    println!("    {key}");
    println!();
}

#[cfg(test)]
mod tests {
    #[test]
    fn init_takes_the_configured_key_file_when_none_is_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = crate::config::Config {
            data_dir: dir.path().join("data"),
            store: crate::config::StoreConfig {
                key_file: Some(dir.path().join("store.key")),
                ..Default::default()
            },
            ..Default::default()
        };
        let init = super::KeysCommand::Init {
            key_file: None,
            pin: false,
            no_recovery: true,
        };
        super::run(&cfg, init).expect("init");
        assert!(dir.path().join("store.key").is_file());
        assert!(clinicbox_store::Store::exists(&cfg.data_dir));
    }

    #[test]
    fn slot_times_read_as_dates_not_milliseconds() {
        assert_eq!(super::created(1_796_545_325_094), "2026-12-06 08:22 UTC");
    }
}
