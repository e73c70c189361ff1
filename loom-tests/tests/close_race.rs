//! Model 1: submits racing `close`. Every item whose submit returned `Ok` is
//! processed exactly once; every other one comes back to its submitter.
#![cfg(loom)]

use loom::thread;
use microbatch_loom_tests::{builder, model, recorder, trace, Seen};
use std::sync::Arc;

#[test]
fn submit_races_close() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(2, 2).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || {
            let mut accepted = Vec::new();
            for x in [1, 2] {
                let r = b.try_submit(x);
                trace(format!("try_submit({x}) -> {r:?}"));
                match r {
                    Ok(()) => accepted.push(x),
                    Err(e) => {
                        assert!(e.is_closed(), "only a close can refuse here");
                        assert_eq!(e.into_inner(), x, "the refused item comes back");
                    }
                }
            }
            accepted
        });
        batcher.close();
        trace("closed");
        let accepted = producer.join().unwrap();
        let report = Arc::try_unwrap(batcher).expect("sole owner").shutdown();
        assert_eq!(
            seen.values(),
            accepted,
            "accepted = processed, once, in order"
        );
        assert_eq!(report.submitted, accepted.len() as u64);
        assert_eq!(report.processed, accepted.len() as u64);
        assert_eq!(report.rejected_closed, 2 - accepted.len() as u64);
    });
}
