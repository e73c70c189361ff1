//! Model 2: the flusher going to sleep against a producer's push. No lost
//! wake-up: a full batch is dispatched with no other event (size trigger),
//! and a lone item is dispatched by the time trigger with no further
//! arrivals. A lost wake-up leaves every thread blocked: loom reports it.
#![cfg(loom)]

use loom::thread;
use microbatch::Trigger;
use microbatch_loom_tests::{builder, model, recorder, Seen};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn size_trigger_wakes_sleeping_flusher() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(2, 2).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || {
            b.submit(1).unwrap();
            b.submit(2).unwrap();
        });
        // No flush, no close, no time trigger: only the size wake-up can
        // get the batch processed.
        seen.wait_for(2);
        producer.join().unwrap();
        assert_eq!(seen.values(), vec![1, 2]);
        assert_eq!(seen.triggers(), vec![Trigger::Size, Trigger::Size]);
    });
}

#[test]
fn size_trigger_across_two_shards() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(2, 2).shards(2).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || b.submit(1).unwrap());
        batcher.submit(2).unwrap();
        seen.wait_for(2);
        producer.join().unwrap();
        let mut v = seen.values();
        v.sort_unstable();
        assert_eq!(v, vec![1, 2]);
    });
}

/// The flusher may already sleep until woken (no idle polls): the first
/// item must wake it to start its time trigger.
#[test]
fn time_trigger_without_further_arrivals() {
    time_trigger(0);
}

/// The flusher polls while idle (two polls here): the item is found by a
/// poll or, after the polls, by the first-item wake.
#[test]
fn time_trigger_while_polling() {
    time_trigger(2);
}

fn time_trigger(idle_polls: u32) {
    model(move || {
        let seen = Seen::new();
        let batcher = builder(2, 2)
            .max_delay(Duration::from_millis(1))
            .idle_polls(idle_polls)
            .build(recorder(&seen))
            .unwrap();
        batcher.submit(7).unwrap();
        // One item, below the batch size, nothing after it.
        seen.wait_for(1);
        assert_eq!(seen.values(), vec![7]);
        assert_eq!(seen.triggers(), vec![Trigger::Time]);
    });
}
