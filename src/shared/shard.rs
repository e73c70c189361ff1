//! Admission: the shard tail, and which shard a thread submits to.
//!
//! # Invariant
//!
//! Each shard has one producer-written word, its *tail*:
//! `accepted << 1 | CLOSED_MARK`. A submit *reserves* slots with one
//! `SeqCst` CAS on it ([`Shared::reserve`]), admitted only if
//! `accepted - popped < capacity` and the mark is clear, and then pushes its
//! items, numbered by the reservation ([`Reservation::push`], the only
//! holder of those numbers; the default ring storage uses the number as
//! its slot). Every reservation is
//! followed by exactly one push per slot, so:
//! - the push never finds the storage full (admission is ours, not the
//!   storage's), and the ring's slot is free: the flusher stored the
//!   `popped` that admitted it ([`Shared::release`]) after taking the
//!   slot's previous item ([`Shared::take`]);
//! - `close` sets the mark with one RMW ([`Shard::mark_closed`]) and learns
//!   the count it displaced: exactly the items the final drain must wait
//!   for. A submit learns from its own CAS whether it got in, so nothing is
//!   ever accepted and then lost, and nothing is taken back;
//! - a `flush` snapshot of the tails covers every submit that returned
//!   before the snapshot.
//!
//! The reservation CAS is also the `SeqCst` RMW the wake protocol rides on
//! (`shared::wake`). Checked by the loom models `order` (per-thread order,
//! slot reuse), `blocked` (full shards, slot reuse under the ring's stamps)
//! and `close_race`; their mutants load `popped` Relaxed, publish a slot
//! with a Relaxed stamp, and snapshot the close count with a load before
//! the mark.
//!
//! # The thread's shard
//!
//! A thread is given a shard round-robin the first time a batcher sees it,
//! and keeps it for the batcher's life (per-thread order). The submit path
//! reads a one-entry cache of plain `Cell`s with a `const` initialiser (no
//! lazy-initialisation check, no destructor); a miss looks the batcher up in
//! the thread's list, keyed by the batcher's id and forgotten when the
//! batcher is gone.

use super::{Shard, Shared};
use crate::error::Refusal;
use crate::metrics::Metrics;
use crate::storage::{sealed::Seal, Storage};
use crate::sync::{spin_hint, thread, AtomicU64, Ordering};
use std::cell::{Cell, RefCell};

/// Low bit of a shard tail: the shard is closed.
const CLOSED_MARK: u64 = 1;

/// What producers write (one cache line per shard, `Shard::prod`).
#[derive(Debug)]
pub(crate) struct ProducerSide {
    /// `accepted << 1 | CLOSED_MARK`. Producers CAS it (`SeqCst`, the RMW
    /// the wake protocol rides on); `close` `fetch_or`s the mark.
    tail: AtomicU64,
    rejected_full: AtomicU64,
    rejected_timeout: AtomicU64,
    rejected_closed: AtomicU64,
    /// Items of `submit_async` futures dropped before acceptance.
    rejected_cancelled: AtomicU64,
    waits: AtomicU64,
}

impl ProducerSide {
    pub(super) fn new() -> Self {
        ProducerSide {
            tail: AtomicU64::new(0),
            rejected_full: AtomicU64::new(0),
            rejected_timeout: AtomicU64::new(0),
            rejected_closed: AtomicU64::new(0),
            rejected_cancelled: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        }
    }
}

/// Items the flusher has popped from a shard (on the flusher's line,
/// `Shard::cons`). `SeqCst` store after the pops; the Acquire load in
/// `reserve` makes the freed slots visible to the admitted push.
#[derive(Debug)]
pub(crate) struct Popped(AtomicU64);

impl Popped {
    pub(super) fn new() -> Self {
        Popped(AtomicU64::new(0))
    }
}

impl<S> Shard<S> {
    /// Items accepted so far (`SeqCst`: ordered with every reservation,
    /// the close mark and the flusher's `SLEEPING`).
    #[inline]
    pub(crate) fn accepted(&self) -> u64 {
        self.prod.tail.load(Ordering::SeqCst) >> 1
    }

    /// The accepted count, or `None` once the shard is closed (`SeqCst`: a
    /// submit that returned before this call reserved before this load).
    pub(super) fn accepted_if_open(&self) -> Option<u64> {
        let t = self.prod.tail.load(Ordering::SeqCst);
        (t & CLOSED_MARK == 0).then_some(t >> 1)
    }

    /// Items the flusher has popped (for a metrics read, under its
    /// sequence lock).
    pub(super) fn popped(&self) -> u64 {
        self.cons.popped.0.load(Ordering::Relaxed)
    }

    /// Closes the shard: sets the mark and returns the accepted count it
    /// displaced. `SeqCst` RMW: every reservation CAS is before or after
    /// it, so the count is exactly the set the final drain awaits.
    pub(super) fn mark_closed(&self) -> u64 {
        self.prod.tail.fetch_or(CLOSED_MARK, Ordering::SeqCst) >> 1
    }

    /// Reopens the shard (a restarted user-run flusher).
    pub(super) fn clear_closed(&self) {
        self.prod.tail.fetch_and(!CLOSED_MARK, Ordering::SeqCst);
    }

