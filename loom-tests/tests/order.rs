//! Model 7: per-thread order is kept, and the counters agree at quiescence
//! (submitted = processed, submitted + rejected = attempts).
#![cfg(loom)]

use loom::thread;
use microbatch_loom_tests::{builder, model, recorder, trace, Seen};
use std::sync::Arc;

#[test]
fn per_thread_order_and_counters() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(2, 2).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        let p = thread::spawn(move || {
            b.submit(1).unwrap();
            trace("submit(1) -> Ok");
            b.submit(2).unwrap();
            trace("submit(2) -> Ok");
        });
        let third = batcher.try_submit(3).is_ok();
        trace(format!("try_submit(3) accepted: {third}"));
        p.join().unwrap();
        let report = Arc::try_unwrap(batcher).expect("sole owner").shutdown();
        let v = seen.values();
        let pos = |x| v.iter().position(|&y| y == x);
        assert!(pos(1).unwrap() < pos(2).unwrap(), "per-thread order: {v:?}");
        assert_eq!(v.len(), 2 + usize::from(third));
        assert_eq!(report.submitted, report.processed);
        assert_eq!(report.submitted + report.rejected(), 3);
        assert_eq!(report.queue_depth, 0);
    });
}
