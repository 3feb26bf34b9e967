//! The route table: everything derived from one route file, built completely
//! (host tables, matchers, backends, upstream clients, metric handles,
//! limits) before it is swapped in, so the request path only looks things up.
//!
//! A lookup is: host table ([`super::host`]), then an exact path in it, then
//! the longest prefix in it ([`super::prefix`]). Each step is a hash probe or
//! a radix-tree walk, so its cost does not grow with the number of routes or
//! hosts.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use crate::config::{DEFAULT_HOST_LABEL, HostPattern, RouteFile, RouteSpec};
use crate::observability::metrics::{Metrics, NO_ROUTE, RouteMetrics};
use crate::proxy::limits::InflightLimit;
use crate::proxy::upstream::{
    Backend, Upstream, UpstreamClient, UpstreamClients, UpstreamSetupError,
};

use super::canary::Canary;
use super::host::HostMatch;
use super::matcher::RouteMatcher;
use super::prefix::PrefixError;

/// One route, ready to serve.
pub struct Route {
    /// The validated route as written in the file. A route unchanged across
    /// reloads is shared by both tables, so its `line` is from the load
    /// that first built it.
    pub spec: RouteSpec,
    /// The `route` label: the prefix, or `=path` for an exact route.
    pub label: Arc<str>,
    pub upstream: Arc<Upstream>,
    /// Metric handles resolved for this route's host and label at build time.
    pub metrics: RouteMetrics,
    /// Time allowed until the upstream's response head arrives.
    pub timeout: Duration,
    /// The route's own in-flight ceiling (`max_inflight`), if any; a
    /// canary shares its route's.
    pub limit: Option<InflightLimit>,
    /// `canary:`: the route as it serves the canary's requests, and who
    /// gets there (see [`super::canary`]). `None` costs the request path
    /// one branch.
    pub canary: Option<Canary>,
    /// Segments in the route's path: what `strip_prefix` removes.
    strip_segments: usize,
}

impl Route {
    /// The path the backend receives: the normalized path (path parameters
    /// kept), minus the route's own segments when `strip_prefix` is set
    /// (never empty: at least `/`). Segments are counted rather than bytes
    /// compared because the request may carry parameters the route path has
    /// not (`/billing;v=1/x` under `/billing` becomes `/x`).
    pub fn upstream_path<'p>(&self, path: &'p str) -> &'p str {
        if self.spec.strip_prefix {
            super::path::strip_segments(path, self.strip_segments)
        } else {
            path
        }
    }
}

/// Whether a host table's routes are exactly `specs`, in order, with no CA
/// file among them (whose contents could have changed): then the table can
/// be shared as it is.
fn unchanged(old: &[Arc<Route>], specs: &[RouteSpec]) -> bool {
    old.len() == specs.len()
        && old
            .iter()
            .zip(specs)
            .all(|(o, s)| s.ca_file.is_none() && o.spec.same_as(s))
}

/// Why a valid route file could still not become a table.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}:{line}: route {route:?}: {source}")]
    Upstream {
        file: String,
        line: usize,
        route: String,
        #[source]
        source: UpstreamSetupError,
    },
    #[error("{file}:{line}: route {route:?}: {source}")]
    Prefix {
        file: String,
        line: usize,
        route: String,
        #[source]
        source: PrefixError,
    },
}

/// What building a table needs from the running gateway.
pub struct BuildContext<'a> {
    pub metrics: &'a Metrics,
    pub clients: &'a UpstreamClients,
    /// `limits.upstream_timeout`, for routes without their own `timeout`.
    pub default_timeout: Duration,
    /// The table being replaced: a route whose `max_inflight` is unchanged
    /// keeps its counter, so requests in flight across a reload still count.
    pub previous: Option<&'a RouteTable>,
}

/// The outcome of a lookup: the route, and how the host table was chosen.
pub struct Selected<'t> {
    /// `None` when no host rule covers the request and there is no default
    /// table.
    pub host: Option<HostMatch>,
    pub route: Option<&'t Arc<Route>>,
    /// Where to count the request when `route` is `None`.
    pub miss: &'t RouteMetrics,
}

