//! The route file's `tests:` list: requests and what the table must do with
//! them. Parsed here with positions; run against the built table by
//! [`crate::routing::assertions`], from `portico check` and before a reload
//! is swapped in.
//!
//! ```yaml
//! tests:
//!   - path: /billing/reports/2024
//!     host: api.example.com          # optional
//!     method: GET                    # optional, default GET
//!     from_operator: true            # optional: TCP peer in operator.allow (or the token)
//!     canary: true                   # optional: asks for the canary (x-portico-canary: 1)
//!     expect:
//!       route: /billing/reports      # the route label (`=/path` for exact), or `none`
//!       backend: http://billing-reports:8080   # optional: one of the backends chosen
//!       upstream_path: /2024         # optional: path (and query) the backend receives
//!       status: 404                  # optional: Portico's own answer (400, 404)
//! ```

use std::path::Path;

use super::check::Checker;
use super::error::Location;
use super::routes::BackendUrl;
use super::yaml::{Node, Pos};

/// One entry of `tests:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAssertion {
    /// The entry, for messages about it as a whole.
    pub location: Location,
    /// The request target: a path, optionally with `?query`, as a client sends it.
    pub path: String,
    pub host: Option<String>,
    /// Shown in messages; routes do not match on method.
    pub method: http::Method,
    /// The request comes from an operator (peer in `operator.allow`, or the token).
    pub from_operator: bool,
    /// The request asks for the canary (header or cookie).
    pub canary: bool,
    pub expect: Expectation,
}

/// What the table must do with an assertion's request; each part points at
/// where it was written, so a failure names that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub route: Expected<ExpectedRoute>,
    pub backend: Option<Expected<BackendUrl>>,
    pub upstream_path: Option<Expected<String>>,
    pub status: Option<Expected<u16>>,
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<T> {
    pub value: T,
    pub location: Location,
}

/// `expect.route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedRoute {
    /// `none`: no route takes the request (Portico answers it).
    None,
    /// A route label (`/billing`, `=/healthcheck`), or host and label
    /// (`api.example.com/billing`).
    Named(String),
}

impl std::fmt::Display for ExpectedRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedRoute::None => f.write_str("none"),
            ExpectedRoute::Named(n) => f.write_str(n),
        }
    }
}

pub(super) const TEST_KEYS: &[&str] = &[
    "path",
    "host",
    "method",
    "from_operator",
    "canary",
    "expect",
];
pub(super) const EXPECT_KEYS: &[&str] = &["route", "backend", "upstream_path", "status"];

fn location(file: &Path, pos: Pos) -> Location {
    Location {
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
    }
}

/// Reads the `tests:` list.
pub(super) fn tests(c: &mut Checker<'_>, node: &Node, file: &Path) -> Option<Vec<RouteAssertion>> {
    let items = c.list(node, "tests", "tests (each a mapping with path and expect)")?;
    let mut out = Vec::with_capacity(items.len());
    let mut complete = true;
    for (i, item) in items.iter().enumerate() {
        match test(c, item, i, file) {
            Some(t) => out.push(t),
            None => complete = false,
        }
    }
    complete.then_some(out)
}

