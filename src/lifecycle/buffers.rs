//! Connection buffers kept apart from everything else: the process's global
//! allocator serves 4–16 KiB blocks (hyper's per-connection read and write
//! buffers, 8 KiB each) from page-aligned pools of their own, and the rest
//! from the system allocator.
//!
//! Why: a connection's long-lived state (its task, socket registration,
//! timers; about 2 KiB) is allocated right next to its 16 KiB of buffers.
//! When 10,000 connections go idle and free their buffers (parking, see
//! `server::idle`), every small survivor still pins the pages around it, so
//! glibc could return little of what was freed: about 7 KiB stayed resident
//! per idle connection. With the buffers in their own pools the survivors
//! sit together, and the freed buffers are whole pages that
//! [`release_free`] hands back to the system.
//!
//! It is also cheaper per request than glibc for these sizes (above its
//! per-thread cache): an allocation is a pop from a free list under a
//! short, uncontended lock. Blocks are never unmapped; free ones are
//! released with `madvise(MADV_DONTNEED)` (their pages are zero and
//! unbacked until reused), so the address space stays at the peak number
//! of buffers in use, not the memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::{self, NonNull};
use std::sync::Mutex;

/// Block sizes, smallest first; a request goes to the first that fits,
/// if it is larger than [`SMALLEST`].
const CLASSES: [usize; 2] = [8 * 1024, 16 * 1024];

/// Requests up to this size stay with the system allocator (its small-block
/// caches are as good as it gets, and most survivors are small).
const SMALLEST: usize = 4 * 1024;

/// Blocks are page-aligned, so that a free one can be released whole.
const PAGE: usize = 4096;

/// Address space reserved per refill of a class.
const CHUNK: usize = 2 * 1024 * 1024;

/// Free blocks one list can hold (entries are touched only as used).
const LIST_CAPACITY: usize = 1 << 22;

/// The global allocator: pooled connection-buffer sizes, the system
/// allocator for the rest.
pub struct PooledAllocator;

/// A stack of free blocks in memory of its own (allocating from inside the
/// allocator is not possible).
struct FreeList {
    slots: *mut *mut u8,
    len: usize,
}

impl FreeList {
    const fn new() -> Self {
        FreeList {
            slots: ptr::null_mut(),
            len: 0,
        }
    }

    fn pop(&mut self) -> Option<NonNull<u8>> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: entries below `len` were written by `push`.
        NonNull::new(unsafe { *self.slots.add(self.len) })
    }

    /// `false` when the list is full (or its memory cannot be mapped).
    fn push(&mut self, block: NonNull<u8>) -> bool {
        if self.slots.is_null() {
            match map(LIST_CAPACITY * size_of::<*mut u8>()) {
                Some(p) => self.slots = p.as_ptr().cast(),
                None => return false,
            }
        }
        if self.len == LIST_CAPACITY {
            return false;
        }
        // SAFETY: `len < LIST_CAPACITY`, inside the mapping.
        unsafe { *self.slots.add(self.len) = block.as_ptr() };
        self.len += 1;
        true
    }
}

/// One block size: blocks freed since the last release (`dirty`, reused
/// first: their pages are still backed), released ones (`clean`), and the
/// unused rest of the current chunk.
struct Class {
    dirty: FreeList,
    clean: FreeList,
    next: usize,
    end: usize,
}

// SAFETY: the raw pointers are plain memory addresses owned by the pool,
// only touched under the class's lock.
unsafe impl Send for Class {}

impl Class {
    const fn new() -> Self {
        Class {
            dirty: FreeList::new(),
            clean: FreeList::new(),
            next: 0,
            end: 0,
        }
    }

    fn take(&mut self, size: usize) -> Option<NonNull<u8>> {
        if let Some(b) = self.dirty.pop().or_else(|| self.clean.pop()) {
            return Some(b);
        }
        if self.next == self.end {
            let chunk = map(CHUNK)?;
            self.next = chunk.as_ptr() as usize;
            self.end = self.next + CHUNK;
        }
        let block = self.next;
        self.next += size;
        NonNull::new(block as *mut u8)
    }
}

/// Pools per thread group: each worker allocates and frees its
/// connections' buffers on its own thread, so with one set per worker the
/// locks are never contended and their cache lines stay on one core. A
/// block freed on another thread simply joins that thread's set.
const SETS: usize = 4;

