//! Graceful shutdown state: whether the gateway is draining (readiness), and
//! which requests are still in flight, so that any request unfinished at the
//! shutdown deadline is logged by id rather than silently dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The set of requests in flight, in one shard per worker: a request
/// registers in its own worker's shard (a slab: a free slot, no hashing),
/// under a lock no other worker takes, on cache lines no other core
/// writes. Only shutdown and the operator read across the shards.
#[derive(Clone)]
pub struct InflightRegistry {
    shards: Arc<[Arc<Shard>; SHARDS]>,
}

/// Shards: workers beyond this share them, which is correct, only slower.
const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    slab: Mutex<Slab>,
}

/// Entries in slots; freed slots are reused first.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<InflightEntry>>,
    free: Vec<usize>,
    len: usize,
}

impl Slab {
    fn insert(&mut self, entry: InflightEntry) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if self.slots.get_mut(slot).and_then(Option::take).is_some() {
            self.len -= 1;
            self.free.push(slot);
        }
    }
}

impl Default for InflightRegistry {
    fn default() -> Self {
        InflightRegistry {
            shards: Arc::new(std::array::from_fn(|_| Arc::default())),
        }
    }
}

impl InflightRegistry {
    /// Registers a request in this worker's shard; it stays listed until
    /// the guard is dropped (on whatever thread).
    pub fn track(&self, entry: InflightEntry) -> Tracked {
        let shard = &self.shards[crate::server::worker::current() % SHARDS];
        let slot = shard.slab.lock().insert(entry);
        Tracked {
            shard: shard.clone(),
            slot,
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.slab.lock().len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The requests still in flight, oldest first.
    pub fn snapshot(&self) -> Vec<InflightEntry> {
        let mut v: Vec<InflightEntry> = Vec::new();
        for shard in self.shards.iter() {
            v.extend(shard.slab.lock().slots.iter().flatten().cloned());
        }
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
    shard: Arc<Shard>,
    slot: usize,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.shard.slab.lock().remove(self.slot);
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

    #[test]
    fn slots_are_reused_and_requests_on_every_thread_are_listed() {
        let reg = InflightRegistry::default();
        let entry = |p: String| InflightEntry {
            request_id: HeaderValue::from_static("id"),
            method: Method::GET,
            path: Arc::from(p),
            started: Instant::now(),
        };
        let a = reg.track(entry("/a".into()));
        let slot = a.slot;
        drop(a);
        let b = reg.track(entry("/b".into()));
        assert_eq!(b.slot, slot, "a freed slot is taken first");
        // Requests tracked on other threads (other shards), and one of them
        // finished on yet another thread.
        let others: Vec<Tracked> = std::thread::scope(|s| {
            (0..4)
                .map(|i| {
                    let reg = reg.clone();
                    s.spawn(move || reg.track(entry(format!("/t{i}"))))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(reg.len(), 5);
        let mut paths: Vec<String> = reg.snapshot().iter().map(|e| e.path.to_string()).collect();
        paths.sort();
        assert_eq!(paths, ["/b", "/t0", "/t1", "/t2", "/t3"]);
        std::thread::spawn(move || drop(others)).join().unwrap();
        assert_eq!(reg.len(), 1);
        drop(b);
        assert!(reg.is_empty());
    }
}
