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
}

fn main() -> anyhow::Result<()> {
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
    }
}
