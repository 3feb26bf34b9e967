//! Limits against hostile clients: each one answers clearly, and the
//! gateway keeps serving everyone else.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::Backend;
use crate::support::client::{get, get_with, raw, read_until_closed};
use crate::support::gateway::{TestGateway, routes_yaml};

/// True when the server closed the connection within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    read_until_closed(s, limit).await.1
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_at_the_header_read_timeout() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &b)]),
        "limits:\n  header_read_timeout: 500ms\n",
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Drip one header byte every 100 ms: never completing the head.
    let drip = async {
        for _ in 0..50 {
            if s.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), drip).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(1)).await,
        "the connection is closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed near 500ms, not after the drip"
    );
    assert!(b.seen().is_empty());
    assert_eq!(get(gw.addr, "/b").await.status, 200, "others are served");
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_request_head_is_431_json() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &b)]),
        "limits:\n  max_header_size: 8KiB\n",
    )
    .await;
    let big = "v".repeat(10 * 1024);
    let r = get_with(gw.addr, "/b", &[("x-big", &big), ("x-request-id", "big-1")]).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "headers_too_large");
    assert_eq!(r.json()["request_id"], "big-1");

    // Many small headers add up the same way.
    let many: Vec<(String, String)> = (0..90)
        .map(|i| (format!("x-h{i}"), "v".repeat(100)))
        .collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(get_with(gw.addr, "/b", &refs).await.status, 431);

    // Far beyond hyper's buffer: the connection is refused with a bare 431,
    // and nothing else is affected.
    let huge = format!(
        "GET /b HTTP/1.1\r\nHost: x\r\nx-huge: {}\r\n\r\n",
        "h".repeat(200 * 1024)
    );
    let answer = raw(gw.addr, huge.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(100)]
    );
    assert!(b.seen().is_empty());
    assert_eq!(get(gw.addr, "/b").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_request_lines_get_400_and_the_gateway_keeps_serving() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/b", &b)])).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /b HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
        b"GET http://[::1 HTTP/1.1\r\n\r\n",
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ] {
        let answer = raw(gw.addr, garbage).await;
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 400")
                || answer.starts_with("HTTP/1.1 505"),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    assert!(b.seen().is_empty(), "no garbage reached the backend");
    assert_eq!(get(gw.addr, "/b").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn inflight_limits_shed_at_once_with_retry_after() {
    let slow = Backend::start("slow").await;
    let fast = Backend::start("fast").await;
    let routes = format!(
        "routes:\n  - prefix: /slow\n    backend: {}\n    max_inflight: 1\n  - prefix: /fast\n    backend: {}\n",
        slow.url(),
        fast.url()
    );
    let gw = TestGateway::start_with(&routes, "limits:\n  max_inflight: 3\n").await;
    let addr = gw.addr;

    // Per route: one slow request holds /slow's only slot.
    let first = tokio::spawn(async move { get(addr, "/slow?sleep_ms=1500").await });
    wait_for(|| slow.seen().len() == 1).await;
    let started = std::time::Instant::now();
    let shed = get(addr, "/slow").await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.json()["error"], "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once, not queued"
    );
    assert_eq!(
        get(addr, "/fast").await.status,
        200,
        "other routes are unaffected"
    );

    // Gateway-wide: two more slow requests on /fast fill the 3 slots.
    let a = tokio::spawn(async move { get(addr, "/fast?sleep_ms=1500").await });
    let b = tokio::spawn(async move { get(addr, "/fast?sleep_ms=1500").await });
    wait_for(|| fast.seen().len() == 3).await;
    let shed = get(addr, "/fast").await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.json()["error"], "overloaded");

    for h in [first, a, b] {
        assert_eq!(h.await.unwrap().status, 200, "admitted requests complete");
    }
    assert_eq!(get(addr, "/slow").await.status, 200, "slots are released");
    assert_eq!(gw.metrics.inflight.get(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_in_the_backlog() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &b)]),
        // Two workers share the limit (one worker parked in accept with a
        // permit once starved the other).
        "workers: 2\nlimits:\n  max_connections: 2\n",
    )
    .await;
    let req = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // The third connects (kernel backlog) but is not served yet.
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third.write_all(req).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served while two connections are open");
    // Free a slot: the waiting connection is served.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &b)]),
        "limits:\n  idle_timeout: 400ms\n  header_read_timeout: 5s\n",
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "idle connection closed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "not before the idle timeout: {took:?}"
    );
    gw.shutdown().await;
}