fn test(c: &mut Checker<'_>, item: &Node, index: usize, file: &Path) -> Option<RouteAssertion> {
    let name = match item.field("path").and_then(Node::as_str) {
        Some(p) => format!("tests[{index}] ({p})"),
        None => format!("tests[{index}]"),
    };
    let m = c.mapping(item, &name, TEST_KEYS)?;
    let path = c
        .required(&m, "path", &name, "e.g. path: /billing/reports")
        .and_then(|e| {
            let p = c.string(
                &e.value,
                &format!("{name}: path"),
                "a request path like \"/billing\"",
            )?;
            if !p.starts_with('/') {
                c.error(
                    e.value.pos,
                    format!("{name}: path must start with \"/\" (write \"/{p}\")"),
                );
                return None;
            }
            if p.contains(|ch: char| ch.is_whitespace() || ch.is_control() || ch == '#') {
                c.error(
                    e.value.pos,
                    format!(
                        "{name}: path {p:?} must not contain spaces, control characters or '#'"
                    ),
                );
                return None;
            }
            Some(p.to_owned())
        });
    let host = match m.get("host") {
        None => Some(None),
        Some(n) => c
            .string(
                n,
                &format!("{name}: host"),
                "a host like \"api.example.com\"",
            )
            .and_then(|h| {
                if h.contains(|ch: char| ch.is_whitespace() || ch == '/') {
                    c.error(n.pos, format!("{name}: host {h:?} is not a host name"));
                    None
                } else {
                    Some(Some(h.to_owned()))
                }
            }),
    };
    let method = match m.get("method") {
        None => Some(http::Method::GET),
        Some(n) => c
            .string(n, &format!("{name}: method"), "a method like GET")
            .and_then(|t| match http::Method::from_bytes(t.as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    c.error(n.pos, format!("{name}: method {t:?} is not an HTTP method"));
                    None
                }
            }),
    };
    let flag = |c: &mut Checker<'_>, key: &str| match m.get(key) {
        None => Some(false),
        Some(n) => c.boolean(n, &format!("{name}: {key}")),
    };
    let from_operator = flag(c, "from_operator");
    let canary = flag(c, "canary");
    let expect = c
        .required(
            &m,
            "expect",
            &name,
            "e.g. expect: {route: /billing} (route: none for a 404)",
        )
        .and_then(|e| expectation(c, &e.value, &format!("{name}: expect"), file));
    Some(RouteAssertion {
        location: location(file, item.pos),
        path: path?,
        host: host?,
        method: method?,
        from_operator: from_operator?,
        canary: canary?,
        expect: expect?,
    })
}

fn expectation(c: &mut Checker<'_>, node: &Node, name: &str, file: &Path) -> Option<Expectation> {
    let m = c.mapping(node, name, EXPECT_KEYS)?;
    let route = c
        .required(&m, "route", name, "the route label, e.g. route: /billing (or route: none)")
        .and_then(|e| {
            let text = c.string(&e.value, &format!("{name}: route"), "a route like \"/billing\" or none")?;
            let value = if text == "none" {
                ExpectedRoute::None
            } else if text.contains('/') {
                ExpectedRoute::Named(text.to_owned())
            } else {
                c.error(
                    e.value.pos,
                    format!("{name}: route {text:?} is not a route: write its path (/billing, =/exact), host and path (api.example.com/billing), or none"),
                );
                return None;
            };
            Some(Expected {
                value,
                location: location(file, e.value.pos),
            })
        });
    let backend = match m.get("backend") {
        None => Some(None),
        Some(n) => {
            let label = format!("{name}: backend");
            c.string(n, &label, "a URL like \"http://billing:8080\"")
                .and_then(|t| match t.parse::<BackendUrl>() {
                    Ok(url) => Some(Some(Expected {
                        value: url,
                        location: location(file, n.pos),
                    })),
                    Err(e) => {
                        c.error(n.pos, format!("{label}: {t:?} {e}"));
                        None
                    }
                })
        }
    };
    let upstream_path = match m.get("upstream_path") {
        None => Some(None),
        Some(n) => {
            let label = format!("{name}: upstream_path");
            c.string(n, &label, "a path like \"/reports\"")
                .and_then(|t| {
                    if t.starts_with('/') {
                        Some(Some(Expected {
                            value: t.to_owned(),
                            location: location(file, n.pos),
                        }))
                    } else {
                        c.error(
                            n.pos,
                            format!("{label}: must start with \"/\" (write \"/{t}\")"),
                        );
                        None
                    }
                })
        }
    };
    let status = match m.get("status") {
        None => Some(None),
        Some(n) => c.number(n, &format!("{name}: status"), 100, 599).map(|s| {
            Some(Expected {
                value: s as u16,
                location: location(file, n.pos),
            })
        }),
    };
    Some(Expectation {
        route: route?,
        backend: backend?,
        upstream_path: upstream_path?,
        status: status?,
    })
}
