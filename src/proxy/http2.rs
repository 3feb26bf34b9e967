//! Portico's HTTP/2 client for backends (`h2c://`, and `https://` with
//! `http2: true`), on the `h2` crate.
//!
//! hyper's HTTP/2 client spawns a task per request to wait for its
//! response, hands every request to the connection's task through a channel
//! and the response back through a oneshot, and wraps the stream in a body
//! of its own. Here the request's own task opens the stream, sends the head
//! and waits for the response; the connection's task only reads and writes
//! frames and sends keep-alive PINGs; and a request body gets a task of its
//! own only when it is not all there when the head goes out (hyper does the
//! same). The response body is the stream itself ([`ResponseBody`]).
//!
//! The settings are hyper's defaults, which Portico used before: 2 MiB of
//! window per stream and 5 MiB per connection (what one backend connection
//! may make Portico buffer is bounded by them), 16 KiB frames, 1 MiB of
//! send buffer, 16 KiB of response head, 100 streams until the backend's
//! SETTINGS say how many it takes, and no server push.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::body::RequestBody;

const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// How often an HTTP/2 backend connection is PINGed, busy or idle, and how
/// long its answer may take before the connection counts as dead (a
/// backend that is gone without a FIN, or stuck). A connection whose last
/// handle is dropped (its backend left the route) closes without waiting
/// for a PING: h2 sends GOAWAY and ends it.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why an HTTP/2 exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    /// The connection could not be set up or is gone; the request was not
    /// sent on it.
    #[error("HTTP/2 connection to the backend failed")]
    Connection(#[source] h2::Error),
    /// The stream failed (reset by either side) after the request head
    /// was handed to it.
    #[error("HTTP/2 stream to the backend failed")]
    Stream(#[source] h2::Error),
}

/// A failed send: why, and the request when it never reached the
/// connection (so it may go elsewhere whatever its method and body).
pub struct Failed {
    pub error: Http2Error,
    pub unsent: Option<Request<RequestBody>>,
}

/// A handle on one HTTP/2 connection to a backend. Cheap to clone; every
/// clone sends on the same connection.
#[derive(Clone)]
pub struct Connection {
    sender: SendRequest<Bytes>,
    /// Set when the connection's task ends (the connection closed, failed,
    /// or stopped answering PINGs).
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Speaks HTTP/2 on `io` (prior knowledge, or TLS that chose `h2`) and
    /// spawns the connection's task, which PINGs as `keep_alive` says.
    pub async fn handshake<T>(io: T, keep_alive: KeepAlive) -> Result<Connection, Http2Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .enable_push(false)
            .handshake::<T, Bytes>(io)
            .await
            .map_err(Http2Error::Connection)?;
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(conn, keep_alive, closed.clone()));
        Ok(Connection { sender, closed })
    }

    /// Whether the connection is gone: new requests need another one.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sends `req` (absolute URI: `:scheme` and `:authority` come from it)
    /// and waits for the response head. A request body that is not
    /// complete at once is piped by a task of its own, which resets the
    /// stream if this future is dropped before the response came.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<ResponseBody>, Failed> {
        let sender = match self.sender.clone().ready().await {
            Ok(s) => s,
            Err(e) => {
                self.closed.store(true, Ordering::Relaxed);
                return Err(Failed {
                    error: Http2Error::Connection(e),
                    unsent: Some(req),
                });
            }
        };
        let (head, body) = req.into_parts();
        let eos = body.is_end_stream();
        let (response, stream) = match open_stream(sender, head, &body, eos) {
            Ok(opened) => opened,
            Err(e) => {
                // Refused before anything was written (out of stream ids,
                // or a head h2 will not send): a fresh connection for the
                // next request.
                self.closed.store(true, Ordering::Relaxed);
                return Err(Failed {
                    error: Http2Error::Connection(e),
                    unsent: None,
                });
            }
        };
        let mut cancel = None;
        if !eos {
            let mut pipe = Pipe::new(body, stream);
            // Most bodies that are sent at all are already here (a gRPC
            // message, a small form): no task for them.
            let done = std::future::poll_fn(|cx| Poll::Ready(pipe.poll(cx).is_ready())).await;
            if !done {
                let (tx, rx) = oneshot::channel();
                tokio::spawn(pipe.run(rx));
                cancel = Some(CancelPipe(Some(tx)));
            }
        }
        let result = response.await;
        if let Some(mut c) = cancel {
            // The answer came (or the stream failed): the body goes on.
            c.disarm();
        }
        match result {
            Ok(resp) => {
                let (head, stream) = resp.into_parts();
                let body = ResponseBody::new(stream, &head.headers);
                Ok(Response::from_parts(head, body))
            }
            Err(e) => {
                let error = if e.is_go_away() || e.is_io() {
                    Http2Error::Connection(e)
                } else {
                    Http2Error::Stream(e)
                };
                Err(Failed {
                    error,
                    unsent: None,
                })
            }
        }
    }
}

