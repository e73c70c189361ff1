//! Waiting: the queue that producers, `flush` and `shutdown` callers wait
//! in, the short yield-wait before it, and (in [`strategy`]) how the flusher
//! waits for work.
//!
//! # Protocol of [`WaitQueue`] (no lost wake-up)
//!
//! A waiter increments `waiters` (`SeqCst` RMW, then
//! [`fence_after_rmw`]), then re-checks its
//! condition under the lock before each wait; the side that makes progress
//! publishes it with `SeqCst` stores or RMWs, issues `fence(SeqCst)` and
//! notifies only if it then sees `waiters > 0`. In the single `SeqCst`
//! order either the notifier's load comes after the waiter's increment (it
//! sees the waiter and notifies under the lock: the waiter is either
//! waiting, or will see the progress when it takes the lock), or the
//! waiter's re-check comes after the progress and sees it. Checked by the
//! loom models `blocked` (producers waiting for room), `flush` and
//! `tickets` (async waiters); its mutants drop the notifier's fence and an
//! async waiter's increment.

pub(crate) mod strategy;

use crate::sync::{fence, fence_after_rmw, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering};
use crate::time::Clock;
use std::task::{Context, Poll, Waker};

/// Blocking and async waiters for progress made by other threads: a
/// lock-free check for the notifier, a mutex and condvar (and a slab of
/// wakers) for the waiters.
#[derive(Debug)]
pub(crate) struct WaitQueue {
    waiters: AtomicUsize,
    /// The wakers of async waiters; blocking waiters wait on `cv`.
    lock: Mutex<Wakers>,
    cv: Condvar,
}

/// The async waiters' wakers, one slot per registered future (its key), so
/// a future that polls again replaces its own waker and one that is
/// dropped frees its slot: nothing accumulates.
#[derive(Debug, Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl WaitQueue {
    pub(crate) fn new() -> Self {
        WaitQueue {
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(Wakers::default()),
            cv: Condvar::new(),
        }
    }

    /// Blocks until `ready()` returns `Some`, or until `deadline` (then
    /// returns `None`). `ready` is evaluated under the lock.
    pub(crate) fn wait<R>(
        &self,
        clock: &Clock,
        deadline: Option<u64>,
        mut ready: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        // SeqCst RMW: pairs with the fence in `notify`.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        fence_after_rmw();
        let out = {
            let mut guard = self.lock.lock();
            loop {
                if let Some(r) = ready() {
                    break Some(r);
                }
                if let Some(at) = deadline {
                    if clock.now() >= at {
                        break None;
                    }
                }
                guard = self.block(guard, clock, deadline);
            }
        };
        self.waiters.fetch_sub(1, Ordering::Release);
        out
    }

    /// One wait on the condvar, until notified or `deadline`. Under loom a
    /// timed wait lets the deadline pass instead (loom's condvar cannot
    /// time out); the caller's loop re-checks.
    fn block<'a>(
        &'a self,
        guard: MutexGuard<'a, Wakers>,
        clock: &Clock,
        deadline: Option<u64>,
    ) -> MutexGuard<'a, Wakers> {
        let Some(at) = deadline else {
            return self.cv.wait(guard);
        };
        #[cfg(not(loom))]
        {
            let left = std::time::Duration::from_nanos(at.saturating_sub(clock.now()));
            self.cv.wait_timeout(guard, left)
        }
        #[cfg(loom)]
        {
            drop(guard);
            clock.advance_to(at);
            loom::thread::yield_now();
            self.lock.lock()
        }
    }

    /// The async form of [`wait`](WaitQueue::wait): registers once (the key
    /// in `registered`), checks `ready()` under the lock and, if not ready,
    /// leaves the task's waker in its slot to be woken by the next
    /// `notify`. Call [`deregister`](WaitQueue::deregister) when done (ready
    /// or dropped).
    pub(crate) fn poll_wait<R>(
        &self,
        cx: &mut Context<'_>,
        registered: &mut Option<usize>,
        mut ready: impl FnMut() -> Option<R>,
    ) -> Poll<R> {
        let mut wakers = self.lock.lock();
        let key = match *registered {
            Some(k) => k,
            None => {
                // SeqCst RMW: pairs with the fence in `notify`, as in `wait`.
                self.waiters.fetch_add(1, Ordering::SeqCst);
                fence_after_rmw();
                let k = match wakers.free.pop() {
                    Some(k) => k,
                    None => {
                        wakers.slots.push(None);
                        wakers.slots.len() - 1
                    }
                };
                *registered = Some(k);
                k
            }
        };
        if let Some(r) = ready() {
            wakers.slots[key] = None;
            wakers.free.push(key);
            drop(wakers);
            *registered = None;
            self.waiters.fetch_sub(1, Ordering::Release);
            return Poll::Ready(r);
        }
        match &mut wakers.slots[key] {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Ends an async wait begun by [`poll_wait`](WaitQueue::poll_wait),
    /// releasing its waker.
    pub(crate) fn deregister(&self, registered: &mut Option<usize>) {
        if let Some(key) = registered.take() {
            let waker = {
                let mut wakers = self.lock.lock();
                let w = wakers.slots[key].take();
                wakers.free.push(key);
                w
            };
            // Dropped outside the lock: a waker's drop is user code.
            drop(waker);
            self.waiters.fetch_sub(1, Ordering::Release);
        }
    }

    /// Wakes every waiter if there are any. The caller has published its
    /// progress with `SeqCst` stores or RMWs before calling.
    pub(crate) fn notify(&self) {
        // SeqCst fence: pairs with the RMW on `waiters` in `wait`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let mut guard = self.lock.lock();
            self.cv.notify_all();
            let woken: Vec<Waker> = guard.slots.iter_mut().filter_map(Option::take).collect();
            drop(guard);
            // Woken outside the lock: a waker may run its task inline. Each
            // woken future polls again and puts its waker back in its slot.
            // A waker is the user's (a runtime's) code: one that panics must
            // not unwind the flusher, nor keep the others from being woken.
            for w in woken {
                crate::processor::call_quietly(|| w.wake());
            }
        }
    }
}

/// A short wait that gives the core away at every step: `yield_now`, then
/// the caller re-checks its condition; after [`YieldWait::STEPS`] steps it
/// is completed and the caller blocks instead (in a [`WaitQueue`]).
///
/// Why not [`Backoff`](crate::sync::Backoff)'s pause spinning: with more
/// busy threads than cores (two producers and the flusher on two cores), a
/// thread spinning on `pause` holds the core that the thread it waits for
/// needs, until the scheduler preempts it (BENCHMARKS.md, "Yield, not
/// pause"). On an otherwise idle core `yield_now` returns in a fraction of
/// a microsecond, so it is still a fast poll.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct YieldWait {
    steps: std::cell::Cell<u32>,
}

#[cfg(not(loom))]
impl YieldWait {
    /// Yields before a waiter blocks: a few microseconds on an idle core,
    /// about a batch's drain time.
    pub(crate) const STEPS: u32 = 16;

    pub(crate) fn new() -> Self {
        YieldWait::default()
    }
    pub(crate) fn snooze(&self) {
        std::thread::yield_now();
        self.steps.set(self.steps.get() + 1);
    }
    pub(crate) fn is_completed(&self) -> bool {
        self.steps.get() >= Self::STEPS
    }
}

/// Under loom the short wait is the shim's back-off: it completes at once,
/// so waits fall through to their blocking path.
#[cfg(loom)]
pub(crate) use crate::sync::Backoff as YieldWait;
