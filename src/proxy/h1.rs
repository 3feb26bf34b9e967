//! Portico's HTTP/1.1 client for backends, driven in the request's own
//! task.
//!
//! hyper's client runs each connection in a task of its own and hands every
//! request over to it through a channel, the response back through a
//! oneshot and the body through another channel: about four allocations
//! and two extra task polls per request. Here the request's task writes the
//! head straight from the `HeaderMap`, parses the response with httparse,
//! and the response body reads the socket itself when the client's
//! connection asks for the next chunk. A connection goes back to its pool
//! the moment the last byte of a reusable response has been read.
//!
//! Upgrades (WebSocket) still use hyper's client: their connection is never
//! pooled and belongs to the spliced stream after the `101`.
//!
//! Framing follows RFC 9112 §6: no body for `HEAD` and for 1xx, 204 and 304
//! answers; `Transfer-Encoding` ending in `chunked` before `Content-Length`
//! (and the connection is then not reused); a body read to the connection's
//! close otherwise. Interim (1xx) answers other than `101` are skipped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::body::{RequestBody, RequestBodyError};
use super::headers::list_items;
use super::upstream::{Home, UpstreamIo};

/// Response heads larger than this are refused (502): nginx's default is
/// 4–8 KiB, hyper's about 400 KiB.
pub const MAX_HEAD: usize = 64 * 1024;
/// Response heads are parsed on every read up to this size (so that a
/// backend that is not HTTP fails at once), and beyond it only once their
/// end has arrived (so that a head trickling in is not parsed again and
/// again).
const EAGER_PARSE: usize = 1024;
/// Header fields per response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The trailer section of a chunked body, at most.
const MAX_TRAILERS: usize = 16 * 1024;
/// The first read of a response; later reads grow while they fill it.
const FIRST_READ: usize = 8 * 1024;
/// How large the reads of one HTTP/1.1 client's download grow: a few large
/// reads make large downloads cheap, and one response per connection
/// bounds what it holds.
pub const MAX_READ: usize = 256 * 1024;
/// A pooled connection whose request-head buffer grew past this gives it
/// back.
const KEEP_BUFFER: usize = 16 * 1024;
/// Body bytes up to this many are copied out of the read buffer rather than
/// split off it: a split shares the buffer with the frame until the client
/// has been sent it, and the next read must then find a new buffer (grown
/// to twice the size) while the old one lives on.
const COPY_AT_MOST: usize = 4 * 1024;

/// Why an exchange on an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("upstream connection failed")]
    Io(#[from] io::Error),
    /// The client's body failed on its way up (over the limit, or cut off);
    /// `upstream::classify` finds which in the source chain.
    #[error("the request body failed")]
    Body(#[source] RequestBodyError),
    #[error("the backend closed the connection before answering")]
    ClosedBeforeResponse,
    #[error("the backend closed the connection in the middle of its response head")]
    ClosedInHead,
    #[error("the backend closed the connection {remaining} bytes before the end of the body")]
    ClosedInBody { remaining: u64 },
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    #[error("malformed response head: {0}")]
    Invalid(&'static str),
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("the request body is longer than its content-length")]
    BodyOverrun,
    #[error("the request body ended {remaining} bytes before its content-length")]
    BodyShort { remaining: u64 },
}

impl H1Error {
    /// A fault in what the backend sent (as opposed to the connection).
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            H1Error::HeadTooLarge
                | H1Error::Malformed(_)
                | H1Error::Invalid(_)
                | H1Error::Chunked(_)
        )
    }
}

/// TLS over TCP as hyper-rustls hands it over (each layer in hyper's I/O
/// adapter).
type TlsIo = tokio_rustls::client::TlsStream<TokioIo<TokioIo<TcpStream>>>;

/// The socket of an upstream connection.
enum Transport {
    Tcp(TcpStream),
    Tls(Box<TlsIo>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tcp(s) => s,
            Transport::Tls(s) => s.get_ref().0.inner().inner(),
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(_) => Poll::Ready(Ok(())),
            Transport::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }
}

/// One upstream HTTP/1.1 connection: its socket, what has been read from
/// it and not used yet, and the buffer its request heads are written from.
pub struct Conn {
    io: Transport,
    read: BytesMut,
    write: Vec<u8>,
}

