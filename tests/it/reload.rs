//! Live route reloads with real files: in-place writes, renames, deletion,
//! and the exact Kubernetes ConfigMap symlink swap, under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::backend::Backend;
use crate::support::client::get;
use crate::support::gateway::{TestGateway, routes_yaml};

/// Waits until the live generation reaches `want`; returns how long it took.
async fn wait_generation(gw: &TestGateway, want: u64) -> Duration {
    let started = std::time::Instant::now();
    while gw.live.generation() < want {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "generation {want} not live within 2s (at {}; last error {:?})",
            gw.live.generation(),
            gw.live.status().last_error
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_configmap_swaps_under_load_drop_nothing() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    // Two valid tables: /svc goes to a or b; /only-a and /only-b exist in one each.
    let table_a = routes_yaml(&[("/svc", &a), ("/only-a", &a)]);
    let table_b = routes_yaml(&[("/svc", &b), ("/only-b", &b)]);
    let (gw, mut cm) = TestGateway::on_configmap(&table_a).await;
    assert_eq!(gw.live.generation(), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, ok, addr) = (stop.clone(), ok.clone(), gw.addr);
        clients.push(tokio::spawn(async move {
            let client = crate::support::client::http1();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for path in ["/svc/x", "/only-a", "/only-b"] {
                    let req = http::Request::get(format!("http://{addr}{path}"))
                        .body(http_body_util::Full::default())
                        .unwrap();
                    let r = crate::support::client::send(&client, req).await;
                    let backend = if r.status == 200 {
                        r.json()["backend"].as_str().map(str::to_owned)
                    } else {
                        None
                    };
                    let allowed = matches!(
                        (path, r.status.as_u16(), backend.as_deref()),
                        ("/svc/x", 200, Some("a" | "b"))
                            | ("/only-a", 200, Some("a"))
                            | ("/only-a", 404, None)
                            | ("/only-b", 200, Some("b"))
                            | ("/only-b", 404, None)
                    );
                    if allowed {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push(format!("{path} -> {} {:?}", r.status, r.text()));
                    }
                }
            }
            failures
        }));
    }

    let mut slowest = Duration::ZERO;
    for i in 0..50u64 {
        cm.swap(if i % 2 == 0 { &table_b } else { &table_a });
        slowest = slowest.max(wait_generation(&gw, i + 2).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 500,
        "load kept flowing: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(gw.live.generation(), 51);
    // The last swap (i = 49) published table_a.
    assert_eq!(get(gw.addr, "/svc").await.json()["backend"], "a");
    assert_eq!(get(gw.addr, "/only-b").await.status, 404);
    assert!(
        a.seen().len() > 10 && b.seen().len() > 10,
        "both tables served"
    );
    let text = gw.metrics.render();
    assert!(
        text.contains("portico_config_reloads_total{result=\"success\"} 51"),
        "{text}"
    );
    assert!(text.contains("portico_config_generation 51"));
    // portico_config_info: one series, the hash of the file now served.
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("portico_config_info{"))
        .collect();
    let sha = gw.live.status().sha256.clone().expect("a table is loaded");
    assert_eq!(info, [format!("portico_config_info{{sha256=\"{sha}\"}} 1")]);
    eprintln!(
        "50 swaps: slowest pickup {slowest:?}, {} good responses",
        ok.load(Ordering::Relaxed)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_invalid_swap_keeps_the_old_table_and_a_valid_one_follows() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (gw, mut cm) = TestGateway::on_configmap(&routes_yaml(&[("/svc", &a)])).await;

    cm.swap(
        "routes:\n  - prefix: /svc/\n    backend: http://x:1\n  - prefix: /y\n    backend: nope\n",
    );
    let err = gw.rejected_reload(Duration::from_secs(2)).await;
    let file = cm.file().display().to_string();
    assert!(err.contains(&format!("{file}:2:13:")), "{err}");
    assert!(
        err.contains(&format!("{file}:5:14:")),
        "both errors, with line and column: {err}"
    );
    assert_eq!(gw.live.generation(), 1);
    assert_eq!(
        get(gw.addr, "/svc").await.json()["backend"],
        "a",
        "the old table serves"
    );
    // Polling the same bad file again does not count it again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = gw.metrics.render();
    assert!(
        text.contains("portico_config_reloads_total{result=\"failure\"} 1"),
        "{text}"
    );

    cm.swap(&routes_yaml(&[("/svc", &b)]));
    wait_generation(&gw, 2).await;
    assert_eq!(get(gw.addr, "/svc").await.json()["backend"], "b");
    assert!(
        gw.live.status().last_error.is_none(),
        "a good load clears the error"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn in_place_writes_renames_and_deletion() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/svc", &a)])).await;
    let path = gw.routes_path.clone();

    // In-place write.
    std::fs::write(&path, routes_yaml(&[("/svc", &b)])).unwrap();
    wait_generation(&gw, 2).await;
    assert_eq!(get(gw.addr, "/svc").await.json()["backend"], "b");

    // Rename over it, as editors and `mv` do.
    let tmp = gw.dir().join("routes.yaml.tmp");
    std::fs::write(&tmp, routes_yaml(&[("/svc", &a), ("/extra", &b)])).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_generation(&gw, 3).await;
    assert_eq!(get(gw.addr, "/extra").await.json()["backend"], "b");

    // The file disappears: the last good table keeps serving, the error is shown.
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.live.generation(), 3);
    assert_eq!(get(gw.addr, "/extra").await.status, 200);
    assert!(gw.live.status().last_error.unwrap().contains("cannot read"));
    assert!(gw.live.is_loaded(), "still ready with the last good table");

    // It comes back.
    std::fs::write(&path, routes_yaml(&[("/svc", &a)])).unwrap();
    wait_generation(&gw, 4).await;
    assert_eq!(get(gw.addr, "/extra").await.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_table_they_started_with() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = TestGateway::start(&routes_yaml(&[("/svc", &a)])).await;
    let addr = gw.addr;
    let slow = tokio::spawn(async move { get(addr, "/svc?sleep_ms=800").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Remove /svc's backend a from the table while the request is in flight.
    std::fs::write(&gw.routes_path, routes_yaml(&[("/other", &b)])).unwrap();
    wait_generation(&gw, 2).await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["backend"], "a");
    assert_eq!(get(addr, "/svc").await.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn unchanged_routes_keep_their_warm_upstream_connections_across_reloads() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    // One worker: pools are per worker, and each new client connection may
    // land on either.
    let gw = TestGateway::start_with(&routes_yaml(&[("/svc", &a)]), "workers: 1\n").await;
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "/svc").await.status, 200);
    }
    assert_eq!(
        a.connections(),
        1,
        "sequential requests share one pooled connection"
    );
    // Reload with /svc unchanged and a route added and changed around it.
    std::fs::write(&gw.routes_path, routes_yaml(&[("/new", &b), ("/svc", &a)])).unwrap();
    wait_generation(&gw, 2).await;
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "/svc").await.json()["backend"], "a");
    }
    assert_eq!(
        a.connections(),
        1,
        "the reload did not cost a new upstream connection"
    );
    gw.shutdown().await;
}

// Regression: the watcher reacted to its own reads of the route file (inotify
// access events), re-reading it every debounce interval forever and delaying
// SIGHUP handling. Unchanged, the file is read about once per poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_route_file_is_read_once_per_poll_not_in_a_loop() {
    use notify::Watcher;
    let a = Backend::start("a").await;
    let gw = TestGateway::start(&routes_yaml(&[("/svc", &a)])).await;
    let opens = Arc::new(AtomicU64::new(0));
    let counter = opens.clone();
    let name = gw.routes_path.file_name().unwrap().to_owned();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && matches!(
                ev.kind,
                notify::EventKind::Access(notify::event::AccessKind::Open(_))
            )
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    watcher
        .watch(gw.dir(), notify::RecursiveMode::NonRecursive)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let n = opens.load(Ordering::SeqCst);
    assert!(
        (1..=5).contains(&n),
        "route file opened {n} times in 3 s (poll is 1 s)"
    );
    gw.shutdown().await;
}
