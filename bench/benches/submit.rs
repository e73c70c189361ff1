//! The cost of one submit on one thread, against the bare hand-offs it is
//! built from or competes with: `ArrayQueue::push`, crossbeam-channel
//! `try_send`, std `sync_channel` `try_send`. Only the submits are timed
//! (chunks of 256; the draining is not).
//!
//! - `microbatch-asleep`: the flusher is parked (time trigger off, chunks
//!   below the batch size), so a submit is the reservation, the push and the
//!   threshold check; a `flush` between chunks (untimed) empties the shard.
//! - `microbatch-awake`: the flusher busy-spins and drains at once
//!   (`max_delay` zero), contending for the shard's lines as in a hot loop.
//! - `microbatch-weight-asleep`: as `microbatch-asleep` with a weight limit
//!   under `Oversize::Reject` (the weigher runs on each submit).
//! - `base`: an empty loop over the same values (the harness itself).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use microbatch::{BatchInfo, Batcher, WaitStrategy};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: u64 = 256;
const DEPTH: usize = 1024;

/// Times `iters` submits in chunks; `push` is timed, `drain` is not.
fn chunked(iters: u64, mut push: impl FnMut(u64), mut drain: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let start = Instant::now();
        for i in 0..n {
            push(black_box(done + i));
        }
        total += start.elapsed();
        drain();
        done += n;
    }
    total
}

fn sanity() {
    // Each adapter delivers exactly what it was given before it is timed.
    let q = ArrayQueue::new(DEPTH);
    (0..100u64).for_each(|i| q.push(i).unwrap());
    assert_eq!((0..100).map(|_| q.pop().unwrap()).sum::<u64>(), 4950);
    let (tx, rx) = crossbeam_channel::bounded(DEPTH);
    (0..100u64).for_each(|i| tx.try_send(i).unwrap());
    assert_eq!(rx.try_iter().sum::<u64>(), 4950);
    let (tx, rx) = std::sync::mpsc::sync_channel(DEPTH);
    (0..100u64).for_each(|i| tx.try_send(i).unwrap());
    assert_eq!(rx.try_iter().sum::<u64>(), 4950);
    let sum = Arc::new(AtomicU64::new(0));
    let s = Arc::clone(&sum);
    let b = Batcher::builder()
        .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
            s.fetch_add(batch.iter().sum::<u64>(), Ordering::Relaxed);
        })
        .unwrap();
    (0..100u64).for_each(|i| b.try_submit(i).unwrap());
    assert_eq!(b.shutdown().processed, 100);
    assert_eq!(sum.load(Ordering::Relaxed), 4950);
}

fn submit(c: &mut Criterion) {
    sanity();
    let mut g = c.benchmark_group("submit/1thread");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));

    g.bench_function(BenchmarkId::new("base", ""), |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |x| {
                    black_box(x);
                },
                || {},
            )
        })
    });

    g.bench_function(BenchmarkId::new("arrayqueue-push", ""), |b| {
        let q = ArrayQueue::new(DEPTH);
        b.iter_custom(|iters| chunked(iters, |x| q.push(x).unwrap(), || while q.pop().is_some() {}))
    });

    g.bench_function(BenchmarkId::new("crossbeam-channel-try_send", ""), |b| {
        let (tx, rx) = crossbeam_channel::bounded(DEPTH);
        b.iter_custom(|iters| {
            chunked(
                iters,
                |x| tx.try_send(x).unwrap(),
                || while rx.try_recv().is_ok() {},
            )
        })
    });

    g.bench_function(BenchmarkId::new("std-sync_channel-try_send", ""), |b| {
        let (tx, rx) = std::sync::mpsc::sync_channel(DEPTH);
        b.iter_custom(|iters| {
            chunked(
                iters,
                |x| tx.try_send(x).unwrap(),
                || while rx.try_recv().is_ok() {},
            )
        })
    });

    g.bench_function(BenchmarkId::new("microbatch-asleep", ""), |b| {
        let batcher = Batcher::builder()
            .shards(1)
            .max_batch_size(512)
            .capacity(DEPTH)
            .max_delay(Duration::MAX)
            .wait_strategy(WaitStrategy::Park)
            .build(|batch: &mut Vec<u64>, _: &BatchInfo| {
                black_box(batch.iter().sum::<u64>());
            })
            .unwrap();
        b.iter_custom(|iters| {
            chunked(
                iters,
                |x| batcher.try_submit(x).unwrap(),
                || batcher.flush().unwrap(),
            )
        });
        let m = batcher.shutdown();
        assert_eq!(m.processed, m.submitted);
    });

    // The same with a weight limit under `Oversize::Reject`: the weigher
    // runs on every submit (the default row above has no weight limit and
    // pays only the check that none is set).
    g.bench_function(BenchmarkId::new("microbatch-weight-asleep", ""), |b| {
        let batcher = Batcher::builder()
            .shards(1)
            .max_batch_size(512)
            .capacity(DEPTH)
            .max_delay(Duration::MAX)
            .wait_strategy(WaitStrategy::Park)
            .max_batch_weight(u64::MAX, |x: &u64| *x & 0xff)
            .build(|batch: &mut Vec<u64>, _: &BatchInfo| {
                black_box(batch.iter().sum::<u64>());
            })
            .unwrap();
        b.iter_custom(|iters| {
            chunked(
                iters,
                |x| batcher.try_submit(x).unwrap(),
                || batcher.flush().unwrap(),
            )
        });
        let m = batcher.shutdown();
        assert_eq!(m.processed, m.submitted);
    });

    g.bench_function(BenchmarkId::new("microbatch-awake", ""), |b| {
        let batcher = Batcher::builder()
            .shards(1)
            .capacity(DEPTH)
            .max_delay(Duration::ZERO)
            .wait_strategy(WaitStrategy::BusySpin)
            .build(|batch: &mut Vec<u64>, _: &BatchInfo| {
                black_box(batch.iter().sum::<u64>());
            })
            .unwrap();
        b.iter_custom(|iters| chunked(iters, |x| batcher.submit(x).unwrap(), || {}));
        let m = batcher.shutdown();
        assert_eq!(m.processed, m.submitted);
    });
    g.finish();
}

criterion_group!(benches, submit);
criterion_main!(benches);
