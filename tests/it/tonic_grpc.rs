//! gRPC through Portico with a real gRPC stack on both sides: a `tonic`
//! client, and a `tonic` server (its `Grpc` handlers served by hyper, over
//! h2c and over TLS with ALPN `h2`). Unary and server-streaming calls,
//! statuses and trailing metadata from the backend, and Portico's own
//! failures as the `tonic::Code` a client acts on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use crate::support::certs::{Key, TestCa};
use crate::support::gateway::TestGateway;

#[derive(Clone, PartialEq, prost::Message)]
struct ReportRequest {
    #[prost(string, tag = "1")]
    month: String,
    #[prost(uint32, tag = "2")]
    parts: u32,
    #[prost(bytes = "vec", tag = "3")]
    padding: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Report {
    #[prost(string, tag = "1")]
    month: String,
    #[prost(uint32, tag = "2")]
    part: u32,
    /// The path the backend was called on (after `strip_prefix`).
    #[prost(string, tag = "3")]
    path: String,
    /// The `x-request-id` the backend received.
    #[prost(string, tag = "4")]
    request_id: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Reports = futures_util::stream::Iter<std::vec::IntoIter<Result<Report, Status>>>;

/// The unary methods of `billing.v1.Reports`: `Get` answers at once,
/// `Slow` after 2 s, `Deny` with PERMISSION_DENIED and trailing metadata.
#[derive(Clone)]
struct Unary {
    method: String,
    path: String,
}

impl tower_service::Service<tonic::Request<ReportRequest>> for Unary {
    type Response = tonic::Response<Report>;
    type Error = Status;
    type Future = BoxFuture<Result<tonic::Response<Report>, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, r: tonic::Request<ReportRequest>) -> Self::Future {
        let out = report(&r, &self.path, 0);
        let method = self.method.clone();
        Box::pin(async move {
            match method.as_str() {
                "Slow" => tokio::time::sleep(Duration::from_secs(2)).await,
                "Deny" => {
                    let mut md = MetadataMap::new();
                    md.insert("x-quota-left", "0".parse().unwrap());
                    return Err(Status::with_metadata(
                        Code::PermissionDenied,
                        "billing quota spent",
                        md,
                    ));
                }
                _ => {}
            }
            Ok(tonic::Response::new(out))
        })
    }
}

/// `List`, server streaming: one report per requested part.
#[derive(Clone)]
struct List {
    path: String,
}

impl tower_service::Service<tonic::Request<ReportRequest>> for List {
    type Response = tonic::Response<Reports>;
    type Error = Status;
    type Future = std::future::Ready<Result<tonic::Response<Reports>, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, r: tonic::Request<ReportRequest>) -> Self::Future {
        let items: Vec<Result<Report, Status>> = (1..=r.get_ref().parts)
            .map(|p| Ok(report(&r, &self.path, p)))
            .collect();
        std::future::ready(Ok(tonic::Response::new(futures_util::stream::iter(items))))
    }
}

fn report(r: &tonic::Request<ReportRequest>, path: &str, part: u32) -> Report {
    Report {
        month: r.get_ref().month.clone(),
        part,
        path: path.to_owned(),
        request_id: request_id(r.metadata()),
    }
}

fn codec() -> ProstCodec<Report, ReportRequest> {
    ProstCodec::default()
}

fn request_id(md: &MetadataMap) -> String {
    md.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `billing.v1.Reports`: the unary methods above and `List`; any other
/// method is UNIMPLEMENTED.
async fn handle(req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
    let path = req.uri().path().to_owned();
    let method = path.rsplit('/').next().unwrap_or_default().to_owned();
    let mut grpc = tonic::server::Grpc::new(codec());
    match method.as_str() {
        "Get" | "Slow" | "Deny" => grpc.unary(Unary { method, path }, req).await,
        "List" => grpc.server_streaming(List { path }, req).await,
        _ => Status::unimplemented(format!("no method {method}")).into_http(),
    }
}

/// A tonic backend on HTTP/2 only: cleartext (prior knowledge) or TLS.
async fn tonic_backend(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req| async move { Ok::<_, Infallible>(handle(req).await) });
                let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = h2.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                    None => {
                        let _ = h2.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    addr
}

/// A tonic client connected to the gateway's plaintext listener (h2c).
async fn client(gw: &TestGateway) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .expect("tonic connects to Portico");
    tonic::client::Grpc::new(channel)
}

async fn unary(
    c: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    req: tonic::Request<ReportRequest>,
) -> Result<tonic::Response<Report>, Status> {
    c.ready().await.unwrap();
    c.unary(req, PathAndQuery::from_static(path), codec_client())
        .await
}

fn codec_client() -> ProstCodec<ReportRequest, Report> {
    ProstCodec::default()
}

fn month(m: &str, parts: u32) -> tonic::Request<ReportRequest> {
    tonic::Request::new(ReportRequest {
        month: m.to_owned(),
        parts,
        padding: Vec::new(),
    })
}

