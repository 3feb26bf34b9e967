//! The operator paths that are never public (DESIGN §Request path, step 4).
//!
//! `/healthz`, `/readyz`, `/livez` and `/metrics`, and everything under them,
//! are served only on the operator listener. On a public listener they answer
//! `404` whatever the route table says, so that a catch-all route cannot leak
//! a backend's own `/metrics`.
//!
//! The check runs on the path as matching reads it (normalized, parameters
//! cut: see [`super::path::without_params`]) and is deliberately looser than
//! routing, because it must hold for every backend behind a catch-all, not
//! just for the ones that read paths as Portico does:
//!
//! * the first segment is compared ignoring ASCII case (`/METRICS`), because
//!   case-insensitive backends (IIS, ASP.NET, Windows file systems) serve
//!   `/metrics` for it;
//! * trailing dots and encoded spaces are ignored (`/metrics.`,
//!   `/metrics%20`), because Windows strips them from a path segment.
//!
//! Fail-closed: a public path that merely looks like an operator path this
//! way answers 404 too. Route matching itself stays case-sensitive and exact.

/// Paths served only on the operator listener. Everything under them is
/// reserved too (`/metrics/x`), but not look-alikes (`/metricsx`).
pub const RESERVED_PATHS: [&str; 4] = ["/healthz", "/readyz", "/livez", "/metrics"];

/// True when `path` (normalized, parameters cut) is, or lies under, a
/// reserved operator path, in any of the spellings described above.
pub fn is_reserved(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let first = rest.split_once('/').map_or(rest, |(first, _)| first);
    let name = windows_name(first);
    RESERVED_PATHS
        .iter()
        .any(|r| r[1..].eq_ignore_ascii_case(name))
}

/// A segment as Windows would open it: trailing dots and (encoded) spaces
/// removed. Raw spaces never reach here (they are not valid in a request
/// target), so only `%20` needs handling.
fn windows_name(mut s: &str) -> &str {
    loop {
        if let Some(t) = s.strip_suffix('.') {
            s = t;
        } else if let Some(t) = s.strip_suffix("%20") {
            s = t;
        } else {
            return s;
        }
    }
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
            ("/metric", false),
            ("/.metrics", false),
            ("/metrics-", false),
            // Spellings that Windows-style backends fold onto /metrics.
            ("/Metrics", true),
            ("/METRICS/x", true),
            ("/HealthZ", true),
            ("/metrics.", true),
            ("/metrics..", true),
            ("/metrics./x", true),
            ("/metrics%20", true),
            ("/metrics%20.%20", true),
            ("/readyz.", true),
        ];
        for (path, want) in cases {
            assert_eq!(is_reserved(path), want, "{path}");
        }
    }
}
