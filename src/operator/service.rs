//! The operator listener's service: `GET /healthz`, `/livez`, `/readyz`,
//! `/metrics` and `/routes`. Each request goes through the same steps, in
//! order:
//!
//! 1. the TCP peer against `operator.allow` (403, empty body, otherwise);
//! 2. the endpoint, by exact path (404 otherwise);
//! 3. the method: `GET` or `HEAD` (405 otherwise);
//! 4. for `/metrics` and `/routes`, the bearer token when `token_file` is
//!    set (401 otherwise) — probes never need it, so kubelets can call them;
//! 5. the answer.
//!
//! Operator requests are not counted in `portico_requests_total`: that
//! family describes public traffic, and scrapes and probes would drown it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::config::OperatorSettings;
use crate::observability::metrics::Metrics;
use crate::proxy::body::GatewayBody;
use crate::routing::live::LiveRoutes;
use crate::server::{ConnInfo, Service};

use super::access::{AllowList, TokenCheck, TokenFile};

/// The gateway state the operator endpoints report on.
#[derive(Clone)]
pub struct OperatorState {
    /// The live route table and its load status (`/readyz`, `/routes`).
    pub live: Arc<LiveRoutes>,
    /// Everything `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// Set once shutdown begins (SIGTERM), so `/readyz` turns 503 at once
    /// and Kubernetes stops sending new traffic during the drain.
    pub draining: Arc<AtomicBool>,
}

/// The operator listener's [`Service`].
pub struct Operator {
    allow: AllowList,
    /// `Some` when `operator.token_file` is set.
    token: Option<TokenFile>,
    state: OperatorState,
}

/// The endpoints, so that path matching happens in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Livez,
    Readyz,
    Metrics,
    Routes,
}

impl Endpoint {
    /// Exact paths only: the operator listener has no routing to confuse,
    /// and a scraper that asks for `/metrics/` has a typo worth seeing.
    fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/healthz" => Endpoint::Healthz,
            "/livez" => Endpoint::Livez,
            "/readyz" => Endpoint::Readyz,
            "/metrics" => Endpoint::Metrics,
            "/routes" => Endpoint::Routes,
            _ => return None,
        })
    }

    /// Probes stay open to every allowed peer so kubelets need no secret.
    fn needs_token(self) -> bool {
        match self {
            Endpoint::Healthz | Endpoint::Livez | Endpoint::Readyz => false,
            Endpoint::Metrics | Endpoint::Routes => true,
        }
    }
}

impl Operator {
    pub fn new(settings: &OperatorSettings, state: OperatorState) -> Self {
        let token = settings.token_file.clone().map(TokenFile::new);
        if let Some(t) = &token
            && let Err(e) = std::fs::metadata(t.path())
        {
            // Not fatal: the Secret may be mounted later. Fail-closed until then.
            tracing::error!(file = %t.path().display(), error = %e, "operator.token_file is not readable; /metrics and /routes answer 401 until it is");
        }
        Operator {
            allow: AllowList::new(settings.allow.clone()),
            token,
            state,
        }
    }

    /// Answers one operator request. Never fails: every outcome is a response.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<GatewayBody> {
        // The TCP peer and nothing else decides; headers are not even read.
        if !self.allow.allows(conn.peer.ip()) {
            tracing::debug!(peer = %conn.peer, path = %req.uri().path(), "operator request from a peer outside operator.allow");
            return forbidden(req.version());
        }
        let Some(endpoint) = Endpoint::from_path(req.uri().path()) else {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"}));
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method_not_allowed"}),
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        if endpoint.needs_token()
            && let Some(token) = &self.token
        {
            match token.check(req.headers()).await {
                TokenCheck::Granted => {}
                check => {
                    tracing::debug!(peer = %conn.peer, path = %req.uri().path(), result = ?check, "operator request without a valid bearer token");
                    return unauthorized(check);
                }
            }
        }
        match endpoint {
            Endpoint::Healthz | Endpoint::Livez => {
                json_response(StatusCode::OK, &json!({"status": "ok"}))
            }
            Endpoint::Readyz => self.readyz(),
            Endpoint::Metrics => self.metrics(),
            Endpoint::Routes => self.routes(),
        }
    }

