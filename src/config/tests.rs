//! Table-driven tests for `portico.yaml` and the route file: valid files,
//! every rule's error with its exact line and column, and multi-error
//! reporting. (Duration and size syntax are tested next to their parsers.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::routes::prefix_problem;
use super::*;

const CONFIG: &str = "/etc/portico/portico.yaml";
const ROUTES: &str = "/etc/portico/routes/routes.yaml";

/// `(line, column, message)` of every error, or a panic if it parsed.
fn errors<T: std::fmt::Debug>(result: Result<T, ConfigErrors>) -> Vec<(usize, usize, String)> {
    let errors = result.expect_err("expected errors");
    assert!(!errors.is_empty());
    errors
        .iter()
        .map(|e| {
            let l = e.location().expect("an Invalid error");
            (l.line, l.column, e.message().to_string())
        })
        .collect()
}

/// Asserts one error at `line:column` whose message contains `needle`.
fn assert_one<T: std::fmt::Debug>(
    result: Result<T, ConfigErrors>,
    line: usize,
    column: usize,
    needle: &str,
    yaml: &str,
) {
    let errors = errors(result);
    assert_eq!(
        errors.len(),
        1,
        "expected one error for\n{yaml}\ngot {errors:#?}"
    );
    let (l, c, message) = &errors[0];
    assert!(
        message.contains(needle),
        "message {message:?} lacks {needle:?} for\n{yaml}"
    );
    assert_eq!(
        (*l, *c),
        (line, column),
        "position of {message:?} for\n{yaml}"
    );
}

fn gateway(yaml: &str) -> Result<GatewayConfig, ConfigErrors> {
    parse_gateway_config(Path::new(CONFIG), yaml)
}

