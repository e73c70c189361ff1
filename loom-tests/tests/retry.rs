//! Retry with rewind: a batch whose processor asks for a rewind stays in
//! flight (its items neither done nor droppable) until an attempt ends it.
//! `flush` must wait for it, and a close that arrives while it waits for
//! its next attempt must not end the run before it is processed; every
//! accepted item is processed exactly once, while another producer races.
#![cfg(loom)]

use loom::thread;
use microbatch::{BatchInfo, Retry, Rewind};
use microbatch_loom_tests::{builder, model, trace, Seen};
use std::sync::Arc;
use std::time::Duration;

/// Every batch's first attempt asks for a rewind without taking anything;
/// the second records it. No backoff: the model's clock moves only in a
/// timed park, and the flusher's backoff is one.
fn rewinding(
    seen: &Arc<Seen>,
) -> impl FnMut(&mut Vec<u32>, &BatchInfo) -> Result<(), Rewind> + Send + 'static {
    let seen = Arc::clone(seen);
    move |batch: &mut Vec<u32>, info: &BatchInfo| {
        if info.attempt == 1 {
            trace(format!("processor: batch {} rewinds {:?}", info.seq, batch));
            return Err(Rewind::new("transient"));
        }
        seen.record(batch, info);
        Ok(())
    }
}

fn policy() -> Retry {
    Retry::attempts(2).backoff(Duration::ZERO, Duration::ZERO)
}

fn check_exactly_once(seen: &Seen, mut accepted: Vec<u32>) {
    let mut got = seen.values();
    got.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(got, accepted, "an accepted item lost or duplicated");
}

/// `flush` returns only after the batch holding the flushed item has ended
/// (its second attempt), with another producer racing the flush.
#[test]
fn flush_waits_for_a_retried_batch() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(
            builder(2, 2)
                .retry(policy())
                .build(rewinding(&seen))
                .unwrap(),
        );
        let b = Arc::clone(&batcher);
        let other = thread::spawn(move || b.submit(9).is_ok());
        batcher.submit(1).unwrap();
        batcher.flush().unwrap();
        assert!(
            seen.values().contains(&1),
            "flush returned before the retried batch was processed: {:?}",
            seen.values()
        );
        let mut accepted = vec![1];
        if other.join().unwrap() {
            accepted.push(9);
        }
        let m = Arc::into_inner(batcher).unwrap().shutdown();
        assert_eq!(m.processed, m.submitted);
        assert_eq!((m.failed, m.discarded), (0, 0));
        assert_eq!(m.retries, m.batches(), "every batch was retried once");
        check_exactly_once(&seen, accepted);
    });
}

/// A close racing a batch that waits for its retry: the drain does not end
/// until the retried batch has ended, and `shutdown` reports it processed.
#[test]
fn a_retry_racing_close() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(
            builder(2, 2)
                .retry(policy())
                .build(rewinding(&seen))
                .unwrap(),
        );
        let b = Arc::clone(&batcher);
        let other = thread::spawn(move || b.submit(9).is_ok());
        batcher.submit(1).unwrap();
        let closer = batcher.closer();
        let c = thread::spawn(move || closer.close());
        c.join().unwrap();
        let mut accepted = vec![1];
        if other.join().unwrap() {
            accepted.push(9);
        }
        let m = Arc::into_inner(batcher).unwrap().shutdown();
        assert_eq!(m.processed, accepted.len() as u64, "{m:?}");
        assert_eq!((m.queue_depth, m.in_flight, m.discarded), (0, 0, 0));
        check_exactly_once(&seen, accepted);
    });
}
