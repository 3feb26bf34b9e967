//! Request path normalization (RFC 3986), run before routing.
//!
//! This module owns one decision: which spelling of a path Portico routes on
//! and forwards. [`normalize`] turns every equivalent spelling of a path
//! (`/x/../metrics`, `//metrics`, `/%6Detrics`, ...) into one canonical form,
//! and rejects the spellings that backends disagree about (encoded slashes and
//! backslashes, NUL, dot-segments that climb above `/`). The backend receives
//! the normalized path, so routing, the operator-path guard and the backend
//! always agree on what was asked.
//!
//! # Path parameters
//!
//! Servlet containers (Tomcat, Jetty, Undertow) and frameworks on them cut
//! every segment at its first `;` before they dispatch: `/metrics;x=1` is
//! `/metrics` to them, and `/a/..;x/metrics` is `/metrics`. So Portico reads a
//! segment the same way: its *name* is the part before the first raw `;`, and
//! the name alone decides whether the segment is empty, `.` or `..`.
//! [`normalize`] keeps the parameters of the segments that remain (a
//! `;jsessionid=...` still reaches the backend), and [`without_params`] gives
//! the spelling that the operator-path guard and the route matcher use. An
//! encoded `%3B` is data, not a separator, and stays encoded.

use std::borrow::Cow;

/// Why a request path was rejected; each one becomes `400 bad_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `..` segment would go above `/`. RFC 3986 would silently clamp it,
    /// but a client that sends one is probing, and clamping hides that.
    #[error("path climbs above the root")]
    AboveRoot,
    /// `%2F` / `%5C` in any case. Backends disagree on whether these split
    /// segments, so routing on them is ambiguous; nginx and Envoy reject too.
    #[error("path contains an encoded slash or backslash")]
    EncodedSeparator,
    /// `%00` or a raw NUL: truncates the path in C-based backends.
    #[error("path contains a NUL byte")]
    Nul,
    /// A raw `\`: some backends (IIS, Windows file servers) treat it as `/`.
    #[error("path contains a backslash")]
    Backslash,
    /// A percent-encoded overlong (or never valid) UTF-8 sequence:
    /// `%C0%AE` is `.` and `%C0%AF` is `/` to a lenient decoder (the old
    /// IIS and Tomcat traversal bypasses). No valid UTF-8 holds these bytes.
    #[error("path contains an invalid (overlong) UTF-8 encoding")]
    OverlongUtf8,
    /// `%` not followed by two hex digits (`%`, `%G1`, `%1`).
    #[error("path contains an invalid percent-encoding")]
    BadEncoding,
    /// A segment that is `.` or `..` followed by an encoded `;` (`..%3B`).
    /// Portico reads `%3B` as data, but a backend that decodes before it cuts
    /// path parameters would read `..`: refused, as encoded slashes are.
    #[error("path contains a dot-segment followed by an encoded ';'")]
    AmbiguousDotSegment,
    /// The path does not start with `/` (also the empty path).
    #[error("path must start with '/'")]
    NotAbsolute,
}

/// Normalizes the path part of a request URI (no query string).
///
/// In order, per segment: percent-encoded unreserved characters
/// (`ALPHA DIGIT - . _ ~`) are decoded, every other percent-encoding is kept
/// with uppercase hex digits; repeated slashes are merged; `.` and `..`
/// segments are removed (RFC 3986 §5.2.4), and a `..` above `/` is an error.
/// A trailing slash is kept, and a path ending in a dot-segment ends in `/`
/// (`/a/b/.` -> `/a/b/`, `/a/..` -> `/`). A segment is classified by its name
/// (the part before a raw `;`): `..;x` is `..`, `.;x` is `.`, and `;x` is an
/// empty segment; such segments are removed with their parameters.
///
/// Returns [`Cow::Borrowed`] exactly when the path is already normalized; the
/// common case (a clean path) is one scan over the bytes and no allocation.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normalized(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let out = normalize_slow(path)?;
    // Some paths take the slow path but come out unchanged (e.g. a raw
    // non-dot segment next to a canonical `%C3%A9`); callers use `Borrowed`
    // to mean "no need to rewrite the URI", so keep that promise.
    if out == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// The hot path: true when `path` (starting with `/`) is already in normal
