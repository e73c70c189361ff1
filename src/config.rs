//! Configuration: the public policy enums, the limits, and the validation
//! that turns what a [`Builder`](crate::Builder) was asked into the
//! [`Config`] both sides of the batcher read.

use crate::error::BuildError;
use crate::sync;
use crate::time::duration_to_nanos;
use crate::weight::Oversize;
use std::time::Duration;

/// The most queues (lanes and shards together) a batcher may have.
pub const MAX_SHARDS: usize = 1024;
/// The largest capacity of one lane or shard (16 Mi items).
pub const MAX_CAPACITY: usize = 1 << 24;
/// The most memory the queues of one batcher may take (1 TiB): more than
/// that is a configuration mistake, refused by `build` rather than left to
/// abort the process in the allocator.
pub const MAX_QUEUE_BYTES: usize = 1 << 40;

/// What `submit` does when the thread's lane or shard is full.
///
/// # Examples
///
/// ```
/// use microbatch::{Backpressure, Batcher, BatchInfo};
/// use std::time::Duration;
///
/// let batcher = Batcher::builder()
///     .backpressure(Backpressure::BlockTimeout(Duration::from_millis(5)))
///     .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// match batcher.submit(42) {
///     Ok(()) => {}
///     Err(e) if e.is_timeout() => eprintln!("overloaded, dropping {}", e.into_inner()),
///     Err(e) => panic!("{e}"),
/// }
/// batcher.shutdown();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backpressure {
    /// Wait until there is room (spin briefly, then park). The default.
    #[default]
    Block,
    /// Wait at most this long, then hand the item back as `Timeout`.
    BlockTimeout(Duration),
    /// Hand the item back at once as `Full`.
    Reject,
}

/// How the flusher waits for work.
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, WaitStrategy};
/// use std::time::Duration;
///
/// // Latency first: dispatch at once, and keep a core polling.
/// let batcher = Batcher::builder()
///     .max_delay(Duration::ZERO)
///     .wait_strategy(WaitStrategy::BusySpin)
///     .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// batcher.submit(1).unwrap();
/// batcher.shutdown();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Never sleep: poll continuously, never giving the core away. Lowest
    /// latency when the flusher has a core of its own; on a machine where it
    /// shares cores with busy threads, the scheduler preempts it for whole
    /// time slices (milliseconds).
    BusySpin,
    /// Poll for `spin`, yielding the core between polls (so producers
    /// sharing the core run at once), then park until a producer wakes it
    /// or a deadline passes. The default, with a 50 µs spin.
    SpinThenPark {
        /// How long to poll before parking.
        spin: Duration,
    },
    /// Park as soon as there is nothing to do.
    Park,
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::SpinThenPark {
            spin: Duration::from_micros(50),
        }
    }
}

/// How lane producers are ordered against a parking flusher and `close`
/// (see [`Builder::barrier`](crate::Builder::barrier)).
///
/// # Examples
///
/// ```
/// use microbatch::{BarrierMode, Batcher, BatchInfo};
///
/// // A sandbox that kills the process on an unknown syscall: never probe.
/// let batcher = Batcher::builder()
///     .barrier(BarrierMode::Fence)
///     .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// batcher.submit(1).unwrap();
/// assert!(!batcher.metrics().asymmetric_barrier);
/// batcher.shutdown();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BarrierMode {
    /// A lane submit passes a compiler fence only; the flusher, before it
    /// parks, and `close` run a process-wide barrier
    /// (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` on Linux, registered
    /// once per process at the first `build()`; `FlushProcessWriteBuffers`
    /// on Windows). Where that is not available (other systems, old
    /// kernels, sandboxes that refuse membarrier) or
    /// `MICROBATCH_BARRIER=fence` is set in the environment: [`Fence`].
    /// The default.
    ///
    /// [`Fence`]: BarrierMode::Fence
    #[default]
    Auto,
    /// A `SeqCst` fence on every lane submit (one locked instruction, no
    /// CAS) and on the other side; no system call is ever made.
    Fence,
}

