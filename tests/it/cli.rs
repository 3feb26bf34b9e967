//! The real binary: `check`, `routes`, exit codes.

use crate::support::binary::run;

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

#[test]
fn check_reports_every_route_error_with_line_and_column_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
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
    let routes_path = write(dir.path(), "routes.yaml", routes);
    let cfg = write(
        dir.path(),
        "portico.yaml",
        "listen:\n  http: 127.0.0.1:0\nroutes_file: routes.yaml\n",
    );
    let out = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = routes_path.display().to_string();
    for (line, col, needle) in [
        (2, 13, "/billing/"),
        (5, 14, "ftp"),
        (6, 13, "/metrics"),
        (10, 5, "timout"),
    ] {
        let prefix = format!("{file}:{line}:{col}: ");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "expected {prefix}...{needle} in:\n{err}"
        );
    }
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
