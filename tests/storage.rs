//! A user-supplied storage (the Go `BatchStorage` / `Storage` option) works
//! through the whole batcher.

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

/// The default ring, used directly through the indexed calls the batcher
/// makes: items come out in number order, a slot is not readable before it
/// is written, plain push refuses, and items never taken are dropped with
/// the ring.
#[test]
fn ring_storage_indexed_calls_and_drop() {
    use microbatch::RingStorage;
    #[derive(Debug)]
    struct Counted(u64, Arc<AtomicU64>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }
    let drops = Arc::new(AtomicU64::new(0));
    let ring = RingStorage::new(3);
    assert_eq!(ring.capacity(), 3);
    assert!(
        ring.push(Counted(99, Arc::clone(&drops))).is_err(),
        "plain push refuses"
    );
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    assert!(ring.pop_indexed(0).is_none(), "nothing written yet");
    ring.push_indexed(1, Counted(1, Arc::clone(&drops)))
        .unwrap();
    assert!(ring.pop_indexed(0).is_none(), "item 0 still in flight");
    ring.push_indexed(0, Counted(0, Arc::clone(&drops)))
        .unwrap();
    assert_eq!(ring.len(), 2);
    assert_eq!(ring.pop_indexed(0).map(|c| c.0), Some(0));
    assert_eq!(
        ring.pop().map(|c| c.0),
        Some(1),
        "pop takes the next number"
    );
    // Slot reuse: items 2..5 wrap around the three slots.
    for i in 2..5 {
        ring.push_indexed(i, Counted(i, Arc::clone(&drops)))
            .unwrap();
    }
    assert_eq!(ring.pop_indexed(2).map(|c| c.0), Some(2));
    assert_eq!(drops.load(Ordering::Relaxed), 4);
    drop(ring); // items 3 and 4 were never taken
    assert_eq!(
        drops.load(Ordering::Relaxed),
        6,
        "left-over items dropped with the ring"
    );
}

/// The flusher's batched take: a run of consecutive numbers, stopping at the
/// first still in flight and at `max`; the ring's own loop and the trait's
/// default (a storage that only has `pop`) agree.
#[test]
fn pop_indexed_into_takes_a_run() {
    use microbatch::{ArrayStorage, RingStorage};
    let ring = RingStorage::new(8);
    for i in [0u64, 1, 2, 4, 5] {
        ring.push_indexed(i, i * 10).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(ring.pop_indexed_into(0, 8, &mut out), 3, "stops at 3");
    assert_eq!(out, [0, 10, 20]);
    assert_eq!(ring.pop_indexed_into(3, 8, &mut out), 0, "3 in flight");
    ring.push_indexed(3, 30).unwrap();
    assert_eq!(ring.pop_indexed_into(3, 2, &mut out), 2, "max respected");
    assert_eq!(out, [0, 10, 20, 30, 40]);
    assert_eq!(ring.pop_indexed_into(5, 8, &mut out), 1);
    assert_eq!(out.last(), Some(&50));
    assert_eq!(ring.len(), 0);

    let q = ArrayStorage::new(4);
    for i in 0..3u64 {
        q.push(i).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(q.pop_indexed_into(0, 2, &mut out), 2, "default: max");
    assert_eq!(
        q.pop_indexed_into(2, 8, &mut out),
        1,
        "default: until empty"
    );
    assert_eq!(out, [0, 1, 2]);
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
