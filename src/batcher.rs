//! The producer side: shards, admission, the wake protocol, close and flush.
//!
//! # Shard word
//!
//! Each shard has one producer-written word, `accepted << 1 | closed`.
//! A submit *reserves* a slot with one `SeqCst` CAS on it, admitted only if
//! `accepted - popped < capacity` and the closed bit is clear, and then pushes
//! its item (numbered by the reservation, which the default ring storage uses
//! as its slot); every reservation is followed by exactly one push, so:
//! - the push never finds the storage full (admission is ours, not the
//!   storage's);
//! - `close` sets the closed bit with `fetch_or` and records the count it
//!   displaced: exactly the items the final drain must wait for. A submit
//!   learns from its own CAS whether it got in, so nothing is ever accepted
//!   and then lost, and nothing is taken back;
//! - a `flush` snapshot of the counts covers every submit that returned before
//!   the snapshot.
//!
//! # Wake protocol (no fence on the hot path)
//!
//! Before parking, the flusher stores per-shard wake thresholds `wake_at`,
//! then sets `SLEEPING` in `state` (`SeqCst` RMW), then re-reads the shard
//! words. After its push, a producer whose reservation reached `wake_at`
//! loads `state` (`SeqCst`) and wakes the flusher if it sleeps. The
//! reservation CAS is the `SeqCst` RMW the wake check piggy-backs on: in the
//! single `SeqCst` order either the flusher's re-read sees the reservation
//! (and it does not sleep) or the producer's loads come after `SLEEPING` was
//! set and see it (and the new `wake_at`). The thresholds satisfy
//! `sum(wake_at - count) <= room + shards - 1`, so whenever a full batch is
//! pending some producer crossed its shard's threshold (pigeonhole); with no
//! item pending every threshold is `count + 1`, so the first item wakes the
//! flusher and the time trigger starts.

use crate::builder::{Backpressure, Config};
use crate::err::{
    duration_to_nanos, FlushError, ShutdownError, SubmitError, SubmitManyError, SubmitTimeoutError,
    TrySubmitError,
};
use crate::metrics::Metrics;
use crate::storage::{sealed::Seal, RingStorage, Storage};
use crate::sync::{
    self, fence, thread, Arc, AtomicU64, AtomicUsize, Clock, Mutex, Ordering, Signal, YieldWait,
};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// `state`: the flusher is parked (or about to park).
pub(crate) const SLEEPING: u64 = 1;
/// `state`: a flush was requested; targets are in `Shared::flush_targets`.
pub(crate) const FLUSH_REQ: u64 = 2;
/// `state`: the batcher is closed; `ConsumerSide::closed_at` is final.
pub(crate) const CLOSED: u64 = 4;
/// `state`: `close` has begun (set before any shard refuses an item, so a
/// submit refused as closed always finds `is_closed()` true).
pub(crate) const CLOSING: u64 = 8;

/// Low bit of a shard word: the shard is closed.
pub(crate) const WORD_CLOSED: u64 = 1;

/// `Shared::status` values.
pub(crate) const NOT_STARTED: usize = 0;
pub(crate) const RUNNING: usize = 1;
pub(crate) const DONE: usize = 2;

/// What producers write. One cache line per shard.
#[derive(Debug)]
pub(crate) struct ProducerSide {
    /// `accepted << 1 | WORD_CLOSED`. Producers CAS it (`SeqCst`, the RMW
    /// the wake protocol rides on); `close` `fetch_or`s the closed bit.
    pub(crate) word: AtomicU64,
    pub(crate) rejected_full: AtomicU64,
    pub(crate) rejected_timeout: AtomicU64,
    pub(crate) rejected_closed: AtomicU64,
    /// Items of `submit_async` futures dropped before acceptance.
    pub(crate) rejected_cancelled: AtomicU64,
    pub(crate) waits: AtomicU64,
}

/// What the flusher writes for one shard. Producers only read it.
#[derive(Debug)]
pub(crate) struct ConsumerSide {
    /// Items popped so far. `SeqCst` store after the pops; the Acquire load in
    /// `try_reserve` makes the freed slots visible to the admitted push.
    pub(crate) popped: AtomicU64,
    /// Items whose batch has been processed (for `flush`).
    pub(crate) processed: AtomicU64,
    /// The accepted count at which a producer must check whether the flusher
    /// sleeps. Written by the flusher before it sets `SLEEPING`.
    pub(crate) wake_at: AtomicU64,
    /// The accepted count when the shard was closed: written by `close`
    /// before it sets `CLOSED` in `state`.
    pub(crate) closed_at: AtomicU64,
}

pub(crate) struct Shard<S> {
    pub(crate) prod: CachePadded<ProducerSide>,
    pub(crate) cons: CachePadded<ConsumerSide>,
    pub(crate) storage: S,
}

