//! The real binary: `check`, `routes`, exit codes, and what `serve` does
//! to the process before it listens.

use std::time::Duration;

use crate::support::binary::{Serve, run};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_accepts_a_valid_config_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "routes.yaml",
        "routes:\n  - prefix: /billing\n    backend: http://billing:8080\n",
    );
    let cfg = write(
        dir.path(),
        "portico.yaml",
        "listen:\n  http: 127.0.0.1:0\nroutes_file: routes.yaml\n",
    );
    let out = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 route(s)"));
}

/// Runs `portico check` on a route file (with a minimal portico.yaml) and
/// expects exit 1; returns stderr and the route file's path as printed.
fn check_routes_fails(routes: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let routes_path = write(dir.path(), "routes.yaml", routes);
    let cfg = write(
        dir.path(),
        "portico.yaml",
        "listen:\n  http: 127.0.0.1:0\nroutes_file: routes.yaml\n",
    );
    let out = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (err, routes_path.display().to_string())
}

/// Each `(line, col, needle)` is one line of `err` starting `FILE:LINE:COL: `.
fn assert_errors_at(err: &str, file: &str, expected: &[(usize, usize, &str)]) {
    for (line, col, needle) in expected {
        let prefix = format!("{file}:{line}:{col}: ");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "expected {prefix}...{needle} in:\n{err}"
        );
    }
}

#[test]
fn check_reports_every_route_error_with_line_and_column_and_exits_1() {
    let routes = "\
routes:
  - prefix: /billing/
    backend: http://billing:8080
  - prefix: /orders
    backend: ftp://orders
  - prefix: /metrics
    backend: http://m:1
  - prefix: /x
    backend: http://x:1
    timout: 5s
  - prefix: /billing/
    backend: http://b:1
";
    let (err, file) = check_routes_fails(routes);
    assert_errors_at(
        &err,
        &file,
        &[
            (2, 13, "/billing/"),
            (5, 14, "ftp"),
            (6, 13, "/metrics"),
            (10, 5, "timout"),
        ],
    );
    assert!(err.lines().count() >= 5, "all errors are reported:\n{err}");
}

#[test]
fn check_reports_gateway_config_errors_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "portico.yaml",
        "listen:\n  http: nowhere\nroutes_file: routes.yaml\nlimits:\n  upstream_timeout: 10x\n",
    );
    let out = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display().to_string();
    assert!(err.contains(&format!("{file}:2:9:")), "{err}");
    assert!(err.contains(&format!("{file}:5:21:")), "{err}");
}

#[test]
fn missing_config_file_is_exit_1_with_the_path() {
    let out = run(&["check", "--config", "/nonexistent/portico.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/portico.yaml"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["serve", "--bogus"]).status.code(), Some(2));
    assert_eq!(run(&["nonsense"]).status.code(), Some(2));
    assert_eq!(run(&[]).status.code(), Some(2));
}

