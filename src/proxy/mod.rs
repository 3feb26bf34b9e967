//! The public request path. [`Gateway::handle`] reads top to bottom in the
//! order of DESIGN.md §"Request path": request id, header size, path
//! normalization, reserved operator paths, route lookup, the route's own
//! answers (allow-list, redirects), in-flight limits, header rewriting,
//! upstream exchange, response.

pub mod body;
pub mod discovery;
pub mod dns;
pub mod endpoints;
pub mod error;
pub mod exchange;
pub mod grpc;
pub mod h1;
pub mod headers;
pub mod http2;
pub mod limits;
pub mod request_id;
pub mod retry;
pub mod trace;
pub mod upstream;
pub mod websocket;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use crate::lifecycle::drain::{InflightEntry, InflightRegistry};
use crate::observability::metrics::{Metrics, RouteMetrics, UpstreamErrorKind};
use crate::observability::otlp::Spans;
use crate::routing::canary::{self, CanaryGate};
use crate::routing::live::LiveRoutes;
use crate::routing::table::Route;
use crate::routing::{path, reserved};
use crate::server::{ConnInfo, Service};

use body::{GatewayBody, RequestBody, UpstreamBody};
use endpoints::{Endpoint, Outcome};
pub use error::ProxyError;
use exchange::Exchange;
use headers::Forwarded;
use limits::InflightLimit;
use retry::RetryReason;
use upstream::{Outgoing, SendError, UpstreamError};

/// An error of any kind, boxed: what bodies and upstream failures carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether the connection's TCP peer is inside one of `nets` (a
/// v4-mapped IPv6 peer is read as its IPv4 address).
/// The limits the request path enforces itself.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// `limits.upgrade_idle_timeout`, for WebSockets over HTTP/2 (those
    /// over HTTP/1.1 are timed by their connection).
    pub upgrade_idle_timeout: std::time::Duration,
}

/// The public-listener service.
pub struct Gateway {
    live: Arc<LiveRoutes>,
    /// Handles for the `route="none"` label, resolved once.
    none_metrics: RouteMetrics,
    limits: RequestLimits,
    /// Gateway-wide in-flight ceiling (`limits.max_inflight`).
    inflight: InflightLimit,
    /// Requests in flight, listed so that shutdown can name the unfinished.
    registry: InflightRegistry,
    /// Span export (`tracing.otlp`), when on.
    spans: Option<Spans>,
    /// Who reaches a route's canary (operator peers and token, the sticky
    /// cookie key).
    canary: CanaryGate,
    /// Where a route's `https_redirect` sends plain requests: the HTTPS
    /// listener, when the gateway has one.
    https_redirect: Option<crate::tls::redirect::HttpsRedirect>,
}

impl Gateway {
    pub fn new(
        live: Arc<LiveRoutes>,
        metrics: &Metrics,
        limits: RequestLimits,
        max_inflight: usize,
        registry: InflightRegistry,
        spans: Option<Spans>,
        canary: CanaryGate,
    ) -> Self {
        Gateway {
            live,
            none_metrics: metrics.route(
                crate::config::DEFAULT_HOST_LABEL,
                crate::observability::metrics::NO_ROUTE,
            ),
            limits,
            inflight: InflightLimit::new(max_inflight, Some(metrics.inflight.clone())),
            registry,
            spans,
            canary,
            https_redirect: None,
        }
    }

    /// Routes with `https_redirect: true` send plain requests to this
    /// HTTPS listener's port.
    pub fn with_https_redirect(mut self, to: crate::tls::redirect::HttpsRedirect) -> Self {
        self.https_redirect = Some(to);
        self
    }

    /// The answer a route gives without a backend, decided before limits,
    /// canary and backend: `403` for a TCP peer outside its `allow_from`
    /// (the peer address only, never a header), its `redirect:`, or `308`
    /// to the HTTPS listener for a plain request to an `https_redirect`
    /// route. Each is read from the route as built; a route without them
    /// pays one branch for each.
    #[inline]
    fn route_answer(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        conn: &ConnInfo,
    ) -> Option<ProxyError> {
        let spec = &route.spec;
        if !spec.allow_from.is_empty()
            && !crate::operator::access::allows(&spec.allow_from, conn.peer.ip())
        {
            return Some(ProxyError::Forbidden);
        }
        if let Some(r) = &spec.redirect {
            return Some(ProxyError::Redirect(r.clone()));
        }
        if spec.https_redirect
            && !conn.tls
            && let Some(to) = &self.https_redirect
        {
            return Some(ProxyError::Redirect(crate::config::Redirect {
                location: to.location(parts, conn),
                status: StatusCode::PERMANENT_REDIRECT,
            }));
        }
        None
    }

