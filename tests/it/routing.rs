//! Routing over real sockets: path parameters read as servlet containers
//! read them (no spelling reaches a backend's operator endpoints), host
//! rules as a Kubernetes Ingress has them, exact paths, and no fall-through
//! from a host table to the default one.

use http::StatusCode;

use crate::support::backend::Backend;
use crate::support::client::{get_with, raw_get};
use crate::support::gateway::TestGateway;
use crate::support::servlet::{ServletBackend, servlet_path};

/// Spellings of the reserved operator paths with path parameters, encoded
/// dots, case and trailing-dot folds, in inner and last segments. Each one
/// is what a servlet container (and a Windows-style server) reads as an
/// operator path, which the first assertion of the test checks.
const HOSTILE: &[&str] = &[
    "/metrics;x=1",
    "/metrics;",
    "/healthz;",
    "/readyz;a=b",
    "/livez;jsessionid=1",
    "/metrics;x/foo",
    "/metrics;x=1/",
    "/foo/..;/metrics",
    "/foo/..;x=1/metrics",
    "/foo/%2e%2e;/metrics",
    "/foo/%2E%2E;x/healthz",
    "/foo/.%2e;/readyz",
    "/foo/%2e.;/livez",
    "/a/b/..;/..;/metrics",
    "/.;/metrics",
    "/%2e;x/metrics",
    "/;x/metrics",
    "/;/healthz",
    "//;x//metrics",
    "/foo;x/..;y/metrics",
    "/x;a/..;b/healthz;c",
    "/foo/..;%2e/metrics",
    "/foo/bar/..;/..;/readyz",
    "/metrics;/../metrics",
    "/x/..;/livez;v=1/y",
    "/%6detrics;x",
    "/%6D%65%74%72%69%63%73;",
    "/Metrics;x",
    "/METRICS",
    "/metrics.",
    "/metrics%2e",
    "/metrics%20",
    "/healthz./x",
    "/HealthZ;x=1/..;/Healthz",
    "/foo/..;/..;/metrics",
    "/metrics;x%2Fy",
    "/foo/..%3B/metrics",
    "/foo/.%3b/../metrics",
];

// Regression: `/metrics;x=1` and `/foo/..;/metrics` passed the reserved-path
// check (it saw the segment `metrics;x=1`) and reached a servlet backend's
// own /metrics behind a catch-all route.
#[tokio::test]
async fn path_parameter_spellings_never_reach_an_operator_path() {
    // The table is meaningful: without the gateway, every spelling that is
    // well-formed opens the backend's operator endpoints.
    let reserved = |p: &str| {
        let first = servlet_path(p)[1..]
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let first = first.trim_end_matches(['.', ' ']).to_ascii_lowercase();
        matches!(first.as_str(), "healthz" | "readyz" | "livez" | "metrics")
    };
    for p in HOSTILE {
        let encoded_separator = p.contains("%2F") || p.contains("%3B") || p.contains("%3b");
        let climbs = p.starts_with("/foo/..;/..;");
        assert!(
            reserved(p) || encoded_separator || climbs,
            "{p:?} would not reach an operator path at the backend: {}",
            servlet_path(p)
        );
    }
    assert!(HOSTILE.len() >= 30);

    let servlet = ServletBackend::start().await;
    let routes = format!("routes:\n  - prefix: /\n    backend: {}\n", servlet.url());
    let gw = TestGateway::start(&routes).await;
    for p in HOSTILE {
        let (status, body) = raw_get(gw.addr, p).await;
        assert!(
            status == 404 || status == 400,
            "{p:?}: got {status} {body:?}"
        );
        assert!(!body.contains("LEAKED"), "{p:?} leaked: {body}");
    }
    assert!(
        servlet.seen().is_empty(),
        "requests reached the backend: {:?}",
        servlet.seen()
    );

    // The catch-all does work, path parameters and all.
    let (status, body) = raw_get(gw.addr, "/app;jsessionid=1/x").await;
    assert_eq!(status, 200, "{body}");
    let seen = servlet.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/app;jsessionid=1/x");
    assert_eq!(seen[0].servlet_path, "/app/x");
    assert!(!seen[0].leaked);
    gw.shutdown().await;
}

