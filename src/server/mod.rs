//! The accept loop shared by the public and operator listeners: connection
//! permits, accept-error backoff, optional TLS handshake under a timeout,
//! HTTP/1.1 + HTTP/2 via hyper-util's auto builder, and graceful close.
//! [`worker`] runs the public listeners on one event loop per core.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub mod worker;

use crate::proxy::body::GatewayBody;
use crate::tls::{CertNames, SniResolver};

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
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer: the only client address Portico trusts.
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: ListenerKind,
    pub tls: bool,
    /// On TLS, the names of the certificate the connection was served with,
    /// when `tls.reject_misdirected` is on: a request for any other host is
    /// answered `421`, so a connection opened for one name (HTTP/2 reuses
    /// connections) cannot reach another host's routes.
    pub tls_names: Option<Arc<CertNames>>,
}

/// A request handler. Infallible by construction: errors are responses.
pub trait Service: Send + Sync + 'static {
    fn call(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<GatewayBody>> + Send;
}

/// Per-stream HTTP/2 send buffer (see `http_builder`).
const H2_SEND_BUFFER: usize = 32 * 1024;

/// TLS termination for one listener.
#[derive(Clone)]
pub struct TlsSetup {
    pub acceptor: TlsAcceptor,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// `portico_tls_handshake_errors_total`.
    pub errors: IntCounter,
    /// The certificates, to learn which names a connection may serve
    /// (`tls.reject_misdirected`); `None` turns that check off.
    pub misdirected: Option<Arc<SniResolver>>,
}

/// How one listener serves connections.
#[derive(Clone)]
pub struct ServerOptions {
    pub kind: ListenerKind,
    /// Slowloris guard: the whole request head must arrive within this.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// A connection with no request in progress and no bytes moving for this
    /// long is closed (gracefully: HTTP/2 gets GOAWAY).
    pub idle_timeout: Duration,
    /// Open connections beyond this wait in the kernel backlog.
    pub max_connections: usize,
    /// `max_connections` permits, shared by every worker serving this
    /// listener, so the limit is the listener's, not each worker's.
    pub permits: Arc<Semaphore>,
    /// Connections this worker accepted (`portico_worker_connections_total`).
    pub accepted: Option<IntCounter>,
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
    let permits = opts.permits.clone();
    let builder = Arc::new(http_builder(&opts));
    let local = listener.local_addr().ok();
    let mut backoff = Duration::from_millis(5);
    loop {
        // Accept first, then wait for a permit: with several workers sharing
        // one `max_connections`, a worker that held a permit while waiting
        // in `accept` could starve another whose socket the next client was
        // hashed to. While this worker waits for a permit it accepts nothing
        // more, so further clients wait in the kernel backlog, and at most
        // one connection per worker is held unserved.
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
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                _ = wait_true(&mut stop) => break,
            },
        };
        let _ = tcp.set_nodelay(true);
        if let Some(c) = &opts.accepted {
            c.inc();
        }
        let conn = ConnInfo {
            peer: unmap(peer),
            local: tcp.local_addr().ok().or(local).unwrap_or(peer),
            listener: opts.kind,
            tls: opts.tls.is_some(),
            tls_names: None,
        };
        let task = Connection {
            service: service.clone(),
            builder: builder.clone(),
            tls: opts.tls.clone(),
            gauge: opts.connections_open.clone(),
            stop: stop.clone(),
            idle_timeout: opts.idle_timeout,
            header_read_timeout: opts.header_read_timeout,
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
        // Portico times request heads itself (see `Activity`): hyper's timer
        // also runs while a keep-alive connection waits for its next
        // request, which would make `idle_timeout` meaningless.
        .header_read_timeout(None)
        .max_buf_size(buf)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buf).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // What one stream may queue for a client whatever window it grants
        // (hyper's default is 400 KiB): a client that opens 256 streams and
        // stops reading makes Portico hold about 38 MiB instead of 172 MiB
        // (streaming.rs measures it); the rest is backpressure on the
        // backends. Most of what is left is upstream read buffers: capping
        // those (hyper's `max_buf_size`) cost 60% of the throughput on
        // 1 MiB responses, so they keep hyper's default.
        .max_send_buf_size(H2_SEND_BUFFER)
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
    idle_timeout: Duration,
    header_read_timeout: Duration,
}

