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

type Gate = Arc<(Mutex<bool>, Condvar)>;

/// A processor that holds each batch until the test opens the gate.
fn gated(seen: &Arc<Seen>) -> (Gate, impl FnMut(&mut Vec<u32>, &BatchInfo) + Send + 'static) {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = Arc::clone(&gate);
    let s = Arc::clone(seen);
    let processor = move |batch: &mut Vec<u32>, info: &BatchInfo| {
        let (open, cv) = &*g;
        let mut o = open.lock().unwrap();
        while !*o {
            o = cv.wait(o).unwrap();
        }
        drop(o);
        s.record(batch, info);
    };
    (gate, processor)
}

fn open(gate: &(Mutex<bool>, Condvar)) {
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

#[test]
fn blocked_producer_woken_by_pop_before_processing() {
    model(|| {
        let seen = Seen::new();
        let (gate, processor) = gated(&seen);
        let batcher = Arc::new(builder(1, 1).build(processor).unwrap());
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || {
            b.submit(1).unwrap();
            // Blocks until the flusher pops item 1; the processor still
            // holds that batch, so only the pop's notification can wake us.
            b.submit(2).unwrap();
        });
        producer.join().unwrap();
        open(&gate);
        drop(batcher);
        assert_eq!(seen.values(), vec![1, 2]);
    });
}

#[test]
fn blocked_producer_woken_by_close() {
    model(|| {
        let seen = Seen::new();
        let (gate, processor) = gated(&seen);
        let batcher = Arc::new(builder(1, 1).build(processor).unwrap());
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || {
            // With item 1 held by the processor and item 2 queued, item 3
            // blocks until the close: nothing else can free it.
            [1, 2, 3].map(|x| b.submit(x).map_err(|e| (e.is_closed(), e.into_inner())))
        });
        batcher.close();
        let results = producer.join().unwrap();
        open(&gate);
        let report = Arc::try_unwrap(batcher).expect("sole owner").shutdown();
        let mut accepted = Vec::new();
        for (x, r) in [1, 2, 3].into_iter().zip(results) {
            match r {
                Ok(()) => accepted.push(x),
                Err((closed, item)) => {
                    assert!(closed);
                    assert_eq!(item, x);
                }
            }
        }
        assert_eq!(seen.values(), accepted);
        assert_eq!(report.submitted + report.rejected(), 3);
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
