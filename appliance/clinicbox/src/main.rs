use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use clinicbox::config::Config;
use clinicbox::keys::KeysCommand;
use clinicbox::serve::{self, ServeOverrides};

/// ClinicBox: an offline DHIS2 server for clinics.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Default /etc/clinicbox/clinicbox.toml if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the box: serve the DHIS2 API to tablets on the LAN.
    Serve {
        /// Listen on ADDR:PORT instead of the configured addresses (repeatable).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Vec<SocketAddr>,
        /// Run a demonstration box: data in ./demo-data, a key file next to it, demo data loaded,
        /// listening on 127.0.0.1:8080.
        #[arg(long)]
        demo: bool,
    },
    /// Manage the store's key slots.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage tablet users (stop `serve` first: it holds the store).
    #[command(subcommand)]
    User(clinicbox::commands::UserCommand),
    /// Import DHIS2 metadata packages (stop `serve` first: it holds the store).
    #[command(subcommand)]
    Metadata(clinicbox::commands::MetadataCommand),
    /// Watch the UPS or battery; quiesce `serve` and power off cleanly before it runs out.
    Power {
        /// Board profile whose [power] section gives the defaults (the site config's [power]
        /// overrides it). Default /usr/lib/clinicbox/board.toml if it exists.
        #[arg(long, value_name = "FILE")]
        board: Option<PathBuf>,
    },
    /// Send what the clinic recorded to the national DHIS2 ([uplink] in the configuration).
    Uplink(UplinkArgs),
    /// Back the running box up into DIR: one encrypted file, opened by the ministry's HQ keys
    /// ([backup] hq_recipients) and the box's recovery keys. Prints the file's path last.
    Backup {
        /// The folder to write to (a USB stick's mount point).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// For remote admins: the fleet's boxes as their check-ins at national say.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Install signed releases into the other root slot (root, no network: clinicbox-update.service).
    #[command(subcommand)]
    Update(clinicbox::update::UpdateCommand),
    /// The NUC's TPM, as the data partition's unlock needs it (root, early boot).
    #[command(subcommand)]
    Tpm(TpmCommand),
    /// Make a new data directory (--data-dir, absent or empty) from a backup.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// An age identity file of the ministry's HQ.
        #[arg(long, value_name = "KEYFILE", conflicts_with = "recovery_key")]
        hq_identity: Option<PathBuf>,
        /// Open it with the box's printed recovery key (asked for, or read from standard input).
        #[arg(long)]
        recovery_key: bool,
    },
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Every box that checked in to national (`clinicbox-fleet` in its dataStore), one line
    /// each, the boxes with problems first.
    Report {
        /// National DHIS2 base URL.
        #[arg(long, value_name = "URL")]
        national_url: String,
        /// File with a personal access token of an account that may read the namespace.
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// A PEM file of extra root certificates for national.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TpmCommand {
    /// Reset the dictionary-attack counter that power cuts raise (`clinicbox::tpm`), so the
    /// sealed data key is not refused after a few of them.
    ResetLockout {
        /// The TPM device.
        #[arg(long, value_name = "PATH", default_value = clinicbox::tpm::DEVICE)]
        device: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct UplinkArgs {
    /// Run one round and exit: 0 when national was reached and every pending record was
    /// confirmed or parked, 1 with a one-line reason otherwise.
    #[arg(long)]
    once: bool,
    /// Beside a demo box (`clinicbox serve --demo --data-dir DIR`): use its socket in DIR and
    /// any default route as the link.
    #[arg(long)]
    demo: bool,
    /// National DHIS2 base URL (overrides [uplink] national_url).
    #[arg(long, value_name = "URL")]
    national_url: Option<String>,
    /// File with the sync user's personal access token (overrides [uplink] token_file).
    #[arg(long, value_name = "FILE")]
    national_token_file: Option<PathBuf>,
    /// Sync user for HTTP Basic, with --national-password-file.
    #[arg(long, value_name = "USER")]
    national_user: Option<String>,
    /// File with that user's password.
    #[arg(long, value_name = "FILE")]
    national_password_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    run().map_err(permission_hint)
}

/// A refused file says who was refused: the user the command ran as is half of the fix.
fn permission_hint(e: anyhow::Error) -> anyhow::Error {
    let denied = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    if !denied {
        return e;
    }
    let name = clinicbox::commands::effective_user();
    e.context(format!(
        "permission denied to user {name}: run the command as the user that owns the files below (on the image: `sudo -u clinicbox clinicbox …`), or give that user access"
    ))
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    clinicbox::logging::init(&cfg.log.filter);
    // One crypto provider for the whole process (rustls would otherwise refuse to pick one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve { listen, demo } => {
            let overrides = ServeOverrides {
                data_dir: cli.data_dir,
                listen,
                demo,
            };
            let cfg = serve::apply_overrides(cfg, &overrides);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve::run(cfg, demo))
        }
        Command::Keys(cmd) => {
            let mut cfg = cfg;
            if let Some(d) = cli.data_dir {
                cfg.data_dir = d;
            }
            clinicbox::keys::run(&cfg, cmd)
        }
        Command::User(cmd) => {
            admin_command(cfg, cli.data_dir, &cmd.unlock().clone(), |api| async move {
                let ask = |label: &str| {
                    clinicbox::unlock::prompt(label)
                        .map(|p| p.to_string())
                        .map_err(|e| e.to_string())
                };
                clinicbox::commands::run_user(&api, cmd, &ask).await
            })
        }
        Command::Metadata(cmd) => {
            admin_command(cfg, cli.data_dir, &cmd.unlock().clone(), |api| async move {
                clinicbox::commands::run_metadata(&api, cmd).await
            })
        }
        Command::Uplink(args) => uplink(cfg, cli.data_dir, args),
        Command::Update(cmd) => clinicbox::update::run(&beside(cfg, cli.data_dir), cmd),
        Command::Tpm(TpmCommand::ResetLockout { device }) => {
            clinicbox::tpm::run_reset_lockout(&device)?;
            println!("the TPM's dictionary-attack counter is reset");
            Ok(())
        }
        Command::Backup { to } => backup(cfg, cli.data_dir, &to),
        Command::Fleet(FleetCommand::Report {
            national_url,
            token_file,
            ca_file,
        }) => fleet_report(national_url, token_file, ca_file),
        Command::Restore {
            file,
            hq_identity,
            recovery_key,
        } => restore(cli.data_dir, &file, hq_identity, recovery_key),
        Command::Power { board } => {
            let power = clinicbox_power::load_config_for(board.as_deref(), cli.config.as_deref())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match rt.block_on(clinicbox_power::run_until_signal(power))? {
                clinicbox_power::LoopOutcome::PowerOffFailed(e) => {
                    anyhow::bail!("clean power-off failed: {e}")
                }
                _ => Ok(()),
            }
        }
    }
}

