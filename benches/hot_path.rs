//! Benchmarks for the per-request work before proxying: path normalization
//! (DESIGN §Request path step 3) and prefix lookup (step 5).
//!
//! `lookup/*` runs the same lookup against tables of 10, 1,000 and 10,000
//! prefixes: the radix tree's cost depends on the path, not the table size,
//! and these numbers should stay flat to show it.
//!
//! `select/*` is the whole route choice of a request (host table, exact
//! path, prefix) on real route tables built from route files: 1 host × 10
//! routes against 10,000 hosts × 10 routes. `build/*` is what a reload of
//! such a file costs once it is parsed: the table, matchers and per-route
//! metric handles.

use std::hint::black_box;

use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use portico::config::{RouteFile, parse_route_file};
use portico::observability::metrics::Metrics;
use portico::proxy::upstream::{PoolTimeouts, UpstreamClients};
use portico::routing::host::HostMatch;
use portico::routing::path::{normalize, without_params};
use portico::routing::prefix::PrefixRouter;
use portico::routing::table::{BuildContext, RouteTable};

fn bench_normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    // Already normal: one scan, no allocation (the common case).
    let clean = "/billing/reports/2024/q1/summary.json";
    // Every rule at once: repeated slashes, dot-segments, encoded unreserved
    // characters, a kept encoding in lowercase.
    let dirty = "//billing/./reports/%32024/../2024/q1/%73ummary%2ejson%3a";
    for (name, path) in [("clean", clean), ("dirty", dirty)] {
        group.throughput(Throughput::Bytes(path.len() as u64));
        group.bench_with_input(name, path, |b, path| {
            b.iter(|| normalize(black_box(path)));
        });
    }
    group.finish();
}

/// `n` prefixes shaped like a real route file: teams, services under them,
/// and a versioned API under every fifth service, plus a catch-all `/`.
fn table(n: usize) -> PrefixRouter<usize> {
    let mut router = PrefixRouter::new();
    router.insert("/", usize::MAX).unwrap();
    let mut i = 0;
    while router.len() < n {
        let prefix = match i % 5 {
            0 => format!("/team-{}", i / 5),
            4 => format!("/team-{}/svc-{i}/v2", i / 5),
            _ => format!("/team-{}/svc-{i}", i / 5),
        };
        router.insert(&prefix, i).unwrap();
        i += 1;
    }
    router
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for n in [10, 1_000, 10_000] {
        let router = table(n);
        // Present in every table size: the deepest prefix with i = 4.
        let hit = "/team-0/svc-4/v2/invoices/42";
        // Backtracks from a static branch to the `/team-0` catch-all.
        let fallback = "/team-0/svc-4x/invoices/42";
        // Only the catch-all `/` matches.
        let miss = "/nope/invoices/42";
        assert_eq!(router.lookup(hit), Some(&4));
        assert_eq!(router.lookup(fallback), Some(&0));
        assert_eq!(router.lookup(miss), Some(&usize::MAX));
        for (name, path) in [("hit", hit), ("fallback", fallback), ("root", miss)] {
            group.bench_with_input(BenchmarkId::new(name, n), path, |b, path| {
                b.iter(|| router.lookup(black_box(path)));
            });
        }
    }
    group.finish();
}

