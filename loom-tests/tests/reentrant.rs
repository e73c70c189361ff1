//! Model 6: a processor that calls `submit`, `flush` and drops the last
//! handle of its own batcher: no deadlock, a typed outcome for each.
#![cfg(loom)]

use microbatch::{BatchInfo, Batcher, FlushError};
use microbatch_loom_tests::{builder, model};
use std::sync::{Arc, Mutex, Weak};

#[test]
fn processor_calls_its_own_batcher() {
    model(|| {
        let me: Arc<Mutex<Weak<Batcher<u32>>>> = Arc::new(Mutex::new(Weak::new()));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        // Set once the processor has called its batcher: the model waits
        // for it before dropping, so the calls are made with the batcher
        // open in every execution (a processor that deadlocks in them
        // leaves every thread blocked, which loom reports).
        let ran = Arc::new((loom::sync::Mutex::new(false), loom::sync::Condvar::new()));
        let m = Arc::clone(&me);
        let o = Arc::clone(&outcomes);
        let r = Arc::clone(&ran);
        let batcher = Arc::new(
            builder(1, 1)
                .build(move |batch: &mut Vec<u32>, _: &BatchInfo| {
                    let first = batch[0];
                    batch.clear();
                    let weak = m.lock().unwrap().clone();
                    if let Some(b) = weak.upgrade() {
                        let flushed = b.flush();
                        // A full shard must not block the processor.
                        let resubmitted = if first < 10 {
                            b.submit(first + 10).map_err(|e| e.into_inner())
                        } else {
                            Ok(())
                        };
                        o.lock().unwrap().push((flushed, resubmitted));
                        *r.0.lock().unwrap() = true;
                        r.1.notify_all();
                        // `b` may be the last strong handle: dropping it here
                        // (on the flusher thread) must only close.
                    }
                })
                .unwrap(),
        );
        *me.lock().unwrap() = Arc::downgrade(&batcher);
        batcher.submit(1).unwrap();
        let mut done = ran.0.lock().unwrap();
        while !*done {
            done = ran.1.wait(done).unwrap();
        }
        drop(done);
        drop(batcher);
        let outcomes = outcomes.lock().unwrap();
        assert!(!outcomes.is_empty(), "the processor called its batcher");
        for (flushed, _) in outcomes.iter() {
            assert_eq!(*flushed, Err(FlushError::Reentrant));
        }
    });
}
