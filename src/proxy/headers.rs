//! Header rewriting at the proxy boundary: hop-by-hop headers are removed in
//! both directions (RFC 9110 §7.6.1) and the `x-forwarded-*` set is added on
//! the way up.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Version, request};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, never the message.
fn fixed_hop_by_hop() -> [&'static HeaderName; 7] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Marks a value that no other request carries (a request id, a span id) so
/// that HPACK writes it as a literal outside the dynamic table (RFC 7541
/// §6.2.3): indexing it would only evict an entry that does repeat (the
/// backend's `server`, `content-type`) to make room for one that never
/// will. Costs nothing over HTTP/1.1.
pub fn never_indexed(value: &mut HeaderValue) {
    value.set_sensitive(true);
}

/// Standard names compare as enum tags; the two others by their bytes.
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    fixed_hop_by_hop().into_iter().any(|h| h == name)
}

/// Removes the fixed hop-by-hop headers and every header that `Connection`
/// names. One pass over the map finds them: cheaper than a lookup per
/// name, and nearly every message has none or only `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut found: [Option<HeaderName>; 4] = Default::default();
    let mut n = 0;
    for name in headers.keys() {
        if is_fixed_hop_by_hop(name) {
            if n == found.len() {
                // Unusually many: look each one up instead.
                return strip_each(headers);
            }
            found[n] = Some(name.clone());
            n += 1;
        }
    }
    if n == 0 {
        return;
    }
    remove_connection_named(headers);
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
}

/// [`strip_hop_by_hop`] by one lookup per fixed name.
fn strip_each(headers: &mut HeaderMap) {
    remove_connection_named(headers);
    for name in fixed_hop_by_hop() {
        headers.remove(name);
    }
}

