//! The builder: setters that record, one validation in `build`, and the
//! assembly of a batcher and its flusher. The top layer: it imports the
//! configuration, the shared state, the flusher and the handles, and
//! nothing imports it.

use crate::batcher::Batcher;
use crate::config::{Backpressure, BarrierMode, Retry, Settings, Validated, WaitStrategy};
use crate::error::BuildError;
use crate::flusher::{Flusher, FlusherCore};
use crate::processor::{
    BatchInfo, BatchProcessor, DiscardHook, ErrorHook, Failure, ProcessOutcome,
};
use crate::shared::Shared;
use crate::storage::{RingStorage, Storage};
use crate::sync::{self, Arc};
use crate::weight::{Oversize, WeighFn, WeightLimit};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// A batcher and the flusher that is to run it on a thread of your own.
pub type WithFlusher<T, S = RingStorage<T>> = (Batcher<T, S>, Flusher<T, S>);

type Prepared<T, S> = (Arc<Shared<T, S>>, FlusherCore<T, S>, MetricsLabel);

/// Builds a [`Batcher`].
///
/// Setters only record; [`build`](Builder::build) validates everything once
/// and names the first bad value in a [`BuildError`].
///
/// | setting | default |
/// |---|---|
/// | `max_batch_size` | 512 |
/// | `max_delay` | 1 ms, from the oldest pending item |
/// | `lanes` | available parallelism (single-writer, leased per thread) |
/// | `shards` | available parallelism (for threads beyond the lanes) |
/// | `capacity` (per lane and per shard) | 2 × `max_batch_size` |
/// | `barrier` | [`BarrierMode::Auto`] (a process-wide barrier where available) |
/// | `backpressure` | [`Backpressure::Block`] |
/// | `wait_strategy` | [`WaitStrategy::SpinThenPark`] with a 50 µs spin |
/// | `thread_name` | `"microbatch-flusher"` |
/// | `max_batch_weight` | none (batches limited by count only) |
/// | `oversize` | [`Oversize::Reject`] (with a weight limit) |
/// | `storage` | [`RingStorage`] (slots numbered by the batcher; [`ArrayStorage`](crate::ArrayStorage) for `crossbeam_queue::ArrayQueue`) |
///
/// # Examples
///
/// ```
/// use microbatch::{Backpressure, Batcher, BatchInfo};
/// use std::time::Duration;
///
/// let batcher = Batcher::builder()
///     .max_batch_size(64)
///     .max_delay(Duration::from_millis(2))
///     .shards(4)
///     .capacity(256)
///     .backpressure(Backpressure::Reject)
///     .build(|batch: &mut Vec<String>, info: &BatchInfo| {
///         assert_eq!(batch.len(), info.len);
///     })
///     .expect("valid configuration");
/// batcher.submit("hello".to_string()).unwrap();
/// batcher.shutdown();
/// ```
pub struct Builder<T, S = RingStorage<T>> {
    settings: Settings,
    make_storage: Box<dyn Fn(usize) -> S>,
    on_error: Option<ErrorHook>,
    on_discard: Option<DiscardHook<T>>,
    /// The weigher of `max_batch_weight` (its limit is in `settings`).
    weigh: Option<WeighFn<T>>,
    _items: PhantomData<fn(T)>,
}

impl<T, S> fmt::Debug for Builder<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("Builder")
            .field("max_batch_size", &s.max_batch_size)
            .field("max_delay", &s.max_delay)
            .field("shards", &s.shards)
            .field("capacity", &s.capacity)
            .field("backpressure", &s.backpressure)
            .field("wait_strategy", &s.wait)
            .field("thread_name", &s.thread_name)
            .field("max_batch_weight", &s.weight_limit)
            .field("oversize", &s.oversize)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Default for Builder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Builder<T> {
    /// A builder with the defaults of the table above.
    pub fn new() -> Self {
        Builder {
            settings: Settings::default(),
            make_storage: Box::new(RingStorage::new),
            on_error: None,
            on_discard: None,
            weigh: None,
            _items: PhantomData,
        }
    }
}

