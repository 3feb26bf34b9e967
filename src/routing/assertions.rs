//! Route assertions (the route file's `tests:`), run against a built table
//! with the gateway's own steps: the same normalization, reserved paths,
//! [`RouteTable::select`], canary rule and path rewriting as a request.
//! `portico check` runs them, and a reload whose assertions fail is
//! rejected like an invalid file.

use std::sync::Arc;

use crate::config::assertions::{Expected, RouteAssertion};
use crate::config::{ConfigError, ConfigErrors, ExpectedRoute, Location};

use super::canary;
use super::table::{Route, RouteTable};
use super::{path, reserved};

/// What the gateway does with one request, decided without a backend.
pub struct Resolution<'t> {
    /// The normalized path, when the request has one.
    pub normalized: Option<String>,
    /// Portico's own answer (`400` for a path it refuses, `404` for a
    /// reserved path or no route); `None` when the request is proxied.
    pub status: Option<u16>,
    /// Why Portico answers itself.
    pub refusal: Option<String>,
    /// The route chosen.
    pub route: Option<&'t Arc<Route>>,
    /// The side of it that serves: the canary's when taken.
    pub side: Option<&'t Route>,
    pub canary: bool,
    /// Path and query the backend receives.
    pub upstream_target: Option<String>,
}

/// Resolves `target` (path and optional query) for `host`, as from an
/// operator (or not) who asks for the canary (or not). A public request to
/// a weighted canary is resolved to its stable side: which side it gets is
/// chance, and only the operator rule is certain.
pub fn resolve<'t>(
    table: &'t RouteTable,
    host: Option<&str>,
    target: &str,
    operator: bool,
    asked: bool,
) -> Resolution<'t> {
    let mut r = Resolution {
        normalized: None,
        status: None,
        refusal: None,
        route: None,
        side: None,
        canary: false,
        upstream_target: None,
    };
    let (raw, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let normalized = match path::normalize(raw) {
        Ok(p) => p.into_owned(),
        Err(e) => {
            r.status = Some(400);
            r.refusal = Some(format!("bad_request: {e}"));
            return r;
        }
    };
    let matching = path::without_params(&normalized).into_owned();
    r.normalized = Some(normalized.clone());
    if reserved::is_reserved(&matching) {
        r.status = Some(404);
        r.refusal = Some("no_route: a reserved operator path".into());
        return r;
    }
    let Some(route) = table.select(host, &matching).route else {
        r.status = Some(404);
        r.refusal = Some("no_route".into());
        return r;
    };
    // A redirect route is answered by Portico itself.
    if let Some(rd) = &route.spec.redirect {
        r.status = Some(rd.status.as_u16());
        r.refusal = Some(format!(
            "redirect to {}",
            rd.location.to_str().unwrap_or_default()
        ));
        r.route = Some(route);
        return r;
    }
    let side: &Route = match &route.canary {
        Some(c) if canary::operator_choice(operator, asked) => {
            r.canary = true;
            &c.route
        }
        _ => route,
    };
    let mut upstream = side.upstream_path(&normalized).to_owned();
    if let Some(q) = query {
        upstream.push('?');
        upstream.push_str(q);
    }
    r.route = Some(route);
    r.side = Some(side);
    r.upstream_target = Some(upstream);
    r
}

/// Failed assertions, one error each, at the expectation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AssertionsFailed(pub ConfigErrors);

/// Runs every assertion; `Ok` when all hold.
pub fn check(table: &RouteTable, tests: &[RouteAssertion]) -> Result<(), AssertionsFailed> {
    let mut failures = Vec::new();
    for (i, t) in tests.iter().enumerate() {
        failures.extend(failures_of(table, i, t));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        failures.sort_by_key(|e| e.location().map(|l| (l.line, l.column)));
        Err(AssertionsFailed(ConfigErrors(failures)))
    }
}

