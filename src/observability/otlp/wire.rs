//! The OTLP protobuf (`ExportTraceServiceRequest`,
//! opentelemetry/proto/collector/trace/v1) written straight from the
//! requests' records into one buffer. Building the generated message types
//! first cost a dozen small strings per span and as much again to free
//! them; this writes the same bytes with no allocation once the buffers
//! have grown. The tests decode the result with `opentelemetry-proto`.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Version;

use super::SpanRecord;

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `SpanKind.SPAN_KIND_SERVER`.
const KIND_SERVER: u64 = 2;
/// `Status.StatusCode.STATUS_CODE_ERROR` (unset is 0, not written).
const STATUS_ERROR: u64 = 2;
/// `SpanFlags`: bit 8 says whether bit 9 (the parent is remote) is known.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Reusable buffers: one batch is encoded at a time.
#[derive(Default)]
pub struct Encoder {
    span: Vec<u8>,
    spans: Vec<u8>,
    resource_spans: Vec<u8>,
}

impl Encoder {
    /// One export request for `batch`; `resource` is the encoded
    /// `Resource` (see [`resource`]).
    pub fn request(&mut self, resource: &[u8], batch: &[SpanRecord]) -> Vec<u8> {
        // ScopeSpans { scope: {name, version}, spans }
        self.spans.clear();
        let mut scope = Vec::with_capacity(32);
        put_str(&mut scope, 1, "portico");
        put_str(&mut scope, 2, env!("CARGO_PKG_VERSION"));
        put_bytes(&mut self.spans, 1, &scope);
        for r in batch {
            self.span.clear();
            span(&mut self.span, r);
            put_bytes(&mut self.spans, 2, &self.span);
        }
        // ResourceSpans { resource, scope_spans }
        self.resource_spans.clear();
        put_bytes(&mut self.resource_spans, 1, resource);
        put_bytes(&mut self.resource_spans, 2, &self.spans);
        // ExportTraceServiceRequest { resource_spans }
        let mut out = Vec::with_capacity(self.resource_spans.len() + 8);
        put_bytes(&mut out, 1, &self.resource_spans);
        out
    }
}

/// `Resource { attributes }` with string attributes.
pub fn resource(attributes: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in attributes {
        attr_str(&mut out, 1, k, v);
    }
    out
}

