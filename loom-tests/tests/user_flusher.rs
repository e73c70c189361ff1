//! Model 8: the user-run `Flusher` (the Go `Start(ctx)` shape): the same
//! loop on the caller's thread, stopped by a `Closer`; nothing accepted is
//! lost, and `shutdown` waits for a running flusher.
#![cfg(loom)]

use loom::thread;
use microbatch_loom_tests::{builder, model, recorder, Seen};

#[test]
fn user_run_flusher() {
    model(|| {
        let seen = Seen::new();
        let (batcher, flusher) = builder(2, 2).build_with_flusher(recorder(&seen)).unwrap();
        let runner = thread::spawn(move || flusher.run());
        let ok = batcher.try_submit(1).is_ok();
        assert!(ok, "intake is open before and while the flusher runs");
        let report = batcher.shutdown();
        let final_report = runner.join().unwrap();
        assert_eq!(seen.values(), vec![1]);
        // `shutdown` waits for a running flusher; one that has not started
        // yet drains when it runs (documented), so the item is processed or
        // still queued in the report, never lost.
        assert_eq!(report.processed + report.queue_depth, 1);
        assert_eq!(final_report.processed, 1);
    });
}