    /// 200 only with a valid route table and no drain in progress.
    fn readyz(&self) -> Response<GatewayBody> {
        let reason = if self.state.draining.load(Ordering::Acquire) {
            Some("draining")
        } else if !self.state.live.is_loaded() {
            Some("no_route_table")
        } else {
            None
        };
        match reason {
            None => json_response(StatusCode::OK, &json!({"status": "ok"})),
            Some(reason) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "unavailable", "reason": reason}),
            ),
        }
    }

    fn metrics(&self) -> Response<GatewayBody> {
        self.endpoint_gauges();
        let mut resp = Response::new(GatewayBody::full(self.state.metrics.render()));
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus::TEXT_FORMAT),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// `portico_upstream_endpoints{host,route,state}`, set at scrape time
    /// (re-admitting backends whose ejection ran out), for the routes of
    /// the live table with more than one backend: a single backend is never
    /// ejected. Routes gone in a reload drop out of the series.
    fn endpoint_gauges(&self) {
        let gauges = &self.state.metrics.upstream_endpoints;
        gauges.reset();
        let table = self.state.live.current();
        for r in table.routes().filter(|r| r.upstream.endpoints.len() > 1) {
            let ejected = r.upstream.endpoints.refresh();
            let healthy = r.upstream.endpoints.len() - ejected;
            let (host, route) = (r.metrics.host(), &*r.label);
            gauges
                .with_label_values(&[host, route, "healthy"])
                .set(healthy as i64);
            gauges
                .with_label_values(&[host, route, "ejected"])
                .set(ejected as i64);
        }
    }

    /// The live table as JSON, with its generation, the route file's
    /// SHA-256, when it was loaded, and the last failed reload, if any.
    fn routes(&self) -> Response<GatewayBody> {
        let live = &self.state.live;
        let (table, generation, status) = live.snapshot();
        let routes: Vec<Value> = table
            .routes()
            .map(|r| {
                let backends: Vec<String> = r
                    .spec
                    .backends
                    .iter()
                    .map(|b| format!("{}://{}", b.scheme(), b.authority))
                    .collect();
                r.upstream.endpoints.refresh();
                let endpoints: Vec<Value> = r
                    .upstream
                    .endpoints
                    .snapshot()
                    .iter()
                    .map(|e| {
                        let out = e.ejected_for();
                        json!({
                            "backend": e.backend.to_string(),
                            "state": if out.is_some() { "ejected" } else { "healthy" },
                            "inflight": e.inflight(),
                            "pending": e.pending(),
                            "ejected_for_ms": out.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        })
                    })
                    .collect();
                let (prefix, exact) = if r.spec.exact {
                    (None, Some(&r.spec.path))
                } else {
                    (Some(&r.spec.path), None)
                };
                json!({
                    // null: the default table (routes without host).
                    "host": r.spec.host.as_ref().map(ToString::to_string),
                    "prefix": prefix,
                    "exact": exact,
                    // The `route` label of metrics and the access log.
                    "route": &*r.label,
                    "backends": backends,
                    "endpoints": endpoints,
                    "balance": r.spec.balance.describe(),
                    "retries": r.spec.retries,
                    "retry_on": &r.spec.retry_on,
                    "retry_buffer": r.spec.retry_buffer,
                    "circuit_breaker": {
                        "max_connections": r.spec.breaker.max_connections,
                        "max_pending": r.spec.breaker.max_pending,
                    },
                    "strip_prefix": r.spec.strip_prefix,
                    // The effective timeout: the route's own or the default.
                    "timeout_ms": u64::try_from(r.timeout.as_millis()).unwrap_or(u64::MAX),
                    "max_inflight": r.spec.max_inflight,
                    // null: no canary. Its backends, and the share of
                    // public traffic it gets (0: operators only).
                    "canary": r.canary.as_ref().map(|c| json!({
                        "backends": c.route.spec.backends.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "weight": c.weight,
                        "sticky": c.sticky.as_ref().map(|_| "cookie"),
                    })),
                    "owner": r.spec.owner,
                    "shared": r.spec.shared,
                    // Empty: every peer. The route's own body cap, the
                    // Host its backends get, its redirect (null: none).
                    "allow_from": r.spec.allow_from.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "max_body_size": r.spec.max_body_size,
                    "host_header": r.spec.host_header.as_ref().and_then(|h| h.to_str().ok()),
                    "https_redirect": r.spec.https_redirect,
                    "redirect": r.spec.redirect.as_ref().map(|rd| json!({
                        "to": rd.location.to_str().unwrap_or_default(),
                        "status": rd.status.as_u16(),
                    })),
                })
            })
            .collect();
        let body = json!({
            "generation": generation,
            "sha256": status.sha256,
            "loaded_at": status.loaded_at.map(rfc3339),
            "last_error": status.last_error,
            "last_error_at": status.last_error_at.map(rfc3339),
            "routes": routes,
        });
        json_response(StatusCode::OK, &body)
    }
}

impl Service for Operator {
    async fn call(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<GatewayBody> {
        self.handle(req, conn).await
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn json_response(status: StatusCode, body: &Value) -> Response<GatewayBody> {
    let mut text = body.to_string();
    text.push('\n');
    let mut resp = Response::new(GatewayBody::full(text));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// 403 and nothing else: no body, no hint of what is behind the door. Over
/// HTTP/1 the connection is closed too, so a refused peer keeps nothing open.
fn forbidden(version: Version) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::empty());
    *resp.status_mut() = StatusCode::FORBIDDEN;
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// 401 with the RFC 6750 challenge. An unreadable token file looks exactly
/// like a missing token to the client; the operator sees the error in the log.
fn unauthorized(check: TokenCheck) -> Response<GatewayBody> {
    let challenge = match check {
        TokenCheck::Wrong => r#"Bearer realm="portico", error="invalid_token""#,
        TokenCheck::Missing | TokenCheck::Unavailable | TokenCheck::Granted => {
            r#"Bearer realm="portico""#
        }
    };
    let mut resp = json_response(StatusCode::UNAUTHORIZED, &json!({"error": "unauthorized"}));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_match_exact_paths_only() {
        let cases = [
            ("/healthz", Some(Endpoint::Healthz)),
            ("/livez", Some(Endpoint::Livez)),
            ("/readyz", Some(Endpoint::Readyz)),
            ("/metrics", Some(Endpoint::Metrics)),
            ("/routes", Some(Endpoint::Routes)),
            ("/metrics/", None),
            ("/metricsx", None),
            ("/", None),
            ("/Healthz", None),
        ];
        for (path, want) in cases {
            assert_eq!(Endpoint::from_path(path), want, "{path}");
        }
    }

    #[test]
    fn only_scrape_endpoints_need_the_token() {
        assert!(!Endpoint::Healthz.needs_token());
        assert!(!Endpoint::Livez.needs_token());
        assert!(!Endpoint::Readyz.needs_token());
        assert!(Endpoint::Metrics.needs_token());
        assert!(Endpoint::Routes.needs_token());
    }
}
