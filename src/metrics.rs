//! Counters, readable at any time without stopping the producers.

use crate::processor::Trigger;
use std::time::Duration;

/// A snapshot of a batcher's counters.
///
/// Read with [`Batcher::metrics`](crate::Batcher::metrics) while producers
/// run, or returned by [`Batcher::shutdown`](crate::Batcher::shutdown) once
/// everything has settled. The item counts (`submitted`, `processed`,
/// `failed`, `in_flight`, `queue_depth`) are read as one consistent
/// snapshot: in every snapshot
/// `submitted == processed + failed + in_flight + queue_depth`,
/// `queue_depth <= capacity` and `in_flight <= max_batch_size`. The other
/// counters are read one by one. Every item a submit call was given is in
/// `submitted` or in one of the `rejected_*` counters.
///
/// # Examples
///
/// ```
/// use microbatch::{Backpressure, Batcher, BatchInfo, Trigger};
///
/// let batcher = Batcher::builder()
///     .max_batch_size(2)
///     .capacity(2)
///     .shards(1)
///     .backpressure(Backpressure::Reject)
///     .build(|batch: &mut Vec<u8>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// for i in 0..3 {
///     let _ = batcher.submit(i);
/// }
/// let m = batcher.metrics(); // while running: consistent
/// assert_eq!(m.processed + m.failed + m.in_flight + m.queue_depth, m.submitted);
/// let m = batcher.shutdown(); // settled
/// assert_eq!(m.submitted + m.rejected(), 3);
/// assert_eq!(m.processed, m.submitted);
/// assert_eq!(m.batches(), m.batches_by(Trigger::Size) + m.batches_by(Trigger::Shutdown));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Items accepted (submit returned `Ok`).
    pub submitted: u64,
    /// Items refused because the shard was full.
    pub rejected_full: u64,
    /// Items refused because no room appeared before the timeout.
    pub rejected_timeout: u64,
    /// Items refused because the batcher was closed.
    pub rejected_closed: u64,
    /// Items of [`submit_async`](crate::Batcher::submit_async) futures
    /// dropped before the item was accepted (it was dropped with the
    /// future).
    pub rejected_cancelled: u64,
    /// Items of batches whose processor returned `Ok`.
    pub processed: u64,
    /// Items of batches whose processor returned an error or panicked
    /// (whether it had taken them out of the batch or not).
    pub failed: u64,
    /// Of the `failed` items, those the processor left in its batch: handed
    /// to the [`on_discard`](crate::Builder::on_discard) hook, then dropped.
    pub discarded: u64,
    /// Batches dispatched because `max_batch_size` items were pending.
    pub batches_size: u64,
    /// Batches dispatched because the oldest item had waited `max_delay`.
    pub batches_time: u64,
    /// Batches dispatched for a `flush`.
    pub batches_flush: u64,
    /// Batches dispatched while shutting down.
    pub batches_shutdown: u64,
    /// Batches whose processor returned an error.
    pub processor_errors: u64,
    /// Batches whose processor panicked.
    pub processor_panics: u64,
    /// Panics caught outside the processor call: in the `on_error` and
    /// `on_discard` hooks, in a `log` or `metrics` backend, and in the drops
    /// of items, errors and panic payloads.
    pub other_panics: u64,
    /// Times a producer (or `flush`/`close`) unparked the sleeping flusher.
    pub flusher_wakeups: u64,
    /// Times a producer blocked on a full shard (spin, then park).
    pub producer_waits: u64,
    /// Items accepted and not yet taken by the flusher (at most `capacity`).
    pub queue_depth: u64,
    /// Items taken by the flusher whose batch the processor has not finished
    /// (at most `max_batch_size`).
    pub in_flight: u64,
    /// Items the shards can hold in all.
    pub capacity: u64,
    /// How long the processor has been inside the current batch; zero when
    /// it is not running one. A stalled sink shows here while it stalls.
    pub processor_busy_for: Duration,
}

impl Metrics {
    /// All batches dispatched.
    pub fn batches(&self) -> u64 {
        self.batches_size + self.batches_time + self.batches_flush + self.batches_shutdown
    }

    /// All items refused, for any reason.
    pub fn rejected(&self) -> u64 {
        self.rejected_full + self.rejected_timeout + self.rejected_closed + self.rejected_cancelled
    }

    /// Items through the processor, successfully or not
    /// (`processed + failed`).
    pub fn completed(&self) -> u64 {
        self.processed + self.failed
    }

    /// Batches dispatched for one trigger.
    pub fn batches_by(&self, trigger: Trigger) -> u64 {
        match trigger {
            Trigger::Size => self.batches_size,
            Trigger::Time => self.batches_time,
            Trigger::Flush => self.batches_flush,
            Trigger::Shutdown => self.batches_shutdown,
        }
    }
}
