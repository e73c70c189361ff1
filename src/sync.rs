//! The one door to concurrency.
//!
//! Every atomic, lock, thread, park, clock, ring-slot cell and queue the
//! engine uses comes from here. Under `--cfg loom` the same names resolve to
//! loom's model-checked types (so the default ring's slot cells are checked
//! for data races), a lock-based stand-in for the optional `ArrayQueue`
//! storage (loom cannot see inside crossbeam; `ArrayQueue` is linearizable,
//! so a mutex-guarded `VecDeque` with the same interface is a faithful
//! stand-in), a mock clock (loom has no time) and `yield_now` for spin
//! hints. The engine never names `std::sync` or `loom` directly.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread;

/// Orders a `SeqCst` read-modify-write before the `SeqCst` loads that follow
/// it in the same thread.
///
/// In the C++20 / Rust memory model every `SeqCst` operation takes part in
/// one total order consistent with program order, so a `SeqCst` RMW followed
/// by a `SeqCst` load already forbids the store-buffering outcome our wake
/// protocols rule out (the producer's `Shard::reserve` against the flusher's
/// `Flusher::prepare_sleep`). On x86 the RMW is a `lock`-prefixed
/// instruction, a full barrier, and the loads are plain `mov`s: the hot path
/// pays no fence. Loom models `SeqCst` accesses as `AcqRel` (a documented
/// loom limitation) but models `SeqCst` fences exactly, so under loom this is
/// a real `fence(SeqCst)`: the model checks the protocol with the guarantee
/// the hardware gives.
#[inline(always)]
pub(crate) fn fence_after_rmw() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// An `UnsafeCell` with loom's closure API, so loom can check every access
/// to a ring slot for data races.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeSlot<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeSlot<T> {
    pub(crate) fn new(v: T) -> Self {
        UnsafeSlot(std::cell::UnsafeCell::new(v))
    }
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell as UnsafeSlot;

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

/// Loom stand-in for [`crossbeam_utils::Backoff`]: every step yields so the
/// model can schedule the thread being waited for, and it "completes" at once
/// so waits fall through to their blocking path.
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

/// A short wait that gives the core away at every step: `yield_now`, then
/// the caller re-checks its condition; after [`YieldWait::STEPS`] steps it
/// is completed and the caller blocks instead.
///
/// Why not [`Backoff`]'s pause spinning: with more busy threads than cores
/// (three on this 2-vCPU machine: two producers and the flusher), a thread
/// spinning on `pause` holds the core that the thread it waits for needs,
/// until the scheduler preempts it. Measured end to end, 2 producers, u64:
/// 11.6 ns/item with pause-then-yield back-off on both sides, 6.2 with
/// yields. On an otherwise idle core `yield_now` returns in a fraction of a
/// microsecond, so it is still a fast poll.
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
    pub(crate) fn wait(&self) {
        std::thread::yield_now();
        self.steps.set(self.steps.get() + 1);
    }
    pub(crate) fn is_completed(&self) -> bool {
        self.steps.get() >= Self::STEPS
    }
}

/// Loom stand-in for [`YieldWait`]: completes at once, so waits fall through
/// to their blocking path (the protocol worth checking).
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct YieldWait;

#[cfg(loom)]
impl YieldWait {
    pub(crate) fn new() -> Self {
        YieldWait
    }
    pub(crate) fn wait(&self) {
        loom::thread::yield_now();
    }
    pub(crate) fn is_completed(&self) -> bool {
        true
    }
}

/// The default shard queue.
#[cfg(not(loom))]
pub(crate) use crossbeam_queue::ArrayQueue as ShardQueue;

/// Loom stand-in for `crossbeam_queue::ArrayQueue`: the same interface and
/// the same linearizable behaviour, built from a loom mutex so that the model
/// sees (and permutes) every access.
#[cfg(loom)]
pub(crate) struct ShardQueue<T> {
    cap: usize,
    items: loom::sync::Mutex<std::collections::VecDeque<T>>,
}