    /// Answers one request. Never fails: every error becomes a response.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<GatewayBody> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        // Room for what the gateway adds (request id, trace context,
        // x-forwarded-*): one resize of the map instead of one per doubling.
        parts.headers.reserve(ADDED_HEADERS);
        let request_id = request_id::assign(&mut parts.headers);
        let trace =
            trace::continue_or_start(&mut parts.headers, self.spans.as_ref().map(|s| s.sampler));
        let mut x = Box::new(Exchange::new(
            started,
            request_id.clone(),
            parts.method.clone(),
            exchange::no_path(),
            self.none_metrics.clone(),
            conn.peer.ip(),
            parts.version,
            parts.headers.get(header::USER_AGENT).cloned(),
        ));
        x.trace = Some(trace);
        if let Some(spans) = &self.spans
            && trace.sampled()
        {
            x.spans = Some(spans.queue.clone());
        }
        let grpc = grpc::is_grpc(&parts.headers);
        // A WebSocket over HTTP/2 (extended CONNECT) goes to the backend as
        // an HTTP/1.1 upgrade; the client's stream is spliced with it.
        let h2_websocket = websocket::from_extended_connect(&mut parts);
        // Portico's own failure of a gRPC call is answered in gRPC's terms;
        // logs and metrics keep the HTTP status it stands for.
        let mut logged_status = None;
        let mut resp = match self.proxy(&mut x, parts, body, &conn).await {
            Ok(upstream) if upstream.status() == StatusCode::SWITCHING_PROTOCOLS => {
                match switch_protocols(&mut x, upstream, &request_id) {
                    Ok((resp, backend)) => {
                        return match h2_websocket {
                            Some(client) => websocket::over_h2(
                                resp,
                                backend,
                                x,
                                client,
                                self.limits.upgrade_idle_timeout,
                            ),
                            None => upgrading(resp, backend, x),
                        };
                    }
                    Err(e) => e.into_response(&request_id),
                }
            }
            Ok(upstream) => {
                let (mut head, body) = upstream.into_parts();
                // The client's protocol, not the backend's: an HTTP/1.0
                // backend must not turn the answer to an HTTP/1.1 client
                // into HTTP/1.0 (hyper still answers 1.0 to 1.0 clients).
                head.version = Version::HTTP_11;
                headers::strip_hop_by_hop(&mut head.headers);
                head.headers
                    .insert(request_id::X_REQUEST_ID.clone(), request_id);
                if let Some(cookie) = x.set_cookie.take() {
                    head.headers.append(header::SET_COOKIE, cookie);
                }
                Response::from_parts(head, GatewayBody::upstream(body))
            }
            Err(e) if grpc => {
                let status = e.status_and_code().0;
                logged_status = Some(status);
                grpc::response(status, &e.to_string(), &request_id)
            }
            Err(e) => e.into_response(&request_id),
        };
        // A body refused before it was read is not read at all: hyper then
        // closes the connection, so say so, or an HTTP/1.1 client puts it
        // back in its pool and its next request fails on a dead socket.
        if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && x.version < Version::HTTP_2 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        x.status = logged_status.unwrap_or(resp.status()).as_u16();
        resp.body_mut().attach(x);
        resp
    }

    async fn proxy(
        &self,
        x: &mut Exchange,
        mut parts: http::request::Parts,
        body: Incoming,
        conn: &ConnInfo,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        // From here on only the normalized path is used, and it is what the
        // backend receives. A request refused before it has one is logged
        // with its raw path, capped.
        x.path = match self.checked_path(&parts) {
            Ok(p) => p,
            Err(e) => {
                x.path = exchange::log_path(parts.uri.path());
                return Err(e);
            }
        };
        let path = &*x.path;
        // Matching reads the path as servlet containers do: each segment cut
        // at its first ';' (routing::path, "Path parameters").
        let matching = path::without_params(path);

        // Operator paths are never public, whatever the route table says.
        if reserved::is_reserved(&matching) {
            return Err(ProxyError::NoRoute);
        }

        if !self.live.is_loaded() {
            return Err(ProxyError::NotReady);
        }
        // The host the client asked for: `Host`, or HTTP/2's `:authority`
        // (check_head has made sure the two agree when both are present).
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        x.host = host.clone();
        let host_str = host.as_ref().and_then(|h| h.to_str().ok());
        if let Some(names) = &conn.tls_names
            && misdirected(names, host_str)
        {
            return Err(ProxyError::Misdirected);
        }
        let table = self.live.current();
        let selected = table.select(host_str, &matching);
        let Some(route): Option<Arc<Route>> = selected.route.cloned() else {
            x.metrics = selected.miss.clone();
            return Err(ProxyError::NoRoute);
        };
        // What the route answers itself: its allow-list, its redirects.
        if let Some(answer) = self.route_answer(&route, &parts, conn) {
            x.metrics = route.metrics.clone();
            return Err(answer);
        }
        // Stable or canary; the canary's signals never go upstream.
        let (route, cookie) = self.canary(route, &mut parts.headers, conn).await;
        x.set_cookie = cookie;
        x.metrics = route.metrics.clone();

        // Shed load at once rather than queue behind a slow upstream.
        let global = self.inflight.try_acquire().ok_or(ProxyError::Overloaded)?;
        let local = match &route.limit {
            Some(l) => Some(l.try_acquire().ok_or(ProxyError::Overloaded)?),
            None => None,
        };
        x.permits = [Some(global), local];
        x.tracked = Some(self.registry.track(InflightEntry {
            request_id: x.request_id.clone(),
            method: x.method.clone(),
            path: x.path.clone(),
            started: x.started,
        }));

        // The route's own `max_body_size`, or the gateway's.
        let limit = route
            .spec
            .max_body_size
            .unwrap_or(self.limits.max_body_bytes);
        if let Some(len) = content_length(&parts.headers)
            && len > limit
        {
            return Err(ProxyError::BodyTooLarge { limit });
        }

        let upstream_path = route.upstream_path(path);
        // Origin form (path and query): each try adds its backend.
        parts.uri = Uri::from(path_and_query(&parts.uri, upstream_path));

        // An HTTP/1.1 upgrade (WebSocket): `Upgrade` and `Connection:
        // upgrade` go upstream for it, and only for it.
        let upgrade = headers::upgrade_requested(&parts);
        // gRPC servers want `te: trailers`, hop-by-hop as it is: kept for
        // HTTP/2 backends when the client sent it.
        let te_trailers = parts.headers.get(header::TE).is_some_and(|v| {
            v.as_bytes()
                .windows(8)
                .any(|w| w.eq_ignore_ascii_case(b"trailers"))
        });
        // A gRPC deadline from the client, capped by the route's timeout.
        let deadline =
            grpc::timeout(&parts.headers).map_or(route.timeout, |t| t.min(route.timeout));
        headers::strip_hop_by_hop(&mut parts.headers);
        if te_trailers && route.upstream.http2 {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(protocol) = &upgrade {
            parts.headers.insert(header::UPGRADE, protocol.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            x.upgrade = true;
        }
        if let Some(vhost) = &route.spec.host_header {
            // The backend serves one virtual host; x-forwarded-host below
            // still names the client's.
            parts.headers.insert(header::HOST, vhost.clone());
        } else if let Some(h) = &host
            && !parts.headers.contains_key(header::HOST)
        {
            parts.headers.insert(header::HOST, h.clone());
        }
        headers::add_forwarded(
            &mut parts.headers,
            &Forwarded {
                peer: &conn.peer_text,
                proto: if conn.tls {
                    &headers::PROTO_HTTPS
                } else {
                    &headers::PROTO_HTTP
                },
                host: host.as_ref(),
            },
        );
        parts.version = Version::HTTP_11;
        let up = &route.upstream;
        up.budget.request(x.started.into_std());
        // An idempotent request can be sent again after a backend saw it
        // (reset, retry_on status) if its body is kept: none, or a small one
        // read ahead in full (retry_buffer). Only worth it when there is
        // another backend to send it to.
        let replayable = upgrade.is_none()
            && up.retries > 0
            && up.endpoints.len() > 1
            && retry::idempotent(&parts.method, &parts.headers);
        let (body, replay) = if !replayable {
            (RequestBody::new(body, limit), None)
        } else if body.is_end_stream() {
            (
                RequestBody::new(body, limit),
                Some(Replay::of(&parts, None)),
            )
        } else if let Some(len) = content_length(&parts.headers)
            && len <= up.retry_buffer
        {
            // Boxed, as every branch off the common path below: an async
            // fn's state is as large as its largest await, and each level
            // of the request path moves its callee's state once.
            let bytes = Box::pin(read_ahead(body, route.timeout)).await?;
            let replay = Replay::of(&parts, Some(bytes.clone()));
            (RequestBody::full(bytes), Some(replay))
        } else {
            (RequestBody::new(body, limit), None)
        };
        let req = Box::new(Request::from_parts(parts, body));

        let mut last = None;
        // Timed only for a span: the clock is read twice more per request.
        let upstream_started = x.spans.is_some().then(Instant::now);
        let result =
            tokio::time::timeout(deadline, self.exchange(&route, x, req, replay, &mut last)).await;
        if let Some(at) = upstream_started {
            x.upstream_phase = Some((at - x.started, at.elapsed()));
        }
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(UpstreamError::Failed { kind, source })) => {
                route.metrics.upstream_error(kind);
                tracing::warn!(
                    request_id = %x.request_id.to_str().unwrap_or_default(),
                    route = %route.spec.name(),
                    upstream = %x.upstream.as_deref().unwrap_or_default(),
                    tries = x.tries,
                    kind = kind.as_str(),
                    error = %error_chain(&*source),
                    "upstream request failed"
                );
                Err(ProxyError::UpstreamUnavailable { kind })
            }
            Ok(Err(UpstreamError::BodyTooLarge { limit })) => {
                Err(ProxyError::BodyTooLarge { limit })
            }
            Ok(Err(UpstreamError::ClientAborted)) => Err(ProxyError::ClientClosed),
            Ok(Err(UpstreamError::Overloaded { .. })) => Err(ProxyError::Overloaded),
            Err(_elapsed) => {
                route.metrics.upstream_error(UpstreamErrorKind::Timeout);
                if let Some(e) = &last
                    && up.endpoints.report(e, Outcome::Failure)
                {
                    route.metrics.ejected();
                }
                tracing::warn!(
                    request_id = %x.request_id.to_str().unwrap_or_default(),
                    route = %route.spec.name(),
                    upstream = %x.upstream.as_deref().unwrap_or_default(),
                    tries = x.tries,
                    timeout_ms = deadline.as_millis() as u64,
                    "upstream timeout"
                );
                Err(ProxyError::UpstreamTimeout(deadline))
            }
        }
    }

    /// Tries `req` on the route's backends until one answers, a failure
    /// may not be retried, or the retries or their budget run out. `last`
    /// is the backend of the try in progress (for a timeout).
    async fn exchange(
        &self,
        route: &Route,
        x: &mut Exchange,
        mut req: Outgoing,
        replay: Option<Box<Replay>>,
        last: &mut Option<Arc<Endpoint>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let up = &route.upstream;
        let eps = &up.endpoints;
        // One version of the endpoints for all of this request's tries.
        let set = eps.snapshot();
        // Backends picked so far (tries, and backends that were full).
        let mut tried = [usize::MAX; MAX_PICKS];
        let mut picks = 0;
        loop {
            let i = eps.pick(&set, req.headers(), &tried[..picks]);
            let endpoint = &set[i];
            if picks < MAX_PICKS {
                tried[picks] = i;
                picks += 1;
            }
            let guard = match eps.start(endpoint).await {
                Ok(guard) => guard,
                Err(limit) => {
                    // Full (circuit breaker): nothing was sent, so another
                    // backend with room may take it; else 503 at once.
                    route.metrics.circuit_open(limit.as_str());
                    if picks < MAX_PICKS && (0..set.len()).any(|j| !tried[..picks].contains(&j)) {
                        continue;
                    }
                    return Err(UpstreamError::Overloaded { limit });
                }
            };
            x.upstream = Some(endpoint.backend.label.clone());
            x.tries += 1;
            *last = Some(endpoint.clone());
            let sent = if x.upgrade {
                // Its own connection, never retried: the backend may have
                // switched protocols already.
                Box::pin(up.client.upgrade(&endpoint.backend, req))
                    .await
                    .map_err(|error| SendError {
                        error,
                        unsent: None,
                    })
            } else if endpoint.backend.h2 {
                // Boxed: its state is three times that of `send`, and every
                // request would carry (and move) it.
                Box::pin(up.client.send_h2(&endpoint.backend, req)).await
            } else {
                let read_ahead = if x.version == Version::HTTP_2 {
                    upstream::ReadAhead::Stream
                } else {
                    upstream::ReadAhead::Full
                };
                up.client.send(&endpoint.backend, req, read_ahead).await
            };
            let (error, next) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let failed = status.is_server_error();
                    let outcome = if failed {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    if eps.report(endpoint, outcome) {
                        route.metrics.ejected();
                    }
                    match &replay {
                        Some(r) if failed && up.retry_on.contains(&status.as_u16()) => {
                            // Tried again only if allowed; else this answer stands.
                            if self.may_retry(route, x, RetryReason::Status) {
                                req = Box::new(r.request());
                                tokio::time::sleep(retry::backoff(u32::from(x.tries))).await;
                                continue;
                            }
                            x.endpoint = Some(guard);
                            return Ok(resp);
                        }
                        _ => {
                            x.endpoint = Some(guard);
                            return Ok(resp);
                        }
                    }
                }
                Err(SendError { error, unsent }) => {
                    let failed = matches!(error, UpstreamError::Failed { .. });
                    if failed && eps.report(endpoint, Outcome::Failure) {
                        route.metrics.ejected();
                    }
                    let next = match (unsent, &error, &replay) {
                        // Never written: safe whatever the method or body.
                        (Some(r), UpstreamError::Failed { .. }, _) => {
                            Some((r, RetryReason::Connect))
                        }
                        // Written, then the connection broke before an answer.
                        (
                            None,
                            UpstreamError::Failed {
                                kind: UpstreamErrorKind::Reset,
                                ..
                            },
                            Some(copy),
                        ) => Some((Box::new(copy.request()), RetryReason::Reset)),
                        _ => None,
                    };
                    (error, next)
                }
            };
            match next {
                Some((again, reason)) if self.may_retry(route, x, reason) => {
                    if let UpstreamError::Failed { kind, source } = &error {
                        tracing::debug!(
                            request_id = %x.request_id.to_str().unwrap_or_default(),
                            upstream = %x.upstream.as_deref().unwrap_or_default(),
                            kind = kind.as_str(),
                            error = %error_chain(&**source),
                            "upstream try failed; trying another backend"
                        );
                    }
                    req = again;
                    tokio::time::sleep(retry::backoff(u32::from(x.tries))).await;
                }
                _ => return Err(error),
            }
        }
    }

    /// Whether this request may be tried once more: tries left, and the
    /// route's retry budget allows (counted either way).
    fn may_retry(&self, route: &Route, x: &Exchange, reason: RetryReason) -> bool {
        let up = &route.upstream;
        if u32::from(x.tries) > up.retries {
            return false;
        }
        if !up.budget.try_retry() {
            route.metrics.retry_refused();
            return false;
        }
        route.metrics.retried(reason.as_str());
        true
    }
}

