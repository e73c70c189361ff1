//! Faults and abuse, one test each. Every wait is bounded and fails with a
//! message rather than hanging CI.

mod common;

use common::{bounded, channel_processor, recv_items, wait_for_blocked, DropCounted, Gate};
use microbatch::{Backpressure, BatchInfo, Batcher, SubmitError, Trigger, WaitStrategy};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A processor that panics on every batch while producers are blocked on
/// full shards: the producers keep progressing, every panic is counted, the
/// batcher still shuts down cleanly.
///
/// The first batch waits at a gate until the producers have blocked three
/// times (`producer_waits` counts each time a producer blocks), so
/// producers are blocked when the panics start whatever the scheduler does
/// (a slow processor alone left that to chance on a loaded machine).
#[test]
fn panicking_processor_with_blocked_producers() {
    let gate = Gate::default();
    let held = gate.clone();
    let batcher = Arc::new(
        Batcher::builder()
            .max_batch_size(4)
            .capacity(4)
            .shards(1)
            .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
                held.wait();
                // Slow enough that producers outlast their spin and park
                // again, now and then.
                let until = Instant::now() + Duration::from_micros(300);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                if !batch.is_empty() {
                    panic!("always");
                }
            })
            .unwrap(),
    );
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let b = Arc::clone(&batcher);
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    b.submit(i).unwrap();
                }
            })
        })
        .collect();
    wait_for_blocked(&batcher, 3);
    gate.open();
    bounded("producers against a panicking processor", move || {
        for h in handles {
            h.join().unwrap();
        }
    });
    let m = Arc::try_unwrap(batcher).unwrap().shutdown();
    // Every batch failed: its items are counted as failed, not processed,
    // and (left in the batch) discarded.
    assert_eq!((m.processed, m.failed, m.discarded), (0, 6_000, 6_000));
    assert_eq!(m.processor_panics, m.batches());
}

/// A slow processor under `Reject`: memory stays bounded (the peak of live
/// items is measured), every rejected item comes back and is counted.
#[test]
fn slow_processor_with_reject_stays_bounded() {
    // On shards (CAS) only, then on lanes with a shard for the third thread.
    for (lanes, shards) in [(0, 2), (2, 1)] {
        slow_processor_with_reject_stays_bounded_on(lanes, shards);
    }
}

fn slow_processor_with_reject_stays_bounded_on(lanes: usize, shards: usize) {
    // Live items (created - dropped) in one atomic's order: exact, unlike a
    // difference of two counters read at different times.
    let live = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    struct Counted(Arc<AtomicU64>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let batcher = Batcher::builder()
        .max_batch_size(32)
        .capacity(64)
        .lanes(lanes)
        .shards(shards)
        .backpressure(Backpressure::Reject)
        .build(|batch: &mut Vec<Counted>, _: &BatchInfo| {
            let until = Instant::now() + Duration::from_micros(200);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            batch.clear();
        })
        .unwrap();
    let rejected = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    let now = live.fetch_add(1, Ordering::Relaxed) + 1;
                    peak.fetch_max(now, Ordering::Relaxed);
                    if let Err(e) = batcher.submit(Counted(Arc::clone(&live))) {
                        assert!(e.is_full());
                        drop(e.into_inner());
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let m = batcher.shutdown();
    assert_eq!(live.load(Ordering::Relaxed), 0, "every item dropped");
    assert_eq!(m.rejected_full, rejected.load(Ordering::Relaxed));
    assert_eq!(m.submitted + m.rejected_full, 60_000);
    assert!(
        m.rejected_full > 0,
        "a slow processor must cause rejections: {m:?}"
    );
    // Bound: the queues ((lanes + shards) x 64), one batch in the
    // processor (32), and at most one item in the hands of each of the 3
    // producers.
    let bound = (lanes + shards) as u64 * 64 + 32 + 3;
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= bound,
        "peak live items {peak} above the bound {bound}"
    );
    println!(
        "slow processor + Reject: peak live items {peak} (bound {bound}), rejected {}",
        m.rejected_full
    );
}

/// Close from another thread while producers are blocked in `submit`: they
/// return promptly with their item.
#[test]
fn close_releases_blocked_producers() {
    let gate = Gate::default();
    let batcher = Arc::new(
        Batcher::builder()
            .max_batch_size(2)
            .capacity(2)
            .shards(1)
            .build(gate.processor::<DropCounted>())
            .unwrap(),
    );
    let drops = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..3u32)
        .map(|p| {
            let b = Arc::clone(&batcher);
            let d = Arc::clone(&drops);
            std::thread::spawn(move || {
                let mut back = Vec::new();
                for seq in 0..100 {
                    if let Err(e) = b.submit(DropCounted::new(p, seq, &d)) {
                        assert!(e.is_closed());
                        let item = e.into_inner();
                        assert_eq!((item.producer, item.seq), (p, seq));
                        back.push(seq);
                    }
                }
                back
            })
        })
        .collect();
    wait_for_blocked(&batcher, 3);
    let closed_at = Instant::now();
    batcher.close();
    let backs = bounded("blocked producers after close", move || {
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let released_in = closed_at.elapsed();
    gate.open();
    let m = Arc::try_unwrap(batcher).unwrap().shutdown();
    let back: u64 = backs.iter().map(|b| b.len() as u64).sum();
    assert_eq!(m.submitted + back, 300);
    assert_eq!(m.rejected_closed, back);
    assert_eq!(drops.load(Ordering::Relaxed), 300);
    println!("blocked producers released {released_in:?} after close");
}

/// Drop with full shards and blocked producers: everything accepted is
/// processed, the blocked producers get their items back.
///
/// The processor holds every batch at a gate until the producers have
/// blocked three times (`producer_waits` counts each time a producer
/// blocks) and the producers have returned after `close`, so the queues
/// are full and producers blocked when `close` and the drop come, and only
/// `close` can release them, whatever the scheduler does. (With a processor
/// that was merely slow, a loaded machine could keep producers from ever
/// blocking: a producer that yields sixteen times before it blocks found
/// room again each time, and the test timed out waiting for a wait.)
#[test]
fn drop_with_full_shards_and_blocked_producers() {
    const PRODUCERS: u64 = 3;
    let processed = Arc::new(AtomicU64::new(0));
    let p = Arc::clone(&processed);
    let gate = Gate::default();
    let held = gate.clone();
    let batcher = Arc::new(
        Batcher::builder()
            .max_batch_size(8)
            .capacity(8)
            .shards(1)
            .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
                held.wait();
                p.fetch_add(batch.len() as u64, Ordering::Relaxed);
            })
            .unwrap(),
    );
    let closer = batcher.closer();
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let b = Arc::clone(&batcher);
            std::thread::spawn(move || {
                let mut ok = 0u64;
                for i in 0..100_000u64 {
                    match b.submit(i) {
                        Ok(()) => ok += 1,
                        Err(SubmitError::Closed(_)) => return (ok, true),
                        Err(e) => panic!("{e}"),
                    }
                }
                (ok, false)
            })
        })
        .collect();
    // The flusher holds its first batch at the gate: nothing frees room,
    // so the producers fill their queues and block.
    wait_for_blocked(&batcher, PRODUCERS);
    let last = Arc::clone(&batcher);
    closer.close();
    // Nothing can be accepted from here on: the count is final.
    let accepted = batcher.metrics().submitted;
    // Not the last handle: the producers and `last` hold it.
    drop(batcher);
    // The flusher is still held at the gate, so only `close` can release
    // the blocked producers.
    let ends: Vec<(u64, bool)> = bounded("blocked producers after close", move || {
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        ends.iter().all(|&(_, refused)| refused),
        "every producer got an item back as Closed: {ends:?}"
    );
    let ok: u64 = ends.iter().map(|&(ok, _)| ok).sum();
    assert_eq!(ok, accepted, "every accepted submit was counted");
    gate.open();
    // The last handle's drop drains what was accepted.
    bounded("the last drop", move || drop(last));
    assert_eq!(processed.load(Ordering::Relaxed), ok);
}

