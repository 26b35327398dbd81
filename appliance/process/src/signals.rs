//! SIGTERM and SIGINT, caught from the moment a daemon starts.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The stop signals of a daemon. Install them first thing in `main`'s runtime, so a signal
/// that arrives during start-up is not lost (the default action would kill the process
/// mid-write) but answered once the daemon is ready to stop cleanly.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers. Needs a Tokio runtime with I/O enabled.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT (one that already arrived counts) and logs it.
    pub async fn recv(&mut self) -> &'static str {
        let name = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        tracing::info!("{name} received");
        name
    }

    /// Spawns a task that waits for the first signal and then runs `then`.
    pub fn on_first(mut self, then: impl FnOnce() + Send + 'static) {
        tokio::spawn(async move {
            self.recv().await;
            then();
        });
    }
}
