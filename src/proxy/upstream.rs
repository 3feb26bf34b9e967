//! The upstream side: pooled keep-alive connections to backends, and the
//! classification of their failures. Everything about how Portico talks to
//! backends sits behind [`UpstreamClient::send`] so the pool can be
//! specialised without touching the request path.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::BackendUrl;
use crate::observability::metrics::UpstreamErrorKind;

use super::body::{RequestBody, RequestBodyError};

/// Idle upstream connections are closed after this long; shorter than the
/// usual 60–120 s backend keep-alive so Portico closes first and never sends
/// on a connection the backend is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
const POOL_MAX_IDLE_PER_HOST: usize = 1024;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream exchange failed ({})", kind.as_str())]
    Failed {
        kind: UpstreamErrorKind,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the client aborted its request body")]
    ClientAborted,
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
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
}

impl UpstreamClient {
    /// A client trusting the webpki roots (public CAs).
    pub fn new(connect_timeout: Duration) -> Result<Self, UpstreamSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(connect_timeout, roots)
    }

    /// A client trusting only the CAs in a PEM file (private CAs).
    pub fn with_ca_file(
        connect_timeout: Duration,
        path: &Path,
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
        Self::with_roots(connect_timeout, roots)
    }

    fn with_roots(
        connect_timeout: Duration,
        roots: rustls::RootCertStore,
    ) -> Result<Self, UpstreamSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        Ok(UpstreamClient { client })
    }

    /// Sends one request (absolute-form URI) and waits for the response head.
    pub async fn send(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.client.request(req).await.map_err(classify)
    }
}

/// Maps a client error onto the closed set of failure kinds by walking its
/// source chain; raw error text never becomes a label.
fn classify(err: hyper_util::client::legacy::Error) -> UpstreamError {
    let mut kind = if err.is_connect() {
        UpstreamErrorKind::Connect
    } else {
        UpstreamErrorKind::Reset
    };
    let mut cause: Option<&(dyn StdError + 'static)> = err.source();
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
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_parse()
        {
            kind = UpstreamErrorKind::Protocol;
            break;
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
    pub authority: Authority,
    /// `host:port`, as shown in access logs.
    pub label: Arc<str>,
}

impl From<&BackendUrl> for Backend {
    fn from(url: &BackendUrl) -> Self {
        Backend {
            scheme: if url.tls { Scheme::HTTPS } else { Scheme::HTTP },
            authority: url.authority.clone(),
            label: Arc::from(url.authority.as_str()),
        }
    }
}

/// A route's backends (round-robin) and the client that reaches them.
pub struct Upstream {
    pub backends: Vec<Backend>,
    next: AtomicUsize,
    pub client: UpstreamClient,
}

impl Upstream {
    pub fn new(backends: Vec<Backend>, client: UpstreamClient) -> Self {
        assert!(!backends.is_empty(), "a route has at least one backend");
        Upstream {
            backends,
            next: AtomicUsize::new(0),
            client,
        }
    }

    /// The next backend in round-robin order.
    pub fn pick(&self) -> &Backend {
        if self.backends.len() == 1 {
            return &self.backends[0];
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.backends[i % self.backends.len()]
    }
}

/// The clients shared by all route tables: one for public CAs, one per
/// private CA file. Kept across reloads so that routes keep warm pools.
pub struct UpstreamClients {
    connect_timeout: Duration,
    default: UpstreamClient,
    /// Keyed by CA file and its contents, so a changed CA file gets a new client.
    by_ca: Mutex<HashMap<(PathBuf, Vec<u8>), UpstreamClient>>,
}

impl UpstreamClients {
    pub fn new(connect_timeout: Duration) -> Result<Self, UpstreamSetupError> {
        Ok(UpstreamClients {
            connect_timeout,
            default: UpstreamClient::new(connect_timeout)?,
            by_ca: Mutex::new(HashMap::new()),
        })
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
        let client = UpstreamClient::with_ca_file(self.connect_timeout, path)?;
        self.by_ca.lock().insert(key, client.clone());
        Ok(client)
    }
}
