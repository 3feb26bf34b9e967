//! Segment-wise longest-prefix matching (Kubernetes Ingress `pathType:
//! Prefix`) on a `matchit` radix tree.
//!
//! This module owns the matching rule of DESIGN §Request path step 5 and
//! nothing else: it knows prefixes and opaque values, not routes, backends or
//! reloads. The caller ([`super::path::normalize`] first) hands it a
//! normalized path.

use std::fmt;

use super::path::{self, PathError};

/// Kubernetes Ingress `pathType: Prefix` matcher: `/a/b` matches `/a/b`,
/// `/a/b/`, `/a/b/...`, never `/a/bc`; `/` matches everything; longest
/// matching prefix wins; lookup cost does not grow with the number of
/// prefixes (radix tree).
///
/// Matching is case-sensitive and byte-literal: characters that `matchit`
/// treats specially in *routes* (`{`, `}`, `*`) are plain bytes in a looked-up
/// path. Non-ASCII prefixes are matched as written; real request paths carry
/// non-ASCII bytes percent-encoded (`/caf%C3%A9`), so that is the spelling a
/// prefix needs in order to match them.
///
/// How it works (as axum's `nest`): prefix `/a/b` is registered in matchit as
/// the two routes `/a/b` and `/a/b/{*rest}`, and `/` as `/` and `/{*rest}`,
/// both pointing at the same index into `entries`. A looked-up path loses one
/// trailing slash first (`/a/b/` is looked up as `/a/b`): prefixes have no
/// empty segments, so that changes no match, and it saves registering
/// `/a/b/` too, a third of the tree's build time for large tables. matchit prefers
/// static segments over a catch-all and backtracks to the last catch-all it
/// passed when a static branch dead-ends, which is exactly "longest matching
/// prefix, segment-wise" (`/aaa/bbbx` falls back to `/aaa`'s catch-all). The
/// property test below checks this against a naive reference on random tables;
/// no fallback walk was needed.
#[derive(Clone)]
pub struct PrefixRouter<T> {
    /// Radix tree from matchit route to index in `entries`. Values live
    /// outside the tree because each prefix owns three routes.
    router: matchit::Router<usize>,
    /// Prefixes and values in insertion order, for `iter` (route listings
    /// and `/routes` show the table as the operator wrote it).
    entries: Vec<(Box<str>, T)>,
}

/// Why a prefix was refused. Messages name the prefix and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error("invalid route prefix {prefix:?}: {reason}")]
    Invalid {
        prefix: String,
        reason: InvalidPrefix,
    },
    /// Requests are matched after [`path::normalize`], so a prefix that is not
    /// itself normalized could never match; refuse it rather than let a typo
    /// silently do nothing.
    #[error(
        "route prefix {prefix:?} is not in normalized form and could never match a request; \
         write {normalized:?}"
    )]
    NotNormalized { prefix: String, normalized: String },
    #[error("route prefix {prefix:?} is declared more than once")]
    Duplicate { prefix: String },
    /// matchit refused one of the routes derived from the prefix. Validation
    /// above should make this unreachable; it is kept typed rather than
    /// unwrapped so a future matchit rule change surfaces as a config error.
    /// (matchit's message names the conflicting route, so the derived route is
    /// not stored here: that keeps this enum small, see `error_is_small`.)
    #[error("route prefix {prefix:?} could not be added to the route tree")]
    Router {
        prefix: String,
        #[source]
        source: matchit::InsertError,
    },
}

/// The rule an invalid prefix broke (the `reason` of [`PrefixError::Invalid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPrefix {
    #[error("a prefix must not be empty; use \"/\" to match every path")]
    Empty,
    #[error("a prefix must start with '/'")]
    NotAbsolute,
    #[error(
        "a prefix must not end with '/'; write it without the slash, it still matches \
         the path with a trailing slash and everything below it"
    )]
    TrailingSlash,
    #[error("a prefix must not contain {0:?}: prefixes are literal, not route patterns")]
    ReservedChar(char),
    #[error("{0}")]
    Path(PathError),
}

impl<T> PrefixRouter<T> {
    pub fn new() -> Self {
        Self {
            router: matchit::Router::new(),
            entries: Vec::new(),
        }
    }

