//! The async edge: a submit that waits for room without blocking a thread,
//! an awaitable flush and an awaitable shutdown. Runtime-agnostic (plain
//! `Future`s woken through `Waker`s); the flusher stays a dedicated OS
//! thread and never runs on, or blocks, the caller's runtime.
//!
//! Ordering: a batcher keeps the order of items submitted from one *thread*.
//! A task that a multi-threaded runtime moves between threads may submit
//! from several, and its items may then be processed out of its order;
//! submit from one thread (a current-thread runtime, or a task that never
//! migrates) when a task's order matters.

use crate::batcher::Batcher;
use crate::error::{FlushError, Refusal, ShutdownError, SubmitError};
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::storage::Storage;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future of [`Batcher::submit_async`].
///
/// # Cancel safety
///
/// The item is accepted (or refused) inside a single `poll`, never between
/// two, so dropping the future cannot lose an accepted item: if it resolved
/// `Ok`, the item will be processed; if it is dropped before resolving, the
/// item was never accepted and is dropped with the future (to keep it, loop
/// on [`Batcher::try_submit`] yourself), and counted in
/// [`Metrics::rejected_cancelled`](crate::Metrics::rejected_cancelled).
/// Nothing leaks: the waker it registered is released.
///
/// # Ordering
///
/// Per-thread, not per-task: a task that migrates between threads may see
/// its items processed out of its order (see the crate docs on async use).
#[must_use = "futures do nothing unless polled"]
pub struct SubmitFuture<'a, T, S: Storage<T>> {
    shared: &'a Shared<T, S>,
    item: Option<T>,
    registered: Option<usize>,
}

impl<T, S: Storage<T>> fmt::Debug for SubmitFuture<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitFuture")
            .field("pending", &self.item.is_some())
            .finish()
    }
}

// The item is never pinned: it is moved into the shard by value.
impl<T, S: Storage<T>> Unpin for SubmitFuture<'_, T, S> {}

impl<T, S: Storage<T>> Future for SubmitFuture<'_, T, S> {
    type Output = Result<(), SubmitError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = this.shared;
        loop {
            let item = this
                .item
                .take()
                .expect("SubmitFuture polled after completion");
            let (refusal, item) = match shared.try_push(item) {
                Ok(()) => {
                    shared.waiters().deregister(&mut this.registered);
                    return Poll::Ready(Ok(()));
                }
                Err(e) => e,
            };
            if refusal != Refusal::Full || shared.on_flusher_thread() {
                // Closed, too heavy, or the batcher's own processor (which
                // cannot await anyway, being synchronous): no waiting.
                shared.waiters().deregister(&mut this.registered);
                shared.count_refusal(refusal);
                // `Full`, `Closed` or `TooHeavy`: one attempt never times out.
                return Poll::Ready(Err(refusal.submit(item)));
            }
            this.item = Some(item);
            let shard = shared.shard();
            match shared
                .waiters()
                .poll_wait(cx, &mut this.registered, || shared.room_ready(shard))
            {
                // Room, or closed: try again (a close is reported by the try).
                Poll::Ready(_) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T, S: Storage<T>> Drop for SubmitFuture<'_, T, S> {
    fn drop(&mut self) {
        self.shared.waiters().deregister(&mut self.registered);
        if self.item.is_some() {
            // Never accepted: refused by the caller's own cancellation.
            self.shared.count_cancelled();
        }
    }
}

/// The future of [`Batcher::flush_async`].
///
/// The flush is requested, and its barrier fixed, when `flush_async` is
/// called, not when the future is first polled. Dropping the future does not
/// cancel the flush; it only stops waiting for it.
#[must_use = "futures do nothing unless polled"]
pub struct FlushFuture<'a, T, S: Storage<T>> {
    shared: &'a Shared<T, S>,
    state: Result<Option<Vec<u64>>, Option<FlushError>>,
    registered: Option<usize>,
}

impl<T, S: Storage<T>> fmt::Debug for FlushFuture<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlushFuture").finish_non_exhaustive()
    }
}

