//! Poll mode (`Flusher::poll`, `next_deadline`): a flusher driven from the
//! user's own loop. At most one batch per poll, never a park; `flush` from
//! other threads completes as the owner polls; the polling thread is never
//! made to wait for itself; a close ends in `Closed` with everything drained.

mod common;

use common::{bounded, BOUND};
use microbatch::{
    Backpressure, BatchInfo, Batcher, FlushError, PollState, Retry, Rewind, ShutdownError, Trigger,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Seen = Arc<Mutex<Vec<(Trigger, Vec<u64>)>>>;

fn recorder(seen: &Seen) -> impl FnMut(&mut Vec<u64>, &BatchInfo) + Send + 'static {
    let s = Arc::clone(seen);
    move |batch: &mut Vec<u64>, info: &BatchInfo| {
        s.lock()
            .unwrap()
            .push((info.trigger, std::mem::take(batch)));
    }
}

/// Polls until `done` or `BOUND` passes (then fails the test).
fn poll_until(
    flusher: &mut microbatch::Flusher<u64>,
    what: &str,
    mut done: impl FnMut(PollState) -> bool,
) {
    let start = Instant::now();
    loop {
        let p = flusher.poll();
        if done(p.state) {
            return;
        }
        assert!(
            start.elapsed() < BOUND,
            "polled for {BOUND:?} waiting for {what}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn one_poll_dispatches_at_most_one_batch() {
    let seen = Seen::default();
    let (batcher, mut flusher) = Batcher::builder()
        .max_batch_size(2)
        .capacity(8)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::MAX)
        .build_with_flusher(recorder(&seen))
        .unwrap();
    let p = flusher.poll();
    assert_eq!((p.items, p.state), (0, PollState::Idle));
    assert_eq!(flusher.next_deadline(), None);
    for i in 0..5 {
        batcher.submit(i).unwrap();
    }
    let p = flusher.poll();
    assert_eq!((p.items, p.state), (2, PollState::Pending));
    assert!(flusher.next_deadline().is_some(), "more is due at once");
    let p = flusher.poll();
    assert_eq!((p.items, p.state), (2, PollState::Pending));
    // One item, no time trigger: pending, nothing due by time.
    let p = flusher.poll();
    assert_eq!((p.items, p.state), (0, PollState::Pending));
    assert_eq!(flusher.next_deadline(), None);
    assert_eq!(batcher.metrics().processed, 4);

    // A flush from another thread completes when the owner polls.
    let b = Arc::new(batcher);
    let b2 = Arc::clone(&b);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(b2.flush()).unwrap());
    let start = Instant::now();
    let flushed = loop {
        flusher.poll();
        if let Ok(r) = rx.try_recv() {
            break r;
        }
        assert!(start.elapsed() < BOUND, "the flush never completed");
        std::thread::yield_now();
    };
    assert_eq!(flushed, Ok(()));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.last().unwrap(), &(Trigger::Flush, vec![4]));
    assert_eq!(seen.iter().map(|(_, b)| b.len()).sum::<usize>(), 5);
    assert_eq!(
        b.metrics().flusher_wakeups,
        0,
        "a polled flusher is never woken"
    );
}

#[test]
fn next_deadline_is_the_time_trigger() {
    let seen = Seen::default();
    let delay = Duration::from_millis(30);
    let (batcher, mut flusher) = Batcher::builder()
        .max_delay(delay)
        .build_with_flusher(recorder(&seen))
        .unwrap();
    let before = Instant::now();
    batcher.submit(1).unwrap();
    let p = flusher.poll();
    let after = Instant::now();
    assert_eq!((p.items, p.state), (0, PollState::Pending));
    let due = flusher.next_deadline().expect("a time trigger is pending");
    // The bound is from before the submit (`BatchInfo::oldest_age`), and
    // never later than the item's arrival plus the delay.
    assert!(due <= after + delay, "{:?} after the poll", due - after);
    assert!(
        due + Duration::from_millis(5) >= before,
        "not in the past by far"
    );
    // Not due yet: polls before the deadline leave the item queued.
    if Instant::now() + Duration::from_millis(5) < due {
        assert_eq!(flusher.poll().items, 0);
    }
    poll_until(&mut flusher, "the time trigger", |_| {
        !seen.lock().unwrap().is_empty()
    });
    assert!(Instant::now() >= due, "dispatched before its deadline");
    assert_eq!(seen.lock().unwrap()[0], (Trigger::Time, vec![1]));
}