fn routes(yaml: &str) -> Result<RouteFile, ConfigErrors> {
    parse_route_file(Path::new(ROUTES), yaml)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------- portico.yaml

#[test]
fn full_gateway_config() {
    let yaml = r#"
# every key, none at its default
listen:
  http: 0.0.0.0:8080
  https: "[::]:8443"
  redirect_to_https: true
tls:
  certificates:
    - cert: tls/tls.crt
      key: tls/tls.key
    - cert: /abs/other.crt
      key: /abs/other.key
  handshake_timeout: 3s
operator:
  listen: 127.0.0.1:9902
  allow: [10.0.0.0/8, 192.168.1.7, "::1", "fd00::/8"]
  token_file: secrets/token
routes_file: routes/routes.yaml
log_level: DEBUG
limits:
  header_read_timeout: 2s
  max_header_size: 32KiB
  max_body_size: 1MB
  idle_timeout: 90s
  max_connections: 100
  max_inflight: 50
  upstream_connect_timeout: 250ms
  upstream_timeout: 1m
  upstream_idle_timeout: 20s
shutdown:
  drain_delay: 0s
  timeout: 1h
"#;
    let cfg = gateway(yaml).unwrap();
    assert_eq!(cfg.source, PathBuf::from(CONFIG));
    assert_eq!(cfg.listen.http, Some(addr("0.0.0.0:8080")));
    assert_eq!(cfg.listen.https, Some(addr("[::]:8443")));
    assert!(cfg.listen.redirect_to_https);
    let tls = cfg.tls.unwrap();
    assert_eq!(
        tls.certificates,
        vec![
            CertificatePaths {
                cert: "/etc/portico/tls/tls.crt".into(),
                key: "/etc/portico/tls/tls.key".into()
            },
            CertificatePaths {
                cert: "/abs/other.crt".into(),
                key: "/abs/other.key".into()
            },
        ]
    );
    assert_eq!(tls.handshake_timeout, Duration::from_secs(3));
    assert_eq!(cfg.operator.listen, addr("127.0.0.1:9902"));
    let allow: Vec<String> = cfg.operator.allow.iter().map(ToString::to_string).collect();
    assert_eq!(
        allow,
        ["10.0.0.0/8", "192.168.1.7/32", "::1/128", "fd00::/8"]
    );
    assert_eq!(
        cfg.operator.token_file,
        Some(PathBuf::from("/etc/portico/secrets/token"))
    );
    assert_eq!(cfg.routes_file, PathBuf::from(ROUTES));
    assert_eq!(cfg.log_level.as_deref(), Some("debug"));
    let l = &cfg.limits;
    assert_eq!(l.header_read_timeout, Duration::from_secs(2));
    assert_eq!(l.max_header_bytes, 32 * 1024);
    assert_eq!(l.max_body_bytes, 1_000_000);
    assert_eq!(l.idle_timeout, Duration::from_secs(90));
    assert_eq!(l.max_connections, 100);
    assert_eq!(l.max_inflight, 50);
    assert_eq!(l.upstream_connect_timeout, Duration::from_millis(250));
    assert_eq!(l.upstream_timeout, Duration::from_secs(60));
    assert_eq!(l.upstream_idle_timeout, Duration::from_secs(20));
    assert_eq!(cfg.shutdown.drain_delay, Duration::ZERO);
    assert_eq!(cfg.shutdown.timeout, Duration::from_secs(3600));
}

#[test]
fn minimal_gateway_config_gets_defaults() {
    let cfg = gateway("listen:\n  http: 127.0.0.1:0\nroutes_file: routes.yaml\n").unwrap();
    assert_eq!(cfg.listen.http, Some(addr("127.0.0.1:0")));
    assert_eq!(cfg.listen.https, None);
    assert!(!cfg.listen.redirect_to_https);
    assert!(cfg.tls.is_none());
    assert_eq!(cfg.routes_file, PathBuf::from("/etc/portico/routes.yaml"));
    assert_eq!(cfg.log_level, None);
    assert_eq!(cfg.operator.listen, addr("0.0.0.0:9901"));
    let allow: Vec<String> = cfg.operator.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(cfg.operator.token_file, None);
    let l = &cfg.limits;
    assert_eq!(l.header_read_timeout, Duration::from_secs(10));
    assert_eq!(l.max_header_bytes, 64 * 1024);
    assert_eq!(l.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.max_inflight, 5_000);
    assert_eq!(l.upstream_connect_timeout, Duration::from_secs(5));
    assert_eq!(l.upstream_timeout, Duration::from_secs(30));
    assert_eq!(l.upstream_idle_timeout, Duration::from_secs(50));
    assert_eq!(cfg.shutdown.drain_delay, Duration::from_secs(5));
    assert_eq!(cfg.shutdown.timeout, Duration::from_secs(25));
}

#[test]
fn gateway_optional_nulls_mean_unset() {
    let yaml = "listen:\n  http: 0.0.0.0:8080\n  https:\noperator:\n  token_file: null\n  allow: ~\nlog_level:\ntls: null\nlimits:\nroutes_file: r.yaml\n";
    let cfg = gateway(yaml).unwrap();
    assert_eq!(cfg.listen.https, None);
    assert_eq!(cfg.operator.token_file, None);
    assert_eq!(cfg.operator.allow.len(), 2);
    assert!(cfg.tls.is_none());
    assert_eq!(cfg.log_level, None);
}

#[test]
fn relative_config_path_gives_relative_routes_file() {
    let cfg = parse_gateway_config(
        Path::new("portico.yaml"),
        "listen: {http: 0.0.0.0:80}\nroutes_file: routes/r.yaml",
    )
    .unwrap();
    assert_eq!(cfg.routes_file, PathBuf::from("routes/r.yaml"));
}

#[test]
fn workers_is_auto_by_default_or_a_number() {
    use super::Workers;
    let parse = |extra: &str| {
        parse_gateway_config(
            Path::new(CONFIG),
            &format!("listen:\n  http: 0.0.0.0:8080\nroutes_file: r\n{extra}"),
        )
        .unwrap()
        .workers
    };
    assert_eq!(parse(""), Workers::Auto);
    assert_eq!(parse("workers: auto\n"), Workers::Auto);
    assert_eq!(parse("workers: 3\n"), Workers::Fixed(3));
    assert_eq!(Workers::Fixed(3).count(), 3);
    assert!(Workers::Auto.count() >= 1);
}

#[test]
fn gateway_errors_point_at_the_problem() {
    // Most cases append this so the config is otherwise valid.
    const OK_LISTEN: &str = "listen:\n  http: 0.0.0.0:8080\n";
    let cases: Vec<(String, usize, usize, &str)> = vec![
        // Top level and YAML syntax.
        ("- a\n- b\n".into(), 1, 1, "the top level must be a mapping"),
        ("just text".into(), 1, 1, "the top level must be a mapping"),
        ("listen:\n\thttp: x\n".into(), 2, 2, "invalid YAML: tabs"),
        ("listen: [1,\n".into(), 2, 1, "invalid YAML"),
        (format!("{OK_LISTEN}routes_file: a\nroutes_file: b\n"), 4, 1, "duplicate key \"routes_file\" (first set at line 3)"),
        (format!("{OK_LISTEN}routes_file: &r a\n"), 3, 17, "anchors"),
        (format!("{OK_LISTEN}routes_file: !!str a\n"), 3, 20, "tags"),
        (
            format!("{OK_LISTEN}routes_file: r\nroute_file: r\n"),
            4,
            1,
            "unknown key \"route_file\" in portico.yaml; expected one of: listen, tls, operator, routes_file, log_level, limits, shutdown, workers, dns, tracing (did you mean \"routes_file\"?)",
        ),
        // tracing.otlp.
        (format!("{OK_LISTEN}routes_file: r\ntracing: {{otlp: {{}}}}\n"), 4, 11, "tracing.otlp: endpoint is required"),
        (format!("{OK_LISTEN}routes_file: r\ntracing: {{otpl: {{}}}}\n"), 4, 11, "unknown key \"otpl\" in tracing; expected one of: otlp"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'collector:4318'}}\n"), 5, 20, "tracing.otlp.endpoint: expected an http:// or https:// URL with a host"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'grpc://c:4317'}}\n"), 5, 20, "expected an http:// or https:// URL"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'http://u:p@c:4318'}}\n"), 5, 20, "expected an http:// or https:// URL"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'http://c:4318', sample_ratio: 1.5}}\n"), 5, 51, "tracing.otlp.sample_ratio: expected a number from 0 to 1 (e.g. 0.1), got \"1.5\""),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'http://c:4318', sample_ratio: NaN}}\n"), 5, 51, "sample_ratio: expected a number from 0 to 1"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'http://c:4318', sample_ratio: '0.5'}}\n"), 5, 51, "sample_ratio: expected a number from 0 to 1"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'http://c:4318', queue_size: 0}}\n"), 5, 49, "tracing.otlp.queue_size: expected a whole number from 1 to 1000000"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'http://c:4318', queue_size: 10, batch_size: 20}}\n"), 5, 3, "tracing.otlp: batch_size (20) must not exceed queue_size (10)"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'http://c:4318', flush_interval: 0s}}\n"), 5, 53, "tracing.otlp.flush_interval"),
        (format!("{OK_LISTEN}routes_file: r\ntracing:\n  otlp: {{endpoint: 'http://c:4318', sampler: x}}\n"), 5, 37, "unknown key \"sampler\" in tracing.otlp; expected one of: endpoint, sample_ratio, service_name, queue_size, batch_size, flush_interval, export_timeout"),
        // routes_file.
        (OK_LISTEN.into(), 1, 1, "routes_file is required"),
        (format!("{OK_LISTEN}routes_file:\n"), 3, 1, "routes_file must not be empty"),
        (format!("{OK_LISTEN}routes_file: ''\n"), 3, 14, "routes_file: expected a file path, got an empty string"),
        (format!("{OK_LISTEN}routes_file: {{a: 1}}\n"), 3, 1, "routes_file: expected a file path, got a mapping"),
        (format!("{OK_LISTEN}routes_file: [a]\n"), 3, 1, "got a list"),
        // listen.
        (format!("{OK_LISTEN}routes_file: r\nworkers: 0\n"), 4, 10, "workers: expected auto (one per CPU) or a whole number from 1 to 256, got \"0\""),
        (format!("{OK_LISTEN}routes_file: r\nworkers: 257\n"), 4, 10, "from 1 to 256, got \"257\""),
        (format!("{OK_LISTEN}routes_file: r\nworkers: '+2'\n"), 4, 10, "workers: expected auto"),
        (format!("{OK_LISTEN}routes_file: r\nworkers: Auto\n"), 4, 10, "workers: expected auto"),
        (format!("{OK_LISTEN}routes_file: r\nworkers: [2]\n"), 4, 1, "workers: expected auto"),
        ("routes_file: r\n".into(), 1, 1, "listen is required"),
        ("listen:\nroutes_file: r\n".into(), 1, 1, "listen is required"),
        ("listen: {}\nroutes_file: r\n".into(), 1, 1, "set at least one of listen.http or listen.https"),
        ("listen: 0.0.0.0:8080\nroutes_file: r\n".into(), 1, 9, "listen: expected a mapping"),
        ("listen:\n  http: 0.0.0.0\nroutes_file: r\n".into(), 2, 9, "listen.http: expected an IP:PORT address"),
        ("listen:\n  http: 8080\nroutes_file: r\n".into(), 2, 9, "(write \"0.0.0.0:8080\")"),
        ("listen:\n  http: :8080\nroutes_file: r\n".into(), 2, 9, "(write \"0.0.0.0:8080\")"),
        ("listen:\n  http: localhost:8080\nroutes_file: r\n".into(), 2, 9, "must be an IP address"),
        ("listen:\n  http: 0.0.0.0:65536\nroutes_file: r\n".into(), 2, 9, "got \"0.0.0.0:65536\""),
        (
            "listen:\n  htp: 0.0.0.0:8080\n  http: 0.0.0.0:8081\nroutes_file: r\n".into(),
            2,
            3,
            "unknown key \"htp\" in listen; expected one of: http, https, redirect_to_https, redirect_port (did you mean \"http\"?)",
        ),
        ("listen:\n  https: 0.0.0.0:8443\nroutes_file: r\n".into(), 2, 10, "listen.https needs certificates"),
        (
            format!("{OK_LISTEN}tls:\n  certificates: [{{cert: c, key: k}}]\nroutes_file: r\n"),
            3,
            1,
            "tls is set but listen.https is not",
        ),
        (
            format!("{OK_LISTEN}  redirect_to_https: true\nroutes_file: r\n"),
            3,
            22,
            "listen.redirect_to_https needs both listen.http and listen.https",
        ),
        (format!("{OK_LISTEN}  redirect_to_https: yes\nroutes_file: r\n"), 3, 22, "expected true or false, got \"yes\""),
        (
            format!("{OK_LISTEN}  redirect_port: 443\nroutes_file: r\n"),
            3,
            18,
            "listen.redirect_port only applies with redirect_to_https: true",
        ),
        (format!("{OK_LISTEN}  redirect_to_https: 'false'\nroutes_file: r\n"), 3, 22, "expected true or false"),
        (
            "listen:\n  http: 0.0.0.0:8080\n  https: 0.0.0.0:8080\ntls:\n  certificates: [{cert: c, key: k}]\nroutes_file: r\n".into(),
            3,
            10,
            "listen.https: 0.0.0.0:8080 uses the same port as listen.http",
        ),
        (
            "listen:\n  http: 0.0.0.0:9901\nroutes_file: r\n".into(),
            2,
            9,
            "uses the same port as the default operator.listen",
        ),
        (
            format!("{OK_LISTEN}operator:\n  listen: 127.0.0.1:8080\nroutes_file: r\n"),
            2,
            9,
            "listen.http: 0.0.0.0:8080 uses the same port as operator.listen (127.0.0.1:8080)",
        ),
        // An invalid https address is one error, not also "tls without https".
        (
            "listen:\n  https: 0.0.0.0\ntls:\n  certificates: [{cert: c, key: k}]\nroutes_file: r\n".into(),
            2,
            10,
            "listen.https: expected an IP:PORT address",
        ),
        // tls.
        (
            "listen:\n  https: 0.0.0.0:8443\ntls:\n  certificates: []\nroutes_file: r\n".into(),
            4,
            3,
            "tls.certificates: must not be empty",
        ),
        ("listen:\n  https: 0.0.0.0:8443\ntls: {}\nroutes_file: r\n".into(), 3, 1, "tls: certificates is required"),
        (
            "listen:\n  https: 0.0.0.0:8443\ntls:\n  certificates:\n    - cert: a.crt\nroutes_file: r\n".into(),
            5,
            7,
            "tls.certificates[0]: key is required",
        ),
        (
            "listen:\n  https: 0.0.0.0:8443\ntls:\n  certificates:\n    - cert: a.crt\n      key: a.key\n      ca: x\nroutes_file: r\n".into(),
            7,
            7,
            "unknown key \"ca\" in tls.certificates[0]; expected one of: cert, key",
        ),
        (
            "listen:\n  https: 0.0.0.0:8443\ntls:\n  certificates: [{cert: a, key: b}]\n  handshake_timeout: 0s\nroutes_file: r\n".into(),
            5,
            22,
            "tls.handshake_timeout: must be greater than 0",
        ),
        (
            "listen:\n  https: 0.0.0.0:8443\ntls:\n  certificates: a.crt\nroutes_file: r\n".into(),
            4,
            17,
            "tls.certificates: expected a list of {cert, key} pairs, got \"a.crt\"",
        ),
        // operator.
        (format!("{OK_LISTEN}operator:\n  allow: []\nroutes_file: r\n"), 4, 3, "operator.allow: must not be empty"),
        (format!("{OK_LISTEN}operator:\n  allow: 10.0.0.0/8\nroutes_file: r\n"), 4, 10, "expected a list of CIDRs"),
        (
            format!("{OK_LISTEN}operator:\n  allow: [10.0.0.0/8, 10.1.2.3/8]\nroutes_file: r\n"),
            4,
            23,
            "operator.allow[1]: \"10.1.2.3/8\" has host bits set; write \"10.0.0.0/8\" for the network or \"10.1.2.3\"",
        ),
        (
            format!("{OK_LISTEN}operator:\n  allow:\n    - 10.0.0.0/33\nroutes_file: r\n"),
            5,
            7,
            "operator.allow[0]: expected a CIDR",
        ),
        (format!("{OK_LISTEN}operator:\n  allow: [{{a: b}}]\nroutes_file: r\n"), 4, 12, "got a mapping"),
        (format!("{OK_LISTEN}operator:\n  listen: 9901\nroutes_file: r\n"), 4, 11, "(write \"0.0.0.0:9901\")"),
        (format!("{OK_LISTEN}operator:\n  token_file: [a]\nroutes_file: r\n"), 4, 3, "operator.token_file: expected a file path"),
        (format!("{OK_LISTEN}operator:\n  tokenfile: a\nroutes_file: r\n"), 4, 3, "(did you mean \"token_file\"?)"),
        // log_level.
        (format!("{OK_LISTEN}log_level: verbose\nroutes_file: r\n"), 3, 12, "expected one of error, warn, info, debug, trace, got \"verbose\""),
        // limits.
        (format!("{OK_LISTEN}limits:\n  max_header_size: 0\nroutes_file: r\n"), 4, 20, "limits.max_header_size: must be greater than 0"),
        (format!("{OK_LISTEN}limits:\n  max_body_size: 10 potatoes\nroutes_file: r\n"), 4, 18, "limits.max_body_size: expected a size"),
        (format!("{OK_LISTEN}limits:\n  max_body_size: 1.5MiB\nroutes_file: r\n"), 4, 18, "expected a size"),
        (format!("{OK_LISTEN}limits:\n  max_connections: -1\nroutes_file: r\n"), 4, 20, "limits.max_connections: expected a whole number greater than 0, got \"-1\""),
        (format!("{OK_LISTEN}limits:\n  max_connections: '10'\nroutes_file: r\n"), 4, 20, "expected a whole number"),
        (format!("{OK_LISTEN}limits:\n  max_inflight: 0\nroutes_file: r\n"), 4, 17, "limits.max_inflight: must be greater than 0"),
        (
            format!("{OK_LISTEN}limits:\n  max_inflight: 99999999999999999999999\nroutes_file: r\n"),
            4,
            17,
            "is too large",
        ),
        (format!("{OK_LISTEN}limits:\n  header_read_timeout: 0s\nroutes_file: r\n"), 4, 24, "must be greater than 0, got \"0s\""),
        (
            format!("{OK_LISTEN}limits:\n  idle_timeout: 10\nroutes_file: r\n"),
            4,
            17,
            "limits.idle_timeout: expected a duration: a whole number and a unit (ms, s, m, h) like \"30s\" or \"250ms\", got \"10\" (write \"10s\"",
        ),
        (format!("{OK_LISTEN}limits:\n  upstream_timeout: 1.5s\nroutes_file: r\n"), 4, 21, "expected a duration"),
        (format!("{OK_LISTEN}limits:\n  upstream_timeout: [1s]\nroutes_file: r\n"), 4, 3, "expected a duration"),
        (format!("{OK_LISTEN}limits:\n  max_body: 1MiB\nroutes_file: r\n"), 4, 3, "unknown key \"max_body\" in limits"),
        (format!("{OK_LISTEN}limits: 10\nroutes_file: r\n"), 3, 9, "limits: expected a mapping"),
        // shutdown.
        (format!("{OK_LISTEN}shutdown:\n  timeout: 0s\nroutes_file: r\n"), 4, 12, "shutdown.timeout: must be greater than 0"),
        (format!("{OK_LISTEN}shutdown:\n  drain_delay: -1s\nroutes_file: r\n"), 4, 16, "shutdown.drain_delay: expected a duration"),
        (format!("{OK_LISTEN}shutdown:\n  grace: 1s\nroutes_file: r\n"), 4, 3, "expected one of: drain_delay, timeout"),
    ];
    for (yaml, line, column, needle) in cases {
        assert_one(gateway(&yaml), line, column, needle, &yaml);
    }
}

