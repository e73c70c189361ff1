//! Counters, readable at any time without stopping the producers: the
//! public [`Metrics`] snapshot, and the flusher's published counters with
//! the sequence lock that makes the item counts one consistent snapshot.

use crate::processor::Trigger;
use crate::sync::{fence, spin_hint, thread, AtomicU64, Ordering};
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
    /// Attempts after the first at batches whose processor asked for a
    /// retry ([`Builder::retry`](crate::Builder::retry)). A retried batch
    /// counts once in `batches_*` and, when it ends, its items once in
    /// `processed` or `failed`.
    pub retries: u64,
    /// Batches dispatched because `max_batch_size` items were pending.
    pub batches_size: u64,
    /// Batches dispatched because the oldest item had waited `max_delay`.
    pub batches_time: u64,
    /// Batches dispatched for a `flush`.
    pub batches_flush: u64,
    /// Batches dispatched while shutting down.
    pub batches_shutdown: u64,
    /// Batches closed by the weight limit ([`Trigger::Weight`]).
    pub batches_weight: u64,
    /// Batches of one item heavier than the weight limit, sent alone
    /// ([`Oversize::Alone`](crate::Oversize::Alone)), or whose weigher
    /// panicked on the flusher (whatever their trigger).
    pub batches_oversize: u64,
    /// Total weight of the items in batches whose processor returned `Ok`
    /// (saturating; 0 without a weight limit).
    pub processed_weight: u64,
    /// Items refused because they were heavier than the weight limit
    /// ([`Oversize::Reject`](crate::Oversize::Reject)): handed back as
    /// `TooHeavy`. A many-item submit that stops at a heavy item counts it
    /// and every item left behind it in the caller's `Vec`.
    pub rejected_oversize: u64,
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
    /// Items the lanes and shards can hold in all.
    pub capacity: u64,
    /// Single-writer lanes this batcher has ([`Builder::lanes`](crate::Builder::lanes)).
    pub lanes: u64,
    /// Shared shards this batcher has ([`Builder::shards`](crate::Builder::shards)).
    pub shards: u64,
    /// Lanes leased now (by threads that submitted, and by
    /// [`Producer`](crate::Producer) handles).
    pub lanes_leased: u64,
    /// `true` if lane submits pass a compiler fence only and the flusher
    /// and `close` use the process-wide barrier (`membarrier` on Linux,
    /// `FlushProcessWriteBuffers` on Windows;
    /// [`BarrierMode::Auto`](crate::BarrierMode::Auto) where available);
    /// `false` in fence mode (a `SeqCst` fence per lane
    /// submit), and with no lanes.
    pub asymmetric_barrier: bool,
    /// Heavy barriers run: one per time the flusher set out to park (a
    /// park abandoned because work arrived counts too), one per `close`.
    pub heavy_barriers: u64,
    /// Heavy barriers the kernel refused after a successful registration
    /// (a sandbox tightened since `build()`); see
    /// [`BarrierMode`](crate::BarrierMode). Zero in a healthy process.
    pub barrier_failures: u64,
    /// How long the processor has been inside the current batch; zero when
    /// it is not running one. A stalled sink shows here while it stalls.
    pub processor_busy_for: Duration,
}

impl Metrics {
    /// All batches dispatched.
    pub fn batches(&self) -> u64 {
        self.batches_size
            + self.batches_time
            + self.batches_flush
            + self.batches_shutdown
            + self.batches_weight
    }

    /// All items refused, for any reason.
    pub fn rejected(&self) -> u64 {
        self.rejected_full
            + self.rejected_timeout
            + self.rejected_closed
            + self.rejected_cancelled
            + self.rejected_oversize
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
            Trigger::Weight => self.batches_weight,
        }
    }
}

/// The flusher's own running counts, published after every batch.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    /// Batches by trigger, in [`Trigger`] order (see [`trigger_index`]).
    pub(crate) batches: [u64; TRIGGERS],
    /// Batches of one oversize item.
    pub(crate) oversize: u64,
    /// Weight of the items of batches whose processor returned `Ok`.
    pub(crate) processed_weight: u64,
    pub(crate) errors: u64,
    pub(crate) panics: u64,
    pub(crate) other_panics: u64,
    /// Items of failed batches, and of those the ones left to discard.
    pub(crate) failed: u64,
    pub(crate) discarded: u64,
    /// Attempts after the first at retried batches.
    pub(crate) retries: u64,
}

