//! `--explain` and `--emit-tests`: the requests that ingress-nginx and
//! Portico route differently, per host, and a normal request per route.
//!
//! Two small models decide them, each from the imported routes: how
//! ingress-nginx picks a location (exact first; then, on a host switched to
//! regex, the first case-insensitive regex prefix, longest path first;
//! otherwise the longest prefix, where `ImplementationSpecific` is a string
//! prefix and a path written with a trailing slash answers 301 for the path
//! without it; `*.example.com` covering any depth of names) and how
//! Portico does (DESIGN.md: exact host, one-label wildcard, routes without
//! host; exact path, then segment-wise longest prefix). The Portico model is
//! only used to write expectations: `portico check` runs them against the
//! real matcher, so the two cannot drift apart unnoticed.

use std::collections::{BTreeSet, HashMap};

use super::{OutRoute, PathType, Target};

/// What one side does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The route at this index of the imported routes.
    Route(usize),
    /// nginx's own 301 to the path with a trailing slash.
    SlashRedirect,
    /// 404.
    None,
}

/// A request the two route differently.
#[derive(Debug, Clone)]
pub struct Difference {
    /// The host table (`*` for the routes without host), for grouping.
    pub table: String,
    /// The `Host` of the example request.
    pub host: Option<String>,
    pub path: String,
    pub nginx: String,
    pub portico: String,
    pub why: String,
    /// Portico's outcome, for the emitted test.
    pub outcome: Outcome,
}

/// One emitted route assertion.
pub struct TestCase {
    pub why: String,
    pub path: String,
    pub host: Option<String>,
    /// Route name, or `None` for no route (404).
    pub route: Option<String>,
    pub backend: Option<String>,
    /// A redirect route's status (Portico answers it).
    pub status: Option<u16>,
}

fn wildcard_parent(host: &str) -> Option<&str> {
    host.strip_prefix("*.")
}

/// A request host that a route's host rule covers.
fn example_host(host: &Option<String>) -> Option<String> {
    host.as_ref().map(|h| match wildcard_parent(h) {
        Some(parent) => format!("a.{parent}"),
        None => h.clone(),
    })
}

/// The host table Portico picks: exact name, one-label wildcard, the
/// routes without host, or none.
fn portico_table(routes: &[OutRoute], host: Option<&str>) -> Option<Option<String>> {
    let hosts: BTreeSet<&Option<String>> = routes.iter().map(|r| &r.host).collect();
    if let Some(h) = host {
        let h = h.to_ascii_lowercase();
        if hosts.contains(&Some(h.clone())) {
            return Some(Some(h));
        }
        if let Some((_, parent)) = h.split_once('.') {
            let w = Some(format!("*.{parent}"));
            if hosts.contains(&w) {
                return Some(w);
            }
        }
    }
    hosts.contains(&None).then_some(None)
}

/// The host table nginx picks: exact name, the longest wildcard that is a
/// suffix at any depth, the default server.
fn nginx_table(routes: &[OutRoute], host: Option<&str>) -> Option<Option<String>> {
    let hosts: BTreeSet<&Option<String>> = routes.iter().map(|r| &r.host).collect();
    if let Some(h) = host {
        let h = h.to_ascii_lowercase();
        if hosts.contains(&Some(h.clone())) {
            return Some(Some(h));
        }
        let best = hosts
            .iter()
            .filter_map(|x| x.as_deref())
            .filter_map(|x| wildcard_parent(x).map(|p| (x, p)))
            .filter(|(_, p)| h.ends_with(&format!(".{p}")))
            .max_by_key(|(_, p)| p.len());
        if let Some((x, _)) = best {
            return Some(Some(x.to_string()));
        }
    }
    hosts.contains(&None).then_some(None)
}

fn segment_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Portico's choice for a request.
pub fn portico(routes: &[OutRoute], host: Option<&str>, path: &str) -> Outcome {
    let Some(table) = portico_table(routes, host) else {
        return Outcome::None;
    };
    let in_table = || routes.iter().enumerate().filter(|(_, r)| r.host == table);
    if let Some((i, _)) = in_table().find(|(_, r)| r.exact && r.path == path) {
        return Outcome::Route(i);
    }
    in_table()
        .filter(|(_, r)| !r.exact && segment_prefix(&r.path, path))
        .max_by_key(|(_, r)| r.path.len())
        .map_or(Outcome::None, |(i, _)| Outcome::Route(i))
}