#[test]
fn gateway_reports_every_error_in_file_order() {
    let yaml = "\
listen:
  http: 8080
limits:
  max_body_size: huge
  idle_timeout: 0s
  max_conections: 5
shutdown:
  timeout: soon
";
    let got = errors(gateway(yaml));
    let positions: Vec<(usize, usize)> = got.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(
        positions,
        [(1, 1), (2, 9), (4, 18), (5, 17), (6, 3), (8, 12)],
        "{got:#?}"
    );
    assert!(got[0].2.contains("routes_file is required"));
    assert!(got[4].2.contains("(did you mean \"max_connections\"?)"));
}

// ---------------------------------------------------------------- route file

#[test]
fn full_route_file() {
    let yaml = r#"
routes:
  - prefix: /billing/reports
    backend: http://billing-reports.billing.svc.cluster.local:8080
  - prefix: /billing
    backend: http://billing.billing.svc.cluster.local:8080
    strip_prefix: false
    timeout: 30s
  -
    prefix: /orders
    backends:
      - https://orders-a.orders.svc:8443
      - https://Orders-B.orders.svc/
    strip_prefix: true
    max_inflight: 100
    ca_file: ca/orders.pem
  - prefix: /
    backend: http://[fd00::1]
"#;
    let file = routes(yaml).unwrap();
    assert_eq!(file.source, PathBuf::from(ROUTES));
    let prefixes: Vec<&str> = file.routes.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(prefixes, ["/billing/reports", "/billing", "/orders", "/"]);
    let lines: Vec<usize> = file.routes.iter().map(|r| r.line).collect();
    assert_eq!(lines, [3, 5, 10, 17]);

    let reports = &file.routes[0];
    assert_eq!(reports.backends.len(), 1);
    let b = &reports.backends[0];
    assert!(!b.tls);
    assert_eq!(b.host, "billing-reports.billing.svc.cluster.local");
    assert_eq!(b.port, 8080);
    assert_eq!(
        b.authority.as_str(),
        "billing-reports.billing.svc.cluster.local:8080"
    );
    assert_eq!(
        b.to_string(),
        "http://billing-reports.billing.svc.cluster.local:8080"
    );
    assert!(!reports.strip_prefix);
    assert_eq!(reports.timeout, None);
    assert_eq!(reports.max_inflight, None);
    assert_eq!(reports.ca_file, None);

    assert_eq!(file.routes[1].timeout, Some(Duration::from_secs(30)));

    let orders = &file.routes[2];
    let urls: Vec<String> = orders.backends.iter().map(ToString::to_string).collect();
    assert_eq!(
        urls,
        [
            "https://orders-a.orders.svc:8443",
            "https://orders-b.orders.svc:443"
        ]
    );
    assert!(orders.strip_prefix);
    assert_eq!(orders.max_inflight, Some(100));
    assert_eq!(
        orders.ca_file,
        Some(PathBuf::from("/etc/portico/routes/ca/orders.pem"))
    );

    let root = &file.routes[3].backends[0];
    assert_eq!(
        (root.host.as_str(), root.port, root.authority.as_str()),
        ("fd00::1", 80, "[fd00::1]:80")
    );
}

