//! Shard storage: the Go original's `BatchStorage`, made a concurrent FIFO.

mod ring;

use crate::sync::ArrayQueue;
use std::fmt;

pub use ring::RingStorage;

/// The queue behind one lane or shard, for a storage of your own.
///
/// The Go original's `BatchStorage` had `Size`, `Append`, `GetAll` and
/// `Clear`, called from one goroutine. Here producers on many threads append
/// while the flusher takes, so the trait is a bounded concurrent FIFO:
/// `len` is `Size`, `push` is `Append` (an `Err` is the original's
/// `ErrStorageFull`), and `pop` replaces `GetAll` + `Clear`, taking items one
/// at a time so nothing is lost between the two calls.
///
/// # Contract
///
/// The trait is safe to implement, and nothing a storage does can make the
/// batcher unsound: the batcher only moves items in and out by value. It
/// does its own admission control, never having more than
/// [`capacity`](Storage::capacity) items pushed and not yet popped in one
/// storage, and relies on the storage for this much behaviour:
/// - accept every `push` while it holds fewer than `capacity()` items. A
///   storage that refuses early makes that producer retry (yielding) until
///   it accepts (on a lane, publishing what it pushed so far, so the
///   flusher can drain a storage shared with other queues), and one that
///   never accepts stalls it;
/// - not call into its own batcher from `push` in a way that waits for the
///   flusher (`close`, `flush`, a blocking submit on a full queue): the
///   producer is inside its reservation. A non-blocking submit from `push`
///   is taken by a shard;
/// - hand back, through `pop`, every item it accepted, once, first-in
///   first-out for pushes from one thread (per-thread order is a guarantee
///   of the batcher). A storage that loses an item makes `flush` and the
///   final drain wait for it; one that invents or repeats items makes the
///   batcher process them;
/// - be safe for many concurrent `push` callers and one `pop` caller, and
///   not panic in `push` or `pop`.
///
/// One storage is made for each shard; a factory that hands several shards
/// the same queue (through an `Arc`, say) is allowed and stays sound, but
/// per-thread order then only holds if the queue is FIFO across all its
/// producers.
///
/// # Examples
///
/// A storage on a mutex-guarded `VecDeque`, plugged in with
/// [`Builder::storage`](crate::Builder::storage):
///
/// ```
/// use microbatch::{Batcher, BatchInfo, Storage};
/// use std::collections::VecDeque;
/// use std::sync::Mutex;
///
/// struct Locked<T> { cap: usize, q: Mutex<VecDeque<T>> }
///
/// impl<T: Send> Storage<T> for Locked<T> {
///     fn push(&self, item: T) -> Result<(), T> {
///         let mut q = self.q.lock().unwrap();
///         if q.len() == self.cap { return Err(item); }
///         q.push_back(item);
///         Ok(())
///     }
///     fn pop(&self) -> Option<T> { self.q.lock().unwrap().pop_front() }
///     fn len(&self) -> usize { self.q.lock().unwrap().len() }
///     fn capacity(&self) -> usize { self.cap }
/// }
///
/// let batcher = Batcher::builder()
///     .storage(|cap| Locked { cap, q: Mutex::new(VecDeque::with_capacity(cap)) })
///     .build(|batch: &mut Vec<u32>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// batcher.submit(7).unwrap();
/// assert_eq!(batcher.shutdown().processed, 1);
/// ```
pub trait Storage<T>: Send + Sync {
    /// Appends an item, or hands it back when the storage is full.
    fn push(&self, item: T) -> Result<(), T>;
    /// Takes the oldest item.
    fn pop(&self) -> Option<T>;
    /// How many items it holds now (may be stale under concurrency).
    fn len(&self) -> usize;
    /// Does it hold no item now?
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// How many items it can hold.
    fn capacity(&self) -> usize;

    /// Takes up to `max` of the oldest items into `out`, stopping when none
    /// is left; returns how many it took. The flusher drains a shard with
    /// this; the default calls [`pop`](Storage::pop) for each item.
    #[inline]
    fn pop_into(&self, max: usize, out: &mut Vec<T>) -> usize {
        let mut taken = 0;
        while taken < max {
            match self.pop() {
                Some(item) => out.push(item),
                None => break,
            }
            taken += 1;
        }
        taken
    }

    /// The batcher's own ring, if this is a [`RingStorage`]. Not for
    /// implementors: the argument and the result are types no other crate
    /// can name, so no other storage can provide it.
    #[doc(hidden)]
    #[inline(always)]
    fn __ring(&self, _: sealed::Seal) -> Option<&sealed::Ring<T>> {
        None
    }
}

/// Types that appear in [`Storage`]'s one sealed method. Public in a
/// private module: other crates cannot name them, so they can neither call
/// nor override that method.
// `pub` items other crates cannot reach, by design.
#[allow(unreachable_pub)]
pub(crate) mod sealed {
    /// The proof that the caller is this crate.
    #[derive(Debug, Clone, Copy)]
    pub struct Seal(pub(crate) ());

    pub use super::ring::Ring;
}

/// A bounded lock-free `crossbeam_queue::ArrayQueue`: a general-purpose MPMC
/// queue, usable on its own. The batcher's default is [`RingStorage`], which
/// uses the batcher's slot numbering to save the queue's own atomic
/// operation per item; choose this one with `.storage(ArrayStorage::new)`.
///
/// # Examples
///
/// ```
/// use microbatch::{ArrayStorage, Batcher, BatchInfo, Storage};
///
/// let q = ArrayStorage::new(2);
/// q.push(1).unwrap();
/// q.push(2).unwrap();
/// assert_eq!(q.push(3), Err(3), "full: the item comes back");
/// assert_eq!(q.pop(), Some(1));
///
/// let batcher = Batcher::builder()
///     .storage(ArrayStorage::new)
///     .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// batcher.submit(1).unwrap();
/// batcher.shutdown();
/// ```
pub struct ArrayStorage<T> {
    queue: ArrayQueue<T>,
}

impl<T> ArrayStorage<T> {
    /// A storage holding up to `capacity` items.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (the builder rejects that before calling this).
    pub fn new(capacity: usize) -> Self {
        ArrayStorage {
            queue: ArrayQueue::new(capacity),
        }
    }
}

impl<T> fmt::Debug for ArrayStorage<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayStorage")
            .field("len", &self.queue.len())
            .field("capacity", &self.queue.capacity())
            .finish()
    }
}

impl<T: Send> Storage<T> for ArrayStorage<T> {
    #[inline]
    fn push(&self, item: T) -> Result<(), T> {
        self.queue.push(item)
    }
    #[inline]
    fn pop(&self) -> Option<T> {
        self.queue.pop()
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}
