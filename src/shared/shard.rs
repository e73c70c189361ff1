//! Admission: the queue tails, and which queue a thread submits to.
//!
//! A batcher has `lanes` single-writer queues, then `shards` shared ones
//! (`Shared::shards()[..lanes]` are the lanes). Both keep the same
//! flusher-side state and storage; they differ in who writes the tail and
//! how.
//!
//! # Shards: one CAS per reservation
//!
//! A shard's producer-written word, its *tail*, is
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
//! # Lanes: plain stores, one writer
//!
//! A lane is leased by one thread (or one [`Producer`](crate::Producer))
//! at a time, so its tail, `accepted << 1 | BUSY_MARK`, is written with
//! plain stores: no locked instruction on the submit path. A lane
//! reservation ([`Shared::reserve`] on a lane):
//!
//! 1. checks room against a cached `popped` (re-read, Acquire, only when
//!    the cache says full);
//! 2. stores the tail with `BUSY_MARK` set (*enter*), passes the light
//!    barrier ([`Barrier::light`](crate::barrier::Barrier::light)), then
//!    loads `flags` and the lane's wake threshold;
//! 3. refuses as closed if `CLOSING` is set (storing the tail back without
//!    the mark); otherwise its pushes follow, and the [`Reservation`]'s
//!    drop publishes `end << 1` (Release, *leave*) and wakes the flusher if
//!    step 2 found it sleeping with the threshold reached.
//!
//! The partners of step 2 — the flusher before it parks (`shared::wake`)
//! and `close` (`shared::close`) — set their bit with an RMW, pass the
//! *heavy* barrier, then read the lane tails: either they see the busy
//! mark (or the published tail), or the producer's load sees their bit.
//! So a parking flusher never misses a crossing, and `close` waits for a
//! busy lane to leave and takes its tail as the final count: every submit
//! either entered before the heavy barrier (counted, drained) or sees
//! `CLOSING` (refused with its item). A `flush` snapshot needs no barrier:
//! a submit that returned before the call published with a Release store
//! that happens-before the snapshot's load.
//!
//! Checked by the loom models in `lanes.rs`; their mutants drop the busy
//! store, the heavy barrier at park and at close, and the re-check.
//!
//! # The thread's queue
//!
//! A thread's first submit to a batcher leases a free lane (one CAS on the
//! lane's owner word, Acquire: it continues after the previous owner's last
//! item), else takes a shard round-robin; either is kept for the batcher's
//! life (per-thread order), and a lane is returned (Release) when the
//! thread exits — items left in it drain as always. The submit path reads
//! a one-entry cache of plain `Cell`s with a `const` initialiser (no
//! lazy-initialisation check, no destructor); a miss looks the batcher up in
//! the thread's list, keyed by the batcher's id, forgotten when the
//! batcher is gone, and whose destructor returns the thread's lanes. A
//! submit made from another thread-local destructor after that one ran
//! uses a shard; its order against the thread's earlier items is not kept.

use super::{Shard, Shared, CLOSING, SLEEPING};
use crate::error::Refusal;
use crate::metrics::Metrics;
use crate::storage::{sealed::Seal, Storage};
use crate::sync::{spin_hint, thread, AtomicU64, AtomicUsize, Ordering};
use std::cell::{Cell, RefCell};

/// Low bit of a shard tail: the shard is closed.
const CLOSED_MARK: u64 = 1;
/// Low bit of a lane tail: its owner is inside a reservation.
const BUSY_MARK: u64 = 1;

/// The park's re-check of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awake {
    /// Below its threshold, no reservation open: may park.
    No,
    /// At or past its threshold: stay awake.
    Reached,
    /// A lane whose owner stayed inside its reservation: stay awake, and
    /// let it run before looking again.
    Busy,
}

/// How long a parking flusher waits for a busy lane's owner to leave
/// before it stays awake instead: a millisecond, so that an owner stuck in
/// its window (preempted, or in a slow user storage) costs at most one
/// heavy barrier per millisecond, not one per loop. The clock is read
/// only once a lane is found busy. Under loom, one yield (each is a branch
/// of the model), so the judgement after a wait is explored too.
#[derive(Default)]
struct BusyWait {
    #[cfg(not(loom))]
    until: Option<std::time::Instant>,
    #[cfg(loom)]
    waited: bool,
}

