//! Route-file reloads: parse and validate the whole file, build the complete
//! table, run the file's own tests (`tests:`) against it, then swap it in
//! atomically. A bad file, or one whose tests fail, changes nothing but the
//! reported error and the failure counter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::config;
use crate::observability::metrics::Metrics;
use crate::proxy::upstream::UpstreamClients;
use crate::routing::assertions;
use crate::routing::live::LiveRoutes;
use crate::routing::table::{BuildContext, RouteTable};

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new table is live, with this generation.
    Loaded { generation: u64 },
    /// The file's contents are the same as the live table's: nothing to do.
    Unchanged,
    /// The file is invalid or unreadable; the previous table keeps serving.
    Failed { error: String },
}

/// Everything needed to turn the route file into a live table.
pub struct Reloader {
    pub path: PathBuf,
    pub live: Arc<LiveRoutes>,
    pub metrics: Arc<Metrics>,
    pub clients: Arc<UpstreamClients>,
    pub default_timeout: Duration,
    /// The last rejected input (content hash or read error), so that polling
    /// an unchanged bad file logs and counts it once, not every second.
    pub last_rejected: Mutex<Option<String>>,
}

impl Reloader {
    /// Loads the route file if its contents changed since the live table.
    pub fn reload_once(&self) -> ReloadOutcome {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                let error = format!(
                    "{}: cannot read: {e}; the last good route table keeps serving",
                    self.path.display()
                );
                return self.reject(error.clone(), error);
            }
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        if self.live.is_loaded() && self.live.status().sha256.as_deref() == Some(sha.as_str()) {
            *self.last_rejected.lock() = None;
            return ReloadOutcome::Unchanged;
        }
        if self.last_rejected.lock().as_deref() == Some(sha.as_str()) {
            return ReloadOutcome::Unchanged;
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                let error = format!("{}: the route file is not valid UTF-8", self.path.display());
                return self.reject(sha, error);
            }
        };
        let mut file = match config::parse_route_file(&self.path, &text) {
            Ok(f) => f,
            Err(errors) => return self.reject(sha, errors.to_string()),
        };
        let tests = std::mem::take(&mut file.tests);
        let previous = self.live.current();
        let ctx = BuildContext {
            metrics: &self.metrics,
            clients: &self.clients,
            default_timeout: self.default_timeout,
            previous: self.live.is_loaded().then_some(&*previous),
        };
        let table = match RouteTable::build(file, &ctx) {
            Ok(t) => t,
            Err(e) => return self.reject(sha, crate::proxy::error_chain(&e)),
        };
        // The file's own tests gate it like its syntax: a failing one keeps
        // the old table serving.
        if let Err(failed) = assertions::check(&table, &tests) {
            return self.reject(sha, failed.to_string());
        }
        let count = table.len();
        let diff = RouteDiff::between(&previous, &table);
        let generation = self.live.install(table, sha.clone());
        *self.last_rejected.lock() = None;
        self.metrics.config_generation.set(generation as i64);
        // One series: the hash of the file this replica serves now.
        self.metrics.config_info.reset();
        self.metrics.config_info.with_label_values(&[&sha]).set(1);
        self.metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        tracing::info!(
            file = %self.path.display(),
            generation,
            routes = count as u64,
            sha256 = %sha,
            added = %listed(&diff.added),
            removed = %listed(&diff.removed),
            changed = %listed(&diff.changed),
            "route table loaded: {} added, {} removed, {} changed",
            diff.added.len(),
            diff.removed.len(),
            diff.changed.len()
        );
        ReloadOutcome::Loaded { generation }
    }

    /// Records a rejected input once per distinct `key`.
    fn reject(&self, key: String, error: String) -> ReloadOutcome {
        {
            let mut last = self.last_rejected.lock();
            if last.as_deref() == Some(key.as_str()) {
                return ReloadOutcome::Unchanged;
            }
            *last = Some(key);
        }
        self.fail(error)
    }

    fn fail(&self, error: String) -> ReloadOutcome {
        self.metrics
            .config_reloads
            .with_label_values(&["failure"])
            .inc();
        tracing::error!(
            file = %self.path.display(),
            error = %error,
            "route file rejected; the previous route table keeps serving"
        );
        self.live.record_failure(error.clone());
        ReloadOutcome::Failed { error }
    }
}

/// Routes (by host and path) added, removed and changed between two tables, for the one-line
/// reload log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RouteDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl RouteDiff {
    /// One lookup per route and no allocation for unchanged ones: a route
    /// the new table shares with the old one is unchanged by construction.
    pub fn between(old: &RouteTable, new: &RouteTable) -> RouteDiff {
        let mut diff = RouteDiff::default();
        for r in new.routes() {
            match old.same_key(&r.spec) {
                None => diff.added.push(r.spec.name()),
                Some(o) if !Arc::ptr_eq(o, r) && !o.spec.same_as(&r.spec) => {
                    diff.changed.push(r.spec.name())
                }
                Some(_) => {}
            }
        }
        for r in old.routes() {
            if new.same_key(&r.spec).is_none() {
                diff.removed.push(r.spec.name());
            }
        }
        diff
    }
}

/// The most routes one list of the reload log line names; a first load of
/// a 100,000-route file must not become a 3 MB log line.
const LISTED: usize = 20;

/// `a,b,c`, or the first [`LISTED`] names and how many more.
fn listed(names: &[String]) -> String {
    if names.len() <= LISTED {
        return names.join(",");
    }
    format!(
        "{},... (+{} more)",
        names[..LISTED].join(","),
        names.len() - LISTED
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::upstream::PoolTimeouts;
    use crate::routing::table::BuildContext;

    fn table(yaml: &str, previous: Option<&RouteTable>, metrics: &Metrics) -> RouteTable {
        let file = config::parse_route_file(std::path::Path::new("r.yaml"), yaml).unwrap();
        let clients = UpstreamClients::new(PoolTimeouts {
            connect: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        })
        .unwrap();
        let ctx = BuildContext {
            metrics,
            clients: &clients,
            default_timeout: Duration::from_secs(30),
            previous,
        };
        RouteTable::build(file, &ctx).unwrap()
    }

    #[test]
    fn diff_names_routes_by_host_and_path() {
        let metrics = Metrics::new();
        let old = table(
            "routes:\n  - prefix: /a\n    backend: http://a:1\n  - host: api.example.com\n    exact: /s\n    backend: http://s:1\n  - prefix: /gone\n    backend: http://g:1\n",
            None,
            &metrics,
        );
        let new = table(
            "routes:\n  - prefix: /a\n    backend: http://a:2\n  - host: api.example.com\n    exact: /s\n    backend: http://s:1\n  - host: api.example.com\n    prefix: /s\n    backend: http://s:1\n",
            Some(&old),
            &metrics,
        );
        assert_eq!(
            RouteDiff::between(&old, &new),
            RouteDiff {
                added: vec!["api.example.com/s".into()],
                removed: vec!["/gone".into()],
                changed: vec!["/a".into()],
            }
        );
        assert_eq!(RouteDiff::between(&new, &new), RouteDiff::default());
    }

    #[test]
    fn long_lists_are_cut_in_the_log_line() {
        let names: Vec<String> = (0..25).map(|i| format!("/r{i}")).collect();
        let line = listed(&names);
        assert!(line.starts_with("/r0,/r1,"), "{line}");
        assert!(line.ends_with("/r19,... (+5 more)"), "{line}");
        assert_eq!(listed(&names[..2]), "/r0,/r1");
        assert_eq!(listed(&[]), "");
    }
}
