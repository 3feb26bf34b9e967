//! Wiring: builds the shared state from a validated [`GatewayConfig`], loads
//! the first route table, and runs every listener until shutdown. Takes
//! already-bound listeners so that tests never race for ports.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::GatewayConfig;
use crate::lifecycle::reload::{ReloadOutcome, Reloader};
use crate::observability::metrics::Metrics;
use crate::proxy::upstream::{UpstreamClients, UpstreamSetupError};
use crate::proxy::{Gateway, RequestLimits};
use crate::routing::live::LiveRoutes;
use crate::server::{self, ListenerKind, ServerOptions};

/// The sockets the gateway serves on, bound before [`start`].
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    pub operator: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address the config names.
    pub async fn bind(cfg: &GatewayConfig) -> Result<Listeners, BindError> {
        Ok(Listeners {
            http: bind_opt(cfg.listen.http).await?,
            https: bind_opt(cfg.listen.https).await?,
            operator: bind_opt(Some(cfg.operator.listen)).await?,
        })
    }
}

async fn bind_opt(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, BindError> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| BindError { addr, source }),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot set up upstream clients: {0}")]
    Upstream(#[from] UpstreamSetupError),
    #[error("listen.https is configured but no HTTPS listener was passed in")]
    MissingHttpsListener,
}

/// A started gateway.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub operator_addr: Option<SocketAddr>,
    pub live: Arc<LiveRoutes>,
    pub metrics: Arc<Metrics>,
    done: JoinHandle<()>,
}

impl Running {
    /// Resolves when every listener has stopped and drained.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Starts the gateway. Returns once the listeners are serving; the gateway
/// runs until `shutdown` resolves and then drains.
pub async fn start(
    cfg: GatewayConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let clients = Arc::new(UpstreamClients::new(cfg.limits.upstream_connect_timeout)?);
    let live = Arc::new(LiveRoutes::new());
    let reloader = Reloader {
        path: cfg.routes_file.clone(),
        live: live.clone(),
        metrics: metrics.clone(),
        clients: clients.clone(),
        default_timeout: cfg.limits.upstream_timeout,
    };
    if let ReloadOutcome::Failed { .. } = reloader.reload_once() {
        tracing::warn!(
            "starting without a route table: /readyz answers 503 until the route file is valid"
        );
    }

    let gateway = Arc::new(Gateway::new(
        live.clone(),
        &metrics,
        RequestLimits {
            max_header_bytes: cfg.limits.max_header_bytes,
            max_body_bytes: cfg.limits.max_body_bytes,
        },
        cfg.limits.max_inflight,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let options = |kind: ListenerKind| ServerOptions {
        kind,
        header_read_timeout: cfg.limits.header_read_timeout,
        max_header_bytes: cfg.limits.max_header_bytes,
        max_connections: cfg.limits.max_connections,
        tls: None,
        connections_open: metrics.connections_open.with_label_values(&[kind.as_str()]),
    };

    let mut servers = Vec::new();
    let http_addr = match listeners.http {
        Some(l) => {
            let addr = l.local_addr().ok();
            log_listening(ListenerKind::Http, addr);
            servers.push(tokio::spawn(server::serve(
                l,
                gateway.clone(),
                options(ListenerKind::Http),
                stop_rx.clone(),
            )));
            addr
        }
        None => None,
    };
    if cfg.listen.https.is_some() && listeners.https.is_none() {
        return Err(StartError::MissingHttpsListener);
    }
    let https_addr = None;
    let operator_addr = listeners
        .operator
        .as_ref()
        .and_then(|l| l.local_addr().ok());

    let shutdown_timeout = cfg.shutdown.timeout;
    let done = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: closing listeners and draining connections");
        let _ = stop_tx.send(true);
        let all = futures_util::future::join_all(servers);
        if tokio::time::timeout(shutdown_timeout, all).await.is_err() {
            tracing::warn!(
                timeout_ms = shutdown_timeout.as_millis() as u64,
                "shutdown timeout reached with requests still in flight"
            );
        }
        drop(reloader);
    });
    Ok(Running {
        http_addr,
        https_addr,
        operator_addr,
        live,
        metrics,
        done,
    })
}

/// The startup line tests and operators read the bound address from.
fn log_listening(kind: ListenerKind, addr: Option<SocketAddr>) {
    if let Some(addr) = addr {
        tracing::info!(listener = kind.as_str(), addr = %addr, "listening on {addr}");
    }
}