impl Conn {
    pub fn new(io: UpstreamIo) -> Self {
        let io = match io {
            hyper_rustls::MaybeHttpsStream::Http(tcp) => Transport::Tcp(tcp.into_inner()),
            hyper_rustls::MaybeHttpsStream::Https(tls) => {
                Transport::Tls(Box::new(tls.into_inner()))
            }
        };
        Conn {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Whether an idle connection can carry a request: the backend has not
    /// closed it, and has sent nothing unasked. Costs a system call only
    /// when the socket was signalled readable since it was last drained.
    pub fn is_usable(&self) -> bool {
        let tcp = self.io.tcp();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: end of stream, unasked bytes (a TLS alert, garbage),
            // or a stale signal. Only the last leaves it usable.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Before the connection waits in a pool: its read buffer (empty by
    /// now) is given back, so that a pool of idle connections holds no
    /// buffers; the next response gets a fresh one (8 KiB, from the
    /// allocator's pool of such blocks). A request-head buffer grown by a
    /// large head is given back too.
    pub fn park(&mut self) {
        debug_assert!(self.read.is_empty(), "parked with unread bytes");
        self.read = BytesMut::new();
        if self.write.capacity() > KEEP_BUFFER {
            self.write = Vec::new();
        }
    }

    /// Reads more of the response into `read`, growing `want` (the size of
    /// the next read) while reads fill what they are given, up to `cap`.
    /// `Ok(0)` is the end of the stream.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        want: &mut usize,
        cap: usize,
    ) -> Poll<io::Result<usize>> {
        if self.read.capacity() == self.read.len() {
            self.read.reserve(*want);
        }
        let room = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut ReadHalf(&mut self.io)),
            cx,
            &mut self.read
        ))?;
        if n == room && *want < cap {
            *want = (*want * 2).min(cap);
        }
        Poll::Ready(Ok(n))
    }

    /// Writes all of `self.write`, starting at `*at`.
    fn poll_write_head(&mut self, cx: &mut Context<'_>, at: &mut usize) -> Poll<io::Result<()>> {
        while *at < self.write.len() {
            let n = ready!(self.io.poll_write(cx, &self.write[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        self.io.poll_flush(cx)
    }
}

/// `AsyncRead` over a transport, for `poll_read_buf`.
struct ReadHalf<'a>(&'a mut Transport);

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_read(cx, buf)
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

/// A failed exchange, and whether the request is still whole (nothing of
/// it reached the backend, so it may go to another).
pub struct Failed {
    pub error: H1Error,
    pub unsent: Option<Box<Request<RequestBody>>>,
}

/// Sends `req` on `conn` and reads the response head. The body of the
/// response reads the rest and hands the connection to `home` when the
/// connection may carry another request. `cap` bounds the body's reads.
pub async fn send(
    mut conn: Box<Conn>,
    mut req: Box<Request<RequestBody>>,
    home: Home,
    cap: usize,
) -> Result<Response<ResponseBody>, Failed> {
    let framing = request_framing(&mut req);
    encode_head(&req, &mut conn.write);
    let mut at = 0;
    if let Err(e) = std::future::poll_fn(|cx| conn.poll_write_head(cx, &mut at)).await {
        // Whole only if no byte of it was taken: bytes a socket (or TLS)
        // accepted may still reach the backend.
        return Err(Failed {
            error: e.into(),
            unsent: (at == 0).then_some(req),
        });
    }
    let head_only = req.method() == Method::HEAD;
    let mut reading = Reading {
        want: FIRST_READ,
        scanned: 0,
    };
    let head = if framing == RequestFraming::None {
        std::future::poll_fn(|cx| poll_head(&mut conn, cx, &mut reading)).await
    } else {
        let mut body = std::mem::replace(req.body_mut(), RequestBody::empty());
        drop(req);
        let mut writer = BodyWriter::new(framing);
        // The body goes out while the answer is awaited: a backend may
        // answer (and stop reading) before it has the whole body.
        std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(head) = poll_head(&mut conn, cx, &mut reading) {
                    return Poll::Ready(head);
                }
                if writer.done {
                    return Poll::Pending;
                }
                writer.done = ready!(writer.poll_step(cx, &mut conn.io, &mut body))?;
            }
        })
        .await
        .map(|mut head| {
            // An answer before the whole request was sent: the connection
            // is in the middle of a message, so it is not reused.
            if !writer.done {
                head.reuse = false;
            }
            head
        })
    };
    let head = head.map_err(|error| Failed {
        error,
        unsent: None,
    })?;
    Ok(head.into_response(conn, home, head_only, reading.want.min(cap), cap))
}