/// The flusher's published counters (single writer: plain stores).
///
/// # Snapshot protocol
///
/// `seq` is a sequence lock over the flusher's item counts (every shard's
/// `popped` and `processed`, and `failed`): the flusher makes it odd, fences
/// (Release), stores the counts, and makes it even again (Release). A reader
/// ([`Shared::metrics`]) loads it (Acquire), loads those counts and then the
/// shard words, fences (Acquire) and loads it again: equal and even means no
/// count changed while it read, so every shard word it read is bounded by
/// the `popped` it read (admission) and the snapshot's
/// `submitted == processed + failed + in_flight + queue_depth`,
/// `queue_depth <= capacity` and `in_flight <= max_batch_size` hold exactly.
/// Checked by the loom model `metrics`.
#[derive(Debug)]
pub(crate) struct FlusherStats {
    pub(crate) seq: AtomicU64,
    /// Items of failed batches (under `seq`).
    pub(crate) failed: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) batches: [AtomicU64; 4],
    pub(crate) errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) other_panics: AtomicU64,
    /// Panics of a `metrics` recorder, caught by the exporter thread.
    pub(crate) export_panics: AtomicU64,
    /// Clock time the processor entered the current batch; 0 outside one.
    pub(crate) busy_since: AtomicU64,
}

impl FlusherStats {
    /// Opens a write of the counts under `seq` (the flusher only).
    pub(crate) fn begin_write(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        // Release fence: a reader that sees any count stored after this
        // also sees the odd `seq` (pairs with the Acquire fence in
        // `Shared::metrics`).
        fence(Ordering::Release);
    }

    /// Closes a write opened by [`begin_write`](FlusherStats::begin_write).
    pub(crate) fn end_write(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        // Release: pairs with the reader's first (Acquire) load of `seq`.
        self.seq.store(s + 1, Ordering::Release);
    }
}

/// What the wake path touches, away from the hot lines.
pub(crate) struct WakeSide {
    /// Clock time the waking producer saw the sleeping flusher (the start of
    /// the time trigger after an idle park).
    pub(crate) stamp: AtomicU64,
    pub(crate) wakeups: AtomicU64,
    pub(crate) thread: Mutex<Option<thread::Thread>>,
}

pub(crate) struct Shared<T, S> {
    pub(crate) shards: Box<[Shard<S>]>,
    /// `SLEEPING | FLUSH_REQ | CLOSED | CLOSING`. Read by every producer after a
    /// threshold crossing; written only on sleep/wake/flush/close.
    pub(crate) state: CachePadded<AtomicU64>,
    pub(crate) wake: CachePadded<WakeSide>,
    pub(crate) stats: CachePadded<FlusherStats>,
    pub(crate) signal: Signal,
    pub(crate) flush_targets: Mutex<Vec<u64>>,
    close_lock: Mutex<()>,
    /// `close` calls so far, and how many of them the last finished run
    /// had seen: a close after a run ended keeps the batcher closed through
    /// the next `Flusher::run` (it drains and returns instead of reopening).
    close_calls: AtomicU64,
    closes_consumed: AtomicU64,
    pub(crate) status: AtomicUsize,
    /// Never reused: what threads key their shard and flusher marks by.
    pub(crate) id: u64,
    /// Threads hold a `Weak` of it, to forget batchers that are gone.
    alive: std::sync::Arc<()>,
    /// The next shard to assign to a thread this batcher has not seen.
    next_shard: AtomicUsize,
    pub(crate) clock: Clock,
    pub(crate) cfg: Config,
    _items: PhantomData<fn(T) -> T>,
}

/// Why an item was refused, before it is wrapped in a public error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Full,
    Timeout,
    Closed,
}

/// How long a submit may wait for room.
#[derive(Debug, Clone, Copy)]
enum Wait {
    Never,
    Until(Option<u64>),
}

impl<T, S: Storage<T>> Shared<T, S> {
    pub(crate) fn new(storages: Vec<S>, cfg: Config) -> Self {
        let n = storages.len();
        let shards = storages
            .into_iter()
            .map(|storage| Shard {
                prod: CachePadded::new(ProducerSide {
                    word: AtomicU64::new(0),
                    rejected_full: AtomicU64::new(0),
                    rejected_timeout: AtomicU64::new(0),
                    rejected_closed: AtomicU64::new(0),
                    rejected_cancelled: AtomicU64::new(0),
                    waits: AtomicU64::new(0),
                }),
                cons: CachePadded::new(ConsumerSide {
                    popped: AtomicU64::new(0),
                    processed: AtomicU64::new(0),
                    wake_at: AtomicU64::new(u64::MAX),
                    closed_at: AtomicU64::new(0),
                }),
                storage,
            })
            .collect();
        Shared {
            shards,
            state: CachePadded::new(AtomicU64::new(0)),
            wake: CachePadded::new(WakeSide {
                stamp: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
                thread: Mutex::new(None),
            }),
            stats: CachePadded::new(FlusherStats {
                seq: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
                batches: [
                    AtomicU64::new(0),
                    AtomicU64::new(0),
                    AtomicU64::new(0),
                    AtomicU64::new(0),
                ],
                errors: AtomicU64::new(0),
                panics: AtomicU64::new(0),
                other_panics: AtomicU64::new(0),
                export_panics: AtomicU64::new(0),
                busy_since: AtomicU64::new(0),
            }),
            signal: Signal::new(),
            flush_targets: Mutex::new(vec![0; n]),
            close_lock: Mutex::new(()),
            close_calls: AtomicU64::new(0),
            closes_consumed: AtomicU64::new(0),
            status: AtomicUsize::new(NOT_STARTED),
            id: sync::next_batcher_id(),
            alive: std::sync::Arc::new(()),
            next_shard: AtomicUsize::new(0),
            clock: Clock::new(),
            cfg,
            _items: PhantomData,
        }
    }

