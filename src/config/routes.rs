//! The route file (owned by service teams, live-reloaded from a ConfigMap):
//! the validated [`RouteFile`], [`RouteSpec`] and [`BackendUrl`] types and the
//! walk from the YAML tree to them.
//!
//! Prefix rules exist so that a prefix always means what it says: request
//! paths are normalized (dot-segments removed, `//` merged, unreserved
//! characters decoded) before matching, so a prefix that is not itself in
//! normal form could never match, and would fail silently. We refuse it here.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::Uri;
use http::uri::Authority;

use super::check::{Checker, Map};
use super::error::ConfigErrors;
use super::yaml::{self, Node};

/// A validated route file.
#[derive(Debug, Clone)]
pub struct RouteFile {
    /// The file this was loaded from, for messages and `/routes`.
    pub source: PathBuf,
    /// In file order. May be empty: the gateway then answers 404 everywhere.
    pub routes: Vec<RouteSpec>,
}

/// One validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Starts with `/`, no trailing `/` (except `/` itself), no empty or dot
    /// segments, no pattern characters, not an operator path; unique in the
    /// file.
    pub prefix: String,
    /// Never empty; no duplicates.
    pub backends: Vec<BackendUrl>,
    /// Remove `prefix` from the path before forwarding.
    pub strip_prefix: bool,
    /// Upstream timeout for this route; `None` means `limits.upstream_timeout`.
    pub timeout: Option<Duration>,
    /// Per-route cap on requests in flight, so one slow backend cannot take
    /// the whole gateway's budget.
    pub max_inflight: Option<usize>,
    /// Extra CA bundle to verify https backends with a private CA, resolved
    /// against the route file's directory. Only set when a backend is https.
    pub ca_file: Option<PathBuf>,
    /// Line where the route starts, for diffs and log messages.
    pub line: usize,
}

/// A backend origin: scheme, host and port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    /// `https://`: connect with TLS, SNI = `host`.
    pub tls: bool,
    /// `host:port` with the port always explicit, computed once here so the
    /// proxy never builds it per request.
    pub authority: Authority,
    /// The host without port or IPv6 brackets, lowercased: for SNI and DNS.
    pub host: String,
    pub port: u16,
}

impl BackendUrl {
    /// `"http"` or `"https"`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.authority)
    }
}

/// Why a string is not a [`BackendUrl`]; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidBackendUrl(String);

impl FromStr for BackendUrl {
    type Err = InvalidBackendUrl;

    /// `http://host[:port][/]` or `https://host[:port][/]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |message: String| Err(InvalidBackendUrl(message));
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return fail("must not contain spaces or control characters".into());
        }
        // `http::Uri` silently drops a fragment; we would rather say so.
        if s.contains('#') {
            return fail(
                "must not have a fragment (#...); a backend is only scheme://host:port".into(),
            );
        }
        let Ok(uri) = s.parse::<Uri>() else {
            return fail(
                "is not a valid URL; write it like http://billing.billing.svc.cluster.local:8080"
                    .into(),
            );
        };
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return fail(format!("scheme must be http or https, got {other:?}")),
            None if uri.authority().is_some() => {
                return fail(format!(
                    "needs a scheme: write \"http://{s}\" (or https://)"
                ));
            }
            None => {
                return fail(
                    "is not a URL; write it like http://billing.billing.svc.cluster.local:8080"
                        .into(),
                );
            }
        };
        let Some(authority) = uri.authority() else {
            return fail("needs a host, e.g. http://billing:8080".into());
        };
        if authority.as_str().contains('@') {
            return fail(
                "must not contain user info (user@); put credentials in headers at the backend"
                    .into(),
            );
        }
        let bracketed = authority.host().to_ascii_lowercase();
        if bracketed.is_empty() {
            return fail("needs a host, e.g. http://billing:8080".into());
        }
        // Read the port ourselves: `Authority::port_u16` says `None` both for
        // no port and for an out-of-range one like 99999.
        let port_text = match authority.as_str().rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => Some(port),
            _ => None,
        };
        let port = match port_text.map(str::parse::<u16>) {
            None if tls => 443,
            None => 80,
            Some(Ok(port)) if port != 0 => port,
            Some(_) if port_text == Some("") => {
                return fail("has an empty port; remove the \":\" or write the port".into());
            }
            Some(_) => {
                return fail(format!(
                    "port must be between 1 and 65535, got {:?}",
                    port_text.unwrap_or_default()
                ));
            }
        };
        // `Uri::path` reports "/" both for no path and for a lone slash.
        if uri.path() != "/" {
            return fail(format!(
                "must not have a path ({:?}); the request path is forwarded as is (use strip_prefix to drop the route prefix)",
                uri.path()
            ));
        }
        if uri.query().is_some() {
            return fail(
                "must not have a query (?...); a backend is only scheme://host:port".into(),
            );
        }
        let Ok(authority) = format!("{bracketed}:{port}").parse::<Authority>() else {
            return fail("has an invalid host".into());
        };
        let host = bracketed
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(BackendUrl {
            tls,
            authority,
            host,
            port,
        })
    }
}