static POOLS: [[Mutex<Class>; CLASSES.len()]; SETS] =
    [const { [const { Mutex::new(Class::new()) }; CLASSES.len()] }; SETS];

/// The class serving `layout`, if any.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if size <= SMALLEST || layout.align() > PAGE {
        return None;
    }
    CLASSES.iter().position(|&c| size <= c)
}

/// This thread's pool of `class` (workers are numbered from 1; the other
/// threads share set 0).
fn lock(class: usize) -> std::sync::MutexGuard<'static, Class> {
    lock_in(crate::server::worker::current() % SETS, class)
}

fn lock_in(set: usize, class: usize) -> std::sync::MutexGuard<'static, Class> {
    POOLS[set][class].lock().unwrap_or_else(|e| e.into_inner())
}

/// Anonymous, private, zeroed memory from the kernel.
fn map(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: a fresh private anonymous mapping; no existing memory involved.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast())
}

unsafe impl GlobalAlloc for PooledAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(c) => lock(c)
                .take(CLASSES[c])
                .map_or(ptr::null_mut(), NonNull::as_ptr),
            // SAFETY: forwarded as received.
            None => unsafe { System.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(c) => {
                let Some(block) = NonNull::new(ptr) else {
                    return;
                };
                if !lock(c).dirty.push(block) {
                    // Only with millions of free blocks: give this one back.
                    // SAFETY: a whole, page-aligned block of the pool's own
                    // mapping, no longer used by anyone.
                    unsafe { libc::munmap(ptr.cast(), CLASSES[c]) };
                }
            }
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(_) => {
                // SAFETY: as `alloc`; a reused block is not zero.
                let p = unsafe { self.alloc(layout) };
                if !p.is_null() {
                    // SAFETY: the block holds at least `layout.size()` bytes.
                    unsafe { ptr::write_bytes(p, 0, layout.size()) };
                }
                p
            }
            // SAFETY: forwarded as received.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (whole function): the caller guarantees `ptr` was allocated
        // with `layout` and that `new_size` with its alignment is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            // Same block size: the block already holds it.
            (Some(a), Some(b)) if a == b => ptr,
            _ => unsafe {
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            },
        }
    }
}

/// Hands the pages of free pooled blocks back to the system; returns how
/// many bytes that was. Run off the workers: it makes one system call per
/// free block, in batches, holding a class's lock only to move entries.
pub fn release_free() -> usize {
    let mut released = 0;
    for set in 0..SETS {
        released += release_set(set);
    }
    released
}

