//! Benchmarks for the per-request work before proxying: path normalization
//! (DESIGN §Request path step 3) and prefix lookup (step 5).
//!
//! `lookup/*` runs the same lookup against tables of 10, 1,000 and 10,000
//! prefixes: the radix tree's cost depends on the path, not the table size,
//! and these numbers should stay flat to show it.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use portico::routing::path::normalize;
use portico::routing::prefix::PrefixRouter;

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

criterion_group!(benches, bench_normalize, bench_lookup);
criterion_main!(benches);
