//! The counting global allocator of the sfu-core zero-allocation tests.
//!
//! It counts per thread: each test does its measured work on its own thread,
//! and libtest's main thread allocates while it waits for the test (its
//! channel's blocking receive) at a moment that varies from run to run, so a
//! process-wide count failed under CI load with allocations that were not the
//! test's.

#![allow(unsafe_code)] // The counting allocator is the one unsafe item here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards every call to the system allocator and counts `alloc`,
/// `alloc_zeroed` and `realloc` of the calling thread.
pub(crate) struct Counting;

std::thread_local! {
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations (including zeroed ones and reallocations) of the calling
/// thread so far.
pub(crate) fn allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

fn count() {
    // `try_with`: a thread's last frees and allocations may run after its
    // thread-locals are gone.
    let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
