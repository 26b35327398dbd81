//! `clinicbox update`: the root one-shot that installs releases (clinicbox-update.service,
//! with no network). It trusts nothing the uplink decided: the staged folder, or a USB
//! stick's `clinicbox-update/`, is verified again against the installer's own metadata.
//! After a healthy boot, the boot check (image/scripts/mark-good) calls `booted`, which
//! records a rollback of the other slot with the reason its trial boots left on the ESP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clinicbox_update::boot::{Disks, Loader, Slot, SystemdBoot};
use clinicbox_update::install::{self, Layout, Outcome, Request};
use clinicbox_update::seed;
use clinicbox_update::state::State;
use clinicbox_update::tryboot::Tryboot;
use clinicbox_update::{BootLoader, ClockFloor, IMAGE_MANIFEST, release_built};
use jiff::Timestamp;

use crate::config::Config;

mod mounts;
use mounts::{Access, BootMounts};

#[derive(Debug, clap::Subcommand)]
pub enum UpdateCommand {
    /// Verify a repository folder and write its newest release for this board into the other
    /// slot; prints what it did last.
    Install {
        /// The repository folder (`metadata/`, `targets/`). Default: what the uplink staged
        /// (`[uplink.update] dir`/staging).
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// When to restart into the release once it is written: `now`, `window` (only inside
        /// `[update] reboot_hours`) or `never`.
        #[arg(long, value_enum, default_value_t = RebootWhen::Never)]
        reboot: RebootWhen,
    },
    /// After a healthy boot: record a rollback of the other slot, if one happened.
    Booted,
    /// Cut the running slot into chunks if its index is missing (the slot the box was flashed
    /// with): the uplink then downloads only what a release changes.
    Seed,
    /// Print the installer's state (`state.json`).
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RebootWhen {
    Now,
    Window,
    Never,
}

pub fn run(cfg: &Config, cmd: UpdateCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let u = &cfg.update;
    match cmd {
        UpdateCommand::Install { from, reboot } => {
            let from = from.unwrap_or_else(|| cfg.uplink.update.dir.join("staging"));
            let layout = layout(u)?;
            let _mounted = BootMounts::mount(u, Slot::running()?, Access::Write)?;
            let outcome = rt.block_on(install_from(cfg, &layout, &from))?;
            let ready = match &outcome {
                Outcome::Nothing => {
                    println!("nothing newer to install from {}", from.display());
                    return Ok(());
                }
                Outcome::Refused(v) => {
                    println!(
                        "{v} came back to the old slot on this box before: not installed again"
                    );
                    return Ok(());
                }
                Outcome::Ready(i) => {
                    println!(
                        "{} is already in slot {} ({})",
                        i.version,
                        i.slot,
                        i.entry.display()
                    );
                    i
                }
                Outcome::Installed(i) => {
                    println!(
                        "installed {} into slot {} ({})",
                        i.version,
                        i.slot,
                        i.entry.display()
                    );
                    i
                }
            };
            let (window, _) = rt.block_on(maintenance_window(cfg));
            restart(&window, &layout.boot, reboot, ready)
        }
        UpdateCommand::Booted => {
            let boot = layout(u)?.boot;
            let slot = Slot::running()?;
            let _mounted = BootMounts::mount(u, slot, Access::Write)?;
            // A Pi's healthy slot loses its count (systemd-bless-boot does a NUC's entry).
            boot.bless(slot)?;
            let other = boot.entries(slot.other())?;
            let mut state = State::load(&u.state_dir);
            let version = clinicbox_process::running_release();
            if let Some((v, reason)) = boot.take_trial_note(slot.other())? {
                state.trial_failed(&v, slot.other(), &reason, now_ms());
            }
            // This slot was healthy in the end: a note from an earlier try of it is old news.
            boot.take_trial_note(slot)?;
            if state.after_healthy_boot(slot, &version, &other, now_ms()) {
                state.save(&u.state_dir)?;
            }
            match &state.last_rollback {
                Some(r) => println!(
                    "running {version} in slot {slot}; last rollback: {} in slot {}: {}",
                    r.version,
                    r.slot.to_uppercase(),
                    r.reason.as_deref().unwrap_or("-")
                ),
                None => println!("running {version} in slot {slot}; no rollback"),
            }
            Ok(())
        }
        UpdateCommand::Seed => {
            let slot = Slot::running()?;
            let version = clinicbox_process::running_release();
            let board = board(cfg)?;
            let layout = layout(u)?;
            let _mounted = BootMounts::mount(u, slot, Access::ReadRunning)?;
            if seed::ensure(&layout, &u.state_dir, slot, board, &version)? {
                let index = seed::running(&u.state_dir, slot, &version)
                    .context("the index just written")?;
                let chunks: usize = index.parts.iter().map(Vec::len).sum();
                println!(
                    "slot {slot} ({version}) cut into {chunks} chunks: updates download only what they change"
                );
            } else {
                println!("slot {slot} ({version}) has its index");
            }
            Ok(())
        }
        UpdateCommand::Status => {
            let mut shown = serde_json::to_value(State::load(&u.state_dir))?;
            let (window, window_from) = rt.block_on(maintenance_window(cfg));
            shown["rebootHours"] = serde_json::json!(window.reboot_hours);
            shown["rebootHoursFrom"] = window_from.into();
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(())
        }
    }
}

/// `[update]` with the maintenance window in force: a remote admin's (`rebootHours`, asked of
/// `serve` over the control socket), else the configured one; and which it is. A `serve` that
/// does not answer (stopped, or the release is broken) leaves the configured window.
async fn maintenance_window(cfg: &Config) -> (clinicbox_update::InstallConfig, &'static str) {
    let mut u = cfg.update.clone();
    let socket = &cfg.power.control_socket;
    let mut control = clinicbox_control::ControlClient::new(socket, Duration::from_secs(3));
    match control.status().await {
        Ok(s) => match s.reboot_hours {
            Some(hours) => {
                u.reboot_hours = hours;
                (u, "remote configuration")
            }
            None => (u, "[update] reboot_hours"),
        },
        Err(e) => {
            tracing::debug!(error = %e, "serve did not say whether a remote admin set the window");
            (u, "[update] reboot_hours (serve did not answer)")
        }
    }
}

fn layout(u: &clinicbox_update::InstallConfig) -> anyhow::Result<Layout> {
    let boot = match u.boot {
        Some(BootLoader::SystemdBoot) => Loader::SystemdBoot(SystemdBoot {
            esp: u.esp.clone(),
            tries: u.tries,
        }),
        Some(BootLoader::RpiTryboot) if u.boot_partitions.is_some() => Loader::Tryboot(Tryboot {
            dirs: [mounts::dir(u, Slot::A), mounts::dir(u, Slot::B)],
        }),
        Some(BootLoader::RpiTryboot) => {
            bail!("[update] boot is rpi-tryboot but boot_partitions is not set")
        }
        None => bail!("[update] boot is not set: this box has no A/B root slots to install into"),
    };
    Ok(Layout {
        boot,
        disks: Disks {
            links: u.disks.clone(),
            roots: u.root_partitions.clone(),
        },
    })
}

fn board(cfg: &Config) -> anyhow::Result<&str> {
    cfg.uplink
        .update
        .board
        .as_deref()
        .context("[uplink.update] board is not set: which board's releases to install")
}

async fn install_from(cfg: &Config, layout: &Layout, from: &Path) -> anyhow::Result<Outcome> {
    let u = &cfg.update;
    let board = board(cfg)?;
    let root_file = &cfg.uplink.update.root_file;
    let shipped_root = std::fs::read(root_file)
        .with_context(|| format!("the trusted root {}", root_file.display()))?;
    let running: semver::Version = clinicbox_process::running_release()
        .parse()
        .context("the running release's version")?;
    let now = judged_now(cfg)?;
    let req = Request {
        from,
        board,
        running: &running,
        running_slot: Slot::running()?,
        shipped_root: &shipped_root,
        now,
        layout,
        state_dir: &u.state_dir,
    };
    Ok(install::from_folder(req).await?)
}

/// The time expiry is judged by: the installer's own clock floor (raised only from a
/// synchronised clock), or the uplink's when that is later (what national's clock said). The
/// uplink's floor is taken for this run and never kept: a compromised uplink could only make
/// metadata look expired, and not for good.
fn judged_now(cfg: &Config) -> anyhow::Result<Timestamp> {
    let built = release_built(Path::new(IMAGE_MANIFEST));
    std::fs::create_dir_all(&cfg.update.state_dir)?;
    let mut floor = ClockFloor::open(&cfg.update.state_dir.join("clock-floor"), built)?;
    let synchronised = clinicbox_update::clock_synchronised();
    let system = Timestamp::now();
    if synchronised {
        floor.raise(system)?;
    }
    let uplink = ClockFloor::open(&cfg.uplink.update.dir.join("clock-floor"), built)
        .map_or(built, |f| f.floor());
    Ok(floor.now(system, synchronised).max(uplink))
}

fn restart(
    u: &clinicbox_update::InstallConfig,
    boot: &Loader,
    when: RebootWhen,
    ready: &install::Installed,
) -> anyhow::Result<()> {
    let version = &ready.version;
    let hour = jiff::Zoned::now().hour() as u8;
    let go = match when {
        RebootWhen::Now => true,
        RebootWhen::Window => u.may_reboot_at(hour),
        RebootWhen::Never => false,
    };
    if !go {
        let [start, end] = u.reboot_hours;
        let next = match boot.reboot_argument() {
            // A plain restart boots the Pi's default slot: only the installer's tryboot
            // restart tries the new one.
            Some(_) => "waits for the installer's restart",
            None => "boots at the next restart",
        };
        match when {
            RebootWhen::Never => println!("{version} {next}"),
            _ => println!(
                "{version} {next} (the box restarts for it between {start}:00 and {end}:00)"
            ),
        }
        return Ok(());
    }
    boot.spend_try(ready.slot)?;
    println!("restarting into {version}");
    let status = std::process::Command::new("systemctl")
        .arg("reboot")
        .args(boot.reboot_argument())
        .status()
        .context("systemctl reboot")?;
    if !status.success() {
        bail!("systemctl reboot: {status}");
    }
    Ok(())
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}
