//! Routing: path normalization (RFC 3986) and segment-wise longest-prefix
//! matching with Kubernetes Ingress `pathType: Prefix` semantics.

pub mod live;
pub mod path;
pub mod prefix;
pub mod table;
