//! Functional URI governance: `functions:` (every path's first segment names
//! a business function; an error otherwise), and `portico check --lint`,
//! which warns about routes that change nothing, subtrees two owners share
//! without saying so, and first segments that are not declared functions.
//!
//! The root `/`: with `functions:` declared, a `prefix: /` (or `exact: /`)
//! route lies above every function and is refused unless it says
//! `shared: true` (a catch-all meant for every function).

use std::collections::HashMap;
use std::fmt;

use super::check::Checker;
use super::error::Location;
use super::routes::{HostPattern, RouteFile, RouteSpec};
use super::yaml::{Node, Pos};

/// Reads `functions: [billing, orders, ...]`.
pub(super) fn functions(c: &mut Checker<'_>, node: &Node) -> Option<Vec<String>> {
    let items = c.list(node, "functions", "function names like billing")?;
    if items.is_empty() {
        c.error(
            node.pos,
            "functions: must list at least one function (or remove the key)",
        );
        return None;
    }
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let name = format!("functions[{i}]");
        let Some(text) = c.string(item, &name, "a function name like billing") else {
            ok = false;
            continue;
        };
        let segment_char = |ch: char| ch.is_ascii_alphanumeric() || "-._~".contains(ch);
        if !text.chars().all(segment_char) || text == "." || text == ".." {
            c.error(
                item.pos,
                format!("{name}: {text:?} is not one path segment; write the first segment of the paths, e.g. billing for /billing/..."),
            );
            ok = false;
        } else if names.iter().any(|n| n == text) {
            c.error(item.pos, format!("{name}: {text:?} is listed twice"));
            ok = false;
        } else {
            names.push(text.to_owned());
        }
    }
    ok.then_some(names)
}

/// The first segment of a route path (`billing` of `/billing/reports`), or
/// `None` for `/`.
pub fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let seg = rest.split('/').next().unwrap_or_default();
    (!seg.is_empty()).then_some(seg)
}

fn pos(route: &RouteSpec) -> Pos {
    Pos {
        line: route.path_pos.0,
        column: route.path_pos.1,
    }
}

fn kind(route: &RouteSpec) -> &'static str {
    if route.exact { "exact" } else { "prefix" }
}

/// Every route's first segment must be a declared function.
pub(super) fn check_functions(c: &mut Checker<'_>, names: &[String], routes: &[RouteSpec]) {
    for r in routes {
        match first_segment(&r.path) {
            None if r.shared => {}
            None => c.error(
                pos(r),
                format!(
                    "route {:?}: {} \"/\" lies above every function ({}); mark the catch-all shared: true if it is meant, or route each function",
                    r.label(),
                    kind(r),
                    names.join(", ")
                ),
            ),
            Some(seg) if names.iter().any(|n| n == seg) => {}
            Some(seg) => c.error(
                pos(r),
                format!(
                    "route {:?}: first segment {seg:?} is not a function; functions: {} (add it there, or move the route under one)",
                    r.label(),
                    names.join(", ")
                ),
            ),
        }
    }
}

/// One `portico check --lint` finding: worth a look, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.location.file.display(),
            self.location.line,
            self.location.column,
            self.message
        )
    }
}

/// Whether `child` lies in the subtree of the prefix `parent`, segment-wise
/// (`/billing/reports` under `/billing`, never `/billingX`).
pub fn under(parent: &str, child: &str) -> bool {
    parent == "/"
        || child
            .strip_prefix(parent)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The prefixes a path lies under, longest first: `/a/b` gives `/a/b`,
/// `/a`, `/`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.rfind('/') {
            _ if current == "/" => None,
            Some(0) => Some("/"),
            Some(i) => Some(&current[..i]),
            None => None,
        };
        Some(current)
    })
}

/// Everything about serving a request that two routes could share: when
/// a route and the prefix that would take its requests without it agree on
/// all of it, the route changes nothing.
fn serves_alike(a: &RouteSpec, b: &RouteSpec) -> bool {
    !a.strip_prefix
        && !b.strip_prefix
        && a.backends == b.backends
        && a.timeout == b.timeout
        && a.max_inflight.is_none()
        && b.max_inflight.is_none()
        && a.ca_file == b.ca_file
        && a.balance == b.balance
        && a.outlier == b.outlier
        && a.retries == b.retries
        && a.retry_on == b.retry_on
        && a.breaker == b.breaker
        && a.retry_buffer == b.retry_buffer
        && a.dns_refresh == b.dns_refresh
        && a.canary == b.canary
        && a.allow_from == b.allow_from
        && a.redirect == b.redirect
        && a.max_body_size == b.max_body_size
        && a.host_header == b.host_header
        && a.https_redirect == b.https_redirect
}

