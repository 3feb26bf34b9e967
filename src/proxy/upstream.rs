//! The upstream side: pooled keep-alive connections to backends, and the
//! classification of their failures. Everything about how Portico talks to
//! backends sits behind [`UpstreamClient::send`] so the pool can be
//! specialised without touching the request path.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::dns::Dns;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::time::Instant;

use crate::config::BackendUrl;
use crate::observability::metrics::UpstreamErrorKind;

use super::body::{BodyFailure, RequestBody, RequestBodyError, UpstreamBody};
use super::endpoints::Endpoints;
use super::h1::{self, Conn};
use super::http2;
use super::retry::RetryBudget;

const POOL_MAX_IDLE_PER_HOST: usize = 1024;
/// The sweeper runs at least this often, so an idle connection outlives
/// `limits.upstream_idle_timeout` by at most this much.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

use super::BoxError;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream exchange failed ({})", kind.as_str())]
    Failed {
        kind: UpstreamErrorKind,
        #[source]
        source: BoxError,
    },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the client aborted its request body")]
    ClientAborted,
    /// Every backend tried was at its circuit breaker's limit.
    #[error("the backends are at their circuit breaker limits ({})", limit.as_str())]
    Overloaded { limit: super::endpoints::Overflow },
}

/// How far an upstream HTTP/1.1 connection reads ahead of its client.
///
/// A response body is read when the client's side asks for more, each read
/// starting at 8 KiB and doubling while reads come back full. One HTTP/1.1
/// client has one response in flight per connection, so its reads may grow
/// to [`h1::MAX_READ`]: large reads are what make large downloads cheap. An
/// HTTP/2 client has up to 256 streams on one connection: each stream's
/// backend connection then reads at most [`STREAM_READ_AHEAD`], so that a
/// client that stops reading makes Portico hold about 16 MiB per
/// connection (a read, a chunk on its way and the stream's send buffer
/// each), not 40.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAhead {
    /// Reads growing to [`h1::MAX_READ`] (HTTP/1.x clients).
    Full,
    /// At most [`STREAM_READ_AHEAD`] (streams of an HTTP/2 client).
    Stream,
}

impl ReadAhead {
    /// How large one read of a response body may be.
    fn read_cap(self) -> usize {
        match self {
            ReadAhead::Full => h1::MAX_READ,
            ReadAhead::Stream => STREAM_READ_AHEAD,
        }
    }
}

/// The read size of [`ReadAhead::Stream`].
pub const STREAM_READ_AHEAD: usize = 8 * 1024;

/// The transport of an upstream HTTP/1.1 connection (TCP, or TLS over it).
pub type UpstreamIo =
    hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

/// A request on its way to a backend. Boxed once: it passes through four
/// async functions, each of which would otherwise hold (and move) its 320
/// bytes, some twice.
pub type Outgoing = Box<Request<RequestBody>>;

/// A failed send: why, and the request when it was never written (so it
/// may go to another backend whatever its method and body).
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Outgoing>,
}

impl SendError {
    fn sent(error: UpstreamError) -> Self {
        SendError {
            error,
            unsent: None,
        }
    }
}

/// Why an upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("{}: cannot read CA file: {source}", path.display())]
    CaRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no usable CA certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)", path.display())]
    CaEmpty { path: PathBuf },
    #[error("cannot set up upstream TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A pooled HTTP/1.1 client for `http://` and `https://` backends. Cheap to
/// clone: clones share one pool.
///
/// The pool is Portico's own: per worker, a map from origin to idle
/// [`Conn`]s under a lock no other worker takes. Requests are written and
/// answers read by [`h1`] in the request's own task; a connection goes back
/// to the pool as soon as the last byte of its response has been read.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Arc<Pool>,
}

type H2Sender = http2::Connection;
/// One backend's HTTP/2 connection on one shard. An async lock, so that
/// requests arriving while it is being opened wait for it instead of each
/// opening their own.
type H2Slot = Arc<tokio::sync::Mutex<Option<H2Sender>>>;

