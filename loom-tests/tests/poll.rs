//! Poll mode: the flusher driven by `Flusher::poll` from a loop on the
//! user's thread, which never parks. A `flush` from another thread returns
//! once the owner has polled the flushed item through; a close racing the
//! polls is drained before a poll says `Closed`; a `shutdown` waiting on
//! another thread returns when the polled run ends; a batch in retry is
//! finished by later polls. Every accepted item is processed exactly once.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use microbatch::{BatchInfo, Flusher, PollState, Retry, Rewind};
use microbatch_loom_tests::{builder, model, recorder, trace, Seen};
use std::sync::Arc;
use std::time::Duration;

/// The owner's loop: polls until the run is over (yielding between polls,
/// as an event loop does its other work), and hands the flusher back so
/// that its drop cannot end the run in the poll loop's place. `started` is
/// set after the first poll, which starts the run: a `shutdown` before it
/// finds no run to wait for (documented, as for `run`).
fn poll_to_closed(mut flusher: Flusher<u32>, started: Arc<AtomicBool>) -> Flusher<u32> {
    loop {
        let p = flusher.poll();
        trace(format!("poll: {p:?}"));
        started.store(true, Ordering::SeqCst);
        if p.state == PollState::Closed {
            return flusher;
        }
        thread::yield_now();
    }
}

fn check_exactly_once(seen: &Seen, mut accepted: Vec<u32>) {
    let mut got = seen.values();
    got.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(got, accepted, "an accepted item lost or duplicated");
}

/// A producer submits and flushes while the owner polls and another thread
/// closes the batcher: the flush returns only after its item is processed
/// (or is refused by the close), and a `shutdown` only after the polled run
/// has drained everything accepted.
#[test]
fn polls_racing_a_flush_and_a_shutdown() {
    model(|| {
        let seen = Seen::new();
        let (batcher, flusher) = builder(2, 2).build_with_flusher(recorder(&seen)).unwrap();
        let started = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&started);
        let owner = thread::spawn(move || poll_to_closed(flusher, s));
        let batcher = Arc::new(batcher);
        let b = Arc::clone(&batcher);
        let producer = thread::spawn(move || {
            let accepted = b.submit(1).is_ok();
            if b.flush().is_ok() {
                assert_eq!(
                    b.metrics().processed,
                    u64::from(accepted),
                    "flush returned before the owner polled the item through"
                );
            }
            accepted
        });
        batcher.close();
        let accepted = producer.join().unwrap();
        while !started.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        let m = Arc::into_inner(batcher).unwrap().shutdown();
        assert_eq!(m.processed, u64::from(accepted), "{m:?}");
        assert_eq!((m.queue_depth, m.in_flight), (0, 0));
        let flusher = owner.join().unwrap();
        drop(flusher);
        check_exactly_once(&seen, if accepted { vec![1] } else { vec![] });
    });
}

/// A batch that asks for a rewind while a close races the polls: the polls
/// make its second attempt, and only then say `Closed`.
#[test]
fn a_polled_retry_racing_close() {
    model(|| {
        let seen = Seen::new();
        let s = Arc::clone(&seen);
        let (batcher, flusher) = builder(2, 2)
            .retry(Retry::attempts(2).backoff(Duration::ZERO, Duration::ZERO))
            .build_with_flusher(move |batch: &mut Vec<u32>, info: &BatchInfo| {
                if info.attempt == 1 {
                    return Err(Rewind::new("transient"));
                }
                s.record(batch, info);
                Ok(())
            })
            .unwrap();
        let owner = thread::spawn(move || poll_to_closed(flusher, Arc::default()));
        let accepted = batcher.submit(1).is_ok();
        let closer = batcher.closer();
        let c = thread::spawn(move || closer.close());
        c.join().unwrap();
        let flusher = owner.join().unwrap();
        let m = batcher.metrics();
        assert_eq!(m.processed, u64::from(accepted), "{m:?}");
        assert_eq!((m.queue_depth, m.in_flight, m.discarded), (0, 0, 0));
        drop(flusher);
        check_exactly_once(&seen, if accepted { vec![1] } else { vec![] });
    });
}