#[test]
fn the_polling_thread_is_never_made_to_wait_for_itself() {
    for backpressure in [Backpressure::Block, Backpressure::BlockTimeout(BOUND)] {
        // All on one bounded thread, the poller: a wait for itself would
        // fail the test instead of hanging it.
        bounded("calls from the polling thread", move || {
            let seen = Seen::default();
            let (batcher, mut flusher) = Batcher::builder()
                .max_batch_size(2)
                .capacity(2)
                .shards(1)
                .lanes(0)
                .max_delay(Duration::MAX)
                .backpressure(backpressure)
                .build_with_flusher(recorder(&seen))
                .unwrap();
            flusher.poll(); // this thread polls
            batcher.submit(1).unwrap();
            batcher.submit(2).unwrap();
            // Full, and only this thread could make room: refused at once.
            let refused = batcher.submit(3).unwrap_err();
            match backpressure {
                Backpressure::Block => assert!(refused.is_full(), "{refused:?}"),
                _ => assert!(refused.is_timeout(), "{refused:?}"),
            }
            assert_eq!(batcher.flush(), Err(FlushError::Reentrant));
            assert!(matches!(
                batcher.shutdown_timeout(BOUND),
                Err(ShutdownError::Reentrant(_))
            ));
            // The close above is seen at the next polls: drained, then Closed.
            poll_until(&mut flusher, "the drain", |s| s == PollState::Closed);
            assert_eq!(batcher.metrics().processed, 2);
            // From the polling thread, shutdown only closes: it returns.
            batcher.shutdown();
        });
    }
}

#[test]
fn a_submit_from_another_thread_waits_for_the_poller() {
    let seen = Seen::default();
    let (batcher, mut flusher) = Batcher::builder()
        .max_batch_size(2)
        .capacity(2)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::MAX)
        .build_with_flusher(recorder(&seen))
        .unwrap();
    flusher.poll();
    batcher.submit(1).unwrap();
    batcher.submit(2).unwrap();
    let batcher = Arc::new(batcher);
    let b = Arc::clone(&batcher);
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let producer = std::thread::spawn(move || {
        let r = b.submit(3);
        d.store(true, Ordering::SeqCst);
        r
    });
    // The producer blocks for room until a poll takes the full batch.
    poll_until(&mut flusher, "the blocked producer", |_| {
        done.load(Ordering::SeqCst)
    });
    assert!(producer.join().unwrap().is_ok());
}

#[test]
fn polls_racing_producers_and_a_close_lose_nothing() {
    for round in 0..20 {
        let seen = Seen::default();
        let (batcher, mut flusher) = Batcher::builder()
            .max_batch_size(16)
            .capacity(32)
            .max_delay(Duration::from_micros(50))
            .build_with_flusher(recorder(&seen))
            .unwrap();
        let batcher = Arc::new(batcher);
        let producers: Vec<_> = (0..3u64)
            .map(|p| {
                let b = Arc::clone(&batcher);
                std::thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for i in 0..2_000u64 {
                        let item = p << 32 | i;
                        match b.submit(item) {
                            Ok(()) => accepted.push(item),
                            Err(e) => {
                                assert!(e.is_closed(), "{e:?}");
                                break;
                            }
                        }
                    }
                    accepted
                })
            })
            .collect();
        let b = Arc::clone(&batcher);
        let closer = std::thread::spawn(move || {
            // Close once some items are through (or at once every fourth
            // round): the close races the producers and the polls.
            if round % 4 != 0 {
                while b.metrics().processed < 500 {
                    std::thread::yield_now();
                }
            }
            b.shutdown_timeout(BOUND).map(|m| m.processed)
        });
        poll_until(&mut flusher, "the close", |s| s == PollState::Closed);
        assert_eq!(flusher.poll().state, PollState::Closed, "stays closed");
        let mut accepted: Vec<u64> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        let shut = closer
            .join()
            .unwrap()
            .expect("shutdown returned once drained");
        let mut got: Vec<u64> = seen
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| b.clone())
            .collect();
        // Per-producer order, then the multiset.
        for p in 0..3u64 {
            let mine: Vec<u64> = got.iter().copied().filter(|x| x >> 32 == p).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "producer {p} out of order"
            );
        }
        got.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(got, accepted, "round {round}");
        assert_eq!(shut, accepted.len() as u64);
    }
}

