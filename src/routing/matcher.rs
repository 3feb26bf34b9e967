//! The matching rule of DESIGN §Request path step 5, over opaque values: a
//! host table first ([`super::host`]), then an exact path in it, then the
//! segment-wise longest prefix in it ([`super::prefix`]). The live route
//! table and `portico routes --match` both use it, so what the command
//! explains is what the gateway does.

use crate::config::HostPattern;

use super::host::{HostMatch, HostRouter, Map};
use super::prefix::{PrefixError, PrefixRouter};

/// The routes of one host rule (or of the default table).
#[derive(Debug, Clone)]
struct Paths<T> {
    /// Which host table this is, in order of first appearance: lets callers
    /// keep per-host data (metric handles) beside the matcher.
    index: usize,
    /// The rule, for explaining a choice.
    pattern: Option<HostPattern>,
    /// Exact routes, checked first: an exact route wins over a prefix route
    /// of the same path.
    exact: Map<T>,
    prefixes: PrefixRouter<T>,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'m, T> {
    /// The rule that chose the host table.
    pub host: HostMatch,
    /// The host table's index (see [`RouteMatcher::host_tables`]).
    pub table: usize,
    /// The host rule of that table; `None` for the default table.
    pub pattern: Option<&'m HostPattern>,
    /// The route, with whether it was an exact one; `None` is `404`.
    pub route: Option<(&'m T, bool)>,
}

/// Hosts, then exact paths, then prefixes.
#[derive(Debug, Clone)]
pub struct RouteMatcher<T> {
    hosts: HostRouter<Paths<T>>,
    tables: usize,
}

impl<T> RouteMatcher<T> {
    pub fn new() -> Self {
        RouteMatcher {
            hosts: HostRouter::new(),
            tables: 0,
        }
    }

    /// Adds a route and returns its host table's index. Duplicate exact
    /// paths keep the first (the route file loader refuses them earlier);
    /// prefixes are refused as [`PrefixRouter::insert`] says.
    pub fn insert(
        &mut self,
        host: Option<&HostPattern>,
        exact: bool,
        path: &str,
        value: T,
    ) -> Result<usize, PrefixError> {
        let next = self.tables;
        let paths = self.hosts.entry(host, || Paths {
            index: next,
            pattern: host.cloned(),
            exact: Map::default(),
            prefixes: PrefixRouter::new(),
        });
        let index = paths.index;
        if exact {
            paths.exact.entry(path.into()).or_insert(value);
        } else {
            paths.prefixes.insert(path, value)?;
        }
        if index == next {
            self.tables += 1;
        }
        Ok(index)
    }

    /// The route for a request's `Host` value and a path as matching reads
    /// it (normalized, parameters cut). `None` when no host table covers
    /// the host.
    #[inline]
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<Matched<'_, T>> {
        let (paths, how) = self.hosts.lookup(host)?;
        let route = match paths.exact.get(path) {
            Some(v) => Some((v, true)),
            None => paths.prefixes.lookup(path).map(|v| (v, false)),
        };
        Some(Matched {
            host: how,
            table: paths.index,
            pattern: paths.pattern.as_ref(),
            route,
        })
    }

    /// The value of exactly this route (host rule, kind and path), as
    /// inserted; not a request lookup.
    pub fn get(&self, host: Option<&HostPattern>, exact: bool, path: &str) -> Option<&T> {
        let paths = self.hosts.get(host)?;
        if exact {
            paths.exact.get(path)
        } else {
            paths
                .prefixes
                .lookup_entry(path)
                .filter(|(prefix, _)| *prefix == path)
                .map(|(_, v)| v)
        }
    }

    /// The index of a host rule's table, if it has one.
    pub fn table_of(&self, host: Option<&HostPattern>) -> Option<usize> {
        self.hosts.get(host).map(|p| p.index)
    }

    /// Number of host tables, the default one included when it exists.
    pub fn host_tables(&self) -> usize {
        self.tables
    }

    /// Number of host rules (the default table not counted).
    pub fn hosts(&self) -> usize {
        self.hosts.hosts()
    }
}

impl<T> Default for RouteMatcher<T> {
    fn default() -> Self {
        RouteMatcher::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(h: &str) -> HostPattern {
        h.parse().unwrap()
    }

    /// shared/testdata/ingress-host-and-exact-examples.md, "Exact paths".
    #[test]
    fn kubernetes_exact_examples() {
        let only_exact = {
            let mut m = RouteMatcher::new();
            m.insert(None, true, "/foo", "exact").unwrap();
            m
        };
        let both = {
            let mut m = RouteMatcher::new();
            m.insert(None, true, "/foo", "exact").unwrap();
            m.insert(None, false, "/foo", "prefix").unwrap();
            m
        };
        let route = |m: &RouteMatcher<&'static str>, p: &str| {
            m.lookup(None, p).and_then(|r| r.route.map(|(v, _)| *v))
        };
        assert_eq!(route(&only_exact, "/foo"), Some("exact"));
        assert_eq!(route(&only_exact, "/bar"), None);
        assert_eq!(route(&only_exact, "/foo/"), None);
        assert_eq!(route(&both, "/foo"), Some("exact"));
        assert_eq!(route(&both, "/foo/x"), Some("prefix"));
        assert_eq!(route(&both, "/foo/"), Some("prefix"));
    }

