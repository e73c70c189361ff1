//! Model 4: a producer blocked on a full shard is woken when room appears,
//! and when the batcher closes (then it gets its item back).
#![cfg(loom)]

use loom::sync::{Condvar, Mutex};
use loom::thread;
use microbatch::{Backpressure, BatchInfo};
use microbatch_loom_tests::{builder, model, recorder, Seen};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn blocked_producer_woken_by_room() {
    model(|| {
        let seen = Seen::new();
        // Capacity 1: the second submit blocks until the flusher pops.
        let batcher = builder(1, 1).build(recorder(&seen)).unwrap();
        batcher.submit(1).unwrap();
        batcher.submit(2).unwrap();
        seen.wait_for(2);
        assert_eq!(seen.values(), vec![1, 2]);
    });
}

#[test]
fn blocked_producer_woken_by_close() {
    model(|| {
        // The processor holds the first batch until the test lets it go, so
        // the shard stays full and the producer stays blocked.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = Arc::clone(&gate);
        let seen = Seen::new();
        let s = Arc::clone(&seen);
        let batcher = Arc::new(
            builder(1, 1)
                .build(move |batch: &mut Vec<u32>, info: &BatchInfo| {
                    let (open, cv) = &*g;
                    let mut o = open.lock().unwrap();
                    while !*o {
                        o = cv.wait(o).unwrap();
                    }
                    drop(o);
                    s.record(batch, info);
                })
                .unwrap(),
        );
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || {
            let first = b.submit(1).is_ok();
            let second = b.submit(2);
            (first, second.map_err(|e| (e.is_closed(), e.into_inner())))
        });
        batcher.close();
        {
            let (open, cv) = &*gate;
            *open.lock().unwrap() = true;
            cv.notify_all();
        }
        let (first, second) = producer.join().unwrap();
        let report = Arc::try_unwrap(batcher).expect("sole owner").shutdown();
        let mut accepted = Vec::new();
        if first {
            accepted.push(1);
        }
        match second {
            Ok(()) => accepted.push(2),
            Err((closed, item)) => {
                assert!(closed);
                assert_eq!(item, 2);
            }
        }
        assert_eq!(seen.values(), accepted);
        assert_eq!(report.submitted + report.rejected(), 2);
    });
}

#[test]
fn block_timeout_returns_item_or_delivers() {
    model(|| {
        let seen = Seen::new();
        let batcher = builder(1, 1)
            .backpressure(Backpressure::BlockTimeout(Duration::from_millis(1)))
            .build(recorder(&seen))
            .unwrap();
        batcher.submit(1).unwrap();
        let second = batcher.submit(2);
        let report = batcher.shutdown();
        match second {
            Ok(()) => assert_eq!(seen.values(), vec![1, 2]),
            Err(e) => {
                assert!(e.is_timeout());
                assert_eq!(e.into_inner(), 2);
                assert_eq!(seen.values(), vec![1]);
                assert_eq!(report.rejected_timeout, 1);
            }
        }
    });
}
