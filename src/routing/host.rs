//! Host selection (DESIGN §Request path, step 5): the request's `Host` (or
//! HTTP/2 `:authority`) picks one host table, as a Kubernetes Ingress host
//! rule does. An exact host wins over a one-label wildcard, a wildcard over
//! the default table (routes without `host`). Names compare ignoring ASCII
//! case; a port, and the trailing dot of an absolute name, are ignored.
//!
//! There is no fall-through: once a host table is chosen, a path it has no
//! route for is `404`, even when the default table would have one.
//!
//! A lookup is at most two hash probes and allocates nothing, however many
//! hosts the table holds.

use std::collections::HashMap;

use crate::config::HostPattern;

/// The maps of a route table: built once from the route file, then only
/// read. foldhash (randomly seeded per process) hashes a host name several
/// times faster than SipHash; flooding defences are not needed because
/// requests only look keys up and never insert them.
pub type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// Which kind of host rule chose the table, for `portico routes --match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMatch {
    /// `host: api.example.com`
    Exact,
    /// `host: *.example.com`
    Wildcard,
    /// The routes without `host`.
    Default,
}

/// One value per host rule, plus the default.
#[derive(Debug, Clone)]
pub struct HostRouter<T> {
    exact: Map<T>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: Map<T>,
    default: Option<T>,
}

impl<T> HostRouter<T> {
    pub fn new() -> Self {
        HostRouter {
            exact: Map::default(),
            wildcard: Map::default(),
            default: None,
        }
    }

    /// The value for a host rule (`None`: the default table), created with
    /// `make` on first use.
    pub fn entry(&mut self, host: Option<&HostPattern>, make: impl FnOnce() -> T) -> &mut T {
        match host {
            None => self.default.get_or_insert_with(make),
            Some(HostPattern::Exact(name)) => entry(&mut self.exact, name, make),
            Some(HostPattern::Wildcard(parent)) => entry(&mut self.wildcard, parent, make),
        }
    }

    /// Sets the value for a host rule, replacing any.
    pub fn insert(&mut self, host: Option<&HostPattern>, value: T) {
        match host {
            None => self.default = Some(value),
            Some(HostPattern::Exact(name)) => {
                self.exact.insert(name.as_str().into(), value);
            }
            Some(HostPattern::Wildcard(parent)) => {
                self.wildcard.insert(parent.as_str().into(), value);
            }
        }
    }

    /// The value for exactly this host rule, if it has one.
    pub fn get(&self, host: Option<&HostPattern>) -> Option<&T> {
        match host {
            None => self.default.as_ref(),
            Some(HostPattern::Exact(name)) => self.exact.get(name.as_str()),
            Some(HostPattern::Wildcard(parent)) => self.wildcard.get(parent.as_str()),
        }
    }

    /// The table for a request's `Host` value (`None` when the request has
    /// none: HTTP/1.0), and which rule chose it. `None` when no rule covers
    /// the host and there are no routes without host.
    pub fn lookup(&self, host: Option<&str>) -> Option<(&T, HostMatch)> {
        if let Some(raw) = host
            && (!self.exact.is_empty() || !self.wildcard.is_empty())
        {
            let mut buf = [0u8; MAX_NAME];
            if let Some(name) = host_name(raw, &mut buf) {
                if let Some(t) = self.exact.get(name) {
                    return Some((t, HostMatch::Exact));
                }
                if let Some((first, parent)) = name.split_once('.')
                    && !first.is_empty()
                    && let Some(t) = self.wildcard.get(parent)
                {
                    return Some((t, HostMatch::Wildcard));
                }
            }
        }
        self.default.as_ref().map(|t| (t, HostMatch::Default))
    }

    /// Number of host rules (the default table not counted).
    pub fn hosts(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

impl<T> Default for HostRouter<T> {
    fn default() -> Self {
        HostRouter::new()
    }
}

/// A `Host` value without its `:port`; `None` when what follows the last
/// `:` is not a port.
pub fn without_port(raw: &str) -> Option<&str> {
    match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Some(name),
        Some(_) => None,
        None => Some(raw),
    }
}

/// Whether a `Host` value names an IP address (`10.0.0.1:8080`,
/// `[::1]:8443`) rather than a DNS name.
pub fn is_ip_literal(raw: &str) -> bool {
    raw.starts_with('[')
        || without_port(raw).is_some_and(|h| h.parse::<std::net::Ipv4Addr>().is_ok())
}

/// `map[key]`, made with `make` if absent; the key is only copied then (a
/// large table has many routes per host).
fn entry<'m, T>(map: &'m mut Map<T>, key: &str, make: impl FnOnce() -> T) -> &'m mut T {
    if !map.contains_key(key) {
        map.insert(key.into(), make());
    }
    map.get_mut(key).expect("inserted above")
}

