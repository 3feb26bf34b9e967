//! HTTP/2 to backends (`h2c://`) and gRPC at the edge: trailers pass end
//! to end, requests share one multiplexed connection, `te: trailers`
//! reaches the backend, `grpc-timeout` is the deadline, and Portico's own
//! failures of a gRPC call are gRPC statuses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::certs::{Key, Leaf, TestCa};
use crate::support::client::h2c;
use crate::support::gateway::TestGateway;
use crate::support::route_file_error;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An HTTP/2-only backend (prior knowledge) answering like a gRPC server:
/// `grpc-status: 0` in trailers, the request's `te` echoed in a header, a
/// delay from the path (`/slow`). Counts connections.
async fn h2_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    h2_backend_with(None).await
}

/// The same over TLS, offering only ALPN `h2`.
async fn h2_tls_backend(leaf: &Leaf) -> (SocketAddr, Arc<AtomicUsize>) {
    h2_backend_with(Some(leaf.h2_acceptor())).await
}

async fn h2_backend_with(tls: Option<tokio_rustls::TlsAcceptor>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let te = req.headers().get("te").cloned();
                    let authority = req.uri().authority().map(|a| a.to_string());
                    let host = req.headers().get("host").cloned();
                    let slow = req.uri().path().ends_with("/slow");
                    let version = req.version();
                    let _ = req.into_body().collect().await;
                    if slow {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("grpc-message", "fine".parse().unwrap());
                    let frames = vec![
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x05hello"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body: Body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
                    let mut resp = Response::new(body);
                    resp.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    resp.headers_mut()
                        .insert("x-seen-te", te.unwrap_or_else(|| "none".parse().unwrap()));
                    resp.headers_mut().insert(
                        "x-seen-authority",
                        authority.unwrap_or_default().parse().unwrap(),
                    );
                    resp.headers_mut().insert(
                        "x-seen-host",
                        host.unwrap_or_else(|| "none".parse().unwrap()),
                    );
                    resp.headers_mut()
                        .insert("x-seen-version", format!("{version:?}").parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = h2.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = h2.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    (addr, connections)
}

fn grpc_request(url: &str, timeout: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        b = b.header("grpc-timeout", t);
    }
    b.body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap()
}

#[tokio::test]
async fn trailers_pass_end_to_end_over_one_multiplexed_h2c_connection() {
    let (backend, connections) = h2_backend().await;
    let gw = TestGateway::start_with(
        &format!("routes:\n  - prefix: /billing.v1.Reports\n    backend: h2c://{backend}\n"),
        "workers: 1\n",
    )
    .await;
    let client = h2c();
    let url = format!("http://{}/billing.v1.Reports/Get", gw.addr);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move { client.request(grpc_request(&url, None)).await.unwrap() })
        })
        .collect();
    for call in calls {
        let resp = call.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-seen-te"],
            "trailers",
            "te: trailers reaches the backend"
        );
        assert_eq!(resp.headers()["x-seen-version"], "HTTP/2.0");
        // The client's host is the backend's :authority, with no Host
        // beside it (which strict servers refuse as a duplicate).
        assert_eq!(resp.headers()["x-seen-authority"], gw.addr.to_string());
        assert_eq!(resp.headers()["x-seen-host"], "none");
        let body = resp.into_body().collect().await.unwrap();
        let trailers = body.trailers().cloned().expect("trailers came through");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "fine");
        assert_eq!(&body.to_bytes()[..], b"\0\0\0\0\x05hello");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "20 calls on one connection"
    );
    // An HTTP/1.1 client's Host becomes :authority too.
    let resp = crate::support::client::send(
        &crate::support::client::http1(),
        Request::get(&url)
            .header("host", "api.example.com")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-seen-authority"), Some("api.example.com"));
    assert_eq!(resp.header("x-seen-host"), Some("none"));
    gw.shutdown().await;
}

#[tokio::test]
async fn an_https_backend_with_http2_true_gets_h2_by_alpn_and_trailers_pass() {
    let ca = TestCa::new("backend CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path());
    let (backend, connections) = h2_tls_backend(&ca.leaf(&["127.0.0.1"], Key::EcdsaP256)).await;
    let gw = TestGateway::start_with(
        &format!(
            "routes:\n  - prefix: /svc.v1.S\n    backend: https://{backend}\n    http2: true\n    ca_file: \"{}\"\n",
            ca_file.display()
        ),
        "workers: 1\n",
    )
    .await;
    let client = h2c();
    for _ in 0..5 {
        let resp = client
            .request(grpc_request(
                &format!("http://{}/svc.v1.S/M", gw.addr),
                None,
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-seen-version"], "HTTP/2.0");
        let body = resp.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().expect("trailers")["grpc-status"], "0");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // http2: true needs https backends.
    let err = route_file_error(
        "routes:\n  - prefix: /g\n    backend: http://a:80\n    http2: true\n",
        "http2 on http",
    );
    assert!(err.contains("http2: applies to https:// backends"), "{err}");
    gw.shutdown().await;
}

#[tokio::test]
async fn portico_failures_of_grpc_calls_are_grpc_statuses() {
    let (slow, _) = h2_backend().await;
    let down = crate::support::refused_addr();
    let gw = TestGateway::start(&format!(
        "routes:\n  - prefix: /down.v1.S\n    backend: h2c://{down}\n  - prefix: /slow.v1.S\n    backend: h2c://{slow}\n"
    ))
    .await;
    let client = h2c();
    let call = |path: &str, timeout: Option<&str>| {
        let req = grpc_request(&format!("http://{}{path}", gw.addr), timeout);
        let client = client.clone();
        async move { client.request(req).await.unwrap() }
    };
    // Nothing listens: UNAVAILABLE, trailers-only (no body), with the id.
    let resp = call("/down.v1.S/M", None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert!(resp.headers().contains_key("grpc-message"));
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    // No route: UNIMPLEMENTED.
    assert_eq!(
        call("/nothing.v1.S/M", None).await.headers()["grpc-status"],
        "12"
    );
    // grpc-timeout shorter than the backend: DEADLINE_EXCEEDED, at the deadline.
    let started = Instant::now();
    let resp = call("/slow.v1.S/slow", Some("300m")).await;
    assert_eq!(resp.headers()["grpc-status"], "4");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the client's deadline, not the backend's 2 s"
    );
    // Logs and metrics keep the HTTP status the failure stands for.
    let errors = gw
        .metrics
        .requests
        .with_label_values(&["*", "/down.v1.S", "false", "POST", "502"])
        .get();
    assert_eq!(errors, 1);
    // A plain (non-gRPC) request still gets the JSON error.
    let plain = client
        .request(
            Request::get(format!("http://{}/down.v1.S/M", gw.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(plain.status(), 502);
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_backend_urls_are_checked() {
    let ok = portico::config::parse_route_file(
        std::path::Path::new("r.yaml"),
        "routes:\n  - prefix: /g\n    backend: h2c://grpc.svc:50051\n",
    )
    .unwrap();
    let b = &ok.routes[0].backends[0];
    assert!(b.h2 && !b.tls);
    assert_eq!(b.to_string(), "h2c://grpc.svc:50051");
    let dflt = portico::config::parse_route_file(
        std::path::Path::new("r.yaml"),
        "routes:\n  - prefix: /g\n    backend: h2c://grpc.svc\n",
    )
    .unwrap();
    assert_eq!(dflt.routes[0].backends[0].port, 80);
}
