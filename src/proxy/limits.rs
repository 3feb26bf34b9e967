//! In-flight request limits: gateway-wide and per route. A request that
//! would exceed either is answered `503 overloaded` at once — shedding load
//! early instead of queueing it behind slow upstreams.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntGauge;

/// A counter with a ceiling. Cloning shares the counter.
#[derive(Clone, Debug)]
pub struct InflightLimit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: AtomicUsize,
    max: usize,
    /// `portico_inflight_requests` for the gateway-wide limit; none per route.
    gauge: Option<IntGauge>,
}

impl InflightLimit {
    pub fn new(max: usize, gauge: Option<IntGauge>) -> Self {
        InflightLimit {
            inner: Arc::new(Inner {
                current: AtomicUsize::new(0),
                max,
                gauge,
            }),
        }
    }

    /// Takes one slot, or `None` when the ceiling is reached.
    pub fn try_acquire(&self) -> Option<InflightPermit> {
        let prev = self.inner.current.fetch_add(1, Ordering::AcqRel);
        if prev >= self.inner.max {
            self.inner.current.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let Some(g) = &self.inner.gauge {
            g.inc();
        }
        Some(InflightPermit {
            limit: self.inner.clone(),
        })
    }

    pub fn current(&self) -> usize {
        self.inner.current.load(Ordering::Acquire)
    }
}

/// Holds one slot until dropped.
#[derive(Debug)]
pub struct InflightPermit {
    limit: Arc<Inner>,
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        self.limit.current.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.limit.gauge {
            g.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_at_the_ceiling_and_recovers() {
        let gauge = IntGauge::new("t", "t").unwrap();
        let limit = InflightLimit::new(2, Some(gauge.clone()));
        let a = limit.try_acquire().expect("first");
        let b = limit.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none(), "third is shed");
        assert_eq!(gauge.get(), 2);
        drop(a);
        let c = limit.try_acquire().expect("slot freed");
        assert_eq!(limit.current(), 2);
        drop((b, c));
        assert_eq!(limit.current(), 0);
        assert_eq!(gauge.get(), 0);
    }
}
