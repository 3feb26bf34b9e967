//! Portico: an edge ingress gateway for HTTP services on Kubernetes.
//!
//! All logic lives in this library; `src/main.rs` is a thin command-line shell
//! so that integration tests and benchmarks can drive the real parts.
//!
//! # Layout
//!
//! * [`config`]: `portico.yaml` and the route file, parsed into validated types
//!   with every error reported as `FILE:LINE:COL: message`.
//! * [`routing`]: path normalization (path parameters read as servlet
//!   containers do), the reserved operator paths, host tables, exact paths,
//!   the segment-wise longest-prefix matcher, and the live (hot-swappable)
//!   table.
//! * [`proxy`]: the public request path, from request id to upstream exchange.
//! * [`server`]: the accept loop shared by every listener, and the workers
//!   (one single-threaded event loop per core) that run the public ones.
//! * [`tls`]: TLS termination: certificates chosen by SNI, live certificate
//!   reload, and the HTTP-to-HTTPS redirect.
//! * [`operator`]: the operator-only surface.
//! * [`observability`]: metrics, the access log, JSON logging.
//! * [`lifecycle`]: route reloads and shutdown.
//! * [`import`]: `portico import`, Kubernetes Ingress objects to a route
//!   file, with the behaviour differences from ingress-nginx.
//! * [`app`]: wiring all of the above from one config.
//! * [`demo`]: `portico demo`, the gateway with built-in backends.

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod import;
pub mod lifecycle;
pub mod observability;
pub mod operator;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod tls;