    /// Is the calling thread running this batcher's flusher (its processor)?
    pub(crate) fn on_flusher_thread(&self) -> bool {
        sync::is_flusher_of(self.id)
    }

    /// The calling thread's shard: assigned round-robin the first time this
    /// batcher sees the thread, then kept for the batcher's life.
    #[inline]
    pub(crate) fn shard(&self) -> &Shard<S> {
        let n = self.shards.len();
        let idx = sync::shard_index(self.id, &self.alive, n, || {
            self.next_shard.fetch_add(1, Ordering::Relaxed)
        });
        &self.shards[idx]
    }

    /// Reserves up to `want` slots on `shard`: `(first index, granted)`.
    #[inline]
    fn try_reserve(&self, shard: &Shard<S>, want: u64) -> Result<(u64, u64), Refusal> {
        let cap = self.cfg.capacity;
        let word = &shard.prod.word;
        let mut w = word.load(Ordering::Relaxed);
        loop {
            if w & WORD_CLOSED != 0 {
                return Err(Refusal::Closed);
            }
            let n = w >> 1;
            // Acquire: pairs with the flusher's SeqCst store of `popped` in
            // `Engine::dispatch`, after its pops: the room admitted here is
            // room the storage has.
            let popped = shard.cons.popped.load(Ordering::Acquire);
            let room = cap - n.saturating_sub(popped).min(cap);
            if room == 0 {
                return Err(Refusal::Full);
            }
            let grant = want.min(room);
            // SeqCst: the RMW of the wake protocol (see module docs); pairs
            // with the flusher's fetch_or(SLEEPING) + re-read in `park`, and
            // with `close`'s fetch_or of WORD_CLOSED.
            match word.compare_exchange_weak(
                w,
                w + (grant << 1),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok((n, grant)),
                Err(actual) => w = actual,
            }
        }
    }

    /// Pushes an item whose slot is reserved.
    #[inline]
    #[allow(unsafe_code)]
    fn push_reserved(&self, shard: &Shard<S>, index: u64, item: T) {
        if let Some(ring) = shard.storage.__ring(Seal(())) {
            // SAFETY: `Ring::push`'s contract holds: `index` came from this
            // shard's reservation CAS, which hands each number out once; the
            // ring is this shard's alone (a `RingStorage` is owned by one
            // shard and no other storage can expose a ring); and the CAS
            // admitted `index` only after an Acquire load of a `popped`
            // above `index - capacity`, stored by the flusher after its take
            // of that slot's previous item.
            unsafe { ring.push(index, item) };
            return;
        }
        let mut item = item;
        loop {
            match shard.storage.push(item) {
                Ok(()) => return,
                // Only a storage that breaks its contract (refusing below its
                // capacity) gets here: wait for the flusher to pop.
                Err(back) => {
                    item = back;
                    sync::spin_hint();
                    thread::yield_now();
                }
            }
        }
    }

    /// After the push: wake the flusher if this reservation reached the
    /// shard's threshold and the flusher sleeps.
    #[inline]
    fn after_push(&self, shard: &Shard<S>, end: u64) {
        sync::fence_after_rmw();
        // SeqCst loads: after the reservation RMW in the SeqCst order; pair
        // with the flusher's SeqCst store of `wake_at` and fetch_or(SLEEPING).
        if end >= shard.cons.wake_at.load(Ordering::SeqCst)
            && self.state.load(Ordering::SeqCst) & SLEEPING != 0
        {
            self.wake_flusher();
        }
    }

    /// Clears `SLEEPING`; whoever clears it unparks the flusher.
    pub(crate) fn wake_flusher(&self) {
        // SeqCst RMW on the same word as the flusher's fetch_or(SLEEPING):
        // exactly one waker sees the bit.
        let prev = self.state.fetch_and(!SLEEPING, Ordering::SeqCst);
        if prev & SLEEPING != 0 {
            // Release: pairs with the Acquire load in `Engine::oldest_bound`.
            self.wake.stamp.store(self.clock.now(), Ordering::Release);
            self.wake.wakeups.fetch_add(1, Ordering::Relaxed);
            let guard = self.wake.thread.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = guard.as_ref() {
                t.unpark();
            }
        }
    }

    /// One attempt on the calling thread's shard; refusals are not counted.
    #[inline]
    pub(crate) fn try_once(&self, item: T) -> Result<(), (Refusal, T)> {
        let shard = self.shard();
        match self.try_reserve(shard, 1) {
            Ok((n, _)) => {
                self.push_reserved(shard, n, item);
                self.after_push(shard, n + 1);
                Ok(())
            }
            Err(r) => Err((r, item)),
        }
    }

