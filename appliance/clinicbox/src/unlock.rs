//! Turning configuration and command-line choices into a store unlock secret.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clinicbox_store::{Unlock, Zeroizing};

use crate::config::StoreConfig;

/// The unlock secret the configuration names.
pub fn from_config(cfg: &StoreConfig) -> anyhow::Result<Unlock> {
    if let Some(name) = &cfg.credential {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").context(
            "store.credential is set but systemd passed no credentials (CREDENTIALS_DIRECTORY)",
        )?;
        return Ok(Unlock::key_file(Path::new(&dir).join(name)));
    }
    if let Some(path) = &cfg.key_file {
        return Ok(Unlock::key_file(path));
    }
    if let Some(path) = &cfg.pin_file {
        return Ok(Unlock::Pin(read_pin_file(path)?));
    }
    bail!(
        "no way to unlock the store is configured: set store.credential, store.key_file or store.pin_file"
    )
}

fn read_pin_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_owned()))
}

/// Asks for a secret: without echo on a terminal, else one line of standard input (scripts).
pub fn prompt(label: &str) -> anyhow::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        return Ok(Zeroizing::new(rpassword::prompt_password(format!(
            "{label}: "
        ))?));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// A new PIN, asked twice on a terminal.
pub fn prompt_new_pin() -> anyhow::Result<Zeroizing<String>> {
    let pin = prompt("New PIN or passphrase")?;
    if std::io::stdin().is_terminal() && *prompt("Repeat it")? != *pin {
        bail!("the two entries differ; nothing was changed");
    }
    Ok(pin)
}

/// Opens the store for an admin command; says `serve` holds it only when it does.
pub fn open_for_admin(dir: &Path, secret: &Unlock) -> anyhow::Result<clinicbox_store::Store> {
    clinicbox_store::Store::open(dir, secret).map_err(|e| match e {
        clinicbox_store::StoreError::Locked { .. } => anyhow::anyhow!(
            "the store in {} is in use by `clinicbox serve`: stop it first (on a box: systemctl stop clinicbox)",
            dir.display()
        ),
        e => anyhow::Error::from(e).context(format!("cannot open the store in {}", dir.display())),
    })
}

/// Unlock choices shared by admin commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UnlockArgs {
    /// Unlock with this key file instead of the configured secret.
    #[arg(long, value_name = "FILE")]
    pub unlock_key_file: Option<PathBuf>,
    /// Unlock with a PIN/passphrase, asked for on the terminal (or read from standard input).
    #[arg(long, conflicts_with = "unlock_key_file")]
    pub unlock_pin: bool,
    /// Unlock with the recovery key, asked for on the terminal (or read from standard input).
    #[arg(long, conflicts_with_all = ["unlock_key_file", "unlock_pin"])]
    pub unlock_recovery: bool,
}

impl UnlockArgs {
    /// The secret for the store in `data_dir`: the flags, else the configuration, else a demo
    /// box's key file next to its data (the demo opens with it anyway).
    pub fn resolve_in(&self, cfg: &StoreConfig, data_dir: &Path) -> anyhow::Result<Unlock> {
        let demo_key = data_dir.join(crate::backup::layout::DEMO_KEY);
        let nothing_configured =
            cfg.credential.is_none() && cfg.key_file.is_none() && cfg.pin_file.is_none();
        let flags = self.unlock_key_file.is_some() || self.unlock_pin || self.unlock_recovery;
        if nothing_configured && !flags {
            // `is_file` would call a folder we may not read "no demo here".
            match std::fs::metadata(&demo_key) {
                Ok(m) if m.is_file() => return Ok(Unlock::key_file(&demo_key)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot look into {}", data_dir.display())));
                }
                _ => {}
            }
        }
        self.resolve(cfg)
    }

    pub fn resolve(&self, cfg: &StoreConfig) -> anyhow::Result<Unlock> {
        if let Some(path) = &self.unlock_key_file {
            return Ok(Unlock::key_file(path));
        }
        if self.unlock_pin {
            return Ok(Unlock::Pin(prompt("PIN or passphrase")?));
        }
        if self.unlock_recovery {
            return Ok(Unlock::RecoveryKey(prompt("Recovery key")?));
        }
        from_config(cfg)
    }
}