/// The client's `101` for a backend's, and the backend's side of the
/// upgrade: only for a request that asked to upgrade (a `101` to any other
/// is the smuggling class of bug, refused with 502), with the backend's
/// `Upgrade` and `Connection: upgrade`.
fn switch_protocols(
    x: &mut Exchange,
    mut upstream: Response<UpstreamBody>,
    request_id: &HeaderValue,
) -> Result<(Response<GatewayBody>, hyper::upgrade::OnUpgrade), ProxyError> {
    let protocol = upstream.headers().get(header::UPGRADE).cloned();
    let Some(protocol) = protocol.filter(|_| x.upgrade) else {
        tracing::warn!(
            request_id = %request_id.to_str().unwrap_or_default(),
            upstream = %x.upstream.as_deref().unwrap_or_default(),
            asked = x.upgrade,
            "backend switched protocols unasked (or without Upgrade); refused"
        );
        x.metrics.upstream_error(UpstreamErrorKind::Protocol);
        return Err(ProxyError::UpstreamUnavailable {
            kind: UpstreamErrorKind::Protocol,
        });
    };
    let backend = hyper::upgrade::on(&mut upstream);
    let (mut head, _) = upstream.into_parts();
    head.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut head.headers);
    head.headers.insert(header::UPGRADE, protocol);
    head.headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    head.headers
        .insert(request_id::X_REQUEST_ID.clone(), request_id.clone());
    Ok((Response::from_parts(head, GatewayBody::empty()), backend))
}