#[test]
fn routes_match_explains_the_choice() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "routes.yaml",
        "routes:\n  - prefix: /\n    backend: http://root:80\n  - prefix: /billing\n    backend: http://billing:8080\n  - prefix: /billing/reports\n    backend: http://reports:8080\n    strip_prefix: true\n",
    );
    let cfg = write(
        dir.path(),
        "portico.yaml",
        "listen:\n  http: 127.0.0.1:0\nroutes_file: routes.yaml\n",
    );
    let c = cfg.to_str().unwrap();
    let out = run(&[
        "routes",
        "--config",
        c,
        "--match",
        "/billing/reports/2024?x=1",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("route:   /billing/reports"), "{text}");
    assert!(text.contains("also matched: /, /billing"), "{text}");
    assert!(text.contains("backend: http://reports:8080"), "{text}");
    assert!(text.contains("upstream path: /2024?x=1"), "{text}");

    let out = run(&["routes", "--config", c, "--match", "/billing/reportsX"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("route:   /billing (line 4)"));

    let out = run(&["routes", "--config", c, "--match", "/x/../metrics"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("404 no_route (reserved operator path"));

    let out = run(&["routes", "--config", c]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("/billing/reports") && table.contains("http://root:80"),
        "{table}"
    );
}

#[test]
fn check_reports_host_and_exact_errors_with_positions() {
    let routes = "\
routes:
  - host: api.example.com
    prefix: /billing
    backend: http://billing:8080
  - host: API.example.com
    prefix: /billing
    backend: http://other:8080
  - host: a.*.example.com
    prefix: /x
    backend: http://x:1
  - host: bücher.example
    prefix: /y
    backend: http://y:1
  - exact: /healthz
    backend: http://h:1
  - exact: /a
    prefix: /a
    backend: http://a:1
";
    let (err, file) = check_routes_fails(routes);
    assert_errors_at(
        &err,
        &file,
        &[
            (
                6,
                13,
                "duplicate prefix \"/billing\" in host api.example.com, already used by the route at line 2",
            ),
            (8, 11, "a wildcard is only allowed as the whole first label"),
            (11, 11, "punycode (IDNA)"),
            (14, 12, "exact is reserved: /healthz"),
            (17, 5, "set either prefix or exact, not both"),
        ],
    );
    assert_eq!(err.lines().count(), 5, "{err}");
}

#[test]
fn routes_match_explains_the_host_table_and_path_parameters() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "routes.yaml",
        "routes:
  - prefix: /
    backend: http://root:80
  - host: api.example.com
    prefix: /billing
    backend: http://billing:8080
    strip_prefix: true
  - host: api.example.com
    exact: /billing/status
    backend: http://status:8080
  - host: '*.example.com'
    prefix: /
    backend: http://wild:80
",
    );
    let cfg = write(
        dir.path(),
        "portico.yaml",
        "listen:\n  http: 127.0.0.1:0\nroutes_file: routes.yaml\n",
    );
    let c = cfg.to_str().unwrap();
    let explain = |path: &str, host: &str| {
        let out = run(&["routes", "--config", c, "--match", path, "--host", host]);
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = explain("/billing;jsessionid=1/x?q=1", "API.example.com:8443");
    for needle in [
        "matched as: /billing/x (path parameters",
        "host:    API.example.com:8443 -> host table api.example.com (exact host rule)",
        "route:   /billing (line 4)",
        "upstream path: /x?q=1",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    let text = explain("/billing/status", "api.example.com");
    assert!(
        text.contains("route:   =/billing/status (line 8)"),
        "{text}"
    );
    assert!(
        text.contains("exact path, preferred over: /billing"),
        "{text}"
    );
    let text = explain("/orders", "api.example.com");
    assert!(text.contains("404 no_route (no route of this host table matches; other host tables are not consulted)"), "{text}");
    let text = explain("/orders", "www.example.com");
    assert!(
        text.contains("host table *.example.com (wildcard rule"),
        "{text}"
    );
    let text = explain("/orders", "example.org");
    assert!(text.contains("the routes without host"), "{text}");
    assert!(text.contains("route:   / (line 2)"), "{text}");
    let text = explain("/foo/..;/metrics", "example.org");
    assert!(text.contains("normalized: /metrics"), "{text}");
    assert!(text.contains("reserved operator path"), "{text}");
    let text = explain("/Metrics;x=1", "example.org");
    assert!(text.contains("reserved operator path"), "{text}");

    let out = run(&["routes", "--config", c]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("HOST"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("api.example.com") && l.contains("=/billing/status")),
        "{table}"
    );
}

/// The example files shipped in the repository stay valid.
#[test]
fn shipped_example_config_passes_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = run(&["check", "--config", &format!("{root}/portico.example.yaml")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its own tests ran, and passed.
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 test(s) passed"));
    let out = run(&[
        "routes",
        "--config",
        &format!("{root}/portico.example.yaml"),
        "--match",
        "/orders/42",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("route:   /orders") && text.contains("upstream path: /42"),
        "{text}"
    );
}

/// `portico serve` under resource limits set as a service manager would.
fn serve_with_nofile(config: &std::path::Path, soft: u64, hard: u64) -> Serve {
    use std::os::unix::process::CommandExt;
    let mut cmd = crate::support::binary::bin();
    cmd.arg("serve").arg("--config").arg(config);
    // SAFETY: only setrlimit, which is async-signal-safe, runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Serve::spawn_command(cmd)
}

/// The soft open-file limit of a running process, from /proc.
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// The startup line that reports the open-file limit.
fn open_file_line(gw: &mut Serve) -> serde_json::Value {
    gw.wait_line("the open-file limit line", |v| {
        v["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("open-file limit"))
    })
}

/// A low soft open-file limit (1024 is a common default) would make accept
/// fail with EMFILE long before `limits.max_connections`: serve raises it to
/// the hard limit, and when even that is too low it warns and keeps serving.
#[tokio::test]
async fn serve_raises_the_open_file_limit_and_warns_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "routes.yaml", "routes: []\n");
    let config = write(
        dir.path(),
        "portico.yaml",
        "listen:\n  http: 127.0.0.1:0\noperator:\n  listen: 127.0.0.1:0\nroutes_file: routes.yaml\n\
         limits:\n  max_connections: 1000\n  max_inflight: 100\nshutdown:\n  drain_delay: 0s\n",
    );
    let needed = 1000 + 100 + 64;

    // Soft 256 under a hard 4096: raised to 4096, which is enough.
    let mut gw = serve_with_nofile(&config, 256, 4096);
    let line = open_file_line(&mut gw);
    assert_eq!(line["level"], "info", "{line}");
    assert_eq!(
        (line["before"].as_u64(), line["now"].as_u64()),
        (Some(256), Some(4096))
    );
    assert_eq!(line["needed"].as_u64(), Some(needed));
    gw.listening("http");
    assert_eq!(soft_nofile(gw.child.id()), 4096, "the limit really changed");
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));

    // Hard 512: nothing to raise to; a warning that names the fix, and the
    // gateway still serves.
    let mut gw = serve_with_nofile(&config, 512, 512);
    let line = open_file_line(&mut gw);
    assert_eq!(line["level"], "warn", "{line}");
    assert_eq!(
        (line["now"].as_u64(), line["needed"].as_u64()),
        (Some(512), Some(needed))
    );
    assert!(
        line["msg"].as_str().unwrap().contains("LimitNOFILE"),
        "{line}"
    );
    let http = gw.listening("http");
    assert_eq!(crate::support::client::get(http, "/x").await.status, 404);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}
