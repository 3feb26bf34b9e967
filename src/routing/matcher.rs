//! The matching rule of DESIGN §Request path step 5, over opaque values: a
//! host table first ([`super::host`]), then an exact path in it, then the
//! segment-wise longest prefix in it ([`super::prefix`]). The live route
//! table and `portico routes --match` both use it, so what the command
//! explains is what the gateway does.

use std::sync::Arc;

use crate::config::HostPattern;

use super::host::{HostMatch, HostRouter, Map};
use super::prefix::{PrefixError, PrefixRouter};

/// The routes of one host rule (or of the default table), shared between
/// route tables when a reload leaves them unchanged.
#[derive(Debug)]
pub struct HostTable<T, M> {
    /// The rule, for explaining a choice.
    pattern: Option<HostPattern>,
    /// Exact routes, checked first: an exact route wins over a prefix route
    /// of the same path.
    exact: Map<T>,
    prefixes: PrefixRouter<T>,
    /// Every route of the table in insertion order, to compare a reload's
    /// routes with.
    routes: Vec<T>,
    /// The caller's data for this host table (metric handles for misses).
    pub meta: M,
}

impl<T, M> HostTable<T, M> {
    /// The table's routes, in insertion order.
    pub fn routes(&self) -> &[T] {
        &self.routes
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'m, T, M> {
    /// The rule that chose the host table.
    pub host: HostMatch,
    /// The host rule of that table; `None` for the default table.
    pub pattern: Option<&'m HostPattern>,
    /// The chosen host table's data.
    pub meta: &'m M,
    /// The route, with whether it was an exact one; `None` is `404`.
    pub route: Option<(&'m T, bool)>,
}

/// Hosts, then exact paths, then prefixes.
#[derive(Debug)]
pub struct RouteMatcher<T, M = ()> {
    hosts: HostRouter<Arc<HostTable<T, M>>>,
}

impl<T: Clone, M> RouteMatcher<T, M> {
    pub fn new() -> Self {
        RouteMatcher {
            hosts: HostRouter::new(),
        }
    }

    /// Adds a route; `meta` makes the host table's data when this is its
    /// first route. Duplicate exact paths keep the first (the route file
    /// loader refuses them earlier); prefixes are refused as
    /// [`PrefixRouter::insert`] says.
    ///
    /// # Panics
    /// When the host table was [adopted](Self::adopt): shared tables are
    /// never changed.
    pub fn insert(
        &mut self,
        host: Option<&HostPattern>,
        exact: bool,
        path: &str,
        value: T,
        meta: impl FnOnce() -> M,
    ) -> Result<(), PrefixError> {
        let shared = self.hosts.entry(host, || {
            Arc::new(HostTable {
                pattern: host.cloned(),
                exact: Map::default(),
                prefixes: PrefixRouter::new(),
                routes: Vec::new(),
                meta: meta(),
            })
        });
        let table = Arc::get_mut(shared).expect("routes are only added to a table being built");
        if exact {
            table.exact.entry(path.into()).or_insert(value.clone());
        } else {
            table.prefixes.insert(path, value.clone())?;
        }
        table.routes.push(value);
        Ok(())
    }

    /// Takes over a host table, unchanged, from another matcher (a reload
    /// whose routes for that host are the same). The table must not be in
    /// this matcher yet.
    pub fn adopt(&mut self, table: Arc<HostTable<T, M>>) {
        let host = table.pattern.clone();
        self.hosts.insert(host.as_ref(), table);
    }

    /// The host table of exactly this host rule, if it has one.
    pub fn table(&self, host: Option<&HostPattern>) -> Option<&Arc<HostTable<T, M>>> {
        self.hosts.get(host)
    }

    /// The route for a request's `Host` value and a path as matching reads
    /// it (normalized, parameters cut). `None` when no host table covers
    /// the host.
    #[inline]
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<Matched<'_, T, M>> {
        let (table, how) = self.hosts.lookup(host)?;
        let route = match table.exact.get(path) {
            Some(v) => Some((v, true)),
            None => table.prefixes.lookup(path).map(|v| (v, false)),
        };
        Some(Matched {
            host: how,
            pattern: table.pattern.as_ref(),
            meta: &table.meta,
            route,
        })
    }

    /// The value of exactly this route (host rule, kind and path), as
    /// inserted; not a request lookup.
    pub fn get(&self, host: Option<&HostPattern>, exact: bool, path: &str) -> Option<&T> {
        let table = self.hosts.get(host)?;
        if exact {
            table.exact.get(path)
        } else {
            table
                .prefixes
                .lookup_entry(path)
                .filter(|(prefix, _)| *prefix == path)
                .map(|(_, v)| v)
        }
    }

    /// Number of host rules (the default table not counted).
    pub fn hosts(&self) -> usize {
        self.hosts.hosts()
    }
}

impl<T: Clone, M> Default for RouteMatcher<T, M> {
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
            m.insert(None, true, "/foo", "exact", || ()).unwrap();
            m
        };
        let both = {
            let mut m = RouteMatcher::new();
            m.insert(None, true, "/foo", "exact", || ()).unwrap();
            m.insert(None, false, "/foo", "prefix", || ()).unwrap();
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
        let mut m: RouteMatcher<&str, &str> = RouteMatcher::new();
        let api = host("api.example.com");
        m.insert(None, false, "/", "default", || "default table")
            .unwrap();
        m.insert(Some(&api), false, "/billing", "api", || "api table")
            .unwrap();
        m.insert(None, false, "/orders", "default-orders", || {
            unreachable!("exists")
        })
        .unwrap();
        let hit = m.lookup(Some("api.example.com"), "/billing/x").unwrap();
        assert_eq!(hit.route, Some((&"api", false)));
        assert_eq!((hit.host, *hit.meta), (HostMatch::Exact, "api table"));
        assert_eq!(m.get(Some(&api), false, "/billing"), Some(&"api"));
        assert_eq!(m.get(Some(&api), false, "/"), None);
        assert_eq!(m.get(None, false, "/"), Some(&"default"));
        assert_eq!(m.get(None, true, "/"), None);
        assert_eq!(m.table(Some(&api)).unwrap().routes(), ["api"]);
        assert!(m.table(Some(&host("x.example.com"))).is_none());
        let miss = m.lookup(Some("api.example.com"), "/orders").unwrap();
        assert_eq!((miss.route, *miss.meta), (None, "api table"));
        let other = m.lookup(Some("www.example.com"), "/orders").unwrap();
        assert_eq!(other.route, Some((&"default-orders", false)));
        assert_eq!(*other.meta, "default table");
        assert_eq!(m.hosts(), 1);
    }

