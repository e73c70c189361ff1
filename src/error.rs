//! Every error the crate returns. Errors that refuse an item hand it back.

use std::error::Error;
use std::fmt;

macro_rules! item_error {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $msg:literal, $is:ident; )+ }
    ) => {
        $(#[$meta])*
        #[derive(PartialEq, Eq, Clone, Copy)]
        #[non_exhaustive]
        pub enum $name<T> {
            $( $(#[$vmeta])* $variant(T), )+
        }

        impl<T> $name<T> {
            /// Returns the refused item.
            pub fn into_inner(self) -> T {
                match self { $( $name::$variant(item) => item, )+ }
            }
            /// The same refusal with the item mapped (say, a job back to its
            /// input).
            pub fn map<U>(self, f: impl FnOnce(T) -> U) -> $name<U> {
                match self { $( $name::$variant(item) => $name::$variant(f(item)), )+ }
            }
            $(
                #[doc = concat!("Is this the `", stringify!($variant), "` case?")]
                pub fn $is(&self) -> bool {
                    matches!(self, $name::$variant(_))
                }
            )+
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $( $name::$variant(_) => f.write_str(concat!(stringify!($name), "::", stringify!($variant), "(..)")), )+ }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $( $name::$variant(_) => f.write_str($msg), )+ }
            }
        }

        impl<T> Error for $name<T> {}
    };
}

item_error! {
    /// Why [`Batcher::try_submit`](crate::Batcher::try_submit) refused an item.
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo, TrySubmitError};
    ///
    /// let batcher = Batcher::builder()
    ///     .build(|batch: &mut Vec<String>, _: &BatchInfo| batch.clear())
    ///     .unwrap();
    /// batcher.close();
    /// match batcher.try_submit("order-1".to_string()) {
    ///     Err(TrySubmitError::Closed(item)) => assert_eq!(item, "order-1"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    TrySubmitError {
        /// The thread's lane or shard was full.
        Full => "submitting on a full shard", is_full;
        /// The batcher was closed.
        Closed => "submitting on a closed batcher", is_closed;
        /// The item is heavier than the weight limit and the policy is
        /// [`Oversize::Reject`](crate::Oversize::Reject).
        TooHeavy => "submitting an item heavier than the batch weight limit", is_too_heavy;
    }
}

item_error! {
    /// Why [`Batcher::submit_timeout`](crate::Batcher::submit_timeout) refused an item.
    SubmitTimeoutError {
        /// No room appeared before the timeout (or the caller is the batcher's
        /// own processor, which must not wait for itself).
        Timeout => "timed out waiting for room", is_timeout;
        /// The batcher was closed.
        Closed => "submitting on a closed batcher", is_closed;
        /// The item is heavier than the weight limit and the policy is
        /// [`Oversize::Reject`](crate::Oversize::Reject).
        TooHeavy => "submitting an item heavier than the batch weight limit", is_too_heavy;
    }
}

item_error! {
    /// Why [`Batcher::submit`](crate::Batcher::submit) refused an item under the
    /// configured [`Backpressure`](crate::Backpressure) policy.
    SubmitError {
        /// The queue was full and the policy is `Reject` (or the caller is the
        /// batcher's own processor, which must not wait for itself).
        Full => "submitting on a full shard", is_full;
        /// The policy is `BlockTimeout` and no room appeared in time.
        Timeout => "timed out waiting for room", is_timeout;
        /// The batcher was closed.
        Closed => "submitting on a closed batcher", is_closed;
        /// The item is heavier than the weight limit and the policy is
        /// [`Oversize::Reject`](crate::Oversize::Reject) (checked before
        /// any room is looked for).
        TooHeavy => "submitting an item heavier than the batch weight limit", is_too_heavy;
    }
}

impl<T> From<TrySubmitError<T>> for SubmitError<T> {
    fn from(e: TrySubmitError<T>) -> Self {
        match e {
            TrySubmitError::Full(t) => SubmitError::Full(t),
            TrySubmitError::Closed(t) => SubmitError::Closed(t),
            TrySubmitError::TooHeavy(t) => SubmitError::TooHeavy(t),
        }
    }
}

impl<T> From<SubmitTimeoutError<T>> for SubmitError<T> {
    fn from(e: SubmitTimeoutError<T>) -> Self {
        match e {
            SubmitTimeoutError::Timeout(t) => SubmitError::Timeout(t),
            SubmitTimeoutError::Closed(t) => SubmitError::Closed(t),
            SubmitTimeoutError::TooHeavy(t) => SubmitError::TooHeavy(t),
        }
    }
}