/// Decides the request body's framing as hyper's client does, adding the
/// header that announces it: none for a finished body; the client's
/// `Content-Length`, or the body's exact size; otherwise chunked, except
/// for the methods that carry no body in practice.
fn request_framing(req: &mut Request<RequestBody>) -> RequestFraming {
    let body = req.body();
    if body.is_end_stream() {
        return RequestFraming::None;
    }
    if let Some(len) = super::content_length(req.headers()) {
        return RequestFraming::Length(len);
    }
    if let Some(len) = body.size_hint().exact() {
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return RequestFraming::Length(len);
    }
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::CONNECT) {
        return RequestFraming::None;
    }
    req.headers_mut().insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    req.headers_mut().remove(header::CONTENT_LENGTH);
    RequestFraming::Chunked
}

/// The request line and header fields, as hyper writes them (lower-case
/// names, HTTP/1.1).
fn encode_head(req: &Request<RequestBody>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    match req.uri().path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_fields(out, req.headers());
    out.extend_from_slice(b"\r\n");
}

/// `name: value` lines, as in a head or a trailer section.
fn push_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes the request body in its framing, one frame at a time.
struct BodyWriter {
    framing: RequestFraming,
    /// What is left to declare (`Length`).
    remaining: u64,
    /// Bytes queued for the socket: framing and data, in order.
    queue: std::collections::VecDeque<Bytes>,
    /// The body has ended; the queue holds its last bytes.
    ended: bool,
    done: bool,
}

impl BodyWriter {
    fn new(framing: RequestFraming) -> Self {
        BodyWriter {
            framing,
            remaining: match framing {
                RequestFraming::Length(n) => n,
                _ => 0,
            },
            queue: std::collections::VecDeque::new(),
            ended: false,
            done: false,
        }
    }

    /// Writes what is queued, then queues the next frame of the body:
    /// `true` once all of it is written. One frame per call, so that the
    /// caller looks for an early answer in between.
    fn poll_step(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Transport,
        body: &mut RequestBody,
    ) -> Poll<Result<bool, H1Error>> {
        while let Some(front) = self.queue.front_mut() {
            let n = ready!(io.poll_write(cx, front))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            front.advance(n);
            if front.is_empty() {
                self.queue.pop_front();
            }
        }
        if self.ended {
            ready!(io.poll_flush(cx))?;
            return Poll::Ready(Ok(true));
        }
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.queue_data(data)?,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.queue_end(Some(&trailers))?;
                    }
                }
            },
            Some(Err(e)) => return Poll::Ready(Err(H1Error::Body(e))),
            None => self.queue_end(None)?,
        }
        Poll::Ready(Ok(false))
    }

    fn queue_data(&mut self, data: Bytes) -> Result<(), H1Error> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            RequestFraming::Length(_) => {
                let len = data.len() as u64;
                if len > self.remaining {
                    return Err(H1Error::BodyOverrun);
                }
                self.remaining -= len;
                self.queue.push_back(data);
            }
            RequestFraming::Chunked => {
                self.queue
                    .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                self.queue.push_back(data);
                self.queue.push_back(Bytes::from_static(b"\r\n"));
            }
            RequestFraming::None => {}
        }
        Ok(())
    }

    fn queue_end(&mut self, trailers: Option<&HeaderMap>) -> Result<(), H1Error> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        match self.framing {
            RequestFraming::Length(_) if self.remaining > 0 => Err(H1Error::BodyShort {
                remaining: self.remaining,
            }),
            RequestFraming::Chunked => {
                let mut end = b"0\r\n".to_vec();
                if let Some(trailers) = trailers {
                    push_fields(&mut end, trailers);
                }
                end.extend_from_slice(b"\r\n");
                self.queue.push_back(Bytes::from(end));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A parsed response head and how its body is framed.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    /// The connection may carry another request after this response.
    reuse: bool,
}

/// Where reading a response head stands.
struct Reading {
    /// The size of the next read.
    want: usize,
    /// How far the buffer has been searched for the head's end, so that a
    /// head arriving a few bytes at a time is scanned once, not once per
    /// read.
    scanned: usize,
}

/// Reads until a final response head is complete; interim (1xx) answers
/// other than `101` are read past.
fn poll_head(
    conn: &mut Conn,
    cx: &mut Context<'_>,
    reading: &mut Reading,
) -> Poll<Result<Head, H1Error>> {
    loop {
        // Parsed on every read while the head is short, so that what is not
        // HTTP at all (an SSH banner) fails at once; past that only once
        // its end is in.
        let worth_parsing = if conn.read.len() <= EAGER_PARSE {
            !conn.read.is_empty()
        } else {
            head_complete(&conn.read, &mut reading.scanned)
        };
        if worth_parsing && let Some(head) = parse_head(&mut conn.read)? {
            reading.scanned = 0;
            if head.status.is_informational() && head.status != 101 {
                continue;
            }
            return Poll::Ready(Ok(head));
        }
        if conn.read.len() >= MAX_HEAD {
            return Poll::Ready(Err(H1Error::HeadTooLarge));
        }
        let n = ready!(conn.poll_fill(cx, &mut reading.want, FIRST_READ))?;
        if n == 0 {
            return Poll::Ready(Err(if conn.read.is_empty() {
                H1Error::ClosedBeforeResponse
            } else {
                H1Error::ClosedInHead
            }));
        }
    }
}

/// Whether `buf` holds an empty line (the end of a head; httparse takes a
/// bare LF for CRLF), searching from where the last search stopped.
fn head_complete(buf: &[u8], scanned: &mut usize) -> bool {
    let mut i = scanned.saturating_sub(2);
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + off;
        match buf.get(at + 1) {
            Some(b'\n') => return true,
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return true,
            _ => i = at + 1,
        }
    }
    *scanned = buf.len();
    false
}

