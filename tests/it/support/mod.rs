//! Real parts for integration tests: hyper backends on ephemeral ports, the
//! gateway started in-process on bound listeners, the real binary, and
//! clients that can send what a browser never would.

#![allow(dead_code)]

pub mod backend;
pub mod binary;
pub mod certs;
pub mod client;
pub mod configmap;
pub mod gateway;
pub mod servlet;

/// The error `portico` reports for a route file it refuses (as
/// `routes.yaml`); panics, naming `what`, when the file is accepted.
pub fn route_file_error(text: &str, what: &str) -> String {
    portico::config::parse_route_file(std::path::Path::new("routes.yaml"), text)
        .map(|_| ())
        .expect_err(what)
        .to_string()
}