/// Why a many-item submit stopped early. The items not accepted are left in
/// the caller's `Vec`, in order.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum SubmitManyError {
    /// The queue was full (policy `Reject`, `try_submit_many`, or a call from
    /// the batcher's own processor).
    Full,
    /// No room appeared before the timeout.
    Timeout,
    /// The batcher was closed.
    Closed,
    /// The first item left in the caller's `Vec` is heavier than the weight
    /// limit ([`Oversize::Reject`](crate::Oversize::Reject)); the items
    /// before it were accepted.
    TooHeavy,
}

impl fmt::Display for SubmitManyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubmitManyError::Full => "submitting on a full shard",
            SubmitManyError::Timeout => "timed out waiting for room",
            SubmitManyError::Closed => "submitting on a closed batcher",
            SubmitManyError::TooHeavy => "submitting an item heavier than the batch weight limit",
        })
    }
}

impl Error for SubmitManyError {}

/// Why [`Batcher::flush`](crate::Batcher::flush) did not complete.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum FlushError {
    /// The timeout of `flush_timeout` passed first. The flush request stays
    /// in force: the flusher still processes those items promptly.
    Timeout,
    /// The batcher was already closed when `flush` was called (its shutdown
    /// drains everything anyway), or its flusher has stopped.
    Closed,
    /// `flush` was called from the batcher's own processor (on the flusher
    /// thread), which would wait for itself forever.
    Reentrant,
}

impl fmt::Display for FlushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlushError::Timeout => "timed out waiting for the flush",
            FlushError::Closed => "flushing a closed batcher",
            FlushError::Reentrant => "flushing from the batcher's own processor would deadlock",
        })
    }
}

impl Error for FlushError {}

/// An invalid configuration, named by [`Builder::build`](crate::Builder::build).
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_batch_size` was 0.
    ZeroBatchSize,
    /// `shards` was 0.
    ZeroShards,
    /// `capacity` was 0.
    ZeroCapacity,
    /// A shard could never hold one full batch, so the size trigger could
    /// never fire for a single producer.
    CapacityBelowBatchSize {
        /// The per-shard capacity asked for.
        capacity: usize,
        /// The batch size asked for.
        max_batch_size: usize,
    },
    /// More shards than [`MAX_SHARDS`](crate::MAX_SHARDS).
    TooManyShards {
        /// The queues asked for: lanes plus shards.
        shards: usize,
    },
    /// A per-shard capacity above [`MAX_CAPACITY`](crate::MAX_CAPACITY).
    CapacityTooLarge {
        /// The per-shard capacity asked for.
        capacity: usize,
    },
    /// The queues would need more than [`MAX_QUEUE_BYTES`](crate::MAX_QUEUE_BYTES).
    MemoryOverflow {
        /// Queues asked for: lanes plus shards.
        shards: usize,
        /// Per-shard capacity asked for.
        capacity: usize,
        /// Size of one item in bytes.
        item_size: usize,
    },
    /// A storage factory returned a storage whose capacity is not the one
    /// asked for.
    StorageCapacity {
        /// The capacity asked for.
        asked: usize,
        /// The capacity the storage reports.
        got: usize,
    },
    /// The thread name holds a NUL byte (a thread cannot be given it).
    ThreadName {
        /// The name asked for.
        name: String,
    },
    /// The limit of `max_batch_weight` was 0 (no item could be sent).
    ZeroWeightLimit,
    /// `metrics_interval` was zero (feature `metrics`).
    ZeroMetricsInterval,
    /// A [`Retry`](crate::Retry) policy allowed zero attempts.
    ZeroAttempts,
    /// The flusher thread (or, with feature `metrics`, the exporter
    /// thread) could not be spawned.
    Spawn(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroBatchSize => f.write_str("max_batch_size must be at least 1"),
            BuildError::ZeroShards => f.write_str("shards must be at least 1"),
            BuildError::ZeroCapacity => f.write_str("capacity must be at least 1"),
            BuildError::CapacityBelowBatchSize { capacity, max_batch_size } => write!(
                f,
                "capacity {capacity} is below max_batch_size {max_batch_size}: a shard could never hold a full batch"
            ),
            BuildError::TooManyShards { shards } => {
                write!(f, "{shards} queues (lanes + shards) is above the maximum {}", crate::MAX_SHARDS)
            }
            BuildError::CapacityTooLarge { capacity } => {
                write!(f, "capacity {capacity} is above the maximum {}", crate::MAX_CAPACITY)
            }
            BuildError::MemoryOverflow { shards, capacity, item_size } => write!(
                f,
                "{shards} queues (lanes + shards) x capacity {capacity} x {item_size}-byte items is more than {} bytes",
                crate::MAX_QUEUE_BYTES
            ),
            BuildError::StorageCapacity { asked, got } => {
                write!(f, "storage factory asked for capacity {asked} returned capacity {got}")
            }
            BuildError::ThreadName { name } => {
                write!(f, "thread name {name:?} contains a NUL byte")
            }
            BuildError::ZeroWeightLimit => f.write_str("max_batch_weight's limit must be at least 1"),
            BuildError::ZeroMetricsInterval => f.write_str("metrics_interval must not be zero"),
            BuildError::ZeroAttempts => f.write_str("a retry policy must allow at least 1 attempt"),
            BuildError::Spawn(e) => write!(f, "spawning a batcher thread failed: {e}"),
        }
    }
}

impl Error for BuildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BuildError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Batcher::shutdown_timeout`](crate::Batcher::shutdown_timeout)
/// returned before the flusher finished. The batcher is closed either way:
/// the flusher goes on draining in the background, and whoever drops the
/// last handle still waits for it.
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, ShutdownError};
/// use std::time::Duration;
///
/// let batcher = Batcher::builder()
///     .build(|batch: &mut Vec<u32>, _: &BatchInfo| {
///         std::thread::sleep(Duration::from_millis(200)); // a stuck sink
///         batch.clear();
///     })
///     .unwrap();
/// batcher.submit(1).unwrap();
/// # while batcher.metrics().in_flight == 0 { std::thread::yield_now(); }
/// match batcher.shutdown_timeout(Duration::from_millis(10)) {
///     Err(ShutdownError::Timeout(m)) => assert_eq!(m.in_flight, 1),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The flusher had not finished when the timeout passed: the counters
    /// then (`in_flight` and `processor_busy_for` show a stuck processor).
    Timeout(Box<crate::Metrics>),
    /// Called from the batcher's own processor, which cannot wait for
    /// itself; the batcher is closed and drains after the current batch.
    Reentrant(Box<crate::Metrics>),
}