/// Keeps `portico_connections_open` true even if a task panics.
struct OpenGuard(IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S: Service> Connection<S> {
    async fn run(self, tcp: TcpStream, mut conn: ConnInfo) {
        self.gauge.inc();
        let _open = OpenGuard(self.gauge.clone());
        match &self.tls {
            None => self.serve_http(tcp, conn, false).await,
            Some(tls) => {
                let handshake =
                    tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let session = stream.get_ref().1;
                        let h2 = session.alpn_protocol() == Some(b"h2");
                        conn.tls_names = tls
                            .misdirected
                            .as_ref()
                            .map(|certs| certs.current().covering(session.server_name()));
                        self.serve_http(stream, conn, h2).await
                    }
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

    /// Serves HTTP on one connection until it ends, the listener stops, it
    /// idles past `idle_timeout`, or (HTTP/1.1) a request head takes longer
    /// than `header_read_timeout` to arrive. `h2` is known from ALPN on TLS;
    /// for cleartext it is recognised from the connection preface.
    async fn serve_http<I>(&self, io: I, conn: ConnInfo, h2: bool)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new(h2);
        let service = self.service.clone();
        let requests = activity.clone();
        let per_request = conn.clone();
        let svc = service_fn(move |req| {
            let service = service.clone();
            let active = requests.request_started();
            let conn = per_request.clone();
            async move {
                let resp = service.call(req, conn).await;
                drop(active);
                Ok::<_, Infallible>(resp)
            }
        });
        let io = ActivityIo {
            inner: io,
            activity: activity.clone(),
        };
        let c = self.builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(c);
        let mut stop = self.stop.clone();
        let idle = self.idle_timeout;
        let head = self.header_read_timeout;
        // Checked at half the shorter timeout: a deadline is enforced within
        // 1.5x its value, with one timer wake-up per connection per period.
        let check = (idle.min(head) / 2).max(Duration::from_millis(25));
        loop {
            tokio::select! {
                r = c.as_mut() => {
                    log_conn_end(r, &conn);
                    return;
                }
                _ = wait_true(&mut stop) => break,
                _ = tokio::time::sleep(check) => {
                    if activity.head_overdue(head) {
                        // Slowloris: no graceful close for a client that
                        // cannot finish a request head; drop it.
                        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), "request head not received in time; closing");
                        return;
                    }
                    if activity.idle_for() >= idle {
                        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), "closing idle connection");
                        break;
                    }
                }
            }
        }
        c.as_mut().graceful_shutdown();
        log_conn_end(c.await, &conn);
    }
}

/// What a connection is doing, for its timeouts: when bytes last moved
/// (idle timeout), whether a request is being handled, and since when an
/// HTTP/1.1 request head has been arriving (header read timeout).
#[derive(Clone)]
struct Activity {
    inner: Arc<ActivityInner>,
}

/// `head_since_ms` when no request head is being waited for.
const NO_HEAD: u64 = u64::MAX;

struct ActivityInner {
    origin: Instant,
    /// Milliseconds since `origin` of the last read or write.
    last_io_ms: AtomicU64,
    /// Requests whose handler has not produced a response head yet.
    active: AtomicU64,
    /// Milliseconds since `origin` when the current request head started
    /// (the connection's start, or the first byte after a response), or
    /// [`NO_HEAD`]. HTTP/1.1 only.
    head_since_ms: AtomicU64,
    /// HTTP/2 has no per-request head to time; its streams are bounded by
    /// the h2 layer's own limits.
    h2: AtomicBool,
    /// Whether the first bytes were looked at for the HTTP/2 preface.
    sniffed: AtomicBool,
}

impl Activity {
    fn new(h2: bool) -> Self {
        Activity {
            inner: Arc::new(ActivityInner {
                origin: Instant::now(),
                last_io_ms: AtomicU64::new(0),
                active: AtomicU64::new(0),
                // The first request's head is awaited from the accept on.
                head_since_ms: AtomicU64::new(0),
                h2: AtomicBool::new(h2),
                sniffed: AtomicBool::new(h2),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.origin.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.inner
            .last_io_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived from the client.
    fn read(&self, data: &[u8]) {
        self.touch();
        let inner = &*self.inner;
        if !inner.sniffed.swap(true, Ordering::Relaxed) && data.starts_with(b"PRI * HTTP/2.0") {
            inner.h2.store(true, Ordering::Relaxed);
        }
        // Between requests, the first byte starts the next head's clock.
        if inner.active.load(Ordering::Relaxed) == 0 {
            let _ = inner.head_since_ms.compare_exchange(
                NO_HEAD,
                self.now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn request_started(&self) -> ActiveRequest {
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        self.inner.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        ActiveRequest(self.inner.clone())
    }

    /// An HTTP/1.1 request head has been arriving for longer than `limit`.
    fn head_overdue(&self, limit: Duration) -> bool {
        let inner = &*self.inner;
        if inner.h2.load(Ordering::Relaxed) || inner.active.load(Ordering::Relaxed) > 0 {
            return false;
        }
        match inner.head_since_ms.load(Ordering::Relaxed) {
            NO_HEAD => false,
            since => self.now_ms().saturating_sub(since) >= limit.as_millis() as u64,
        }
    }

    /// Zero while a request is being handled.
    fn idle_for(&self) -> Duration {
        if self.inner.active.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = self.inner.last_io_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

struct ActiveRequest(Arc<ActivityInner>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The client socket, noting activity on every successful read or write.
    struct ActivityIo<I> {
        #[pin]
        inner: I,
        activity: Activity,
    }
}

impl<I: AsyncRead> AsyncRead for ActivityIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite> AsyncWrite for ActivityIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

fn log_conn_end(r: Result<(), Box<dyn std::error::Error + Send + Sync>>, conn: &ConnInfo) {
    if let Err(e) = r {
        // Clients that vanish, send garbage or time out their headers end
        // here; they are routine at the edge, so debug level.
        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), error = %e, "connection ended with an error");
    }
}