    #[inline]
    fn submit_one(&self, mut item: T, wait: Wait) -> Result<(), (Refusal, T)> {
        loop {
            match self.try_once(item) {
                Ok(()) => return Ok(()),
                Err((Refusal::Full, back)) => {
                    item = back;
                    if let Err(r) = self.refused_full(self.shard(), wait) {
                        self.count(self.shard(), r, 1);
                        return Err((r, item));
                    }
                }
                Err((r, back)) => {
                    self.count(self.shard(), r, 1);
                    return Err((r, back));
                }
            }
        }
    }

    /// Counts a refusal on the calling thread's shard.
    pub(crate) fn count_refusal(&self, r: Refusal) {
        self.count(self.shard(), r, 1);
    }

    /// Counts an item whose `submit_async` future was dropped unaccepted.
    pub(crate) fn count_cancelled(&self) {
        self.shard()
            .prod
            .rejected_cancelled
            .fetch_add(1, Ordering::Relaxed);
    }

    fn submit_many(&self, items: &mut Vec<T>, wait: Wait) -> Result<(), SubmitManyError> {
        let shard = self.shard();
        while !items.is_empty() {
            match self.try_reserve(shard, items.len() as u64) {
                Ok((n, granted)) => {
                    for (k, item) in items.drain(..granted as usize).enumerate() {
                        self.push_reserved(shard, n + k as u64, item);
                    }
                    self.after_push(shard, n + granted);
                }
                Err(r) => {
                    let r = if r == Refusal::Full {
                        match self.refused_full(shard, wait) {
                            Ok(()) => continue,
                            Err(r) => r,
                        }
                    } else {
                        r
                    };
                    self.count(shard, r, items.len() as u64);
                    return Err(match r {
                        Refusal::Full => SubmitManyError::Full,
                        Refusal::Timeout => SubmitManyError::Timeout,
                        Refusal::Closed => SubmitManyError::Closed,
                    });
                }
            }
        }
        Ok(())
    }

    /// The shard was full: wait for room if allowed. `Ok` means try again.
    fn refused_full(&self, shard: &Shard<S>, wait: Wait) -> Result<(), Refusal> {
        let deadline = match wait {
            Wait::Never => return Err(Refusal::Full),
            Wait::Until(d) => d,
        };
        if self.on_flusher_thread() {
            // The processor itself: waiting for room would wait for itself.
            return Err(if deadline.is_some() {
                Refusal::Timeout
            } else {
                Refusal::Full
            });
        }
        self.wait_for_room(shard, deadline)
    }

