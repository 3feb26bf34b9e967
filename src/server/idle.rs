//! How an HTTP/1.1 connection waits for its next request without holding
//! buffers.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for the whole
//! life of a connection, idle or not: 10,000 idle keep-alive clients cost
//! about 26 KiB each. So a connection that has been quiet for [`PARK_AFTER`]
//! with nothing in flight is *parked*: its socket reports end-of-stream to
//! hyper (only when the kernel has nothing to read), hyper finishes cleanly
//! and hands the socket back, its buffers are freed, and the bare socket
//! waits for readability. The next byte starts a fresh hyper connection on
//! the same socket; the client sees nothing of it.
//!
//! Also here: the cleartext HTTP/2 preface sniff (which also waits for the
//! first byte before anything is allocated) and [`Rewind`], which replays
//! bytes read ahead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Quiet time after which an idle HTTP/1.1 connection gives up its buffers.
/// Long enough that a busy keep-alive connection never pays for a new hyper
/// connection; short enough that idle clients cost little. A request head
/// must in any case arrive within `header_read_timeout`.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// A client connection's transport: a byte stream that can also wait until
/// it is readable without a read buffer.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Transport for TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl Transport for TlsStream<TcpStream> {
    /// A parked TLS connection has no plaintext left in rustls (it was
    /// parked only when a read would block), so readiness is the socket's.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// Waits until `io` has bytes to read (or is closed).
pub async fn readable<T: Transport>(io: &Rewind<T>) -> io::Result<()> {
    if !io.prefix.is_empty() {
        return Ok(());
    }
    std::future::poll_fn(|cx| io.inner.poll_readable(cx)).await
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a cleartext connection, as many as it takes to
/// tell the HTTP/2 preface from anything else, and gives them back through
/// [`Rewind`]. `Ok(None)`: the client closed without sending anything.
pub async fn sniff_h2<T: Transport>(mut io: T) -> io::Result<Option<(Rewind<T>, bool)>> {
    let mut head = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    while n < head.len() {
        let got = io.read(&mut head[n..]).await?;
        if got == 0 {
            if n == 0 {
                return Ok(None);
            }
            break;
        }
        n += got;
        if head[..n] != H2_PREFACE[..n] {
            break;
        }
    }
    let h2 = head[..n] == *H2_PREFACE;
    Ok(Some((
        Rewind::new(io, Bytes::copy_from_slice(&head[..n])),
        h2,
    )))
}

/// A transport that first replays bytes already read from it.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(inner: T, prefix: Bytes) -> Self {
        Rewind { prefix, inner }
    }

    /// Bytes are waiting to be replayed.
    pub fn set_prefix(&mut self, prefix: Bytes) {
        debug_assert!(self.prefix.is_empty());
        self.prefix = prefix;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            if self.prefix.is_empty() {
                // Let go of the allocation behind the replayed bytes.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Bytes read from and written to a [`Counted`] stream; readable while the
/// stream is borrowed elsewhere (by a copy in progress).
#[derive(Debug, Default)]
pub struct Counts {
    read: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
}

impl Counts {
    pub fn read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A stream that counts the bytes read from and written to it (an
/// upgraded connection's traffic, for its access-log line and idle check).
pub struct Counted<I> {
    inner: I,
    counts: std::sync::Arc<Counts>,
}

impl<I> Counted<I> {
    pub fn new(inner: I) -> Self {
        Counted {
            inner,
            counts: Default::default(),
        }
    }

    pub fn counts(&self) -> std::sync::Arc<Counts> {
        self.counts.clone()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.counts
                .read
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.counts
                .written
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    async fn sniffed(sent: &[&[u8]]) -> (bool, Vec<u8>) {
        let (mut client, server) = pair().await;
        for part in sent {
            client.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.shutdown().await.unwrap();
        let (mut io, h2) = sniff_h2(server).await.unwrap().expect("bytes were sent");
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        (h2, all)
    }

    #[tokio::test]
    async fn sniff_tells_h2_from_http1_and_replays_every_byte() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(sniffed(&[get]).await, (false, get.to_vec()));
        let mut h2 = H2_PREFACE.to_vec();
        h2.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        assert_eq!(sniffed(&[&h2]).await, (true, h2.clone()));
        // The preface split over several segments is still recognised.
        assert_eq!(
            sniffed(&[&h2[..3], &h2[3..20], &h2[20..]]).await,
            (true, h2.clone())
        );
        // A prefix of the preface, then the client gives up: not HTTP/2.
        assert_eq!(sniffed(&[b"PRI * HT"]).await, (false, b"PRI * HT".to_vec()));
        // Diverging after a few matching bytes.
        assert_eq!(sniffed(&[b"PRIVATE"]).await, (false, b"PRIVATE".to_vec()));
    }

    #[tokio::test]
    async fn sniff_of_a_silent_close_is_none() {
        let (client, server) = pair().await;
        drop(client);
        assert!(sniff_h2(server).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn readable_waits_for_bytes_and_sees_a_prefix_at_once() {
        let (mut client, server) = pair().await;
        // As when a connection is parked: its last read found nothing.
        let mut probe = [0u8; 1];
        let nothing = server.try_read(&mut probe).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
        let mut io = Rewind::new(server, Bytes::new());
        let wait = tokio::time::timeout(Duration::from_millis(100), readable(&io)).await;
        assert!(wait.is_err(), "nothing was sent: not readable yet");
        client.write_all(b"x").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), readable(&io))
            .await
            .expect("readable once a byte arrived")
            .unwrap();
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await.unwrap();
        io.set_prefix(Bytes::from_static(b"yz"));
        tokio::time::timeout(Duration::from_millis(100), readable(&io))
            .await
            .expect("replayed bytes are readable at once")
            .unwrap();
    }
}