#[cfg(loom)]
impl<T> ShardQueue<T> {
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap > 0, "capacity must be non-zero");
        ShardQueue {
            cap,
            items: loom::sync::Mutex::new(std::collections::VecDeque::with_capacity(cap)),
        }
    }
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let mut q = self.items.lock().unwrap();
        if q.len() == self.cap {
            return Err(item);
        }
        q.push_back(item);
        Ok(())
    }
    pub(crate) fn pop(&self) -> Option<T> {
        self.items.lock().unwrap().pop_front()
    }
    pub(crate) fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }
}

/// Monotonic time in nanoseconds since the clock was made.
///
/// Under loom the clock is a model-checked counter that moves only when a
/// timed wait "elapses" ([`Clock::sleep_until`]), so the time trigger is
/// explored without real time: a timed wait may return at any point (as a
/// real one may, spuriously), and when it returns for its deadline, time is
/// at least the deadline.
#[derive(Debug)]
pub(crate) struct Clock {
    #[cfg(not(loom))]
    epoch: std::time::Instant,
    #[cfg(loom)]
    now: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            #[cfg(not(loom))]
            epoch: std::time::Instant::now(),
            #[cfg(loom)]
            now: AtomicU64::new(1),
        }
    }

    /// Nanoseconds since the clock was made; never 0, so 0 can mean "unset".
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        #[cfg(not(loom))]
        {
            let d = self.epoch.elapsed();
            (d.as_secs().saturating_mul(1_000_000_000) + u64::from(d.subsec_nanos())).max(1)
        }
        #[cfg(loom)]
        {
            self.now.load(Ordering::SeqCst)
        }
    }

    /// Under loom: let time pass up to `deadline` (called by a timed wait
    /// that is about to report its timeout).
    #[cfg(loom)]
    fn advance_to(&self, deadline: u64) {
        self.now.fetch_max(deadline, Ordering::SeqCst);
    }

    /// Parks the current thread until unparked or until `deadline` (clock
    /// nanoseconds), whichever is first; may return early (spuriously).
    pub(crate) fn park_until(&self, deadline: Option<u64>) {
        match deadline {
            None => thread::park(),
            Some(at) => {
                #[cfg(not(loom))]
                {
                    let now = self.now();
                    if at > now {
                        thread::park_timeout(std::time::Duration::from_nanos(at - now));
                    }
                }
                #[cfg(loom)]
                {
                    // A timed park that elapsed: time moves to the deadline.
                    self.advance_to(at);
                    loom::thread::yield_now();
                }
            }
        }
    }
}

/// The number of shards to use by default.
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

