//! Model 10: the metrics snapshot (the sequence lock in
//! `metrics::FlusherStats`). A producer fills a one-slot shard, and again once
//! the flusher has taken the first item, while a reader takes a snapshot: every snapshot must
//! add up (`submitted == processed + failed + in_flight + queue_depth`) and
//! stay within the bounds (`queue_depth <= capacity`, `in_flight <= batch`),
//! however the reads interleave with the flusher's stores and the
//! producer's reservations.
#![cfg(loom)]

use loom::thread;
use microbatch::{BatchInfo, Metrics};
use microbatch_loom_tests::{builder, model, recorder, trace, Seen};
use std::sync::Arc;

/// What every snapshot of a one-slot shard with batches of one must hold.
fn assert_consistent(m: &Metrics) {
    assert_eq!(
        m.processed + m.failed + m.in_flight + m.queue_depth,
        m.submitted,
        "{m:?}"
    );
    assert!(m.queue_depth <= 1 && m.in_flight <= 1, "{m:?}");
}

#[test]
fn snapshot_is_consistent() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(1, 1).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || {
            b.submit(1).unwrap();
            // Accepted only once the flusher has taken item 1.
            b.try_submit(2).is_ok()
        });
        assert_consistent(&batcher.metrics());
        let second = producer.join().unwrap();
        let n = 1 + usize::from(second);
        seen.wait_for(n);
        assert_eq!(seen.values().len(), n);
    });
}

/// The same snapshot while the processor holds its first batch until the
/// producer has made its second attempt: the reservation admitted by the
/// flusher's `popped` then lands between the flusher's two writes of the
/// sequence lock (the take's and the batch's), where a reader that read
/// the old `popped` would see more queued items than the shard holds
/// unless the `popped` store is inside a write.
#[test]
fn snapshot_while_the_processor_holds_a_batch() {
    model(|| {
        let attempted = Arc::new((loom::sync::Mutex::new(false), loom::sync::Condvar::new()));
        let a = Arc::clone(&attempted);
        let first = std::sync::atomic::AtomicBool::new(true);
        let batcher = Arc::new(
            builder(1, 1)
                .build(move |batch: &mut Vec<u32>, _: &BatchInfo| {
                    if first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        let (lock, cv) = &*a;
                        let mut done = lock.lock().unwrap();
                        while !*done {
                            done = cv.wait(done).unwrap();
                        }
                    }
                    batch.clear();
                })
                .unwrap(),
        );
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || {
            b.submit(1).unwrap();
            // Accepted only once the flusher has taken item 1.
            let second = b.try_submit(2).is_ok();
            trace(format!("try_submit(2) accepted: {second}"));
            let (lock, cv) = &*attempted;
            *lock.lock().unwrap() = true;
            cv.notify_all();
            second
        });
        let m = batcher.metrics();
        trace(format!("snapshot {m:?}"));
        assert_consistent(&m);
        let second = producer.join().unwrap();
        let report = Arc::try_unwrap(batcher).expect("sole owner").shutdown();
        assert_eq!(report.processed, 1 + u64::from(second));
    });
}
