//! A route's endpoints: which one takes the next request (balancing), and
//! which are left out for a while because they keep failing (passive
//! outlier ejection).
//!
//! * **Balancing**: power of two choices on requests in flight (default),
//!   round robin, or rendezvous hashing on a header or cookie, which moves
//!   only the keys of an endpoint that leaves or joins.
//! * **Ejection**: an endpoint that fails `consecutive_failures` times in a
//!   row (connect failures, resets, timeouts, 5xx answers) is left out for
//!   `base_ejection`, doubling on repeat up to `max_ejection`, then tried
//!   again. Never more than `max_ejection_percent` of a route's endpoints
//!   are out at once, so when everything fails the backends still get the
//!   traffic instead of the edge answering for them.
//!
//! Everything here is atomics: no lock on the request path.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use super::upstream::Backend;
use http::HeaderMap;
use http::header::COOKIE;

pub use crate::config::{Balance, CircuitBreaker, OutlierPolicy};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Time from the process-wide origin (the first call) to `at`, the one
/// clock of ejections and retry budgets.
pub(crate) fn since_origin(at: Instant) -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    at.saturating_duration_since(*ORIGIN.get_or_init(Instant::now))
}

/// Milliseconds on that clock (never 0 after start).
fn now_ms() -> u64 {
    since_origin(Instant::now()).as_millis() as u64 + 1
}

/// One endpoint and what is known about it.
#[derive(Debug)]
pub struct Endpoint {
    pub backend: Backend,
    inflight: AtomicU32,
    /// Failures in a row since the last success.
    failures: AtomicU32,
    /// [`now_ms`] until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// Length of the last ejection and when it ended, for the doubling.
    last_ejection_ms: AtomicU64,
    last_ejection_end: AtomicU64,
    /// `circuit_breaker.max_connections` slots.
    slots: Arc<Semaphore>,
    /// Requests waiting for a slot.
    pending: AtomicU32,
}

impl Endpoint {
    fn new(backend: Backend, breaker: CircuitBreaker) -> Self {
        Endpoint {
            slots: Arc::new(Semaphore::new(breaker.max_connections as usize)),
            pending: AtomicU32::new(0),
            backend,
            inflight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_ejection_ms: AtomicU64::new(0),
            last_ejection_end: AtomicU64::new(0),
        }
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Requests waiting for a circuit-breaker slot.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// How long the endpoint stays ejected from now; `None` when it is in.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }
}

/// A request in flight on an endpoint (for power of two choices), until
/// its response body ends.
pub struct InflightGuard {
    endpoint: Arc<Endpoint>,
    /// The circuit breaker's slot, held until the response ends.
    _slot: OwnedSemaphorePermit,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.endpoint.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One version of a route's endpoints. A DNS refresh replaces it; a
/// request keeps the version it started with, so its tries' indices stay
/// valid, and an endpoint in both versions is the same object (its
/// ejection and counters carry over).
pub type EndpointSet = Arc<Vec<Arc<Endpoint>>>;

/// What an exchange with an endpoint came to, for ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// A route's endpoints with their balancing and ejection state.
#[derive(Debug)]
pub struct Endpoints {
    set: ArcSwap<Vec<Arc<Endpoint>>>,
    balance: Balance,
    outlier: OutlierPolicy,
    /// Endpoints ejected right now (a fast "nothing to check" on pick).
    ejected: AtomicUsize,
    /// Round-robin position.
    next: AtomicUsize,
    breaker: CircuitBreaker,
}

/// Why a backend could not take a request at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// All `max_connections` slots busy and no waiting allowed.
    MaxConnections,
    /// All slots busy and `max_pending` requests already waiting.
    MaxPending,
}

impl Overflow {
    /// The `limit` label of `portico_circuit_open_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::MaxConnections => "max_connections",
            Overflow::MaxPending => "max_pending",
        }
    }
}

