//! Watching the route file. Every way it can change is caught:
//!
//! * an in-place write, and a rename over it (editors, `mv`);
//! * the Kubernetes ConfigMap update, where `routes.yaml -> ..data/routes.yaml`
//!   and the kubelet atomically swaps the `..data` symlink: the file itself is
//!   never written and its mtime does not change (kubernetes#24215).
//!
//! So the *directory* is watched (it survives every kind of swap, nothing to
//! re-arm), events are debounced, and the file is also polled: a reload only
//! happens when the content hash differs from the live table's, so polling
//! is cheap and a missed event costs at most one poll interval. `SIGHUP`
//! triggers the same reload, and the TLS certificates' reload too.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::reload::Reloader;

/// How often the file is re-read even without an event.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Events closer together than this are one change (the kubelet's swap is
/// several renames and symlinks).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Runs until `stop` turns true. `hup` comes from [`sighup`], installed by
/// the caller before the gateway announces itself, so that an early SIGHUP
/// reloads instead of killing the process.
pub async fn run(
    reloader: Arc<Reloader>,
    mut hup: Option<tokio::signal::unix::Signal>,
    on_hup: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut events) = mpsc::channel::<()>(16);
    // Keep the watcher alive for the life of the loop; without it the
    // poll alone still catches every change.
    let _watcher = watch_dir(&reloader, tx);
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            Some(()) = events.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while events.try_recv().is_ok() {}
            }
            Some(()) = recv_hup(&mut hup) => {
                tracing::info!(signal = "SIGHUP", "reload requested");
                // Certificates reload on the same signal.
                on_hup.notify_one();
            }
            _ = stopped(&mut stop) => return,
        }
        let r = reloader.clone();
        // File reads and table builds are blocking work; keep them off the
        // request workers.
        let _ = tokio::task::spawn_blocking(move || r.reload_once()).await;
    }
}

fn watch_dir(reloader: &Reloader, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = reloader
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    let name = reloader.path.file_name().map(|n| n.to_owned());
    let handler = move |res: notify::Result<notify::Event>| {
        // Only events about the route file or the kubelet's `..data` swap
        // matter: other files in the directory (a log file, say) must not
        // cost a reload check on every write.
        // Reading the file (ours included) is not a change: without this,
        // every reload's own read would trigger the next reload.
        let relevant = res.is_ok_and(|ev| {
            !matches!(ev.kind, notify::EventKind::Access(_))
                && ev.paths.iter().any(|p| {
                    p.file_name().is_some_and(|f| {
                        Some(f) == name.as_deref() || f.as_encoded_bytes().starts_with(b"..")
                    })
                })
        });
        if relevant {
            // A full channel already means "something changed".
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the route file's directory; polling only");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the route file's directory; polling only");
        return None;
    }
    Some(watcher)
}

/// Installs the SIGHUP handler (replacing the default action: terminate).
pub fn sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler");
            None
        }
    }
}

async fn recv_hup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when `stop` turns true (or its sender is gone). The borrow guard
/// `wait_for` returns is dropped here, so the caller's future stays `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}
