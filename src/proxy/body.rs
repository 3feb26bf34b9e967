//! The two body types at the proxy boundary.
//!
//! * [`RequestBody`] streams the client's body upstream and enforces
//!   `limits.max_body_size` on what actually arrives (chunked bodies too).
//! * [`GatewayBody`] streams the upstream's body (or Portico's own small
//!   JSON) to the client, counts the bytes, and finishes the request's
//!   [`Exchange`] — access log and metrics — when the body ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::BoxError;
use super::exchange::Exchange;

/// Why the request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the client's request body failed")]
    Client(#[source] hyper::Error),
}

/// How long, and how many more bytes, a body cut off at the limit is still
/// read and thrown away, so that a client still sending it gets to read
/// the `413` instead of a reset (nginx's lingering close). Closing a socket
/// with unread data makes the kernel send RST, which discards the answer
/// on the client's side.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: u64 = 16 << 20;

/// The client's body on its way upstream, cut off at the size limit.
pub struct RequestBody {
    /// `None` once the body was cut off and handed to the drain.
    inner: Option<Incoming>,
    /// A body read ahead in full (to be sent again on a retry).
    buffered: Option<Bytes>,
    /// Bytes still allowed; when a frame would exceed it the stream fails.
    remaining: u64,
    limit: u64,
    /// Told why the body failed, for a sender whose error loses the cause.
    failure: Option<Arc<BodyFailure>>,
}

/// Why a request body failed, kept beside it: the HTTP/2 client resets the
/// stream when the body fails and reports the reset, not the body's error,
/// so the sender looks here to tell a 413 from a broken backend.
#[derive(Debug, Default)]
pub struct BodyFailure(std::sync::atomic::AtomicU8);

impl BodyFailure {
    const TOO_LARGE: u8 = 1;
    const CLIENT: u8 = 2;

    fn set(&self, e: &RequestBodyError) {
        let v = match e {
            RequestBodyError::TooLarge { .. } => Self::TOO_LARGE,
            RequestBodyError::Client(_) => Self::CLIENT,
        };
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// `Some(true)`: over the size limit; `Some(false)`: the client broke
    /// it off; `None`: the body did not fail.
    pub fn too_large(&self) -> Option<bool> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            Self::TOO_LARGE => Some(true),
            Self::CLIENT => Some(false),
            _ => None,
        }
    }
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        RequestBody {
            inner: Some(inner),
            buffered: None,
            remaining: limit,
            limit,
            failure: None,
        }
    }

    /// No body: what a retried body-less request carries.
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            buffered: None,
            remaining: 0,
            limit: 0,
            failure: None,
        }
    }

    /// A body already read in full (`retry_buffer`); empty bytes are no body.
    pub fn full(bytes: Bytes) -> Self {
        let len = bytes.len() as u64;
        RequestBody {
            inner: None,
            buffered: (!bytes.is_empty()).then_some(bytes),
            remaining: len,
            limit: len,
            failure: None,
        }
    }

    /// The size limit this body is held to.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Records in `failure` why the body fails, if it does.
    pub fn report_failure_to(&mut self, failure: Arc<BodyFailure>) {
        self.failure = Some(failure);
    }

    fn fail(&self, e: RequestBodyError) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        if let Some(f) = &self.failure {
            f.set(&e);
        }
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(bytes) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        if let Some(rest) = this.inner.take() {
                            linger(rest);
                        }
                        return this.fail(RequestBodyError::TooLarge { limit: this.limit });
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(RequestBodyError::Client(e)),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(b) = &self.buffered {
            return SizeHint::with_exact(b.len() as u64);
        }
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// Reads and discards what is left of a cut-off body, within
/// [`LINGER_TIME`] and [`LINGER_BYTES`], then drops it (closing the
/// connection). Outside a runtime it is dropped at once.
fn linger(mut rest: Incoming) {
    use http_body_util::BodyExt;
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let drain = async {
            let mut read = 0u64;
            while let Some(Ok(frame)) = rest.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    });
}

/// A backend's response body: read by Portico's own HTTP/1.1 or HTTP/2
/// client, or by hyper's (upgrades).
pub enum UpstreamBody {
    H1(super::h1::ResponseBody),
    H2(super::http2::ResponseBody),
    Hyper(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
            UpstreamBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
            UpstreamBody::Hyper(b) => b.size_hint(),
        }
    }
}

enum Inner {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

/// The response body Portico sends to clients.
pub struct GatewayBody {
    inner: Inner,
    /// Finished (logged and counted) when this body ends or is dropped.
    /// Boxed: the response moves through several layers (handler, hyper's
    /// dispatcher), and 450 bytes of bookkeeping would move with it.
    exchange: Option<Box<Exchange>>,
}

impl GatewayBody {
    /// A body of Portico's own (error JSON, redirects, demo answers).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        GatewayBody {
            inner: Inner::Full(Some(bytes.into())),
            exchange: None,
        }
    }

    pub fn empty() -> Self {
        GatewayBody {
            inner: Inner::Full(None),
            exchange: None,
        }
    }

    /// The upstream's body, streamed through.
    pub fn upstream(body: UpstreamBody) -> Self {
        GatewayBody {
            inner: Inner::Upstream(body),
            exchange: None,
        }
    }

    /// Attaches the exchange that this body completes.
    pub fn attach(&mut self, exchange: Box<Exchange>) {
        self.exchange = Some(exchange);
    }

    fn inner_is_end(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        if let Poll::Ready(ref item) = polled
            && let Some(x) = this.exchange.as_mut()
        {
            match item {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        x.bytes_out += d.len() as u64;
                    }
                }
                Some(Err(_)) => x.finish(false),
                None => x.finish(true),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner_is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
        }
    }
}

impl Drop for GatewayBody {
    fn drop(&mut self) {
        // hyper drops bodies it never needs to poll (HEAD, 204, 304, empty):
        // those are complete. Anything else dropped early means the client
        // went away mid-response.
        let end = self.inner_is_end();
        if let Some(x) = self.exchange.as_mut() {
            x.finish(end);
        }
    }
}
