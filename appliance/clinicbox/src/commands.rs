//! The `clinicbox user …` and `clinicbox metadata …` subcommands: argument types (clap) and what
//! they do over the API's [`ApiState`] (its `admin` functions). `main.rs` opens the store,
//! builds the state and prints the text.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clinicbox_api::ApiState;
use clinicbox_api::admin::{self, NewUser};
use clinicbox_api::metadata::import::{ImportParams, ImportStrategy, atomic_mode};

use crate::unlock::UnlockArgs;

/// `clinicbox user …`. The store-unlock options are flattened into every command so they can
/// follow the subcommand as in `clinicbox keys`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user (the password is asked for, or read from standard input).
    Add {
        username: String,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        surname: String,
        /// User role UID or name (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Capture org unit UID or name (repeatable).
        #[arg(long = "org-unit", value_name = "ORG_UNIT")]
        org_units: Vec<String>,
        /// Search org unit UID or name (repeatable; default: the capture org units).
        #[arg(long = "search-org-unit", value_name = "ORG_UNIT")]
        search_org_units: Vec<String>,
        /// Grant every authority (authority ALL).
        #[arg(long)]
        superuser: bool,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Set a user's password (asked for, or read from standard input).
    Passwd {
        username: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Disable a user: its tablets are told "Account disabled" and remove their local copy.
    Disable {
        username: String,
        /// Enable the user again instead.
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// List users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

impl UserCommand {
    /// The unlock options given with the command.
    pub fn unlock(&self) -> &UnlockArgs {
        match self {
            UserCommand::Add { unlock, .. }
            | UserCommand::Passwd { unlock, .. }
            | UserCommand::Disable { unlock, .. }
            | UserCommand::List { unlock, .. } => unlock,
        }
    }
}

/// `clinicbox metadata …` (`U` as for [`UserCommand`]).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MetadataCommand {
    /// Import a DHIS2 metadata package (JSON in the `/api/metadata` export format).
    Import {
        file: PathBuf,
        /// CREATE_AND_UPDATE, CREATE, UPDATE or DELETE.
        #[arg(long, default_value = "CREATE_AND_UPDATE")]
        import_strategy: ImportStrategy,
        /// ALL (nothing is written if anything is wrong) or NONE (skip bad objects).
        #[arg(long, default_value = "ALL", value_parser = atomic_mode, action = clap::ArgAction::Set)]
        atomic_mode: bool,
        /// Only check the package.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

impl MetadataCommand {
    /// The unlock options given with the command.
    pub fn unlock(&self) -> &UnlockArgs {
        match self {
            MetadataCommand::Import { unlock, .. } => unlock,
        }
    }
}

/// Runs a user command; returns what to print. `password` asks for a password (label given).
/// The name of the user this process runs as (its uid when the system has no name for it).
pub fn effective_user() -> String {
    let uid = nix::unistd::Uid::effective();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// A technician's change from the command line, in the box's audit trail (who: the login
/// that ran the command, as far as the environment says).
async fn audit(state: &ApiState, action: &str, detail: &str) {
    let login = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| effective_user());
    let who = format!("command line ({login})");
    let entry = clinicbox_web::audit::AuditEntry::new(&who, action, detail);
    clinicbox_web::audit::record(state.store(), entry).await;
}

pub async fn run_user(
    state: &ApiState,
    cmd: UserCommand,
    password: &dyn Fn(&str) -> Result<String, String>,
) -> anyhow::Result<String> {
    let svc = state.metadata();
    let ask = |label: &str| password(label).map_err(anyhow::Error::msg);
    match cmd {
        UserCommand::Add {
            username,
            first_name,
            surname,
            roles,
            org_units,
            search_org_units,
            superuser,
            ..
        } => {
            let new = NewUser {
                password: ask(&format!("Password for {username}"))?,
                username: username.clone(),
                first_name,
                surname,
                roles,
                org_units,
                search_org_units,
                superuser,
            };
            let uid = admin::add_user(svc, &new).await?;
            audit(state, "user added", &username).await;
            Ok(format!("added user {username} ({uid})"))
        }
        UserCommand::Passwd { username, .. } => {
            let p = ask(&format!("New password for {username}"))?;
            admin::set_password(svc, &username, &p).await?;
            audit(state, "password reset", &username).await;
            Ok(format!("password of {username} changed"))
        }
        UserCommand::Disable {
            username, enable, ..
        } => {
            admin::set_disabled(svc, &username, !enable).await?;
            let done = if enable { "enabled" } else { "disabled" };
            audit(state, &format!("user {done}"), &username).await;
            Ok(format!("{username} {done}"))
        }
        UserCommand::List { json, .. } => {
            let users = admin::list_users(svc)?;
            if json {
                return serde_json::to_string_pretty(&users).context("users as JSON");
            }
            let mut out = format!(
                "{:<20} {:<12} {:<9} {:<28} org units\n",
                "username", "uid", "state", "roles"
            );
            for u in users {
                out.push_str(&format!(
                    "{:<20} {:<12} {:<9} {:<28} {}\n",
                    u.username,
                    u.uid,
                    if u.disabled { "disabled" } else { "active" },
                    u.roles.join(", "),
                    u.org_units.join(", ")
                ));
            }
            Ok(out.trim_end().to_string())
        }
    }
}

/// Runs a metadata command; returns what to print, or the import report's errors.
pub async fn run_metadata(state: &ApiState, cmd: MetadataCommand) -> anyhow::Result<String> {
    match cmd {
        MetadataCommand::Import {
            file,
            import_strategy,
            atomic_mode,
            dry_run,
            ..
        } => {
            let params = ImportParams {
                strategy: import_strategy,
                atomic: atomic_mode,
                validate_only: dry_run,
                ..ImportParams::default()
            };
            let report = admin::import_file(state.metadata(), &file, params).await?;
            let mut out = admin::summarize(&report);
            for e in report.error_reports() {
                out.push_str(&format!(
                    "\n  {} {}: {}",
                    e.error_code,
                    e.main_id.as_deref().unwrap_or("-"),
                    e.message
                ));
            }
            if report.status == clinicbox_dhis2::ImportStatus::Ok || !params.atomic {
                if dry_run {
                    out.push_str("\n(dry run: nothing written)");
                } else {
                    audit(
                        state,
                        "metadata package imported",
                        &admin::summarize(&report),
                    )
                    .await;
                }
                Ok(out)
            } else {
                bail!("{out}\nnothing was written")
            }
        }
    }
}
