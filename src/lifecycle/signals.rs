//! Process signals: SIGTERM and SIGINT start a graceful shutdown (a second
//! one cuts it short). SIGHUP, which reloads, lives with the route watcher.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed handlers for SIGTERM and SIGINT. Installing early matters:
/// until a handler exists, these signals kill the process outright.
pub struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Signals {
    pub fn install() -> Signals {
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(signal = name, error = %e, "cannot install the signal handler");
                None
            }
        };
        Signals {
            term: install(SignalKind::terminate(), "SIGTERM"),
            int: install(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            Some(()) = recv(&mut self.term) => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            Some(()) = recv(&mut self.int) => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    }
}

async fn recv(s: &mut Option<Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves on the first SIGTERM or SIGINT after the call.
pub async fn shutdown_signal() {
    Signals::install().recv().await
}
