//! Weight limits: the item that did not fit a batch is carried by the
//! flusher into the next one. It must count as queued (not processed) in
//! what the flusher publishes until its own batch is done: `flush` waits
//! for it, `close` drains it, and every accepted item is processed exactly
//! once, while another producer races the flush and the close.
#![cfg(loom)]

use loom::thread;
use microbatch_loom_tests::{builder, model, recorder, Seen};
use std::sync::Arc;

/// Items 1 and 2 weigh 6 each (limit 10: item 2 is carried out of the
/// first batch); the racing producer's 9 weighs 1.
fn weigh(x: &u32) -> u64 {
    if *x == 9 {
        1
    } else {
        6
    }
}

fn check_exactly_once(seen: &Seen, mut accepted: Vec<u32>) {
    let mut got = seen.values();
    got.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(got, accepted, "an accepted item lost or duplicated");
}

#[test]
fn flush_waits_for_the_carried_item() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(
            builder(3, 3)
                .max_batch_weight(10, weigh)
                .build(recorder(&seen))
                .unwrap(),
        );
        let b = Arc::clone(&batcher);
        let other = thread::spawn(move || b.submit(9).is_ok());
        batcher.submit(1).unwrap();
        batcher.submit(2).unwrap();
        batcher.flush().unwrap();
        let values = seen.values();
        assert!(
            values.contains(&1) && values.contains(&2),
            "flush returned before the carried item was processed: {values:?}"
        );
        let mut accepted = vec![1, 2];
        if other.join().unwrap() {
            accepted.push(9);
        }
        let m = Arc::into_inner(batcher).unwrap().shutdown();
        assert_eq!(m.processed, m.submitted);
        assert_eq!((m.queue_depth, m.in_flight), (0, 0));
        check_exactly_once(&seen, accepted);
    });
}

#[test]
fn close_drains_the_carried_item() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(
            builder(3, 3)
                .max_batch_weight(10, weigh)
                .build(recorder(&seen))
                .unwrap(),
        );
        batcher.submit(1).unwrap();
        batcher.submit(2).unwrap();
        let b = Arc::clone(&batcher);
        let other = thread::spawn(move || b.submit(9).is_ok());
        let closer = batcher.closer();
        let c = thread::spawn(move || closer.close());
        let flushed = batcher.flush();
        if flushed.is_ok() {
            assert!(
                seen.values().contains(&2),
                "flush returned before the carried item was processed"
            );
        }
        c.join().unwrap();
        let mut accepted = vec![1, 2];
        if other.join().unwrap() {
            accepted.push(9);
        }
        let m = Arc::into_inner(batcher).unwrap().shutdown();
        assert_eq!(m.processed, m.submitted);
        assert_eq!(m.processed, accepted.len() as u64);
        check_exactly_once(&seen, accepted);
    });
}