    /// Counts `n` items refused for `r`.
    pub(crate) fn count_refusal(&self, r: Refusal, n: u64) {
        let c = match r {
            Refusal::Full => &self.prod.rejected_full,
            Refusal::Timeout => &self.prod.rejected_timeout,
            Refusal::Closed => &self.prod.rejected_closed,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an item whose `submit_async` future was dropped unaccepted.
    pub(crate) fn count_cancelled(&self) {
        self.prod.rejected_cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a producer that blocked for room.
    pub(crate) fn count_wait(&self) {
        self.prod.waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds this shard's refusal and wait counters to `m`.
    pub(super) fn fill_counters(&self, m: &mut Metrics) {
        let p = &self.prod;
        m.rejected_full += p.rejected_full.load(Ordering::Relaxed);
        m.rejected_timeout += p.rejected_timeout.load(Ordering::Relaxed);
        m.rejected_closed += p.rejected_closed.load(Ordering::Relaxed);
        m.rejected_cancelled += p.rejected_cancelled.load(Ordering::Relaxed);
        m.producer_waits += p.waits.load(Ordering::Relaxed);
    }
}

// ===== the producer's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// The calling thread's shard: assigned round-robin the first time this
    /// batcher sees the thread, then kept for the batcher's life.
    #[inline]
    pub(crate) fn shard(&self) -> &Shard<S> {
        let n = self.shards.len();
        let idx = shard_index(self.id, &self.alive, n, || {
            self.next_shard.fetch_add(1, Ordering::Relaxed)
        });
        &self.shards[idx]
    }

    /// Reserves up to `want` slots on `shard`. The slots are filled through
    /// the returned [`Reservation`], which alone holds their numbers.
    #[inline]
    pub(crate) fn reserve<'a>(
        &self,
        shard: &'a Shard<S>,
        want: u64,
    ) -> Result<Reservation<'a, S>, Refusal> {
        let cap = self.cfg.capacity;
        let tail = &shard.prod.tail;
        let mut t = tail.load(Ordering::Relaxed);
        loop {
            if t & CLOSED_MARK != 0 {
                return Err(Refusal::Closed);
            }
            let n = t >> 1;
            // Acquire: pairs with the flusher's SeqCst store of `popped` in
            // `release`, after its take: the room admitted here is room the
            // storage has.
            let popped = shard.cons.popped.0.load(Ordering::Acquire);
            let room = cap - n.saturating_sub(popped).min(cap);
            if room == 0 {
                return Err(Refusal::Full);
            }
            let grant = want.min(room);
            // SeqCst: the RMW of the wake protocol (`shared::wake`); pairs
            // with the flusher's fetch_or(SLEEPING) + re-check in
            // `Sleeper::park`, and with `mark_closed`'s fetch_or.
            match tail.compare_exchange_weak(
                t,
                t + (grant << 1),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Reservation {
                        shard,
                        next: n,
                        end: n + grant,
                    })
                }
                Err(actual) => t = actual,
            }
        }
    }

    /// `Some` once the shard has `resume_room` free slots (`Ok`; hysteresis:
    /// a producer retrying at the first free slot contends with the
    /// flusher's pops) or is closed (`Err`): what blocked producers wait for.
    pub(crate) fn room_ready(&self, shard: &Shard<S>) -> Option<Result<(), Refusal>> {
        let cap = self.cfg.capacity;
        // SeqCst loads: the re-check of the `WaitQueue` protocol; pair with
        // the flusher's SeqCst store of `popped` and `mark_closed`.
        let t = shard.prod.tail.load(Ordering::SeqCst);
        if t & CLOSED_MARK != 0 {
            return Some(Err(Refusal::Closed));
        }
        let used = (t >> 1).saturating_sub(shard.cons.popped.0.load(Ordering::SeqCst));
        (cap - used.min(cap) >= self.cfg.resume_room).then_some(Ok(()))
    }
}

/// Slots `next..end` of one shard, reserved by one CAS and not yet
/// filled: the only holder of their numbers, so each is pushed once, in
/// order, by whoever reserved it. Finished by `Shared::after_push`.
#[must_use = "reserved slots must be filled, or the flusher waits for them"]
pub(crate) struct Reservation<'a, S> {
    shard: &'a Shard<S>,
    next: u64,
    end: u64,
}

impl<'a, S> Reservation<'a, S> {
    /// How many slots are still to fill.
    #[inline]
    pub(crate) fn len(&self) -> u64 {
        self.end - self.next
    }

    /// The shard and the accepted count once every slot is filled (for the
    /// wake check).
    #[inline]
    pub(super) fn finish(self) -> (&'a Shard<S>, u64) {
        debug_assert_eq!(self.next, self.end, "a reserved slot left unfilled");
        (self.shard, self.end)
    }