#[test]
fn empty_route_list_is_valid() {
    for yaml in ["routes: []", "routes: []\n# nothing yet\n"] {
        assert!(routes(yaml).unwrap().routes.is_empty());
    }
}

#[test]
fn prefixes() {
    let valid = [
        "/",
        "/billing",
        "/billing/reports",
        "/.well-known",
        "/a-b_c~d",
        "/v1:batch",
        "/@me",
        "/a..b",
        "/...",
        "/metricsx",
        "/healthzz",
        "/x/metrics",
        "/api/healthz",
        "/a=b,c,d!$&'()+",
    ];
    for prefix in valid {
        assert_eq!(prefix_problem(prefix), None, "{prefix:?}");
        // And through the whole file, quoted so YAML takes it as is.
        let yaml = format!(
            "routes:\n  - prefix: '{}'\n    backend: http://b:8080\n",
            prefix.replace('\'', "''")
        );
        assert_eq!(routes(&yaml).unwrap().routes[0].path, prefix);
    }
    let invalid = [
        ("billing", "must start with \"/\" (write \"/billing\")"),
        ("/billing/", "must not end with \"/\" (write \"/billing\")"),
        ("/billing//", "must not end with \"/\" (write \"/billing\")"),
        ("//", "must not end with \"/\" (write \"/\")"),
        (
            "/a//b",
            "must not contain an empty segment (\"//\") (write \"/a/b\")",
        ),
        ("//a", "empty segment"),
        ("/.", "\".\" or \"..\" segments"),
        ("/a/./b", "\".\" or \"..\" segments"),
        ("/a/..", "\".\" or \"..\" segments"),
        ("/../a", "\".\" or \"..\" segments"),
        (
            "/{id}",
            "must not contain \"{\": a prefix is a literal path, not a pattern",
        ),
        ("/a}", "must not contain \"}\""),
        ("/a/*", "must not contain \"*\""),
        ("/a%20b", "must not contain \"%\""),
        ("/a?b=1", "must not contain \"?\""),
        ("/a#b", "must not contain \"#\""),
        ("/a b", "whitespace"),
        ("/a\tb", "whitespace"),
        ("/a\u{a0}b", "whitespace"),
        ("/a\\b", "must not contain \"\\\""),
        ("/a\u{1}b", "control characters"),
        ("/a\u{7f}b", "control characters"),
        ("/café", "only ASCII"),
        (
            "/a|b",
            "must not contain \"|\", which is not allowed unencoded",
        ),
        ("/a\"b", "must not contain \"\\\"\""),
        ("/a<b>", "must not contain \"<\""),
        ("/[x]", "must not contain \"[\""),
        (
            "/healthz",
            "is reserved: /healthz (in any case, and everything under it)",
        ),
        ("/Metrics", "is reserved: /Metrics (in any case"),
        ("/METRICS/x", "is reserved: /METRICS"),
        ("/metrics.", "is reserved: /metrics."),
        (
            "/billing;jsessionid=1",
            "must not contain \";\": path parameters (;...) are ignored when matching",
        ),
        ("/readyz", "is reserved: /readyz"),
        ("/livez", "is reserved: /livez"),
        ("/metrics", "is reserved: /metrics"),
        ("/metrics/x", "is reserved: /metrics"),
    ];
    for (prefix, needle) in invalid {
        let problem = prefix_problem(prefix).unwrap_or_else(|| panic!("{prefix:?} accepted"));
        assert!(
            problem.contains(needle),
            "{prefix:?}: {problem:?} lacks {needle:?}"
        );
    }
}