/// How a batch whose processor asked for a retry (returned a [`Rewind`]
/// error) is tried again (see [`Builder::retry`](crate::Builder::retry)).
///
/// A batch is presented at most `attempts` times in all. Before attempt
/// `k + 1` the flusher waits `initial × 2^(k-1)`, capped at `max`; it gives
/// up instead of retrying when that attempt would start more than
/// `deadline` after the first one began. While it waits it takes no new
/// items: the retried items come again in the same order with nothing
/// mixed in.
///
/// [`Rewind`]: crate::Rewind
///
/// # Examples
///
/// ```
/// use microbatch::Retry;
/// use std::time::Duration;
///
/// // Five attempts at most, 1 ms, 2 ms, 4 ms, 8 ms apart, within 50 ms.
/// let policy = Retry::attempts(5)
///     .backoff(Duration::from_millis(1), Duration::from_millis(100))
///     .deadline(Duration::from_millis(50));
/// assert_eq!(policy.delay_before(2), Duration::from_millis(1));
/// assert_eq!(policy.delay_before(5), Duration::from_millis(8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub(crate) attempts: u32,
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) deadline: Option<Duration>,
}

impl Retry {
    /// At most `n` attempts per batch, the first one included (`1`: never
    /// retry; `0` is refused by `build` as
    /// [`BuildError::ZeroAttempts`]). Backoff 10 ms doubling up to 1 s, no
    /// deadline: change them with [`backoff`](Retry::backoff) and
    /// [`deadline`](Retry::deadline).
    pub fn attempts(n: u32) -> Self {
        Retry {
            attempts: n,
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
            deadline: None,
        }
    }

    /// Waits `initial` before the second attempt, doubling each time, never
    /// more than `max` (a `max` below `initial` caps every wait at `max`).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max = max;
        self
    }

    /// Gives up on a batch rather than start an attempt more than `d` after
    /// its first attempt began. This bounds how long a failing sink can hold
    /// a `flush` or a shutdown.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// How long the flusher waits before attempt `attempt` (counted from 1;
    /// zero for the first).
    pub fn delay_before(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let doublings = attempt - 2;
        let d = if doublings >= 32 {
            self.max
        } else {
            self.initial.saturating_mul(1 << doublings)
        };
        d.min(self.max)
    }
}

/// Validated configuration, shared by the producers and the flusher.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_batch_size: usize,
    pub(crate) max_delay_ns: u64,
    pub(crate) capacity: u64,
    /// A blocked producer resumes once its shard has this much room
    /// (hysteresis: not at the first free slot).
    pub(crate) resume_room: u64,
    pub(crate) backpressure: Backpressure,
    pub(crate) wait: WaitStrategy,
    /// Empty polls before an idle flusher sleeps until the next item wakes
    /// it (see `FlusherCore::step`).
    pub(crate) idle_polls: u32,
    /// What a processor asking for a rewind gets (`None`: no retry).
    pub(crate) retry: Option<Retry>,
}

/// Empty polls (one per `max_delay`) before an idle flusher sleeps until the
/// next item wakes it.
pub(crate) const IDLE_POLLS: u32 = 64;

/// What a [`Builder`](crate::Builder) was asked, before validation.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_batch_size: usize,
    pub(crate) max_delay: Duration,
    pub(crate) shards: Option<usize>,
    pub(crate) lanes: Option<usize>,
    pub(crate) barrier: BarrierMode,
    pub(crate) capacity: Option<usize>,
    pub(crate) backpressure: Backpressure,
    pub(crate) wait: WaitStrategy,
    pub(crate) thread_name: String,
    /// Was `thread_name` set (then it is also the metrics label)?
    pub(crate) named: bool,
    #[cfg_attr(not(all(feature = "metrics", not(loom))), allow(dead_code))]
    pub(crate) metrics_interval: Duration,
    pub(crate) idle_polls: u32,
    pub(crate) retry: Option<Retry>,
    /// The limit of `max_batch_weight`, if set (its weigher is kept by the
    /// builder: it is generic over the item).
    pub(crate) weight_limit: Option<u64>,
    pub(crate) oversize: Oversize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_batch_size: 512,
            max_delay: Duration::from_millis(1),
            shards: None,
            lanes: None,
            barrier: BarrierMode::Auto,
            capacity: None,
            backpressure: Backpressure::Block,
            wait: WaitStrategy::default(),
            thread_name: "microbatch-flusher".to_owned(),
            named: false,
            metrics_interval: Duration::from_millis(500),
            idle_polls: IDLE_POLLS,
            retry: None,
            weight_limit: None,
            oversize: Oversize::Reject,
        }
    }
}

