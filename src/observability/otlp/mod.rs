//! Span export: one server span per request, sent to an OpenTelemetry
//! collector over OTLP/HTTP (protobuf) in batches (`tracing.otlp`).
//!
//! The request path only pushes a small record onto a bounded queue (one
//! uncontended lock, no allocation beyond the queue's own growth); the
//! protobuf is written (`wire`) and sent by one task on the control thread. When the
//! collector is slow or down the queue fills and further spans are dropped
//! and counted (`portico_trace_spans_dropped_total{reason="queue_full"}`):
//! a request never waits for the collector. A batch the collector refuses
//! or does not answer within `export_timeout` is dropped and counted
//! (`reason="export_failed"`); it is not sent again, so a collector that
//! comes back is not met with a backlog.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, Version};

mod wire;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::sync::{Notify, watch};

use crate::config::OtlpSettings;
use crate::observability::metrics::{Metrics, RouteMetrics};
use crate::proxy::dns::Dns;
use crate::proxy::trace::{Sampler, TraceContext};

/// What the request path knows about one finished request, kept until it
/// is exported. Every field is a copy or a reference count.
pub struct SpanRecord {
    pub trace: TraceContext,
    /// When the request head arrived, as wall-clock time.
    pub start: SystemTime,
    pub duration: Duration,
    pub method: Method,
    pub path: Arc<str>,
    pub host: Option<HeaderValue>,
    /// The route's labels (`http.route` and the host rule).
    pub route: RouteMetrics,
    pub status: u16,
    pub upstream: Option<Arc<str>>,
    pub tries: u8,
    /// From the start of the request: when the first try went to a backend
    /// and how long until a response head came back (retries included).
    pub upstream_phase: Option<(Duration, Duration)>,
    pub peer: IpAddr,
    pub version: Version,
    /// The response body did not end normally (client gone, backend reset).
    pub incomplete: bool,
}

/// The bounded queue between the request path and the exporter.
pub struct SpanQueue {
    pending: Mutex<Vec<SpanRecord>>,
    capacity: usize,
    batch: usize,
    /// Woken when a full batch is waiting.
    ready: Notify,
    dropped_full: IntCounter,
}

impl SpanQueue {
    /// Queues one span, or drops and counts it when the queue is full.
    pub fn push(&self, record: SpanRecord) {
        let mut q = self.pending.lock();
        if q.len() >= self.capacity {
            drop(q);
            self.dropped_full.inc();
            return;
        }
        q.push(record);
        let full_batch = q.len() == self.batch;
        drop(q);
        if full_batch {
            self.ready.notify_one();
        }
    }

    /// Up to one batch, oldest first.
    fn take_batch(&self) -> Vec<SpanRecord> {
        let mut q = self.pending.lock();
        if q.len() <= self.batch {
            return std::mem::take(&mut *q);
        }
        let rest = q.split_off(self.batch);
        std::mem::replace(&mut *q, rest)
    }

    fn len(&self) -> usize {
        self.pending.lock().len()
    }
}

/// The request path's handle: which new traces to sample, and where
/// sampled spans go.
#[derive(Clone)]
pub struct Spans {
    pub sampler: Sampler,
    pub queue: Arc<SpanQueue>,
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("collector answered {0}")]
    Status(StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("reading the collector's answer: {0}")]
    Body(#[from] hyper::Error),
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector<Dns>>, Full<Bytes>>;

/// Sends queued spans to the collector.
pub struct Exporter {
    queue: Arc<SpanQueue>,
    endpoint: Uri,
    client: HttpsClient,
    /// The encoded `Resource` (service name and version), the same in
    /// every batch.
    resource: Vec<u8>,
    encoder: Mutex<wire::Encoder>,
    flush_interval: Duration,
    export_timeout: Duration,
    exported: IntCounter,
    dropped_failed: IntCounter,
}

impl Exporter {
    /// The exporter and the request path's handle to it.
    pub fn new(settings: &OtlpSettings, metrics: &Metrics) -> (Arc<Exporter>, Spans) {
        let queue = Arc::new(SpanQueue {
            pending: Mutex::new(Vec::with_capacity(settings.batch_size)),
            capacity: settings.queue_size,
            batch: settings.batch_size,
            ready: Notify::new(),
            dropped_full: metrics
                .trace_spans_dropped
                .with_label_values(&["queue_full"]),
        });
        let mut http = HttpConnector::new_with_resolver(Dns::system());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.export_timeout));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        let exporter = Arc::new(Exporter {
            queue: queue.clone(),
            endpoint: settings.endpoint.clone(),
            client,
            resource: wire::resource(&[
                ("service.name", &settings.service_name),
                ("service.version", env!("CARGO_PKG_VERSION")),
            ]),
            encoder: Mutex::new(wire::Encoder::default()),
            flush_interval: settings.flush_interval,
            export_timeout: settings.export_timeout,
            exported: metrics.trace_spans_exported.clone(),
            dropped_failed: metrics
                .trace_spans_dropped
                .with_label_values(&["export_failed"]),
        });
        let spans = Spans {
            sampler: Sampler::ratio(settings.sample_ratio),
            queue,
        };
        (exporter, spans)
    }

    /// How long one export may take (the bound of the final flush).
    pub fn export_timeout(&self) -> Duration {
        self.export_timeout
    }

    /// Exports a batch whenever one is full or `flush_interval` has passed,
    /// until `stop`; then what is queued goes out (see [`Exporter::flush`]).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.queue.ready.notified() => {}
                _ = tokio::time::sleep(self.flush_interval) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            // A full batch may be followed by another: send until less
            // than a batch is left, which waits for the next tick.
            loop {
                self.export_one().await;
                if self.queue.len() < self.queue.batch {
                    break;
                }
            }
        }
        self.flush().await;
    }

    /// Sends everything queued, one batch at a time (at shutdown).
    pub async fn flush(&self) {
        while self.queue.len() > 0 {
            self.export_one().await;
        }
    }

    async fn export_one(&self) {
        let batch = self.queue.take_batch();
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let body = self.encode(&batch);
        drop(batch);
        match self.post(body).await {
            Ok(()) => self.exported.inc_by(n),
            Err(e) => {
                self.dropped_failed.inc_by(n);
                tracing::warn!(
                    endpoint = %self.endpoint,
                    spans = n,
                    error = %crate::proxy::error_chain(&e),
                    "span export failed; spans dropped"
                );
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), ExportError> {
        let req = Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(
                http::header::USER_AGENT,
                concat!("portico/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .expect("a parsed URI and static headers make a valid request");
        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            // Read the (small) answer so the connection can be reused.
            resp.into_body().collect().await?;
            if status.is_success() {
                Ok(())
            } else {
                Err(ExportError::Status(status))
            }
        };
        tokio::time::timeout(self.export_timeout, exchange)
            .await
            .map_err(|_| ExportError::Timeout(self.export_timeout))?
    }

    fn encode(&self, batch: &[SpanRecord]) -> Bytes {
        Bytes::from(self.encoder.lock().request(&self.resource, batch))
    }
}