#[test]
fn prefix_errors_in_the_file_name_route_value_and_fix() {
    let yaml = "routes:\n  - prefix: /billing/\n    backend: http://billing:8080\n";
    assert_one(
        routes(yaml),
        2,
        13,
        "route \"/billing/\": prefix must not end with \"/\" (write \"/billing\")",
        yaml,
    );
    let err = routes(yaml).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{ROUTES}:2:13: route \"/billing/\": prefix must not end"
        )),
        "{err}"
    );
}

#[test]
fn backend_urls() {
    let valid = [
        (
            "http://billing:8080",
            false,
            "billing:8080",
            "billing",
            8080,
        ),
        ("http://billing", false, "billing:80", "billing", 80),
        ("http://billing/", false, "billing:80", "billing", 80),
        ("https://billing", true, "billing:443", "billing", 443),
        (
            "https://billing:8443/",
            true,
            "billing:8443",
            "billing",
            8443,
        ),
        (
            "HTTP://Billing.NS.svc:81",
            false,
            "billing.ns.svc:81",
            "billing.ns.svc",
            81,
        ),
        ("http://10.0.0.1", false, "10.0.0.1:80", "10.0.0.1", 80),
        ("http://[::1]:8080", false, "[::1]:8080", "::1", 8080),
        ("https://[fd00::1]", true, "[fd00::1]:443", "fd00::1", 443),
    ];
    for (text, tls, authority, host, port) in valid {
        let url: BackendUrl = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            (url.tls, url.authority.as_str(), url.host.as_str(), url.port),
            (tls, authority, host, port),
            "{text}"
        );
        assert_eq!(
            url.to_string(),
            format!("{}://{authority}", if tls { "https" } else { "http" })
        );
        assert_eq!(
            url.to_string().parse::<BackendUrl>().unwrap(),
            url,
            "Display round-trips"
        );
    }
    let invalid = [
        (
            "ftp://billing",
            "scheme must be http, https or h2c, got \"ftp\"",
        ),
        (
            "billing:8080",
            "needs a scheme: write \"http://billing:8080\"",
        ),
        ("billing", "needs a scheme: write \"http://billing\""),
        ("/billing", "is not a URL"),
        ("", "is not a valid URL"),
        ("http://", "is not a valid URL"),
        ("http://user:pw@billing", "must not contain user info"),
        ("http://billing/api", "must not have a path (\"/api\")"),
        ("http://billing//", "must not have a path"),
        ("http://billing?x=1", "must not have a query"),
        ("http://billing/?", "must not have a query"),
        ("http://billing#top", "must not have a fragment"),
        ("http://:8080", "needs a host"),
        ("http://billing:0", "port must be between 1 and 65535"),
        ("http://billing:", "empty port"),
        (
            "http://billing:99999",
            "port must be between 1 and 65535, got \"99999\"",
        ),
        ("http://[::1]:70000", "port must be between"),
        ("http://bil ling", "must not contain spaces"),
    ];
    for (text, needle) in invalid {
        match text.parse::<BackendUrl>() {
            Ok(url) => panic!("{text:?} accepted as {url}"),
            Err(e) => assert!(
                e.to_string().contains(needle),
                "{text:?}: {e} lacks {needle:?}"
            ),
        }
    }
}