/// A validated configuration: the lane and shard counts, the per-queue
/// capacity, and what both sides read.
pub(crate) struct Validated {
    pub(crate) lanes: usize,
    pub(crate) shards: usize,
    pub(crate) capacity: usize,
    pub(crate) config: Config,
}

impl Settings {
    /// Checks every value for items of `item_size` bytes; names the first
    /// bad one.
    pub(crate) fn validate(&self, item_size: usize) -> Result<Validated, BuildError> {
        let b = self.max_batch_size;
        if b == 0 {
            return Err(BuildError::ZeroBatchSize);
        }
        if self.weight_limit == Some(0) {
            return Err(BuildError::ZeroWeightLimit);
        }
        if self.thread_name.contains('\0') {
            return Err(BuildError::ThreadName {
                name: self.thread_name.clone(),
            });
        }
        #[cfg(all(feature = "metrics", not(loom)))]
        if self.metrics_interval.is_zero() {
            return Err(BuildError::ZeroMetricsInterval);
        }
        if self.retry.is_some_and(|r| r.attempts == 0) {
            return Err(BuildError::ZeroAttempts);
        }
        let lanes = self.lanes.unwrap_or_else(sync::available_parallelism);
        // The shards take the threads that find every lane leased: as many
        // as without lanes, so that a crowd of threads is spread as before
        // (measured: 8 producers on one shard beside 2 lanes ran 1.8x
        // slower per item than on 2 shards).
        let shards = self.shards.unwrap_or_else(sync::available_parallelism);
        if shards == 0 {
            return Err(BuildError::ZeroShards);
        }
        if lanes.saturating_add(shards) > MAX_SHARDS {
            return Err(BuildError::TooManyShards {
                shards: lanes.saturating_add(shards),
            });
        }
        let capacity = match self.capacity {
            Some(0) => return Err(BuildError::ZeroCapacity),
            Some(c) => c,
            None => b.saturating_mul(2),
        };
        if capacity > MAX_CAPACITY {
            return Err(BuildError::CapacityTooLarge { capacity });
        }
        if capacity < b {
            return Err(BuildError::CapacityBelowBatchSize {
                capacity,
                max_batch_size: b,
            });
        }
        let item_size = item_size.max(1);
        // Each slot of an ArrayQueue also holds a usize stamp.
        let slot = item_size + std::mem::size_of::<usize>();
        let total = (lanes + shards)
            .checked_mul(capacity)
            .and_then(|n| n.checked_mul(slot))
            .and_then(|n| n.checked_add(b.checked_mul(item_size)?));
        if total.is_none_or(|t| t > MAX_QUEUE_BYTES) {
            return Err(BuildError::MemoryOverflow {
                shards: lanes + shards,
                capacity,
                item_size,
            });
        }
        let cap = capacity as u64;
        let resume_room = (cap / 2).min(cap - b as u64 + 1).max(1);
        let cfg = Config {
            max_batch_size: b,
            max_delay_ns: duration_to_nanos(self.max_delay),
            capacity: cap,
            resume_room,
            backpressure: self.backpressure,
            wait: self.wait,
            idle_polls: self.idle_polls,
            retry: self.retry,
        };
        Ok(Validated {
            lanes,
            shards,
            capacity,
            config: cfg,
        })
    }
}
