//! What every ClinicBox daemon (`serve`, `power`, `uplink`) does the same way, written once:
//! telling systemd it is ready, what it is doing and that it is alive ([`Notifier`]), and
//! catching SIGTERM/SIGINT from its first instant ([`Signals`]). Configuration has its own one
//! home, `clinicbox::config::Config` (`clinicbox.toml`).

mod notify;
mod signals;

pub use notify::Notifier;
pub use signals::Signals;