#[test]
fn route_errors_point_at_the_problem() {
    const HEAD: &str = "routes:\n  - prefix: /billing\n";
    let cases: Vec<(String, usize, usize, &str)> = vec![
        // File shape.
        ("".into(), 1, 1, "routes is required; write `routes:`"),
        ("# comment only\n".into(), 1, 1, "routes is required"),
        ("routes:\n".into(), 1, 1, "routes: expected a list of routes"),
        ("routes: {}\n".into(), 1, 1, "routes: expected a list of routes"),
        ("routes: /billing\n".into(), 1, 9, "got \"/billing\""),
        ("- prefix: /\n".into(), 1, 1, "the top level must be a mapping"),
        (
            "routes: []\nroute: []\n".into(),
            2,
            1,
            "unknown key \"route\" in the route file; expected one of: routes, tests, functions (did you mean \"routes\"?)",
        ),
        ("routes:\n  - /billing\n".into(), 2, 5, "route #1: expected a mapping (key: value lines), got \"/billing\""),
        ("routes:\n  - prefix: /a\n    backend: http://a\n    prefix: /b\n".into(), 4, 5, "duplicate key \"prefix\" (first set at line 2)"),
        // Keys.
        (
            format!("{HEAD}    backend: http://billing:8080\n    timout: 5s\n"),
            4,
            5,
            "unknown key \"timout\" in route \"/billing\"; expected one of: host, prefix, exact, backend, backends, strip_prefix, timeout, max_inflight, ca_file, balance, outlier, retries, retry_on, retry_buffer, circuit_breaker, discovery, dns_refresh, http2, canary, owner, shared, allow_from, redirect, max_body_size, host_header, https_redirect (did you mean \"timeout\"?)",
        ),
        ("routes:\n  - backend: http://billing:8080\n".into(), 2, 5, "route #1: prefix is required"),
        ("routes:\n  - prefix:\n    backend: http://billing:8080\n".into(), 2, 5, "route #1: prefix must not be empty"),
        ("routes:\n  - prefix: [a]\n    backend: http://billing:8080\n".into(), 2, 5, "route #1: prefix: expected a path like \"/billing\", got a list"),
        ("routes:\n  - prefix: 12\n    backend: http://billing:8080\n".into(), 2, 13, "route \"12\": prefix must start with \"/\" (write \"/12\")"),
        // Backends.
        (HEAD.into(), 2, 5, "route \"/billing\": backend is required"),
        (format!("{HEAD}    backend:\n"), 3, 5, "route \"/billing\": backend: expected a URL like \"http://billing:8080\", got nothing"),
        (
            format!("{HEAD}    backend: http://a\n    backends: [http://b]\n"),
            4,
            5,
            "set either backend or backends, not both",
        ),
        (format!("{HEAD}    backends: []\n"), 3, 5, "route \"/billing\": backends: must list at least one URL"),
        (format!("{HEAD}    backends: http://a\n"), 3, 15, "backends: expected a list of URLs"),
        (
            format!("{HEAD}    backends:\n      - http://a:80\n      - http://a\n"),
            5,
            9,
            "route \"/billing\": backends[1]: http://a:80 is listed twice",
        ),
        (
            format!("{HEAD}    backends:\n      - http://a\n      - ftp://b\n"),
            5,
            9,
            "route \"/billing\": backends[1]: \"ftp://b\" scheme must be http, https or h2c",
        ),
        (format!("{HEAD}    backend: billing:8080\n"), 3, 14, "route \"/billing\": backend: \"billing:8080\" needs a scheme"),
        (format!("{HEAD}    backend: http://billing:8080/api\n"), 3, 14, "must not have a path (\"/api\")"),
        (format!("{HEAD}    backend: {{url: http://a}}\n"), 3, 5, "backend: expected a URL"),
        // Other fields.
        (format!("{HEAD}    backend: http://a\n    strip_prefix: yes\n"), 4, 19, "route \"/billing\": strip_prefix: expected true or false, got \"yes\""),
        (format!("{HEAD}    backend: http://a\n    strip_prefix: \"true\"\n"), 4, 19, "expected true or false"),
        (format!("{HEAD}    backend: http://a\n    timeout: 0s\n"), 4, 14, "route \"/billing\": timeout: must be greater than 0"),
        (format!("{HEAD}    backend: http://a\n    timeout: 30\n"), 4, 14, "(write \"30s\" for seconds or \"30ms\" for milliseconds)"),
        (format!("{HEAD}    backend: http://a\n    max_inflight: 0\n"), 4, 19, "route \"/billing\": max_inflight: must be greater than 0"),
        (format!("{HEAD}    backend: http://a\n    max_inflight: lots\n"), 4, 19, "max_inflight: expected a whole number"),
        (
            format!("{HEAD}    backend: http://a\n    ca_file: ca.pem\n"),
            4,
            14,
            "route \"/billing\": ca_file is set but no backend uses https",
        ),
        (format!("{HEAD}    backend: https://a\n    ca_file: ''\n"), 4, 14, "ca_file: expected a file path, got an empty string"),
        // Duplicates.
        (
            "routes:\n  - prefix: /a\n    backend: http://a\n  - prefix: /a\n    backend: http://b\n".into(),
            4,
            13,
            "route \"/a\": duplicate prefix \"/a\" in the routes without host, already used by the route at line 2",
        ),
        (
            "routes:\n  - host: API.example.com\n    prefix: /a\n    backend: http://a\n  - host: api.example.com\n    prefix: /a\n    backend: http://b\n".into(),
            6,
            13,
            "route \"/a\" (host api.example.com): duplicate prefix \"/a\" in host api.example.com, already used by the route at line 2",
        ),
        (
            "routes:\n  - exact: /a\n    backend: http://a\n  - exact: /a\n    backend: http://b\n".into(),
            4,
            12,
            "route \"=/a\": duplicate exact path \"/a\" in the routes without host, already used by the route at line 2",
        ),
        // Hosts.
        (format!("{HEAD}    host: api.example.com:8443\n    backend: http://a\n"), 3, 11, "host: \"api.example.com:8443\" must not have a port"),
        (format!("{HEAD}    host: bücher.example\n    backend: http://a\n"), 3, 11, "must be ASCII, got 'ü': write an internationalized name in its punycode (IDNA) form"),
        (format!("{HEAD}    host: a.*.example.com\n    backend: http://a\n"), 3, 11, "a wildcard is only allowed as the whole first label"),
        (format!("{HEAD}    host: '*example.com'\n    backend: http://a\n"), 3, 11, "a wildcard is only allowed as the whole first label"),
        (format!("{HEAD}    host: '*'\n    backend: http://a\n"), 3, 11, "a wildcard is only allowed as the whole first label"),
        (format!("{HEAD}    host: '*.*.example.com'\n    backend: http://a\n"), 3, 11, "a wildcard is only allowed as the whole first label"),
        (format!("{HEAD}    host: api.example.com.\n    backend: http://a\n"), 3, 11, "must not end with \".\" (write \"api.example.com\")"),
        (format!("{HEAD}    host: 10.0.0.1\n    backend: http://a\n"), 3, 11, "must be a DNS name, not an IP address"),
        (format!("{HEAD}    host: https://api.example.com\n    backend: http://a\n"), 3, 11, "without scheme or path"),
        (format!("{HEAD}    host: api..example.com\n    backend: http://a\n"), 3, 11, "must not have an empty label"),
        (format!("{HEAD}    host: api_v2.example.com\n    backend: http://a\n"), 3, 11, "must contain only letters, digits, '-' and '.', got \"_\""),
        (format!("{HEAD}    host: -api.example.com\n    backend: http://a\n"), 3, 11, "label \"-api\" must not start or end with '-'"),
        (format!("{HEAD}    host: ''\n    backend: http://a\n"), 3, 11, "host: expected a host name like"),
        (format!("{HEAD}    host: [a]\n    backend: http://a\n"), 3, 5, "host: expected a host name like"),
        (format!("{HEAD}    host: {}.example.com\n    backend: http://a\n", "a".repeat(64)), 3, 11, "has a label of 64 characters; a DNS label has at most 63"),
        // Exact paths.
        ("routes:\n  - prefix: /a\n    exact: /a\n    backend: http://a\n".into(), 3, 5, "route #1: set either prefix or exact, not both"),
        ("routes:\n  - exact:\n    backend: http://a\n".into(), 2, 5, "route #1: exact must not be empty"),
        ("routes:\n  - exact: /metrics\n    backend: http://a\n".into(), 2, 12, "route \"=/metrics\": exact is reserved: /metrics"),
        ("routes:\n  - exact: /a//b\n    backend: http://a\n".into(), 2, 12, "exact must not contain an empty segment"),
        ("routes:\n  - exact: /a;b\n    backend: http://a\n".into(), 2, 12, "exact must not contain \";\""),
        ("routes:\n  - exact: a\n    backend: http://a\n".into(), 2, 12, "exact must start with \"/\""),
    ];
    for (yaml, line, column, needle) in cases {
        assert_one(routes(&yaml), line, column, needle, &yaml);
    }
}

#[test]
fn every_bad_route_is_reported() {
    let yaml = "\
routes:
  - prefix: /ok
    backend: http://ok:8080
  - prefix: /bad/
    backend: http://a:8080
  - prefix: /metrics
    backend: http://b:8080
  - prefix: /c
    backend: ftp://c
  - prefix: /also-ok
    backend: http://ok:8080
";
    let got = errors(routes(yaml));
    let summary: Vec<(usize, usize)> = got.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(summary, [(4, 13), (6, 13), (9, 14)], "{got:#?}");
    assert!(
        got[0]
            .2
            .contains("route \"/bad/\": prefix must not end with \"/\"")
    );
    assert!(got[1].2.contains("route \"/metrics\": prefix is reserved"));
    assert!(
        got[2]
            .2
            .contains("route \"/c\": backend: \"ftp://c\" scheme must be http, https or h2c")
    );
}

#[test]
fn one_route_with_several_problems_reports_each() {
    let yaml = "routes:\n  - prefix: /x/\n    timeout: 0s\n    strip_prefix: 1\n    colour: red\n";
    let got = errors(routes(yaml));
    let summary: Vec<(usize, usize)> = got.iter().map(|(l, c, _)| (*l, *c)).collect();
    // Missing backend is reported at the route; then prefix, timeout, strip_prefix, unknown key.
    assert_eq!(
        summary,
        [(2, 5), (2, 13), (3, 14), (4, 19), (5, 5)],
        "{got:#?}"
    );
}

#[test]
fn duplicate_prefix_is_found_even_after_other_errors() {
    let yaml =
        "routes:\n  - prefix: /a\n    backend: ftp://a\n  - prefix: /a\n    backend: http://a\n";
    let got = errors(routes(yaml));
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[1].2.contains("already used by the route at line 2"));
}

// ---------------------------------------------------------------- loading