/// A lock-free check, then a mutex-and-condvar wait, for the slow paths:
/// producers waiting for room, callers waiting for a flush or a shutdown.
///
/// Protocol (no lost wake-up): a waiter increments `waiters` (`SeqCst` RMW),
/// then re-checks its condition under the lock before each wait; the flusher
/// publishes progress with `SeqCst` stores, issues `fence(SeqCst)`, and
/// notifies only if it then sees `waiters > 0`. Either the flusher sees the
/// waiter, and notifies under the lock (the waiter is either waiting or will
/// see the progress when it takes the lock), or the waiter's re-check comes
/// after the progress in the `SeqCst` order and sees it.
#[derive(Debug)]
pub(crate) struct Signal {
    waiters: AtomicUsize,
    /// The wakers of async waiters; blocking waiters wait on `cv`.
    lock: Mutex<Vec<std::task::Waker>>,
    cv: Condvar,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Signal {
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(Vec::new()),
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
            let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(r) = ready() {
                    break Some(r);
                }
                if let Some(at) = deadline {
                    if clock.now() >= at {
                        break None;
                    }
                }
                #[cfg(not(loom))]
                {
                    guard = match deadline {
                        None => self.cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
                        Some(at) => {
                            let left =
                                std::time::Duration::from_nanos(at.saturating_sub(clock.now()));
                            self.cv
                                .wait_timeout(guard, left)
                                .map(|(g, _)| g)
                                .unwrap_or_else(|e| e.into_inner().0)
                        }
                    };
                }
                #[cfg(loom)]
                {
                    if let Some(at) = deadline {
                        // A timed wait: loom's condvar cannot time out, so the
                        // model lets the deadline pass; the loop re-checks.
                        drop(guard);
                        clock.advance_to(at);
                        loom::thread::yield_now();
                        guard = self.lock.lock().unwrap();
                    } else {
                        guard = self.cv.wait(guard).unwrap();
                    }
                }
            }
        };
        self.waiters.fetch_sub(1, Ordering::Release);
        out
    }

    /// The async form of [`wait`](Signal::wait): registers (once, tracked by
    /// `registered`) and checks `ready()` under the lock, leaving the task's
    /// waker to be woken by the next `notify` if not ready. Call
    /// [`deregister`](Signal::deregister) when done (ready or dropped).
    pub(crate) fn poll_wait<R>(
        &self,
        cx: &mut std::task::Context<'_>,
        registered: &mut bool,
        mut ready: impl FnMut() -> Option<R>,
    ) -> std::task::Poll<R> {
        if !*registered {
            // SeqCst RMW: pairs with the fence in `notify`, as in `wait`.
            self.waiters.fetch_add(1, Ordering::SeqCst);
            fence_after_rmw();
            *registered = true;
        }
        let mut wakers = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = ready() {
            drop(wakers);
            self.deregister(registered);
            return std::task::Poll::Ready(r);
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }

    /// Ends an async wait begun by [`poll_wait`](Signal::poll_wait).
    pub(crate) fn deregister(&self, registered: &mut bool) {
        if std::mem::take(registered) {
            self.waiters.fetch_sub(1, Ordering::Release);
        }
    }

    /// Wakes every waiter if there are any. The caller has published its
    /// progress with `SeqCst` stores or RMWs before calling.
    pub(crate) fn notify(&self) {
        // SeqCst fence: pairs with the RMW on `waiters` in `wait`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.cv.notify_all();
            let wakers = std::mem::take(&mut *guard);
            drop(guard);
            // Woken outside the lock: a waker may run its task inline.
            wakers.into_iter().for_each(std::task::Waker::wake);
        }
    }
}

/// Per-thread slots: the thread's shard hint, a one-entry cache of its shard
/// index in the last batcher it used, and which batcher's flusher (if any)
/// runs on this thread.
#[derive(Debug)]
pub(crate) struct ThreadSlots {
    /// Shard hint, `usize::MAX` until first assigned.
    pub(crate) hint: std::cell::Cell<usize>,
    /// Address of the batcher the cached index belongs to.
    pub(crate) cached_for: std::cell::Cell<usize>,
    /// The cached shard index.
    pub(crate) cached_index: std::cell::Cell<usize>,
    /// Address of the batcher whose flusher runs on this thread, or 0.
    pub(crate) flusher_of: std::cell::Cell<usize>,
}

#[cfg(not(loom))]
std::thread_local! {
    static SLOTS: ThreadSlots = const {
        ThreadSlots {
            hint: std::cell::Cell::new(usize::MAX),
            cached_for: std::cell::Cell::new(0),
            cached_index: std::cell::Cell::new(0),
            flusher_of: std::cell::Cell::new(0),
        }
    };
}

#[cfg(loom)]
loom::thread_local! {
    static SLOTS: ThreadSlots = ThreadSlots {
        hint: std::cell::Cell::new(usize::MAX),
        cached_for: std::cell::Cell::new(0),
        cached_index: std::cell::Cell::new(0),
        flusher_of: std::cell::Cell::new(0),
    };
}

/// Runs `f` with this thread's slots.
#[inline]
pub(crate) fn with_slots<R>(f: impl FnOnce(&ThreadSlots) -> R) -> R {
    SLOTS.with(f)
}