/// ingress-nginx's choice for a request.
pub fn nginx(
    routes: &[OutRoute],
    regex_hosts: &HashMap<Option<String>, String>,
    host: Option<&str>,
    path: &str,
) -> Outcome {
    let Some(table) = nginx_table(routes, host) else {
        return Outcome::None;
    };
    let regex = regex_hosts.contains_key(&table);
    let in_table = || routes.iter().enumerate().filter(|(_, r)| r.host == table);
    if let Some((i, _)) = in_table().find(|(_, r)| r.exact && r.path == path) {
        return Outcome::Route(i);
    }
    let lower = path.to_ascii_lowercase();
    if regex {
        // Locations in order, longest written path first; the first regex
        // that matches, case-insensitively, from the start of the path.
        let mut candidates: Vec<(usize, &OutRoute)> =
            in_table().filter(|(_, r)| !r.exact).collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.1.written_path.len()));
        for (i, r) in candidates {
            let hit = if r.strip_prefix {
                // `/x(/|$)(.*)`: the prefix as whole segments.
                segment_prefix(&r.path.to_ascii_lowercase(), &lower)
            } else {
                lower.starts_with(&r.written_path.to_ascii_lowercase())
            };
            if hit {
                return Outcome::Route(i);
            }
        }
        return Outcome::None;
    }
    let mut best: Option<(usize, usize)> = None;
    for (i, r) in in_table().filter(|(_, r)| !r.exact) {
        let (hit, len) = match r.path_type {
            PathType::ImplementationSpecific => {
                if r.written_path.len() > 1
                    && r.written_path.ends_with('/')
                    && path == r.written_path.trim_end_matches('/')
                {
                    return Outcome::SlashRedirect;
                }
                (path.starts_with(&r.written_path), r.written_path.len())
            }
            _ => (segment_prefix(&r.path, path), r.path.len()),
        };
        if hit && best.is_none_or(|(_, l)| len > l) {
            best = Some((i, len));
        }
    }
    best.map_or(Outcome::None, |(i, _)| Outcome::Route(i))
}

fn describe(routes: &[OutRoute], o: &Outcome) -> String {
    match o {
        Outcome::Route(i) => {
            let r = &routes[*i];
            format!("{} ({})", r.name(), r.origin)
        }
        Outcome::SlashRedirect => "301 to the path with a trailing slash".into(),
        Outcome::None => "404".into(),
    }
}

/// The example requests of one route: `(path, host, why it is asked)`.
fn probes(r: &OutRoute, regex: bool) -> Vec<(String, Option<String>, &'static str)> {
    let host = example_host(&r.host);
    let mut out = vec![(r.path.clone(), host.clone(), "the route's own path")];
    if !r.exact {
        let below = if r.path == "/" {
            "/x".to_string()
        } else {
            format!("{}/x", r.path)
        };
        out.push((below, host.clone(), "a path below the prefix"));
        if r.path != "/" {
            out.push((
                format!("{}X", r.path),
                host.clone(),
                "a longer name in the last segment: ingress-nginx matched string prefixes here, Portico matches whole segments",
            ));
        }
        if regex && r.path.bytes().any(|b| b.is_ascii_lowercase()) {
            out.push((
                r.path.to_ascii_uppercase(),
                host.clone(),
                "another case: ingress-nginx matched this host case-insensitively (regex), Portico's paths are case-sensitive",
            ));
        }
        if r.path_type == PathType::ImplementationSpecific
            && r.written_path.ends_with('/')
            && r.written_path.len() > 1
        {
            out.push((
                r.path.clone(),
                host.clone(),
                "the path without its trailing slash: nginx redirects it (301), Portico routes it",
            ));
        }
    }
    if let Some(h) = &r.host
        && let Some(parent) = wildcard_parent(h)
    {
        out.push((
            r.path.clone(),
            Some(format!("a.b.{parent}")),
            "two labels under a wildcard: nginx's *.name covers any depth, Kubernetes and Portico one label",
        ));
    }
    out
}

