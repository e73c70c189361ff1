//! Producer handles: a queue (a lane if one is free) owned by a value
//! rather than by a thread.

use crate::batcher::Batcher;
use crate::error::{Refusal, SubmitError, SubmitManyError, SubmitTimeoutError, TrySubmitError};
use crate::shared::{Shard, Shared};
use crate::storage::{RingStorage, Storage};
use crate::submit::Wait;
use crate::sync::Arc;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// A producer that owns its queue: a lane if one was free when it was
/// made (else a shard), until it is dropped.
///
/// Made by [`Batcher::producer`]. Its submits go to its own queue, not to
/// the calling thread's, so items submitted through one handle are
/// processed in the order submitted even if the handle moves between
/// threads (a tokio task that migrates between workers, say), and trading
/// code can see whether it got a lane ([`is_lane`](Producer::is_lane)).
/// The handle is `Send` but not `Sync`, and submits take `&mut self`: one
/// writer at a time, which is what makes a lane's plain stores sound.
///
/// It keeps the batcher's shared state alive (not its flusher): after the
/// batcher is closed or dropped, submits return `Closed` with the item.
/// Dropping the handle returns its lane; items left in it are processed
/// as always.
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo};
///
/// let batcher = Batcher::builder()
///     .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// let mut producer = batcher.producer();
/// let worker = std::thread::spawn(move || {
///     for i in 0..1000 {
///         producer.submit(i).unwrap();
///     }
///     producer.is_lane()
/// });
/// assert!(worker.join().unwrap(), "two lanes or more, and this was the first producer");
/// assert_eq!(batcher.shutdown().processed, 1000);
/// ```
pub struct Producer<T, S: Storage<T> = RingStorage<T>> {
    shared: Arc<Shared<T, S>>,
    queue: usize,
    /// `Send`, not `Sync`: a lane has one writer.
    _one_writer: PhantomData<std::cell::Cell<()>>,
}

impl<T, S: Storage<T>> fmt::Debug for Producer<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("queue", &self.queue)
            .field("lane", &self.is_lane())
            .finish_non_exhaustive()
    }
}

impl<T, S: Storage<T>> Batcher<T, S> {
    /// A producer handle owning a lane (or, with every lane leased, a
    /// shard) until it is dropped. See [`Producer`].
    pub fn producer(&self) -> Producer<T, S> {
        let shared = Arc::clone(self.shared_arc());
        let queue = shared.assign_queue(true);
        Producer {
            shared,
            queue,
            _one_writer: PhantomData,
        }
    }
}

impl<T, S: Storage<T>> Producer<T, S> {
    fn shard(&self) -> &Shard<S> {
        &self.shared.shards()[self.queue]
    }

    /// Does this handle own a single-writer lane (rather than a shared
    /// shard, when every lane was leased)?
    pub fn is_lane(&self) -> bool {
        self.shard().is_lane()
    }

    /// Submits an item under the batcher's
    /// [`Backpressure`](crate::Backpressure) policy, as
    /// [`Batcher::submit`].
    ///
    /// # Errors
    ///
    /// As [`Batcher::submit`], with the item inside.
    #[inline]
    pub fn submit(&mut self, item: T) -> Result<(), SubmitError<T>> {
        let shared = &*self.shared;
        let shard = &shared.shards()[self.queue];
        match shared.try_push_on(shard, item) {
            Ok(()) => Ok(()),
            Err((r, item)) => self.submit_refused(r, item),
        }
    }

    #[cold]
    #[inline(never)]
    fn submit_refused(&mut self, r: Refusal, item: T) -> Result<(), SubmitError<T>> {
        let shard = self.shard();
        let result = if r == Refusal::Full {
            let wait = Wait::from_policy(self.shared.cfg().backpressure, self.shared.clock());
            self.shared.push_waiting_on(shard, item, wait)
        } else {
            shard.count_refusal(r, 1);
            Err((r, item))
        };
        result.map_err(|(r, item)| r.submit(item))
    }

    /// Submits an item if this handle's queue has room now; never blocks.
    ///
    /// # Errors
    ///
    /// `Full(item)` or `Closed(item)`.
    #[inline]
    pub fn try_submit(&mut self, item: T) -> Result<(), TrySubmitError<T>> {
        let shard = self.shard();
        self.shared.try_push_on(shard, item).map_err(|(r, item)| {
            shard.count_refusal(r, 1);
            r.try_submit(item)
        })
    }

    /// Submits an item, waiting at most `timeout` for room, as
    /// [`Batcher::submit_timeout`].
    ///
    /// # Errors
    ///
    /// `Timeout(item)` or `Closed(item)`.
    pub fn submit_timeout(
        &mut self,
        item: T,
        timeout: Duration,
    ) -> Result<(), SubmitTimeoutError<T>> {
        let wait = Wait::at_most(timeout, self.shared.clock());
        self.shared
            .push_waiting_on(self.shard(), item, wait)
            .map_err(|(r, item)| r.submit_timeout(item))
    }

    /// Submits many items under the batcher's policy, as
    /// [`Batcher::submit_many`] (on a lane: one enter and one publish per
    /// run of slots).
    ///
    /// # Errors
    ///
    /// Why the rest was not accepted; `items` holds exactly the items not
    /// accepted, in order.
    pub fn submit_many(&mut self, items: &mut Vec<T>) -> Result<(), SubmitManyError> {
        let wait = Wait::from_policy(self.shared.cfg().backpressure, self.shared.clock());
        self.shared.submit_many_on(self.shard(), items, wait)
    }

    /// Like [`submit_many`](Producer::submit_many), but never blocks.
    ///
    /// # Errors
    ///
    /// `Full` or `Closed`; `items` holds the items not accepted.
    pub fn try_submit_many(&mut self, items: &mut Vec<T>) -> Result<(), SubmitManyError> {
        self.shared.submit_many_on(self.shard(), items, Wait::Never)
    }
}

impl<T, S: Storage<T>> Drop for Producer<T, S> {
    fn drop(&mut self) {
        // Release: the next owner continues after this handle's last item.
        self.shared.return_queue(self.queue);
    }
}