    /// Adds `prefix` (see [`PrefixError`] for what is refused). On error the
    /// router is unchanged.
    pub fn insert(&mut self, prefix: &str, value: T) -> Result<(), PrefixError> {
        validate(prefix)?;
        let index = self.entries.len();
        // Validation rejected '{' and '}', so the prefix needs no escaping.
        let routes = if prefix == "/" {
            ["/".to_owned(), "/{*rest}".to_owned()]
        } else {
            [prefix.to_owned(), format!("{prefix}/{{*rest}}")]
        };
        for (done, route) in routes.iter().enumerate() {
            if let Err(source) = self.router.insert(route.as_str(), index) {
                // Undo the routes already added so a failed insert leaves no
                // index pointing past the end of `entries`.
                for added in &routes[..done] {
                    self.router.remove(added.as_str());
                }
                // The prefix's own static route is taken only by the same
                // prefix: a duplicate, found without a lookup of our own.
                if done == 0 && matches!(source, matchit::InsertError::Conflict { .. }) {
                    return Err(PrefixError::Duplicate {
                        prefix: prefix.to_owned(),
                    });
                }
                return Err(PrefixError::Router {
                    prefix: prefix.to_owned(),
                    source,
                });
            }
        }
        self.entries.push((prefix.into(), value));
        Ok(())
    }

    /// The value of the longest prefix matching `path` segment-wise. `path`
    /// must already be normalized ([`path::normalize`]).
    #[inline]
    pub fn lookup(&self, path: &str) -> Option<&T> {
        self.lookup_entry(path).map(|(_, value)| value)
    }

    /// Like [`lookup`](Self::lookup), also returning the prefix that matched
    /// (for `portico routes --match` and the `route` metric label).
    #[inline]
    pub fn lookup_entry(&self, path: &str) -> Option<(&str, &T)> {
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        let matched = self.router.at(path).ok()?;
        let (prefix, value) = &self.entries[*matched.value];
        Some((prefix, value))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Prefixes and values in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries
            .iter()
            .map(|(prefix, value)| (&**prefix, value))
    }
}

impl<T> Default for PrefixRouter<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for PrefixRouter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The matchit tree is derived from `entries`; showing it adds noise.
        f.debug_map().entries(self.iter()).finish()
    }
}