impl BusyWait {
    /// Called before each wait: has the flusher waited long enough?
    fn over(&mut self) -> bool {
        #[cfg(not(loom))]
        {
            let now = std::time::Instant::now();
            now >= *self
                .until
                .get_or_insert(now + std::time::Duration::from_millis(1))
        }
        #[cfg(loom)]
        {
            std::mem::replace(&mut self.waited, true)
        }
    }
}

/// What producers write (one cache line per shard, `Shard::prod`).
#[derive(Debug)]
pub(crate) struct ProducerSide {
    /// A shard: `accepted << 1 | CLOSED_MARK`. Producers CAS it (`SeqCst`,
    /// the RMW the wake protocol rides on); `close` `fetch_or`s the mark.
    /// A lane: `accepted << 1 | BUSY_MARK`, stored by its owner alone.
    tail: AtomicU64,
    /// Is this queue a lane?
    lane: bool,
    /// A lane: the `popped` its owner last read (its own, Relaxed). Not
    /// modelled under loom: any value it holds is one a lane owner read
    /// from `popped` (at most the current one), so it orders nothing.
    cached_popped: std::sync::atomic::AtomicU64,
    // Counters, not modelled under loom (they order nothing, and a
    // modelled load of each in every metrics read multiplies the
    // interleavings explored).
    rejected_full: Counter,
    rejected_timeout: Counter,
    rejected_closed: Counter,
    /// Items of `submit_async` futures dropped before acceptance.
    rejected_cancelled: Counter,
    /// Items heavier than the weight limit (`Oversize::Reject`).
    rejected_oversize: Counter,
    waits: Counter,
}

type Counter = std::sync::atomic::AtomicU64;

