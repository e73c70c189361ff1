//! Model 10: the metrics snapshot (the sequence lock in
//! `metrics::FlusherStats`). A producer fills a one-slot shard, and again once
//! the flusher has taken the first item, while a reader takes a snapshot: every snapshot must
//! add up (`submitted == processed + failed + in_flight + queue_depth`) and
//! stay within the bounds (`queue_depth <= capacity`, `in_flight <= batch`),
//! however the reads interleave with the flusher's stores and the
//! producer's reservations.
#![cfg(loom)]

use loom::thread;
use microbatch_loom_tests::{builder, model, recorder, Seen};
use std::sync::Arc;

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
        let m = batcher.metrics();
        assert_eq!(
            m.processed + m.failed + m.in_flight + m.queue_depth,
            m.submitted,
            "{m:?}"
        );
        assert!(m.queue_depth <= 1 && m.in_flight <= 1, "{m:?}");
        let second = producer.join().unwrap();
        let n = 1 + usize::from(second);
        seen.wait_for(n);
        assert_eq!(seen.values().len(), n);
    });
}
