//! Lifecycle: loading the route table (at start, on file change, on SIGHUP)
//! and shutting down without dropping accepted requests.

pub mod drain;
pub mod reload;
pub mod shutdown;
pub mod signals;
pub mod watch;