    fn count(&self, shard: &Shard<S>, r: Refusal, n: u64) {
        let c = match r {
            Refusal::Full => &shard.prod.rejected_full,
            Refusal::Timeout => &shard.prod.rejected_timeout,
            Refusal::Closed => &shard.prod.rejected_closed,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Waits until the shard has `resume_room` free slots (hysteresis: a
    /// producer retrying at the first free slot contends with the flusher's
    /// pops), the batcher closes, or the deadline passes.
    /// `Some` once the shard has `resume_room` free slots (`Ok`) or is
    /// closed (`Err`): the condition producers wait for.
    pub(crate) fn room_ready(&self, shard: &Shard<S>) -> Option<Result<(), Refusal>> {
        let cap = self.cfg.capacity;
        // SeqCst loads: the re-check of the `Signal` protocol; pair with the
        // flusher's SeqCst store of `popped` and `close`'s fetch_or.
        let w = shard.prod.word.load(Ordering::SeqCst);
        if w & WORD_CLOSED != 0 {
            return Some(Err(Refusal::Closed));
        }
        let used = (w >> 1).saturating_sub(shard.cons.popped.load(Ordering::SeqCst));
        (cap - used.min(cap) >= self.cfg.resume_room).then_some(Ok(()))
    }

    fn wait_for_room(&self, shard: &Shard<S>, deadline: Option<u64>) -> Result<(), Refusal> {
        let ready = || self.room_ready(shard);
        // Yield, not spin: the flusher that makes room may need this core.
        let short = YieldWait::new();
        while !short.is_completed() {
            if let Some(r) = ready() {
                return r;
            }
            if deadline.is_some_and(|at| self.clock.now() >= at) {
                return Err(Refusal::Timeout);
            }
            short.wait();
        }
        shard.prod.waits.fetch_add(1, Ordering::Relaxed);
        self.signal
            .wait(&self.clock, deadline, ready)
            .unwrap_or(Err(Refusal::Timeout))
    }

    fn deadline_after(&self, d: Duration) -> Option<u64> {
        Some(self.clock.now().saturating_add(duration_to_nanos(d)))
    }

    /// Stops intake; see [`Batcher::close`].
    pub(crate) fn close(&self) {
        {
            let _guard = self.close_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.close_calls.fetch_add(1, Ordering::SeqCst);
            if self.state.load(Ordering::SeqCst) & CLOSED != 0 {
                return;
            }
            self.state.fetch_or(CLOSING, Ordering::SeqCst);
            for shard in self.shards.iter() {
                // SeqCst RMW: every reservation CAS is before or after this
                // one; the displaced count is exactly the set the final
                // drain awaits.
                let prev = shard.prod.word.fetch_or(WORD_CLOSED, Ordering::SeqCst);
                shard.cons.closed_at.store(prev >> 1, Ordering::SeqCst);
            }
            // SeqCst RMW on `state`: the flusher reads CLOSED, then
            // `closed_at`.
            let prev = self.state.fetch_or(CLOSED, Ordering::SeqCst);
            if prev & SLEEPING != 0 {
                self.wake_flusher();
            }
        }
        // Producers blocked for room see the closed bit.
        self.signal.notify();
        // Outside the lock: a log backend may use this batcher.
        #[cfg(feature = "log")]
        log::debug!("microbatch: closed");
    }

    /// Reopens intake after a close whose drain has finished (a user-run
    /// flusher starting again). Shard bits are cleared before `CLOSING`, so
    /// a submit refused as closed still finds `is_closed()` true.
    pub(crate) fn reopen(&self) {
        {
            let _guard = self.close_lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.state.load(Ordering::SeqCst) & CLOSED == 0
                || self.close_calls.load(Ordering::SeqCst)
                    > self.closes_consumed.load(Ordering::SeqCst)
            {
                // Open, or closed again since the last run ended: stay so.
                return;
            }
            // Running before open, in the lock `close` takes: a close from
            // now on ends this run, and `done()` is false while it accepts.
            self.status.store(RUNNING, Ordering::SeqCst);
            for shard in self.shards.iter() {
                shard.prod.word.fetch_and(!WORD_CLOSED, Ordering::SeqCst);
            }
            self.state.fetch_and(!(CLOSED | CLOSING), Ordering::SeqCst);
        }
        #[cfg(feature = "log")]
        log::debug!("microbatch: reopened");
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::SeqCst) & CLOSING != 0
    }

    /// Has every item counted in `snap` been processed?
    pub(crate) fn flushed(&self, snap: &[u64]) -> bool {
        self.shards
            .iter()
            .zip(snap)
            .all(|(s, &t)| s.cons.processed.load(Ordering::SeqCst) >= t)
    }

    /// `Some` once a flush waiting for `snap` is over.
    pub(crate) fn flush_ready(&self, snap: &[u64]) -> Option<Result<(), FlushError>> {
        if self.flushed(snap) {
            Some(Ok(()))
        } else if self.status.load(Ordering::SeqCst) == DONE {
            Some(Err(FlushError::Closed))
        } else {
            None
        }
    }

    /// Snapshots the accepted counts and asks the flusher to reach them.
    /// `Ok(None)`: already flushed.
    pub(crate) fn request_flush(&self) -> Result<Option<Vec<u64>>, FlushError> {
        if self.on_flusher_thread() {
            return Err(FlushError::Reentrant);
        }
        let mut snap = Vec::with_capacity(self.shards.len());
        for shard in self.shards.iter() {
            // SeqCst: a submit that returned before this call reserved before
            // this load.
            let w = shard.prod.word.load(Ordering::SeqCst);
            if w & WORD_CLOSED != 0 {
                return Err(FlushError::Closed);
            }
            snap.push(w >> 1);
        }
        if self.flushed(&snap) {
            return Ok(None);
        }
        {
            let mut targets = self.flush_targets.lock().unwrap_or_else(|e| e.into_inner());
            for (t, &s) in targets.iter_mut().zip(&snap) {
                *t = (*t).max(s);
            }
        }
        // SeqCst RMW on `state`: ordered with the flusher's fetch_or(SLEEPING).
        let prev = self.state.fetch_or(FLUSH_REQ, Ordering::SeqCst);
        if prev & SLEEPING != 0 {
            self.wake_flusher();
        }
        #[cfg(feature = "log")]
        log::debug!("microbatch: flush requested");
        Ok(Some(snap))
    }

    fn flush_until(&self, deadline: Option<u64>) -> Result<(), FlushError> {
        let Some(snap) = self.request_flush()? else {
            return Ok(());
        };
        self.signal
            .wait(&self.clock, deadline, || self.flush_ready(&snap))
            .unwrap_or(Err(FlushError::Timeout))
    }

    /// A run has drained everything after the closes made so far (called by
    /// the flusher at the end of a run, before it reports `DONE`).
    pub(crate) fn consume_closes(&self) {
        let _guard = self.close_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.closes_consumed
            .store(self.close_calls.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// `Some` once the flusher has run to its end since the last close
    /// (closed and drained).
    pub(crate) fn done(&self) -> Option<()> {
        (self.status.load(Ordering::SeqCst) == DONE && self.is_closed()).then_some(())
    }

    /// Blocks until the flusher has finished (if it has started).
    fn wait_done(&self) {
        if self.on_flusher_thread() {
            return;
        }
        self.signal.wait(&self.clock, None, || {
            (self.status.load(Ordering::SeqCst) != RUNNING).then_some(())
        });
    }

    /// A snapshot of the counters (see [`FlusherStats`] for why the item
    /// counts are consistent).
    pub(crate) fn metrics(&self) -> Metrics {
        let mut m = Metrics::default();
        let st = &self.stats;
        let mut tries = 0u32;
        loop {
            // Acquire: pairs with the Release store in `end_write`.
            let s1 = st.seq.load(Ordering::Acquire);
            let (mut accepted, mut popped, mut completed) = (0, 0, 0);
            if s1 & 1 == 0 {
                for s in self.shards.iter() {
                    popped += s.cons.popped.load(Ordering::Relaxed);
                    completed += s.cons.processed.load(Ordering::Relaxed);
                }
                m.failed = st.failed.load(Ordering::Relaxed);
                // After the flusher's counts: a reservation admitted by a
                // newer `popped` than the one read here makes `seq` differ
                // below (it happens-before this load).
                for s in self.shards.iter() {
                    accepted += s.prod.word.load(Ordering::SeqCst) >> 1;
                }
                // Acquire fence: pairs with the Release fence in
                // `begin_write`; a count stored after it is seen as a new
                // `seq`.
                fence(Ordering::Acquire);
                if st.seq.load(Ordering::Relaxed) == s1 {
                    m.submitted = accepted;
                    m.queue_depth = accepted - popped;
                    m.in_flight = popped - completed;
                    m.processed = completed - m.failed;
                    break;
                }
            }
            // The flusher's writes are a few stores long and never wait:
            // retry at once; yield only if this thread seems to be keeping
            // the flusher off its core.
            tries += 1;
            if tries.is_multiple_of(4096) {
                thread::yield_now();
            } else {
                sync::spin_hint();
            }
        }
        for s in self.shards.iter() {
            m.rejected_full += s.prod.rejected_full.load(Ordering::Relaxed);
            m.rejected_timeout += s.prod.rejected_timeout.load(Ordering::Relaxed);
            m.rejected_closed += s.prod.rejected_closed.load(Ordering::Relaxed);
            m.rejected_cancelled += s.prod.rejected_cancelled.load(Ordering::Relaxed);
            m.producer_waits += s.prod.waits.load(Ordering::Relaxed);
        }
        m.capacity = self.cfg.capacity * self.shards.len() as u64;
        m.discarded = st.discarded.load(Ordering::Relaxed);
        m.batches_size = st.batches[0].load(Ordering::Relaxed);
        m.batches_time = st.batches[1].load(Ordering::Relaxed);
        m.batches_flush = st.batches[2].load(Ordering::Relaxed);
        m.batches_shutdown = st.batches[3].load(Ordering::Relaxed);
        m.processor_errors = st.errors.load(Ordering::Relaxed);
        m.processor_panics = st.panics.load(Ordering::Relaxed);
        m.other_panics =
            st.other_panics.load(Ordering::Relaxed) + st.export_panics.load(Ordering::Relaxed);
        m.flusher_wakeups = self.wake.wakeups.load(Ordering::Relaxed);
        let since = st.busy_since.load(Ordering::Relaxed);
        if since != 0 {
            m.processor_busy_for = Duration::from_nanos(self.clock.now().saturating_sub(since));
        }
        m
    }
}

/// The batcher: many producer threads submit, one flusher processes batches.
///
/// `Batcher` is `Send + Sync`: share it by reference (scoped threads) or in
/// an `Arc`. Build one with [`Batcher::builder`].
///
/// # Dropping
///
/// Dropping the batcher is [`shutdown`](Batcher::shutdown) without the
/// report: intake stops, every accepted item is processed, and the flusher
/// thread is joined — so dropping it waits for a stuck processor too (use
/// [`shutdown_timeout`](Batcher::shutdown_timeout) to bound the wait and
/// learn what was left). Dropped on its own flusher thread (the processor held
/// the last handle), it only closes; the flusher drains after the current
/// batch. With a [`Flusher`](crate::Flusher) that has not started, it only
/// closes; the flusher's run (or drop) processes what is queued.
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// let total = Arc::new(AtomicU64::new(0));
/// let sum = Arc::clone(&total);
/// let batcher = Batcher::builder()
///     .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
///         sum.fetch_add(batch.iter().sum::<u64>(), Ordering::Relaxed);
///     })
///     .unwrap();
///
/// std::thread::scope(|s| {
///     for t in 0..4 {
///         let b = &batcher;
///         s.spawn(move || {
///             for i in 0..1000 {
///                 b.submit(t * 1000 + i).unwrap();
///             }
///         });
///     }
/// });
/// let report = batcher.shutdown();
/// assert_eq!(report.processed, 4000);
/// assert_eq!(total.load(Ordering::Relaxed), (0..4000).sum::<u64>());
/// ```
pub struct Batcher<T, S = RingStorage<T>>
where
    S: Storage<T>,
{
    shared: Arc<Shared<T, S>>,
    handle: Option<thread::JoinHandle<()>>,
    #[cfg(all(feature = "metrics", not(loom)))]
    exporter: Option<crate::export::Exporter>,
}

impl<T: Send + 'static> Batcher<T> {
    /// A [`Builder`](crate::Builder) with the defaults.
    pub fn builder() -> crate::Builder<T> {
        crate::Builder::new()
    }
}

impl<T, S: Storage<T>> fmt::Debug for Batcher<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("shards", &self.shared.shards.len())
            .field("closed", &self.shared.is_closed())
            .field("metrics", &self.shared.metrics())
            .finish()
    }
}

impl<T, S: Storage<T>> Batcher<T, S> {
    pub(crate) fn new(
        shared: Arc<Shared<T, S>>,
        handle: Option<thread::JoinHandle<()>>,
        #[cfg(all(feature = "metrics", not(loom)))] exporter: Option<crate::export::Exporter>,
    ) -> Self {
        Batcher {
            shared,
            handle,
            #[cfg(all(feature = "metrics", not(loom)))]
            exporter,
        }
    }