/// Parses one response head off the front of `buf`: `None` while it is
/// incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Malformed(e)),
    };
    let code = parsed.code.ok_or(H1Error::Invalid("no status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Invalid("status out of range"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Values share one copy of the head; names are interned for the
    // standard ones.
    let bytes = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| H1Error::Invalid("header name"))?;
        let at = field.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(bytes.slice(at..at + field.value.len()))
            .map_err(|_| H1Error::Invalid("header value"))?;
        headers.append(name, value);
    }
    buf.advance(len);
    let (framing, reuse) = response_framing(status, version, &headers)?;
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        reuse,
    }))
}

/// How a response body is delimited (before `HEAD` is taken into
/// account), and whether the connection may be reused after it.
fn response_framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<(Framing, bool), H1Error> {
    let mut reuse = keep_alive(version, headers);
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // A 101 hands the connection to another protocol.
        return Ok((Framing::Length(0), reuse && status != 101));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked = list_items(headers, &header::TRANSFER_ENCODING)
            .last()
            .is_some_and(|last| last.eq_ignore_ascii_case(b"chunked"));
        // With Content-Length beside it, the message may be read two ways
        // by whoever sits between: not reused (RFC 9112 §6.3).
        if headers.contains_key(header::CONTENT_LENGTH) {
            reuse = false;
        }
        return Ok(if chunked {
            (Framing::Chunked(Chunked::Size), reuse)
        } else {
            (Framing::Close, false)
        });
    }
    match response_length(headers)? {
        Some(n) => Ok((Framing::Length(n), reuse)),
        None => Ok((Framing::Close, false)),
    }
}

/// A response's `Content-Length`: every value (and every comma-separated
/// item) must be the same number. (A request's was checked by hyper's
/// server side: `proxy::content_length` only reads it.)
fn response_length(headers: &HeaderMap) -> Result<Option<u64>, H1Error> {
    let mut found = None;
    for item in list_items(headers, &header::CONTENT_LENGTH) {
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(H1Error::Invalid("content-length"));
        }
        let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(H1Error::Invalid("conflicting content-length"));
        }
        found = Some(n);
    }
    Ok(found)
}

/// HTTP/1.1 connections persist unless `Connection: close`; HTTP/1.0 ones
/// only with `Connection: keep-alive`.
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for token in list_items(headers, &header::CONNECTION) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (version == Version::HTTP_11 || keep)
}