/// One `Span`, with the HTTP semantic-convention attribute names.
fn span(out: &mut Vec<u8>, r: &SpanRecord) {
    let start = unix_nanos(r.start);
    let mut id = [0u8; 16];
    if hex::decode_to_slice(r.trace.trace_id(), &mut id).is_ok() {
        put_bytes(out, 1, &id);
    }
    let mut sid = [0u8; 8];
    if hex::decode_to_slice(r.trace.span_id(), &mut sid).is_ok() {
        put_bytes(out, 2, &sid);
    }
    if let Some(parent) = &r.trace.parent
        && hex::decode_to_slice(parent, &mut sid).is_ok()
    {
        put_bytes(out, 4, &sid);
    }
    let route = r.route.route();
    let method = r.method.as_str();
    // name: "METHOD ROUTE"
    key(out, 5, LEN);
    varint(out, (method.len() + 1 + route.len()) as u64);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(route.as_bytes());
    key(out, 6, VARINT);
    varint(out, KIND_SERVER);
    key(out, 7, FIXED64);
    out.extend_from_slice(&start.to_le_bytes());
    key(out, 8, FIXED64);
    out.extend_from_slice(&(start + r.duration.as_nanos() as u64).to_le_bytes());

    attr_str(out, 9, "http.request.method", method);
    attr_str(out, 9, "url.path", &r.path);
    attr_int(out, 9, "http.response.status_code", i64::from(r.status));
    attr_str(out, 9, "http.route", route);
    let mut ip = [0u8; 39];
    attr_str(out, 9, "client.address", ip_text(r.peer, &mut ip));
    let version = match r.version {
        Version::HTTP_2 => "2",
        Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    attr_str(out, 9, "network.protocol.version", version);
    attr_str(out, 9, "portico.host_rule", r.route.host());
    if let Some(host) = r.host.as_ref().and_then(|h| h.to_str().ok()) {
        attr_str(out, 9, "server.address", host);
    }
    if let Some(upstream) = &r.upstream {
        attr_str(out, 9, "portico.upstream", upstream);
        attr_int(out, 9, "portico.upstream.tries", i64::from(r.tries));
        // Semantic conventions count resends, not tries.
        attr_int(
            out,
            9,
            "http.request.resend_count",
            i64::from(r.tries.saturating_sub(1)),
        );
    }
    if r.route.is_canary() {
        attr_bool(out, 9, "portico.canary");
    }
    if r.incomplete {
        attr_bool(out, 9, "portico.incomplete");
    }
    if let Some((offset, head)) = r.upstream_phase {
        attr_double(
            out,
            9,
            "portico.upstream.duration_ms",
            head.as_secs_f64() * 1000.0,
        );
        event(
            out,
            start + offset.as_nanos() as u64,
            "upstream request sent",
        );
        event(
            out,
            start + (offset + head).as_nanos() as u64,
            "upstream response head",
        );
    }
    // Status { code }: ERROR for 5xx, else unset (an empty message).
    key(out, 15, LEN);
    if r.status >= 500 {
        varint(out, 2);
        key(out, 3, VARINT);
        varint(out, STATUS_ERROR);
    } else {
        varint(out, 0);
    }
    let flags = u32::from(r.trace.sampled())
        | HAS_IS_REMOTE
        | if r.trace.parent.is_some() {
            IS_REMOTE
        } else {
            0
        };
    key(out, 16, FIXED32);
    out.extend_from_slice(&flags.to_le_bytes());
}

/// `Span.Event { time_unix_nano, name }` as field 11.
fn event(out: &mut Vec<u8>, at: u64, name: &str) {
    let len = 1 + 8 + str_field_len(name);
    key(out, 11, LEN);
    varint(out, len as u64);
    key(out, 1, FIXED64);
    out.extend_from_slice(&at.to_le_bytes());
    put_str(out, 2, name);
}

// KeyValue { key: 1, value: 2 (AnyValue) }; AnyValue { string 1, bool 2,
// int64 3, double 4 }.
fn attr_str(out: &mut Vec<u8>, field: u32, k: &str, v: &str) {
    attr(out, field, k, str_field_len(v), |out| put_str(out, 1, v));
}

fn attr_int(out: &mut Vec<u8>, field: u32, k: &str, v: i64) {
    attr(out, field, k, 1 + varint_len(v as u64), |out| {
        key(out, 3, VARINT);
        varint(out, v as u64);
    });
}

fn attr_bool(out: &mut Vec<u8>, field: u32, k: &str) {
    attr(out, field, k, 2, |out| {
        key(out, 2, VARINT);
        varint(out, 1);
    });
}

fn attr_double(out: &mut Vec<u8>, field: u32, k: &str, v: f64) {
    attr(out, field, k, 9, |out| {
        key(out, 4, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    });
}

/// A `KeyValue` as `field`, whose `AnyValue` is `value_len` bytes written
/// by `value`.
fn attr(
    out: &mut Vec<u8>,
    field: u32,
    k: &str,
    value_len: usize,
    value: impl FnOnce(&mut Vec<u8>),
) {
    let kv_len = str_field_len(k) + 1 + varint_len(value_len as u64) + value_len;
    key(out, field, LEN);
    varint(out, kv_len as u64);
    put_str(out, 1, k);
    key(out, 2, LEN);
    varint(out, value_len as u64);
    value(out);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a string field with a one-byte key (fields 1 to 15).
fn str_field_len(s: &str) -> usize {
    1 + varint_len(s.len() as u64) + s.len()
}

fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    put_bytes(out, field, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The address as text, formatted into `buf` (no allocation).
fn ip_text(ip: IpAddr, buf: &mut [u8; 39]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 39 bytes hold the longest IPv6 text form.
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_protobuf_varints() {
        for (v, bytes) in [
            (0u64, &[0u8][..]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
        let mut buf = [0u8; 39];
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(
            ip_text(v6, &mut buf),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }
}
