//! Portico's own error responses: one exhaustive mapping from [`ProxyError`]
//! to status and code, and the one place the JSON error body is built.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::observability::json;
use crate::observability::metrics::UpstreamErrorKind;
use crate::routing::path::PathError;

use super::body::GatewayBody;

/// Seconds a shed client is asked to wait before retrying.
const RETRY_AFTER_SECS: &str = "1";

/// Every failure the gateway answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid request path: {0}")]
    BadPath(#[from] PathError),
    #[error("ambiguous request: {0}")]
    BadHead(#[from] super::headers::HeadError),
    #[error("no route matches this path")]
    NoRoute,
    #[error(
        "this connection's certificate does not cover the requested host; open a new connection for it"
    )]
    Misdirected,
    #[error("no route table is loaded yet")]
    NotReady,
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request headers exceed the limit of {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("upstream is unavailable ({})", kind.as_str())]
    UpstreamUnavailable { kind: UpstreamErrorKind },
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    #[error("too many requests in flight; retry later")]
    Overloaded,
    #[error("the client closed the request before it was complete")]
    ClientClosed,
    /// The route's `allow_from` does not list the TCP peer.
    #[error("this route accepts requests only from listed source addresses")]
    Forbidden,
    /// The route's `redirect:`. Not a failure, but Portico's own answer
    /// like the others, so it is built here with them.
    #[error("redirecting to {}", .0.location.to_str().unwrap_or_default())]
    Redirect(crate::config::Redirect),
}

impl ProxyError {
    /// Status and machine-readable code. No catch-all arm: a new variant must
    /// choose its status here at compile time.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ProxyError::BadHead(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ProxyError::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            ProxyError::Misdirected => (StatusCode::MISDIRECTED_REQUEST, "misdirected_request"),
            ProxyError::NotReady => (StatusCode::NOT_FOUND, "no_route"),
            ProxyError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ProxyError::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            ProxyError::UpstreamUnavailable { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream_unavailable")
            }
            ProxyError::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ProxyError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            // Nobody reads this answer; the status is for the access log.
            ProxyError::ClientClosed => (client_closed(), "client_closed"),
            ProxyError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ProxyError::Redirect(r) => (r.status, "redirect"),
        }
    }

    /// The JSON error response, carrying the request id in body and header.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<GatewayBody> {
        let (status, code) = self.status_and_code();
        let mut body = String::with_capacity(128);
        body.push('{');
        json::push_field(&mut body, "error", code);
        json::push_field(&mut body, "message", &self.to_string());
        json::push_field(
            &mut body,
            "request_id",
            request_id.to_str().unwrap_or_default(),
        );
        body.push_str("}\n");

        let mut resp = Response::new(GatewayBody::full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(super::request_id::X_REQUEST_ID.clone(), request_id.clone());
        if let ProxyError::Redirect(r) = &self {
            h.insert(header::LOCATION, r.location.clone());
        }
        if matches!(self, ProxyError::Overloaded) {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}

/// 499, nginx's "client closed request": not in the `http` constants.
fn client_closed() -> StatusCode {
    StatusCode::from_u16(super::exchange::CLIENT_CLOSED).expect("499 is a valid status code")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn every_error_has_a_json_body_with_the_request_id() {
        let id = HeaderValue::from_static("req-1");
        let cases = [
            (
                ProxyError::BadPath(PathError::AboveRoot),
                400,
                "bad_request",
            ),
            (ProxyError::NoRoute, 404, "no_route"),
            (ProxyError::NotReady, 404, "no_route"),
            (
                ProxyError::BodyTooLarge { limit: 10 },
                413,
                "body_too_large",
            ),
            (
                ProxyError::HeadersTooLarge { limit: 10 },
                431,
                "headers_too_large",
            ),
            (
                ProxyError::UpstreamUnavailable {
                    kind: UpstreamErrorKind::Connect,
                },
                502,
                "upstream_unavailable",
            ),
            (
                ProxyError::UpstreamTimeout(std::time::Duration::from_secs(1)),
                504,
                "upstream_timeout",
            ),
            (ProxyError::Overloaded, 503, "overloaded"),
            (ProxyError::Forbidden, 403, "forbidden"),
            (
                ProxyError::Redirect(crate::config::Redirect {
                    location: HeaderValue::from_static("https://new.example.com/"),
                    status: StatusCode::PERMANENT_REDIRECT,
                }),
                308,
                "redirect",
            ),
        ];
        for (err, status, code) in cases {
            let retry = matches!(err, ProxyError::Overloaded);
            let resp = err.into_response(&id);
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers()["x-request-id"], "req-1");
            assert_eq!(resp.headers()["content-type"], "application/json");
            assert_eq!(resp.headers().contains_key("retry-after"), retry);
            assert_eq!(resp.headers().contains_key("location"), status == 308);
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["error"], code);
            assert_eq!(v["request_id"], "req-1");
            assert!(!v["message"].as_str().unwrap().is_empty());
        }
    }
}
