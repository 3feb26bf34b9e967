//! The operator listener over real sockets: probes, access on the TCP peer
//! only, the bearer token, `/routes`, and `/metrics` read back through a real
//! Prometheus text parser.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::observability::metrics as names;
use prometheus_parse::{Scrape, Value};
use tokio::net::TcpSocket;

use crate::support::backend::Backend;
use crate::support::binary::Serve;
use crate::support::client::{self, Reply, get, get_with};
use crate::support::gateway::{TestGateway, routes_yaml};

/// `127.0.0.2`: loopback on Linux, but outside `127.0.0.1/32`.
const OUTSIDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const INSIDER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One request over a fresh connection whose source address is `source`.
async fn request_from(
    source: IpAddr,
    addr: SocketAddr,
    h2: bool,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    assert_eq!(tcp.local_addr().unwrap().ip(), source);
    let io = TokioIo::new(tcp);
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if !h2 {
        b = b.header("host", addr.to_string());
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::<Bytes>::default()).unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

/// Scrapes `/metrics` on the operator listener.
async fn scrape(gw: &TestGateway) -> Scrape {
    let reply = get(gw.operator_addr, "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    parse(&reply.text())
}

/// The value of the one sample `metric{labels}`; panics when absent.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let hit = s.samples.iter().find(|x| {
        x.metric == metric
            && x.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
    });
    match hit.map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(other) => panic!("{metric}{labels:?} is not a single value: {other:?}"),
        None => panic!("{metric}{labels:?} missing"),
    }
}

/// Every series in a scrape, as `name{sorted labels}`.
fn series(s: &Scrape) -> BTreeSet<String> {
    s.samples
        .iter()
        .map(|x| {
            let labels: BTreeMap<_, _> = x.labels.iter().collect();
            format!("{}{labels:?}", x.metric)
        })
        .collect()
}

/// Sum of `portico_requests_total` over all its series.
fn requests_sum(s: &Scrape) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == names::REQUESTS_TOTAL)
        .map(|x| match x.value {
            Value::Counter(v) => v,
            ref other => panic!("requests_total is not a counter: {other:?}"),
        })
        .sum()
}

