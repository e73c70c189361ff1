//! The shim: `std` or loom, and nothing else.
//!
//! Every atomic, lock, thread, cell and spin hint the crate uses comes from
//! here, so under `--cfg loom` the same names resolve to loom's
//! model-checked types. Where loom has no counterpart this module holds the
//! stand-in: a lock-based `ArrayQueue` (loom cannot see inside crossbeam;
//! `ArrayQueue` is linearizable, so a mutex-guarded `VecDeque` with the
//! same interface is a faithful stand-in) and a `Backoff` that yields at
//! every step. No protocol lives here; time is in `time.rs`, waiting in
//! `wait/`.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread;

#[cfg(not(loom))]
use std::sync as imp;

#[cfg(loom)]
use loom::sync as imp;

/// A mutex whose lock ignores poisoning. Every critical section in the
/// crate leaves its data consistent at every step (user code never runs
/// inside one), so a panic elsewhere while a guard was held is no reason to
/// fail the next caller.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(imp::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(imp::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A condition variable for [`Mutex`], ignoring poisoning as it does.
#[derive(Debug, Default)]
pub(crate) struct Condvar(imp::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(imp::Condvar::new())
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits at most `timeout`. Loom's condvar cannot time out; under loom
    /// callers model the timeout themselves (see `wait::WaitQueue`).
    #[cfg(not(loom))]
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, T> {
        self.0
            .wait_timeout(guard, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// Orders a `SeqCst` read-modify-write before the `SeqCst` loads that follow
/// it in the same thread: nothing on real hardware, a `fence(SeqCst)` under
/// loom.
///
/// In the Rust (C++20) memory model every `SeqCst` operation takes part in
/// one total order consistent with program order, so a `SeqCst` RMW
/// followed by a `SeqCst` load already forbids the store-buffering outcome
/// (on x86 the RMW is a `lock`-prefixed instruction, a full barrier). Loom
/// models `SeqCst` accesses as `AcqRel` (a documented loom limitation) but
/// models `SeqCst` fences exactly, so under loom the fence gives the model
/// the guarantee the hardware gives. The protocols that rely on it say why
/// where they call it (`shared::wake`, `wait::WaitQueue`).
#[inline(always)]
pub(crate) fn fence_after_rmw() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// An `UnsafeCell` with loom's closure API, so loom can check every access
/// to a ring slot for data races.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// A spin hint in a wait loop; a `yield_now` under loom so that the model
/// lets the awaited thread run.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Spin-then-yield back-off for short waits.
#[cfg(not(loom))]
pub(crate) use crossbeam_utils::Backoff;

/// Loom stand-in for [`crossbeam_utils::Backoff`] (and for
/// `wait::YieldWait`): every step yields so the model can schedule the
/// thread being waited for, and it "completes" at once so waits fall
/// through to their blocking path, the protocol worth checking.
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Backoff;

#[cfg(loom)]
impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff
    }
    pub(crate) fn snooze(&self) {
        loom::thread::yield_now();
    }
    pub(crate) fn is_completed(&self) -> bool {
        true
    }
    pub(crate) fn reset(&self) {}
}

/// The `ArrayQueue` behind [`ArrayStorage`](crate::ArrayStorage).
#[cfg(not(loom))]
pub(crate) use crossbeam_queue::ArrayQueue;

/// Loom stand-in for `crossbeam_queue::ArrayQueue`: the same interface and
/// the same linearizable behaviour, built from a loom mutex so that the model
/// sees (and permutes) every access.
#[cfg(loom)]
pub(crate) struct ArrayQueue<T> {
    cap: usize,
    items: Mutex<std::collections::VecDeque<T>>,
}

#[cfg(loom)]
impl<T> ArrayQueue<T> {
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap > 0, "capacity must be non-zero");
        ArrayQueue {
            cap,
            items: Mutex::new(std::collections::VecDeque::with_capacity(cap)),
        }
    }
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let mut q = self.items.lock();
        if q.len() == self.cap {
            return Err(item);
        }
        q.push_back(item);
        Ok(())
    }
    pub(crate) fn pop(&self) -> Option<T> {
        self.items.lock().pop_front()
    }
    pub(crate) fn len(&self) -> usize {
        self.items.lock().len()
    }
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }
}

/// The number of shards to use by default (2 under loom).
pub(crate) fn available_parallelism() -> usize {
    #[cfg(not(loom))]
    {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
    #[cfg(loom)]
    {
        2
    }
}