#[tokio::test]
async fn path_parameters_route_by_segment_name_and_reach_the_backend_as_sent() {
    let reports = Backend::start("reports").await;
    let orders = Backend::start("orders").await;
    let servlet = ServletBackend::start().await;
    let routes = format!(
        "routes:\n  - prefix: /billing/reports\n    backend: {}\n  - prefix: /orders\n    backend: {}\n    strip_prefix: true\n  - prefix: /\n    backend: {}\n",
        reports.url(),
        orders.url(),
        servlet.url()
    );
    let gw = TestGateway::start(&routes).await;
    // (request target, backend name or "servlet", target the backend gets)
    let cases = [
        (
            "/billing/reports;jsessionid=abc",
            "reports",
            "/billing/reports;jsessionid=abc",
        ),
        (
            "/billing/reports;jsessionid=abc/2024?q=1",
            "reports",
            "/billing/reports;jsessionid=abc/2024?q=1",
        ),
        (
            "/billing/x/..;/reports;v=2",
            "reports",
            "/billing/reports;v=2",
        ),
        ("/billing;a=1/reports", "reports", "/billing;a=1/reports"),
        ("/billing/reports/.;x/q", "reports", "/billing/reports/q"),
        ("/orders;v=1/items", "orders", "/items"),
        ("/orders;v=1", "orders", "/"),
        ("/orders/7;rev=2", "orders", "/7;rev=2"),
        // Not the route: a look-alike segment, and an encoded ';' is data.
        ("/billing/reportsX;a", "servlet", "/billing/reportsX;a"),
        (
            "/billing/reports%3Bjsessionid=abc",
            "servlet",
            "/billing/reports%3Bjsessionid=abc",
        ),
    ];
    for (target, backend, upstream) in cases {
        let (status, body) = raw_get(gw.addr, target).await;
        assert_eq!(status, 200, "{target}: {body}");
        let got = match backend {
            "servlet" => servlet.seen().last().unwrap().target.clone(),
            "reports" => reports.last().target,
            _ => orders.last().target,
        };
        assert_eq!(got, upstream, "{target} -> {backend}");
    }
    assert_eq!(reports.seen().len(), 5);
    assert_eq!(orders.seen().len(), 3);
    assert_eq!(servlet.seen().len(), 2);
    gw.shutdown().await;
}

/// shared/testdata/ingress-host-and-exact-examples.md, "Hostname
/// wildcards", over real sockets.
#[tokio::test]
async fn kubernetes_host_wildcard_examples() {
    let exact = Backend::start("foo.bar.com").await;
    let wild = Backend::start("*.foo.com").await;
    let default = Backend::start("default").await;
    let routes = format!(
        "routes:\n  - host: foo.bar.com\n    prefix: /\n    backend: {}\n  - host: '*.foo.com'\n    prefix: /\n    backend: {}\n  - prefix: /\n    backend: {}\n",
        exact.url(),
        wild.url(),
        default.url()
    );
    let gw = TestGateway::start(&routes).await;
    let rows = [
        ("bar.foo.com", "*.foo.com"),
        ("baz.bar.foo.com", "default"),
        ("foo.com", "default"),
        ("foo.bar.com", "foo.bar.com"),
        ("FOO.bar.com:8443", "foo.bar.com"),
        ("anything.example", "default"),
        ("BAR.FOO.COM.", "*.foo.com"),
    ];
    for (host, want) in rows {
        let r = get_with(gw.addr, "/x", &[("host", host)]).await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
        assert_eq!(r.json()["backend"], want, "Host: {host}");
        // Host is kept as the client sent it.
        assert_eq!(r.json()["headers"]["host"], host, "{host}");
    }
    let text = gw.metrics.render();
    for (host, n) in [("foo.bar.com", 2), ("*.foo.com", 2), ("*", 3)] {
        let needle = format!(
            "portico_requests_total{{canary=\"false\",host=\"{host}\",method=\"GET\",route=\"/\",status=\"200\"}} {n}"
        );
        assert!(text.contains(&needle), "{needle} in\n{text}");
    }
    gw.shutdown().await;
}

