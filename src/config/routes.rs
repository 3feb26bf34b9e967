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

use super::assertions::RouteAssertion;
use super::canary::CanarySpec;
use super::check::{Checker, Map};
use super::error::ConfigErrors;
use super::yaml::{self, Node, Pos};

/// A validated route file.
#[derive(Debug, Clone)]
pub struct RouteFile {
    /// The file this was loaded from, for messages and `/routes`.
    pub source: PathBuf,
    /// In file order. May be empty: the gateway then answers 404 everywhere.
    pub routes: Vec<RouteSpec>,
    /// `tests:`: requests and what the table must do with them, run by
    /// `portico check` and before a reload is taken.
    pub tests: Vec<RouteAssertion>,
    /// `functions:`: the business functions every path's first segment
    /// must name, when the file declares them.
    pub functions: Option<Vec<String>>,
}

/// One validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// The host table the route belongs to; `None` is the default table
    /// (requests whose host no host rule covers).
    pub host: Option<HostPattern>,
    /// The `prefix:` or `exact:` path. Starts with `/`, no empty or dot
    /// segments, no `;`, no pattern characters, not an operator path; a
    /// prefix has no trailing `/` (except `/` itself). `(host, exact, path)`
    /// is unique in the file.
    pub path: String,
    /// `exact:` (Kubernetes `pathType: Exact`): matches only `path` itself.
    /// Otherwise a segment-wise prefix (`pathType: Prefix`).
    pub exact: bool,
    /// Never empty; no duplicates.
    pub backends: Vec<BackendUrl>,
    /// Remove the prefix (or the exact path) from the path before forwarding.
    pub strip_prefix: bool,
    /// Upstream timeout for this route; `None` means `limits.upstream_timeout`.
    pub timeout: Option<Duration>,
    /// Per-route cap on requests in flight, so one slow backend cannot take
    /// the whole gateway's budget.
    pub max_inflight: Option<usize>,
    /// Extra CA bundle to verify https backends with a private CA, resolved
    /// against the route file's directory. Only set when a backend is https.
    pub ca_file: Option<PathBuf>,
    /// How requests are spread over the backends (`balance:`).
    pub balance: Balance,
    /// When a failing backend is left out (`outlier:`).
    pub outlier: OutlierPolicy,
    /// Extra tries a request may get on another backend when that is safe
    /// (`retries:`, default 2; 0 turns retries off).
    pub retries: u32,
    /// Backend statuses on which an idempotent request without a body is
    /// tried again elsewhere (`retry_on:`, 5xx only; default none).
    pub retry_on: Vec<u16>,
    /// Per-backend bounds on requests (`circuit_breaker:`).
    pub breaker: CircuitBreaker,
    /// Request bodies up to this size are read ahead so that an idempotent
    /// request can be retried after a backend saw it (`retry_buffer:`,
    /// default 64 KiB; 0 turns it off).
    pub retry_buffer: u64,
    /// `discovery: dns`: every backend's host name stands for all the
    /// addresses it resolves to, re-resolved every `dns_refresh`.
    pub dns_refresh: Option<Duration>,
    /// `canary:`: the new version's backends, reached by operators who ask
    /// for it, and by `weight` percent of public requests.
    pub canary: Option<CanarySpec>,
    /// `owner:`: the team that owns the route (for `portico check --lint`).
    pub owner: Option<String>,
    /// `shared: true`: the route shares its subtree with another owner's
    /// route on purpose.
    pub shared: bool,
    /// `allow_from: [CIDR, ..]`: only TCP peers inside one of these reach
    /// the route; others get `403 forbidden`. Empty: everyone.
    pub allow_from: Vec<ipnet::IpNet>,
    /// `redirect: {to, status}`: Portico answers the route itself, and the
    /// route has no backends.
    pub redirect: Option<Redirect>,
    /// `max_body_size`: this route's request-body cap, instead of
    /// `limits.max_body_size`.
    pub max_body_size: Option<u64>,
    /// `host_header`: the `Host` (HTTP/2 `:authority`) sent upstream
    /// instead of the client's, for a backend that serves one virtual host
    /// (ingress-nginx's `upstream-vhost`). Built once, here.
    pub host_header: Option<http::HeaderValue>,
    /// `https_redirect: true`: a request on the plain listener gets `308`
    /// to the same host and target on the HTTPS listener (ingress-nginx's
    /// `ssl-redirect`), when the gateway has one.
    pub https_redirect: bool,
    /// Line where the route starts, for diffs and log messages.
    pub line: usize,
    /// Line and column of the route's path value, for messages about it.
    pub path_pos: (usize, usize),
}