/// How many triggers there are (the length of the per-trigger arrays).
pub(crate) const TRIGGERS: usize = 5;

/// Where a trigger's batches are counted in [`Tally::batches`].
pub(crate) fn trigger_index(t: Trigger) -> usize {
    match t {
        Trigger::Size => 0,
        Trigger::Time => 1,
        Trigger::Flush => 2,
        Trigger::Shutdown => 3,
        Trigger::Weight => 4,
    }
}

/// The flusher's published counters (single writer: plain stores).
///
/// # Snapshot protocol
///
/// `seq` is a sequence lock over the flusher's item counts (every shard's
/// `popped` and `processed`, and `failed`): the flusher opens a write
/// ([`begin_write`](FlusherStats::begin_write): `seq` odd, then a Release
/// fence), stores the counts, and closes it
/// ([`end_write`](FlusherStats::end_write): `seq` even, Release). A reader
/// ([`read`](FlusherStats::read)) loads `seq` (Acquire), loads those counts
/// and then the shard tails, fences (Acquire) and loads `seq` again: equal
/// and even means no count changed while it read, so every tail it read is
/// bounded by the `popped` it read (admission), and the snapshot's
/// `submitted == processed + failed + in_flight + queue_depth`,
/// `queue_depth <= capacity` and `in_flight <= max_batch_size` hold exactly.
/// Checked by the loom model `metrics`; its mutants drop the re-check and
/// store `popped` outside the lock.
#[derive(Debug)]
pub(crate) struct FlusherStats {
    seq: AtomicU64,
    /// Items of failed batches (under `seq`).
    failed: AtomicU64,
    discarded: AtomicU64,
    retries: AtomicU64,
    batches: [AtomicU64; TRIGGERS],
    oversize: AtomicU64,
    processed_weight: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    other_panics: AtomicU64,
    /// Panics of a `metrics` recorder, caught by the exporter thread.
    #[cfg_attr(not(all(feature = "metrics", not(loom))), allow(dead_code))]
    export_panics: AtomicU64,
    /// Clock time the processor entered the current batch; 0 outside one.
    busy_since: AtomicU64,
    /// Per-batch distributions and outcomes (feature `metrics`).
    #[cfg(all(feature = "metrics", not(loom)))]
    batch_record: BatchRecord,
}

impl FlusherStats {
    pub(crate) fn new() -> Self {
        FlusherStats {
            seq: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            batches: std::array::from_fn(|_| AtomicU64::new(0)),
            oversize: AtomicU64::new(0),
            processed_weight: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            other_panics: AtomicU64::new(0),
            export_panics: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            #[cfg(all(feature = "metrics", not(loom)))]
            batch_record: BatchRecord::new(),
        }
    }

