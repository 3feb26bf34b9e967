//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>):
//! the edge is where traces begin. A valid incoming `traceparent` is kept
//! (its `tracestate` passes on untouched); otherwise Portico starts a trace.
//! Either way the gateway's hop gets a new span id, and the upstream
//! request carries `traceparent` with it as the parent.

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The trace a request belongs to and the gateway's span in it, as the
/// lowercase hex the header and the access log use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 32],
    pub span_id: [u8; 16],
    /// The trace flags, two hex digits (`01`: sampled).
    pub flags: [u8; 2],
    /// The incoming parent's span id, when the trace was continued.
    pub parent: Option<[u8; 16]>,
}

/// Which new traces are sampled (`tracing.otlp.sample_ratio`): those whose
/// random trace id falls under the ratio, so the decision is the same
/// wherever it is taken for that id (as OpenTelemetry's ratio sampler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    /// Sampled when the id's last 8 bytes, read as a number, are below this.
    threshold: u64,
    all: bool,
}

impl Sampler {
    pub fn ratio(ratio: f64) -> Sampler {
        Sampler {
            threshold: (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            all: ratio >= 1.0,
        }
    }

    fn samples(&self, trace_id: &[u8; 16]) -> bool {
        let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
        self.all || low < self.threshold
    }
}

impl TraceContext {
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).expect("hex is ASCII")
    }

    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).expect("hex is ASCII")
    }

    /// The sampled bit of the flags: the trace is being recorded.
    pub fn sampled(&self) -> bool {
        let low = self.flags[1];
        // Lowercase hex (parse checks it): odd digits have bit 0 set.
        matches!(low, b'1' | b'3' | b'5' | b'7' | b'9' | b'b' | b'd' | b'f')
    }

    /// `traceparent` for the upstream request: this span as the parent.
    pub fn header(&self) -> HeaderValue {
        let mut v = [0u8; 55];
        v[..3].copy_from_slice(b"00-");
        v[3..35].copy_from_slice(&self.trace_id);
        v[35] = b'-';
        v[36..52].copy_from_slice(&self.span_id);
        v[52] = b'-';
        v[53..].copy_from_slice(&self.flags);
        let mut value =
            HeaderValue::from_bytes(&v).expect("hex and dashes are a valid header value");
        // A span id of its own on every request: see `never_indexed`.
        super::headers::never_indexed(&mut value);
        value
    }
}

/// The request's trace: continues a valid `traceparent`, else starts one
/// (and drops a `tracestate` that no longer has a parent). Sets the
/// upstream `traceparent` in `headers`. A started trace is sampled when
/// `sampler` says so; without span export (`None`) it always is, so the
/// services behind the gateway record it.
pub fn continue_or_start(headers: &mut HeaderMap, sampler: Option<Sampler>) -> TraceContext {
    let incoming = {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        match (values.next(), values.next()) {
            (Some(one), None) => parse(one.as_bytes()),
            _ => None, // none, or several: not a usable parent
        }
    };
    let ctx = match incoming {
        Some((trace_id, parent, flags)) => TraceContext {
            trace_id,
            span_id: span_hex(span_id()),
            flags,
            parent: Some(parent),
        },
        None => {
            headers.remove(&TRACESTATE);
            let id = trace_id();
            let sampled = sampler.is_none_or(|s| s.samples(&id));
            TraceContext {
                trace_id: trace_hex(id),
                span_id: span_hex(span_id()),
                flags: if sampled { *b"01" } else { *b"00" },
                parent: None,
            }
        }
    };
    headers.insert(TRACEPARENT.clone(), ctx.header());
    ctx
}

/// `version-traceid-parentid-flags`: the trace id, parent id and flags of
/// a valid header. Version `ff` and all-zero ids are invalid; a later version is
/// read by its first four fields, as the specification asks.
fn parse(v: &[u8]) -> Option<([u8; 32], [u8; 16], [u8; 2])> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let lower_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let (version, trace, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    if !lower_hex(version)
        || version == b"ff"
        || !lower_hex(trace)
        || !lower_hex(parent)
        || !lower_hex(flags)
    {
        return None;
    }
    if version == b"00" && v.len() != 55 {
        return None;
    }
    if version != b"00" && v.len() > 55 && v[55] != b'-' {
        return None;
    }
    if trace.iter().all(|&b| b == b'0') || parent.iter().all(|&b| b == b'0') {
        return None;
    }
    Some((
        trace.try_into().ok()?,
        parent.try_into().ok()?,
        flags.try_into().ok()?,
    ))
}

