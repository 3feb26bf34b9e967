//! One request's bookkeeping from head to last byte: the fields of its
//! access-log line, its route's metric handles and its in-flight permit. It
//! is finished exactly once — when the response body ends, or when whatever
//! holds it is dropped (client gone, handler cancelled) — and finishing
//! writes the log line and records the metrics.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Version};
use tokio::time::Instant;

use crate::observability::access_log::{self, AccessRecord};
use crate::observability::metrics::RouteMetrics;
use crate::observability::otlp::{SpanQueue, SpanRecord};

use super::endpoints::InflightGuard;
use super::limits::InflightPermit;
use super::trace::TraceContext;
use crate::lifecycle::drain::Tracked;

/// nginx's convention for "the client closed the connection before a
/// response was sent", used when a request is cancelled before it has a status.
pub const CLIENT_CLOSED: u16 = 499;

pub struct Exchange {
    pub started: Instant,
    pub request_id: HeaderValue,
    /// The W3C trace and the gateway's span in it (see `proxy::trace`).
    pub trace: Option<TraceContext>,
    pub method: Method,
    /// The normalized path (or the raw one, capped, when normalization
    /// failed). Shared with the in-flight registry, so it is stored once.
    pub path: Arc<str>,
    pub metrics: RouteMetrics,
    /// The `Host` (or `:authority`) the client sent, once the request got
    /// that far.
    pub host: Option<HeaderValue>,
    /// `host:port` of the backend tried last (the one that answered), if any.
    pub upstream: Option<std::sync::Arc<str>>,
    /// Backends tried: 0 when none was, more than 1 after retries.
    pub tries: u8,
    /// Counts the request in flight on its backend (power of two choices)
    /// until the response ends.
    pub endpoint: Option<InflightGuard>,
    pub peer: IpAddr,
    pub version: Version,
    pub user_agent: Option<HeaderValue>,
    /// 0 until a response head is chosen.
    pub status: u16,
    pub bytes_out: u64,
    /// An upgraded (WebSocket) request: bytes from the client.
    pub bytes_in: Option<u64>,
    /// The request asked to upgrade (and the backend is sent `Upgrade`).
    pub upgrade: bool,
    /// A sticky-canary cookie for the response (a client dealt a side
    /// without a valid cookie for it).
    pub set_cookie: Option<HeaderValue>,
    /// Gateway-wide and per-route slots. Released when the exchange finishes, not when the handler returns:
    /// a streaming response is still in flight.
    pub permits: [Option<InflightPermit>; 2],
    /// Listed in the in-flight registry until finished.
    pub tracked: Option<Tracked>,
    /// Where this request's span goes when it is finished: set only for
    /// sampled requests with span export on (`tracing.otlp`).
    pub spans: Option<Arc<SpanQueue>>,
    /// For the span: when (since `started`) the first try went upstream,
    /// and how long until a response head came back.
    pub upstream_phase: Option<(Duration, Duration)>,
    finished: bool,
}

impl Exchange {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        started: Instant,
        request_id: HeaderValue,
        method: Method,
        path: Arc<str>,
        metrics: RouteMetrics,
        peer: IpAddr,
        version: Version,
        user_agent: Option<HeaderValue>,
    ) -> Self {
        Exchange {
            started,
            request_id,
            trace: None,
            method,
            path,
            metrics,
            host: None,
            upstream: None,
            tries: 0,
            endpoint: None,
            peer,
            version,
            user_agent,
            status: 0,
            bytes_out: 0,
            bytes_in: None,
            upgrade: false,
            set_cookie: None,
            permits: [None, None],
            tracked: None,
            spans: None,
            upstream_phase: None,
            finished: false,
        }
    }

    /// Makes the exchange's own copies of the request header values it
    /// keeps for the log line. Those values are slices of the buffer the
    /// connection read the request into (16 KiB for HTTP/1.1): an exchange
    /// that lives on with an upgraded connection would otherwise keep that
    /// whole buffer for as long as the WebSocket stays open.
    pub fn outlive_request(&mut self) {
        for value in [
            Some(&mut self.request_id),
            self.host.as_mut(),
            self.user_agent.as_mut(),
            self.set_cookie.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            *value = own_copy(value);
        }
    }

    /// Logs and counts the request. Idempotent.
    pub fn finish(&mut self, complete: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        let status = if self.status == 0 {
            CLIENT_CLOSED
        } else {
            self.status
        };
        let elapsed = self.started.elapsed();
        self.metrics
            .observe(&self.method, status, elapsed.as_secs_f64());
        access_log::write(&AccessRecord {
            request_id: self.request_id.to_str().unwrap_or_default(),
            trace_id: self.trace.as_ref().map_or("", TraceContext::trace_id),
            span_id: self.trace.as_ref().map_or("", TraceContext::span_id),
            method: self.method.as_str(),
            path: &self.path,
            status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            host: self
                .host
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            route: self.metrics.route(),
            canary: self.metrics.is_canary(),
            upstream: self.upstream.as_deref().unwrap_or(""),
            tries: self.tries,
            client_ip: self.peer,
            proto: version_str(self.version),
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
            user_agent: self
                .user_agent
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            incomplete: !complete,
        });
        self.permits = [None, None];
        self.tracked = None;
        self.endpoint = None;
        if let (Some(queue), Some(trace)) = (self.spans.take(), self.trace) {
            queue.push(SpanRecord {
                trace,
                start: SystemTime::now() - elapsed,
                duration: elapsed,
                method: self.method.clone(),
                path: self.path.clone(),
                host: self.host.clone(),
                route: self.metrics.clone(),
                status,
                upstream: self.upstream.clone(),
                tries: self.tries,
                upstream_phase: self.upstream_phase,
                peer: self.peer,
                version: self.version,
                incomplete: !complete,
            });
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// The path of an exchange that has none yet; shared, so not an allocation.
/// `value` in an allocation of its own (a `HeaderValue` clone shares its
/// bytes' buffer).
fn own_copy(value: &HeaderValue) -> HeaderValue {
    let mut own = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    own.set_sensitive(value.is_sensitive());
    own
}

pub fn no_path() -> Arc<str> {
    static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

/// A client-supplied path as it goes into logs: capped, so that a hostile
/// 64 KiB path does not become a 64 KiB log line.
pub fn log_path(p: &str) -> Arc<str> {
    const MAX: usize = 1024;
    if p.len() <= MAX {
        return Arc::from(p);
    }
    let mut end = MAX;
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(format!("{}...", &p[..end]))
}

pub fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_copy_shares_nothing_with_the_buffer_the_value_came_in() {
        let buffer = bytes::Bytes::from(b"GET / HTTP/1.1\r\nUser-Agent: curl/8\r\n".repeat(400));
        let at = buffer.len() / 2;
        let mut shared = HeaderValue::from_maybe_shared(buffer.slice(at..at + 4)).unwrap();
        shared.set_sensitive(true);
        assert_eq!(
            shared.as_bytes().as_ptr(),
            buffer[at..].as_ptr(),
            "the test's premise"
        );
        let own = own_copy(&shared);
        assert_eq!(own, shared);
        assert!(own.is_sensitive());
        let range = buffer.as_ptr_range();
        assert!(
            !range.contains(&own.as_bytes().as_ptr()),
            "still inside the buffer"
        );
    }
}