impl ProducerSide {
    pub(super) fn new(lane: bool) -> Self {
        ProducerSide {
            tail: AtomicU64::new(0),
            lane,
            cached_popped: std::sync::atomic::AtomicU64::new(0),
            rejected_full: Counter::new(0),
            rejected_timeout: Counter::new(0),
            rejected_closed: Counter::new(0),
            rejected_cancelled: Counter::new(0),
            rejected_oversize: Counter::new(0),
            waits: Counter::new(0),
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
    /// Is this queue a single-writer lane?
    #[inline]
    pub(crate) fn is_lane(&self) -> bool {
        self.prod.lane
    }

    /// The park's re-check of this queue (after the heavy barrier): must
    /// the flusher stay awake for it? Yes if it reached `threshold`; a lane
    /// whose owner is inside a reservation (it may not have seen
    /// `SLEEPING`) is waited for, briefly, and then judged by the tail it
    /// published: any later reservation of its owner enters after the
    /// heavy barrier in the `SeqCst` order (this load did not see its busy
    /// store), so it sees `SLEEPING` and the threshold. Still busy after
    /// the wait (the owner was preempted in its window): stay awake. Each
    /// judgement rests on one load: a busy mark seen by one load and a tail
    /// seen by another would miss a reservation that entered, and
    /// published, between them.
    pub(super) fn must_stay_awake(&self, threshold: u64) -> Awake {
        let mut wait = BusyWait::default();
        match self.tail_when_not_busy(|| wait.over()) {
            None => Awake::Busy,
            Some(t) if t >> 1 >= threshold => Awake::Reached,
            Some(_) => Awake::No,
        }
    }

    /// A lane's final count: waits while its owner is inside a
    /// reservation (a few instructions, unless it was preempted there),
    /// then returns its accepted count. Called by `close` after the heavy
    /// barrier.
    pub(super) fn lane_final_count(&self) -> u64 {
        self.tail_when_not_busy(|| false)
            .expect("waits until the owner leaves")
            >> 1
    }

    /// The tail word, loaded once the queue is not a lane inside a
    /// reservation, yielding between loads; `None` if `give_up` (asked
    /// before each wait) says so first. The word returned is the one load
    /// that found the lane not busy.
    fn tail_when_not_busy(&self, mut give_up: impl FnMut() -> bool) -> Option<u64> {
        loop {
            let t = self.prod.tail.load(Ordering::SeqCst);
            if !self.prod.lane || t & BUSY_MARK == 0 {
                return Some(t);
            }
            if give_up() {
                return None;
            }
            spin_hint();
            thread::yield_now();
        }
    }

    /// Items accepted so far (`SeqCst`: ordered with every reservation,
    /// the close mark and the flusher's `SLEEPING`).
    #[inline]
    pub(crate) fn accepted(&self) -> u64 {
        self.prod.tail.load(Ordering::SeqCst) >> 1
    }

    /// The accepted count, or `None` once the shard is closed (`SeqCst`: a
    /// submit that returned before this call reserved before this load). A
    /// lane has no mark: its count (the caller checks `CLOSING`).
    pub(super) fn accepted_if_open(&self) -> Option<u64> {
        let t = self.prod.tail.load(Ordering::SeqCst);
        (self.prod.lane || t & CLOSED_MARK == 0).then_some(t >> 1)
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
            Refusal::TooHeavy => &self.prod.rejected_oversize,
        };
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts an item whose `submit_async` future was dropped unaccepted.
    pub(crate) fn count_cancelled(&self) {
        self.prod
            .rejected_cancelled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a producer that blocked for room.
    pub(crate) fn count_wait(&self) {
        self.prod
            .waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds this shard's refusal and wait counters to `m`.
    pub(super) fn fill_counters(&self, m: &mut Metrics) {
        use std::sync::atomic::Ordering::Relaxed;
        let p = &self.prod;
        m.rejected_full += p.rejected_full.load(Relaxed);
        m.rejected_timeout += p.rejected_timeout.load(Relaxed);
        m.rejected_closed += p.rejected_closed.load(Relaxed);
        m.rejected_cancelled += p.rejected_cancelled.load(Relaxed);
        m.rejected_oversize += p.rejected_oversize.load(Relaxed);
        m.producer_waits += p.waits.load(Relaxed);
    }
}

// ===== the producer's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// The calling thread's queue: a lane leased, or a shard given
    /// round-robin, the first time this batcher sees the thread, then kept
    /// for the batcher's life.
    #[inline]
    pub(crate) fn shard(&self) -> &Shard<S> {
        let idx = shard_index(self.id, &self.leases, |may_lease| {
            self.assign_queue(may_lease)
        });
        &self.shards[idx]
    }

    /// A queue for a new producer (a thread, or a `Producer` handle): a
    /// free lane if `may_lease` and one is free, else the next shard.
    pub(crate) fn assign_queue(&self, may_lease: bool) -> usize {
        if may_lease {
            if let Some(i) = self.leases.lease() {
                return i;
            }
        }
        let shards = self.shards.len() - self.lanes;
        self.lanes + self.next_shard.fetch_add(1, Ordering::Relaxed) % shards
    }

    /// Returns a leased lane (its owner is gone).
    pub(crate) fn return_queue(&self, i: usize) {
        self.leases.release(i);
    }

    /// Reserves up to `want` slots on `shard`. The slots are filled through
    /// the returned [`Reservation`], which alone holds their numbers.
    #[inline]
    pub(crate) fn reserve<'a>(
        &'a self,
        shard: &'a Shard<S>,
        want: u64,
    ) -> Result<Reservation<'a, S>, Refusal> {
        if shard.prod.lane {
            return self.reserve_lane(shard, want);
        }
        self.reserve_shared(shard, want)
    }

    /// A reservation on a shard: one `SeqCst` CAS.
    #[inline]
    fn reserve_shared<'a>(
        &'a self,
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
                        lane_wake: None,
                    })
                }
                Err(actual) => t = actual,
            }
        }
    }

    /// A reservation on a lane the caller owns: plain stores, the light
    /// barrier, no RMW (the module docs, steps 1–3).
    #[inline]
    fn reserve_lane<'a>(
        &'a self,
        lane: &'a Shard<S>,
        want: u64,
    ) -> Result<Reservation<'a, S>, Refusal> {
        let cap = self.cfg.capacity;
        let p = &lane.prod;
        // Our own word: only this lane's owner writes it.
        let t = p.tail.load(Ordering::Relaxed);
        if t & BUSY_MARK != 0 {
            // We are inside a reservation of this lane already: a submit
            // from a user storage's `push` (or an allocator, a signal
            // handler) on this thread. Two windows on one lane would lose
            // an item; the first shard takes it.
            return self.reserve_shared(&self.shards[self.lanes], want);
        }
        let n = t >> 1;
        let mut popped = p.cached_popped.load(std::sync::atomic::Ordering::Relaxed);
        if n - popped >= cap {
            // Acquire: pairs with the flusher's SeqCst store of `popped` in
            // `release`, after its take: the room admitted is room the
            // storage has.
            popped = lane.cons.popped.0.load(Ordering::Acquire);
            p.cached_popped
                .store(popped, std::sync::atomic::Ordering::Relaxed);
        }
        let room = cap - (n - popped).min(cap);
        if room == 0 {
            return Err(if self.is_closed() {
                Refusal::Closed
            } else {
                Refusal::Full
            });
        }
        let grant = want.min(room);
        // Enter. The light barrier orders it before the loads below.
        // Release, not Relaxed (on x86 the same plain store): the flusher
        // may load this value, not the publish before it, and take the
        // items it counts; a lane's ring has no stamps, so this store must
        // carry the previous publish's slot writes (C++20 release sequences
        // no longer include later plain stores of the same thread; loom
        // found it, as an unsynchronised slot read).
        p.tail.store(n << 1 | BUSY_MARK, Ordering::Release);
        self.barrier.light();
        // Relaxed loads after the light barrier: each pairs with a partner's
        // RMW + heavy barrier (the module docs).
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & CLOSING != 0 {
            // Leave without a new item: the count `close` waits for is `n`.
            p.tail.store(n << 1, Ordering::Release);
            return Err(Refusal::Closed);
        }
        let wake = flags & SLEEPING != 0 && lane.cons.threshold.reached_by(n + grant);
        Ok(Reservation {
            shard: lane,
            next: n,
            end: n + grant,
            lane_wake: Some(wake),
        })
    }

    /// `Some` once the shard has `resume_room` free slots (`Ok`; hysteresis:
    /// a producer retrying at the first free slot contends with the
    /// flusher's pops) or is closed (`Err`): what blocked producers wait for.
    pub(crate) fn room_ready(&self, shard: &Shard<S>) -> Option<Result<(), Refusal>> {
        let cap = self.cfg.capacity;
        // SeqCst loads: the re-check of the `WaitQueue` protocol; pair with
        // the flusher's SeqCst store of `popped`, `mark_closed` and (a
        // lane) close's fetch_or(CLOSING).
        let t = shard.prod.tail.load(Ordering::SeqCst);
        let closed = if shard.prod.lane {
            self.is_closed()
        } else {
            t & CLOSED_MARK != 0
        };
        if closed {
            return Some(Err(Refusal::Closed));
        }
        let used = (t >> 1).saturating_sub(shard.cons.popped.0.load(Ordering::SeqCst));
        (cap - used.min(cap) >= self.cfg.resume_room).then_some(Ok(()))
    }
}