#[test]
fn load_reads_files_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let routes_path = dir.path().join("routes.yaml");
    std::fs::write(
        &routes_path,
        "routes:\n  - prefix: /a\n    backend: http://a:8080\n",
    )
    .unwrap();
    let config_path = dir.path().join("portico.yaml");
    std::fs::write(
        &config_path,
        "listen:\n  http: 127.0.0.1:0\nroutes_file: routes.yaml\n",
    )
    .unwrap();

    let cfg = load_gateway_config(&config_path).unwrap();
    assert_eq!(cfg.source, config_path);
    assert_eq!(cfg.routes_file, routes_path);
    let file = load_route_file(&cfg.routes_file).unwrap();
    assert_eq!(file.routes[0].path, "/a");

    let missing = dir.path().join("missing.yaml");
    let err = load_route_file(&missing).unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(matches!(&err.0[0], ConfigError::Io { path, .. } if *path == missing));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{err}"
    );
    assert!(load_gateway_config(&missing).is_err());
}

#[test]
fn canary_tests_and_functions_parse() {
    let file = routes(
        "functions: [billing, orders]
routes:
  - prefix: /billing
    backend: http://billing:8080
    owner: billing-team
    canary:
      backends: [http://billing-v2:8080, http://billing-v2b:8080]
      weight: 5
      sticky: cookie
  - prefix: /orders
    backend: http://orders:8080
    shared: true
    canary: {backend: http://orders-v2:8080}
tests:
  - path: /billing/x?y=1
    host: api.example.com
    method: POST
    from_operator: true
    canary: true
    expect: {route: /billing, backend: http://billing-v2:8080, upstream_path: /billing/x?y=1}
  - path: /nothing
    expect:
      route: none
      status: 404
",
    )
    .unwrap();
    let billing = file.routes[0].canary.as_ref().unwrap();
    assert_eq!(billing.backends.len(), 2);
    assert_eq!((billing.weight, billing.sticky), (5, true));
    assert_eq!(file.routes[0].owner.as_deref(), Some("billing-team"));
    assert_eq!(file.routes[0].path_pos, (3, 13));
    let orders = file.routes[1].canary.as_ref().unwrap();
    assert_eq!((orders.weight, orders.sticky), (0, false));
    assert!(file.routes[1].shared);
    assert_eq!(file.functions.as_deref().unwrap(), ["billing", "orders"]);
    assert_eq!(file.tests.len(), 2);
    let t = &file.tests[0];
    assert_eq!((t.location.line, t.location.column), (15, 5));
    assert_eq!(t.method, http::Method::POST);
    assert!(t.from_operator && t.canary);
    assert_eq!(
        t.expect.route.value,
        ExpectedRoute::Named("/billing".into())
    );
    assert_eq!(t.expect.backend.as_ref().unwrap().location.line, 20);
    assert_eq!(file.tests[1].expect.route.value, ExpectedRoute::None);
    assert_eq!(file.tests[1].expect.status.as_ref().unwrap().value, 404);
}

#[test]
fn governance_errors_point_at_the_problem() {
    const HEAD: &str = "routes:\n  - prefix: /b\n    backend: http://a:1\n";
    let cases: Vec<(String, usize, usize, &str)> = vec![
        // Hostile canaries.
        (
            format!("{HEAD}    canary:\n      backend: http://c:1\n      wieght: 5\n"),
            6,
            7,
            "unknown key \"wieght\" in route \"/b\": canary; expected one of: backend, backends, weight, sticky (did you mean \"weight\"?)",
        ),
        (
            format!("{HEAD}    canary:\n      backend: http://c:1\n      weight: 101\n"),
            6,
            15,
            "route \"/b\": canary: weight: expected a whole number from 0 to 100, got \"101\"",
        ),
        (
            format!("{HEAD}    canary:\n      backend: http://c:1\n      weight: -1\n"),
            6,
            15,
            "canary: weight: expected a whole number from 0 to 100",
        ),
        (
            format!("{HEAD}    canary:\n      backend: nope\n"),
            5,
            16,
            "route \"/b\": canary: backend: \"nope\" needs a scheme",
        ),
        (
            format!("{HEAD}    canary:\n      backends: [http://c:1, ftp://d:1]\n"),
            5,
            30,
            "canary: backends[1]: \"ftp://d:1\" scheme must be http, https or h2c",
        ),
        (
            format!("{HEAD}    canary:\n      backend: http://a:1\n"),
            5,
            16,
            "canary: http://a:1 is also a stable backend of the route",
        ),
        (
            format!("{HEAD}    canary:\n      weight: 5\n"),
            4,
            5,
            "route \"/b\": canary: backend is required",
        ),
        (
            format!("{HEAD}    canary: http://c:1\n"),
            4,
            13,
            "route \"/b\": canary: expected a mapping",
        ),
        (
            format!("{HEAD}    canary:\n      backend: http://c:1\n      sticky: cookie\n"),
            6,
            15,
            "canary: sticky: applies to a weighted canary",
        ),
        (
            format!(
                "{HEAD}    canary:\n      backend: http://c:1\n      weight: 5\n      sticky: header\n"
            ),
            7,
            15,
            "canary: sticky: expected cookie, got \"header\"",
        ),
        (
            format!("{HEAD}    ca_file: ca.pem\n    canary:\n      backend: http://c:1\n"),
            4,
            14,
            "ca_file is set but no backend uses https",
        ),
        (
            "routes:\n  - prefix: /b\n    backend: http://a:1\n    discovery: dns\n    canary: {backend: http://10.0.0.1:80}\n".into(),
            4,
            16,
            "route \"/b\": discovery: dns needs backend host names, http://10.0.0.1:80 is an address",
        ),
        (
            "routes:\n  - prefix: /b\n    backend: https://a:1\n    http2: true\n    canary: {backend: http://c:1}\n".into(),
            4,
            12,
            "route \"/b\": http2: applies to https:// backends, the canary's too; http://c:1 is not one",
        ),
        (
            format!("{HEAD}    owner: [a]\n"),
            4,
            5,
            "route \"/b\": owner: expected a team name",
        ),
        (
            format!("{HEAD}    shared: yes\n"),
            4,
            13,
            "route \"/b\": shared: expected true or false",
        ),
        // Functions.
        (
            format!("functions: [billing]\n{HEAD}"),
            3,
            13,
            "route \"/b\": first segment \"b\" is not a function; functions: billing",
        ),
        (
            "functions: [billing]\nroutes:\n  - prefix: /\n    backend: http://a:1\n".into(),
            3,
            13,
            "route \"/\": prefix \"/\" lies above every function (billing); mark the catch-all shared: true",
        ),
        (
            format!("functions: [billing, billing]\n{HEAD}"),
            1,
            22,
            "functions[1]: \"billing\" is listed twice",
        ),
        (
            format!("functions: [/billing]\n{HEAD}"),
            1,
            13,
            "functions[0]: \"/billing\" is not one path segment",
        ),
        (
            format!("functions: []\n{HEAD}"),
            1,
            1,
            "functions: must list at least one function",
        ),
        // Tests.
        (
            format!(
                "{HEAD}tests:\n  - path: /b\n    expct: {{route: /b}}\n    expect: {{route: /b}}\n"
            ),
            6,
            5,
            "unknown key \"expct\" in tests[0] (/b); expected one of: path, host, method, from_operator, canary, expect",
        ),
        (
            format!("{HEAD}tests:\n  - path: /b\n    expect: {{route: /b, satus: 200}}\n"),
            6,
            25,
            "unknown key \"satus\" in tests[0] (/b): expect; expected one of: route, backend, upstream_path, status (did you mean \"status\"?)",
        ),
        (
            format!("{HEAD}tests:\n  - path: b\n    expect: {{route: /b}}\n"),
            5,
            11,
            "tests[0] (b): path must start with \"/\"",
        ),
        (
            format!("{HEAD}tests:\n  - path: /b\n"),
            5,
            5,
            "tests[0] (/b): expect is required",
        ),
        (
            format!("{HEAD}tests:\n  - path: /b\n    expect: {{route: billing}}\n"),
            6,
            21,
            "expect: route \"billing\" is not a route",
        ),
        (
            format!("{HEAD}tests:\n  - path: /b\n    expect: {{route: /b, status: 1000}}\n"),
            6,
            33,
            "expect: status: expected a whole number from 100 to 599",
        ),
        (
            format!("{HEAD}tests:\n  - path: /b\n    canary: 1\n    expect: {{route: /b}}\n"),
            6,
            13,
            "tests[0] (/b): canary: expected true or false",
        ),
        (
            format!(
                "{HEAD}tests:\n  - path: /b\n    method: \"GE T\"\n    expect: {{route: /b}}\n"
            ),
            6,
            13,
            "method \"GE T\" is not an HTTP method",
        ),
        (
            format!("{HEAD}tests: {{path: /b}}\n"),
            4,
            1,
            "tests: expected a list of tests",
        ),
    ];
    for (yaml, line, column, needle) in cases {
        assert_one(routes(&yaml), line, column, needle, &yaml);
    }
}

#[test]
fn byte_order_mark_is_ignored() {
    assert!(routes("\u{feff}routes: []\n").is_ok());
}

#[test]
fn default_config_path() {
    assert_eq!(DEFAULT_CONFIG_PATH, "portico.yaml");
}

// A config reload runs in the gateway's process: no input may panic it.
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "(routes|listen|prefix|backend|[-:/ \\n\\[\\]{}&*!|>'\"#a-z0-9.%?])*") {
        let _ = routes(&text);
        let _ = gateway(&text);
    }
}

#[test]
fn tracing_otlp_defaults_and_endpoint_paths() {
    let parse = |extra: &str| {
        parse_gateway_config(
            Path::new(CONFIG),
            &format!("listen:\n  http: 0.0.0.0:8080\nroutes_file: r\n{extra}"),
        )
        .unwrap()
        .otlp
    };
    assert_eq!(parse(""), None);
    assert_eq!(parse("tracing: {}\n"), None);
    let s = parse("tracing:\n  otlp: {endpoint: 'http://otel-collector:4318'}\n").unwrap();
    assert_eq!(s.endpoint, "http://otel-collector:4318/v1/traces");
    assert_eq!(s.sample_ratio, 1.0);
    assert_eq!(s.service_name, "portico");
    assert_eq!(s.queue_size, OtlpSettings::DEFAULT_QUEUE);
    assert_eq!(s.batch_size, OtlpSettings::DEFAULT_BATCH);
    let s = parse(
        "tracing:\n  otlp:\n    endpoint: https://c.example.com/otlp/v1/traces\n    sample_ratio: 0.1\n    service_name: edge\n    flush_interval: 250ms\n",
    )
    .unwrap();
    assert_eq!(
        s.endpoint, "https://c.example.com/otlp/v1/traces",
        "a path is kept"
    );
    assert_eq!(s.sample_ratio, 0.1);
    assert_eq!(s.service_name, "edge");
    assert_eq!(s.flush_interval, Duration::from_millis(250));
    assert_eq!(
        parse("tracing:\n  otlp: {endpoint: 'http://c:4318/', sample_ratio: 0}\n")
            .unwrap()
            .endpoint,
        "http://c:4318/v1/traces"
    );
}

#[test]
fn allow_from_redirect_and_max_body_size() {
    let file = routes(
        "routes:\n  - prefix: /a\n    backend: http://a\n    allow_from: [10.1.2.3/8, 192.168.0.1, \"::1\"]\n    max_body_size: 1MiB\n    https_redirect: true\n    host_header: A.internal:81\n  - prefix: /old\n    redirect: {to: \"https://new.example.com/\", status: 301}\n  - exact: /\n    redirect: {to: /app}\n",
    )
    .unwrap();
    let a = &file.routes[0];
    let nets: Vec<String> = a.allow_from.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.168.0.1/32", "::1/128"]);
    assert_eq!(a.max_body_size, Some(1 << 20));
    assert!(a.https_redirect);
    assert_eq!(a.host_header.as_ref().unwrap(), "a.internal:81");
    assert!(a.redirect.is_none());
    assert!(!file.routes[1].https_redirect);
    let old = file.routes[1].redirect.as_ref().unwrap();
    assert_eq!(old.status.as_u16(), 301);
    assert_eq!(old.location, "https://new.example.com/");
    assert!(file.routes[1].backends.is_empty());
    assert_eq!(
        file.routes[2].redirect.as_ref().unwrap().status.as_u16(),
        302
    );
}

#[test]
fn allow_from_redirect_and_max_body_size_errors() {
    const HEAD: &str = "routes:\n  - prefix: /billing\n";
    let cases: Vec<(String, usize, usize, &str)> = vec![
        (
            format!("{HEAD}    backend: http://a\n    allow_from: []\n"),
            4,
            5,
            "allow_from: must list at least one CIDR",
        ),
        (
            format!("{HEAD}    backend: http://a\n    allow_from: [10.0.0.0/33]\n"),
            4,
            18,
            "allow_from[0]: \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            format!("{HEAD}    backend: http://a\n    allow_from: 10.0.0.0/8\n"),
            4,
            17,
            "allow_from: expected",
        ),
        (
            format!("{HEAD}    backend: http://a\n    max_body_size: lots\n"),
            4,
            20,
            "max_body_size",
        ),
        (
            format!("{HEAD}    redirect: {{to: \"https://x.example/\"}}\n    backend: http://a\n"),
            4,
            5,
            "backend does not apply to a redirect route",
        ),
        (
            format!("{HEAD}    redirect: {{to: \"https://x.example/\", status: 303}}\n"),
            3,
            50,
            "status must be 301, 302, 307 or 308, got 303",
        ),
        (
            format!("{HEAD}    redirect: {{to: \"javascript:alert(1)\"}}\n"),
            3,
            20,
            "must be an absolute http:// or https:// URL",
        ),
        (
            format!("{HEAD}    redirect: {{to: \"//evil.example\"}}\n"),
            3,
            20,
            "must be an absolute",
        ),
        (
            format!("{HEAD}    redirect: {{to: \"https://a.example/\\nb\"}}\n"),
            3,
            20,
            "must be an absolute",
        ),
        (
            format!("{HEAD}    redirect: {{status: 301}}\n"),
            3,
            5,
            "to is required",
        ),
    ];
    for (yaml, line, col, needle) in cases {
        let errs = errors(routes(&yaml));
        assert!(
            errs.iter()
                .any(|(l, c, m)| *l == line && *c == col && m.contains(needle)),
            "{yaml}\nwant {line}:{col} {needle:?}\ngot {errs:?}"
        );
    }
}
