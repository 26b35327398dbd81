//! What every ClinicBox daemon (`serve`, `power`, `uplink`) does the same way, written once:
//! telling systemd it is ready, what it is doing and that it is alive ([`Notifier`]), and
//! catching SIGTERM/SIGINT from its first instant ([`Signals`]), replacing a state file whole
//! ([`write_atomic`]). Configuration has its own one home, `clinicbox::config::Config`
//! (`clinicbox.toml`).

mod durable;
mod notify;
mod signals;

pub use durable::write_atomic;
pub use notify::Notifier;
pub use signals::Signals;
