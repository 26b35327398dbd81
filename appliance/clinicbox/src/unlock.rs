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