/// A random trace id (never all zeros: the span half is not).
fn trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&super::endpoints::random().to_be_bytes());
    id[8..].copy_from_slice(&span_id());
    id
}

/// A random, non-zero span id.
fn span_id() -> [u8; 8] {
    loop {
        let r = super::endpoints::random();
        if r != 0 {
            return r.to_be_bytes();
        }
    }
}

fn trace_hex(bytes: [u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::encode_to_slice(bytes, &mut out).expect("32 digits for 16 bytes");
    out
}

fn span_hex(bytes: [u8; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    hex::encode_to_slice(bytes, &mut out).expect("16 digits for 8 bytes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(TRACEPARENT.clone(), HeaderValue::from_str(v).unwrap());
        }
        h.insert(TRACESTATE.clone(), HeaderValue::from_static("vendor=abc"));
        h
    }

    #[test]
    fn a_valid_parent_is_continued_with_a_new_span() {
        let mut h = with(&[PARENT]);
        let ctx = continue_or_start(&mut h, None);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.span_id(), "00f067aa0ba902b7");
        assert_eq!(&ctx.flags, b"01");
        let sent = h.get(&TRACEPARENT).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            sent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", ctx.span_id())
        );
        assert_eq!(
            h.get(&TRACESTATE).unwrap(),
            "vendor=abc",
            "tracestate passes on"
        );
        // A span id of its own per request: kept out of HPACK's table.
        assert!(h.get(&TRACEPARENT).unwrap().is_sensitive());
        assert!(!h.get(&TRACESTATE).unwrap().is_sensitive());
        // Unsampled stays unsampled; a later version is read by its fields.
        let mut h = with(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"]);
        assert_eq!(&continue_or_start(&mut h, None).flags, b"00");
        let mut h = with(&[
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        ]);
        assert_eq!(
            continue_or_start(&mut h, None).trace_id(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn an_invalid_or_missing_parent_starts_a_trace() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", // no flags
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 is exactly 55
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // not hex
        ];
        for v in bad {
            let mut h = with(&[v]);
            let ctx = continue_or_start(&mut h, None);
            assert_ne!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{v:?}");
            assert!(
                h.get(&TRACESTATE).is_none(),
                "{v:?}: tracestate without its parent"
            );
            assert_eq!(&ctx.flags, b"01");
            assert!(
                parse(h.get(&TRACEPARENT).unwrap().as_bytes()).is_some(),
                "{v:?}: sends a valid one"
            );
        }
        // Two traceparent headers: ambiguous, so a new trace.
        let mut h = with(&[PARENT, PARENT]);
        assert_ne!(
            continue_or_start(&mut h, None).trace_id(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(h.get_all(&TRACEPARENT).iter().count(), 1);
        // Started traces differ.
        let a = continue_or_start(&mut HeaderMap::new(), None);
        let b = continue_or_start(&mut HeaderMap::new(), None);
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.span_id(), b.span_id());
    }

    #[test]
    fn new_traces_follow_the_ratio_and_parents_decide_for_themselves() {
        let none = Sampler::ratio(0.0);
        let all = Sampler::ratio(1.0);
        let tenth = Sampler::ratio(0.1);
        let mut sampled = 0;
        for _ in 0..10_000 {
            assert!(!continue_or_start(&mut HeaderMap::new(), Some(none)).sampled());
            assert!(continue_or_start(&mut HeaderMap::new(), Some(all)).sampled());
            let ctx = continue_or_start(&mut HeaderMap::new(), Some(tenth));
            assert_eq!(ctx.sampled(), &ctx.flags == b"01");
            sampled += usize::from(ctx.sampled());
        }
        assert!((800..1200).contains(&sampled), "{sampled} of 10000 at 0.1");
        // A parent's decision stands whatever the ratio.
        let ctx = continue_or_start(&mut with(&[PARENT]), Some(none));
        assert!(ctx.sampled());
        assert_eq!(ctx.parent.as_ref().unwrap(), b"00f067aa0ba902b7");
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!continue_or_start(&mut with(&[unsampled]), Some(all)).sampled());
        assert!(
            continue_or_start(&mut HeaderMap::new(), None)
                .parent
                .is_none()
        );
    }
}
