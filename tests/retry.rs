//! Retry with rewind (`Builder::retry`, `Rewind`): what is left is presented
//! again, in order, with nothing new mixed in; the policy ends; `flush`,
//! `close` and `shutdown_timeout` treat a retried batch as in flight; what
//! is left at give-up reaches `on_discard` and tracked jobs resolve.

mod common;

use common::{bounded, Gate, BOUND};
use microbatch::{
    BatchInfo, Batcher, BuildError, Failure, FlushError, Job, JobError, Retry, Rewind,
    ShutdownError,
};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn quick(attempts: u32) -> Retry {
    Retry::attempts(attempts).backoff(Duration::from_micros(100), Duration::from_millis(1))
}

/// What each attempt saw: (seq, attempt, items).
type Attempts = Arc<Mutex<Vec<(u64, u32, Vec<u32>)>>>;

#[test]
fn what_is_left_comes_again_in_order() {
    let seen: Attempts = Arc::default();
    let s = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .max_batch_size(5)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::MAX)
        .retry(quick(3))
        .build(
            move |batch: &mut Vec<u32>, info: &BatchInfo| -> Result<(), Rewind> {
                s.lock()
                    .unwrap()
                    .push((info.seq, info.attempt, batch.clone()));
                assert_eq!(info.len, batch.len());
                if info.attempt == 1 {
                    // The first two are written; the third fails transiently.
                    batch.drain(..2);
                    return Err(Rewind::new("connection reset"));
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    for i in 0..5 {
        batcher.submit(i).unwrap();
    }
    batcher.flush().unwrap();
    let m = batcher.shutdown();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(0, 1, vec![0, 1, 2, 3, 4]), (0, 2, vec![2, 3, 4])]
    );
    assert_eq!((m.processed, m.failed, m.retries), (5, 0, 1));
    assert_eq!((m.batches(), m.processor_errors, m.discarded), (1, 0, 0));
}

#[test]
fn nothing_new_is_mixed_into_a_retried_batch() {
    let seen: Attempts = Arc::default();
    let s = Arc::clone(&seen);
    let gate = Gate::default();
    let g = gate.clone();
    let (asked_tx, asked_rx) = mpsc::channel();
    let batcher = Batcher::builder()
        .max_batch_size(4)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::ZERO)
        .retry(quick(2))
        .build(
            move |batch: &mut Vec<u32>, info: &BatchInfo| -> Result<(), Rewind> {
                s.lock()
                    .unwrap()
                    .push((info.seq, info.attempt, batch.clone()));
                if info.seq == 0 && info.attempt == 1 {
                    asked_tx.send(()).unwrap();
                    // Fails only once the test has queued more: they are
                    // there when the retry is composed.
                    g.wait();
                    return Err(Rewind::new("busy"));
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    batcher.submit(1).unwrap();
    asked_rx.recv_timeout(BOUND).expect("the first attempt");
    // Queued before the retry: room in the batch buffer, but not for these.
    batcher.submit(2).unwrap();
    batcher.submit(3).unwrap();
    gate.open();
    batcher.flush().unwrap();
    let m = batcher.shutdown();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], (0, 1, vec![1]));
    assert_eq!(
        seen[1],
        (0, 2, vec![1]),
        "the retry holds only what was left"
    );
    let later: Vec<u32> = seen[2..].iter().flat_map(|(_, _, b)| b.clone()).collect();
    assert_eq!(later, vec![2, 3]);
    assert!(seen[2..].iter().all(|&(seq, a, _)| seq > 0 && a == 1));
    assert_eq!((m.processed, m.retries), (3, 1));
}

