//! Model 3: `flush` is a barrier. When it returns `Ok`, every item whose
//! submit returned `Ok` before it was called has been processed, while
//! another producer keeps submitting.
#![cfg(loom)]

use loom::thread;
use microbatch_loom_tests::{builder, model, recorder, Seen};
use std::sync::Arc;

#[test]
fn flush_is_a_barrier() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(3, 3).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        let other = thread::spawn(move || b.submit(9).unwrap());
        batcher.submit(1).unwrap();
        batcher.flush().unwrap();
        assert!(
            seen.values().contains(&1),
            "flush returned before the item submitted before it was processed"
        );
        other.join().unwrap();
        drop(batcher);
    });
}
