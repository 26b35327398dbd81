//! What every ClinicBox daemon (`serve`, `power`, `uplink`) does the same way, written once:
//! telling systemd it is ready, what it is doing and that it is alive ([`Notifier`]), and
//! catching SIGTERM/SIGINT from its first instant ([`Signals`]), replacing a state file whole
//! ([`write_atomic`]), and which release runs ([`running_release`]). Configuration has its own one home, `clinicbox::config::Config`
//! (`clinicbox.toml`).

mod durable;
mod notify;
mod release;
mod signals;

pub use durable::write_atomic;
pub use notify::Notifier;
pub use release::running_release;
pub use signals::Signals;
