//! The accept loop shared by the public and operator listeners: connection
//! permits, accept-error backoff, optional TLS handshake under a timeout,
//! HTTP/1.1 (parked while idle, see [`idle`]) and HTTP/2 via hyper, the
//! idle and head timeouts, and graceful close.
//! [`worker`] runs the public listeners on one event loop per core.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

mod idle;
mod splice;
pub mod worker;

pub use idle::Counted;
pub use splice::Pump;

use idle::{Rewind, Transport};

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
    /// The peer's IP address as header text (`x-forwarded-for`), made once
    /// per connection: each request's copy is a reference count.
    pub peer_text: http::HeaderValue,
}

impl ConnInfo {
    /// `peer`'s address as a header value, in one shared allocation.
    pub fn peer_text(peer: SocketAddr) -> http::HeaderValue {
        let mut text = String::with_capacity(15);
        crate::observability::json::push_ip(&mut text, peer.ip());
        http::HeaderValue::from_maybe_shared(Bytes::from_owner(text))
            .expect("an IP address is a valid header value")
    }
}

/// A request handler. Infallible by construction: errors are responses.
pub trait Service: Send + Sync + 'static {
    fn call(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<GatewayBody>> + Send;
}

/// What a `101 Switching Protocols` response hands its connection (in the
/// response's extensions): the backend's side of the upgraded stream, and
/// what to call when the splice ends.
pub struct Upgrade {
    /// Resolves to the backend's socket once its `101` has been read.
    pub backend: hyper::upgrade::OnUpgrade,
    /// Called once when the splice ends: bytes from the client, bytes to
    /// it. If the connection ends before the splice starts, dropping the
    /// `Upgrade` calls it with zeros.
    pub done: Option<Box<dyn FnOnce(u64, u64) + Send>>,
}

impl Upgrade {
    fn finish(&mut self, from_client: u64, to_client: u64) {
        if let Some(done) = self.done.take() {
            done(from_client, to_client);
        }
    }
}

impl Drop for Upgrade {
    fn drop(&mut self) {
        self.finish(0, 0);
    }
}

/// [`Upgrade`] as a response extension (those must be `Clone`).
#[derive(Clone)]
pub struct UpgradeSlot(Arc<parking_lot::Mutex<Option<Upgrade>>>);

impl UpgradeSlot {
    pub fn new(up: Upgrade) -> Self {
        UpgradeSlot(Arc::new(parking_lot::Mutex::new(Some(up))))
    }

    fn take(&self) -> Option<Upgrade> {
        self.0.lock().take()
    }
}

/// The backend's side of an upgraded connection, whichever transport.
trait SpliceIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SpliceIo for T {}

/// Per-stream HTTP/2 send buffer (see `http_builder`).
const H2_SEND_BUFFER: usize = 16 * 1024;

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
    /// `portico_connections_parked{listener}` (see [`idle`]).
    pub connections_parked: IntGauge,
    /// `limits.upgrade_idle_timeout`: an upgraded connection quiet this
    /// long both ways is closed.
    pub upgrade_idle_timeout: Duration,
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
    let builders = Arc::new(http_builders(&opts));
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
        let peer = unmap(peer);
        let conn = ConnInfo {
            peer,
            peer_text: ConnInfo::peer_text(peer),
            // A listener on one address is what every connection reaches;
            // only a wildcard one needs the system call to say which.
            local: match local {
                Some(l) if !l.ip().is_unspecified() => l,
                _ => tcp.local_addr().ok().or(local).unwrap_or(peer),
            },
            listener: opts.kind,
            tls: opts.tls.is_some(),
            tls_names: None,
        };
        let task = Connection {
            service: service.clone(),
            builders: builders.clone(),
            tls: opts.tls.clone(),
            gauge: opts.connections_open.clone(),
            parked: opts.connections_parked.clone(),
            stop: stop.clone(),
            idle_timeout: opts.idle_timeout,
            header_read_timeout: opts.header_read_timeout,
            upgrade_idle_timeout: opts.upgrade_idle_timeout,
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

/// hyper's connection builders, one per protocol, set up once per listener.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

fn http_builders(opts: &ServerOptions) -> Builders {
    // hyper's buffer limit sits above ours so that Portico's own check
    // answers with the JSON 431; hyper's bare 431 is the backstop.
    let buf = (opts.max_header_bytes * 2).max(16 * 1024);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // Portico times request heads itself (see `Activity`): hyper's timer
        // also runs while a keep-alive connection waits for its next
        // request, which would make `idle_timeout` meaningless.
        .header_read_timeout(None)
        .max_buf_size(buf)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buf).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // What one stream may queue for a client whatever window it grants
        // (hyper's default is 400 KiB). With the streams' backends read
        // 8 KiB at a time (`upstream::ReadAhead::Stream`), a client that
        // opens 256 streams and stops reading makes Portico hold about
        // 10 MiB instead of 172 MiB (streaming.rs measures it); the rest is
        // backpressure on the backends.
        .max_send_buf_size(H2_SEND_BUFFER)
        // WebSockets over HTTP/2 arrive as extended CONNECT (RFC 8441).
        .enable_connect_protocol()
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Builders { h1, h2 }
}