/// `(https?, host:port)`: which connections can carry a request. The
/// backend's label is its authority as text; hashing and comparing it is a
/// fraction of what `Authority` costs (case-folded byte by byte).
type PoolKey = (bool, Arc<str>);

/// How long connections wait: to be opened, and idle in the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolTimeouts {
    /// `limits.upstream_connect_timeout`: 502 after.
    pub connect: Duration,
    /// `limits.upstream_idle_timeout`: idle connections are closed after it,
    /// before the backend's own keep-alive timeout closes them under a request.
    pub idle: Duration,
}

/// Idle connections of one worker (or of the threads that are not
/// workers, at index 0).
type Shard = Mutex<PoolMap<Vec<Idle>>>;

/// Looked up twice per request (checkout and return): foldhash, not the
/// default SipHash, whose strength a key from the route file does not need.
type PoolMap<V> = HashMap<PoolKey, V, foldhash::fast::RandomState>;

/// Shards per pool: a worker's index picks its shard, so each worker reuses
/// only the connections it opened (whose driver tasks run on its own event
/// loop) and never waits on another worker's lock. Workers beyond this share
/// shards, which is correct, only slower.
const SHARDS: usize = 64;

struct Pool {
    connector: HttpsConnector<HttpConnector<Dns>>,
    /// For `https://` backends with `http2: true`: TLS offering only `h2`.
    connector_h2: HttpsConnector<HttpConnector<Dns>>,
    idle: Box<[Shard]>,
    /// HTTP/2 (`h2c://`) connections, one per backend per shard: requests
    /// are multiplexed on it (as many streams as the backend allows).
    h2: Box<[Mutex<PoolMap<H2Slot>>]>,
    idle_timeout: Duration,
}

struct Idle {
    conn: Box<Conn>,
    /// When the connection went back to the pool.
    since: Instant,
}