    #[test]
    fn an_adopted_table_is_shared_unchanged() {
        let api = host("api.example.com");
        let mut old: RouteMatcher<u32, &str> = RouteMatcher::new();
        old.insert(Some(&api), false, "/a", 1, || "api").unwrap();
        old.insert(Some(&api), true, "/b", 2, || "api").unwrap();
        let mut new: RouteMatcher<u32, &str> = RouteMatcher::new();
        new.adopt(old.table(Some(&api)).unwrap().clone());
        new.insert(None, false, "/", 3, || "default").unwrap();
        assert!(Arc::ptr_eq(
            old.table(Some(&api)).unwrap(),
            new.table(Some(&api)).unwrap()
        ));
        let hit = new.lookup(Some("API.example.com"), "/a/x").unwrap();
        assert_eq!((hit.route, *hit.meta), (Some((&1, false)), "api"));
        assert_eq!(
            new.lookup(Some("api.example.com"), "/b").unwrap().route,
            Some((&2, true))
        );
        assert_eq!(
            new.lookup(Some("www.example.com"), "/b").unwrap().route,
            Some((&3, false))
        );
    }

    #[test]
    fn without_a_default_table_unknown_hosts_match_nothing() {
        let mut m = RouteMatcher::new();
        m.insert(Some(&host("*.example.com")), false, "/", 1, || ())
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
                m.insert(pattern.as_ref(), key.1, &key.2, table.len(), || ()).unwrap();
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