/// Unary, server streaming and a backend's error status with trailing
/// metadata, on the route `prefix`; `backend_path` is where the backend
/// sees the call.
async fn calls_pass(c: &mut tonic::client::Grpc<Channel>, prefix: &str, backend_prefix: &str) {
    let path = |m: &str| -> &'static str { format!("{prefix}/billing.v1.Reports/{m}").leak() };
    let seen = |m: &str| format!("{backend_prefix}/billing.v1.Reports/{m}");

    let resp = unary(c, path("Get"), month("2026-11", 0)).await.unwrap();
    let report = resp.get_ref();
    assert_eq!(report.month, "2026-11");
    assert_eq!(report.path, seen("Get"));
    assert_eq!(
        report.request_id,
        request_id(resp.metadata()),
        "the backend saw the request id the client got back"
    );
    assert!(!report.request_id.is_empty());

    c.ready().await.unwrap();
    let resp = c
        .server_streaming(
            month("2026-10", 25),
            PathAndQuery::from_static(path("List")),
            codec_client(),
        )
        .await
        .unwrap();
    let mut stream = resp.into_inner();
    let mut parts = Vec::new();
    while let Some(item) = stream.next().await {
        let r = item.expect("each streamed message arrives");
        assert_eq!(r.month, "2026-10");
        assert_eq!(r.path, seen("List"));
        parts.push(r.part);
    }
    assert_eq!(parts, (1..=25).collect::<Vec<_>>(), "all, in order");
    let trailers = stream
        .trailers()
        .await
        .expect("the stream ends with grpc-status 0");
    assert!(
        trailers.is_some(),
        "the backend's trailers reach the client"
    );

    let status = unary(c, path("Deny"), month("2026-11", 0))
        .await
        .expect_err("the backend refuses");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "billing quota spent");
    assert_eq!(
        status
            .metadata()
            .get("x-quota-left")
            .map(|v| v.to_str().unwrap()),
        Some("0"),
        "trailing metadata passes"
    );
}

#[tokio::test]
async fn tonic_calls_pass_through_h2c_and_h2_over_tls_backends() {
    let plain = tonic_backend(None).await;
    let ca = TestCa::new("backend CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path());
    let secure = tonic_backend(Some(ca.leaf(&["127.0.0.1"], Key::EcdsaP256).h2_acceptor())).await;
    // A service prefix, and a functional prefix with strip_prefix.
    let gw = TestGateway::start(&format!(
        "routes:\n  - prefix: /billing.v1.Reports\n    backend: h2c://{plain}\n  - prefix: /secure\n    strip_prefix: true\n    backend: https://{secure}\n    http2: true\n    ca_file: \"{}\"\n",
        ca_file.display()
    ))
    .await;
    let mut c = client(&gw).await;
    calls_pass(&mut c, "", "").await;
    calls_pass(&mut c, "/secure", "").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn portico_failures_reach_tonic_as_the_right_codes() {
    let backend = tonic_backend(None).await;
    let dead = crate::support::refused_addr();
    let gw = TestGateway::start_with(
        &format!(
            "routes:\n  - prefix: /billing.v1.Reports\n    backend: h2c://{backend}\n    timeout: 10s\n  - exact: /billing.v1.Reports/Slow\n    backend: h2c://{backend}\n    timeout: 300ms\n  - prefix: /down.v1.Svc\n    backend: h2c://{dead}\n"
        ),
        "limits:\n  max_body_size: 1KiB\n",
    )
    .await;
    let mut c = client(&gw).await;

    let cases: Vec<(&'static str, tonic::Request<ReportRequest>, Code)> = vec![
        // No route: 404 → UNIMPLEMENTED.
        ("/orders.v1.Orders/Get", month("x", 0), Code::Unimplemented),
        // Nothing listens behind the route: 502 → UNAVAILABLE.
        ("/down.v1.Svc/Get", month("x", 0), Code::Unavailable),
        // The route's timeout is shorter than the backend: 504 →
        // DEADLINE_EXCEEDED. (A client deadline, grpc-timeout, is raced by
        // tonic's own timer, so the route's is used here; grpc.rs checks
        // that Portico honours grpc-timeout.)
        (
            "/billing.v1.Reports/Slow",
            month("x", 0),
            Code::DeadlineExceeded,
        ),
        // A message over limits.max_body_size: 413 → RESOURCE_EXHAUSTED.
        (
            "/billing.v1.Reports/Get",
            tonic::Request::new(ReportRequest {
                month: "x".into(),
                parts: 0,
                padding: vec![7; 4096],
            }),
            Code::ResourceExhausted,
        ),
    ];
    for (path, req, want) in cases {
        let status = unary(&mut c, path, req).await.expect_err(path);
        assert_eq!(status.code(), want, "{path}: {status:?}");
        assert!(
            !request_id(status.metadata()).is_empty(),
            "{path}: Portico's answer carries the request id"
        );
    }
    // The channel is still good for a normal call.
    let ok = unary(&mut c, "/billing.v1.Reports/Get", month("2026-12", 0))
        .await
        .unwrap();
    assert_eq!(ok.get_ref().month, "2026-12");
    gw.shutdown().await;
}
