//! Giving freed memory back to the operating system.
//!
//! glibc's allocator keeps what a program frees for reuse: after 10,000
//! idle connections are parked (their buffers freed) or closed, the
//! process would otherwise keep its peak size for good. So when many
//! connections have released memory since the last look, the control plane
//! asks the allocator to return its free pages (`malloc_trim`), off the
//! workers' hot path. Elsewhere (musl) this is a no-op.

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

/// Trims every [`INTERVAL`] in which at least [`WORTH_TRIMMING`]
/// connections released their buffers, until `stop` turns true.
pub async fn trim_freed(mut stop: watch::Receiver<bool>) {
    let mut seen = RELEASED.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let now = RELEASED.load(Ordering::Relaxed);
        if now - seen >= WORTH_TRIMMING {
            let connections = now - seen;
            seen = now;
            let released = trim();
            tracing::debug!(connections, released, "returned freed memory to the OS");
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

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