    pub(crate) fn shared(&self) -> &Shared<T, S> {
        &self.shared
    }

    /// Submits an item under the configured [`Backpressure`] policy
    /// (default: wait for room).
    ///
    /// # Errors
    ///
    /// The item comes back inside the error: `Closed` once the batcher is
    /// closed, `Full` under `Reject` (or when the caller is this batcher's own
    /// processor, which must not wait for itself), `Timeout` under
    /// `BlockTimeout`.
    #[inline]
    pub fn submit(&self, item: T) -> Result<(), SubmitError<T>> {
        // The fast path is one attempt; policy, clock and counters only on
        // a refusal.
        match self.shared.try_once(item) {
            Ok(()) => Ok(()),
            Err((r, item)) => self.submit_refused(r, item),
        }
    }

    #[cold]
    #[inline(never)]
    fn submit_refused(&self, r: Refusal, item: T) -> Result<(), SubmitError<T>> {
        let result = if r == Refusal::Full {
            let wait = match self.shared.cfg.backpressure {
                Backpressure::Block => Wait::Until(None),
                Backpressure::BlockTimeout(d) => Wait::Until(self.shared.deadline_after(d)),
                Backpressure::Reject => Wait::Never,
            };
            self.shared.submit_one(item, wait)
        } else {
            self.shared.count_refusal(r);
            Err((r, item))
        };
        result.map_err(|(r, item)| match r {
            Refusal::Full => SubmitError::Full(item),
            Refusal::Timeout => SubmitError::Timeout(item),
            Refusal::Closed => SubmitError::Closed(item),
        })
    }