/// A complete, immutable route table.
pub struct RouteTable {
    /// Each host table carries its `route="none"` handles, so a 404 is
    /// counted against the host that answered it.
    matcher: RouteMatcher<Arc<Route>, RouteMetrics>,
    /// In file order, for listings and `/routes`.
    routes: Vec<Arc<Route>>,
    /// `host="*", route="none"`: requests no host table took.
    miss: RouteMetrics,
}

impl RouteTable {
    /// A table with no routes: every path is `404 no_route`.
    pub fn empty() -> Self {
        Self::empty_with(RouteMetrics::detached(DEFAULT_HOST_LABEL, NO_ROUTE))
    }

    fn empty_with(miss: RouteMetrics) -> Self {
        RouteTable {
            matcher: RouteMatcher::new(),
            routes: Vec::new(),
            miss,
        }
    }

    /// Builds the table for a validated file. Takes the file: its routes
    /// move into the table rather than being copied (100,000 routes is
    /// plausible, and a reload should stay well under a second).
    ///
    /// On a reload, a host table whose routes are all unchanged is shared
    /// with the table being replaced, matcher and all, and costs one
    /// comparison per route; in a changed host table, each unchanged route
    /// is still shared.
    pub fn build(file: RouteFile, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let file_name = file.source.display().to_string();
        let mut table = Self::empty_with(ctx.metrics.route(DEFAULT_HOST_LABEL, NO_ROUTE));
        let total = file.routes.len();
        // Routes grouped by host rule (in order of first appearance), and
        // where each route of the file went, to list them in file order.
        let mut groups: Vec<(Option<HostPattern>, Vec<RouteSpec>)> = Vec::new();
        let mut group_of: HashMap<Option<HostPattern>, usize> = HashMap::new();
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(total);
        for spec in file.routes {
            let g = *group_of.entry(spec.host.clone()).or_insert_with(|| {
                groups.push((spec.host.clone(), Vec::new()));
                groups.len() - 1
            });
            order.push((g, groups[g].1.len()));
            groups[g].1.push(spec);
        }
        let mut built: Vec<Vec<Arc<Route>>> = Vec::with_capacity(groups.len());
        for (host, specs) in groups {
            let previous = ctx.previous.and_then(|t| t.matcher.table(host.as_ref()));
            if let Some(old) = previous.filter(|old| unchanged(old.routes(), &specs)) {
                table.matcher.adopt(old.clone());
                built.push(old.routes().to_vec());
                continue;
            }
            let mut routes = Vec::with_capacity(specs.len());
            for spec in specs {
                let route = Self::shared_or_new(spec, ctx, &file_name)?;
                let spec = &route.spec;
                let line = spec.line;
                table
                    .matcher
                    .insert(
                        spec.host.as_ref(),
                        spec.exact,
                        &spec.path,
                        route.clone(),
                        || {
                            previous.map_or_else(
                                || ctx.metrics.route(&spec.host_label(), NO_ROUTE),
                                |old| old.meta.clone(),
                            )
                        },
                    )
                    .map_err(|source| BuildError::Prefix {
                        file: file_name.clone(),
                        line,
                        route: spec.name(),
                        source,
                    })?;
                routes.push(route);
            }
            built.push(routes);
        }
        table.routes = order
            .into_iter()
            .map(|(g, i)| built[g][i].clone())
            .collect();
        Ok(table)
    }

    /// The previous table's route with the same key when it is unchanged
    /// (warm state and all), else a new route. A route with a CA file is
    /// rebuilt, since the file's contents may have changed under its name.
    fn shared_or_new(
        spec: RouteSpec,
        ctx: &BuildContext<'_>,
        file_name: &str,
    ) -> Result<Arc<Route>, BuildError> {
        let previous = ctx.previous.and_then(|t| t.same_key(&spec));
        if let Some(old) = previous.filter(|old| old.spec.same_as(&spec) && spec.ca_file.is_none())
        {
            return Ok(old.clone());
        }
        let client = ctx
            .clients
            .for_route(spec.ca_file.as_deref())
            .map_err(|source| BuildError::Upstream {
                file: file_name.to_string(),
                line: spec.line,
                route: spec.name(),
                source,
            })?;
        Ok(Arc::new(Self::route(spec, client, previous, ctx)))
    }