#[test]
fn an_exhausted_policy_hands_what_is_left_to_on_discard() {
    let discarded = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (d, e) = (Arc::clone(&discarded), Arc::clone(&errors));
    let batcher = Batcher::builder()
        .max_batch_size(3)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::MAX)
        .retry(quick(3))
        .on_discard(move |left: &mut Vec<u32>, f: &Failure, info: &BatchInfo| {
            assert!(matches!(f, Failure::Error(err) if err.downcast_ref::<Rewind>().is_some()));
            d.lock().unwrap().push((info.attempt, std::mem::take(left)));
        })
        .on_error(move |f: Failure, info: &BatchInfo| {
            e.lock().unwrap().push((info.attempt, f.to_string()));
        })
        .build(
            |batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), Rewind> {
                // Each attempt gets one item through, then fails.
                batch.remove(0);
                Err(Rewind::new("flaky"))
            },
        )
        .unwrap();
    for i in 0..3 {
        batcher.submit(i).unwrap();
    }
    batcher.flush().unwrap();
    let m = batcher.shutdown();
    // Attempts 1, 2 and 3 each took one item: nothing left to discard, so
    // the hook is not called; with four items one would be.
    assert!(discarded.lock().unwrap().is_empty());
    assert_eq!(errors.lock().unwrap().len(), 1);
    assert_eq!(errors.lock().unwrap()[0].0, 3);
    assert_eq!((m.processed, m.failed, m.discarded), (0, 3, 0));
    assert_eq!((m.retries, m.processor_errors), (2, 1));
}

#[test]
fn give_up_leaves_the_rest_to_on_discard_in_order() {
    let discarded = Arc::new(Mutex::new(Vec::new()));
    let d = Arc::clone(&discarded);
    let batcher = Batcher::builder()
        .max_batch_size(4)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::MAX)
        .retry(quick(2))
        .on_discard(move |left: &mut Vec<u32>, _: &Failure, info: &BatchInfo| {
            d.lock().unwrap().push((info.attempt, std::mem::take(left)));
        })
        .build(
            |batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), Rewind> {
                batch.remove(0);
                Err(Rewind::new("flaky"))
            },
        )
        .unwrap();
    for i in 0..4 {
        batcher.submit(i).unwrap();
    }
    let m = batcher.shutdown();
    assert_eq!(*discarded.lock().unwrap(), vec![(2, vec![2, 3])]);
    assert_eq!((m.failed, m.discarded, m.retries), (4, 2, 1));
}

#[test]
fn the_deadline_ends_a_policy_that_would_run_for_hours() {
    let batcher = Batcher::builder()
        .max_batch_size(1)
        .retry(
            Retry::attempts(u32::MAX)
                .backoff(Duration::from_millis(1), Duration::from_millis(1))
                .deadline(Duration::from_millis(30)),
        )
        .build(|_: &mut Vec<u32>, _: &BatchInfo| -> Result<(), Rewind> {
            Err(Rewind::new("down for good"))
        })
        .unwrap();
    batcher.submit(1).unwrap();
    // Without the deadline this flush would wait for 2^32 attempts.
    let m = bounded("a flush bounded by the retry deadline", move || {
        batcher.flush().unwrap();
        batcher.shutdown()
    });
    assert_eq!((m.failed, m.discarded, m.processor_errors), (1, 1, 1));
    assert!(m.retries >= 1, "it did retry: {m:?}");
}

#[test]
fn other_errors_panics_and_no_policy_are_not_retried() {
    // A plain error with a policy.
    let batcher = Batcher::builder()
        .retry(quick(5))
        .build(|_: &mut Vec<u32>, _: &BatchInfo| -> Result<(), String> { Err("permanent".into()) })
        .unwrap();
    batcher.submit(1).unwrap();
    let m = batcher.shutdown();
    assert_eq!((m.retries, m.failed, m.processor_errors), (0, 1, 1));

    // A panic with a policy.
    let batcher = Batcher::builder()
        .retry(quick(5))
        .build(|_: &mut Vec<u32>, _: &BatchInfo| -> () { panic!("bug") })
        .unwrap();
    batcher.submit(1).unwrap();
    let m = batcher.shutdown();
    assert_eq!((m.retries, m.failed, m.processor_panics), (0, 1, 1));

    // A rewind without a policy is an error like any other.
    let batcher = Batcher::builder()
        .build(|_: &mut Vec<u32>, _: &BatchInfo| -> Result<(), Rewind> {
            Err(Rewind::new("would like another go"))
        })
        .unwrap();
    batcher.submit(1).unwrap();
    let m = batcher.shutdown();
    assert_eq!((m.retries, m.failed, m.discarded), (0, 1, 1));

    // A rewind that left nothing to present ends the batch as failed.
    let batcher = Batcher::builder()
        .retry(quick(5))
        .build(
            |batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), Rewind> {
                batch.clear();
                Err(Rewind::new("nothing left"))
            },
        )
        .unwrap();
    batcher.submit(1).unwrap();
    let m = batcher.shutdown();
    assert_eq!((m.retries, m.failed, m.discarded), (0, 1, 0));
}

