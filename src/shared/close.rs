//! Close, drain and reopen; the flusher's phase.
//!
//! # Invariant
//!
//! Every item whose submit returned `Ok` before a close is processed by the
//! run that the close ends; every submit after it is refused with its item;
//! a close is never lost, even one made between two runs of a user-run
//! flusher.
//!
//! # Protocol
//!
//! [`Shared::close`], under `lock`: sets `CLOSING` (so a submit refused as
//! closed finds `is_closed()` true; a lane producer refuses on it), runs the
//! heavy barrier if there are lanes, marks every shard tail closed with one
//! `SeqCst` RMW each and stores the count it displaced as that shard's final
//! count, takes each lane's tail once its owner is not inside a reservation
//! as that lane's final count (`shared::shard`, "Lanes"), then sets
//! `CLOSED` (`SeqCst` RMW) and wakes a sleeping flusher.
//! The flusher reads `CLOSED`, then the final counts ([`Shared::final_counts`]),
//! and drains until its popped counts reach them: every reservation CAS is
//! before or after the shard's mark in the RMW order, so exactly the items
//! before it are drained, and a push still in flight for one of them is
//! waited for.
//!
//! A run ends ([`Shared::end_run`]) by recording how many closes it has
//! drained, then storing phase `DONE` and notifying the waiters (`shutdown`,
//! `flush`). [`Shared::reopen`], under the same lock, reopens only if no
//! close came after the last run ended; it stores phase `RUNNING` before it
//! clears the shard marks and then `CLOSED | CLOSING`, so a close from then
//! on ends the new run.
//!
//! Checked by the loom models `close_race` (close racing submits),
//! `drop_active` (dropping a running batcher) and `user_flusher` (restart,
//! a close racing the restart); their mutants snapshot the count with a load
//! before the mark, drop the join, reopen in the wrong order, forget a
//! close made between runs, and never report `DONE`.

use super::{Shared, CLOSED, CLOSING, SLEEPING};
use crate::storage::Storage;
use crate::sync::{thread, AtomicU64, AtomicUsize, Mutex, Ordering};

/// The flusher's phase: it has never run.
const NOT_STARTED: usize = 0;
/// The flusher's phase: a run is going on.
const RUNNING: usize = 1;
/// The flusher's phase: the last run has ended (closed and drained).
const DONE: usize = 2;

/// A shard's accepted count when it was closed: written by `close` before
/// it sets `CLOSED`.
#[derive(Debug)]
pub(crate) struct FinalCount(AtomicU64);

impl FinalCount {
    pub(super) fn new() -> Self {
        FinalCount(AtomicU64::new(0))
    }
}

#[derive(Debug)]
pub(crate) struct CloseState {
    lock: Mutex<()>,
    /// `close` calls so far, and how many of them the last finished run
    /// had seen: a close after a run ended keeps the batcher closed through
    /// the next run (it drains and returns instead of reopening).
    calls: AtomicU64,
    consumed: AtomicU64,
    /// `NOT_STARTED`, `RUNNING` or `DONE`.
    phase: AtomicUsize,
}

impl CloseState {
    pub(super) fn new() -> Self {
        CloseState {
            lock: Mutex::new(()),
            calls: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            phase: AtomicUsize::new(NOT_STARTED),
        }
    }
}

// ===== the caller's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// Stops intake; see [`Batcher::close`](crate::Batcher::close).
    pub(crate) fn close(&self) {
        {
            let _guard = self.close.lock.lock();
            self.close.calls.fetch_add(1, Ordering::SeqCst);
            if self.flags.load(Ordering::SeqCst) & CLOSED != 0 {
                return;
            }
            self.flags.fetch_or(CLOSING, Ordering::SeqCst);
            if self.lanes > 0 && !self.barrier.heavy() {
                // Refused (a sandbox tightened since build): no proof that
                // a lane producer sees CLOSING; give store buffers far
                // longer than they take to drain (module docs of `barrier`).
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            for shard in self.shards.iter() {
                // A lane: after the heavy barrier, its owner either entered
                // (busy: wait for it to leave) or will see CLOSING.
                let displaced = if shard.is_lane() {
                    shard.lane_final_count()
                } else {
                    shard.mark_closed()
                };
                shard.cons.final_count.0.store(displaced, Ordering::SeqCst);
            }
            // SeqCst RMW on `flags`: the flusher reads CLOSED, then the
            // final counts.
            let prev = self.flags.fetch_or(CLOSED, Ordering::SeqCst);
            if prev & SLEEPING != 0 {
                self.wake_flusher();
            }
        }
        // Producers blocked for room see the closed mark.
        self.waiters.notify();
        // Outside the lock: a log backend may use this batcher.
        #[cfg(feature = "log")]
        log::debug!("microbatch: closed");
    }

    /// Reopens intake after a close whose drain has finished (a user-run
    /// flusher starting again), and marks the flusher running. Shard marks
    /// are cleared before `CLOSING`, so a submit refused as closed still
    /// finds `is_closed()` true.
    pub(crate) fn reopen(&self) {
        {
            let _guard = self.close.lock.lock();
            if self.flags.load(Ordering::SeqCst) & CLOSED == 0
                || self.close.calls.load(Ordering::SeqCst)
                    > self.close.consumed.load(Ordering::SeqCst)
            {
                // Open, or closed again since the last run ended: stay so.
                return;
            }
            // Running before open, in the lock `close` takes: a close from
            // now on ends this run, and `done()` is false while it accepts.
            self.close.phase.store(RUNNING, Ordering::SeqCst);
            for shard in self.shards.iter().filter(|s| !s.is_lane()) {
                shard.clear_closed();
            }
            self.flags.fetch_and(!(CLOSED | CLOSING), Ordering::SeqCst);
        }
        #[cfg(feature = "log")]
        log::debug!("microbatch: reopened");
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & CLOSING != 0
    }

    /// Has the flusher's last run ended (or is it not running at all)?
    pub(super) fn flusher_stopped(&self) -> bool {
        self.close.phase.load(Ordering::SeqCst) == DONE
    }

    /// `Some` once the flusher has run to its end since the last close
    /// (closed and drained).
    pub(crate) fn done(&self) -> Option<()> {
        (self.flusher_stopped() && self.is_closed()).then_some(())
    }

    /// Blocks until the flusher has finished (if it has started).
    pub(crate) fn wait_done(&self) {
        if self.on_flusher_thread() {
            return;
        }
        self.waiters.wait(&self.clock, None, || {
            (self.close.phase.load(Ordering::SeqCst) != RUNNING).then_some(())
        });
    }
}

// ===== the flusher's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// A run begins.
    pub(crate) fn start_run(&self) {
        self.close.phase.store(RUNNING, Ordering::SeqCst);
    }

    /// The batcher is closed (the flusher has read `CLOSED`): the counts
    /// the final drain must reach, per shard.
    pub(crate) fn final_counts(&self, targets: &mut [u64]) {
        for (t, shard) in targets.iter_mut().zip(self.shards.iter()) {
            // Written by `close` before it set CLOSED, which we have read.
            *t = shard.cons.final_count.0.load(Ordering::SeqCst);
        }
    }

    /// A run ends (drained, or unwinding from a bug of ours): records the
    /// closes it has drained, reports `DONE` and wakes everyone waiting.
    pub(crate) fn end_run(&self) {
        if thread::panicking() {
            // A bug of ours: refuse further items so nobody waits forever.
            self.close();
        }
        {
            let _guard = self.close.lock.lock();
            self.close
                .consumed
                .store(self.close.calls.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        self.close.phase.store(DONE, Ordering::SeqCst);
        self.waiters.notify();
    }
}
