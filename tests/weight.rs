//! Weight limits (`Builder::max_batch_weight`): both caps hard, the item
//! that does not fit carried into the next batch, oversize items refused or
//! sent alone, and the accounting of a carried item (queued until it is in
//! a batch; `flush` and shutdown wait for it).

mod common;

use common::{bounded, channel_processor, recv, Gate, BOUND};
use microbatch::{
    BatchInfo, Batcher, BuildError, Oversize, SubmitError, SubmitManyError, SubmitTimeoutError,
    Trigger, TrySubmitError,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Items are `(producer, seq, weight)`; the weigher reads the weight.
type Item = (u32, u64, u64);

fn weigh(item: &Item) -> u64 {
    item.2
}

/// A user-run flusher's batcher over one shard, no time trigger: nothing is
/// dispatched until a flush, a close, or a full batch.
fn one_shard(
    batch: usize,
    limit: u64,
    oversize: Oversize,
) -> (
    Batcher<Item>,
    microbatch::Flusher<Item>,
    common::Batches<Item>,
) {
    let (p, rx) = channel_processor();
    let (b, f) = Batcher::builder()
        .lanes(0)
        .shards(1)
        .max_batch_size(batch)
        .capacity(64)
        .max_delay(Duration::MAX)
        .max_batch_weight(limit, weigh)
        .oversize(oversize)
        .build_with_flusher(p)
        .unwrap();
    (b, f, rx)
}

/// Drains every batch left in `rx` (after the flusher has stopped).
fn all(rx: &common::Batches<Item>) -> Vec<(Vec<Item>, BatchInfo)> {
    rx.try_iter().collect()
}

fn weights(batch: &[Item]) -> Vec<u64> {
    batch.iter().map(|i| i.2).collect()
}

#[test]
fn zero_limit_is_a_build_error() {
    let r = Batcher::<u32>::builder()
        .max_batch_weight(0, |_| 1)
        .build(|b: &mut Vec<u32>, _: &BatchInfo| b.clear());
    assert!(matches!(r, Err(BuildError::ZeroWeightLimit)), "{r:?}");
    assert!(Batcher::<u32>::builder()
        .max_batch_weight(1, |_| 1)
        .build(|b: &mut Vec<u32>, _: &BatchInfo| b.clear())
        .is_ok());
}

#[test]
fn heavy_item_is_refused_and_handed_back_everywhere() {
    let (b, mut f, rx) = one_shard(8, 10, Oversize::Reject);
    let heavy = (0, 99, 11);
    assert!(matches!(b.submit(heavy), Err(SubmitError::TooHeavy(x)) if x == heavy));
    assert!(matches!(b.try_submit(heavy), Err(TrySubmitError::TooHeavy(x)) if x == heavy));
    assert!(matches!(
        b.submit_timeout(heavy, Duration::from_millis(1)),
        Err(SubmitTimeoutError::TooHeavy(x)) if x == heavy
    ));
    let e = futures::executor::block_on(b.submit_async(heavy)).unwrap_err();
    assert!(e.is_too_heavy());
    assert_eq!(e.into_inner(), heavy);
    let mut p = b.producer();
    assert!(p.submit(heavy).unwrap_err().is_too_heavy());
    assert!(p.try_submit(heavy).unwrap_err().is_too_heavy());
    drop(p);
    // submit_many stops at the heavy item, leaving it first.
    let mut items = vec![(0, 0, 3), (0, 1, 10), heavy, (0, 2, 1)];
    assert_eq!(b.submit_many(&mut items), Err(SubmitManyError::TooHeavy));
    assert_eq!(items, vec![heavy, (0, 2, 1)]);
    // Exactly the limit is not too heavy.
    b.submit((0, 3, 10)).unwrap();
    b.close();
    let m = f.run();
    // 6 single refusals, and the 2 items left by submit_many.
    assert_eq!(m.rejected_oversize, 8);
    assert_eq!(m.rejected(), 8);
    assert_eq!((m.submitted, m.processed), (3, 3));
    let got: Vec<u64> = all(&rx).iter().flat_map(|(b, _)| weights(b)).collect();
    assert_eq!(got, [3, 10, 10]);
}

#[test]
fn heavy_item_is_sent_alone_and_counted() {
    let (b, mut f, rx) = one_shard(8, 10, Oversize::Alone);
    for (seq, w) in [3, 3, 50, 3, 0].into_iter().enumerate() {
        b.submit((0, seq as u64, w)).unwrap();
    }
    b.close();
    let m = f.run();
    let batches = all(&rx);
    let shape: Vec<(Vec<u64>, u64, bool)> = batches
        .iter()
        .map(|(b, i)| (weights(b), i.weight, i.oversize))
        .collect();
    assert_eq!(
        shape,
        [
            (vec![3, 3], 6, false),
            (vec![50], 50, true),
            (vec![3, 0], 3, false)
        ]
    );
    assert_eq!(m.batches_oversize, 1);
    assert_eq!(m.processed, 5);
    assert_eq!(m.processed_weight, 59);
    assert_eq!(m.rejected(), 0);
}

#[test]
fn weight_zero_is_bounded_by_count() {
    let (b, mut f, rx) = one_shard(4, 10, Oversize::Reject);
    for seq in 0..10 {
        b.submit((0, seq, 0)).unwrap();
    }
    b.close();
    let m = f.run();
    let lens: Vec<usize> = all(&rx).iter().map(|(b, _)| b.len()).collect();
    assert_eq!(lens, [4, 4, 2]);
    assert_eq!((m.processed, m.processed_weight), (10, 0));
}

#[test]
fn shutdown_obeys_both_caps_and_processes_the_carried_item() {
    let (b, mut f, rx) = one_shard(3, 10, Oversize::Reject);
    // 6 | 6 4 | 1 1 1 (count) | 9 1 | 5 (carried when the drain began)
    let ws = [6, 6, 4, 1, 1, 1, 9, 1, 5];
    for (seq, &w) in ws.iter().enumerate() {
        b.submit((0, seq as u64, w)).unwrap();
    }
    b.close();
    let m = f.run();
    let batches = all(&rx);
    let shape: Vec<Vec<u64>> = batches.iter().map(|(b, _)| weights(b)).collect();
    assert_eq!(
        shape,
        [vec![6], vec![6, 4], vec![1, 1, 1], vec![9, 1], vec![5]],
        "an item that does not fit opens the next batch"
    );
    let seqs: Vec<u64> = batches
        .iter()
        .flat_map(|(b, _)| b.iter().map(|i| i.1))
        .collect();
    assert_eq!(seqs, (0..ws.len() as u64).collect::<Vec<_>>());
    for (batch, info) in &batches {
        assert_eq!(info.trigger, Trigger::Shutdown);
        assert_eq!(info.weight, batch.iter().map(|i| i.2).sum::<u64>());
    }
    assert_eq!(
        (m.submitted, m.processed, m.queue_depth, m.in_flight),
        (9, 9, 0, 0)
    );
    assert_eq!(m.processed_weight, ws.iter().sum::<u64>());
}

#[test]
fn flush_returns_only_after_the_carried_item_is_processed() {
    let (b, mut f, rx) = one_shard(8, 10, Oversize::Reject);
    b.submit((0, 0, 6)).unwrap();
    b.submit((0, 1, 6)).unwrap(); // does not fit: carried
    let closer = b.closer();
    let runner = std::thread::spawn(move || f.run());
    // No time trigger, no full batch: only the flush dispatches, in two
    // batches, and it must not return between them.
    assert_eq!(b.flush_timeout(BOUND), Ok(()));
    let (first, i1) = rx
        .try_recv()
        .expect("first batch done before flush returned");
    let (second, i2) = rx
        .try_recv()
        .expect("the carried item done before flush returned");
    assert_eq!((weights(&first), weights(&second)), (vec![6], vec![6]));
    assert_eq!((i1.trigger, i2.trigger), (Trigger::Flush, Trigger::Flush));
    let m = b.metrics();
    assert_eq!(
        (m.submitted, m.processed, m.queue_depth, m.in_flight),
        (2, 2, 0, 0)
    );
    closer.close();
    runner.join().unwrap();
}

#[test]
fn a_carried_item_counts_as_queued_until_it_is_in_a_batch() {
    let gate = Gate::default();
    let g = gate.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let (b, mut f) = Batcher::builder()
        .lanes(0)
        .shards(1)
        .max_batch_size(8)
        .capacity(8)
        .max_delay(Duration::MAX)
        .max_batch_weight(10, weigh)
        .build_with_flusher(move |batch: &mut Vec<Item>, _: &BatchInfo| {
            g.wait();
            s.lock().unwrap().extend(batch.drain(..));
        })
        .unwrap();
    b.submit((0, 0, 6)).unwrap();
    b.submit((0, 1, 6)).unwrap();
    let closer = b.closer();
    let runner = std::thread::spawn(move || f.run());
    let before = b.metrics();
    assert_eq!((before.queue_depth, before.in_flight), (2, 0));
    let b2 = &b;
    // Flush from another thread; the first batch is held at the gate.
    std::thread::scope(|sc| {
        let h = sc.spawn(move || b2.flush_timeout(BOUND));
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            let m = b2.metrics();
            if m.in_flight == 1 {
                // The first item in the processor, the second carried:
                // queued, not in flight, not processed.
                assert_eq!((m.submitted, m.queue_depth, m.processed), (2, 1, 0));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no batch in flight");
            std::thread::yield_now();
        }
        // The carried item's slot is not free yet: 8 - 1 queued = 7 fit.
        for seq in 2..9 {
            b2.try_submit((0, seq, 0)).unwrap();
        }
        assert!(b2.try_submit((0, 9, 0)).unwrap_err().is_full());
        gate.open();
        assert_eq!(h.join().unwrap(), Ok(()));
    });
    closer.close();
    let m = runner.join().unwrap();
    assert_eq!(m.processed + m.queue_depth + m.in_flight, m.submitted);
    assert_eq!((m.submitted, m.processed, m.rejected_full), (9, 9, 1));
    let seqs: Vec<u64> = seen.lock().unwrap().iter().map(|i| i.1).collect();
    assert_eq!(seqs, (0..9).collect::<Vec<_>>());
}

#[test]
fn weight_trigger_is_counted() {
    let (p, rx) = channel_processor();
    let (b, mut f) = Batcher::builder()
        .lanes(0)
        .shards(1)
        .max_batch_size(512)
        .max_delay(Duration::ZERO)
        .max_batch_weight(8, weigh)
        .build_with_flusher(p)
        .unwrap();
    // Submitted before the flusher runs: its first batch is cut by weight.
    for (seq, w) in [4, 4, 4].into_iter().enumerate() {
        b.submit((0, seq as u64, w)).unwrap();
    }
    let closer = b.closer();
    let runner = std::thread::spawn(move || f.run());
    let (first, info) = recv(&rx, "the first batch");
    assert_eq!(weights(&first), [4, 4]);
    assert_eq!((info.trigger, info.weight), (Trigger::Weight, 8));
    let (second, info) = recv(&rx, "the second batch");
    assert_eq!(weights(&second), [4]);
    assert_eq!(info.trigger, Trigger::Time);
    closer.close();
    let m = runner.join().unwrap();
    assert_eq!(m.batches_weight, 1);
    assert_eq!(m.batches_by(Trigger::Weight), 1);
    assert_eq!(m.batches(), 2);
}

#[test]
fn a_parked_flusher_wakes_for_a_batch_full_by_weight() {
    // No time trigger: only the count thresholds, set from the average
    // weight (10 per item, limit 40: 4 items), can wake the flusher for
    // the second round of items; with count thresholds from
    // max_batch_size (512) it would sleep forever.
    let (p, rx) = channel_processor();
    let b = Batcher::builder()
        .lanes(0)
        .shards(1)
        .max_batch_size(512)
        .max_delay(Duration::MAX)
        .wait_strategy(microbatch::WaitStrategy::Park)
        .max_batch_weight(40, weigh)
        .build(p)
        .unwrap();
    for seq in 0..4 {
        b.submit((0, seq, 10)).unwrap();
    }
    b.flush().unwrap(); // teaches the flusher the average weight
    let (first, _) = recv(&rx, "the flushed batch");
    assert_eq!(first.len(), 4);
    for seq in 4..8 {
        b.submit((0, seq, 10)).unwrap();
    }
    let (second, info) = recv(
        &rx,
        "a batch full by weight, with no flush and no time trigger",
    );
    assert_eq!(weights(&second), [10, 10, 10, 10]);
    assert_eq!(info.trigger, Trigger::Weight);
    b.shutdown();
}

#[test]
fn many_threads_random_weights_never_exceed_either_cap() {
    const THREADS: u32 = 4;
    const PER: u64 = 5_000;
    const LIMIT: u64 = 100;
    const BATCH: usize = 16;
    let violations = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(HashMap::<u32, Vec<u64>>::new()));
    let (v, s) = (Arc::clone(&violations), Arc::clone(&seen));
    let b = Batcher::builder()
        .max_batch_size(BATCH)
        .max_batch_weight(LIMIT, weigh)
        .build(move |batch: &mut Vec<Item>, info: &BatchInfo| {
            let w: u64 = batch.iter().map(|i| i.2).sum();
            if batch.len() > BATCH || w > LIMIT || w != info.weight || info.oversize {
                v.fetch_add(1, Ordering::Relaxed);
            }
            let mut s = s.lock().unwrap();
            for i in batch.drain(..) {
                s.entry(i.0).or_default().push(i.1);
            }
        })
        .unwrap();
    let total_weight = bounded("producers", {
        let b = Arc::new(b);
        move || {
            let mut total = 0;
            std::thread::scope(|sc| {
                let hs: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let b = &b;
                        sc.spawn(move || {
                            let mut x = u64::from(t) * 7919 + 1;
                            let mut sum = 0;
                            for seq in 0..PER {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                let w = x % (LIMIT + 1); // 0..=LIMIT
                                b.submit((t, seq, w)).unwrap();
                                sum += w;
                            }
                            sum
                        })
                    })
                    .collect();
                total = hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>();
            });
            let m = Arc::into_inner(b).expect("the only handle").shutdown();
            assert_eq!(m.processed, u64::from(THREADS) * PER);
            assert_eq!(m.processed_weight, total);
            assert_eq!((m.queue_depth, m.in_flight, m.rejected()), (0, 0, 0));
            total
        }
    });
    assert!(total_weight > 0);
    assert_eq!(violations.load(Ordering::Relaxed), 0, "a batch broke a cap");
    let seen = seen.lock().unwrap();
    for t in 0..THREADS {
        assert_eq!(
            seen[&t],
            (0..PER).collect::<Vec<_>>(),
            "order of thread {t}"
        );
    }
}

