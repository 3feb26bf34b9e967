//! Operator surface: `GET /healthz /livez /readyz /metrics /routes` on the
//! operator listener only. Access is decided on the TCP peer ([`access`]),
//! never on a header; the endpoints are in [`service`].
//!
//! The reserved paths live here because they are the operator's: public
//! listeners consult [`is_operator_path`] before routing.

pub mod access;
pub mod service;

pub use service::{Operator, OperatorState};

/// Paths served only on the operator listener. Everything under them is
/// reserved too (`/metrics/x`), but not look-alikes (`/metricsx`).
pub const RESERVED_PATHS: [&str; 4] = ["/healthz", "/readyz", "/livez", "/metrics"];

/// True when a normalized path is, or lies under, a reserved operator path.
pub fn is_operator_path(path: &str) -> bool {
    RESERVED_PATHS.iter().any(|r| {
        path.strip_prefix(r)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths_are_matched_segment_wise() {
        let cases = [
            ("/metrics", true),
            ("/metrics/", true),
            ("/metrics/x/y", true),
            ("/healthz", true),
            ("/readyz/", true),
            ("/livez", true),
            ("/metricsx", false),
            ("/healthzz", false),
            ("/x/metrics", false),
            ("/", false),
            ("/Metrics", false),
        ];
        for (path, want) in cases {
            assert_eq!(is_operator_path(path), want, "{path}");
        }
    }
}