impl ShutdownError {
    /// The counters when the call returned.
    pub fn metrics(&self) -> &crate::Metrics {
        match self {
            ShutdownError::Timeout(m) | ShutdownError::Reentrant(m) => m,
        }
    }
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownError::Timeout(m) => write!(
                f,
                "the flusher did not finish in time ({} items in the processor for {:?}, {} queued)",
                m.in_flight, m.processor_busy_for, m.queue_depth
            ),
            ShutdownError::Reentrant(_) => {
                f.write_str("shutdown waited for from the batcher's own processor")
            }
        }
    }
}

impl Error for ShutdownError {}

/// Why an item was refused, before it is wrapped in a public error: the
/// one mapping from the engine's refusals to each public error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Full,
    Timeout,
    Closed,
    /// Heavier than the weight limit, under `Oversize::Reject`.
    TooHeavy,
}

impl Refusal {
    pub(crate) fn submit<T>(self, item: T) -> SubmitError<T> {
        match self {
            Refusal::Full => SubmitError::Full(item),
            Refusal::Timeout => SubmitError::Timeout(item),
            Refusal::Closed => SubmitError::Closed(item),
            Refusal::TooHeavy => SubmitError::TooHeavy(item),
        }
    }

    /// A `try_submit` never waits, so it never times out.
    pub(crate) fn try_submit<T>(self, item: T) -> TrySubmitError<T> {
        match self {
            Refusal::Closed => TrySubmitError::Closed(item),
            Refusal::TooHeavy => TrySubmitError::TooHeavy(item),
            Refusal::Full | Refusal::Timeout => TrySubmitError::Full(item),
        }
    }

    /// A `submit_timeout` that found no room reports a timeout, even when
    /// it could not wait at all (from the batcher's own processor).
    pub(crate) fn submit_timeout<T>(self, item: T) -> SubmitTimeoutError<T> {
        match self {
            Refusal::Closed => SubmitTimeoutError::Closed(item),
            Refusal::TooHeavy => SubmitTimeoutError::TooHeavy(item),
            Refusal::Full | Refusal::Timeout => SubmitTimeoutError::Timeout(item),
        }
    }

    pub(crate) fn submit_many(self) -> SubmitManyError {
        match self {
            Refusal::Full => SubmitManyError::Full,
            Refusal::Timeout => SubmitManyError::Timeout,
            Refusal::Closed => SubmitManyError::Closed,
            Refusal::TooHeavy => SubmitManyError::TooHeavy,
        }
    }
}
