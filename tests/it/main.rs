//! Portico's integration tests: one test binary (fast to link), one module
//! per area. Every test starts real servers on ephemeral loopback ports.

mod support;

mod cli;
mod code_layout;
mod demo;
mod discovery;
mod governance;
mod grpc;
mod hpack;
mod http2_upstream;
mod idle;
mod import;
mod k8s;
mod limits;
mod operator;
mod otlp;
mod proxy;
mod reload;
mod resilience;
mod route_features;
mod routing;
mod shutdown;
mod streaming;
mod tls;
mod tonic_grpc;
mod upstream_http1;
mod websocket;
mod workers;