/// One accepted connection.
struct Connection<S> {
    service: Arc<S>,
    builders: Arc<Builders>,
    tls: Option<TlsSetup>,
    gauge: IntGauge,
    parked: IntGauge,
    stop: watch::Receiver<bool>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    upgrade_idle_timeout: Duration,
}

/// Keeps a gauge (`portico_connections_open`, `portico_connections_parked`)
/// true even if a task panics.
struct OpenGuard(IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a connection's end for [`crate::lifecycle::memory`].
struct Released;

impl Drop for Released {
    fn drop(&mut self) {
        crate::lifecycle::memory::released();
    }
}

/// The response future hyper's HTTP/1.1 connection needs to be `Unpin` to
/// hand its socket back (`poll_without_shutdown`), hence boxed.
type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

/// How an HTTP/1.1 connection's hyper half ended.
enum H1End {
    /// The connection is over (client closed, `Connection: close`, drain,
    /// idle timeout, or an error).
    Done(hyper::Result<()>),
    /// Parked: quiet for [`idle::PARK_AFTER`]; the socket is handed back.
    Parked,
    /// A request head took too long (slowloris): drop without a word.
    Dropped,
}

impl<S: Service> Connection<S> {
    async fn run(self, tcp: TcpStream, conn: ConnInfo) {
        self.gauge.inc();
        let _open = OpenGuard(self.gauge.clone());
        let _released = Released;
        match &self.tls {
            None => {
                // Nothing is allocated for a client until its first bytes
                // arrive, and those must come within the head timeout.
                let mut stop = self.stop.clone();
                let first = tokio::select! {
                    r = tokio::time::timeout(self.header_read_timeout, idle::sniff_h2(tcp)) => r,
                    _ = wait_true(&mut stop) => return,
                };
                match first {
                    Ok(Ok(Some((io, true)))) => Box::pin(self.serve_h2(io, conn)).await,
                    Ok(Ok(Some((io, false)))) => self.serve_h1(io, conn).await,
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), error = %e, "connection failed before a request");
                    }
                    Err(_) => {
                        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), "no request within header_read_timeout; closing");
                    }
                }
            }
            // Boxed: a TLS session is large, and the task of a cleartext
            // connection would otherwise be as large for as long as it lives.
            Some(tls) => Box::pin(self.serve_tls(tcp, conn, tls)).await,
        }
    }

    /// The TLS handshake under its timeout, then HTTP/1.1 or, by ALPN,
    /// HTTP/2 (RFC 9113 §3.2).
    async fn serve_tls(&self, tcp: TcpStream, mut conn: ConnInfo, tls: &TlsSetup) {
        let handshake = tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(tcp));
        match handshake.await {
            Ok(Ok(stream)) => {
                let session = stream.get_ref().1;
                let h2 = session.alpn_protocol() == Some(b"h2");
                conn.tls_names = tls
                    .misdirected
                    .as_ref()
                    .map(|certs| certs.current().covering(session.server_name()));
                if h2 {
                    Box::pin(self.serve_h2(stream, conn)).await
                } else {
                    self.serve_h1(Rewind::new(stream, Bytes::new()), conn).await
                }
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

    /// The per-connection request handler: counts requests in progress for
    /// the timeouts and responses being written for parking.
    fn handler(
        &self,
        activity: &Activity,
        conn: &ConnInfo,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<TrackedBody>,
        Error = Infallible,
        Future = ResponseFuture,
    > + Clone
    + Unpin
    + use<S> {
        let service = self.service.clone();
        let activity = activity.clone();
        let conn = conn.clone();
        service_fn(move |req: Request<Incoming>| -> ResponseFuture {
            let service = service.clone();
            let active = activity.request_started(!req.body().is_end_stream());
            let responding = activity.responding();
            let conn = conn.clone();
            let upgrades = activity.clone();
            Box::pin(async move {
                let mut resp = service.call(req, conn).await;
                if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                    && let Some(slot) = resp.extensions_mut().remove::<UpgradeSlot>()
                {
                    let up = slot.take();
                    *upgrades.inner.upgrade.lock() = up;
                }
                drop(active);
                Ok(resp.map(|inner| TrackedBody {
                    inner,
                    _responding: responding,
                }))
            })
        })
    }

    /// Serves HTTP/1.1 until the connection ends, parking it whenever it
    /// has been quiet for [`idle::PARK_AFTER`] (see [`idle`]). A parked
    /// connection is closed at the idle timeout or on drain like any idle
    /// one: nothing is written to it.
    async fn serve_h1<T: Transport>(&self, io: Rewind<T>, conn: ConnInfo) {
        let activity = Activity::new(false);
        let mut io = io;
        loop {
            // Boxed: hyper's connection and the timers around it are freed
            // while the connection is parked, and the task keeps only what
            // waiting needs (the socket, a timer), a fraction of the size.
            match Box::pin(self.serve_h1_until_parked(io, &activity, &conn)).await {
                Some(parked) => io = parked,
                None => return,
            }
            // Parked: only the socket is held until the client speaks again.
            if !self.wait_parked(&io, &activity, &conn).await {
                return;
            }
        }
    }

    /// Serves HTTP/1.1 on `io` until the connection ends (`None`) or is
    /// parked (`Some`: the socket, with any bytes hyper had read put back).
    async fn serve_h1_until_parked<T: Transport>(
        &self,
        io: Rewind<T>,
        activity: &Activity,
        conn: &ConnInfo,
    ) -> Option<Rewind<T>> {
        let wrapped = ActivityIo {
            inner: io,
            activity: activity.clone(),
        };
        let handler = self.handler(activity, conn);
        let mut c = self
            .builders
            .h1
            .serve_connection(TokioIo::new(wrapped), handler);
        match self.drive_h1(&mut c, activity, conn).await {
            H1End::Done(r) => {
                // A 101 went out: the socket is the upgraded stream's.
                let upgrade = activity.inner.upgrade.lock().take();
                if r.is_ok()
                    && let Some(up) = upgrade
                {
                    let parts = c.into_parts();
                    let client = parts.io.into_inner();
                    self.splice(client, parts.read_buf, up, activity, conn)
                        .await;
                    return None;
                }
                if r.is_ok() {
                    // What hyper would have done: FIN (TLS: close_notify).
                    let mut io = c.into_parts().io.into_inner();
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.shutdown()).await;
                }
                log_conn_end(r.map_err(Into::into), conn);
                None
            }
            H1End::Dropped => None,
            H1End::Parked => {
                let parts = c.into_parts();
                let mut io = parts.io.into_inner().inner;
                if !parts.read_buf.is_empty() {
                    io.set_prefix(parts.read_buf);
                }
                Some(io)
            }
        }
    }

    /// Splices an upgraded client connection with the backend's until
    /// either side closes, both are quiet for `upgrade_idle_timeout`, or the
    /// listener stops (the drain delay has passed by then: both sockets are
    /// closed, without a WebSocket close frame, which would need Portico to
    /// parse the stream). Reports the bytes each way.
    async fn splice<I>(
        &self,
        client: I,
        early: Bytes,
        mut up: Upgrade,
        activity: &Activity,
        conn: &ConnInfo,
    ) where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let backend = match (&mut up.backend).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "upstream upgrade failed");
                return;
            }
        };
        // The backend's socket out of hyper's wrapper, with the bytes hyper
        // had read past the `101`: once those are passed on, hyper's read
        // buffer (8 KiB) is not held for the life of the connection.
        let (mut backend, backend_early): (Box<dyn SpliceIo>, Bytes) =
            match backend.downcast::<crate::proxy::upstream::UpstreamIo>() {
                Ok(parts) => (Box::new(TokioIo::new(parts.io)), parts.read_buf),
                Err(wrapped) => {
                    // Every upgrade's backend is dialled by
                    // `UpstreamClient::upgrade` as an `UpstreamIo`: this is
                    // a type that drifted, which the WebSocket tests (debug
                    // builds) must not pass over. Served all the same.
                    if cfg!(debug_assertions) {
                        panic!("upgraded backend is not an UpstreamIo");
                    }
                    tracing::warn!(
                        "upgraded backend is not an UpstreamIo; spliced through hyper's buffer"
                    );
                    (Box::new(TokioIo::new(wrapped)), Bytes::new())
                }
            };
        let mut client = idle::Counted::new(client);
        // Bytes the client sent right behind its upgrade request, and those
        // the backend sent right behind its `101`; dropped once written, for
        // the same reason.
        let early_len = early.len() as u64;
        if !early.is_empty() && backend.write_all(&early).await.is_err() {
            up.finish(early_len, 0);
            return;
        }
        drop(early);
        if !backend_early.is_empty() && client.write_all(&backend_early).await.is_err() {
            up.finish(early_len, 0);
            return;
        }
        drop(backend_early);
        let mut stop = self.stop.clone();
        let check = (self.upgrade_idle_timeout / 2).max(Duration::from_millis(25));
        // Each direction ends with a FIN to its reader; once one has ended,
        // the other gets SPLICE_LINGER to finish (a close handshake's last
        // frame), so a peer that never closes its half cannot hold the
        // connection. Neither holds a buffer while quiet (see `splice`).
        let (mut to_backend, mut to_client) = (splice::Pump::default(), splice::Pump::default());
        let (mut up_done, mut down_done) = (false, false);
        let timer = tokio::time::sleep(check);
        tokio::pin!(timer);
        let mut linger: Option<Instant> = None;
        loop {
            let ended = std::future::poll_fn(|cx| {
                let mut ended = false;
                if !up_done && to_backend.poll(cx, &mut client, &mut backend).is_ready() {
                    (up_done, ended) = (true, true);
                }
                if !down_done && to_client.poll(cx, &mut backend, &mut client).is_ready() {
                    (down_done, ended) = (true, true);
                }
                if ended {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            tokio::select! {
                _ = ended => {}
                _ = wait_true(&mut stop) => break,
                _ = &mut timer => {
                    if activity.idle_for() >= self.upgrade_idle_timeout {
                        tracing::debug!(peer = %conn.peer, "closing idle upgraded connection");
                        break;
                    }
                    if linger.is_some_and(|t| Instant::now() >= t) {
                        break;
                    }
                    timer.as_mut().reset(Instant::now() + check);
                }
            }
            if up_done && down_done {
                break;
            }
            if (up_done || down_done) && linger.is_none() {
                let until = Instant::now() + SPLICE_LINGER;
                linger = Some(until);
                timer.as_mut().reset(until.min(Instant::now() + check));
            }
        }
        let counts = client.counts();
        up.finish(counts.read() + early_len, counts.written());
    }

    /// Waits, holding only the socket, until a parked connection is readable
    /// (`true`), or its idle timeout passes, the listener stops or the
    /// socket fails (`false`: close it, writing nothing).
    async fn wait_parked<T: Transport>(
        &self,
        io: &Rewind<T>,
        activity: &Activity,
        conn: &ConnInfo,
    ) -> bool {
        self.parked.inc();
        let _parked = OpenGuard(self.parked.clone());
        crate::lifecycle::memory::released();
        let left = self.idle_timeout.saturating_sub(activity.idle_for());
        let mut stop = self.stop.clone();
        tokio::select! {
            r = idle::readable(io) => r.is_ok(),
            _ = wait_true(&mut stop) => false,
            _ = tokio::time::sleep(left) => {
                tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), "closing idle connection");
                false
            }
        }
    }

    /// Drives one hyper HTTP/1.1 connection: the idle and head timeouts,
    /// drain, and the park request once the connection has been quiet.
    async fn drive_h1<I, H>(
        &self,
        c: &mut http1::Connection<TokioIo<I>, H>,
        activity: &Activity,
        conn: &ConnInfo,
    ) -> H1End
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: hyper::service::HttpService<Incoming, ResBody = TrackedBody> + Unpin,
        H::Future: Unpin,
        H::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut stop = self.stop.clone();
        let mut closing = false;
        let timer = tokio::time::sleep(self.next_check(activity));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                r = std::future::poll_fn(|cx| c.poll_without_shutdown(cx)) => {
                    // Parked with part of a pipelined head in hyper's
                    // buffer, hyper reports an incomplete message, having
                    // written nothing: its buffer goes back like any.
                    return if activity.was_parked() { H1End::Parked } else { H1End::Done(r) };
                }
                _ = wait_true(&mut stop), if !closing => {
                    closing = true;
                    Pin::new(&mut *c).graceful_shutdown();
                }
                _ = &mut timer => {
                    if activity.head_overdue(self.header_read_timeout) {
                        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), "request head not received in time; closing");
                        return H1End::Dropped;
                    }
                    let idle = activity.idle_for();
                    if !closing && idle >= self.idle_timeout {
                        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), "closing idle connection");
                        closing = true;
                        Pin::new(&mut *c).graceful_shutdown();
                    } else if !closing && idle >= idle::PARK_AFTER {
                        // Takes effect at hyper's next read, polled next.
                        activity.request_park();
                    }
                    timer.as_mut().reset(Instant::now() + self.next_check(activity));
                }
            }
        }
    }

    /// When to look at a connection's timers next: at half the shortest
    /// deadline, so each is enforced within 1.5x its value with about one
    /// wake-up per connection per period, whatever the request rate.
    fn next_check(&self, activity: &Activity) -> Duration {
        let park = if activity.is_h2() {
            self.idle_timeout
        } else {
            idle::PARK_AFTER
        };
        (self.idle_timeout.min(self.header_read_timeout).min(park) / 2)
            .max(Duration::from_millis(25))
    }

    /// Serves HTTP/2 until the connection ends, the listener stops, or it
    /// idles past `idle_timeout`. Streams are bounded by h2's own limits.
    async fn serve_h2<I>(&self, io: I, conn: ConnInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new(true);
        let io = ActivityIo {
            inner: io,
            activity: activity.clone(),
        };
        let c = self
            .builders
            .h2
            .serve_connection(TokioIo::new(io), self.handler(&activity, &conn));
        tokio::pin!(c);
        let mut stop = self.stop.clone();
        let timer = tokio::time::sleep(self.next_check(&activity));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                r = c.as_mut() => {
                    log_conn_end(r.map_err(Into::into), &conn);
                    return;
                }
                _ = wait_true(&mut stop) => break,
                _ = &mut timer => {
                    if activity.idle_for() >= self.idle_timeout {
                        tracing::debug!(peer = %conn.peer, listener = conn.listener.as_str(), "closing idle connection");
                        break;
                    }
                    timer.as_mut().reset(Instant::now() + self.next_check(&activity));
                }
            }
        }
        c.as_mut().graceful_shutdown();
        log_conn_end(c.await.map_err(Into::into), &conn);
    }
}

