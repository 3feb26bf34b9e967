//! The shutdown sequence, in order:
//!
//! 1. the first SIGTERM/SIGINT: `/readyz` turns 503 at once;
//! 2. public listeners keep accepting for `drain_delay` (Kubernetes removes
//!    the pod from Service endpoints with a lag; requests keep arriving);
//! 3. listeners stop accepting; open connections are asked to close
//!    (idle HTTP/1.1 at once, busy ones with `Connection: close` on their
//!    last response, HTTP/2 with GOAWAY);
//! 4. in-flight requests get up to `timeout` to finish;
//! 5. any request still unfinished is logged by id, method, path and age.
//!
//! A second signal during the drain skips to step 5 and exits at once.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::drain::Drain;

pub struct Plan {
    pub drain: Drain,
    pub drain_delay: Duration,
    pub timeout: Duration,
    /// Turning it true stops the listeners and closes connections gracefully.
    pub stop_listeners: watch::Sender<bool>,
    pub stop_watcher: watch::Sender<bool>,
    pub servers: Vec<JoinHandle<()>>,
    pub watcher: JoinHandle<()>,
}

/// Waits for `first` (the shutdown trigger), then drains per [`Plan`].
/// `again` resolves on a second signal.
pub async fn sequence(first: impl Future<Output = ()>, plan: Plan) {
    first.await;
    run(plan, super::signals::shutdown_signal()).await;
}

async fn run(plan: Plan, again: impl Future<Output = ()>) {
    tokio::pin!(again);
    plan.drain.start_draining();
    tracing::info!(
        drain_delay_ms = plan.drain_delay.as_millis() as u64,
        timeout_ms = plan.timeout.as_millis() as u64,
        "draining: /readyz now answers 503; still accepting during the drain delay"
    );
    let interrupted = tokio::select! {
        _ = tokio::time::sleep(plan.drain_delay) => false,
        _ = &mut again => true,
    };
    let _ = plan.stop_listeners.send(true);
    let _ = plan.stop_watcher.send(true);
    if interrupted {
        tracing::warn!("second shutdown signal: exiting now");
    } else {
        tracing::info!(
            inflight = plan.drain.inflight.len() as u64,
            "listeners closed; waiting for requests in flight"
        );
        let all = futures_util::future::join_all(plan.servers);
        let finished = tokio::select! {
            r = tokio::time::timeout(plan.timeout, all) => r.is_ok(),
            _ = &mut again => {
                tracing::warn!("second shutdown signal: exiting now");
                false
            }
        };
        if !finished {
            tracing::warn!(
                inflight = plan.drain.inflight.len() as u64,
                "shutdown deadline reached with requests still in flight"
            );
        }
    }
    plan.drain.inflight.log_unfinished();
    plan.watcher.abort();
    tracing::info!("shutdown complete");
}
