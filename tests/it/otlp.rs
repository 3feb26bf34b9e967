//! Span export (`tracing.otlp`): spans reach a real OTLP/HTTP receiver
//! started here (the protobuf is decoded), none are lost with a healthy
//! collector, parent-based sampling holds, and a dead or hanging collector
//! costs no request anything.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span};
use prost::Message;
use tokio::net::TcpListener;

use crate::support::backend::Backend;
use crate::support::client::{self, http1};
use crate::support::gateway::{TestGateway, routes_yaml};

/// How the receiver treats an export request.
#[derive(Clone, Copy, PartialEq)]
enum Collector {
    Healthy,
    /// Reads the request and never answers.
    Hanging,
}

/// An OTLP/HTTP receiver: decodes each `POST /v1/traces` and keeps its
/// spans, with the resource's `service.name`.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<HashSet<String>>>,
}

impl Receiver {
    async fn start(mode: Collector) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let services = Arc::new(Mutex::new(HashSet::new()));
        let (keep, names) = (spans.clone(), services.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (keep, names) = (keep.clone(), names.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (keep, names) = (keep.clone(), names.clone());
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            if mode == Collector::Hanging {
                                std::future::pending::<()>().await;
                            }
                            let export = ExportTraceServiceRequest::decode(body)
                                .expect("the body is an OTLP protobuf");
                            for rs in export.resource_spans {
                                for kv in rs.resource.unwrap().attributes {
                                    if kv.key == "service.name"
                                        && let Some(Value::StringValue(s)) =
                                            kv.value.and_then(|v| v.value)
                                    {
                                        names.lock().unwrap().insert(s);
                                    }
                                }
                                for ss in rs.scope_spans {
                                    keep.lock().unwrap().extend(ss.spans);
                                }
                            }
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            let mut resp = Response::new(Full::new(Bytes::from(answer)));
                            resp.headers_mut()
                                .insert("content-type", "application/x-protobuf".parse().unwrap());
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            spans,
            services,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `n` spans have arrived (exports are batched and timed).
    async fn wait_for(&self, n: usize) -> Vec<Span> {
        for _ in 0..200 {
            if self.spans.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.spans()
    }
}

fn otlp_config(endpoint: &str, extra: &str) -> String {
    format!("tracing:\n  otlp:\n    endpoint: {endpoint}\n{extra}")
}

fn attr<'s>(span: &'s Span, key: &str) -> Option<&'s Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text<'s>(span: &'s Span, key: &str) -> &'s str {
    match attr(span, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("{key}: {other:?}"),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::IntValue(v)) => *v,
        other => panic!("{key}: {other:?}"),
    }
}

/// The span id Portico sent upstream in `traceparent` (its own hop).
fn sent_span_id(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

#[tokio::test]
async fn every_request_becomes_one_span_at_a_real_collector() {
    let collector = Receiver::start(Collector::Healthy).await;
    let backend = Backend::start("reports").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/billing", &backend)]),
        &otlp_config(
            &format!("http://{}", collector.addr),
            "    service_name: edge-eu\n    flush_interval: 100ms\n    batch_size: 64\n",
        ),
    )
    .await;

    // 1,000 requests, 20 at a time; every other one continues a sampled
    // trace from the client.
    let parent_of = |i: usize| format!("00-{:032x}-{:016x}-01", i + 1, i + 7);
    let client = http1();
    let mut tasks = Vec::new();
    for worker in 0..20 {
        let client = client.clone();
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            for i in (worker..1000usize).step_by(20) {
                let mut req = Request::get(format!("http://{addr}/billing/r/{i}"));
                if i.is_multiple_of(2) {
                    req = req.header("traceparent", parent_of(i));
                }
                let reply = client::send(&client, req.body(Full::default()).unwrap()).await;
                assert_eq!(reply.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let spans = collector.wait_for(1000).await;
    assert_eq!(spans.len(), 1000, "one span per request, none lost");
    assert_eq!(gw.metrics.trace_spans_exported.get(), 1000);
    for reason in ["queue_full", "export_failed"] {
        assert_eq!(
            gw.metrics
                .trace_spans_dropped
                .with_label_values(&[reason])
                .get(),
            0,
            "{reason}"
        );
    }
    assert_eq!(
        *collector.services.lock().unwrap(),
        HashSet::from(["edge-eu".to_owned()])
    );

    // Each span is the hop the backend saw as its parent.
    let by_span: HashMap<String, &Span> =
        spans.iter().map(|s| (hex::encode(&s.span_id), s)).collect();
    assert_eq!(by_span.len(), 1000, "span ids are unique");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1000);
    for s in &seen {
        let (trace, span_id, flags) = sent_span_id(s.headers["traceparent"].to_str().unwrap());
        assert_eq!(flags, "01");
        let span = by_span
            .get(&span_id)
            .unwrap_or_else(|| panic!("no span {span_id} for {}", s.target));
        assert_eq!(hex::encode(&span.trace_id), trace);
        let i: usize = s.target.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(text(span, "url.path"), format!("/billing/r/{i}"));
        if i.is_multiple_of(2) {
            let parent = parent_of(i);
            let (want_trace, want_parent, _) = sent_span_id(&parent);
            assert_eq!(trace, want_trace, "the client's trace is continued");
            assert_eq!(hex::encode(&span.parent_span_id), want_parent);
            assert_eq!(span.flags & 0x300, 0x300, "a remote parent");
        } else {
            assert!(span.parent_span_id.is_empty(), "a trace started here");
            assert_eq!(span.flags & 0x300, 0x100, "no remote parent");
        }
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.name, "GET /billing");
        assert_eq!(text(span, "http.route"), "/billing");
        assert_eq!(text(span, "http.request.method"), "GET");
        assert_eq!(int(span, "http.response.status_code"), 200);
        assert_eq!(text(span, "portico.upstream"), backend.addr.to_string());
        assert_eq!(text(span, "client.address"), "127.0.0.1");
        assert_eq!(text(span, "server.address"), gw.addr.to_string());
        assert_eq!(text(span, "network.protocol.version"), "1.1");
        assert_eq!(text(span, "portico.host_rule"), "*");
        assert_eq!(int(span, "http.request.resend_count"), 0);
        match attr(span, "portico.upstream.duration_ms") {
            Some(Value::DoubleValue(ms)) => assert!(*ms > 0.0, "{ms}"),
            other => panic!("portico.upstream.duration_ms: {other:?}"),
        }
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(0), "unset");
        assert_eq!(int(span, "portico.upstream.tries"), 1);
        assert!(span.end_time_unix_nano > span.start_time_unix_nano);
        let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["upstream request sent", "upstream response head"]);
        assert!(
            span.events
                .iter()
                .all(|e| (span.start_time_unix_nano..=span.end_time_unix_nano)
                    .contains(&e.time_unix_nano)),
            "the upstream phase lies within the request"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn sampling_follows_the_parent_and_the_ratio() {
    let collector = Receiver::start(Collector::Healthy).await;
    let backend = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &backend)]),
        &otlp_config(
            &format!("http://{}/v1/traces", collector.addr),
            "    sample_ratio: 0\n    flush_interval: 50ms\n",
        ),
    )
    .await;
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let unsampled = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-00";
    for _ in 0..50 {
        assert_eq!(client::get(gw.addr, "/b/new").await.status, 200);
        let r = client::get_with(gw.addr, "/b/unsampled", &[("traceparent", unsampled)]).await;
        assert_eq!(r.status, 200);
        let r = client::get_with(gw.addr, "/b/sampled", &[("traceparent", sampled)]).await;
        assert_eq!(r.status, 200);
    }
    // New traces at ratio 0 are not sampled, and the backends are told so.
    for s in backend.seen() {
        let (_, _, flags) = sent_span_id(s.headers["traceparent"].to_str().unwrap());
        let want = if s.target.ends_with("/sampled") {
            "01"
        } else {
            "00"
        };
        assert_eq!(flags, want, "{}", s.target);
    }
    // Only the sampled parent's requests are exported. Shutting down
    // flushes the queue, so every span due has arrived afterwards.
    gw.shutdown().await;
    let spans = collector.spans();
    assert_eq!(
        spans.len(),
        50,
        "exactly the requests with a sampled parent"
    );
    assert!(spans.iter().all(|s| text(s, "url.path") == "/b/sampled"
        && hex::encode(&s.trace_id) == "0af7651916cd43dd8448eb211c80319c"));
}