fn validate(prefix: &str) -> Result<(), PrefixError> {
    let invalid = |reason| PrefixError::Invalid {
        prefix: prefix.to_owned(),
        reason,
    };
    if prefix.is_empty() {
        return Err(invalid(InvalidPrefix::Empty));
    }
    if !prefix.starts_with('/') {
        return Err(invalid(InvalidPrefix::NotAbsolute));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(invalid(InvalidPrefix::TrailingSlash));
    }
    // matchit route syntax; refused rather than escaped so a prefix can never
    // be mistaken for a pattern by a reader either.
    if let Some(c) = prefix.chars().find(|c| matches!(c, '{' | '}' | '*')) {
        return Err(invalid(InvalidPrefix::ReservedChar(c)));
    }
    match path::normalize(prefix) {
        Ok(normalized) if normalized == prefix => Ok(()),
        Ok(normalized) => Err(PrefixError::NotNormalized {
            prefix: prefix.to_owned(),
            normalized: normalized.into_owned(),
        }),
        Err(e) => Err(invalid(InvalidPrefix::Path(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn router(prefixes: &[&'static str]) -> PrefixRouter<&'static str> {
        let mut r = PrefixRouter::new();
        for p in prefixes {
            r.insert(p, *p)
                .unwrap_or_else(|e| panic!("insert {p:?}: {e}"));
        }
        r
    }

    /// (prefixes, path, expected prefix).
    type Row = (&'static [&'static str], &'static str, Option<&'static str>);

    /// Every row of shared/testdata/ingress-prefix-examples.md ("any path"
    /// for `/` expanded to several).
    const KUBERNETES_DOCS: &[Row] = &[
        (&["/"], "/", Some("/")),
        (&["/"], "/foo", Some("/")),
        (&["/"], "/foo/bar/", Some("/")),
        (&["/foo"], "/foo", Some("/foo")),
        (&["/foo"], "/foo/", Some("/foo")),
        (&["/aaa/bb"], "/aaa/bbb", None),
        (&["/aaa/bbb"], "/aaa/bbb", Some("/aaa/bbb")),
        (&["/aaa/bbb"], "/aaa/bbb/", Some("/aaa/bbb")),
        (&["/aaa/bbb"], "/aaa/bbb/ccc", Some("/aaa/bbb")),
        (&["/aaa/bbb"], "/aaa/bbbxyz", None),
        (&["/", "/aaa"], "/aaa/ccc", Some("/aaa")),
        (&["/", "/aaa", "/aaa/bbb"], "/aaa/bbb", Some("/aaa/bbb")),
        (&["/", "/aaa", "/aaa/bbb"], "/ccc", Some("/")),
        (&["/aaa"], "/ccc", None),
    ];

    const BILLING: &[&str] = &["/billing", "/billing/reports", "/orders"];
    const DEEP: &[&str] = &["/", "/a", "/a/b/c", "/a/b/c/d"];

    const MORE: &[Row] = &[
        (BILLING, "/billing/reports", Some("/billing/reports")),
        (BILLING, "/billing/reports/", Some("/billing/reports")),
        (
            BILLING,
            "/billing/reports/2024/q1",
            Some("/billing/reports"),
        ),
        (BILLING, "/billing/reportsX", Some("/billing")),
        (BILLING, "/billing/report", Some("/billing")),
        (BILLING, "/billing/", Some("/billing")),
        (BILLING, "/billingX", None),
        (BILLING, "/bill", None),
        (BILLING, "/Billing", None), // case-sensitive
        (BILLING, "/", None),
        (BILLING, "/orders/1/items", Some("/orders")),
        // matchit backtracking: a static branch that dead-ends falls back.
        (&["/", "/aaa", "/aaa/bbb"], "/aaa/bbbx", Some("/aaa")),
        (&["/", "/aaa", "/aaa/bbb"], "/aaax", Some("/")),
        (&["/", "/aaa", "/aaa/bbb"], "/aa", Some("/")),
        (&["/", "/aaa", "/aaa/bbb"], "/aaa/bb", Some("/aaa")),
        (&["/", "/aaa", "/aaa/bbb"], "/aaa/", Some("/aaa")),
        (&["/aaa", "/aaa/bbb"], "/aaax/bbb", None),
        (&["/a", "/ab", "/a-b"], "/a-b/x", Some("/a-b")),
        (&["/a", "/ab", "/a-b"], "/a-c", None),
        (&["/a", "/ab", "/a-b"], "/abc", None),
        (&["/a", "/ab", "/a-b"], "/a/b", Some("/a")),
        // Nested four levels, with gaps.
        (DEEP, "/a/b/c/d/e", Some("/a/b/c/d")),
        (DEEP, "/a/b/c/d", Some("/a/b/c/d")),
        (DEEP, "/a/b/c/dd", Some("/a/b/c")),
        (DEEP, "/a/b/c", Some("/a/b/c")),
        (DEEP, "/a/b/cd/d", Some("/a")),
        (DEEP, "/a/b", Some("/a")),
        (DEEP, "/b/c/d", Some("/")),
        // Characters that are not segment separators.
        (
            &["/a-b", "/a.b", "/a~b", "/a:b", "/a@b"],
            "/a-b/x",
            Some("/a-b"),
        ),
        (
            &["/a-b", "/a.b", "/a~b", "/a:b", "/a@b"],
            "/a.b",
            Some("/a.b"),
        ),
        (
            &["/a-b", "/a.b", "/a~b", "/a:b", "/a@b"],
            "/a~b/",
            Some("/a~b"),
        ),
        (
            &["/a-b", "/a.b", "/a~b", "/a:b", "/a@b"],
            "/a:b/c:d",
            Some("/a:b"),
        ),
        (
            &["/a-b", "/a.b", "/a~b", "/a:b", "/a@b"],
            "/a@b",
            Some("/a@b"),
        ),
        (&["/a-b", "/a.b", "/a~b", "/a:b", "/a@b"], "/a", None),
        (&["/v1.2", "/v1"], "/v1.2/x", Some("/v1.2")),
        (&["/v1.2", "/v1"], "/v1.3", None),
        (
            &["/.well-known"],
            "/.well-known/acme-challenge/t",
            Some("/.well-known"),
        ),
        // Unicode, raw and percent-encoded (as requests actually carry it).
        (&["/café", "/caf"], "/café/menu", Some("/café")),
        (&["/café", "/caf"], "/cafe", None),
        (
            &["/caf%C3%A9", "/caf"],
            "/caf%C3%A9/menu",
            Some("/caf%C3%A9"),
        ),
        (&["/caf%C3%A9", "/caf"], "/caf%C3%A8", None),
        (&["/日本/東京"], "/日本/東京/x", Some("/日本/東京")),
        (&["/日本/東京"], "/日本/東", None),
        // Route syntax in a request path is literal.
        (&["/a"], "/a/{x}", Some("/a")),
        (&["/a"], "/a{x}", None),
        (&["/a", "/a/b"], "/a/{*rest}", Some("/a")),
        (&["/"], "/{x}", Some("/")),
        (&["/"], "/{*rest}", Some("/")),
        (&["/a/b"], "/a/{x}", None),
        (&["/a/%7Bx%7D"], "/a/%7Bx%7D/y", Some("/a/%7Bx%7D")),
        // Empty table.
        (&[], "/", None),
    ];

    #[test]
    fn kubernetes_docs_examples() {
        check_rows(KUBERNETES_DOCS);
    }

    #[test]
    fn more_examples() {
        check_rows(MORE);
    }

    fn check_rows(rows: &[Row]) {
        for &(prefixes, path, want) in rows {
            let r = router(prefixes);
            assert_eq!(
                r.lookup(path).copied(),
                want,
                "{prefixes:?} lookup {path:?}"
            );
            assert_eq!(
                reference(prefixes, path),
                want,
                "reference: {prefixes:?} {path:?}"
            );
            if let Some((p, _)) = r.lookup_entry(path) {
                assert_eq!(Some(p), want);
            }
        }
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let a = router(&["/", "/aaa", "/aaa/bbb"]);
        let b = router(&["/aaa/bbb", "/aaa", "/"]);
        for path in ["/aaa/bbbx", "/aaax", "/aaa/bbb/c", "/aaa", "/"] {
            assert_eq!(a.lookup(path), b.lookup(path), "{path:?}");
        }
        assert_eq!(
            b.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            ["/aaa/bbb", "/aaa", "/"]
        );
    }

    #[test]
    fn invalid_prefixes() {
        use InvalidPrefix::*;
        let cases = [
            ("", Empty),
            ("billing", NotAbsolute),
            ("/billing/", TrailingSlash),
            ("/{id}", ReservedChar('{')),
            ("/a}", ReservedChar('}')),
            ("/a/*", ReservedChar('*')),
            ("/a/../..", Path(PathError::AboveRoot)),
            ("/..", Path(PathError::AboveRoot)),
            ("/a%2Fb", Path(PathError::EncodedSeparator)),
            ("/a\\b", Path(PathError::Backslash)),
            ("/a%zz", Path(PathError::BadEncoding)),
        ];
        for (prefix, want) in cases {
            let mut r = PrefixRouter::new();
            match r.insert(prefix, ()) {
                Err(PrefixError::Invalid { prefix: p, reason }) => {
                    assert_eq!((p.as_str(), reason), (prefix, want));
                }
                other => panic!("{prefix:?}: {other:?}"),
            }
            assert!(r.is_empty());
        }
    }

    #[test]
    fn unnormalized_prefixes_name_the_fix() {
        let cases = [
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/%6Detrics", "/metrics"),
            ("/caf%c3%a9", "/caf%C3%A9"),
        ];
        for (prefix, fix) in cases {
            let err = PrefixRouter::new().insert(prefix, ()).unwrap_err();
            assert!(
                matches!(&err, PrefixError::NotNormalized { normalized, .. } if normalized == fix),
                "{prefix:?}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("write {fix:?}")), "{err}");
        }
    }

    #[test]
    fn duplicates_are_refused_and_leave_the_router_unchanged() {
        let mut r = PrefixRouter::new();
        r.insert("/", 0).unwrap();
        r.insert("/a", 1).unwrap();
        r.insert("/a/b", 2).unwrap();
        for (p, v) in [("/", 9), ("/a", 9), ("/a/b", 9)] {
            let err = r.insert(p, v).unwrap_err();
            assert!(
                matches!(&err, PrefixError::Duplicate { prefix } if prefix == p),
                "{err:?}"
            );
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.lookup("/a/b/c"), Some(&2));
        assert_eq!(r.lookup("/a/c"), Some(&1));
        assert_eq!(r.lookup("/c"), Some(&0));
        // Not duplicates, though one is a prefix of the other.
        r.insert("/a/bc", 3).unwrap();
        r.insert("/a/b/c", 4).unwrap();
        assert_eq!(r.lookup("/a/bc/"), Some(&3));
        assert_eq!(r.lookup("/a/b/c/d"), Some(&4));
    }

    #[test]
    fn len_iter_default_debug() {
        let mut r = PrefixRouter::default();
        assert!(r.is_empty());
        r.insert("/b", "B").unwrap();
        r.insert("/a", "A").unwrap();
        assert_eq!((r.len(), r.is_empty()), (2, false));
        assert_eq!(r.iter().collect::<Vec<_>>(), [("/b", &"B"), ("/a", &"A")]);
        assert_eq!(format!("{r:?}"), r#"{"/b": "B", "/a": "A"}"#);
    }

    #[test]
    fn error_messages_name_prefix_and_fix() {
        let err = PrefixRouter::new().insert("/billing/", ()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid route prefix \"/billing/\": a prefix must not end with '/'; write it \
             without the slash, it still matches the path with a trailing slash and \
             everything below it"
        );
    }

    /// Callers wrap this error with file and line; clippy's
    /// `result_large_err` (128 bytes) must keep passing for them.
    #[test]
    fn error_is_small() {
        assert!(
            std::mem::size_of::<PrefixError>() <= 56,
            "{}",
            std::mem::size_of::<PrefixError>()
        );
    }

    /// Naive reference: split both on '/', keep prefixes whose segments are a
    /// leading run of the path's segments, pick the one with most segments.
    /// Deliberately shares no code or string tricks with the router.
    fn reference<'a>(prefixes: &[&'a str], path: &str) -> Option<&'a str> {
        fn segments(s: &str) -> Vec<&str> {
            let s = &s[1..];
            if s.is_empty() {
                Vec::new()
            } else {
                s.split('/').collect()
            }
        }
        let path_segs = segments(path);
        prefixes
            .iter()
            .filter(|p| {
                let ps = segments(p);
                ps.len() <= path_segs.len() && ps[..] == path_segs[..ps.len()]
            })
            .max_by_key(|p| segments(p).len())
            .copied()
    }

    /// A small alphabet that shares leading bytes, so prefixes collide often
    /// and matchit must backtrack ("a" vs "ab" vs "a-b" vs "aa").
    const ALPHABET: &[&str] = &["a", "b", "ab", "a-b", "aa", "ba", "a.b", "é"];

    fn segs(max: usize) -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(ALPHABET), 0..=max)
    }

    fn join(segs: &[&str]) -> String {
        format!("/{}", segs.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn matches_naive_reference(
            prefix_segs in prop::collection::vec(prop::collection::vec(prop::sample::select(ALPHABET), 1..=4), 1..=30),
            with_root in any::<bool>(),
            path_segs in segs(6),
            trailing_slash in any::<bool>(),
        ) {
            let mut prefixes: Vec<String> = prefix_segs.iter().map(|s| join(s)).collect();
            if with_root {
                prefixes.push("/".to_owned());
            }
            prefixes.sort();
            prefixes.dedup();
            let mut r = PrefixRouter::new();
            for p in &prefixes {
                r.insert(p, p.clone()).unwrap();
            }
            let mut path = join(&path_segs);
            if trailing_slash && path != "/" {
                path.push('/');
            }
            let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
            prop_assert_eq!(r.lookup(&path).map(String::as_str), reference(&refs, &path));
            // Every registered prefix matches itself, with and without '/'.
            for p in &prefixes {
                prop_assert_eq!(r.lookup(p), Some(p));
                if p != "/" {
                    prop_assert_eq!(r.lookup(&format!("{p}/")), Some(p));
                }
            }
        }
    }
}
