//! Observability: the metric families (names are part of the contract), the
//! non-blocking JSON access log, and JSON logging for everything else.

pub mod access_log;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod otlp;
