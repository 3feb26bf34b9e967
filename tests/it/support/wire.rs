//! Reading raw HTTP off a socket, for scripted peers that speak bytes
//! rather than hyper.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads until `buf` holds `marker`; the index just past it, or `None`
/// when the peer closed (or failed) first.
pub async fn read_until<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    marker: &[u8],
) -> Option<usize> {
    loop {
        if let Some(end) = after(buf, marker) {
            return Some(end);
        }
        if !read_more(s, buf).await {
            return None;
        }
    }
}

/// The index just past the first `marker` in `buf`.
pub fn after(buf: &[u8], marker: &[u8]) -> Option<usize> {
    buf.windows(marker.len())
        .position(|w| w == marker)
        .map(|i| i + marker.len())
}

/// Reads until `buf` holds a whole head (up to its empty line); the index
/// just past it, or `None` when the peer closed first.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<usize> {
    read_until(s, buf, b"\r\n\r\n").await
}

/// One read appended to `buf`; `false` at the end of the stream or on an
/// error.
pub async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
