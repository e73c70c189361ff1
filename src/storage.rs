//! Shard storage: the Go original's `BatchStorage`, made a concurrent FIFO.

use crate::sync::ShardQueue;
use std::fmt;

pub use crate::ring::RingStorage;

/// The queue behind one shard.
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
/// The batcher does its own admission control: it never has more than
/// [`capacity`](Storage::capacity) items pushed and not yet popped in one
/// storage. So an implementation must:
/// - accept every `push` while it holds fewer than `capacity()` items (a
///   storage that refuses early makes that producer spin until the flusher
///   pops);
/// - be first-in first-out for pushes from one thread (per-thread order is a
///   guarantee of the batcher);
/// - be safe for many concurrent `push` callers and one `pop` caller;
/// - never panic in `push` (the slot is reserved before `push` is called, and
///   shutdown waits for it to be filled).
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

    /// Appends the item the batcher numbered `index` (0, 1, 2, ... per
    /// shard; at most `capacity()` ahead of the pops). A storage that can
    /// use the numbering (like [`RingStorage`]) saves an atomic operation per
    /// item; the default ignores it and calls [`push`](Storage::push).
    #[inline]
    fn push_indexed(&self, index: u64, item: T) -> Result<(), T> {
        let _ = index;
        self.push(item)
    }

    /// Takes the item numbered `index`, the next one the batcher expects
    /// (`None` if it is not there yet). The default ignores the number and
    /// calls [`pop`](Storage::pop).
    #[inline]
    fn pop_indexed(&self, index: u64) -> Option<T> {
        let _ = index;
        self.pop()
    }

    /// Takes the items numbered `index`, `index + 1`, ... into `out`, up to
    /// `max` of them, stopping at the first that is not there yet; returns
    /// how many it took. The flusher drains a shard with this. The default
    /// calls [`pop_indexed`](Storage::pop_indexed) for each;
    /// [`RingStorage`] takes a run of slots in one loop.
    #[inline]
    fn pop_indexed_into(&self, index: u64, max: usize, out: &mut Vec<T>) -> usize {
        let mut taken = 0;
        while taken < max {
            match self.pop_indexed(index + taken as u64) {
                Some(item) => out.push(item),
                None => break,
            }
            taken += 1;
        }
        taken
    }
}

/// A bounded lock-free `crossbeam_queue::ArrayQueue`: a general-purpose MPMC
/// queue, usable on its own. The batcher's default is [`RingStorage`], which
/// uses the batcher's slot numbering to save the queue's own atomic
/// operation per item; choose this one with
/// `.storage(ArrayStorage::new)`.
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
    queue: ShardQueue<T>,
}

impl<T> ArrayStorage<T> {
    /// A storage holding up to `capacity` items.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (the builder rejects that before calling this).
    pub fn new(capacity: usize) -> Self {
        ArrayStorage {
            queue: ShardQueue::new(capacity),
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
