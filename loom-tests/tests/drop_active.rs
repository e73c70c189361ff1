//! Model 5: the batcher dropped while a producer is still submitting: the
//! last handle's drop (on either thread) drains every accepted item.
#![cfg(loom)]

use loom::thread;
use microbatch_loom_tests::{builder, model, recorder, Seen};
use std::sync::Arc;

#[test]
fn drop_while_producer_active() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(2, 2).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        let closer = batcher.closer();
        let producer = thread::spawn(move || {
            let mut ok = Vec::new();
            for x in [1, 2] {
                if b.try_submit(x).is_ok() {
                    ok.push(x);
                }
            }
            ok
            // `b` dropped here: maybe the last handle.
        });
        closer.close();
        drop(batcher);
        let accepted = producer.join().unwrap();
        // Whichever thread dropped last has joined the flusher.
        assert_eq!(seen.values(), accepted);
    });
}