/// form, i.e. [`normalize_slow`] would return it unchanged. Any doubt returns
/// false and leaves the decision, and the error, to the slow path.
#[inline]
fn is_normalized(b: &[u8]) -> bool {
    is_plain(b) || is_normalized_exact(b)
}

/// Most request paths hold none of `%`, `\\`, NUL, `//`, `/.` or `/;`. This check
/// has no early exit and no data-dependent branch, so the compiler can
/// vectorize it: on a 37-byte path, `normalize` took 13 ns with it against
/// 33 ns with the exact scan alone (benches/hot_path.rs).
#[inline]
fn is_plain(b: &[u8]) -> bool {
    let Some((&last, _)) = b.split_last() else {
        return true;
    };
    let mut suspicious = (last == b'%') | (last == b'\\') | (last == 0);
    for (&c, &next) in b.iter().zip(&b[1..]) {
        suspicious |= (c == b'%') | (c == b'\\') | (c == 0);
        suspicious |= (c == b'/') & ((next == b'/') | (next == b'.') | (next == b';'));
    }
    !suspicious
}

/// Exact version of [`is_normalized`] for the paths [`is_plain`] cannot
/// vouch for: `/.well-known`, canonical `%C3%A9`.
fn is_normalized_exact(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' => match b.get(i + 1) {
                Some(b'/' | b';') => return false,
                Some(b'.') if is_dot_segment(&b[i + 1..]) => return false,
                _ => {}
            },
            b'%' => {
                // Canonical only if it stays encoded and is already uppercase.
                match (b.get(i + 1), b.get(i + 2)) {
                    (Some(&h), Some(&l)) if is_upper_hex(h) && is_upper_hex(l) => {
                        if !stays_encoded((hex_val(h) << 4) | hex_val(l)) {
                            return false;
                        }
                    }
                    _ => return false,
                }
                i += 3;
                continue;
            }
            b'\\' | 0 => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// `rest` starts right after a `/` with a `.`: is that segment's name `.` or
/// `..` (parameters after a `;` do not count)? (`/.well-known` is an ordinary
/// segment and must stay on the fast path.)
#[inline]
fn is_dot_segment(rest: &[u8]) -> bool {
    // `.%3B` and `..%3B` are refused by the slow path; send them there.
    matches!(
        rest,
        [b'.']
            | [b'.', b'/' | b';', ..]
            | [b'.', b'%', b'3', b'B' | b'b', ..]
            | [b'.', b'.']
            | [b'.', b'.', b'/' | b';', ..]
            | [b'.', b'.', b'%', b'3', b'B' | b'b', ..]
    )
}

/// The full algorithm, one pass over the segments. Decoding happens per
/// segment before dot-segment removal, so `%2E%2E` is a `..`; decoding can
/// never create a `/` because `%2F` is an error.
///
/// Repeated slashes are merged *before* dot-segments are resolved, as nginx
/// does with `merge_slashes on`: `/a//../b` is `/b`, not RFC 3986's `/a/b`.
/// Either choice is safe here because the backend gets our output, not the
/// input; merging first means an empty segment can never be "climbed out of".
fn normalize_slow(path: &str) -> Result<String, PathError> {
    debug_assert!(path.starts_with('/'));
    let mut out = String::with_capacity(path.len());
    // Whether the output must end in '/': the last input segment was empty,
    // `.` or `..`.
    let mut trailing_slash = false;
    for raw in path[1..].split('/') {
        let start = out.len();
        out.push('/');
        decode_segment(raw, &mut out)?;
        // Decoding keeps `%3B` encoded, so the first raw ';' in the output
        // is where the parameters begin, as the client meant it.
        let segment = &out[start + 1..];
        let name = segment.split_once(';').map_or(segment, |(name, _)| name);
        if name.starts_with(".%3B") || name.starts_with("..%3B") {
            return Err(PathError::AmbiguousDotSegment);
        }
        match name {
            "" | "." => {
                out.truncate(start);
                trailing_slash = true;
            }
            ".." => {
                out.truncate(start);
                // Segments in `out` hold no '/', so the last one starts at the
                // last '/'. None left means `..` would climb above the root.
                let parent = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
                trailing_slash = true;
            }
            _ => trailing_slash = false,
        }
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The path as route matching and the operator-path guard read it: every
/// segment cut at its first `;` (`/billing/reports;jsessionid=1/x` ->
/// `/billing/reports/x`). `path` must come from [`normalize`], which has
/// already removed every segment whose name is empty or a dot-segment, so
/// cutting cannot create `//`, `.` or `..`. Borrowed when there is no `;`.
pub fn without_params(path: &str) -> Cow<'_, str> {
    if !path.as_bytes().contains(&b';') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split_once(';').map_or(segment, |(name, _)| name));
    }
    Cow::Owned(out)
}

