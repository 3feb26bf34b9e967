//! Configuration: `portico.yaml` (the gateway's own settings, read at start)
//! and the route file (service teams' routes, reloaded live), parsed into
//! validated types.
//!
//! Every problem in a file is reported, not just the first, each as
//! `FILE:LINE:COL: message` naming the field, the value and the fix. That is
//! why we do not deserialize with serde (it stops at the first error): the
//! YAML is parsed into a tree that keeps positions, and the tree is walked by
//! hand.
//!
//! * `yaml.rs`: the only file that names the YAML crate; text → tree.
//! * `check.rs`: the walker: error collection, key sets, typed values.
//! * `gateway.rs`: [`GatewayConfig`] and its rules.
//! * `routes.rs`: [`RouteFile`], [`RouteSpec`], [`BackendUrl`] and their rules.
//! * `canary.rs`: a route's `canary:` ([`CanarySpec`]).
//! * [`assertions`]: the route file's `tests:` ([`RouteAssertion`]).
//! * [`governance`]: `functions:`, and the warnings of `portico check --lint`.
//! * [`error`]: [`ConfigError`], [`ConfigErrors`], [`Location`].
//! * [`duration`], `size.rs`: `30s` / `64KiB` value syntax.

pub mod assertions;
mod canary;
mod check;
pub mod duration;
pub mod error;
mod gateway;
pub mod governance;
pub(crate) mod routes;
mod size;
mod telemetry;
pub(crate) mod yaml;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use assertions::{ExpectedRoute, RouteAssertion};
pub use canary::CanarySpec;
pub use error::{ConfigError, ConfigErrors, Location};
pub use gateway::{
    CertificatePaths, GatewayConfig, Limits, Listen, OperatorSettings, ShutdownSettings,
    TlsSettings, Workers, parse_gateway_config,
};
pub use governance::Warning;
pub(crate) use routes::parse_net;
pub use routes::{
    BackendUrl, Balance, CircuitBreaker, DEFAULT_HOST_LABEL, DEFAULT_RETRIES, HostPattern,
    InvalidBackendUrl, InvalidHost, OutlierPolicy, Redirect, RouteFile, RouteKey, RouteSpec,
    parse_route_file,
};
pub use size::parse_size;
pub use telemetry::OtlpSettings;

/// Where `portico serve` looks when neither `--config` nor `$PORTICO_CONFIG`
/// is given.
pub const DEFAULT_CONFIG_PATH: &str = "portico.yaml";

/// Reads and validates `portico.yaml`. A read failure is one
/// [`ConfigError::Io`] naming the file.
pub fn load_gateway_config(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
    parse_gateway_config(path, &read(path)?)
}

/// Reads and validates a route file. A read failure is one
/// [`ConfigError::Io`] naming the file.
pub fn load_route_file(path: &Path) -> Result<RouteFile, ConfigErrors> {
    parse_route_file(path, &read(path)?)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