    /// Submits an item if its shard has room now; never blocks.
    ///
    /// # Errors
    ///
    /// `Full(item)` or `Closed(item)`.
    #[inline]
    pub fn try_submit(&self, item: T) -> Result<(), TrySubmitError<T>> {
        match self.shared.try_once(item) {
            Ok(()) => Ok(()),
            Err((r, item)) => Err(self.try_refused(r, item)),
        }
    }

    #[cold]
    #[inline(never)]
    fn try_refused(&self, r: Refusal, item: T) -> TrySubmitError<T> {
        self.shared.count_refusal(r);
        match r {
            Refusal::Closed => TrySubmitError::Closed(item),
            _ => TrySubmitError::Full(item),
        }
    }

    /// Submits an item, waiting at most `timeout` for room, whatever the
    /// configured policy.
    ///
    /// # Errors
    ///
    /// `Timeout(item)` or `Closed(item)`. Called from this batcher's own
    /// processor on a full shard it returns `Timeout` at once.
    pub fn submit_timeout(&self, item: T, timeout: Duration) -> Result<(), SubmitTimeoutError<T>> {
        let wait = Wait::Until(self.shared.deadline_after(timeout));
        self.shared
            .submit_one(item, wait)
            .map_err(|(r, item)| match r {
                Refusal::Closed => SubmitTimeoutError::Closed(item),
                _ => SubmitTimeoutError::Timeout(item),
            })
    }

    /// Submits many items in one call under the configured policy, reserving
    /// room for as many as fit with one atomic operation.
    ///
    /// Accepted items are removed from the front of `items`; on `Err`,
    /// `items` holds exactly the items not accepted, in order (a prefix is
    /// always accepted before a suffix, so per-thread order holds).
    ///
    /// # Errors
    ///
    /// Why the rest was not accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo};
    ///
    /// let batcher = Batcher::builder()
    ///     .build(|batch: &mut Vec<u32>, _: &BatchInfo| batch.clear())
    ///     .unwrap();
    /// let mut items: Vec<u32> = (0..100).collect();
    /// batcher.submit_many(&mut items).unwrap();
    /// assert!(items.is_empty());
    /// assert_eq!(batcher.shutdown().processed, 100);
    /// ```
    pub fn submit_many(&self, items: &mut Vec<T>) -> Result<(), SubmitManyError> {
        let wait = match self.shared.cfg.backpressure {
            Backpressure::Block => Wait::Until(None),
            Backpressure::BlockTimeout(d) => Wait::Until(self.shared.deadline_after(d)),
            Backpressure::Reject => Wait::Never,
        };
        self.shared.submit_many(items, wait)
    }

    /// Like [`submit_many`](Batcher::submit_many), but never blocks.
    ///
    /// # Errors
    ///
    /// `Full` or `Closed`; `items` holds the items not accepted.
    pub fn try_submit_many(&self, items: &mut Vec<T>) -> Result<(), SubmitManyError> {
        self.shared.submit_many(items, Wait::Never)
    }

    /// Waits until every item whose submit returned `Ok` before this call has
    /// been processed (a barrier), dispatching partial batches to get there.
    ///
    /// # Errors
    ///
    /// `Closed` if the batcher was already closed; `Reentrant` if called from
    /// this batcher's own processor.
    pub fn flush(&self) -> Result<(), FlushError> {
        self.shared.flush_until(None)
    }

    /// [`flush`](Batcher::flush), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As `flush`, plus `Timeout` (the flush still happens, later).
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), FlushError> {
        self.shared.flush_until(self.shared.deadline_after(timeout))
    }

