//! Portico's integration tests: one test binary (fast to link), one module
//! per area. Every test starts real servers on ephemeral loopback ports.

mod support;

mod cli;
mod operator;
mod limits;
mod proxy;
mod reload;
mod streaming;