impl<T, S: Storage<T>> Future for FlushFuture<'_, T, S> {
    type Output = Result<(), FlushError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = this.shared;
        match &mut this.state {
            Err(e) => Poll::Ready(Err(e.take().expect("FlushFuture polled after completion"))),
            Ok(None) => Poll::Ready(Ok(())),
            Ok(Some(snap)) => {
                let snap = &*snap;
                shared
                    .waiters()
                    .poll_wait(cx, &mut this.registered, || shared.flush_ready(snap))
            }
        }
    }
}

impl<T, S: Storage<T>> Drop for FlushFuture<'_, T, S> {
    fn drop(&mut self) {
        self.shared.waiters().deregister(&mut self.registered);
    }
}

impl<T, S: Storage<T>> Batcher<T, S> {
    /// Submits an item, waiting for room without blocking the thread: the
    /// task is woken when the flusher frees room (or the batcher closes).
    /// Whatever the configured policy, a full shard means waiting; put a
    /// timeout around it with your runtime if you need one (see
    /// [`SubmitFuture`] for what dropping it does). Items keep the order of
    /// the thread that submits them, not of the task: see
    /// [`SubmitFuture`]'s ordering note.
    ///
    /// # Errors
    ///
    /// `Closed(item)` once the batcher is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo};
    ///
    /// let batcher = Batcher::builder()
    ///     .build(|batch: &mut Vec<u32>, _: &BatchInfo| batch.clear())
    ///     .unwrap();
    /// futures::executor::block_on(async {
    ///     batcher.submit_async(1).await.unwrap();
    ///     batcher.flush_async().await.unwrap();
    /// });
    /// assert_eq!(batcher.shutdown().processed, 1);
    /// ```
    pub fn submit_async(&self, item: T) -> SubmitFuture<'_, T, S> {
        SubmitFuture {
            shared: self.shared(),
            item: Some(item),
            registered: None,
        }
    }

    /// [`flush`](Batcher::flush) as a future: resolves once every item whose
    /// submit returned `Ok` before this call has been processed (the
    /// barrier is over items, whatever thread or task submitted them).
    ///
    /// # Errors
    ///
    /// As `flush`: `Closed`, or `Reentrant` from the batcher's own processor.
    pub fn flush_async(&self) -> FlushFuture<'_, T, S> {
        FlushFuture {
            shared: self.shared(),
            state: self.shared().request_flush().map_err(Some),
            registered: None,
        }
    }

    /// [`shutdown_timeout`](Batcher::shutdown_timeout) as a future, without
    /// the timeout (put your runtime's around it): closes at once, and
    /// resolves to the final counters when the flusher has processed
    /// everything accepted and stopped. Dropping the future stops waiting;
    /// the batcher stays closed.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::Reentrant`] from the batcher's own processor.
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo};
    /// use std::sync::Arc;
    ///
    /// let batcher = Arc::new(
    ///     Batcher::builder()
    ///         .build(|batch: &mut Vec<u32>, _: &BatchInfo| batch.clear())
    ///         .unwrap(),
    /// );
    /// batcher.submit(1).unwrap();
    /// let m = futures::executor::block_on(batcher.shutdown_async()).unwrap();
    /// assert_eq!(m.processed, 1);
    /// ```
    pub fn shutdown_async(&self) -> ShutdownFuture<'_, T, S> {
        let shared = self.shared();
        shared.close();
        ShutdownFuture {
            shared,
            registered: None,
        }
    }
}

/// The future of [`Batcher::shutdown_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ShutdownFuture<'a, T, S: Storage<T>> {
    shared: &'a Shared<T, S>,
    registered: Option<usize>,
}

impl<T, S: Storage<T>> fmt::Debug for ShutdownFuture<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownFuture").finish_non_exhaustive()
    }
}

impl<T, S: Storage<T>> Future for ShutdownFuture<'_, T, S> {
    type Output = Result<Metrics, ShutdownError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = this.shared;
        if shared.on_flusher_thread() {
            return Poll::Ready(Err(ShutdownError::Reentrant(Box::new(shared.metrics()))));
        }
        shared
            .waiters()
            .poll_wait(cx, &mut this.registered, || shared.done())
            .map(|()| Ok(shared.metrics()))
    }
}

impl<T, S: Storage<T>> Drop for ShutdownFuture<'_, T, S> {
    fn drop(&mut self) {
        self.shared.waiters().deregister(&mut self.registered);
    }
}