/// Slots `next..end` of one queue, reserved (by one CAS on a shard, by
/// its owner on a lane) and not yet filled: the only holder of their
/// numbers, so each is pushed once, in order, by whoever reserved it.
/// Finished by `Shared::after_push`.
#[must_use = "reserved slots must be filled, or the flusher waits for them"]
pub(crate) struct Reservation<'a, S> {
    shard: &'a Shard<S>,
    next: u64,
    end: u64,
    /// A lane: whether to wake the flusher after publishing (`None`: a
    /// shard). The drop publishes a lane's filled slots.
    lane_wake: Option<bool>,
}

impl<S> Drop for Reservation<'_, S> {
    /// Leaves a lane: publishes the filled slots (Release: the flusher that
    /// reads the tail finds them) and clears the busy mark. Runs on unwind
    /// too (a user storage's `push` that panicked), so `close` never waits
    /// for a lane left busy; on a lane only filled slots are published.
    #[inline]
    fn drop(&mut self) {
        if self.lane_wake.is_some() {
            self.shard
                .prod
                .tail
                .store(self.next << 1, Ordering::Release);
        }
    }
}

impl<'a, S> Reservation<'a, S> {
    /// How many slots are still to fill.
    #[inline]
    pub(crate) fn len(&self) -> u64 {
        self.end - self.next
    }

