//! A global allocator that counts allocations, shared by tests/alloc.rs and
//! benches/latency.rs (each installs it with `#[global_allocator]`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations made so far through [`Counting`].
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// The size of the last allocation, and whether the thread that made it
/// was the one that last called [`mark_thread`]: what a failure reports.
#[allow(dead_code)] // tests/alloc.rs reads them; benches/latency.rs does not
pub static LAST_SIZE: AtomicU64 = AtomicU64::new(0);
static LAST_THREAD: AtomicU64 = AtomicU64::new(0);
static MARKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Its address tells threads apart without allocating.
    static TAG: u8 = const { 0 };
}

fn this_thread() -> u64 {
    TAG.with(|t| std::ptr::from_ref(t) as u64)
}

/// Marks the calling thread as the one [`last_on_marked`] asks about.
#[allow(dead_code)]
pub fn mark_thread() {
    MARKED.store(this_thread(), Ordering::SeqCst);
}

/// Whether the last allocation was made on the marked thread.
#[allow(dead_code)]
pub fn last_on_marked() -> bool {
    LAST_THREAD.load(Ordering::SeqCst) == MARKED.load(Ordering::SeqCst)
}

/// Forwards to the system allocator, counting every allocation.
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LAST_SIZE.store(layout.size() as u64, Ordering::Relaxed);
        LAST_THREAD.store(this_thread(), Ordering::Relaxed);
        // SAFETY: forwards the caller's layout unchanged to the system
        // allocator, whose contract is the one implemented here.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }
}
