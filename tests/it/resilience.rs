//! Upstream resilience with real backends on loopback: balancing over
//! several backends, passive ejection and re-admission, retries only when
//! safe and within the route's budget.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::backend::Backend;
use crate::support::client::{self, get, get_with};
use crate::support::gateway::TestGateway;
use crate::support::route_file_error;

/// A backend that answers every request after `delay` with `status` and
/// its name, counting requests.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// The `x-request-id` of every request received.
    ids: Arc<std::sync::Mutex<Vec<String>>>,
    /// The body of every request received.
    bodies: Arc<std::sync::Mutex<Vec<Bytes>>>,
}

async fn upstream(name: &'static str, delay: Duration, status: u16) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = hits.clone();
    let log = ids.clone();
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            let log = log.clone();
            let kept = kept.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let count = count.clone();
                    let log = log.clone();
                    let kept = kept.clone();
                    async move {
                        if let Some(id) = req.headers().get("x-request-id") {
                            log.lock().unwrap().push(id.to_str().unwrap().to_owned());
                        }
                        if let Ok(body) = req.into_body().collect().await {
                            kept.lock().unwrap().push(body.to_bytes());
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        let mut resp = Response::new(Full::new(Bytes::from(name)));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        hits,
        ids,
        bodies,
    }
}

/// A loopback address nothing listens on (connections are refused).
async fn refusing() -> SocketAddr {
    crate::support::refused_addr()
}

/// A backend that reads a request head (and `body_bytes` of its body),
/// then closes the connection without answering; counts connections.
async fn resetting(body_bytes: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
                        && buf.len() >= end + 4 + body_bytes
                    {
                        break;
                    }
                }
                // RST, not FIN: the connection breaks under the request.
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    (addr, seen)
}

fn routes(backends: &[SocketAddr], extra: &str) -> String {
    let mut s = String::from("routes:\n  - prefix: /api\n    backends:\n");
    for b in backends {
        s.push_str(&format!("      - http://{b}\n"));
    }
    s.push_str(extra);
    s
}

fn counter(gw: &TestGateway, name: &str, labels: &[&str]) -> u64 {
    let m = &gw.metrics;
    match name {
        "retries" => m.upstream_retries.with_label_values(labels).get(),
        "exhausted" => m.retry_budget_exhausted.with_label_values(labels).get(),
        "ejections" => m.upstream_ejections.with_label_values(labels).get(),
        _ => unreachable!(),
    }
}

async fn routes_json(gw: &TestGateway) -> serde_json::Value {
    client::get(gw.operator_addr, "/routes").await.json()
}