    /// Publishes a lane's slots; returns the shard and the accepted count
    /// once every slot is filled, and (a lane) whether to wake the flusher.
    #[inline]
    pub(super) fn finish(self) -> (&'a Shard<S>, u64, Option<bool>) {
        debug_assert_eq!(self.next, self.end, "a reserved slot left unfilled");
        (self.shard, self.end, self.lane_wake)
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
        if let Some(ring) = self.shard.storage.__ring(Seal(())) {
            // SAFETY: `Ring::push`'s contract holds: `index` is below `end`,
            // so it is one of the numbers this reservation handed out (by
            // the shard's CAS, or by the lane's one owner),
            // each once, and `next` moves past it (a `Reservation` is the
            // only holder of them and is not `Clone`); the ring is this
            // shard's alone (a `RingStorage` is owned by one shard and no
            // other storage can expose a ring); and the CAS admitted the
            // slots only after an Acquire load of a `popped` above
            // `end - capacity`, stored by the flusher after its take of each
            // slot's previous item.
            unsafe {
                if self.lane_wake.is_some() {
                    // A lane's ring: its owner's tail store (the drop of
                    // this reservation, Release) publishes the slot.
                    ring.push_unstamped(index, item);
                } else {
                    ring.push(index, item);
                }
            }
            self.next = index + 1;
            return;
        }
        let mut item = item;
        loop {
            match self.shard.storage.push(item) {
                // Counted as filled only once pushed: if a user storage's
                // `push` panics, a lane publishes only what arrived.
                Ok(()) => {
                    self.next = index + 1;
                    return;
                }
                // A storage shared by several queues (allowed), or one that
                // breaks its contract (refusing below its capacity): wait
                // for the flusher to pop.
                Err(back) => {
                    item = back;
                    if self.lane_wake.is_some() {
                        // A lane counts its slots when it publishes: publish
                        // those filled so far (still busy), or the flusher,
                        // not knowing them, would never take them and make
                        // room in a shared storage.
                        self.shard
                            .prod
                            .tail
                            .store(self.next << 1 | BUSY_MARK, Ordering::Release);
                    }
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
            // Bounded by the counted items either way: what is taken must
            // never exceed what is counted as accepted (the metrics).
            Some(ring) => {
                let ask = want.min(counted.saturating_sub(next) as usize);
                if shard.prod.lane {
                    // SAFETY: `Ring::take_published`'s contract holds: the
                    // flusher, the only caller, is the lane's one consumer
                    // (one `FlusherCore` per batcher, run through `&mut
                    // self`); `next` is where its previous take stopped
                    // (`popped` plus what the current dispatch took); a
                    // lane's ring is only ever filled by `push_unstamped`;
                    // and `counted` is a tail the flusher loaded (SeqCst, an
                    // acquire) after the owner's Release stores of it (the
                    // publish, or the busy mark after it) covered the items
                    // `next..next + ask`.
                    unsafe { ring.take_published(next, ask, buf) };
                    ask
                } else {
                    // SAFETY: `Ring::take_into`'s contract holds: the one
                    // consumer, as above, and `next` where its previous
                    // take on this shard stopped.
                    unsafe { ring.take_into(next, ask, buf) }
                }
            }
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

// ===== the thread's queue =====

/// Who holds each lane: `FREE` or `TAKEN`. The lease CAS is Acquire and
/// the return a Release store, so a new owner continues after the previous
/// owner's last item. Also the liveness token threads keep a `Weak` of.
#[derive(Debug)]
pub(crate) struct Leases {
    owners: Box<[AtomicUsize]>,
    /// Where the next lease starts looking (spreads threads over lanes).
    /// Not modelled under loom: a hint.
    hint: std::sync::atomic::AtomicUsize,
}

const FREE: usize = 0;
const TAKEN: usize = 1;

impl Leases {
    pub(super) fn new(lanes: usize) -> Self {
        Leases {
            owners: (0..lanes).map(|_| AtomicUsize::new(FREE)).collect(),
            hint: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Leases a free lane, if any.
    fn lease(&self) -> Option<usize> {
        let n = self.owners.len();
        let start = self.hint.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| {
            self.owners[i]
                .compare_exchange(FREE, TAKEN, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Returns lane `i` (any other index is a shard, never leased).
    pub(super) fn release(&self, i: usize) {
        if let Some(owner) = self.owners.get(i) {
            owner.store(FREE, Ordering::Release);
        }
    }

    /// Lanes leased now (a metrics read).
    pub(super) fn leased(&self) -> u64 {
        self.owners
            .iter()
            .filter(|o| o.load(Ordering::Relaxed) == TAKEN)
            .count() as u64
    }
}

/// The submit path's one-entry cache: the id of the batcher this thread
/// used last, and its queue there.
struct ShardCache {
    cached_for: Cell<u64>,
    cached_index: Cell<usize>,
}

/// This thread's queue in every batcher it has used that is still alive:
/// `(id, leases, queue)`. Its drop (at thread exit) returns the lanes.
struct Remembered(RefCell<Vec<(u64, std::sync::Weak<Leases>, usize)>>);

impl Drop for Remembered {
    fn drop(&mut self) {
        // The cache must not keep pointing at a lane we no longer own.
        let _ = CACHE.try_with(|c| c.cached_for.set(0));
        for (_, leases, i) in self.0.get_mut().drain(..) {
            if let Some(leases) = leases.upgrade() {
                leases.release(i);
            }
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static CACHE: ShardCache = const {
        ShardCache { cached_for: Cell::new(0), cached_index: Cell::new(0) }
    };
    static REMEMBERED: Remembered = const { Remembered(RefCell::new(Vec::new())) };
}

#[cfg(loom)]
loom::thread_local! {
    static CACHE: ShardCache = ShardCache { cached_for: Cell::new(0), cached_index: Cell::new(0) };
    static REMEMBERED: Remembered = Remembered(RefCell::new(Vec::new()));
}

/// This thread's queue in batcher `id` (whose lanes are `leases`): cached,
/// remembered, or assigned now by `assign` (told whether it may lease).
#[inline]
fn shard_index(
    id: u64,
    leases: &std::sync::Arc<Leases>,
    assign: impl FnOnce(bool) -> usize,
) -> usize {
    CACHE.with(|c| {
        if c.cached_for.get() == id {
            return c.cached_index.get();
        }
        remembered_shard(c, id, leases, assign)
    })
}

#[cold]
fn remembered_shard(
    cache: &ShardCache,
    id: u64,
    leases: &std::sync::Arc<Leases>,
    assign: impl FnOnce(bool) -> usize,
) -> usize {
    let mut assign = Some(assign);
    let found = REMEMBERED.try_with(|r| {
        let mut queues = r.0.borrow_mut();
        if let Some(&(_, _, i)) = queues.iter().find(|(k, _, _)| *k == id) {
            return i;
        }
        // Forget the batchers that are gone, then remember this one.
        queues.retain(|(_, w, _)| w.strong_count() > 0);
        let i = (assign.take().expect("assigned once"))(true);
        queues.push((id, std::sync::Arc::downgrade(leases), i));
        i
    });
    // Err: the thread is exiting and its list is gone (a submit from
    // another thread-local destructor): a shard, which needs no return.
    // Cached like any queue: the list's destructor, which clears the
    // cache, has run.
    let i = found.unwrap_or_else(|_| (assign.take().expect("assigned once"))(false));
    cache.cached_for.set(id);
    cache.cached_index.set(i);
    i
}

impl<T, S: Storage<T>> Shared<T, S> {
    /// Drops what the lanes' rings still hold (they have no stamps for the
    /// ring's own drop to find): called once, as the shared state goes.
    #[allow(unsafe_code)]
    pub(super) fn drop_lane_leftovers(&mut self) {
        for shard in self.shards.iter().filter(|s| s.prod.lane) {
            if let Some(ring) = shard.storage.__ring(Seal(())) {
                let tail = shard.prod.tail.load(Ordering::Relaxed) >> 1;
                // SAFETY: `&mut self`: no producer or consumer is left; a
                // lane's ring is filled by `push_unstamped` alone, and its
                // tail counts exactly the items pushed (a lane publishes
                // only filled slots), of which the ring's head were taken.
                unsafe { ring.drop_published(tail) };
            }
        }
    }
}
