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