/// Opens the stream and sends the head; END_STREAM with it when there is
/// no body. A body of known size gets a `content-length` if it has none
/// (as hyper's client did), so the backend need not wait for END_STREAM.
fn open_stream(
    mut sender: SendRequest<Bytes>,
    mut head: http::request::Parts,
    body: &RequestBody,
    eos: bool,
) -> Result<(ResponseFuture, SendStream<Bytes>), h2::Error> {
    if let Some(len) = body.size_hint().exact()
        && (len != 0 || has_payload_semantics(&head.method))
        && !head.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        head.headers
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    sender.send_request(Request::from_parts(head, ()), eos)
}

/// Methods whose requests carry a body by definition (RFC 9110 §9.3).
fn has_payload_semantics(m: &http::Method) -> bool {
    !matches!(
        *m,
        http::Method::GET | http::Method::HEAD | http::Method::DELETE | http::Method::CONNECT
    )
}

/// Drives one connection until it closes, fails or stops answering PINGs,
/// then marks it closed.
async fn drive<T>(
    mut conn: h2::client::Connection<T, Bytes>,
    keep_alive: KeepAlive,
    closed: Arc<AtomicBool>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // Only the first call returns the handle, and this is the first.
    let pings = conn.ping_pong().expect("a new connection's PING handle");
    tokio::select! {
        r = &mut conn => if let Err(e) = r {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        },
        dead = ping(pings, keep_alive) => {
            tracing::debug!(reason = dead, "upstream HTTP/2 connection closed: no PING answer");
        }
    }
    closed.store(true, Ordering::Relaxed);
}

/// PINGs every `interval`; returns why when an answer fails to come.
async fn ping(mut pings: h2::PingPong, every: KeepAlive) -> &'static str {
    loop {
        tokio::time::sleep(every.interval).await;
        match tokio::time::timeout(every.timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => return "the PING failed",
            Err(_) => return "timed out",
        }
    }
}

/// Resets a piped body's stream when dropped armed: the request was given
/// up (client gone, timeout) before its answer came.
struct CancelPipe(Option<oneshot::Sender<()>>);

impl CancelPipe {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelPipe {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A request body on its way into its stream, within the stream's flow
/// control: a chunk is handed to h2 once the stream has any capacity
/// (h2 splits it into frames as the window allows, within its send
/// buffer), and the next one is read only then.
struct Pipe {
    body: RequestBody,
    tx: SendStream<Bytes>,
    /// A chunk read and waiting for capacity, and whether it ends the body.
    waiting: Option<(Bytes, bool)>,
}

impl Pipe {
    fn new(body: RequestBody, tx: SendStream<Bytes>) -> Self {
        Pipe {
            body,
            tx,
            waiting: None,
        }
    }

