//! Lifecycle: loading the route table (at start, on file change, on SIGHUP)
//! and shutting down without dropping accepted requests.

pub mod reload;
pub mod signals;
