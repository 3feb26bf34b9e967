//! How Portico's HTTP/2 responses encode their headers (RFC 7541), read off
//! the wire by a client that writes its own frames: a request id, unique to
//! its request, is sent as a never-indexed literal and never enters the
//! dynamic table, while the headers that repeat still do.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::Backend;
use crate::support::gateway::{TestGateway, routes_yaml};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The representations of one header block, in order (RFC 7541 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// §6.1: a whole entry of the static or dynamic table.
    Indexed,
    /// §6.2.1: a literal added to the dynamic table.
    Incremental,
    /// §6.2.2: a literal left out of it (h2 writes `content-length` so).
    WithoutIndexing,
    /// §6.2.3: a literal that no hop may ever index.
    NeverIndexed,
}

/// An HPACK integer with an `n`-bit prefix at `b[*at]` (§5.1).
fn integer(b: &[u8], at: &mut usize, n: u32) -> usize {
    let max = (1usize << n) - 1;
    let mut v = usize::from(b[*at]) & max;
    *at += 1;
    if v < max {
        return v;
    }
    let mut shift = 0;
    loop {
        let byte = b[*at];
        *at += 1;
        v += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return v;
        }
    }
}

/// Skips a string literal (§5.2), Huffman-coded or not.
fn skip_string(b: &[u8], at: &mut usize) {
    let len = integer(b, at, 7);
    *at += len;
    assert!(*at <= b.len(), "a string runs past the block");
}

/// The representation of each field of `block` (size updates skipped).
fn fields(block: &[u8]) -> Vec<Field> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let b = block[at];
        let (kind, prefix) = match b {
            _ if b & 0x80 != 0 => {
                integer(block, &mut at, 7);
                out.push(Field::Indexed);
                continue;
            }
            _ if b & 0xc0 == 0x40 => (Field::Incremental, 6),
            _ if b & 0xe0 == 0x20 => {
                integer(block, &mut at, 5);
                continue;
            }
            _ if b & 0xf0 == 0x10 => (Field::NeverIndexed, 4),
            _ => (Field::WithoutIndexing, 4),
        };
        if integer(block, &mut at, prefix) == 0 {
            skip_string(block, &mut at); // the name, as a literal
        }
        skip_string(block, &mut at);
        out.push(kind);
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET path` for `localhost`: static-table names, literal values, nothing
/// indexed (so the request leaves the server's decoder table empty).
fn get(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    for (name_index, value) in [(4u8, path), (1, "localhost")] {
        block.push(name_index); // literal without indexing, indexed name
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    frame(HEADERS, END_STREAM | END_HEADERS, stream, &block)
}

/// Reads frames until the response head of `stream` is complete; returns
/// its header block (padding and priority removed, continuations joined).
async fn response_head(conn: &mut TcpStream, stream: u32) -> Vec<u8> {
    let mut block = Vec::new();
    loop {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).await.unwrap();
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.unwrap();
        if kind == SETTINGS && flags & 1 == 0 {
            conn.write_all(&frame(SETTINGS, 1, 0, &[])).await.unwrap();
        }
        if id != stream || (kind != HEADERS && kind != CONTINUATION) {
            continue;
        }
        let mut part = &payload[..];
        if kind == HEADERS {
            if flags & PADDED != 0 {
                let pad = usize::from(part[0]);
                part = &part[1..part.len() - pad];
            }
            if flags & PRIORITY != 0 {
                part = &part[5..];
            }
        }
        block.extend_from_slice(part);
        if flags & END_HEADERS != 0 {
            return block;
        }
    }
}

#[tokio::test]
async fn request_ids_are_never_indexed_and_repeating_headers_still_are() {
    let backend = Backend::start("hpack").await;
    let gw = TestGateway::start(&routes_yaml(&[("/api", &backend)])).await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    conn.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();

    let mut heads = Vec::new();
    for stream in [1, 3, 5] {
        conn.write_all(&get(stream, "/api/x")).await.unwrap();
        let block = tokio::time::timeout(Duration::from_secs(10), response_head(&mut conn, stream))
            .await
            .expect("a response head");
        heads.push(fields(&block));
    }
    assert_eq!(backend.seen().len(), 3, "every request was proxied");
    for (i, head) in heads.iter().enumerate() {
        // Exactly one never-indexed field in each response: `x-request-id`
        // (nothing else Portico or the backend sends is unique).
        let never = head.iter().filter(|f| **f == Field::NeverIndexed).count();
        assert_eq!(never, 1, "response {i}: {head:?}");
    }
    // The first response put the headers that repeat (the backend's
    // content-type, for one) in the table; later ones refer to them.
    assert!(heads[0].contains(&Field::Incremental), "{:?}", heads[0]);
    assert!(
        heads[2].iter().filter(|f| **f == Field::Indexed).count()
            > heads[0].iter().filter(|f| **f == Field::Indexed).count(),
        "later responses index what the first one added: {heads:?}"
    );
    // Closed first: the gateway would otherwise wait for the connection
    // to end when it drains.
    drop(conn);
    gw.shutdown().await;
}
