//! The flush barrier: `flush` returns once every item whose submit returned
//! before it has been processed.
//!
//! # Protocol
//!
//! The caller ([`Shared::request_flush`]) snapshots every shard's tail
//! (`SeqCst`: a submit that returned before the call reserved before the
//! load), raises the flusher's per-shard targets to it under a lock, sets
//! `FLUSH_REQ` (`SeqCst` RMW on `flags`, ordered with the flusher's
//! `fetch_or(SLEEPING)`: a parked flusher is woken, one about to park sees
//! the bit in the value its RMW returns) and waits in the `WaitQueue` until
//! every shard's processed count reaches its snapshot.
//!
//! The flusher ([`Shared::take_flush_request`]) clears `FLUSH_REQ` before
//! it reads the targets (a request that sets it again afterwards is seen on
//! the next iteration), dispatches `Flush` batches until its popped counts
//! reach them, and after every batch publishes the processed counts
//! ([`Shared::batch_done`], `SeqCst` stores) and notifies the waiters.
//! A flusher that has stopped makes every waiting flush return `Closed`.
//!
//! Checked by the loom models `flush` and `reentrant`; their mutants wait
//! for `popped` instead of `processed`, and drop the reentrancy check.

use super::{Shared, FLUSH_REQ, SLEEPING};
use crate::error::FlushError;
use crate::metrics::Tally;
use crate::processor::Trigger;
use crate::storage::Storage;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// A shard's processed count: items whose batch the processor has finished
/// (successfully or not). Written by the flusher after every batch.
#[derive(Debug)]
pub(crate) struct Progress(AtomicU64);

impl Progress {
    pub(super) fn new() -> Self {
        Progress(AtomicU64::new(0))
    }

    /// For a metrics read, under the flusher's sequence lock.
    pub(super) fn processed_relaxed(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per shard: the highest snapshot any pending flush asked for.
#[derive(Debug)]
pub(crate) struct FlushTargets(Mutex<Vec<u64>>);

impl FlushTargets {
    pub(super) fn new(shards: usize) -> Self {
        FlushTargets(Mutex::new(vec![0; shards]))
    }
}

// ===== the caller's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// Has every item counted in `snap` been processed?
    fn flushed(&self, snap: &[u64]) -> bool {
        self.shards
            .iter()
            .zip(snap)
            .all(|(s, &t)| s.cons.progress.0.load(Ordering::SeqCst) >= t)
    }

    /// `Some` once a flush waiting for `snap` is over.
    pub(crate) fn flush_ready(&self, snap: &[u64]) -> Option<Result<(), FlushError>> {
        if self.flushed(snap) {
            Some(Ok(()))
        } else if self.flusher_stopped() {
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
        if self.is_closed() {
            return Err(FlushError::Closed);
        }
        // No barrier for the lanes: a submit that returned before this call
        // published its tail with a Release store that happens-before the
        // load (`shared::shard`, "Lanes").
        let mut snap = Vec::with_capacity(self.shards.len());
        for shard in self.shards.iter() {
            match shard.accepted_if_open() {
                Some(n) => snap.push(n),
                None => return Err(FlushError::Closed),
            }
        }
        if self.flushed(&snap) {
            return Ok(None);
        }
        {
            let mut targets = self.flush.0.lock();
            for (t, &s) in targets.iter_mut().zip(&snap) {
                *t = (*t).max(s);
            }
        }
        // SeqCst RMW on `flags`: ordered with the flusher's fetch_or(SLEEPING).
        let prev = self.flags.fetch_or(FLUSH_REQ, Ordering::SeqCst);
        if prev & SLEEPING != 0 {
            self.wake_flusher();
        }
        #[cfg(feature = "log")]
        log::debug!("microbatch: flush requested");
        Ok(Some(snap))
    }

    /// [`request_flush`](Shared::request_flush), then waits until the
    /// barrier is reached or `deadline` passes.
    pub(crate) fn flush_until(&self, deadline: Option<u64>) -> Result<(), FlushError> {
        let Some(snap) = self.request_flush()? else {
            return Ok(());
        };
        self.waiters
            .wait(&self.clock, deadline, || self.flush_ready(&snap))
            .unwrap_or(Err(FlushError::Timeout))
    }
}

// ===== the flusher's half =====

impl<T, S: Storage<T>> Shared<T, S> {
    /// Takes a pending flush request: raises `targets` to every snapshot
    /// asked for so far.
    pub(crate) fn take_flush_request(&self, targets: &mut [u64]) {
        // Clear the bit before reading the targets: a request that sets it
        // again after this is seen on the next iteration.
        self.flags.fetch_and(!FLUSH_REQ, Ordering::SeqCst);
        let asked = self.flush.0.lock();
        for (mine, &t) in targets.iter_mut().zip(asked.iter()) {
            *mine = (*mine).max(t);
        }
    }

    /// A batch of `trigger` is done: publishes the flusher's counts (the
    /// item counts in one write of the metrics sequence lock), then wakes
    /// whoever waits for progress.
    pub(crate) fn batch_done(&self, popped: &[u64], tally: &Tally, trigger: Trigger) {
        self.stats.publish(tally, trigger);
        self.stats.begin_write();
        for (shard, &p) in self.shards.iter().zip(popped) {
            // SeqCst: the progress flush waiters re-check (`WaitQueue`).
            shard.cons.progress.0.store(p, Ordering::SeqCst);
        }
        self.stats.store_failed(tally.failed);
        self.stats.end_write();
        self.waiters.notify();
    }
}