/// `clinicbox uplink`: the daemon, or one round with `--once`.
fn uplink(cfg: Config, data_dir: Option<PathBuf>, a: UplinkArgs) -> anyhow::Result<()> {
    let mut up = cfg.uplink.clone();
    if a.demo {
        let dir = data_dir.unwrap_or_else(|| PathBuf::from(serve::DEMO_DATA_DIR));
        up.socket = serve::demo_uplink_socket(&dir);
        up.interface = "any".into();
    }
    if let Some(u) = a.national_url {
        up.national_url = Some(u);
    }
    if a.national_token_file.is_some() || a.national_user.is_some() {
        up.token_file = a.national_token_file;
        up.username = a.national_user;
        up.password_file = a.national_password_file;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if a.once {
        match rt.block_on(clinicbox_uplink::run_once(&up)) {
            Ok(summary) => {
                for line in summary.lines() {
                    println!("{line}");
                }
                Ok(())
            }
            Err(e) => {
                eprintln!("clinicbox uplink: {e}");
                std::process::exit(1);
            }
        }
    } else {
        rt.block_on(async {
            let signals = clinicbox_process::Signals::install()?;
            let daemon = clinicbox_uplink::Daemon {
                cfg: up,
                lan_interface: cfg.discovery.interface.clone(),
                notifier: clinicbox_process::Notifier::from_env(),
            };
            daemon.run(signals).await.map_err(anyhow::Error::from)
        })
    }
}

/// `clinicbox fleet report`: national's check-ins as a table.
fn fleet_report(url: String, token_file: PathBuf, ca_file: Option<PathBuf>) -> anyhow::Result<()> {
    let up = clinicbox_uplink::UplinkConfig {
        national_url: Some(url),
        token_file: Some(token_file),
        ca_file,
        ..Default::default()
    };
    let national = clinicbox_uplink::National::from_config(&up)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let boxes = rt.block_on(clinicbox_uplink::fleet::check_ins(&national))?;
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    print!("{}", clinicbox_uplink::fleet::report_table(boxes, now_ms));
    Ok(())
}

/// Opens the store, runs one API admin command, prints its output, closes the store.
fn admin_command<F, Fut>(
    mut cfg: Config,
    data_dir: Option<PathBuf>,
    unlock: &clinicbox::unlock::UnlockArgs,
    f: F,
) -> anyhow::Result<()>
where
    F: FnOnce(clinicbox_api::ApiState) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    let secret = unlock.resolve_in(&cfg.store, &cfg.data_dir)?;
    let store = clinicbox::unlock::open_for_admin(&cfg.data_dir, &secret)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let api = clinicbox_api::ApiState::new(store.clone(), cfg.api.clone())
            .await
            .map_err(anyhow::Error::from)?;
        f(api).await
    });
    store.close()?;
    let out = result?;
    println!("{out}");
    Ok(())
}