/// Once one direction of an upgraded connection has ended, how long the
/// other may take to end too.
const SPLICE_LINGER: Duration = Duration::from_secs(5);

/// How long a finished connection's close (TLS `close_notify`) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pin_project_lite::pin_project! {
    /// A response body that tells its connection when it is done being
    /// written (hyper drops it then), so a connection is never parked
    /// while a response is still going out.
    pub struct TrackedBody {
        #[pin]
        inner: GatewayBody,
        _responding: Responding,
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = <GatewayBody as hyper::body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection is doing, for its timeouts and for parking: when bytes
/// last moved (idle timeout), whether a request is being handled, whether a
/// response is still being written, and since when an HTTP/1.1 request head
/// has been arriving (header read timeout).
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
    /// Responses whose body hyper has not finished writing.
    responding: AtomicU64,
    /// Milliseconds since `origin` when the current request head started
    /// (the connection's start, or the first byte after a response), or
    /// [`NO_HEAD`]. HTTP/1.1 only.
    head_since_ms: AtomicU64,
    /// Bytes were read while a body-less request was being handled: they
    /// can only be a pipelined next request, which hyper may hold partly.
    /// Cleared when the next request starts.
    pipelined: AtomicBool,
    /// The request being handled has a body (reads while it is handled are
    /// that body).
    with_body: AtomicBool,
    /// HTTP/2 has no per-request head to time; its streams are bounded by
    /// the h2 layer's own limits. It is never parked.
    h2: bool,
    /// Asked to park: the next read that would block reports end-of-stream.
    park: AtomicBool,
    /// A read reported end-of-stream to park the connection.
    parked: AtomicBool,
    /// A write is waiting for the socket: something is still going out.
    write_pending: AtomicBool,
    /// Set by the handler when its response is a `101`: taken by the
    /// connection once hyper has written it.
    upgrade: parking_lot::Mutex<Option<Upgrade>>,
}