    /// A new route; `previous` is the route with the same key in the table
    /// being replaced, whose metric handles and in-flight counter carry over.
    fn route(
        spec: RouteSpec,
        client: UpstreamClient,
        previous: Option<&Arc<Route>>,
        ctx: &BuildContext<'_>,
    ) -> Route {
        let limit = spec.max_inflight.map(|n| {
            previous
                .filter(|old| old.spec.max_inflight == Some(n))
                .and_then(|old| old.limit.clone())
                .unwrap_or_else(|| InflightLimit::new(n, None))
        });
        // The canary: the same route with the canary's backends, its own
        // pool and `canary="true"` handles, resolved now like the route's.
        let canary = spec.canary.clone().map(|k| {
            let mut side = spec.clone();
            side.backends = k.backends;
            side.canary = None;
            let old = previous.and_then(|o| o.canary.as_ref());
            let metrics = match old {
                Some(old) => old.route.metrics.clone(),
                None => ctx.metrics.canary_route(&spec.host_label(), &spec.label()),
            };
            let route = Self::side(side, client.clone(), metrics, limit.clone(), ctx);
            Canary {
                route: Arc::new(route),
                weight: k.weight,
                sticky: k
                    .sticky
                    .then(|| Canary::sticky_name(&spec.host_label(), &spec.label())),
                signed: std::sync::OnceLock::new(),
            }
        });
        // Same key, same labels: a reload reuses the handles instead of
        // resolving six label sets per route again (most of a large
        // table's build time).
        let metrics = match previous {
            Some(old) => old.metrics.clone(),
            None => ctx.metrics.route(&spec.host_label(), &spec.label()),
        };
        let mut route = Self::side(spec, client, metrics, limit, ctx);
        route.canary = canary;
        route
    }

    /// One side of a route (stable or canary) with its handles and limit.
    fn side(
        spec: RouteSpec,
        client: UpstreamClient,
        metrics: RouteMetrics,
        limit: Option<InflightLimit>,
        ctx: &BuildContext<'_>,
    ) -> Route {
        let backends = spec.backends.iter().map(Backend::from).collect();
        let label = spec.label();
        let upstream = Arc::new(Upstream::new(backends, &spec, client));
        // Outside a runtime (`portico check`) there is nothing to refresh on.
        if let Some(every) = spec.dns_refresh
            && tokio::runtime::Handle::try_current().is_ok()
            && let Some(resolver) = ctx.clients.resolver()
        {
            crate::proxy::discovery::watch(
                &upstream,
                spec.backends.clone(),
                resolver,
                every,
                metrics.clone(),
            );
        }
        Route {
            upstream,
            metrics,
            label: Arc::from(label),
            timeout: spec.timeout.unwrap_or(ctx.default_timeout),
            limit,
            canary: None,
            strip_segments: super::path::segments(&spec.path),
            spec,
        }
    }

