//! When a failed upstream exchange is tried again, and how often.
//!
//! A request is retried on another endpoint only when that is safe: when
//! it never reached a backend (the connection could not be opened, or a
//! pooled connection was found closed before anything was written), or,
//! for an idempotent request without a body, when the backend reset the
//! connection before answering or answered with a status the route lists
//! in `retry_on`. Each route's retries are bounded by a [`RetryBudget`],
//! so that retries cannot multiply an outage.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method};

use super::endpoints::random;

/// Why a request was tried again (`reason` label of
/// `portico_upstream_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection could not be opened: the request never left.
    Connect,
    /// The connection broke before any response byte (idempotent only).
    Reset,
    /// The backend answered with a status in `retry_on` (idempotent only).
    Status,
}

impl RetryReason {
    pub const ALL: [RetryReason; 3] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Status => "status",
        }
    }
}

static IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// RFC 9110 §9.2.2 idempotent methods, or a request the client marked
/// safe to repeat with an `Idempotency-Key`.
pub fn idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(&IDEMPOTENCY_KEY)
}

/// Pause before try number `tries + 1`: full jitter under 25 ms doubling
/// per try, at most 250 ms.
pub fn backoff(tries: u32) -> Duration {
    let cap = (25u64 << tries.saturating_sub(1).min(4)).min(250);
    Duration::from_millis(random() % (cap + 1))
}

/// Seconds the budget looks back over.
const WINDOW: u64 = 10;
/// Retries allowed as a share of requests over the window.
const RATIO_PERCENT: u64 = 20;
/// Retries allowed per second whatever the traffic (so that a quiet route
/// can still retry).
const MIN_PER_SECOND: u64 = 3;

/// Retries at most 20% of the requests over the last 10 s, plus 3 per
/// second: one bucket per second, all atomics.
#[derive(Debug, Default)]
pub struct RetryBudget {
    buckets: [Bucket; WINDOW as usize],
}

#[derive(Debug, Default)]
struct Bucket {
    /// The second this bucket counts ([`now_s`]); older means stale.
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// The second (never 0) of `at` on the process clock.
fn second_of(at: std::time::Instant) -> u64 {
    super::endpoints::since_origin(at).as_secs() + 1
}

fn now_s() -> u64 {
    second_of(std::time::Instant::now())
}

impl RetryBudget {
    /// This second's bucket, emptied first if it still holds an old second.
    fn current(&self, now: u64) -> &Bucket {
        let b = &self.buckets[(now % WINDOW) as usize];
        let seen = b.second.load(Ordering::Relaxed);
        if seen != now
            && b.second
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Counts a request that started at `at` towards the budget (the
    /// request's own start: no clock read of its own).
    pub fn request(&self, at: std::time::Instant) {
        self.current(second_of(at))
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_retry(&self) -> bool {
        let now = now_s();
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let s = b.second.load(Ordering::Relaxed);
            if s + WINDOW > now && s <= now {
                requests += u64::from(b.requests.load(Ordering::Relaxed));
                retries += u64::from(b.retries.load(Ordering::Relaxed));
            }
        }
        let allowed = requests * RATIO_PERCENT / 100 + MIN_PER_SECOND * WINDOW;
        if retries >= allowed {
            return false;
        }
        self.current(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_fifth_of_requests_plus_a_floor() {
        let b = RetryBudget::default();
        // No traffic: the floor, 3 per second over 10 s.
        let floor = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(floor, 30);
        let b = RetryBudget::default();
        for _ in 0..1000 {
            b.request(std::time::Instant::now());
        }
        let allowed = (0..1000).filter(|_| b.try_retry()).count();
        assert_eq!(allowed, 200 + 30);
    }

    #[test]
    fn idempotency_follows_the_method_or_the_key() {
        let none = HeaderMap::new();
        assert!(idempotent(&Method::GET, &none));
        assert!(idempotent(&Method::PUT, &none));
        assert!(!idempotent(&Method::POST, &none));
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", "abc".parse().unwrap());
        assert!(idempotent(&Method::POST, &keyed));
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        for tries in 1..10 {
            let cap = Duration::from_millis((25u64 << (tries - 1).min(4)).min(250));
            assert!((0..50).all(|_| backoff(tries) <= cap));
        }
    }
}
