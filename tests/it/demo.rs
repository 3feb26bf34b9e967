//! `portico demo`: the real binary with its built-in backends, driven the
//! way the README tells a newcomer to try it.

use std::time::Duration;

use http::StatusCode;

use crate::support::binary::Serve;
use crate::support::client::{get, get_with, raw_get};

#[tokio::test]
async fn demo_routes_normalizes_and_exposes_the_operator_listener() {
    let mut demo = Serve::spawn(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--listen-https",
        "127.0.0.1:0",
    ]);
    let http = demo.listening("http");
    demo.listening("https");
    let operator = demo.listening("operator");

    // Longest prefix, query passed through, the generated id echoed back.
    let r = get(http, "/billing/reports/2024/q1?format=csv").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["service"], "billing-reports");
    assert_eq!(seen["path"], "/billing/reports/2024/q1");
    assert_eq!(seen["query"], "format=csv");
    assert_eq!(
        seen["headers"]["x-request-id"].as_str(),
        r.header("x-request-id")
    );

    // Segment-wise: /billing/reportsX belongs to /billing.
    assert_eq!(
        get(http, "/billing/reportsX").await.json()["service"],
        "billing"
    );
    // strip_prefix: the orders backend sees /42.
    let orders = get(http, "/orders/42").await.json();
    assert_eq!(
        (orders["service"].as_str(), orders["path"].as_str()),
        (Some("orders"), Some("/42"))
    );
    // Normalized before routing and forwarding.
    let (status, body) = raw_get(http, "/billing/./a//b/../c").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"path\": \"/billing/a/c\""), "{body}");
    // A valid incoming request id is kept.
    let r = get_with(http, "/billing", &[("x-request-id", "my-ticket-123")]).await;
    assert_eq!(r.json()["headers"]["x-request-id"], "my-ticket-123");
    // Operator paths are not public; the operator listener serves them.
    assert_eq!(get(http, "/metrics").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(operator, "/readyz").await.status, StatusCode::OK);
    let metrics = get(operator, "/metrics").await.text();
    assert!(
        metrics.contains(
            "portico_requests_total{canary=\"false\",host=\"*\",method=\"GET\",route=\"/billing/reports\",status=\"200\"} 1"
        ),
        "{metrics}"
    );

    demo.signal("TERM");
    assert_eq!(demo.wait_exit(Duration::from_secs(10)), Some(0));
    let out = demo.drain_lines().join("\n");
    assert!(
        out.contains("curl -s http://127.0.0.1:"),
        "demo prints curl commands:\n{out}"
    );
    assert!(out.contains(&format!("{operator}/readyz")), "{out}");
}
