//! Route keys that `portico import` needs from ingress-nginx, over real
//! sockets: `allow_from` (decided on the TCP peer, never a header),
//! `redirect` (answered by Portico without a backend), `max_body_size`
//! (the route's own body cap) and `host_header` (the upstream `Host`).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::backend::Backend;
use crate::support::client::{get, get_with, http1, send};
use crate::support::gateway::TestGateway;

#[tokio::test]
async fn allow_from_admits_listed_peers_and_refuses_others_whatever_the_headers() {
    let b = Backend::start("b").await;
    let routes = format!(
        "routes:\n\
         - prefix: /internal\n  backend: {u}\n  allow_from: [10.0.0.0/8, \"192.168.0.0/16\"]\n\
         - prefix: /local\n  backend: {u}\n  allow_from: [127.0.0.1]\n\
         - prefix: /open\n  backend: {u}\n",
        u = b.url()
    );
    let gw = TestGateway::start(&routes).await;
    // The test client's peer is 127.0.0.1: outside 10/8 and 192.168/16.
    // Headers that claim another address change nothing.
    for headers in [
        vec![],
        vec![("x-forwarded-for", "10.1.2.3")],
        vec![("x-real-ip", "10.1.2.3"), ("forwarded", "for=10.1.2.3")],
    ] {
        let r = get_with(gw.addr, "/internal/x", &headers).await;
        assert_eq!(r.status, 403, "{headers:?}");
        let v = r.json();
        assert_eq!(v["error"], "forbidden");
        assert!(v["request_id"].is_string());
    }
    assert!(
        b.seen().iter().all(|s| !s.target.starts_with("/internal")),
        "a refused request never reaches the backend"
    );
    let r = get(gw.addr, "/local/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(b.last().target, "/local/x");
    // Routes without the key are open.
    assert_eq!(get(gw.addr, "/open").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn redirect_routes_answer_with_location_and_no_backend() {
    let b = Backend::start("b").await;
    let routes = format!(
        "routes:\n\
         - prefix: /old\n  redirect: {{to: \"https://new.example.com/shop\", status: 308}}\n\
         - exact: /\n  redirect: {{to: /app}}\n\
         - prefix: /app\n  backend: {u}\n",
        u = b.url()
    );
    let gw = TestGateway::start(&routes).await;
    let r = get(gw.addr, "/old/cart?x=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://new.example.com/shop"));
    assert!(r.header("x-request-id").is_some());
    let r = get(gw.addr, "/").await;
    assert_eq!(r.status, 302, "status defaults to 302");
    assert_eq!(r.header("location"), Some("/app"));
    assert!(b.seen().is_empty(), "redirects never reach a backend");
    assert_eq!(get(gw.addr, "/app/home").await.status, 200);
    // /routes shows the redirect.
    let table = get(gw.operator_addr, "/routes").await.json();
    let old = table["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/old")
        .unwrap()
        .clone();
    assert_eq!(old["redirect"]["status"], 308);
    assert_eq!(old["redirect"]["to"], "https://new.example.com/shop");
    assert_eq!(old["backends"].as_array().unwrap().len(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn max_body_size_overrides_the_gateway_limit_per_route() {
    let b = Backend::start("b").await;
    let routes = format!(
        "routes:\n\
         - prefix: /small\n  backend: {u}\n  max_body_size: 1KiB\n\
         - prefix: /large\n  backend: {u}\n  max_body_size: 1MiB\n\
         - prefix: /default\n  backend: {u}\n",
        u = b.url()
    );
    let gw = TestGateway::start_with(&routes, "limits:\n  max_body_size: 64KiB\n").await;
    let post = |path: &str, n: usize| {
        Request::post(format!("http://{}{path}", gw.addr))
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .unwrap()
    };
    let client = http1();
    let r = send(&client, post("/small", 2048)).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    assert!(b.seen().is_empty());
    // Under the route's cap but over the gateway's: the route's wins.
    let r = send(&client, post("/large", 200 * 1024)).await;
    assert_eq!(r.status, 200);
    assert_eq!(b.last().body_bytes, 200 * 1024);
    // Without the key, limits.max_body_size holds.
    let r = send(&client, post("/default", 200 * 1024)).await;
    assert_eq!(r.status, 413);
    // The body was not read: the connection is not kept, and the client is told.
    assert_eq!(r.header("connection"), Some("close"));
    let r = send(&client, post("/small", 512)).await;
    assert_eq!(r.status, 200);
    // Chunked, without Content-Length: the streaming cap is the route's too.
    let chunked = |path: &str, n: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{n:x}\r\n{}\r\n0\r\n\r\n",
            "x".repeat(n)
        )
    };
    let resp = crate::support::client::raw(gw.addr, chunked("/large", 200 * 1024).as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(b.last().body_bytes, 200 * 1024);
    let resp = crate::support::client::raw(gw.addr, chunked("/small", 2048).as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    gw.shutdown().await;
}

#[tokio::test]
async fn host_header_replaces_the_upstream_host_and_keeps_x_forwarded_host() {
    let b = Backend::start("b").await;
    let routes = format!(
        "routes:\n\
         - prefix: /vhost\n  backend: {u}\n  host_header: billing.internal:8080\n\
         - prefix: /plain\n  backend: {u}\n",
        u = b.url()
    );
    let gw = TestGateway::start(&routes).await;
    let r = get_with(gw.addr, "/vhost/x", &[("host", "api.example.com")]).await;
    assert_eq!(r.status, 200);
    let seen = b.last();
    assert_eq!(seen.headers["host"], "billing.internal:8080");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
    let r = get_with(gw.addr, "/plain/x", &[("host", "api.example.com")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(b.last().headers["host"], "api.example.com");
    gw.shutdown().await;
}
