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
pub mod wire;

/// The error `portico` reports for a route file it refuses (as
/// `routes.yaml`); panics, naming `what`, when the file is accepted.
pub fn route_file_error(text: &str, what: &str) -> String {
    portico::config::parse_route_file(std::path::Path::new("routes.yaml"), text)
        .map(|_| ())
        .expect_err(what)
        .to_string()
}

/// A loopback address where connections are refused: a socket bound but
/// not listening, kept for the life of the test process. (Binding a
/// listener and dropping it frees the port, and a test running alongside
/// may get it for its own server.)
pub fn refused_addr() -> std::net::SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    HELD.lock().unwrap().push((addr, socket));
    addr
}

/// Frees a [`refused_addr`] so that a test can start a server on it.
pub fn release_refused(addr: std::net::SocketAddr) {
    HELD.lock().unwrap().retain(|(a, _)| *a != addr);
}

static HELD: std::sync::Mutex<Vec<(std::net::SocketAddr, socket2::Socket)>> =
    std::sync::Mutex::new(Vec::new());