/// Hands the `101` to its connection with what to do when the upgraded
/// stream ends: the request is logged and counted then, with the bytes
/// both ways, as one request.
fn upgrading(
    mut resp: Response<GatewayBody>,
    backend: hyper::upgrade::OnUpgrade,
    mut x: Box<Exchange>,
) -> Response<GatewayBody> {
    x.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
    x.outlive_request();
    let open = x.metrics.upgrades_open();
    open.inc();
    let done = Box::new(move |from_client: u64, to_client: u64| {
        open.dec();
        x.bytes_in = Some(from_client);
        x.bytes_out = to_client;
        x.finish(true);
    });
    resp.extensions_mut()
        .insert(crate::server::UpgradeSlot::new(crate::server::Upgrade {
            backend,
            done: Some(done),
        }));
    resp
}

/// Request headers the gateway may add on the way upstream.
const ADDED_HEADERS: usize = 6;

/// Backends one request may be offered to: the first try, at most 5
/// retries, and backends passed over because they were full.
const MAX_PICKS: usize = 16;

/// Reads a small request body in full (`retry_buffer`), within `limit`.
async fn read_ahead(body: Incoming, limit: std::time::Duration) -> Result<Bytes, ProxyError> {
    use http_body_util::BodyExt;
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        // The client broke off or stalled its body: nothing was sent yet.
        Ok(Err(_)) | Err(_) => Err(ProxyError::ClientClosed),
    }
}