/// Exact paths (the testdata's "Exact paths" rows), exact beside prefix in a
/// host table, and no fall-through from a host table to the default one.
#[tokio::test]
async fn exact_paths_win_and_a_host_table_never_falls_through() {
    let names = [
        "api-billing",
        "api-exact",
        "api-prefix",
        "exact",
        "prefix",
        "default",
    ];
    let mut b = Vec::new();
    for n in names {
        b.push(Backend::start(n).await);
    }
    let routes = format!(
        "routes:
  - host: api.example.com
    prefix: /billing
    backend: {}
  - host: api.example.com
    exact: /healthcheck
    backend: {}
  - host: api.example.com
    prefix: /healthcheck
    backend: {}
  - exact: /foo
    backend: {}
  - prefix: /foo
    backend: {}
  - prefix: /
    backend: {}
",
        b[0].url(),
        b[1].url(),
        b[2].url(),
        b[3].url(),
        b[4].url(),
        b[5].url()
    );
    let gw = TestGateway::start(&routes).await;
    // (host, target, backend or None for 404)
    let rows: &[(&str, &str, Option<&str>)] = &[
        ("api.example.com", "/billing/x", Some("api-billing")),
        ("api.example.com", "/orders", None), // no fall-through to "/"
        ("api.example.com", "/", None),
        ("api.example.com", "/healthcheck", Some("api-exact")),
        ("api.example.com", "/healthcheck;v=1", Some("api-exact")),
        ("api.example.com", "/healthcheck/", Some("api-prefix")),
        ("api.example.com", "/healthcheck/x", Some("api-prefix")),
        ("www.example.com", "/foo", Some("exact")),
        ("www.example.com", "/x/../foo", Some("exact")),
        ("www.example.com", "/foo/", Some("prefix")),
        ("www.example.com", "/foo/x", Some("prefix")),
        ("www.example.com", "/bar", Some("default")),
        ("www.example.com", "/healthcheck", Some("default")),
    ];
    for (host, target, want) in rows {
        let r = get_with(gw.addr, target, &[("host", host)]).await;
        match want {
            Some(name) => {
                assert_eq!(r.status, StatusCode::OK, "{host}{target}");
                assert_eq!(r.json()["backend"], *name, "{host}{target}");
            }
            None => {
                assert_eq!(r.status, StatusCode::NOT_FOUND, "{host}{target}");
                assert_eq!(r.json()["error"], "no_route", "{host}{target}");
            }
        }
    }
    let text = gw.metrics.render();
    for needle in [
        r#"portico_requests_total{canary="false",host="api.example.com",method="GET",route="none",status="404"} 2"#,
        r#"portico_requests_total{canary="false",host="api.example.com",method="GET",route="=/healthcheck",status="200"} 2"#,
        r#"portico_requests_total{canary="false",host="api.example.com",method="GET",route="/healthcheck",status="200"} 2"#,
        r#"portico_requests_total{canary="false",host="*",method="GET",route="=/foo",status="200"} 2"#,
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
    gw.shutdown().await;
}

/// Without routes for other hosts, a host-only table answers 404 for every
/// other host, and the operator's /routes shows host and exact routes.
#[tokio::test]
async fn hosts_without_a_default_table_are_404_and_routes_lists_them() {
    let b = Backend::start("partner").await;
    let routes = format!(
        "routes:\n  - host: partner.example.com\n    prefix: /\n    backend: {}\n  - host: '*.partner.example.com'\n    exact: /status\n    backend: {}\n",
        b.url(),
        b.url()
    );
    let gw = TestGateway::start(&routes).await;
    let ok = get_with(gw.addr, "/x", &[("host", "Partner.Example.com")]).await;
    assert_eq!(ok.status, StatusCode::OK);
    let ok = get_with(gw.addr, "/status", &[("host", "eu.partner.example.com")]).await;
    assert_eq!(ok.status, StatusCode::OK);
    for host in ["example.com", "127.0.0.1", "a.b.partner.example.com"] {
        let r = get_with(gw.addr, "/x", &[("host", host)]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{host}");
    }
    let v = crate::support::client::get(gw.operator_addr, "/routes")
        .await
        .json();
    assert_eq!(v["routes"][0]["host"], "partner.example.com");
    assert_eq!(v["routes"][0]["prefix"], "/");
    assert_eq!(v["routes"][1]["host"], "*.partner.example.com");
    assert_eq!(v["routes"][1]["exact"], "/status");
    assert!(v["routes"][1]["prefix"].is_null());
    assert_eq!(v["routes"][1]["route"], "=/status");
    gw.shutdown().await;
}
