//! gRPC at the edge: requests are recognised by their content type, their
//! `grpc-timeout` becomes the request's deadline (capped by the route's
//! `timeout`), and when Portico itself fails one it answers the way gRPC
//! clients understand: HTTP 200 with `grpc-status` and `grpc-message` in a
//! trailers-only response.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::body::GatewayBody;

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// `content-type: application/grpc` (and `application/grpc+proto`, ...).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The client's `grpc-timeout`: 1 to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`). Anything else is ignored (the route's timeout holds).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for one of Portico's own HTTP answers.
pub fn status_for(http: StatusCode) -> u8 {
    match http.as_u16() {
        403 => 7,              // PERMISSION_DENIED (allow_from)
        404 => 12,             // UNIMPLEMENTED
        413 | 431 => 8,        // RESOURCE_EXHAUSTED
        504 => 4,              // DEADLINE_EXCEEDED
        421 | 502 | 503 => 14, // UNAVAILABLE
        499 => 1,              // CANCELLED
        _ => 13,               // INTERNAL (400: a request Portico refused)
    }
}

/// A trailers-only gRPC answer: 200, `grpc-status`, `grpc-message`, the
/// request id; no body, so HTTP/2 carries it as one HEADERS frame.
pub fn response(
    http: StatusCode,
    message: &str,
    request_id: &HeaderValue,
) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        GRPC_STATUS.clone(),
        HeaderValue::from(u16::from(status_for(http))),
    );
    // grpc-message is percent-encoded outside printable ASCII; Portico's
    // messages are printable ASCII, but '%' itself must be encoded.
    let msg = message.replace('%', "%25");
    if let Ok(v) = HeaderValue::from_str(&msg) {
        h.insert(GRPC_MESSAGE.clone(), v);
    }
    h.insert(super::request_id::X_REQUEST_ID.clone(), request_id.clone());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(k: &str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
        h
    }

    #[test]
    fn grpc_timeout_units_and_bad_values() {
        let t = |v: &str| timeout(&with("grpc-timeout", v));
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("250u"), Some(Duration::from_micros(250)));
        assert_eq!(t("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn content_types_and_statuses() {
        assert!(is_grpc(&with("content-type", "application/grpc")));
        assert!(is_grpc(&with("content-type", "application/grpc+proto")));
        assert!(!is_grpc(&with("content-type", "application/json")));
        assert_eq!(status_for(StatusCode::BAD_GATEWAY), 14);
        assert_eq!(status_for(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(status_for(StatusCode::GATEWAY_TIMEOUT), 4);
        assert_eq!(status_for(StatusCode::NOT_FOUND), 12);
        assert_eq!(status_for(StatusCode::FORBIDDEN), 7);
        assert_eq!(status_for(StatusCode::PAYLOAD_TOO_LARGE), 8);
        assert_eq!(status_for(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE), 8);
        let r = response(
            StatusCode::BAD_GATEWAY,
            "upstream 100% down",
            &HeaderValue::from_static("id-1"),
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "upstream 100%25 down");
        assert_eq!(r.headers()["x-request-id"], "id-1");
    }
}