#[test]
fn a_weigher_that_panics_on_the_flusher_does_not_stop_it() {
    let (p, rx) = channel_processor();
    let (b, mut f) = Batcher::builder()
        .lanes(0)
        .shards(1)
        .max_delay(Duration::MAX)
        .max_batch_weight(10, |i: &Item| {
            assert!(i.2 != 13, "the weigher refuses 13");
            i.2
        })
        .oversize(Oversize::Alone) // the weigher runs on the flusher only
        .build_with_flusher(p)
        .unwrap();
    for (seq, w) in [1, 13, 2].into_iter().enumerate() {
        b.submit((0, seq as u64, w)).unwrap();
    }
    b.close();
    let m = f.run();
    let shape: Vec<(Vec<u64>, bool, u64)> = all(&rx)
        .iter()
        .map(|(b, i)| (weights(b), i.oversize, i.weight))
        .collect();
    // The item whose weigher panicked goes alone, weighed 0.
    assert_eq!(
        shape,
        [
            (vec![1], false, 1),
            (vec![13], true, 0),
            (vec![2], false, 2)
        ]
    );
    assert_eq!(m.other_panics, 1);
    assert_eq!((m.processed, m.batches_oversize), (3, 1));
}

#[test]
fn a_weigher_that_panics_on_submit_unwinds_into_the_caller() {
    #[derive(Debug)]
    struct Counted(u64, Arc<AtomicU64>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }
    let drops = Arc::new(AtomicU64::new(0));
    let b = Batcher::builder()
        .max_batch_weight(10, |c: &Counted| {
            assert!(c.0 != 13, "the weigher refuses 13");
            c.0
        })
        .build(|b: &mut Vec<Counted>, _: &BatchInfo| b.clear())
        .unwrap();
    let item = Counted(13, Arc::clone(&drops));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.submit(item)));
    assert!(r.is_err(), "the panic reached the caller");
    assert_eq!(
        drops.load(Ordering::Relaxed),
        1,
        "the item was dropped by the unwinding"
    );
    b.submit(Counted(1, Arc::clone(&drops))).unwrap();
    let m = b.shutdown();
    assert_eq!((m.submitted, m.processed, m.rejected()), (1, 1, 0));
    assert_eq!(drops.load(Ordering::Relaxed), 2);
}