    #[test]
    fn no_fall_through_to_the_default_table() {
        let mut m = RouteMatcher::new();
        let api = host("api.example.com");
        assert_eq!(m.insert(None, false, "/", "default").unwrap(), 0);
        assert_eq!(m.insert(Some(&api), false, "/billing", "api").unwrap(), 1);
        assert_eq!(
            m.insert(None, false, "/orders", "default-orders").unwrap(),
            0
        );
        let hit = m.lookup(Some("api.example.com"), "/billing/x").unwrap();
        assert_eq!(hit.route, Some((&"api", false)));
        assert_eq!((hit.host, hit.table), (HostMatch::Exact, 1));
        assert_eq!(m.get(Some(&api), false, "/billing"), Some(&"api"));
        assert_eq!(m.get(Some(&api), false, "/"), None);
        assert_eq!(m.get(None, false, "/"), Some(&"default"));
        assert_eq!(m.get(None, true, "/"), None);
        assert_eq!(m.table_of(Some(&api)), Some(1));
        assert_eq!(m.table_of(Some(&host("x.example.com"))), None);
        let miss = m.lookup(Some("api.example.com"), "/orders").unwrap();
        assert_eq!((miss.route, miss.table), (None, 1));
        let other = m.lookup(Some("www.example.com"), "/orders").unwrap();
        assert_eq!(other.route, Some((&"default-orders", false)));
        assert_eq!(m.host_tables(), 2);
        assert_eq!(m.hosts(), 1);
    }

    #[test]
    fn without_a_default_table_unknown_hosts_match_nothing() {
        let mut m = RouteMatcher::new();
        m.insert(Some(&host("*.example.com")), false, "/", 1)
            .unwrap();
        assert!(m.lookup(Some("example.com"), "/").is_none());
        assert!(m.lookup(None, "/").is_none());
        assert_eq!(
            m.lookup(Some("a.example.com"), "/").unwrap().route,
            Some((&1, false))
        );
    }

    /// Naive reference for hosts + exact + prefix, sharing no code with the
    /// matcher: scan every route, keep those whose host rule is the most
    /// specific one covering the host, then exact, then the longest prefix.
    fn reference<'a>(
        routes: &'a [(Option<String>, bool, String)],
        host: &str,
        path: &str,
    ) -> Option<&'a (Option<String>, bool, String)> {
        let host = host.to_ascii_lowercase();
        let covers = |rule: &Option<String>| -> u8 {
            match rule {
                None => 1,
                Some(r) if *r == host => 3,
                Some(r) => match r.strip_prefix("*.") {
                    Some(parent) => {
                        let ok = host
                            .strip_suffix(parent)
                            .and_then(|front| front.strip_suffix('.'))
                            .is_some_and(|label| !label.is_empty() && !label.contains('.'));
                        if ok { 2 } else { 0 }
                    }
                    None => 0,
                },
            }
        };
        let best = routes
            .iter()
            .map(|r| covers(&r.0))
            .max()
            .filter(|b| *b > 0)?;
        let in_table: Vec<_> = routes.iter().filter(|r| covers(&r.0) == best).collect();
        if let Some(r) = in_table.iter().find(|r| r.1 && r.2 == path) {
            return Some(r);
        }
        let segs = |s: &str| -> Vec<String> {
            s[1..]
                .split('/')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        };
        let p = segs(path);
        in_table
            .into_iter()
            .filter(|r| !r.1)
            .filter(|r| {
                let s = segs(&r.2);
                s.len() <= p.len() && s[..] == p[..s.len()]
            })
            .max_by_key(|r| segs(&r.2).len())
    }

    const HOSTS: &[&str] = &[
        "a.example.com",
        "*.example.com",
        "b.a.example.com",
        "*.a.example.com",
    ];
    const REQUEST_HOSTS: &[&str] = &[
        "a.example.com",
        "A.Example.com",
        "b.example.com",
        "example.com",
        "b.a.example.com",
        "c.a.example.com",
        "x.y.a.example.com",
        "other.test",
    ];
    const SEGS: &[&str] = &["a", "b", "ab", "a-b"];

    fn path_of(segs: &[&str], slash: bool) -> String {
        let mut p = format!("/{}", segs.join("/"));
        if slash && p != "/" {
            p.push('/');
        }
        p
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn matches_naive_reference(
            routes in prop::collection::vec(
                (
                    prop::option::of(prop::sample::select(HOSTS)),
                    any::<bool>(),
                    prop::collection::vec(prop::sample::select(SEGS), 0..=3),
                    any::<bool>(),
                ),
                1..=24,
            ),
            request_host in prop::sample::select(REQUEST_HOSTS),
            path_segs in prop::collection::vec(prop::sample::select(SEGS), 0..=4),
            slash in any::<bool>(),
        ) {
            let mut table: Vec<(Option<String>, bool, String)> = Vec::new();
            let mut m = RouteMatcher::new();
            for (h, exact, segs, exact_slash) in routes {
                // Prefixes never end in '/'; exact paths may.
                let path = path_of(&segs, exact && exact_slash);
                let key = (h.map(str::to_string), exact, path);
                if table.contains(&key) {
                    continue;
                }
                let pattern = key.0.as_deref().map(host);
                m.insert(pattern.as_ref(), key.1, &key.2, table.len()).unwrap();
                table.push(key);
            }
            let path = path_of(&path_segs, slash);
            let got = m
                .lookup(Some(request_host), &path)
                .and_then(|r| r.route.map(|(i, _)| &table[*i]));
            prop_assert_eq!(got, reference(&table, request_host, &path));
        }
    }
}