impl Pool {
    /// The most recently used connection for `key` that is still open;
    /// closed and expired ones are dropped on the way.
    fn checkout(&self, key: &PoolKey) -> Option<Box<Conn>> {
        let mut idle = self.shard().lock();
        let list = idle.get_mut(key)?;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() <= self.idle_timeout && entry.conn.is_usable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Drops closed connections and those idle past the timeout. Keys left
    /// without connections go too, so backends removed from the route file
    /// leave nothing behind. A connection carrying a response is not in
    /// the pool, so a download longer than the timeout never loses it.
    fn sweep(&self) {
        let now = Instant::now();
        for shard in self.idle.iter() {
            self.sweep_shard(&mut shard.lock(), now);
        }
    }

    fn sweep_shard(&self, idle: &mut PoolMap<Vec<Idle>>, now: Instant) {
        idle.retain(|_, list| {
            list.retain(|e| now.duration_since(e.since) <= self.idle_timeout && e.conn.is_usable());
            !list.is_empty()
        });
    }

    /// Sweeps while the pool exists; ends when the last client is dropped.
    fn spawn_sweeper(pool: &Arc<Pool>) {
        // Outside a runtime (`portico check`, benches) nothing is pooled.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let every = (pool.idle_timeout / 2).clamp(Duration::from_millis(10), MAX_SWEEP_INTERVAL);
        let pool = Arc::downgrade(pool);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match pool.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
    }

    /// This thread's shard.
    fn shard(&self) -> &Shard {
        &self.idle[crate::server::worker::current() % SHARDS]
    }

    fn put(&self, key: PoolKey, conn: Box<Conn>) {
        let mut idle = self.shard().lock();
        let list = idle.entry(key).or_default();
        if list.len() < POOL_MAX_IDLE_PER_HOST {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Where a connection goes back to when its response has been read: its
/// pool, under its key.
pub struct Home {
    pool: Arc<Pool>,
    key: PoolKey,
}

impl Home {
    /// Pools `conn` (on the current worker's shard) for the next request.
    pub fn put(self, conn: Box<Conn>) {
        self.pool.put(self.key, conn);
    }
}

impl UpstreamClient {
    /// A client trusting the webpki roots (public CAs).
    pub fn new(timeouts: PoolTimeouts, dns: Dns) -> Result<Self, UpstreamSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(timeouts, roots, dns)
    }

    /// A client trusting only the CAs in a PEM file (private CAs).
    pub fn with_ca_file(
        timeouts: PoolTimeouts,
        path: &Path,
        dns: Dns,
    ) -> Result<Self, UpstreamSetupError> {
        let pem = std::fs::read(path).map_err(|source| UpstreamSetupError::CaRead {
            path: path.to_owned(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            // A cert rustls cannot parse is skipped; an empty result is the error.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(UpstreamSetupError::CaEmpty {
                path: path.to_owned(),
            });
        }
        Self::with_roots(timeouts, roots, dns)
    }

    fn with_roots(
        timeouts: PoolTimeouts,
        roots: rustls::RootCertStore,
        dns: Dns,
    ) -> Result<Self, UpstreamSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(dns);
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.connect));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http.clone());
        let connector_h2 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(http);
        let pool = Arc::new(Pool {
            connector,
            connector_h2,
            idle: (0..SHARDS)
                .map(|_| Mutex::new(PoolMap::default()))
                .collect(),
            h2: (0..SHARDS)
                .map(|_| Mutex::new(PoolMap::default()))
                .collect(),
            idle_timeout: timeouts.idle,
        });
        Pool::spawn_sweeper(&pool);
        Ok(UpstreamClient { pool })
    }

    /// Sends one request (origin-form URI: path and query) to `backend`
    /// and waits for the response head. A request that was never written
    /// comes back with the error, to be tried elsewhere.
    pub async fn send(
        &self,
        backend: &Backend,
        mut req: Outgoing,
        read_ahead: ReadAhead,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let key: PoolKey = pool_key(backend);
        let cap = read_ahead.read_cap();
        while let Some(conn) = self.pool.checkout(&key) {
            match h1::send(conn, req, self.home(&key), cap).await {
                Ok(resp) => return Ok(resp.map(UpstreamBody::H1)),
                // Not written: the connection had closed under us; the
                // request is intact, so try the next one.
                Err(h1::Failed {
                    unsent: Some(back), ..
                }) => req = back,
                Err(failed) => return Err(SendError::sent(classify(failed.error.into()))),
            }
        }
        // Boxed: connecting is the cold path, and its large state would
        // otherwise be part of every request future (moved per request).
        let conn = match Box::pin(dial(&self.pool.connector, backend)).await {
            Ok(io) => Box::new(Conn::new(io)),
            Err(error) => {
                return Err(SendError {
                    error,
                    unsent: Some(req),
                });
            }
        };
        match h1::send(conn, req, self.home(&key), cap).await {
            Ok(resp) => Ok(resp.map(UpstreamBody::H1)),
            Err(failed) => Err(SendError {
                error: classify(failed.error.into()),
                unsent: failed.unsent,
            }),
        }
    }

    /// Where `key`'s connections go back to after their response.
    fn home(&self, key: &PoolKey) -> Home {
        Home {
            pool: self.pool.clone(),
            key: key.clone(),
        }
    }

    /// Sends one request to an HTTP/2 backend (`h2c://`, or `https://`
    /// with `http2: true`), multiplexed on this
    /// worker's HTTP/2 connection to it (opened when there is none or it
    /// closed). The URI may be origin-form; `:scheme` and `:authority` come
    /// from the backend.
    pub async fn send_h2(
        &self,
        backend: &Backend,
        req: Outgoing,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (mut parts, mut body) = req.into_parts();
        let limit = body.limit();
        let failure = Arc::new(BodyFailure::default());
        body.report_failure_to(failure.clone());
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        // HTTP/2 carries the host in `:authority`, and a `Host` beside it
        // that differs is malformed (nginx refuses it as a duplicate): the
        // client's host, which HTTP/1.1 backends get as `Host`, becomes
        // `:authority`. The connection is the backend's all the same.
        let authority = parts
            .headers
            .remove(http::header::HOST)
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| backend.authority.clone());
        parts.uri = Uri::from_parts({
            let mut u = http::uri::Parts::default();
            u.scheme = Some(backend.scheme.clone());
            u.authority = Some(authority);
            u.path_and_query = Some(pq);
            u
        })
        .expect("scheme, authority and path make a URI");
        parts.version = http::Version::HTTP_2;
        let req = Request::from_parts(parts, body);
        // HTTP/2 to the backend: its flow control bounds what is read ahead.
        let key: PoolKey = pool_key(backend);
        let slot: H2Slot = self.pool.h2[crate::server::worker::current() % SHARDS]
            .lock()
            .entry(key)
            .or_default()
            .clone();
        let mut req = req;
        // A connection taken from the slot may have closed since; the
        // request then goes out on another one, once.
        let mut retried = false;
        loop {
            let conn = match self.h2_connection(&slot, backend).await {
                Ok(c) => c,
                Err(error) => {
                    return Err(SendError {
                        error,
                        unsent: Some(Box::new(req)),
                    });
                }
            };
            match conn.send(req).await {
                Ok(resp) => return Ok(resp.map(UpstreamBody::H2)),
                Err(http2::Failed {
                    unsent: Some(back),
                    error,
                }) => {
                    forget_closed(&slot).await;
                    if retried {
                        return Err(SendError {
                            error: classify(error.into()),
                            unsent: Some(Box::new(back)),
                        });
                    }
                    retried = true;
                    req = back;
                }
                Err(http2::Failed { error, .. }) => {
                    if conn.is_closed() {
                        forget_closed(&slot).await;
                    }
                    let error = match failure.too_large() {
                        Some(true) => UpstreamError::BodyTooLarge { limit },
                        Some(false) => UpstreamError::ClientAborted,
                        None => classify(error.into()),
                    };
                    return Err(SendError::sent(error));
                }
            }
        }
    }

    /// The slot's open connection, or a new one put there.
    async fn h2_connection(
        &self,
        slot: &H2Slot,
        backend: &Backend,
    ) -> Result<H2Sender, UpstreamError> {
        let mut current = slot.lock().await;
        if let Some(c) = current.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *current = None;
        // Boxed: opening is the cold path; its state would otherwise be
        // part of every request's future.
        let c = Box::pin(self.open_h2(backend)).await?;
        *current = Some(c.clone());
        Ok(c)
    }

    /// A new HTTP/2 connection to `backend` (prior knowledge, or TLS with
    /// ALPN `h2`), with keep-alive PINGs to find a dead one; its driver
    /// task spawned.
    async fn open_h2(&self, backend: &Backend) -> Result<H2Sender, UpstreamError> {
        let io = dial(&self.pool.connector_h2, backend).await?;
        http2::Connection::handshake(
            hyper_util::rt::TokioIo::new(io),
            http2::KeepAlive::default(),
        )
        .await
        .map_err(|e| classify(e.into()))
    }

    /// Sends an upgrade request (WebSocket) on a connection of its own,
    /// never pooled, through hyper's client: after a `101` the connection
    /// belongs to the upgraded stream (`hyper::upgrade::on` on the
    /// response).
    pub async fn upgrade(
        &self,
        backend: &Backend,
        req: Outgoing,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let io = dial(&self.pool.connector, backend).await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| classify(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        sender
            .send_request(*req)
            .await
            .map(|resp| resp.map(UpstreamBody::Hyper))
            .map_err(|e| classify(e.into()))
    }

    /// Closes the idle pooled connections to `backend` (it left the route).
    pub fn forget(&self, backend: &Backend) {
        let key = pool_key(backend);
        for shard in self.pool.idle.iter() {
            shard.lock().remove(&key);
        }
        if backend.h2 {
            for shard in self.pool.h2.iter() {
                shard.lock().remove(&key);
            }
        }
    }
}

