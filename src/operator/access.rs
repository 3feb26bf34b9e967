//! Who may use the operator listener. Two independent gates:
//!
//! * the TCP peer address against `operator.allow` — nothing else: no header
//!   (`x-forwarded-for`, `forwarded`, `x-real-ip`, ...) is ever consulted, so
//!   a client cannot talk its way in;
//! * for `/metrics` and `/routes` only, `Authorization: Bearer <token>` with
//!   the content of `operator.token_file`, compared in constant time.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use ipnet::IpNet;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// The CIDRs of `operator.allow`.
#[derive(Debug, Clone)]
pub struct AllowList {
    /// Never empty (the config rejects `allow: []`); loopback by default.
    nets: Vec<IpNet>,
}

impl AllowList {
    pub fn new(nets: Vec<IpNet>) -> Self {
        AllowList { nets }
    }

    /// True when `peer` — the TCP peer, never a header — lies in a listed net.
    ///
    /// `server.rs` already reports `::ffff:a.b.c.d` as `a.b.c.d`; unmapping
    /// again here keeps the decision right for any caller, so that a v4 rule
    /// can neither be bypassed nor fail to match through the v6 spelling.
    pub fn allows(&self, peer: IpAddr) -> bool {
        allows(&self.nets, peer)
    }
}

/// True when `peer` (the TCP peer) lies in one of `nets`, its IPv4-mapped
/// IPv6 spelling read as IPv4. Shared by `operator.allow` and the routes'
/// `allow_from`.
pub fn allows(nets: &[IpNet], peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|net| net.contains(&peer))
}

/// What [`TokenFile::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// The request carries the current token.
    Granted,
    /// No (single, well-formed) `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not the current one.
    Wrong,
    /// The token file is unreadable or empty. Fail-closed: nobody gets in.
    Unavailable,
}

/// `operator.token_file`, re-read on every check.
///
/// Reading per request is the simplest way to follow rotations, including
/// Kubernetes Secret mounts that swap a `..data` symlink without touching
/// mtimes; the protected endpoints are scraped every few seconds at most,
/// so the cost of reading a few bytes is nothing next to rendering metrics.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    /// The last read failure, so a broken file logs one error (and one
    /// "readable again") instead of one per scrape.
    failing: Mutex<Option<String>>,
}

impl TokenFile {
    pub fn new(path: PathBuf) -> Self {
        TokenFile {
            path,
            failing: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the request's bearer token against the file's current content.
    pub async fn check(&self, headers: &HeaderMap) -> TokenCheck {
        let Some(expected) = self.read().await else {
            return TokenCheck::Unavailable;
        };
        match bearer(headers) {
            None => TokenCheck::Missing,
            Some(presented) if token_eq(presented, &expected) => TokenCheck::Granted,
            Some(_) => TokenCheck::Wrong,
        }
    }

    /// The token, with surrounding whitespace (the trailing newline of
    /// `echo token > file`) removed; `None` when unreadable or empty.
    pub async fn read(&self) -> Option<Vec<u8>> {
        let result = match tokio::fs::read(&self.path).await {
            Ok(bytes) => {
                let token = bytes.trim_ascii();
                if token.is_empty() {
                    Err("the file is empty".to_owned())
                } else {
                    Ok(token.to_vec())
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let mut failing = self.failing.lock();
        match result {
            Ok(token) => {
                if failing.take().is_some() {
                    tracing::info!(file = %self.path.display(), "operator token file is readable again");
                }
                Some(token)
            }
            Err(error) => {
                if failing.as_deref() != Some(error.as_str()) {
                    // Fail-closed: /metrics and /routes answer 401 until fixed.
                    tracing::error!(
                        file = %self.path.display(),
                        error = %error,
                        "cannot use operator.token_file; /metrics and /routes answer 401 until it is fixed"
                    );
                    *failing = Some(error);
                }
                None
            }
        }
    }
}

/// The credentials of the request's one `Authorization: Bearer` header.
/// The scheme is case-insensitive (RFC 9110 §11.1); several `Authorization`
/// headers are ambiguous and count as none.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let value = value.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Token comparison that leaks neither where the first difference is nor
/// the token's length: both sides are hashed to 32 bytes first, and the
/// digests are compared without an early exit.
pub fn token_eq(presented: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
    constant_time_eq(&a, &b)
}

/// Byte equality whose running time depends only on the lengths. The
/// `black_box` keeps the optimizer from turning the fold into an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> AllowList {
        AllowList::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn allow_list_matches_the_peer_address() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["127.0.0.0/8"], "127.0.0.1", true),
            (&["127.0.0.0/8"], "127.255.0.9", true),
            (&["127.0.0.1/32"], "127.0.0.2", false),
            (&["127.0.0.1/32"], "::ffff:127.0.0.1", true),
            (&["127.0.0.1/32"], "::ffff:127.0.0.2", false),
            (&["10.0.0.0/8", "::1/128"], "::1", true),
            (&["10.0.0.0/8", "::1/128"], "10.1.2.3", true),
            (&["10.0.0.0/8", "::1/128"], "11.0.0.1", false),
            (&["::/0"], "192.0.2.1", false),
            (&["0.0.0.0/0"], "2001:db8::1", false),
        ];
        for (list, peer, want) in cases {
            assert_eq!(
                nets(list).allows(peer.parse().unwrap()),
                *want,
                "{list:?} {peer}"
            );
        }
    }

    #[test]
    fn bearer_header_parsing() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["Bearer s3cret"], Some("s3cret")),
            (&["bearer s3cret"], Some("s3cret")),
            (&["BEARER   s3cret  "], Some("s3cret")),
            (&["Basic czNjcmV0"], None),
            (&["Bearer"], None),
            (&["Bearer "], None),
            (&["Bearers3cret"], None),
            (&["s3cret"], None),
            (&["Bearer a", "Bearer a"], None),
            (&[], None),
        ];
        for (values, want) in cases {
            let mut h = HeaderMap::new();
            for v in *values {
                h.append(AUTHORIZATION, v.parse().unwrap());
            }
            assert_eq!(bearer(&h), want.map(str::as_bytes), "{values:?}");
        }
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(token_eq(b"token", b"token"));
        assert!(!token_eq(b"token", b"token2"));
        assert!(!token_eq(b"", b"token"));
    }

    #[tokio::test]
    async fn token_file_is_trimmed_reread_and_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let file = TokenFile::new(path.clone());
        let auth = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
            h
        };

        // Missing file: nobody gets in, not even with an empty token.
        assert_eq!(file.check(&auth("x")).await, TokenCheck::Unavailable);
        assert_eq!(file.check(&HeaderMap::new()).await, TokenCheck::Unavailable);

        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(file.check(&auth("first")).await, TokenCheck::Granted);
        assert_eq!(file.check(&auth(" first  ")).await, TokenCheck::Granted);
        assert_eq!(file.check(&auth("second")).await, TokenCheck::Wrong);
        assert_eq!(file.check(&HeaderMap::new()).await, TokenCheck::Missing);

        // Rotation takes effect on the next request.
        std::fs::write(&path, "second\r\n").unwrap();
        assert_eq!(file.check(&auth("second")).await, TokenCheck::Granted);
        assert_eq!(file.check(&auth("first")).await, TokenCheck::Wrong);

        // An empty file is a broken file, not "no token needed".
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(file.check(&HeaderMap::new()).await, TokenCheck::Unavailable);
    }
}
