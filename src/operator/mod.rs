//! Operator surface: `GET /healthz /livez /readyz /metrics /routes` on the
//! operator listener only. Access is decided on the TCP peer ([`access`]),
//! never on a header; the endpoints are in [`service`].
//!
//! The paths this listener owns are reserved on the public listeners; that
//! check lives in [`crate::routing::reserved`], next to route matching.

pub mod access;
pub mod service;

pub use service::{Operator, OperatorState};

/// The reserved paths, owned by routing since public listeners check them
/// before route lookup.
pub use crate::routing::reserved::RESERVED_PATHS;