    /// Records one finished batch for the exporter's histograms and its
    /// outcome counter (feature `metrics`; the flusher only, a few relaxed
    /// stores, no allocation).
    #[cfg(all(feature = "metrics", not(loom)))]
    pub(crate) fn record_batch(&self, b: &BatchSample) {
        let r = &self.batch_record;
        r.sizes.record(b.len);
        r.processor_ns.record(b.processor_ns);
        r.oldest_wait_ns.record(b.oldest_wait_ns);
        let c = &r.outcomes[trigger_index(b.trigger)][b.outcome as usize];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// What [`record_batch`](FlusherStats::record_batch) recorded so far.
    #[cfg(all(feature = "metrics", not(loom)))]
    pub(crate) fn batch_record(&self) -> &BatchRecord {
        &self.batch_record
    }

    /// Opens a write of the item counts under `seq` (the flusher only).
    pub(crate) fn begin_write(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        // Release fence: a reader that sees any count stored after this
        // also sees the odd `seq` (pairs with the Acquire fence in `read`).
        fence(Ordering::Release);
    }

    /// Closes a write opened by [`begin_write`](FlusherStats::begin_write).
    pub(crate) fn end_write(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        // Release: pairs with the reader's first (Acquire) load of `seq`.
        self.seq.store(s + 1, Ordering::Release);
    }

    /// Stores the count of failed items; inside a write.
    pub(crate) fn store_failed(&self, failed: u64) {
        self.failed.store(failed, Ordering::Relaxed);
    }

    /// The count of failed items; inside a [`read`](FlusherStats::read).
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Runs `f` (loads of the item counts) until it ran while no write was
    /// open; returns what that run returned.
    pub(crate) fn read<R>(&self, mut f: impl FnMut() -> R) -> R {
        let mut tries = 0u32;
        loop {
            // Acquire: pairs with the Release store in `end_write`.
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let r = f();
                // Acquire fence: pairs with the Release fence in
                // `begin_write`; a count stored after it is seen as a new
                // `seq`.
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return r;
                }
            }
            // The flusher's writes are a few stores long and never wait:
            // retry at once; yield only if this thread seems to be keeping
            // the flusher off its core.
            tries += 1;
            if tries.is_multiple_of(4096) {
                thread::yield_now();
            } else {
                spin_hint();
            }
        }
    }

    /// Publishes the counts outside the sequence lock (each read alone)
    /// after a batch of `trigger` (only its batch counter changed).
    pub(crate) fn publish(&self, t: &Tally, trigger: Trigger) {
        let k = trigger_index(trigger);
        self.batches[k].store(t.batches[k], Ordering::Relaxed);
        self.errors.store(t.errors, Ordering::Relaxed);
        self.panics.store(t.panics, Ordering::Relaxed);
        self.other_panics.store(t.other_panics, Ordering::Relaxed);
        self.discarded.store(t.discarded, Ordering::Relaxed);
        self.oversize.store(t.oversize, Ordering::Relaxed);
        self.processed_weight
            .store(t.processed_weight, Ordering::Relaxed);
    }

    /// Publishes the retry count (at each retry: a batch can be retried
    /// for long before it is done).
    pub(crate) fn publish_retries(&self, n: u64) {
        self.retries.store(n, Ordering::Relaxed);
    }

    /// Publishes only the panics caught outside the processor.
    #[cfg(feature = "log")]
    pub(crate) fn publish_other_panics(&self, n: u64) {
        self.other_panics.store(n, Ordering::Relaxed);
    }

    /// Counts a panic of a `metrics` recorder (the exporter thread).
    #[cfg(all(feature = "metrics", not(loom)))]
    pub(crate) fn count_export_panic(&self) {
        self.export_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// The processor entered a batch at clock time `at` (0: it left it).
    pub(crate) fn set_busy_since(&self, at: u64) {
        // Relaxed: a reading for `metrics()`, not a synchronising store.
        self.busy_since.store(at, Ordering::Relaxed);
    }

    /// Fills the counters read one by one (not the item counts).
    pub(crate) fn fill(&self, m: &mut Metrics, now: u64) {
        m.discarded = self.discarded.load(Ordering::Relaxed);
        m.retries = self.retries.load(Ordering::Relaxed);
        m.batches_size = self.batches[0].load(Ordering::Relaxed);
        m.batches_time = self.batches[1].load(Ordering::Relaxed);
        m.batches_flush = self.batches[2].load(Ordering::Relaxed);
        m.batches_shutdown = self.batches[3].load(Ordering::Relaxed);
        m.batches_weight = self.batches[4].load(Ordering::Relaxed);
        m.batches_oversize = self.oversize.load(Ordering::Relaxed);
        m.processed_weight = self.processed_weight.load(Ordering::Relaxed);
        m.processor_errors = self.errors.load(Ordering::Relaxed);
        m.processor_panics = self.panics.load(Ordering::Relaxed);
        m.other_panics =
            self.other_panics.load(Ordering::Relaxed) + self.export_panics.load(Ordering::Relaxed);
        let since = self.busy_since.load(Ordering::Relaxed);
        if since != 0 {
            m.processor_busy_for = Duration::from_nanos(now.saturating_sub(since));
        }
    }
}

/// How an attempt at a batch ended, for the `outcome` label.
#[cfg(all(feature = "metrics", not(loom)))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok = 0,
    Error = 1,
    Panic = 2,
    /// The processor asked for a rewind and the retry policy granted it.
    Rewind = 3,
}

