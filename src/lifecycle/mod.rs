//! Lifecycle: loading the route table (at start, on file change, on SIGHUP),
//! the process's open-file limit, returning freed memory, and shutting down without dropping
//! accepted requests.

pub mod buffers;
pub mod drain;
pub mod fd_limit;
pub mod memory;
pub mod reload;
pub mod shutdown;
pub mod signals;
pub mod watch;
