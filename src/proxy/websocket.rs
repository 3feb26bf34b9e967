//! WebSockets over HTTP/2 (RFC 8441): the client opens an extended CONNECT
//! stream (`:protocol websocket`); Portico asks the backend for an ordinary
//! HTTP/1.1 WebSocket upgrade and, after its `101`, answers the stream
//! `200` and splices the stream with the backend's socket. The WebSocket
//! frames are the same on both sides, so nothing is translated.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::server::{Counted, Pump};

use super::body::GatewayBody;
use super::exchange::Exchange;

/// Headers of the backend's `101` that the client's `200` carries on.
const NEGOTIATED: [HeaderName; 2] = [
    HeaderName::from_static("sec-websocket-protocol"),
    HeaderName::from_static("sec-websocket-extensions"),
];

/// When the request is an extended CONNECT for `websocket`, turns it into
/// the HTTP/1.1 upgrade request the backend gets (GET, `Upgrade:
/// websocket`, a fresh `Sec-WebSocket-Key`) and returns the client
/// stream's upgrade.
pub fn from_extended_connect(parts: &mut http::request::Parts) -> Option<OnUpgrade> {
    let websocket = parts.method == Method::CONNECT
        && parts.version == Version::HTTP_2
        && parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return None;
    }
    let client = parts.extensions.remove::<OnUpgrade>()?;
    parts.method = Method::GET;
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::SEC_WEBSOCKET_KEY, key());
    if !h.contains_key(header::SEC_WEBSOCKET_VERSION) {
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    Some(client)
}

/// A random `Sec-WebSocket-Key`: 16 bytes, base64.
fn key() -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = [0u8; 18]; // 16 random bytes, padded to a multiple of 3
    raw[..8].copy_from_slice(&super::endpoints::random().to_be_bytes());
    raw[8..16].copy_from_slice(&super::endpoints::random().to_be_bytes());
    let mut out = Vec::with_capacity(24);
    for chunk in raw.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(B64[((n >> shift) & 63) as usize]);
        }
    }
    // 16 bytes are 22 digits and "==".
    out.truncate(22);
    out.extend_from_slice(b"==");
    HeaderValue::from_bytes(&out).expect("base64 is a valid header value")
}

/// The client's `200` for the backend's `101`, and the splice of the two
/// once both sides are upgraded, run on a task of its own. The request is
/// logged and counted when the splice ends, as one request (status 101).
pub fn over_h2(
    switched: Response<GatewayBody>,
    backend: OnUpgrade,
    mut x: Box<Exchange>,
    client: OnUpgrade,
    idle_timeout: Duration,
) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::empty());
    for name in NEGOTIATED {
        if let Some(v) = switched.headers().get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    if let Some(id) = switched.headers().get(&super::request_id::X_REQUEST_ID) {
        resp.headers_mut()
            .insert(super::request_id::X_REQUEST_ID.clone(), id.clone());
    }
    x.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
    x.outlive_request();
    let open = x.metrics.upgrades_open();
    open.inc();
    tokio::spawn(async move {
        let (from_client, to_client) = match (client.await, backend.await) {
            (Ok(c), Ok(b)) => splice(c, b, idle_timeout).await,
            _ => (0, 0),
        };
        open.dec();
        x.bytes_in = Some(from_client);
        x.bytes_out = to_client;
        x.finish(true);
    });
    resp
}

/// Copies both ways until both directions end or nothing has moved
/// either way for `idle_timeout`; returns the bytes from and to the client.
async fn splice(
    client: hyper::upgrade::Upgraded,
    backend: hyper::upgrade::Upgraded,
    idle_timeout: Duration,
) -> (u64, u64) {
    let mut c = Counted::new(TokioIo::new(client));
    let counts = c.counts();
    let mut b = TokioIo::new(backend);
    let check = (idle_timeout / 2).max(Duration::from_millis(25));
    let mut seen = (0, 0);
    let mut quiet_since = tokio::time::Instant::now();
    {
        // Both ways through `Pump`s: no buffer is held while quiet.
        let (mut up, mut down) = (Pump::default(), Pump::default());
        let copy = std::future::poll_fn(|cx| {
            let up = up.poll(cx, &mut c, &mut b);
            let down = down.poll(cx, &mut b, &mut c);
            if up.is_ready() && down.is_ready() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        });
        tokio::pin!(copy);
        let mut tick = tokio::time::interval(check);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut copy => break,
                _ = tick.tick() => {
                    let now = (counts.read(), counts.written());
                    if now != seen {
                        seen = now;
                        quiet_since = tokio::time::Instant::now();
                    } else if quiet_since.elapsed() >= idle_timeout {
                        tracing::debug!("closing idle WebSocket over HTTP/2");
                        break;
                    }
                }
            }
        }
    }
    (counts.read(), counts.written())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_random_bytes_in_base64() {
        let a = key();
        let b = key();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 24);
        assert!(s.ends_with("=="));
        assert!(
            s[..22]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        );
    }
}