/// `cfg` for a command run beside a running box: with `--data-dir` (a demo box), that folder
/// and the control socket `serve --demo` keeps in it.
fn beside(mut cfg: Config, data_dir: Option<PathBuf>) -> Config {
    if let Some(d) = data_dir {
        let demo_socket = d.join("control.sock");
        if demo_socket.exists() {
            cfg.power.control_socket = demo_socket;
        }
        cfg.data_dir = d;
    }
    cfg
}

/// `clinicbox backup --to DIR`: beside a running box (`--config`, or `--data-dir` for a demo box,
/// whose control socket is next to its data).
fn backup(cfg: Config, data_dir: Option<PathBuf>, to: &std::path::Path) -> anyhow::Result<()> {
    let cfg = beside(cfg, data_dir);
    let w = clinicbox::backup::backup(
        &cfg.data_dir,
        &cfg.power.control_socket,
        &cfg.box_info.name,
        &cfg.backup,
        to,
    )?;
    println!(
        "backup of box {} up to change {}: {} files, {} bytes",
        w.manifest.box_id,
        w.manifest.last_seq,
        w.manifest.files.len(),
        w.bytes
    );
    println!("{}", w.path.display());
    Ok(())
}

/// `clinicbox restore FILE --data-dir NEWDIR (--hq-identity KEYFILE | --recovery-key)`.
fn restore(
    data_dir: Option<PathBuf>,
    file: &std::path::Path,
    hq_identity: Option<PathBuf>,
    recovery_key: bool,
) -> anyhow::Result<()> {
    let Some(new_dir) = data_dir else {
        anyhow::bail!("name the new data directory with --data-dir NEWDIR");
    };
    let key = match (hq_identity, recovery_key) {
        (Some(path), false) => clinicbox::backup::RestoreKey::HqIdentity(path),
        (None, true) => {
            clinicbox::backup::RestoreKey::RecoveryKey(clinicbox::unlock::prompt("Recovery key")?)
        }
        _ => anyhow::bail!("open the backup with --hq-identity KEYFILE or --recovery-key"),
    };
    let m = clinicbox::backup::restore(file, &new_dir, &key)?;
    println!(
        "restored box {} ({}) as of {} changes into {}",
        m.box_id,
        m.box_name,
        m.last_seq,
        new_dir.display()
    );
    Ok(())
}
