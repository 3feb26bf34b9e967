//! The live route table: the hot-swappable state that every request reads
//! and only the reloader writes. A request takes an `Arc` of the table it
//! started with, so a swap in the middle of a request cannot change it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::table::RouteTable;

/// What the operator's `/routes` reports about loading.
#[derive(Debug, Clone, Default)]
pub struct LoadStatus {
    /// SHA-256 (hex) of the route file the live table came from.
    pub sha256: Option<String>,
    /// When the live table was loaded.
    pub loaded_at: Option<SystemTime>,
    /// The last failed load's error (FILE:LINE:COL lines), cleared by a
    /// successful one.
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
}

pub struct LiveRoutes {
    table: ArcSwap<RouteTable>,
    /// Increases by one on every successful load; 0 means none yet.
    generation: AtomicU64,
    /// True once a valid table has been loaded (drives `/readyz`).
    loaded: AtomicBool,
    status: Mutex<LoadStatus>,
}

impl LiveRoutes {
    /// Starts with an empty table that is not yet "loaded".
    pub fn new() -> Self {
        LiveRoutes {
            table: ArcSwap::from_pointee(RouteTable::empty()),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            status: Mutex::new(LoadStatus::default()),
        }
    }

    /// The current table, to keep for the life of one request.
    pub fn current(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Swaps in a new table, returning the new generation. Table,
    /// generation and status change under the status lock, so that
    /// [`snapshot`](Self::snapshot) always sees them agree.
    pub fn install(&self, table: RouteTable, sha256: String) -> u64 {
        let mut st = self.status.lock();
        self.table.store(Arc::new(table));
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.loaded.store(true, Ordering::Release);
        st.sha256 = Some(sha256);
        st.loaded_at = Some(SystemTime::now());
        st.last_error = None;
        st.last_error_at = None;
        generation
    }

    /// The table, its generation and the load status, consistent with each
    /// other (for `/routes`).
    pub fn snapshot(&self) -> (Arc<RouteTable>, u64, LoadStatus) {
        let st = self.status.lock();
        (self.table.load_full(), self.generation(), st.clone())
    }

    /// Records a failed load; the current table keeps serving.
    pub fn record_failure(&self, error: String) {
        let mut st = self.status.lock();
        st.last_error = Some(error);
        st.last_error_at = Some(SystemTime::now());
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn status(&self) -> LoadStatus {
        self.status.lock().clone()
    }
}

impl Default for LiveRoutes {
    fn default() -> Self {
        LiveRoutes::new()
    }
}