/// Number of non-empty segments in a route path (`/` has none).
pub fn segments(route_path: &str) -> usize {
    route_path.split('/').filter(|s| !s.is_empty()).count()
}

/// `path` without its first `n` segments (never empty: at least `/`), for
/// `strip_prefix`. Segments are counted rather than bytes compared because
/// the request may carry path parameters that the route path has not
/// (`/billing;v=1/x` under `/billing` becomes `/x`).
pub fn strip_segments(path: &str, n: usize) -> &str {
    let mut end = 0;
    for _ in 0..n {
        end = match path.get(end + 1..).and_then(|rest| rest.find('/')) {
            Some(i) => end + 1 + i,
            None => path.len(),
        };
    }
    match &path[end..] {
        "" => "/",
        rest => rest,
    }
}

/// Appends `raw` (one segment, no '/') to `out` with percent-encodings made
/// canonical, rejecting the bytes listed in [`PathError`].
fn decode_segment(raw: &str, out: &mut String) -> Result<(), PathError> {
    let b = raw.as_bytes();
    // Start of the run of bytes copied verbatim. Runs are split only at ASCII
    // bytes, so every slice `raw[run..i]` lies on char boundaries.
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                out.push_str(&raw[run..i]);
                let (h, l) = match (b.get(i + 1), b.get(i + 2)) {
                    (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                        (h, l)
                    }
                    _ => return Err(PathError::BadEncoding),
                };
                let byte = (hex_val(h) << 4) | hex_val(l);
                if is_overlong(byte, encoded_at(b, i + 3)) {
                    return Err(PathError::OverlongUtf8);
                }
                match byte {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    _ if is_unreserved(byte) => out.push(char::from(byte)),
                    _ => {
                        out.push('%');
                        out.push(char::from(h.to_ascii_uppercase()));
                        out.push(char::from(l.to_ascii_uppercase()));
                    }
                }
                i += 3;
                run = i;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            _ => i += 1,
        }
    }
    out.push_str(&raw[run..]);
    Ok(())
}

/// The byte a `%XX` at `i` encodes, if there is one.
fn encoded_at(b: &[u8], i: usize) -> Option<u8> {
    match (b.get(i), b.get(i + 1), b.get(i + 2)) {
        (Some(b'%'), Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
            Some((hex_val(h) << 4) | hex_val(l))
        }
        _ => None,
    }
}

/// Whether an encoded byte (and the encoded byte after it) starts an
/// overlong or never-valid UTF-8 sequence: `C0`/`C1` (overlong two-byte
/// forms of ASCII), `F5`-`FF`, `E0` before `80`-`9F` and `F0` before
/// `80`-`8F` (overlong three- and four-byte forms).
#[inline]
fn is_overlong(byte: u8, next: Option<u8>) -> bool {
    match byte {
        0xC0 | 0xC1 | 0xF5..=0xFF => true,
        0xE0 => matches!(next, Some(0x80..=0x9F)),
        0xF0 => matches!(next, Some(0x80..=0x8F)),
        _ => false,
    }
}

