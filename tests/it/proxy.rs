//! The public request path over real sockets: routing, normalization,
//! reserved paths, request ids, header rewriting, error bodies, streaming.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::backend::Backend;
use crate::support::client::{self, get, get_with, raw_get};
use crate::support::gateway::{TestGateway, routes_yaml};

/// Rows of the Kubernetes Ingress documentation's Prefix examples
/// (shared/testdata/ingress-prefix-examples.md), run over real sockets.
#[tokio::test]
async fn kubernetes_ingress_prefix_examples() {
    let rows: &[(&[&str], &str, Option<&str>)] = &[
        (&["/"], "/anything/at/all", Some("/")),
        (&["/foo"], "/foo", Some("/foo")),
        (&["/foo"], "/foo/", Some("/foo")),
        (&["/aaa/bb"], "/aaa/bbb", None),
        (&["/aaa/bbb"], "/aaa/bbb", Some("/aaa/bbb")),
        (&["/aaa/bbb"], "/aaa/bbb/", Some("/aaa/bbb")),
        (&["/aaa/bbb"], "/aaa/bbb/ccc", Some("/aaa/bbb")),
        (&["/aaa/bbb"], "/aaa/bbbxyz", None),
        (&["/", "/aaa"], "/aaa/ccc", Some("/aaa")),
        (&["/", "/aaa", "/aaa/bbb"], "/aaa/bbb", Some("/aaa/bbb")),
        (&["/", "/aaa", "/aaa/bbb"], "/ccc", Some("/")),
        (&["/aaa"], "/ccc", None),
    ];
    let backend = Backend::start("b").await;
    for (prefixes, path, want) in rows {
        let pairs: Vec<(&str, &Backend)> = prefixes.iter().map(|p| (*p, &backend)).collect();
        let gw = TestGateway::start(&routes_yaml(&pairs)).await;
        let reply = get(gw.addr, path).await;
        match want {
            Some(route) => {
                assert_eq!(reply.status, 200, "{prefixes:?} {path}");
                // The access-log route label is visible in the metrics.
                let text = gw.metrics.render();
                let needle = format!("route=\"{route}\",status=\"200\"");
                assert!(
                    text.contains(&needle),
                    "{prefixes:?} {path}: expected {needle}"
                );
            }
            None => {
                assert_eq!(reply.status, 404, "{prefixes:?} {path}");
                assert_eq!(reply.json()["error"], "no_route");
            }
        }
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn longest_prefix_wins_segment_wise() {
    let reports = Backend::start("reports").await;
    let billing = Backend::start("billing").await;
    let orders = Backend::start("orders").await;
    let gw = TestGateway::start(&routes_yaml(&[
        ("/billing/reports", &reports),
        ("/billing", &billing),
        ("/orders", &orders),
    ]))
    .await;
    let cases = [
        ("/billing/reports", Some("reports")),
        ("/billing/reports/", Some("reports")),
        ("/billing/reports/2024/q1", Some("reports")),
        ("/billing/reportsX", Some("billing")),
        ("/billing", Some("billing")),
        ("/billing/", Some("billing")),
        ("/billingX", None),
        ("/orders/42?x=1", Some("orders")),
        ("/", None),
        ("/Billing", None),
    ];
    for (path, want) in cases {
        let reply = get(gw.addr, path).await;
        match want {
            Some(name) => {
                assert_eq!(reply.status, 200, "{path}");
                assert_eq!(reply.json()["backend"], name, "{path}");
            }
            None => assert_eq!(reply.status, 404, "{path}"),
        }
    }
    gw.shutdown().await;
}

/// Hostile and odd spellings: routing and the backend agree on the
/// normalized path, and what cannot be normalized safely is a 400.
#[tokio::test]
async fn paths_are_normalized_before_routing_and_forwarding() {
    let api = Backend::start("api").await;
    let admin = Backend::start("admin").await;
    let gw = TestGateway::start(&routes_yaml(&[("/api", &api), ("/admin", &admin)])).await;
    let ok = [
        ("/api/./v1", "api", "/api/v1"),
        ("/api//v1///x", "api", "/api/v1/x"),
        ("/api/v1/../v2", "api", "/api/v2"),
        ("/admin/../api/x", "api", "/api/x"),
        ("/%61pi/x", "api", "/api/x"),
        ("/api/%7Euser", "api", "/api/~user"),
        ("/api/a%3ab", "api", "/api/a%3Ab"),
        ("//api", "api", "/api"),
        (
            "/api/x?q=/../admin&y=%2F",
            "api",
            "/api/x?q=/../admin&y=%2F",
        ),
        ("/x/../admin", "admin", "/admin"),
    ];
    for (raw, backend, target) in ok {
        let (status, body) = raw_get(gw.addr, raw).await;
        assert_eq!(status, 200, "{raw}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["backend"], backend, "{raw}");
        assert_eq!(
            v["target"], target,
            "{raw}: backend must see the normalized path"
        );
    }
    let bad = [
        "/..",
        "/api/../..",
        "/api/%2e%2e/%2e%2e/etc",
        "/api/a%2Fb",
        "/api/a%2fb",
        "/api/a%5Cb",
        "/api/a\\b",
        "/api/a%00b",
        "/api/%zz",
        "/api/%",
    ];
    for raw in bad {
        let (status, body) = raw_get(gw.addr, raw).await;
        assert_eq!(status, 400, "{raw}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "bad_request", "{raw}");
        assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    assert_eq!(
        api.seen().len() + admin.seen().len(),
        ok.len(),
        "no bad path reached a backend"
    );
    gw.shutdown().await;
}

// Regression guard: a catch-all route must not leak a backend's own /metrics.
#[tokio::test]
async fn reserved_operator_paths_are_404_for_every_spelling() {
    let catch_all = Backend::start("catch-all").await;
    let gw = TestGateway::start(&routes_yaml(&[("/", &catch_all)])).await;
    let spellings = [
        "/metrics",
        "/metrics/",
        "/metrics/x",
        "/healthz",
        "/readyz",
        "/livez",
        "/livez/x/y",
        "//metrics",
        "/./metrics",
        "/x/../metrics",
        "/%6Detrics",
        "/%6d%65trics",
        "/metrics/.",
        "/a/b/../../healthz",
        "/%2E/readyz",
    ];
    for s in spellings {
        let (status, body) = raw_get(gw.addr, s).await;
        assert_eq!(status, 404, "{s}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "no_route", "{s}");
    }
    assert!(
        catch_all.seen().is_empty(),
        "the backend saw {:?}",
        catch_all.seen()
    );
    // Look-alikes are ordinary paths.
    assert_eq!(get(gw.addr, "/metricsx").await.status, 200);
    assert_eq!(get(gw.addr, "/x/metrics").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_kept_replaced_or_generated() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/b", &b)])).await;

    let kept = get_with(gw.addr, "/b", &[("x-request-id", "ticket-123")]).await;
    assert_eq!(kept.header("x-request-id"), Some("ticket-123"));
    assert_eq!(b.last().headers["x-request-id"], "ticket-123");

    for bad in ["has space", "quo\"te", "back\\slash", &"x".repeat(129)] {
        let r = get_with(gw.addr, "/b", &[("x-request-id", bad)]).await;
        let id = r.header("x-request-id").unwrap().to_owned();
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{bad:?} replaced by a UUID, got {id}"
        );
        assert_eq!(
            b.last().headers["x-request-id"],
            id.as_str(),
            "upstream got the same id"
        );
    }

    let generated = get(gw.addr, "/b").await;
    let id = generated.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(b.last().headers["x-request-id"], id);

    // Portico's own errors carry the id too, in header and body.
    let e = get_with(gw.addr, "/nowhere", &[("x-request-id", "err-7")]).await;
    assert_eq!(e.status, 404);
    assert_eq!(e.header("x-request-id"), Some("err-7"));
    assert_eq!(e.json()["request_id"], "err-7");
    gw.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarded_headers_set() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/b", &b)])).await;
    let req = Request::get(format!("http://{}/b/x", gw.addr))
        .header("host", "api.example.com")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("upgrade", "h2c")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-kept", "yes")
        .body(Full::<Bytes>::default())
        .unwrap();
    let reply = client::send(&client::http1(), req).await;
    assert_eq!(reply.status, 200);
    // The backend's own Keep-Alive header does not reach the client.
    assert!(reply.headers.get("keep-alive").is_none());

    let seen = b.last().headers;
    for h in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(seen.get(h).is_none(), "{h} reached the backend");
    }
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(seen["host"], "api.example.com", "Host is kept");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(
        seen["x-forwarded-proto"], "http",
        "the client's claim is replaced"
    );
    assert_eq!(seen["x-forwarded-host"], "api.example.com");
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_clients_are_proxied_with_their_authority_as_host() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/b", &b)])).await;
    let req = Request::get(format!("http://{}/b/h2?x=1", gw.addr))
        .body(Full::<Bytes>::default())
        .unwrap();
    let reply = client::send(&client::h2c(), req).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("x-request-id").is_some());
    let seen = b.last();
    assert_eq!(seen.target, "/b/h2?x=1");
    assert_eq!(seen.headers["host"], gw.addr.to_string().as_str());
    gw.shutdown().await;
}

#[tokio::test]
async fn strip_prefix_sends_the_rest_of_the_path_never_empty() {
    let b = Backend::start("b").await;
    let routes = format!(
        "routes:\n  - prefix: /orders\n    backend: {}\n    strip_prefix: true\n",
        b.url()
    );
    let gw = TestGateway::start(&routes).await;
    for (path, target) in [
        ("/orders", "/"),
        ("/orders/", "/"),
        ("/orders/42", "/42"),
        ("/orders/a/./b?q=1", "/a/b?q=1"),
        ("/orders?all=1", "/?all=1"),
    ] {
        let (status, body) = raw_get(gw.addr, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(b.last().target, target, "{path}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn unreachable_backend_is_502_and_slow_backend_is_504() {
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let slow = Backend::start("slow").await;
    let routes = format!(
        "routes:\n  - prefix: /dead\n    backend: http://{dead}\n  - prefix: /slow\n    backend: {}\n    timeout: 200ms\n",
        slow.url()
    );
    let gw = TestGateway::start(&routes).await;

    let r = get_with(gw.addr, "/dead/x", &[("x-request-id", "dead-1")]).await;
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(v["error"], "upstream_unavailable");
    assert_eq!(v["request_id"], "dead-1");

    let started = std::time::Instant::now();
    let r = get(gw.addr, "/slow/x?sleep_ms=3000").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timed out at the route timeout"
    );

    let text = gw.metrics.render();
    assert!(
        text.contains(r#"portico_upstream_errors_total{host="*",kind="connect",route="/dead"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portico_upstream_errors_total{host="*",kind="timeout",route="/slow"} 1"#)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn no_route_table_entries_means_404_everywhere() {
    let gw = TestGateway::start("routes: []\n").await;
    let r = get(gw.addr, "/anything").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no_route");
    gw.shutdown().await;
}

/// A raw backend that answers one request per connection with the given
/// extra header, then closes the connection after `linger`.
async fn closing_backend(
    extra: &'static str,
    linger: Duration,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{extra}\r\nok");
                let _ = s.write_all(resp.as_bytes()).await;
                tokio::time::sleep(linger).await;
            });
        }
    });
    (addr, accepted)
}

// Regression guard for the upstream pool: connections the backend closed
// (idle timeout, `Connection: close`) are never reused for a request.
#[tokio::test]
async fn connections_closed_by_the_backend_are_not_reused() {
    for (extra, linger) in [
        ("x-idle: closes-after-100ms\r\n", Duration::from_millis(100)),
        ("connection: close\r\n", Duration::from_millis(0)),
    ] {
        let (addr, accepted) = closing_backend(extra, linger).await;
        let routes = format!("routes:\n  - prefix: /c\n    backend: http://{addr}\n");
        let gw = TestGateway::start(&routes).await;
        for i in 0..4 {
            let r = get(gw.addr, "/c").await;
            assert_eq!(r.status, 200, "{extra:?} request {i}: {}", r.text());
            assert_eq!(r.text(), "ok");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            4,
            "{extra:?}: one connection per request"
        );
        gw.shutdown().await;
    }
}

/// Pooled upstream connections idle past `limits.upstream_idle_timeout` are
/// closed by Portico itself (before a backend's own keep-alive timeout can
/// close one under a request); the next request opens a fresh one.
#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let a = Backend::start("a").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/a", &a)]),
        // One worker: pools are per worker, and each new client connection
        // may land on either.
        "workers: 1\nlimits:\n  upstream_idle_timeout: 400ms\n",
    )
    .await;
    assert_eq!(get(gw.addr, "/a").await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(gw.addr, "/a").await.status, 200);
    assert_eq!(a.connections(), 1, "reused within the idle timeout");
    assert_eq!(a.open_connections(), 1);

    let idle_since = std::time::Instant::now();
    while a.open_connections() > 0 {
        assert!(
            idle_since.elapsed() < Duration::from_secs(3),
            "the idle upstream connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        idle_since.elapsed() >= Duration::from_millis(300),
        "closed while still within the idle timeout: {:?}",
        idle_since.elapsed()
    );
    assert_eq!(get(gw.addr, "/a").await.status, 200);
    assert_eq!(
        a.connections(),
        2,
        "a fresh connection replaces the closed one"
    );
    gw.shutdown().await;
}

// Regression: the idle clock of a pooled connection started at the response
// head, so a download that outlasted the idle timeout cost the connection as
// soon as it ended. Busy is not idle.
#[tokio::test]
async fn a_download_longer_than_the_idle_timeout_keeps_its_connection() {
    use http_body_util::BodyExt;
    let a = Backend::start("a").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/a", &a)]),
        // One worker: pools are per worker.
        "workers: 1\nlimits:\n  upstream_idle_timeout: 400ms\n",
    )
    .await;
    // 64 MiB does not fit in the socket buffers: while the client waits,
    // the upstream connection is held busy by backpressure.
    let client = client::http1();
    let resp = client
        .request(
            Request::get(format!(
                "http://{}/a/big?download_bytes={}",
                gw.addr,
                64 << 20
            ))
            .body(Full::default())
            .unwrap(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 64 << 20);
    assert_eq!(get(gw.addr, "/a").await.status, 200);
    assert_eq!(
        a.connections(),
        1,
        "the connection that streamed the download was reused"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http_1_0_backend_answers_http_1_1_clients_in_http_1_1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that speaks HTTP/1.0: one answer per connection, then close.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nold-ok")
                    .await;
            });
        }
    });
    let gw = TestGateway::start(&format!(
        "routes:\n  - prefix: /old\n    backend: http://{addr}\n"
    ))
    .await;
    // Two requests on one keep-alive connection: both answered in HTTP/1.1.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut seen = String::new();
    for _ in 0..2 {
        s.write_all(b"GET /old/x HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = String::new();
        while !got.ends_with("old-ok") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("answer in time")
                .unwrap();
            assert!(n > 0, "connection closed after: {seen}{got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        seen.push_str(&got);
    }
    // An HTTP/1.0 client still gets HTTP/1.0.
    let (status_line, _) = {
        let text = client::raw(gw.addr, b"GET /old/y HTTP/1.0\r\n\r\n").await;
        (text.lines().next().unwrap_or("").to_owned(), text)
    };
    assert_eq!(status_line, "HTTP/1.0 200 OK");
    gw.shutdown().await;
}

#[tokio::test]
async fn trace_context_is_continued_or_started_and_logged() {
    use crate::support::binary::Serve;
    let backend = Backend::start("api").await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Serve::with_routes(
        dir.path(),
        &routes_yaml(&[("/api", &backend)]),
        "shutdown:\n  drain_delay: 0s\n",
    );
    let addr = gw.listening("http");
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // A valid parent: same trace, a new span for the gateway's hop.
    let r = get_with(
        addr,
        "/api/a",
        &[("traceparent", parent), ("tracestate", "congo=t61rcWkgMzE")],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = backend.last();
    let sent = seen.headers["traceparent"].to_str().unwrap().to_owned();
    let fields: Vec<&str> = sent.split('-').collect();
    assert_eq!(fields.len(), 4, "{sent}");
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    );
    assert_ne!(fields[2], "00f067aa0ba902b7", "the gateway's own span");
    assert_eq!(seen.headers["tracestate"], "congo=t61rcWkgMzE");
    let line = gw.wait_line("access log of /api/a", |v| v["path"] == "/api/a");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["span_id"], fields[2]);

    // None, or an invalid one: a new trace (and its tracestate dropped).
    for (path, headers) in [
        ("/api/b", vec![]),
        (
            "/api/c",
            vec![
                ("traceparent", "00-zzz-00f067aa0ba902b7-01"),
                ("tracestate", "x=y"),
            ],
        ),
    ] {
        assert_eq!(get_with(addr, path, &headers).await.status, 200);
        let seen = backend.last();
        let sent = seen.headers["traceparent"].to_str().unwrap().to_owned();
        let f: Vec<&str> = sent.split('-').collect();
        assert_eq!(f.len(), 4, "{sent}");
        assert!(
            f[1].len() == 32 && f[2].len() == 16 && f[3] == "01",
            "{sent}"
        );
        assert_ne!(f[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!seen.headers.contains_key("tracestate"), "{path}");
        let line = gw.wait_line(path, |v| v["path"] == path);
        assert_eq!(line["trace_id"], f[1]);
        assert_eq!(line["span_id"], f[2]);
    }
    // Portico's own answers (here a 404) carry a trace in the log too.
    assert_eq!(get(addr, "/nowhere").await.status, 404);
    let line = gw.wait_line("the 404", |v| v["path"] == "/nowhere");
    assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn backends_named_by_host_name_resolve_with_portico_s_own_dns_client() {
    // `localhost` comes from /etc/hosts, read by Portico's resolver (not
    // getaddrinfo, which a static binary in a scratch image cannot use).
    let backend = Backend::start("named").await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - prefix: /named\n    backend: http://localhost:{}\n  - prefix: /nowhere\n    backend: http://no-such-backend.invalid:80\n",
        backend.addr.port()
    ))
    .await;
    let reply = get(gw.addr, "/named/x").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(backend.last().target, "/named/x");
    // A name that does not resolve is a connect failure: 502.
    let reply = get(gw.addr, "/nowhere").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"], "upstream_unavailable");
    gw.shutdown().await;
}