impl RouteSpec {
    /// The `route` label of metrics and the access log: the prefix as
    /// written, or `=` and the path for an exact route (nginx's `location =`),
    /// so that `exact: /a` and `prefix: /a` are told apart.
    pub fn label(&self) -> String {
        if self.exact {
            format!("={}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// The `host` label: the configured host pattern, or `*` for the default
    /// table.
    pub fn host_label(&self) -> String {
        self.host
            .as_ref()
            .map_or_else(|| DEFAULT_HOST_LABEL.to_string(), HostPattern::to_string)
    }
}

impl RouteSpec {
    /// What makes the route unique in its file.
    pub fn key(&self) -> RouteKey {
        (self.host.clone(), self.exact, self.path.clone())
    }

    /// Equal in everything but the line number, which moves when other
    /// routes change.
    pub fn same_as(&self, other: &RouteSpec) -> bool {
        self.host == other.host
            && self.exact == other.exact
            && self.path == other.path
            && self.backends == other.backends
            && self.strip_prefix == other.strip_prefix
            && self.timeout == other.timeout
            && self.max_inflight == other.max_inflight
            && self.ca_file == other.ca_file
            && self.balance == other.balance
            && self.outlier == other.outlier
            && self.retries == other.retries
            && self.retry_on == other.retry_on
            && self.breaker == other.breaker
            && self.retry_buffer == other.retry_buffer
            && self.dns_refresh == other.dns_refresh
            && self.canary == other.canary
            && self.owner == other.owner
            && self.shared == other.shared
            && self.allow_from == other.allow_from
            && self.redirect == other.redirect
            && self.max_body_size == other.max_body_size
            && self.host_header == other.host_header
            && self.https_redirect == other.https_redirect
    }

    /// Host and path in one word for logs and diffs: `/billing`,
    /// `api.example.com/billing`, `*.example.com=/healthcheck`.
    pub fn name(&self) -> String {
        match &self.host {
            Some(host) => format!("{host}{}", self.label()),
            None => self.label(),
        }
    }
}

/// `(host, exact, path)`: what makes a route unique in its file. A second
/// route with the same key could never be chosen.
pub type RouteKey = (Option<HostPattern>, bool, String);

/// The `host` label (and `/routes` host) of routes without `host:`.
pub const DEFAULT_HOST_LABEL: &str = "*";

/// A route's `host:` rule, lowercased (hosts compare case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `api.example.com`: that name only.
    Exact(String),
    /// `*.example.com`, stored as `example.com`: exactly one more label in
    /// front (`a.example.com`, never `example.com` or `a.b.example.com`).
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(parent) => write!(f, "*.{parent}"),
        }
    }
}

impl FromStr for HostPattern {
    type Err = InvalidHost;

    /// A DNS name (RFC 1123 labels, as Kubernetes validates an Ingress
    /// host), optionally `*.` in front. Uppercase is folded; everything
    /// else that would never match a request's host is refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |m: String| Err(InvalidHost(m));
        if s.is_empty() {
            return fail("must not be empty; leave host out to serve every host".into());
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii()) {
            return fail(format!(
                "must be ASCII, got {c:?}: write an internationalized name in its punycode (IDNA) form, \
                 e.g. xn--bcher-kva.example for bücher.example (`idn2 NAME` prints it)"
            ));
        }
        if s.contains("://") || s.contains('/') {
            return fail(
                "must be a host name only, without scheme or path (e.g. api.example.com)".into(),
            );
        }
        if s.contains(':') {
            return fail(
                "must not have a port: the port in a request's Host is ignored when matching"
                    .into(),
            );
        }
        if s.ends_with('.') {
            return fail(format!(
                "must not end with \".\" (write {:?}); a request for the absolute name {s:?} matches it anyway",
                s.trim_end_matches('.')
            ));
        }
        let lower = s.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(parent) => (true, parent),
            None => (false, lower.as_str()),
        };
        if name.contains('*') || lower == "*" {
            return fail(
                "a wildcard is only allowed as the whole first label (*.example.com, covering \
                 exactly one label); leave host out to serve every host"
                    .into(),
            );
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return fail(
                "must be a DNS name, not an IP address; requests by IP address use the routes without host"
                    .into(),
            );
        }
        if name.len() > 253 {
            return fail(format!(
                "is {} characters long; a DNS name has at most 253",
                name.len()
            ));
        }
        for label in name.split('.') {
            if let Some(problem) = label_problem(label) {
                return fail(problem);
            }
        }
        Ok(if wildcard {
            HostPattern::Wildcard(name.to_string())
        } else {
            HostPattern::Exact(name.to_string())
        })
    }
}

