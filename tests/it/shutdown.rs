//! Signals sent to the real binary: SIGTERM drains without dropping an
//! accepted request, a second SIGTERM exits at once, SIGHUP reloads.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::backend::Backend;
use crate::support::binary::Serve;
use crate::support::client::{get, get_with, read_until_closed};
use crate::support::gateway::routes_yaml;

/// portico.yaml and routes in `dir`; `shutdown` holds the lines of the
/// `shutdown:` block.
fn write_config(dir: &Path, routes: &str, shutdown: &str) -> PathBuf {
    crate::support::binary::write_config(dir, routes, &format!("shutdown:\n{shutdown}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_twenty_in_flight_requests_and_exits_0() {
    let b = Backend::start("slow").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &routes_yaml(&[("/slow", &b)]),
        "  drain_delay: 1s\n  timeout: 5s\n",
    );
    let mut gw = Serve::start(&cfg);
    let addr = gw.listening("http");
    let operator = gw.listening("operator");
    assert_eq!(get(operator, "/readyz").await.status, 200);

    let requests: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let id = format!("drain-{i}");
                get_with(addr, "/slow/x?sleep_ms=2000", &[("x-request-id", &id)]).await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.seen().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "20 requests did not reach the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = get(operator, "/readyz").await;
    assert_eq!(
        ready.status,
        503,
        "/readyz turns 503 at once: {}",
        ready.text()
    );
    // Still accepting during the drain delay: Kubernetes endpoints lag.
    assert_eq!(get(addr, "/slow/late").await.status, 200);

    for r in requests {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let code = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit(Duration::from_secs(10));
        (code, gw.drain_lines())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(1 + 5 + 1),
        "exited within drain delay + timeout"
    );
    let logs = code.1.join("\n");
    assert!(!logs.contains("unfinished at shutdown deadline"), "{logs}");
    // Every drained request has its access-log line.
    for i in 0..20 {
        assert!(
            logs.contains(&format!("\"request_id\":\"drain-{i}\"")),
            "drain-{i} not logged"
        );
    }
    // The listener is closed now.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_unfinished_at_the_deadline_are_logged_by_id() {
    let b = Backend::start("stuck").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &routes_yaml(&[("/stuck", &b)]),
        "  drain_delay: 0s\n  timeout: 1s\n",
    );
    let mut gw = Serve::start(&cfg);
    let addr = gw.listening("http");
    let _stuck: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(async move {
                let id = format!("stuck-{i}");
                let req = http::Request::get(format!("http://{addr}/stuck?sleep_ms=30000"))
                    .header("x-request-id", id)
                    .body(http_body_util::Full::<bytes::Bytes>::default())
                    .unwrap();
                crate::support::client::http1().request(req).await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.seen().len() < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.signal("TERM");
    let (code, lines) = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit(Duration::from_secs(5));
        (code, gw.drain_lines())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    for i in 0..3 {
        let line = lines
            .iter()
            .find(|l| {
                l.contains("unfinished at shutdown deadline")
                    && l.contains(&format!("\"stuck-{i}\""))
            })
            .unwrap_or_else(|| panic!("stuck-{i} not logged:\n{}", lines.join("\n")));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/stuck");
        assert!(v["age_ms"].as_u64().unwrap() >= 1000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &routes_yaml(&[("/b", &b)]),
        "  drain_delay: 30s\n  timeout: 30s\n",
    );
    let mut gw = Serve::start(&cfg);
    let _ = gw.listening("http");
    gw.signal("TERM");
    gw.wait_line("draining", |v| {
        v["msg"].as_str().is_some_and(|m| m.starts_with("draining"))
    });
    let started = Instant::now();
    gw.signal("TERM");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_does_not_kill() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &routes_yaml(&[("/svc", &a)]),
        "  drain_delay: 0s\n",
    );
    let mut gw = Serve::start(&cfg);
    let addr = gw.listening("http");
    gw.signal("HUP");
    gw.wait_line("SIGHUP handled", |v| v["signal"] == "SIGHUP");
    std::fs::write(dir.path().join("routes.yaml"), routes_yaml(&[("/svc", &b)])).unwrap();
    gw.signal("HUP");
    let loaded = gw.wait_line("reload", |v| v["generation"] == 2);
    assert_eq!(
        loaded["changed"], "/svc",
        "the reload logs a diff: {loaded}"
    );
    assert_eq!(get(addr, "/svc").await.json()["backend"], "b");
    assert!(gw.child.try_wait().unwrap().is_none(), "still running");
    gw.signal("TERM");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

/// When the drain delay ends, every kind of open connection is closed
/// politely: an idle HTTP/1.1 keep-alive connection is closed, a busy one
/// gets `Connection: close` on its last response, and an HTTP/2 connection
/// gets GOAWAY, so its stream in flight finishes but no new one is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_idle_busy_and_http2_connections_politely() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let b = Backend::start("slow").await;
    let mut gw = crate::support::gateway::TestGateway::start_with(
        &routes_yaml(&[("/slow", &b)]),
        "shutdown:\n  drain_delay: 300ms\n  timeout: 5s\n",
    )
    .await;

    // Idle: one request answered, then nothing.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /slow/a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut idle, &mut first)
        .await
        .unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    // Busy: a keep-alive request still running when the listeners close.
    let mut busy = TcpStream::connect(gw.addr).await.unwrap();
    busy.write_all(b"GET /slow/b?sleep_ms=1200 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // HTTP/2 (h2c) with a stream in flight.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, h2_conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let h2_conn = tokio::spawn(h2_conn);
    let h2_req = |path: &str| {
        http::Request::get(format!("http://x{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let in_flight = h2.send_request(h2_req("/slow/c?sleep_ms=1200"));
    let in_flight = tokio::spawn(async move {
        let r = in_flight.await.expect("the h2 stream in flight completes");
        let status = r.status();
        r.into_body().collect().await.expect("its body completes");
        status
    });

    let deadline = Instant::now() + Duration::from_secs(5);
    while b.seen().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "requests did not reach the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    gw.begin_shutdown();

    // The idle connection is closed once the drain delay is over, with
    // nothing written to it.
    let (extra, closed) = read_until_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(closed, "idle keep-alive connection was not closed");
    assert_eq!(extra, "", "nothing is sent on an idle connection");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the drain delay: {:?}",
        started.elapsed()
    );

    // HTTP/2: after GOAWAY the connection takes no new stream...
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = tokio::time::timeout(Duration::from_secs(3), async {
        match h2.ready().await {
            Ok(()) => h2
                .send_request(h2_req("/slow/late"))
                .await
                .map(|r| r.status()),
            Err(e) => Err(e),
        }
    })
    .await
    .expect("a new h2 stream is answered or refused at once");
    assert!(
        refused.is_err(),
        "a new HTTP/2 stream was served after GOAWAY: {refused:?}"
    );
    // ...while the one in flight finishes, and the connection ends cleanly.
    assert_eq!(in_flight.await.unwrap(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(3), h2_conn)
        .await
        .expect("h2 connection ends after its last stream")
        .unwrap();
    assert!(
        ended.is_ok(),
        "h2 connection ended with an error: {ended:?}"
    );

    // HTTP/1.1 busy: its response arrives whole, says Connection: close,
    // and the connection is closed after it.
    let (text, closed) = read_until_closed(&mut busy, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "last response lacks Connection: close:\n{text}"
    );
    assert!(
        closed,
        "busy connection was not closed after its last response"
    );

    gw.shutdown().await;
}