/// RFC 3986 §2.3 unreserved characters: equivalent whether encoded or not,
/// so they are always decoded.
#[inline]
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Whether a percent-encoded byte is kept encoded in normal form (as opposed
/// to decoded, or rejected). The fast path's view: bytes that may start an
/// overlong sequence (`E0`, `F0` and the never-valid ones) are left to the
/// slow path, which looks at the byte after them.
#[inline]
fn stays_encoded(byte: u8) -> bool {
    !is_unreserved(byte)
        && !matches!(
            byte,
            0 | b'/' | b'\\' | 0xC0 | 0xC1 | 0xE0 | 0xF0 | 0xF5..=0xFF
        )
}

#[inline]
fn is_upper_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'A'..=b'F').contains(&c)
}

/// Value of one hex digit; callers have checked `c` is a hex digit.
#[inline]
fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathError::*;
    use proptest::prelude::*;

    /// (input, expected). Hostile spellings of `/metrics` come first: they
    /// are why this module exists (DESIGN §Request path, step 4).
    const CASES: &[(&str, Result<&str, PathError>)] = &[
        // Operator path in disguise: all must become exactly "/metrics".
        ("/metrics", Ok("/metrics")),
        ("/x/../metrics", Ok("/metrics")),
        ("//metrics", Ok("/metrics")),
        ("/%6Detrics", Ok("/metrics")),
        ("/%6d%65trics", Ok("/metrics")),
        ("/./metrics", Ok("/metrics")),
        ("/metrics/.", Ok("/metrics/")),
        ("/a/%2e%2e/metrics", Ok("/metrics")),
        ("/a/%2E%2E/metrics", Ok("/metrics")),
        ("/a/.%2e/metrics", Ok("/metrics")),
        ("/%2e/metrics", Ok("/metrics")),
        ("///a/b/../../metrics", Ok("/metrics")),
        ("/%4D%45%54%52%49%43%53", Ok("/METRICS")), // case is significant
        // Climbing above the root.
        ("/..", Err(AboveRoot)),
        ("/../", Err(AboveRoot)),
        ("/a/../..", Err(AboveRoot)),
        ("/%2e%2e", Err(AboveRoot)),
        ("/%2e%2e/x", Err(AboveRoot)),
        ("/a/b/../../..", Err(AboveRoot)),
        ("//..", Err(AboveRoot)),
        ("/./..", Err(AboveRoot)),
        // Encoded separators, NUL, backslash, bad encodings.
        ("/a%2fb", Err(EncodedSeparator)),
        ("/a%2Fb", Err(EncodedSeparator)),
        ("/a%5Cb", Err(EncodedSeparator)),
        ("/a%5cb", Err(EncodedSeparator)),
        ("/a\\b", Err(Backslash)),
        ("/a%00", Err(Nul)),
        ("/a\0b", Err(Nul)),
        ("/%zz", Err(BadEncoding)),
        ("/%", Err(BadEncoding)),
        ("/a%1", Err(BadEncoding)),
        ("/%G1", Err(BadEncoding)),
        ("/%1G", Err(BadEncoding)),
        ("/%%41", Err(BadEncoding)),
        ("/%\u{e9}", Err(BadEncoding)),
        // Not absolute.
        ("", Err(NotAbsolute)),
        ("metrics", Err(NotAbsolute)),
        ("*", Err(NotAbsolute)),
        // Already normal: unchanged.
        ("/", Ok("/")),
        ("/billing/reports", Ok("/billing/reports")),
        ("/billing/reports/", Ok("/billing/reports/")),
        ("/.well-known/acme", Ok("/.well-known/acme")),
        ("/a/..b/c.", Ok("/a/..b/c.")),
        ("/a/...", Ok("/a/...")),
        ("/caf\u{e9}", Ok("/caf\u{e9}")),
        (
            "/a:b@c;d=e,f+g!h$i&j'k(l)m*n",
            Ok("/a:b@c;d=e,f+g!h$i&j'k(l)m*n"),
        ),
        // Percent-encodings: decode unreserved, uppercase the rest.
        ("/caf%C3%A9", Ok("/caf%C3%A9")),
        ("/caf%c3%a9", Ok("/caf%C3%A9")),
        ("/a%3ab", Ok("/a%3Ab")),
        ("/a%20b", Ok("/a%20b")),
        ("/%25", Ok("/%25")),
        ("/%2541", Ok("/%2541")), // '%' stays encoded: no double decoding
        ("/%7e%5F%2D%2e%30%7A", Ok("/~_-.0z")),
        ("/%7B%7D", Ok("/%7B%7D")),
        // Slashes and dot-segments.
        ("//a///b", Ok("/a/b")),
        ("//", Ok("/")),
        ("/a//", Ok("/a/")),
        ("/a/./b", Ok("/a/b")),
        ("/a/b/../c", Ok("/a/c")),
        ("/a/b/.", Ok("/a/b/")),
        ("/a/b/..", Ok("/a/")),
        ("/a/..", Ok("/")),
        ("/a/../", Ok("/")),
        ("/.", Ok("/")),
        ("/./", Ok("/")),
        ("/a//../b", Ok("/b")), // slashes merged first (nginx), see normalize_slow
        ("/a/./../b/./c/", Ok("/b/c/")),
        // Path parameters: the name before ';' decides what a segment is.
        ("/metrics;x=1", Ok("/metrics;x=1")),
        ("/foo/..;/metrics", Ok("/metrics")),
        ("/foo/..;x=1/metrics", Ok("/metrics")),
        ("/foo/.;x/metrics", Ok("/foo/metrics")),
        ("/foo/%2e%2e;x/metrics", Ok("/metrics")),
        ("/foo/%2E.;/metrics", Ok("/metrics")),
        ("/foo/%2e;x/bar", Ok("/foo/bar")),
        ("/;x/metrics", Ok("/metrics")),
        ("/a/;/b", Ok("/a/b")),
        ("/a/;x", Ok("/a/")),
        ("/a/..;", Ok("/")),
        ("/a/b;c/..;d/e", Ok("/a/e")),
        ("/..;", Err(AboveRoot)),
        ("/a/..;/..;/x", Err(AboveRoot)),
        (
            "/billing/reports;jsessionid=abc",
            Ok("/billing/reports;jsessionid=abc"),
        ),
        ("/a;b;c/d", Ok("/a;b;c/d")),
        ("/a%3Bb/c%3B/d", Ok("/a%3Bb/c%3B/d")), // %3B is data, not a separator
        ("/a%3bx", Ok("/a%3Bx")),
        ("/a/..%3B/metrics", Err(AmbiguousDotSegment)),
        ("/a/.%3bx/metrics", Err(AmbiguousDotSegment)),
        ("/a/%2e%2e%3b/metrics", Err(AmbiguousDotSegment)),
        ("/a/...%3B/b", Ok("/a/...%3B/b")),
        ("/a/x..%3B/b", Ok("/a/x..%3B/b")),
        ("/a;x%2Fy", Err(EncodedSeparator)),
        // Overlong UTF-8: `.` and `/` to a lenient decoder.
        ("/a/%C0%AE%C0%AE/metrics", Err(OverlongUtf8)),
        ("/a/%c0%af/metrics", Err(OverlongUtf8)),
        ("/a%C1%9C", Err(OverlongUtf8)),
        ("/a/%E0%80%AE", Err(OverlongUtf8)),
        ("/a/%F0%80%80%AE", Err(OverlongUtf8)),
        ("/a%FF", Err(OverlongUtf8)),
        ("/%E0%A4%B9", Ok("/%E0%A4%B9")), // a real three-byte character (Devanagari)
        ("/%F0%9F%98%80", Ok("/%F0%9F%98%80")), // and a four-byte one (emoji)
    ];

    /// (normalized path, what matching sees).
    const WITHOUT_PARAMS: &[(&str, &str)] = &[
        ("/metrics;x=1", "/metrics"),
        ("/billing/reports;jsessionid=abc", "/billing/reports"),
        (
            "/billing/reports;jsessionid=abc/2024",
            "/billing/reports/2024",
        ),
        ("/a;b;c/d;e/", "/a/d/"),
        ("/a%3Bb", "/a%3Bb"),
        ("/", "/"),
        ("/plain/path", "/plain/path"),
    ];

    #[test]
    fn strip_segments_counts_segments_not_bytes() {
        let cases = [
            ("/billing/x", 1, "/x"),
            ("/billing", 1, "/"),
            ("/billing/", 1, "/"),
            ("/billing;v=1/x", 1, "/x"),
            ("/billing;v=1", 1, "/"),
            ("/a/b;c/d/e", 2, "/d/e"),
            ("/a", 0, "/a"),
            ("/", 0, "/"),
            ("/a", 3, "/"),
        ];
        for (path, n, want) in cases {
            assert_eq!(
                strip_segments(path, n),
                want,
                "strip_segments({path:?}, {n})"
            );
        }
        assert_eq!(
            (segments("/"), segments("/a/b"), segments("/a/b/")),
            (0, 2, 2)
        );
    }

    #[test]
    fn params_are_cut_for_matching() {
        for &(path, want) in WITHOUT_PARAMS {
            assert_eq!(without_params(path), want, "without_params({path:?})");
        }
        assert!(matches!(without_params("/a/b"), Cow::Borrowed(_)));
    }

    #[test]
    fn table() {
        assert!(CASES.len() >= 40);
        for &(input, want) in CASES {
            let got = normalize(input);
            assert_eq!(got.as_deref().map_err(|e| *e), want, "normalize({input:?})");
        }
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for p in [
            "/",
            "/billing/reports/2024/q1",
            "/a/",
            "/.well-known",
            "/caf%C3%A9",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p:?}");
        }
        for p in ["//a", "/a/./b", "/%6D", "/%c3%a9"] {
            assert!(matches!(normalize(p), Ok(Cow::Owned(_))), "{p:?}");
        }
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(AboveRoot.to_string(), "path climbs above the root");
        assert_eq!(NotAbsolute.to_string(), "path must start with '/'");
    }

    /// Paths made of the pieces hostile clients use, so that dot-segments,
    /// encodings and repeated slashes collide often.
    fn hostile_path() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/",
            "/",
            "/",
            ".",
            "..",
            "a",
            "b",
            "metrics",
            "%2e",
            "%2E",
            "%6d",
            "%6D",
            "%41",
            "%3a",
            "%3A",
            ";",
            ";x=1",
            "%3B",
            "%C3%A9",
            "%c3%a9",
            "%C0%AE",
            "%E0%80%AE",
            "%E0%A4%B9",
            "%25",
            "%2f",
            "%5C",
            "%00",
            "%",
            "%g",
            "\\",
            "é",
            "-",
            "~",
            "_",
            ".well-known",
        ]);
        prop::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn output_is_normal_and_idempotent(p in hostile_path()) {
            if let Ok(once) = normalize(&p) {
                let twice = normalize(&once).expect("normal form must be accepted");
                prop_assert_eq!(&*twice, &*once);
                prop_assert!(matches!(twice, Cow::Borrowed(_)), "normal form must take the fast path");
                prop_assert!(once.starts_with('/'));
                for bad in ["//", "/./", "/../"] {
                    prop_assert!(!once.contains(bad), "{:?} -> {:?} contains {:?}", p, once, bad);
                }
                prop_assert!(!once.ends_with("/.") && !once.ends_with("/.."), "{:?} -> {:?}", p, once);
                // No segment's name is empty (but the last), `.` or `..`.
                let matched = without_params(&once);
                let segments: Vec<&str> = matched[1..].split('/').collect();
                for (i, s) in segments.iter().enumerate() {
                    prop_assert!(*s != "." && *s != "..", "{:?} -> {:?}", p, matched);
                    prop_assert!(!s.is_empty() || i + 1 == segments.len(), "{:?} -> {:?}", p, matched);
                }
            }
        }

        #[test]
        fn fast_path_agrees_with_slow_path(p in hostile_path()) {
            prop_assert!(!is_plain(p.as_bytes()) || is_normalized_exact(p.as_bytes()));
            if is_normalized(p.as_bytes()) {
                prop_assert_eq!(normalize_slow(&p), Ok(p.clone()));
            }
        }

        #[test]
        fn arbitrary_input_never_panics(p in "/\\PC{0,40}") {
            if let Ok(once) = normalize(&p) {
                let twice = normalize(&once);
                prop_assert_eq!(twice.as_deref(), Ok(&*once));
            }
        }
    }
}