/// Extreme configurations all deliver every item.
#[test]
fn extreme_configurations() {
    fn deliver<T: Send + 'static>(
        name: &str,
        b: microbatch::Builder<T>,
        make: impl Fn(u64) -> T + Sync,
        n: u64,
        producers: u64,
    ) {
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        let batcher = b
            .build(move |batch: &mut Vec<T>, _: &BatchInfo| {
                c.fetch_add(batch.len() as u64, Ordering::Relaxed);
            })
            .unwrap();
        std::thread::scope(|s| {
            for _ in 0..producers {
                s.spawn(|| {
                    for i in 0..n {
                        batcher.submit(make(i)).unwrap();
                    }
                });
            }
        });
        let m = batcher.shutdown();
        assert_eq!(m.processed, n * producers, "{name}");
        assert_eq!(count.load(Ordering::Relaxed), n * producers, "{name}");
    }
    deliver(
        "batch size 1",
        Batcher::builder().max_batch_size(1),
        |i| i,
        5_000,
        2,
    );
    deliver(
        "huge batch size",
        Batcher::builder().max_batch_size(1 << 20).shards(1),
        |i| i,
        100_000,
        2,
    );
    deliver(
        "zero delay",
        Batcher::builder().max_delay(Duration::ZERO),
        |i| i,
        20_000,
        2,
    );
    deliver(
        "endless delay",
        Batcher::builder().max_delay(Duration::MAX),
        |i| i,
        20_000,
        2,
    );
    deliver(
        "one shard, 8 producers",
        Batcher::builder().shards(1).max_batch_size(16),
        |i| i,
        5_000,
        8,
    );
    deliver(
        "busy spin",
        Batcher::builder().wait_strategy(WaitStrategy::BusySpin),
        |i| i,
        20_000,
        2,
    );
    deliver("zero-sized items", Batcher::builder(), |_| (), 50_000, 2);
    deliver(
        "4 KiB items",
        Batcher::builder().max_batch_size(16),
        |i| [i as u8; 4096],
        2_000,
        2,
    );
}

/// A producer thread that panics mid-stream: what it submitted before is
/// processed; the batcher and the other producers carry on.
#[test]
fn producer_panics_mid_stream() {
    let (p, rx) = channel_processor::<(u32, u64)>();
    let batcher = Arc::new(Batcher::builder().max_batch_size(10).build(p).unwrap());
    let b = Arc::clone(&batcher);
    let doomed = std::thread::spawn(move || {
        for i in 0..1_000u64 {
            b.submit((0, i)).unwrap();
            if i == 500 {
                panic!("producer dies mid-stream");
            }
        }
    });
    assert!(doomed.join().is_err());
    for i in 0..1_000u64 {
        batcher.submit((1, i)).unwrap();
    }
    batcher.flush().unwrap();
    let got = recv_items(&rx, 501 + 1_000, "items of both producers");
    let dead: Vec<u64> = got
        .iter()
        .filter(|((p, _), _)| *p == 0)
        .map(|((_, i), _)| *i)
        .collect();
    assert_eq!(dead, (0..=500).collect::<Vec<_>>());
    assert!(got.iter().all(|(_, t)| *t != Trigger::Shutdown));
    assert_eq!(
        Arc::try_unwrap(batcher).unwrap().shutdown().processed,
        1_501
    );
}