/// Why one DNS label is invalid, or `None`.
fn label_problem(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("must not have an empty label (\"..\" or a leading \".\")".into());
    }
    if label.len() > 63 {
        return Some(format!(
            "has a label of {} characters; a DNS label has at most 63",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Some(format!(
            "must contain only letters, digits, '-' and '.', got {:?}",
            c.to_string()
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some(format!("label {label:?} must not start or end with '-'"));
    }
    None
}

/// Why a string is not a [`HostPattern`]; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidHost(String);

/// A backend origin: scheme, host and port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    /// `https://`: connect with TLS, SNI = `host`.
    pub tls: bool,
    /// `h2c://`: HTTP/2 with prior knowledge over plain TCP (gRPC).
    pub h2: bool,
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
        match (self.tls, self.h2) {
            (true, _) => "https",
            (false, true) => "h2c",
            (false, false) => "http",
        }
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

    /// `http://host[:port][/]`, `https://host[:port][/]` or
    /// `h2c://host[:port][/]` (HTTP/2 with prior knowledge, port 80 by default).
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
        let (tls, h2) = match uri.scheme_str() {
            Some("http") => (false, false),
            Some("https") => (true, false),
            Some("h2c") => (false, true),
            Some(other) => {
                return fail(format!("scheme must be http, https or h2c, got {other:?}"));
            }
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
            h2,
            authority,
            host,
            port,
        })
    }
}

pub(super) const ROUTE_KEYS: &[&str] = &[
    "host",
    "prefix",
    "exact",
    "backend",
    "backends",
    "strip_prefix",
    "timeout",
    "max_inflight",
    "ca_file",
    "balance",
    "outlier",
    "retries",
    "retry_on",
    "retry_buffer",
    "circuit_breaker",
    "discovery",
    "dns_refresh",
    "http2",
    "canary",
    "owner",
    "shared",
    "allow_from",
    "redirect",
    "max_body_size",
    "host_header",
    "https_redirect",
];

/// A route's `redirect:`: the answer Portico gives instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The `Location`: an absolute `http(s)://` URL or a path.
    pub location: http::HeaderValue,
    /// 301, 302, 307 or 308.
    pub status: http::StatusCode,
}

/// `redirect: {to: URL, status: 301|302|307|308}` (status default 302).
fn redirect(c: &mut Checker<'_>, node: &Node, name: &str) -> Option<Redirect> {
    let m = c.mapping(node, name, &["to", "status"])?;
    let to = c.required(&m, "to", name, "e.g. to: https://www.example.com/")?;
    let text = c.string(
        &to.value,
        &format!("{name}: to"),
        "a URL like \"https://www.example.com/\" or a path like \"/app\"",
    )?;
    let valid = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_graphic())
        && if text.starts_with('/') {
            !text.starts_with("//") && text.parse::<http::uri::PathAndQuery>().is_ok()
        } else {
            text.parse::<Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some_and(|a| !a.as_str().contains('@'))
            })
        };
    if !valid {
        c.error(
            to.value.pos,
            format!("{name}: to: {text:?} must be an absolute http:// or https:// URL (no user info, no spaces) or a path starting with a single \"/\""),
        );
        return None;
    }
    let status = match m.get("status") {
        None => 302,
        Some(n) => {
            let v = c.number(n, &format!("{name}: status"), 301, 308)?;
            if !matches!(v, 301 | 302 | 307 | 308) {
                c.error(
                    n.pos,
                    format!("{name}: status must be 301, 302, 307 or 308, got {v}"),
                );
                return None;
            }
            v as u16
        }
    };
    Some(Redirect {
        location: http::HeaderValue::from_str(text).ok()?,
        status: http::StatusCode::from_u16(status).ok()?,
    })
}

/// A CIDR (host bits dropped: `10.1.2.3/8` is `10.0.0.0/8`) or a single
/// address, as `allow_from` and the importer's allow-lists take them.
pub(crate) fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
        .map(|net| net.trunc())
}