#[tokio::test]
async fn queued_spans_go_out_at_shutdown() {
    let collector = Receiver::start(Collector::Healthy).await;
    let backend = Backend::start("b").await;
    // Neither a full batch nor the interval comes before shutdown.
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &backend)]),
        &otlp_config(
            &format!("http://{}", collector.addr),
            "    flush_interval: 1h\n    batch_size: 1000\n",
        ),
    )
    .await;
    for i in 0..100 {
        assert_eq!(client::get(gw.addr, &format!("/b/{i}")).await.status, 200);
    }
    assert!(
        collector.spans().is_empty(),
        "nothing is due before shutdown"
    );
    gw.shutdown().await;
    assert_eq!(collector.spans().len(), 100);
}

/// 1,000 requests through a gateway whose collector is `endpoint`: every
/// one answered. Returns the gateway, shut down, for its counters.
async fn load_with_collector(endpoint: &str, export_timeout: &str) -> TestGateway {
    let backend = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &backend)]),
        &otlp_config(
            endpoint,
            &format!(
                "    queue_size: 64\n    batch_size: 16\n    flush_interval: 20ms\n    export_timeout: {export_timeout}\n"
            ),
        ),
    )
    .await;
    let client = http1();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (client, addr) = (client.clone(), gw.addr);
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let req = Request::get(format!("http://{addr}/b/{i}"))
                    .body(Full::default())
                    .unwrap();
                assert_eq!(client::send(&client, req).await.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(backend.seen().len(), 1000);
    gw
}

