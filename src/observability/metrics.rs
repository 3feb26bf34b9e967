//! Every metric family Portico exports, with its name in one place, and the
//! per-route handles that the route table resolves once at build time so the
//! request path never formats a label set for the route or histogram.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use parking_lot::RwLock;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

pub const REQUESTS_TOTAL: &str = "portico_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "portico_request_duration_seconds";
pub const UPSTREAM_ERRORS_TOTAL: &str = "portico_upstream_errors_total";
pub const INFLIGHT_REQUESTS: &str = "portico_inflight_requests";
pub const CONNECTIONS_OPEN: &str = "portico_connections_open";
pub const CONNECTIONS_PARKED: &str = "portico_connections_parked";
pub const CONFIG_RELOADS_TOTAL: &str = "portico_config_reloads_total";
pub const CONFIG_GENERATION: &str = "portico_config_generation";
pub const CONFIG_INFO: &str = "portico_config_info";
pub const TLS_CERTIFICATE_EXPIRY: &str = "portico_tls_certificate_expiry_timestamp_seconds";
pub const TLS_HANDSHAKE_ERRORS_TOTAL: &str = "portico_tls_handshake_errors_total";
pub const BUILD_INFO: &str = "portico_build_info";
pub const LOG_LINES_DROPPED_TOTAL: &str = "portico_log_lines_dropped_total";
pub const WORKER_CONNECTIONS_TOTAL: &str = "portico_worker_connections_total";
pub const UPSTREAM_ENDPOINTS: &str = "portico_upstream_endpoints";
pub const UPSTREAM_RETRIES_TOTAL: &str = "portico_upstream_retries_total";
pub const UPSTREAM_RETRY_BUDGET_EXHAUSTED_TOTAL: &str =
    "portico_upstream_retry_budget_exhausted_total";
pub const UPSTREAM_EJECTIONS_TOTAL: &str = "portico_upstream_ejections_total";
pub const CIRCUIT_OPEN_TOTAL: &str = "portico_circuit_open_total";
pub const DNS_REFRESH_TOTAL: &str = "portico_dns_refresh_total";
pub const UPGRADES_OPEN: &str = "portico_upgrades_open";
pub const TRACE_SPANS_EXPORTED_TOTAL: &str = "portico_trace_spans_exported_total";
pub const TRACE_SPANS_DROPPED_TOTAL: &str = "portico_trace_spans_dropped_total";

/// A labelled counter family (the names and labels are constants, so this
/// cannot fail).
fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// A labelled gauge family.
fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// The `route` label for requests that matched no route (404s, 400s, ...).
pub const NO_ROUTE: &str = "none";

/// Latency buckets for a proxy: 0.5 ms to 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The closed set of upstream failure kinds used as the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The TCP connection could not be established (refused, unreachable, connect timeout).
    Connect,
    /// The route's timeout expired before the response head arrived.
    Timeout,
    /// The connection was reset or closed mid-exchange.
    Reset,
    /// The upstream spoke something that is not valid HTTP.
    Protocol,
    /// The TLS handshake with an `https://` backend failed.
    Tls,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
        UpstreamErrorKind::Tls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Tls => "tls",
        }
    }
}

/// The standard methods get their own label value; anything else is `OTHER`,
/// so a client cannot grow the label set by inventing methods.
pub fn method_label(method: &Method) -> (usize, &'static str) {
    const KNOWN: [(&Method, &str); 9] = [
        (&Method::GET, "GET"),
        (&Method::HEAD, "HEAD"),
        (&Method::POST, "POST"),
        (&Method::PUT, "PUT"),
        (&Method::DELETE, "DELETE"),
        (&Method::PATCH, "PATCH"),
        (&Method::OPTIONS, "OPTIONS"),
        (&Method::CONNECT, "CONNECT"),
        (&Method::TRACE, "TRACE"),
    ];
    for (i, (m, name)) in KNOWN.iter().enumerate() {
        if *m == method {
            return (i, name);
        }
    }
    (KNOWN.len(), "OTHER")
}