    /// Fills the next reserved slot with `item`.
    ///
    /// # Panics
    ///
    /// If every slot is filled already (a bug of ours: the check keeps the
    /// ring's contract, and compiles away where the caller's loop bounds
    /// it).
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn push<T>(&mut self, item: T)
    where
        S: Storage<T>,
    {
        assert!(self.next < self.end, "more items than reserved slots");
        let index = self.next;
        self.next += 1;
        if let Some(ring) = self.shard.storage.__ring(Seal(())) {
            // SAFETY: `Ring::push`'s contract holds: `index` is below `end`,
            // so it is one of the numbers this reservation's CAS handed out,
            // each once, and `next` moves past it (a `Reservation` is the
            // only holder of them and is not `Clone`); the ring is this
            // shard's alone (a `RingStorage` is owned by one shard and no
            // other storage can expose a ring); and the CAS admitted the
            // slots only after an Acquire load of a `popped` above
            // `end - capacity`, stored by the flusher after its take of each
            // slot's previous item.
            unsafe { ring.push(index, item) };
            return;
        }
        let mut item = item;
        loop {
            match self.shard.storage.push(item) {
                Ok(()) => return,
                // Only a storage that breaks its contract (refusing below its
                // capacity) gets here: wait for the flusher to pop.
                Err(back) => {
                    item = back;
                    spin_hint();
                    thread::yield_now();
                }
            }
        }
    }
}

// ===== the flusher's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// Takes up to `want` items numbered from `next` off shard `i` into
    /// `buf` (the flusher only); returns how many it took.
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn take(
        &self,
        i: usize,
        next: u64,
        want: usize,
        counted: u64,
        buf: &mut Vec<T>,
    ) -> usize {
        let shard = &self.shards[i];
        match shard.storage.__ring(Seal(())) {
            // SAFETY: `Ring::take_into`'s contract holds: the flusher, the
            // only caller, is the shard's one consumer (one `FlusherCore`
            // per batcher, run through `&mut self`), and `next` is where its
            // previous take on this shard stopped (`popped` plus what the
            // current dispatch took).
            Some(ring) => unsafe { ring.take_into(next, want, buf) },
            // A storage of the user's: take no more than this shard has
            // counted, so a queue shared by several shards (allowed) cannot
            // leave another shard's count short.
            None => {
                // Counted by what arrived in `buf`, not by what the storage
                // says; a storage that hands over more than asked breaks its
                // contract, and the excess is dropped (the counts must stay
                // exact).
                let ask = want.min(counted.saturating_sub(next) as usize);
                let before = buf.len();
                shard.storage.pop_into(ask, buf);
                buf.truncate(before + ask);
                buf.len().saturating_sub(before)
            }
        }
    }

    /// Publishes shard `i`'s popped count: the room it admits, and a count
    /// of the metrics snapshot (a write of its sequence lock, this one
    /// store long, never a wait).
    #[inline]
    pub(crate) fn release(&self, i: usize, popped: u64) {
        self.stats.begin_write();
        // SeqCst store: pairs with the Acquire in `reserve` (the freed room)
        // and is the progress `WaitQueue::notify` publishes to `room_ready`.
        self.shards[i].cons.popped.0.store(popped, Ordering::SeqCst);
        self.stats.end_write();
    }
}

// ===== the thread's shard =====

/// The submit path's one-entry cache: the id of the batcher this thread
/// used last, and its shard there.
struct ShardCache {
    cached_for: Cell<u64>,
    cached_index: Cell<usize>,
}

/// This thread's shard in every batcher it has used that is still alive:
/// `(id, liveness token, shard)`.
type Remembered = RefCell<Vec<(u64, std::sync::Weak<()>, usize)>>;

#[cfg(not(loom))]
std::thread_local! {
    static CACHE: ShardCache = const {
        ShardCache { cached_for: Cell::new(0), cached_index: Cell::new(0) }
    };
    static REMEMBERED: Remembered = const { RefCell::new(Vec::new()) };
}

#[cfg(loom)]
loom::thread_local! {
    static CACHE: ShardCache = ShardCache { cached_for: Cell::new(0), cached_index: Cell::new(0) };
    static REMEMBERED: Remembered = RefCell::new(Vec::new());
}

/// This thread's shard in batcher `id` (of `n` shards, alive while `alive`
/// is): cached, remembered, or assigned now by `assign`.
#[inline]
fn shard_index(
    id: u64,
    alive: &std::sync::Arc<()>,
    n: usize,
    assign: impl FnOnce() -> usize,
) -> usize {
    CACHE.with(|c| {
        if c.cached_for.get() == id {
            return c.cached_index.get();
        }
        let i = REMEMBERED.with(|r| remembered_shard(r, id, alive, n, assign));
        c.cached_for.set(id);
        c.cached_index.set(i);
        i
    })
}

#[cold]
fn remembered_shard(
    remembered: &Remembered,
    id: u64,
    alive: &std::sync::Arc<()>,
    n: usize,
    assign: impl FnOnce() -> usize,
) -> usize {
    let mut shards = remembered.borrow_mut();
    if let Some(&(_, _, i)) = shards.iter().find(|(k, _, _)| *k == id) {
        return i;
    }
    // Forget the batchers that are gone, then remember this one.
    shards.retain(|(_, w, _)| w.strong_count() > 0);
    let i = assign() % n;
    shards.push((id, std::sync::Arc::downgrade(alive), i));
    i
}