fn release_set(set: usize) -> usize {
    const BATCH: usize = 256;
    let mut released = 0;
    for (c, &size) in CLASSES.iter().enumerate() {
        loop {
            let mut batch = [ptr::null_mut::<u8>(); BATCH];
            let mut n = 0;
            {
                let mut class = lock_in(set, c);
                while n < BATCH
                    && let Some(b) = class.dirty.pop()
                {
                    batch[n] = b.as_ptr();
                    n += 1;
                }
            }
            if n == 0 {
                break;
            }
            for &b in &batch[..n] {
                // SAFETY: a free block of the pool's own mapping, taken off
                // the free list: nobody else can reach it until it is put back.
                unsafe { libc::madvise(b.cast(), size, libc::MADV_DONTNEED) };
            }
            released += n * size;
            let mut class = lock_in(set, c);
            for &b in &batch[..n] {
                if let Some(b) = NonNull::new(b)
                    && !class.clean.push(b)
                {
                    // SAFETY: as in `dealloc`.
                    unsafe { libc::munmap(b.as_ptr().cast(), size) };
                }
            }
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pools are process-wide: tests that look at which block comes
    /// back take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_go_to_the_class_that_fits_or_to_the_system() {
        assert_eq!(class_of(layout(1, 1)), None);
        assert_eq!(class_of(layout(4096, 8)), None);
        assert_eq!(class_of(layout(4097, 8)), Some(0));
        assert_eq!(class_of(layout(8192, 8)), Some(0));
        assert_eq!(class_of(layout(8193, 8)), Some(1));
        assert_eq!(class_of(layout(16384, 4096)), Some(1));
        assert_eq!(class_of(layout(16385, 8)), None);
        assert_eq!(class_of(layout(8192, 8192)), None, "over-aligned");
    }

    #[test]
    fn pooled_blocks_are_aligned_distinct_writable_and_reused() {
        let _turn = serial();
        let a = PooledAllocator;
        let l = layout(8192, 8);
        unsafe {
            let blocks: Vec<*mut u8> = (0..64).map(|_| a.alloc(l)).collect();
            for (i, &b) in blocks.iter().enumerate() {
                assert!(!b.is_null());
                assert_eq!(b as usize % PAGE, 0);
                ptr::write_bytes(b, i as u8, 8192);
            }
            for (i, &b) in blocks.iter().enumerate() {
                let s = std::slice::from_raw_parts(b, 8192);
                assert!(s.iter().all(|&x| x == i as u8), "block {i} was overwritten");
            }
            let last = *blocks.last().unwrap();
            for &b in &blocks {
                a.dealloc(b, l);
            }
            // LIFO: the block freed last comes back first.
            let again = a.alloc(l);
            assert_eq!(again, last);
            a.dealloc(again, l);
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_reused() {
        let _turn = serial();
        let a = PooledAllocator;
        let l = layout(6000, 8);
        unsafe {
            let p = a.alloc(l);
            ptr::write_bytes(p, 0xAB, 6000);
            a.dealloc(p, l);
            let z = a.alloc_zeroed(l);
            assert!(std::slice::from_raw_parts(z, 6000).iter().all(|&x| x == 0));
            a.dealloc(z, l);
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_the_system() {
        let a = PooledAllocator;
        unsafe {
            let mut size = 100;
            let mut p = a.alloc(layout(size, 8));
            for i in 0..size {
                *p.add(i) = i as u8;
            }
            // 100 B (system) -> 5 KiB -> 7 KiB (same block) -> 12 KiB -> 40 KiB
            // (system) -> 9 KiB -> 50 B.
            for next in [5000, 7000, 12000, 40000, 9000, 50] {
                let q = a.realloc(p, layout(size, 8), next);
                assert!(!q.is_null());
                if class_of(layout(size, 8)).is_some()
                    && class_of(layout(size, 8)) == class_of(layout(next, 8))
                {
                    assert_eq!(q, p, "{size} -> {next} fits the same block");
                }
                let kept = size.min(next);
                for i in 0..kept.min(100) {
                    assert_eq!(*q.add(i), i as u8, "{size} -> {next}: byte {i}");
                }
                p = q;
                size = next;
            }
            a.dealloc(p, layout(size, 8));
        }
    }

    #[test]
    fn released_blocks_come_back_zeroed_and_usable() {
        let _turn = serial();
        let a = PooledAllocator;
        let l = layout(16384, 8);
        unsafe {
            let blocks: Vec<*mut u8> = (0..32)
                .map(|_| {
                    let b = a.alloc(l);
                    ptr::write_bytes(b, 0xCD, 16384);
                    b
                })
                .collect();
            for &b in &blocks {
                a.dealloc(b, l);
            }
            assert!(release_free() >= 32 * 16384);
            // Released pages read as zero when reused.
            let again: Vec<*mut u8> = (0..32).map(|_| a.alloc(l)).collect();
            for &b in &again {
                let s = std::slice::from_raw_parts(b, 16384);
                assert!(s.iter().all(|&x| x == 0), "a released block kept its bytes");
                ptr::write_bytes(b, 1, 16384);
            }
            for &b in &again {
                a.dealloc(b, l);
            }
        }
    }

    #[test]
    fn threads_allocating_and_freeing_at_once_never_share_a_block() {
        let _turn = serial();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let a = PooledAllocator;
                    let l = layout(8192, 16);
                    for round in 0..200 {
                        let mine: Vec<*mut u8> = (0..16)
                            .map(|_| unsafe {
                                let b = a.alloc(l);
                                ptr::write_bytes(b, (t * 16 + round % 16) as u8, 8192);
                                b
                            })
                            .collect();
                        for &b in &mine {
                            let s = unsafe { std::slice::from_raw_parts(b, 8192) };
                            assert!(s.iter().all(|&x| x == (t * 16 + round % 16) as u8));
                        }
                        for b in mine {
                            unsafe { a.dealloc(b, l) };
                        }
                        if round % 50 == 0 {
                            release_free();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