#[test]
fn zero_attempts_is_refused() {
    let r = Batcher::builder()
        .retry(Retry::attempts(0))
        .build(|b: &mut Vec<u32>, _: &BatchInfo| b.clear());
    assert!(matches!(r, Err(BuildError::ZeroAttempts)));
}

#[test]
fn flush_waits_for_a_retried_batch() {
    let gate = Gate::default();
    let g = gate.clone();
    let (asked_tx, asked_rx) = mpsc::channel();
    let batcher = Arc::new(
        Batcher::builder()
            .max_delay(Duration::ZERO)
            .retry(quick(2))
            .build(
                move |batch: &mut Vec<u32>, info: &BatchInfo| -> Result<(), Rewind> {
                    if info.attempt == 1 {
                        asked_tx.send(()).unwrap();
                        return Err(Rewind::new("later"));
                    }
                    g.wait();
                    batch.clear();
                    Ok(())
                },
            )
            .unwrap(),
    );
    batcher.submit(7).unwrap();
    asked_rx.recv_timeout(BOUND).expect("the first attempt");
    // The retry is held at the gate: the item is in flight, not processed.
    assert_eq!(
        batcher.flush_timeout(Duration::from_millis(20)),
        Err(FlushError::Timeout)
    );
    let m = batcher.metrics();
    assert_eq!((m.processed, m.in_flight, m.retries), (0, 1, 1));
    gate.open();
    batcher.flush().unwrap();
    assert_eq!(batcher.metrics().processed, 1);
}

