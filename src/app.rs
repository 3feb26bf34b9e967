//! Wiring: builds the shared state from a validated [`GatewayConfig`], loads
//! the first route table, and runs every listener until shutdown. Takes
//! already-bound listeners so that tests never race for ports.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::GatewayConfig;
use crate::lifecycle::drain::Drain;
use crate::lifecycle::reload::{ReloadOutcome, Reloader};
use crate::observability::metrics::Metrics;
use crate::observability::otlp::Exporter;
use crate::operator::{Operator, OperatorState};
use crate::proxy::upstream::{PoolTimeouts, UpstreamClients, UpstreamSetupError};
use crate::proxy::{Gateway, RequestLimits};
use crate::routing::live::LiveRoutes;
use crate::server::worker::{self, Job};
use crate::server::{self, ListenerKind, ServerOptions, Service, TlsSetup};
use crate::tls::{HttpsRedirect, TlsError, TlsTerminator};

/// The sockets the gateway serves on, bound before [`start`].
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    pub operator: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address the config names; the public ones with
    /// `SO_REUSEPORT`, so that every worker gets a socket of its own.
    pub async fn bind(cfg: &GatewayConfig) -> Result<Listeners, BindError> {
        let public = |addr: Option<SocketAddr>| match addr {
            None => Ok(None),
            Some(addr) => worker::bind(addr)
                .map(Some)
                .map_err(|source| BindError { addr, source }),
        };
        let operator = cfg.operator.listen;
        Ok(Listeners {
            http: public(cfg.listen.http)?,
            https: public(cfg.listen.https)?,
            operator: Some(
                TcpListener::bind(operator)
                    .await
                    .map_err(|source| BindError {
                        addr: operator,
                        source,
                    })?,
            ),
        })
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
    #[error("an HTTPS listener was passed in but the config has no tls section")]
    MissingTls,
    #[error("cannot load TLS certificates")]
    Tls(#[from] TlsError),
    #[error("cannot start the workers")]
    Workers(#[source] std::io::Error),
}

/// A started gateway.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub operator_addr: Option<SocketAddr>,
    pub live: Arc<LiveRoutes>,
    pub metrics: Arc<Metrics>,
    /// Readiness (`drain.draining` turns true at SIGTERM, and `/readyz`
    /// answers 503 from then on) and the in-flight registry, shared by the
    /// operator listener and the shutdown sequence.
    pub drain: Drain,
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
    let clients = Arc::new(
        UpstreamClients::new(PoolTimeouts {
            connect: cfg.limits.upstream_connect_timeout,
            idle: cfg.limits.upstream_idle_timeout,
        })?
        .with_nameservers(cfg.dns_nameservers.clone()),
    );
    let live = Arc::new(LiveRoutes::new());
    let drain = Drain::new();
    // The operator's readiness reads the same flag the shutdown sequence sets.
    let draining = drain.draining.clone();
    let reloader = Arc::new(Reloader {
        path: cfg.routes_file.clone(),
        live: live.clone(),
        metrics: metrics.clone(),
        clients: clients.clone(),
        default_timeout: cfg.limits.upstream_timeout,
        last_rejected: Default::default(),
    });
    if let ReloadOutcome::Failed { .. } = reloader.reload_once() {
        tracing::warn!(
            "starting without a route table: /readyz answers 503 until the route file is valid"
        );
    }

    // Span export runs on this (control) thread, off the workers.
    let (exporter, spans) = match &cfg.otlp {
        Some(settings) => {
            let (exporter, spans) = Exporter::new(settings, &metrics);
            (Some(exporter), Some(spans))
        }
        None => (None, None),
    };
    let (canary, key) = crate::routing::canary::CanaryGate::new(
        crate::operator::access::AllowList::new(cfg.operator.allow.clone()),
        cfg.operator.token_file.clone(),
    );
    let source = match key {
        crate::routing::canary::KeySource::TokenFile => {
            "derived from operator.token_file (replicas that share it agree)"
        }
        crate::routing::canary::KeySource::Random => "made at start (this process only)",
    };
    tracing::debug!("sticky canary cookies are signed with a key {source}");
    // Routes with `https_redirect` point plain requests at the HTTPS
    // listener (its port, or listen.redirect_port when set).
    let https_port = listeners
        .https
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| cfg.listen.redirect_port.unwrap_or(a.port()));
    let gateway = Gateway::new(
        live.clone(),
        &metrics,
        RequestLimits {
            max_header_bytes: cfg.limits.max_header_bytes,
            max_body_bytes: cfg.limits.max_body_bytes,
            upgrade_idle_timeout: cfg.limits.upgrade_idle_timeout,
        },
        cfg.limits.max_inflight,
        drain.inflight.clone(),
        spans,
        canary,
    );
    let gateway = Arc::new(match https_port {
        Some(port) => gateway.with_https_redirect(HttpsRedirect::new(port, &metrics)),
        None => gateway,
    });
    // Before any "listening" line: from then on SIGHUP must mean "reload".
    let hup = crate::lifecycle::watch::sighup();
    // SIGHUP reloads the route file and, through this, the certificates.
    let hup_certs = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    // Certificates load before any listener serves: a bad pair stops the
    // start (exit 1) rather than failing every handshake later.
    if cfg.listen.https.is_some() && listeners.https.is_none() {
        return Err(StartError::MissingHttpsListener);
    }
    let https = match (listeners.https, &cfg.tls) {
        (Some(l), Some(tls)) => {
            let terminator = TlsTerminator::load(tls)?;
            terminator.export_expiry(metrics.tls_certificate_expiry.clone());
            Some((l, Arc::new(terminator), tls))
        }
        (Some(_), None) => return Err(StartError::MissingTls),
        (None, _) => None,
    };
    let (http_addr, https_addr) = spawn_public(
        &cfg,
        listeners.http,
        https,
        &gateway,
        &metrics,
        &stop_rx,
        &hup_certs,
        &mut servers,
    )?;
    let operator = Arc::new(Operator::new(
        &cfg.operator,
        OperatorState {
            live: live.clone(),
            metrics: metrics.clone(),
            draining: draining.clone(),
        },
    ));
    let operator_addr = match listeners.operator {
        Some(l) => {
            let addr = l.local_addr().ok();
            log_listening(ListenerKind::Operator, addr);
            servers.push(tokio::spawn(server::serve(
                l,
                operator,
                options(&cfg, &metrics, ListenerKind::Operator),
                stop_rx.clone(),
            )));
            addr
        }
        None => None,
    };

    servers.push(tokio::spawn(crate::lifecycle::memory::trim_freed(
        stop_rx.clone(),
    )));
    let (watch_stop_tx, watch_stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(crate::lifecycle::watch::run(
        reloader,
        hup,
        hup_certs,
        watch_stop_rx,
    ));

    let exporter = exporter.map(|e| {
        let (stop, stopped) = watch::channel(false);
        let deadline = e.export_timeout();
        (stop, tokio::spawn(e.run(stopped)), deadline)
    });
    let sequence = crate::lifecycle::shutdown::sequence(
        shutdown,
        crate::lifecycle::shutdown::Plan {
            drain: drain.clone(),
            drain_delay: cfg.shutdown.drain_delay,
            timeout: cfg.shutdown.timeout,
            stop_listeners: stop_tx,
            stop_watcher: watch_stop_tx,
            servers,
            watcher,
        },
    );
    let done = tokio::spawn(async move {
        sequence.await;
        // Spans of the last requests go out, within one export's time.
        if let Some((stop, task, deadline)) = exporter {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(deadline, task).await;
        }
    });
    Ok(Running {
        http_addr,
        https_addr,
        operator_addr,
        live,
        metrics,
        drain,
        done,
    })
}

/// The public listeners, on the workers: one socket per listener per worker.
/// Also spawns the certificate watcher. Returns the bound addresses.
#[allow(clippy::too_many_arguments)]
fn spawn_public(
    cfg: &GatewayConfig,
    http: Option<TcpListener>,
    https: Option<(TcpListener, Arc<TlsTerminator>, &crate::config::TlsSettings)>,
    gateway: &Arc<Gateway>,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
    hup_certs: &Arc<tokio::sync::Notify>,
    servers: &mut Vec<JoinHandle<()>>,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), StartError> {
    let https_addr = https.as_ref().and_then(|(l, ..)| l.local_addr().ok());
    let workers = cfg.workers.count();
    let mut jobs: Vec<Vec<Job>> = (0..workers).map(|_| Vec::new()).collect();
    let http_addr = match http {
        Some(l) => {
            let addr = l.local_addr().ok();
            log_listening(ListenerKind::Http, addr);
            let opts = options(cfg, metrics, ListenerKind::Http);
            // Plain HTTP only redirects when asked: nothing is proxied in clear text.
            let redirect = https_addr
                .filter(|_| cfg.listen.redirect_to_https)
                .map(|to| {
                    let port = cfg.listen.redirect_port.unwrap_or(to.port());
                    Arc::new(HttpsRedirect::new(port, metrics))
                });
            for (i, socket, opts) in per_worker(l, &opts, workers, metrics)? {
                jobs[i].push(match &redirect {
                    Some(r) => job(socket, r.clone(), opts, stop.clone()),
                    None => job(socket, gateway.clone(), opts, stop.clone()),
                });
            }
            addr
        }
        None => None,
    };
    if let Some((l, terminator, tls)) = https {
        log_listening(ListenerKind::Https, https_addr);
        let opts = ServerOptions {
            tls: Some(TlsSetup {
                acceptor: terminator.acceptor(),
                handshake_timeout: tls.handshake_timeout,
                errors: metrics.tls_handshake_errors.clone(),
                misdirected: tls.reject_misdirected.then(|| terminator.resolver()),
            }),
            ..options(cfg, metrics, ListenerKind::Https)
        };
        for (i, socket, opts) in per_worker(l, &opts, workers, metrics)? {
            jobs[i].push(job(socket, gateway.clone(), opts, stop.clone()));
        }
        // Live certificate reload, polling the files until shutdown.
        servers.push(tokio::spawn(terminator.watch(
            crate::tls::WATCH_INTERVAL,
            hup_certs.clone(),
            stop.clone(),
        )));
    }
    for (i, jobs) in jobs.into_iter().enumerate() {
        servers.push(worker::spawn(i + 1, jobs).map_err(StartError::Workers)?);
    }
    tracing::info!(workers, "public listeners served by {workers} worker(s)");
    Ok((http_addr, https_addr))
}

/// How a listener of `kind` serves connections; `max_connections` permits
/// of its own, shared by the workers that serve it.
fn options(cfg: &GatewayConfig, metrics: &Metrics, kind: ListenerKind) -> ServerOptions {
    ServerOptions {
        kind,
        header_read_timeout: cfg.limits.header_read_timeout,
        max_header_bytes: cfg.limits.max_header_bytes,
        idle_timeout: cfg.limits.idle_timeout,
        max_connections: cfg.limits.max_connections,
        permits: Arc::new(Semaphore::new(cfg.limits.max_connections)),
        accepted: None,
        tls: None,
        connections_open: metrics.connections_open.with_label_values(&[kind.as_str()]),
        connections_parked: metrics
            .connections_parked
            .with_label_values(&[kind.as_str()]),
        upgrade_idle_timeout: cfg.limits.upgrade_idle_timeout,
    }
}

/// One listener's sockets, one per worker, each with the worker's options.
fn per_worker(
    listener: TcpListener,
    opts: &ServerOptions,
    workers: usize,
    metrics: &Metrics,
) -> Result<Vec<(usize, std::net::TcpListener, ServerOptions)>, StartError> {
    let sockets = worker::per_worker(listener, workers).map_err(StartError::Workers)?;
    Ok(sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let mut opts = opts.clone();
            let label = (i + 1).to_string();
            opts.accepted = Some(metrics.worker_connections.with_label_values(&[&label]));
            (i, socket, opts)
        })
        .collect())
}

/// A worker's share of one listener: its socket, served until `stop`.
fn job<S: Service>(
    socket: std::net::TcpListener,
    service: Arc<S>,
    opts: ServerOptions,
    stop: watch::Receiver<bool>,
) -> Job {
    Box::new(move || {
        Box::pin(async move {
            // Inside the worker's runtime, as registration requires; only
            // fails outside a runtime, which a worker never is.
            let listener =
                TcpListener::from_std(socket).expect("a worker registers its listening socket");
            server::serve(listener, service, opts, stop).await;
        })
    })
}

/// The startup line tests and operators read the bound address from.
fn log_listening(kind: ListenerKind, addr: Option<SocketAddr>) {
    if let Some(addr) = addr {
        tracing::info!(listener = kind.as_str(), addr = %addr, "listening on {addr}");
    }
}
