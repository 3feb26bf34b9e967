//! Backends from DNS: a route with `discovery: dns` stands for every
//! address its backends' host names resolve to (a Kubernetes headless
//! Service has one A/AAAA record per ready pod), re-resolved every
//! `dns_refresh` in the background on the control plane.
//!
//! Resolution never blocks a request: until the first answer the route
//! uses the host names themselves (resolved when connecting), and a failed
//! or empty lookup keeps the last good set (logged and counted). Endpoints
//! that disappear are drained: requests in flight on them finish, their
//! idle pooled connections are closed.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::config::BackendUrl;
use crate::observability::metrics::RouteMetrics;

use super::upstream::{Backend, Upstream};

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution: {0}")]
pub struct ResolverError(String);

/// The resolver shared by every route with `discovery: dns`.
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// From `/etc/resolv.conf` (name servers, search domains, ndots), or
    /// from the given name servers (`dns.nameservers`).
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, ResolverError> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| ResolverError(e.to_string()))?
        } else {
            let servers = nameservers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        // Portico asks again every dns_refresh: a cache would only make
        // changes arrive later than the refresh promises.
        builder.options_mut().cache_size = 0;
        let inner = builder.build().map_err(|e| ResolverError(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// Every address of every backend, in a stable order (sorted), as
    /// backends. An error names the host that failed.
    pub async fn resolve(&self, urls: &[BackendUrl]) -> Result<Vec<Backend>, String> {
        let mut out: Vec<Backend> = Vec::new();
        for url in urls {
            let lookup = match self.inner.lookup_ip(url.host.as_str()).await {
                Ok(l) => l,
                // No such name, or no address for it: an empty answer.
                Err(e) if e.is_no_records_found() => continue,
                Err(e) => return Err(format!("{}: {e}", url.host)),
            };
            let mut addrs: Vec<SocketAddr> = lookup
                .iter()
                .map(|ip| SocketAddr::new(ip, url.port))
                .collect();
            addrs.sort();
            addrs.dedup();
            for a in addrs {
                let b = Backend::at(url, a);
                if !out.iter().any(|o| o.label == b.label) {
                    out.push(b);
                }
            }
        }
        Ok(out)
    }
}

/// Resolves `urls` for `upstream` now and then every `every`, until the
/// route is dropped (a reload replaced it). Needs a runtime; without one
/// (`portico check`) nothing is spawned.
pub fn watch(
    upstream: &Arc<Upstream>,
    urls: Vec<BackendUrl>,
    resolver: Arc<Resolver>,
    every: Duration,
    metrics: RouteMetrics,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if weak.strong_count() == 0 {
                return;
            }
            let result = resolver.resolve(&urls).await;
            let Some(up) = weak.upgrade() else { return };
            refresh(&up, result, &metrics);
        }
    });
}

/// Applies one lookup's result to the route's endpoints.
fn refresh(up: &Upstream, result: Result<Vec<Backend>, String>, metrics: &RouteMetrics) {
    match result {
        Err(error) => {
            metrics.dns_refresh("failure");
            tracing::warn!(route = %metrics.route(), host = %metrics.host(), %error, "DNS lookup failed; keeping the last good endpoints");
        }
        Ok(found) if found.is_empty() => {
            metrics.dns_refresh("empty");
            tracing::warn!(route = %metrics.route(), host = %metrics.host(), "DNS lookup found no address; keeping the last good endpoints");
        }
        Ok(found) => {
            let labels: Vec<Arc<str>> = found.iter().map(|b| b.label.clone()).collect();
            let (gone, changed) = up.endpoints.replace(found);
            if !changed {
                metrics.dns_refresh("unchanged");
                return;
            }
            metrics.dns_refresh("changed");
            for e in &gone {
                up.client.forget(&e.backend);
            }
            let now: Vec<&str> = labels.iter().map(|l| &**l).collect();
            let left: Vec<&str> = gone.iter().map(|e| &*e.backend.label).collect();
            tracing::info!(route = %metrics.route(), host = %metrics.host(), endpoints = ?now, removed = ?left, "DNS endpoints changed");
        }
    }
}