pub(super) const ROUTE_KEYS: &[&str] = &[
    "prefix",
    "backend",
    "backends",
    "strip_prefix",
    "timeout",
    "max_inflight",
    "ca_file",
];

/// Served only on the operator listener; on public listeners these and
/// everything under them are 404 whatever the route table says (DESIGN
/// "Operator paths are never public"), so a route there could never work.
const OPERATOR_PATHS: &[&str] = &crate::operator::RESERVED_PATHS;

/// Parses and validates a route file; `source` names the file in errors and
/// is the base for relative paths (`ca_file`).
pub fn parse_route_file(source: &Path, text: &str) -> Result<RouteFile, ConfigErrors> {
    let root = yaml::parse(source, text)?;
    let mut c = Checker::new(source);
    let Some(top) = c.mapping(&root, "the route file", &["routes"]) else {
        return c.finish(None);
    };
    let hint = "write `routes:` followed by a list of routes (`routes: []` for none)";
    let Some(entry) = top.entry("routes") else {
        c.error(top.pos, format!("routes is required; {hint}"));
        return c.finish(None);
    };
    let Some(items) = c.list(
        &entry.value,
        "routes",
        "routes (each a mapping with prefix and backend)",
    ) else {
        return c.finish(None);
    };
    let base = source.parent().unwrap_or(Path::new(""));
    // Prefix → line of the route that first used it.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        // Keep going after a bad route: the user gets every error at once.
        if let Some(route) = route(&mut c, item, index, base, &mut seen) {
            routes.push(route);
        }
    }
    c.finish(Some(RouteFile {
        source: source.to_path_buf(),
        routes,
    }))
}

fn route(
    c: &mut Checker<'_>,
    item: &Node,
    index: usize,
    base: &Path,
    seen: &mut HashMap<String, usize>,
) -> Option<RouteSpec> {
    // Name the route by its prefix when there is one to show.
    let label = match item.field("prefix").and_then(Node::as_str) {
        Some(prefix) => format!("route {prefix:?}"),
        None => format!("route #{}", index + 1),
    };
    let m = c.mapping(item, &label, ROUTE_KEYS)?;

    let prefix = c
        .required(&m, "prefix", &label, "e.g. prefix: /billing")
        .and_then(|entry| {
            let node = &entry.value;
            let prefix = c.string(node, &format!("{label}: prefix"), "a path like \"/billing\"")?;
            if let Some(problem) = prefix_problem(prefix) {
                c.error(node.pos, format!("{label}: prefix {problem}"));
                return None;
            }
            if let Some(first) = seen.get(prefix) {
                c.error(
                    node.pos,
                    format!("{label}: duplicate prefix, already used by the route at line {first}; merge the two routes"),
                );
                return None;
            }
            seen.insert(prefix.to_string(), item.pos.line);
            Some(prefix.to_string())
        });

    let backends = backends(c, &m, &label);
    let strip_prefix = match m.get("strip_prefix") {
        Some(node) => c.boolean(node, &format!("{label}: strip_prefix")),
        None => Some(false),
    };
    let timeout = match m.get("timeout") {
        Some(node) => c
            .duration(node, &format!("{label}: timeout"), false)
            .map(Some),
        None => Some(None),
    };
    let max_inflight = match m.get("max_inflight") {
        Some(node) => c.count(node, &format!("{label}: max_inflight")).map(Some),
        None => Some(None),
    };
    let ca_file = match m.get("ca_file") {
        Some(node) => {
            let path = c.path(node, &format!("{label}: ca_file"), base);
            // Judged only when the backends are valid, so one mistake gives one error.
            let no_https = backends.as_ref().is_some_and(|b| !b.iter().any(|b| b.tls));
            if path.is_some() && no_https {
                c.error(
                    node.pos,
                    format!(
                        "{label}: ca_file is set but no backend uses https; it only verifies https backends (remove it or use https://)"
                    ),
                );
                None
            } else {
                path.map(Some)
            }
        }
        None => Some(None),
    };

    Some(RouteSpec {
        prefix: prefix?,
        backends: backends?,
        strip_prefix: strip_prefix?,
        timeout: timeout?,
        max_inflight: max_inflight?,
        ca_file: ca_file?,
        line: item.pos.line,
    })
}