    /// The route for a request's `Host` value and its path as matching reads
    /// it (normalized, path parameters cut: [`super::path::without_params`]).
    #[inline]
    pub fn select(&self, host: Option<&str>, path: &str) -> Selected<'_> {
        match self.matcher.lookup(host, path) {
            None => Selected {
                host: None,
                route: None,
                miss: &self.miss,
            },
            Some(m) => Selected {
                host: Some(m.host),
                route: m.route.map(|(route, _)| route),
                miss: m.meta,
            },
        }
    }

    /// The route for a path in the default table (routes without host).
    pub fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        self.select(None, path).route
    }

    /// The route with the same host rule, kind and path as `spec` (what a
    /// route file may hold once), without building a key.
    pub fn same_key(&self, spec: &RouteSpec) -> Option<&Arc<Route>> {
        self.matcher.get(spec.host.as_ref(), spec.exact, &spec.path)
    }

    /// Routes in file order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// Number of host rules (the default table not counted).
    pub fn hosts(&self) -> usize {
        self.matcher.hosts()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::upstream::PoolTimeouts;
    use std::path::Path;

    fn file(yaml: &str) -> RouteFile {
        crate::config::parse_route_file(Path::new("routes.yaml"), yaml).unwrap()
    }

    fn clients() -> UpstreamClients {
        UpstreamClients::new(PoolTimeouts {
            connect: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        })
        .unwrap()
    }

    fn build(f: RouteFile, metrics: &Metrics, previous: Option<&RouteTable>) -> RouteTable {
        let clients = clients();
        let ctx = BuildContext {
            metrics,
            clients: &clients,
            default_timeout: Duration::from_secs(30),
            previous,
        };
        RouteTable::build(f, &ctx).unwrap()
    }

    const V1: &str = "routes:
  - prefix: /a
    backend: http://a:1
    max_inflight: 5
  - host: api.example.com
    exact: /b
    backend: http://b:1
  - prefix: /c
    backend: http://c:1
";

    #[test]
    fn a_reload_shares_unchanged_routes_and_rebuilds_changed_ones() {
        let metrics = Metrics::new();
        let old = build(file(V1), &metrics, None);
        // /a moves down a line and is otherwise unchanged; /c changes.
        let v2 = "routes:
  - host: api.example.com
    exact: /b
    backend: http://b:1
  - prefix: /a
    backend: http://a:1
    max_inflight: 5
  - prefix: /c
    backend: http://c:2
";
        let new = build(file(v2), &metrics, Some(&old));
        // The new table's specs name the routes to compare.
        let spec = |name: &str| {
            new.routes()
                .find(|r| r.spec.name() == name)
                .map(|r| r.spec.clone())
                .unwrap()
        };
        let (a, b, c) = (spec("/a"), spec("api.example.com=/b"), spec("/c"));
        assert!(Arc::ptr_eq(
            old.same_key(&a).unwrap(),
            new.same_key(&a).unwrap()
        ));
        assert!(Arc::ptr_eq(
            old.same_key(&b).unwrap(),
            new.same_key(&b).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            old.same_key(&c).unwrap(),
            new.same_key(&c).unwrap()
        ));
        // The api.example.com host table did not change: shared whole. The
        // default one did (/c): rebuilt, with /a still shared inside it.
        let api = Some("api.example.com".parse().unwrap());
        assert!(Arc::ptr_eq(
            old.matcher.table(api.as_ref()).unwrap(),
            new.matcher.table(api.as_ref()).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            old.matcher.table(None).unwrap(),
            new.matcher.table(None).unwrap()
        ));
        // File order is the new file's.
        let order: Vec<String> = new.routes().map(|r| r.spec.name()).collect();
        assert_eq!(order, ["api.example.com=/b", "/a", "/c"]);
        // A shared route's in-flight counter is the same counter.
        let permit = old
            .same_key(&a)
            .unwrap()
            .limit
            .as_ref()
            .unwrap()
            .try_acquire();
        assert!(permit.is_some());
        assert_eq!(
            new.same_key(&a).unwrap().limit.as_ref().unwrap().current(),
            1
        );
    }

    #[test]
    fn selection_counts_misses_per_host_table() {
        let metrics = Metrics::new();
        let t = build(file(V1), &metrics, None);
        let hit = t.select(Some("API.example.com:443"), "/b");
        assert_eq!(hit.host, Some(HostMatch::Exact));
        assert_eq!(hit.route.unwrap().label.as_ref(), "=/b");
        let miss = t.select(Some("api.example.com"), "/a");
        assert!(miss.route.is_none());
        assert_eq!(
            (miss.miss.host(), miss.miss.route()),
            ("api.example.com", "none")
        );
        let default = t.select(Some("www.example.com"), "/a");
        assert_eq!(default.route.unwrap().metrics.host(), "*");
        assert!(t.select(None, "/zzz").route.is_none());
        assert_eq!((t.len(), t.hosts()), (3, 1));
    }

    #[test]
    fn strip_prefix_removes_the_route_segments_with_their_parameters() {
        let metrics = Metrics::new();
        let t = build(
            file(
                "routes:\n  - prefix: /billing/reports\n    backend: http://a:1\n    strip_prefix: true\n  - exact: /x/\n    backend: http://a:1\n    strip_prefix: true\n",
            ),
            &metrics,
            None,
        );
        let r = t.lookup("/billing/reports/q").unwrap();
        assert_eq!(r.upstream_path("/billing/reports;v=1/q;w=2"), "/q;w=2");
        assert_eq!(r.upstream_path("/billing;a/reports"), "/");
        let x = t.lookup("/x/").unwrap();
        assert_eq!(x.upstream_path("/x/"), "/");
    }
}