impl<T: Send + 'static, S: Storage<T> + 'static> Builder<T, S> {
    /// The size trigger: a batch is dispatched as soon as this many items are
    /// pending, and no batch is larger. Default 512; must be at least 1.
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.settings.max_batch_size = n;
        self
    }

    /// The time trigger: a batch is dispatched once its oldest pending item
    /// has waited this long, with no further arrivals needed. Default 1 ms.
    /// `Duration::ZERO` dispatches whatever is pending as soon as the flusher
    /// sees it; `Duration::MAX` turns the time trigger off.
    ///
    /// A target, not a bound: the deadline counts from a lower bound on the
    /// oldest item's arrival (so a batch can go a few µs early), and the
    /// flusher must wake and get a core to meet it (so it can go late).
    /// Measured on an idle machine (BENCHMARKS.md, "Latency"): an idle
    /// item dispatched `max_delay` + 4.1 µs after it was submitted
    /// (median; 5.0 µs at most in 20 rounds); on a busy machine the
    /// scheduler adds its own delay.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.settings.max_delay = d;
        self
    }

    /// How many single-writer lanes. Default: the available parallelism.
    ///
    /// A thread's first submit leases a free lane and keeps it until it
    /// exits (a [`Producer`](crate::Producer) handle until it is dropped);
    /// a lane submit makes no locked instruction (see
    /// [`barrier`](Builder::barrier)). Threads that find every lane leased
    /// use the shards. `0` turns lanes off: every thread uses a shard, one
    /// CAS per submit.
    pub fn lanes(mut self, n: usize) -> Self {
        self.settings.lanes = Some(n);
        self
    }

    /// How many shared shards, for the threads beyond the lanes (one CAS per
    /// submit, any number of threads each). Default: the available
    /// parallelism; at least 1. Each thread keeps one
    /// queue; more queues than producer threads cost only memory.
    pub fn shards(mut self, n: usize) -> Self {
        self.settings.shards = Some(n);
        self
    }

    /// How lane submits are ordered against the flusher going to sleep and
    /// against `close`. Default [`BarrierMode::Auto`]: `membarrier` on Linux
    /// where the process may use it, `FlushProcessWriteBuffers` on Windows,
    /// fences elsewhere. The mode chosen is
    /// [`Metrics::asymmetric_barrier`](crate::Metrics::asymmetric_barrier).
    pub fn barrier(mut self, mode: BarrierMode) -> Self {
        self.settings.barrier = mode;
        self
    }

    /// Items each lane and each shard holds. Default 2 × `max_batch_size`;
    /// must be at least `max_batch_size`. Memory is bounded by
    /// `(lanes + shards) × capacity` items plus one batch, allocated by
    /// `build`.
    pub fn capacity(mut self, n: usize) -> Self {
        self.settings.capacity = Some(n);
        self
    }

    /// A second hard cap on every batch: its total weight by `weigher`, a
    /// function of the item that should return its *encoded* size (the
    /// bytes it takes in the datagram, request or file the processor
    /// writes, with any per-item framing such as a newline or a length
    /// prefix) — not `size_of`, which counts the in-memory struct and not
    /// the heap data or the encoding. `limit` must be at least 1.
    ///
    /// Both caps are hard: a batch never holds more than `max_batch_size`
    /// items nor weighs more than `limit` (except an oversize item sent
    /// alone, see [`oversize`](Builder::oversize)); whichever binds first
    /// closes it ([`Trigger::Weight`](crate::Trigger::Weight) when the
    /// weight did). An item that would push the batch over the limit
    /// closes it and opens the next one; items are never split, and each
    /// thread's items keep their order. Items of weight 0 are allowed
    /// (bounded by the count only). Sums saturate at `u64::MAX`.
    /// `flush` and shutdown send batches that obey both caps. The weight
    /// of each batch is [`BatchInfo::weight`]; the weight processed is
    /// [`Metrics::processed_weight`](crate::Metrics::processed_weight).
    /// For weight-only batches raise `max_batch_size` (and `capacity`).
    ///
    /// The weigher must be cheap, pure and deterministic: the flusher calls
    /// it once per item; under [`Oversize::Reject`] (the default) the
    /// submitting thread calls it too, before any room is looked for (twice
    /// on a `submit` that finds its queue full and waits). Without a weight
    /// limit the submit path does no more than check that none is set.
    ///
    /// A weigher that panics on the flusher does not stop it: the panic is
    /// caught (counted in
    /// [`Metrics::other_panics`](crate::Metrics::other_panics)), and the
    /// item is sent alone as an oversize item with weight 0. One that panics
    /// on the submitting thread unwinds into the caller; nothing was
    /// reserved, and the item is dropped by the unwinding.
    ///
    /// How promptly: the flusher sees the weight of items only as it takes
    /// them. While it is awake it dispatches a batch when the pending count
    /// reaches `min(max_batch_size, ceil(limit / w))`, `w` the recent
    /// average item weight, and its wake thresholds (when parked) are set
    /// from the same count; so a batch that is full by weight before that
    /// count is reached waits until the count is reached or `max_delay`
    /// passes, whichever comes first. A batch dispatched on that estimate
    /// can weigh less than the limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo, Trigger};
    ///
    /// // Lines packed into datagrams of at most 1400 bytes.
    /// let batcher = Batcher::builder()
    ///     .max_batch_weight(1400, |line: &String| line.len() as u64 + 1) // + '\n'
    ///     .build(|lines: &mut Vec<String>, info: &BatchInfo| {
    ///         let datagram: String = lines.drain(..).map(|l| l + "\n").collect();
    ///         assert!(datagram.len() <= 1400);
    ///         assert_eq!(datagram.len() as u64, info.weight);
    ///     })
    ///     .unwrap();
    /// for i in 0..1000 {
    ///     batcher.submit(format!("metric.{i}:1|c")).unwrap();
    /// }
    /// let too_big = "x".repeat(2000);
    /// let refused = batcher.submit(too_big.clone()).unwrap_err();
    /// assert!(refused.is_too_heavy());
    /// assert_eq!(refused.into_inner(), too_big);
    /// let m = batcher.shutdown();
    /// assert_eq!((m.processed, m.rejected_oversize), (1000, 1));
    /// // Every batch closed by weight was a datagram of up to 1400 bytes;
    /// // the rest of its batches the time trigger or the shutdown sent.
    /// assert!(m.batches() >= m.processed_weight / 1400);
    /// # let _ = Trigger::Weight;
    /// ```
    pub fn max_batch_weight(
        mut self,
        limit: u64,
        weigher: impl Fn(&T) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.settings.weight_limit = Some(limit);
        self.weigh = Some(std::sync::Arc::new(weigher));
        self
    }

    /// What happens to an item heavier than the limit of
    /// [`max_batch_weight`](Builder::max_batch_weight). Default
    /// [`Oversize::Reject`]: refused at submit with the item handed back.
    /// Without a weight limit this does nothing.
    pub fn oversize(mut self, policy: Oversize) -> Self {
        self.settings.oversize = policy;
        self
    }

    /// What `submit` does on a full lane or shard. Default [`Backpressure::Block`].
    pub fn backpressure(mut self, b: Backpressure) -> Self {
        self.settings.backpressure = b;
        self
    }

    /// How the flusher waits for work. Default spin 50 µs, then park.
    pub fn wait_strategy(mut self, w: WaitStrategy) -> Self {
        self.settings.wait = w;
        self
    }

    /// The spawned flusher thread's name, and the `batcher` label of
    /// exported metrics (feature `metrics`). Default `"microbatch-flusher"`
    /// (and the label `microbatch-<n>`, unique per batcher). Must not
    /// contain a NUL byte.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.settings.thread_name = name.into();
        self.settings.named = true;
        self
    }

    /// Called on the flusher thread for every batch whose processor returned
    /// an error or panicked, after [`on_discard`](Builder::on_discard).
    /// (Panics are also printed by the process's panic hook as usual.) A
    /// panic inside the hook is caught and counted in
    /// [`Metrics::other_panics`](crate::Metrics::other_panics).
    pub fn on_error(mut self, hook: impl FnMut(Failure, &BatchInfo) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(hook));
        self
    }

    /// Called on the flusher thread with the items a failed batch left
    /// behind: when the processor returned an error or panicked, whatever
    /// it had not taken out of the batch (in order), with the failure and
    /// the batch's info. Take the items you want to keep (into a dead-letter
    /// queue, say); whatever the hook leaves is dropped. Counted in
    /// [`Metrics::discarded`](crate::Metrics::discarded); without a hook
    /// the items are dropped and still counted. Not called when the
    /// processor left nothing. A panic inside the hook is caught and counted
    /// in [`Metrics::other_panics`](crate::Metrics::other_panics).
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo, Failure};
    /// use std::sync::{Arc, Mutex};
    ///
    /// let dead_letters = Arc::new(Mutex::new(Vec::new()));
    /// let dl = Arc::clone(&dead_letters);
    /// let batcher = Batcher::builder()
    ///     .on_discard(move |items: &mut Vec<u32>, _: &Failure, _: &BatchInfo| {
    ///         dl.lock().unwrap().extend(items.drain(..));
    ///     })
    ///     .build(|batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), String> {
    ///         if batch.contains(&13) {
    ///             return Err("the sink refused item 13".into());
    ///         }
    ///         batch.clear();
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// batcher.submit(13).unwrap();
    /// batcher.flush().unwrap();
    /// assert_eq!(*dead_letters.lock().unwrap(), [13]);
    /// let m = batcher.shutdown();
    /// assert_eq!((m.processed, m.failed, m.discarded), (0, 1, 1));
    /// ```
    pub fn on_discard(
        mut self,
        hook: impl FnMut(&mut Vec<T>, &Failure, &BatchInfo) + Send + 'static,
    ) -> Self {
        self.on_discard = Some(Box::new(hook));
        self
    }

    /// Retries a batch whose processor returned a [`Rewind`](crate::Rewind)
    /// error: after the policy's backoff, the items the processor left in
    /// the batch are presented again, in order, with nothing new mixed in,
    /// and [`BatchInfo::attempt`] counts up. A processor that takes the
    /// items it handled out of the batch before it fails gets a partial
    /// retry; one that takes nothing gets the whole batch again. Any other
    /// error, a panic, a rewind that left nothing in the batch, or the
    /// policy exhausted (attempts or deadline) ends the batch as failed:
    /// what is left goes to [`on_discard`](Builder::on_discard), then the
    /// last error to [`on_error`](Builder::on_error). A batch being retried
    /// is in flight: `flush` waits for it, `close` lets it finish (its
    /// deadline bounds that), [`shutdown_timeout`](crate::Batcher::shutdown_timeout)
    /// bounds the wait. Counted in [`Metrics::retries`](crate::Metrics::retries).
    /// Without a policy a `Rewind` is an error like any other.
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo, Retry, Rewind};
    /// use std::time::Duration;
    ///
    /// let mut down = 2; // the sink fails twice, then recovers
    /// let batcher = Batcher::builder()
    ///     .retry(Retry::attempts(5).backoff(Duration::from_millis(1), Duration::from_millis(10)))
    ///     .build(move |batch: &mut Vec<u32>, info: &BatchInfo| -> Result<(), Rewind> {
    ///         if down > 0 {
    ///             down -= 1;
    ///             return Err(Rewind::new("sink unavailable"));
    ///         }
    ///         assert_eq!(info.attempt, 3);
    ///         batch.clear();
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// batcher.submit(1).unwrap();
    /// batcher.flush().unwrap();
    /// let m = batcher.shutdown();
    /// assert_eq!((m.processed, m.retries, m.failed), (1, 2, 0));
    /// ```
    pub fn retry(mut self, policy: Retry) -> Self {
        self.settings.retry = Some(policy);
        self
    }

    /// Feature `metrics`: how often the exporter thread publishes the
    /// counters to the installed `metrics` recorder. Default 500 ms; must
    /// not be zero.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_interval(mut self, every: Duration) -> Self {
        self.settings.metrics_interval = every;
        self
    }

    /// Loom models only: how many empty polls an idle flusher makes before
    /// it sleeps until woken (default 64), so a model can reach either path.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn idle_polls(mut self, n: u32) -> Self {
        self.settings.idle_polls = n;
        self
    }

    /// A storage of your own for each lane and each shard: `make(capacity)`
    /// is called once per queue and must return a storage of exactly that
    /// capacity. (A lane's owner pushes with its own single-writer protocol
    /// whatever the storage; only the default [`RingStorage`] makes that push
    /// a plain store.)
    pub fn storage<S2, F>(self, make: F) -> Builder<T, S2>
    where
        S2: Storage<T> + 'static,
        F: Fn(usize) -> S2 + 'static,
    {
        Builder {
            settings: self.settings,
            make_storage: Box::new(make),
            on_error: self.on_error,
            on_discard: self.on_discard,
            weigh: self.weigh,
            _items: PhantomData,
        }
    }

    /// Validates the configuration, spawns the flusher thread and returns the
    /// running batcher (the Go original's `NewRunning`), with a closure as
    /// the processor: `FnMut(&mut Vec<T>, &BatchInfo)` returning `()` or
    /// `Result<(), E>`. Its parameter types are inferred; a type of your
    /// own that implements [`BatchProcessor`] goes to
    /// [`build_processor`](Builder::build_processor).
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first invalid value, or the spawn failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::Batcher;
    ///
    /// let batcher = Batcher::builder()
    ///     .build(|batch, info| {
    ///         assert_eq!(batch.len(), info.len);
    ///         batch.clear();
    ///     })
    ///     .unwrap();
    /// batcher.submit(7u32).unwrap();
    /// assert_eq!(batcher.shutdown().processed, 1);
    /// ```
    pub fn build<F, R>(self, processor: F) -> Result<Batcher<T, S>, BuildError>
    where
        F: FnMut(&mut Vec<T>, &BatchInfo) -> R + Send + 'static,
        R: ProcessOutcome,
    {
        self.build_processor(processor)
    }

    /// [`build`](Builder::build) with any [`BatchProcessor`]: a type of
    /// your own that implements the trait (the Go original's
    /// `BatchProcessor` interface).
    ///
    /// # Errors
    ///
    /// As [`build`](Builder::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{BatchInfo, BatchProcessor, Batcher, ProcessError};
    ///
    /// struct Sum(u64);
    ///
    /// impl BatchProcessor<u64> for Sum {
    ///     fn process(&mut self, batch: &mut Vec<u64>, _: &BatchInfo) -> Result<(), ProcessError> {
    ///         self.0 += batch.drain(..).sum::<u64>();
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let batcher = Batcher::builder().build_processor(Sum(0)).unwrap();
    /// batcher.submit(2).unwrap();
    /// assert_eq!(batcher.shutdown().processed, 1);
    /// ```
    pub fn build_processor<P: BatchProcessor<T>>(
        self,
        processor: P,
    ) -> Result<Batcher<T, S>, BuildError> {
        let name = self.settings.thread_name.clone();
        let (shared, mut core, label) = self.prepare(Box::new(processor))?;
        #[cfg(all(feature = "metrics", not(loom)))]
        let exporter = label.spawn(&shared)?;
        #[cfg(not(all(feature = "metrics", not(loom))))]
        let _ = label;
        let handle = sync::thread::Builder::new()
            .name(name)
            .spawn(move || {
                core.run();
                // The processor and the hooks are the user's: their drops
                // may panic, and must not end the thread by unwinding.
                core.drop_quietly();
            })
            .map_err(BuildError::Spawn)?;
        Ok(Batcher::new(
            shared,
            Some(handle),
            #[cfg(all(feature = "metrics", not(loom)))]
            Some(exporter),
        ))
    }

    /// Validates the configuration and returns the batcher with its
    /// [`Flusher`], to run on a thread of your own (the Go original's
    /// `New` + `Start(ctx)`): a pinned core, say. Items submitted before
    /// [`Flusher::run`] starts wait in the shards. The processor is a
    /// closure, as for [`build`](Builder::build).
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first invalid value.
    pub fn build_with_flusher<F, R>(self, processor: F) -> Result<WithFlusher<T, S>, BuildError>
    where
        F: FnMut(&mut Vec<T>, &BatchInfo) -> R + Send + 'static,
        R: ProcessOutcome,
    {
        self.build_processor_with_flusher(processor)
    }

    /// [`build_with_flusher`](Builder::build_with_flusher) with any
    /// [`BatchProcessor`].
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first invalid value.
    pub fn build_processor_with_flusher<P: BatchProcessor<T>>(
        self,
        processor: P,
    ) -> Result<WithFlusher<T, S>, BuildError> {
        let (shared, core, label) = self.prepare(Box::new(processor))?;
        #[cfg(all(feature = "metrics", not(loom)))]
        let exporter = label.spawn(&shared)?;
        #[cfg(not(all(feature = "metrics", not(loom))))]
        let _ = label;
        Ok((
            Batcher::new(
                shared,
                None,
                #[cfg(all(feature = "metrics", not(loom)))]
                Some(exporter),
            ),
            Flusher::new(core),
        ))
    }

    fn prepare(self, processor: Box<dyn BatchProcessor<T>>) -> Result<Prepared<T, S>, BuildError> {
        let Validated {
            lanes,
            shards,
            capacity,
            config,
        } = self.settings.validate(std::mem::size_of::<T>())?;
        let mut storages = Vec::with_capacity(lanes + shards);
        for _ in 0..lanes + shards {
            let s = (self.make_storage)(capacity);
            if s.capacity() != capacity {
                return Err(BuildError::StorageCapacity {
                    asked: capacity,
                    got: s.capacity(),
                });
            }
            storages.push(s);
        }
        let asymmetric = self.settings.barrier == BarrierMode::Auto;
        let weight = self
            .settings
            .weight_limit
            .zip(self.weigh)
            .map(|(limit, weigh)| WeightLimit {
                limit,
                weigh,
                oversize: self.settings.oversize,
            });
        let heavy = weight
            .as_ref()
            .filter(|w| w.oversize == Oversize::Reject)
            .cloned();
        let shared = Arc::new(Shared::new(storages, lanes, asymmetric, config, heavy));
        let core = FlusherCore::new(
            Arc::clone(&shared),
            processor,
            self.on_error,
            self.on_discard,
            weight,
        );
        let label = MetricsLabel {
            label: if self.settings.named {
                self.settings.thread_name.clone()
            } else {
                format!("microbatch-{}", shared.id())
            },
            thread: format!("{}-metrics", self.settings.thread_name),
            every: self.settings.metrics_interval,
        };
        Ok((shared, core, label))
    }
}

/// What the exporter thread (feature `metrics`) is started with.
#[cfg_attr(not(all(feature = "metrics", not(loom))), allow(dead_code))]
struct MetricsLabel {
    label: String,
    thread: String,
    every: Duration,
}

#[cfg(all(feature = "metrics", not(loom)))]
impl MetricsLabel {
    fn spawn<T: Send + 'static, S: Storage<T> + 'static>(
        self,
        shared: &Arc<Shared<T, S>>,
    ) -> Result<crate::export::Exporter, BuildError> {
        crate::export::Exporter::spawn(Arc::clone(shared), self.label, self.every, self.thread)
            .map_err(BuildError::Spawn)
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// A [`Builder`] with the defaults.
    pub fn builder() -> Builder<T> {
        Builder::new()
    }
}