/// A route file with `hosts` host names (`h{i}.example.com`, every tenth
/// one a wildcard `*.w{i}.example.com`), each with `per_host` routes (nine
/// prefixes and one exact path), plus a default table of `per_host` routes.
fn route_file(hosts: usize, per_host: usize) -> RouteFile {
    let mut yaml = String::from("routes:\n");
    let mut table = |host: Option<String>| {
        for r in 0..per_host {
            yaml.push_str("  - ");
            if let Some(h) = &host {
                yaml.push_str(&format!("host: '{h}'\n    "));
            }
            if r + 1 == per_host {
                yaml.push_str("exact: /status\n");
            } else {
                yaml.push_str(&format!("prefix: /svc-{r}/v{}\n", r % 3));
            }
            yaml.push_str(&format!("    backend: http://svc-{r}.ns.svc:8080\n"));
        }
    };
    for i in 0..hosts {
        table(Some(if i % 10 == 9 {
            format!("*.w{i}.example.com")
        } else {
            format!("h{i}.example.com")
        }));
    }
    table(None);
    parse_route_file(Path::new("bench-routes.yaml"), &yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn build(
    file: RouteFile,
    metrics: &Metrics,
    clients: &UpstreamClients,
    previous: Option<&RouteTable>,
) -> RouteTable {
    let ctx = BuildContext {
        metrics,
        clients,
        default_timeout: Duration::from_secs(30),
        previous,
    };
    RouteTable::build(file, &ctx).unwrap()
}

fn clients() -> UpstreamClients {
    UpstreamClients::new(PoolTimeouts {
        connect: Duration::from_secs(1),
        idle: Duration::from_secs(50),
    })
    .unwrap()
}

fn bench_select(c: &mut Criterion) {
    let clients = clients();
    let mut group = c.benchmark_group("select");
    for hosts in [1, 10_000] {
        let metrics = Metrics::new();
        let file = route_file(hosts, 10);
        let table = build(file, &metrics, &clients, None);
        assert_eq!(table.len(), (hosts + 1) * 10);
        let cases = [
            ("exact_host", "H0.example.com:8443", "/svc-4/v1/invoices/42"),
            (
                "wildcard_host",
                "eu.w9.example.com",
                "/svc-4/v1/invoices/42",
            ),
            ("exact_path", "h0.example.com", "/status"),
            (
                "default_table",
                "other.example.org",
                "/svc-4/v1/invoices/42",
            ),
        ];
        for (name, host, path) in cases {
            let selected = table.select(Some(host), path);
            assert!(selected.route.is_some(), "{name}");
            // With one host there is no wildcard rule to hit.
            if name == "wildcard_host" && selected.host != Some(HostMatch::Wildcard) {
                continue;
            }
            group.bench_with_input(BenchmarkId::new(name, hosts), &(host, path), |b, (h, p)| {
                b.iter(|| {
                    table
                        .select(black_box(Some(*h)), black_box(p))
                        .route
                        .is_some()
                });
            });
        }
        // What the request path does end to end before lookup, with a
        // `;jsessionid` to cut.
        let raw = "/svc-4;jsessionid=0123456789abcdef/v1/invoices/42";
        group.bench_with_input(
            BenchmarkId::new("normalize_and_select", hosts),
            raw,
            |b, raw| {
                b.iter(|| {
                    let normalized = normalize(black_box(raw)).unwrap();
                    let matching = without_params(&normalized);
                    table
                        .select(Some("h0.example.com"), &matching)
                        .route
                        .is_some()
                });
            },
        );
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let clients = clients();
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for hosts in [1, 10_000] {
        let file = route_file(hosts, 10);
        // The first load: every metric handle is resolved. The file's clone
        // (setup) and the table's drop are outside the measurement.
        let metrics = Metrics::new();
        group.bench_with_input(BenchmarkId::new("first_load", hosts), &file, |b, file| {
            b.iter_batched(
                || (file.clone(), Metrics::new()),
                |(f, m)| build(f, &m, &clients, None),
                BatchSize::LargeInput,
            );
        });
        // Reloads over the live table. One route changed (the usual edit):
        // every other host table is shared whole.
        let live = build(file.clone(), &metrics, &clients, None);
        let mut one = file.clone();
        one.routes[0].timeout = Some(Duration::from_secs(7));
        group.bench_with_input(
            BenchmarkId::new("reload_one_changed", hosts),
            &one,
            |b, f| {
                b.iter_batched(
                    || f.clone(),
                    |f| build(f, &metrics, &clients, Some(&live)),
                    BatchSize::LargeInput,
                );
            },
        );
        // Every route changed: every table is rebuilt, metric handles and
        // in-flight counters are still carried over by key.
        let mut all = file.clone();
        for r in &mut all.routes {
            r.timeout = Some(Duration::from_secs(7));
        }
        group.bench_with_input(
            BenchmarkId::new("reload_all_changed", hosts),
            &all,
            |b, f| {
                b.iter_batched(
                    || f.clone(),
                    |f| build(f, &metrics, &clients, Some(&live)),
                    BatchSize::LargeInput,
                );
            },
        );
        // Freeing a replaced table that shares nothing with its successor
        // (on the reloader's blocking thread).
        group.bench_with_input(BenchmarkId::new("drop", hosts), &file, |b, file| {
            b.iter_batched(
                || build(file.clone(), &metrics, &clients, None),
                drop,
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_normalize,
    bench_lookup,
    bench_select,
    bench_build
);
criterion_main!(benches);