#[test]
fn a_poll_never_reopens_and_run_does() {
    let seen = Seen::default();
    let (batcher, mut flusher) = Batcher::builder()
        .build_with_flusher(recorder(&seen))
        .unwrap();
    batcher.submit(1).unwrap();
    batcher.close();
    poll_until(&mut flusher, "the drain", |s| s == PollState::Closed);
    assert_eq!(flusher.poll().state, PollState::Closed);
    assert!(batcher.is_closed());
    assert!(batcher.submit(2).unwrap_err().is_closed());
    // `run` restarts (and reopens) as before.
    let closer = batcher.closer();
    let worker = std::thread::spawn(move || (flusher.run(), flusher));
    let start = Instant::now();
    while batcher.is_closed() {
        assert!(start.elapsed() < BOUND, "run did not reopen");
        std::thread::yield_now();
    }
    batcher.submit(3).unwrap();
    closer.close();
    let (m, _flusher) = worker.join().unwrap();
    assert_eq!(m.processed, 2);
}

#[test]
fn a_flusher_dropped_mid_poll_drains_on_the_dropping_thread() {
    let seen = Seen::default();
    let (batcher, mut flusher) = Batcher::builder()
        .max_delay(Duration::MAX)
        .build_with_flusher(recorder(&seen))
        .unwrap();
    batcher.submit(1).unwrap();
    assert_eq!(flusher.poll().state, PollState::Pending);
    batcher.submit(2).unwrap();
    drop(flusher);
    assert!(batcher.is_closed());
    let m = bounded("shutdown after the drop", move || batcher.shutdown());
    assert_eq!(m.processed, 2);
    assert_eq!(seen.lock().unwrap()[0].0, Trigger::Shutdown);
}

#[test]
fn a_retry_backoff_is_a_deadline_not_a_sleep() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a = Arc::clone(&attempts);
    let (batcher, mut flusher) = Batcher::builder()
        .max_delay(Duration::ZERO)
        .retry(Retry::attempts(2).backoff(Duration::from_millis(200), Duration::from_secs(1)))
        .build_with_flusher(
            move |batch: &mut Vec<u64>, info: &BatchInfo| -> Result<(), Rewind> {
                a.lock().unwrap().push(info.attempt);
                if info.attempt == 1 {
                    return Err(Rewind::new("later"));
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    batcher.submit(1).unwrap();
    let p = flusher.poll();
    assert_eq!((p.items, p.state), (1, PollState::Pending));
    let due = flusher.next_deadline().expect("the retry is due later");
    // The next poll returns at once, the retry still ahead.
    let p = flusher.poll();
    let now = Instant::now();
    if now < due {
        assert_eq!((p.items, p.state), (0, PollState::Pending));
        assert!(flusher.next_deadline().unwrap() > now);
    }
    poll_until(&mut flusher, "the retry", |s| s == PollState::Idle);
    assert!(Instant::now() >= due);
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2]);
    assert_eq!(batcher.metrics().processed, 1);
    batcher.close();
    poll_until(&mut flusher, "the close", |s| s == PollState::Closed);
}