impl Head {
    fn into_response(
        self,
        conn: Box<Conn>,
        home: Home,
        head_only: bool,
        first_read: usize,
        cap: usize,
    ) -> Response<ResponseBody> {
        let framing = if head_only {
            Framing::Length(0)
        } else {
            self.framing
        };
        let mut body = ResponseBody {
            conn: Some(conn),
            framing,
            reuse: self.reuse,
            home: Some(home),
            want: first_read.max(1024),
            cap,
        };
        if body.is_end_stream() {
            body.release();
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// How much of a response body is left, and how it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// Read until the backend closes.
    Close,
    /// Read to its end (chunked and close-delimited bodies).
    Done,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes are left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section, searched for its end
    /// this far.
    Trailers(usize),
}

/// A response body read straight off the upstream connection.
pub struct ResponseBody {
    /// `None` once released (back in the pool, or closed).
    conn: Option<Box<Conn>>,
    framing: Framing,
    reuse: bool,
    home: Option<Home>,
    /// The size of the next read.
    want: usize,
    /// How large reads may grow.
    cap: usize,
}

impl ResponseBody {
    /// Gives the connection back to its pool when it may carry another
    /// request (nothing unread is left on it), and closes it otherwise.
    fn release(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.reuse
            && conn.read.is_empty()
            && let Some(home) = self.home.take()
        {
            conn.park();
            home.put(conn);
        }
    }

    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.reuse = false;
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(e)))
    }

    /// Reads more into the connection's buffer; `false` at the end of the
    /// stream.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, H1Error>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        let n = ready!(conn.poll_fill(cx, &mut self.want, self.cap))?;
        Poll::Ready(Ok(n > 0))
    }

    /// The next step of a chunked body over what is buffered.
    fn step_chunked(&mut self, state: Chunked) -> Result<Step, H1Error> {
        let buf = &mut self.conn.as_mut().expect("a connection while reading").read;
        match state {
            Chunked::Size => {
                let Some(end) = find_crlf(buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(H1Error::Chunked("chunk-size line too long"));
                    }
                    return Ok(Step::More);
                };
                let size = parse_chunk_size(&buf[..end])?;
                buf.advance(end + 2);
                self.framing = Framing::Chunked(if size == 0 {
                    Chunked::Trailers(0)
                } else {
                    Chunked::Data(size)
                });
                Ok(Step::Next)
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (buf.len() as u64).min(left) as usize;
                let data = take(buf, n);
                self.framing = Framing::Chunked(if n as u64 == left {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - n as u64)
                });
                Ok(Step::Frame(Frame::data(data)))
            }
            Chunked::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(H1Error::Chunked("no CRLF after chunk data"));
                }
                buf.advance(2);
                self.framing = Framing::Chunked(Chunked::Size);
                Ok(Step::Next)
            }
            Chunked::Trailers(mut scanned) => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    self.framing = Framing::Done;
                    return Ok(Step::Next);
                }
                // As for a head: a long section is parsed once its end is in.
                if buf.len() > EAGER_PARSE && !head_complete(buf, &mut scanned) {
                    if buf.len() > MAX_TRAILERS {
                        return Err(H1Error::Chunked("trailer section too large"));
                    }
                    self.framing = Framing::Chunked(Chunked::Trailers(scanned));
                    return Ok(Step::More);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::new();
                        for f in fields {
                            if let (Ok(name), Ok(value)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) {
                                trailers.append(name, value);
                            }
                        }
                        buf.advance(len);
                        self.framing = Framing::Done;
                        Ok(Step::Frame(Frame::trailers(trailers)))
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                        Err(H1Error::Chunked("trailer section too large"))
                    }
                    Ok(httparse::Status::Partial) => Ok(Step::More),
                    Err(_) => Err(H1Error::Chunked("malformed trailer section")),
                }
            }
        }
    }
}

/// What one step of the chunked decoder found.
enum Step {
    Frame(Frame<Bytes>),
    /// The state moved on; step again.
    Next,
    /// More must be read first.
    More,
}

/// Where the first CRLF in `buf` starts.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A chunk-size line: hex digits, then optional whitespace and extensions
/// (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(H1Error::Chunked("bad chunk size"));
    }
    let rest = &line[digits..];
    let rest_ok = rest.is_empty()
        || matches!(rest[0], b';' | b' ' | b'\t')
            && !rest.iter().any(|b| *b == b'\r' || *b == b'\n');
    if !rest_ok {
        return Err(H1Error::Chunked("bad chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, d| {
        n * 16 + u64::from((*d as char).to_digit(16).expect("a hex digit"))
    }))
}

