//! Copying an upgraded connection's bytes (WebSocket, `Upgrade: raw`)
//! between the client and the backend.
//!
//! Most upgraded connections are quiet WebSockets that live for hours, so a
//! direction holds no buffer while it waits: bytes are read into a buffer
//! on the worker's stack and written on at once. Only what the writer could
//! not take right away is kept, in a buffer of the direction's own that is
//! freed as soon as it is written, and nothing more is read until then. A
//! slow reader therefore holds back its writer (TCP backpressure), and the
//! gateway keeps at most [`READ_SIZE`] bytes per direction.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read at once from either side.
pub const READ_SIZE: usize = 16 * 1024;

/// Reads per poll before yielding to the worker's other connections.
const READS_PER_POLL: usize = 32;

/// One direction of a splice: what is read from one side is written to the
/// other, and the writer is shut down (FIN; TLS `close_notify`) when the
/// reader ends or either side fails.
#[derive(Debug, Default)]
pub struct Pump {
    /// Bytes read but not yet taken by the writer, from `at` on.
    pending: Vec<u8>,
    at: usize,
    /// Written since the last flush: a TLS writer may be holding them.
    unflushed: bool,
    state: State,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Copying,
    ShuttingDown,
    Done,
}

impl Pump {
    /// Copies until the reader ends (EOF) or either side fails, then shuts
    /// the writer down. `Ready` once that is done; I/O errors end the
    /// direction, as a close would (there is no one to report them to but
    /// the debug log, and the other direction still gets its linger).
    pub fn poll<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W) -> Poll<()>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.state == State::Copying {
            match self.poll_copy(cx, r, w) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "upgraded connection: one direction failed");
                }
                Poll::Ready(Ok(())) => {}
            }
            self.pending = Vec::new();
            self.state = State::ShuttingDown;
        }
        if self.state == State::ShuttingDown {
            // A failed shutdown leaves nothing to do but close.
            let _ = ready!(Pin::new(&mut *w).poll_shutdown(cx));
            self.state = State::Done;
        }
        Poll::Ready(())
    }

    /// `Ready(Ok)` at the reader's EOF, with every byte written.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        for _ in 0..READS_PER_POLL {
            if !self.pending.is_empty() {
                ready!(self.poll_write_pending(cx, w))?;
            }
            let mut space = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut buf = ReadBuf::uninit(&mut space);
            match Pin::new(&mut *r).poll_read(cx, &mut buf) {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    // Nothing more to read for now: what a TLS writer
                    // holds must not wait for the next read.
                    if self.unflushed {
                        ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
            let read = buf.filled();
            if read.is_empty() {
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
            let taken = self.write_now(cx, w, read)?;
            if taken < read.len() {
                // Kept until the writer takes it; nothing more is read
                // meanwhile.
                self.pending.extend_from_slice(&read[taken..]);
                self.at = 0;
            }
        }
        // A busy connection yields so the worker's others get their turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes as much of `data` as the writer takes without waiting.
    fn write_now<W>(&mut self, cx: &mut Context<'_>, w: &mut W, data: &[u8]) -> io::Result<usize>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut taken = 0;
        while taken < data.len() {
            match Pin::new(&mut *w).poll_write(cx, &data[taken..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    taken += n;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(taken)
    }

    /// Writes what is pending; its buffer is freed once it all went.
    fn poll_write_pending<W>(&mut self, cx: &mut Context<'_>, w: &mut W) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        while self.at < self.pending.len() {
            let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.pending[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
            self.unflushed = true;
        }
        self.pending = Vec::new();
        self.at = 0;
        Poll::Ready(Ok(()))
    }

    /// Bytes this direction holds for a writer that has not taken them.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.pending.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Pumps `a`'s reads into `b` until `a` ends; returns the most the pump
    /// ever held.
    async fn pump_all<R, W>(r: &mut R, w: &mut W) -> usize
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut pump = Pump::default();
        let mut most = 0;
        poll_fn(|cx| {
            let p = pump.poll(cx, r, w);
            most = most.max(pump.held());
            p
        })
        .await;
        most
    }

    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_in_order_and_the_pump_holds_one_read_at_most() {
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (mut src, mut src_far) = tokio::io::duplex(64 * 1024);
        // A small pipe on the writer's side: most writes are partial.
        let (mut dst, mut dst_far) = tokio::io::duplex(1000);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            src_far.write_all(&sent).await.unwrap();
            src_far.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 777];
            loop {
                let n = dst_far.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let most = pump_all(&mut src, &mut dst).await;
        writer.await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ");
        assert!(
            most > 0,
            "no write was ever partial: the test proves nothing"
        );
        assert!(most <= READ_SIZE, "held {most} bytes");
    }

    #[tokio::test]
    async fn the_reader_ending_shuts_the_writer_down() {
        let (mut src, src_far) = tokio::io::duplex(1024);
        let (mut dst, mut dst_far) = tokio::io::duplex(1024);
        drop(src_far);
        pump_all(&mut src, &mut dst).await;
        // Without the shutdown this read would wait for ever: bounded, so
        // that the test fails instead of hanging.
        let mut rest = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            dst_far.read_to_end(&mut rest),
        )
        .await
        .expect("the writer was shut down")
        .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_writer_that_is_gone_ends_the_direction() {
        let (mut src, mut src_far) = tokio::io::duplex(1024);
        let (mut dst, dst_far) = tokio::io::duplex(16);
        drop(dst_far);
        src_far.write_all(b"nobody will read this").await.unwrap();
        // Ends without the reader ending: the write failed.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            pump_all(&mut src, &mut dst),
        )
        .await
        .expect("the pump ends when its writer is gone");
    }
}
