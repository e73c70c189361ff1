//! The user's side: the batch processor, what it is told, how it fails.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// An error a processor reports for a batch.
pub type ProcessError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a batch was dispatched.
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, Trigger};
///
/// let batcher = Batcher::builder()
///     .max_batch_size(2)
///     .build(|batch: &mut Vec<u8>, info: &BatchInfo| {
///         match info.trigger {
///             Trigger::Size => assert_eq!(batch.len(), 2),
///             // Time, Weight, Flush, Shutdown, and any trigger a later
///             // version adds.
///             _ => assert!(batch.len() <= 2),
///         }
///     })
///     .unwrap();
/// batcher.submit(1).unwrap();
/// batcher.submit(2).unwrap();
/// batcher.shutdown();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trigger {
    /// `max_batch_size` items were pending.
    Size,
    /// The oldest pending item had waited `max_delay`.
    Time,
    /// [`Batcher::flush`](crate::Batcher::flush) asked for it.
    Flush,
    /// The batcher was closing and drained what it held.
    Shutdown,
    /// The weight limit ([`Builder::max_batch_weight`](crate::Builder::max_batch_weight))
    /// closed the batch before `max_batch_size` did: the next item would
    /// not have fitted, or the batch reached the limit, or it is an
    /// oversize item sent alone. Such a batch dispatched for the time
    /// trigger is counted here too (as a full batch by count is `Size`); a
    /// flush or shutdown batch keeps its own trigger even when a cap cut
    /// it. Also the trigger of a batch the flusher dispatched because the
    /// pending items' count reached the limit divided by their recent
    /// average weight (an estimate: such a batch can weigh less than the
    /// limit).
    Weight,
}

/// What the processor is told with each batch.
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo};
///
/// let batcher = Batcher::builder()
///     .build(|batch: &mut Vec<u32>, info: &BatchInfo| {
///         assert_eq!(info.len, batch.len());
///         if info.queue_depth > 10_000 {
///             eprintln!("batch {} drained with {} still queued", info.seq, info.queue_depth);
///         }
///     })
///     .unwrap();
/// batcher.submit(7).unwrap();
/// batcher.shutdown();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchInfo {
    /// Why the batch was dispatched.
    pub trigger: Trigger,
    /// How many items the batch holds.
    pub len: usize,
    /// Items still queued behind this batch (counted when it was drained;
    /// includes submits in flight at that moment).
    pub queue_depth: u64,
    /// An upper bound on how long the batch's oldest item had waited when
    /// the batch was drained, measured from a lower bound on its arrival:
    /// when the flusher last saw nothing pending or, after it slept until
    /// the first item woke it, when the waking producer found it asleep (a
    /// producer preempted between its push and that check can make this
    /// late by the preemption). The time trigger uses the same bound.
    pub oldest_age: Duration,
    /// The batch's sequence number, from 0 (a retried batch keeps its
    /// number).
    pub seq: u64,
    /// Which attempt at this batch this is, from 1; above 1 only with a
    /// [`retry`](crate::Builder::retry) policy, when the processor asked
    /// for a [`Rewind`]. `len` is then what the last attempt left.
    pub attempt: u32,
    /// The batch's total weight by the configured weigher (saturating at
    /// `u64::MAX`); 0 without a weight limit. On a retry (`attempt` above
    /// 1), the weight of what the last attempt left, which is what this
    /// attempt holds.
    pub weight: u64,
    /// The batch is one item heavier than the weight limit, sent alone
    /// ([`Oversize::Alone`](crate::Oversize::Alone)), or one whose weigher
    /// panicked on the flusher.
    pub oversize: bool,
}

/// Processes batches on the flusher thread.
///
/// The Go original's `BatchProcessor.Process(batch) error`. `batch` arrives in
/// per-producer-thread order (no order is promised across threads). It is the
/// batcher's reusable buffer: the processor may read it, or drain it to take
/// ownership of the items; whatever it leaves is dropped after the call, and
/// the buffer is reused for the next batch, so the steady state allocates
/// nothing (unless the processor takes the `Vec` itself).
///
/// Returning `Err` counts a processor error; a panic is caught and counted
/// the same way. Either way the batch counts as failed (its items in
/// [`Metrics::failed`](crate::Metrics::failed), not in `processed`): the
/// items the processor left in `batch` are handed to the
/// [`on_discard`](crate::Builder::on_discard) hook (counted as
/// `discarded`), then the failure to the
/// [`on_error`](crate::Builder::on_error) hook, and the flusher goes on with
/// the next batch. With a [`retry`](crate::Builder::retry) policy, a
/// [`Rewind`] error asks for what the processor left in the batch again
/// instead.
///
/// Nothing the processor makes can take the flusher down: its panics, its
/// errors, panic payloads and items are dropped where a panic is caught
/// (counted in `other_panics`), each item on its own.
///
/// Closures `FnMut(&mut Vec<T>, &BatchInfo)` returning `()` or
/// `Result<(), E>` (with `E` convertible into [`ProcessError`]) implement the
/// trait.
///
/// # Examples
///
/// ```
/// use microbatch::{BatchInfo, BatchProcessor, ProcessError};
///
/// struct Sum(u64);
///
/// impl BatchProcessor<u64> for Sum {
///     fn process(&mut self, batch: &mut Vec<u64>, _info: &BatchInfo) -> Result<(), ProcessError> {
///         self.0 += batch.iter().sum::<u64>();
///         Ok(())
///     }
/// }
/// ```
pub trait BatchProcessor<T>: Send + 'static {
    /// Processes one non-empty batch.
    ///
    /// # Errors
    ///
    /// Whatever the processor reports; it is counted and handed to the
    /// `on_error` hook.
    fn process(&mut self, batch: &mut Vec<T>, info: &BatchInfo) -> Result<(), ProcessError>;
}