/// The first `n` buffered body bytes, as a frame's data: copied when few
/// (see [`COPY_AT_MOST`]), split off the buffer otherwise.
fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    if n <= COPY_AT_MOST {
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        loop {
            match this.framing {
                Framing::Length(0) | Framing::Done => {
                    this.release();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    let buf = &mut this.conn.as_mut().expect("a connection while reading").read;
                    if !buf.is_empty() {
                        let n = (buf.len() as u64).min(left) as usize;
                        let data = take(buf, n);
                        this.framing = Framing::Length(left - n as u64);
                        if left == n as u64 {
                            this.release();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Close => {
                    let buf = &mut this.conn.as_mut().expect("a connection while reading").read;
                    if !buf.is_empty() {
                        let n = buf.len();
                        let data = take(buf, n);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(state) => match this.step_chunked(state) {
                    Ok(Step::Frame(frame)) => {
                        if this.framing == Framing::Done {
                            this.release();
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(Step::Next) => continue,
                    Ok(Step::More) => {}
                    Err(e) => return this.fail(e),
                },
            }
            match ready!(this.poll_more(cx)) {
                Ok(true) => {}
                Ok(false) => match this.framing {
                    Framing::Close => {
                        this.framing = Framing::Done;
                        this.reuse = false;
                    }
                    Framing::Length(remaining) => {
                        return this.fail(H1Error::ClosedInBody { remaining });
                    }
                    _ => {
                        return this.fail(H1Error::Chunked(
                            "the backend closed the connection mid-body",
                        ));
                    }
                },
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Length(0) | Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_body_is_copied_out_and_a_large_one_is_not() {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.extend_from_slice(&[7u8; 40 * 1024]);
        // The buffer's allocation, which stays alive throughout: nothing
        // else can be allocated inside it.
        let start = buf.as_ptr();
        let range = start..start.wrapping_add(buf.capacity());
        let small = take(&mut buf, 100);
        assert_eq!(small.len(), 100);
        assert!(
            !range.contains(&small.as_ptr()),
            "a small body shares the read buffer"
        );
        let large = take(&mut buf, 20 * 1024);
        assert_eq!(large.len(), 20 * 1024);
        assert!(range.contains(&large.as_ptr()), "a large body was copied");
        assert_eq!(buf.len(), 40 * 1024 - 100 - 20 * 1024);
    }

    #[tokio::test]
    async fn a_parked_connection_holds_no_read_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut conn = Conn::new(hyper_rustls::MaybeHttpsStream::Http(
            hyper_util::rt::TokioIo::new(tcp),
        ));
        conn.read.reserve(FIRST_READ);
        conn.write.reserve(KEEP_BUFFER * 2);
        assert!(conn.read.capacity() >= FIRST_READ);
        conn.park();
        assert_eq!(conn.read.capacity(), 0);
        assert_eq!(conn.write.capacity(), 0);
    }

    fn head(text: &str) -> Result<Option<Head>, H1Error> {
        parse_head(&mut BytesMut::from(text))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases: &[(&str, Framing, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked(Chunked::Size),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                Framing::Chunked(Chunked::Size),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                Framing::Chunked(Chunked::Size),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                Framing::Close,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                true,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\n\r\n",
                Framing::Length(0),
                false,
            ),
        ];
        for (text, framing, reuse) in cases {
            let h = head(text).unwrap().unwrap();
            assert_eq!((h.framing, h.reuse), (*framing, *reuse), "{text:?}");
        }
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cases = [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 OK\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ];
        for text in cases {
            assert!(head(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        let text = "HTTP/1.1 200 OK\r\ncontent-len";
        let mut buf = BytesMut::from(text);
        assert!(parse_head(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), text.len(), "nothing consumed");
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let text = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        for split in 1..text.len() {
            let mut scanned = 0;
            assert!(!head_complete(&text[..split], &mut scanned), "{split}");
            assert!(head_complete(text, &mut scanned), "{split}");
        }
        let mut scanned = 0;
        assert!(head_complete(b"HTTP/1.1 200 OK\nA: b\n\n", &mut scanned));
        assert!(!head_complete(b"HTTP/1.1 200 OK\r\nA: b\r\n", &mut 0));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"FF;name=value").unwrap(), 255);
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        for bad in [&b""[..], b"x", b"-1", b"1x", b"1000000000000000", b";ext"] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }
}