async fn wait_for(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 5s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The header read timeout is about request heads, not about keep-alive
/// connections waiting for their next request: those live until the idle
/// timeout (for HTTP/1.1 and HTTP/2 alike).
#[tokio::test]
async fn keep_alive_connections_idle_past_the_header_timeout_until_the_idle_timeout() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &b)]),
        "limits:\n  header_read_timeout: 300ms\n  idle_timeout: 1500ms\n",
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Idle for three header timeouts: still open, and still served.
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Then the idle timeout closes it.
    let started = std::time::Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(4)).await);
    assert!(started.elapsed() >= Duration::from_millis(1400));

    // HTTP/2 (prior knowledge): an idle connection is not a slow head either.
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(TcpStream::connect(gw.addr).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::get(format!("http://{}/b", gw.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(h2.send_request(get()).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        h2.send_request(get()).await.unwrap().status(),
        200,
        "h2 idle past the header timeout"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &b)]),
        "limits:\n  header_read_timeout: 300ms\n  idle_timeout: 60s\n",
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let started = std::time::Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slow_body_is_not_a_slow_head() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/b", &b)]),
        "limits:\n  header_read_timeout: 300ms\n",
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    // Ten bytes over a second: three header timeouts.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"x").await.unwrap();
    }
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(b.last().body_bytes, 10);
    gw.shutdown().await;
}

/// Heads that a backend (or a cache in front of it) could read differently
/// from Portico: request smuggling and host confusion start there. Each is
/// a JSON 400 with the request id, and none reaches a backend.
#[tokio::test]
async fn ambiguous_request_heads_are_400_and_never_forwarded() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/b", &b)])).await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "more than one Host",
            b"GET /b HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "HTTP/1.1 without Host",
            b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute-form target disagreeing with Host",
            b"GET http://a.example/b HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        ),
    ];
    for (what, head) in cases {
        let answer = raw(gw.addr, head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
        assert_eq!(v["error"], "bad_request", "{what}");
        assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }

    // Transfer-Encoding with Content-Length: framed by chunked, the length
    // dropped, and the connection closed after the answer, so a request
    // smuggled behind the body is never read.
    let smuggle = raw(
        gw.addr,
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(smuggle.matches("HTTP/1.1 ").count(), 1, "{smuggle}");
    let seen = b.seen();
    assert_eq!(
        seen.len(),
        1,
        "{:?}",
        seen.iter().map(|s| &s.target).collect::<Vec<_>>()
    );
    assert_eq!(seen[0].body_bytes, 5, "the chunked framing won");
    assert!(seen[0].headers.get("content-length").is_none());
    let before_h2 = seen.len();

    // HTTP/2: a Host header that names another site than :authority.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = |host: &str| {
        http::Request::get("http://a.example/b")
            .header("host", host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let mismatch = h2.send_request(req("b.example")).await.unwrap();
    assert_eq!(mismatch.status(), 400);
    assert_eq!(
        b.seen().len(),
        before_h2,
        "an ambiguous request reached the backend"
    );

    // The unambiguous spellings still pass: HTTP/2 with a matching Host
    // (any case), HTTP/1.0 without Host, absolute form with the same host.
    assert_eq!(
        h2.send_request(req("A.example")).await.unwrap().status(),
        200
    );
    let http10 = raw(gw.addr, b"GET /b HTTP/1.0\r\n\r\n").await;
    assert!(http10.starts_with("HTTP/1.0 200"), "{http10}");
    let absolute = raw(
        gw.addr,
        b"GET http://a.example/b HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 200"), "{absolute}");
    assert_eq!(b.seen().len(), before_h2 + 3);
    gw.shutdown().await;
}