/// What a processor closure may return: `()` or `Result<(), E>`.
pub trait ProcessOutcome {
    /// Converts into the processor's result.
    fn into_result(self) -> Result<(), ProcessError>;
}

impl ProcessOutcome for () {
    fn into_result(self) -> Result<(), ProcessError> {
        Ok(())
    }
}

impl<E: Into<ProcessError>> ProcessOutcome for Result<(), E> {
    fn into_result(self) -> Result<(), ProcessError> {
        self.map_err(Into::into)
    }
}

impl<T, F, R> BatchProcessor<T> for F
where
    F: FnMut(&mut Vec<T>, &BatchInfo) -> R + Send + 'static,
    R: ProcessOutcome,
{
    fn process(&mut self, batch: &mut Vec<T>, info: &BatchInfo) -> Result<(), ProcessError> {
        self(batch, info).into_result()
    }
}

/// The error a processor returns to ask for its batch again: with a
/// [`retry`](crate::Builder::retry) policy, the items it left in the batch
/// are presented again after the backoff (see there). Found by downcasting
/// the returned [`ProcessError`], so only a `Rewind` returned as it is (not
/// wrapped in an error of your own) asks for a retry.
///
/// # Examples
///
/// ```
/// use microbatch::{BatchInfo, ProcessError, Rewind};
///
/// fn write_all(batch: &mut Vec<String>, _: &BatchInfo) -> Result<(), ProcessError> {
///     while let Some(line) = batch.first() {
///         if line.is_empty() {
///             // Transient: what is still in `batch` comes again.
///             return Err(Rewind::new("connection reset").into());
///         }
///         batch.remove(0); // written: not presented again
///     }
///     Ok(())
/// }
/// let batcher = microbatch::Batcher::builder()
///     .retry(microbatch::Retry::attempts(3))
///     .build_processor(write_all)
///     .unwrap();
/// batcher.submit("a".to_owned()).unwrap();
/// assert_eq!(batcher.shutdown().processed, 1);
/// ```
#[derive(Debug)]
pub struct Rewind(ProcessError);

impl Rewind {
    /// A rewind caused by `cause` (any error, or a message).
    pub fn new(cause: impl Into<ProcessError>) -> Self {
        Rewind(cause.into())
    }

    /// The cause.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Rewind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry asked for: {}", self.0)
    }
}

impl std::error::Error for Rewind {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Did the processor ask for a retry?
pub(crate) fn is_rewind(e: &ProcessError) -> bool {
    e.downcast_ref::<Rewind>().is_some()
}

/// A failed batch, as handed to the [`on_error`](crate::Builder::on_error) hook.
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, Failure};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// let failed = Arc::new(AtomicU64::new(0));
/// let f = Arc::clone(&failed);
/// let batcher = Batcher::builder()
///     .on_error(move |failure: Failure, info: &BatchInfo| {
///         assert!(matches!(failure, Failure::Error(_)));
///         f.fetch_add(info.len as u64, Ordering::Relaxed);
///     })
///     .build(|_: &mut Vec<u8>, _: &BatchInfo| -> Result<(), String> { Err("disk full".into()) })
///     .unwrap();
/// batcher.submit(1).unwrap();
/// batcher.flush().unwrap();
/// assert_eq!(failed.load(Ordering::Relaxed), 1);
/// assert_eq!(batcher.shutdown().processor_errors, 1);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The processor returned an error.
    Error(ProcessError),
    /// The processor panicked; the panic message, when it was a string.
    Panic(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(e) => write!(f, "processor failed: {e}"),
            Failure::Panic(m) => write!(f, "processor panicked: {m}"),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Error(e) => Some(&**e),
            Failure::Panic(_) => None,
        }
    }
}

/// Drops a value that came from user code where its drop may panic: the
/// panic is caught and `true` returned. A panic payload that itself panics
/// on drop is leaked rather than allowed to unwind (or abort) the caller.
pub(crate) fn drop_quietly<V>(v: V) -> bool {
    let Err(mut payload) = catch_unwind(AssertUnwindSafe(move || drop(v))) else {
        return false;
    };
    // The payload's own drop may panic, and that panic's payload too: a
    // few rounds, then leak what is left rather than unwind.
    for _ in 0..3 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return true,
            Err(next) => payload = next,
        }
    }
    std::mem::forget(payload);
    true
}

/// Calls user code (a hook, a log or metrics backend) where a panic is
/// caught: `None` if it panicked (its payload dropped quietly).
pub(crate) fn call_quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            drop_quietly(payload);
            None
        }
    }
}

/// Empties a batch buffer, dropping each item where a panic is caught (a
/// second panicking drop while the first unwinds would abort the process);
/// returns how many drops panicked.
pub(crate) fn clear_quietly<T>(buf: &mut Vec<T>) -> u64 {
    if !std::mem::needs_drop::<T>() {
        buf.clear();
        return 0;
    }
    let mut panics = 0;
    for item in buf.drain(..) {
        panics += u64::from(drop_quietly(item));
    }
    panics
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The error hook's type.
pub(crate) type ErrorHook = Box<dyn FnMut(Failure, &BatchInfo) + Send + 'static>;

/// The discard hook's type.
pub(crate) type DiscardHook<T> = Box<dyn FnMut(&mut Vec<T>, &Failure, &BatchInfo) + Send + 'static>;
