//! Route-file reloads: parse and validate the whole file, build the complete
//! table, then swap it in atomically. A bad file changes nothing but the
//! reported error and the failure counter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config;
use crate::observability::metrics::Metrics;
use crate::proxy::upstream::UpstreamClients;
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
}

impl Reloader {
    /// Loads the route file if its contents changed since the live table.
    pub fn reload_once(&self) -> ReloadOutcome {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                return self.fail(format!("{}: cannot read: {e}", self.path.display()));
            }
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        if self.live.is_loaded() && self.live.status().sha256.as_deref() == Some(sha.as_str()) {
            return ReloadOutcome::Unchanged;
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                return self.fail(format!(
                    "{}: the route file is not valid UTF-8",
                    self.path.display()
                ));
            }
        };
        let file = match config::parse_route_file(&self.path, &text) {
            Ok(f) => f,
            Err(errors) => return self.fail(errors.to_string()),
        };
        let ctx = BuildContext {
            metrics: &self.metrics,
            clients: &self.clients,
            default_timeout: self.default_timeout,
        };
        let table = match RouteTable::build(&file, &ctx) {
            Ok(t) => t,
            Err(e) => return self.fail(crate::proxy::error_chain(&e)),
        };
        let count = table.len();
        let generation = self.live.install(table, sha.clone());
        self.metrics.config_generation.set(generation as i64);
        self.metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        tracing::info!(
            file = %self.path.display(),
            generation,
            routes = count as u64,
            sha256 = %sha,
            "route table loaded"
        );
        ReloadOutcome::Loaded { generation }
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
