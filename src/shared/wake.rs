//! Waking a parked flusher, with no fence on the submit path.
//!
//! # Invariant
//!
//! A pending full batch, a first item after an idle park, a flush request
//! and a close each wake a parked flusher; no submit pays more than two
//! `SeqCst` loads for it (on x86 plain `mov`s).
//!
//! # Protocol
//!
//! Before parking, the flusher ([`Sleeper::park`]) stores each shard's wake
//! threshold, sets `SLEEPING` in `flags` (`SeqCst` RMW), then re-reads the
//! shard tails. After its push, a producer whose reservation reached its
//! shard's threshold loads `flags` (`SeqCst`) and wakes the flusher if it
//! sleeps ([`Shared::after_push`]).
//!
//! This is a store→load (store-buffering) pair on both sides: the producer
//! stores its reservation, then loads the flags; the flusher stores
//! `SLEEPING`, then loads the tails. Both stores are `SeqCst` RMWs (the
//! reservation CAS, the `fetch_or`) and both loads are `SeqCst`, so in the
//! single `SeqCst` order one side's load comes after the other side's RMW:
//! either the flusher's re-read sees the reservation (and it does not
//! sleep), or the producer's loads see `SLEEPING` and the new threshold
//! (and it wakes the flusher). On x86 the RMWs are locked instructions,
//! full barriers, so the producer's check costs no fence; under loom
//! [`fence_after_rmw`] supplies the order loom's `SeqCst` accesses lack.
//!
//! The thresholds satisfy `sum(threshold - count) <= room + shards - 1`,
//! so whenever a full batch is pending some producer crossed its shard's
//! threshold (pigeonhole); `room` is the batch size less what is pending,
//! the batch size being `max_batch_size` or, with a weight limit, the
//! count the recent average weight says fills the limit (`Sleeper::batch`:
//! the same protocol with a smaller room, so a batch full by that estimate
//! wakes the flusher; one full by weight sooner waits for it or for
//! `max_delay`); with no item pending and no deadline every
//! threshold is `count + 1`, so the first item wakes the flusher and its
//! time trigger starts from the waking producer's stamp.
//!
//! Checked by the loom model `wake`; its mutants park without the re-check,
//! drop the producer's fence, and set idle thresholds at `count + 2`.

use super::shard::{Awake, Reservation};
use super::{Shared, CLOSED, FLUSH_REQ, SLEEPING};
use crate::storage::Storage;
use crate::sync::{fence, fence_after_rmw, thread, AtomicU64, Mutex, Ordering};

/// A shard's wake threshold: the accepted count at which a producer must
/// check whether the flusher sleeps. Written by the flusher before it sets
/// `SLEEPING`.
#[derive(Debug)]
pub(crate) struct Threshold(AtomicU64);

impl Threshold {
    pub(super) fn new() -> Self {
        Threshold(AtomicU64::new(u64::MAX))
    }

    /// A lane producer's check, inside its reservation: does an accepted
    /// count of `end` reach the threshold? Relaxed: after the light
    /// barrier, which pairs with the flusher's heavy one (the flusher
    /// stores the threshold before its fetch_or(SLEEPING)).
    #[inline]
    pub(super) fn reached_by(&self, end: u64) -> bool {
        end >= self.0.load(Ordering::Relaxed)
    }
}

/// What the wake path touches, away from the hot lines.
#[derive(Debug)]
pub(crate) struct FlusherWake {
    /// Clock time the waking producer saw the sleeping flusher (the start of
    /// the time trigger after an idle park).
    stamp_at: AtomicU64,
    wakeups: AtomicU64,
    thread: Mutex<Option<thread::Thread>>,
}

impl FlusherWake {
    pub(super) fn new() -> Self {
        FlusherWake {
            stamp_at: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            thread: Mutex::new(None),
        }
    }

