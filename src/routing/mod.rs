//! Routing: path normalization (RFC 3986), the reserved operator paths, and
//! the route table with Kubernetes Ingress semantics: a host rule first
//! ([`host`]), then an exact path, then the segment-wise longest prefix
//! ([`prefix`]). A route's canary, and who reaches it: [`canary`]. The
//! route file's own tests, run against a built table: [`assertions`].

pub mod assertions;
pub mod canary;
pub mod host;
pub mod live;
pub mod matcher;
pub mod path;
pub mod prefix;
pub mod reserved;
pub mod table;
