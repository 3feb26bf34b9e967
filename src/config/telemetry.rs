//! `tracing:` in `portico.yaml`: where the gateway's spans go (OTLP over
//! HTTP, protobuf) and how many of them. Trace context itself
//! (`traceparent`) is always on; this only adds export.

use std::time::Duration;

use http::Uri;

use super::check::{Checker, Map};
use super::yaml::Node;

const TRACING_KEYS: &[&str] = &["otlp"];
const OTLP_KEYS: &[&str] = &[
    "endpoint",
    "sample_ratio",
    "service_name",
    "queue_size",
    "batch_size",
    "flush_interval",
    "export_timeout",
];

/// `tracing.otlp`: one server span per request, exported in batches.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// Where batches are POSTed: the endpoint as written, with
    /// `/v1/traces` added when it has no path (the collector's base URL).
    pub endpoint: Uri,
    /// Share of new traces (no sampled parent) that are exported, 0 to 1.
    /// A request whose incoming `traceparent` is sampled is always exported;
    /// one whose parent is not sampled never is.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Spans waiting for export; further spans are dropped and counted.
    pub queue_size: usize,
    /// Spans per export request at most.
    pub batch_size: usize,
    /// A batch goes out when it is full or this long after the last one.
    pub flush_interval: Duration,
    /// One export request may take this long; then its spans are dropped.
    pub export_timeout: Duration,
}

impl OtlpSettings {
    pub const DEFAULT_QUEUE: usize = 4096;
    pub const DEFAULT_BATCH: usize = 512;

    fn new(endpoint: Uri) -> Self {
        OtlpSettings {
            endpoint,
            sample_ratio: 1.0,
            service_name: "portico".to_owned(),
            queue_size: Self::DEFAULT_QUEUE,
            batch_size: Self::DEFAULT_BATCH,
            flush_interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(5),
        }
    }
}

/// `tracing: {otlp: {...}}`; `None` inside means no export.
pub(super) fn tracing(c: &mut Checker<'_>, top: &Map<'_>) -> Option<Option<OtlpSettings>> {
    let Some(node) = top.get("tracing") else {
        return Some(None);
    };
    let m = c.mapping(node, "tracing", TRACING_KEYS)?;
    match m.get("otlp") {
        None => Some(None),
        Some(node) => otlp(c, node).map(Some),
    }
}

fn otlp(c: &mut Checker<'_>, node: &Node) -> Option<OtlpSettings> {
    let m = c.mapping(node, "tracing.otlp", OTLP_KEYS)?;
    let entry = c.required(
        &m,
        "endpoint",
        "tracing.otlp",
        "name the collector's OTLP/HTTP address, e.g. endpoint: http://otel-collector:4318",
    )?;
    let endpoint = endpoint(c, &entry.value)?;
    let mut s = OtlpSettings::new(endpoint);
    let mut ok = true;
    if let Some(n) = m.get("sample_ratio") {
        match ratio(n) {
            Some(r) => s.sample_ratio = r,
            None => {
                c.error(
                    n.pos,
                    format!(
                        "tracing.otlp.sample_ratio: expected a number from 0 to 1 (e.g. 0.1), got {}",
                        n.describe()
                    ),
                );
                ok = false;
            }
        }
    }
    if let Some(n) = m.get("service_name") {
        match c.string(n, "tracing.otlp.service_name", "a service name") {
            Some(name) => s.service_name = name.to_owned(),
            None => ok = false,
        }
    }
    let mut number = |key: &str, min: u64, max: u64, into: &mut usize| {
        if let Some(n) = m.get(key) {
            match c.number(n, &format!("tracing.otlp.{key}"), min, max) {
                Some(v) => *into = v as usize,
                None => ok = false,
            }
        }
    };
    number("queue_size", 1, 1_000_000, &mut s.queue_size);
    number("batch_size", 1, 65_536, &mut s.batch_size);
    for (key, into) in [
        ("flush_interval", &mut s.flush_interval),
        ("export_timeout", &mut s.export_timeout),
    ] {
        if let Some(n) = m.get(key) {
            match c.duration(n, &format!("tracing.otlp.{key}"), false) {
                Some(d) => *into = d,
                None => ok = false,
            }
        }
    }
    if ok && s.batch_size > s.queue_size {
        c.error(
            m.pos,
            format!(
                "tracing.otlp: batch_size ({}) must not exceed queue_size ({})",
                s.batch_size, s.queue_size
            ),
        );
        ok = false;
    }
    ok.then_some(s)
}

/// `http://host:port[/path]` or `https://…`; no path means `/v1/traces`.
fn endpoint(c: &mut Checker<'_>, node: &Node) -> Option<Uri> {
    let text = c.string(node, "tracing.otlp.endpoint", "an http:// or https:// URL")?;
    let parsed: Result<Uri, _> = text.parse();
    let uri = match parsed {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty())
                && !u.authority().is_some_and(|a| a.as_str().contains('@')) =>
        {
            u
        }
        _ => {
            c.error(
                node.pos,
                format!(
                    "tracing.otlp.endpoint: expected an http:// or https:// URL with a host, e.g. http://otel-collector:4318, got {text:?}"
                ),
            );
            return None;
        }
    };
    if uri.path() == "/" {
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/v1/traces"));
        return Uri::from_parts(parts).ok();
    }
    Some(uri)
}

fn ratio(node: &Node) -> Option<f64> {
    let r: f64 = node.as_plain()?.parse().ok()?;
    (r.is_finite() && (0.0..=1.0).contains(&r)).then_some(r)
}