/// Metrics are recorded when a response body ends, which can be a moment
/// after the client has read it: scrape until `done` holds.
async fn scrape_until(gw: &TestGateway, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..100 {
        let s = scrape(gw).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metrics never showed {what}:\n{}", gw.metrics.render());
}

/// Polls `path` until it answers `want` (route file changes take up to a
/// watcher poll interval to land).
async fn eventually(addr: SocketAddr, path: &str, want: StatusCode) -> Reply {
    for _ in 0..200 {
        let reply = get(addr, path).await;
        if reply.status == want {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never answered {want}");
}

#[tokio::test]
async fn probes_answer_an_allowed_peer() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/billing", &b)])).await;
    for path in ["/healthz", "/livez", "/readyz"] {
        let reply = get(gw.operator_addr, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(reply.json()["status"], "ok", "{path}");
        // And over HTTP/2 (prior knowledge), as some probers speak it.
        let reply = request_from(INSIDER, gw.operator_addr, true, Method::GET, path, &[]).await;
        assert_eq!(reply.status, 200, "h2 {path}");
    }
    let head = request_from(
        INSIDER,
        gw.operator_addr,
        false,
        Method::HEAD,
        "/healthz",
        &[],
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    for path in ["/", "/nope", "/metrics/", "/healthz/x", "/billing"] {
        let reply = get(gw.operator_addr, path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.json()["error"], "not_found", "{path}");
    }
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let reply = request_from(
            INSIDER,
            gw.operator_addr,
            false,
            method.clone(),
            "/readyz",
            &[],
        )
        .await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
    // The operator listener proxies nothing.
    assert!(b.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn peer_outside_allow_gets_a_bare_403_whatever_its_headers_say() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with_operator(
        &routes_yaml(&[("/billing", &b)]),
        "  allow: [127.0.0.1/32]\n",
        "",
    )
    .await;
    let spoofs: &[&[(&str, &str)]] = &[
        &[],
        &[("x-forwarded-for", "127.0.0.1")],
        &[("x-forwarded-for", "127.0.0.2, 127.0.0.1")],
        &[("forwarded", "for=127.0.0.1")],
        &[("x-real-ip", "127.0.0.1")],
        &[
            ("x-forwarded-for", "127.0.0.1"),
            ("x-real-ip", "127.0.0.1"),
            ("forwarded", "for=127.0.0.1;proto=http"),
        ],
    ];
    for path in [
        "/healthz", "/readyz", "/livez", "/metrics", "/routes", "/nope",
    ] {
        for headers in spoofs {
            for h2 in [false, true] {
                let reply =
                    request_from(OUTSIDER, gw.operator_addr, h2, Method::GET, path, headers).await;
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{path} {headers:?} h2={h2}"
                );
                assert!(reply.body.is_empty(), "{path}: a 403 says nothing more");
            }
        }
        // Wrong method from outside: still 403, not a hint that the path exists.
        let reply = request_from(OUTSIDER, gw.operator_addr, false, Method::POST, path, &[]).await;
        assert_eq!(reply.status, 403, "POST {path}");
    }
    // The allowed address itself still gets in.
    let reply = request_from(
        INSIDER,
        gw.operator_addr,
        false,
        Method::GET,
        "/healthz",
        &[],
    )
    .await;
    assert_eq!(reply.status, 200);
    // The public listener is not subject to operator.allow.
    let reply = request_from(OUTSIDER, gw.addr, false, Method::GET, "/billing", &[]).await;
    assert_eq!(reply.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn bearer_token_guards_metrics_and_routes_but_not_probes() {
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with_operator(
        &routes_yaml(&[("/billing", &b)]),
        &format!("  token_file: {}\n", token.display()),
        "",
    )
    .await;
    let op = gw.operator_addr;

    let denied = |reply: Reply, what: &str| {
        assert_eq!(reply.status, 401, "{what}: {}", reply.text());
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
        assert!(!reply.text().contains("s3cret"));
    };
    for path in ["/metrics", "/routes"] {
        denied(get(op, path).await, path);
        denied(
            get_with(op, path, &[("authorization", "Bearer wrong")]).await,
            path,
        );
        denied(
            get_with(op, path, &[("authorization", "Bearer s3cre")]).await,
            path,
        );
        denied(
            get_with(op, path, &[("authorization", "Bearer s3cret2")]).await,
            path,
        );
        denied(
            get_with(op, path, &[("authorization", "Basic czNjcmV0")]).await,
            path,
        );
        denied(
            get_with(op, path, &[("authorization", "s3cret")]).await,
            path,
        );
        for ok in ["Bearer s3cret", "bearer s3cret"] {
            let reply = get_with(op, path, &[("authorization", ok)]).await;
            assert_eq!(reply.status, 200, "{path} {ok}");
        }
    }
    // Probes never need the token: kubelets have none.
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(get(op, path).await.status, 200, "{path}");
    }

    // Rotation: the new token works on the next request, the old one no longer.
    std::fs::write(&token, "rotated-token\r\n").unwrap();
    denied(
        get_with(op, "/metrics", &[("authorization", "Bearer s3cret")]).await,
        "old token",
    );
    let reply = get_with(op, "/metrics", &[("authorization", "Bearer rotated-token")]).await;
    assert_eq!(reply.status, 200);

    // A Secret mount swaps a symlink; follow it.
    let next = secrets.path().join("token.next");
    std::fs::write(&next, "via-symlink").unwrap();
    std::fs::remove_file(&token).unwrap();
    std::os::unix::fs::symlink(&next, &token).unwrap();
    let reply = get_with(op, "/routes", &[("authorization", "Bearer via-symlink")]).await;
    assert_eq!(reply.status, 200);

    // Fail-closed: an unreadable or empty token file lets nobody in.
    std::fs::remove_file(&token).unwrap();
    denied(
        get_with(op, "/metrics", &[("authorization", "Bearer via-symlink")]).await,
        "missing file",
    );
    denied(get(op, "/metrics").await, "missing file, no header");
    std::fs::write(&token, "\n").unwrap();
    denied(
        get_with(op, "/metrics", &[("authorization", "Bearer ")]).await,
        "empty file",
    );
    denied(get(op, "/routes").await, "empty file, no header");
    assert_eq!(get(op, "/healthz").await.status, 200);
    std::fs::write(&token, "back").unwrap();
    let reply = get_with(op, "/metrics", &[("authorization", "Bearer back")]).await;
    assert_eq!(reply.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn readyz_is_503_until_a_route_table_is_valid() {
    // The route file is broken at start: the gateway runs without a table.
    let gw = TestGateway::start("routes:\n  - prefix: /billing\n    backend: ftp://x\n").await;
    let reply = get(gw.operator_addr, "/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["reason"], "no_route_table");
    // Alive all the same: liveness must not restart a pod over a bad ConfigMap.
    assert_eq!(get(gw.operator_addr, "/healthz").await.status, 200);
    let routes = get(gw.operator_addr, "/routes").await.json();
    assert_eq!(routes["generation"], 0);
    assert!(routes["sha256"].is_null());
    assert!(routes["loaded_at"].is_null());
    assert!(
        routes["last_error"]
            .as_str()
            .unwrap()
            .contains("routes.yaml:3:"),
        "{routes}"
    );
    assert!(routes["last_error_at"].is_string());
    assert_eq!(routes["routes"], serde_json::json!([]));

    // A valid route file arrives; the watcher loads it and readiness follows.
    let b = Backend::start("b").await;
    std::fs::write(&gw.routes_path, routes_yaml(&[("/billing", &b)])).unwrap();
    let reply = eventually(gw.operator_addr, "/readyz", StatusCode::OK).await;
    assert_eq!(reply.json()["status"], "ok");
    let routes = get(gw.operator_addr, "/routes").await.json();
    assert_eq!(routes["generation"], 1);
    assert!(routes["last_error"].is_null());
    gw.shutdown().await;
}

#[tokio::test]
async fn readyz_is_503_while_draining_and_healthz_stays_200() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/billing", &b)])).await;
    assert_eq!(get(gw.operator_addr, "/readyz").await.status, 200);
    gw.draining.store(true, Ordering::Release);
    let reply = get(gw.operator_addr, "/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["reason"], "draining");
    assert_eq!(get(gw.operator_addr, "/healthz").await.status, 200);
    assert_eq!(get(gw.operator_addr, "/livez").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn routes_shows_the_live_table_generation_hash_and_last_error() {
    use sha2::Digest;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let file = format!(
        "routes:\n  - prefix: /billing\n    backend: {}\n    strip_prefix: true\n    timeout: 5s\n    max_inflight: 10\n  - prefix: /orders\n    backends: [{}, {}]\n",
        a.url(),
        a.url(),
        b.url()
    );
    let gw = TestGateway::start(&file).await;
    let before = std::time::SystemTime::now() - Duration::from_secs(60);
    let v = get(gw.operator_addr, "/routes").await.json();
    assert_eq!(v["generation"], 1);
    assert_eq!(
        v["sha256"],
        hex::encode(sha2::Sha256::digest(file.as_bytes()))
    );
    let loaded_at = humantime::parse_rfc3339(v["loaded_at"].as_str().unwrap()).unwrap();
    assert!(loaded_at > before);
    assert!(v["last_error"].is_null());
    assert!(v["last_error_at"].is_null());
    assert_eq!(
        v["routes"],
        serde_json::json!([
            {
                "host": null,
                "prefix": "/billing",
                "exact": null,
                "route": "/billing",
                "backends": [a.url()],
                "endpoints": [
                    {"backend": a.url(), "state": "healthy", "inflight": 0, "pending": 0, "ejected_for_ms": null},
                ],
                "balance": "p2c",
                "retries": 2,
                "retry_on": [],
                "retry_buffer": 65536,
                "circuit_breaker": {"max_connections": 1024, "max_pending": 1024},
                "strip_prefix": true,
                "timeout_ms": 5000,
                "max_inflight": 10,
                "canary": null,
                "owner": null,
                "shared": false,
                "allow_from": [],
                "max_body_size": null,
                "host_header": null,
                "https_redirect": false,
                "redirect": null,
            },
            {
                "host": null,
                "prefix": "/orders",
                "exact": null,
                "route": "/orders",
                "backends": [a.url(), b.url()],
                "endpoints": [
                    {"backend": a.url(), "state": "healthy", "inflight": 0, "pending": 0, "ejected_for_ms": null},
                    {"backend": b.url(), "state": "healthy", "inflight": 0, "pending": 0, "ejected_for_ms": null},
                ],
                "balance": "p2c",
                "retries": 2,
                "retry_on": [],
                "retry_buffer": 65536,
                "circuit_breaker": {"max_connections": 1024, "max_pending": 1024},
                "strip_prefix": false,
                // limits.upstream_timeout's default.
                "timeout_ms": 30000,
                "max_inflight": null,
                "canary": null,
                "owner": null,
                "shared": false,
                "allow_from": [],
                "max_body_size": null,
                "host_header": null,
                "https_redirect": false,
                "redirect": null,
            },
        ])
    );

    // A rejected reload is reported next to the table that keeps serving.
    std::fs::write(
        &gw.routes_path,
        "routes:\n  - prefix: billing\n    backend: http://x:1\n",
    )
    .unwrap();
    let mut v = serde_json::Value::Null;
    for _ in 0..200 {
        v = get(gw.operator_addr, "/routes").await.json();
        if !v["last_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = v["last_error"]
        .as_str()
        .expect("the rejected reload is reported");
    assert!(error.contains("routes.yaml:2:"), "{error}");
    humantime::parse_rfc3339(v["last_error_at"].as_str().unwrap()).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["routes"].as_array().unwrap().len(), 2);
    assert_eq!(
        get(gw.operator_addr, "/readyz").await.status,
        200,
        "the old table still serves"
    );
    gw.shutdown().await;
}

/// Every metric of DESIGN.md §Metrics, parsed by a real Prometheus text
/// parser, with counts equal to the requests this test sent.
#[tokio::test]
async fn metrics_parse_and_count_exactly_what_was_sent() {
    let b = Backend::start("b").await;
    // A backend that is gone: connections are refused.
    let dead = crate::support::refused_addr();
    let routes = format!(
        "{}  - prefix: /dead\n    backend: http://{dead}\n",
        routes_yaml(&[("/billing", &b)])
    );
    let gw = TestGateway::start(&routes).await;
    let http = client::http1();
    let send = |method: Method, path: &str| {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", gw.addr))
            .body(Full::<Bytes>::default())
            .unwrap();
        client::send(&http, req)
    };
    for _ in 0..3 {
        assert_eq!(send(Method::GET, "/billing/x").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(send(Method::POST, "/billing?status=201").await.status, 201);
    }
    for path in [
        "/nope",
        "/nope/2",
        "/billingX",
        "/metrics",
        "/healthz",
        "/%6Detrics",
    ] {
        assert_eq!(send(Method::GET, path).await.status, 404, "{path}");
    }
    for _ in 0..2 {
        assert_eq!(send(Method::GET, "/dead").await.status, 502);
    }
    let sent = 3 + 2 + 6 + 2;

    let s = scrape_until(&gw, "every request", |s| requests_sum(s) == sent as f64).await;
    let text = gw.metrics.render();
    for name in [
        names::REQUESTS_TOTAL,
        names::REQUEST_DURATION_SECONDS,
        names::UPSTREAM_ERRORS_TOTAL,
        names::INFLIGHT_REQUESTS,
        names::CONNECTIONS_OPEN,
        names::CONFIG_RELOADS_TOTAL,
        names::CONFIG_GENERATION,
        names::TLS_HANDSHAKE_ERRORS_TOTAL,
        names::BUILD_INFO,
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            s.samples.iter().any(|x| x.metric == name),
            "{name} missing:\n{text}"
        );
    }
    // The names are the contract: spelled out once more, not via constants.
    for name in [
        "portico_requests_total",
        "portico_request_duration_seconds",
        "portico_upstream_errors_total",
        "portico_inflight_requests",
        "portico_connections_open",
        "portico_config_reloads_total",
        "portico_config_generation",
        "portico_tls_handshake_errors_total",
        "portico_build_info",
    ] {
        assert!(s.docs.contains_key(name), "no HELP for {name}");
    }

    let req = |route, method, status| {
        value(
            &s,
            "portico_requests_total",
            &[
                ("host", "*"),
                ("route", route),
                ("canary", "false"),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(req("/billing", "GET", "200"), 3.0);
    assert_eq!(req("/billing", "POST", "201"), 2.0);
    assert_eq!(req("none", "GET", "404"), 6.0);
    assert_eq!(req("/dead", "GET", "502"), 2.0);
    assert_eq!(requests_sum(&s), sent as f64);

    let errors = |route, kind| {
        value(
            &s,
            "portico_upstream_errors_total",
            &[("host", "*"), ("route", route), ("kind", kind)],
        )
    };
    assert_eq!(errors("/dead", "connect"), 2.0);
    for kind in ["timeout", "reset", "protocol"] {
        assert_eq!(errors("/dead", kind), 0.0, "{kind}");
        assert_eq!(errors("/billing", kind), 0.0, "{kind}");
    }
    assert_eq!(errors("/billing", "connect"), 0.0);

    // The histogram counts every answered request of its route.
    let hist = |route: &str| {
        let h = s
            .samples
            .iter()
            .find(|x| {
                x.metric == "portico_request_duration_seconds"
                    && x.labels.get("route") == Some(route)
            })
            .unwrap_or_else(|| panic!("no histogram for {route}"));
        match &h.value {
            Value::Histogram(buckets) => buckets.clone(),
            other => panic!("not a histogram: {other:?}"),
        }
    };
    for (route, n) in [("/billing", 5.0), ("none", 6.0), ("/dead", 2.0)] {
        let buckets = hist(route);
        let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
        assert_eq!(inf.count, n, "{route}");
        assert_eq!(
            value(
                &s,
                "portico_request_duration_seconds_count",
                &[("host", "*"), ("route", route), ("canary", "false")]
            ),
            n,
            "{route}"
        );
        // Buckets suited to a proxy: 0.5 ms to 30 s.
        let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
        assert!(
            bounds.contains(&0.0005) && bounds.contains(&30.0),
            "{bounds:?}"
        );
    }

    assert_eq!(value(&s, "portico_inflight_requests", &[]), 0.0);
    // The scrape's own connection is open on the operator listener.
    assert!(value(&s, "portico_connections_open", &[("listener", "operator")]) >= 1.0);
    value(&s, "portico_connections_open", &[("listener", "http")]);
    assert_eq!(
        value(&s, "portico_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        value(&s, "portico_config_reloads_total", &[("result", "failure")]),
        0.0
    );
    assert_eq!(value(&s, "portico_config_generation", &[]), 1.0);
    assert_eq!(value(&s, "portico_tls_handshake_errors_total", &[]), 0.0);
    assert_eq!(
        value(
            &s,
            "portico_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(value(&s, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&s, "process_open_fds", &[]) > 0.0);

    // Operator traffic is not public traffic: the scrapes above added nothing.
    let again = scrape(&gw).await;
    assert_eq!(requests_sum(&again), sent as f64);
    gw.shutdown().await;
}

/// Label cardinality is bounded by the route file: a flood of random paths
/// and invented methods adds no series.
#[tokio::test]
async fn a_thousand_unmatched_paths_add_no_label_values() {
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/billing", &b)])).await;
    let http = client::http1();
    let send = |method: Method, path: String| {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", gw.addr))
            .body(Full::<Bytes>::default())
            .unwrap();
        client::send(&http, req)
    };
    // Warm-up: one of each kind, so the label values that must exist do.
    assert_eq!(send(Method::GET, "/warm".into()).await.status, 404);
    assert_eq!(send(Method::POST, "/warm".into()).await.status, 404);
    let brew = Method::from_bytes(b"BREW").unwrap();
    assert_eq!(send(brew, "/warm".into()).await.status, 404);
    let before = scrape_until(&gw, "the warm-up", |s| requests_sum(s) == 3.0).await;

    let results: Vec<StatusCode> = futures_util::stream::iter(0..1000)
        .map(|i| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let method = match i % 3 {
                0 => Method::GET,
                1 => Method::POST,
                // A fresh invented method every time.
                _ => {
                    Method::from_bytes(format!("X{}", &id[..8]).to_uppercase().as_bytes()).unwrap()
                }
            };
            let path = format!("/{id}/{}/{i}?q={id}", &id[..4]);
            let fut = send(method, path);
            async move { fut.await.status }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        results.iter().all(|s| *s == 404),
        "every random path is 404"
    );

    let after = scrape_until(&gw, "all 1,003 requests", |s| requests_sum(s) == 1003.0).await;
    let (old, new) = (series(&before), series(&after));
    assert_eq!(
        new.difference(&old).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "random paths created series"
    );
    assert_eq!(old.len(), new.len());
    let label_values: BTreeSet<&str> = after
        .samples
        .iter()
        .filter(|x| x.metric == names::REQUESTS_TOTAL)
        .filter_map(|x| x.labels.get("method"))
        .collect();
    assert_eq!(label_values, BTreeSet::from(["GET", "POST", "OTHER"]));
    gw.shutdown().await;
}

// Regression guard: a catch-all route must not leak a backend's /metrics,
// and what the public listener refuses is counted under route="none".
#[tokio::test]
async fn public_listener_404s_operator_paths_and_counts_them_as_none() {
    let b = Backend::start("catch-all").await;
    let gw = TestGateway::start(&routes_yaml(&[("/", &b)])).await;
    let paths = [
        "/metrics",
        "/healthz",
        "/readyz",
        "/livez",
        "//metrics",
        "/x/../metrics",
        "/%6Detrics",
        "/metrics/x",
    ];
    for path in paths {
        let (status, body) = client::raw_get(gw.addr, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.contains("\"error\":\"no_route\""), "{path}: {body}");
    }
    assert!(
        b.seen().is_empty(),
        "the catch-all backend saw an operator path"
    );
    let n = paths.len() as f64;
    let s = scrape_until(&gw, "the refused requests", |s| requests_sum(s) == n).await;
    assert_eq!(
        value(
            &s,
            "portico_requests_total",
            &[
                ("host", "*"),
                ("route", "none"),
                ("canary", "false"),
                ("method", "GET"),
                ("status", "404")
            ]
        ),
        n
    );
    assert!(
        !s.samples
            .iter()
            .any(|x| x.metric == names::REQUESTS_TOTAL && x.labels.get("route") == Some("/")),
        "operator paths were counted under the catch-all route"
    );
    gw.shutdown().await;
}

/// The real binary serves the operator listener and says where.
#[tokio::test]
async fn the_binary_serves_the_operator_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::with_routes(
        dir.path(),
        "routes:\n  - prefix: /billing\n    backend: http://127.0.0.1:9\n",
        "",
    );
    // In the order app.rs logs them.
    let public = serve.listening("http");
    let op = serve.listening("operator");
    assert_eq!(get(op, "/readyz").await.status, 200);
    let metrics = get(op, "/metrics").await;
    assert_eq!(metrics.status, 200);
    parse(&metrics.text());
    assert_eq!(get(public, "/metrics").await.status, 404);
}
