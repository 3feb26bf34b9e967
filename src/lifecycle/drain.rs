//! Graceful shutdown state: whether the gateway is draining (readiness), and
//! which requests are still in flight, so that any request unfinished at the
//! shutdown deadline is logged by id rather than silently dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::{HeaderValue, Method};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Shared by the gateway, the operator listener and the shutdown sequence.
#[derive(Clone, Default)]
pub struct Drain {
    /// Set at the first SIGTERM: `/readyz` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
    pub inflight: InflightRegistry,
}

impl Drain {
    pub fn new() -> Self {
        Drain::default()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// What is known about a request in flight.
#[derive(Debug, Clone)]
pub struct InflightEntry {
    pub request_id: HeaderValue,
    pub method: Method,
    pub path: Arc<str>,
    pub started: Instant,
}

/// The set of requests in flight. One short lock per request start and end.
#[derive(Clone, Default)]
pub struct InflightRegistry {
    inner: Arc<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, InflightEntry>>,
}

impl InflightRegistry {
    /// Registers a request; it stays listed until the guard is dropped.
    pub fn track(&self, entry: InflightEntry) -> Tracked {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.entries.lock().insert(id, entry);
        Tracked {
            registry: self.inner.clone(),
            id,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The requests still in flight, oldest first.
    pub fn snapshot(&self) -> Vec<InflightEntry> {
        let mut v: Vec<InflightEntry> = self.inner.entries.lock().values().cloned().collect();
        v.sort_by_key(|e| e.started);
        v
    }

    /// Logs every request still in flight, one line each.
    pub fn log_unfinished(&self) {
        for e in self.snapshot() {
            tracing::warn!(
                request_id = %e.request_id.to_str().unwrap_or_default(),
                method = %e.method,
                path = %e.path,
                age_ms = e.started.elapsed().as_millis() as u64,
                "request unfinished at shutdown deadline"
            );
        }
    }
}

/// Removes its request from the registry when dropped.
pub struct Tracked {
    registry: Arc<RegistryInner>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.registry.entries.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_when_their_guard_drops() {
        let reg = InflightRegistry::default();
        let entry = |p: &str| InflightEntry {
            request_id: HeaderValue::from_static("id"),
            method: Method::GET,
            path: Arc::from(p),
            started: Instant::now(),
        };
        let a = reg.track(entry("/a"));
        let b = reg.track(entry("/b"));
        assert_eq!(reg.len(), 2);
        drop(a);
        let left = reg.snapshot();
        assert_eq!(left.len(), 1);
        assert_eq!(&*left[0].path, "/b");
        drop(b);
        assert!(reg.is_empty());
    }
}