/// `backend: URL` or `backends: [URL, ...]`, exactly one of them.
fn backends(c: &mut Checker<'_>, m: &Map<'_>, label: &str) -> Option<Vec<BackendUrl>> {
    let example = "e.g. backend: http://billing.billing.svc.cluster.local:8080";
    match (m.entry("backend"), m.entry("backends")) {
        (Some(_), Some(both)) => {
            c.error(
                both.key_pos,
                format!("{label}: set either backend or backends, not both (backends: [..] lists several)"),
            );
            None
        }
        (None, None) => {
            c.error(
                m.pos,
                format!("{label}: backend is required ({example}), or backends: [..] for several"),
            );
            None
        }
        (Some(entry), None) => {
            backend_url(c, &entry.value, &format!("{label}: backend")).map(|backend| vec![backend])
        }
        (None, Some(entry)) => {
            let name = format!("{label}: backends");
            let items = c.list(&entry.value, &name, "URLs")?;
            if items.is_empty() {
                c.error(
                    entry.value.pos,
                    format!("{name}: must list at least one URL"),
                );
                return None;
            }
            let mut urls: Vec<BackendUrl> = Vec::with_capacity(items.len());
            let mut complete = true;
            for (i, item) in items.iter().enumerate() {
                match backend_url(c, item, &format!("{name}[{i}]")) {
                    Some(url) if urls.contains(&url) => {
                        c.error(item.pos, format!("{name}[{i}]: {url} is listed twice"));
                        complete = false;
                    }
                    Some(url) => urls.push(url),
                    None => complete = false,
                }
            }
            complete.then_some(urls)
        }
    }
}

fn backend_url(c: &mut Checker<'_>, node: &Node, name: &str) -> Option<BackendUrl> {
    let text = c.string(node, name, "a URL like \"http://billing:8080\"")?;
    match text.parse::<BackendUrl>() {
        Ok(url) => Some(url),
        Err(e) => {
            c.error(node.pos, format!("{name}: {text:?} {e}"));
            None
        }
    }
}

/// What is wrong with a prefix, as the end of "prefix ...", or `None`.
pub(super) fn prefix_problem(prefix: &str) -> Option<String> {
    if !prefix.starts_with('/') {
        return Some(format!("must start with \"/\" (write \"/{prefix}\")"));
    }
    for ch in prefix.chars() {
        let problem = match ch {
            c if c.is_whitespace() => "must not contain whitespace".to_string(),
            c if c.is_control() => "must not contain control characters".to_string(),
            '%' => "must not contain \"%\": write characters as themselves, not percent-encoded"
                .to_string(),
            '?' => "must not contain \"?\": a prefix matches the path, never the query".to_string(),
            '#' => "must not contain \"#\": fragments never reach the server".to_string(),
            '\\' => "must not contain \"\\\"".to_string(),
            '{' | '}' | '*' => format!(
                "must not contain {:?}: a prefix is a literal path, not a pattern (it already matches everything under it)",
                ch.to_string()
            ),
            c if !c.is_ascii() => format!(
                "must not contain {:?}: only ASCII is allowed, because request paths arrive percent-encoded and could never match it",
                c.to_string()
            ),
            c if !is_path_char(c) => {
                format!(
                    "must not contain {:?}, which is not allowed unencoded in a URL path",
                    c.to_string()
                )
            }
            _ => continue,
        };
        return Some(problem);
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        let fixed = prefix.trim_end_matches('/');
        let fixed = if fixed.is_empty() { "/" } else { fixed };
        return Some(format!(
            "must not end with \"/\" (write {fixed:?}); it already matches {fixed}/ and below"
        ));
    }
    let segments: Vec<&str> = prefix[1..].split('/').collect();
    if prefix.len() > 1 && segments.iter().any(|s| s.is_empty()) {
        let fixed = format!(
            "/{}",
            segments
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/")
        );
        return Some(format!(
            "must not contain an empty segment (\"//\") (write {fixed:?})"
        ));
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Some(
            "must not contain \".\" or \"..\" segments: request paths are normalized before matching, so it could never match"
                .to_string(),
        );
    }
    if let Some(reserved) = OPERATOR_PATHS.iter().find(|p| is_under(prefix, p)) {
        return Some(format!(
            "is reserved: {reserved} and everything under it is served only on the operator listener (never publicly); choose another prefix"
        ));
    }
    None
}

/// RFC 3986 `pchar` plus `/`, minus `%` (handled above): what a normalized
/// request path can hold unencoded.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()+,;=:@/".contains(c)
}

/// Segment-wise: `/metrics/x` is under `/metrics`, `/metricsx` is not.
fn is_under(prefix: &str, base: &str) -> bool {
    prefix
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
