//! A user-supplied storage (the Go `BatchStorage` / `Storage` option) works
//! through the whole batcher.

mod common;

use common::DropCounted;
use microbatch::{BatchInfo, Batcher, Storage};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

struct Counted<T> {
    cap: usize,
    q: Mutex<VecDeque<T>>,
    pushes: Arc<AtomicU64>,
}

impl<T: Send> Storage<T> for Counted<T> {
    fn push(&self, item: T) -> Result<(), T> {
        let mut q = self.q.lock().unwrap();
        if q.len() == self.cap {
            return Err(item);
        }
        q.push_back(item);
        self.pushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn pop(&self) -> Option<T> {
        self.q.lock().unwrap().pop_front()
    }
    fn len(&self) -> usize {
        self.q.lock().unwrap().len()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
}

#[test]
fn custom_storage_carries_every_item() {
    let pushes = Arc::new(AtomicU64::new(0));
    let pu = Arc::clone(&pushes);
    let sum = Arc::new(AtomicU64::new(0));
    let s = Arc::clone(&sum);
    let batcher = Batcher::builder()
        .max_batch_size(16)
        .shards(2)
        .storage(move |cap| Counted {
            cap,
            q: Mutex::new(VecDeque::new()),
            pushes: Arc::clone(&pu),
        })
        .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
            s.fetch_add(batch.iter().sum::<u64>(), Ordering::Relaxed);
        })
        .unwrap();
    std::thread::scope(|sc| {
        for t in 0..3u64 {
            let b = &batcher;
            sc.spawn(move || {
                for i in 0..10_000 {
                    b.submit(t * 10_000 + i).unwrap();
                }
            });
        }
    });
    let m = batcher.shutdown();
    assert_eq!(m.processed, 30_000);
    assert_eq!(
        pushes.load(Ordering::Relaxed),
        30_000,
        "every item went through the custom storage"
    );
    assert_eq!(sum.load(Ordering::Relaxed), (0..30_000).sum::<u64>());
}

/// The trait's batched take (what the flusher drains a custom storage
/// with): up to `max`, stopping when the storage is empty.
#[test]
fn pop_into_takes_a_run() {
    use microbatch::ArrayStorage;
    let q = ArrayStorage::new(4);
    for i in 0..3u64 {
        q.push(i).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(q.pop_into(2, &mut out), 2, "default: max");
    assert_eq!(q.pop_into(8, &mut out), 1, "default: until empty");
    assert_eq!(out, [0, 1, 2]);
}

/// The default ring, on its own, holds nothing: only its batcher can fill
/// it, so no safe caller can take an item twice.
#[test]
fn ring_storage_alone_holds_nothing() {
    use microbatch::RingStorage;
    let drops = Arc::new(AtomicU64::new(0));
    let ring = RingStorage::new(3);
    assert_eq!(ring.capacity(), 3);
    assert!(ring.push(DropCounted::counting(&drops)).is_err());
    assert_eq!(
        drops.load(Ordering::Relaxed),
        1,
        "the refused item came back"
    );
    assert!(ring.pop().is_none());
    assert_eq!(ring.len(), 0);
    let mut out = Vec::new();
    assert_eq!(ring.pop_into(8, &mut out), 0);
}

/// A factory that hands every shard the same queue is sound, and nothing
/// is lost or taken twice through it.
#[test]
fn one_queue_shared_by_every_shard() {
    struct SharedQueue(Arc<microbatch::ArrayStorage<u64>>);
    impl Storage<u64> for SharedQueue {
        fn push(&self, item: u64) -> Result<(), u64> {
            self.0.push(item)
        }
        fn pop(&self) -> Option<u64> {
            self.0.pop()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn capacity(&self) -> usize {
            64
        }
    }
    let q = Arc::new(microbatch::ArrayStorage::new(4 * 64));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .shards(4)
        .capacity(64)
        .max_batch_size(16)
        .storage(move |_| SharedQueue(Arc::clone(&q)))
        .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
            s2.lock().unwrap().extend(batch.drain(..));
        })
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let b = &batcher;
            s.spawn(move || (0..5_000).for_each(|i| b.submit(t << 32 | i).unwrap()));
        }
    });
    assert_eq!(batcher.shutdown().processed, 20_000);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 20_000, "every item exactly once");
}

/// `ArrayStorage` (crossbeam's `ArrayQueue`) stays available.
#[test]
fn array_storage_through_the_batcher() {
    let batcher = Batcher::builder()
        .storage(microbatch::ArrayStorage::new)
        .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| (0..10_000).for_each(|i| batcher.submit(i).unwrap()));
        }
    });
    assert_eq!(batcher.shutdown().processed, 20_000);
}
