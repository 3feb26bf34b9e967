//! Idle HTTP/1.1 keep-alive connections give up their buffers ("parked",
//! `portico_connections_parked`) after a second of quiet and carry on when
//! the client speaks again: over plain TCP and TLS, after pipelined
//! requests, never in the middle of a response, and closed like any idle
//! connection at the idle timeout and on drain.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::backend::Backend;
use crate::support::certs::{self, Key, Sender, TestCa};
use crate::support::client::{h2c, read_until_closed, send};
use crate::support::gateway::{TestGateway, routes_yaml};

fn parked(gw: &TestGateway, listener: &str) -> i64 {
    gw.metrics
        .connections_parked
        .with_label_values(&[listener])
        .get()
}

fn open(gw: &TestGateway, listener: &str) -> i64 {
    gw.metrics
        .connections_open
        .with_label_values(&[listener])
        .get()
}

/// Waits until `listener` has `want` parked connections.
async fn wait_parked(gw: &TestGateway, listener: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while parked(gw, listener) != want {
        assert!(
            Instant::now() < deadline,
            "{listener}: {} parked connections, want {want}",
            parked(gw, listener)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gateway(extra: &str) -> (Backend, TestGateway) {
    let backend = Backend::start("api").await;
    let gw = TestGateway::start_with(&routes_yaml(&[("/api", &backend)]), extra).await;
    (backend, gw)
}

/// An HTTP/1.1 client connection (hyper's) to `addr`.
async fn http1_conn(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

async fn get(
    tx: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> hyper::Response<hyper::body::Incoming> {
    tx.ready().await.expect("connection still usable");
    let req = Request::get(path)
        .header("host", "test")
        .body(Empty::new())
        .unwrap();
    tx.send_request(req).await.expect("request answered")
}

/// Reads one response with a `Content-Length` body from a raw socket.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

async fn raw_exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    read_response(s).await
}

#[tokio::test]
async fn an_idle_keepalive_connection_is_parked_and_serves_its_next_request() {
    let (backend, gw) = gateway("").await;
    let mut tx = http1_conn(gw.addr).await;
    for round in 0..3 {
        let path = format!("/api/round/{round}");
        let resp = get(&mut tx, &path).await;
        assert_eq!(resp.status(), 200, "round {round}");
        resp.into_body().collect().await.unwrap();
        assert_eq!(backend.last().target, path);
        // Just answered: the connection is awake, not parked.
        assert_eq!(parked(&gw, "http"), 0, "round {round}");
        wait_parked(&gw, "http", 1).await;
        // Still one open connection: parking is invisible to the client.
        assert_eq!(open(&gw, "http"), 1, "round {round}");
    }
    drop(tx);
    wait_parked(&gw, "http", 0).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_before_and_after_a_park() {
    let (backend, gw) = gateway("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"GET /api/one HTTP/1.1\r\nHost: test\r\n\r\nGET /api/two HTTP/1.1\r\nHost: test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    assert_eq!(read_response(&mut s).await.0, 200);
    wait_parked(&gw, "http", 1).await;
    // Two pipelined again, on the parked connection.
    s.write_all(
        b"GET /api/three HTTP/1.1\r\nHost: test\r\n\r\nGET /api/four HTTP/1.1\r\nHost: test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    assert_eq!(read_response(&mut s).await.0, 200);
    let targets: Vec<String> = backend.seen().into_iter().map(|x| x.target).collect();
    assert_eq!(targets, ["/api/one", "/api/two", "/api/three", "/api/four"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_response_the_client_is_slow_to_read_is_never_cut_by_parking() {
    let (_backend, gw) = gateway("").await;
    let mut tx = http1_conn(gw.addr).await;
    let size = 8 * 1024 * 1024;
    let resp = get(&mut tx, &format!("/api/big?download_bytes={size}")).await;
    assert_eq!(resp.status(), 200);
    // The client reads nothing for well over the park delay: the socket
    // buffers fill and the gateway's writes wait.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        parked(&gw, "http"),
        0,
        "parked while a response was going out"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), size, "the whole body arrived");
    // And the connection carries on afterwards, parked or not.
    wait_parked(&gw, "http", 1).await;
    let resp = get(&mut tx, "/api/after").await;
    assert_eq!(resp.status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_parked_connection_is_closed_at_the_idle_timeout_with_nothing_written() {
    let (_backend, gw) = gateway("limits:\n  idle_timeout: 2500ms\n").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(raw_exchange(&mut s, "/api/x").await.0, 200);
    wait_parked(&gw, "http", 1).await;
    let started = Instant::now();
    let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
    assert!(closed, "closed by the idle timeout");
    assert_eq!(rest, "", "nothing written on an idle close");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed at the idle timeout, not later"
    );
    wait_parked(&gw, "http", 0).await;
    // The task ends (and counts the close) just after the client sees it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open(&gw, "http") != 0 {
        assert!(Instant::now() < deadline, "still counted open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn drain_closes_a_parked_connection_with_nothing_written() {
    let (_backend, mut gw) = gateway("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(raw_exchange(&mut s, "/api/x").await.0, 200);
    wait_parked(&gw, "http", 1).await;
    gw.begin_shutdown();
    let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "closed on drain");
    assert_eq!(rest, "");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_parked_connection_keeps_the_head_timeout() {
    let (_backend, gw) = gateway("limits:\n  header_read_timeout: 1500ms\n").await;
    // A head split over two writes after a park is served.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(raw_exchange(&mut s, "/api/x").await.0, 200);
    wait_parked(&gw, "http", 1).await;
    s.write_all(b"GET /api/split HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"Host: test\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    // A head never finished after a park is dropped (slowloris).
    wait_parked(&gw, "http", 1).await;
    s.write_all(b"GET /api/never HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
    assert!(closed, "an unfinished head is dropped");
    assert_eq!(rest, "", "dropped without an answer");
    gw.shutdown().await;
}

#[tokio::test]
async fn https_connections_park_and_resume() {
    let backend = Backend::start("api").await;
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .leaf(&["localhost"], Key::EcdsaP256)
        .write(dir.path(), "tls");
    let yaml = format!(
        "listen:\n  https: 127.0.0.1:0\n  http: 127.0.0.1:0\noperator:\n  listen: 127.0.0.1:0\nshutdown:\n  drain_delay: 0s\ntls:\n  certificates:\n    - cert: \"{}\"\n      key: \"{}\"\n",
        cert.display(),
        key.display()
    );
    let gw = TestGateway::start_yaml(&routes_yaml(&[("/api", &backend)]), &yaml).await;
    let https = gw.https_addr.unwrap();
    let stream = certs::connect(https, "localhost", ca.client(&["http/1.1"]))
        .await
        .unwrap();
    let mut tx = Sender::over(stream).await;
    for round in 0..2 {
        let reply = tx.get("localhost", &format!("/api/tls/{round}")).await;
        assert_eq!(reply.status, 200, "round {round}");
        wait_parked(&gw, "https", 1).await;
    }
    assert_eq!(open(&gw, "https"), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_connections_are_not_parked() {
    let (_backend, gw) = gateway("").await;
    let client = h2c();
    let url = format!("http://{}/api/h2", gw.addr);
    for _ in 0..2 {
        let req = Request::get(&url).body(Default::default()).unwrap();
        assert_eq!(send(&client, req).await.status, 200);
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(parked(&gw, "http"), 0);
    }
    assert_eq!(open(&gw, "http"), 1, "one HTTP/2 connection throughout");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_connection_parks_after_a_request_with_a_body() {
    let (backend, gw) = gateway("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"hello").await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    assert_eq!(backend.last().body_bytes, 5);
    wait_parked(&gw, "http", 1).await;
    assert_eq!(raw_exchange(&mut s, "/api/next").await.0, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pipelined_head_left_unfinished_over_the_park_delay_is_still_answered() {
    let (backend, gw) = gateway("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    // One write: a whole request and the start of the next one's head.
    s.write_all(b"GET /api/a HTTP/1.1\r\nHost: test\r\n\r\nGET /api/b HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    // Longer than the park delay, shorter than the head timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.write_all(b"st: test\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend.last().target, "/api/b");
    gw.shutdown().await;
}