    /// Stops intake, from any thread: every later submit is refused with its
    /// item, blocked submitters return `Closed` with theirs, and the flusher
    /// drains everything already accepted and stops. Returns at once;
    /// idempotent. The Go original's context cancellation.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Has the batcher been closed?
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// A cloneable handle that can only close the batcher: the cancel signal
    /// to hand to whatever decides when to stop.
    pub fn closer(&self) -> Closer
    where
        T: 'static,
        S: 'static,
    {
        Closer {
            target: Box::new(CloseShared(Arc::clone(&self.shared))),
        }
    }

    /// A snapshot of the counters, read without stopping anyone.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics()
    }

    /// Closes, then waits at most `timeout` for the flusher to process
    /// everything accepted and stop; returns the final counters. Takes
    /// `&self`, so a batcher shared in an `Arc` can be shut down from any
    /// handle (see also [`shutdown_async`](Batcher::shutdown_async)).
    ///
    /// When the processor does not come back in time (a stuck sink), it
    /// returns what it knows: the counters then, with the stuck batch in
    /// `in_flight` and its age in `processor_busy_for`. The batcher stays
    /// closed and the flusher goes on; **dropping the last handle still
    /// waits for the flusher** (so nothing accepted is lost), so a program
    /// that must exit regardless should exit without dropping it (for
    /// example `std::process::exit`, or leak it with `std::mem::forget`).
    ///
    /// # Errors
    ///
    /// [`ShutdownError::Timeout`] when the flusher had not finished in time
    /// (with a [`Flusher`](crate::Flusher) that nobody runs, it never does);
    /// [`ShutdownError::Reentrant`] from the batcher's own processor.
    pub fn shutdown_timeout(&self, timeout: Duration) -> Result<Metrics, ShutdownError> {
        self.shared.close();
        if self.shared.on_flusher_thread() {
            return Err(ShutdownError::Reentrant(Box::new(self.shared.metrics())));
        }
        let deadline = self.shared.deadline_after(timeout);
        match self
            .shared
            .signal
            .wait(&self.shared.clock, deadline, || self.shared.done())
        {
            Some(()) => Ok(self.shared.metrics()),
            None => Err(ShutdownError::Timeout(Box::new(self.shared.metrics()))),
        }
    }

    /// Closes, processes everything accepted, joins the flusher and returns
    /// the final counters.
    pub fn shutdown(mut self) -> Metrics {
        self.stop();
        self.shared.metrics()
    }

    fn stop(&mut self) {
        self.shared.close();
        if self.shared.on_flusher_thread() {
            return;
        }
        match self.handle.take() {
            // Dropped by the flusher thread itself, after its run (the
            // processor held the last handle and is being dropped): the
            // thread is ending; it cannot join itself.
            Some(h) if h.thread().id() == thread::current().id() => {}
            // The flusher catches every panic of user code; an Err here
            // would be a bug of ours, already reported by the panic hook.
            // Its payload is user-made too: drop it where a panic is caught.
            Some(h) => {
                if let Err(payload) = h.join() {
                    crate::processor::drop_quietly(payload);
                }
            }
            None => self.shared.wait_done(),
        }
        // The last snapshot, with everything settled.
        #[cfg(all(feature = "metrics", not(loom)))]
        if let Some(mut e) = self.exporter.take() {
            e.stop();
        }
        #[cfg(feature = "log")]
        log::debug!("microbatch: stopped");
    }
}

impl<T, S: Storage<T>> Drop for Batcher<T, S> {
    fn drop(&mut self) {
        self.stop();
    }
}

trait CloseTarget: Send + Sync {
    fn close(&self);
    fn is_closed(&self) -> bool;
    fn clone_box(&self) -> Box<dyn CloseTarget>;
}

struct CloseShared<T, S: Storage<T>>(Arc<Shared<T, S>>);

impl<T: 'static, S: Storage<T> + 'static> CloseTarget for CloseShared<T, S> {
    fn close(&self) {
        self.0.close();
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn clone_box(&self) -> Box<dyn CloseTarget> {
        Box::new(CloseShared(Arc::clone(&self.0)))
    }
}

/// A cloneable handle that closes its batcher (see [`Batcher::close`]).
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo};
///
/// let batcher = Batcher::builder()
///     .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// let closer = batcher.closer();
/// std::thread::spawn(move || closer.close()).join().unwrap(); // e.g. on SIGTERM
/// assert!(batcher.is_closed());
/// assert!(batcher.submit(1).unwrap_err().is_closed());
/// ```
pub struct Closer {
    target: Box<dyn CloseTarget>,
}

impl Clone for Closer {
    fn clone(&self) -> Self {
        Closer {
            target: self.target.clone_box(),
        }
    }
}

impl fmt::Debug for Closer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closer")
            .field("closed", &self.target.is_closed())
            .finish()
    }
}

impl Closer {
    /// Stops the batcher's intake; see [`Batcher::close`].
    pub fn close(&self) {
        self.target.close();
    }

    /// Has the batcher been closed?
    pub fn is_closed(&self) -> bool {
        self.target.is_closed()
    }
}