#[cfg(all(feature = "metrics", not(loom)))]
impl Outcome {
    pub(crate) const ALL: [Outcome; 4] =
        [Outcome::Ok, Outcome::Error, Outcome::Panic, Outcome::Rewind];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
            Outcome::Rewind => "rewind",
        }
    }
}

/// One finished batch, as the exporter's histograms see it.
#[cfg(all(feature = "metrics", not(loom)))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSample {
    pub(crate) trigger: Trigger,
    pub(crate) outcome: Outcome,
    pub(crate) len: u64,
    /// Time in the processor.
    pub(crate) processor_ns: u64,
    /// How long the batch's oldest item had waited when the processor got
    /// it (a bound from below on its arrival, so this errs long).
    pub(crate) oldest_wait_ns: u64,
}

/// Per-batch distributions, as log-scale bucket counts the flusher bumps
/// and the exporter turns into `metrics` histogram samples (one
/// `record_many` per bucket that moved since its last publish): exact
/// counts, values to within a bucket (4 buckets per power of two, so
/// within 19%).
#[cfg(all(feature = "metrics", not(loom)))]
#[derive(Debug)]
pub(crate) struct BatchRecord {
    pub(crate) sizes: LogBuckets,
    pub(crate) processor_ns: LogBuckets,
    pub(crate) oldest_wait_ns: LogBuckets,
    /// Batches by trigger and outcome.
    pub(crate) outcomes: [[AtomicU64; 4]; TRIGGERS],
}

#[cfg(all(feature = "metrics", not(loom)))]
impl BatchRecord {
    fn new() -> Self {
        BatchRecord {
            sizes: LogBuckets::new(),
            processor_ns: LogBuckets::new(),
            oldest_wait_ns: LogBuckets::new(),
            outcomes: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// Counts of values in log-scale buckets: bucket 0 holds 0, then four
/// buckets per power of two. Single writer (relaxed load + store), any
/// number of readers.
#[cfg(all(feature = "metrics", not(loom)))]
#[derive(Debug)]
pub(crate) struct LogBuckets(Box<[AtomicU64]>);

#[cfg(all(feature = "metrics", not(loom)))]
impl LogBuckets {
    pub(crate) const LEN: usize = 1 + 64 * 4;

    fn new() -> Self {
        LogBuckets((0..Self::LEN).map(|_| AtomicU64::new(0)).collect())
    }

    /// The bucket of `v`.
    pub(crate) fn index(v: u64) -> usize {
        if v == 0 {
            return 0;
        }
        let e = 63 - v.leading_zeros() as usize;
        let sub = if e >= 2 {
            (v >> (e - 2)) & 3
        } else {
            (v << (2 - e)) & 3
        };
        1 + e * 4 + sub as usize
    }

    /// The value that stands for bucket `i`: the middle of its range.
    pub(crate) fn value(i: usize) -> f64 {
        if i == 0 {
            return 0.0;
        }
        let (e, sub) = ((i - 1) / 4, (i - 1) % 4);
        let base = 2f64.powi(e as i32);
        let width = base / 4.0;
        base + width * sub as f64 + width / 2.0
    }

    fn record(&self, v: u64) {
        let c = &self.0[Self::index(v)];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// The count in each bucket.
    pub(crate) fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|c| c.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, feature = "metrics", not(loom)))]
mod tests {
    use super::LogBuckets;

    #[test]
    fn buckets_hold_their_values() {
        for v in [
            0u64,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            100,
            511,
            512,
            1_000_000,
            u64::MAX,
        ] {
            let i = LogBuckets::index(v);
            assert!(i < LogBuckets::LEN, "{v} -> {i}");
            let mid = LogBuckets::value(i);
            if v > 0 {
                // Within the bucket's width (a quarter of its power of two).
                let err = (mid - v as f64).abs() / v as f64;
                assert!(err <= 0.25, "{v}: bucket {i} stands for {mid} ({err})");
            }
        }
        // Monotone: a larger value never lands in a lower bucket.
        let mut last = 0;
        for v in 0..10_000u64 {
            let i = LogBuckets::index(v);
            assert!(i >= last, "{v}");
            last = i;
        }
    }
}