/// The items of a comma-separated header, over all its lines, trimmed
/// (empty items included: some lists must refuse them).
pub fn list_items<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Removes the headers every `Connection` line names.
fn remove_connection_named(headers: &mut HeaderMap) {
    // Clones of the values are reference counts: the names they list can
    // then be removed from the map they came from. The first two lines are
    // held without allocating (an empty Vec allocates nothing), and
    // removing by `&str` looks a name up without building a `HeaderName`.
    let mut all = headers.get_all(&header::CONNECTION).iter();
    let (first, second) = (all.next().cloned(), all.next().cloned());
    let rest: Vec<HeaderValue> = all.cloned().collect();
    for line in first.iter().chain(second.iter()).chain(rest.iter()) {
        for token in line.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            // The usual tokens name no header of their own.
            if token.is_empty()
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("close")
            {
                continue;
            }
            headers.remove(token);
        }
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade`, with
/// `upgrade` among its `Connection` tokens), if it does.
pub fn upgrade_requested(parts: &http::request::Parts) -> Option<http::HeaderValue> {
    if parts.version != http::Version::HTTP_11 {
        return None;
    }
    let asks =
        list_items(&parts.headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    if !asks {
        return None;
    }
    parts.headers.get(&header::UPGRADE).cloned()
}

/// A request head whose meaning is ambiguous: two parties (Portico and a
/// backend, or a cache in between) could read it differently, which is how
/// request smuggling and host confusion start. Refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("the Host header differs from the authority of the request target")]
    HostMismatch,
}

/// RFC 9112 §3.2 (Host), §3.2.2 and RFC 9113 §8.3.1 (a target authority
/// and a Host that disagree). Ambiguous message length is hyper's to judge
/// before a request gets here: with both Transfer-Encoding and
/// Content-Length it frames by chunked, drops Content-Length and closes the
/// connection after the response (RFC 9112 §6.3).
pub fn check_head(parts: &request::Parts) -> Result<(), HeadError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadError::DuplicateHost);
    }
    match (host, parts.uri.authority()) {
        (None, None) if parts.version == Version::HTTP_11 => return Err(HeadError::MissingHost),
        // HTTP/2's `:authority`, or an HTTP/1.1 absolute-form target.
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
            return Err(HeadError::HostMismatch);
        }
        _ => {}
    }
    Ok(())
}

/// Everything about the client connection the upstream should learn.
pub struct Forwarded<'a> {
    /// The TCP peer's address: the only client address Portico can vouch
    /// for (`ConnInfo::peer_text`).
    pub peer: &'a HeaderValue,
    /// `"http"` or `"https"`: the scheme the client used.
    pub proto: &'static HeaderValue,
    /// The host the client asked for (`Host`, or the `:authority` of HTTP/2).
    pub host: Option<&'a HeaderValue>,
}

pub static PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
pub static PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Appends the peer to `x-forwarded-for` and sets `x-forwarded-proto` and
/// `x-forwarded-host` (replacing what the client sent: it cannot be trusted).
pub fn add_forwarded(headers: &mut HeaderMap, fwd: &Forwarded<'_>) {
    // Every incoming XFF line is kept, in order, and the peer goes last.
    let mut earlier = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .peekable();
    if earlier.peek().is_none() {
        // The common case: the peer alone, shared with the connection.
        headers.insert(X_FORWARDED_FOR.clone(), fwd.peer.clone());
    } else {
        let mut xff = String::with_capacity(64);
        for s in earlier {
            xff.push_str(s);
            xff.push_str(", ");
        }
        xff.push_str(fwd.peer.to_str().unwrap_or_default());
        // The string's buffer becomes the value: no copy.
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), fwd.proto.clone());
    match fwd.host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// Approximate size of the request head, as counted against
/// `limits.max_header_size`: every name and value plus `": "` and CRLF.
pub fn head_size(headers: &HeaderMap, uri_len: usize) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, X-Other,, close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("host", "example.com"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept", "host"]);

        // Every Connection line counts, not only the first.
        let mut h = map(&[
            ("connection", "x-a"),
            ("connection", "x-b"),
            ("connection", "x-c, keep-alive"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-c", "3"),
            ("x-kept", "4"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);

        // More fixed hop-by-hop names than one pass collects.
        let mut h = map(&[
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "h2c"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "5"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);

        // Nothing hop-by-hop: nothing changes.
        let mut h = map(&[("host", "a"), ("x-kept", "6")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn ambiguous_heads_are_named() {
        let head = |version: Version, target: &str, hosts: &[&str]| {
            let mut b = http::Request::builder().version(version).uri(target);
            for h in hosts {
                b = b.header(header::HOST, *h);
            }
            b.body(()).unwrap().into_parts().0
        };
        use HeadError::*;
        let v11 = Version::HTTP_11;
        let cases = [
            (head(v11, "/a", &["x"]), Ok(())),
            (head(v11, "/a", &["x", "x"]), Err(DuplicateHost)),
            (head(v11, "/a", &[]), Err(MissingHost)),
            (head(Version::HTTP_10, "/a", &[]), Ok(())),
            (head(v11, "http://x/a", &[]), Ok(())),
            (head(v11, "http://x:8080/a", &["X:8080"]), Ok(())),
            (head(v11, "http://x/a", &["y"]), Err(HostMismatch)),
            (head(Version::HTTP_2, "http://x/a", &[]), Ok(())),
            (
                head(Version::HTTP_2, "http://x/a", &["x:443"]),
                Err(HostMismatch),
            ),
        ];
        for (i, (parts, want)) in cases.into_iter().enumerate() {
            assert_eq!(check_head(&parts), want, "case {i}: {parts:?}");
        }
    }

    #[test]
    fn appends_forwarded_for_and_overwrites_proto_and_host() {
        let host = HeaderValue::from_static("api.example.com");
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        add_forwarded(
            &mut h,
            &Forwarded {
                peer: &HeaderValue::from_static("127.0.0.1"),
                proto: &PROTO_HTTP,
                host: Some(&host),
            },
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.51.100.7, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");

        let mut fresh = HeaderMap::new();
        add_forwarded(
            &mut fresh,
            &Forwarded {
                peer: &HeaderValue::from_static("::1"),
                proto: &PROTO_HTTPS,
                host: None,
            },
        );
        assert_eq!(fresh["x-forwarded-for"], "::1");
        assert!(fresh.get("x-forwarded-host").is_none());
    }
}