/// `portico check --lint`: the warnings for a valid file, in file order.
/// Costs one hash probe per segment of each path, whatever the file's size.
pub fn lint(file: &RouteFile) -> Vec<Warning> {
    let mut out = Vec::new();
    let warn = |out: &mut Vec<Warning>, r: &RouteSpec, message: String| {
        out.push(Warning {
            location: Location {
                file: file.source.clone(),
                line: r.path_pos.0,
                column: r.path_pos.1,
            },
            message,
        });
    };
    // The prefix routes of each host table, by path.
    let mut prefixes: HashMap<(Option<&HostPattern>, &str), &RouteSpec> = HashMap::new();
    for r in file.routes.iter().filter(|r| !r.exact) {
        prefixes.insert((r.host.as_ref(), r.path.as_str()), r);
    }
    for r in &file.routes {
        // The prefixes above this route, nearest first (for an exact route,
        // a prefix with the same path is above it too).
        let above = ancestors(&r.path)
            .filter_map(|p| prefixes.get(&(r.host.as_ref(), p)).copied())
            .filter(|p| p.key() != r.key());
        let mut nearest = true;
        for parent in above {
            if nearest && serves_alike(r, parent) {
                warn(
                    &mut out,
                    r,
                    format!(
                        "route {:?} is shadowed by {:?} (line {}): every request it takes would go to the same backends with the same settings without it; remove it",
                        r.name(),
                        parent.name(),
                        parent.line
                    ),
                );
            }
            nearest = false;
            if let (Some(mine), Some(theirs)) = (&r.owner, &parent.owner)
                && mine != theirs
                && !r.shared
                && !parent.shared
            {
                warn(
                    &mut out,
                    r,
                    format!(
                        "route {:?} (owner {mine}) lies under {:?} (owner {theirs}, line {}): two owners share this subtree; mark one of them shared: true if that is meant",
                        r.name(),
                        parent.name(),
                        parent.line
                    ),
                );
            }
        }
    }
    if file.functions.is_none() {
        let mut first: Vec<(&str, &RouteSpec)> = Vec::new();
        for r in &file.routes {
            if let Some(seg) = first_segment(&r.path)
                && !first.iter().any(|(s, _)| *s == seg)
            {
                first.push((seg, r));
            }
        }
        let all: Vec<&str> = first.iter().map(|(s, _)| *s).collect();
        for (seg, r) in &first {
            warn(
                &mut out,
                r,
                format!(
                    "route {:?}: first segment {seg:?} is not a declared function; declare the business functions (functions: [{}]) so URIs stay grouped by function",
                    r.name(),
                    all.join(", ")
                ),
            );
        }
    }
    out.sort_by_key(|w| (w.location.line, w.location.column));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_segment_prefixes_longest_first() {
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            ["/a/b/c", "/a/b", "/a", "/"]
        );
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
        assert_eq!(ancestors("/x/").collect::<Vec<_>>(), ["/x/", "/x", "/"]);
    }

    fn file(yaml: &str) -> RouteFile {
        super::super::parse_route_file(std::path::Path::new("r.yaml"), yaml).unwrap()
    }

    #[test]
    fn lint_findings() {
        let f = file(
            "functions: [a, b]
routes:
  - prefix: /a
    backend: http://a:1
    owner: team-a
  - exact: /a/x
    backend: http://a:1
  - exact: /a/y
    backend: http://a:1
    timeout: 5s
  - host: api.example.com
    prefix: /a/z
    backend: http://a:1
    owner: team-b
  - prefix: /a/shared
    backend: http://s:1
    owner: team-b
    shared: true
  - prefix: /b
    backend: http://b:1
    owner: team-b
  - prefix: /b/c
    backend: http://c:1
    owner: team-c
",
        );
        let found: Vec<String> = lint(&f).iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 2, "{found:#?}");
        // An exact path the prefix above would serve the same way.
        assert!(
            found[0].starts_with(
                "r.yaml:6:12: warning: route \"=/a/x\" is shadowed by \"/a\" (line 3)"
            ),
            "{found:#?}"
        );
        // Another owner under /b without shared: true; another host's /a/z
        // and the shared /a/shared are not.
        assert!(
            found[1].starts_with("r.yaml:22:13: warning: route \"/b/c\" (owner team-c) lies under \"/b\" (owner team-b, line 19)"),
            "{found:#?}"
        );
    }

    // Regression: a sub-route that only adds an allow-list (or another
    // request-path setting) was reported as shadowed, "remove it", which
    // would have opened what it closes.
    #[test]
    fn a_route_that_adds_a_control_is_not_shadowed() {
        for extra in [
            "    allow_from: [10.0.0.0/8]\n",
            "    max_body_size: 1KiB\n",
            "    host_header: a.internal\n",
            "    https_redirect: true\n",
        ] {
            let text = format!(
                "routes:\n  - prefix: /a\n    backend: http://a:1\n  - prefix: /a/admin\n    backend: http://a:1\n{extra}"
            );
            let f = file(&text);
            assert!(
                lint(&f).iter().all(|w| !w.message.contains("shadowed")),
                "{extra}"
            );
        }
        let plain = "routes:\n  - prefix: /a\n    backend: http://a:1\n  - prefix: /a/admin\n    backend: http://a:1\n";
        let f = file(plain);
        assert!(lint(&f).iter().any(|w| w.message.contains("shadowed")));
    }

    #[test]
    fn under_is_segment_wise() {
        assert!(under("/billing", "/billing/reports"));
        assert!(under("/billing", "/billing"));
        assert!(under("/", "/anything"));
        assert!(!under("/billing", "/billingX"));
        assert_eq!(first_segment("/billing/x"), Some("billing"));
        assert_eq!(first_segment("/"), None);
    }
}