    pub(super) fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

// ===== the producer's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// After the pushes: wake the flusher if this filled reservation
    /// reached its shard's threshold and the flusher sleeps.
    #[inline]
    pub(crate) fn after_push(&self, filled: Reservation<'_, S>) {
        let (shard, end, lane_wake) = filled.finish();
        if let Some(wake) = lane_wake {
            // A lane: published by `finish`; the check was made inside the
            // reservation, after the light barrier (`shared::shard`).
            if wake {
                self.wake_flusher();
            }
            return;
        }
        fence_after_rmw();
        // SeqCst loads: after the reservation RMW in the SeqCst order; pair
        // with the flusher's SeqCst store of the threshold and
        // fetch_or(SLEEPING) (the module docs).
        if end >= shard.cons.threshold.0.load(Ordering::SeqCst)
            && self.flags.load(Ordering::SeqCst) & SLEEPING != 0
        {
            self.wake_flusher();
        }
    }

    /// Clears `SLEEPING`; whoever clears it unparks the flusher.
    pub(crate) fn wake_flusher(&self) {
        // SeqCst RMW on the same word as the flusher's fetch_or(SLEEPING):
        // exactly one waker sees the bit.
        let prev = self.flags.fetch_and(!SLEEPING, Ordering::SeqCst);
        if prev & SLEEPING != 0 {
            // Release: pairs with the Acquire load in `wake_stamp`.
            self.wake
                .stamp_at
                .store(self.clock.now(), Ordering::Release);
            self.wake.wakeups.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = self.wake.thread.lock().as_ref() {
                t.unpark();
            }
        }
    }
}

// ===== the flusher's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// The calling thread is the flusher from now on (`Some`) or no longer
    /// (`None`): the thread a waker unparks.
    pub(crate) fn set_flusher_thread(&self, t: Option<thread::Thread>) {
        *self.wake.thread.lock() = t;
    }

    /// When the producer that last woke the flusher saw it asleep.
    pub(crate) fn wake_stamp(&self) -> u64 {
        // Acquire: pairs with the Release store in `wake_flusher`.
        self.wake.stamp_at.load(Ordering::Acquire)
    }
}

/// The flusher's side of the wake protocol: the thresholds it publishes,
/// and the counts they were computed from.
#[derive(Debug)]
pub(crate) struct Sleeper {
    /// Per shard: counts when thresholds were last set (arrival weights).
    seen: Vec<u64>,
    /// Per shard: the thresholds last published.
    thresholds: Vec<u64>,
    /// Pending items that make a batch due (the room the thresholds share
    /// out is this less what is pending): `max_batch_size`, or fewer with a
    /// weight limit (`FlusherCore::dispatch` sets it from the average item
    /// weight). `u64::MAX` until set: `max_batch_size`.
    batch: u64,
}

impl Sleeper {
    pub(crate) fn new(shards: usize) -> Self {
        Sleeper {
            seen: vec![0; shards],
            thresholds: vec![0; shards],
            batch: u64::MAX,
        }
    }

    /// From now on a batch is due at `batch` pending items (at most
    /// `max_batch_size`, which bounds it anyway).
    pub(crate) fn set_batch(&mut self, batch: u64) {
        self.batch = batch.max(1);
    }

