//! What a thread remembers about the flushers it runs: which batchers'
//! flushers are on its stack (so a call from a processor into its own
//! batcher is told apart and refused instead of waiting for itself), and
//! whether the flusher is dropping what a panicking processor left (so a
//! tracked job dropped then resolves as `Panicked`).
//!
//! Thread-local, so nothing here is shared between threads and there is no
//! protocol to check beyond its use: the loom models `reentrant` (flush and
//! submit from the processor) and `tickets` (jobs left by a panic) rely on
//! it; the mutant that drops the reentrancy check is caught by `reentrant`.

use std::cell::{Cell, RefCell};

/// The batchers whose flusher runs on this thread, innermost last (a
/// processor may run another batcher's flusher), and the after-panic mark.
struct FlusherMarks {
    flushers: RefCell<Vec<u64>>,
    after_panic: Cell<bool>,
}

#[cfg(not(loom))]
std::thread_local! {
    static MARKS: FlusherMarks = const {
        FlusherMarks { flushers: RefCell::new(Vec::new()), after_panic: Cell::new(false) }
    };
}

#[cfg(loom)]
loom::thread_local! {
    static MARKS: FlusherMarks =
        FlusherMarks { flushers: RefCell::new(Vec::new()), after_panic: Cell::new(false) };
}

/// Marks this thread as running batcher `id`'s flusher until the guard is
/// dropped; marks nest.
pub(crate) fn enter_flusher(id: u64) -> FlusherMark {
    MARKS.with(|s| s.flushers.borrow_mut().push(id));
    FlusherMark { id }
}

/// See [`enter_flusher`].
#[derive(Debug)]
pub(crate) struct FlusherMark {
    id: u64,
}

impl Drop for FlusherMark {
    fn drop(&mut self) {
        // `try_with`: the thread's marks may be gone if this runs while the
        // thread exits.
        let _ = MARKS.try_with(|s| {
            let mut f = s.flushers.borrow_mut();
            if let Some(k) = f.iter().rposition(|&k| k == self.id) {
                f.remove(k);
            }
        });
    }
}

/// Is this thread running batcher `id`'s flusher (its processor, or a
/// flusher nested inside it)?
pub(crate) fn is_flusher_of(id: u64) -> bool {
    MARKS
        .try_with(|s| s.flushers.borrow().contains(&id))
        .unwrap_or(false)
}

/// A number for the calling thread, never 0 and never reused in the
/// process: what a batcher keeps to know the thread that polls its flusher.
pub(crate) fn thread_no() -> u64 {
    // Not modelled: a thread's number only needs to be distinct.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    #[cfg(not(loom))]
    std::thread_local! {
        static NO: Cell<u64> = const { Cell::new(0) };
    }
    // Loom's threads share one OS thread: its own thread-locals tell them
    // apart.
    #[cfg(loom)]
    loom::thread_local! {
        static NO: Cell<u64> = Cell::new(0);
    }
    NO.try_with(|n| {
        if n.get() == 0 {
            n.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        n.get()
    })
    // During the thread's exit: a number of its own, distinct from all.
    .unwrap_or_else(|_| NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Runs `f` with the "dropping what a panicking processor left" mark set.
pub(crate) fn after_panic<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = MARKS.try_with(|s| s.after_panic.set(self.0));
        }
    }
    let _reset = Reset(MARKS.with(|s| s.after_panic.replace(true)));
    f()
}

/// Is the flusher dropping what a panicking processor left?
pub(crate) fn is_after_panic() -> bool {
    MARKS.try_with(|s| s.after_panic.get()).unwrap_or(false)
}