/// What it takes to send an idempotent request again: its head and its
/// body, when it had one small enough to keep.
struct Replay {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
    body: Option<Bytes>,
}

impl Replay {
    /// Boxed: it rides along every try, and most requests have none.
    fn of(parts: &http::request::Parts, body: Option<Bytes>) -> Box<Self> {
        Box::new(Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body,
        })
    }

    fn request(&self) -> Request<RequestBody> {
        let body = match &self.body {
            Some(b) => RequestBody::full(b.clone()),
            None => RequestBody::empty(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

impl Gateway {
    /// Removes the canary header, cookie and token (from every request),
    /// and returns the side of `route` the request goes to: its canary for
    /// an operator who asks, or when dealt by weight; the route otherwise.
    /// With it, the sticky cookie to set, if one was dealt.
    async fn canary(
        &self,
        route: Arc<Route>,
        headers: &mut http::HeaderMap,
        conn: &ConnInfo,
    ) -> (Arc<Route>, Option<HeaderValue>) {
        let sticky = route.canary.as_ref().and_then(|c| c.sticky.as_deref());
        let signals = canary::take(headers, sticky);
        let Some(c) = &route.canary else {
            return (route, None);
        };
        let choice = self
            .canary
            .choose(c, &signals, conn.peer.ip(), conn.tls)
            .await;
        if choice.canary {
            (c.route.clone(), choice.set_cookie)
        } else {
            (route, choice.set_cookie)
        }
    }

    /// The checks on the request head before anything looks at the path,
    /// then the normalized path.
    fn checked_path(&self, parts: &http::request::Parts) -> Result<Arc<str>, ProxyError> {
        // Header size: hyper's own buffer limit is set above this, so the
        // client gets Portico's JSON 431 rather than a bare one.
        let head = headers::head_size(&parts.headers, parts.uri.path().len());
        if head > self.limits.max_header_bytes {
            return Err(ProxyError::HeadersTooLarge {
                limit: self.limits.max_header_bytes,
            });
        }
        headers::check_head(parts)?;
        let normalized = path::normalize(parts.uri.path())?;
        Ok(Arc::from(normalized.as_ref()))
    }
}

impl Service for Gateway {
    async fn call(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<GatewayBody> {
        self.handle(req, conn).await
    }
}

/// RFC 9110 §15.5.20: a request whose host the connection's certificate
/// does not cover was sent on the wrong connection (HTTP/2 coalescing, or a
/// hostile client). A host that is an IP address, or no host at all, is let
/// through: certificates name DNS names, and such a request can only reach
/// the routes without host, which serve every host anyway.
fn misdirected(names: &crate::tls::CertNames, host: Option<&str>) -> bool {
    host.is_some_and(|h| !crate::routing::host::is_ip_literal(h) && !names.covers(h))
}

pub(crate) fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The upstream request target: the (possibly stripped) normalized path and
/// the query exactly as the client sent it.
fn path_and_query(original: &Uri, upstream_path: &str) -> PathAndQuery {
    if upstream_path == original.path()
        && let Some(pq) = original.path_and_query()
    {
        // Unchanged (the common case): reuse the shared bytes.
        return pq.clone();
    }
    let s = match original.query() {
        Some(q) => {
            let mut s = String::with_capacity(upstream_path.len() + 1 + q.len());
            s.push_str(upstream_path);
            s.push('?');
            s.push_str(q);
            s
        }
        None => upstream_path.to_owned(),
    };
    // The normalized path only holds characters that were valid in the
    // original target, so this cannot fail; `/` is the safe fallback.
    PathAndQuery::from_maybe_shared(Bytes::from(s))
        .unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

/// `a: b: c` for an error and its sources, for log fields.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