/// Decrements the pending count even if the wait is cancelled.
struct Pending<'a>(&'a AtomicU32);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoints {
    pub fn new(
        backends: Vec<Backend>,
        balance: Balance,
        outlier: OutlierPolicy,
        breaker: CircuitBreaker,
    ) -> Self {
        // Empty only for a redirect route, which is answered before any
        // endpoint is chosen.
        let set = backends
            .into_iter()
            .map(|b| Arc::new(Endpoint::new(b, breaker)))
            .collect();
        Endpoints {
            set: ArcSwap::from_pointee(set),
            breaker,
            balance,
            outlier,
            ejected: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
        }
    }

    /// The current endpoints, for one request's tries.
    pub fn snapshot(&self) -> EndpointSet {
        self.set.load_full()
    }

    /// Endpoints right now.
    pub fn len(&self) -> usize {
        self.set.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.load().is_empty()
    }

    pub fn balance(&self) -> &Balance {
        &self.balance
    }

    /// Replaces the endpoints with `backends` (a DNS refresh): those
    /// already present keep their state; requests in flight on the others
    /// finish. Returns the backends that left, and whether anything
    /// changed. An empty list is ignored (the last good set stays).
    pub fn replace(&self, backends: Vec<Backend>) -> (Vec<Arc<Endpoint>>, bool) {
        if backends.is_empty() {
            return (Vec::new(), false);
        }
        let old = self.set.load_full();
        let mut next = Vec::with_capacity(backends.len());
        for b in backends {
            match old.iter().find(|e| e.backend.label == b.label) {
                Some(e) => next.push(e.clone()),
                None => next.push(Arc::new(Endpoint::new(b, self.breaker))),
            }
        }
        let gone: Vec<Arc<Endpoint>> = old
            .iter()
            .filter(|e| !next.iter().any(|n| Arc::ptr_eq(n, e)))
            .cloned()
            .collect();
        let changed = !gone.is_empty() || next.len() != old.len();
        if changed {
            for e in &gone {
                // An ejected endpoint that leaves no longer counts as out.
                if e.ejected_until.swap(0, Ordering::Relaxed) != 0 {
                    self.ejected.fetch_sub(1, Ordering::Relaxed);
                }
            }
            self.set.store(Arc::new(next));
        }
        (gone, changed)
    }