/// Every difference, sorted by host table and path.
pub fn differences(
    routes: &[OutRoute],
    regex_hosts: &HashMap<Option<String>, String>,
) -> Vec<Difference> {
    let mut out: Vec<Difference> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in routes {
        let regex = regex_hosts.contains_key(&r.host);
        for (path, host, why) in probes(r, regex) {
            if crate::routing::reserved::is_reserved(&path)
                || !seen.insert((host.clone(), path.clone()))
            {
                continue;
            }
            let n = nginx(routes, regex_hosts, host.as_deref(), &path);
            let p = portico(routes, host.as_deref(), &path);
            if n != p {
                out.push(Difference {
                    table: r.host.clone().unwrap_or_else(|| "*".into()),
                    host,
                    nginx: describe(routes, &n),
                    portico: describe(routes, &p),
                    path,
                    why: why.to_string(),
                    outcome: p,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.table, &a.path, &a.host).cmp(&(&b.table, &b.path, &b.host)));
    out
}

/// The `--explain` text.
pub fn render(
    routes: &[OutRoute],
    regex_hosts: &HashMap<Option<String>, String>,
    diffs: &[Difference],
) -> String {
    let mut o = String::new();
    let mut tables: Vec<String> = routes
        .iter()
        .map(|r| r.host.clone().unwrap_or_else(|| "*".into()))
        .collect();
    tables.dedup();
    for t in &tables {
        let key = if t == "*" { None } else { Some(t.clone()) };
        let mine: Vec<&Difference> = diffs.iter().filter(|d| &d.table == t).collect();
        let name = if t == "*" {
            "routes without host (any other host)".to_string()
        } else {
            format!("host {t}")
        };
        o.push_str(&super::emit::comment(&name));
        o.push('\n');
        if let Some(by) = regex_hosts.get(&key) {
            o.push_str(&super::emit::comment(&format!("  ingress-nginx matched every path of this host as a case-insensitive regex prefix, first match in order (longest first), because {by} uses use-regex or rewrite-target; Portico matches exact paths, then whole-segment prefixes, case-sensitively")));
            o.push('\n');
        }
        if mine.is_empty() {
            o.push_str("  no difference found\n");
        }
        for d in mine {
            let host = d
                .host
                .as_deref()
                .map(|h| format!(" (Host: {h})"))
                .unwrap_or_default();
            for line in [
                format!("  GET {}{host}", d.path),
                format!("    ingress-nginx: {}", d.nginx),
                format!("    portico:       {}", d.portico),
                format!("    why: {}", d.why),
            ] {
                o.push_str(&super::emit::comment(&line));
                o.push('\n');
            }
        }
    }
    o
}

/// A normal request per route, then every difference, as route
/// assertions of what Portico does.
pub fn tests(routes: &[OutRoute], diffs: &[Difference]) -> Vec<TestCase> {
    let case = |why: String, path: &str, host: Option<String>, o: &Outcome| {
        let (route, backend, status) = match o {
            Outcome::Route(i) => {
                let r = &routes[*i];
                let (backend, status) = match &r.target {
                    Target::Backend { url, .. } => (Some(url.clone()), None),
                    Target::Redirect(rd) => (None, Some(rd.status)),
                };
                (Some(r.name()), backend, status)
            }
            _ => (None, None, None),
        };
        TestCase {
            why,
            path: path.to_string(),
            host,
            route,
            backend,
            status,
        }
    };
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let host = example_host(&r.host);
        // Its own path, or one below it when an exact route takes that.
        let below = if r.path == "/" {
            "/x".to_string()
        } else {
            format!("{}/x", r.path)
        };
        let candidates = if r.exact {
            vec![r.path.clone()]
        } else {
            vec![r.path.clone(), below]
        };
        if let Some(path) = candidates
            .iter()
            .find(|p| portico(routes, host.as_deref(), p) == Outcome::Route(i))
        {
            out.push(case(
                format!("{} (from {})", r.name(), r.origin),
                path,
                host,
                &Outcome::Route(i),
            ));
        }
    }
    for d in diffs {
        out.push(case(
            format!(
                "differs from ingress-nginx, which gave {}: {}",
                d.nginx, d.why
            ),
            &d.path,
            d.host.clone(),
            &d.outcome,
        ));
    }
    out
}
