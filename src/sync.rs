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
/// timed wait "elapses" ([`Clock::park_until`]), so the time trigger is
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
    lock: Mutex<Wakers>,
    cv: Condvar,
}

/// The async waiters' wakers, one slot per registered future (its key), so
/// a future that polls again replaces its own waker and one that is
/// dropped frees its slot: nothing accumulates.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    slots: Vec<Option<std::task::Waker>>,
    free: Vec<usize>,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Signal {
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(Wakers::default()),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Wakers> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
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
            let mut guard = self.lock();
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
                        guard = self.lock();
                    } else {
                        guard = self.cv.wait(guard).unwrap();
                    }
                }
            }
        };
        self.waiters.fetch_sub(1, Ordering::Release);
        out
    }

    /// The async form of [`wait`](Signal::wait): registers once (the key in
    /// `registered`), checks `ready()` under the lock and, if not ready,
    /// leaves the task's waker in its slot to be woken by the next
    /// `notify`. Call [`deregister`](Signal::deregister) when done (ready or
    /// dropped).
    pub(crate) fn poll_wait<R>(
        &self,
        cx: &mut std::task::Context<'_>,
        registered: &mut Option<usize>,
        mut ready: impl FnMut() -> Option<R>,
    ) -> std::task::Poll<R> {
        let mut wakers = self.lock();
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
            Self::free_slot(&mut wakers, key);
            drop(wakers);
            *registered = None;
            self.waiters.fetch_sub(1, Ordering::Release);
            return std::task::Poll::Ready(r);
        }
        match &mut wakers.slots[key] {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        std::task::Poll::Pending
    }

    fn free_slot(wakers: &mut Wakers, key: usize) {
        wakers.slots[key] = None;
        wakers.free.push(key);
    }

    /// Ends an async wait begun by [`poll_wait`](Signal::poll_wait),
    /// releasing its waker.
    pub(crate) fn deregister(&self, registered: &mut Option<usize>) {
        if let Some(key) = registered.take() {
            let waker = {
                let mut wakers = self.lock();
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
            let mut guard = self.lock();
            self.cv.notify_all();
            let woken: Vec<std::task::Waker> =
                guard.slots.iter_mut().filter_map(Option::take).collect();
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

/// A process-wide number for a new batcher, never reused (unlike its
/// address): the key of everything a thread remembers about a batcher.
pub(crate) fn next_batcher_id() -> u64 {
    // Not a modelled atomic: ids only need to be distinct.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The submit path's one-entry cache: the id of the batcher this thread
/// used last, and its shard there. A thread-local of its own, of plain
/// `Cell`s with a `const` initialiser: no lazy-initialisation check and no
/// destructor on the path every submit takes.
struct ShardCache {
    cached_for: std::cell::Cell<u64>,
    cached_index: std::cell::Cell<usize>,
}

#[cfg(not(loom))]
std::thread_local! {
    static CACHE: ShardCache = const {
        ShardCache {
            cached_for: std::cell::Cell::new(0),
            cached_index: std::cell::Cell::new(0),
        }
    };
}

#[cfg(loom)]
loom::thread_local! {
    static CACHE: ShardCache = ShardCache {
        cached_for: std::cell::Cell::new(0),
        cached_index: std::cell::Cell::new(0),
    };
}

/// What a thread remembers about the batchers it uses.
struct ThreadSlots {
    /// This thread's shard in every batcher it has used that is still
    /// alive: `(id, liveness token, shard)`. Assigned once per batcher and
    /// kept, so the thread's items stay in one shard (per-thread order).
    shards: std::cell::RefCell<Vec<(u64, std::sync::Weak<()>, usize)>>,
    /// The batchers whose flusher runs on this thread, innermost last (a
    /// processor may run another batcher's flusher).
    flushers: std::cell::RefCell<Vec<u64>>,
    /// Set while the flusher drops what a panicking processor left in its
    /// batch (tracked jobs then resolve as `Panicked`).
    after_panic: std::cell::Cell<bool>,
}

impl ThreadSlots {
    fn new() -> Self {
        ThreadSlots {
            shards: std::cell::RefCell::new(Vec::new()),
            flushers: std::cell::RefCell::new(Vec::new()),
            after_panic: std::cell::Cell::new(false),
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static SLOTS: ThreadSlots = ThreadSlots::new();
}

#[cfg(loom)]
loom::thread_local! {
    static SLOTS: ThreadSlots = ThreadSlots::new();
}

/// This thread's shard in batcher `id` (of `n` shards, alive while `alive`
/// is): cached, remembered, or assigned now by `assign`.
#[inline]
pub(crate) fn shard_index(
    id: u64,
    alive: &std::sync::Arc<()>,
    n: usize,
    assign: impl FnOnce() -> usize,
) -> usize {
    CACHE.with(|c| {
        if c.cached_for.get() == id {
            return c.cached_index.get();
        }
        let i = SLOTS.with(|s| remembered_shard(s, id, alive, n, assign));
        c.cached_for.set(id);
        c.cached_index.set(i);
        i
    })
}

#[cold]
fn remembered_shard(
    s: &ThreadSlots,
    id: u64,
    alive: &std::sync::Arc<()>,
    n: usize,
    assign: impl FnOnce() -> usize,
) -> usize {
    let mut shards = s.shards.borrow_mut();
    if let Some(&(_, _, i)) = shards.iter().find(|(k, _, _)| *k == id) {
        return i;
    }
    // Forget the batchers that are gone, then remember this one.
    shards.retain(|(_, w, _)| w.strong_count() > 0);
    let i = assign() % n;
    shards.push((id, std::sync::Arc::downgrade(alive), i));
    i
}

/// Marks this thread as running batcher `id`'s flusher until the guard is
/// dropped; marks nest (a processor may run another batcher's flusher).
pub(crate) fn enter_flusher(id: u64) -> FlusherMark {
    SLOTS.with(|s| s.flushers.borrow_mut().push(id));
    FlusherMark { id }
}

/// See [`enter_flusher`].
#[derive(Debug)]
pub(crate) struct FlusherMark {
    id: u64,
}

impl Drop for FlusherMark {
    fn drop(&mut self) {
        // `try_with`: the thread's slots may be gone if this runs while the
        // thread exits.
        let _ = SLOTS.try_with(|s| {
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
    SLOTS
        .try_with(|s| s.flushers.borrow().contains(&id))
        .unwrap_or(false)
}

/// Runs `f` with the "dropping what a panicking processor left" mark set.
pub(crate) fn after_panic<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = SLOTS.try_with(|s| s.after_panic.set(self.0));
        }
    }
    let _reset = Reset(SLOTS.with(|s| s.after_panic.replace(true)));
    f()
}

/// Is the flusher dropping what a panicking processor left?
pub(crate) fn is_after_panic() -> bool {
    SLOTS.try_with(|s| s.after_panic.get()).unwrap_or(false)
}
