//! The route table: everything derived from one route file, built completely
//! (matcher, backends, upstream clients, metric handles, limits) before it is
//! swapped in, so the request path only looks things up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{RouteFile, RouteSpec};
use crate::observability::metrics::{Metrics, RouteMetrics};
use crate::proxy::limits::InflightLimit;
use crate::proxy::upstream::{Backend, Upstream, UpstreamClients, UpstreamSetupError};

use super::prefix::{PrefixError, PrefixRouter};

/// One route, ready to serve.
pub struct Route {
    /// The validated route as written in the file.
    pub spec: RouteSpec,
    /// The configured prefix, also the `route` metric label.
    pub prefix: Arc<str>,
    pub upstream: Upstream,
    /// Metric handles resolved for this prefix at build time.
    pub metrics: RouteMetrics,
    /// Time allowed until the upstream's response head arrives.
    pub timeout: Duration,
    /// The route's own in-flight ceiling (`max_inflight`), if any.
    pub limit: Option<InflightLimit>,
}

impl Route {
    /// The path the backend receives: the normalized path, minus the prefix
    /// when `strip_prefix` is set (never empty: at least `/`).
    pub fn upstream_path<'p>(&self, path: &'p str) -> &'p str {
        if !self.spec.strip_prefix || &*self.prefix == "/" {
            return path;
        }
        match path.get(self.prefix.len()..) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => "/",
        }
    }
}

/// Why a valid route file could still not become a table.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}:{line}: route {prefix:?}: {source}")]
    Upstream {
        file: String,
        line: usize,
        prefix: String,
        #[source]
        source: UpstreamSetupError,
    },
    #[error("{file}:{line}: route {prefix:?}: {source}")]
    Prefix {
        file: String,
        line: usize,
        prefix: String,
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

/// A complete, immutable route table.
pub struct RouteTable {
    router: PrefixRouter<Arc<Route>>,
    /// Exact-prefix index, for reload diffs and carrying state across reloads.
    by_prefix: HashMap<Arc<str>, Arc<Route>>,
}

impl RouteTable {
    /// A table with no routes: every path is `404 no_route`.
    pub fn empty() -> Self {
        RouteTable {
            router: PrefixRouter::new(),
            by_prefix: HashMap::new(),
        }
    }

    pub fn build(file: &RouteFile, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let file_name = file.source.display().to_string();
        let mut router = PrefixRouter::new();
        let mut by_prefix = HashMap::with_capacity(file.routes.len());
        for spec in &file.routes {
            let client = ctx
                .clients
                .for_route(spec.ca_file.as_deref())
                .map_err(|source| BuildError::Upstream {
                    file: file_name.clone(),
                    line: spec.line,
                    prefix: spec.prefix.clone(),
                    source,
                })?;
            let backends = spec.backends.iter().map(Backend::from).collect();
            let route = Route {
                prefix: Arc::from(spec.prefix.as_str()),
                upstream: Upstream::new(backends, client),
                metrics: ctx.metrics.route(&spec.prefix),
                timeout: spec.timeout.unwrap_or(ctx.default_timeout),
                limit: spec.max_inflight.map(|n| {
                    ctx.previous
                        .and_then(|t| t.get(&spec.prefix))
                        .filter(|old| old.spec.max_inflight == Some(n))
                        .and_then(|old| old.limit.clone())
                        .unwrap_or_else(|| InflightLimit::new(n, None))
                }),
                spec: spec.clone(),
            };
            let route = Arc::new(route);
            by_prefix.insert(route.prefix.clone(), route.clone());
            router
                .insert(&spec.prefix, route)
                .map_err(|e| BuildError::Prefix {
                    file: file_name.clone(),
                    line: spec.line,
                    prefix: spec.prefix.clone(),
                    source: e,
                })?;
        }
        Ok(RouteTable { router, by_prefix })
    }

    /// The route for a normalized path, if any.
    pub fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        self.router.lookup(path)
    }

    /// The route with exactly this prefix.
    pub fn get(&self, prefix: &str) -> Option<&Arc<Route>> {
        self.by_prefix.get(prefix)
    }

    /// Routes in file order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.router.iter().map(|(_, r)| r)
    }

    pub fn len(&self) -> usize {
        self.router.len()
    }

    pub fn is_empty(&self) -> bool {
        self.router.is_empty()
    }
}