fn dropped(gw: &TestGateway, reason: &str) -> u64 {
    gw.metrics
        .trace_spans_dropped
        .with_label_values(&[reason])
        .get()
}

#[tokio::test]
async fn a_dead_collector_costs_requests_nothing_and_every_span_is_counted() {
    // A port with nothing behind it.
    let dead = crate::support::refused_addr();
    let gw = load_with_collector(&format!("http://{dead}"), "300ms").await;
    let metrics = gw.metrics.clone();
    gw.shutdown().await;
    assert_eq!(metrics.trace_spans_exported.get(), 0);
    let full = metrics
        .trace_spans_dropped
        .with_label_values(&["queue_full"])
        .get();
    let failed = metrics
        .trace_spans_dropped
        .with_label_values(&["export_failed"])
        .get();
    assert!(failed > 0, "refused exports are counted");
    assert_eq!(
        full + failed,
        1000,
        "every span is exported or counted as dropped"
    );
}

#[tokio::test]
async fn a_hanging_collector_fills_the_queue_not_the_requests() {
    let hanging = Receiver::start(Collector::Hanging).await;
    let gw = load_with_collector(&format!("http://{}", hanging.addr), "2s").await;
    // The first batch waits for an answer that never comes; the queue
    // holds 64 more and the rest are dropped at once.
    // (Each further 2 s lets one more batch of 16 in.)
    let full = dropped(&gw, "queue_full");
    assert!(full >= 800, "{full} of 1,000 dropped");
    assert_eq!(gw.metrics.trace_spans_exported.get(), 0);
    // The gateway stays healthy.
    assert_eq!(client::get(gw.addr, "/b/after").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_export_traces_are_still_started_sampled() {
    let backend = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/b", &backend)])).await;
    assert_eq!(client::get(gw.addr, "/b").await.status, 200);
    let (_, _, flags) = sent_span_id(backend.last().headers["traceparent"].to_str().unwrap());
    assert_eq!(flags, "01");
    assert_eq!(gw.metrics.trace_spans_exported.get(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failed_request_is_an_error_span() {
    let collector = Receiver::start(Collector::Healthy).await;
    let dead = crate::support::refused_addr();
    let gw = TestGateway::start_with(
        &format!("routes:\n  - prefix: /down\n    backend: http://{dead}\n"),
        &otlp_config(&format!("http://{}", collector.addr), ""),
    )
    .await;
    let reply = client::get(gw.addr, "/down/x").await;
    assert_eq!(reply.status, 502);
    assert_eq!(client::get(gw.addr, "/unrouted").await.status, 404);
    gw.shutdown().await;
    let spans = collector.spans();
    assert_eq!(spans.len(), 2);
    let down = spans
        .iter()
        .find(|s| text(s, "url.path") == "/down/x")
        .unwrap();
    assert_eq!(int(down, "http.response.status_code"), 502);
    assert_eq!(
        down.status.as_ref().map(|s| s.code),
        Some(opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32)
    );
    assert_eq!(text(down, "portico.upstream"), dead.to_string());
    let unrouted = spans
        .iter()
        .find(|s| text(s, "url.path") == "/unrouted")
        .unwrap();
    assert_eq!(text(unrouted, "http.route"), "none");
    assert_eq!(unrouted.name, "GET none");
    assert!(
        attr(unrouted, "portico.upstream").is_none(),
        "no backend was tried"
    );
    assert_eq!(unrouted.status.as_ref().map(|s| s.code), Some(0));
}
