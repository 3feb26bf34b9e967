//! Thread-per-core serving (`workers`): connections spread over every
//! worker, and what is shared — the route table, the limits, the drain —
//! holds across them.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::backend::Backend;
use crate::support::binary::Serve;
use crate::support::client::{get, http1, send};
use crate::support::gateway::{TestGateway, routes_yaml};

/// Connections each worker accepted, from the gateway's own counter.
fn accepted(gw: &TestGateway, worker: usize) -> u64 {
    gw.metrics
        .worker_connections
        .with_label_values(&[worker.to_string().as_str()])
        .get()
}

/// `n` requests at once, each on a connection of its own.
async fn concurrently(addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_string();
            tokio::spawn(async move { get(addr, &path).await.status })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn connections_spread_over_every_worker_and_a_reload_reaches_them_all() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = TestGateway::start_with(&routes_yaml(&[("/svc", &a)]), "workers: 2\n").await;
    let statuses = concurrently(gw.addr, "/svc", 64).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let (w1, w2) = (accepted(&gw, 1), accepted(&gw, 2));
    assert_eq!(w1 + w2, 64);
    assert!(
        w1 > 0 && w2 > 0,
        "one worker took every connection: {w1} / {w2}"
    );

    // One route table for all: after a reload every worker routes to b.
    std::fs::write(&gw.routes_path, routes_yaml(&[("/svc", &b)])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.live.generation() < 2 {
        assert!(Instant::now() < deadline, "reload not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = (accepted(&gw, 1), accepted(&gw, 2));
    let seen_by_a = a.seen().len();
    let statuses = concurrently(gw.addr, "/svc", 64).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(a.seen().len(), seen_by_a, "a worker kept the old table");
    assert_eq!(b.seen().len(), 64);
    assert!(accepted(&gw, 1) > before.0 && accepted(&gw, 2) > before.1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_keep_alive_client_reuses_one_upstream_connection_on_its_worker() {
    let a = Backend::start("a").await;
    let gw = TestGateway::start_with(&routes_yaml(&[("/svc", &a)]), "workers: 2\n").await;
    let url = format!("http://{}/svc", gw.addr);
    let once = |client: &Client| {
        let req = http::Request::get(&url).body(Default::default()).unwrap();
        let client = client.clone();
        async move { assert_eq!(send(&client, req).await.status, 200) }
    };
    let first = http1();
    for _ in 0..10 {
        once(&first).await;
    }
    assert_eq!(a.connections(), 1);

    // A second client connection on the other worker (new connections until
    // one lands there; those on the first worker reuse its upstream).
    let first_worker = if accepted(&gw, 1) == 1 { 1 } else { 2 };
    let other = 3 - first_worker;
    let mut second = None;
    for _ in 0..64 {
        let client = http1();
        once(&client).await;
        if accepted(&gw, other) == 1 {
            second = Some(client);
            break;
        }
    }
    let second = second.expect("no connection reached the other worker");
    // Requests alternate between the workers, one at a time: a pool shared
    // by the workers would carry them all on one upstream connection; each
    // worker keeps its own instead.
    for _ in 0..5 {
        once(&first).await;
        once(&second).await;
    }
    assert_eq!(a.connections(), 2, "one upstream connection per worker");
    gw.shutdown().await;
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

#[tokio::test]
// max_connections across workers: limits::connections_over_the_limit_wait_in_the_backlog
// runs on two workers (it caught a worker starving the other of permits).
async fn max_inflight_holds_across_workers() {
    let slow = Backend::start("slow").await;
    let gw = TestGateway::start_with(
        &routes_yaml(&[("/slow", &slow)]),
        "workers: 2\nlimits:\n  max_inflight: 4\n",
    )
    .await;
    // 30 connections: the chance that one worker gets none is 2^-29.
    let statuses = concurrently(gw.addr, "/slow?sleep_ms=800", 30).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let shed = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!((ok, shed), (4, 26), "{statuses:?}");
    assert!(accepted(&gw, 1) > 0 && accepted(&gw, 2) > 0);
    assert_eq!(gw.metrics.inflight.get(), 0);
    gw.shutdown().await;
}

/// The real binary: `workers: 3` runs three worker threads, says so, and a
/// SIGTERM drains requests in flight on every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_its_workers_and_drains_them_all_on_sigterm() {
    let b = Backend::start("slow").await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Serve::with_routes(
        dir.path(),
        &routes_yaml(&[("/slow", &b)]),
        "workers: 3\nshutdown:\n  drain_delay: 0s\n  timeout: 5s\n",
    );
    let addr = gw.listening("http");
    let operator = gw.listening("operator");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gw.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("portico-w"))
        .collect();
    assert_eq!(threads.len(), 3, "{threads:?}");

    let requests: Vec<_> = (0..48)
        .map(|_| tokio::spawn(async move { get(addr, "/slow/x?sleep_ms=1500").await.status }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.seen().len() < 48 {
        assert!(
            Instant::now() < deadline,
            "requests did not reach the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every worker holds some of them.
    let text = get(operator, "/metrics").await.text();
    for w in 1..=3 {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "portico_worker_connections_total{{worker=\"{w}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no counter for worker {w}:\n{text}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 0.0, "worker {w} accepted nothing");
    }
    gw.signal("TERM");
    for r in requests {
        assert_eq!(
            r.await.unwrap(),
            StatusCode::OK,
            "a request in flight was dropped"
        );
    }
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}