#[test]
fn a_close_lets_a_retried_batch_finish() {
    let (asked_tx, asked_rx) = mpsc::channel();
    let batcher = Batcher::builder()
        .max_batch_size(2)
        .max_delay(Duration::ZERO)
        .retry(quick(3))
        .build(
            move |batch: &mut Vec<u32>, info: &BatchInfo| -> Result<(), Rewind> {
                if info.attempt == 1 {
                    let _ = asked_tx.send(());
                    return Err(Rewind::new("later"));
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    batcher.submit(1).unwrap();
    asked_rx.recv_timeout(BOUND).expect("the first attempt");
    // Racing the retry's backoff: refused after, processed before.
    batcher.close();
    assert!(batcher.submit(2).unwrap_err().is_closed());
    let m = bounded("shutdown with a retry pending", move || batcher.shutdown());
    assert_eq!((m.processed, m.failed, m.retries), (1, 0, 1));
}

#[test]
fn shutdown_timeout_bounds_a_batch_in_retry() {
    let batcher = Batcher::builder()
        .max_delay(Duration::ZERO)
        .retry(Retry::attempts(2).backoff(Duration::from_secs(1), Duration::from_secs(1)))
        .build(|_: &mut Vec<u32>, _: &BatchInfo| -> Result<(), Rewind> { Err(Rewind::new("down")) })
        .unwrap();
    batcher.submit(1).unwrap();
    while batcher.metrics().in_flight == 0 {
        std::thread::yield_now();
    }
    match batcher.shutdown_timeout(Duration::from_millis(20)) {
        Err(ShutdownError::Timeout(m)) => assert_eq!(m.in_flight, 1),
        other => {
            panic!("expected a timeout with the retry's second attempt a second away: {other:?}")
        }
    }
    // The policy ends after its second attempt: the batch fails.
    let m = bounded("the end of the retry", move || batcher.shutdown());
    assert_eq!((m.failed, m.retries), (1, 1));
}

#[test]
fn tracked_jobs_left_at_give_up_resolve() {
    let batcher = Batcher::builder()
        .retry(quick(2))
        .build(
            |_: &mut Vec<Job<u32, u32, String>>, _: &BatchInfo| -> Result<(), Rewind> {
                Err(Rewind::new("down"))
            },
        )
        .unwrap();
    let ticket = batcher.submit_tracked(1).unwrap();
    let r = bounded("a ticket of a job given up", move || ticket.wait());
    assert_eq!(r, Err(JobError::Unanswered));
    assert_eq!(batcher.shutdown().retries, 1);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let p = Retry::attempts(10).backoff(Duration::from_millis(3), Duration::from_millis(20));
    let waits: Vec<_> = (1..=6).map(|a| p.delay_before(a).as_millis()).collect();
    assert_eq!(waits, vec![0, 3, 6, 12, 20, 20]);
    assert_eq!(p.delay_before(u32::MAX), Duration::from_millis(20));
}

#[test]
fn a_tracked_processor_rewinds_what_it_did_not_answer() {
    let attempts: Attempts = Arc::default();
    let a = Arc::clone(&attempts);
    let batcher = Batcher::builder()
        .max_batch_size(4)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::MAX)
        .retry(quick(3))
        .build_tracked(
            move |jobs: &mut Vec<Job<u32, u32, String>>, info: &BatchInfo| -> Result<(), Rewind> {
                let inputs = jobs.iter().map(|j| *j.input()).collect();
                a.lock().unwrap().push((info.seq, info.attempt, inputs));
                for job in jobs.iter_mut() {
                    // Item 3 fails on the first attempt; the two before it
                    // are answered and left in the batch.
                    if *job.input() == 3 && info.attempt == 1 {
                        return Err(Rewind::new("connection reset"));
                    }
                    job.complete(Ok(*job.input() * 10 + info.attempt));
                }
                Ok(())
            },
        )
        .unwrap();
    let tickets: Vec<_> = (1..=4)
        .map(|i| batcher.submit_tracked(i).unwrap())
        .collect();
    let answers = bounded("tickets of a retried tracked batch", move || {
        tickets.into_iter().map(|t| t.wait()).collect::<Vec<_>>()
    });
    assert_eq!(answers, vec![Ok(11), Ok(21), Ok(32), Ok(42)]);
    assert_eq!(
        *attempts.lock().unwrap(),
        vec![(0, 1, vec![1, 2, 3, 4]), (0, 2, vec![3, 4])],
        "the answered jobs are not presented again"
    );
    let m = batcher.shutdown();
    assert_eq!((m.processed, m.retries, m.failed), (4, 1, 0));
}

#[test]
fn a_retry_attempt_reports_the_weight_of_what_it_holds() {
    let seen: Arc<Mutex<Vec<(u32, u64, usize)>>> = Arc::default();
    let s = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .max_batch_size(8)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::MAX)
        .max_batch_weight(100, |x: &u64| *x)
        .retry(quick(3))
        .build(
            move |batch: &mut Vec<u64>, info: &BatchInfo| -> Result<(), Rewind> {
                s.lock()
                    .unwrap()
                    .push((info.attempt, info.weight, info.len));
                assert_eq!(info.weight, batch.iter().sum::<u64>());
                if info.attempt == 1 {
                    batch.remove(0);
                    return Err(Rewind::new("partial write"));
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    for w in [10, 20, 30] {
        batcher.submit(w).unwrap();
    }
    batcher.flush().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(1, 60, 3), (2, 50, 2)]);
    let m = batcher.shutdown();
    // The batch's weight, every attempt's items, is what was processed.
    assert_eq!((m.processed, m.processed_weight, m.retries), (3, 60, 1));
}
