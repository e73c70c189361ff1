//! One or more tests per point of "What must hold" in the design brief. Each
//! would fail if its point broke.

mod common;

use common::{
    bounded, channel_processor, recv, recv_items, wait_for_blocked, DropCounted, Gate, BOUND,
};
use microbatch::{
    Backpressure, BatchInfo, Batcher, FlushError, SubmitError, Trigger, TrySubmitError,
    WaitStrategy,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Point 1: nothing lost, nothing duplicated — including submits racing
/// `shutdown` and items still queued when the batcher is dropped.
#[test]
fn nothing_lost_nothing_duplicated_across_shutdown_race() {
    for round in 0..20u64 {
        let drops = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<HashMap<(u32, u64), u32>>> = Arc::default();
        let s = Arc::clone(&seen);
        let batcher = Arc::new(
            Batcher::builder()
                .max_batch_size(8)
                .shards(2)
                .capacity(16)
                .build(move |batch: &mut Vec<DropCounted>, _: &BatchInfo| {
                    let mut seen = s.lock().unwrap();
                    for t in batch.iter() {
                        *seen.entry((t.producer, t.seq)).or_default() += 1;
                    }
                })
                .unwrap(),
        );
        let accepted = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let mut producers = Vec::new();
        for p in 0..3u32 {
            let b = Arc::clone(&batcher);
            let d = Arc::clone(&drops);
            let (acc, rej) = (Arc::clone(&accepted), Arc::clone(&refused));
            producers.push(std::thread::spawn(move || {
                let mut mine = Vec::new();
                for seq in 0..2_000u64 {
                    match b.submit(DropCounted::new(p, seq, &d)) {
                        Ok(()) => mine.push(seq),
                        Err(e) => {
                            assert!(e.is_closed());
                            let back = e.into_inner();
                            assert_eq!(
                                (back.producer, back.seq),
                                (p, seq),
                                "refused item comes back"
                            );
                            rej.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                acc.fetch_add(mine.len() as u64, Ordering::Relaxed);
                (p, mine)
            }));
        }
        // Close at a different moment each round, while producers run.
        for _ in 0..round * 50 {
            std::hint::spin_loop();
        }
        batcher.close();
        let mut accepted_ids = Vec::new();
        for h in producers {
            let (p, mine) = h.join().unwrap();
            accepted_ids.extend(mine.into_iter().map(|s| (p, s)));
        }
        let report = Arc::try_unwrap(batcher).unwrap().shutdown();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            accepted_ids.len(),
            "round {round}: processed set size"
        );
        for id in &accepted_ids {
            assert_eq!(
                seen.get(id),
                Some(&1),
                "round {round}: {id:?} processed exactly once"
            );
        }
        assert_eq!(report.submitted, accepted.load(Ordering::Relaxed));
        assert_eq!(report.processed, report.submitted);
        assert_eq!(report.rejected_closed, refused.load(Ordering::Relaxed));
        assert_eq!(
            drops.load(Ordering::Relaxed),
            3 * 2_000,
            "every item dropped exactly once"
        );
    }
}

#[test]
fn drop_drains_queued_items() {
    let drops = Arc::new(AtomicU64::new(0));
    let processed = Arc::new(AtomicU64::new(0));
    let p = Arc::clone(&processed);
    let batcher = Batcher::builder()
        .max_batch_size(1000)
        .max_delay(Duration::MAX)
        .build(move |batch: &mut Vec<DropCounted>, info: &BatchInfo| {
            assert_eq!(info.trigger, Trigger::Shutdown);
            p.fetch_add(batch.len() as u64, Ordering::Relaxed);
        })
        .unwrap();
    for i in 0..500 {
        batcher.submit(DropCounted::new(0, i, &drops)).unwrap();
    }
    drop(batcher);
    assert_eq!(processed.load(Ordering::Relaxed), 500);
    assert_eq!(drops.load(Ordering::Relaxed), 500);
}

/// Point 2: nothing swallowed — every refusal hands the item back and is
/// counted by reason.
#[test]
fn refusals_hand_back_the_item_and_are_counted() {
    let gate = Gate::default();
    let g = gate.clone();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let batcher = Batcher::builder()
        .max_batch_size(2)
        .capacity(2)
        .shards(1)
        .backpressure(Backpressure::Reject)
        .build(move |_: &mut Vec<String>, _: &BatchInfo| {
            let _ = entered_tx.send(());
            g.wait();
        })
        .unwrap();
    // Two items make a batch, which the processor holds at the gate; two
    // more fill the shard; everything after that is refused.
    batcher.try_submit("item-0".to_string()).unwrap();
    batcher.try_submit("item-1".to_string()).unwrap();
    entered
        .recv_timeout(BOUND)
        .expect("processor holds the first batch");
    let mut accepted = 2;
    let mut full = Vec::new();
    for i in 2..10 {
        match batcher.try_submit(format!("item-{i}")) {
            Ok(()) => accepted += 1,
            Err(TrySubmitError::Full(s)) => full.push(s),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(accepted, 4);
    assert_eq!(full.len(), 10 - accepted);
    assert_eq!(
        full[0],
        format!("item-{accepted}"),
        "the refused item itself comes back"
    );
    match batcher.submit("reject".to_string()) {
        Err(SubmitError::Full(s)) => assert_eq!(s, "reject"),
        other => panic!("Reject policy on a full shard: {other:?}"),
    }
    match batcher.submit_timeout("timeout".to_string(), Duration::from_millis(5)) {
        Err(e) => {
            assert!(e.is_timeout());
            assert_eq!(e.into_inner(), "timeout");
        }
        Ok(()) => panic!("no room can appear while the processor is held"),
    }
    let m = batcher.metrics();
    assert_eq!(m.rejected_full, full.len() as u64 + 1);
    assert_eq!(m.rejected_timeout, 1);
    batcher.close();
    match batcher.try_submit("closed".to_string()) {
        Err(TrySubmitError::Closed(s)) => assert_eq!(s, "closed"),
        other => panic!("after close: {other:?}"),
    }
    gate.open();
    let report = batcher.shutdown();
    assert_eq!(report.rejected_closed, 1);
    assert_eq!(report.processed, accepted as u64);
}

/// Point 3: no lost wake-up — a full batch is dispatched with nothing else
/// happening (time trigger off), for every wait strategy.
#[test]
fn size_trigger_without_time_trigger() {
    for wait in [
        WaitStrategy::Park,
        WaitStrategy::default(),
        WaitStrategy::BusySpin,
    ] {
        for shards in [1, 3] {
            let (p, rx) = channel_processor::<u32>();
            let batcher = Batcher::builder()
                .max_batch_size(64)
                .shards(shards)
                .max_delay(Duration::MAX)
                .wait_strategy(wait)
                .build(p)
                .unwrap();
            for round in 0..50 {
                for i in 0..64 {
                    batcher.submit(round * 64 + i).unwrap();
                }
                let (batch, info) = recv(&rx, "a full batch");
                assert_eq!(info.trigger, Trigger::Size, "{wait:?}");
                assert_eq!(batch.len(), 64);
            }
            assert!(
                batcher.metrics().flusher_wakeups <= 2 * 50,
                "{wait:?}: at most ~1 wake per batch"
            );
        }
    }
}

/// Point 3, time: one item, nothing after it, dispatched by the time trigger
/// no earlier than `max_delay` and not much later.
#[test]
fn lone_item_dispatched_by_time_trigger() {
    for wait in [
        WaitStrategy::Park,
        WaitStrategy::default(),
        WaitStrategy::BusySpin,
    ] {
        let (p, rx) = channel_processor::<Instant>();
        let delay = Duration::from_millis(20);
        let batcher = Batcher::builder()
            .max_delay(delay)
            .wait_strategy(wait)
            .build(p)
            .unwrap();
        batcher.submit(Instant::now()).unwrap();
        let (batch, info) = recv(&rx, "the time trigger");
        assert_eq!(info.trigger, Trigger::Time);
        assert_eq!(batch.len(), 1);
        // What is promised: the item waits at most max_delay, measured from a
        // lower bound on its arrival (the flusher's last sight of an empty
        // queue, or the waking producer's stamp), so the batch is never
        // dispatched before that bound is max_delay old. (Measured from the
        // test's own clock the wait can be a few microseconds shorter: the
        // bound may precede the submit.)
        assert!(
            info.oldest_age >= delay,
            "{wait:?}: dispatched at oldest_age {:?}",
            info.oldest_age
        );
    }
}

/// Point 4: bounded — with a stuck processor and `Reject`, the queues never
/// hold more than their capacity, and everything refused is counted.
#[test]
fn bounded_under_overload_with_reject() {
    let gate = Gate::default();
    let batcher = Batcher::builder()
        .max_batch_size(16)
        .capacity(32)
        .shards(2)
        .backpressure(Backpressure::Reject)
        .build(gate.processor::<u64>())
        .unwrap();
    let mut refused = 0u64;
    for i in 0..10_000 {
        if batcher.submit(i).is_err() {
            refused += 1;
        }
        let m = batcher.metrics();
        assert!(
            m.queue_depth <= m.capacity + 16,
            "depth {} over capacity {} + one batch",
            m.queue_depth,
            m.capacity
        );
    }
    let m = batcher.metrics();
    assert_eq!(m.rejected_full, refused);
    assert_eq!(m.submitted + refused, 10_000);
    gate.open();
    assert_eq!(batcher.shutdown().processed, 10_000 - refused);
}

/// Point 4 / 3: a producer blocked on a full shard is woken when room
/// appears, and `BlockTimeout` gives up with the item.
#[test]
fn blocked_producer_resumes_when_room_appears() {
    let gate = Gate::default();
    let batcher = Arc::new(
        Batcher::builder()
            .max_batch_size(4)
            .capacity(4)
            .shards(1)
            .build(gate.processor::<u64>())
            .unwrap(),
    );
    let b = Arc::clone(&batcher);
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let producer = std::thread::spawn(move || {
        for i in 0..100 {
            b.submit(i).unwrap();
        }
        d.store(true, Ordering::SeqCst);
    });
    // The processor holds the first batch, so the producer must block.
    wait_for_blocked(&batcher, 1);
    assert!(!done.load(Ordering::SeqCst));
    gate.open();
    bounded("blocked producer", move || producer.join().unwrap());
    assert_eq!(Arc::try_unwrap(batcher).unwrap().shutdown().processed, 100);
}

/// Point 5: per-thread order, across batches and shards.
#[test]
fn per_thread_order() {
    let seen: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let s = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .max_batch_size(7)
        .capacity(7)
        .shards(2)
        .build(move |batch: &mut Vec<(u32, u64)>, _: &BatchInfo| {
            s.lock().unwrap().extend(batch.drain(..))
        })
        .unwrap();
    std::thread::scope(|sc| {
        for p in 0..4u32 {
            let b = &batcher;
            sc.spawn(move || {
                for i in 0..20_000 {
                    b.submit((p, i)).unwrap();
                }
            });
        }
    });
    batcher.shutdown();
    let seen = seen.lock().unwrap();
    let mut next = [0u64; 4];
    for &(p, i) in seen.iter() {
        assert_eq!(i, next[p as usize], "producer {p} out of order");
        next[p as usize] += 1;
    }
    assert_eq!(next, [20_000; 4]);
}

/// Point 6: a processor that panics on every batch does not stop the
/// batcher; panics are counted and reported.
#[test]
fn panicking_processor_is_contained() {
    let failures = Arc::new(AtomicU64::new(0));
    let f = Arc::clone(&failures);
    let handed = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&handed);
    let batcher = Batcher::builder()
        .max_batch_size(10)
        .on_error(move |failure, _| {
            assert!(matches!(failure, microbatch::Failure::Panic(ref m) if m.contains("boom")));
            f.fetch_add(1, Ordering::Relaxed);
        })
        .build(move |batch: &mut Vec<u32>, _: &BatchInfo| {
            h.fetch_add(batch.len() as u64, Ordering::Relaxed);
            if !batch.is_empty() {
                panic!("boom");
            }
        })
        .unwrap();
    for i in 0..1000 {
        batcher.submit(i).unwrap();
    }
    batcher.flush().unwrap();
    let report = batcher.shutdown();
    assert_eq!(
        handed.load(Ordering::Relaxed),
        1000,
        "every item still handed over once"
    );
    // Every batch panicked: its items failed, none succeeded.
    assert_eq!((report.processed, report.failed), (0, 1000));
    assert_eq!(report.processor_panics, report.batches());
    assert_eq!(failures.load(Ordering::Relaxed), report.processor_panics);
}

#[test]
fn processor_errors_are_counted_and_the_flusher_goes_on() {
    let batcher = Batcher::builder()
        .max_batch_size(5)
        .build(
            |batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), String> {
                if batch[0].is_multiple_of(2) {
                    Err(format!("even batch starting at {}", batch[0]))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap();
    for i in 0..100 {
        batcher.submit(i).unwrap();
        if i % 5 == 4 {
            batcher.flush().unwrap();
        }
    }
    let m = batcher.shutdown();
    // Items of the failed batches are `failed`, the rest `processed`.
    assert_eq!(m.processed + m.failed, 100);
    assert_eq!(m.failed, 5 * m.processor_errors);
    assert!(m.processor_errors > 0 && m.processor_errors < m.batches());
}

/// Point 7: flush is a barrier.
#[test]
fn flush_is_a_barrier() {
    let processed = Arc::new(AtomicU64::new(0));
    let p = Arc::clone(&processed);
    let batcher = Batcher::builder()
        .max_batch_size(1000)
        .max_delay(Duration::MAX)
        .build(move |batch: &mut Vec<u64>, info: &BatchInfo| {
            assert_eq!(info.trigger, Trigger::Flush);
            p.fetch_add(batch.len() as u64, Ordering::SeqCst);
        })
        .unwrap();
    let mut total = 0;
    for round in 1..=50u64 {
        for i in 0..round {
            batcher.submit(i).unwrap();
        }
        total += round;
        batcher.flush().unwrap();
        assert_eq!(processed.load(Ordering::SeqCst), total);
    }
    assert_eq!(batcher.flush_timeout(Duration::from_secs(5)), Ok(()));
    batcher.close();
    assert_eq!(batcher.flush(), Err(FlushError::Closed));
}

#[test]
fn flush_timeout_reports_timeout_then_completes() {
    let gate = Gate::default();
    let batcher = Batcher::builder()
        .max_delay(Duration::MAX)
        .build(gate.processor::<u64>())
        .unwrap();
    batcher.submit(1).unwrap();
    assert_eq!(
        batcher.flush_timeout(Duration::from_millis(10)),
        Err(FlushError::Timeout)
    );
    gate.open();
    assert_eq!(batcher.flush_timeout(BOUND), Ok(()));
    assert_eq!(batcher.shutdown().processed, 1);
}

/// Point 8: a processor calling submit / flush / close on its own batcher
/// gets a typed outcome, never a hang.
#[test]
fn reentrant_calls_from_the_processor() {
    let me: Arc<Mutex<Weak<Batcher<u64>>>> = Arc::default();
    let outcomes: Arc<Mutex<Vec<String>>> = Arc::default();
    let (m, o) = (Arc::clone(&me), Arc::clone(&outcomes));
    let batcher = Arc::new(
        Batcher::builder()
            .max_batch_size(1)
            .capacity(1)
            .shards(1)
            .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
                let Some(b) = m.lock().unwrap().upgrade() else {
                    return;
                };
                let x = batch[0];
                let mut out = o.lock().unwrap();
                out.push(format!("flush:{:?}", b.flush()));
                if x < 3 {
                    // Shard capacity 1: the first resubmit fits, the second
                    // would block — and must not.
                    out.push(format!(
                        "submit:{:?}",
                        b.submit(x + 10).map_err(|e| e.is_full())
                    ));
                    out.push(format!(
                        "submit:{:?}",
                        b.submit(x + 20).map_err(|e| e.is_full())
                    ));
                }
                if x >= 10 {
                    b.close();
                }
            })
            .unwrap(),
    );
    *me.lock().unwrap() = Arc::downgrade(&batcher);
    batcher.submit(1).unwrap();
    let b = Arc::clone(&batcher);
    bounded("processor re-entering its batcher", move || {
        // Wait until the processor closed the batcher from inside.
        while !b.is_closed() {
            std::thread::yield_now();
        }
        drop(b);
    });
    drop(batcher);
    let out = outcomes.lock().unwrap();
    assert!(
        out.iter()
            .filter(|s| s.starts_with("flush"))
            .all(|s| s == "flush:Err(Reentrant)"),
        "{out:?}"
    );
    assert!(out.contains(&"submit:Ok(())".to_string()), "{out:?}");
    assert!(
        out.contains(&"submit:Err(true)".to_string()),
        "a would-block submit is Full: {out:?}"
    );
}

/// Point 9: counters and depth readable while producers run, and
/// consistent in every snapshot.
#[test]
fn metrics_while_running() {
    let batcher = Batcher::builder()
        .max_batch_size(32)
        .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
        .unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..50_000 {
                    batcher.submit(i).unwrap();
                }
            });
        }
        s.spawn(|| {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let m = batcher.metrics();
                assert_eq!(
                    m.processed + m.failed + m.in_flight + m.queue_depth,
                    m.submitted,
                    "{m:?}"
                );
                assert!(m.queue_depth <= m.capacity && m.in_flight <= 32, "{m:?}");
                assert!(m.submitted >= last);
                last = m.submitted;
                std::thread::yield_now();
            }
        });
        // Producers are the first two; scope joins all, so stop after them.
        while batcher.metrics().submitted < 100_000 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let m = batcher.shutdown();
    assert_eq!(m.submitted, 100_000);
    assert_eq!(m.processed, 100_000);
    assert_eq!(m.queue_depth, 0);
    assert_eq!(m.capacity, m.capacity / 64 * 64);
    let by_trigger: u64 = [
        Trigger::Size,
        Trigger::Time,
        Trigger::Flush,
        Trigger::Shutdown,
    ]
    .iter()
    .map(|t| m.batches_by(*t))
    .sum();
    assert_eq!(by_trigger, m.batches());
}

#[test]
fn submit_many_accepts_a_prefix_and_hands_back_the_rest() {
    let gate = Gate::default();
    let batcher = Batcher::builder()
        .max_batch_size(4)
        .capacity(8)
        .shards(1)
        .build(gate.processor::<u32>())
        .unwrap();
    let mut items: Vec<u32> = (0..100).collect();
    let err = batcher.try_submit_many(&mut items).unwrap_err();
    assert_eq!(err, microbatch::SubmitManyError::Full);
    let accepted = 100 - items.len() as u32;
    assert!((8..=12).contains(&accepted), "accepted {accepted}");
    assert_eq!(
        items,
        (accepted..100).collect::<Vec<_>>(),
        "the rest, in order"
    );
    gate.open();
    let (p, rx) = channel_processor::<u32>();
    let b2 = Batcher::builder().max_batch_size(16).build(p).unwrap();
    let mut all: Vec<u32> = (0..1000).collect();
    b2.submit_many(&mut all).unwrap();
    assert!(all.is_empty());
    let got: Vec<u32> = recv_items(&rx, 1000, "submit_many items")
        .into_iter()
        .map(|(x, _)| x)
        .collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert_eq!(batcher.shutdown().processed, accepted as u64);
}