    /// Admits a request to endpoint `e` (circuit breaker): a free slot at
    /// once, or a wait for one when fewer than `max_pending` wait already;
    /// else the overflow. The request counts as in flight on the endpoint
    /// until the guard drops.
    pub async fn start(&self, e: &Arc<Endpoint>) -> Result<InflightGuard, Overflow> {
        let slot = match e.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if self.breaker.max_pending == 0 {
                    return Err(Overflow::MaxConnections);
                }
                if e.pending.fetch_add(1, Ordering::Relaxed) >= self.breaker.max_pending {
                    e.pending.fetch_sub(1, Ordering::Relaxed);
                    return Err(Overflow::MaxPending);
                }
                let _waiting = Pending(&e.pending);
                e.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("endpoint semaphores are never closed")
            }
        };
        e.inflight.fetch_add(1, Ordering::Relaxed);
        Ok(InflightGuard {
            endpoint: e.clone(),
            _slot: slot,
        })
    }

    /// The endpoint for the next try: among those neither ejected nor in
    /// `tried` (this request's earlier tries); failing that, among those
    /// not tried; failing that, any.
    pub fn pick(&self, set: &[Arc<Endpoint>], headers: &HeaderMap, tried: &[usize]) -> usize {
        let n = set.len();
        if n == 1 {
            return 0;
        }
        let after = tried.last().copied();
        if tried.is_empty() && self.ejected.load(Ordering::Relaxed) == 0 {
            return self.choose(set, headers, after, |_| true);
        }
        let now = now_ms();
        let usable = |i: usize| !tried.contains(&i) && !self.is_ejected(&set[i], now);
        if (0..n).any(usable) {
            return self.choose(set, headers, after, usable);
        }
        let untried = |i: usize| !tried.contains(&i);
        if (0..n).any(untried) {
            return self.choose(set, headers, after, untried);
        }
        self.choose(set, headers, after, |_| true)
    }

    /// Applies the balancing policy to the endpoints `ok` allows (at least
    /// one). `after`: the endpoint of the previous try, if this is a retry.
    fn choose(
        &self,
        set: &[Arc<Endpoint>],
        headers: &HeaderMap,
        after: Option<usize>,
        ok: impl Fn(usize) -> bool,
    ) -> usize {
        let n = set.len();
        match &self.balance {
            Balance::RoundRobin => self.round_robin(n, after, &ok),
            Balance::HashHeader(name) => match headers.get(name) {
                Some(v) => rendezvous(v.as_bytes(), set, &ok),
                None => two_choices(set, &ok),
            },
            Balance::HashCookie(name) => match cookie(headers, name) {
                Some(v) => rendezvous(v, set, &ok),
                None => two_choices(set, &ok),
            },
            Balance::PowerOfTwo => two_choices(set, &ok),
        }
    }

    /// The next allowed endpoint in turn. A retry takes the one after its
    /// previous try without moving the turn, so retries do not make every
    /// request start on the same endpoint.
    fn round_robin(&self, n: usize, after: Option<usize>, ok: &impl Fn(usize) -> bool) -> usize {
        let start = match after {
            Some(prev) => prev + 1,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| ok(i))
            .unwrap_or(start % n)
    }

    /// Whether endpoint `e` is ejected at `now`; re-admits it (and logs
    /// that) when its ejection has run out.
    fn is_ejected(&self, e: &Endpoint, now: u64) -> bool {
        let until = e.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if until > now {
            return true;
        }
        if e.ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.ejected.fetch_sub(1, Ordering::Relaxed);
            e.last_ejection_end.store(until, Ordering::Relaxed);
            e.failures.store(0, Ordering::Relaxed);
            tracing::info!(upstream = %e.backend.label, "upstream endpoint re-admitted after its ejection");
        }
        false
    }

    /// Re-admits every endpoint whose ejection has run out; returns how
    /// many are ejected now (for the endpoint gauges).
    pub fn refresh(&self) -> usize {
        let now = now_ms();
        let set = self.set.load();
        set.iter().filter(|e| self.is_ejected(e, now)).count()
    }

    /// Records the outcome of an exchange with endpoint `i`; ejects it
    /// (`true`) when that makes `consecutive_failures` in a row and the
    /// ejection cap allows.
    pub fn report(&self, e: &Endpoint, outcome: Outcome) -> bool {
        if outcome == Outcome::Success {
            if e.failures.load(Ordering::Relaxed) != 0 {
                e.failures.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let threshold = self.outlier.consecutive_failures;
        let failures = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0 || failures < threshold {
            return false;
        }
        let n = self.len();
        let ejected = self.ejected.load(Ordering::Relaxed);
        if (ejected + 1) * 100 > self.outlier.max_ejection_percent as usize * n {
            return false;
        }
        let now = now_ms();
        if e.ejected_until.load(Ordering::Relaxed) > now {
            return false; // already out (a request that started before it was)
        }
        let duration = self.ejection_length(e, now);
        let until = now + duration.as_millis() as u64;
        let prev = e.ejected_until.swap(until, Ordering::Relaxed);
        if prev == 0 {
            self.ejected.fetch_add(1, Ordering::Relaxed);
        }
        e.failures.store(0, Ordering::Relaxed);
        e.last_ejection_ms
            .store(duration.as_millis() as u64, Ordering::Relaxed);
        tracing::warn!(
            upstream = %e.backend.label,
            failures,
            ejected_ms = duration.as_millis() as u64,
            "upstream endpoint ejected after failing in a row"
        );
        true
    }

    /// `base_ejection`, or twice the last ejection when the endpoint fails
    /// again within that long of being re-admitted, up to `max_ejection`.
    fn ejection_length(&self, e: &Endpoint, now: u64) -> Duration {
        let last = e.last_ejection_ms.load(Ordering::Relaxed);
        let ended = e.last_ejection_end.load(Ordering::Relaxed);
        let base = self.outlier.base_ejection;
        if last == 0 || now.saturating_sub(ended) > last {
            return base.min(self.outlier.max_ejection);
        }
        Duration::from_millis(last.saturating_mul(2)).min(self.outlier.max_ejection)
    }
}

/// Power of two choices: two different allowed endpoints at random, the
/// one with fewer requests in flight (ties: the first drawn).
fn two_choices(set: &[Arc<Endpoint>], ok: &impl Fn(usize) -> bool) -> usize {
    let n = set.len();
    let allowed = (0..n).filter(|&i| ok(i)).count();
    let nth = |k: usize| (0..n).filter(|&i| ok(i)).nth(k).unwrap_or(0);
    if allowed <= 1 {
        return nth(0);
    }
    let r = random();
    let a = (r % allowed as u64) as usize;
    let b = ((r >> 32) % (allowed as u64 - 1)) as usize;
    let b = if b >= a { b + 1 } else { b };
    let (a, b) = (nth(a), nth(b));
    if set[b].inflight() < set[a].inflight() {
        b
    } else {
        a
    }
}

/// Rendezvous (highest random weight) hashing: the allowed endpoint whose
/// hash with `key` is highest. An endpoint leaving or joining moves only
/// the keys it wins.
fn rendezvous(key: &[u8], endpoints: &[Arc<Endpoint>], ok: &impl Fn(usize) -> bool) -> usize {
    (0..endpoints.len())
        .filter(|&i| ok(i))
        .max_by_key(|&i| weight(key, endpoints[i].backend.label.as_bytes()))
        .unwrap_or(0)
}

/// FNV-1a over key and endpoint, finished with a 64-bit mix: stable across
/// processes and versions, so every replica sends a key the same way.
fn weight(key: &[u8], endpoint: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.iter().chain([0xff].iter()).chain(endpoint) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// A fast thread-local pseudo-random number (xorshift64*), seeded per
/// thread from the clock and the thread's stack address.
pub fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            let seed = Instant::now().elapsed().as_nanos() as u64
                ^ (s as *const Cell<u64> as u64).rotate_left(17)
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
            x = seed | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendUrl;
    use http::HeaderName;

    fn endpoints(n: usize, balance: Balance, outlier: OutlierPolicy) -> Endpoints {
        let backends = (0..n)
            .map(|i| {
                let url: BackendUrl = format!("http://10.0.0.{}:80", i + 1).parse().unwrap();
                Backend::from(&url)
            })
            .collect();
        Endpoints::new(backends, balance, outlier, CircuitBreaker::default())
    }

    fn quick(failures: u32) -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: failures,
            base_ejection: Duration::from_millis(200),
            max_ejection: Duration::from_millis(700),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn two_choices_prefers_the_less_loaded_endpoint() {
        let eps = endpoints(3, Balance::PowerOfTwo, OutlierPolicy::default());
        // Endpoint 0 is busy: 10 requests in flight.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _busy: Vec<_> = (0..10)
            .map(|_| rt.block_on(eps.start(&eps.snapshot()[0])).unwrap())
            .collect();
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[eps.pick(&eps.snapshot(), &HeaderMap::new(), &[])] += 1;
        }
        // 0 wins only when both draws are 0, which two distinct draws never are.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
    }

    #[test]
    fn round_robin_cycles_and_skips_tried_endpoints() {
        let eps = endpoints(3, Balance::RoundRobin, OutlierPolicy::default());
        let h = HeaderMap::new();
        let picks: Vec<usize> = (0..6).map(|_| eps.pick(&eps.snapshot(), &h, &[])).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        for _ in 0..6 {
            assert_ne!(eps.pick(&eps.snapshot(), &h, &[1]), 1);
        }
        // Everything tried: any endpoint rather than none.
        assert!(eps.pick(&eps.snapshot(), &h, &[0, 1, 2]) < 3);
    }

    #[test]
    fn consecutive_failures_eject_and_the_ejection_runs_out() {
        let eps = endpoints(4, Balance::RoundRobin, quick(3));
        let h = HeaderMap::new();
        eps.report(&eps.snapshot()[2], Outcome::Failure);
        eps.report(&eps.snapshot()[2], Outcome::Failure);
        eps.report(&eps.snapshot()[2], Outcome::Success); // the run is broken
        eps.report(&eps.snapshot()[2], Outcome::Failure);
        eps.report(&eps.snapshot()[2], Outcome::Failure);
        assert!(eps.snapshot()[2].ejected_for().is_none(), "only 2 in a row");
        eps.report(&eps.snapshot()[2], Outcome::Failure);
        assert!(
            eps.snapshot()[2].ejected_for().is_some(),
            "3 in a row eject"
        );
        assert!((0..40).all(|_| eps.pick(&eps.snapshot(), &h, &[]) != 2));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(eps.refresh(), 0, "re-admitted after 200 ms");
        assert!((0..40).any(|_| eps.pick(&eps.snapshot(), &h, &[]) == 2));
    }

    #[test]
    fn repeated_ejections_double_up_to_the_cap() {
        let eps = endpoints(2, Balance::RoundRobin, quick(1));
        let mut lengths = Vec::new();
        for _ in 0..4 {
            eps.report(&eps.snapshot()[0], Outcome::Failure);
            let d = eps.snapshot()[0].ejected_for().expect("ejected");
            lengths.push(d.as_millis().div_ceil(100) * 100);
            std::thread::sleep(d + Duration::from_millis(20));
            eps.refresh();
        }
        assert_eq!(lengths, [200, 400, 700, 700]);
    }

    #[test]
    fn never_more_than_half_the_endpoints_are_ejected() {
        let eps = endpoints(4, Balance::RoundRobin, quick(1));
        for i in 0..4 {
            eps.report(&eps.snapshot()[i], Outcome::Failure);
        }
        let out = (0..4)
            .filter(|&i| eps.snapshot()[i].ejected_for().is_some())
            .count();
        assert_eq!(out, 2);
        // A single endpoint is never ejected: 1 of 1 is over 50%.
        let one = endpoints(1, Balance::RoundRobin, quick(1));
        one.report(&one.snapshot()[0], Outcome::Failure);
        assert!(one.snapshot()[0].ejected_for().is_none());
    }

    #[test]
    fn hashing_keeps_keys_in_place_when_another_endpoint_leaves() {
        let name = HeaderName::from_static("x-user");
        let all = endpoints(
            4,
            Balance::HashHeader(name.clone()),
            OutlierPolicy::default(),
        );
        let mut moved = 0;
        for user in 0..500 {
            let mut h = HeaderMap::new();
            h.insert(&name, format!("user-{user}").parse().unwrap());
            let first = all.pick(&all.snapshot(), &h, &[]);
            assert_eq!(all.pick(&all.snapshot(), &h, &[]), first, "stable");
            // Endpoint 3 gone (tried/ejected): only its keys move.
            let without = all.pick(&all.snapshot(), &h, &[3]);
            if first != 3 {
                assert_eq!(
                    without, first,
                    "user-{user} moved although its endpoint stayed"
                );
            } else {
                moved += 1;
            }
        }
        assert!((60..190).contains(&moved), "about a quarter move: {moved}");
    }

    #[test]
    fn a_refresh_keeps_the_state_of_endpoints_that_stay() {
        let eps = endpoints(3, Balance::RoundRobin, quick(1));
        let before = eps.snapshot();
        eps.report(&before[1], Outcome::Failure);
        assert!(before[1].ejected_for().is_some());
        let backend = |i: usize| {
            let url: BackendUrl = format!("http://10.0.0.{i}:80").parse().unwrap();
            Backend::from(&url)
        };
        // 10.0.0.1 leaves, 10.0.0.9 joins; 10.0.0.2 (ejected) stays.
        let (gone, changed) = eps.replace(vec![backend(2), backend(3), backend(9)]);
        assert!(changed);
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].backend.label, "10.0.0.1:80");
        let after = eps.snapshot();
        assert!(
            Arc::ptr_eq(&after[0], &before[1]),
            "the same endpoint, state and all"
        );
        assert!(after[0].ejected_for().is_some());
        // The same list again changes nothing; an empty one is ignored.
        assert!(!eps.replace(vec![backend(2), backend(3), backend(9)]).1);
        assert!(!eps.replace(Vec::new()).1);
        assert_eq!(eps.len(), 3);
        // The old version stays usable by requests that hold it.
        assert_eq!(before.len(), 3);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; session=abc ; b=2".parse().unwrap());
        h.append(COOKIE, "c=3".parse().unwrap());
        assert_eq!(cookie(&h, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "c"), Some(&b"3"[..]));
        assert_eq!(cookie(&h, "sess"), None);
    }
}
