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
        let (batcher, mut flusher) = builder(2, 2).build_with_flusher(recorder(&seen)).unwrap();
        let runner = thread::spawn(move || flusher.run());
        let ok = batcher.try_submit(1).is_ok();
        assert!(ok, "intake is open before and while the flusher runs");
        let report = batcher.shutdown();
        let final_report = runner.join().unwrap();
        assert_eq!(seen.values(), vec![1]);
        // `shutdown` waits for a running flusher; one that has not started
        // yet drains when it runs (documented), so the item is processed or
        // still queued (or in the processor) in the report, never lost.
        assert_eq!(report.processed + report.in_flight + report.queue_depth, 1);
        assert_eq!(final_report.processed, 1);
    });
}

/// Restart (the Go `Start` after a cancelled context): the flusher runs,
/// is stopped by a close, runs again and reopens intake, and is stopped
/// again. Every accepted item is processed once, across both runs; a submit
/// refused as closed always finds `is_closed()` true.
#[test]
fn user_run_flusher_restarts() {
    model(|| {
        let seen = Seen::new();
        let (batcher, mut flusher) = builder(2, 2).build_with_flusher(recorder(&seen)).unwrap();
        let runner = thread::spawn(move || {
            let first = flusher.run();
            let second = flusher.run();
            (first, second)
        });
        let mut accepted = Vec::new();
        if batcher.try_submit(1).is_ok() {
            accepted.push(1);
        }
        batcher.close();
        // Wait for the second run to reopen intake.
        while batcher.is_closed() {
            thread::yield_now();
        }
        match batcher.try_submit(2) {
            Ok(()) => accepted.push(2),
            Err(e) => assert!(!e.is_closed() || batcher.is_closed()),
        }
        batcher.close();
        let (first, second) = runner.join().unwrap();
        assert_eq!(seen.values(), accepted);
        assert!(first.processed <= second.processed);
        assert_eq!(second.processed, accepted.len() as u64);
    });
}

/// A close racing a restart: the first run has ended, then one thread runs
/// the flusher again while another closes. Whichever comes first, the
/// second run ends (the close is never lost), the batcher ends closed, and
/// an item accepted in between is processed.
#[test]
fn close_racing_a_restart() {
    model(|| {
        let seen = Seen::new();
        let (batcher, mut flusher) = builder(2, 2).build_with_flusher(recorder(&seen)).unwrap();
        batcher.close();
        flusher.run();
        let runner = thread::spawn(move || flusher.run());
        let accepted = batcher.try_submit(1).is_ok();
        batcher.close();
        let second = runner.join().unwrap();
        assert!(batcher.is_closed());
        assert_eq!(second.processed, u64::from(accepted));
        assert_eq!(seen.values().len(), usize::from(accepted));
    });
}