/// The longest DNS name (RFC 1035); a longer host can match no rule.
const MAX_NAME: usize = 253;

/// The name part of a `Host` value, lowercased: port removed, one trailing
/// dot removed, IPv6 literals kept as they are (they match no rule). Uses
/// `buf` only when the name has uppercase letters. `None` when it cannot
/// be a DNS name at all.
pub fn host_name<'a>(raw: &'a str, buf: &'a mut [u8; MAX_NAME]) -> Option<&'a str> {
    if raw.starts_with('[') {
        return None;
    }
    let name = without_port(raw)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    if !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(name);
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    // Lowercasing ASCII letters keeps valid UTF-8 valid.
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> HostRouter<&'static str> {
        let mut r = HostRouter::new();
        for (rule, value) in [
            (Some("foo.bar.com"), "foo.bar.com"),
            (Some("*.foo.com"), "*.foo.com"),
            (Some("*.bar.com"), "*.bar.com"),
            (Some("xn--bcher-kva.example"), "punycode"),
            (None, "default"),
        ] {
            let host = rule.map(|h| h.parse::<HostPattern>().unwrap());
            *r.entry(host.as_ref(), || value) = value;
        }
        r
    }

    /// shared/testdata/ingress-host-and-exact-examples.md, "Hostname
    /// wildcards", plus the edges of the name rules.
    #[test]
    fn kubernetes_host_examples() {
        let r = router();
        let cases = [
            ("bar.foo.com", "*.foo.com", HostMatch::Wildcard),
            ("baz.bar.foo.com", "default", HostMatch::Default),
            ("foo.com", "default", HostMatch::Default),
            // Exact beats the wildcard *.bar.com that also covers it.
            ("foo.bar.com", "foo.bar.com", HostMatch::Exact),
            ("FOO.bar.com:8443", "foo.bar.com", HostMatch::Exact),
            ("unknown.example", "default", HostMatch::Default),
            ("x.bar.com", "*.bar.com", HostMatch::Wildcard),
            ("foo.bar.com.", "foo.bar.com", HostMatch::Exact),
            ("Foo.Bar.Com.:443", "foo.bar.com", HostMatch::Exact),
            ("XN--BCHER-KVA.example", "punycode", HostMatch::Exact),
            (".foo.com", "default", HostMatch::Default),
            ("127.0.0.1:8080", "default", HostMatch::Default),
            ("[::1]:8080", "default", HostMatch::Default),
            ("foo.bar.com:x", "default", HostMatch::Default),
            ("", "default", HostMatch::Default),
        ];
        for (host, want, how) in cases {
            assert_eq!(r.lookup(Some(host)), Some((&want, how)), "{host:?}");
        }
        assert_eq!(r.lookup(None), Some((&"default", HostMatch::Default)));
        assert_eq!(r.hosts(), 4);
    }

    #[test]
    fn ports_and_ip_literals() {
        assert_eq!(without_port("a.example:8443"), Some("a.example"));
        assert_eq!(without_port("a.example"), Some("a.example"));
        assert_eq!(without_port("a.example:x"), None);
        for (host, ip) in [
            ("10.0.0.1", true),
            ("10.0.0.1:8443", true),
            ("[::1]:8443", true),
            ("[::1]", true),
            ("a.example", false),
            ("a.example:443", false),
            ("10.0.0.1.example", false),
        ] {
            assert_eq!(is_ip_literal(host), ip, "{host}");
        }
    }

    #[test]
    fn no_default_table_means_no_match() {
        let mut r = HostRouter::new();
        let host = "api.example.com".parse::<HostPattern>().unwrap();
        r.entry(Some(&host), || 1);
        assert_eq!(
            r.lookup(Some("api.example.com")),
            Some((&1, HostMatch::Exact))
        );
        assert_eq!(r.lookup(Some("other.example.com")), None);
        assert_eq!(r.lookup(None), None);
    }

    #[test]
    fn overlong_hosts_match_nothing_and_do_not_panic() {
        let r = router();
        let long = format!("{}.foo.com", "A".repeat(300));
        assert_eq!(
            r.lookup(Some(&long)),
            Some((&"default", HostMatch::Default))
        );
        let edge = format!("{}.foo.com", "a".repeat(MAX_NAME - 8));
        assert_eq!(edge.len(), MAX_NAME);
        // The longest name is lowercased in the stack buffer and matched.
        assert_eq!(
            r.lookup(Some(&edge.to_uppercase())),
            Some((&"*.foo.com", HostMatch::Wildcard))
        );
    }
}
