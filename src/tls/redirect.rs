//! `listen.redirect_to_https`: the plain listener answers every request with
//! `308 Permanent Redirect` to the same host and target on the HTTPS
//! listener. 308 (not 301) so that clients repeat the method and body.
//! The request still gets its `x-request-id`, an access-log line and
//! metrics under `route="none"`.

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::observability::metrics::{Metrics, NO_ROUTE, RouteMetrics};
use crate::proxy::body::GatewayBody;
use crate::proxy::exchange::{self, Exchange};
use crate::proxy::request_id;
use crate::server::{ConnInfo, Service};

/// The redirecting service for the plain listener.
pub struct HttpsRedirect {
    /// `:8443`, or empty for 443, appended to the host in `Location`.
    port_suffix: String,
    metrics: RouteMetrics,
}

impl HttpsRedirect {
    /// Redirects to `https_port` (omitted from `Location` when 443).
    pub fn new(https_port: u16, metrics: &Metrics) -> Self {
        HttpsRedirect {
            port_suffix: if https_port == 443 {
                String::new()
            } else {
                format!(":{https_port}")
            },
            metrics: metrics.route(crate::config::DEFAULT_HOST_LABEL, NO_ROUTE),
        }
    }

    /// `https://{host}{:port}{path?query}`. The host comes from the request
    /// target's authority (absolute form, HTTP/2), else `Host`, without its
    /// port. A request without a usable host (HTTP/1.0, or a `Host` that is
    /// not a valid authority) is sent to the address it reached, so a
    /// malformed `Host` is never reflected into `Location`.
    pub fn location(&self, req: &http::request::Parts, conn: &ConnInfo) -> HeaderValue {
        let from_header = || {
            req.headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<Authority>().ok())
        };
        let authority = req.uri.authority().cloned().or_else(from_header);
        let host = match &authority {
            Some(a) if !a.host().is_empty() => a.host().to_owned(),
            _ => match conn.local.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            },
        };
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let target = if target.starts_with('/') { target } else { "/" };
        let location = format!("https://{host}{}{target}", self.port_suffix);
        // Every part came from a parsed URI or authority, so this holds.
        HeaderValue::from_str(&location).unwrap_or_else(|_| HeaderValue::from_static("/"))
    }
}

impl Service for HttpsRedirect {
    async fn call(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<GatewayBody> {
        let started = Instant::now();
        // The body is never read: hyper drains or closes as needed.
        let (mut parts, _body) = req.into_parts();
        let request_id = request_id::assign(&mut parts.headers);
        let mut x = Box::new(Exchange::new(
            started,
            request_id.clone(),
            parts.method.clone(),
            exchange::log_path(parts.uri.path()),
            self.metrics.clone(),
            conn.peer.ip(),
            parts.version,
            parts.headers.get(header::USER_AGENT).cloned(),
        ));
        let mut resp = Response::new(GatewayBody::empty());
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        let h = resp.headers_mut();
        h.insert(header::LOCATION, self.location(&parts, &conn));
        h.insert(request_id::X_REQUEST_ID.clone(), request_id);
        x.status = StatusCode::PERMANENT_REDIRECT.as_u16();
        resp.body_mut().attach(x);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ListenerKind;

    fn conn() -> ConnInfo {
        let peer = "10.0.0.9:5555".parse().unwrap();
        ConnInfo {
            peer,
            peer_text: ConnInfo::peer_text(peer),
            local: "10.0.0.1:8080".parse().unwrap(),
            listener: ListenerKind::Http,
            tls: false,
            tls_names: None,
        }
    }

    fn location(port: u16, target: &str, host: Option<&str>) -> String {
        let mut b = Request::get(target);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        let r = HttpsRedirect::new(port, &Metrics::new());
        r.location(&parts, &conn()).to_str().unwrap().to_owned()
    }

    #[test]
    fn same_host_and_target_on_the_https_port() {
        let cases: &[(u16, &str, Option<&str>, &str)] = &[
            (
                8443,
                "/a/b?x=1&y",
                Some("example.com:8080"),
                "https://example.com:8443/a/b?x=1&y",
            ),
            (443, "/a", Some("example.com"), "https://example.com/a"),
            (443, "/", Some("[::1]:8080"), "https://[::1]/"),
            (
                8443,
                "/p",
                Some("127.0.0.1:8080"),
                "https://127.0.0.1:8443/p",
            ),
            // Absolute form: the target's authority wins over Host (RFC 9112 §3.2.2).
            (
                443,
                "http://api.example.com/x?q",
                Some("other"),
                "https://api.example.com/x?q",
            ),
            // No usable Host: the address the request reached, never the junk.
            (443, "/x", None, "https://10.0.0.1/x"),
            (443, "/x", Some("evil.com/path"), "https://10.0.0.1/x"),
            (443, "/x", Some("a b"), "https://10.0.0.1/x"),
        ];
        for (port, target, host, want) in cases {
            assert_eq!(location(*port, target, *host), *want, "{target} {host:?}");
        }
    }
}
