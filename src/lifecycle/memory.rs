//! Giving freed memory back to the operating system.
//!
//! glibc's allocator keeps what a program frees for reuse: after 10,000
//! idle connections are parked (their buffers freed) or closed, or after a
//! burst of traffic ends, the process would otherwise keep its peak size
//! for good. So the control plane asks the allocator to return its free
//! pages (`malloc_trim`), off the workers' hot path: when many connections
//! have released memory since the last look, and once more when
//! connections stopped closing after some did (a burst is over). Elsewhere
//! (musl) this is a no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Connections that gave up their buffers (parked or closed) so far.
static RELEASED: AtomicU64 = AtomicU64::new(0);

/// How often the control plane looks.
const INTERVAL: Duration = Duration::from_secs(2);

/// Releases since the last trim that make the next one worth its cost
/// (about 16 KiB each, so 4 MiB or more).
const WORTH_TRIMMING: u64 = 256;

/// A connection freed its buffers (cheap: one relaxed add).
pub fn released() {
    RELEASED.fetch_add(1, Ordering::Relaxed);
}

/// Returns free heap pages and free pooled connection buffers
/// ([`super::buffers`]) to the operating system. `true` when something was
/// released.
pub fn trim() -> bool {
    let pooled = super::buffers::release_free() > 0;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        let heap = unsafe { libc::malloc_trim(0) == 1 };
        heap || pooled
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        pooled
    }
}

/// Trims, looking every [`INTERVAL`], whenever [`worth_trimming`] says so,
/// until `stop` turns true.
pub async fn trim_freed(mut stop: watch::Receiver<bool>) {
    let mut trimmed_at = RELEASED.load(Ordering::Relaxed);
    let mut seen = trimmed_at;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let now = RELEASED.load(Ordering::Relaxed);
        if worth_trimming(now - trimmed_at, now - seen) {
            let connections = now - trimmed_at;
            trimmed_at = now;
            let released = trim();
            tracing::debug!(connections, released, "returned freed memory to the OS");
        }
        seen = now;
    }
}

/// Whether to trim, given the releases since the last trim and those in
/// the last interval: many of them, or some that have stopped coming (the
/// connections of a burst have closed; trimming then costs the workers
/// nothing, and the process does not keep the burst's size until the next
/// one).
fn worth_trimming(since_trim: u64, last_interval: u64) -> bool {
    since_trim >= WORTH_TRIMMING || (since_trim > 0 && last_interval == 0)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn trims_after_many_releases_or_once_a_burst_is_over() {
        // Nothing released: nothing to do.
        assert!(!worth_trimming(0, 0));
        // Releases still coming, not many yet: wait.
        assert!(!worth_trimming(10, 10));
        assert!(!worth_trimming(WORTH_TRIMMING - 1, 3));
        // Many: trim even while they keep coming.
        assert!(worth_trimming(WORTH_TRIMMING, 100));
        // Some, and none in the last interval: the burst is over.
        assert!(worth_trimming(1, 0));
        assert!(worth_trimming(64, 0));
    }

    #[test]
    fn trim_returns_freed_heap_pages() {
        // 16 MiB in blocks below glibc's mmap threshold: freed, they stay
        // in the heap until trimmed.
        let blocks: Vec<Vec<u8>> = (0..1024).map(|i| vec![i as u8; 16 * 1024]).collect();
        assert_eq!(blocks.iter().map(Vec::len).sum::<usize>(), 16 * 1024 * 1024);
        drop(blocks);
        assert!(trim(), "16 MiB freed, nothing returned");
    }
}