impl Activity {
    fn new(h2: bool) -> Self {
        Activity {
            inner: Arc::new(ActivityInner {
                origin: Instant::now(),
                last_io_ms: AtomicU64::new(0),
                active: AtomicU64::new(0),
                responding: AtomicU64::new(0),
                // The first request's head is awaited from the accept on.
                head_since_ms: AtomicU64::new(0),
                pipelined: AtomicBool::new(false),
                with_body: AtomicBool::new(false),
                h2,
                park: AtomicBool::new(false),
                parked: AtomicBool::new(false),
                write_pending: AtomicBool::new(false),
                upgrade: parking_lot::Mutex::new(None),
            }),
        }
    }

    fn is_h2(&self) -> bool {
        self.inner.h2
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
    fn read(&self) {
        let now = self.now_ms();
        let inner = &*self.inner;
        inner.last_io_ms.store(now, Ordering::Relaxed);
        if inner.active.load(Ordering::Relaxed) > 0 || inner.responding.load(Ordering::Relaxed) > 0
        {
            if !inner.with_body.load(Ordering::Relaxed) {
                inner.pipelined.store(true, Ordering::Relaxed);
            }
        } else {
            // Between requests, the first byte starts the next head's clock.
            let _ = inner.head_since_ms.compare_exchange(
                NO_HEAD,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn request_started(&self, with_body: bool) -> ActiveRequest {
        let inner = &*self.inner;
        inner.active.fetch_add(1, Ordering::Relaxed);
        inner.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        inner.pipelined.store(false, Ordering::Relaxed);
        inner.with_body.store(with_body, Ordering::Relaxed);
        ActiveRequest(self.inner.clone())
    }

    /// A response is about to be written; done when the guard drops.
    fn responding(&self) -> Responding {
        self.inner.responding.fetch_add(1, Ordering::Relaxed);
        Responding(self.inner.clone())
    }

    /// An HTTP/1.1 request head has been arriving for longer than `limit`.
    fn head_overdue(&self, limit: Duration) -> bool {
        let inner = &*self.inner;
        if inner.h2 || inner.active.load(Ordering::Relaxed) > 0 {
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

    /// The connection is between requests with nothing of its own pending:
    /// no request or response in progress, no write waiting, no head
    /// started, and no bytes read during the last request that hyper may
    /// be keeping for the next one (a pipelined request). Part of a
    /// pipelined head that arrived in the same read as the request before
    /// it is not seen here; hyper then reports an incomplete message at the
    /// park and gives those bytes back (`drive_h1`), so nothing is lost.
    fn parkable(&self) -> bool {
        let inner = &*self.inner;
        !inner.h2
            && inner.active.load(Ordering::Relaxed) == 0
            && inner.responding.load(Ordering::Relaxed) == 0
            && !inner.write_pending.load(Ordering::Relaxed)
            && inner.head_since_ms.load(Ordering::Relaxed) == NO_HEAD
            && !inner.pipelined.load(Ordering::Relaxed)
    }

    fn request_park(&self) {
        self.inner.park.store(true, Ordering::Relaxed);
    }

    /// Called by a read that would block: whether to report end-of-stream
    /// instead, parking the connection.
    fn take_park(&self) -> bool {
        if self.inner.park.swap(false, Ordering::Relaxed) && self.parkable() {
            self.inner.parked.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// hyper's end of stream was the park, not the client; resets it for
    /// the connection's next hyper half.
    fn was_parked(&self) -> bool {
        self.inner.parked.swap(false, Ordering::Relaxed)
    }
}

struct ActiveRequest(Arc<ActivityInner>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response being written (see [`TrackedBody`]).
struct Responding(Arc<ActivityInner>);

impl Drop for Responding {
    fn drop(&mut self) {
        self.0.responding.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The client socket, noting activity on every successful read or
    /// write, and reporting end-of-stream when the connection is parked.
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
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.activity.read();
                Poll::Ready(Ok(()))
            }
            // Nothing to read: hyper sees a clean end of stream and hands
            // the socket back (`serve_h1`).
            Poll::Pending if this.activity.take_park() => Poll::Ready(Ok(())),
            r => r,
        }
    }
}

impl<I: AsyncWrite> ActivityIo<I> {
    fn wrote(&self, r: &Poll<std::io::Result<usize>>) {
        let inner = &*self.activity.inner;
        match r {
            Poll::Pending => inner.write_pending.store(true, Ordering::Relaxed),
            Poll::Ready(r) => {
                inner.write_pending.store(false, Ordering::Relaxed);
                if matches!(r, Ok(n) if *n > 0) {
                    self.activity.touch();
                }
            }
        }
    }
}

impl<I: AsyncWrite> AsyncWrite for ActivityIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = self.as_mut().project().inner.poll_write(cx, data);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = self.as_mut().project().inner.poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let r = this.inner.poll_flush(cx);
        this.activity
            .inner
            .write_pending
            .store(r.is_pending(), Ordering::Relaxed);
        r
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