fn pool_key(backend: &Backend) -> PoolKey {
    (backend.scheme == Scheme::HTTPS, backend.label.clone())
}

/// Empties an HTTP/2 slot whose connection has closed. Only a closed one:
/// another request may have put a fresh connection there meanwhile, and
/// dropping that would open a second one for nothing.
async fn forget_closed(slot: &H2Slot) {
    let mut current = slot.lock().await;
    if current.as_ref().is_some_and(H2Sender::is_closed) {
        *current = None;
    }
}

/// A TCP (and, for `https://`, TLS) connection to `backend` through
/// `connector`; any failure to open it counts as a connect failure.
async fn dial(
    connector: &HttpsConnector<HttpConnector<Dns>>,
    backend: &Backend,
) -> Result<UpstreamIo, UpstreamError> {
    let origin = Uri::from_parts({
        let mut u = http::uri::Parts::default();
        u.scheme = Some(backend.scheme.clone());
        u.authority = Some(backend.authority.clone());
        u.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        u
    })
    .map_err(|e| UpstreamError::Failed {
        kind: UpstreamErrorKind::Connect,
        source: e.into(),
    })?;
    let mut connector = connector.clone();
    tower_service::Service::call(&mut connector, origin)
        .await
        .map_err(|e| match classify(e) {
            UpstreamError::Failed {
                kind: UpstreamErrorKind::Reset,
                source,
            } => UpstreamError::Failed {
                kind: UpstreamErrorKind::Connect,
                source,
            },
            other => other,
        })
}