/// All metric families of one gateway instance, registered in its own
/// registry (tests run several gateways in one process).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub inflight: IntGauge,
    pub connections_open: IntGaugeVec,
    pub connections_parked: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_info: IntGaugeVec,
    pub tls_certificate_expiry: IntGaugeVec,
    pub tls_handshake_errors: IntCounter,
    pub log_lines_dropped: IntCounter,
    /// Public connections accepted, by worker (label bounded by `workers`).
    pub worker_connections: IntCounterVec,
    pub upstream_endpoints: IntGaugeVec,
    pub upstream_retries: IntCounterVec,
    pub retry_budget_exhausted: IntCounterVec,
    pub upstream_ejections: IntCounterVec,
    pub circuit_open: IntCounterVec,
    pub dns_refresh: IntCounterVec,
    pub upgrades_open: IntGaugeVec,
    /// Spans the collector accepted (`tracing.otlp`).
    pub trace_spans_exported: IntCounter,
    /// Spans not exported, by reason (`queue_full`, `export_failed`).
    pub trace_spans_dropped: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every family. Registration only fails on a
    /// duplicate name, which would be a programming error caught by tests.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter_vec(
            REQUESTS_TOTAL,
            "Requests answered, by host rule, route, method and status; canary=\"true\" for those a route's canary answered.",
            &["host", "route", "canary", "method", "status"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                REQUEST_DURATION_SECONDS,
                "Time from request head to the end of the response body, by host rule, route and canary.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["host", "route", "canary"],
        )
        .expect("valid metric");
        let upstream_errors = counter_vec(
            UPSTREAM_ERRORS_TOTAL,
            "Failed upstream exchanges, by host rule, route and kind.",
            &["host", "route", "kind"],
        );
        let inflight = IntGauge::new(INFLIGHT_REQUESTS, "Requests being proxied right now.")
            .expect("valid metric");
        let connections_open = gauge_vec(
            CONNECTIONS_OPEN,
            "Open client connections, by listener.",
            &["listener"],
        );
        let connections_parked = gauge_vec(
            CONNECTIONS_PARKED,
            "Open HTTP/1.1 connections idle between requests with their buffers released, by listener.",
            &["listener"],
        );
        let config_reloads = counter_vec(
            CONFIG_RELOADS_TOTAL,
            "Route file reloads, by result.",
            &["result"],
        );
        let config_generation = IntGauge::new(
            CONFIG_GENERATION,
            "Generation of the route table in use; increases on every successful load.",
        )
        .expect("valid metric");
        let tls_handshake_errors = IntCounter::new(
            TLS_HANDSHAKE_ERRORS_TOTAL,
            "TLS handshakes with clients that failed or timed out.",
        )
        .expect("valid metric");
        let log_lines_dropped = IntCounter::new(
            LOG_LINES_DROPPED_TOTAL,
            "Log lines dropped because the log writer could not keep up.",
        )
        .expect("valid metric");
        let worker_connections = counter_vec(
            WORKER_CONNECTIONS_TOTAL,
            "Public connections accepted, by worker (event loop).",
            &["worker"],
        );
        let config_info = gauge_vec(
            CONFIG_INFO,
            "Always 1; sha256 is the SHA-256 of the route file this replica serves (replicas with different values serve different tables).",
            &["sha256"],
        );
        let tls_certificate_expiry = gauge_vec(
            TLS_CERTIFICATE_EXPIRY,
            "When each certificate in use expires (notAfter, Unix seconds), by its first DNS name.",
            &["name"],
        );
        let upstream_endpoints = gauge_vec(
            UPSTREAM_ENDPOINTS,
            "Backends of routes with more than one, by state (healthy, ejected); set at scrape time.",
            &["host", "route", "state"],
        );
        let upstream_retries = counter_vec(
            UPSTREAM_RETRIES_TOTAL,
            "Requests tried again on another backend, by reason (connect, reset, status).",
            &["host", "route", "reason"],
        );
        let retry_budget_exhausted = counter_vec(
            UPSTREAM_RETRY_BUDGET_EXHAUSTED_TOTAL,
            "Retries not made because the route's retry budget was spent.",
            &["host", "route"],
        );
        let upstream_ejections = counter_vec(
            UPSTREAM_EJECTIONS_TOTAL,
            "Backends ejected for failing in a row (passive outlier ejection).",
            &["host", "route"],
        );
        let circuit_open = counter_vec(
            CIRCUIT_OPEN_TOTAL,
            "Requests a backend's circuit breaker turned away, by the limit reached (max_connections, max_pending).",
            &["host", "route", "limit"],
        );
        let dns_refresh = counter_vec(
            DNS_REFRESH_TOTAL,
            "DNS lookups of routes with discovery: dns, by result (changed, unchanged, empty, failure).",
            &["host", "route", "result"],
        );
        let upgrades_open = gauge_vec(
            UPGRADES_OPEN,
            "Upgraded connections (WebSocket) being spliced right now.",
            &["host", "route"],
        );
        let trace_spans_exported = IntCounter::new(
            TRACE_SPANS_EXPORTED_TOTAL,
            "Request spans the OTLP collector accepted.",
        )
        .expect("valid metric");
        let trace_spans_dropped = counter_vec(
            TRACE_SPANS_DROPPED_TOTAL,
            "Request spans not exported, by reason (queue_full: the collector is slow or down and the queue is full; export_failed: the collector refused or did not answer).",
            &["reason"],
        );
        for reason in ["queue_full", "export_failed"] {
            trace_spans_dropped.with_label_values(&[reason]);
        }
        let build_info = gauge_vec(
            BUILD_INFO,
            "Build information; the value is always 1.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(inflight.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_parked.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_generation.clone()),
            Box::new(config_info.clone()),
            Box::new(tls_certificate_expiry.clone()),
            Box::new(tls_handshake_errors.clone()),
            Box::new(log_lines_dropped.clone()),
            Box::new(worker_connections.clone()),
            Box::new(upstream_endpoints.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(retry_budget_exhausted.clone()),
            Box::new(upstream_ejections.clone()),
            Box::new(circuit_open.clone()),
            Box::new(dns_refresh.clone()),
            Box::new(upgrades_open.clone()),
            Box::new(trace_spans_exported.clone()),
            Box::new(trace_spans_dropped.clone()),
            Box::new(build_info),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        // Both results exist from the start so dashboards see 0, not "no data".
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            inflight,
            connections_open,
            connections_parked,
            config_reloads,
            config_generation,
            config_info,
            tls_certificate_expiry,
            tls_handshake_errors,
            log_lines_dropped,
            worker_connections,
            upstream_endpoints,
            upstream_retries,
            retry_budget_exhausted,
            upstream_ejections,
            circuit_open,
            dns_refresh,
            upgrades_open,
            trace_spans_exported,
            trace_spans_dropped,
        }
    }

    /// Handles for one `host` label value (a configured host pattern, or
    /// `*`) and `route` label value (a configured route, or [`NO_ROUTE`]).
    pub fn route(&self, host: &str, route: &str) -> RouteMetrics {
        self.route_side(host, route, false)
    }

    /// Handles for the canary of a route: the same series as
    /// [`route`](Self::route) except `canary="true"` on requests and
    /// durations. Resolved when the table is built, like the route's.
    pub fn canary_route(&self, host: &str, route: &str) -> RouteMetrics {
        self.route_side(host, route, true)
    }

    fn route_side(&self, host: &str, route: &str, canary: bool) -> RouteMetrics {
        let canary = if canary { "true" } else { "false" };
        RouteMetrics {
            inner: Arc::new(RouteMetricsInner {
                host: host.to_owned(),
                route: route.to_owned(),
                canary,
                requests: self.requests.clone(),
                by_method_status: RwLock::new(HashMap::default()),
                duration: self.duration.with_label_values(&[host, route, canary]),
                upstream_errors: UpstreamErrorKind::ALL.map(|k| {
                    self.upstream_errors
                        .with_label_values(&[host, route, k.as_str()])
                }),
                // Resolved on first use: retries and ejections are rare,
                // and a large table should not pay for them at build.
                retries: self.upstream_retries.clone(),
                budget_exhausted: self.retry_budget_exhausted.clone(),
                ejections: self.upstream_ejections.clone(),
                circuit_open: self.circuit_open.clone(),
                dns_refresh: self.dns_refresh.clone(),
                upgrades_open: self.upgrades_open.clone(),
            }),
        }
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        self.log_lines_dropped
            .inc_by(super::logging::dropped_lines().saturating_sub(self.log_lines_dropped.get()));
        let families = self.registry.gather();
        let mut out = String::new();
        // Encoding into a String only fails on invalid UTF-8, which our own
        // label values (prefixes, fixed strings) can never contain.
        let _ = prometheus::TextEncoder::new().encode_utf8(&families, &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Pre-resolved handles for one route. Cheap to clone.
#[derive(Clone)]
pub struct RouteMetrics {
    inner: Arc<RouteMetricsInner>,
}

struct RouteMetricsInner {
    host: String,
    route: String,
    /// `"true"` for the handles of a route's canary, else `"false"`.
    canary: &'static str,
    requests: IntCounterVec,
    /// `(method index, status)` → counter: the status is only known per
    /// response, so counters are resolved on first use and then reused.
    /// Read once per request: foldhash, not SipHash (the key is ours, not
    /// the client's).
    by_method_status: RwLock<HashMap<(usize, u16), IntCounter, foldhash::fast::RandomState>>,
    duration: Histogram,
    upstream_errors: [IntCounter; UpstreamErrorKind::ALL.len()],
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    ejections: IntCounterVec,
    circuit_open: IntCounterVec,
    dns_refresh: IntCounterVec,
    upgrades_open: IntGaugeVec,
}

impl RouteMetrics {
    /// Counts one answered request and its duration.
    pub fn observe(&self, method: &Method, status: u16, seconds: f64) {
        let inner = &*self.inner;
        let (idx, name) = method_label(method);
        let hit = inner.by_method_status.read().get(&(idx, status)).cloned();
        let counter = match hit {
            Some(c) => c,
            None => {
                let mut map = inner.by_method_status.write();
                map.entry((idx, status))
                    .or_insert_with(|| {
                        inner.requests.with_label_values(&[
                            inner.host.as_str(),
                            inner.route.as_str(),
                            inner.canary,
                            name,
                            itoa_status(status).as_str(),
                        ])
                    })
                    .clone()
            }
        };
        counter.inc();
        inner.duration.observe(seconds);
    }

    /// Counts one failed upstream exchange.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        let idx = UpstreamErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.inner.upstream_errors[idx].inc();
    }

    /// `family{host, route, extra}` for this route: the resilience series,
    /// resolved on first use (they are rare, and a large table should not
    /// pay for them at build).
    fn labelled(&self, family: &IntCounterVec, extra: Option<&str>) -> IntCounter {
        let i = &*self.inner;
        match extra {
            Some(x) => family.with_label_values(&[i.host.as_str(), i.route.as_str(), x]),
            None => family.with_label_values(&[i.host.as_str(), i.route.as_str()]),
        }
    }

    /// Counts a retry (`reason`: connect, reset, status).
    pub fn retried(&self, reason: &str) {
        self.labelled(&self.inner.retries, Some(reason)).inc();
    }

    /// Counts a retry the budget refused.
    pub fn retry_refused(&self) {
        self.labelled(&self.inner.budget_exhausted, None).inc();
    }

    /// Counts a request a backend's circuit breaker turned away.
    pub fn circuit_open(&self, limit: &str) {
        self.labelled(&self.inner.circuit_open, Some(limit)).inc();
    }

    /// Counts a DNS lookup of the route's backends.
    pub fn dns_refresh(&self, result: &str) {
        self.labelled(&self.inner.dns_refresh, Some(result)).inc();
    }

    /// Counts a backend ejection.
    pub fn ejected(&self) {
        self.labelled(&self.inner.ejections, None).inc();
    }

    /// `portico_upgrades_open` for the route.
    pub fn upgrades_open(&self) -> IntGauge {
        let i = &*self.inner;
        i.upgrades_open
            .with_label_values(&[i.host.as_str(), i.route.as_str()])
    }

    pub fn route(&self) -> &str {
        &self.inner.route
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Whether these are a canary's handles (marks the access log line).
    pub fn is_canary(&self) -> bool {
        self.inner.canary == "true"
    }

    /// Handles registered nowhere: for the empty table that exists before
    /// the gateway's metrics do. Counting into them is harmless and unseen.
    pub fn detached(host: &str, route: &str) -> RouteMetrics {
        Metrics::new().route(host, route)
    }
}

fn itoa_status(status: u16) -> String {
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_name_is_exported() {
        let m = Metrics::new();
        let r = m.route("*", "/billing");
        r.observe(&Method::GET, 200, 0.01);
        r.upstream_error(UpstreamErrorKind::Timeout);
        m.connections_open.with_label_values(&["http"]).set(1);
        let text = m.render();
        for name in [
            REQUESTS_TOTAL,
            REQUEST_DURATION_SECONDS,
            UPSTREAM_ERRORS_TOTAL,
            INFLIGHT_REQUESTS,
            CONNECTIONS_OPEN,
            CONFIG_RELOADS_TOTAL,
            CONFIG_GENERATION,
            TLS_HANDSHAKE_ERRORS_TOTAL,
            BUILD_INFO,
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains(
            r#"portico_requests_total{canary="false",host="*",method="GET",route="/billing",status="200"} 1"#
        ));
        assert!(text.contains(
            r#"portico_upstream_errors_total{host="*",kind="timeout",route="/billing"} 1"#
        ));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd).1, "OTHER");
        assert_eq!(method_label(&Method::PATCH).1, "PATCH");
    }

    #[test]
    fn repeated_observations_reuse_one_series() {
        let m = Metrics::new();
        let r = m.route("api.example.com", NO_ROUTE);
        for _ in 0..5 {
            r.observe(&Method::POST, 404, 0.001);
        }
        let text = m.render();
        assert!(
            text.contains(r#"portico_requests_total{canary="false",host="api.example.com",method="POST",route="none",status="404"} 5"#)
        );
    }
}