/// `allow_from: [CIDR or address, ..]`, at least one.
fn allow_from(c: &mut Checker<'_>, node: &Node, name: &str) -> Option<Vec<ipnet::IpNet>> {
    let items = c.list(node, name, "CIDRs like [10.0.0.0/8]")?;
    if items.is_empty() {
        c.error(
            node.pos,
            format!("{name}: must list at least one CIDR (leave allow_from out to allow everyone)"),
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let Some(text) = c.string(item, &format!("{name}[{i}]"), "a CIDR like 10.0.0.0/8") else {
            ok = false;
            continue;
        };
        match parse_net(text) {
            Some(net) => out.push(net),
            None => {
                c.error(
                    item.pos,
                    format!(
                        "{name}[{i}]: {text:?} is not a CIDR (like 10.0.0.0/8) or an IP address"
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// The keys of the route file's top level.
pub(super) const TOP_KEYS: &[&str] = &["routes", "tests", "functions"];

/// How often `discovery: dns` resolves a route's backends again.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);

/// Request bodies up to this size are kept for a retry by default.
pub const DEFAULT_RETRY_BUFFER: u64 = 64 * 1024;
const MAX_RETRY_BUFFER: u64 = 16 * 1024 * 1024;

/// Per-backend bounds (a circuit breaker): requests beyond them are not
/// queued without end but answered at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Requests (so HTTP/1.1 connections) in progress on one backend.
    pub max_connections: u32,
    /// Requests waiting for one of those; beyond, another backend is tried
    /// or the client gets `503 overloaded` with `Retry-After`.
    pub max_pending: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            max_connections: 1024,
            max_pending: 1024,
        }
    }
}

/// Extra tries a request gets by default when that is safe.
pub const DEFAULT_RETRIES: u32 = 2;

/// How a route spreads requests over its backends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// `p2c` (default): two backends at random, the one with fewer
    /// requests in flight.
    #[default]
    PowerOfTwo,
    /// `round_robin`.
    RoundRobin,
    /// `{hash_header: NAME}`: the same header value goes to the same
    /// backend while it is up (session affinity).
    HashHeader(http::HeaderName),
    /// `{hash_cookie: NAME}`: the same for a cookie.
    HashCookie(String),
}

impl Balance {
    /// As written in the route file (`/routes`).
    pub fn describe(&self) -> String {
        match self {
            Balance::PowerOfTwo => "p2c".into(),
            Balance::RoundRobin => "round_robin".into(),
            Balance::HashHeader(h) => format!("hash_header: {h}"),
            Balance::HashCookie(c) => format!("hash_cookie: {c}"),
        }
    }
}

/// When a failing backend is left out, and for how long (passive outlier
/// ejection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Failures in a row (connect failures, resets, timeouts, 5xx) that
    /// eject a backend; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// The first ejection; doubled on repeat.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share of a route's backends is ejected at once.
    pub max_ejection_percent: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Parses and validates a route file; `source` names the file in errors and
/// is the base for relative paths (`ca_file`).
pub fn parse_route_file(source: &Path, text: &str) -> Result<RouteFile, ConfigErrors> {
    let root = yaml::parse(source, text)?;
    let mut c = Checker::new(source);
    let Some(top) = c.mapping(&root, "the route file", TOP_KEYS) else {
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
    let functions = match top.get("functions") {
        None => Some(None),
        Some(node) => super::governance::functions(&mut c, node).map(Some),
    };
    // (host, exact, path) → line of the route that first used it.
    let mut seen: HashMap<RouteKey, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        // Keep going after a bad route: the user gets every error at once.
        if let Some(route) = route(&mut c, item, index, base, &mut seen) {
            routes.push(route);
        }
    }
    if let Some(Some(names)) = &functions {
        super::governance::check_functions(&mut c, names, &routes);
    }
    let tests = match top.get("tests") {
        None => Some(Vec::new()),
        Some(node) => super::assertions::tests(&mut c, node, source),
    };
    let (Some(functions), Some(tests)) = (functions, tests) else {
        return c.finish(None);
    };
    c.finish(Some(RouteFile {
        source: source.to_path_buf(),
        routes,
        tests,
        functions,
    }))
}

fn route(
    c: &mut Checker<'_>,
    item: &Node,
    index: usize,
    base: &Path,
    seen: &mut HashMap<RouteKey, usize>,
) -> Option<RouteSpec> {
    let label = route_label(item, index);
    let m = c.mapping(item, &label, ROUTE_KEYS)?;

    let host = match m.get("host") {
        Some(node) => {
            let name = format!("{label}: host");
            c.string(
                node,
                &name,
                "a host name like \"api.example.com\" or \"*.example.com\"",
            )
            .and_then(|text| match text.parse::<HostPattern>() {
                Ok(host) => Some(Some(host)),
                Err(e) => {
                    c.error(node.pos, format!("{name}: {text:?} {e}"));
                    None
                }
            })
        }
        None => Some(None),
    };
    let path = route_path(c, &m, &label);
    // Judged only when host and path are valid, so one mistake gives one error.
    if let (Some(host), Some((exact, path, pos))) = (&host, &path) {
        let key = (host.clone(), *exact, path.clone());
        if let Some(first) = seen.get(&key) {
            let what = if *exact { "exact path" } else { "prefix" };
            let table = host.as_ref().map_or_else(
                || "the routes without host".to_string(),
                |h| format!("host {h}"),
            );
            c.error(
                *pos,
                format!("{label}: duplicate {what} {path:?} in {table}, already used by the route at line {first}; merge the two routes"),
            );
            return None;
        }
        seen.insert(key, item.pos.line);
    }

    let redirect_spec = match m.get("redirect") {
        Some(node) => redirect(c, node, &format!("{label}: redirect")).map(Some),
        None => Some(None),
    };
    let mut backends = if m.get("redirect").is_some() {
        // A redirect is answered by Portico: nothing to proxy to.
        let conflicting = [
            "backend",
            "backends",
            "canary",
            "strip_prefix",
            "http2",
            "ca_file",
            "discovery",
        ]
        .into_iter()
        .find_map(|k| m.entry(k));
        match conflicting {
            Some(e) => {
                c.error(
                    e.key_pos,
                    format!(
                        "{label}: {} does not apply to a redirect route (Portico answers it without a backend); remove one of them",
                        e.key
                    ),
                );
                None
            }
            None => Some(Vec::new()),
        }
    } else {
        backends(c, &m, &label)
    };
    let allow_from = match m.get("allow_from") {
        Some(node) => allow_from(c, node, &format!("{label}: allow_from")),
        None => Some(Vec::new()),
    };
    let max_body_size = match m.get("max_body_size") {
        Some(node) => c.size(node, &format!("{label}: max_body_size")).map(Some),
        None => Some(None),
    };
    let host_header = match m.get("host_header") {
        Some(node) => {
            let name = format!("{label}: host_header");
            c.string(node, &name, "a host like \"billing.internal\"")
                .and_then(|text| {
                    let valid = !text.is_empty()
                        && !text.contains('@')
                        && text.bytes().all(|b| b.is_ascii_graphic())
                        && text.parse::<Authority>().is_ok();
                    if !valid {
                        c.error(
                            node.pos,
                            format!("{name}: {text:?} must be a host name with an optional port, like billing.internal or billing.internal:8080"),
                        );
                        return None;
                    }
                    http::HeaderValue::from_str(&text.to_ascii_lowercase()).ok().map(Some)
                })
        }
        None => Some(None),
    };
    let https_redirect = match m.get("https_redirect") {
        Some(node) => c.boolean(node, &format!("{label}: https_redirect")),
        None => Some(false),
    };
    let mut canary = match m.get("canary") {
        Some(node) => super::canary::canary(c, node, &label, backends.as_deref()).map(Some),
        None => Some(None),
    };
    // `http2: true`: the https backends speak HTTP/2 (ALPN h2).
    if let Some(node) = m.get("http2") {
        let name = format!("{label}: http2");
        match (c.boolean(node, &name), backends.as_mut()) {
            (Some(true), Some(list)) => {
                if let Some(plain) = list.iter().find(|b| !b.tls) {
                    c.error(node.pos, format!("{name}: applies to https:// backends; {plain} is not one (h2c:// speaks HTTP/2 without TLS)"));
                    backends = None;
                } else {
                    list.iter_mut().for_each(|b| b.h2 = true);
                }
                if let Some(Some(k)) = canary.as_mut() {
                    if let Some(plain) = k.backends.iter().find(|b| !b.tls) {
                        c.error(node.pos, format!("{name}: applies to https:// backends, the canary's too; {plain} is not one"));
                        canary = None;
                    } else {
                        k.backends.iter_mut().for_each(|b| b.h2 = true);
                    }
                }
            }
            (None, _) => backends = None,
            _ => {}
        }
    }
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
            let canary_https = canary
                .as_ref()
                .and_then(Option::as_ref)
                .is_some_and(|k| k.backends.iter().any(|b| b.tls));
            let no_https =
                !canary_https && backends.as_ref().is_some_and(|b| !b.iter().any(|b| b.tls));
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

    let balance = match m.get("balance") {
        Some(node) => balance(c, node, &format!("{label}: balance")),
        None => Some(Balance::default()),
    };
    let outlier = match m.get("outlier") {
        Some(node) => outlier(c, node, &format!("{label}: outlier")),
        None => Some(OutlierPolicy::default()),
    };
    let retries = match m.get("retries") {
        Some(node) => c
            .number(node, &format!("{label}: retries"), 0, 5)
            .map(|n| n as u32),
        None => Some(DEFAULT_RETRIES),
    };
    let retry_on = match m.get("retry_on") {
        Some(node) => retry_on(c, node, &format!("{label}: retry_on")),
        None => Some(Vec::new()),
    };
    let retry_buffer = match m.get("retry_buffer") {
        // 0 is allowed here (off), unlike the other sizes.
        Some(node) if node.as_plain() == Some("0") => Some(0),
        Some(node) => {
            let name = format!("{label}: retry_buffer");
            match c.size(node, &name) {
                Some(n) if n > MAX_RETRY_BUFFER => {
                    c.error(node.pos, format!("{name}: at most 16MiB (it is held in memory per request), got {n} bytes"));
                    None
                }
                n => n,
            }
        }
        None => Some(DEFAULT_RETRY_BUFFER),
    };
    // The canary's backends are discovered like the stable ones.
    let all_backends = backends.clone().map(|mut all| {
        if let Some(Some(k)) = &canary {
            all.extend(k.backends.iter().cloned());
        }
        all
    });
    let dns_refresh = discovery(c, &m, &label, all_backends.as_deref());
    let owner = match m.get("owner") {
        Some(node) => c
            .string(
                node,
                &format!("{label}: owner"),
                "a team name like billing-team",
            )
            .map(|o| Some(o.to_owned())),
        None => Some(None),
    };
    let shared = match m.get("shared") {
        Some(node) => c.boolean(node, &format!("{label}: shared")),
        None => Some(false),
    };
    let breaker = match m.get("circuit_breaker") {
        Some(node) => breaker(c, node, &format!("{label}: circuit_breaker")),
        None => Some(CircuitBreaker::default()),
    };

    let (exact, path, path_pos) = path?;
    Some(RouteSpec {
        host: host?,
        path,
        exact,
        backends: backends?,
        strip_prefix: strip_prefix?,
        timeout: timeout?,
        max_inflight: max_inflight?,
        ca_file: ca_file?,
        balance: balance?,
        outlier: outlier?,
        retries: retries?,
        retry_on: retry_on?,
        breaker: breaker?,
        retry_buffer: retry_buffer?,
        dns_refresh: dns_refresh?,
        canary: canary?,
        owner: owner?,
        shared: shared?,
        allow_from: allow_from?,
        redirect: redirect_spec?,
        max_body_size: max_body_size?,
        host_header: host_header?,
        https_redirect: https_redirect?,
        line: item.pos.line,
        path_pos: (path_pos.line, path_pos.column),
    })
}

/// `p2c`, `round_robin`, `{hash_header: NAME}` or `{hash_cookie: NAME}`.
fn balance(c: &mut Checker<'_>, node: &Node, name: &str) -> Option<Balance> {
    let expected = "p2c, round_robin, {hash_header: NAME} or {hash_cookie: NAME}";
    if let Some(text) = node.as_str() {
        return match text {
            "p2c" => Some(Balance::PowerOfTwo),
            "round_robin" => Some(Balance::RoundRobin),
            other => {
                c.error(
                    node.pos,
                    format!("{name}: expected {expected}, got {other:?}"),
                );
                None
            }
        };
    }
    let m = c.mapping(node, name, &["hash_header", "hash_cookie"])?;
    match (m.get("hash_header"), m.get("hash_cookie")) {
        (Some(h), None) => {
            let text = c.string(
                h,
                &format!("{name}: hash_header"),
                "a header name like x-user",
            )?;
            match http::HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes()) {
                Ok(header) => Some(Balance::HashHeader(header)),
                Err(_) => {
                    c.error(
                        h.pos,
                        format!("{name}: hash_header: {text:?} is not a header name"),
                    );
                    None
                }
            }
        }
        (None, Some(k)) => {
            let text = c.string(
                k,
                &format!("{name}: hash_cookie"),
                "a cookie name like session",
            )?;
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if text.is_empty() || !text.bytes().all(token) {
                c.error(
                    k.pos,
                    format!("{name}: hash_cookie: {text:?} is not a cookie name"),
                );
                return None;
            }
            Some(Balance::HashCookie(text.to_owned()))
        }
        _ => {
            c.error(
                m.pos,
                format!("{name}: expected {expected} (exactly one key)"),
            );
            None
        }
    }
}

/// `{consecutive_failures, base_ejection, max_ejection, max_ejection_percent}`,
/// each optional.
fn outlier(c: &mut Checker<'_>, node: &Node, name: &str) -> Option<OutlierPolicy> {
    let keys = [
        "consecutive_failures",
        "base_ejection",
        "max_ejection",
        "max_ejection_percent",
    ];
    let m = c.mapping(node, name, &keys)?;
    let mut p = OutlierPolicy::default();
    let mut ok = true;
    if let Some(n) = m.get("consecutive_failures") {
        match c.number(n, &format!("{name}: consecutive_failures"), 0, 1000) {
            Some(v) => p.consecutive_failures = v as u32,
            None => ok = false,
        }
    }
    if let Some(n) = m.get("base_ejection") {
        match c.duration(n, &format!("{name}: base_ejection"), false) {
            Some(v) => p.base_ejection = v,
            None => ok = false,
        }
    }
    if let Some(n) = m.get("max_ejection") {
        match c.duration(n, &format!("{name}: max_ejection"), false) {
            Some(v) => p.max_ejection = v,
            None => ok = false,
        }
    }
    if let Some(n) = m.get("max_ejection_percent") {
        match c.number(n, &format!("{name}: max_ejection_percent"), 0, 100) {
            Some(v) => p.max_ejection_percent = v as u32,
            None => ok = false,
        }
    }
    if ok && p.max_ejection < p.base_ejection {
        c.error(
            m.pos,
            format!(
                "{name}: max_ejection ({}) is shorter than base_ejection ({})",
                humantime::format_duration(p.max_ejection),
                humantime::format_duration(p.base_ejection)
            ),
        );
        ok = false;
    }
    ok.then_some(p)
}

/// `discovery: dns` (with `dns_refresh`), or `discovery: static` / none.
/// DNS needs plain-HTTP backends named by host name.
fn discovery(
    c: &mut Checker<'_>,
    m: &Map<'_>,
    label: &str,
    backends: Option<&[BackendUrl]>,
) -> Option<Option<Duration>> {
    let dns = match m.get("discovery") {
        None => false,
        Some(node) => match node.as_str() {
            Some("dns") => true,
            Some("static") => false,
            _ => {
                c.error(
                    node.pos,
                    format!(
                        "{label}: discovery: expected dns or static, got {}",
                        node.describe()
                    ),
                );
                return None;
            }
        },
    };
    let refresh = match m.get("dns_refresh") {
        Some(node) if !dns => {
            c.error(
                node.pos,
                format!("{label}: dns_refresh is set but discovery is not dns"),
            );
            return None;
        }
        Some(node) => c.duration(node, &format!("{label}: dns_refresh"), false)?,
        None => DEFAULT_DNS_REFRESH,
    };
    if !dns {
        return Some(None);
    }
    let pos = m.get("discovery").map_or(m.pos, |n| n.pos);
    for b in backends.unwrap_or_default() {
        if b.tls {
            c.error(pos, format!("{label}: discovery: dns supports http:// backends only for now ({b}); list https backends one by one"));
            return None;
        }
        if b.host.parse::<std::net::IpAddr>().is_ok() {
            c.error(
                pos,
                format!("{label}: discovery: dns needs backend host names, {b} is an address"),
            );
            return None;
        }
    }
    Some(Some(refresh))
}

/// `{max_connections, max_pending}`, each optional.
fn breaker(c: &mut Checker<'_>, node: &Node, name: &str) -> Option<CircuitBreaker> {
    let m = c.mapping(node, name, &["max_connections", "max_pending"])?;
    let mut b = CircuitBreaker::default();
    let mut ok = true;
    if let Some(n) = m.get("max_connections") {
        match c.number(n, &format!("{name}: max_connections"), 1, 1_000_000) {
            Some(v) => b.max_connections = v as u32,
            None => ok = false,
        }
    }
    if let Some(n) = m.get("max_pending") {
        match c.number(n, &format!("{name}: max_pending"), 0, 1_000_000) {
            Some(v) => b.max_pending = v as u32,
            None => ok = false,
        }
    }
    ok.then_some(b)
}

/// A list of 5xx statuses, e.g. `[503]`.
fn retry_on(c: &mut Checker<'_>, node: &Node, name: &str) -> Option<Vec<u16>> {
    let items = c.list(node, name, "statuses like [503]")?;
    let mut statuses = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match c.number(item, &format!("{name}[{i}]"), 500, 599) {
            Some(s) if statuses.contains(&(s as u16)) => {
                c.error(item.pos, format!("{name}[{i}]: {s} is listed twice"));
                ok = false;
            }
            Some(s) => statuses.push(s as u16),
            None => ok = false,
        }
    }
    ok.then_some(statuses)
}

/// Names a route in messages by its path (and host) when there is one to
/// show: `route "/billing"`, `route "=/healthcheck" (host api.example.com)`.
fn route_label(item: &Node, index: usize) -> String {
    let path = match (
        item.field("prefix").and_then(Node::as_str),
        item.field("exact").and_then(Node::as_str),
    ) {
        (Some(prefix), None) => format!("route {prefix:?}"),
        (None, Some(exact)) => format!("route {:?}", format!("={exact}")),
        _ => format!("route #{}", index + 1),
    };
    match item.field("host").and_then(Node::as_str) {
        Some(host) => format!("{path} (host {host})"),
        None => path,
    }
}

/// `prefix: /path` or `exact: /path`, exactly one of them: (exact, path,
/// position of the value).
fn route_path(c: &mut Checker<'_>, m: &Map<'_>, label: &str) -> Option<(bool, String, Pos)> {
    let (key, exact, entry) = match (m.entry("prefix"), m.entry("exact")) {
        (Some(prefix), Some(exact)) => {
            // Point at whichever of the two keys comes second.
            let second = if prefix.key_pos > exact.key_pos {
                prefix
            } else {
                exact
            };
            c.error(
                second.key_pos,
                format!("{label}: set either prefix or exact, not both (exact matches only that path; add a second route for the prefix)"),
            );
            return None;
        }
        (None, Some(_)) => (
            "exact",
            true,
            c.required(m, "exact", label, "e.g. exact: /healthcheck")?,
        ),
        _ => (
            "prefix",
            false,
            c.required(
                m,
                "prefix",
                label,
                "e.g. prefix: /billing (or exact: /path)",
            )?,
        ),
    };
    let node = &entry.value;
    let path = c.string(node, &format!("{label}: {key}"), "a path like \"/billing\"")?;
    if let Some(problem) = path_problem(path, exact) {
        c.error(node.pos, format!("{label}: {key} {problem}"));
        return None;
    }
    Some((exact, path.to_string(), node.pos))
}

/// `backend: URL` or `backends: [URL, ...]`, exactly one of them.
pub(super) fn backends(c: &mut Checker<'_>, m: &Map<'_>, label: &str) -> Option<Vec<BackendUrl>> {
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
#[cfg(test)]
pub(super) fn prefix_problem(prefix: &str) -> Option<String> {
    path_problem(prefix, false)
}

/// What is wrong with a route path, as the end of "prefix ..." or
/// "exact ...", or `None`. An exact path may end in `/` (it then matches
/// only the path with the slash); a prefix may not.
pub(crate) fn path_problem(prefix: &str, exact: bool) -> Option<String> {
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
            ';' => "must not contain \";\": path parameters (;...) are ignored when matching, so it could never match (/billing also matches /billing;jsessionid=...)".to_string(),
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
    if !exact && prefix.len() > 1 && prefix.ends_with('/') {
        let fixed = prefix.trim_end_matches('/');
        let fixed = if fixed.is_empty() { "/" } else { fixed };
        return Some(format!(
            "must not end with \"/\" (write {fixed:?}); it already matches {fixed}/ and below"
        ));
    }
    let trimmed = if exact && prefix.len() > 1 {
        prefix.strip_suffix('/').unwrap_or(prefix)
    } else {
        prefix
    };
    let segments: Vec<&str> = trimmed[1..].split('/').collect();
    if trimmed.len() > 1 && segments.iter().any(|s| s.is_empty()) {
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
    if crate::routing::reserved::is_reserved(prefix) {
        let first = segments.first().copied().unwrap_or_default();
        return Some(format!(
            "is reserved: /{first} (in any case, and everything under it) is served only on the operator listener (never publicly); choose another path"
        ));
    }
    None
}

/// RFC 3986 `pchar` plus `/`, minus `%` (handled above): what a normalized
/// request path can hold unencoded.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()+,;=:@/".contains(c)
}