/// Maps a client error onto the closed set of failure kinds by walking its
/// source chain; raw error text never becomes a label.
fn classify(err: BoxError) -> UpstreamError {
    let mut kind = UpstreamErrorKind::Reset;
    let mut cause: Option<&(dyn StdError + 'static)> = Some(&*err);
    while let Some(e) = cause {
        if let Some(body) = e.downcast_ref::<RequestBodyError>() {
            return match body {
                RequestBodyError::TooLarge { limit } => {
                    UpstreamError::BodyTooLarge { limit: *limit }
                }
                RequestBodyError::Client(_) => UpstreamError::ClientAborted,
            };
        }
        if e.downcast_ref::<rustls::Error>().is_some() {
            kind = UpstreamErrorKind::Tls;
            break;
        }
        // What the backend sent was not valid HTTP (either client's view).
        let bad_http = e
            .downcast_ref::<h1::H1Error>()
            .is_some_and(h1::H1Error::is_protocol)
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_parse);
        if bad_http {
            kind = UpstreamErrorKind::Protocol;
            break;
        }
        // h2's errors do not name their source; an I/O failure is inside.
        if let Some(h) = e.downcast_ref::<h2::Error>() {
            cause = h.get_io().map(|io| io as &(dyn StdError + 'static));
            continue;
        }
        // io::Error::source() skips the error an io::Error wraps, and
        // tokio-rustls reports handshake failures as io::Error(rustls::Error)
        // (hyper-util wraps that once more): descend into it.
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    UpstreamError::Failed { kind, source: err }
}

/// One backend of a route, with its URI parts built once at load time.
#[derive(Debug)]
pub struct Backend {
    pub scheme: Scheme,
    /// `h2c://`: HTTP/2 with prior knowledge.
    pub h2: bool,
    pub authority: Authority,
    /// `host:port`, as shown in access logs.
    pub label: Arc<str>,
}

impl Backend {
    /// One address of `url`'s host (DNS discovery): connected to by IP;
    /// the request keeps the client's `Host`.
    pub fn at(url: &BackendUrl, addr: std::net::SocketAddr) -> Self {
        let text = addr.to_string();
        Backend {
            scheme: if url.tls { Scheme::HTTPS } else { Scheme::HTTP },
            h2: url.h2,
            authority: Authority::try_from(text.as_str()).unwrap_or_else(|_| url.authority.clone()),
            label: Arc::from(text),
        }
    }
}

/// `scheme://host:port` as configured (`h2c://` for cleartext HTTP/2).
impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match (self.scheme.as_str(), self.h2) {
            ("http", true) => "h2c",
            (scheme, _) => scheme,
        };
        write!(f, "{scheme}://{}", self.authority)
    }
}

impl From<&BackendUrl> for Backend {
    fn from(url: &BackendUrl) -> Self {
        Backend {
            scheme: if url.tls { Scheme::HTTPS } else { Scheme::HTTP },
            h2: url.h2,
            authority: url.authority.clone(),
            label: Arc::from(url.authority.as_str()),
        }
    }
}

/// A route's backends, how they are chosen and retried, and the client
/// that reaches them.
pub struct Upstream {
    pub endpoints: Endpoints,
    pub budget: RetryBudget,
    /// Extra tries allowed per request (`retries:`).
    pub retries: u32,
    /// Statuses an idempotent request is retried on (`retry_on:`).
    pub retry_on: Vec<u16>,
    /// Bodies up to this size are read ahead so that an idempotent request
    /// can be sent again (`retry_buffer:`).
    pub retry_buffer: u64,
    /// Some backend speaks HTTP/2 (`te: trailers` is kept for it).
    pub http2: bool,
    pub client: UpstreamClient,
}

impl Upstream {
    pub fn new(
        backends: Vec<Backend>,
        spec: &crate::config::RouteSpec,
        client: UpstreamClient,
    ) -> Self {
        let http2 = backends.iter().any(|b| b.h2);
        Upstream {
            endpoints: Endpoints::new(backends, spec.balance.clone(), spec.outlier, spec.breaker),
            budget: RetryBudget::default(),
            retries: spec.retries,
            retry_on: spec.retry_on.clone(),
            retry_buffer: spec.retry_buffer,
            http2,
            client,
        }
    }
}

/// The clients shared by all route tables: one for public CAs, one per
/// private CA file. Kept across reloads so that routes keep warm pools.
pub struct UpstreamClients {
    timeouts: PoolTimeouts,
    /// How backends named by host name are resolved on connect.
    dns: Dns,
    default: UpstreamClient,
    /// `dns.nameservers` (empty: /etc/resolv.conf), and the resolver made
    /// from them on first use by a route with `discovery: dns`.
    nameservers: Vec<std::net::SocketAddr>,
    resolver: std::sync::OnceLock<Option<Arc<super::discovery::Resolver>>>,
    /// Keyed by CA file and its contents, so a changed CA file gets a new client.
    by_ca: Mutex<HashMap<(PathBuf, Vec<u8>), UpstreamClient>>,
}

impl UpstreamClients {
    pub fn new(timeouts: PoolTimeouts) -> Result<Self, UpstreamSetupError> {
        let dns = Dns::system();
        Ok(UpstreamClients {
            timeouts,
            default: UpstreamClient::new(timeouts, dns.clone())?,
            dns,
            nameservers: Vec::new(),
            resolver: std::sync::OnceLock::new(),
            by_ca: Mutex::new(HashMap::new()),
        })
    }

    /// Name servers for `discovery: dns` (`dns.nameservers`).
    pub fn with_nameservers(mut self, nameservers: Vec<std::net::SocketAddr>) -> Self {
        self.nameservers = nameservers;
        self
    }

    /// The DNS resolver, made on first use; `None` (logged once) when it
    /// cannot be set up: routes then resolve their host names on connect.
    pub fn resolver(&self) -> Option<Arc<super::discovery::Resolver>> {
        self.resolver
            .get_or_init(|| match super::discovery::Resolver::new(&self.nameservers) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::error!(error = %e, "discovery: dns is off; backends are resolved when connecting");
                    None
                }
            })
            .clone()
    }

    /// The client for a route: the shared default, or one trusting `ca_file`.
    pub fn for_route(&self, ca_file: Option<&Path>) -> Result<UpstreamClient, UpstreamSetupError> {
        let Some(path) = ca_file else {
            return Ok(self.default.clone());
        };
        let pem = std::fs::read(path).map_err(|source| UpstreamSetupError::CaRead {
            path: path.to_owned(),
            source,
        })?;
        let key = (path.to_owned(), pem);
        if let Some(c) = self.by_ca.lock().get(&key) {
            return Ok(c.clone());
        }
        let client = UpstreamClient::with_ca_file(self.timeouts, path, self.dns.clone())?;
        self.by_ca.lock().insert(key, client.clone());
        Ok(client)
    }
}
