//! The public handles: [`Batcher`] (submit, flush, close, metrics,
//! shutdown) and [`Closer`]. Each method is a thin policy over the
//! protocols in `shared` and the producer policy in `submit`.

use crate::error::{
    FlushError, Refusal, ShutdownError, SubmitError, SubmitManyError, SubmitTimeoutError,
    TrySubmitError,
};
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::storage::{RingStorage, Storage};
use crate::submit::Wait;
use crate::sync::{thread, Arc};
use std::fmt;
use std::time::Duration;

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

impl<T, S: Storage<T>> fmt::Debug for Batcher<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("queues", &self.shared.shards().len())
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

    pub(crate) fn shared_arc(&self) -> &Arc<Shared<T, S>> {
        &self.shared
    }

    /// Submits an item under the configured [`Backpressure`](crate::Backpressure) policy
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
        match self.shared.try_push(item) {
            Ok(()) => Ok(()),
            Err((r, item)) => self.submit_refused(r, item),
        }
    }

    #[cold]
    #[inline(never)]
    fn submit_refused(&self, r: Refusal, item: T) -> Result<(), SubmitError<T>> {
        let result = if r == Refusal::Full {
            self.shared.push_waiting(item, self.policy_wait())
        } else {
            self.shared.count_refusal(r);
            Err((r, item))
        };
        result.map_err(|(r, item)| r.submit(item))
    }

    /// The wait the configured policy allows, from now.
    fn policy_wait(&self) -> Wait {
        Wait::from_policy(self.shared.cfg().backpressure, self.shared.clock())
    }

    /// Submits an item if the thread's lane (or shard) has room now; never
    /// blocks.
    ///
    /// # Errors
    ///
    /// `Full(item)` or `Closed(item)`.
    #[inline]
    pub fn try_submit(&self, item: T) -> Result<(), TrySubmitError<T>> {
        match self.shared.try_push(item) {
            Ok(()) => Ok(()),
            Err((r, item)) => Err(self.try_refused(r, item)),
        }
    }

    #[cold]
    #[inline(never)]
    fn try_refused(&self, r: Refusal, item: T) -> TrySubmitError<T> {
        self.shared.count_refusal(r);
        r.try_submit(item)
    }

    /// Submits an item, waiting at most `timeout` for room, whatever the
    /// configured policy.
    ///
    /// # Errors
    ///
    /// `Timeout(item)` or `Closed(item)`. Called from this batcher's own
    /// processor on a full queue it returns `Timeout` at once.
    pub fn submit_timeout(&self, item: T, timeout: Duration) -> Result<(), SubmitTimeoutError<T>> {
        let wait = Wait::at_most(timeout, self.shared.clock());
        self.shared
            .push_waiting(item, wait)
            .map_err(|(r, item)| r.submit_timeout(item))
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
        self.shared.submit_many(items, self.policy_wait())
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
        let deadline = self.shared.clock().deadline_after(timeout);
        self.shared.flush_until(Some(deadline))
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
        let deadline = self.shared.clock().deadline_after(timeout);
        match self
            .shared
            .waiters()
            .wait(self.shared.clock(), Some(deadline), || self.shared.done())
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