#[tokio::test]
async fn a_refusing_backend_of_three_costs_no_client_errors_is_ejected_and_readmitted() {
    let a = upstream("a", Duration::ZERO, 200).await;
    let b = upstream("b", Duration::ZERO, 200).await;
    let down = refusing().await;
    let gw = TestGateway::start(&routes(
        &[a.addr, b.addr, down],
        "    outlier: {consecutive_failures: 3, base_ejection: 1500ms}\n",
    ))
    .await;
    let mut errors = 0;
    for i in 0..1000 {
        let r = get(gw.addr, &format!("/api/{i}")).await;
        if r.status != 200 {
            errors += 1;
        }
    }
    assert_eq!(
        errors, 0,
        "client-visible errors with one backend of three down"
    );
    assert_eq!(
        a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst),
        1000
    );
    // Refused connections were retried (never reached a backend), then the
    // backend was ejected: far fewer retries than a third of 1,000.
    let retries = counter(&gw, "retries", &["*", "/api", "connect"]);
    assert!((1..=20).contains(&retries), "retries: {retries}");
    assert!(counter(&gw, "ejections", &["*", "/api"]) >= 1);
    let json = routes_json(&gw).await;
    let eps = json["routes"][0]["endpoints"].as_array().unwrap().clone();
    let state = |url: String| {
        eps.iter()
            .find(|e| e["backend"] == url)
            .map(|e| e["state"].as_str().unwrap().to_owned())
    };
    let down_url = format!("http://{down}");
    assert_eq!(
        state(down_url.clone()).as_deref(),
        Some("ejected"),
        "{eps:?}"
    );
    let text = client::get(gw.operator_addr, "/metrics").await.text();
    assert!(
        text.contains(r#"portico_upstream_endpoints{host="*",route="/api",state="ejected"} 1"#),
        "{text}"
    );

    // It comes back: listening again, and re-admitted after the ejection.
    crate::support::release_refused(down);
    let back = Backend::start_at("back", down).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while back.seen().is_empty() {
        assert!(Instant::now() < deadline, "never re-admitted");
        assert_eq!(get(gw.addr, "/api/again").await.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let json = routes_json(&gw).await;
    let eps = json["routes"][0]["endpoints"].as_array().unwrap();
    assert!(eps.iter().all(|e| e["state"] == "healthy"), "{eps:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn power_of_two_choices_sends_fewer_requests_to_a_slow_backend() {
    let fast1 = upstream("fast1", Duration::from_millis(1), 200).await;
    let fast2 = upstream("fast2", Duration::from_millis(1), 200).await;
    let slow = upstream("slow", Duration::from_millis(60), 200).await;
    let gw = TestGateway::start(&routes(&[fast1.addr, fast2.addr, slow.addr], "")).await;
    // 16 clients in parallel, 25 requests each.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                for _ in 0..25 {
                    assert_eq!(get(addr, "/api/x").await.status, 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (f1, f2, s) = (
        fast1.hits.load(Ordering::SeqCst),
        fast2.hits.load(Ordering::SeqCst),
        slow.hits.load(Ordering::SeqCst),
    );
    assert_eq!(f1 + f2 + s, 400);
    // Round robin would give each a third (133); the slow one has more in
    // flight whenever it is drawn against a fast one.
    assert!(s * 3 < f1 && s * 3 < f2, "fast {f1}, {f2}; slow {s}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_whose_body_reached_a_backend_is_never_retried() {
    let (reset, seen) = resetting(10).await;
    let ok = upstream("ok", Duration::ZERO, 200).await;
    // No read-ahead: a PUT's body is streamed, as a POST's always is.
    let gw = TestGateway::start(&routes(
        &[reset, ok.addr],
        "    balance: round_robin\n    retry_buffer: 0\n",
    ))
    .await;
    let mut reached_reset = 0;
    for method in ["POST", "PUT"] {
        for _ in 0..2 {
            let before = seen.load(Ordering::SeqCst);
            let req = format!(
                "{method} /api/upload HTTP/1.1\r\nHost: test\r\nContent-Length: 20\r\nConnection: close\r\n\r\n0123456789abcdefghij"
            );
            let text = client::raw(gw.addr, req.as_bytes()).await;
            if seen.load(Ordering::SeqCst) > before {
                // The resetting backend read the head and part of the body.
                reached_reset += 1;
                assert!(text.starts_with("HTTP/1.1 502"), "{method}: {text}");
            } else {
                assert!(text.starts_with("HTTP/1.1 200"), "{method}: {text}");
            }
        }
    }
    assert_eq!(
        reached_reset, 2,
        "round robin sent half of them to the resetting backend"
    );
    assert_eq!(
        ok.hits.load(Ordering::SeqCst),
        2,
        "none of the reset ones was sent again"
    );
    assert_eq!(counter(&gw, "retries", &["*", "/api", "reset"]), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_small_put_body_is_kept_and_sent_again_after_a_reset_a_post_is_not() {
    let (reset, seen) = resetting(10).await;
    let ok = upstream("ok", Duration::ZERO, 200).await;
    let gw = TestGateway::start(&routes(&[reset, ok.addr], "    balance: round_robin\n")).await;
    let body = "0123456789abcdefghij";
    for i in 0..4 {
        let req = format!(
            "PUT /api/doc/{i} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let text = client::raw(gw.addr, req.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 200"), "PUT {i}: {text}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "half reached the resetting backend first"
    );
    assert_eq!(
        ok.hits.load(Ordering::SeqCst),
        4,
        "each PUT answered by the good backend"
    );
    assert!(
        ok.bodies
            .lock()
            .unwrap()
            .iter()
            .all(|b| b == body.as_bytes()),
        "the whole body, on the first try and on the retry"
    );
    assert_eq!(counter(&gw, "retries", &["*", "/api", "reset"]), 2);
    // A POST is not idempotent: read ahead or not, it is not sent again.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let req = format!(
            "POST /api/doc HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let text = client::raw(gw.addr, req.as_bytes()).await;
        statuses.push(text.split_whitespace().nth(1).unwrap_or("").to_owned());
    }
    statuses.sort();
    assert_eq!(statuses, ["200", "502"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idempotent_request_reset_before_its_answer_is_retried_elsewhere() {
    let (reset, seen) = resetting(0).await;
    let ok = upstream("ok", Duration::ZERO, 200).await;
    let gw = TestGateway::start(&routes(&[reset, ok.addr], "    balance: round_robin\n")).await;
    for i in 0..4 {
        let r = get(gw.addr, &format!("/api/get/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "ok");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "half of them reached the resetting backend first"
    );
    assert_eq!(counter(&gw, "retries", &["*", "/api", "reset"]), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_on_503_retries_idempotent_requests_only() {
    let busy = upstream("busy", Duration::ZERO, 503).await;
    let ok = upstream("ok", Duration::ZERO, 200).await;
    let gw = TestGateway::start(&routes(
        &[busy.addr, ok.addr],
        "    balance: round_robin\n    retry_on: [503]\n",
    ))
    .await;
    for i in 0..4 {
        let r = get(gw.addr, &format!("/api/{i}")).await;
        assert_eq!(r.status, 200, "GET is retried after a 503");
        // The client's request id is the one both backends saw.
        let id = r.header("x-request-id").unwrap().to_owned();
        assert!(ok.ids.lock().unwrap().contains(&id));
    }
    assert_eq!(counter(&gw, "retries", &["*", "/api", "status"]), 2);
    let busy_ids = busy.ids.lock().unwrap().clone();
    assert_eq!(busy_ids.len(), 2);
    assert!(
        busy_ids
            .iter()
            .all(|id| ok.ids.lock().unwrap().contains(id)),
        "same id on every try"
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let req =
            b"POST /api/p HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let text = client::raw(gw.addr, req).await;
        statuses.push(text.split_whitespace().nth(1).unwrap_or("").to_owned());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        ["200", "200", "503", "503"],
        "POST gets the backend's 503"
    );
    // With an Idempotency-Key a POST is safe to repeat: no 503 then. Its
    // body is empty here, so it can be sent again.
    for _ in 0..2 {
        let req = b"POST /api/p HTTP/1.1\r\nHost: test\r\nIdempotency-Key: k1\r\nConnection: close\r\n\r\n";
        let text = client::raw(gw.addr, req).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn when_every_backend_fails_retries_stay_within_the_budget() {
    let down = [refusing().await, refusing().await, refusing().await];
    let gw = TestGateway::start(&routes(
        &down,
        // Ejection off: every request tries the dead backends.
        "    outlier: {consecutive_failures: 0}\n",
    ))
    .await;
    let started = Instant::now();
    for i in 0..200 {
        let r = get(gw.addr, &format!("/api/{i}")).await;
        assert_eq!(r.status, 502, "{}", r.text());
    }
    let retries = counter(&gw, "retries", &["*", "/api", "connect"]);
    let refused = counter(&gw, "exhausted", &["*", "/api"]);
    // 20% of 200 requests plus 3 per second over 10 s.
    assert!(retries <= 200 / 5 + 30, "retries: {retries}");
    assert!(retries >= 30, "the floor was used: {retries}");
    assert!(refused > 0, "the budget ran out");
    // Every failure is a refused connect: prompt, no timeouts waited for.
    assert!(started.elapsed() < Duration::from_secs(20));
    gw.shutdown().await;
}

#[tokio::test]
async fn hashing_on_a_header_keeps_each_user_on_one_backend() {
    let b: Vec<Upstream> = vec![
        upstream("a", Duration::ZERO, 200).await,
        upstream("b", Duration::ZERO, 200).await,
        upstream("c", Duration::ZERO, 200).await,
    ];
    let addrs: Vec<SocketAddr> = b.iter().map(|u| u.addr).collect();
    let gw = TestGateway::start(&routes(&addrs, "    balance: {hash_header: x-user}\n")).await;
    let mut owners = std::collections::HashMap::new();
    for round in 0..3 {
        for user in 0..30 {
            let name = format!("user-{user}");
            let r = get_with(gw.addr, "/api/x", &[("x-user", &name)]).await;
            let owner = r.text();
            let first = owners.entry(name.clone()).or_insert_with(|| owner.clone());
            assert_eq!(*first, owner, "{name} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert_eq!(distinct.len(), 3, "30 users spread over all three backends");
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_resilience_settings_are_refused_with_their_position() {
    let cases = [
        (
            "    balance: random\n",
            "balance: expected p2c, round_robin",
        ),
        (
            "    balance: {hash_header: \"bad header\"}\n",
            "is not a header name",
        ),
        (
            "    balance: {hash_cookie: a, hash_header: b}\n",
            "exactly one key",
        ),
        (
            "    retries: 9\n",
            "retries: expected a whole number from 0 to 5",
        ),
        (
            "    retry_on: [404]\n",
            "retry_on[0]: expected a whole number from 500 to 599",
        ),
        ("    retry_on: [503, 503]\n", "503 is listed twice"),
        (
            "    outlier: {max_ejection_percent: 150}\n",
            "from 0 to 100",
        ),
        (
            "    outlier: {base_ejection: 60s, max_ejection: 10s}\n",
            "shorter than base_ejection",
        ),
        (
            "    outlier: {consecutive: 3}\n",
            "unknown key \"consecutive\"",
        ),
    ];
    for (extra, want) in cases {
        let text = routes(&["127.0.0.1:1".parse().unwrap()], extra);
        let err = route_file_error(&text, extra);
        assert!(err.contains(want), "{extra}: {err}");
        assert!(
            err.contains("routes.yaml:"),
            "{extra}: no position in {err}"
        );
    }
}

/// Sends `n` GETs at once; returns their statuses, sorted, and how many
/// 503s carried `Retry-After` and the `overloaded` error.
async fn burst(gw: &TestGateway, n: usize) -> (Vec<u16>, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = gw.addr;
            tokio::spawn(async move { get(addr, &format!("/api/burst/{i}")).await })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut shed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 503
            && r.header("retry-after") == Some("1")
            && r.json()["error"] == "overloaded"
        {
            shed += 1;
        }
        statuses.push(r.status.as_u16());
    }
    statuses.sort();
    (statuses, shed)
}

#[tokio::test]
async fn the_circuit_breaker_sheds_beyond_max_connections_and_max_pending() {
    let slow = upstream("slow", Duration::from_millis(600), 200).await;
    let gw = TestGateway::start(&routes(
        &[slow.addr],
        "    circuit_breaker: {max_connections: 2, max_pending: 1}\n",
    ))
    .await;
    let (statuses, shed) = burst(&gw, 6).await;
    // Two in progress, one waiting for them, three shed at once.
    assert_eq!(statuses, [200, 200, 200, 503, 503, 503]);
    assert_eq!(shed, 3);
    assert_eq!(slow.hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        gw.metrics
            .circuit_open
            .with_label_values(&["*", "/api", "max_pending"])
            .get(),
        3
    );
    gw.shutdown().await;

    // No waiting at all: beyond max_connections is shed.
    let slow = upstream("slow", Duration::from_millis(600), 200).await;
    let gw = TestGateway::start(&routes(
        &[slow.addr],
        "    circuit_breaker: {max_connections: 2, max_pending: 0}\n",
    ))
    .await;
    let (statuses, shed) = burst(&gw, 4).await;
    assert_eq!(statuses, [200, 200, 503, 503]);
    assert_eq!(shed, 2);
    assert_eq!(
        gw.metrics
            .circuit_open
            .with_label_values(&["*", "/api", "max_connections"])
            .get(),
        2
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_backend_passes_requests_to_one_with_room() {
    let a = upstream("a", Duration::from_millis(600), 200).await;
    let b = upstream("b", Duration::from_millis(600), 200).await;
    let gw = TestGateway::start(&routes(
        &[a.addr, b.addr],
        "    circuit_breaker: {max_connections: 1, max_pending: 0}\n",
    ))
    .await;
    let (statuses, shed) = burst(&gw, 3).await;
    assert_eq!(statuses, [200, 200, 503], "one per backend, the third shed");
    assert_eq!(shed, 1);
    assert_eq!(a.hits.load(Ordering::SeqCst), 1);
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}