    /// Publishes wake thresholds for the accepted `counts` (with `pending`
    /// items not yet taken), announces `SLEEPING`, re-checks, and parks
    /// until woken or until `deadline`. Returns whether the thresholds were
    /// the first-item ones (then the waking producer's stamp bounds the
    /// oldest item's arrival).
    pub(crate) fn park<T, S: Storage<T>>(
        &mut self,
        shared: &Shared<T, S>,
        counts: &[u64],
        pending: u64,
        deadline: Option<u64>,
    ) -> bool {
        let first_item = self.set_thresholds(shared, counts, pending, deadline);
        // SeqCst RMW: the flusher's store of the store→load pair (module
        // docs); also returns any FLUSH_REQ / CLOSED set before it (same
        // word, so no request is missed).
        let prev = shared.flags.fetch_or(SLEEPING, Ordering::SeqCst);
        // Orders the RMW above before the re-check loads below: a fence for
        // the shards; with lanes, the heavy barrier (their producers pass
        // only the light one, `shared::shard`).
        let mut deadline = deadline;
        if shared.lanes == 0 {
            fence(Ordering::SeqCst);
        } else if !shared.barrier.heavy() {
            // Refused (a sandbox tightened since build): the re-check may
            // miss a crossing, so never sleep longer than a millisecond.
            let cap = shared
                .clock
                .deadline_after(std::time::Duration::from_millis(1));
            deadline = Some(deadline.map_or(cap, |d| d.min(cap)));
        }
        let mut busy = false;
        if prev & (CLOSED | FLUSH_REQ) == 0 {
            match self.recheck(shared) {
                // A waker clears SLEEPING before it unparks: if one already
                // has (during a busy lane's wait, say), its unpark is ours
                // and there is nothing to park for. (Loom also drops an
                // unpark that arrives during `yield_now`, which a real
                // thread keeps: without this look the model deadlocks.)
                Awake::No if shared.flags.load(Ordering::SeqCst) & SLEEPING != 0 => {
                    shared.clock.park_until(deadline)
                }
                Awake::No | Awake::Reached => {}
                Awake::Busy => busy = true,
            }
        }
        shared.flags.fetch_and(!SLEEPING, Ordering::SeqCst);
        if busy {
            // Let the busy lane's owner run (under loom: let the model
            // schedule it) before the loop looks again.
            thread::yield_now();
        }
        first_item
    }

    /// Thresholds with `sum(threshold - count) <= room + shards - 1`,
    /// weighted by each shard's recent arrivals. `true` if they are the
    /// first-item thresholds (`count + 1` everywhere).
    fn set_thresholds<T, S: Storage<T>>(
        &mut self,
        shared: &Shared<T, S>,
        counts: &[u64],
        pending: u64,
        deadline: Option<u64>,
    ) -> bool {
        let n = counts.len() as u64;
        // With nothing pending and no deadline, the first item must wake us
        // to start its time trigger; with a poll deadline, or with the time
        // trigger off, only a full batch needs to.
        let first_item = pending == 0 && deadline.is_none() && shared.cfg.max_delay_ns != u64::MAX;
        if first_item {
            for (w, &c) in self.thresholds.iter_mut().zip(counts) {
                *w = c + 1;
            }
        } else {
            let room = (shared.cfg.max_batch_size as u64)
                .min(self.batch)
                .saturating_sub(pending)
                .max(1);
            let weights: u64 = counts
                .iter()
                .zip(&self.seen)
                .map(|(c, s)| c.saturating_sub(*s))
                .sum();
            for (i, &c) in counts.iter().enumerate() {
                let extra = if weights == 0 {
                    (room - 1) / n
                } else {
                    let w = c.saturating_sub(self.seen[i]);
                    (u128::from(room - 1) * u128::from(w) / u128::from(weights)) as u64
                };
                self.thresholds[i] = c + 1 + extra;
            }
        }
        self.seen.copy_from_slice(counts);
        for (shard, &w) in shared.shards.iter().zip(&self.thresholds) {
            // SeqCst store, before fetch_or(SLEEPING): a producer whose
            // reservation comes after the re-check sees it.
            shard.cons.threshold.0.store(w, Ordering::SeqCst);
        }
        first_item
    }

    /// The re-check: has any queue reached its threshold, or is a lane's
    /// owner still inside a reservation (it may not have seen `SLEEPING`)?
    fn recheck<T, S: Storage<T>>(&self, shared: &Shared<T, S>) -> Awake {
        let mut awake = Awake::No;
        for (s, &w) in shared.shards.iter().zip(&self.thresholds) {
            match s.must_stay_awake(w) {
                Awake::Reached => return Awake::Reached,
                Awake::Busy => awake = Awake::Busy,
                Awake::No => {}
            }
        }
        awake
    }
}
