//! The accept loop shared by the public and operator listeners: connection
//! permits, accept-error backoff, optional TLS handshake under a timeout,
//! HTTP/1.1 + HTTP/2 via hyper-util's auto builder, and graceful close.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{IntCounter, IntGauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::proxy::body::GatewayBody;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Http,
    Https,
    Operator,
}

impl ListenerKind {
    /// The `listener` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
            ListenerKind::Operator => "operator",
        }
    }
}

/// What a service knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The TCP peer: the only client address Portico trusts.
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: ListenerKind,
    pub tls: bool,
}

/// A request handler. Infallible by construction: errors are responses.
pub trait Service: Send + Sync + 'static {
    fn call(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<GatewayBody>> + Send;
}

/// TLS termination for one listener.
#[derive(Clone)]
pub struct TlsSetup {
    pub acceptor: TlsAcceptor,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// `portico_tls_handshake_errors_total`.
    pub errors: IntCounter,
}

/// How one listener serves connections.
#[derive(Clone)]
pub struct ServerOptions {
    pub kind: ListenerKind,
    /// Slowloris guard: the whole request head must arrive within this.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// Open connections beyond this wait in the kernel backlog.
    pub max_connections: usize,
    pub tls: Option<TlsSetup>,
    /// `portico_connections_open{listener}` for this listener.
    pub connections_open: IntGauge,
}

/// Serves `listener` until `stop` turns true, then stops accepting, asks
/// every open connection to close gracefully (HTTP/1.1 `Connection: close`
/// after the current response, HTTP/2 GOAWAY) and returns once all are closed.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    opts: ServerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let builder = Arc::new(http_builder(&opts));
    let local = listener.local_addr().ok();
    let mut backoff = Duration::from_millis(5);
    loop {
        // A permit first: when all are taken, new clients wait in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = wait_true(&mut stop) => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => { backoff = Duration::from_millis(5); c }
                Err(e) => {
                    // EMFILE and friends: log, back off, keep serving.
                    tracing::warn!(listener = opts.kind.as_str(), error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = wait_true(&mut stop) => break,
        };
        let _ = tcp.set_nodelay(true);
        let conn = ConnInfo {
            peer: unmap(peer),
            local: tcp.local_addr().ok().or(local).unwrap_or(peer),
            listener: opts.kind,
            tls: opts.tls.is_some(),
        };
        let task = Connection {
            service: service.clone(),
            builder: builder.clone(),
            tls: opts.tls.clone(),
            gauge: opts.connections_open.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            task.run(tcp, conn).await;
            drop(permit);
        });
    }
    drop(listener);
    // Every connection task holds a permit: having them all back means every
    // connection has closed.
    let _ = permits.acquire_many(opts.max_connections as u32).await;
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means "stop".
    let _ = rx.wait_for(|v| *v).await;
}

/// IPv4-mapped IPv6 peers (`::ffff:127.0.0.1`) are reported as IPv4 so that
/// allow-lists and logs see one spelling.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn http_builder(opts: &ServerOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper's buffer limit sits above ours so that Portico's own check
    // answers with the JSON 431; hyper's bare 431 is the backstop.
    let buf = (opts.max_header_bytes * 2).max(16 * 1024);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(buf)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buf).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    b
}

/// One accepted connection.
struct Connection<S> {
    service: Arc<S>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<TlsSetup>,
    gauge: IntGauge,
    stop: watch::Receiver<bool>,
}

/// Keeps `portico_connections_open` true even if a task panics.
struct OpenGuard(IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S: Service> Connection<S> {
    async fn run(self, tcp: TcpStream, conn: ConnInfo) {
        self.gauge.inc();
        let _open = OpenGuard(self.gauge.clone());
        match &self.tls {
            None => self.serve_http(tcp, conn).await,
            Some(tls) => {
                let handshake =
                    tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => self.serve_http(stream, conn).await,
                    Ok(Err(e)) => {
                        tls.errors.inc();
                        tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        tls.errors.inc();
                        tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn serve_http<I>(&self, io: I, conn: ConnInfo)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service.clone();
        let svc = service_fn(move |req| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(service.call(req, conn).await) }
        });
        let c = self.builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(c);
        let mut stop = self.stop.clone();
        tokio::select! {
            r = c.as_mut() => log_conn_end(r, &conn),
            _ = wait_true(&mut stop) => {
                c.as_mut().graceful_shutdown();
                log_conn_end(c.await, &conn);
            }
        }
    }
}

fn log_conn_end(r: Result<(), Box<dyn std::error::Error + Send + Sync>>, conn: &ConnInfo) {
    if let Err(e) = r {
        // Clients that vanish, send garbage or time out their headers end
        // here; they are routine at the edge, so debug level.
        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), error = %e, "connection ended with an error");
    }
}