fn failures_of(table: &RouteTable, index: usize, t: &RouteAssertion) -> Vec<ConfigError> {
    let r = resolve(table, t.host.as_deref(), &t.path, t.from_operator, t.canary);
    let request = format!(
        "tests[{index}]: {} {}{}{}",
        t.method,
        t.host.as_deref().unwrap_or(""),
        t.path,
        match (t.from_operator, t.canary) {
            (true, true) => " (operator, asks for the canary)",
            (true, false) => " (operator)",
            (false, true) => " (public, asks for the canary)",
            (false, false) => "",
        }
    );
    let chosen_route = match r.route {
        Some(route) => format!("{} (line {})", route.spec.name(), route.spec.line),
        None => format!(
            "none ({} {})",
            r.status.unwrap_or(404),
            r.refusal.as_deref().unwrap_or("")
        ),
    };
    let mut out = Vec::new();
    let mut fail = |location: &Location, message: String| {
        out.push(ConfigError::Invalid {
            location: location.clone(),
            message: format!("{request}: {message}"),
        });
    };
    let e = &t.expect;
    let route_ok = match (&e.route.value, r.route) {
        (ExpectedRoute::None, None) => true,
        (ExpectedRoute::Named(want), Some(route)) => {
            route.spec.label() == *want || route.spec.name() == *want
        }
        _ => false,
    };
    if !route_ok {
        fail(
            &e.route.location,
            format!("expected route {}, chosen {chosen_route}", e.route.value),
        );
    }
    if let Some(Expected { value, location }) = &e.backend {
        match r.side {
            // By scheme and authority: `https://` names a backend of a
            // route with `http2: true` too (the flag is not in the URL).
            Some(side)
                if side
                    .spec
                    .backends
                    .iter()
                    .any(|b| b.scheme() == value.scheme() && b.authority == value.authority) => {}
            Some(side) => {
                let chosen: Vec<String> =
                    side.spec.backends.iter().map(|b| b.to_string()).collect();
                fail(
                    location,
                    format!(
                        "expected backend {value}, chosen {} ({}{})",
                        chosen.join(", "),
                        if r.canary { "the canary of " } else { "" },
                        chosen_route
                    ),
                );
            }
            None => fail(
                location,
                format!("expected backend {value}, chosen none: route {chosen_route}"),
            ),
        }
    }
    if let Some(Expected { value, location }) = &e.upstream_path
        && r.upstream_target.as_deref() != Some(value.as_str())
    {
        fail(
            location,
            format!(
                "expected upstream path {value}, chosen {}",
                r.upstream_target.as_deref().unwrap_or("none (not proxied)")
            ),
        );
    }
    if let Some(Expected { value, location }) = &e.status
        && r.status != Some(*value)
    {
        let chosen = match r.status {
            Some(s) => format!("{s}"),
            None => format!("proxied to {chosen_route}, which answers"),
        };
        fail(
            location,
            format!("expected status {value} from Portico, chosen {chosen}"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::metrics::Metrics;
    use crate::proxy::upstream::{PoolTimeouts, UpstreamClients};
    use crate::routing::table::BuildContext;
    use std::path::Path;
    use std::time::Duration;

    fn table_and_tests(yaml: &str) -> (RouteTable, Vec<RouteAssertion>) {
        let mut file = crate::config::parse_route_file(Path::new("routes.yaml"), yaml).unwrap();
        let tests = std::mem::take(&mut file.tests);
        let clients = UpstreamClients::new(PoolTimeouts {
            connect: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        })
        .unwrap();
        let metrics = Metrics::new();
        let ctx = BuildContext {
            metrics: &metrics,
            clients: &clients,
            default_timeout: Duration::from_secs(30),
            previous: None,
        };
        (RouteTable::build(file, &ctx).unwrap(), tests)
    }

    const ROUTES: &str = "routes:
  - prefix: /billing
    backend: http://billing:8080
  - prefix: /billing/reports
    backend: http://reports:8080
    strip_prefix: true
    canary: {backend: http://reports-v2:8080}
  - host: api.example.com
    exact: /health
    backend: http://health:8080
";

    #[test]
    fn passing_assertions_pass() {
        let yaml = format!(
            "{ROUTES}tests:
  - path: /billing/reportsX
    expect: {{route: /billing, backend: http://billing:8080, upstream_path: /billing/reportsX}}
  - path: /billing/reports/2024/../q1?x=1
    expect: {{route: /billing/reports, backend: http://reports:8080, upstream_path: /q1?x=1}}
  - path: /billing/reports/q1
    from_operator: true
    canary: true
    expect: {{route: /billing/reports, backend: http://reports-v2:8080}}
  - path: /billing/reports/q1
    canary: true
    expect: {{route: /billing/reports, backend: http://reports:8080}}
  - path: /health
    host: API.example.com:443
    expect: {{route: api.example.com=/health}}
  - path: /billing
    host: api.example.com
    expect: {{route: none, status: 404}}
  - path: /metrics
    expect: {{route: none, status: 404}}
  - path: /../x
    expect: {{route: none, status: 400}}
"
        );
        let (table, tests) = table_and_tests(&yaml);
        assert_eq!(tests.len(), 8);
        check(&table, &tests).unwrap();
    }

    #[test]
    fn each_failure_names_its_line_expected_and_chosen() {
        let yaml = format!(
            "{ROUTES}tests:
  - path: /billing/reports/q1
    expect:
      route: /billing
      upstream_path: /billing/reports/q1
  - path: /billing/reports/q1
    canary: true
    expect: {{route: /billing/reports, backend: http://reports-v2:8080}}
  - path: /billing
    expect: {{route: /billing, status: 404}}
"
        );
        let (table, tests) = table_and_tests(&yaml);
        let failed = check(&table, &tests).unwrap_err().to_string();
        let lines: Vec<&str> = failed.lines().collect();
        assert_eq!(lines.len(), 4, "{failed}");
        assert_eq!(
            lines[0],
            "routes.yaml:14:14: tests[0]: GET /billing/reports/q1: expected route /billing, chosen /billing/reports (line 4)"
        );
        assert_eq!(
            lines[1],
            "routes.yaml:15:22: tests[0]: GET /billing/reports/q1: expected upstream path /billing/reports/q1, chosen /q1"
        );
        assert!(
            lines[2].starts_with("routes.yaml:18:48: tests[1]: GET /billing/reports/q1 (public, asks for the canary): expected backend http://reports-v2:8080, chosen http://reports:8080"),
            "{failed}"
        );
        assert!(
            lines[3].starts_with("routes.yaml:20:39: tests[2]: GET /billing: expected status 404 from Portico, chosen proxied to /billing"),
            "{failed}"
        );
    }

    #[test]
    fn a_redirect_route_is_portico_s_own_answer() {
        let yaml = "routes:
  - prefix: /old
    redirect: {to: \"https://new.example.com/\", status: 301}
tests:
  - path: /old/x
    expect: {route: /old, status: 301}
  - path: /old
    expect: {route: /old, status: 302}
  - path: /old
    expect: {route: /old, upstream_path: /old}
";
        let (table, tests) = table_and_tests(yaml);
        let errors: Vec<String> = check(&table, &tests)
            .unwrap_err()
            .0
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].contains("expected status 302 from Portico, chosen 301"),
            "{errors:#?}"
        );
        assert!(
            errors[1].contains("expected upstream path /old, chosen none (not proxied)"),
            "{errors:#?}"
        );
    }
}