    /// Pipes until the body ends or fails (`cancel` fired: the stream is
    /// reset).
    async fn run(mut self, mut cancel: oneshot::Receiver<()>) {
        let mut watching = true;
        let r = std::future::poll_fn(|cx| {
            if watching {
                match Pin::new(&mut cancel).poll(cx) {
                    Poll::Ready(Ok(())) => {
                        self.tx.send_reset(Reason::CANCEL);
                        return Poll::Ready(Ok(()));
                    }
                    // Disarmed: the answer came; pipe to the end.
                    Poll::Ready(Err(_)) => watching = false,
                    Poll::Pending => {}
                }
            }
            self.poll(cx)
        })
        .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "request body to the HTTP/2 backend stopped");
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        loop {
            // Registered first, so that a reset from the backend wakes the
            // pipe while it waits for the body or for capacity.
            if let Poll::Ready(r) = self.tx.poll_reset(cx) {
                return Poll::Ready(Err(r.map_or_else(|e| e, h2::Error::from)));
            }
            if let Some((chunk, eos)) = self.waiting.take() {
                if let Err(e) = self.wait_capacity(cx, chunk, eos) {
                    return e;
                }
                if eos {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // The body is polled before any capacity is claimed: a claim
            // for a body that has nothing to send would hold connection
            // window other streams need.
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let eos = self.body.is_end_stream();
                        if chunk.is_empty() {
                            self.tx.send_data(chunk, eos)?;
                            if eos {
                                return Poll::Ready(Ok(()));
                            }
                        } else {
                            self.tx.reserve_capacity(1);
                            self.waiting = Some((chunk, eos));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.tx.reserve_capacity(0);
                            self.tx.send_trailers(trailers)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(_)) => {
                    // Why is kept beside the body (`BodyFailure`); the
                    // backend learns that the request is incomplete.
                    self.tx.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(Ok(()));
                }
                None => {
                    self.tx.send_data(Bytes::new(), true)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Sends `chunk` once the stream has capacity; `Err` carries the poll
    /// result to return (pending, or the stream's failure).
    fn wait_capacity(
        &mut self,
        cx: &mut Context<'_>,
        chunk: Bytes,
        eos: bool,
    ) -> Result<(), Poll<Result<(), h2::Error>>> {
        while self.tx.capacity() == 0 {
            match self.tx.poll_capacity(cx) {
                Poll::Pending => {
                    self.waiting = Some((chunk, eos));
                    return Err(Poll::Pending);
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Err(Poll::Ready(Err(e))),
                // The stream is no longer sending: reset or finished.
                Poll::Ready(None) => return Err(Poll::Ready(Ok(()))),
            }
        }
        self.tx
            .send_data(chunk, eos)
            .map_err(|e| Poll::Ready(Err(e)))
    }
}

/// A backend's response body: the HTTP/2 stream's DATA, then its trailers.
/// What is read is released to the stream's window at once; the window
/// (2 MiB) bounds what the backend may send ahead of the client.
pub struct ResponseBody {
    stream: RecvStream,
    /// `content-length` less what has been read, when the backend sent one.
    remaining: Option<u64>,
    data_done: bool,
}

impl ResponseBody {
    /// The declared length comes from the response head: h2 has checked
    /// that it parses, and holds the DATA to it.
    fn new(stream: RecvStream, headers: &HeaderMap) -> Self {
        ResponseBody {
            stream,
            remaining: super::content_length(headers),
            data_done: false,
        }
    }
}

/// A reset with `NO_ERROR` after the response is complete is how a server
/// says it does not need the rest of the request: not an error.
fn ends_cleanly(e: &h2::Error) -> bool {
    e.reason() == Some(Reason::NO_ERROR)
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    if let Some(r) = this.remaining.as_mut() {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) if ends_cleanly(&e) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.stream.poll_trailers(cx)) {
            Ok(t) => Poll::Ready(t.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if ends_cleanly(&e) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// PINGs every 50 ms, dead after 300 ms without an answer.
    const FAST: KeepAlive = KeepAlive {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
    };

    /// A backend on loopback that completes the HTTP/2 handshake; it goes
    /// on answering (PINGs included) only when `answers`. `gone` fires when
    /// its side of the connection has ended.
    async fn backend(answers: bool) -> (Connection, oneshot::Receiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up_tx, up_rx) = oneshot::channel();
        let (gone_tx, gone_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(tcp).await.unwrap();
            let _ = up_tx.send(());
            if answers {
                while conn.accept().await.is_some() {}
            } else {
                // The socket stays open; the connection is never read again.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            drop(conn);
            let _ = gone_tx.send(());
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let conn = Connection::handshake(tcp, FAST).await.unwrap();
        up_rx.await.unwrap();
        (conn, gone_rx)
    }

    /// Waits up to 5 s for `closed` to become `want`.
    async fn closed_becomes(closed: &AtomicBool, want: bool) -> bool {
        for _ in 0..500 {
            if closed.load(Ordering::Relaxed) == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_backend_that_stops_answering_pings_is_found_dead() {
        let (conn, _gone) = backend(false).await;
        assert!(!conn.is_closed(), "open after the handshake");
        assert!(
            closed_becomes(&conn.closed, true).await,
            "the unanswered PING closed the connection"
        );
    }

    #[tokio::test]
    async fn a_backend_that_answers_pings_keeps_its_connection() {
        let (conn, _gone) = backend(true).await;
        // Twenty PING intervals, several timeouts long.
        tokio::time::sleep(FAST.interval * 20).await;
        assert!(!conn.is_closed(), "every PING was answered");
    }

    #[tokio::test]
    async fn a_connection_whose_handles_are_gone_closes() {
        let (conn, gone) = backend(true).await;
        let closed = conn.closed.clone();
        drop(conn);
        assert!(
            closed_becomes(&closed, true).await,
            "the connection's task ended"
        );
        // The backend saw the connection end.
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the backend's connection ended")
            .unwrap();
    }
}
